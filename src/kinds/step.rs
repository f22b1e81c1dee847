//! The generic live step: Helm charts, then manifests, then waits, with a
//! receipt that probe and undo read back.
//!
//! A live task's output is a small receipt (`receipt.json`: the objects it
//! applied with their content hash, the Helm releases with a digest of their
//! values, the gateway address). Receipts hold no secrets, and they are what
//! dependents' keys see, so a task that reruns and installs the same thing
//! cuts off its dependents. Helm revisions go to a private file
//! (`state.json`), outside the output digest: a reinstall makes a new
//! revision of the same thing and must not rerun the dependents.
//!
//! A [`Step`] runs in this order: Gateway API CRDs (ambient), charts (see
//! `charts`: each
//! `helm upgrade --install`, its revision read back from helm's release
//! Secrets), the named Deployments' readiness, manifests (server-side
//! apply, then a prune of what the last run applied and this one no longer
//! does), then the waits on what was applied. Its probe re-reads the
//! receipt's objects (their content hash annotation), the releases' latest
//! revision and status, and a gateway's address; its undo (existing
//! clusters only: a kind cluster goes away whole) deletes the objects and
//! uninstalls the releases.

pub use super::charts::{Chart, values_json};
use super::charts::{install_charts, release_key, release_state};
use super::{cluster, net};
use crate::access::{Access, Target};
use crate::graph::{Action, BoxFuture, Ctx, OutFile, Probe, ProbeError, TaskError};
use crate::hash::Digest;
use crate::k8s::{self, ObjRef};
use crate::providers::helm;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

pub const RECEIPT: &str = "receipt.json";

/// Credentials that cannot be had or used: the world cannot be asked.
pub(crate) fn unreachable(e: TaskError) -> ProbeError {
    ProbeError::Unreachable(e.to_string())
}

/// How long a wait may take (`MESH_WAIT_TIMEOUT` seconds, default 300).
pub fn wait_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("MESH_WAIT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    )
}

/// What a live task did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjRef>,
    /// Each release with the digest of its values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<(helm::Release, Digest)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Objects that existed before mesh first applied them (a user's
    /// namespace, say): mesh applied its fields to them but they are not
    /// mesh's, so no undo or prune ever deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<ObjRef>,
    /// The revision each release got from mesh's install: what the probe
    /// compares. Kept in a private file ([`STATE`]): a reinstall makes a new
    /// revision of the same thing, which must not rerun the dependents.
    #[serde(skip)]
    pub revisions: BTreeMap<String, u64>,
    /// The cluster it acted on: how a task that left the plan is found
    /// and removed. Private ([`CLUSTER`]) like the revisions: it says where,
    /// not what, and must not change the receipt's digest.
    #[serde(skip)]
    pub cluster: Option<String>,
}

pub const STATE: &str = "state.json";
pub const CLUSTER: &str = "cluster";

impl Receipt {
    pub fn files(&self) -> Vec<OutFile> {
        let mut files = vec![
            OutFile::new(
                RECEIPT,
                serde_json::to_vec_pretty(self).expect("receipts serialize"),
            ),
            OutFile::new(
                STATE,
                serde_json::to_vec(&self.revisions).expect("revisions serialize"),
            )
            .private(),
        ];
        if let Some(c) = &self.cluster {
            files.push(OutFile::new(CLUSTER, c.clone()).private());
        }
        files
    }

    /// Did the task leave anything in the world to remove?
    pub fn holds_anything(&self) -> bool {
        !self.objects.is_empty() || !self.releases.is_empty()
    }

    /// The task's recorded receipt (in a probe or undo), or its previous one
    /// (in a rerun).
    pub fn read(ctx: &Ctx) -> Result<Receipt, String> {
        let bytes = ctx.read(&ctx.id, RECEIPT).map_err(|e| e.to_string())?;
        let mut r: Receipt =
            serde_json::from_slice(&bytes).map_err(|e| format!("bad receipt: {e}"))?;
        if let Ok(state) = ctx.read(&ctx.id, STATE) {
            r.revisions = serde_json::from_slice(&state).map_err(|e| format!("bad state: {e}"))?;
        }
        Ok(r)
    }

    /// Check objects and releases.
    pub async fn probe(&self, access: &Access) -> Probe {
        if !self.objects.is_empty() {
            let client = access.client().await.map_err(unreachable)?;
            k8s::probe(&client, &self.objects).await?;
        }
        if !self.releases.is_empty() {
            let client = access.client().await.map_err(unreachable)?;
            for (r, _) in &self.releases {
                let revision = self.revisions.get(&release_key(r)).copied().unwrap_or(0);
                let revision = &revision;
                match release_state(&client, r).await? {
                    None => {
                        return Err(ProbeError::Drift(format!(
                            "release {}/{} is not installed",
                            r.namespace, r.name
                        )));
                    }
                    Some((_, status)) if status != "deployed" => {
                        return Err(ProbeError::Drift(format!(
                            "release {}/{} is {status}",
                            r.namespace, r.name
                        )));
                    }
                    Some((rev, _)) if rev != *revision => {
                        return Err(ProbeError::Drift(format!(
                            "release {}/{} is at revision {rev}, mesh installed {revision}",
                            r.namespace, r.name
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    pub async fn undo(&self, access: &Access) -> Result<(), TaskError> {
        let mine: Vec<ObjRef> = self
            .objects
            .iter()
            .filter(|o| !self.adopted.iter().any(|a| same(a, o)))
            .cloned()
            .collect();
        if !mine.is_empty() {
            let client = access.client().await?;
            k8s::delete(&client, &mine).await?;
        }
        if !self.releases.is_empty() {
            let f = access.file()?;
            for (r, _) in self.releases.iter().rev() {
                helm::uninstall(r, f.path(), access.context()).await?;
            }
        }
        Ok(())
    }
}

/// The same object (whatever its content).
pub(crate) fn same(a: &ObjRef, b: &ObjRef) -> bool {
    (&a.api_version, &a.kind, &a.namespace, &a.name)
        == (&b.api_version, &b.kind, &b.namespace, &b.name)
}

pub(crate) fn content_hash(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex()[..32].to_string()
}

pub(crate) fn temp_file(text: &str, prefix: &str) -> Result<tempfile::NamedTempFile, TaskError> {
    let mut f = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile()
        .map_err(|e| TaskError::new(format!("cannot write a temp file: {e}")))?;
    f.write_all(text.as_bytes())
        .map_err(|e| TaskError::new(format!("cannot write a temp file: {e}")))?;
    Ok(f)
}

/// Where a manifest or values file comes from.
#[derive(Clone, Debug)]
pub enum Src {
    /// A file a dependency produced: (dependency id, file name).
    Dep(String, String),
    /// A file the plan names (user tasks), read at plan time and hashed.
    Text(Arc<str>),
}

impl Src {
    pub fn dep(id: impl Into<String>, file: impl Into<String>) -> Src {
        Src::Dep(id.into(), file.into())
    }

    pub(crate) fn read(&self, ctx: &Ctx) -> Result<String, TaskError> {
        match self {
            Src::Dep(d, f) => ctx.read_string(d, f),
            Src::Text(t) => Ok(t.to_string()),
        }
    }
}

/// Which address a gateway must get.
#[derive(Clone, Debug)]
pub enum Expect {
    Any,
    Ip(String),
    /// The one `net.alloc` pinned for this cluster.
    Alloc(String),
    /// The ingress gateway's address in this cluster's range.
    AllocIngress(String),
}

impl Expect {
    fn resolve(&self, ctx: &Ctx) -> Result<Option<String>, TaskError> {
        match self {
            Expect::Any => Ok(None),
            Expect::Ip(ip) => Ok(Some(ip.clone())),
            Expect::Alloc(c) => Ok(Some(net::read_range(ctx, c)?.gateway_ip.to_string())),
            Expect::AllocIngress(c) => Ok(Some(net::read_range(ctx, c)?.ingress_ip().to_string())),
        }
    }
}

/// The generic live step: Helm charts, then manifests (dependency files),
/// then waits; probe and undo from the receipt.
#[derive(Clone, Debug)]
pub struct Step {
    pub target: Target,
    pub charts: Vec<Chart>,
    /// Manifests to apply, in order.
    pub manifests: Vec<Src>,
    pub waits: Vec<Wait>,
    /// Objects to remove on destroy even though the cluster stays (kubeconfig
    /// clusters); kind clusters go away whole.
    pub undo_in_place: bool,
    /// Never prune a Namespace: apps applied their namespace themselves
    /// before the `namespace` kind owned it, and pruning one deletes
    /// everything in it.
    pub keep_namespaces: bool,
}

impl Step {
    /// A step on `target` that does nothing yet.
    pub fn on(target: Target) -> Step {
        let undo_in_place = target.provider != crate::plan::Provider::Kind;
        Step {
            target,
            charts: vec![],
            manifests: vec![],
            waits: vec![],
            undo_in_place,
            keep_namespaces: false,
        }
    }
    pub fn charts(mut self, charts: Vec<Chart>) -> Step {
        self.charts = charts;
        self
    }
    pub fn manifests(mut self, manifests: Vec<Src>) -> Step {
        self.manifests = manifests;
        self
    }
    pub fn waits(mut self, waits: Vec<Wait>) -> Step {
        self.waits = waits;
        self
    }
    pub fn keep_namespaces(mut self) -> Step {
        self.keep_namespaces = true;
        self
    }
    pub fn action(self) -> Arc<dyn Action> {
        Arc::new(self)
    }
}

/// Readiness mesh waits for after a step.
#[derive(Clone, Debug)]
pub enum Wait {
    Deployment {
        namespace: String,
        name: String,
    },
    /// A DaemonSet a chart runs on every node (helm's `--wait` does not
    /// wait for one whose maxUnavailable covers every node).
    DaemonSet {
        namespace: String,
        name: String,
    },
    /// Every Deployment among the applied manifests.
    AppliedDeployments,
    /// These CustomResourceDefinitions Established (after the charts,
    /// before the manifests): a chart that installs its CRDs as templates
    /// (MetalLB's) does not make helm wait for them, and until then their
    /// kinds are not served.
    Crds {
        names: Vec<String>,
    },
    /// A LoadBalancer Service's address, checked against `expect`.
    LbAddress {
        namespace: String,
        name: String,
        expect: Expect,
    },
    /// A Gateway API Gateway's status address, checked against `expect`.
    GatewayAddress {
        namespace: String,
        name: String,
        expect: Expect,
    },
    /// Ambient: Gateway API CRDs present before anything else.
    GatewayApiCrds {
        source: String,
    },
    /// On a rerun (the step ran before: what it applied changed or
    /// drifted), restart this Deployment if it exists and wait for the
    /// rollout: istiod loads `cacerts` when it starts.
    RestartOnRerun {
        namespace: String,
        name: String,
    },
    /// On a rerun, after the above: restart what holds certificates from
    /// the previous CA and wait for every rollout: in `istio-system` the
    /// gateways (every Deployment but istiod) and ztunnel; in each of
    /// `namespaces` (the apps') every Deployment and DaemonSet.
    RestartWorkloadsOnRerun {
        namespaces: Vec<String>,
    },
}

impl Step {
    async fn go(self, ctx: Ctx) -> Result<Vec<OutFile>, TaskError> {
        let access = cluster::access(&self.target, &ctx)?;
        let rerun = Receipt::read(&ctx).is_ok();
        let mut receipt = Receipt {
            cluster: Some(self.target.name.to_string()),
            ..Default::default()
        };
        // On an existing cluster the state's inventory is what lets destroy
        // find this install after the cache is gone: intent first.
        let inventory = if self.undo_in_place {
            crate::state::get()
        } else {
            None
        };
        // What the state holds of an earlier run of this task (read before
        // this run records its own intent).
        let prior: Receipt = crate::state::get()
            .and_then(|st| st.inventory().ok())
            .and_then(|inv| {
                inv.installs()
                    .into_iter()
                    .find(|o| o.name.as_str() == ctx.id.as_str())
            })
            .and_then(|o| o.holds)
            .and_then(|h| serde_json::from_value::<Receipt>(h).ok())
            .unwrap_or_default();
        // Record in the state's inventory what this install holds, in phase.
        let record = |phase, holds: &Receipt| match inventory {
            Some(store) => store
                .set_install(
                    &ctx.id,
                    &self.target.name,
                    phase,
                    serde_json::to_value(holds).expect("receipts serialize"),
                )
                .map_err(|e| TaskError::new(e.to_string())),
            None => Ok(()),
        };
        if inventory.is_some() {
            record(crate::state::Phase::Creating, &self.intent(&ctx, &prior))?;
        }
        // Gateway API CRDs come before the charts that need them.
        for w in &self.waits {
            if let Wait::GatewayApiCrds { source } = w {
                let client = access.client().await?;
                install_gateway_api_crds(&client, source).await?;
            }
        }
        for (r, digest, revision) in install_charts(&ctx, &access, &self.charts).await? {
            receipt.revisions.insert(release_key(&r), revision);
            receipt.releases.push((r, digest));
        }
        for w in &self.waits {
            match w {
                Wait::Deployment { namespace, name } => {
                    let client = access.client().await?;
                    k8s::wait_deployment(&client, namespace, name, wait_timeout()).await?;
                }
                Wait::DaemonSet { namespace, name } => {
                    let client = access.client().await?;
                    k8s::wait_daemonset(&client, namespace, name, wait_timeout()).await?;
                }
                Wait::Crds { names } => {
                    let client = access.client().await?;
                    let refs: Vec<k8s::ObjRef> = names
                        .iter()
                        .map(|n| k8s::ObjRef {
                            api_version: "apiextensions.k8s.io/v1".into(),
                            kind: "CustomResourceDefinition".into(),
                            namespace: None,
                            name: n.clone(),
                            hash: String::new(),
                        })
                        .collect();
                    k8s::wait_crds_established(&client, &refs, wait_timeout()).await?;
                }
                _ => {}
            }
        }
        if !self.manifests.is_empty() {
            let texts: Vec<String> = self
                .manifests
                .iter()
                .map(|m| m.read(&ctx))
                .collect::<Result<_, _>>()?;
            let client = access.client().await?;
            let before = Receipt::read(&ctx).ok();
            // What mesh applied before: the last receipt, and what the
            // state says an earlier run set out to apply (a killed run
            // applied it without a receipt).
            let known = |o: &ObjRef| {
                prior.objects.iter().any(|x| same(x, o))
                    || before
                        .as_ref()
                        .is_some_and(|b| b.objects.iter().any(|x| same(x, o)))
            };
            for t in &texts {
                // An object mesh never applied that exists already is not
                // mesh's: it is adopted, never deleted.
                receipt
                    .adopted
                    .extend(k8s::existing(&client, t, known).await?);
                receipt.objects.extend(k8s::apply(&client, t).await?);
            }
            let earlier = before.iter().chain(std::iter::once(&prior));
            for b in earlier {
                for a in &b.adopted {
                    if receipt.objects.iter().any(|o| same(o, a))
                        && !receipt.adopted.iter().any(|x| same(x, a))
                    {
                        receipt.adopted.push(a.clone());
                    }
                }
            }
            // Prune: what the last run applied and this one no longer does.
            if let Ok(old) = Receipt::read(&ctx) {
                let key = |o: &ObjRef| {
                    (
                        o.api_version.clone(),
                        o.kind.clone(),
                        o.namespace.clone(),
                        o.name.clone(),
                    )
                };
                let now: std::collections::HashSet<_> = receipt.objects.iter().map(key).collect();
                let gone: Vec<ObjRef> = old
                    .objects
                    .into_iter()
                    .filter(|o| !now.contains(&key(o)))
                    .filter(|o| !(self.keep_namespaces && o.kind == "Namespace"))
                    .filter(|o| !old.adopted.iter().any(|a| same(a, o)))
                    .collect();
                k8s::delete(&client, &gone).await?;
            }
        }
        for w in &self.waits {
            match w {
                Wait::AppliedDeployments => {
                    let client = access.client().await?;
                    for o in receipt.objects.iter().filter(|o| o.kind == "Deployment") {
                        let ns = o.namespace.as_deref().unwrap_or("default");
                        k8s::wait_deployment(&client, ns, &o.name, wait_timeout()).await?;
                    }
                }
                Wait::LbAddress {
                    namespace,
                    name,
                    expect,
                } => {
                    let client = access.client().await?;
                    let ip = k8s::wait_lb_ip(&client, namespace, name, wait_timeout()).await?;
                    check_address(&ip, expect.resolve(&ctx)?.as_deref(), namespace, name)?;
                    receipt.address = Some(ip);
                }
                Wait::GatewayAddress {
                    namespace,
                    name,
                    expect,
                } => {
                    let client = access.client().await?;
                    let want = expect.resolve(&ctx)?;
                    let ip = k8s::wait_gateway_address(
                        &client,
                        namespace,
                        name,
                        want.as_deref(),
                        wait_timeout(),
                    )
                    .await?;
                    check_address(&ip, want.as_deref(), namespace, name)?;
                    receipt.address = Some(ip);
                }
                Wait::RestartOnRerun { namespace, name } if rerun => {
                    let client = access.client().await?;
                    k8s::restart_deployment(&client, namespace, name, wait_timeout()).await?;
                }
                Wait::RestartWorkloadsOnRerun { namespaces } if rerun => {
                    let client = access.client().await?;
                    let istio = |kind: &str, name: &str| match kind {
                        "Deployment" => name != "istiod",
                        _ => name == "ztunnel",
                    };
                    k8s::restart_workloads(&client, "istio-system", istio, wait_timeout()).await?;
                    for ns in namespaces.iter().filter(|n| n.as_str() != "istio-system") {
                        k8s::restart_workloads(&client, ns, |_, _| true, wait_timeout()).await?;
                    }
                }
                _ => {}
            }
        }
        record(crate::state::Phase::Created, &receipt)?;
        Ok(receipt.files())
    }

    /// What this step is about to leave in its cluster, and what it left
    /// before: its charts' releases and its manifests' objects, as written,
    /// with the previous receipt's (from the cache, else the state's
    /// `prior`), keeping what was adopted. A manifest that cannot be read or
    /// parsed adds nothing here (applying it fails the task anyway).
    fn intent(&self, ctx: &Ctx, prior: &Receipt) -> Receipt {
        let mut r = Receipt::read(ctx).unwrap_or_else(|_| prior.clone());
        for a in &prior.adopted {
            if !r.adopted.iter().any(|x| same(x, a)) {
                r.adopted.push(a.clone());
            }
        }
        for c in &self.charts {
            if !r
                .releases
                .iter()
                .any(|(x, _)| release_key(x) == release_key(&c.release))
            {
                r.releases.push((c.release.clone(), Digest::of_bytes(b"")));
            }
        }
        for m in &self.manifests {
            let Ok(text) = m.read(ctx) else { continue };
            let Ok(docs) = crate::yaml::yaml_docs(&text) else {
                continue;
            };
            for d in docs {
                let v = &d.value;
                let (Some(api_version), Some(kind), Some(name)) = (
                    v["apiVersion"].as_str(),
                    v["kind"].as_str(),
                    v["metadata"]["name"].as_str(),
                ) else {
                    continue;
                };
                let o = ObjRef {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    namespace: v["metadata"]["namespace"].as_str().map(str::to_string),
                    name: name.into(),
                    hash: String::new(),
                };
                if !r.objects.iter().any(|x| {
                    (&x.api_version, &x.kind, &x.namespace, &x.name)
                        == (&o.api_version, &o.kind, &o.namespace, &o.name)
                }) {
                    r.objects.push(o);
                }
            }
        }
        r
    }
}

fn check_address(ip: &str, expect: Option<&str>, ns: &str, name: &str) -> Result<(), TaskError> {
    match expect {
        Some(e) if e != ip => Err(TaskError::tool(
            "kubernetes",
            format!(
                "{ns}/{name} got address {ip}, but mesh pinned {e} (remotes and the LB pool rely on it)"
            ),
        )),
        _ => Ok(()),
    }
}

/// Gateway API CRDs from `source` (a file, or an http(s) URL: see
/// [`super::istiod::gateway_api_source`]).
async fn install_gateway_api_crds(client: &k8s::Conn, source: &str) -> Result<(), TaskError> {
    let text = if source.starts_with("https://") || source.starts_with("http://") {
        crate::providers::http::fetch(source).await?
    } else {
        crate::cache::read_input_text(std::path::Path::new(source)).map_err(|e| {
            TaskError::new(format!("cannot read MESH_GATEWAY_API_CRDS {source}: {e}"))
        })?
    };
    let crds = k8s::apply(client, &text).await?;
    // Their kinds are served only once Established.
    k8s::wait_crds_established(client, &crds, wait_timeout()).await?;
    Ok(())
}

impl Action for Step {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        Box::pin(self.clone().go(ctx))
    }

    fn probe(&self, ctx: Ctx) -> Option<BoxFuture<Probe>> {
        let this = self.clone();
        Some(Box::pin(async move {
            let r = Receipt::read(&ctx).map_err(ProbeError::Drift)?;
            let access = cluster::access(&this.target, &ctx).map_err(unreachable)?;
            r.probe(&access).await?;
            // The gateway still has its address.
            if let Some(addr) = &r.address {
                for w in &this.waits {
                    if let Wait::LbAddress {
                        namespace, name, ..
                    } = w
                    {
                        let client = access.client().await.map_err(unreachable)?;
                        let ip = k8s::lb_ip(&client, namespace, name).await?;
                        if ip.as_deref() != Some(addr.as_str()) {
                            return Err(ProbeError::Drift(format!(
                                "Service {namespace}/{name} lost its address {addr}"
                            )));
                        }
                    }
                }
            }
            Ok(())
        }))
    }

    fn undo(&self, ctx: Ctx) -> Option<BoxFuture<Result<(), TaskError>>> {
        if !self.undo_in_place {
            return None;
        }
        let this = self.clone();
        Some(Box::pin(async move {
            let r = Receipt::read(&ctx).map_err(TaskError::new)?;
            let access = cluster::access(&this.target, &ctx)?;
            r.undo(&access).await?;
            if let Some(store) = crate::state::get() {
                store
                    .forget(crate::state::INSTALL, &ctx.id)
                    .map_err(|e| TaskError::new(e.to_string()))?;
            }
            Ok(())
        }))
    }
}
