//! Live bring-up end to end: the real `mesh` binary against fake kind, helm
//! and docker executables and fake Kubernetes API servers on 127.0.0.1 (see
//! tests/fake). Each test asserts what the clusters end up holding.

mod common;
use common::{default_plan, primary_remote};
mod fake;

use fake::{World, mesh, project};
use serde_json::Value;
use std::sync::atomic::Ordering::SeqCst;

fn b64d(s: &Value) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn sidecar_multi_primary_bring_up() {
    let w = World::new(&["east", "west"]);
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let ran = o.with("ran");
    assert!(
        ran.contains(&"remote-secret:east->west".to_string()),
        "{ran:?}"
    );
    assert_eq!(w.kind_clusters(), ["east", "west"]);

    for (c, other, net) in [("east", "west", "network1"), ("west", "east", "network2")] {
        let api = w.api(c);
        // cacerts equals the PKI, before istiod.
        let cacerts = api
            .get("", "secrets", "istio-system", "cacerts")
            .expect("cacerts");
        for f in [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ] {
            let want = std::fs::read_to_string(p.path().join(format!("out/pki/{c}/{f}"))).unwrap();
            assert_eq!(b64d(&cacerts["data"][f]).trim(), want.trim(), "{c} {f}");
        }
        let ns = api
            .get("", "namespaces", "", "istio-system")
            .expect("istio-system");
        assert_eq!(ns["metadata"]["labels"]["topology.istio.io/network"], net);
        // The east-west gateway: ports and the pinned address.
        let svc = api
            .get("", "services", "istio-system", "istio-eastwestgateway")
            .expect("gateway service");
        let ports: Vec<u64> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [15021, 15443, 15012, 15017]);
        let ranges: Value = serde_json::from_str(
            &std::fs::read_to_string(p.path().join("out/net/lb-ranges.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            svc["status"]["loadBalancer"]["ingress"][0]["ip"],
            ranges["ranges"][c]["gateway_ip"]
        );
        assert!(
            api.get(
                "networking.istio.io",
                "gateways",
                "istio-system",
                "cross-network-gateway"
            )
            .is_some()
        );
        // The remote secret for the other cluster: internal server, reader token.
        let rs = api
            .get(
                "",
                "secrets",
                "istio-system",
                &format!("istio-remote-secret-{other}"),
            )
            .expect("remote secret");
        assert_eq!(rs["metadata"]["labels"]["istio/multiCluster"], "true");
        assert_eq!(
            rs["metadata"]["annotations"]["networking.istio.io/cluster"],
            other
        );
        let kc = b64d(&rs["data"][other]);
        assert!(
            kc.contains(&format!("https://{other}-control-plane:6443")),
            "{kc}"
        );
        assert!(!kc.contains("127.0.0.1"));
        assert!(kc.contains(&format!(
            "fake-token-{other}-istio-reader-service-account-istio-remote-secret-token"
        )));
        // Apps with injection.
        let sample = api
            .get("", "namespaces", "", "sample")
            .expect("sample namespace");
        assert_eq!(sample["metadata"]["labels"]["istio-injection"], "enabled");
        let version = if c == "east" { "v1" } else { "v2" };
        assert!(
            api.get(
                "apps",
                "deployments",
                "sample",
                &format!("helloworld-{version}")
            )
            .is_some()
        );
        assert!(api.get("apps", "deployments", "sample", "curl").is_some());
        // Helm releases with the rendered values.
        let rel = w.releases(c);
        for r in [
            "kube-system/cilium",
            "istio-system/istio-base",
            "istio-system/istiod",
            "istio-system/istio-eastwestgateway",
        ] {
            assert_eq!(rel[r]["status"], "deployed", "{c} {r}");
        }
        assert_eq!(
            rel["istio-system/istiod"]["values"]["global"]["network"],
            net
        );
    }
    // Secrets are not in the output.
    assert!(!o.stdout.contains("fake-token") && !o.stderr.contains("fake-token"));
    assert!(!o.stderr.contains("PRIVATE KEY"));

    // A no-op rerun: probes only, nothing changed.
    w.clear_log();
    for c in ["east", "west"] {
        w.api(c).calls.lock().unwrap().clear();
        w.api(c).mesh_connections.store(0, SeqCst);
    }
    let before = w.api_mutations();
    let o = mesh(&w, p.path(), &["build", "--json", "--trace", "trace.json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").is_empty(), "{:?}", o.with("ran"));
    assert_eq!(w.mutating_tool_calls(), Vec::<Vec<String>>::new());
    assert_eq!(w.api_mutations(), before, "a no-op rerun changed objects");
    // The trace shows each probe when and as long as it ran (an API round
    // trip at least), not as a point at the build's start.
    let trace: Value =
        serde_json::from_str(&std::fs::read_to_string(p.path().join("trace.json")).unwrap())
            .unwrap();
    let probed = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "cluster:east")
        .unwrap();
    assert_eq!(probed["cat"], "cached", "{probed}");
    assert!(
        probed["ts"].as_u64().unwrap() > 0 && probed["dur"].as_u64().unwrap() > 1,
        "{probed}"
    );
    // Discovery once per group-version and cluster, not once per task.
    for c in ["east", "west"] {
        let calls = w.api(c).calls.lock().unwrap().clone();
        let mut discovery: Vec<&String> = calls
            .iter()
            .filter(|l| {
                let path = l.split(' ').nth(1).unwrap();
                path == "/api/v1" || (path.starts_with("/apis/") && path.matches('/').count() == 3)
            })
            .collect();
        let all = discovery.len();
        discovery.sort();
        discovery.dedup();
        assert_eq!(all, discovery.len(), "{c}: {calls:#?}");
        assert!(all >= 3, "{c}: {calls:#?}");
        // Probes list each kind of object in a namespace once (metadata
        // only), shared by every task that owns such objects: no Secret
        // is fetched by name, and no list is made twice.
        assert!(
            !calls.iter().any(|l| l.contains("/secrets/")),
            "{c}: {calls:#?}"
        );
        let mut lists: Vec<&str> = calls
            .iter()
            .filter_map(|l| l.strip_prefix("GET ")?.split(' ').next())
            .filter(|path| {
                let bare = path.split('?').next().unwrap_or("");
                bare.ends_with("/secrets")
                    || bare.ends_with("/services")
                    || bare.ends_with("/namespaces")
            })
            .collect();
        let all = lists.len();
        lists.sort();
        lists.dedup();
        assert_eq!(all, lists.len(), "{c}: {calls:#?}");
    }
}

/// Every task that talks to a cluster gets the one client made for it, so
/// a connection one task opened (a TLS handshake, a millisecond or more of
/// CPU) serves the next: three clients asked for one after another make
/// one connection, not three. A new runtime starts afresh (the old one's
/// connections died with it).
#[test]
fn clients_for_one_cluster_share_their_connections() {
    let w = World::new(&["east"]);
    let api = w.api("east");
    api.down.store(false, SeqCst);
    let kc = std::fs::read_to_string(w.state().join("api/east/kubeconfig.json")).unwrap();
    let rt = || {
        mesh::k8s::forget_discovery();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let three = || async {
        for _ in 0..3 {
            let conn = mesh::k8s::connect(&kc, None, "east").await.unwrap();
            conn.apiserver_version().await.unwrap();
        }
    };
    rt().block_on(three());
    assert_eq!(api.mesh_connections.load(SeqCst), 1);
    rt().block_on(three());
    assert_eq!(api.mesh_connections.load(SeqCst), 2);
}

/// Every one of `wants` is in `stderr`.
fn says_all(stderr: &str, wants: &[&str]) {
    for want in wants {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
}

/// Ambient's Gateway API CRDs from a file in the project, not the network.
fn use_gateway_api_crds_file(w: &World, dir: &std::path::Path) {
    let crds = dir.join("gateway-api-crds.yaml");
    std::fs::write(&crds, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gateways.gateway.networking.k8s.io\nspec:\n  group: gateway.networking.k8s.io\n").unwrap();
    w.set_env("MESH_GATEWAY_API_CRDS", crds.to_str().unwrap());
}

fn up(w: &World, plan: &str) -> tempfile::TempDir {
    let p = project(plan);
    let o = mesh(w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "bring-up failed:\n{}", o.stderr);
    p
}

fn lb_ip(p: &tempfile::TempDir, c: &str) -> Value {
    let ranges: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("out/net/lb-ranges.json")).unwrap(),
    )
    .unwrap();
    ranges["ranges"][c]["gateway_ip"].clone()
}

#[test]
fn sidecar_primary_remote_bring_up() {
    let w = World::new(&["east", "west"]);
    let plan = primary_remote(&default_plan());
    let p = up(&w, &plan);
    let east = w.releases("east");
    assert_eq!(
        east["istio-system/istiod"]["values"]["global"]["externalIstiod"],
        true
    );
    let west = w.releases("west");
    let v = &west["istio-system/istiod"]["values"];
    assert_eq!(v["profile"], "remote");
    assert_eq!(v["global"]["remotePilotAddress"], lb_ip(&p, "east"));
    assert_eq!(
        v["istiodRemote"]["injectionPath"],
        "/inject/cluster/west/net/network2"
    );
    assert_eq!(
        west["istio-system/istio-base"]["values"]["profile"],
        "remote"
    );
    let ns = w
        .api("west")
        .get("", "namespaces", "", "istio-system")
        .unwrap();
    assert_eq!(
        ns["metadata"]["annotations"]["topology.istio.io/controlPlaneClusters"],
        "east"
    );
    // istiod runs on the primary only; it is exposed through east's gateway.
    assert!(
        w.api("east")
            .get("apps", "deployments", "istio-system", "istiod")
            .is_some()
    );
    assert!(
        w.api("west")
            .get("apps", "deployments", "istio-system", "istiod")
            .is_none()
    );
    assert!(
        w.api("east")
            .get(
                "networking.istio.io",
                "gateways",
                "istio-system",
                "istiod-gateway"
            )
            .is_some()
    );
    assert!(
        w.api("east")
            .get(
                "networking.istio.io",
                "virtualservices",
                "istio-system",
                "istiod-vs"
            )
            .is_some()
    );
    // Remote secret: remote → primary only.
    assert!(
        w.api("east")
            .get("", "secrets", "istio-system", "istio-remote-secret-west")
            .is_some()
    );
    assert!(
        w.api("west")
            .get("", "secrets", "istio-system", "istio-remote-secret-east")
            .is_none()
    );
    assert!(
        w.api("west")
            .get("apps", "deployments", "sample", "helloworld-v2")
            .is_some()
    );
}

#[test]
fn ambient_multi_primary_bring_up() {
    let w = World::new(&["east", "west"]);
    // The CRDs are downloaded, through a redirect, as from GitHub's releases.
    let crds = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gateways.gateway.networking.k8s.io\nspec:\n  group: gateway.networking.k8s.io\n";
    let base = w.serve_http(vec![
        (
            "/download/standard-install.yaml",
            302,
            "/objects/standard-install.yaml".to_string(),
        ),
        ("/objects/standard-install.yaml", 200, crds.to_string()),
    ]);
    w.set_env(
        "MESH_GATEWAY_API_CRDS",
        &format!("{base}/download/standard-install.yaml"),
    );
    let p = up(
        &w,
        &default_plan().replace("mode = \"sidecar\"", "mode = \"ambient\""),
    );
    for c in ["east", "west"] {
        let api = w.api(c);
        assert!(
            api.get(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "",
                "gateways.gateway.networking.k8s.io"
            )
            .is_some()
        );
        let rel = w.releases(c);
        for r in [
            "istio-system/istio-base",
            "istio-system/istiod",
            "istio-system/istio-cni",
            "istio-system/ztunnel",
        ] {
            assert_eq!(rel[r]["status"], "deployed", "{c} {r}");
        }
        assert_eq!(
            rel["istio-system/istiod"]["values"]["env"]["AMBIENT_ENABLE_MULTI_NETWORK"],
            "true"
        );
        assert!(
            rel.get("istio-system/istio-eastwestgateway").is_none(),
            "ambient uses a Gateway, not the chart"
        );
        let gw = api
            .get(
                "gateway.networking.k8s.io",
                "gateways",
                "istio-system",
                "istio-eastwestgateway",
            )
            .unwrap();
        assert_eq!(gw["spec"]["gatewayClassName"], "istio-east-west");
        assert_eq!(gw["spec"]["listeners"][0]["port"], 15008);
        assert_eq!(gw["spec"]["listeners"][0]["protocol"], "HBONE");
        // Istio lists the hostname first; the LoadBalancer IP is there too.
        assert!(
            gw["status"]["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["type"] == "IPAddress" && a["value"] == lb_ip(&p, c)),
            "{gw}"
        );
        assert_eq!(
            api.get("", "namespaces", "", "sample").unwrap()["metadata"]["labels"]["istio.io/dataplane-mode"],
            "ambient"
        );
        assert_eq!(
            api.get("", "services", "sample", "helloworld").unwrap()["metadata"]["labels"]["istio.io/global"],
            "true"
        );
    }
    // A new intermediate: ztunnel holds the workloads' certificates in
    // ambient mode, so it is restarted (after istiod) with the apps.
    std::fs::write(
        p.path().join("plan.toml"),
        default_plan()
            .replace("mode = \"sidecar\"", "mode = \"ambient\"")
            .replace("intermediate_days = 730", "intermediate_days = 365"),
    )
    .unwrap();
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for c in ["east", "west"] {
        let z = w
            .api(c)
            .get("apps", "daemonsets", "istio-system", "ztunnel")
            .unwrap();
        assert!(
            z["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
                .is_string(),
            "{c}: {z}"
        );
    }
}

#[test]
fn ambient_waits_for_the_gateway_api_crds_to_be_established() {
    // A new CRD's kind is served only once the CRD is Established; until
    // then a Gateway is a 404. Here that takes 5 s, longer than the retry
    // budget: the Gateway is applied only after istiod's task waited.
    let w = World::new(&["east", "west"]);
    for c in ["east", "west"] {
        *w.api(c).knobs.crd_delay.lock().unwrap() = std::time::Duration::from_secs(5);
    }
    w.set_env("MESH_RETRY_TIMEOUT", "1");
    let p = project(&default_plan().replace("mode = \"sidecar\"", "mode = \"ambient\""));
    use_gateway_api_crds_file(&w, p.path());
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for c in ["east", "west"] {
        assert!(
            w.api(c)
                .get(
                    "gateway.networking.k8s.io",
                    "gateways",
                    "istio-system",
                    "istio-eastwestgateway"
                )
                .is_some(),
            "{c}"
        );
    }
}

#[test]
fn ambient_with_unreachable_gateway_api_crds_fails_naming_task_and_url() {
    let w = World::new(&["east", "west"]);
    let base = w.serve_http(vec![]);
    w.set_env("MESH_GATEWAY_API_CRDS", &format!("{base}/missing.yaml"));
    let p = project(&default_plan().replace("mode = \"sidecar\"", "mode = \"ambient\""));
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("task istiod:east failed")
            || o.stderr.contains("task istiod:west failed"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains(&format!("download: {base}/missing.yaml: HTTP 404")),
        "{}",
        o.stderr
    );
}

#[test]
fn editing_one_app_reruns_only_that_apps_tasks_and_prunes() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let plan = std::fs::read_to_string(p.path().join("plan.toml")).unwrap();
    std::fs::write(
        p.path().join("plan.toml"),
        plan.replace("west = \"v2\"", "west = \"v1\""),
    )
    .unwrap();
    w.clear_log();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.with("ran"),
        ["app:helloworld:west", "render.app:helloworld:west"]
    );
    assert_eq!(w.mutating_tool_calls(), Vec::<Vec<String>>::new());
    let api = w.api("west");
    assert!(
        api.get("apps", "deployments", "sample", "helloworld-v1")
            .is_some()
    );
    assert!(
        api.get("apps", "deployments", "sample", "helloworld-v2")
            .is_none(),
        "v2 was not pruned"
    );
    assert!(api.get("", "services", "sample", "helloworld").is_some());
}

#[test]
fn moving_one_app_to_another_namespace_keeps_the_app_sharing_the_old_one() {
    // helloworld and curl share `sample`. Moving curl must not delete
    // `sample`: a real namespace delete takes helloworld with it.
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let plan = std::fs::read_to_string(p.path().join("plan.toml")).unwrap();
    let moved = plan.replace(
        "manifest = \"tasks/apps/curl.yaml\"\nnamespace = \"sample\"",
        "manifest = \"tasks/apps/curl.yaml\"\nnamespace = \"client\"",
    );
    assert_ne!(plan, moved, "the plan names curl's namespace");
    std::fs::write(p.path().join("plan.toml"), moved).unwrap();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for c in ["east", "west"] {
        let api = w.api(c);
        assert!(api.get("", "namespaces", "", "sample").is_some(), "{c}");
        assert!(
            api.get("", "services", "sample", "helloworld").is_some(),
            "{c}"
        );
        assert!(
            api.list("apps", "deployments")
                .iter()
                .any(|d| d["metadata"]["namespace"] == "sample"
                    && d["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .starts_with("helloworld")),
            "{c}: helloworld was deleted with its namespace"
        );
        assert!(
            api.get("apps", "deployments", "client", "curl").is_some(),
            "{c}"
        );
        assert!(
            api.get("apps", "deployments", "sample", "curl").is_none(),
            "{c}: curl not pruned"
        );
        let ns = api
            .get("", "namespaces", "", "client")
            .expect("client namespace");
        assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
    }
    // Exactly curl's tasks and the new namespace's ran.
    let mut ran = o.with("ran");
    ran.sort();
    assert_eq!(
        ran,
        [
            "app:curl:east",
            "app:curl:west",
            "namespace:client:east",
            "namespace:client:west",
            "render.app:curl:east",
            "render.app:curl:west",
            "render.namespace:client:east",
            "render.namespace:client:west",
        ]
    );
    // And the world is what mesh recorded: a rerun probes and does nothing.
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").is_empty(), "{:?}", o.with("ran"));
}

#[test]
fn waits_outlive_watches_that_end_and_resume_after_410_gone() {
    // A real API server ends a watch after minutes and compacts history: a
    // client resuming from its last resourceVersion gets 410 Gone. A wait
    // must outlive both (here: watches live 3 s; the apps take 8 s).
    let w = World::new(&["east", "west"]);
    w.set_ready_delay_in("sample", std::time::Duration::from_secs(8));
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let api = w.api("east");
    let d = api
        .get("apps", "deployments", "sample", "helloworld-v1")
        .unwrap();
    assert_eq!(d["status"]["readyReplicas"], 1, "{d}");
}

#[test]
fn a_watch_silent_for_longer_than_a_minute_does_not_fail_the_wait() {
    // No bookmarks, no end: the watch is silent for 65 s while the apps get
    // ready, longer than the 60 s read timeout a client might set. (It
    // takes that long: the client's timeout cannot be compressed from here.)
    let w = World::new(&["east", "west"]);
    w.set_env("MESH_WAIT_TIMEOUT", "120");
    for c in ["east", "west"] {
        let k = &w.api(c).knobs;
        *k.bookmark_every.lock().unwrap() = None;
        *k.watch_life.lock().unwrap() = None;
        k.ready_delay_in
            .lock()
            .unwrap()
            .insert("sample".into(), std::time::Duration::from_secs(65));
    }
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").contains(&"app:helloworld:east".to_string()));
}

#[test]
fn an_app_update_waits_for_its_rollout_not_for_the_old_pods() {
    // The Deployment controller reports the new generation at once while
    // the old pods still count as ready: only a rollout-complete wait (as
    // `kubectl rollout status`) sees that the new pods are not there yet.
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    w.set_ready_delay_in("sample", std::time::Duration::from_secs(2));
    let manifest = include_str!("../tasks/apps/helloworld.yaml")
        .replace("examples-helloworld-v1:1.0", "examples-helloworld-v1:1.1");
    std::fs::create_dir_all(p.path().join("tasks/apps")).unwrap();
    std::fs::write(p.path().join("tasks/apps/helloworld.yaml"), manifest).unwrap();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").contains(&"app:helloworld:east".to_string()));
    let d = w
        .api("east")
        .get("apps", "deployments", "sample", "helloworld-v1")
        .unwrap();
    assert_eq!(
        d["status"]["updatedReplicas"], 1,
        "rollout not finished: {d}"
    );
    assert_eq!(d["status"]["replicas"], 1, "old pods left: {d}");
}

#[test]
fn the_cilium_pool_waits_for_cilium_to_serve_its_kinds() {
    // Cilium's CRDs come from its operator, after the chart is installed:
    // until the agents are up, CiliumLoadBalancerIPPool is not served (404).
    let w = World::new(&["east", "west"]);
    w.set_ready_delay_in("kube-system", std::time::Duration::from_secs(2));
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for c in ["east", "west"] {
        let pools = w.api(c).list("cilium.io", "ciliumloadbalancerippools");
        assert_eq!(pools.len(), 1, "{c}: {pools:?}");
        assert_eq!(pools[0]["apiVersion"], "cilium.io/v2");
    }
}

/// The default plan brought up while one in `every` API calls fails as a
/// loaded API server's do (429, 503, a webhook timing out): it converges in
/// one build, and the next build is a probe-only no-op.
fn converges_under_chaos(plan: &str, every: usize) -> (usize, usize, usize) {
    let w = World::new(&["east", "west"]);
    for c in ["east", "west"] {
        w.api(c)
            .knobs
            .fault_every
            .store(every, std::sync::atomic::Ordering::SeqCst);
    }
    let p = project(plan);
    use_gateway_api_crds_file(&w, p.path());
    let trace = p.path().join("trace.json");
    let o = mesh(
        &w,
        p.path(),
        &["build", "--json", "--trace", trace.to_str().unwrap()],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    // Every retry is visible: in the JSON document, with the task it
    // happened in, and as an instant event in the trace.
    let doc = o.json();
    let retries = doc["retries"].as_array().unwrap().clone();
    assert!(!retries.is_empty(), "no retry reported");
    assert!(
        retries
            .iter()
            .all(|r| r["task"].is_string() && r["reason"].is_string()),
        "{retries:?}"
    );
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let marks = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["cat"] == "retry")
        .count();
    assert_eq!(marks, retries.len());
    w.clear_log();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").is_empty(), "{:?}", o.with("ran"));
    assert_eq!(w.mutating_tool_calls(), Vec::<Vec<String>>::new());
    let faults: usize = ["east", "west"]
        .iter()
        .map(|c| w.api(c).faults.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    let retried = retries.len() + o.json()["retries"].as_array().unwrap().len();
    assert!(retried <= faults, "{retried} retries for {faults} faults");
    (faults, retried, o.with("cached").len())
}

#[test]
fn the_bring_up_converges_under_transient_api_faults() {
    let (faults, retried, tasks) = converges_under_chaos(&default_plan(), 5);
    eprintln!(
        "chaos, sidecar: 1 in 5 API calls failed: {faults} faults, {retried} retries, {tasks} tasks"
    );
    assert!(faults > 20, "only {faults} faults were injected");
    let ambient = default_plan().replace("mode = \"sidecar\"", "mode = \"ambient\"");
    let (faults, retried, tasks) = converges_under_chaos(&ambient, 5);
    eprintln!(
        "chaos, ambient: 1 in 5 API calls failed: {faults} faults, {retried} retries, {tasks} tasks"
    );
    assert!(faults > 20, "only {faults} faults were injected");
}

#[test]
fn the_metallb_pool_waits_for_metallbs_webhook() {
    // MetalLB's webhook refuses its pool until the controller is up.
    let w = World::new(&["east", "west"]);
    w.set_ready_delay_in("metallb-system", std::time::Duration::from_secs(2));
    kindnet_pools_come_up(&w);
}

/// The default plan on kindnet builds, and each cluster has its pool.
fn kindnet_pools_come_up(w: &World) {
    let plan = default_plan().replace("cni = \"cilium\"", "cni = \"kindnet\"");
    let p = project(&plan);
    let o = mesh(w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for c in ["east", "west"] {
        assert_eq!(
            w.api(c).list("metallb.io", "ipaddresspools").len(),
            1,
            "{c}"
        );
    }
}

#[test]
fn the_metallb_pool_waits_for_metallbs_crds_to_be_served() {
    // MetalLB's chart ships its CRDs as templates (and Istio's base chart
    // too): helm does not wait for them, and the controller can be up
    // before they are Established.
    let w = World::new(&["east", "west"]);
    for c in ["east", "west"] {
        *w.api(c).knobs.crd_delay.lock().unwrap() = std::time::Duration::from_millis(1500);
    }
    kindnet_pools_come_up(&w);
}

#[test]
fn an_unreachable_api_server_fails_the_build_and_never_deletes_the_cluster() {
    // The hazard: Docker restarting or a laptop waking up. The cluster is
    // there, its API server does not answer. Treating that as drift would
    // delete and recreate the cluster, and everything in it.
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    w.set_asleep("east", true);
    w.clear_log();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let doc = o.json();
    let cluster = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "cluster:east")
        .unwrap();
    assert_eq!(cluster["status"], "failed", "{cluster}");
    let reason = cluster["reason"].as_str().unwrap();
    assert!(reason.starts_with("unreachable: "), "{reason}");
    // Named as the cluster and the server it is, not as a client error.
    assert!(
        reason.contains("cluster east: the API server at https://127.0.0.1:")
            && reason.contains("does not answer: is Docker running?"),
        "{reason}"
    );
    assert!(!reason.contains("client error"), "{reason}");
    assert!(
        !w.tool_log()
            .iter()
            .any(|c| c[0] == "kind" && (c[1] == "delete" || c[1] == "create")),
        "a cluster was deleted or created: {:?}",
        w.tool_log()
    );
    assert_eq!(w.kind_clusters(), ["east", "west"]);
    // status says so too, without acting.
    let st = mesh(&w, p.path(), &["status"]);
    assert!(
        st.stdout
            .lines()
            .any(|l| l.starts_with("unreachable") && l.contains("cluster:east")),
        "{}",
        st.stdout
    );
    // Awake again: the next build probes, finds everything in place, and
    // changes nothing.
    w.set_asleep("east", false);
    w.clear_log();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").is_empty(), "{:?}", o.with("ran"));
    assert_eq!(w.mutating_tool_calls(), Vec::<Vec<String>>::new());
}

#[test]
fn api_servers_asleep_mid_build_fail_it_as_unreachable_and_the_next_run_resumes() {
    // A laptop sleeping mid-build: both API servers stop answering (their
    // watches drop, connections are refused) while istiod is awaited. The
    // build gives up after the retry budget saying "unreachable", deletes
    // nothing, records nothing false; awake again, the next run resumes.
    let w = World::new(&["east", "west"]);
    w.set_ready_delay_in("istio-system", std::time::Duration::from_secs(3));
    w.set_env("MESH_RETRY_TIMEOUT", "3");
    let p = project(&default_plan());
    let child = fake::spawn_mesh(&w, p.path(), &["build", "--json"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // helm is done with istiod in both clusters; mesh awaits its rollout.
    while ["east", "west"]
        .iter()
        .any(|c| w.releases(c)["istio-system/istiod"]["status"] != "deployed")
    {
        assert!(std::time::Instant::now() < deadline, "istiod never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    w.set_asleep("east", true);
    w.set_asleep("west", true);
    let slept = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        slept.elapsed() < std::time::Duration::from_secs(30),
        "gave up after {:?}",
        slept.elapsed()
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&Value> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "failed")
        .collect();
    assert!(!failed.is_empty(), "{stderr}");
    for t in &failed {
        let reason = t["reason"].as_str().unwrap();
        assert!(reason.contains("unreachable: "), "{}: {reason}", t["id"]);
        assert!(reason.contains("nothing was deleted"), "{reason}");
        // The cluster the task serves, and its server's address.
        let cluster = if t["id"].as_str().unwrap().contains("east") {
            "east"
        } else {
            "west"
        };
        assert!(
            reason.contains(&format!(
                "cluster {cluster}: the API server at https://127.0.0.1:"
            )) && reason.contains("does not answer: is Docker running?"),
            "{}: {reason}",
            t["id"]
        );
        assert!(
            !common::recorded(p.path()).iter().any(|r| r == &t["id"]),
            "{} recorded although it failed",
            t["id"]
        );
    }
    let kind_calls: Vec<Vec<String>> = w
        .tool_log()
        .into_iter()
        .filter(|c| c[0] == "kind" && c[1] == "delete")
        .collect();
    assert!(kind_calls.is_empty(), "{kind_calls:?}");
    assert_eq!(w.kind_clusters(), ["east", "west"]);
    // Awake: the next run resumes where it stopped; the clusters are kept.
    w.set_asleep("east", false);
    w.set_asleep("west", false);
    w.clear_log();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for c in ["cluster:east", "cluster:west", "cni:east", "cni:west"] {
        assert!(o.with("cached").contains(&c.to_string()), "{c} reran");
    }
    assert!(
        !w.tool_log().iter().any(|c| c[0] == "kind" && c[1] != "get"),
        "{:?}",
        w.tool_log()
    );
}

#[test]
fn a_cluster_deleted_behind_meshs_back_rebuilds_exactly_its_chain() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    w.delete_cluster_behind_meshs_back("east");
    let st = mesh(&w, p.path(), &["status", "--json"]).json();
    let state = |id: &str| {
        st["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("cluster:east"), "drifted");
    assert_eq!(state("cluster:west"), "up-to-date");
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mut ran: Vec<String> = o
        .with("ran")
        .into_iter()
        .filter(|t| !t.starts_with("render.") && !t.starts_with("pki."))
        .collect();
    ran.sort();
    let mut want: Vec<String> = [
        "app:curl:east",
        "app:helloworld:east",
        "cacerts:east",
        "cluster:east",
        "cni:east",
        "gateway:east",
        "istiod:east",
        "lb:east",
        "namespace:sample:east",
        "net.discover",
        "remote-secret:east->west",
        "remote-secret:west->east",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(ran, want);
    assert!(
        o.with("ran")
            .iter()
            .all(|t| !t.starts_with("render.") && !t.starts_with("pki."))
    );
    assert!(
        w.api("east")
            .get("", "secrets", "istio-system", "cacerts")
            .is_some()
    );
    // West kept its objects and got a secret for the new east.
    assert!(
        w.api("west")
            .get("", "secrets", "istio-system", "istio-remote-secret-east")
            .is_some()
    );
}

#[test]
fn values_the_gateway_charts_schema_forbids_fail_naming_task_tool_and_key() {
    // istio/gateway's values.schema.json allows no unknown top-level key:
    // helm refuses before installing anything. A user's edited template
    // that adds one gets helm's words, with the task and the tool.
    let w = World::new(&["east", "west"]);
    let p = project(&default_plan());
    let tpl = p.path().join("tasks/gateway/eastwest-values.yaml.j2");
    std::fs::create_dir_all(tpl.parent().unwrap()).unwrap();
    let stock = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tasks/gateway/eastwest-values.yaml.j2"
    ))
    .unwrap();
    std::fs::write(&tpl, format!("{stock}\nreplicas: 2\n")).unwrap();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("Additional property replicas is not allowed"),
        "{}",
        o.stderr
    );
    let failed = o.with("failed");
    assert!(
        !failed.is_empty() && failed.iter().all(|t| t.starts_with("gateway:")),
        "{failed:?}"
    );
    assert!(
        o.stderr
            .contains("helm: `helm upgrade --install istio-eastwestgateway"),
        "{}",
        o.stderr
    );
    // No release was recorded, so nothing is left to recover.
    assert!(
        w.releases("east")
            .get("istio-system/istio-eastwestgateway")
            .is_none()
    );
}

#[test]
fn a_failing_tool_names_task_and_tool_records_nothing_and_the_next_run_resumes() {
    let w = World::new(&["east", "west"]);
    w.configure(serde_json::json!({"fail": {"helm upgrade istiod": "Error: INSTALLATION FAILED: chart exploded"}}));
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("task istiod:"), "{}", o.stderr);
    assert!(
        o.stderr.contains("helm: `helm upgrade --install istiod"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("chart exploded"), "{}", o.stderr);
    let failed = o.with("failed");
    assert!(
        !failed.is_empty() && failed.iter().all(|t| t.starts_with("istiod:")),
        "{failed:?}"
    );
    let recorded = common::recorded(p.path());
    for t in &failed {
        assert!(!recorded.contains(t), "{t} recorded although it failed");
    }
    let skipped = o.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "skipped")
        .count();
    assert!(skipped > 0);
    w.configure(serde_json::json!({}));
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").iter().any(|t| t.starts_with("istiod:")));
    assert!(
        o.with("cached").contains(&"cluster:east".to_string()),
        "resumed, not restarted"
    );
}

#[test]
fn a_hanging_tool_times_out_naming_it() {
    let w = World::new(&["east", "west"]);
    w.configure(serde_json::json!({"hang": ["helm upgrade istio-base"]}));
    w.set_env("MESH_TOOL_TIMEOUT", "2");
    let p = project(&default_plan());
    let t = std::time::Instant::now();
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1);
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        o.stderr.contains("did not finish in 2s (killed)"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("task istiod:"), "{}", o.stderr);
}

#[test]
fn a_tool_printing_garbage_is_a_clear_error() {
    let w = World::new(&["east", "west"]);
    w.configure(serde_json::json!({"garbage": ["kind get kubeconfig east"]}));
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("task cluster:east failed"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("not a kubeconfig"), "{}", o.stderr);
}

#[test]
fn ctrl_c_mid_bring_up_stops_children_and_the_next_run_resumes() {
    let w = World::new(&["east", "west"]);
    w.configure(serde_json::json!({"delay": {"helm upgrade istiod": 30}}));
    let p = project(&default_plan());
    let child = fake::spawn_mesh(&w, p.path(), &["build"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Interrupt helm in the middle of the istiod install (its release is
    // recorded pending).
    while w.releases("east")["istio-system/istiod"]["status"] != "pending-install" {
        assert!(std::time::Instant::now() < deadline, "istiod never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let t = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "Ctrl-C took {:?}",
        t.elapsed()
    );
    // helm was stopped with SIGTERM, not killed: like helm >= 3.7 it
    // recorded its release failed (retryable), not pending (blocking).
    assert_eq!(
        w.releases("east")["istio-system/istiod"]["status"],
        "failed",
        "{}",
        w.releases("east")
    );
    assert!(!common::recorded(p.path()).contains(&"istiod:east".to_string()));
    w.configure(serde_json::json!({}));
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("cached").contains(&"cluster:east".to_string()));
    assert!(o.with("ran").contains(&"istiod:east".to_string()));
}

#[test]
fn a_helm_killed_hard_leaves_a_pending_release_the_next_build_recovers() {
    // SIGKILL (or a power cut) mid-upgrade leaves the release pending-*,
    // and helm refuses every later upgrade of it ("another operation is in
    // progress"): the next build must finish it first.
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    // An upgrade of istiod that dies hard (the values change, so it reruns).
    w.configure(serde_json::json!({"crash": ["helm upgrade istiod"]}));
    std::fs::write(
        p.path().join("plan.toml"),
        default_plan().replace("id = \"mesh1\"", "id = \"mesh2\""),
    )
    .unwrap();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("was killed by a signal"), "{}", o.stderr);
    assert_eq!(
        w.releases("east")["istio-system/istiod"]["status"],
        "pending-upgrade"
    );
    // And a first install that dies hard.
    let w2 = World::new(&["east", "west"]);
    w2.configure(serde_json::json!({"crash": ["helm upgrade cilium"]}));
    let p2 = project(&default_plan());
    let o = mesh(&w2, p2.path(), &["build", "--json"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        w2.releases("east")["kube-system/cilium"]["status"],
        "pending-install"
    );
    for (w, p) in [(&w, &p), (&w2, &p2)] {
        w.configure(serde_json::json!({}));
        let o = mesh(w, p.path(), &["build", "--json"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        for c in ["east", "west"] {
            for (_, r) in w.releases(c).as_object().unwrap() {
                assert_eq!(r["status"], "deployed", "{c}: {r}");
            }
        }
    }
    assert!(
        w.tool_log()
            .iter()
            .any(|c| c[0] == "helm" && c[1] == "rollback" && c[2] == "istiod")
    );
    assert!(
        w2.tool_log()
            .iter()
            .any(|c| c[0] == "helm" && c[1] == "uninstall" && c[2] == "cilium")
    );
}

/// Run mesh on a pseudo-terminal (util-linux `script`), typing `input`.
fn mesh_on_a_tty(
    w: &World,
    dir: &std::path::Path,
    args: &str,
    input: &str,
) -> Option<(i32, String)> {
    if !std::path::Path::new("/usr/bin/script").exists() {
        eprintln!("skipped the terminal part: no /usr/bin/script");
        return None;
    }
    let mut c = std::process::Command::new("/usr/bin/script");
    c.args(["-q", "-e", "-c"])
        .arg(format!("{} {args}", env!("CARGO_BIN_EXE_mesh")))
        .arg("/dev/null")
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in w.env() {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    Some((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    ))
}

#[test]
fn destroy_shows_what_it_deletes_asks_on_a_terminal_and_needs_yes_elsewhere() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    w.clear_log();
    // --dry-run: the list, and nothing changed.
    let o = mesh(&w, p.path(), &["destroy", "--dry-run"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    says_all(
        &o.stderr,
        &[
            "mesh destroy will:",
            "undo app:helloworld:east",
            "undo cluster:west",
            "delete kind cluster east",
            "nothing was changed",
        ],
    );
    // Not on a terminal, no --yes: refused.
    let o = mesh(&w, p.path(), &["destroy"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("pass --yes"), "{}", o.stderr);
    assert_eq!(w.kind_clusters(), ["east", "west"]);
    assert!(
        w.mutating_tool_calls().is_empty(),
        "{:?}",
        w.mutating_tool_calls()
    );
    // On a terminal: it asks; "n" keeps everything, "y" deletes.
    if let Some((code, out)) = mesh_on_a_tty(&w, p.path(), "destroy", "n\n") {
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("Delete all of it? [y/N]"), "{out}");
        assert_eq!(w.kind_clusters(), ["east", "west"]);
        let (code, out) = mesh_on_a_tty(&w, p.path(), "destroy", "y\n").unwrap();
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("undone cluster:east"), "{out}");
        assert_eq!(w.kind_clusters(), Vec::<String>::new());
    }
}

#[test]
fn destroy_then_build_again() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let o = mesh(&w, p.path(), &["destroy", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(w.kind_clusters(), Vec::<String>::new());
    let st = mesh(&w, p.path(), &["status", "--json"]).json();
    for t in st["tasks"].as_array().unwrap() {
        if !t["pure"].as_bool().unwrap() {
            assert_eq!(t["state"], "never-run", "{t}");
        }
    }
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").contains(&"cluster:east".to_string()));
    assert_eq!(w.kind_clusters(), ["east", "west"]);
    assert!(
        w.api("west")
            .get("", "secrets", "istio-system", "istio-remote-secret-east")
            .is_some()
    );
}

#[test]
fn missing_tools_fail_the_build_in_milliseconds() {
    let w = World::new(&["east", "west"]);
    let p = project(&default_plan());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.args(["build"])
        .current_dir(p.path())
        .env("PATH", "/nonexistent")
        .env("FAKE_STATE", w.state());
    let t = std::time::Instant::now();
    let o = cmd.output().unwrap();
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot run a live build"), "{err}");
    for line in ["FAIL docker", "FAIL kind", "FAIL helm"] {
        assert!(err.contains(line), "{line}: {err}");
    }
    assert!(
        err.contains("https://kind.sigs.k8s.io") && err.contains("https://helm.sh"),
        "{err}"
    );
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    assert!(!p.path().join("cache").exists(), "nothing was done");
    let d = mesh(&w, p.path(), &["doctor", "--json"]);
    assert_eq!(d.code, 0, "{}", d.stdout);
}

#[test]
fn secrets_a_tool_prints_on_failure_are_redacted_everywhere_mesh_shows_them() {
    // What a tool says on stderr is quoted in its task's failure; a tool
    // (or a plugin, or an API server behind it) may say a secret.
    const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik1lc2gxMjMifQ.eyJzdWIiOiJzeXN0ZW06c2EifQ.U2lnbmF0dXJlMTIzNDU2Nzg5MA";
    const KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7Hq2vWx9Kd3LpQ";
    let w = World::new(&["east", "west"]);
    w.configure(serde_json::json!({"fail": {"helm upgrade istiod": format!(
        "Error: request rejected: Authorization: Bearer {JWT}\n-----BEGIN PRIVATE KEY-----\n{KEY}\n-----END PRIVATE KEY-----\nclient-key-data: c2VjcmV0LWtleS1ieXRlcw=="
    )}}));
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build", "--json", "--trace", "trace.json"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("istiod:") && o.stderr.contains("[redacted"),
        "{}",
        o.stderr
    );
    let trace = std::fs::read_to_string(p.path().join("trace.json")).unwrap();
    for (what, text) in [
        ("stderr", &o.stderr),
        ("json", &o.stdout),
        ("trace", &trace),
    ] {
        for secret in [
            &JWT[..20],
            &KEY[..20],
            "PRIVATE KEY",
            "c2VjcmV0LWtleS1ieXRlcw",
        ] {
            assert!(!text.contains(secret), "{what} holds {secret}: {text}");
        }
    }
}

#[test]
fn an_empty_or_wrong_tool_override_stops_the_build_naming_the_variable() {
    let w = World::new(&["east", "west"]);
    let p = project(&default_plan());
    w.set_env("MESH_KIND", "");
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("MESH_KIND is set but empty; unset it to use kind from PATH"),
        "{}",
        o.stderr
    );
    assert!(!p.path().join("cache").exists(), "nothing was done");
    w.set_env("MESH_KIND", "/nonexistent/kind");
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("MESH_KIND=/nonexistent/kind is not an executable file"),
        "{}",
        o.stderr
    );
    assert!(w.kind_clusters().is_empty());
}

#[test]
fn the_pre_flight_checks_versions_inotify_and_docker_memory_naming_the_fix() {
    let w = World::new(&["east", "west"]);
    w.configure(serde_json::json!({
        "version": {"helm": "v3.12.3+g3a31588", "kind": "kind v0.29.0 go1.24.2 linux/amd64"},
        "docker_memory": 2u64 << 30,
    }));
    let watches = w.state().join("proc-sys/fs/inotify/max_user_watches");
    std::fs::write(&watches, "8192\n").unwrap();
    let p = project(&default_plan());
    // inotify is read first, without starting a process.
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("sudo sysctl fs.inotify.max_user_watches=524288"),
        "{}",
        o.stderr
    );
    std::fs::write(&watches, "524288\n").unwrap();
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    says_all(
        &o.stderr,
        &[
            "3.12.3 is too old: mesh needs 3.13.0 or newer",
            "0.29.0 is too old: mesh needs 0.30.0 or newer",
            "go install sigs.k8s.io/kind@v0.30.0",
            "2.0 GiB for 4 kind nodes: about 7.0 GiB needed",
            "Settings > Resources > Memory",
        ],
    );
    assert!(
        !w.tool_log()
            .iter()
            .any(|c| c[0] == "kind" && c[1] == "create"),
        "{:?}",
        w.tool_log()
    );
    assert!(common::recorded(p.path()).is_empty());
    // Helm 4 and a current kind with enough memory: the build goes ahead.
    w.configure(serde_json::json!({"version": {"helm": "v4.0.1+g12500dd"}}));
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let d = mesh(&w, p.path(), &["doctor", "--json"]).json();
    assert_eq!(d["schema"], "mesh.doctor/v1");
    let checks = d["checks"].as_array().unwrap();
    for what in [
        "docker daemon",
        "docker memory",
        "helm version",
        "kind version",
        "fs.inotify.max_user_watches",
    ] {
        let c = checks.iter().find(|c| c["what"] == what).unwrap();
        assert_eq!(c["ok"], true, "{c}");
    }
    // A no-op rerun asks no tool its version again (remembered per binary)
    // and, with every cluster recorded, does not ask Docker either.
    w.clear_log();
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !w.tool_log()
            .iter()
            .any(|c| c[1] == "version" || c[1] == "info"),
        "{:?}",
        w.tool_log()
    );
}

#[test]
fn user_tasks_run_after_their_edges_and_drift_is_repaired() {
    let w = World::new(&["east", "west"]);
    let p = project(&format!(
        "{}\n[tasks.extras]\ncluster = \"east\"\nmanifest = \"extras.yaml\"\nafter = [\"istiod:east\"]\n\n[tasks.mark]\ncluster = \"east\"\ncommand = [\"sh\", \"-c\", \"echo $MESH_CLUSTER > marker\"]\nafter = [\"task:extras\"]\n",
        default_plan()
    ));
    std::fs::write(p.path().join("extras.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extras\n  namespace: istio-system\ndata:\n  a: b\n").unwrap();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        w.api("east")
            .get("", "configmaps", "istio-system", "extras")
            .is_some()
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("marker"))
            .unwrap()
            .trim(),
        "east"
    );
    // Someone deletes a remote secret: status says drifted, build repairs it.
    assert!(
        w.api("west")
            .remove("", "secrets", "istio-system", "istio-remote-secret-east")
    );
    let st = mesh(&w, p.path(), &["status"]);
    assert!(
        st.stdout
            .lines()
            .any(|l| l.starts_with("drifted") && l.contains("remote-secret:east->west")),
        "{}",
        st.stdout
    );
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.with("ran"), ["remote-secret:east->west"]);
    let reason = o.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "remote-secret:east->west")
        .unwrap()["reason"]
        .clone();
    assert!(reason.as_str().unwrap().contains("drifted"), "{reason}");
}

#[test]
fn verify_passes_on_a_healthy_mesh_and_names_a_missing_version() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let o = mesh(&w, p.path(), &["verify"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("from east"), "{}", o.stdout);
    assert!(o.stdout.contains("verify: passed"), "{}", o.stdout);
    let j = mesh(&w, p.path(), &["verify", "--json"]).json();
    assert_eq!(j["passed"], true);
    for c in ["east", "west"] {
        let reached = &j["apps"][0]["reached"][c];
        assert!(
            reached["v1"].as_u64().unwrap() > 0 && reached["v2"].as_u64().unwrap() > 0,
            "{c}: {reached}"
        );
        assert_eq!(
            reached["v1"].as_u64().unwrap() + reached["v2"].as_u64().unwrap(),
            20
        );
    }
    let secrets = j["remote_secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 2);
    assert!(
        secrets.iter().all(|s| s["status"] == "synced"),
        "{secrets:?}"
    );

    // v2's pods are gone: verify fails and names v2, from both clusters,
    // once its wait is over.
    assert!(
        w.api("west")
            .remove("apps", "deployments", "sample", "helloworld-v2")
    );
    let o = mesh(&w, p.path(), &["verify", "--wait", "3"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("MISSING v2"), "{}", o.stdout);
    assert!(o.stdout.contains("verify: FAILED"), "{}", o.stdout);
    assert!(
        o.stderr
            .contains("verify: not yet (helloworld from east: no v2"),
        "{}",
        o.stderr
    );
    let j = mesh(&w, p.path(), &["verify", "--json", "--wait", "0"]).json();
    assert_eq!(j["rounds"], 1);
    assert_eq!(j["apps"][0]["missing"]["east"], serde_json::json!(["v2"]));
    assert_eq!(j["apps"][0]["missing"]["west"], serde_json::json!(["v2"]));
}

#[test]
fn verify_waits_for_istiod_to_sync_the_remote_clusters() {
    // Right after a build istiod has the remote secrets but has not yet
    // synced the remote clusters' endpoints: a one-shot check fails.
    // Verify reads istiod's own view (its /debug/clusterz through the API
    // server) and polls until it converges.
    let w = World::new(&["east", "west"]);
    w.set_sync_delay(std::time::Duration::from_secs(600));
    let p = up(&w, &default_plan());
    let j = mesh(&w, p.path(), &["verify", "--json", "--wait", "0"]).json();
    assert_eq!(j["passed"], false, "{j}");
    for s in j["remote_secrets"].as_array().unwrap() {
        assert_eq!(s["status"], "syncing", "{s}");
    }
    // The clusters sync while verify waits.
    let (w2, p2) = (&w, p.path().to_path_buf());
    std::thread::scope(|s| {
        let verify = s.spawn(move || mesh(w2, &p2, &["verify", "--json", "--wait", "60"]));
        std::thread::sleep(std::time::Duration::from_secs(3));
        w.set_sync_delay(std::time::Duration::ZERO);
        let o = verify.join().unwrap();
        assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains("verify: not yet (") && o.stderr.contains("syncing"),
            "{}",
            o.stderr
        );
        let j = o.json();
        assert!(j["rounds"].as_u64().unwrap() >= 2, "{j}");
        for s in j["remote_secrets"].as_array().unwrap() {
            assert_eq!(s["status"], "synced", "{s}");
        }
    });
    // A remote cluster whose API server stops answering: istiod says
    // "timeout", and verify fails naming it.
    w.set_asleep("west", true);
    w.set_env("MESH_RETRY_TIMEOUT", "2");
    let j = mesh(&w, p.path(), &["verify", "--json", "--wait", "0"]).json();
    assert_eq!(j["passed"], false);
    let s = j["remote_secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["from"] == "west")
        .unwrap()
        .clone();
    assert_eq!(s["status"], "timeout", "{s}");
}

#[test]
fn verify_fails_when_a_remote_secret_is_missing() {
    let w = World::new(&["east", "west"]);
    w.set_sync_delay(std::time::Duration::ZERO);
    let p = up(&w, &default_plan());
    // Without west's secret, east's istiod does not know west's endpoints.
    assert!(
        w.api("east")
            .remove("", "secrets", "istio-system", "istio-remote-secret-west")
    );
    let j = mesh(&w, p.path(), &["verify", "--json", "--wait", "0"]).json();
    assert_eq!(j["passed"], false);
    assert_eq!(j["apps"][0]["missing"]["east"], serde_json::json!(["v2"]));
    assert!(j["apps"][0]["missing"].get("west").is_none(), "{}", j);
    let s = j["remote_secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["from"] == "west")
        .unwrap()
        .clone();
    assert_eq!(s["status"], "missing");
}

#[test]
fn a_helm_release_upgraded_behind_meshs_back_is_drift() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    // Someone runs `helm upgrade istiod`: a new release revision appears.
    let api = w.api("east");
    let mut v1 = api
        .get(
            "",
            "secrets",
            "istio-system",
            "sh.helm.release.v1.istiod.v1",
        )
        .expect("release record");
    v1["metadata"]["labels"]["status"] = "superseded".into();
    api.put(
        "",
        "secrets",
        "istio-system",
        "sh.helm.release.v1.istiod.v1",
        v1.clone(),
    );
    let mut v2 = v1.clone();
    v2["metadata"]["name"] = "sh.helm.release.v1.istiod.v2".into();
    v2["metadata"]["labels"]["status"] = "deployed".into();
    v2["metadata"]["labels"]["version"] = "2".into();
    api.put(
        "",
        "secrets",
        "istio-system",
        "sh.helm.release.v1.istiod.v2",
        v2,
    );
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.with("ran"), ["istiod:east"]);
    let reason = o.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "istiod:east")
        .unwrap()["reason"]
        .clone();
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains("revision 2, mesh installed 1"),
        "{reason}"
    );
}

#[test]
fn an_existing_cluster_is_installed_into_never_created_or_deleted() {
    let w = World::new(&["prod"]);
    // The cluster exists already: its API answers, kind knows nothing of it.
    w.bring_up("prod");
    let kubeconfig = w.state().join("api/prod/kubeconfig.json");
    let plan = format!(
        r#"[mesh]
id = "mesh1"
istio = "1.28.0"

[clusters.prod]
provider = "kubeconfig"
context = "kind-prod"
kubeconfig = "{}"
network = "network1"

[apps.helloworld]
manifest = "tasks/apps/helloworld.yaml"
namespace = "sample"
placement = {{ prod = ["v1", "v2"] }}
"#,
        kubeconfig.display()
    );
    let p = project(&plan);
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let ids: Vec<String> = o.statuses().into_keys().collect();
    assert!(
        !ids.iter()
            .any(|t| t.starts_with("cluster:") || t.starts_with("cni:") || t.starts_with("lb:")),
        "{ids:?}"
    );
    assert!(
        w.tool_log()
            .iter()
            .all(|c| c[0] != "kind" && c[0] != "docker"),
        "kind/docker were used"
    );
    let api = w.api("prod");
    assert!(api.get("", "secrets", "istio-system", "cacerts").is_some());
    assert!(
        api.get("apps", "deployments", "sample", "helloworld-v2")
            .is_some()
    );
    assert!(
        api.get("", "services", "istio-system", "istio-eastwestgateway")
            .unwrap()["status"]["loadBalancer"]["ingress"][0]["ip"]
            .is_string()
    );
    // Helm ran against the named context.
    assert!(w.tool_log().iter().any(|c| {
        c[0] == "helm"
            && c.windows(2)
                .any(|x| x[0] == "--kube-context" && x[1] == "kind-prod")
    }));

    // destroy removes what mesh installed, and only that; the cluster stays.
    let o = mesh(&w, p.path(), &["destroy", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(api.get("", "secrets", "istio-system", "cacerts").is_none());
    assert!(
        api.get("apps", "deployments", "sample", "helloworld-v1")
            .is_none()
    );
    assert!(api.get("", "services", "sample", "helloworld").is_none());
    assert!(
        !api.down.load(std::sync::atomic::Ordering::SeqCst),
        "the cluster itself is untouched"
    );
    assert!(
        w.tool_log()
            .iter()
            .any(|c| c[0] == "helm" && c[1] == "uninstall" && c[2] == "istiod")
    );
}

/// A kubeconfig as many installers write it: YAML naming its CA, client
/// certificate and key by files beside it (relative paths).
fn kubeconfig_with_files(w: &World, cluster: &str) -> std::path::PathBuf {
    let kc: Value = serde_json::from_str(
        &std::fs::read_to_string(w.state().join(format!("api/{cluster}/kubeconfig.json"))).unwrap(),
    )
    .unwrap();
    let dir = w.state().join(format!("user-kube/{cluster}"));
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    let c = &kc["clusters"][0]["cluster"];
    let u = &kc["users"][0]["user"];
    std::fs::write(
        dir.join("pki/ca.crt"),
        b64d(&c["certificate-authority-data"]),
    )
    .unwrap();
    std::fs::write(
        dir.join("pki/client.crt"),
        b64d(&u["client-certificate-data"]),
    )
    .unwrap();
    std::fs::write(dir.join("pki/client.key"), b64d(&u["client-key-data"])).unwrap();
    let ctx = format!("kind-{cluster}");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {ctx}\n  cluster:\n    server: {}\n    certificate-authority: pki/ca.crt\nusers:\n- name: {ctx}\n  user:\n    client-certificate: pki/client.crt\n    client-key: pki/client.key\ncontexts:\n- name: {ctx}\n  context:\n    cluster: {ctx}\n    user: {ctx}\ncurrent-context: {ctx}\n",
        c["server"].as_str().unwrap()
    );
    let path = dir.join("config");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn an_existing_cluster_whose_kubeconfig_names_files_is_installed_into_and_destroyed_after_clean() {
    // A kubeconfig naming its CA, certificate and key by relative paths:
    // the temp copy helm gets must still work (the files are inlined), and
    // the CA is kept for the remote secrets (tested in access.rs).
    let w = World::new(&["prod"]);
    w.bring_up("prod");
    let kc = kubeconfig_with_files(&w, "prod");
    let plan = format!(
        "[mesh]\nid = \"mesh1\"\nistio = \"1.28.0\"\n\n[clusters.prod]\nprovider = \"kubeconfig\"\ncontext = \"kind-prod\"\nkubeconfig = \"{}\"\nnetwork = \"network1\"\n\n[apps.helloworld]\nmanifest = \"tasks/apps/helloworld.yaml\"\nnamespace = \"sample\"\nplacement = {{ prod = [\"v1\", \"v2\"] }}\n",
        kc.display()
    );
    let p = project(&plan);
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        w.releases("prod")["istio-system/istiod"]["status"] == "deployed",
        "{}",
        w.releases("prod")
    );
    let inv: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("state/inventory.json")).unwrap(),
    )
    .unwrap();
    let installs = inv["resources"].as_array().unwrap();
    assert!(
        installs.iter().any(|r| r["kind"] == "install"
            && r["name"] == "istiod:prod"
            && r["phase"] == "created"),
        "{inv}"
    );
    // mesh clean forgets the cache, not what mesh installed: destroy still
    // undoes it all, from the state.
    assert!(
        w.api("prod")
            .get("apps", "deployments", "sample", "helloworld-v1")
            .is_some()
    );
    let o = mesh(&w, p.path(), &["clean"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = mesh(&w, p.path(), &["destroy", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("undone istiod:prod (from the state"),
        "{}",
        o.stderr
    );
    let rel = w.releases("prod");
    assert!(rel.get("istio-system/istiod").is_none(), "{rel}");
    assert!(
        w.api("prod")
            .get("apps", "deployments", "sample", "helloworld-v1")
            .is_none()
    );
    let inv: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("state/inventory.json")).unwrap(),
    )
    .unwrap();
    assert!(inv["resources"].as_array().unwrap().is_empty(), "{inv}");
    let o = mesh(&w, p.path(), &["destroy", "--yes"]);
    assert!(o.stderr.contains("nothing to destroy"), "{}", o.stderr);
}

#[test]
fn a_namespace_that_was_there_before_mesh_is_never_deleted() {
    // On an existing cluster, the apps' namespace may be the user's, with
    // their own things in it: mesh labels it, and leaves it on destroy
    // (a namespace delete takes everything in it), after mesh clean too.
    let w = World::new(&["prod"]);
    w.bring_up("prod");
    let api = w.api("prod");
    api.put(
        "",
        "namespaces",
        "",
        "sample",
        serde_json::json!({"metadata": {"labels": {"team": "mine"}}}),
    );
    api.put(
        "",
        "configmaps",
        "sample",
        "precious",
        serde_json::json!({"data": {"k": "v"}}),
    );
    let kc = kubeconfig_with_files(&w, "prod");
    let plan = format!(
        "[mesh]\nid = \"mesh1\"\nistio = \"1.28.0\"\n\n[clusters.prod]\nprovider = \"kubeconfig\"\ncontext = \"kind-prod\"\nkubeconfig = \"{}\"\nnetwork = \"network1\"\n\n[apps.helloworld]\nmanifest = \"tasks/apps/helloworld.yaml\"\nnamespace = \"sample\"\nplacement = {{ prod = [\"v1\", \"v2\"] }}\n",
        kc.display()
    );
    let p = project(&plan);
    for clean_first in [false, true] {
        let o = mesh(&w, p.path(), &["build"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(
            api.get("apps", "deployments", "sample", "helloworld-v1")
                .is_some()
        );
        if clean_first {
            assert_eq!(mesh(&w, p.path(), &["clean"]).code, 0);
        }
        let o = mesh(&w, p.path(), &["destroy", "--yes"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(
            api.get("apps", "deployments", "sample", "helloworld-v1")
                .is_none(),
            "clean first: {clean_first}: mesh's own objects go"
        );
        assert!(
            api.get("", "namespaces", "", "sample").is_some(),
            "clean first: {clean_first}"
        );
        assert!(api.get("", "configmaps", "sample", "precious").is_some());
    }
}

#[test]
fn a_kind_cluster_mesh_did_not_create_is_never_deleted_or_used() {
    // The hazard: a user's own kind cluster named like a planned one was
    // deleted and recreated by the build.
    let w = World::new(&["east", "west"]);
    w.create_cluster_behind_meshs_back("east");
    w.api("east").put(
        "",
        "configmaps",
        "default",
        "precious",
        serde_json::json!({"data": {"k": "v"}}),
    );
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    says_all(
        &o.stderr,
        &[
            "kind cluster east",
            "exists, and mesh did not create it",
            "kind delete cluster --name east",
            "mesh adopt east",
        ],
    );
    assert!(
        !w.tool_log().iter().any(
            |c| (c[0] == "kind" && (c[1] == "delete" || c[1] == "create"))
                || (c[0] == "helm" && c[1] != "version")
        ),
        "{:?}",
        w.tool_log()
    );
    assert!(common::recorded(p.path()).is_empty(), "nothing ran");
    assert!(
        w.api("east")
            .get("", "configmaps", "default", "precious")
            .is_some()
    );
    // Given to mesh, it is mesh's: the next build recreates it.
    let o = mesh(&w, p.path(), &["adopt", "east"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("mesh now owns kind cluster east"),
        "{}",
        o.stderr
    );
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        w.tool_log()
            .iter()
            .any(|c| c[..2] == ["kind", "delete"] && c.contains(&"east".to_string()))
    );
}

#[test]
fn a_build_never_switches_the_users_current_kube_context() {
    // kind create makes kind-<name> the current context; mesh adds kind's
    // contexts for kubectl habits and never switches the user's.
    let w = World::new(&["east", "west"]);
    let kc = w.state().join("user-kubeconfig");
    std::fs::write(
        &kc,
        serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "prod", "cluster": {"server": "https://prod.example.com"}}],
            "users": [{"name": "prod", "user": {"token": "t"}}],
            "contexts": [{"name": "my-prod", "context": {"cluster": "prod", "user": "prod"}}],
            "current-context": "my-prod"}))
        .unwrap(),
    )
    .unwrap();
    w.set_env("KUBECONFIG", kc.to_str().unwrap());
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&kc).unwrap()).unwrap();
    assert_eq!(v["current-context"], "my-prod", "{v}");
    let names: Vec<&str> = v["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for c in ["my-prod", "kind-east", "kind-west"] {
        assert!(names.contains(&c), "{c}: {names:?}");
    }
    let o = mesh(&w, p.path(), &["destroy", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&kc).unwrap()).unwrap();
    assert_eq!(v["current-context"], "my-prod", "{v}");
    assert_eq!(v["contexts"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn a_kind_killed_while_it_held_the_kubeconfig_lock_does_not_block_the_next_build() {
    // kind locks the kubeconfig it edits by creating <file>.lock, in one
    // attempt; killed while it holds it (Ctrl-C, mesh killed), the lock
    // stays and every later kind fails on it. kind only ever edits a
    // private file of mesh's, so the next build is not blocked.
    let w = World::new(&["east", "west"]);
    w.configure(serde_json::json!({"crash": ["kind write-kubeconfig east"]}));
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("cluster:east"), "{}", o.stderr);
    w.configure(serde_json::json!({}));
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let user = w
        .env()
        .into_iter()
        .find(|(k, _)| k == "KUBECONFIG")
        .unwrap()
        .1;
    let text = std::fs::read_to_string(&user).unwrap();
    let v: Value = serde_saphyr::from_str(&text).unwrap();
    let names: Vec<&str> = v["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.contains(&"kind-east") && names.contains(&"kind-west"),
        "{names:?}"
    );
    assert!(!std::path::Path::new(&format!("{user}.lock")).exists());
}

#[test]
fn a_lock_a_killed_mesh_left_is_cleared_and_anyone_elses_is_named_with_the_fix() {
    let w = World::new(&["east", "west"]);
    let user = w
        .env()
        .into_iter()
        .find(|(k, _)| k == "KUBECONFIG")
        .unwrap()
        .1;
    let lock = format!("{user}.lock");
    // Left by a mesh process that is gone: it says so, and is cleared.
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    std::fs::write(&lock, format!("mesh {dead}\n")).unwrap();
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!std::path::Path::new(&lock).exists());
    let o = mesh(&w, p.path(), &["destroy", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // Anyone else's (kubectl's and kind's locks are empty): waited for,
    // then named with the fix, never deleted.
    std::fs::write(&lock, "").unwrap();
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("{lock} exists"))
            && o.stderr.contains(&format!("delete {lock}")),
        "{}",
        o.stderr
    );
    assert!(std::path::Path::new(&lock).exists());
    std::fs::remove_file(&lock).unwrap();
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn an_app_removed_from_the_plan_is_removed_from_its_clusters_dependents_first() {
    let w = World::new(&["east", "west"]);
    let extra = "\n[apps.extra]\nmanifest = \"tasks/apps/curl.yaml\"\nnamespace = \"extra\"\nplacement = { east = \"*\" }\n";
    let with = default_plan().replace("\n[verify]", &format!("{extra}\n[verify]"));
    assert!(with.contains("[apps.extra]"));
    let p = up(&w, &with);
    let east = w.api("east");
    assert!(east.get("apps", "deployments", "extra", "curl").is_some());
    std::fs::write(p.path().join("plan.toml"), default_plan()).unwrap();
    // The plan shows it; a build off a terminal without --yes refuses.
    let o = mesh(&w, p.path(), &["plan"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for id in ["app:extra:east", "namespace:extra:east"] {
        assert!(
            o.stdout
                .contains(&format!("remove {id} from east: it left plan.toml")),
            "{}",
            o.stdout
        );
    }
    let j = mesh(&w, p.path(), &["plan", "--json"]).json();
    let removals: Vec<&str> = j["removals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        removals,
        ["app:extra:east", "namespace:extra:east"],
        "dependents first"
    );
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("--yes"), "{}", o.stderr);
    assert!(east.get("apps", "deployments", "extra", "curl").is_some());
    let o = mesh(&w, p.path(), &["build", "--yes", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("removed app:extra:east from east"),
        "{}",
        o.stderr
    );
    assert!(east.get("apps", "deployments", "extra", "curl").is_none());
    assert!(east.get("", "namespaces", "", "extra").is_none());
    // What stays, stays, and is not rerun.
    assert!(east.get("apps", "deployments", "sample", "curl").is_some());
    assert!(o.with("ran").is_empty(), "{:?}", o.with("ran"));
    let o = mesh(&w, p.path(), &["plan"]);
    assert!(!o.stdout.contains("remove"), "{}", o.stdout);
}

#[test]
fn a_cluster_removed_from_the_plan_is_removed_by_build_with_yes() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    assert!(p.path().join("out/west").exists());
    let plan = default_plan()
        .replace(
            "[clusters.west]\nprovider = \"kind\"\nnetwork = \"network2\"\npod_subnet = \"10.21.0.0/16\"\nservice_subnet = \"172.22.0.0/16\"\nworkers = 1\ncni = \"cilium\"\n",
            "",
        )
        .replace("placement = { east = \"v1\", west = \"v2\" }", "placement = { east = [\"v1\", \"v2\"] }")
        .replace("placement = { east = \"*\", west = \"*\" }", "placement = { east = \"*\" }");
    assert!(
        !plan.contains("[clusters.west]") && !plan.contains("west ="),
        "{plan}"
    );
    std::fs::write(p.path().join("plan.toml"), &plan).unwrap();
    let o = mesh(&w, p.path(), &["plan"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("1 to remove"), "{}", o.stdout);
    assert!(
        o.stdout.contains("remove kind cluster west"),
        "{}",
        o.stdout
    );
    // Not on a terminal and no --yes: refused, nothing done.
    w.clear_log();
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("Pass --yes"), "{}", o.stderr);
    assert_eq!(w.kind_clusters(), ["east", "west"]);
    assert!(
        w.mutating_tool_calls().is_empty(),
        "{:?}",
        w.mutating_tool_calls()
    );
    // With --yes: exactly west goes, with east's secret for it and its files.
    let o = mesh(&w, p.path(), &["build", "--yes", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(w.kind_clusters(), ["east"]);
    assert!(
        w.api("east")
            .get("", "secrets", "istio-system", "istio-remote-secret-west")
            .is_none()
    );
    assert!(!p.path().join("out/west").exists());
    assert!(!p.path().join("out/pki/west").exists());
    assert!(o.with("cached").contains(&"cluster:east".to_string()));
    let deletes: Vec<Vec<String>> = w
        .mutating_tool_calls()
        .into_iter()
        .filter(|c| c[1] == "delete")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].contains(&"west".to_string()));
    let o = mesh(&w, p.path(), &["plan"]);
    assert!(!o.stdout.contains("to remove"), "{}", o.stdout);
}

#[test]
fn destroy_works_from_the_inventory_after_mesh_clean() {
    // `mesh clean` throws the cache away; the state keeps what mesh owns,
    // so destroy still deletes every cluster, and a mesh from before the
    // inventory (cache records only) is migrated, not forgotten.
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let inv: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("state/inventory.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(inv["resources"].as_array().unwrap().len(), 2, "{inv}");
    assert!(
        inv["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"] == "kind-cluster" && r["phase"] == "created"),
        "{inv}"
    );
    let o = mesh(&w, p.path(), &["clean"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!p.path().join("cache").exists());
    assert!(p.path().join("state/inventory.json").exists());
    let o = mesh(&w, p.path(), &["destroy", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(w.kind_clusters(), Vec::<String>::new());

    // Before the state store: the cache alone says what mesh made.
    let p = up(&w, &default_plan());
    std::fs::remove_file(p.path().join("state/inventory.json")).unwrap();
    let o = mesh(&w, p.path(), &["destroy", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(w.kind_clusters(), Vec::<String>::new());
}

#[test]
fn a_new_intermediate_restarts_istiod_then_the_workloads_and_waits_for_them() {
    // istiod loads cacerts when it starts: a new intermediate (here from an
    // intermediate_days edit) reaches it only through a restart.
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let istiod = |c: &str| {
        w.api(c)
            .get("apps", "deployments", "istio-system", "istiod")
            .unwrap()
    };
    let restarted = |d: &Value| {
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string()
    };
    assert!(
        !restarted(&istiod("east")),
        "a first install restarts nothing"
    );
    let gen_before = istiod("east")["metadata"]["generation"].as_i64().unwrap();
    w.set_ready_delay_in("istio-system", std::time::Duration::from_secs(1));
    std::fs::write(
        p.path().join("plan.toml"),
        default_plan().replace("intermediate_days = 730", "intermediate_days = 365"),
    )
    .unwrap();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").contains(&"cacerts:east".to_string()));
    for c in ["east", "west"] {
        let d = istiod(c);
        assert!(restarted(&d), "{c}: {d}");
        let g = d["metadata"]["generation"].as_i64().unwrap();
        assert!(g > gen_before, "{c}: generation {g}");
        // The build waited for the restarted istiod.
        assert_eq!(
            d["status"]["observedGeneration"].as_i64(),
            Some(g),
            "{c}: {d}"
        );
        assert_eq!(
            d["status"]["updatedReplicas"], d["spec"]["replicas"],
            "{c}: {d}"
        );
        // Then what holds certificates of the old intermediate: the apps
        // and the east-west gateway, after istiod was back, and waited for.
        let at = |d: &Value| {
            let s = d["spec"]["template"]["metadata"]["annotations"]
                ["kubectl.kubernetes.io/restartedAt"]
                .as_str()
                .unwrap_or_else(|| panic!("{c}: not restarted: {d}"))
                .to_string();
            time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let deployments = w.api(c).list("apps", "deployments");
        let mut workloads = 0;
        for d in &deployments {
            let (ns, name) = (
                d["metadata"]["namespace"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            );
            if name == "istiod" || !(ns == "sample" || ns == "istio-system") {
                continue;
            }
            workloads += 1;
            assert!(
                at(d) > at(&istiod(c)),
                "{c}: {ns}/{name} restarted before istiod"
            );
            assert_eq!(
                d["status"]["updatedReplicas"], d["spec"]["replicas"],
                "{c}: {ns}/{name}: {d}"
            );
        }
        assert!(workloads >= 2, "{c}: apps and gateway: {deployments:?}");
    }
}

#[test]
fn a_new_root_is_refused_while_mesh_owns_live_clusters_and_rotated_when_asked() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let root = std::fs::read_to_string(p.path().join("state/identity/root-cert.pem")).unwrap();
    // An unrelated [pki] edit keeps the root.
    let plan = default_plan().replace("intermediate_days = 730", "intermediate_days = 365");
    std::fs::write(p.path().join("plan.toml"), &plan).unwrap();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.with("ran").contains(&"pki.root".to_string()));
    // A root parameter: refused, and nothing reaches the clusters.
    let cacerts = w.api("east").get("", "secrets", "istio-system", "cacerts");
    std::fs::write(
        p.path().join("plan.toml"),
        plan.replace("root_days = 3650", "root_days = 7300"),
    )
    .unwrap();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("task pki.root failed") && o.stderr.contains("mesh build --rotate-root"),
        "{}",
        o.stderr
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("state/identity/root-cert.pem")).unwrap(),
        root
    );
    assert_eq!(
        w.api("east").get("", "secrets", "istio-system", "cacerts"),
        cacerts
    );
    // Asked for by name: rotated in three phases, each restarting istiod
    // and the workloads, ending on the new root with verify passing.
    let o = mesh(&w, p.path(), &["build", "--rotate-root"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for phase in ["phase 1 of 3", "phase 2 of 3", "phase 3 of 3"] {
        assert!(o.stderr.contains(phase), "{phase}: {}", o.stderr);
    }
    assert!(
        o.stdout.contains("passed") || o.stdout.contains("PASS"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    let new = std::fs::read_to_string(p.path().join("state/identity/root-cert.pem")).unwrap();
    assert_ne!(new, root);
    for c in ["east", "west"] {
        let s = w
            .api(c)
            .get("", "secrets", "istio-system", "cacerts")
            .unwrap();
        let trusted = match s["stringData"]["root-cert.pem"].as_str() {
            Some(t) => t.to_string(),
            None => {
                use base64::Engine;
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(s["data"]["root-cert.pem"].as_str().unwrap())
                        .unwrap(),
                )
                .unwrap()
            }
        };
        assert_eq!(trusted.trim(), new.trim(), "{c}: only the new root trusted");
        let istiod = w
            .api(c)
            .get("apps", "deployments", "istio-system", "istiod")
            .unwrap();
        assert!(
            istiod["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
            "{c}: {istiod}"
        );
    }
}

#[test]
fn verify_fails_when_the_clusters_workloads_do_not_trust_each_others_roots() {
    // The fake world's mTLS: a pod keeps the certificate and the trusted
    // roots it started with. A root swapped at once in one cluster (what
    // --rotate-root's phases avoid) cuts the traffic between the clusters.
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let o = mesh(&w, p.path(), &["verify", "--wait", "10"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let stranger = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut c = rcgen::CertificateParams::default();
        c.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        c.self_signed(&key).unwrap().pem()
    };
    let api = w.api("west");
    let mut sec = api.get("", "secrets", "istio-system", "cacerts").unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&stranger);
    sec["data"]["root-cert.pem"] = Value::String(b64.clone());
    sec["data"]["cert-chain.pem"] = Value::String(b64);
    api.put("", "secrets", "istio-system", "cacerts", sec);
    w.rollout("west", "sample", "helloworld-v2");
    std::thread::sleep(std::time::Duration::from_millis(800));
    let o = mesh(&w, p.path(), &["verify", "--wait", "2"]);
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("v2"), "{}", o.stdout);
}

#[test]
fn a_deployment_that_never_becomes_ready_times_out_naming_it() {
    let w = World::new(&["east", "west"]);
    for c in ["east", "west"] {
        w.api(c)
            .knobs
            .never_ready
            .lock()
            .unwrap()
            .insert("istiod".into());
    }
    w.set_env("MESH_WAIT_TIMEOUT", "2");
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("timed out after 2s waiting for Deployment istio-system/istiod to be ready"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("task istiod:"), "{}", o.stderr);
    // Nothing downstream ran, and it is said once per root failure.
    assert!(o.with("skipped").iter().any(|t| t.starts_with("gateway:")));
    assert!(
        o.with("ran")
            .iter()
            .all(|t| !t.starts_with("gateway:") && !t.starts_with("app:"))
    );
}

/// Start `mesh args` and SIGKILL it after `after` (if it is still running).
fn mesh_killed_after(w: &World, dir: &std::path::Path, args: &[&str], after: std::time::Duration) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in w.env() {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + after;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Rerun `args` until it succeeds (a killed run's orphaned tool may still
/// be finishing: the world settles within a few tries).
fn converge(w: &World, dir: &std::path::Path, args: &[&str]) {
    let mut last = String::new();
    for _ in 0..6 {
        let o = mesh(w, dir, args);
        if o.code == 0 {
            return;
        }
        last = o.stderr;
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("mesh {args:?} did not converge:\n{last}");
}

/// What mesh's inventory says it owns, and what it recorded as built.
fn owned_and_recorded(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let inv: Value = std::fs::read_to_string(dir.join("state/inventory.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let mut owned: Vec<String> = inv["resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    owned.sort();
    let ids = common::recorded(dir);
    let recorded = ["east", "west"]
        .iter()
        .filter(|c| ids.contains(&format!("cluster:{c}")))
        .map(|c| c.to_string())
        .collect();
    (owned, recorded)
}

#[test]
fn sigkill_at_random_points_of_build_destroy_and_removal_converges_with_the_inventory_true() {
    // MESH_KILL_POINTS kill points for each of build, destroy and removal
    // (default 50), at pseudo-random times (a fixed LCG: reproducible).
    // After each kill, the inventory never claims less than the world
    // holds of mesh's (a cluster mesh made is never disowned) and a cluster
    // recorded as built exists; a rerun converges; after a converged destroy
    // nothing is owned and nothing exists.
    let points: usize = std::env::var("MESH_KILL_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let w = World::new(&["east", "west"]);
    w.configure(serde_json::json!({"delay": {"kind create": 0.3, "kind delete": 0.2}}));
    let full = default_plan();
    let without_west = full
        .replace(
            "[clusters.west]\nprovider = \"kind\"\nnetwork = \"network2\"\npod_subnet = \"10.21.0.0/16\"\nservice_subnet = \"172.22.0.0/16\"\nworkers = 1\ncni = \"cilium\"\n",
            "",
        )
        .replace("placement = { east = \"v1\", west = \"v2\" }", "placement = { east = [\"v1\", \"v2\"] }")
        .replace("placement = { east = \"*\", west = \"*\" }", "placement = { east = \"*\" }");
    let p = project(&full);
    let mut seed: u64 = 0x5eed;
    let mut next_ms = |max: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % max
    };
    let check = |what: &str, i: usize| {
        let (owned, recorded) = owned_and_recorded(p.path());
        let world = w.kind_clusters();
        for c in &world {
            assert!(
                owned.contains(c),
                "{what} #{i}: {c} exists but is not owned ({owned:?})"
            );
        }
        for c in &recorded {
            assert!(
                world.contains(c),
                "{what} #{i}: {c} recorded as built but gone"
            );
        }
    };
    let ms = std::time::Duration::from_millis;
    for i in 0..points {
        // Build, killed somewhere in its first 2.5 s; then to completion.
        std::fs::write(p.path().join("plan.toml"), &full).unwrap();
        mesh_killed_after(&w, p.path(), &["build"], ms(next_ms(2500)));
        check("build", i);
        converge(&w, p.path(), &["build"]);
        check("built", i);
        assert_eq!(w.kind_clusters(), ["east", "west"]);
        // Removal of west, killed; then to completion.
        std::fs::write(p.path().join("plan.toml"), &without_west).unwrap();
        mesh_killed_after(&w, p.path(), &["build", "--yes"], ms(next_ms(1500)));
        check("removal", i);
        converge(&w, p.path(), &["build", "--yes"]);
        assert_eq!(w.kind_clusters(), ["east"], "removal #{i}");
        // Destroy, killed; then to completion.
        mesh_killed_after(&w, p.path(), &["destroy", "--yes"], ms(next_ms(1000)));
        check("destroy", i);
        converge(&w, p.path(), &["destroy", "--yes"]);
        assert_eq!(w.kind_clusters(), Vec::<String>::new(), "destroy #{i}");
        assert_eq!(
            owned_and_recorded(p.path()),
            (vec![], vec![]),
            "destroy #{i}"
        );
    }
    eprintln!(
        "{points} kill points each for build, removal and destroy: converged, inventory true"
    );
}

#[test]
fn verbose_shows_every_tool_command_and_api_call_stamped_and_redacted() {
    let w = World::new(&["east", "west"]);
    let p = project(&default_plan());
    let o = mesh(&w, p.path(), &["-v", "build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // Every -v line: stamped with milliseconds since mesh started, then
    // the task it serves, if any.
    let said: Vec<(f64, Option<&str>, &str)> = o
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("mesh: "))
        .filter_map(|l| {
            let (ms, rest) = l.trim_start().split_once(" ms  ")?;
            let ms: f64 = ms.parse().ok()?;
            let (task, line) = match rest.strip_prefix('[') {
                Some(r) => {
                    let (t, line) = r.split_once("] ").expect(l);
                    (Some(t), line)
                }
                None => (None, rest),
            };
            Some((ms, task, line))
        })
        .collect();
    assert!(said.len() > 100, "{}", o.stderr);
    assert!(said.iter().all(|(ms, ..)| *ms >= 0.0));
    // Every tool call, exactly, as its command line.
    let mut shown: Vec<String> = said
        .iter()
        .filter_map(|(_, _, l)| l.strip_prefix("$ ").map(str::to_string))
        .collect();
    let mut ran: Vec<String> = w.tool_log().iter().map(|c| c.join(" ")).collect();
    shown.sort();
    ran.sort();
    assert_eq!(shown, ran);
    assert!(
        shown
            .iter()
            .any(|c| c.starts_with("kind create cluster --name east"))
    );
    assert!(
        shown
            .iter()
            .any(|c| c.starts_with("helm upgrade --install istiod")),
        "{shown:?}"
    );
    // Each ends, with its exit.
    let ended = said
        .iter()
        .filter(|(_, _, l)| l.contains(": exit 0 in "))
        .count();
    assert_eq!(ended, ran.len());
    // Every API call mesh made, exactly, with its answer: the fake server
    // logged what it received.
    for c in ["east", "west"] {
        let mut shown: Vec<String> = said
            .iter()
            .filter_map(|(_, _, l)| l.strip_prefix(&format!("{c}: ") as &str))
            .map(|l| {
                let (call, answer) = l.rsplit_once(" -> ").expect(l);
                format!("{call} {}", answer.split_once(' ').expect(l).0)
            })
            .collect();
        let mut got: Vec<String> = w
            .api(c)
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                percent_encoding::percent_decode_str(l)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        shown.sort();
        got.sort();
        assert_eq!(shown, got, "{c}");
        assert!(
            shown
                .iter()
                .any(|l| l.starts_with("PATCH /api/v1/namespaces/istio-system/secrets/cacerts?"))
        );
    }
    // Secrets never: no key, no token.
    let key = std::fs::read_to_string(p.path().join("out/pki/east/ca-key.pem")).unwrap();
    let body = key.lines().nth(1).unwrap();
    for secret in ["PRIVATE KEY", "fake-token", body] {
        assert!(!o.stderr.contains(secret), "{secret} in -v output");
    }
    // One task's lines, in order (times and temp names vary; discovery is
    // shared by the tasks of a cluster, so which task asks first varies).
    let lines: Vec<String> = said
        .iter()
        .filter(|(_, t, _)| matches!(*t, Some("cluster:east" | "cacerts:east")))
        .filter(|(_, _, l)| !l.starts_with("east: GET /api/v1 "))
        .map(|(_, t, l)| {
            let l = steady(l);
            format!("[{}] {l}", t.unwrap())
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

/// A `-v` line without what varies between runs: durations and temp names.
fn steady(l: &str) -> String {
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_str().unwrap();
    let l = l
        .split(' ')
        .map(|w| if w.starts_with(tmp) { "<tmp>" } else { w })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(i) = l.rfind(" (").filter(|_| l.ends_with(" ms)")) {
        format!("{} (T)", &l[..i])
    } else if let Some(i) = l
        .find(": exit ")
        .and_then(|e| l[e..].find(" in ").map(|j| e + j))
    {
        format!("{} in T", &l[..i])
    } else {
        l
    }
}

/// The default plan with a locality per cluster (east in two zones' first,
/// west in another region) and locality load balancing for helloworld.
fn locality_plan() -> String {
    let plan = default_plan()
        .replace(
            "network = \"network1\"\n",
            "network = \"network1\"\nregion = \"us-east\"\nzone = \"us-east-1a\"\n",
        )
        .replace(
            "network = \"network2\"\n",
            "network = \"network2\"\nregion = \"us-west\"\nzone = \"us-west-1a\"\n",
        )
        .replace(
            "verify = \"/hello\"",
            "verify = \"/hello\"\nlocality = true",
        );
    assert!(plan.contains("locality = true") && plan.contains("us-west-1a"));
    plan
}

#[test]
fn locality_keeps_traffic_home_and_failover_moves_all_of_it_and_back() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &locality_plan());
    // The kind config labelled every node; the rule is on both primaries.
    for (c, region) in [("east", "us-east"), ("west", "us-west")] {
        let nodes = w.api(c).list("", "nodes");
        assert_eq!(nodes.len(), 2, "{c}: a control plane and a worker");
        for n in &nodes {
            assert_eq!(
                n["metadata"]["labels"]["topology.kubernetes.io/region"], region,
                "{n}"
            );
        }
        let dr = w
            .api(c)
            .get(
                "networking.istio.io",
                "destinationrules",
                "istio-system",
                "helloworld-locality",
            )
            .unwrap_or_else(|| panic!("{c}: no DestinationRule"));
        assert_eq!(dr["spec"]["host"], "helloworld.sample.svc.cluster.local");
        assert!(dr["spec"]["trafficPolicy"]["outlierDetection"].is_object());
    }

    // Every request stays in its cluster.
    let j = mesh(&w, p.path(), &["verify", "--json", "--wait", "20"]).json();
    assert_eq!(j["passed"], true, "{j:#}");
    let app = &j["apps"][0];
    for c in ["east", "west"] {
        assert_eq!(
            app["answered_by"][c],
            serde_json::json!({ c: 20 }),
            "{app:#}"
        );
        assert_eq!(app["local_share"][c], 1.0, "{app:#}");
    }

    // Failover: each cluster down in turn, every request answered by the
    // other, then home again.
    let o = mesh(
        &w,
        p.path(),
        &["verify", "--failover", "--json", "--wait", "20"],
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let j = o.json();
    let f = j["failover"].as_array().unwrap();
    assert_eq!(f.len(), 2, "{j:#}");
    for (x, (down, up)) in f.iter().zip([("east", "west"), ("west", "east")]) {
        assert_eq!(x["down"], down);
        assert_eq!(x["passed"], true, "{x:#}");
        for c in ["east", "west"] {
            assert_eq!(
                x["before"][c]["clusters"],
                serde_json::json!({ c: 20 }),
                "{x:#}"
            );
            assert_eq!(
                x["during"][c]["clusters"],
                serde_json::json!({ up: 20 }),
                "{x:#}"
            );
            assert_eq!(x["during"][c]["unanswered"], 0, "{x:#}");
            assert_eq!(
                x["after"][c]["clusters"],
                serde_json::json!({ c: 20 }),
                "{x:#}"
            );
        }
    }
    let text = mesh(&w, p.path(), &["verify", "--failover", "--wait", "20"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .contains("failover: helloworld with helloworld-v1 scaled to zero in east:"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("before: east 20") && text.stdout.contains("during: west 20"),
        "{}",
        text.stdout
    );
    // The replicas are back as the manifest has them, and the mesh is as
    // mesh built it: a rerun changes nothing.
    for (c, d) in [("east", "helloworld-v1"), ("west", "helloworld-v2")] {
        let dep = w.api(c).get("apps", "deployments", "sample", d).unwrap();
        assert_eq!(dep["spec"]["replicas"], 1, "{dep}");
        assert!(
            w.api(c)
                .get("", "pods", "sample", &format!("{d}-fake"))
                .is_some()
        );
    }
    let before = w.api_mutations();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.with("ran"), Vec::<String>::new());
    assert_eq!(w.api_mutations(), before);
}

#[test]
fn verify_fails_when_locality_is_required_but_off_and_a_build_repairs_it() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &locality_plan());
    // Once istiod has synced the remote clusters it passes…
    assert_eq!(mesh(&w, p.path(), &["verify", "--wait", "20"]).code, 0);
    // …and without the rule, east's callers are spread over both clusters:
    // half stays home, which is not the majority locality promises.
    assert!(w.api("east").remove(
        "networking.istio.io",
        "destinationrules",
        "istio-system",
        "helloworld-locality"
    ));
    let o = mesh(&w, p.path(), &["verify", "--wait", "0"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(
        o.stdout
            .contains("NOT LOCAL: 10 of 20 answered in east: locality needs more than half"),
        "{}",
        o.stdout
    );
    let j = mesh(&w, p.path(), &["verify", "--json", "--wait", "0"]).json();
    assert_eq!(j["passed"], false);
    assert_eq!(j["apps"][0]["local_share"]["east"], 0.5);
    assert_eq!(j["apps"][0]["local_share"]["west"], 1.0);
    assert!(j["apps"][0]["not_local"]["west"].is_null(), "{j:#}");

    // A rule of the user's own for the host in the app's namespace, without
    // outlier detection, takes precedence over mesh's and turns it off too.
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.with("ran"), vec!["locality:helloworld:east".to_string()]);
    assert_eq!(mesh(&w, p.path(), &["verify", "--wait", "20"]).code, 0);
    w.api("west").put(
        "networking.istio.io",
        "destinationrules",
        "sample",
        "mine",
        serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "mine", "namespace": "sample"},
            "spec": {"host": "helloworld", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}}),
    );
    let j = mesh(&w, p.path(), &["verify", "--json", "--wait", "0"]).json();
    assert_eq!(j["passed"], false);
    assert_eq!(j["apps"][0]["local_share"]["west"], 0.5, "{j:#}");
}

#[test]
fn failover_without_locality_moves_every_request_to_the_other_cluster() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    let o = mesh(
        &w,
        p.path(),
        &["verify", "--failover", "--json", "--wait", "20"],
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let j = o.json();
    let f = j["failover"].as_array().unwrap();
    assert_eq!(f.len(), 2);
    for (x, (down, up)) in f.iter().zip([("east", "west"), ("west", "east")]) {
        assert_eq!(x["down"], down);
        for c in ["east", "west"] {
            // Round robin over both clusters before and after; the one
            // left while the other is down.
            assert_eq!(x["before"][c]["clusters"][down], 10, "{x:#}");
            assert_eq!(
                x["during"][c]["clusters"],
                serde_json::json!({ up: 20 }),
                "{x:#}"
            );
            assert_eq!(x["after"][c]["clusters"][down], 10, "{x:#}");
        }
    }
}

#[test]
fn ctrl_c_during_failover_scales_the_app_back() {
    let w = World::new(&["east", "west"]);
    let p = up(&w, &default_plan());
    // Pods take a while to go: Ctrl-C comes while verify waits for them.
    w.set_ready_delay_in("sample", std::time::Duration::from_secs(5));
    let child = fake::spawn_mesh(&w, p.path(), &["verify", "--failover", "--wait", "30"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let replicas = || {
        w.api("east")
            .get("apps", "deployments", "sample", "helloworld-v1")
            .unwrap()["spec"]["replicas"]
            .clone()
    };
    while replicas() != 0 {
        assert!(std::time::Instant::now() < deadline, "never scaled down");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: helloworld in east scaled back to helloworld-v1=1"),
        "{stderr}"
    );
    assert_eq!(replicas(), 1);
}

/// A rerun of a built mesh: `id` among the cached (probed, not rerun),
/// no tool call that changes anything, no API write.
fn rerun_is_a_noop(w: &World, dir: &std::path::Path, id: &str) {
    w.clear_log();
    let before = w.api_mutations();
    let o = mesh(w, dir, &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.with("cached").contains(&id.to_string()),
        "{id}: {}",
        o.stdout
    );
    assert_eq!(w.mutating_tool_calls(), Vec::<Vec<String>>::new());
    assert_eq!(w.api_mutations(), before);
}

#[test]
fn an_ingress_gateway_is_installed_at_its_pinned_address_probed_and_destroyed() {
    let w = World::new(&["east", "west"]);
    let plan = default_plan().replace(
        "network = \"network1\"\n",
        "network = \"network1\"\ningress = true\n",
    );
    let p = up(&w, &plan);
    // The second address of east's range; the east-west gateway has the first.
    let ranges: Value = serde_json::from_str(
        &std::fs::read_to_string(p.path().join("out/net/lb-ranges.json")).unwrap(),
    )
    .unwrap();
    let start: std::net::Ipv4Addr = ranges["ranges"]["east"]["start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let want = std::net::Ipv4Addr::from(u32::from(start) + 1).to_string();
    let svc = w
        .api("east")
        .get("", "services", "istio-system", "istio-ingressgateway")
        .expect("the ingress gateway's Service");
    assert_eq!(
        svc["status"]["loadBalancer"]["ingress"][0]["ip"],
        want.as_str()
    );
    assert_eq!(svc["metadata"]["labels"]["istio"], "ingressgateway");
    assert!(
        w.api("west")
            .get("", "services", "istio-system", "istio-ingressgateway")
            .is_none(),
        "only where the plan asks"
    );
    assert_eq!(
        w.releases("east")["istio-system/istio-ingressgateway"]["status"],
        "deployed"
    );
    // A no-op rerun probes it and touches nothing.
    rerun_is_a_noop(&w, p.path(), "ingress:east");
    // Dropped from the plan, it is uninstalled.
    std::fs::write(p.path().join("plan.toml"), default_plan()).unwrap();
    let o = mesh(&w, p.path(), &["build", "--json", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        w.api("east")
            .get(
                "apps",
                "deployments",
                "istio-system",
                "istio-ingressgateway"
            )
            .is_none()
    );
    assert!(
        w.tool_log()
            .iter()
            .any(|c| c[0] == "helm" && c[1] == "uninstall" && c[2] == "istio-ingressgateway")
    );
}

#[test]
fn the_prometheus_addon_is_installed_in_every_cluster_probed_and_removed() {
    let w = World::new(&["east", "west"]);
    let plan = format!("{}\n[addons]\nprometheus = true\n", default_plan());
    let p = up(&w, &plan);
    for c in ["east", "west"] {
        let r = &w.releases(c)["istio-system/prometheus"];
        assert_eq!(r["status"], "deployed", "{c}: {r}");
        assert_eq!(r["chart"], "prometheus");
        assert_eq!(r["version"], "27.19.0");
        assert_eq!(
            r["values"]["server"]["global"]["external_labels"]["cluster"],
            c
        );
        assert!(
            w.api(c)
                .get("apps", "deployments", "istio-system", "prometheus-server")
                .is_some(),
            "{c}"
        );
    }
    // A no-op rerun probes it and touches nothing.
    rerun_is_a_noop(&w, p.path(), "prometheus:east");
    // Dropped from the plan, it is uninstalled everywhere.
    std::fs::write(p.path().join("plan.toml"), default_plan()).unwrap();
    let o = mesh(&w, p.path(), &["build", "--json", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for c in ["east", "west"] {
        assert!(
            w.api(c)
                .get("apps", "deployments", "istio-system", "prometheus-server")
                .is_none(),
            "{c}"
        );
    }
}

#[test]
fn kiali_in_the_first_primary_reads_every_cluster_and_leaves_with_the_plan() {
    let w = World::new(&["east", "west"]);
    let plan = format!(
        "{}\n[addons]\nprometheus = true\nkiali = true\n",
        default_plan()
    );
    let p = up(&w, &plan);
    // The server in east (the first primary), its Prometheus, and only the
    // service account in west.
    let east = w.api("east");
    assert!(
        east.get("apps", "deployments", "istio-system", "kiali")
            .is_some()
    );
    let values = &w.releases("east")["istio-system/kiali"]["values"];
    assert_eq!(
        values["external_services"]["prometheus"]["url"],
        "http://prometheus-server.istio-system:80"
    );
    assert_eq!(values["kubernetes_config"]["cluster_name"], "east");
    assert!(
        w.api("west")
            .get("apps", "deployments", "istio-system", "kiali")
            .is_none()
    );
    assert!(
        w.api("west")
            .get("", "serviceaccounts", "istio-system", "kiali")
            .is_some()
    );
    // west's credentials for Kiali, in east, as Kiali looks for them: the
    // kiali service account's token and west's internal address.
    let s = east
        .get(
            "",
            "secrets",
            "istio-system",
            "kiali-remote-cluster-secret-west",
        )
        .expect("the kiali remote cluster secret");
    assert_eq!(s["metadata"]["labels"]["kiali.io/multiCluster"], "true");
    assert_eq!(s["metadata"]["annotations"]["kiali.io/cluster"], "west");
    let kc = b64d(&s["data"]["west"]);
    assert!(kc.contains("https://west-control-plane:6443"), "{kc}");
    assert!(
        kc.contains("fake-token-west-kiali-multi-cluster-token"),
        "{kc}"
    );
    assert!(
        east.get(
            "",
            "secrets",
            "istio-system",
            "kiali-remote-cluster-secret-east"
        )
        .is_none()
    );
    // Kiali reads the secret when it starts: it was restarted after it.
    let d = east
        .get("apps", "deployments", "istio-system", "kiali")
        .unwrap();
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    // A no-op rerun touches nothing.
    rerun_is_a_noop(&w, p.path(), "kiali-secret:west");
    // Dropped from the plan, Kiali and its secret go; Prometheus stays.
    std::fs::write(
        p.path().join("plan.toml"),
        format!("{}\n[addons]\nprometheus = true\n", default_plan()),
    )
    .unwrap();
    let o = mesh(&w, p.path(), &["build", "--json", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        east.get(
            "",
            "secrets",
            "istio-system",
            "kiali-remote-cluster-secret-west"
        )
        .is_none()
    );
    assert!(
        east.get("apps", "deployments", "istio-system", "kiali")
            .is_none()
    );
    assert!(
        east.get("apps", "deployments", "istio-system", "prometheus-server")
            .is_some()
    );
}

#[test]
fn a_cluster_leaving_the_plan_takes_its_kiali_secret_out_of_kialis_home() {
    let w = World::new(&["east", "west"]);
    let addons = "\n[addons]\nprometheus = true\nkiali = true\n";
    let p = up(&w, &format!("{}{addons}", default_plan()));
    assert!(
        w.api("east")
            .get(
                "",
                "secrets",
                "istio-system",
                "kiali-remote-cluster-secret-west"
            )
            .is_some()
    );
    let plan = default_plan()
        .replace(
            "[clusters.west]\nprovider = \"kind\"\nnetwork = \"network2\"\npod_subnet = \"10.21.0.0/16\"\nservice_subnet = \"172.22.0.0/16\"\nworkers = 1\ncni = \"cilium\"\n",
            "",
        )
        .replace("placement = { east = \"v1\", west = \"v2\" }", "placement = { east = [\"v1\", \"v2\"] }")
        .replace("placement = { east = \"*\", west = \"*\" }", "placement = { east = \"*\" }");
    assert!(!plan.contains("[clusters.west]"), "{plan}");
    std::fs::write(p.path().join("plan.toml"), format!("{plan}{addons}")).unwrap();
    let o = mesh(&w, p.path(), &["build", "--yes", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(w.kind_clusters(), ["east"]);
    // Kiali in east no longer reads a cluster that is gone.
    assert!(
        w.api("east")
            .get(
                "",
                "secrets",
                "istio-system",
                "kiali-remote-cluster-secret-west"
            )
            .is_none()
    );
    assert!(
        w.api("east")
            .get("apps", "deployments", "istio-system", "kiali")
            .is_some()
    );
}

#[test]
fn mesh_open_kiali_forwards_a_local_port_to_kiali_until_ctrl_c() {
    use std::io::{BufRead, Read, Write};
    let w = World::new(&["east", "west"]);
    // Without the add-on there is nothing to open: said, with the fix.
    let p = up(&w, &default_plan());
    let o = mesh(&w, p.path(), &["open", "kiali"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("add kiali = true"), "{}", o.stderr);

    let plan = format!(
        "{}\n[addons]\nprometheus = true\nkiali = true\n",
        default_plan()
    );
    std::fs::write(p.path().join("plan.toml"), plan).unwrap();
    assert_eq!(mesh(&w, p.path(), &["build"]).code, 0);
    let mut child = fake::spawn_mesh(&w, p.path(), &["open", "kiali", "--port", "0"]);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("Kiali (cluster east): ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/kiali")
        .to_string();
    // Two requests, each its own forward to the pod through east's API.
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /kiali HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(
            resp.contains("fake Kiali in pod kiali-fake: GET /kiali"),
            "{resp}"
        );
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn failover_fails_when_the_answers_do_not_say_which_pod_gave_them() {
    // http-echo answers its text alone: verify sees the version, but not
    // which cluster answered, so a failover check could not fail.
    let w = World::new(&["east", "west"]);
    let plan = default_plan().replace("verify = \"/hello\"", "")
        + "\n[apps.echo]\nmanifest = \"echo.yaml\"\nnamespace = \"sample\"\nplacement = { east = \"*\", west = \"*\" }\nverify = \"/\"\n";
    let p = project(&plan);
    std::fs::write(
        p.path().join("echo.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\nspec:\n  ports:\n    - port: 5678\n  selector:\n    app: echo\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: echo\n  labels:\n    app: echo\n    version: v1\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: echo\n  template:\n    metadata:\n      labels:\n        app: echo\n        version: v1\n    spec:\n      containers:\n        - name: echo\n          image: docker.io/hashicorp/http-echo:1.0\n          args: [\"-text=echo version: v1\"]\n",
    )
    .unwrap();
    let o = mesh(&w, p.path(), &["build"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = mesh(
        &w,
        p.path(),
        &["verify", "--failover", "--json", "--wait", "20"],
    );
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    let j = o.json();
    assert_eq!(j["apps"][0]["reached"]["east"]["v1"], 20, "{j:#}");
    let f = &j["failover"][0];
    assert_eq!(f["passed"], false, "{f:#}");
    assert!(
        f["problem"]
            .as_str()
            .unwrap()
            .contains("name no pod of any cluster"),
        "{f:#}"
    );
}
