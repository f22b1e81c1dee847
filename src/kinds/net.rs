//! The network kind: `net.discover` and `net.alloc`.
//!
//! `net.alloc` carves one LoadBalancer range per kind cluster out of the top
//! half of the kind Docker network (the bottom half is where Docker puts the
//! nodes). Each cluster, in name order, takes the slot blake3(name) selects,
//! probing forward past taken slots: adding or removing a cluster leaves the
//! others' ranges, and therefore their renders, unchanged unless a probe
//! collides. The east-west gateway of a cluster asks for the first address of
//! its range (an ingress gateway for the second), which makes a primary's gateway address, and so its remotes'
//! `remotePilotAddress`, known before anything runs. It is pure: offline it
//! uses `[mesh] kind_subnet`; live it reads the subnet `net.discover` found
//! (`docker network inspect kind`, once, after the kind clusters exist).

use super::{LiveSpec, Planner, Slice, TaskId, cluster};
use crate::graph::{Action, BoxFuture, Ctx, OutFile, TaskError, blocking};
use crate::plan::Provider;
use crate::providers::docker;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const VERSION: u32 = 1;
pub const DISCOVER_VERSION: u32 = 1;

/// `net.alloc`
pub fn alloc_id() -> TaskId {
    TaskId::new("net.alloc")
}

/// `net.discover`
pub fn discover_id() -> TaskId {
    TaskId::new("net.discover")
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    let mesh = &plan.mesh;
    let kind_clusters: Vec<String> = plan
        .clusters
        .values()
        .filter(|c| c.provider == Provider::Kind)
        .map(|c| c.name.clone())
        .collect();
    if kind_clusters.is_empty() {
        return;
    }
    let slice = Slice::new()
        .put("kind_subnet", "mesh.kind_subnet", mesh.kind_subnet)
        .put("lb_size", "mesh.lb_size", mesh.lb_size)
        .put("clusters", "clusters.*(kind)", &kind_clusters);
    let (subnet, size, names) = (mesh.kind_subnet, mesh.lb_size, kind_clusters.clone());
    let (action, deps) = match p.build {
        super::Build::Offline => (blocking(move |_| net_alloc(subnet, size, &names)), vec![]),
        super::Build::Live => {
            // Read once, after the clusters exist (kind makes the network).
            p.live(discover_id, "net.discover", DISCOVER_VERSION, || LiveSpec {
                slice: Slice::new(),
                files: vec![],
                deps: kind_clusters.iter().map(|c| cluster::id(c)).collect(),
                action: Arc::new(NetDiscover),
            });
            let action = blocking(move |ctx| {
                let text = ctx.read_string(&discover_id(), SUBNET_FILE)?;
                let subnet = text.trim().parse().map_err(|_| {
                    TaskError::new(format!("net.discover produced {text:?}, not a subnet"))
                })?;
                net_alloc(subnet, size, &names)
            });
            (action, vec![discover_id()])
        }
    };
    p.pure(alloc_id(), "net.alloc", VERSION, &slice, &[], deps, action);
}

/// A LoadBalancer range.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LbRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway_ip: Ipv4Addr,
}

impl LbRange {
    /// The address an ingress gateway asks for: the second of the range
    /// (the east-west gateway has the first).
    pub fn ingress_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.start) + 1)
    }
}

pub const ALLOC_FILE: &str = "lb-ranges.json";

/// Allocate one range of `size` addresses per name from the top half of
/// `subnet` (see the module doc).
pub fn allocate(
    subnet: Ipv4Net,
    size: u32,
    names: &[String],
) -> Result<BTreeMap<String, LbRange>, String> {
    let base = u32::from(subnet.network()) as u64;
    let total = 1u64 << (32 - subnet.prefix_len() as u64);
    let first = base + total / 2;
    let slots = ((total / 2).saturating_sub(1) / size as u64) as usize;
    if names.len() > slots {
        return Err(format!(
            "{} clusters need {} ranges of {size} addresses; the top half of {subnet} holds {slots}",
            names.len(),
            names.len()
        ));
    }
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    let mut taken = vec![false; slots];
    let mut out = BTreeMap::new();
    for name in sorted {
        let h = blake3::hash(name.as_bytes());
        let mut s = (u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
            % slots as u64) as usize;
        while taken[s] {
            s = (s + 1) % slots;
        }
        taken[s] = true;
        let start = first + (s as u64) * size as u64;
        let ip = |x: u64| Ipv4Addr::from(x as u32);
        out.insert(
            name.clone(),
            LbRange {
                start: ip(start),
                end: ip(start + size as u64 - 1),
                gateway_ip: ip(start),
            },
        );
    }
    Ok(out)
}

/// Allocate and write the ranges.
pub fn net_alloc(subnet: Ipv4Net, size: u32, names: &[String]) -> Result<Vec<OutFile>, TaskError> {
    let ranges = allocate(subnet, size, names).map_err(TaskError::new)?;
    let json =
        serde_json::to_string_pretty(&serde_json::json!({ "subnet": subnet, "ranges": ranges }))
            .expect("ranges serialize");
    // The whole allocation for the bundle, and one small file per cluster
    // for the renders: each reads its own range, not all of them (reading
    // the whole file made a 1,000-cluster build quadratic).
    let mut files = vec![OutFile::new(ALLOC_FILE, json + "\n").export(format!("net/{ALLOC_FILE}"))];
    for (name, r) in &ranges {
        files.push(OutFile::new(
            range_file(name),
            serde_json::to_vec(r).expect("range serializes"),
        ));
    }
    Ok(files)
}

fn range_file(cluster: &str) -> String {
    format!("range/{cluster}.json")
}

/// The range `net.alloc` gave `cluster` (for a task depending on it).
pub fn read_range(ctx: &Ctx, cluster: &str) -> Result<LbRange, TaskError> {
    let bytes = ctx.read(&alloc_id(), &range_file(cluster))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TaskError::new(format!("net.alloc range of {cluster}: {e}")))
}

/// `net.discover`: the kind Docker network's subnet.
#[derive(Clone, Debug)]
pub struct NetDiscover;

pub const SUBNET_FILE: &str = "subnet";

impl Action for NetDiscover {
    fn run(&self, _ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        Box::pin(async move {
            let subnet = docker::kind_subnet().await?;
            Ok(vec![OutFile::new(SUBNET_FILE, subnet.to_string())])
        })
    }

    // No probe: the subnet can change only if the kind network was
    // recreated, which means the clusters were, and their new credentials
    // change this task's key anyway.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint_inside_the_top_half_and_stable() {
        let subnet: Ipv4Net = "172.18.0.0/16".parse().unwrap();
        let names: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
        let r = allocate(subnet, 16, &names).unwrap();
        let mut spans: Vec<(u32, u32)> = r
            .values()
            .map(|x| (u32::from(x.start), u32::from(x.end)))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 < w[1].0, "overlap {w:?}");
        }
        for (s, e) in &spans {
            assert!(*s >= u32::from("172.18.128.0".parse::<Ipv4Addr>().unwrap()));
            assert!(*e < u32::from("172.18.255.255".parse::<Ipv4Addr>().unwrap()));
        }
        // Adding a cluster moves no one in the common case.
        let two = allocate(subnet, 16, &["east".into(), "west".into()]).unwrap();
        let three = allocate(subnet, 16, &["east".into(), "west".into(), "north".into()]).unwrap();
        assert_eq!(two["east"], three["east"]);
        assert_eq!(two["west"], three["west"]);
        assert!(allocate("10.0.0.0/28".parse().unwrap(), 16, &names).is_err());
    }
}
