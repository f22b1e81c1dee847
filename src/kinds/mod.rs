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
pub mod ingress;
pub mod istiod;
pub mod kiali;
pub mod lb;
pub mod locality;
pub mod namespace;
pub mod net;
pub mod pki;
pub mod prometheus;
pub mod remote_secret;
pub mod render;
pub mod step;
pub mod user;

use crate::access::Target;
use crate::graph::{Action, Ctx, GraphBuilder, Input, Inputs, Node, blocking};
use crate::hash::{Digest, digest_of};
use crate::plan::{Cluster, Mode, Plan, Provider};
use render::{Enrich, Output, Tmpl};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// A task id, `kind` or `kind:target`. Made by the kinds' constructors (or,
/// for a user's `after`, checked against the graph first). Cloning it is a
/// reference count; one made by [`Planner::resolved`] also knows its node,
/// so the million remote secrets name their four dependencies without a
/// lookup each.
#[derive(Clone, Debug)]
pub struct TaskId {
    id: Arc<str>,
    node: Option<petgraph::graph::NodeIndex>,
}

impl TaskId {
    fn new(s: impl Into<String>) -> TaskId {
        TaskId {
            id: Arc::from(s.into()),
            node: None,
        }
    }
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl PartialEq for TaskId {
    fn eq(&self, other: &TaskId) -> bool {
        self.id == other.id
    }
}
impl Eq for TaskId {}
impl std::hash::Hash for TaskId {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.id.hash(h)
    }
}
impl PartialOrd for TaskId {
    fn partial_cmp(&self, other: &TaskId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TaskId {
    fn cmp(&self, other: &TaskId) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl std::ops::Deref for TaskId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl From<TaskId> for String {
    fn from(t: TaskId) -> String {
        t.id.to_string()
    }
}

/// Which build the graph is for. They differ in one place: a live build
/// reads the kind Docker network (`net.discover`) and allocates
/// LoadBalancer ranges from it; an offline build uses `[mesh] kind_subnet`,
/// and builds no live node at all: not its id, inputs or action (a user
/// task's `after` naming one is checked by [`live_exists`] instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    Offline,
    Live,
}

/// A task's context: what its action reads, keyed as the template sees it,
/// with the plan path each key came from; and inputs flattened once for
/// many tasks ([`Shared`]).
#[derive(Default)]
pub struct Slice {
    ctx: Map<String, Value>,
    paths: Vec<(String, String)>,
    shared: Vec<Arc<Input>>,
}

/// A slice flattened into inputs once, for the many tasks that read the
/// same plan values (a cluster's access fields, read by each of its
/// remote secrets): made by [`Planner::share`], added by [`Slice::with`].
/// Inputs only: a template does not see it.
#[derive(Clone)]
pub struct Shared(Arc<[Arc<Input>]>);

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
    /// Add the inputs of `shared`.
    pub fn with(mut self, shared: &Shared) -> Slice {
        self.shared.extend(shared.0.iter().cloned());
        self
    }
    pub fn into_context(self) -> Map<String, Value> {
        self.ctx
    }
    /// Its inputs: each plan value flattened, then the shared ones.
    fn entries(&self, out: &mut Vec<Arc<Input>>, leaves: &mut Leaves) {
        let mut name = String::new();
        for (key, path) in &self.paths {
            name.clear();
            name.push_str("plan:");
            name.push_str(path);
            flatten(&mut name, &self.ctx[key], out, leaves);
        }
        out.extend(self.shared.iter().cloned());
    }
}

/// The input of each plan leaf planned so far, by name, with the value it
/// was made from: most leaves are read by several tasks (a cluster's name
/// by each of its kinds), which then share one entry, hashed once.
type Leaves = hashbrown::HashMap<Box<str>, (Value, Arc<Input>)>;

/// The inputs of plan value `v` at path `name`: one per leaf (an empty
/// object is a leaf), named by its path. `name` is a buffer the path is
/// built in, left as it was found.
fn flatten(name: &mut String, v: &Value, out: &mut Vec<Arc<Input>>, leaves: &mut Leaves) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let len = name.len();
            for (k, x) in m {
                name.push('.');
                name.push_str(k);
                flatten(name, x, out, leaves);
                name.truncate(len);
            }
        }
        _ => {
            if let Some((seen, input)) = leaves.get(name.as_str())
                && seen == v
            {
                out.push(input.clone());
                return;
            }
            let input = Input::new(name.as_str(), digest_of("mesh.plan-value.v1", v));
            leaves.insert(name.as_str().into(), (v.clone(), input.clone()));
            out.push(input);
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
    /// Kinds (id prefixes, e.g. `gateway`, `render.app`) whose version is
    /// taken as one higher: what a release that bumps them would hash.
    bumped: Vec<String>,
    /// The `impl` input of each version seen, shared by its tasks.
    impls: Vec<(u32, Arc<Input>)>,
    /// Plan leaves and plan files made into inputs so far, to share.
    leaves: Leaves,
    files: hashbrown::HashMap<String, Arc<Input>>,
    /// Live tasks built (ids, inputs, actions): none offline.
    live_built: usize,
}

impl<'a> Planner<'a> {
    pub fn new(plan: &'a Arc<Plan>, build: Build) -> Planner<'a> {
        Planner {
            plan,
            build,
            b: GraphBuilder::new(),
            bumped: Vec::new(),
            impls: Vec::new(),
            leaves: Leaves::new(),
            files: hashbrown::HashMap::new(),
            live_built: 0,
        }
    }

    /// Is this a live build (one that plans live tasks)?
    pub fn is_live(&self) -> bool {
        self.build == Build::Live
    }

    /// How many live tasks were built (0 offline).
    pub fn live_built(&self) -> usize {
        self.live_built
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
        self.b.contains(id) || (!self.is_live() && live_exists(self.plan, id))
    }

    /// Make room for `tasks` more tasks with `edges` dependencies in all.
    pub fn reserve(&mut self, tasks: usize, edges: usize) {
        self.b.reserve(tasks, edges);
    }

    /// Flatten `slice` into inputs once, for many tasks ([`Slice::with`]).
    pub fn share(&mut self, slice: &Slice) -> Shared {
        let mut v = Vec::new();
        slice.entries(&mut v, &mut self.leaves);
        Shared(v.into())
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

    /// A task's input manifest: `impl` (its kind's version), the plan
    /// values of its slice, and the digests of the plan files it reads.
    fn inputs<S: AsRef<str>>(&mut self, version: u32, slice: &Slice, files: &[S]) -> Inputs {
        let imp = match self.impls.iter().find(|(v, _)| *v == version) {
            Some((_, e)) => e.clone(),
            None => {
                let e = Input::new("impl", Digest::of_bytes(version.to_string().as_bytes()));
                self.impls.push((version, e.clone()));
                e
            }
        };
        let mut v = vec![imp];
        slice.entries(&mut v, &mut self.leaves);
        for f in files {
            let f = f.as_ref();
            let input = match self.files.get(f) {
                Some(input) => input.clone(),
                None => {
                    let input = Input::new(format!("file:{f}"), self.plan.file(f).digest);
                    self.files.insert(f.to_string(), input.clone());
                    input
                }
            };
            v.push(input);
        }
        Inputs::from_entries(v)
    }

    fn add(&mut self, node: Node, deps: Vec<TaskId>) {
        let known: Vec<_> = deps.iter().filter_map(|d| d.node).collect();
        let named = deps.iter().filter(|d| d.node.is_none()).map(|d| d.as_str());
        self.b
            .add_with_known_deps(node, &known, named)
            .expect("planner ids are unique");
    }

    /// `id`, knowing its node if it is planned already: naming it as a
    /// dependency then costs no lookup.
    pub fn resolved(&self, id: TaskId) -> TaskId {
        TaskId {
            node: self.b.find(&id),
            ..id
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

    /// A live task. `id` and `make` run only for a live graph: an offline
    /// one builds nothing of it (see [`live_exists`]).
    pub fn live(
        &mut self,
        id: impl FnOnce() -> TaskId,
        kind: &'static str,
        version: u32,
        make: impl FnOnce() -> LiveSpec,
    ) {
        if !self.is_live() {
            return;
        }
        self.live_built += 1;
        let id = id();
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

/// Is `id` a live task of `plan`'s live graph? Answered from the plan
/// alone, without planning (an offline build checks a user task's `after`
/// with it and builds no live task); `tests/planner_scale.rs` checks it
/// against every live id of live graphs. Names are DNS labels, so the `:`
/// of an id separates its parts.
pub fn live_exists(plan: &Plan, id: &str) -> bool {
    let is_kind = |c: &str| {
        plan.clusters
            .get(c)
            .is_some_and(|c| c.provider == Provider::Kind)
    };
    let (kind, target) = id.split_once(':').unwrap_or((id, ""));
    let placed = |target: &str, app: &dyn Fn(&crate::plan::App, &str) -> bool| {
        target.split_once(':').is_some_and(|(x, c)| {
            plan.apps
                .values()
                .any(|a| app(a, x) && a.placement.contains_key(c))
        })
    };
    match kind {
        "cluster" | "cni" | "lb" => is_kind(target),
        "cacerts" | "istiod" | "gateway" => plan.clusters.contains_key(target),
        "net.discover" => id == kind && plan.clusters.keys().any(|c| is_kind(c)),
        "remote-secret" => {
            remote_secret::parse_id(id).is_some_and(|(a, b)| remote_secret::is_pair(plan, a, b))
        }
        "app" => placed(target, &|a, x| a.name == x),
        "namespace" => placed(target, &|a, x| a.namespace == x),
        "task" => plan.tasks.contains_key(target),
        _ => false,
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
