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

use crate::hash::Digest;
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
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

/// One node.
pub struct Node {
    pub id: String,
    /// Task kind, e.g. `pki.intermediate` (the part of the id before `:`).
    pub kind: &'static str,
    /// Pure tasks run offline; the others act on clusters.
    pub pure: bool,
    /// Input manifest: input name → digest.
    pub inputs: BTreeMap<String, Digest>,
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

/// A graph under construction.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<Node>,
    index: HashMap<String, usize>,
    edges: Vec<(String, String)>,
}

impl GraphBuilder {
    pub fn new() -> GraphBuilder {
        GraphBuilder::default()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    pub fn add(&mut self, node: Node) -> Result<(), GraphError> {
        if self.index.contains_key(&node.id) {
            return Err(GraphError::Duplicate(node.id));
        }
        self.index.insert(node.id.clone(), self.nodes.len());
        self.nodes.push(node);
        Ok(())
    }

    /// `dependent` runs after `dependency`.
    pub fn edge(&mut self, dependency: impl Into<String>, dependent: impl Into<String>) {
        self.edges.push((dependency.into(), dependent.into()));
    }

    /// Check and freeze.
    pub fn seal(self) -> Result<Graph, GraphError> {
        let mut g = DiGraph::with_capacity(self.nodes.len(), self.edges.len());
        for n in self.nodes {
            g.add_node(n);
        }
        let mut seen = std::collections::HashSet::with_capacity(self.edges.len());
        for (from, to) in &self.edges {
            let a = *self.index.get(from).ok_or_else(|| GraphError::Unknown {
                from: to.clone(),
                to: from.clone(),
            })?;
            let b = *self.index.get(to).ok_or_else(|| GraphError::Unknown {
                from: from.clone(),
                to: to.clone(),
            })?;
            // add_edge, not update_edge: the latter scans the node's edges
            // (quadratic for a node with a thousand dependents).
            if seen.insert((a, b)) {
                g.add_edge(NodeIndex::new(a), NodeIndex::new(b), ());
            }
        }
        let order = petgraph::algo::toposort(&g, None)
            .map_err(|c| GraphError::Cycle(cycle_through(&g, c.node_id(), |n: &Node| &n.id)))?;
        let index = self
            .index
            .into_iter()
            .map(|(k, v)| (k, NodeIndex::new(v)))
            .collect();
        Ok(Graph { g, index, order })
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
    index: HashMap<String, NodeIndex>,
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
        self.index.get(id).copied()
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
            inputs: BTreeMap::new(),
            action: Arc::new(Never),
        }
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
