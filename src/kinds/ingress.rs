//! The ingress kind: `render.ingress:<c>` and `ingress:<c>`, an Istio
//! ingress gateway in each cluster whose plan entry says `ingress = true`.
//!
//! The render writes the `istio/gateway` chart's values for a gateway named
//! `istio-ingressgateway` (labels `istio: ingressgateway`, the selector
//! Istio's samples and most Gateway resources use) behind a LoadBalancer
//! Service. On a kind cluster it asks, through the CNI's annotation, for the
//! second address of the cluster's LoadBalancer range (the east-west
//! gateway has the first), so its address is known before anything runs;
//! an existing cluster's LoadBalancer gives whatever it gives.
//!
//! `ingress:<c>` installs the chart in `istio-system` after the east-west
//! gateway (and so after istiod and, on a remote, its remote secret: its
//! pods are injected), waits for its rollout and its address, and checks
//! the address is the pinned one. Its probe is the release's; its undo
//! uninstalls it, when the plan drops it or on `mesh destroy`.

use super::step::{Chart, Expect, Src, Step, Wait};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId, gateway, istiod, net};
use crate::plan::Provider;
use crate::providers::helm;

pub const VERSION: u32 = 1;
pub const RENDER_VERSION: u32 = 1;
const VALUES: &str = "ingress-values.yaml";
/// The ingress gateway's name (Service, Deployment, release).
pub const NAME: &str = "istio-ingressgateway";

/// `ingress:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("ingress:{cluster}"))
}

/// `render.ingress:<c>`
pub fn render_id(cluster: &str) -> TaskId {
    TaskId::new(format!("render.ingress:{cluster}"))
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    for c in plan.clusters.values().filter(|c| c.ingress) {
        let n = &c.name;
        let cpath = super::cluster_path(c);
        let is_kind = c.provider == Provider::Kind;
        let lb_annotation = gateway::lb_annotation(c.cni);
        let slice = Slice::new()
            .put(
                "cluster",
                format!("{cpath}.ingress"),
                serde_json::json!({"name": n, "kind": is_kind}),
            )
            .put("lb_annotation", format!("{cpath}.cni"), lb_annotation);
        let (enrich, deps) = if is_kind {
            (
                vec![super::render::Enrich::Lb { cluster: n.clone() }],
                vec![net::alloc_id()],
            )
        } else {
            (vec![], vec![])
        };
        p.render(RenderSpec {
            id: render_id(n),
            version: RENDER_VERSION,
            slice,
            outputs: vec![Out::new(
                "tasks/gateway/ingress-values.yaml.j2",
                VALUES,
                &format!("{n}/gateway"),
            )],
            enrich,
            deps,
        });
        p.live(
            || id(n),
            "ingress",
            VERSION,
            || {
                let mut deps = vec![gateway::id(n), render_id(n)];
                if is_kind {
                    deps.push(net::alloc_id());
                }
                let chart = Chart {
                    release: helm::Release {
                        name: NAME.into(),
                        namespace: "istio-system".into(),
                        chart: "gateway".into(),
                        repo: Some(istiod::ISTIO_REPO.into()),
                        version: Some(plan.mesh.istio.clone()),
                    },
                    values: Some(Src::dep(render_id(n), VALUES)),
                };
                let expect = if is_kind {
                    Expect::AllocIngress(n.clone())
                } else {
                    Expect::Any
                };
                LiveSpec {
                    slice: super::access_slice(c).put("istio", "mesh.istio", &plan.mesh.istio),
                    files: vec![],
                    deps: super::on_cluster(c, deps),
                    action: Step::on(super::target(c))
                        .charts(vec![chart])
                        .waits(vec![
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
                        .action(),
                }
            },
        );
    }
}
