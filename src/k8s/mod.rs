//! Kubernetes through kube-rs: connect, apply, probe, wait, delete.
//!
//! Owns every API call mesh makes. Manifests are applied document by
//! document with server-side apply (field manager `mesh`, forced), each
//! document's kind resolved to its resource with `discovery::pinned_kind`
//! (one request per group/version, cached for the call). Every object mesh
//! applies carries the annotation [`HASH_ANNOTATION`]: the digest of that
//! document as rendered. A drift probe reads the objects back and compares
//! that annotation, which is how "the object carries this content hash" is
//! checked without diffing specs. The hash is per document, not per bundle,
//! so two tasks that apply the same object (two apps sharing a namespace)
//! stamp it identically instead of fighting over it.
//!
//! Waits are watches (`kube::runtime::wait::await_condition`), bounded by a
//! timeout whose error names the object and what it was waiting for
//! (`wait`). Reads of particular objects tasks and verify need (helm's
//! release records, a Service's address, the reader token, exec in a pod)
//! are in `objects`: no code outside this module calls the API.

use crate::graph::{ProbeError, TaskError};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::runtime::wait::await_condition;
use kube::{Client, Config};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

mod forward;
mod objects;
mod observe;
mod wait;

pub use forward::{forward, running_pod};

pub use observe::{Endpoint, unanswered};

pub use objects::{
    ClusterView, apply_secret, deployment_replicas, exec_sh, istiod_clusters, lb_ip, pod_names,
    reader_token, release_record, release_state, restart_deployment, restart_workloads,
    scale_deployment,
};
pub use wait::{
    wait_crds_established, wait_daemonset, wait_deployment, wait_gateway_address, wait_lb_ip,
    wait_secret_key,
};

pub const FIELD_MANAGER: &str = "mesh";
pub const HASH_ANNOTATION: &str = "mesh.io/content-hash";

/// An object mesh applied, with the content hash it was stamped with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub hash: String,
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Why a Kubernetes call failed: what mesh was doing, and what the API
/// (or the client) said. Never holds an object's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    /// A request, or a kubeconfig or manifest, failed: `what` was being done.
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String },
    /// A wait ran out of time.
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    /// The API server stopped answering (connections refused or broken)
    /// for longer than the retry budget: Docker restarting, a laptop
    /// asleep. Nothing is deleted for this; a rerun resumes.
    /// `at` is where the calls went, when the client knew it.
    #[error("unreachable: {}", unreachable_words(.what, *.secs, .at.as_ref()))]
    Unreachable {
        what: String,
        secs: u64,
        at: Option<Endpoint>,
    },
}

fn unreachable_words(what: &str, secs: u64, at: Option<&Endpoint>) -> String {
    const WHY: &str = "is Docker running? did the machine sleep?";
    const THEN: &str = "nothing was deleted, rerun to resume";
    match at {
        Some(at) => format!("{at} does not answer: {WHY} ({what}, for {secs}s); {THEN}"),
        None => {
            format!("{what}: the API server has not answered for {secs}s ({WHY}); {THEN}")
        }
    }
}

impl From<KubeError> for TaskError {
    fn from(e: KubeError) -> TaskError {
        TaskError::tool("kubernetes", e.to_string())
    }
}

/// How long any one request other than a watch may take. The client has no
/// read timeout (a watch may be silent for minutes), so every other call
/// goes through [`bounded`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long transient failures of one call are retried, and how long a
/// wait goes on while the API server does not answer at all:
/// `MESH_RETRY_TIMEOUT` seconds, default 60 (a laptop waking, Docker
/// restarting).
pub fn retry_budget() -> Duration {
    static BUDGET: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        Duration::from_secs(
            std::env::var("MESH_RETRY_TIMEOUT")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(60),
        )
    })
}

/// How long a probe retries: a probe must decide quickly (a deleted kind
/// cluster refuses every connection, and kind is asked next).
pub const PROBE_RETRY_BUDGET: Duration = Duration::from_secs(3);

/// Is this error worth trying again? The API server asked us to (429),
/// was briefly unable (502, 503, 504), or answered for a webhook that is
/// not ready yet ("failed calling webhook", MetalLB's and Istio's before
/// their pods are up); or the connection broke. A 4xx other than 429 is an
/// answer, not a fault.
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            matches!(s.code, 429 | 502 | 503 | 504)
                || (s.code == 500 && s.message.contains("failed calling webhook"))
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// An idempotent request: each attempt bounded by [`REQUEST_TIMEOUT`] (no
/// answer in time is a service error, as a refused connection is),
/// transient failures retried with backoff (100 ms doubling to 2 s) for
/// [`retry_budget`]. Every call through here is idempotent: server-side
/// apply, get, list, delete, discovery.
pub async fn bounded<T, F, Fut>(request: F) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    bounded_for(retry_budget(), request).await
}

/// [`bounded`], retrying for `budget` (probes: [`PROBE_RETRY_BUDGET`]).
pub async fn bounded_for<T, F, Fut>(budget: Duration, request: F) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let give_up = tokio::time::Instant::now() + budget;
    let mut backoff = Duration::from_millis(100);
    loop {
        let r = match tokio::time::timeout(REQUEST_TIMEOUT, request()).await {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer in {}s", REQUEST_TIMEOUT.as_secs()),
            )))),
        };
        match r {
            Err(e) if transient(&e) && tokio::time::Instant::now() + backoff < give_up => {
                crate::events::retried(fault(&e));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            r => return r,
        }
    }
}

/// A transient fault in words, for the retry log: the status code and
/// reason, or the kind of connection failure. Never a body.
fn fault(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        kube::Error::HyperError(_) => "connection broken".into(),
        kube::Error::Service(s) => match s.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::TimedOut => "no answer in time".into(),
            _ => "cannot connect".into(),
        },
        _ => "error".into(),
    }
}

/// Did the connection itself fail (refused, reset, no answer), rather
/// than the API server answer?
pub fn connection_failed(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

/// A failed call, after its retries: unreachable when the API server never
/// answered, otherwise what it said.
fn call_error(what: impl std::fmt::Display, e: kube::Error) -> KubeError {
    if connection_failed(&e) {
        KubeError::Unreachable {
            what: what.to_string(),
            secs: retry_budget().as_secs(),
            at: observe::unanswered(&e).cloned(),
        }
    } else {
        kerr(what, e)
    }
}

fn kerr(what: impl std::fmt::Display, e: impl std::fmt::Display) -> KubeError {
    KubeError::Failed {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// A client for one cluster, and where it goes. Derefs to the
/// [`Client`]; what resolves kinds ([`Resolver`]) shares one discovery
/// cache per cluster and server for the whole process, so that a build asks
/// each group-version once per cluster, not once per task.
#[derive(Clone)]
pub struct Conn {
    client: Client,
    at: Endpoint,
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

type Found = (ApiResource, ApiCapabilities);

/// A group-version's resources, fetched once however many ask at once.
type Cell = std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<Vec<Found>>>>;

/// The resources of each group-version asked about so far, by cluster and
/// server. A kind missing from a cached list (a CRD established since) has
/// its list fetched again.
static DISCOVERED: std::sync::Mutex<Option<HashMap<(Endpoint, String), Cell>>> =
    std::sync::Mutex::new(None);

/// Forget every group-version fetched, list made and client connected so
/// far: a new build starts from what the API servers say now (`build
/// --watch` builds many times in one process, and a cluster may have been
/// recreated in between), and a new runtime with clients of its own (a
/// client's connections die with the runtime that made them).
pub fn forget_discovery() {
    *CONNECTED.lock().unwrap_or_else(|p| p.into_inner()) = None;
    *DISCOVERED.lock().unwrap_or_else(|p| p.into_inner()) = None;
    *LISTED.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// What one list said: each object's metadata.
type Listed = std::sync::Arc<Vec<kube::api::ObjectMeta>>;
type ListCell = std::sync::Arc<tokio::sync::OnceCell<Listed>>;

/// The lists probes made, by cluster and resource URL (with its namespace
/// and label selector), since the world last moved
/// ([`crate::events::world_epoch`]): every probe of a no-op that asks about
/// a kind of object in a namespace shares one round trip, however many
/// tasks own such objects (a primary's remote secrets, the releases helm
/// keeps in `istio-system`), and a probe after a task ran lists afresh.
/// Metadata only: what a probe compares is there, and a release Secret's
/// body (a whole chart's manifest) never crosses the wire.
static LISTED: std::sync::Mutex<Option<Lists>> = std::sync::Mutex::new(None);

/// The epoch the lists were made at, and the lists by cluster and URL.
type Lists = (u64, HashMap<(Endpoint, String), ListCell>);

fn list_cell(key: (Endpoint, String)) -> ListCell {
    let epoch = crate::events::world_epoch();
    let mut m = LISTED.lock().unwrap_or_else(|p| p.into_inner());
    let (at, map) = m.get_or_insert_with(|| (epoch, HashMap::new()));
    if *at != epoch {
        *at = epoch;
        map.clear();
    }
    map.entry(key).or_default().clone()
}

/// The metadata of what `api` lists with `labels` (may be empty), listed
/// once for every probe that asks at this epoch.
async fn listed<K>(conn: &Conn, api: &Api<K>, labels: &str) -> Result<Listed, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let url = format!("{}?labelSelector={labels}", api.resource_url());
    let cell = list_cell((conn.at.clone(), url));
    let lp = match labels {
        "" => kube::api::ListParams::default(),
        l => kube::api::ListParams::default().labels(l),
    };
    cell.get_or_try_init(|| async {
        let list = bounded_for(PROBE_RETRY_BUDGET, || api.list_metadata(&lp)).await?;
        Ok(std::sync::Arc::new(
            list.items.into_iter().map(|o| o.metadata).collect(),
        ))
    })
    .await
    .cloned()
}

/// The cell for a group-version, or (`stale` given) a new one in place of
/// that stale one.
fn cell(key: &(Endpoint, String), stale: Option<&Cell>) -> Cell {
    let mut map = DISCOVERED.lock().unwrap_or_else(|p| p.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    match (map.get(key), stale) {
        (Some(c), Some(s)) if std::sync::Arc::ptr_eq(c, s) => {}
        (Some(c), _) => return c.clone(),
        (None, _) => {}
    }
    let c = Cell::default();
    map.insert(key.clone(), c.clone());
    c
}

/// The clients made so far, by what they were made from (a digest of the
/// kubeconfig text, the context and the cluster's name): every task of a
/// build that talks to a cluster shares one client, so its connections (and
/// their TLS handshakes, a millisecond or more of CPU each) are pooled and
/// reused instead of made again per task. A client's connections live on
/// the runtime that made them, so [`forget_discovery`], called whenever a
/// runtime is made, forgets these too.
static CONNECTED: std::sync::Mutex<Option<HashMap<crate::hash::Digest, Conn>>> =
    std::sync::Mutex::new(None);

/// A client for cluster `cluster` (its name in the plan), from kubeconfig
/// text and an optional context: the one made before from the same text,
/// context and name, if any (`CONNECTED`). Its calls are shown with `-v`,
/// and a call that goes unanswered names the cluster and the server
/// (`observe`).
pub async fn connect(
    kubeconfig: &str,
    context: Option<&str>,
    cluster: &str,
) -> Result<Conn, KubeError> {
    let key = {
        let mut h = blake3::Hasher::new();
        for part in [kubeconfig, context.unwrap_or("\0none"), cluster] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        crate::hash::Digest(*h.finalize().as_bytes())
    };
    let made = |m: &Option<HashMap<_, Conn>>| m.as_ref().and_then(|m| m.get(&key)).cloned();
    if let Some(c) = made(&CONNECTED.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(c);
    }
    let conn = make_conn(kubeconfig, context, cluster).await?;
    let mut m = CONNECTED.lock().unwrap_or_else(|p| p.into_inner());
    // Another task may have made one meanwhile: keep the first, so that all
    // share one pool.
    if let Some(c) = made(&m) {
        return Ok(c);
    }
    m.get_or_insert_with(HashMap::new).insert(key, conn.clone());
    Ok(conn)
}

async fn make_conn(
    kubeconfig: &str,
    context: Option<&str>,
    cluster: &str,
) -> Result<Conn, KubeError> {
    let kc = Kubeconfig::from_yaml(kubeconfig).map_err(|e| kerr("bad kubeconfig", e))?;
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| kerr("bad kubeconfig", e))?;
    config.connect_timeout = Some(Duration::from_secs(10));
    // No read timeout, as kube leaves it: a watch may be silent for longer
    // than any (an API server sends bookmarks about once a minute). Every
    // wait is bounded by its own deadline instead (`wait`).
    config.read_timeout = None;
    // No silent retry with backoff (kube's default waits up to minutes on a
    // 503): every call here is idempotent and bounded by its task's own
    // timeout, and a failed task is retried by the next build.
    config.default_retry = false;
    let at = Endpoint {
        cluster: cluster.into(),
        server: config.cluster_url.to_string().into(),
    };
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| kerr("cannot build a client", e))?;
    Ok(Conn {
        client: builder.with_layer(&observe::Observe(at.clone())).build(),
        at,
    })
}

/// The API server's address in a kubeconfig (for the given context).
pub fn server_and_ca(
    kubeconfig: &str,
    context: Option<&str>,
) -> Result<(String, Option<String>), KubeError> {
    let kc = Kubeconfig::from_yaml(kubeconfig).map_err(|e| kerr("bad kubeconfig", e))?;
    let ctx_name = context.map(str::to_string).or(kc.current_context.clone());
    let ctx = kc
        .contexts
        .iter()
        .find(|c| Some(&c.name) == ctx_name.as_ref())
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| {
            let what = match &ctx_name {
                Some(c) => format!("no context \"{c}\""),
                None => "no current context".to_string(),
            };
            kerr("kubeconfig", what)
        })?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| kerr("kubeconfig", format!("no cluster {}", ctx.cluster)))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| kerr("kubeconfig", "cluster has no server"))?;
    Ok((server, cluster.certificate_authority_data.clone()))
}

/// Resolves kinds to resources, through the process's discovery cache of
/// its cluster.
pub struct Resolver {
    conn: Conn,
    /// How long discovery retries transient faults.
    retry: Duration,
}

impl Resolver {
    pub fn new(conn: Conn) -> Resolver {
        Resolver {
            conn,
            retry: retry_budget(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.conn.client
    }

    /// The dynamic API for an object (namespaced or cluster-scoped).
    pub async fn api(&mut self, r: &ObjRef) -> Result<Api<DynamicObject>, KubeError> {
        self.resolve(r)
            .await
            .map_err(|e| call_error(format!("no resource for {} {}", r.api_version, r.kind), e))
    }

    async fn resolve(&mut self, r: &ObjRef) -> Result<Api<DynamicObject>, kube::Error> {
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        let gv = kube::core::GroupVersion::gv(group, version);
        let key = (self.conn.at.clone(), r.api_version.clone());
        let client = &self.conn.client;
        let fetch = || async {
            let g = bounded_for(self.retry, || kube::discovery::pinned_group(client, &gv)).await?;
            Ok::<_, kube::Error>(std::sync::Arc::new(g.versioned_resources(version)))
        };
        let find = |list: &[Found]| list.iter().find(|(ar, _)| ar.kind == r.kind).cloned();
        let mut c = cell(&key, None);
        let mut found = find(c.get_or_try_init(fetch).await?);
        if found.is_none() {
            // Not in the list as it was: perhaps served since.
            c = cell(&key, Some(&c));
            found = find(c.get_or_try_init(fetch).await?);
        }
        let (ar, caps) = found.ok_or_else(|| {
            kube::Error::Discovery(kube::error::DiscoveryError::MissingKind(r.kind.clone()))
        })?;
        let client = self.conn.client.clone();
        Ok(match caps.scope {
            Scope::Namespaced => {
                Api::namespaced_with(client, r.namespace.as_deref().unwrap_or("default"), &ar)
            }
            Scope::Cluster => Api::all_with(client, &ar),
        })
    }
}

/// The documents of a manifest as objects, with their references.
pub fn parse_objects(yaml: &str) -> Result<Vec<(ObjRef, DynamicObject)>, KubeError> {
    let docs = crate::yaml::yaml_docs(yaml).map_err(|e| kerr("manifest", e))?;
    docs.into_iter()
        .map(|d| {
            let obj: DynamicObject =
                serde_json::from_value(d.value).map_err(|e| kerr("manifest document", e))?;
            let tm = obj
                .types
                .clone()
                .ok_or_else(|| kerr("manifest document", "no apiVersion/kind"))?;
            let name =
                obj.metadata.name.clone().ok_or_else(|| {
                    kerr("manifest document", format!("a {} has no name", tm.kind))
                })?;
            Ok((
                ObjRef {
                    api_version: tm.api_version,
                    kind: tm.kind,
                    namespace: obj.metadata.namespace.clone(),
                    name,
                    hash: crate::hash::digest_of("mesh.object.v1", &obj).hex()[..32].to_string(),
                },
                obj,
            ))
        })
        .collect()
}

/// The objects of `yaml` that `skip` does not exclude and that already
/// exist (one GET each): before mesh first applies an object, whether it
/// is someone else's. A kind the server does not serve yet has none.
pub async fn existing(
    client: &Conn,
    yaml: &str,
    skip: impl Fn(&ObjRef) -> bool,
) -> Result<Vec<ObjRef>, KubeError> {
    let mut res = Resolver::new(client.clone());
    let mut out = Vec::new();
    for (r, _) in parse_objects(yaml)? {
        if skip(&r) {
            continue;
        }
        let Ok(api) = res.resolve(&r).await else {
            continue;
        };
        match bounded(|| api.get_opt(&r.name)).await {
            Ok(Some(_)) => out.push(r),
            Ok(None) => {}
            Err(e) => return Err(call_error(format!("cannot read {r}"), e)),
        }
    }
    Ok(out)
}

/// Server-side apply every document of `yaml`, stamping each with its hash.
pub async fn apply(client: &Conn, yaml: &str) -> Result<Vec<ObjRef>, KubeError> {
    let mut res = Resolver::new(client.clone());
    let mut refs = Vec::new();
    for (r, mut obj) in parse_objects(yaml)? {
        obj.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_ANNOTATION.into(), r.hash.clone());
        let api = res.api(&r).await?;
        let (pp, patch) = (
            PatchParams::apply(FIELD_MANAGER).force(),
            Patch::Apply(&obj),
        );
        bounded(|| api.patch(&r.name, &pp, &patch))
            .await
            .map_err(|e| call_error(format!("cannot apply {r}"), e))?;
        refs.push(r);
    }
    Ok(refs)
}

/// What a failed read during a probe means: the API said the thing is not
/// there (404, a kind no longer served) is drift; anything else (no
/// answer, a refused connection, a 5xx, a 403) means the world could not be
/// asked, and nothing may be concluded from it.
pub fn probe_error(what: &str, e: &kube::Error) -> ProbeError {
    match e {
        kube::Error::Api(s) if s.code == 404 => ProbeError::Drift(format!("{what} is gone")),
        kube::Error::Discovery(_) => ProbeError::Drift(format!("{what}: its kind is not served")),
        kube::Error::Api(s) => ProbeError::Unreachable(format!(
            "{what}: the API server answered {} {}",
            s.code, s.reason
        )),
        other => {
            ProbeError::Unreachable(format!("{what}: the API server does not answer ({other})"))
        }
    }
}

/// Do these objects exist and carry their hashes?
pub async fn probe(client: &Conn, refs: &[ObjRef]) -> Result<(), ProbeError> {
    let mut res = Resolver::new(client.clone());
    res.retry = PROBE_RETRY_BUDGET;
    for r in refs {
        let what = r.to_string();
        let api = res.resolve(r).await.map_err(|e| probe_error(&what, &e))?;
        // One list of the kind in the namespace, shared; where listing is
        // not allowed (a narrow role on an existing cluster), a get.
        let have = match listed(client, &api, "").await {
            Ok(l) => l
                .iter()
                .find(|m| m.name.as_deref() == Some(r.name.as_str()))
                .map(|m| {
                    m.annotations
                        .as_ref()
                        .and_then(|a| a.get(HASH_ANNOTATION).cloned())
                }),
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 405 => {
                match bounded_for(PROBE_RETRY_BUDGET, || api.get_opt(&r.name)).await {
                    Ok(o) => o.map(|o| {
                        o.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(HASH_ANNOTATION).cloned())
                    }),
                    Err(e) => return Err(probe_error(&what, &e)),
                }
            }
            Err(e) => return Err(probe_error(&what, &e)),
        };
        match have {
            Some(h) if h.as_deref() == Some(r.hash.as_str()) => {}
            Some(_) => return Err(ProbeError::Drift(format!("{r} was changed outside mesh"))),
            None => return Err(ProbeError::Drift(format!("{r} is gone"))),
        }
    }
    Ok(())
}

/// Delete objects (absent ones are fine), in reverse order.
pub async fn delete(client: &Conn, refs: &[ObjRef]) -> Result<(), KubeError> {
    let mut res = Resolver::new(client.clone());
    for r in refs.iter().rev() {
        let api = res.api(r).await?;
        let dp = DeleteParams::default();
        match bounded(|| api.delete(&r.name, &dp)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(call_error(format!("cannot delete {r}"), e)),
        }
    }
    Ok(())
}
