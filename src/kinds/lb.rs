//! The load-balancer kind: `lb:<c>`, for kind clusters.
//!
//! Applies the pool `render.cni:<c>` rendered (`CiliumLoadBalancerIPPool` +
//! `CiliumL2AnnouncementPolicy`, or MetalLB's `IPAddressPool` +
//! `L2Advertisement`) once the CNI chart is installed, so the east-west
//! gateway's LoadBalancer Service gets the address `net.alloc` pinned.

use super::step::{Src, Step};
use super::{LiveSpec, Planner, TaskId, cni};
use crate::plan::Provider;

pub const VERSION: u32 = 1;

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
                    .action(),
            },
        );
    }
}
