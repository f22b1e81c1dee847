//! The gateway kind: `render.gateway:<c>` and `gateway:<c>`, the east-west
//! gateway every cross-network mesh needs.
//!
//! Sidecar: the `istio/gateway` chart's values (`istio-eastwestgateway`,
//! `networkGateway=<network>`, the LoadBalancer address requested through
//! the CNI's annotation), the `cross-network-gateway` Gateway (15443,
//! AUTO_PASSTHROUGH, `*.local`), and on a primary with remotes
//! `expose-istiod` (15012, 15017). Ambient: the Gateway API `Gateway` of
//! class `istio-east-west` (HBONE on 15008).
//!
//! `gateway:<c>` installs them after istiod (on a remote, also after its
//! remote secret: until the primary holds it, the remote's injection
//! webhook has no CA bundle and refuses the gateway's pods), waits for the
//! sidecar gateway's rollout and for the address, and checks the address is
//! the one mesh pinned (from `net.alloc` on kind, or the plan's
//! `gateway_ip`): remotes and the LoadBalancer pool rely on it.

use super::step::{Chart, Expect, Src, Step, Wait};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId, istiod, net, remote_secret};
use crate::plan::{Cluster, Cni, Mode, Plan, Provider};
use crate::providers::helm;

/// 2: waits for the sidecar gateway's Deployment; a remote's after its
/// remote secret.
pub const VERSION: u32 = 2;
pub const RENDER_VERSION: u32 = 1;
const VALUES: &str = "eastwest-values.yaml";
const CROSS_NETWORK: &str = "cross-network-gateway.yaml";
const EXPOSE_ISTIOD: &str = "expose-istiod.yaml";
const AMBIENT: &str = "eastwest-gateway.yaml";
/// The east-west gateway's name (Service, Deployment, release).
pub const NAME: &str = "istio-eastwestgateway";

/// `gateway:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("gateway:{cluster}"))
}

/// `render.gateway:<c>`
pub fn render_id(cluster: &str) -> TaskId {
    TaskId::new(format!("render.gateway:{cluster}"))
}

/// The Service annotation through which a cluster's LoadBalancer (Cilium's
/// LB-IPAM or MetalLB) is asked for a given address.
pub fn lb_annotation(cni: Cni) -> &'static str {
    match cni {
        Cni::Cilium => "lbipam.cilium.io/ips",
        Cni::Kindnet => "metallb.io/loadBalancerIPs",
    }
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    let externals = istiod::external_istiods(plan);
    for c in plan.clusters.values() {
        let n = &c.name;
        let cpath = super::cluster_path(c);
        let external = externals.contains(n.as_str());
        let is_kind = c.provider == Provider::Kind;
        let lb_annotation = lb_annotation(c.cni);
        let mut slice = Slice::new()
            .put(
                "cluster",
                &cpath,
                serde_json::json!({"name": n, "network": c.network}),
            )
            .put("lb_annotation", format!("{cpath}.cni"), lb_annotation);
        let mut enrich = vec![];
        let mut deps = vec![];
        if is_kind {
            enrich.push(super::render::Enrich::Lb { cluster: n.clone() });
            deps.push(net::alloc_id());
        } else {
            slice = slice.put(
                "gateway_ip",
                format!("{cpath}.gateway_ip"),
                c.gateway_ip.map(|ip| ip.to_string()),
            );
        }
        let dir = format!("{n}/gateway");
        let outputs = match plan.mesh.mode {
            Mode::Ambient => vec![Out::new(
                "tasks/gateway/ambient-eastwest.yaml.j2",
                AMBIENT,
                &dir,
            )],
            Mode::Sidecar => {
                let mut v = vec![
                    Out::new("tasks/gateway/eastwest-values.yaml.j2", VALUES, &dir),
                    Out::new(
                        "tasks/gateway/cross-network-gateway.yaml.j2",
                        CROSS_NETWORK,
                        &dir,
                    ),
                ];
                if external {
                    v.push(Out::new(
                        "tasks/gateway/expose-istiod.yaml.j2",
                        EXPOSE_ISTIOD,
                        &dir,
                    ));
                }
                v
            }
        };
        p.render(RenderSpec {
            id: render_id(n),
            version: RENDER_VERSION,
            slice,
            outputs,
            enrich,
            deps,
        });
        p.live(|| id(n), "gateway", VERSION, || live(plan, c, external));
    }
}

fn live(plan: &Plan, c: &Cluster, external: bool) -> LiveSpec {
    let (mesh, n) = (&plan.mesh, &c.name);
    let is_kind = c.provider == Provider::Kind;
    let rg = render_id(n);
    let expect = match (is_kind, c.gateway_ip) {
        (true, _) => Expect::Alloc(n.clone()),
        (false, Some(ip)) => Expect::Ip(ip.to_string()),
        (false, None) => Expect::Any,
    };
    let mut deps = vec![istiod::id(n), rg.clone()];
    if is_kind {
        deps.push(net::alloc_id());
    }
    // A remote's injection webhook has no CA bundle until its primary holds
    // the remote secret: before that, the gateway's pods are refused.
    if let Some(primary) = &c.primary {
        deps.push(remote_secret::id(n, primary));
    }
    let step = Step::on(super::target(c));
    let step = match mesh.mode {
        Mode::Sidecar => {
            let mut manifests = vec![Src::dep(rg.clone(), CROSS_NETWORK)];
            if external {
                manifests.push(Src::dep(rg.clone(), EXPOSE_ISTIOD));
            }
            let chart = Chart {
                release: helm::Release {
                    name: NAME.into(),
                    namespace: "istio-system".into(),
                    chart: "gateway".into(),
                    repo: Some(istiod::ISTIO_REPO.into()),
                    version: Some(mesh.istio.clone()),
                },
                values: Some(Src::dep(rg.clone(), VALUES)),
            };
            step.charts(vec![chart]).manifests(manifests).waits(vec![
                // Its pods, not only its address: they are injected.
                Wait::Deployment {
                    namespace: "istio-system".into(),
                    name: NAME.into(),
                },
                Wait::LbAddress {
                    namespace: "istio-system".into(),
                    name: NAME.into(),
                    expect,
                },
            ])
        }
        Mode::Ambient => step
            .manifests(vec![Src::dep(rg.clone(), AMBIENT)])
            .waits(vec![Wait::GatewayAddress {
                namespace: "istio-system".into(),
                name: NAME.into(),
                expect,
            }]),
    };
    LiveSpec {
        slice: super::access_slice(c)
            .put("istio", "mesh.istio", &mesh.istio)
            .put("mode", "mesh.mode", super::mode_str(plan)),
        files: vec![],
        deps: super::on_cluster(c, deps),
        action: step.action(),
    }
}
