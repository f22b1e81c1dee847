//! The CNI kind: `render.cni:<c>` and `cni:<c>`, for kind clusters.
//!
//! `render.cni:<c>` renders, from the cluster's LoadBalancer range
//! (`net.alloc`), for Cilium its Helm values (with the settings Istio needs)
//! plus a `CiliumLoadBalancerIPPool` and `CiliumL2AnnouncementPolicy`, and
//! for kindnet a MetalLB `IPAddressPool` and `L2Advertisement`
//! (`lb-pool.yaml`, which `lb:<c>` applies). `cni:<c>` installs the chart:
//! Cilium, or MetalLB for kindnet clusters.

use super::step::{Chart, Src, Step, Wait};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId, net};
use crate::plan::{Cni, Provider};
use crate::providers::helm;

/// 2: waits for the Cilium agent DaemonSet, or MetalLB's controller.
pub const VERSION: u32 = 3;
pub const RENDER_VERSION: u32 = 1;
pub const CILIUM_REPO: &str = "https://helm.cilium.io/";
pub const METALLB_REPO: &str = "https://metallb.github.io/metallb";
/// The pool and its announcement, rendered for `lb:<c>`.
pub const LB_POOL: &str = "lb-pool.yaml";
const CILIUM_VALUES: &str = "cilium-values.yaml";

/// `cni:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("cni:{cluster}"))
}

/// `render.cni:<c>`
pub fn render_id(cluster: &str) -> TaskId {
    TaskId::new(format!("render.cni:{cluster}"))
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    for c in plan.clusters.values() {
        if c.provider != Provider::Kind {
            continue;
        }
        let n = &c.name;
        let dir = format!("{n}/cni");
        let outputs = match c.cni {
            Cni::Cilium => vec![
                Out::new("tasks/cni/cilium-values.yaml.j2", CILIUM_VALUES, &dir),
                Out::new("tasks/cni/cilium-lb.yaml.j2", LB_POOL, &dir),
            ],
            Cni::Kindnet => vec![Out::new("tasks/cni/metallb-pool.yaml.j2", LB_POOL, &dir)],
        };
        p.render(RenderSpec {
            id: render_id(n),
            version: RENDER_VERSION,
            slice: Slice::new()
                .put(
                    "cluster",
                    super::cluster_path(c),
                    serde_json::json!({"name": n, "cni": c.cni}),
                )
                .put("mode", "mesh.mode", super::mode_str(plan)),
            outputs,
            enrich: vec![super::render::Enrich::Lb { cluster: n.clone() }],
            deps: vec![net::alloc_id()],
        });
        let version = match c.cni {
            Cni::Cilium => &plan.versions.cilium,
            Cni::Kindnet => &plan.versions.metallb,
        };
        p.live(
            || id(n),
            "cni",
            VERSION,
            || LiveSpec {
                slice: Slice::new()
                    .put("cni", format!("clusters.{n}.cni"), c.cni)
                    .put("version", "versions", version),
                files: vec![],
                deps: super::on_cluster(c, vec![render_id(n)]),
                action: Step::on(super::target(c))
                    .charts(vec![chart(c.cni, version, n)])
                    .waits(waits(c.cni))
                    .action(),
            },
        );
    }
}

/// What the CNI chart must have running before anything else is installed
/// (helm is not asked to wait): Cilium's operator (it registers Cilium's
/// kinds) and its agent on every node, or MetalLB's controller (it serves
/// the webhook that admits the address pool) and its speaker on every node
/// (it answers ARP for the addresses the east-west gateways get).
fn waits(cni: Cni) -> Vec<Wait> {
    let (ns, deployment, daemonset) = match cni {
        Cni::Cilium => ("kube-system", "cilium-operator", "cilium"),
        Cni::Kindnet => ("metallb-system", "metallb-controller", "metallb-speaker"),
    };
    vec![
        Wait::Deployment {
            namespace: ns.into(),
            name: deployment.into(),
        },
        Wait::DaemonSet {
            namespace: ns.into(),
            name: daemonset.into(),
        },
    ]
}

/// The CNI chart of a kind cluster.
fn chart(cni: Cni, version: &str, cluster: &str) -> Chart {
    match cni {
        Cni::Cilium => Chart {
            release: helm::Release {
                name: "cilium".into(),
                namespace: "kube-system".into(),
                chart: "cilium".into(),
                repo: Some(CILIUM_REPO.into()),
                version: Some(version.into()),
            },
            values: Some(Src::dep(render_id(cluster), CILIUM_VALUES)),
        },
        Cni::Kindnet => Chart {
            release: helm::Release {
                name: "metallb".into(),
                namespace: "metallb-system".into(),
                chart: "metallb".into(),
                repo: Some(METALLB_REPO.into()),
                version: Some(version.into()),
            },
            values: None,
        },
    }
}
