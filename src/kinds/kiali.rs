//! The kiali kind: `render.kiali:<c>` and `kiali:<c>` in every cluster,
//! and `kiali-secret:<c>` for every cluster but Kiali's own, when the plan's
//! `[addons] kiali = true`.
//!
//! One Kiali reads every cluster, as Kiali's multi-cluster setup documents
//! it: the server runs in the first primary (by name), its home, with
//! anonymous access and the home's Prometheus (`[addons] prometheus`, which
//! Kiali needs). Every other cluster gets the same `kiali-server` chart with
//! `deployment.remote_cluster_resources_only`: the `kiali` service account
//! and its read-only role, no server. `kiali-secret:<c>` then does what
//! Kiali's `kiali-prepare-remote-cluster.sh` does: a long-lived token of
//! that account in <c>, and in the home the Secret
//! `kiali-remote-cluster-secret-<c>` (label `kiali.io/multiCluster=true`,
//! annotation `kiali.io/cluster: <c>`) holding a kubeconfig for it, with
//! <c>'s internal address as the remote secrets have it. The server reads
//! those Secrets only when it starts, so the task restarts it and waits for
//! the rollout. It is the remote-secret action in Kiali's [`Flavor`].
//!
//! Metrics: the home's Prometheus holds the home's series only; Kiali's
//! graph of other clusters' traffic needs them aggregated (federation or
//! remote write), which mesh does not set up.

use super::remote_secret::{Flavor, RemoteSecret};
use super::step::{Chart, Src, Step, Wait};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId, cluster, istiod, prometheus};
use crate::access::Target;
use crate::plan::{Plan, Provider, Role};
use crate::providers::helm;
use std::sync::Arc;

pub const VERSION: u32 = 1;
pub const RENDER_VERSION: u32 = 1;
pub const SECRET_VERSION: u32 = 1;
pub const REPO: &str = "https://kiali.org/helm-charts";
const VALUES: &str = "kiali-values.yaml";
/// The release, its service account, and (in the home) its Deployment.
pub const NAME: &str = "kiali";

/// Kiali's remote cluster secrets.
pub const KIALI: Flavor = Flavor {
    sa: NAME,
    token_secret: "kiali-multi-cluster-token",
    prefix: "kiali-remote-cluster-secret-",
    label: ("kiali.io/multiCluster", "true"),
    cluster_annotation: "kiali.io/cluster",
    restart: Some(NAME),
    // The add-on can leave the plan while the clusters stay.
    undo_on_kind: true,
};

/// `kiali:<c>`
pub fn id(cluster: &str) -> TaskId {
    TaskId::new(format!("kiali:{cluster}"))
}

/// `render.kiali:<c>`
pub fn render_id(cluster: &str) -> TaskId {
    TaskId::new(format!("render.kiali:{cluster}"))
}

/// `kiali-secret:<c>`
pub fn secret_id(cluster: &str) -> TaskId {
    TaskId::new(format!("kiali-secret:{cluster}"))
}

/// The cluster Kiali's server runs in: the first primary by name.
pub fn home(plan: &Plan) -> Option<&str> {
    plan.clusters
        .values()
        .find(|c| c.role == Role::Primary)
        .map(|c| c.name.as_str())
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    let Some(home) = home(plan).filter(|_| plan.addons.kiali) else {
        return;
    };
    for c in plan.clusters.values() {
        let n = &c.name;
        let is_home = n == home;
        p.render(RenderSpec {
            id: render_id(n),
            version: RENDER_VERSION,
            slice: Slice::new()
                .put("cluster", format!("clusters.{n}.name"), n)
                .put("home", "addons.kiali(home)", is_home),
            outputs: vec![Out::new(
                "tasks/addons/kiali-values.yaml.j2",
                VALUES,
                &format!("{n}/addons"),
            )],
            enrich: vec![],
            deps: vec![],
        });
        p.live(
            || id(n),
            "kiali",
            VERSION,
            || {
                // The home's server needs its Prometheus.
                let mut deps = vec![istiod::id(n), render_id(n)];
                let mut waits = vec![];
                if is_home {
                    deps.push(prometheus::id(n));
                    waits.push(Wait::Deployment {
                        namespace: "istio-system".into(),
                        name: NAME.into(),
                    });
                }
                LiveSpec {
                    slice: super::access_slice(c).put(
                        "version",
                        "versions.kiali",
                        &plan.versions.kiali,
                    ),
                    files: vec![],
                    deps: super::on_cluster(c, deps),
                    action: Step::on(super::target(c))
                        .charts(vec![Chart {
                            release: helm::Release {
                                name: NAME.into(),
                                namespace: "istio-system".into(),
                                chart: "kiali-server".into(),
                                repo: Some(REPO.into()),
                                version: Some(plan.versions.kiali.clone()),
                            },
                            values: Some(Src::dep(render_id(n), VALUES)),
                        }])
                        .waits(waits)
                        .action(),
                }
            },
        );
    }
    let to = Arc::new(Target::of(&plan.clusters[home]));
    for c in plan.clusters.values().filter(|c| c.name != home) {
        let n = &c.name;
        p.live(
            || secret_id(n),
            "kiali-secret",
            SECRET_VERSION,
            || {
                let mut access = serde_json::json!({"name": n, "provider": c.provider, "context": c.context, "kubeconfig": c.kubeconfig});
                if let Some(s) = &c.api_server {
                    access["api_server"] = serde_json::json!(s);
                }
                let mut deps = vec![id(n), id(home)];
                for x in [c, &plan.clusters[home]] {
                    if x.provider == Provider::Kind {
                        deps.push(cluster::id(&x.name));
                    }
                }
                LiveSpec {
                    slice: Slice::new()
                        .put("from", format!("clusters.{n}"), access)
                        .put("to", "addons.kiali(home)", home),
                    files: vec![],
                    deps,
                    action: Arc::new(RemoteSecret {
                        from: Arc::new(Target::of(c)),
                        to: to.clone(),
                        flavor: &KIALI,
                    }),
                }
            },
        );
    }
}
