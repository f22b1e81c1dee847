//! The cluster kind: `render.kind:<c>` and `cluster:<c>`, for kind
//! clusters only (an existing cluster is never created or deleted).
//!
//! `render.kind:<c>` renders the kind config (`tasks/kind/cluster.yaml.j2`:
//! pod and service subnets, workers, the default CNI off for Cilium, and
//! the cluster's locality as every node's `topology.kubernetes.io/region`
//! and `zone` labels, which Istio reads for locality load balancing).
//! `cluster:<c>` runs `kind create cluster` with it, then records both
//! kubeconfigs as secret outputs (see `access`). Ownership comes from the
//! state store's inventory (`state`): the create is recorded as intent
//! before and confirmed after; an existing cluster of that name is deleted
//! first only when mesh owns it (this task reruns when the config changed
//! or the cluster drifted); one mesh does not own stops the task, naming
//! the two ways out. Its probe asks the API server for its version; its
//! undo deletes the cluster only when mesh owns it, and forgets it. Every other live task on a kind cluster depends on
//! it and reads its credentials from it ([`access`], [`internal`]).

use super::step::temp_file;
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId};
use crate::access::{Access, KUBECONFIG, KUBECONFIG_INTERNAL, Target};
use crate::graph::{Action, BoxFuture, Ctx, OutFile, Probe, ProbeError, TaskError};
use crate::k8s;
use crate::plan::Provider;
use crate::providers::kind;
use crate::state::{KIND_CLUSTER, Phase};
use std::sync::Arc;

pub const VERSION: u32 = 1;
pub const RENDER_VERSION: u32 = 1;
const CONFIG: &str = "kind-cluster.yaml";

/// `cluster:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("cluster:{cluster}"))
}

/// `render.kind:<c>`
pub fn render_id(cluster: &str) -> TaskId {
    TaskId::new(format!("render.kind:{cluster}"))
}

/// Credentials of `t` as this machine reaches it, during a build.
pub fn access(t: &Target, ctx: &Ctx) -> Result<Access, TaskError> {
    let dep = id(&t.name);
    t.access(&|f| ctx.read_string(&dep, f))
}

/// Credentials of `t` as the other clusters reach it, during a build.
pub fn internal(t: &Target, ctx: &Ctx) -> Result<Access, TaskError> {
    let dep = id(&t.name);
    t.internal(&|f| ctx.read_string(&dep, f))
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    for c in plan.clusters.values() {
        if c.provider != Provider::Kind {
            continue;
        }
        let n = &c.name;
        let mut cfg = serde_json::json!({"name": n, "pod_subnet": c.pod_subnet, "service_subnet": c.service_subnet,
                       "workers": c.workers, "cni": c.cni});
        // Only when set, so that a plan without localities keeps its keys.
        for (k, v) in [("region", &c.region), ("zone", &c.zone)] {
            if let Some(v) = v {
                cfg[k] = serde_json::json!(v);
            }
        }
        let slice = Slice::new()
            .put("cluster", super::cluster_path(c), cfg)
            .put("kind_node", "versions.kind_node", &plan.versions.kind_node);
        p.render(RenderSpec {
            id: render_id(n),
            version: RENDER_VERSION,
            slice,
            outputs: vec![Out::new("tasks/kind/cluster.yaml.j2", CONFIG, n)],
            enrich: vec![],
            deps: vec![],
        });
        p.live(
            || id(n),
            "cluster",
            VERSION,
            || LiveSpec {
                slice: super::access_slice(c),
                files: vec![],
                deps: vec![render_id(n)],
                action: Arc::new(KindCluster { name: n.clone() }),
            },
        );
    }
}

/// `cluster:<c>` for kind clusters.
#[derive(Clone, Debug)]
pub struct KindCluster {
    pub name: String,
}

impl Action for KindCluster {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        let name = self.name.clone();
        Box::pin(async move {
            let config = ctx.read_string(&render_id(&name), CONFIG)?;
            let file = temp_file(&config, "mesh-kind-")?;
            let store = crate::state::get();
            let serr = |e: crate::state::StateError| TaskError::new(e.to_string());
            if kind::clusters().await?.contains(&name) {
                let owned = match store {
                    Some(s) => s.inventory().map_err(serr)?.phase(KIND_CLUSTER, &name),
                    None => Some(Phase::Created),
                };
                if owned.is_none() {
                    return Err(TaskError::new(foreign(&name)));
                }
                kind::delete(&name).await?;
            }
            if let Some(s) = store {
                s.set(KIND_CLUSTER, &name, Phase::Creating).map_err(serr)?;
            }
            kind::create(&name, file.path()).await?;
            let external = kind::kubeconfig(&name, false).await?;
            let internal = kind::kubeconfig(&name, true).await?;
            if let Some(s) = store {
                s.set(KIND_CLUSTER, &name, Phase::Created).map_err(serr)?;
            }
            Ok(vec![
                OutFile::new(KUBECONFIG, external).secret(),
                OutFile::new(KUBECONFIG_INTERNAL, internal).secret(),
            ])
        })
    }

    /// The API server answers: up to date. It does not: ask kind whether
    /// the cluster exists. Absent is drift (the task recreates it); present
    /// but silent (Docker restarting, a laptop waking up) is unreachable:
    /// the build fails saying so, and never deletes a cluster for it.
    fn probe(&self, ctx: Ctx) -> Option<BoxFuture<Probe>> {
        let name = self.name.clone();
        Some(Box::pin(async move {
            let kc = ctx
                .read_string(&ctx.id, KUBECONFIG)
                .map_err(|e| ProbeError::Drift(e.to_string()))?;
            let client = k8s::connect(&kc, None, &name)
                .await
                .map_err(|e| ProbeError::Drift(e.to_string()))?;
            let Err(e) =
                k8s::bounded_for(k8s::PROBE_RETRY_BUDGET, || client.apiserver_version()).await
            else {
                return Ok(());
            };
            match kind::clusters().await {
                Ok(list) if !list.contains(&name) => {
                    Err(ProbeError::Drift(format!("kind cluster {name} is gone")))
                }
                Ok(_) => Err(ProbeError::Unreachable(match k8s::unanswered(&e) {
                    Some(at) => format!(
                        "{at} does not answer: is Docker running? \
                         (kind says cluster {name} exists; mesh will not recreate it)"
                    ),
                    None => format!(
                        "kind cluster {name} exists but its API server does not answer ({e}); \
                         is Docker running? mesh will not recreate it"
                    ),
                })),
                Err(k) => Err(ProbeError::Unreachable(format!(
                    "kind cluster {name}'s API server does not answer ({e}), and kind cannot say whether it exists: {k}"
                ))),
            }
        }))
    }

    fn undo(&self, _ctx: Ctx) -> Option<BoxFuture<Result<(), TaskError>>> {
        let name = self.name.clone();
        Some(Box::pin(async move { delete_owned(&name).await }))
    }
}

/// Why mesh will not touch a kind cluster it does not own, and the two ways
/// out.
pub fn foreign(name: &str) -> String {
    format!(
        "a kind cluster named {name} exists and mesh did not create it: mesh will not delete it \
         or install into it. Either remove it (kind delete cluster --name {name}) or give it to \
         mesh (mesh adopt {name}: the next build recreates it from the plan)"
    )
}

/// Delete kind cluster `name` if mesh owns it (the inventory says so), and
/// forget it; a cluster mesh does not own is left alone.
pub async fn delete_owned(name: &str) -> Result<(), TaskError> {
    let serr = |e: crate::state::StateError| TaskError::new(e.to_string());
    let owned = match crate::state::get() {
        Some(s) => s
            .inventory()
            .map_err(serr)?
            .phase(KIND_CLUSTER, name)
            .is_some(),
        None => true,
    };
    if !owned {
        return Ok(());
    }
    if kind::clusters().await?.iter().any(|c| c == name) {
        kind::delete(name).await?;
    }
    if let Some(s) = crate::state::get() {
        s.forget(KIND_CLUSTER, name).map_err(serr)?;
    }
    Ok(())
}
