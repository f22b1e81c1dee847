//! The live tasks: what `mesh build` does to clusters.
//!
//! Each task is an [`Action`] whose output is a small receipt (`receipt.json`:
//! the objects it applied with their content hash, the Helm releases with a
//! digest of their values, the gateway address). Receipts hold no secrets,
//! and they are what dependents' keys see, so a task that reruns and
//! installs the same thing cuts off its dependents. `cluster:<c>` is the
//! exception: it outputs the cluster's two kubeconfigs, as secrets, because
//! a recreated cluster has new credentials and everything in it must be
//! reinstalled.
//!
//! What each task does follows DESIGN.md's Istio facts:
//!
//! - `cluster:<c>`: `kind create cluster` with the rendered config (an
//!   existing cluster of that name is deleted first: this task reruns only
//!   when the config changed or the cluster drifted), then both kubeconfigs;
//! - `net.discover`: the `kind` Docker network's subnet, read once;
//! - `cni:<c>`: Cilium with its Istio settings, or MetalLB for kindnet
//!   clusters (Helm, `--wait`);
//! - `lb:<c>`: the LoadBalancer pool and its L2 announcement / advertisement;
//! - `cacerts:<c>`: the labelled `istio-system` namespace, then `cacerts`;
//! - `istiod:<c>`: ambient: Gateway API CRDs first; then the charts base,
//!   istiod (and cni, ztunnel for ambient), and on a primary a watch until
//!   istiod is ready, so no Gateway is applied before its webhook answers;
//! - `gateway:<c>`: sidecar: the east-west gateway chart, its LoadBalancer
//!   address (checked against the pinned one), cross-network-gateway (and
//!   expose-istiod on a primary with remotes); ambient: the `istio-east-west`
//!   Gateway and its address;
//! - `remote-secret:<a>-><b>`: a token for `istio-reader-service-account` in
//!   `a`, a kubeconfig whose server is `a`'s internal address (never
//!   127.0.0.1), written as `istio-remote-secret-<a>` into `b`;
//! - `app:<x>:<c>`: the rendered app, then a watch until its Deployments are
//!   ready;
//! - `task:<name>`: a user's manifest, chart or command.
//!
//! Probes (drift) and undo (`mesh destroy`) sit beside each `run`.

use crate::graph::{Action, BoxFuture, Ctx, OutFile, TaskError};
use crate::hash::Digest;
use crate::k8s::{self, ObjRef};
use crate::plan::{Cni, Mode, Provider};
use crate::providers::{docker, helm, kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const RECEIPT: &str = "receipt.json";
pub const ISTIO_REPO: &str = "https://istio-release.storage.googleapis.com/charts";
pub const CILIUM_REPO: &str = "https://helm.cilium.io/";
pub const METALLB_REPO: &str = "https://metallb.github.io/metallb";

/// How long a wait may take (`MESH_WAIT_TIMEOUT` seconds, default 300).
pub fn wait_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("MESH_WAIT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    )
}

/// A cluster as live tasks reach it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub provider: Provider,
    pub context: Option<String>,
    pub kubeconfig: Option<String>,
}

/// Credentials for one cluster. Never printed.
pub struct Access {
    kubeconfig: String,
    context: Option<String>,
}

impl Access {
    pub async fn client(&self) -> Result<kube::Client, TaskError> {
        k8s::connect(&self.kubeconfig, self.context.as_deref()).await
    }

    /// The kubeconfig in a 0600 temp file, for tools.
    pub fn file(&self) -> Result<tempfile::NamedTempFile, TaskError> {
        let mut f = tempfile::Builder::new()
            .prefix("mesh-kubeconfig-")
            .tempfile()
            .map_err(|e| TaskError::new(format!("cannot write a temp kubeconfig: {e}")))?;
        f.write_all(self.kubeconfig.as_bytes())
            .map_err(|e| TaskError::new(format!("cannot write a temp kubeconfig: {e}")))?;
        Ok(f)
    }

    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    pub fn server_and_ca(&self) -> Result<(String, Option<String>), TaskError> {
        k8s::server_and_ca(&self.kubeconfig, self.context.as_deref())
    }
}

fn user_kubeconfig(path: Option<&str>) -> Result<String, TaskError> {
    let path = match path {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("KUBECONFIG") {
            Some(k) => std::env::split_paths(&k)
                .next()
                .ok_or_else(|| TaskError::new("KUBECONFIG is empty"))?,
            None => {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config")
            }
        },
    };
    std::fs::read_to_string(&path)
        .map_err(|e| TaskError::new(format!("cannot read kubeconfig {}: {e}", path.display())))
}

impl Target {
    /// The user's kubeconfig for an existing cluster.
    pub fn kubeconfig_text(&self) -> Result<String, TaskError> {
        user_kubeconfig(self.kubeconfig.as_deref())
    }

    /// Credentials as seen from this machine.
    pub fn access(&self, ctx: &Ctx) -> Result<Access, TaskError> {
        match self.provider {
            Provider::Kind => Ok(Access {
                kubeconfig: ctx.read_string(&format!("cluster:{}", self.name), "kubeconfig")?,
                context: None,
            }),
            Provider::Kubeconfig => Ok(Access {
                kubeconfig: user_kubeconfig(self.kubeconfig.as_deref())?,
                context: self.context.clone(),
            }),
        }
    }

    /// Credentials as seen from the other clusters (kind: the control-plane
    /// container's address).
    pub fn internal(&self, ctx: &Ctx) -> Result<Access, TaskError> {
        match self.provider {
            Provider::Kind => Ok(Access {
                kubeconfig: ctx
                    .read_string(&format!("cluster:{}", self.name), "kubeconfig-internal")?,
                context: None,
            }),
            Provider::Kubeconfig => self.access(ctx),
        }
    }
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
    /// The revision each release got from mesh's install: what the probe
    /// compares. Kept in a private file ([`STATE`]): a reinstall makes a new
    /// revision of the same thing, which must not rerun the dependents.
    #[serde(skip)]
    pub revisions: BTreeMap<String, u64>,
}

pub const STATE: &str = "state.json";

impl Receipt {
    fn files(&self) -> Vec<OutFile> {
        vec![
            OutFile::new(
                RECEIPT,
                serde_json::to_vec_pretty(self).expect("receipts serialize"),
            ),
            OutFile::new(
                STATE,
                serde_json::to_vec(&self.revisions).expect("revisions serialize"),
            )
            .private(),
        ]
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
    async fn probe(&self, access: &Access) -> Result<(), String> {
        if !self.objects.is_empty() {
            let client = access.client().await.map_err(|e| e.to_string())?;
            k8s::probe(&client, &self.objects).await?;
        }
        if !self.releases.is_empty() {
            let client = access.client().await.map_err(|e| e.to_string())?;
            for (r, _) in &self.releases {
                let revision = self.revisions.get(&release_key(r)).copied().unwrap_or(0);
                let revision = &revision;
                match release_state(&client, r).await? {
                    None => {
                        return Err(format!(
                            "release {}/{} is not installed",
                            r.namespace, r.name
                        ));
                    }
                    Some((_, status)) if status != "deployed" => {
                        return Err(format!("release {}/{} is {status}", r.namespace, r.name));
                    }
                    Some((rev, _)) if rev != *revision => {
                        return Err(format!(
                            "release {}/{} is at revision {rev}, mesh installed {revision}",
                            r.namespace, r.name
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    async fn undo(&self, access: &Access) -> Result<(), TaskError> {
        if !self.objects.is_empty() {
            let client = access.client().await?;
            k8s::delete(&client, &self.objects).await?;
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

fn release_key(r: &helm::Release) -> String {
    format!("{}/{}", r.namespace, r.name)
}

/// Values YAML as JSON (what `helm get values -o json` prints back).
pub fn values_json(yaml: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap_or(serde_json::Value::Null);
    if v.is_null() {
        serde_json::json!({})
    } else {
        v
    }
}

fn content_hash(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex()[..32].to_string()
}

fn temp_file(text: &str, prefix: &str) -> Result<tempfile::NamedTempFile, TaskError> {
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

    fn read(&self, ctx: &Ctx) -> Result<String, TaskError> {
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
}

impl Expect {
    fn resolve(&self, ctx: &Ctx) -> Result<Option<String>, TaskError> {
        match self {
            Expect::Any => Ok(None),
            Expect::Ip(ip) => Ok(Some(ip.clone())),
            Expect::Alloc(c) => Ok(Some(
                crate::tasks::render::read_range(ctx, c)?
                    .gateway_ip
                    .to_string(),
            )),
        }
    }
}

/// A Helm step of a task: release + its values.
#[derive(Clone, Debug)]
pub struct Chart {
    pub release: helm::Release,
    pub values: Option<Src>,
}

async fn install_charts(
    ctx: &Ctx,
    access: &Access,
    charts: &[Chart],
) -> Result<Vec<(helm::Release, Digest, u64)>, TaskError> {
    let kc = access.file()?;
    let mut done = Vec::new();
    for c in charts {
        let (file, digest) = match &c.values {
            Some(src) => {
                let text = src.read(ctx)?;
                let digest = Digest::of_bytes(text.as_bytes());
                // Helm reads YAML, and JSON is YAML: hand it the values as
                // parsed (and so validated) here.
                let json =
                    serde_json::to_string_pretty(&values_json(&text)).expect("values serialize");
                (Some(temp_file(&json, "mesh-values-")?), digest)
            }
            None => (None, Digest::of_bytes(b"")),
        };
        helm::upgrade(
            &c.release,
            file.as_ref().map(|f| f.path()),
            kc.path(),
            access.context(),
        )
        .await?;
        let client = access.client().await?;
        let revision = match release_state(&client, &c.release)
            .await
            .map_err(TaskError::new)?
        {
            Some((rev, _)) => rev,
            None => {
                return Err(TaskError::tool(
                    "helm",
                    format!(
                        "installed {} but it keeps no release record",
                        c.release.name
                    ),
                ));
            }
        };
        done.push((c.release.clone(), digest, revision));
    }
    Ok(done)
}

/// A release's latest revision and its status, from the release Secrets
/// helm keeps in the release's namespace (`sh.helm.release.v1.<name>.v<n>`,
/// labelled owner=helm, name, status, version): the same state `helm
/// status` reads, without starting a process.
async fn release_state(
    client: &kube::Client,
    r: &helm::Release,
) -> Result<Option<(u64, String)>, String> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, ListParams};
    let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    let list = api
        .list(&ListParams::default().labels(&format!("owner=helm,name={}", r.name)))
        .await
        .map_err(|e| format!("cannot read release {}/{}: {e}", r.namespace, r.name))?;
    Ok(list
        .items
        .iter()
        .filter_map(|s| {
            let l = s.metadata.labels.as_ref()?;
            Some((
                l.get("version")?.parse::<u64>().ok()?,
                l.get("status").cloned().unwrap_or_default(),
            ))
        })
        .max_by_key(|(v, _)| *v))
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
}

/// Readiness mesh waits for after a step.
#[derive(Clone, Debug)]
pub enum Wait {
    Deployment {
        namespace: String,
        name: String,
    },
    /// Every Deployment among the applied manifests.
    AppliedDeployments,
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
        version: String,
    },
}

impl Step {
    async fn go(self, ctx: Ctx) -> Result<Vec<OutFile>, TaskError> {
        let access = self.target.access(&ctx)?;
        let mut receipt = Receipt::default();
        // Gateway API CRDs come before the charts that need them.
        for w in &self.waits {
            if let Wait::GatewayApiCrds { version } = w {
                let client = access.client().await?;
                install_gateway_api_crds(&client, version).await?;
            }
        }
        for (r, digest, revision) in install_charts(&ctx, &access, &self.charts).await? {
            receipt.revisions.insert(release_key(&r), revision);
            receipt.releases.push((r, digest));
        }
        for w in &self.waits {
            if let Wait::Deployment { namespace, name } = w {
                let client = access.client().await?;
                k8s::wait_deployment(&client, namespace, name, wait_timeout()).await?;
            }
        }
        if !self.manifests.is_empty() {
            let texts: Vec<String> = self
                .manifests
                .iter()
                .map(|m| m.read(&ctx))
                .collect::<Result<_, _>>()?;
            let client = access.client().await?;
            for t in &texts {
                receipt.objects.extend(k8s::apply(&client, t).await?);
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
                    let ip = wait_gateway_address(&client, namespace, name).await?;
                    check_address(&ip, expect.resolve(&ctx)?.as_deref(), namespace, name)?;
                    receipt.address = Some(ip);
                }
                _ => {}
            }
        }
        Ok(receipt.files())
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

async fn wait_gateway_address(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<String, TaskError> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let addr = |o: &DynamicObject| -> Option<String> {
        o.data
            .pointer("/status/addresses/0/value")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let cond = move |o: Option<&DynamicObject>| o.and_then(addr).is_some();
    let what = format!("Gateway {ns}/{name} to get an address");
    match tokio::time::timeout(
        wait_timeout(),
        kube::runtime::wait::await_condition(api, name, cond),
    )
    .await
    {
        Ok(Ok(Some(o))) => Ok(addr(&o).expect("condition holds")),
        Ok(Ok(None)) => Err(TaskError::tool(
            "kubernetes",
            format!("{what}: deleted while waiting"),
        )),
        Ok(Err(e)) => Err(TaskError::tool("kubernetes", format!("{what}: {e}"))),
        Err(_) => Err(TaskError::tool(
            "kubernetes",
            format!(
                "timed out after {}s waiting for {what}",
                wait_timeout().as_secs()
            ),
        )),
    }
}

/// Gateway API CRDs: from `MESH_GATEWAY_API_CRDS` (a file, or an http(s)
/// URL), else the release's standard-install.yaml.
async fn install_gateway_api_crds(client: &kube::Client, version: &str) -> Result<(), TaskError> {
    let source = std::env::var("MESH_GATEWAY_API_CRDS").unwrap_or_else(|_| {
        format!("https://github.com/kubernetes-sigs/gateway-api/releases/download/v{version}/standard-install.yaml")
    });
    let text = if source.starts_with("https://") || source.starts_with("http://") {
        fetch(&source).await?
    } else {
        std::fs::read_to_string(&source).map_err(|e| {
            TaskError::new(format!("cannot read MESH_GATEWAY_API_CRDS {source}: {e}"))
        })?
    };
    k8s::apply(client, &text).await?;
    Ok(())
}

/// GET a URL (following up to five redirects), as text.
pub async fn fetch(url: &str) -> Result<String, TaskError> {
    use http_body_util::{BodyExt, Empty};
    let err = |what: String| TaskError::tool("download", format!("{url}: {what}"));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| err(format!("no TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut at = url.to_string();
    for _ in 0..6 {
        let uri: hyper::Uri = at.parse().map_err(|e| err(format!("bad URL {at}: {e}")))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), client.get(uri.clone()))
            .await
            .map_err(|_| err("no answer in 60s".into()))?
            .map_err(|e| err(e.to_string()))?;
        if resp.status().is_redirection() {
            let loc = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| err("a redirect without a location".into()))?;
            // A relative location resolves against the current URL.
            at = if loc.starts_with('/') {
                match (uri.scheme_str(), uri.authority()) {
                    (Some(sc), Some(au)) => format!("{sc}://{au}{loc}"),
                    _ => return Err(err(format!("cannot resolve the redirect to {loc}"))),
                }
            } else {
                loc.to_string()
            };
            continue;
        }
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?
            .to_bytes();
        return String::from_utf8(body.to_vec()).map_err(|_| err("not UTF-8 text".into()));
    }
    Err(err("too many redirects".into()))
}

impl Action for Step {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        Box::pin(self.clone().go(ctx))
    }

    fn probe(&self, ctx: Ctx) -> Option<BoxFuture<Result<(), String>>> {
        let this = self.clone();
        Some(Box::pin(async move {
            let r = Receipt::read(&ctx)?;
            let access = this.target.access(&ctx).map_err(|e| e.to_string())?;
            r.probe(&access).await?;
            // The gateway still has its address.
            if let Some(addr) = &r.address {
                for w in &this.waits {
                    if let Wait::LbAddress {
                        namespace, name, ..
                    } = w
                    {
                        let client = access.client().await.map_err(|e| e.to_string())?;
                        let api: kube::Api<k8s_openapi::api::core::v1::Service> =
                            kube::Api::namespaced(client, namespace);
                        let svc = api.get_opt(name).await.map_err(|e| e.to_string())?;
                        let ip = svc.and_then(|s| {
                            s.status?
                                .load_balancer?
                                .ingress?
                                .into_iter()
                                .find_map(|i| i.ip)
                        });
                        if ip.as_deref() != Some(addr.as_str()) {
                            return Err(format!(
                                "Service {namespace}/{name} lost its address {addr}"
                            ));
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
            let access = this.target.access(&ctx)?;
            r.undo(&access).await
        }))
    }
}

/// `cluster:<c>` for kind clusters.
#[derive(Clone, Debug)]
pub struct KindCluster {
    pub name: String,
}

impl Action for KindCluster {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        let name = self.name.clone();
        Box::pin(async move {
            let config = ctx.read_string(&format!("render.kind:{name}"), "kind-cluster.yaml")?;
            let file = temp_file(&config, "mesh-kind-")?;
            if kind::clusters().await?.contains(&name) {
                kind::delete(&name).await?;
            }
            kind::create(&name, file.path()).await?;
            let external = kind::kubeconfig(&name, false).await?;
            let internal = kind::kubeconfig(&name, true).await?;
            Ok(vec![
                OutFile::new("kubeconfig", external).secret(),
                OutFile::new("kubeconfig-internal", internal).secret(),
            ])
        })
    }

    fn probe(&self, ctx: Ctx) -> Option<BoxFuture<Result<(), String>>> {
        let name = self.name.clone();
        Some(Box::pin(async move {
            let kc = ctx
                .read_string(&ctx.id, "kubeconfig")
                .map_err(|e| e.to_string())?;
            let client = k8s::connect(&kc, None).await.map_err(|e| e.to_string())?;
            client
                .apiserver_version()
                .await
                .map_err(|e| format!("kind cluster {name} does not answer (deleted?): {e}"))?;
            Ok(())
        }))
    }

    fn undo(&self, _ctx: Ctx) -> Option<BoxFuture<Result<(), TaskError>>> {
        let name = self.name.clone();
        Some(Box::pin(async move {
            if kind::clusters().await?.contains(&name) {
                kind::delete(&name).await?;
            }
            Ok(())
        }))
    }
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

/// `remote-secret:<from>-><to>`.
#[derive(Clone, Debug)]
pub struct RemoteSecret {
    pub from: Target,
    pub to: Target,
}

pub const READER_SA: &str = "istio-reader-service-account";
pub const READER_TOKEN_SECRET: &str = "istio-reader-service-account-istio-remote-secret-token";

impl RemoteSecret {
    fn secret_name(&self) -> String {
        format!("istio-remote-secret-{}", self.from.name)
    }

    async fn go(self, ctx: Ctx) -> Result<Vec<OutFile>, TaskError> {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        use kube::api::{Api, ObjectMeta, Patch, PatchParams};
        let from = self.from.access(&ctx)?;
        let (server, ca) = self.from.internal(&ctx)?.server_and_ca()?;
        let host = server
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split([':', '/'])
            .next()
            .unwrap_or("");
        if host == "127.0.0.1" || host == "localhost" || host == "::1" || host == "[::1]" {
            return Err(TaskError::new(format!(
                "cluster {}'s API server address {server} is not reachable from cluster {}; \
                 use its internal address (kind get kubeconfig --internal)",
                self.from.name, self.to.name
            )));
        }
        // A long-lived token for the reader service account.
        let from_client = from.client().await?;
        let secrets: Api<Secret> = Api::namespaced(from_client.clone(), "istio-system");
        let token_secret = Secret {
            metadata: ObjectMeta {
                name: Some(READER_TOKEN_SECRET.into()),
                namespace: Some("istio-system".into()),
                annotations: Some(
                    [(
                        "kubernetes.io/service-account.name".to_string(),
                        READER_SA.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("kubernetes.io/service-account-token".into()),
            ..Default::default()
        };
        secrets
            .patch(
                READER_TOKEN_SECRET,
                &PatchParams::apply(k8s::FIELD_MANAGER).force(),
                &Patch::Apply(&token_secret),
            )
            .await
            .map_err(|e| {
                TaskError::tool(
                    "kubernetes",
                    format!("cannot create the reader token in {}: {e}", self.from.name),
                )
            })?;
        let token = k8s::wait_secret_key(
            &from_client,
            "istio-system",
            READER_TOKEN_SECRET,
            "token",
            wait_timeout(),
        )
        .await?;
        let token = String::from_utf8(token)
            .map_err(|_| TaskError::new("the reader token is not UTF-8"))?;
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
                labels: Some([("istio/multiCluster".to_string(), "true".to_string())].into()),
                annotations: Some(
                    [
                        ("networking.istio.io/cluster".to_string(), name.clone()),
                        (k8s::HASH_ANNOTATION.to_string(), hash.clone()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([(name.clone(), ByteString(kubeconfig.into_bytes()))].into()),
            ..Default::default()
        };
        let to_client = self.to.access(&ctx)?.client().await?;
        let api: Api<Secret> = Api::namespaced(to_client, "istio-system");
        api.patch(
            &self.secret_name(),
            &PatchParams::apply(k8s::FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|e| {
            TaskError::tool(
                "kubernetes",
                format!("cannot write the remote secret into {}: {e}", self.to.name),
            )
        })?;
        let receipt = Receipt {
            objects: vec![ObjRef {
                api_version: "v1".into(),
                kind: "Secret".into(),
                namespace: Some("istio-system".into()),
                name: self.secret_name(),
                hash,
            }],
            ..Default::default()
        };
        Ok(receipt.files())
    }
}

impl Action for RemoteSecret {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        Box::pin(self.clone().go(ctx))
    }

    fn probe(&self, ctx: Ctx) -> Option<BoxFuture<Result<(), String>>> {
        let this = self.clone();
        Some(Box::pin(async move {
            let r = Receipt::read(&ctx)?;
            let access = this.to.access(&ctx).map_err(|e| e.to_string())?;
            r.probe(&access).await
        }))
    }

    fn undo(&self, ctx: Ctx) -> Option<BoxFuture<Result<(), TaskError>>> {
        if self.to.provider == Provider::Kind {
            return None;
        }
        let this = self.clone();
        Some(Box::pin(async move {
            let r = Receipt::read(&ctx).map_err(TaskError::new)?;
            r.undo(&this.to.access(&ctx)?).await
        }))
    }
}

/// `task:<name>` running a command, with KUBECONFIG set to its cluster.
#[derive(Clone, Debug)]
pub struct Command {
    pub target: Target,
    pub argv: Vec<String>,
    pub dir: PathBuf,
}

impl Action for Command {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        let this = self.clone();
        Box::pin(async move {
            let access = this.target.access(&ctx)?;
            let kc = access.file()?;
            let shown = this.argv.join(" ");
            let mut cmd = tokio::process::Command::new(&this.argv[0]);
            cmd.args(&this.argv[1..])
                .current_dir(&this.dir)
                .env("KUBECONFIG", kc.path())
                .env("MESH_CLUSTER", &this.target.name)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            if let Some(c) = access.context() {
                cmd.env("MESH_KUBE_CONTEXT", c);
            }
            let out = cmd.output().await.map_err(|e| {
                TaskError::tool(&this.argv[0], format!("cannot run `{shown}`: {e}"))
            })?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = err.lines().rev().take(5).collect();
                return Err(TaskError::tool(
                    &this.argv[0],
                    format!(
                        "`{shown}` failed ({}): {}",
                        out.status,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                ));
            }
            Ok(Receipt::default().files())
        })
    }
}

/// Build the charts of the istiod task for a cluster.
pub fn istio_charts(mode: Mode, istio: &str, render_id: &str) -> Vec<Chart> {
    let chart = |name: &str, chart: &str, values: &str| Chart {
        release: helm::Release {
            name: name.into(),
            namespace: "istio-system".into(),
            chart: chart.into(),
            repo: Some(ISTIO_REPO.into()),
            version: Some(istio.into()),
        },
        values: Some(Src::dep(render_id, values)),
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

/// The CNI chart of a kind cluster.
pub fn cni_chart(cni: Cni, version: &str, cluster: &str) -> Chart {
    match cni {
        Cni::Cilium => Chart {
            release: helm::Release {
                name: "cilium".into(),
                namespace: "kube-system".into(),
                chart: "cilium".into(),
                repo: Some(CILIUM_REPO.into()),
                version: Some(version.into()),
            },
            values: Some(Src::dep(
                format!("render.cni:{cluster}"),
                "cilium-values.yaml",
            )),
        },
        Cni::Kindnet => Chart {
            release: helm::Release {
                name: "metallb".into(),
                namespace: "metallb-system".into(),
                chart: "metallb".into(),
                repo: Some(METALLB_REPO.into()),
                version: Some(version.into()),
            },
            values: None,
        },
    }
}

/// Shared handle type for live actions.
pub type Live = Arc<dyn Action>;
