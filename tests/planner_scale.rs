//! Quadratic plans stay cheap (issue 13): an offline plan builds no live
//! task at all, not even its id, however many remote secrets the topology
//! implies; and what it answers about live ids instead
//! (`kinds::live_exists`, for a user task's `after`) agrees with the live
//! graph exactly.

mod common;
use common::{default_plan, primary_remote};
use mesh::kinds::live_exists;
use mesh::planner::{Build, build, build_counted};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

fn plan_of(text: &str) -> Arc<mesh::plan::Plan> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    Arc::new(mesh::plan::parse("plan.toml", text, dir).unwrap())
}

/// `n` kind clusters in multi-primary, helloworld and curl on each, and a
/// user task after `after`.
fn primaries(n: usize, after: &str) -> String {
    let mut s = String::from(
        "[mesh]\nid = \"scale\"\nistio = \"1.28.0\"\ntopology = \"multi-primary\"\nlb_size = 8\n\n",
    );
    for i in 0..n {
        writeln!(
            s,
            "[clusters.c{i:04}]\nnetwork = \"net{i}\"\npod_subnet = \"10.{}.{}.0/24\"\nservice_subnet = \"100.{}.{}.0/24\"\n",
            i / 256,
            i % 256,
            64 + i / 256,
            i % 256
        )
        .unwrap();
    }
    let all = |v: &str| {
        (0..n)
            .map(|i| format!("c{i:04} = \"{v}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        s,
        "[apps.helloworld]\nmanifest = \"tasks/apps/helloworld.yaml\"\nnamespace = \"sample\"\nplacement = {{ {} }}\n",
        all("v1")
    )
    .unwrap();
    writeln!(
        s,
        "[tasks.late]\ncluster = \"c0000\"\ncommand = [\"true\"]\nafter = [\"{after}\"]"
    )
    .unwrap();
    s
}

#[test]
fn an_offline_plan_of_200_primaries_builds_no_live_task() {
    // 39,800 remote secrets in the live graph; the user task names one.
    let plan = plan_of(&primaries(200, "remote-secret:c0007->c0123"));
    let (offline, built) = build_counted(&plan, Build::Offline, &[]).unwrap();
    assert_eq!(built, 0, "an offline plan built {built} live tasks");
    let pure_offline = (0..offline.len())
        .filter(|&i| offline.node(petgraph::graph::NodeIndex::new(i)).pure)
        .count();
    assert_eq!(pure_offline, offline.len(), "every offline task is pure");

    // The live graph has the same pure tasks, plus every live one.
    let (live, built) = build_counted(&plan, Build::Live, &[]).unwrap();
    let pure: Vec<&str> = live
        .topo()
        .iter()
        .map(|&i| live.node(i))
        .filter(|n| n.pure)
        .map(|n| n.id.as_str())
        .collect();
    assert_eq!(pure.len(), offline.len());
    assert!(pure.iter().all(|id| offline.find(id).is_some()));
    assert_eq!(built, live.len() - pure.len());
    assert!(built > 200 * 199, "every pair has its remote secret");
    assert!(live.find("remote-secret:c0007->c0123").is_some());
}

#[test]
fn an_offline_plan_checks_after_against_live_tasks_it_does_not_build() {
    for (after, ok) in [
        ("remote-secret:c0001->c0002", true),
        ("remote-secret:c0002->c0002", false),
        ("remote-secret:c0001->c0009", false),
        ("istiod:c0003", true),
        ("app:helloworld:c0002", true),
        ("app:curl:c0002", false),
        ("namespace:sample:c0001", true),
        ("net.discover", true),
        ("cluster:c0004", false),
    ] {
        let text = primaries(4, after);
        for target in [Build::Offline, Build::Live] {
            let got = mesh::plan::parse(
                "plan.toml",
                &text,
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
            )
            .map_err(|e| e.to_string())
            .and_then(|p| {
                build(&Arc::new(p), target)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            assert_eq!(got.is_ok(), ok, "after = {after:?}, {target:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.contains("unknown task"), "{e}");
            }
        }
    }
}

/// Every id a live task of `plan` could plausibly have: each kind with each
/// cluster, each app or namespace and cluster, each ordered pair.
fn candidates(plan: &mesh::plan::Plan) -> BTreeSet<String> {
    let clusters: Vec<&str> = plan
        .clusters
        .keys()
        .map(String::as_str)
        .chain(["nosuch"])
        .collect();
    let mut names: BTreeSet<&str> = plan.apps.keys().map(String::as_str).collect();
    names.extend(plan.apps.values().map(|a| a.namespace.as_str()));
    names.extend(plan.tasks.keys().map(String::as_str));
    names.insert("nosuch");
    let mut out = BTreeSet::from(["net.discover".to_string(), "nosuch".to_string()]);
    for c in &clusters {
        for k in [
            "cluster", "cni", "lb", "cacerts", "istiod", "gateway", "task", "nosuch",
        ] {
            out.insert(format!("{k}:{c}"));
        }
        for d in &clusters {
            out.insert(format!("remote-secret:{c}->{d}"));
        }
        for n in &names {
            out.insert(format!("app:{n}:{c}"));
            out.insert(format!("namespace:{n}:{c}"));
            out.insert(format!("task:{n}"));
        }
    }
    out
}

#[test]
fn live_exists_answers_exactly_what_the_live_graph_holds() {
    let default = default_plan();
    let existing = default.replace(
        "[clusters.west]\nprovider = \"kind\"\nnetwork = \"network2\"\npod_subnet = \"10.21.0.0/16\"\nservice_subnet = \"172.22.0.0/16\"\nworkers = 1\ncni = \"cilium\"",
        "[clusters.west]\nprovider = \"kubeconfig\"\ncontext = \"kind-west\"\nnetwork = \"network2\"",
    );
    assert_ne!(existing, default);
    let with_task = format!(
        "{default}\n[tasks.extras]\ncluster = \"west\"\ncommand = [\"true\"]\nafter = [\"istiod:west\"]\n"
    );
    let ambient = default.replace("mode = \"sidecar\"", "mode = \"ambient\"");
    for text in [
        default.clone(),
        primary_remote(&default),
        existing.clone(),
        primary_remote(&existing),
        with_task,
        ambient,
        primaries(5, "istiod:c0001"),
    ] {
        let plan = plan_of(&text);
        let live = build(&plan, Build::Live).unwrap();
        let mut live_ids = BTreeSet::new();
        for &i in live.topo() {
            let n = live.node(i);
            if !n.pure {
                assert!(live_exists(&plan, &n.id), "{} is live but not known", n.id);
                live_ids.insert(n.id.clone());
            }
        }
        for id in candidates(&plan) {
            assert_eq!(
                live_exists(&plan, &id),
                live_ids.contains(&id),
                "live_exists({id:?}) disagrees with the live graph"
            );
        }
    }
}
