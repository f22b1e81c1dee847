//! The prometheus kind: `render.prometheus:<c>` and `prometheus:<c>`, one
//! pair per cluster when the plan's `[addons] prometheus = true`.
//!
//! Istio's own Prometheus add-on (`samples/addons/prometheus.yaml`) is the
//! prometheus-community `prometheus` chart with the server alone; so is
//! this, at the chart version `[versions] prometheus` pins: no
//! Alertmanager, kube-state-metrics, node exporter or Pushgateway, no
//! persistent volume, not in the mesh itself. The chart's default scrape
//! configuration reads the `prometheus.io/*` annotations Istio puts on
//! every injected pod, so it collects the proxies' merged metrics.
//!
//! `prometheus:<c>` installs it in `istio-system` (where Kiali and Istio's
//! dashboards look for it) after istiod, and waits for the
//! `prometheus-server` rollout. Its probe is the release's; its undo
//! uninstalls it, when the plan drops it or on `mesh destroy`.

use super::step::{Chart, Src, Step, Wait};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId, istiod};
use crate::providers::helm;

pub const VERSION: u32 = 1;
pub const RENDER_VERSION: u32 = 1;
pub const REPO: &str = "https://prometheus-community.github.io/helm-charts";
const VALUES: &str = "prometheus-values.yaml";
/// The release; its server's Deployment and Service are `<release>-server`.
pub const RELEASE: &str = "prometheus";

/// `prometheus:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("prometheus:{cluster}"))
}

/// `render.prometheus:<c>`
pub fn render_id(cluster: &str) -> TaskId {
    TaskId::new(format!("render.prometheus:{cluster}"))
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    if !plan.addons.prometheus {
        return;
    }
    for c in plan.clusters.values() {
        let n = &c.name;
        p.render(RenderSpec {
            id: render_id(n),
            version: RENDER_VERSION,
            slice: Slice::new().put("cluster", format!("clusters.{n}.name"), n),
            outputs: vec![Out::new(
                "tasks/addons/prometheus-values.yaml.j2",
                VALUES,
                &format!("{n}/addons"),
            )],
            enrich: vec![],
            deps: vec![],
        });
        p.live(
            || id(n),
            "prometheus",
            VERSION,
            || LiveSpec {
                slice: super::access_slice(c).put(
                    "version",
                    "versions.prometheus",
                    &plan.versions.prometheus,
                ),
                files: vec![],
                deps: super::on_cluster(c, vec![istiod::id(n), render_id(n)]),
                action: Step::on(super::target(c))
                    .charts(vec![Chart {
                        release: helm::Release {
                            name: RELEASE.into(),
                            namespace: "istio-system".into(),
                            chart: "prometheus".into(),
                            repo: Some(REPO.into()),
                            version: Some(plan.versions.prometheus.clone()),
                        },
                        values: Some(Src::dep(render_id(n), VALUES)),
                    }])
                    .waits(vec![Wait::Deployment {
                        namespace: "istio-system".into(),
                        name: format!("{RELEASE}-server"),
                    }])
                    .action(),
            },
        );
    }
}
