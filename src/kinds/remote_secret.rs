//! The remote-secret kind: `remote-secret:<from>-><to>` puts <from>'s
//! credentials into <to>, so that <to>'s istiod watches <from>'s API.
//!
//! Pairs: both ways between every two clusters in multi-primary; from each
//! remote to its primary in primary-remote. What it writes is what
//! `istioctl create-remote-secret` writes: a long-lived token Secret for
//! `istio-reader-service-account` in <from> (its token filled in by the
//! token controller), then in <to> the Secret `istio-remote-secret-<from>`
//! (label `istio/multiCluster: "true"`, annotation
//! `networking.istio.io/cluster: <from>`) whose one key `<from>` holds a
//! kubeconfig: <from>'s internal server address (never 127.0.0.1: the other
//! cluster cannot reach it), its CA data and the reader's bearer token.
//!
//! The action ([`RemoteSecret`]) takes a [`Flavor`]: [`ISTIO`] here; the
//! Kiali add-on (`kiali`) writes its own kind of remote secret with it.

use super::step::{Receipt, content_hash, unreachable, wait_timeout};
use super::{LiveSpec, Planner, Slice, TaskId, cluster, istiod};
use crate::access::Target;
use crate::graph::{Action, BoxFuture, Ctx, OutFile, Probe, ProbeError, TaskError};
use crate::k8s::{self, ObjRef};
use crate::plan::{Provider, Topology};
use std::sync::Arc;

pub const VERSION: u32 = 1;

/// `remote-secret:<from>-><to>`
pub fn id(from: &str, to: &str) -> TaskId {
    TaskId::new(format!("remote-secret:{from}->{to}"))
}

/// (from, to) of a remote-secret id.
pub fn parse_id(id: &str) -> Option<(&str, &str)> {
    id.strip_prefix("remote-secret:")?.split_once("->")
}

/// Every (from, to) pair of the plan: both ways between every two clusters
/// in multi-primary, each remote to its primary in primary-remote.
pub fn pairs(plan: &crate::plan::Plan) -> impl Iterator<Item = (&str, &str)> {
    let names = || plan.clusters.keys().map(String::as_str);
    let multi = plan.mesh.topology == Topology::MultiPrimary;
    let all = names()
        .filter(move |_| multi)
        .flat_map(move |a| names().filter(move |b| *b != a).map(move |b| (a, b)));
    let to_primary = plan
        .clusters
        .values()
        .filter(move |_| !multi)
        .filter_map(|c| Some((c.name.as_str(), c.primary.as_deref()?)));
    all.chain(to_primary)
}

/// Is (from, to) a pair of the plan? What [`pairs`] yields, decided without
/// listing them.
pub fn is_pair(plan: &crate::plan::Plan, from: &str, to: &str) -> bool {
    let (Some(a), true) = (plan.clusters.get(from), plan.clusters.contains_key(to)) else {
        return false;
    };
    match plan.mesh.topology {
        Topology::MultiPrimary => from != to,
        Topology::PrimaryRemote => a.primary.as_deref() == Some(to),
    }
}

/// One pair per (from, to): quadratic in multi-primary (a million at 1,000
/// clusters), so what pairs share is made once per cluster: the inputs of
/// `from`'s access fields and of `to`'s name, and each cluster's target.
pub fn plan(p: &mut Planner) {
    if !p.is_live() {
        return;
    }
    let plan = p.plan;
    struct Per {
        from: super::Shared,
        to: super::Shared,
        target: Arc<Target>,
        /// What a pair's task waits for on this cluster.
        deps: Vec<TaskId>,
    }
    let per: hashbrown::HashMap<&str, Per> = plan
        .clusters
        .values()
        .map(|c| {
            let n = c.name.as_str();
            let mut access = serde_json::json!({"name": n, "provider": c.provider, "context": c.context, "kubeconfig": c.kubeconfig});
            // Only when set, so that other plans keep their keys.
            if let Some(s) = &c.api_server {
                access["api_server"] = serde_json::json!(s);
            }
            let from = p.share(&Slice::new().put("from", format!("clusters.{n}"), access));
            let to = p.share(&Slice::new().put("to", format!("clusters.{n}.name"), n));
            let target = Arc::new(Target::of(c));
            let mut deps = vec![p.resolved(istiod::id(n))];
            if c.provider == Provider::Kind {
                deps.push(p.resolved(cluster::id(n)));
            }
            let per = Per {
                from,
                to,
                target,
                deps,
            };
            (n, per)
        })
        .collect();
    let n = plan.clusters.len();
    match plan.mesh.topology {
        Topology::MultiPrimary => p.reserve(n * n.saturating_sub(1), 4 * n * n),
        Topology::PrimaryRemote => p.reserve(n, 4 * n),
    }
    for (a, b) in pairs(plan) {
        p.live(
            || id(a, b),
            "remote-secret",
            VERSION,
            || {
                let (pa, pb) = (&per[a], &per[b]);
                LiveSpec {
                    slice: Slice::new().with(&pa.from).with(&pb.to),
                    files: vec![],
                    deps: pa.deps.iter().chain(&pb.deps).cloned().collect(),
                    action: Arc::new(RemoteSecret {
                        from: pa.target.clone(),
                        to: pb.target.clone(),
                        flavor: &ISTIO,
                    }),
                }
            },
        );
    }
}

/// Whose remote secret: the service account whose token it carries and
/// how the Secret is named and marked for its reader to find it.
#[derive(Debug)]
pub struct Flavor {
    /// The service account in <from>, in `istio-system`.
    pub sa: &'static str,
    /// Its long-lived token Secret.
    pub token_secret: &'static str,
    /// The Secret in <to> is this followed by <from>'s name.
    pub prefix: &'static str,
    /// The label its reader selects by.
    pub label: (&'static str, &'static str),
    /// The annotation naming <from>.
    pub cluster_annotation: &'static str,
    /// A Deployment in <to> that reads such Secrets only when it starts.
    pub restart: Option<&'static str>,
    /// Its undo is needed only on an existing <to>: it leaves the plan with
    /// its clusters, and a kind cluster's deletion takes it.
    pub undo_on_kind: bool,
}

/// istiod's, as `istioctl create-remote-secret` writes it.
pub const ISTIO: Flavor = Flavor {
    sa: "istio-reader-service-account",
    token_secret: "istio-reader-service-account-istio-remote-secret-token",
    prefix: "istio-remote-secret-",
    label: ("istio/multiCluster", "true"),
    cluster_annotation: "networking.istio.io/cluster",
    restart: None,
    undo_on_kind: false,
};

/// `remote-secret:<from>-><to>` (and, in another flavor, Kiali's).
#[derive(Clone, Debug)]
pub struct RemoteSecret {
    pub from: Arc<Target>,
    pub to: Arc<Target>,
    pub flavor: &'static Flavor,
}

impl RemoteSecret {
    fn secret_name(&self) -> String {
        format!("{}{}", self.flavor.prefix, self.from.name)
    }

    async fn go(self, ctx: Ctx) -> Result<Vec<OutFile>, TaskError> {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::ObjectMeta;
        let from = cluster::access(&self.from, &ctx)?;
        let (server, ca) = cluster::internal(&self.from, &ctx)?.server_and_ca()?;
        let server = self.from.api_server.clone().unwrap_or(server);
        if is_loopback(&server) {
            let fix = match self.from.provider {
                Provider::Kind => {
                    "use its internal address (kind get kubeconfig --internal)".into()
                }
                Provider::Kubeconfig => format!(
                    "set api_server under [clusters.{}] to an address {} reaches \
                     (a kind cluster's is https://<name>-control-plane:6443)",
                    self.from.name, self.to.name
                ),
            };
            return Err(TaskError::new(format!(
                "cluster {}'s API server address {server} is not reachable from cluster {}; {fix}",
                self.from.name, self.to.name
            )));
        }
        // A long-lived token for the reader service account.
        let from_client = from.client().await?;
        let token = k8s::reader_token(
            &from_client,
            "istio-system",
            self.flavor.sa,
            self.flavor.token_secret,
            wait_timeout(),
        )
        .await
        .map_err(|e| {
            TaskError::tool(
                "kubernetes",
                format!(
                    "cannot get the token of {} in {}: {}",
                    self.flavor.sa, self.from.name, e
                ),
            )
        })?;
        let name = &self.from.name;
        let mut cluster = serde_json::json!({ "server": server });
        if let Some(ca) = ca {
            cluster["certificate-authority-data"] = serde_json::Value::String(ca);
        }
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": name, "cluster": cluster }],
            "users": [{ "name": name, "user": { "token": token } }],
            "contexts": [{ "name": name, "context": { "cluster": name, "user": name } }],
            "current-context": name,
            "preferences": {},
        });
        let kubeconfig =
            serde_saphyr::to_string(&kubeconfig).map_err(|e| TaskError::new(e.to_string()))?;
        let hash = content_hash(&[&kubeconfig]);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name()),
                namespace: Some("istio-system".into()),
                labels: Some(
                    [(
                        self.flavor.label.0.to_string(),
                        self.flavor.label.1.to_string(),
                    )]
                    .into(),
                ),
                annotations: Some(
                    [
                        (self.flavor.cluster_annotation.to_string(), name.clone()),
                        (k8s::HASH_ANNOTATION.to_string(), hash.clone()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([(name.clone(), ByteString(kubeconfig.into_bytes()))].into()),
            ..Default::default()
        };
        let to_client = cluster::access(&self.to, &ctx)?.client().await?;
        k8s::apply_secret(&to_client, &secret).await.map_err(|e| {
            TaskError::tool(
                "kubernetes",
                format!(
                    "cannot write the remote secret into {}: {}",
                    self.to.name, e
                ),
            )
        })?;
        // A reader that reads its secrets only when it starts.
        if let Some(deployment) = self.flavor.restart {
            k8s::restart_deployment(&to_client, "istio-system", deployment, wait_timeout())
                .await
                .map_err(|e| {
                    TaskError::tool(
                        "kubernetes",
                        format!("cannot restart {deployment} in {}: {e}", self.to.name),
                    )
                })?;
        }
        let receipt = Receipt {
            objects: vec![ObjRef {
                api_version: "v1".into(),
                kind: "Secret".into(),
                namespace: Some("istio-system".into()),
                name: self.secret_name(),
                hash,
            }],
            // Where it lives: how it is found and removed once it leaves
            // the plan while <to> stays.
            cluster: Some(self.to.name.clone()),
            ..Default::default()
        };
        Ok(receipt.files())
    }
}

impl Action for RemoteSecret {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        Box::pin(self.clone().go(ctx))
    }

    fn probe(&self, ctx: Ctx) -> Option<BoxFuture<Probe>> {
        let this = self.clone();
        Some(Box::pin(async move {
            let r = Receipt::read(&ctx).map_err(ProbeError::Drift)?;
            let access = cluster::access(&this.to, &ctx).map_err(unreachable)?;
            r.probe(&access).await
        }))
    }

    fn undo(&self, ctx: Ctx) -> Option<BoxFuture<Result<(), TaskError>>> {
        if self.to.provider == Provider::Kind && !self.flavor.undo_on_kind {
            return None;
        }
        let this = self.clone();
        Some(Box::pin(async move {
            let r = Receipt::read(&ctx).map_err(TaskError::new)?;
            r.undo(&cluster::access(&this.to, &ctx)?).await
        }))
    }
}

/// Does this API server URL name this machine (127.0.0.0/8, ::1,
/// localhost), which no other cluster can reach?
fn is_loopback(server: &str) -> bool {
    let Ok(uri) = server.parse::<hyper::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod loopback_tests {
    #[test]
    fn every_loopback_form_is_refused_and_nothing_else() {
        for s in [
            "https://127.0.0.1:6443",
            "https://127.0.0.2:6443",
            "https://localhost:6443",
            "https://[::1]:6443",
            "https://LOCALHOST",
        ] {
            assert!(super::is_loopback(s), "{s}");
        }
        for s in [
            "https://east-control-plane:6443",
            "https://172.18.0.2:6443",
            "https://[fc00::2]:6443",
            "https://api.example.com",
        ] {
            assert!(!super::is_loopback(s), "{s}");
        }
    }
}
