//! The namespace kind: `render.namespace:<ns>:<c>` and `namespace:<ns>:<c>`,
//! one pair per namespace that apps use in a cluster.
//!
//! A namespace is shared: the default plan puts helloworld and curl both in
//! `sample`. If each app owned it, moving one app elsewhere would prune the
//! namespace, and a real API server's namespace delete takes everything in
//! it, the other app included. So the namespace is its own task, planned
//! from every app placed in that cluster with that namespace; the apps
//! depend on it and never apply or prune it. Its labels are the union of
//! what the apps there need (the mesh enrollment label: sidecar injection,
//! or the ambient data plane); the list of apps is not an input, so adding
//! an app to a namespace does not rerun it.

use super::step::{Src, Step};
use super::{LiveSpec, Out, Planner, RenderSpec, Slice, TaskId};
use std::collections::BTreeMap;

pub const VERSION: u32 = 1;
pub const RENDER_VERSION: u32 = 1;
const TEMPLATE: &str = "tasks/apps/namespace.yaml.j2";

/// `namespace:<ns>:<c>`
pub fn id(namespace: &str, cluster: &str) -> TaskId {
    TaskId::new(format!("namespace:{namespace}:{cluster}"))
}

/// `render.namespace:<ns>:<c>`
pub fn render_id(namespace: &str, cluster: &str) -> TaskId {
    TaskId::new(format!("render.namespace:{namespace}:{cluster}"))
}

/// (cluster, namespace) → the apps placed there, sorted.
pub fn used(plan: &crate::plan::Plan) -> BTreeMap<(&str, &str), Vec<&str>> {
    let mut m: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for app in plan.apps.values() {
        for c in app.placement.keys() {
            m.entry((c.as_str(), app.namespace.as_str()))
                .or_default()
                .push(app.name.as_str());
        }
    }
    m
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    for (c, ns) in used(plan).into_keys() {
        let file = format!("{ns}.yaml");
        p.render(RenderSpec {
            id: render_id(ns, c),
            version: RENDER_VERSION,
            slice: Slice::new().put("namespace", "apps.*.namespace", ns).put(
                "mode",
                "mesh.mode",
                super::mode_str(plan),
            ),
            outputs: vec![Out::new(TEMPLATE, file.clone(), &format!("{c}/namespaces"))],
            enrich: vec![],
            deps: vec![],
        });
        let cluster = &plan.clusters[c];
        p.live(
            || id(ns, c),
            "namespace",
            VERSION,
            || LiveSpec {
                slice: super::access_slice(cluster),
                files: vec![],
                deps: super::on_cluster(cluster, vec![render_id(ns, c)]),
                action: Step::on(super::target(cluster))
                    .manifests(vec![Src::dep(render_id(ns, c), file)])
                    .action(),
            },
        );
    }
}
