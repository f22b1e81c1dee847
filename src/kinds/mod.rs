//! Task kinds: one module per kind, each owning everything about it.
//!
//! A kind is a family of tasks, one per target: `pki.intermediate:<c>`,
//! `istiod:<c>`, `remote-secret:<a>-><b>`. Its module owns, and nothing else
//! in the crate repeats:
//!
//! - its **ids**, as typed constructors (`istiod::id("east")`), the only way
//!   to name one of its tasks: other kinds depend on it through them;
//! - its **`VERSION`**, hashed into the key of each of its tasks as the
//!   `impl` input: bump it when the kind's code changes what it produces or
//!   does for the same inputs, and only that kind (and what its changed
//!   output reaches) reruns;
//! - the **plan slice** it reads ([`Slice`]): every plan value an action can
//!   see is put there with its plan path, so `mesh why` names the field;
//! - its **templates** ([`RenderSpec`] / [`Out`]: a template, a file name,
//!   a place in `out/`, secret or not);
//! - its **action**, and for a live task its **probe** and **undo**
//!   (most live kinds use the generic [`step::Step`]);
//! - its **dependencies**, declared with the other kinds' id constructors.
//!
//! ## Adding a kind
//!
//! 1. Write `src/kinds/<name>.rs`: a `//!` doc saying what it does, `KIND`,
//!    `VERSION`, `pub fn id(..) -> TaskId`, and `pub fn plan(p: &mut
//!    Planner)`, which calls [`Planner::render`], [`Planner::pure`] or
//!    [`Planner::live`] once per target.
//! 2. Add its template under `tasks/` (embedded by `build.rs`, overridable
//!    by `[templates]` in a plan).
//! 3. Add one line to [`crate::planner::build`]'s list, after the kinds it
//!    depends on, and teach the fake world (`tests/fake/`) what real
//!    clusters do with what it applies.
//!
//! ## What a kind may touch
//!
//! It reads the validated [`Plan`] and its loaded files, the files its
//! dependencies produced (through [`Ctx`]), and the world only through
//! `providers` (processes, HTTP), `k8s` (the Kubernetes API) and `access`
//! (credentials). It never touches the cache, `out/`, the executor or
//! another kind's internals: what it gives others is its output files,
//! reached by id and file name. The engine (`graph`, `cache`, `exec`) knows
//! nothing of kinds.

pub mod app;
pub mod cacerts;
pub mod charts;
pub mod cluster;
pub mod cni;
pub mod gateway;
pub mod istiod;
pub mod lb;
pub mod namespace;
pub mod net;
pub mod pki;
pub mod remote_secret;
pub mod render;
pub mod step;
pub mod user;

use crate::access::Target;
use crate::graph::{Action, Ctx, GraphBuilder, Node, blocking};
use crate::hash::{Digest, digest_of};
use crate::plan::{Cluster, Mode, Plan, Provider};
use render::{Enrich, Output, Tmpl};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// A task id, `kind` or `kind:target`. Made by the kinds' constructors (or,
/// for a user's `after`, checked against the graph first).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(String);

impl TaskId {
    fn new(s: impl Into<String>) -> TaskId {
        TaskId(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TaskId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<TaskId> for String {
    fn from(t: TaskId) -> String {
        t.0
    }
}

/// Which build the graph is for. They differ in one place: a live build
/// reads the kind Docker network (`net.discover`) and allocates
/// LoadBalancer ranges from it; an offline build uses `[mesh] kind_subnet`,
/// and builds no live node at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    Offline,
    Live,
}

/// A task's context: what its action reads, keyed as the template sees it,
/// with the plan path each key came from.
#[derive(Default)]
pub struct Slice {
    ctx: Map<String, Value>,
    paths: Vec<(String, String)>,
}

impl Slice {
    pub fn new() -> Slice {
        Slice::default()
    }
    pub fn put(mut self, key: &str, plan_path: impl Into<String>, v: impl Serialize) -> Slice {
        self.ctx.insert(
            key.into(),
            serde_json::to_value(v).expect("plan values serialize"),
        );
        self.paths.push((key.into(), plan_path.into()));
        self
    }
    pub fn into_context(self) -> Map<String, Value> {
        self.ctx
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Digest>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                flatten(&format!("{prefix}.{k}"), x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), digest_of("mesh.plan-value.v1", v));
        }
    }
}

/// One output of a render: a template, the file it becomes, its place in
/// `out/`, and whether it holds secrets.
pub struct Out {
    pub template: &'static str,
    pub file: String,
    pub export: String,
    pub secret: bool,
}

impl Out {
    /// `template` rendered to `file`, exported as `out/<dir>/<file>`.
    pub fn new(template: &'static str, file: impl Into<String>, dir: &str) -> Out {
        let file = file.into();
        Out {
            template,
            export: format!("{dir}/{file}"),
            file,
            secret: false,
        }
    }
    pub fn secret(mut self) -> Out {
        self.secret = true;
        self
    }
}

/// A render task: templates → files, with run-time data from dependencies.
pub struct RenderSpec {
    pub id: TaskId,
    pub version: u32,
    pub slice: Slice,
    pub outputs: Vec<Out>,
    pub enrich: Vec<Enrich>,
    pub deps: Vec<TaskId>,
}

/// A live task, built only for a live graph.
pub struct LiveSpec {
    pub slice: Slice,
    /// Plan files it reads (their digests are inputs).
    pub files: Vec<String>,
    pub deps: Vec<TaskId>,
    pub action: Arc<dyn Action>,
}

/// What kinds plan with: the plan, the graph under construction, and the
/// helpers that turn a kind's declaration into a node.
pub struct Planner<'a> {
    pub plan: &'a Arc<Plan>,
    pub build: Build,
    b: GraphBuilder,
    /// Offline: the ids of the live tasks left out (a user task's `after`
    /// may name them).
    live_ids: HashSet<String>,
    /// Kinds (id prefixes, e.g. `gateway`, `render.app`) whose version is
    /// taken as one higher: what a release that bumps them would hash.
    bumped: Vec<String>,
}

impl<'a> Planner<'a> {
    pub fn new(plan: &'a Arc<Plan>, build: Build) -> Planner<'a> {
        Planner {
            plan,
            build,
            b: GraphBuilder::new(),
            live_ids: HashSet::new(),
            bumped: Vec::new(),
        }
    }

    /// Plan as if the kinds named were one version higher (see
    /// [`crate::planner::build_bumped`]).
    pub fn bump(&mut self, kinds: &[&str]) {
        self.bumped = kinds.iter().map(|k| k.to_string()).collect();
    }

    fn version(&self, id: &TaskId, version: u32) -> u32 {
        let kind = id.split(':').next().unwrap_or_default();
        version + u32::from(self.bumped.iter().any(|b| b == kind))
    }

    /// Is `id` a task of this plan (live ones included, offline too)?
    pub fn knows(&self, id: &str) -> bool {
        self.b.contains(id) || self.live_ids.contains(id)
    }

    pub fn into_builder(self) -> GraphBuilder {
        self.b
    }

    fn tmpl(&self, name: &str) -> Tmpl {
        Tmpl {
            name: name.into(),
            text: self.plan.file(name).text.clone(),
        }
    }

    fn inputs<S: AsRef<str>>(
        &self,
        version: u32,
        slice: &Slice,
        files: &[S],
    ) -> BTreeMap<String, Digest> {
        let mut m = BTreeMap::new();
        m.insert(
            "impl".into(),
            Digest::of_bytes(version.to_string().as_bytes()),
        );
        for (key, path) in &slice.paths {
            flatten(&format!("plan:{path}"), &slice.ctx[key], &mut m);
        }
        for f in files {
            let f = f.as_ref();
            m.insert(format!("file:{f}"), self.plan.file(f).digest);
        }
        m
    }

    fn add(&mut self, node: Node, deps: Vec<TaskId>) {
        let id = node.id.clone();
        self.b.add(node).expect("planner ids are unique");
        for d in deps {
            self.b.edge(String::from(d), id.clone());
        }
    }

    /// A pure task: `kind` (the key's kind name), its version, the slice and
    /// plan files it reads, its dependencies and its action.
    #[allow(clippy::too_many_arguments)]
    pub fn pure(
        &mut self,
        id: TaskId,
        kind: &'static str,
        version: u32,
        slice: &Slice,
        files: &[&str],
        deps: Vec<TaskId>,
        action: Arc<dyn Action>,
    ) {
        let version = self.version(&id, version);
        let inputs = self.inputs(version, slice, files);
        self.add(
            Node {
                id: id.into(),
                kind,
                pure: true,
                inputs,
                action,
            },
            deps,
        );
    }

    /// A render task.
    pub fn render(&mut self, spec: RenderSpec) {
        let files: Vec<&str> = spec.outputs.iter().map(|o| o.template).collect();
        let version = self.version(&spec.id, spec.version);
        let inputs = self.inputs(version, &spec.slice, &files);
        let outputs: Vec<Output> = spec
            .outputs
            .iter()
            .map(|o| Output {
                template: self.tmpl(o.template),
                file: o.file.clone(),
                export: o.export.clone(),
                secret: o.secret,
            })
            .collect();
        let base = spec.slice.ctx;
        let how = spec.enrich;
        self.add(
            Node {
                id: spec.id.into(),
                kind: "render",
                pure: true,
                inputs,
                action: blocking(move |ctx: &Ctx| render::render(ctx, &base, &how, &outputs)),
            },
            spec.deps,
        );
    }

    /// A live task. `make` runs only for a live graph: an offline one keeps
    /// just the id.
    pub fn live(
        &mut self,
        id: TaskId,
        kind: &'static str,
        version: u32,
        make: impl FnOnce() -> LiveSpec,
    ) {
        if self.build == Build::Offline {
            self.live_ids.insert(id.into());
            return;
        }
        let spec = make();
        let version = self.version(&id, version);
        let inputs = self.inputs(version, &spec.slice, &spec.files);
        self.add(
            Node {
                id: id.into(),
                kind,
                pure: false,
                inputs,
                action: spec.action,
            },
            spec.deps,
        );
    }
}

/// The mesh mode as templates see it.
pub fn mode_str(plan: &Plan) -> &'static str {
    match plan.mesh.mode {
        Mode::Sidecar => "sidecar",
        Mode::Ambient => "ambient",
    }
}

/// `clusters.<c>`, the plan path of a cluster.
pub fn cluster_path(c: &Cluster) -> String {
    format!("clusters.{}", c.name)
}

/// What every live task on a cluster reads to reach it.
pub fn access_slice(c: &Cluster) -> Slice {
    Slice::new().put(
        "cluster",
        cluster_path(c),
        serde_json::json!({"name": c.name, "provider": c.provider, "context": c.context, "kubeconfig": c.kubeconfig}),
    )
}

/// `deps`, plus `cluster:<c>` for a kind cluster: a live task reads its
/// credentials from there.
pub fn on_cluster(c: &Cluster, mut deps: Vec<TaskId>) -> Vec<TaskId> {
    if c.provider == Provider::Kind {
        deps.push(cluster::id(&c.name));
    }
    deps
}

/// How live tasks reach cluster `c`.
pub fn target(c: &Cluster) -> Target {
    Target::of(c)
}
