//! The load-balancer kind: `lb:<c>`, for kind clusters.
//!
//! Applies the pool `render.cni:<c>` rendered (`CiliumLoadBalancerIPPool` +
//! `CiliumL2AnnouncementPolicy`, or MetalLB's `IPAddressPool` +
//! `L2Advertisement`) once the CNI chart is installed, so the east-west
//! gateway's LoadBalancer Service gets the address `net.alloc` pinned. On
//! kindnet it first waits for MetalLB's CRDs to be Established: its chart
//! ships them as templates, so helm returns before they are served.

use super::step::{Src, Step, Wait};
use super::{LiveSpec, Planner, TaskId, cni};
use crate::plan::{Cni, Provider};

/// 2: on kindnet, waits for MetalLB's CRDs to be Established first.
pub const VERSION: u32 = 2;

/// `lb:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("lb:{cluster}"))
}

pub fn plan(p: &mut Planner) {
    for c in p.plan.clusters.values() {
        if c.provider != Provider::Kind {
            continue;
        }
        let n = &c.name;
        p.live(
            || id(n),
            "lb",
            VERSION,
            || LiveSpec {
                slice: super::access_slice(c),
                files: vec![],
                deps: super::on_cluster(c, vec![cni::id(n), cni::render_id(n)]),
                action: Step::on(super::target(c))
                    .manifests(vec![Src::dep(cni::render_id(n), cni::LB_POOL)])
                    .waits(match c.cni {
                        // MetalLB's chart installs its CRDs as templates:
                        // helm does not wait for them to be served.
                        Cni::Kindnet => vec![Wait::Crds {
                            names: vec![
                                "ipaddresspools.metallb.io".into(),
                                "l2advertisements.metallb.io".into(),
                            ],
                        }],
                        // Cilium's operator registers its kinds; the cni
                        // task waited for it and for the agents.
                        Cni::Cilium => vec![],
                    })
                    .action(),
            },
        );
    }
}
