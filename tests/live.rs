//! Live bring-up end to end: the real `mesh` binary against fake kind, helm
//! and docker executables and fake Kubernetes API servers on 127.0.0.1 (see
//! tests/fake). Each test asserts what the clusters end up holding.

mod common;
mod fake;

use fake::{World, mesh, project};
use serde_json::Value;

fn default_plan() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plan.toml")).unwrap()
}

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
    let before = w.api_mutations();
    let o = mesh(&w, p.path(), &["build", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").is_empty(), "{:?}", o.with("ran"));
    assert_eq!(w.mutating_tool_calls(), Vec::<Vec<String>>::new());
    assert_eq!(w.api_mutations(), before, "a no-op rerun changed objects");
}
