//! The app kind: `render.app:<app>:<c>` and `app:<app>:<c>`, one pair per
//! cluster an app is placed in.
//!
//! The render splits the app's manifest into documents and keeps those
//! whose `version` label the placement selects (plus unversioned ones),
//! puts each in the app's namespace unless it names one, and in ambient
//! mode labels Services `istio.io/global=true` so they are reachable across
//! clusters. The namespace itself is not the app's: the `namespace` kind
//! owns it, since several apps may share one.
//!
//! `app:<app>:<c>` applies the render after istiod and the namespace (on a
//! remote also after its remote secret: its pods are injected by its
//! primary, which must know it), prunes what its last run applied and this
//! one no longer does (never a Namespace), and waits for its Deployments.

use super::step::{Src, Step, Wait};
use super::{LiveSpec, Planner, Slice, TaskId, istiod, namespace, remote_secret};
use crate::graph::{OutFile, TaskError, blocking};
use crate::plan::{Mode, Selector};
use crate::yaml::{doc_version, yaml_docs};
use serde_json::Value;
use std::sync::Arc;

pub const VERSION: u32 = 1;
pub const RENDER_VERSION: u32 = 1;

/// `app:<app>:<c>`
pub fn id(app: &str, cluster: &str) -> TaskId {
    TaskId::new(format!("app:{app}:{cluster}"))
}

/// `render.app:<app>:<c>`
pub fn render_id(app: &str, cluster: &str) -> TaskId {
    TaskId::new(format!("render.app:{app}:{cluster}"))
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    let mode = super::mode_str(plan);
    for app in plan.apps.values() {
        let a = &app.name;
        for (c, sel) in &app.placement {
            let slice = Slice::new()
                .put(
                    "app",
                    format!("apps.{a}"),
                    serde_json::json!({"name": a, "namespace": app.namespace}),
                )
                .put("selector", format!("apps.{a}.placement.{c}"), sel)
                .put("mode", "mesh.mode", mode);
            let file = format!("{a}.yaml");
            let r = AppRender {
                ctx: Value::Object(slice.ctx.clone()),
                manifest_name: app.manifest.clone(),
                manifest: plan.file(&app.manifest).text.clone(),
                selector: sel.clone(),
                ambient: plan.mesh.mode == Mode::Ambient,
                file: file.clone(),
                export: format!("{c}/apps/{file}"),
            };
            p.pure(
                render_id(a, c),
                "render.app",
                RENDER_VERSION,
                &slice,
                &[app.manifest.as_str()],
                vec![],
                blocking(move |_| r.run()),
            );
            let cluster = &plan.clusters[c];
            p.live(
                || id(a, c),
                "app",
                VERSION,
                || {
                    let mut deps = vec![
                        istiod::id(c),
                        render_id(a, c),
                        namespace::id(&app.namespace, c),
                    ];
                    if let Some(pr) = &cluster.primary {
                        deps.push(remote_secret::id(c, pr));
                    }
                    LiveSpec {
                        slice: Slice::new().put("cluster", format!("clusters.{c}.name"), c),
                        files: vec![],
                        deps: super::on_cluster(cluster, deps),
                        action: Step::on(super::target(cluster))
                            .manifests(vec![Src::dep(render_id(a, c), file)])
                            .waits(vec![Wait::AppliedDeployments])
                            .keep_namespaces()
                            .action(),
                    }
                },
            );
        }
    }
}

/// What `render.app:<app>:<cluster>` computes: the selected documents.
pub struct AppRender {
    /// The plan slice (`app`, `selector`, `mode`).
    pub ctx: Value,
    pub manifest_name: String,
    pub manifest: Arc<str>,
    pub selector: Selector,
    pub ambient: bool,
    pub file: String,
    pub export: String,
}

impl AppRender {
    pub fn run(&self) -> Result<Vec<OutFile>, TaskError> {
        let AppRender {
            ctx: ctx_plan,
            manifest_name,
            manifest,
            selector,
            ambient,
            file,
            export,
        } = self;
        let ambient = *ambient;
        let mut out = String::new();
        let docs =
            yaml_docs(manifest).map_err(|e| TaskError::new(format!("{manifest_name}: {e}")))?;
        let namespace = ctx_plan
            .pointer("/app/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        for d in docs {
            if !selector.admits(doc_version(&d.value).as_deref()) {
                continue;
            }
            if !out.is_empty() {
                out.push_str("---\n");
            }
            let kind = d.value.get("kind").and_then(Value::as_str);
            let has_ns = d.value.pointer("/metadata/namespace").is_some();
            if (ambient && kind == Some("Service")) || !has_ns {
                // Rewrite the document: namespace it, and in ambient mode make
                // Services reachable across clusters.
                let mut v = d.value.clone();
                let meta = v
                    .as_object_mut()
                    .and_then(|o| o.get_mut("metadata"))
                    .and_then(Value::as_object_mut)
                    .ok_or_else(|| {
                        TaskError::new(format!("{manifest_name}: a document has no metadata"))
                    })?;
                if !has_ns {
                    meta.insert("namespace".into(), Value::String(namespace.into()));
                }
                if ambient && kind == Some("Service") {
                    let labels = meta
                        .entry("labels")
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Some(l) = labels.as_object_mut() {
                        l.insert("istio.io/global".into(), Value::String("true".into()));
                    }
                }
                let y = serde_saphyr::to_string(&v)
                    .map_err(|e| TaskError::new(format!("{manifest_name}: {e}")))?;
                out.push_str(&y);
                if !y.ends_with('\n') {
                    out.push('\n');
                }
            } else {
                out.push_str(&d.text);
            }
        }
        Ok(vec![OutFile::new(file.clone(), out).export(export.clone())])
    }
}
