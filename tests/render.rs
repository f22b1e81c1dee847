//! The offline bundle for the three supported shapes of mesh, pinned by insta
//! snapshots (PEM bodies redacted: keys are fresh on every run), plus the
//! cross-file facts a snapshot alone would not make obvious.

mod common;
use common::Project;
use common::{default_plan, primary_remote};
use std::path::Path;

fn primary_remote_plan() -> String {
    primary_remote(&default_plan())
}

fn ambient_plan() -> String {
    default_plan().replace("mode = \"sidecar\"", "mode = \"ambient\"")
}

fn files(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            files(&p, base, out);
        } else {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
            if !rel.starts_with("pki/") {
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
}

/// Build offline and return the bundle (without pki/) as one document.
fn bundle(plan: &str) -> (Project, String) {
    let p = Project::with_plan(plan);
    p.build();
    let mut all = Vec::new();
    files(&p.path("out"), &p.path("out"), &mut all);
    let text = all
        .iter()
        .map(|(k, v)| format!("=== {k}\n{v}"))
        .collect::<Vec<_>>()
        .join("\n");
    (p, text)
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({filters => vec![
        (r"(?s)-----BEGIN ([A-Z ]+)-----.*?-----END [A-Z ]+-----", "[$1 redacted]"),
    ]}, {
        insta::assert_snapshot!(name, text);
    });
}

fn yaml(p: &Project, rel: &str) -> Vec<serde_json::Value> {
    mesh::yaml::yaml_docs(&p.read(rel))
        .unwrap()
        .into_iter()
        .map(|d| d.value)
        .collect()
}

fn gateway_ip(p: &Project, cluster: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&p.read("out/net/lb-ranges.json")).unwrap();
    v["ranges"][cluster]["gateway_ip"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn sidecar_multi_primary() {
    let (p, text) = bundle(&default_plan());
    snapshot("sidecar_multi_primary", &text);
    for (c, net) in [("east", "network1"), ("west", "network2")] {
        let ns = &yaml(&p, &format!("out/{c}/istio/namespace.yaml"))[0];
        assert_eq!(ns["metadata"]["labels"]["topology.istio.io/network"], net);
        let v = &yaml(&p, &format!("out/{c}/istio/istiod-values.yaml"))[0];
        assert_eq!(v["global"]["meshID"], "mesh1");
        assert_eq!(v["global"]["multiCluster"]["clusterName"], c);
        assert_eq!(v["global"]["network"], net);
        let gw = &yaml(&p, &format!("out/{c}/gateway/eastwest-values.yaml"))[0];
        // networkGateway makes the istio/gateway chart add the network
        // label, ISTIO_META_REQUESTED_NETWORK_VIEW and the ports 15021,
        // 15443, 15012, 15017 itself: setting them again duplicates keys,
        // which Helm 4's server-side apply rejects.
        assert_eq!(gw["networkGateway"], net);
        assert!(gw["env"].is_null(), "{gw}");
        assert!(gw["service"]["ports"].is_null(), "{gw}");
        assert!(gw["labels"]["topology.istio.io/network"].is_null(), "{gw}");
        assert_eq!(gw["labels"]["istio"], "eastwestgateway");
        assert_eq!(
            gw["service"]["annotations"]["lbipam.cilium.io/ips"],
            gateway_ip(&p, c)
        );
        let xg = &yaml(&p, &format!("out/{c}/gateway/cross-network-gateway.yaml"))[0];
        assert_eq!(xg["spec"]["servers"][0]["tls"]["mode"], "AUTO_PASSTHROUGH");
        assert_eq!(xg["spec"]["servers"][0]["port"]["number"], 15443);
        assert!(
            !p.path(&format!("out/{c}/gateway/expose-istiod.yaml"))
                .exists()
        );
        // LB pool holds the gateway address.
        let pool = &yaml(&p, &format!("out/{c}/cni/lb-pool.yaml"))[0];
        assert_eq!(pool["spec"]["blocks"][0]["start"], gateway_ip(&p, c));
        let cilium = &yaml(&p, &format!("out/{c}/cni/cilium-values.yaml"))[0];
        assert_eq!(cilium["cni"]["exclusive"], false);
        assert_eq!(cilium["socketLB"]["hostNamespaceOnly"], true);
        assert_eq!(cilium["l2announcements"]["enabled"], true);
        // The apps' namespace is enrolled (the namespace kind owns it).
        let ns = yaml(&p, &format!("out/{c}/namespaces/sample.yaml"));
        assert_eq!(ns[0]["metadata"]["labels"]["istio-injection"], "enabled");
    }
    // v1 in east, v2 in west, the Service in both; the namespace is not the
    // app's (see namespaces/).
    let kinds = |c: &str| -> Vec<String> {
        yaml(&p, &format!("out/{c}/apps/helloworld.yaml"))
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds("east"), ["helloworld", "helloworld-v1"]);
    assert_eq!(kinds("west"), ["helloworld", "helloworld-v2"]);
}

#[test]
fn sidecar_primary_remote() {
    let (p, text) = bundle(&primary_remote_plan());
    snapshot("sidecar_primary_remote", &text);
    let east = &yaml(&p, "out/east/istio/istiod-values.yaml")[0];
    assert_eq!(east["global"]["externalIstiod"], true);
    let west = &yaml(&p, "out/west/istio/istiod-values.yaml")[0];
    assert_eq!(west["profile"], "remote");
    assert_eq!(west["global"]["configCluster"], true);
    assert_eq!(west["global"]["remotePilotAddress"], gateway_ip(&p, "east"));
    assert_eq!(
        west["istiodRemote"]["injectionPath"],
        "/inject/cluster/west/net/network2"
    );
    assert_eq!(
        yaml(&p, "out/west/istio/base-values.yaml")[0]["profile"],
        "remote"
    );
    let ns = &yaml(&p, "out/west/istio/namespace.yaml")[0];
    assert_eq!(
        ns["metadata"]["annotations"]["topology.istio.io/controlPlaneClusters"],
        "east"
    );
    assert!(p.path("out/east/gateway/expose-istiod.yaml").exists());
    assert!(!p.path("out/west/gateway/expose-istiod.yaml").exists());
    let expose = yaml(&p, "out/east/gateway/expose-istiod.yaml");
    let ports: Vec<u64> = expose[0]["spec"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"]["number"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [15012, 15017]);
    // The graph: remote secret only from the remote to the primary, and the
    // remote's istiod waits for the primary's gateway.
    let dot = p.run(&["graph"]).stdout;
    assert!(dot.contains("\"istiod:west\" -> \"remote-secret:west->east\""));
    assert!(!dot.contains("remote-secret:east->west"));
    assert!(dot.contains("\"gateway:east\" -> \"istiod:west\""));
}

#[test]
fn ambient_multi_primary() {
    let (p, text) = bundle(&ambient_plan());
    snapshot("ambient_multi_primary", &text);
    for c in ["east", "west"] {
        let v = &yaml(&p, &format!("out/{c}/istio/istiod-values.yaml"))[0];
        assert_eq!(v["profile"], "ambient");
        assert_eq!(v["env"]["AMBIENT_ENABLE_MULTI_NETWORK"], "true");
        assert!(p.path(&format!("out/{c}/istio/cni-values.yaml")).exists());
        assert!(
            p.path(&format!("out/{c}/istio/ztunnel-values.yaml"))
                .exists()
        );
        let gw = &yaml(&p, &format!("out/{c}/gateway/eastwest-gateway.yaml"))[0];
        assert_eq!(gw["spec"]["gatewayClassName"], "istio-east-west");
        let l = &gw["spec"]["listeners"][0];
        assert_eq!(
            (
                l["name"].as_str(),
                l["port"].as_u64(),
                l["protocol"].as_str()
            ),
            (Some("mesh"), Some(15008), Some("HBONE"))
        );
        assert_eq!(l["tls"]["mode"], "Terminate");
        assert_eq!(
            l["tls"]["options"]["gateway.istio.io/tls-terminate-mode"],
            "ISTIO_MUTUAL"
        );
        assert!(
            !p.path(&format!("out/{c}/gateway/cross-network-gateway.yaml"))
                .exists()
        );
        let cilium = &yaml(&p, &format!("out/{c}/cni/cilium-values.yaml"))[0];
        assert_eq!(cilium["bpf"]["masquerade"], false);
        let ns = yaml(&p, &format!("out/{c}/namespaces/sample.yaml"));
        assert_eq!(
            ns[0]["metadata"]["labels"]["istio.io/dataplane-mode"],
            "ambient"
        );
        let app = yaml(&p, &format!("out/{c}/apps/helloworld.yaml"));
        let svc = app.iter().find(|d| d["kind"] == "Service").unwrap();
        assert_eq!(svc["metadata"]["labels"]["istio.io/global"], "true");
    }
}

#[test]
fn kindnet_clusters_get_metallb() {
    let (p, _) = bundle(&default_plan().replacen("cni = \"cilium\"", "cni = \"kindnet\"", 1));
    let pool = yaml(&p, "out/east/cni/lb-pool.yaml");
    assert_eq!(pool[0]["kind"], "IPAddressPool");
    assert_eq!(pool[1]["kind"], "L2Advertisement");
    assert_eq!(
        pool[1]["spec"]["ipAddressPools"][0],
        pool[0]["metadata"]["name"]
    );
    let kind = &yaml(&p, "out/east/kind-cluster.yaml")[0];
    assert!(kind["networking"].get("disableDefaultCNI").is_none());
    let gw = &yaml(&p, "out/east/gateway/eastwest-values.yaml")[0];
    assert_eq!(
        gw["service"]["annotations"]["metallb.io/loadBalancerIPs"],
        gateway_ip(&p, "east")
    );
    assert!(!p.path("out/east/cni/cilium-values.yaml").exists());
}
