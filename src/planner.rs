//! The planner: derives the whole task graph from a validated plan.
//!
//! For every cluster `c` (kind-only steps marked *):
//!
//! ```text
//! net.alloc ─────────────► render.cni:c* ──┬──────────► cni:c* ─► lb:c* ─┐
//! render.kind:c* ─► cluster:c* ────────────┴─► cacerts:c ◄─ render.cacerts:c ◄─ pki.intermediate:c ◄─ pki.root
//!                                                  │                                   
//!                     render.istio:c ─────────────►└─► istiod:c ◄── lb:c*  (remote: ◄── gateway:<primary>)
//!                     render.gateway:c ─────────────► gateway:c ◄── istiod:c
//!                     istiod:a, istiod:b ───────────► remote-secret:a->b
//!                     render.app:x:c, istiod:c ─────► app:x:c
//! ```
//!
//! `render.*`, `pki.*` and `net.alloc` are pure: they run offline and write
//! the bundle under `out/`. The others act on clusters. Remote secrets go
//! both ways between every pair of primaries in multi-primary, and from each
//! remote to its primary in primary-remote (`remote-secret:<from>-><to>`
//! puts <from>'s credentials into <to>). User tasks (`[tasks.<name>]`, id
//! `task:<name>`) run after their cluster exists and after their `after`
//! list; a cycle among them is a plan error.
//!
//! Every node's input manifest is built from the exact values its action
//! reads: a JSON context whose top-level keys map to plan paths (so
//! `mesh why` can say `clusters.east.workers` changed), plus the digests of
//! the files it reads and its implementation version.

use crate::diag::{Diag, PlanError};
use crate::graph::{Action, Graph, GraphBuilder, Node, TaskError, blocking};
use crate::hash::{Digest, digest_of};
use crate::live::{self, Expect, Src, Wait};
use crate::plan::{Cni, Mode, Plan, Provider, Role, Topology, UserAction};
use crate::tasks::render::{Enrich, Output, Tmpl};
use crate::tasks::{pki, render};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Implementation versions: bump one when its task's output changes for the
/// same inputs, so every cache entry of that kind is invalidated.
mod version {
    pub const PKI: u32 = 1;
    pub const NET: u32 = 1;
    pub const RENDER: u32 = 1;
    pub const LIVE: u32 = 1;
}

/// Which build the graph is for. They differ in one place: a live build
/// reads the kind Docker network (`net.discover`) and allocates
/// LoadBalancer ranges from it; an offline build uses `[mesh] kind_subnet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    Offline,
    Live,
}

/// A task's context: what its action reads, keyed as the template sees it,
/// with the plan path each key came from.
#[derive(Default)]
struct Slice {
    ctx: Map<String, Value>,
    paths: Vec<(String, String)>,
}

impl Slice {
    fn new() -> Slice {
        Slice::default()
    }
    fn put(mut self, key: &str, plan_path: impl Into<String>, v: impl Serialize) -> Slice {
        self.ctx.insert(
            key.into(),
            serde_json::to_value(v).expect("plan values serialize"),
        );
        self.paths.push((key.into(), plan_path.into()));
        self
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Digest>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                flatten(&format!("{prefix}.{k}"), x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), digest_of("mesh.plan-value.v1", v));
        }
    }
}

struct Planner<'a> {
    plan: &'a Arc<Plan>,
    b: GraphBuilder,
    /// Live nodes added once their dependencies exist: (id, deps).
    pending_live: Vec<(String, Vec<String>)>,
    target: Build,
    /// Offline: the ids of the live tasks left out.
    live_ids: std::collections::HashSet<String>,
}

impl Planner<'_> {
    fn tmpl(&self, name: &str) -> Tmpl {
        Tmpl {
            name: name.into(),
            text: self.plan.file(name).text.clone(),
        }
    }

    fn inputs(&self, version: u32, slice: &Slice, files: &[&str]) -> BTreeMap<String, Digest> {
        let mut m = BTreeMap::new();
        m.insert(
            "impl".into(),
            Digest::of_bytes(version.to_string().as_bytes()),
        );
        for (key, path) in &slice.paths {
            flatten(&format!("plan:{path}"), &slice.ctx[key], &mut m);
        }
        for f in files {
            m.insert(format!("file:{f}"), self.plan.file(f).digest);
        }
        m
    }

    fn add(&mut self, node: Node, deps: &[String]) {
        let id = node.id.clone();
        self.b.add(node).expect("planner ids are unique");
        for d in deps {
            self.b.edge(d.clone(), id.clone());
        }
    }

    /// A render node: templates → files, with dependency data.
    #[allow(clippy::too_many_arguments)]
    fn render(
        &mut self,
        id: String,
        slice: Slice,
        outs: &[(&str, String, String, bool)],
        how: Vec<Enrich>,
        deps: &[String],
    ) {
        let files: Vec<&str> = outs.iter().map(|o| o.0).collect();
        let inputs = self.inputs(version::RENDER, &slice, &files);
        let outputs: Vec<Output> = outs
            .iter()
            .map(|(t, file, export, secret)| Output {
                template: self.tmpl(t),
                file: file.clone(),
                export: export.clone(),
                secret: *secret,
            })
            .collect();
        let base = slice.ctx;
        self.add(
            Node {
                id,
                kind: "render",
                version: version::RENDER,
                pure: true,
                inputs,
                action: blocking(move |ctx| render::render(ctx, &base, &how, &outputs)),
            },
            deps,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn live(
        &mut self,
        id: String,
        kind: &'static str,
        slice: Slice,
        files: &[&str],
        deps: &[String],
        action: Arc<dyn Action>,
    ) {
        if self.target == Build::Offline {
            // An offline build never runs live tasks: keep only their ids
            // (user tasks' `after` may name them), not thousands of nodes.
            self.live_ids.insert(id);
            return;
        }
        let inputs = self.inputs(version::LIVE, &slice, files);
        self.add(
            Node {
                id,
                kind,
                version: version::LIVE,
                pure: false,
                inputs,
                action,
            },
            deps,
        );
    }
}

fn s(x: &str) -> String {
    x.to_string()
}

/// Build the graph of `plan`.
pub fn build(plan: &Arc<Plan>, target: Build) -> Result<Graph, PlanError> {
    let mut p = Planner {
        plan,
        b: GraphBuilder::new(),
        pending_live: Vec::new(),
        target,
        live_ids: Default::default(),
    };
    let mesh = &plan.mesh;
    let mode = match mesh.mode {
        Mode::Sidecar => "sidecar",
        Mode::Ambient => "ambient",
    };
    let kind_clusters: Vec<String> = plan
        .clusters
        .values()
        .filter(|c| c.provider == Provider::Kind)
        .map(|c| c.name.clone())
        .collect();

    // net.alloc
    if !kind_clusters.is_empty() {
        let slice = Slice::new()
            .put("kind_subnet", "mesh.kind_subnet", mesh.kind_subnet)
            .put("lb_size", "mesh.lb_size", mesh.lb_size)
            .put("clusters", "clusters.*(kind)", &kind_clusters);
        let inputs = p.inputs(version::NET, &slice, &[]);
        let (subnet, size, names) = (mesh.kind_subnet, mesh.lb_size, kind_clusters.clone());
        let (action, deps) = match target {
            Build::Offline => (
                blocking(move |_| render::net_alloc(subnet, size, &names)),
                vec![],
            ),
            Build::Live => {
                // Read once, after the clusters exist (kind makes the network).
                let discover_deps: Vec<String> = kind_clusters
                    .iter()
                    .map(|c| format!("cluster:{c}"))
                    .collect();
                p.pending_live.push((s("net.discover"), discover_deps));
                let action = blocking(move |ctx| {
                    let text = ctx.read_string("net.discover", live::SUBNET_FILE)?;
                    let subnet = text.trim().parse().map_err(|_| {
                        TaskError::new(format!("net.discover produced {text:?}, not a subnet"))
                    })?;
                    render::net_alloc(subnet, size, &names)
                });
                (action, vec![s("net.discover")])
            }
        };
        p.add(
            Node {
                id: s("net.alloc"),
                kind: "net.alloc",
                version: version::NET,
                pure: true,
                inputs,
                action,
            },
            &deps,
        );
    }

    // pki.root
    let pki_slice = || Slice::new().put("pki", "pki", &plan.pki);
    {
        let inputs = p.inputs(version::PKI, &pki_slice(), &[]);
        let pk = plan.pki.clone();
        p.add(
            Node {
                id: s("pki.root"),
                kind: "pki.root",
                version: version::PKI,
                pure: true,
                inputs,
                action: blocking(move |_| pki::root(&pk)),
            },
            &[],
        );
    }

    // Which primaries have remotes (they run istiod for others).
    let has_remotes: BTreeSet<&str> = plan
        .clusters
        .values()
        .filter_map(|c| c.primary.as_deref())
        .collect();

    for c in plan.clusters.values() {
        let n = &c.name;
        let cpath = format!("clusters.{n}");
        let is_kind = c.provider == Provider::Kind;
        let lb_annotation = match c.cni {
            Cni::Cilium => "lbipam.cilium.io/ips",
            Cni::Kindnet => "metallb.io/loadBalancerIPs",
        };

        // pki.intermediate:c
        {
            let slice = pki_slice().put("cluster", format!("{cpath}.name"), n);
            let inputs = p.inputs(version::PKI, &slice, &[]);
            let (pk, name) = (plan.pki.clone(), n.clone());
            p.add(
                Node {
                    id: format!("pki.intermediate:{n}"),
                    kind: "pki.intermediate",
                    version: version::PKI,
                    pure: true,
                    inputs,
                    action: blocking(move |ctx| {
                        let cert = ctx.read_string("pki.root", "root-cert.pem")?;
                        let key = ctx.read_string("pki.root", "root-key.pem")?;
                        pki::intermediate(&pk, &name, &cert, &key)
                    }),
                },
                &[s("pki.root")],
            );
        }

        if is_kind {
            // render.kind:c
            let slice = Slice::new()
                .put(
                    "cluster",
                    &cpath,
                    json!({"name": n, "pod_subnet": c.pod_subnet, "service_subnet": c.service_subnet,
                           "workers": c.workers, "cni": c.cni}),
                )
                .put("kind_node", "versions.kind_node", &plan.versions.kind_node);
            p.render(
                format!("render.kind:{n}"),
                slice,
                &[(
                    "tasks/kind/cluster.yaml.j2",
                    s("kind-cluster.yaml"),
                    format!("{n}/kind-cluster.yaml"),
                    false,
                )],
                vec![],
                &[],
            );

            // render.cni:c
            let slice = Slice::new()
                .put("cluster", &cpath, json!({"name": n, "cni": c.cni}))
                .put("mode", "mesh.mode", mode);
            let outs: Vec<(&str, String, String, bool)> = match c.cni {
                Cni::Cilium => vec![
                    (
                        "tasks/cni/cilium-values.yaml.j2",
                        s("cilium-values.yaml"),
                        format!("{n}/cni/cilium-values.yaml"),
                        false,
                    ),
                    (
                        "tasks/cni/cilium-lb.yaml.j2",
                        s("lb-pool.yaml"),
                        format!("{n}/cni/lb-pool.yaml"),
                        false,
                    ),
                ],
                Cni::Kindnet => vec![(
                    "tasks/cni/metallb-pool.yaml.j2",
                    s("lb-pool.yaml"),
                    format!("{n}/cni/lb-pool.yaml"),
                    false,
                )],
            };
            p.render(
                format!("render.cni:{n}"),
                slice,
                &outs,
                vec![Enrich::Lb { cluster: n.clone() }],
                &[s("net.alloc")],
            );
        }

        // render.cacerts:c (namespace + cacerts secret)
        let slice = Slice::new().put(
            "cluster",
            &cpath,
            json!({"name": n, "network": c.network, "role": c.role, "primary": c.primary}),
        );
        p.render(
            format!("render.cacerts:{n}"),
            slice,
            &[
                (
                    "tasks/istio/namespace.yaml.j2",
                    s("namespace.yaml"),
                    format!("{n}/istio/namespace.yaml"),
                    false,
                ),
                (
                    "tasks/istio/cacerts.yaml.j2",
                    s("cacerts.yaml"),
                    format!("{n}/istio/cacerts.yaml"),
                    true,
                ),
            ],
            vec![Enrich::Pem { cluster: n.clone() }],
            &[format!("pki.intermediate:{n}")],
        );

        // render.istio:c (Helm values per chart)
        let external = mesh.topology == Topology::PrimaryRemote && has_remotes.contains(n.as_str());
        let mut slice = Slice::new()
            .put(
                "mesh",
                "mesh",
                json!({"id": mesh.id, "mode": mode, "topology": mesh.topology}),
            )
            .put(
                "cluster",
                &cpath,
                json!({"name": n, "network": c.network, "role": c.role, "cni": c.cni}),
            )
            .put("external_istiod", "derived.has_remotes", external);
        let mut how = vec![];
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
                    how.push(Enrich::RemotePilot {
                        primary: primary.name.clone(),
                    });
                    deps.push(s("net.alloc"));
                }
            }
        }
        let mut outs = vec![
            (
                "tasks/istio/base-values.yaml.j2",
                s("base-values.yaml"),
                format!("{n}/istio/base-values.yaml"),
                false,
            ),
            (
                "tasks/istio/istiod-values.yaml.j2",
                s("istiod-values.yaml"),
                format!("{n}/istio/istiod-values.yaml"),
                false,
            ),
        ];
        if mesh.mode == Mode::Ambient {
            outs.push((
                "tasks/istio/cni-values.yaml.j2",
                s("cni-values.yaml"),
                format!("{n}/istio/cni-values.yaml"),
                false,
            ));
            outs.push((
                "tasks/istio/ztunnel-values.yaml.j2",
                s("ztunnel-values.yaml"),
                format!("{n}/istio/ztunnel-values.yaml"),
                false,
            ));
        }
        p.render(format!("render.istio:{n}"), slice, &outs, how, &deps);

        // render.gateway:c
        let mut slice = Slice::new()
            .put("cluster", &cpath, json!({"name": n, "network": c.network}))
            .put("lb_annotation", format!("{cpath}.cni"), lb_annotation);
        let mut how = vec![];
        let mut deps = vec![];
        if is_kind {
            how.push(Enrich::Lb { cluster: n.clone() });
            deps.push(s("net.alloc"));
        } else {
            slice = slice.put(
                "gateway_ip",
                format!("{cpath}.gateway_ip"),
                c.gateway_ip.map(|ip| ip.to_string()),
            );
        }
        let outs = match mesh.mode {
            Mode::Ambient => vec![(
                "tasks/gateway/ambient-eastwest.yaml.j2",
                s("eastwest-gateway.yaml"),
                format!("{n}/gateway/eastwest-gateway.yaml"),
                false,
            )],
            Mode::Sidecar => {
                let mut v = vec![
                    (
                        "tasks/gateway/eastwest-values.yaml.j2",
                        s("eastwest-values.yaml"),
                        format!("{n}/gateway/eastwest-values.yaml"),
                        false,
                    ),
                    (
                        "tasks/gateway/cross-network-gateway.yaml.j2",
                        s("cross-network-gateway.yaml"),
                        format!("{n}/gateway/cross-network-gateway.yaml"),
                        false,
                    ),
                ];
                if external {
                    v.push((
                        "tasks/gateway/expose-istiod.yaml.j2",
                        s("expose-istiod.yaml"),
                        format!("{n}/gateway/expose-istiod.yaml"),
                        false,
                    ));
                }
                v
            }
        };
        p.render(format!("render.gateway:{n}"), slice, &outs, how, &deps);

        // Live tasks of the cluster. Each reads its kubeconfig from
        // cluster:<c> (kind), so each depends on it directly.
        let target = live::Target {
            name: n.clone(),
            provider: c.provider,
            context: c.context.clone(),
            kubeconfig: c.kubeconfig.clone(),
        };
        let ctx_slice = || {
            Slice::new().put(
                "cluster",
                &cpath,
                json!({"name": n, "provider": c.provider, "context": c.context, "kubeconfig": c.kubeconfig}),
            )
        };
        let on = |mut deps: Vec<String>| {
            if is_kind {
                deps.push(format!("cluster:{n}"));
            }
            deps
        };
        let step = |charts, manifests, waits| -> Arc<dyn Action> {
            Arc::new(live::Step {
                target: target.clone(),
                charts,
                manifests,
                waits,
                undo_in_place: !is_kind,
            })
        };
        if is_kind {
            p.live(
                format!("cluster:{n}"),
                "cluster",
                ctx_slice(),
                &[],
                &[format!("render.kind:{n}")],
                Arc::new(live::KindCluster { name: n.clone() }),
            );
            let version = if c.cni == Cni::Cilium {
                &plan.versions.cilium
            } else {
                &plan.versions.metallb
            };
            let v = Slice::new()
                .put("cni", format!("{cpath}.cni"), c.cni)
                .put("version", "versions", version);
            p.live(
                format!("cni:{n}"),
                "cni",
                v,
                &[],
                &on(vec![format!("render.cni:{n}")]),
                step(vec![live::cni_chart(c.cni, version, n)], vec![], vec![]),
            );
            p.live(
                format!("lb:{n}"),
                "lb",
                ctx_slice(),
                &[],
                &on(vec![format!("cni:{n}"), format!("render.cni:{n}")]),
                step(
                    vec![],
                    vec![Src::dep(format!("render.cni:{n}"), "lb-pool.yaml")],
                    vec![],
                ),
            );
        }
        let rc = format!("render.cacerts:{n}");
        p.live(
            format!("cacerts:{n}"),
            "cacerts",
            ctx_slice(),
            &[],
            &on(vec![rc.clone()]),
            step(
                vec![],
                vec![
                    Src::dep(&rc, "namespace.yaml"),
                    Src::dep(&rc, "cacerts.yaml"),
                ],
                vec![],
            ),
        );
        let mut deps = vec![format!("cacerts:{n}"), format!("render.istio:{n}")];
        if is_kind {
            deps.push(format!("lb:{n}"));
        }
        if let Some(primary) = &c.primary {
            deps.push(format!("gateway:{primary}"));
        }
        let v = ctx_slice()
            .put("istio", "mesh.istio", &mesh.istio)
            .put("mode", "mesh.mode", mode)
            .put("role", format!("{cpath}.role"), c.role)
            .put(
                "gateway_api",
                "versions.gateway_api",
                &plan.versions.gateway_api,
            );
        let mut waits = vec![];
        if mesh.mode == Mode::Ambient {
            waits.push(Wait::GatewayApiCrds {
                version: plan.versions.gateway_api.clone(),
            });
        }
        if c.role == Role::Primary {
            // Gateways are applied only once istiod (and its webhook) answers.
            waits.push(Wait::Deployment {
                namespace: s("istio-system"),
                name: s("istiod"),
            });
        }
        p.live(
            format!("istiod:{n}"),
            "istiod",
            v,
            &[],
            &on(deps),
            step(
                live::istio_charts(mesh.mode, &mesh.istio, &format!("render.istio:{n}")),
                vec![],
                waits,
            ),
        );
        let rg = format!("render.gateway:{n}");
        let expect = match (is_kind, c.gateway_ip) {
            (true, _) => Expect::Alloc(n.clone()),
            (false, Some(ip)) => Expect::Ip(ip.to_string()),
            (false, None) => Expect::Any,
        };
        let mut deps = vec![format!("istiod:{n}"), rg.clone()];
        if is_kind {
            deps.push(s("net.alloc"));
        }
        let action = match mesh.mode {
            Mode::Sidecar => {
                let mut manifests = vec![Src::dep(&rg, "cross-network-gateway.yaml")];
                if external {
                    manifests.push(Src::dep(&rg, "expose-istiod.yaml"));
                }
                let chart = live::Chart {
                    release: crate::providers::helm::Release {
                        name: s("istio-eastwestgateway"),
                        namespace: s("istio-system"),
                        chart: s("gateway"),
                        repo: Some(live::ISTIO_REPO.into()),
                        version: Some(mesh.istio.clone()),
                    },
                    values: Some(Src::dep(&rg, "eastwest-values.yaml")),
                };
                let wait = Wait::LbAddress {
                    namespace: s("istio-system"),
                    name: s("istio-eastwestgateway"),
                    expect,
                };
                step(vec![chart], manifests, vec![wait])
            }
            Mode::Ambient => step(
                vec![],
                vec![Src::dep(&rg, "eastwest-gateway.yaml")],
                vec![Wait::GatewayAddress {
                    namespace: s("istio-system"),
                    name: s("istio-eastwestgateway"),
                    expect,
                }],
            ),
        };
        p.live(
            format!("gateway:{n}"),
            "gateway",
            ctx_slice()
                .put("istio", "mesh.istio", &mesh.istio)
                .put("mode", "mesh.mode", mode),
            &[],
            &on(deps),
            action,
        );
    }

    // net.discover, once the clusters it waits for exist.
    for (id, deps) in std::mem::take(&mut p.pending_live) {
        p.live(
            id,
            "net.discover",
            Slice::new(),
            &[],
            &deps,
            Arc::new(live::NetDiscover),
        );
    }

    // Remote secrets.
    let mut pairs = Vec::new();
    match mesh.topology {
        Topology::MultiPrimary => {
            for a in plan.clusters.keys() {
                for b in plan.clusters.keys() {
                    if a != b {
                        pairs.push((a.clone(), b.clone()));
                    }
                }
            }
        }
        Topology::PrimaryRemote => {
            for c in plan.clusters.values() {
                if let Some(pr) = &c.primary {
                    pairs.push((c.name.clone(), pr.clone()));
                }
            }
        }
    }
    let target_of = |name: &str| {
        let c = &plan.clusters[name];
        live::Target {
            name: c.name.clone(),
            provider: c.provider,
            context: c.context.clone(),
            kubeconfig: c.kubeconfig.clone(),
        }
    };
    let cluster_dep = |name: &str| -> Option<String> {
        (plan.clusters[name].provider == Provider::Kind).then(|| format!("cluster:{name}"))
    };
    for (a, b) in &pairs {
        let ca = &plan.clusters[a];
        let slice = Slice::new()
            .put(
                "from",
                format!("clusters.{a}"),
                json!({"name": a, "provider": ca.provider, "context": ca.context, "kubeconfig": ca.kubeconfig}),
            )
            .put("to", format!("clusters.{b}.name"), b);
        let mut deps = vec![format!("istiod:{a}"), format!("istiod:{b}")];
        deps.extend(cluster_dep(a));
        deps.extend(cluster_dep(b));
        p.live(
            format!("remote-secret:{a}->{b}"),
            "remote-secret",
            slice,
            &[],
            &deps,
            Arc::new(live::RemoteSecret {
                from: target_of(a),
                to: target_of(b),
            }),
        );
    }

    // Apps.
    for app in plan.apps.values() {
        for (c, sel) in &app.placement {
            let slice = Slice::new()
                .put(
                    "app",
                    format!("apps.{}", app.name),
                    json!({"name": app.name, "namespace": app.namespace}),
                )
                .put("selector", format!("apps.{}.placement.{c}", app.name), sel)
                .put("mode", "mesh.mode", mode);
            let files = ["tasks/apps/namespace.yaml.j2", app.manifest.as_str()];
            let inputs = p.inputs(version::RENDER, &slice, &files);
            let r = render::AppRender {
                ctx: Value::Object(slice.ctx),
                namespace_tmpl: p.tmpl("tasks/apps/namespace.yaml.j2"),
                manifest_name: app.manifest.clone(),
                manifest: plan.file(&app.manifest).text.clone(),
                selector: sel.clone(),
                ambient: mesh.mode == Mode::Ambient,
                file: format!("{}.yaml", app.name),
                export: format!("{c}/apps/{}.yaml", app.name),
            };
            p.add(
                Node {
                    id: format!("render.app:{}:{c}", app.name),
                    kind: "render.app",
                    version: version::RENDER,
                    pure: true,
                    inputs,
                    action: blocking(move |_| r.run()),
                },
                &[],
            );
            let mut deps = vec![
                format!("istiod:{c}"),
                format!("render.app:{}:{c}", app.name),
            ];
            // A remote's pods are injected by its primary, which must know it.
            if let Some(pr) = &plan.clusters[c].primary {
                deps.push(format!("remote-secret:{c}->{pr}"));
            }
            deps.extend(cluster_dep(c));
            let live = Slice::new().put("cluster", format!("clusters.{c}.name"), c);
            let action = Arc::new(live::Step {
                target: target_of(c),
                charts: vec![],
                manifests: vec![Src::dep(
                    format!("render.app:{}:{c}", app.name),
                    format!("{}.yaml", app.name),
                )],
                waits: vec![Wait::AppliedDeployments],
                undo_in_place: plan.clusters[c].provider != Provider::Kind,
            });
            p.live(
                format!("app:{}:{c}", app.name),
                "app",
                live,
                &[],
                &deps,
                action,
            );
        }
    }

    // User tasks.
    let mut errors = Vec::new();
    for t in plan.tasks.values() {
        let mut files = vec![];
        match &t.action {
            UserAction::Manifest { path } => files.push(path.as_str()),
            UserAction::Chart {
                values: Some(v), ..
            } => files.push(v.as_str()),
            _ => {}
        }
        let slice = Slice::new()
            .put("task", format!("tasks.{}", t.name), t)
            .put("cluster", format!("clusters.{}", t.cluster), {
                let c = &plan.clusters[&t.cluster];
                json!({"name": c.name, "provider": c.provider, "context": c.context})
            });
        let mut deps = vec![];
        if plan.clusters[&t.cluster].provider == Provider::Kind {
            deps.push(format!("cluster:{}", t.cluster));
        }
        for (a, span) in &t.after {
            let known = if let Some(name) = a.strip_prefix("task:") {
                plan.tasks.contains_key(name)
            } else {
                p.b.contains(a) || p.live_ids.contains(a)
            };
            if known {
                deps.push(a.clone());
            } else {
                let hint = if plan.tasks.contains_key(a) {
                    format!("user tasks are named task:<name>: did you mean \"task:{a}\"?")
                } else {
                    "after names task ids as `mesh graph` shows them, e.g. \"istiod:east\" or \"task:<name>\"".into()
                };
                errors.push(
                    Diag::new(format!("task {} runs after unknown task {a:?}", t.name))
                        .at(span.clone(), "no such task")
                        .hint(hint),
                );
            }
        }
        let target = target_of(&t.cluster);
        let in_place = plan.clusters[&t.cluster].provider != Provider::Kind;
        let action: Arc<dyn Action> = match &t.action {
            UserAction::Manifest { path } => Arc::new(live::Step {
                target,
                charts: vec![],
                manifests: vec![Src::Text(plan.file(path).text.clone())],
                waits: vec![Wait::AppliedDeployments],
                undo_in_place: in_place,
            }),
            UserAction::Chart {
                chart,
                repo,
                version,
                release,
                namespace,
                values,
            } => Arc::new(live::Step {
                target,
                charts: vec![live::Chart {
                    release: crate::providers::helm::Release {
                        name: release.clone(),
                        namespace: namespace.clone(),
                        chart: chart.clone(),
                        repo: repo.clone(),
                        version: version.clone(),
                    },
                    values: values
                        .as_ref()
                        .map(|v| Src::Text(plan.file(v).text.clone())),
                }],
                manifests: vec![],
                waits: vec![],
                undo_in_place: in_place,
            }),
            UserAction::Command { argv } => Arc::new(live::Command {
                target,
                argv: argv.clone(),
                dir: plan.dir.clone(),
            }),
        };
        p.live(
            format!("task:{}", t.name),
            "task",
            slice,
            &files,
            &deps,
            action,
        );
    }
    if let Some(d) = user_cycle(plan) {
        errors.push(d);
    }
    if !errors.is_empty() {
        return Err(PlanError {
            file: plan.file.clone(),
            source: plan.text.clone(),
            diags: errors,
        });
    }
    Ok(p.b
        .seal()
        .expect("built-in edges are acyclic and user cycles were checked"))
}

/// A cycle among user tasks' `after` edges, as a diagnostic.
fn user_cycle(plan: &Plan) -> Option<Diag> {
    // Iterative DFS with colours over task names.
    #[derive(Clone, Copy, PartialEq)]
    enum C {
        White,
        Grey,
        Black,
    }
    let names: Vec<&String> = plan.tasks.keys().collect();
    let mut colour: BTreeMap<&str, C> = names.iter().map(|n| (n.as_str(), C::White)).collect();
    let succ = |n: &str| -> Vec<(&str, std::ops::Range<usize>)> {
        plan.tasks[n]
            .after
            .iter()
            .filter_map(|(a, sp)| {
                let t = a.strip_prefix("task:")?;
                plan.tasks
                    .get_key_value(t)
                    .map(|(k, _)| (k.as_str(), sp.clone()))
            })
            .collect()
    };
    for start in names {
        if colour[start.as_str()] != C::White {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        colour.insert(start.as_str(), C::Grey);
        while let Some((n, i)) = stack.pop() {
            let next = succ(n);
            if i < next.len() {
                stack.push((n, i + 1));
                let (m, span) = next[i].clone();
                match colour[m] {
                    C::White => {
                        colour.insert(m, C::Grey);
                        stack.push((m, 0));
                    }
                    C::Grey => {
                        let pos = stack.iter().position(|(x, _)| *x == m).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[pos..]
                            .iter()
                            .map(|(x, _)| format!("task:{x}"))
                            .collect();
                        cycle.push(format!("task:{m}"));
                        return Some(
                            Diag::new(format!("cycle in `after`: {}", cycle.join(" -> ")))
                                .at(span, "closes the cycle")
                                .hint("remove one of these `after` entries"),
                        );
                    }
                    C::Black => {}
                }
            } else {
                colour.insert(n, C::Black);
            }
        }
    }
    None
}
