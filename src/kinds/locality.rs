//! The locality kind: `render.locality:<app>:<c>` and `locality:<app>:<c>`,
//! one pair per app with `locality = true` and per primary cluster.
//!
//! Istio keeps a request in the caller's locality (the region and zone of
//! its node) only when a DestinationRule for the destination turns
//! `localityLbSetting` on and sets `outlierDetection` (without it Istio
//! ignores the setting, so that it can tell a dead locality from a live
//! one). The render writes that rule, as Istio's locality failover task
//! documents it, for the app's Service. It goes in the config root
//! namespace (`istio-system`), which every primary has once istiod is in,
//! so it needs no app namespace there and applies to callers in every
//! namespace; a rule of the user's own for the same host in the caller's
//! or the Service's namespace takes precedence (and `mesh verify` then
//! shows the local share falling). Only a primary's istiod reads it: the
//! proxies of a remote get their configuration from their primary.
//!
//! `locality:<app>:<c>` applies it after istiod (whose base chart brings
//! the DestinationRule CRD), prunes it when the app drops locality, and
//! its probe notices the rule deleted or edited behind mesh's back.

use super::step::{Src, Step};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId, istiod};
use crate::plan::Role;

pub const VERSION: u32 = 1;
pub const RENDER_VERSION: u32 = 1;
const TEMPLATE: &str = "tasks/apps/locality.yaml.j2";

/// `locality:<app>:<c>`
pub fn id(app: &str, cluster: &str) -> TaskId {
    TaskId::new(format!("locality:{app}:{cluster}"))
}

/// `render.locality:<app>:<c>`
pub fn render_id(app: &str, cluster: &str) -> TaskId {
    TaskId::new(format!("render.locality:{app}:{cluster}"))
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    for app in plan.apps.values().filter(|a| a.locality) {
        let a = &app.name;
        // Validation refuses locality without a Service.
        let Some((service, _)) = &app.service else {
            continue;
        };
        for c in plan.clusters.values().filter(|c| c.role == Role::Primary) {
            let file = format!("{a}-locality.yaml");
            p.render(RenderSpec {
                id: render_id(a, &c.name),
                version: RENDER_VERSION,
                slice: Slice::new().put(
                    "app",
                    format!("apps.{a}.locality"),
                    serde_json::json!({"name": a, "namespace": app.namespace, "service": service}),
                ),
                outputs: vec![Out::new(
                    TEMPLATE,
                    file.clone(),
                    &format!("{}/apps", c.name),
                )],
                enrich: vec![],
                deps: vec![],
            });
            p.live(
                || id(a, &c.name),
                "locality",
                VERSION,
                || LiveSpec {
                    slice: super::access_slice(c),
                    files: vec![],
                    deps: super::on_cluster(c, vec![istiod::id(&c.name), render_id(a, &c.name)]),
                    action: Step::on(super::target(c))
                        .manifests(vec![Src::dep(render_id(a, &c.name), file)])
                        .action(),
                },
            );
        }
    }
}
