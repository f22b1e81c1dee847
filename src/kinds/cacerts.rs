//! The cacerts kind: `render.cacerts:<c>` and `cacerts:<c>`.
//!
//! `render.cacerts:<c>` renders the `istio-system` namespace, labelled
//! `topology.istio.io/network=<network>` (and on a remote annotated
//! `topology.istio.io/controlPlaneClusters=<primary>`), and the `cacerts`
//! Secret holding the cluster's intermediate CA from `pki.intermediate:<c>`
//! (a secret output: 0600, never printed). `cacerts:<c>` applies both, in
//! that order, before istiod: without `cacerts` istiod silently self-signs
//! and cross-cluster mTLS fails. istiod reads `cacerts` when it starts, so
//! when the Secret is applied again (a new intermediate, or drift), an
//! istiod already running is restarted and awaited; then what holds
//! certificates signed by the previous intermediate is restarted and
//! awaited too (the gateways and ztunnel in `istio-system`, every
//! Deployment and DaemonSet in the namespaces of the apps placed on the
//! cluster), so the mesh is on the new CA when the build ends. Which
//! namespaces is read from the plan but kept out of the task's key: it
//! says what a rerun restarts, not what it applies, and an app edit must
//! not restart istiod.

use super::render::Enrich;
use super::step::{Src, Step, Wait};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId, pki};

pub const VERSION: u32 = 1;
pub const RENDER_VERSION: u32 = 1;
const NAMESPACE: &str = "namespace.yaml";
const CACERTS: &str = "cacerts.yaml";

/// `cacerts:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("cacerts:{cluster}"))
}

/// `render.cacerts:<c>`
pub fn render_id(cluster: &str) -> TaskId {
    TaskId::new(format!("render.cacerts:{cluster}"))
}

/// The namespaces of the apps placed on cluster `c`, sorted.
fn app_namespaces(plan: &crate::plan::Plan, c: &str) -> Vec<String> {
    let set: std::collections::BTreeSet<String> = plan
        .apps
        .values()
        .filter(|a| a.placement.contains_key(c))
        .map(|a| a.namespace.clone())
        .collect();
    set.into_iter().collect()
}

pub fn plan(p: &mut Planner) {
    for c in p.plan.clusters.values() {
        let n = &c.name;
        let dir = format!("{n}/istio");
        p.render(RenderSpec {
            id: render_id(n),
            version: RENDER_VERSION,
            slice: Slice::new().put(
                "cluster",
                super::cluster_path(c),
                serde_json::json!({"name": n, "network": c.network, "role": c.role, "primary": c.primary}),
            ),
            outputs: vec![
                Out::new("tasks/istio/namespace.yaml.j2", NAMESPACE, &dir),
                Out::new("tasks/istio/cacerts.yaml.j2", CACERTS, &dir).secret(),
            ],
            enrich: vec![Enrich::Pem { cluster: n.clone() }],
            deps: vec![pki::intermediate_id(n)],
        });
        p.live(
            || id(n),
            "cacerts",
            VERSION,
            || LiveSpec {
                slice: super::access_slice(c),
                files: vec![],
                deps: super::on_cluster(c, vec![render_id(n)]),
                action: Step::on(super::target(c))
                    .manifests(vec![
                        Src::dep(render_id(n), NAMESPACE),
                        Src::dep(render_id(n), CACERTS),
                    ])
                    .waits(vec![
                        Wait::RestartOnRerun {
                            namespace: "istio-system".into(),
                            name: "istiod".into(),
                        },
                        Wait::RestartWorkloadsOnRerun {
                            namespaces: app_namespaces(p.plan, n),
                        },
                    ])
                    .action(),
            },
        );
    }
}
