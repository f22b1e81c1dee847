//! The task kinds as a graph: the default DAG pinned as a Mermaid snapshot
//! (the graph documents itself), and each kind's `VERSION` reaching only
//! its own tasks.

mod common;
use common::default_plan;
use mesh::planner::{Build, build, build_bumped};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn plan_of(text: &str) -> Arc<mesh::plan::Plan> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    Arc::new(mesh::plan::parse("plan.toml", text, dir).unwrap())
}

/// id → input manifest of every node.
fn inputs(g: &mesh::graph::Graph) -> BTreeMap<String, BTreeMap<String, mesh::hash::Digest>> {
    g.topo()
        .iter()
        .map(|&i| (g.node(i).id.clone(), g.node(i).inputs.to_map()))
        .collect()
}

/// The tasks whose own inputs differ once `kinds` are bumped.
fn touched_by_bump(kinds: &[&str]) -> BTreeSet<String> {
    let plan = plan_of(&default_plan());
    let before = inputs(&build(&plan, Build::Live).unwrap());
    let after = inputs(&build_bumped(&plan, Build::Live, kinds).unwrap());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    before
        .iter()
        .filter(|(id, i)| after[*id] != **i)
        .map(|(id, _)| id.clone())
        .collect()
}

#[test]
fn bumping_one_kind_changes_only_its_own_tasks_keys() {
    // A live kind: only its tasks; never cluster:<c> (a rerun recreates the
    // kind cluster). Its dependents rerun only if its output changes (early
    // cutoff), which their keys see through its output digest.
    assert_eq!(
        touched_by_bump(&["gateway"]),
        BTreeSet::from(["gateway:east".to_string(), "gateway:west".to_string()])
    );
    assert_eq!(
        touched_by_bump(&["istiod"]),
        BTreeSet::from(["istiod:east".to_string(), "istiod:west".to_string()])
    );
    // A render kind.
    assert_eq!(
        touched_by_bump(&["render.app"]),
        [
            "render.app:curl:east",
            "render.app:curl:west",
            "render.app:helloworld:east",
            "render.app:helloworld:west"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );
    assert_eq!(
        touched_by_bump(&["cluster"]),
        BTreeSet::from(["cluster:east".to_string(), "cluster:west".to_string()])
    );
    for kind in [
        "net.alloc",
        "pki.root",
        "pki.intermediate",
        "render.kind",
        "render.cni",
        "cni",
        "lb",
        "render.cacerts",
        "cacerts",
        "render.istio",
        "render.gateway",
        "remote-secret",
        "render.namespace",
        "namespace",
        "app",
    ] {
        let touched = touched_by_bump(&[kind]);
        assert!(!touched.is_empty(), "{kind} has no tasks");
        assert!(
            touched.iter().all(|id| id.split(':').next() == Some(kind)),
            "bumping {kind} touched {touched:?}"
        );
    }
}

#[test]
fn default_dag() {
    let plan = plan_of(&default_plan());
    insta::assert_snapshot!(
        "default_dag_live",
        build(&plan, Build::Live).unwrap().to_mermaid()
    );
    insta::assert_snapshot!(
        "default_dag_offline",
        build(&plan, Build::Offline).unwrap().to_mermaid()
    );
}

#[test]
fn an_offline_graph_holds_no_live_node() {
    let plan = plan_of(&default_plan());
    let g = build(&plan, Build::Offline).unwrap();
    assert!(g.topo().iter().all(|&i| g.node(i).pure));
    let live = build(&plan, Build::Live).unwrap();
    assert!(live.len() > g.len());
}

#[test]
fn a_remote_gateway_waits_for_its_remote_secret() {
    // The remote's injection webhook has no CA bundle until the primary
    // holds the remote secret: the remote's gateway pods come after it.
    let plan = plan_of(&common::primary_remote(&default_plan()));
    let g = build(&plan, Build::Live).unwrap();
    let gw = g.find("gateway:west").unwrap();
    assert!(
        g.dep_ids(gw).contains(&"remote-secret:west->east"),
        "{:?}",
        g.dep_ids(gw)
    );
    // The primary's gateway does not wait for it (the remote needs the
    // primary's gateway address first).
    let gw = g.find("gateway:east").unwrap();
    assert!(
        !g.dep_ids(gw)
            .iter()
            .any(|d| d.starts_with("remote-secret:"))
    );
}
