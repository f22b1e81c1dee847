//! Every example plan under `examples/`, end to end: built offline, then
//! brought up in the fake world (fake kind, helm and docker; fake API
//! servers), verified there, and rebuilt as a no-op. Each example is a
//! user's journey (README.md, "Examples"); this is what keeps them true.

mod common;
mod fake;

use fake::{World, mesh};
use std::path::{Path, PathBuf};

const EXAMPLES: &[&str] = &[
    "existing-clusters",
    "locality-failover",
    "multi-primary-metallb",
    "playground-ambient",
    "playground-sidecar",
    "shared-control-plane",
    "workshop",
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A copy of an example: runs write `cache/`, `out/` and `state/` beside
/// the plan.
fn example(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    common::copy_dir(&examples_dir().join(name), d.path());
    d
}

/// The example's clusters: (name, provider).
fn clusters(dir: &Path) -> Vec<(String, String)> {
    let plan: toml::Table = std::fs::read_to_string(dir.join("plan.toml"))
        .unwrap()
        .parse()
        .unwrap();
    plan["clusters"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(n, c)| {
            let provider = c.get("provider").and_then(|p| p.as_str()).unwrap_or("kind");
            (n.clone(), provider.to_string())
        })
        .collect()
}

fn offline(dir: &Path) -> common::Out {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["build", "--offline", "--json"])
        .current_dir(dir)
        .env("MESH_PLAN", dir)
        .output()
        .unwrap();
    o.into()
}

#[test]
fn the_examples_are_the_ones_tested_here() {
    let mut found: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("plan.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found, EXAMPLES,
        "each example needs its fake-world test below"
    );
}

#[test]
fn every_example_builds_offline_and_a_rerun_is_a_no_op() {
    for name in EXAMPLES {
        let d = example(name);
        let o = offline(d.path());
        assert_eq!(o.code, 0, "{name}: {}", o.stderr);
        assert!(!o.with("ran").is_empty(), "{name}");
        let o = offline(d.path());
        assert_eq!(o.code, 0, "{name}: {}", o.stderr);
        assert_eq!(o.with("ran"), Vec::<String>::new(), "{name}");
    }
}

/// Bring an example up in a fake world made for its clusters, verify it,
/// and check that a rebuild changes nothing.
fn bring_up(name: &str) -> (World, tempfile::TempDir) {
    bring_up_with(name, |_| {})
}

fn bring_up_with(name: &str, prepare: impl FnOnce(&World)) -> (World, tempfile::TempDir) {
    let d = example(name);
    let cs = clusters(d.path());
    let names: Vec<&str> = cs.iter().map(|(n, _)| n.as_str()).collect();
    let w = World::new(&names);
    prepare(&w);
    // Existing clusters are up already, reached through KUBECONFIG.
    let existing: Vec<String> = cs
        .iter()
        .filter(|(_, p)| p == "kubeconfig")
        .map(|(n, _)| {
            w.bring_up(n);
            w.state()
                .join(format!("api/{n}/kubeconfig.json"))
                .display()
                .to_string()
        })
        .collect();
    if !existing.is_empty() {
        w.set_env("KUBECONFIG", &existing.join(":"));
    }
    // Ambient's Gateway API CRDs from a file, not the network.
    let crds = d.path().join("gateway-api-crds.yaml");
    std::fs::write(&crds, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gateways.gateway.networking.k8s.io\nspec:\n  group: gateway.networking.k8s.io\n").unwrap();
    w.set_env("MESH_GATEWAY_API_CRDS", crds.to_str().unwrap());

    let o = mesh(&w, d.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{name}: bring-up failed:\n{}", o.stderr);
    let o = mesh(&w, d.path(), &["verify", "--wait", "30"]);
    assert_eq!(
        o.code, 0,
        "{name}: verify failed:\n{}\n{}",
        o.stdout, o.stderr
    );
    assert!(o.stdout.contains("verify: passed"), "{}", o.stdout);
    let before = w.api_mutations();
    let o = mesh(&w, d.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{name}: {}", o.stderr);
    assert_eq!(o.with("ran"), Vec::<String>::new(), "{name}: not a no-op");
    assert_eq!(
        w.api_mutations(),
        before,
        "{name}: the no-op changed the clusters"
    );
    (w, d)
}

#[test]
fn playground_sidecar() {
    let (w, _d) = bring_up("playground-sidecar");
    for (c, zone) in [("cluster1", "zone1"), ("cluster2", "zone2")] {
        for n in w.api(c).list("", "nodes") {
            assert_eq!(n["metadata"]["labels"]["topology.kubernetes.io/zone"], zone);
        }
    }
}

#[test]
fn playground_ambient() {
    let (w, _d) = bring_up("playground-ambient");
    for c in ["cluster1", "cluster2"] {
        assert!(
            w.api(c)
                .get("apps", "daemonsets", "istio-system", "ztunnel")
                .is_some(),
            "{c}: no ztunnel"
        );
    }
}

#[test]
fn multi_primary_metallb() {
    let (w, _d) = bring_up("multi-primary-metallb");
    for c in ["cluster1", "cluster2"] {
        assert_eq!(
            w.api(c).list("metallb.io", "ipaddresspools").len(),
            1,
            "{c}"
        );
        assert!(
            w.api(c)
                .get("apps", "deployments", "istio-system", "istiod")
                .is_some()
        );
    }
}

#[test]
fn shared_control_plane() {
    let (w, _d) = bring_up("shared-control-plane");
    // One istiod, in the primary; the split lives there too.
    assert!(
        w.api("cluster1")
            .get("apps", "deployments", "istio-system", "istiod")
            .is_some()
    );
    assert!(
        w.api("cluster2")
            .get("apps", "deployments", "istio-system", "istiod")
            .is_none()
    );
    let vs = w
        .api("cluster1")
        .get(
            "networking.istio.io",
            "virtualservices",
            "sample",
            "helloworld",
        )
        .expect("the traffic split is applied to the primary");
    assert_eq!(vs["spec"]["http"][0]["route"][0]["weight"], 80);
}

#[test]
fn locality_failover() {
    let (w, d) = bring_up("locality-failover");
    let o = mesh(
        &w,
        d.path(),
        &["verify", "--failover", "--json", "--wait", "30"],
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let j = o.json();
    assert_eq!(j["apps"][0]["local_share"]["cluster1"], 1.0, "{j:#}");
    for c in ["cluster1", "cluster2"] {
        assert!(
            w.api(c)
                .get("apps", "deployments", "istio-system", "prometheus-server")
                .is_some(),
            "{c}: Prometheus"
        );
    }
    assert!(
        w.api("cluster1")
            .get(
                "",
                "secrets",
                "istio-system",
                "kiali-remote-cluster-secret-cluster2"
            )
            .is_some(),
        "Kiali in cluster1 reads cluster2"
    );
    let f = &j["failover"][0];
    assert_eq!(f["down"], "cluster1");
    assert_eq!(
        f["during"]["cluster1"]["clusters"],
        serde_json::json!({"cluster2": 20}),
        "{f:#}"
    );
}

#[test]
fn workshop() {
    // Its Kustomize overlays are applied by a real kubectl, against the
    // fake API servers.
    let kubectl = match common::kubectl() {
        Ok(k) => k,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let (w, d) = bring_up_with("workshop", |w| {
        let bin = w.dir.path().join("kubectl-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(&kubectl, bin.join("kubectl")).unwrap();
        let path = w.env().into_iter().find(|(k, _)| k == "PATH").unwrap().1;
        w.set_env("PATH", &format!("{}:{path}", bin.display()));
        w.set_env("HOME", w.dir.path().to_str().unwrap());
    });
    for (c, _) in [("cluster1", ()), ("cluster2", ())] {
        let s = w
            .api(c)
            .get("", "configmaps", "shop", "shop-settings")
            .unwrap_or_else(|| panic!("{c}: the overlay was not applied"));
        assert_eq!(s["data"]["cluster"], c, "{s}");
        assert_eq!(s["data"]["currency"], "EUR", "{s}");
    }
    // An edit in the overlays' base reruns both overlay tasks.
    let base = d.path().join("kustomize/base/settings.yaml");
    let text = std::fs::read_to_string(&base).unwrap();
    std::fs::write(&base, text.replace("currency: EUR", "currency: INR")).unwrap();
    let o = mesh(&w, d.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.with("ran"),
        ["task:settings-cluster1", "task:settings-cluster2"]
    );
    assert_eq!(
        w.api("cluster2")
            .get("", "configmaps", "shop", "shop-settings")
            .unwrap()["data"]["currency"],
        "INR"
    );
    for c in ["cluster1", "cluster2"] {
        assert_eq!(
            w.api(c).list("", "nodes").len(),
            3,
            "{c}: 1 control plane + 2 workers"
        );
    }
    // The split: the frontend in cluster1, the product and its database in
    // cluster2, each app from its directory.
    assert!(
        w.api("cluster1")
            .get("apps", "deployments", "shop", "frontend")
            .is_some()
    );
    assert!(
        w.api("cluster1")
            .get("", "services", "istio-system", "istio-ingressgateway")
            .is_some(),
        "the frontend's ingress gateway"
    );
    assert!(
        w.api("cluster1")
            .get("networking.istio.io", "virtualservices", "shop", "frontend")
            .is_some()
    );
    assert!(
        w.api("cluster1")
            .get("", "configmaps", "shop", "frontend")
            .is_some()
    );
    assert!(
        w.api("cluster2")
            .get("apps", "deployments", "shop", "db")
            .is_some()
    );
    assert!(
        w.api("cluster1")
            .get("apps", "deployments", "shop", "db")
            .is_none()
    );
    // A new file in the product's directory reruns the product's tasks only.
    std::fs::write(
        d.path().join("apps/product/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: product\ndata:\n  tier: gold\n",
    )
    .unwrap();
    let o = mesh(&w, d.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.with("ran"),
        ["app:product:cluster2", "render.app:product:cluster2"]
    );
    assert!(
        w.api("cluster2")
            .get("", "configmaps", "shop", "product")
            .is_some()
    );
}

#[test]
fn existing_clusters() {
    let (w, _d) = bring_up("existing-clusters");
    assert!(
        w.tool_log().iter().all(|c| c[0] != "kind"),
        "kind was used on existing clusters"
    );
}
