//! User tasks: `task:<name>`, from `[tasks.<name>]` in the plan.
//!
//! A user task applies a manifest, installs a Helm chart, or runs a
//! command (with `KUBECONFIG` set to its cluster's credentials in a 0600
//! temp file, `MESH_CLUSTER` and, for existing clusters,
//! `MESH_KUBE_CONTEXT`), on one cluster, after that cluster exists and after
//! every task its `after` list names. They are hashed and cached like
//! built-in tasks: the task's table and the bytes of the files it names are
//! its inputs. An `after` entry must name a task of the graph; a cycle among
//! user tasks is found by the graph's seal and reported here ([`cycle`]),
//! at the entry that closes it.

use super::step::{Chart, Receipt, Src, Step, Wait};
use super::{LiveSpec, Planner, Slice, TaskId, cluster};
use crate::access::Target;
use crate::diag::Diag;
use crate::graph::{Action, BoxFuture, Ctx, OutFile, TaskError};
use crate::plan::{Plan, Provider, UserAction, UserTask};
use crate::providers::helm;
use std::path::PathBuf;
use std::sync::Arc;

pub const VERSION: u32 = 1;

/// `task:<name>`
pub fn id(name: &str) -> TaskId {
    TaskId::new(format!("task:{name}"))
}

/// Plan every user task; unknown `after` targets are diagnostics.
pub fn plan(p: &mut Planner) -> Vec<Diag> {
    let plan = p.plan;
    let mut errors = Vec::new();
    for t in plan.tasks.values() {
        let mut after = vec![];
        for (a, span) in &t.after {
            let known = match a.strip_prefix("task:") {
                Some(name) => plan.tasks.contains_key(name),
                None => p.knows(a),
            };
            if known {
                after.push(TaskId::new(a.clone()));
                continue;
            }
            let hint = if plan.tasks.contains_key(a) {
                format!("user tasks are named task:<name>: did you mean \"task:{a}\"?")
            } else {
                "after names task ids as `mesh graph` shows them, e.g. \"istiod:east\" or \"task:<name>\"".into()
            };
            errors.push(
                Diag::new(format!("task {} runs after unknown task {a:?}", t.name))
                    .at(span.clone(), "no such task")
                    .hint(hint),
            );
        }
        p.live(|| id(&t.name), "task", VERSION, || live(plan, t, after));
    }
    // Offline, user tasks are not in the graph: check their edges alone.
    errors.extend(cycles(plan));
    errors
}

/// A cycle among user tasks' `after` edges, found as the graph's seal
/// finds one (user tasks only: built-in tasks never depend on them).
fn cycles(plan: &Plan) -> Option<Diag> {
    use petgraph::graph::{DiGraph, NodeIndex};
    let mut g: DiGraph<String, ()> = DiGraph::new();
    let index: std::collections::BTreeMap<&str, NodeIndex> = plan
        .tasks
        .keys()
        .map(|n| (n.as_str(), g.add_node(id(n).into())))
        .collect();
    for t in plan.tasks.values() {
        for (a, _) in &t.after {
            if let Some(&dep) = a.strip_prefix("task:").and_then(|n| index.get(n)) {
                g.add_edge(dep, index[t.name.as_str()], ());
            }
        }
    }
    let start = petgraph::algo::toposort(&g, None).err()?.node_id();
    let path = crate::graph::cycle_through(&g, start, |s: &String| s);
    Some(cycle(plan, &path))
}

fn live(plan: &Plan, t: &UserTask, after: Vec<TaskId>) -> LiveSpec {
    let c = &plan.clusters[&t.cluster];
    let mut files = t.inputs.clone();
    match &t.action {
        UserAction::Manifest { path } => files.push(path.clone()),
        UserAction::Chart {
            values: Some(v), ..
        } => files.push(v.clone()),
        _ => {}
    }
    let slice = Slice::new()
        .put("task", format!("tasks.{}", t.name), t)
        .put(
            "cluster",
            format!("clusters.{}", t.cluster),
            serde_json::json!({"name": c.name, "provider": c.provider, "context": c.context}),
        );
    let mut deps = after;
    if c.provider == Provider::Kind {
        deps.push(cluster::id(&c.name));
    }
    let target = Target::of(c);
    let action: Arc<dyn Action> = match &t.action {
        UserAction::Manifest { path } => Step::on(target)
            .manifests(vec![Src::Text(plan.file(path).text.clone())])
            .waits(vec![Wait::AppliedDeployments])
            .action(),
        UserAction::Chart {
            chart,
            repo,
            version,
            release,
            namespace,
            values,
        } => Step::on(target)
            .charts(vec![Chart {
                release: helm::Release {
                    name: release.clone(),
                    namespace: namespace.clone(),
                    chart: chart.clone(),
                    repo: repo.clone(),
                    version: version.clone(),
                },
                values: values
                    .as_ref()
                    .map(|v| Src::Text(plan.file(v).text.clone())),
            }])
            .action(),
        UserAction::Command { argv } => Arc::new(Command {
            target,
            argv: argv.clone(),
            dir: plan.dir.clone(),
        }),
    };
    LiveSpec {
        slice,
        files,
        deps,
        action,
    }
}

/// A dependency cycle (ids in "depends on" order, the first repeated last)
/// as a diagnostic at the `after` entry that closes it. Built-in tasks never
/// depend on user tasks, so every cycle is made of user tasks.
pub fn cycle(plan: &Plan, path: &[String]) -> Diag {
    let mut d = Diag::new(format!("cycle in `after`: {}", path.join(" -> ")));
    if let [.., last, first] = path {
        let closing = last
            .strip_prefix("task:")
            .and_then(|n| plan.tasks.get(n))
            .and_then(|t| t.after.iter().find(|(a, _)| a == first));
        if let Some((_, span)) = closing {
            d = d.at(span.clone(), "closes the cycle");
        }
    }
    d.hint("remove one of these `after` entries")
}

/// `task:<name>` running a command, with KUBECONFIG set to its cluster.
#[derive(Clone, Debug)]
pub struct Command {
    pub target: Target,
    pub argv: Vec<String>,
    pub dir: PathBuf,
}

impl Action for Command {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        let this = self.clone();
        Box::pin(async move {
            let access = cluster::access(&this.target, &ctx)?;
            let kc = access.file()?;
            let mut env: Vec<(&str, &std::ffi::OsStr)> = vec![
                ("KUBECONFIG", kc.path().as_os_str()),
                ("MESH_CLUSTER", this.target.name.as_ref()),
            ];
            if let Some(c) = access.context() {
                env.push(("MESH_KUBE_CONTEXT", c.as_ref()));
            }
            crate::providers::command(&this.argv, &this.dir, &env).await?;
            Ok(Receipt::default().files())
        })
    }
}
