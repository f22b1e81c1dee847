//! The task graph: nodes, edges, and what a task is.
//!
//! A node is one (task kind, target) pair with an id such as
//! `pki.intermediate:east`, its *static* inputs (the input manifest: name →
//! digest of every plan field and file it reads, plus its implementation
//! version), and an [`Action`] that does the work. Edges run from a
//! dependency to its dependent. The dynamic part of a key, the output digests
//! of the dependencies, is only known while executing (see `exec`).
//!
//! The graph is built with [`GraphBuilder`] and then sealed into a [`Graph`]
//! (Turborepo's `Engine<Building>` → `Engine<Built>`): sealing checks for
//! cycles and fixes a topological order; a sealed graph cannot change.
//! Rendering to Graphviz dot and to Mermaid lives here too.
//!
//! ## Memory: a million tasks
//!
//! A 1,000-primary mesh has a million remote secrets, so a node must cost
//! bytes, not kilobytes. The builder adds nodes straight into the petgraph
//! (no second copy at the seal); ids are stored once, in their nodes, and
//! the id index is a `hashbrown::HashTable` of node numbers that compares
//! against them; an edge whose dependency is already planned is resolved
//! on the spot, and only an edge to a task not yet planned keeps its name
//! until the seal; a node's dependencies are deduplicated as they are
//! added. A node's [`Inputs`] are shared entries (`Arc<Input>`): the
//! thousand remote secrets reading one cluster's access fields point at
//! the same four entries.

use crate::hash::Digest;
use hashbrown::{DefaultHashBuilder, HashTable};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;

/// A file a task produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutFile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub secret: bool,
    /// Destination under `out/`, when part of the offline bundle.
    pub export: Option<String>,
    /// Bookkeeping for the task's own probe, outside the output digest.
    pub private: bool,
}

impl OutFile {
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> OutFile {
        OutFile {
            name: name.into(),
            bytes: bytes.into(),
            secret: false,
            export: None,
            private: false,
        }
    }

    pub fn private(mut self) -> OutFile {
        self.private = true;
        self
    }
    pub fn secret(mut self) -> OutFile {
        self.secret = true;
        self
    }
    pub fn export(mut self, path: impl Into<String>) -> OutFile {
        self.export = Some(path.into());
        self
    }
}

/// Why a task failed: which tool (if any) and what it said. Never holds
/// secret material: actions must not put keys or tokens in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    pub tool: Option<String>,
    pub message: String,
}

impl TaskError {
    pub fn new(message: impl Into<String>) -> TaskError {
        TaskError {
            tool: None,
            message: message.into(),
        }
    }
    pub fn tool(tool: impl Into<String>, message: impl Into<String>) -> TaskError {
        TaskError {
            tool: Some(tool.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tool {
            Some(t) => write!(f, "{t}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What a probe found when the world does not hold what the record says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The world differs from the record (an object changed or is gone, the
    /// cluster was deleted): the task reruns.
    #[error("drifted: {0}")]
    Drift(String),
    /// The world could not be asked (an API server that does not answer:
    /// Docker restarting, a laptop waking up). Nothing is known, so nothing
    /// is done: the task fails with this reason, and never reruns on it (a
    /// rerun of `cluster:<c>` would delete a cluster that may be fine).
    #[error("unreachable: {0}")]
    Unreachable(String),
}

/// The result of a probe.
pub type Probe = Result<(), ProbeError>;

/// Files of the dependencies, for an action to read.
pub trait DepReader: Send + Sync {
    /// The bytes of file `name` produced by dependency `dep`.
    fn read(&self, dep: &str, name: &str) -> Result<Vec<u8>, TaskError>;
}

/// What an action gets when it runs.
#[derive(Clone)]
pub struct Ctx {
    pub id: String,
    pub deps: Arc<dyn DepReader>,
}

impl Ctx {
    pub fn read(&self, dep: &str, name: &str) -> Result<Vec<u8>, TaskError> {
        self.deps.read(dep, name)
    }
    pub fn read_string(&self, dep: &str, name: &str) -> Result<String, TaskError> {
        String::from_utf8(self.read(dep, name)?)
            .map_err(|_| TaskError::new(format!("{dep}/{name} is not UTF-8")))
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The work of one task. Pure actions compute files from their inputs;
/// effectful ones (live tasks) act on the world and return a small receipt.
pub trait Action: Send + Sync {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>>;

    /// Effectful tasks: a cheap check that the world still holds what the
    /// recorded run did (`ctx` also reads the task's own recorded files,
    /// under its own id). `Err` says what drifted, or that the world could
    /// not be asked. `None`: nothing to check.
    fn probe(&self, _ctx: Ctx) -> Option<BoxFuture<Probe>> {
        None
    }

    /// Effectful tasks: remove what the recorded run installed (`mesh
    /// destroy`). `None`: nothing to remove, or removed with its cluster.
    fn undo(&self, _ctx: Ctx) -> Option<BoxFuture<Result<(), TaskError>>> {
        None
    }
}

/// Adapter: a synchronous, CPU-bound closure (a render, a key generation).
///
/// It runs on the tokio worker that runs the task, not on the blocking pool:
/// these closures take microseconds to a second, the executor never runs
/// more than `-j` tasks at once, and a second thread hop per task cost more
/// than most renders (measured: it doubled a 1,000-cluster offline build).
pub struct Blocking<F>(pub Arc<F>);

impl<F> Action for Blocking<F>
where
    F: Fn(&Ctx) -> Result<Vec<OutFile>, TaskError> + Send + Sync + 'static,
{
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        let f = self.0.clone();
        Box::pin(async move { f(&ctx) })
    }
}

/// Wrap a closure as a blocking action.
pub fn blocking<F>(f: F) -> Arc<dyn Action>
where
    F: Fn(&Ctx) -> Result<Vec<OutFile>, TaskError> + Send + Sync + 'static,
{
    Arc::new(Blocking(Arc::new(f)))
}

/// One input of a task: a name (`impl`, `plan:clusters.east.name`,
/// `file:tasks/...`) and the digest of what it names.
#[derive(Debug, PartialEq, Eq)]
pub struct Input {
    pub name: Box<str>,
    pub digest: Digest,
}

impl Input {
    pub fn new(name: impl Into<Box<str>>, digest: Digest) -> Arc<Input> {
        Arc::new(Input {
            name: name.into(),
            digest,
        })
    }
}

/// A task's input manifest: input name → digest, sorted by name, names
/// unique. Entries are shared between tasks (see the module doc).
/// Serializes exactly as the `BTreeMap<String, Digest>` it stands for, so
/// keys do not depend on how inputs are held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs(Box<[Arc<Input>]>);

impl Inputs {
    /// From entries in any order; of two with one name, the later wins (as
    /// inserting into a map would).
    pub fn from_entries(mut v: Vec<Arc<Input>>) -> Inputs {
        // Stable: equal names keep their order, and the last is kept.
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Arc<Input>> = Vec::with_capacity(v.len());
        for e in v {
            match out.last_mut() {
                Some(last) if last.name == e.name => *last = e,
                _ => out.push(e),
            }
        }
        Inputs(out.into_boxed_slice())
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Digest)> {
        self.0.iter().map(|e| (&*e.name, &e.digest))
    }
    pub fn get(&self, name: &str) -> Option<&Digest> {
        self.0
            .binary_search_by(|e| (*e.name).cmp(name))
            .ok()
            .map(|i| &self.0[i].digest)
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// As a map (what a record stores).
    pub fn to_map(&self) -> BTreeMap<String, Digest> {
        self.iter().map(|(k, d)| (k.to_string(), *d)).collect()
    }
}

impl From<BTreeMap<String, Digest>> for Inputs {
    fn from(m: BTreeMap<String, Digest>) -> Inputs {
        Inputs(m.into_iter().map(|(k, d)| Input::new(k, d)).collect())
    }
}

impl Serialize for Inputs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// One node.
pub struct Node {
    pub id: String,
    /// Task kind, e.g. `pki.intermediate` (the part of the id before `:`).
    pub kind: &'static str,
    /// Pure tasks run offline; the others act on clusters.
    pub pure: bool,
    /// Input manifest: input name → digest.
    pub inputs: Inputs,
    pub action: Arc<dyn Action>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("pure", &self.pure)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("task {0} is declared twice")]
    Duplicate(String),
    #[error("task {from} depends on unknown task {to}")]
    Unknown { from: String, to: String },
    /// The ids of a cycle in "depends on" order, starting at its smallest id
    /// and ending with it again.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Node ids → node numbers, the ids themselves living in the nodes.
#[derive(Default)]
struct Index {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Index {
    fn find(&self, g: &DiGraph<Node, ()>, id: &str) -> Option<NodeIndex> {
        let h = self.hasher.hash_one(id);
        self.table
            .find(h, |&i| g[NodeIndex::new(i as usize)].id == id)
            .map(|&i| NodeIndex::new(i as usize))
    }
    /// Add node `i` (its id, whose hash is `h`, not yet indexed).
    fn insert(&mut self, g: &DiGraph<Node, ()>, i: NodeIndex, h: u64) {
        let hasher = &self.hasher;
        self.table.insert_unique(h, i.index() as u32, |&j| {
            hasher.hash_one(g[NodeIndex::new(j as usize)].id.as_str())
        });
    }
}

/// A graph under construction.
#[derive(Default)]
pub struct GraphBuilder {
    g: DiGraph<Node, ()>,
    index: Index,
    /// Edges whose dependency was not planned yet: (its id, dependent).
    pending: Vec<(String, NodeIndex)>,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.find(&self.g, id).is_some()
    }

    /// Make room for `nodes` more nodes and `edges` more edges (growing a
    /// million-node graph by doubling copies it twenty times).
    pub fn reserve(&mut self, nodes: usize, edges: usize) {
        self.g.reserve_nodes(nodes);
        self.g.reserve_edges(edges);
        let (g, hasher) = (&self.g, &self.index.hasher);
        self.index.table.reserve(nodes, |&j| {
            hasher.hash_one(g[NodeIndex::new(j as usize)].id.as_str())
        });
    }

    pub fn add(&mut self, node: Node) -> Result<(), GraphError> {
        self.add_with_deps(node, std::iter::empty::<&str>())
    }

    /// The node of `id`, if planned.
    pub fn find(&self, id: &str) -> Option<NodeIndex> {
        self.index.find(&self.g, id)
    }

    /// Add `node`, running after the tasks `deps` names (planned already
    /// or later; duplicates are ignored).
    pub fn add_with_deps<D: AsRef<str>>(
        &mut self,
        node: Node,
        deps: impl IntoIterator<Item = D>,
    ) -> Result<(), GraphError> {
        self.add_with_known_deps(node, &[], deps)
    }

    /// [`GraphBuilder::add_with_deps`], some dependencies given as nodes
    /// (from [`GraphBuilder::find`]).
    pub fn add_with_known_deps<D: AsRef<str>>(
        &mut self,
        node: Node,
        known: &[NodeIndex],
        deps: impl IntoIterator<Item = D>,
    ) -> Result<(), GraphError> {
        let h = self.index.hasher.hash_one(node.id.as_str());
        let g = &self.g;
        if (self.index.table)
            .find(h, |&j| g[NodeIndex::new(j as usize)].id == node.id)
            .is_some()
        {
            return Err(GraphError::Duplicate(node.id));
        }
        let i = self.g.add_node(node);
        self.index.insert(&self.g, i, h);
        let mut resolved: Vec<NodeIndex> = known.to_vec();
        for d in deps {
            let d = d.as_ref();
            match self.index.find(&self.g, d) {
                Some(j) => resolved.push(j),
                // Resolved (and deduplicated) at the seal.
                None => self.pending.push((d.to_string(), i)),
            }
        }
        resolved.sort_unstable();
        resolved.dedup();
        for j in resolved {
            // add_edge, not update_edge: the latter scans the node's edges
            // (quadratic for a node with a thousand dependents).
            self.g.add_edge(j, i, ());
        }
        Ok(())
    }

    /// `dependent` (planned already) runs after `dependency`.
    pub fn edge(&mut self, dependency: impl Into<String>, dependent: impl AsRef<str>) {
        let dependency = dependency.into();
        let Some(i) = self.index.find(&self.g, dependent.as_ref()) else {
            panic!("edge to {}, which is not planned", dependent.as_ref());
        };
        match self.index.find(&self.g, &dependency) {
            Some(j) if self.g.find_edge(j, i).is_none() => {
                self.g.add_edge(j, i, ());
            }
            Some(_) => {}
            None => self.pending.push((dependency, i)),
        }
    }

    /// Check and freeze.
    pub fn seal(mut self) -> Result<Graph, GraphError> {
        for (from, i) in std::mem::take(&mut self.pending) {
            let Some(j) = self.index.find(&self.g, &from) else {
                return Err(GraphError::Unknown {
                    from: self.g[i].id.clone(),
                    to: from,
                });
            };
            if self.g.find_edge(j, i).is_none() {
                self.g.add_edge(j, i, ());
            }
        }
        let g = self.g;
        let order = petgraph::algo::toposort(&g, None)
            .map_err(|c| GraphError::Cycle(cycle_through(&g, c.node_id(), |n: &Node| &n.id)))?;
        Ok(Graph {
            g,
            index: self.index,
            order,
        })
    }
}

/// A cycle through `start` (which toposort found on one), following
/// dependencies (incoming edges), rotated to begin at its smallest id so that the report does
/// not depend on where the search began.
pub fn cycle_through<N>(
    g: &DiGraph<N, ()>,
    start: NodeIndex,
    id: impl Fn(&N) -> &str,
) -> Vec<String> {
    // Depth-first along dependency edges, keeping the path, until an edge
    // returns to a node on it.
    let mut path = vec![start];
    let mut on_path = std::collections::HashSet::from([start]);
    let mut seen = std::collections::HashSet::from([start]);
    let mut iters = vec![g.neighbors_directed(start, Direction::Incoming).detach()];
    let cycle: Vec<NodeIndex> = loop {
        let Some(it) = iters.last_mut() else {
            return vec![id(&g[start]).to_string()];
        };
        match it.next_node(g) {
            Some(d) if on_path.contains(&d) => {
                let pos = path.iter().position(|&x| x == d).expect("on the path");
                break path[pos..].to_vec();
            }
            Some(d) if seen.insert(d) => {
                path.push(d);
                on_path.insert(d);
                iters.push(g.neighbors_directed(d, Direction::Incoming).detach());
            }
            Some(_) => {}
            None => {
                iters.pop();
                if let Some(x) = path.pop() {
                    on_path.remove(&x);
                }
            }
        }
    };
    let min = (0..cycle.len())
        .min_by_key(|&i| id(&g[cycle[i]]))
        .expect("a cycle has nodes");
    let mut ids: Vec<String> = cycle[min..]
        .iter()
        .chain(&cycle[..min])
        .map(|&i| id(&g[i]).to_string())
        .collect();
    ids.push(ids[0].clone());
    ids
}

/// A sealed, acyclic task graph.
pub struct Graph {
    g: DiGraph<Node, ()>,
    index: Index,
    order: Vec<NodeIndex>,
}

impl Graph {
    pub fn len(&self) -> usize {
        self.g.node_count()
    }
    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }
    pub fn edge_count(&self) -> usize {
        self.g.edge_count()
    }
    pub fn node(&self, i: NodeIndex) -> &Node {
        &self.g[i]
    }
    pub fn find(&self, id: &str) -> Option<NodeIndex> {
        self.index.find(&self.g, id)
    }
    /// Nodes in a topological order (dependencies first). Stable for a given
    /// plan.
    pub fn topo(&self) -> &[NodeIndex] {
        &self.order
    }
    pub fn deps(&self, i: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.g
            .edges_directed(i, Direction::Incoming)
            .map(|e| e.source())
    }
    pub fn dependents(&self, i: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.g
            .edges_directed(i, Direction::Outgoing)
            .map(|e| e.target())
    }
    /// Dependency ids, sorted (the order keys use).
    pub fn dep_ids(&self, i: NodeIndex) -> Vec<&str> {
        let mut v: Vec<&str> = self.deps(i).map(|d| self.g[d].id.as_str()).collect();
        v.sort_unstable();
        v
    }

    /// Graphviz dot; `status` colours nodes when given.
    pub fn to_dot(&self, status: &dyn Fn(&Node) -> Option<&'static str>) -> String {
        let mut s = String::from(
            "digraph mesh {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"monospace\"];\n",
        );
        for &i in &self.order {
            let n = &self.g[i];
            let color = match status(n) {
                Some("cached") | Some("up-to-date") => "color=gray50",
                Some("run") | Some("stale") | Some("never-run") => "color=orange",
                _ => "color=black",
            };
            let style = if n.pure { "rounded" } else { "rounded,bold" };
            s.push_str(&format!("  {:?} [style=\"{style}\", {color}];\n", n.id));
        }
        for &i in &self.order {
            for d in self.dep_ids(i) {
                s.push_str(&format!("  {:?} -> {:?};\n", d, self.g[i].id));
            }
        }
        s.push_str("}\n");
        s
    }

    /// Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        let name = |i: NodeIndex| format!("n{}", i.index());
        for &i in &self.order {
            let n = &self.g[i];
            let (open, close) = if n.pure { ("[", "]") } else { ("([", "])") };
            s.push_str(&format!("  {}{open}\"{}\"{close}\n", name(i), n.id));
        }
        for &i in &self.order {
            let mut deps: Vec<NodeIndex> = self.deps(i).collect();
            deps.sort_by(|a, b| self.g[*a].id.cmp(&self.g[*b].id));
            for d in deps {
                s.push_str(&format!("  {} --> {}\n", name(d), name(i)));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;
    impl Action for Never {
        fn run(&self, _ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
            Box::pin(async { Err(TaskError::new("never runs")) })
        }
    }

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            kind: "t",
            pure: true,
            inputs: Inputs::default(),
            action: Arc::new(Never),
        }
    }

    #[test]
    fn inputs_serialize_as_the_map_they_stand_for_whatever_their_order() {
        let d = |s: &str| Digest::of_bytes(s.as_bytes());
        let mut m = BTreeMap::new();
        for k in [
            "plan:clusters.b.name",
            "impl",
            "file:x \"q\"",
            "plan:clusters.a.name",
        ] {
            m.insert(k.to_string(), d(k));
        }
        // Shuffled, with an earlier duplicate that the later one replaces.
        let entries = vec![
            Input::new("plan:clusters.a.name", d("stale")),
            Input::new("plan:clusters.b.name", d("plan:clusters.b.name")),
            Input::new("impl", d("impl")),
            Input::new("plan:clusters.a.name", d("plan:clusters.a.name")),
            Input::new("file:x \"q\"", d("file:x \"q\"")),
        ];
        let inputs = Inputs::from_entries(entries);
        assert_eq!(inputs.len(), 4);
        assert_eq!(inputs.to_map(), m);
        assert_eq!(
            serde_json::to_string(&inputs).unwrap(),
            serde_json::to_string(&m).unwrap()
        );
        assert_eq!(
            crate::hash::digest_of("k", &inputs),
            crate::hash::digest_of("k", &m)
        );
        assert_eq!(inputs.get("impl"), Some(&d("impl")));
        assert!(!inputs.contains_key("nope"));
        assert_eq!(Inputs::from(m.clone()), inputs);
    }

    #[test]
    fn edges_to_tasks_planned_later_resolve_at_the_seal_once() {
        let mut b = GraphBuilder::new();
        b.add_with_deps(node("late-user"), ["early", "early", "later"])
            .unwrap();
        b.add(node("early")).unwrap();
        b.add_with_deps(node("later"), ["early", "early"]).unwrap();
        b.edge("later", "late-user");
        assert!(matches!(
            b.add(node("early")),
            Err(GraphError::Duplicate(_))
        ));
        let g = b.seal().unwrap();
        assert_eq!(g.edge_count(), 3, "each edge once");
        let user = g.find("late-user").unwrap();
        assert_eq!(g.dep_ids(user), ["early", "later"]);
        assert_eq!(g.find("nope"), None);
    }

    #[test]
    fn seal_orders_and_rejects_cycles_and_unknowns() {
        let mut b = GraphBuilder::new();
        for id in ["a", "b", "c"] {
            b.add(node(id)).unwrap();
        }
        assert_eq!(b.add(node("a")), Err(GraphError::Duplicate("a".into())));
        b.edge("a", "b");
        b.edge("b", "c");
        let g = b.seal().unwrap();
        let ids: Vec<&str> = g.topo().iter().map(|&i| g.node(i).id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(g.to_dot(&|_| None).contains("\"a\" -> \"b\""));
        assert!(g.to_mermaid().contains("n0 --> n1"));

        let mut b = GraphBuilder::new();
        b.add(node("a")).unwrap();
        b.add(node("b")).unwrap();
        b.edge("a", "b");
        b.edge("b", "a");
        assert!(matches!(b.seal(), Err(GraphError::Cycle(_))));

        let mut b = GraphBuilder::new();
        b.add(node("a")).unwrap();
        b.edge("zzz", "a");
        assert!(matches!(b.seal(), Err(GraphError::Unknown { .. })));
    }
}
