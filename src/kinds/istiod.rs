//! The istiod kind: `render.istio:<c>` and `istiod:<c>`.
//!
//! `render.istio:<c>` renders the Helm values of `istio/base` and
//! `istio/istiod` (ambient: also `istio/cni` and `istio/ztunnel`): meshID,
//! cluster name, network; a primary with remotes gets `externalIstiod`; a
//! remote gets the `remote` profile and `remotePilotAddress`, its primary's
//! east-west gateway address (pinned in the plan, or from `net.alloc`).
//!
//! `istiod:<c>` installs, in order: for ambient the Gateway API CRDs (from
//! [`gateway_api_source`], whose value is part of the key), then the charts,
//! then a wait for the Istio CRDs whose kinds mesh applies (the base chart
//! ships them as templates: helm does not wait for them), then on a
//! primary a wait until istiod is ready, so that no Gateway is
//! applied before its validation webhook answers. It runs after `cacerts`,
//! after the cluster's LoadBalancer pool (kind), and on a remote after its
//! primary's gateway.

use super::step::{Chart, Src, Step, Wait};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId, cacerts, gateway, lb, net};
use crate::hash::Digest;
use crate::plan::{Cluster, Mode, Plan, Provider, Role, Topology};
use crate::providers::helm;

/// 2: rollout-complete waits; ambient waits for its DaemonSets.
/// 4: waits for the Istio CRDs mesh applies kinds of to be Established.
pub const VERSION: u32 = 4;
pub const RENDER_VERSION: u32 = 1;
pub const ISTIO_REPO: &str = "https://istio-release.storage.googleapis.com/charts";

/// `istiod:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("istiod:{cluster}"))
}

/// `render.istio:<c>`
pub fn render_id(cluster: &str) -> TaskId {
    TaskId::new(format!("render.istio:{cluster}"))
}

/// The clusters that run istiod for remotes (primary-remote: the primaries
/// some remote names), found in one pass so that asking per cluster stays
/// linear in the clusters.
pub fn external_istiods(plan: &Plan) -> std::collections::HashSet<&str> {
    if plan.mesh.topology != Topology::PrimaryRemote {
        return Default::default();
    }
    plan.clusters
        .values()
        .filter_map(|r| r.primary.as_deref())
        .collect()
}

/// Where the Gateway API CRDs come from: `MESH_GATEWAY_API_CRDS` (a file or
/// an http(s) URL), else the release's standard-install.yaml.
pub fn gateway_api_source(version: &str) -> String {
    std::env::var("MESH_GATEWAY_API_CRDS").unwrap_or_else(|_| {
        format!("https://github.com/kubernetes-sigs/gateway-api/releases/download/v{version}/standard-install.yaml")
    })
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    let mesh = &plan.mesh;
    let mode = super::mode_str(plan);
    let externals = external_istiods(plan);
    for c in plan.clusters.values() {
        let n = &c.name;
        let cpath = super::cluster_path(c);
        let external = externals.contains(n.as_str());
        let mut slice = Slice::new()
            .put(
                "mesh",
                "mesh",
                serde_json::json!({"id": mesh.id, "mode": mode, "topology": mesh.topology}),
            )
            .put(
                "cluster",
                &cpath,
                serde_json::json!({"name": n, "network": c.network, "role": c.role, "cni": c.cni}),
            )
            .put("external_istiod", "derived.has_remotes", external);
        let mut enrich = vec![];
        let mut deps = vec![];
        if let Some(primary) = plan.primary_of(c) {
            match primary.gateway_ip {
                Some(ip) => {
                    slice = slice.put(
                        "remote_pilot_address",
                        format!("clusters.{}.gateway_ip", primary.name),
                        ip.to_string(),
                    )
                }
                None => {
                    enrich.push(super::render::Enrich::RemotePilot {
                        primary: primary.name.clone(),
                    });
                    deps.push(net::alloc_id());
                }
            }
        }
        let dir = format!("{n}/istio");
        let mut outputs = vec![
            Out::new("tasks/istio/base-values.yaml.j2", "base-values.yaml", &dir),
            Out::new(
                "tasks/istio/istiod-values.yaml.j2",
                "istiod-values.yaml",
                &dir,
            ),
        ];
        if mesh.mode == Mode::Ambient {
            outputs.push(Out::new(
                "tasks/istio/cni-values.yaml.j2",
                "cni-values.yaml",
                &dir,
            ));
            outputs.push(Out::new(
                "tasks/istio/ztunnel-values.yaml.j2",
                "ztunnel-values.yaml",
                &dir,
            ));
        }
        p.render(RenderSpec {
            id: render_id(n),
            version: RENDER_VERSION,
            slice,
            outputs,
            enrich,
            deps,
        });
        p.live(|| id(n), "istiod", VERSION, || live(plan, c));
    }
}

fn live(plan: &Plan, c: &Cluster) -> LiveSpec {
    let (mesh, n) = (&plan.mesh, &c.name);
    let mut deps = vec![cacerts::id(n), render_id(n)];
    if c.provider == Provider::Kind {
        deps.push(lb::id(n));
    }
    if let Some(primary) = &c.primary {
        deps.push(gateway::id(primary));
    }
    let mut slice = super::access_slice(c)
        .put("istio", "mesh.istio", &mesh.istio)
        .put("mode", "mesh.mode", super::mode_str(plan))
        .put("role", format!("clusters.{n}.role"), c.role)
        .put(
            "gateway_api",
            "versions.gateway_api",
            &plan.versions.gateway_api,
        );
    let mut waits = vec![];
    if mesh.mode == Mode::Ambient {
        let source = gateway_api_source(&plan.versions.gateway_api);
        // What is applied is part of the key: the source, and a local
        // file's bytes (a URL's bytes are pinned by the version in it).
        let bytes = crate::cache::read_input(std::path::Path::new(&source)).ok();
        slice = slice.put(
            "gateway_api_crds",
            "env.MESH_GATEWAY_API_CRDS",
            serde_json::json!({"source": source, "digest": bytes.map(|b| Digest::of_bytes(&b).to_string())}),
        );
        waits.push(Wait::GatewayApiCrds { source });
    }
    if mesh.mode == Mode::Ambient {
        // The node agents of ambient: every node's traffic goes through them.
        for name in ["istio-cni-node", "ztunnel"] {
            waits.push(Wait::DaemonSet {
                namespace: "istio-system".into(),
                name: name.into(),
            });
        }
    }
    // The base chart ships Istio's CRDs as templates, so helm does not wait
    // for them: the kinds mesh applies (the cross-network Gateway, the
    // locality DestinationRule) are served only once they are Established.
    waits.push(Wait::Crds {
        names: vec![
            "gateways.networking.istio.io".into(),
            "destinationrules.networking.istio.io".into(),
        ],
    });
    if c.role == Role::Primary {
        // Gateways are applied only once istiod (and its webhook) answers.
        waits.push(Wait::Deployment {
            namespace: "istio-system".into(),
            name: "istiod".into(),
        });
    }
    LiveSpec {
        slice,
        files: vec![],
        deps: super::on_cluster(c, deps),
        action: Step::on(super::target(c))
            .charts(charts(mesh.mode, &mesh.istio, &render_id(n)))
            .waits(waits)
            .action(),
    }
}

/// The charts of the istiod task for a cluster.
fn charts(mode: Mode, istio: &str, render: &TaskId) -> Vec<Chart> {
    let chart = |name: &str, chart: &str, values: &str| Chart {
        release: helm::Release {
            name: name.into(),
            namespace: "istio-system".into(),
            chart: chart.into(),
            repo: Some(ISTIO_REPO.into()),
            version: Some(istio.into()),
        },
        values: Some(Src::dep(render.clone(), values)),
    };
    let mut v = vec![
        chart("istio-base", "base", "base-values.yaml"),
        chart("istiod", "istiod", "istiod-values.yaml"),
    ];
    if mode == Mode::Ambient {
        v.push(chart("istio-cni", "cni", "cni-values.yaml"));
        v.push(chart("ztunnel", "ztunnel", "ztunnel-values.yaml"));
    }
    v
}
