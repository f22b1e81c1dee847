//! `plan.toml`: parsing and validation.
//!
//! The plan declares the mesh, not the steps. Loading happens in two passes:
//!
//! 1. serde + toml into `Raw*` types that keep a `toml::Spanned` around every
//!    value a later check may blame, with `deny_unknown_fields` everywhere so a
//!    typo is an error at its line and column, not a silent default;
//! 2. [`validate`] checks what serde cannot (CIDR syntax and overlaps, distinct
//!    networks, roles and topology, versions, files that must exist), collects
//!    every problem it finds instead of stopping at the first, and produces the
//!    validated [`Plan`], in which each value has its final type and default.
//!
//! Files the plan names (templates, app manifests, user manifests and values)
//! are read here, once, into [`Plan::files`]: the planner hashes exactly the
//! bytes the tasks will later use. A path is resolved beside the plan first,
//! then among the embedded defaults (`assets`), so the default plan works from
//! any directory.
//!
//! The validated types are `Serialize`: the planner hashes slices of them, so
//! reformatting the file or reordering its tables changes no key.

use crate::assets;
use crate::diag::{Diag, PlanError};
use crate::hash::Digest;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

mod raw;
mod validate;
pub mod words;

use raw::RawPlan;
use validate::Validator;

// ---------------------------------------------------------------- validated

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Sidecar,
    Ambient,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    MultiPrimary,
    PrimaryRemote,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Kind,
    Kubeconfig,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Cni {
    Cilium,
    Kindnet,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Primary,
    Remote,
}

#[derive(Serialize, Clone, Debug)]
pub struct Mesh {
    pub id: String,
    pub istio: String,
    pub mode: Mode,
    pub topology: Topology,
    /// The Docker `kind` network's subnet the offline render assumes (a live
    /// build reads the real one); LoadBalancer ranges are carved from it.
    pub kind_subnet: Ipv4Net,
    /// Addresses per cluster LoadBalancer range.
    pub lb_size: u32,
}

#[derive(Serialize, Clone, Debug)]
pub struct Pki {
    pub algorithm: Algorithm,
    pub root_days: u32,
    pub intermediate_days: u32,
    /// `root_cert` and `root_key`: a root CA the user brings.
    pub root: Option<OwnRoot>,
    /// `[pki.intermediates.<cluster>]`: intermediates the user brings.
    pub intermediates: std::collections::BTreeMap<String, OwnIntermediate>,
}

/// A cluster's intermediate CA from files, signed by the plan's root (or
/// through the chain file), checked when the plan was read. Its
/// certificate and chain are plan files; the key is only named and hashed.
#[derive(Serialize, Clone, Debug)]
pub struct OwnIntermediate {
    pub cert: String,
    /// The chain from it up to (not including) the root; absent: it alone.
    pub chain: Option<String>,
    pub key_path: std::path::PathBuf,
    pub key_digest: String,
}

/// A root CA from files (`[pki] root_cert`, `root_key`), checked when the
/// plan was read. The certificate is one of the plan's files; the key is
/// only named (and hashed): its bytes are read by `pki.root` when it runs.
#[derive(Serialize, Clone, Debug)]
pub struct OwnRoot {
    /// As the plan names it (a key of the plan's files).
    pub cert: String,
    /// Where the key is; none when every cluster brings its intermediate.
    pub key_path: Option<std::path::PathBuf>,
    /// The key file's digest (hex), for `pki.root`'s key.
    pub key_digest: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Versions {
    pub cilium: String,
    pub metallb: String,
    pub gateway_api: String,
    pub kind_node: String,
    /// The prometheus-community `prometheus` chart (`[addons] prometheus`).
    pub prometheus: String,
    /// The `kiali-server` chart (`[addons] kiali`).
    pub kiali: String,
}

/// `[addons]`: observability the plan asks for, in every cluster.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Addons {
    /// Prometheus, scraping the mesh's workloads and proxies.
    pub prometheus: bool,
    /// Kiali in the first primary, reading every cluster.
    pub kiali: bool,
}

#[derive(Serialize, Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub provider: Provider,
    pub context: Option<String>,
    pub kubeconfig: Option<String>,
    pub network: String,
    pub pod_subnet: Option<Ipv4Net>,
    pub service_subnet: Option<Ipv4Net>,
    pub workers: u32,
    pub cni: Cni,
    pub role: Role,
    /// For a remote: the primary whose istiod it uses.
    pub primary: Option<String>,
    /// For an existing cluster: the east-west gateway's address, when known.
    pub gateway_ip: Option<Ipv4Addr>,
    /// The locality of the cluster's nodes (`topology.kubernetes.io/region`
    /// and `zone`): mesh labels a kind cluster's nodes with it; an existing
    /// cluster's nodes must carry it already.
    pub region: Option<String>,
    pub zone: Option<String>,
    /// An Istio ingress gateway in this cluster (`istio-ingressgateway`).
    pub ingress: bool,
    /// For an existing cluster: its API server as the other clusters reach
    /// it (remote secrets), when its kubeconfig names a local address.
    pub api_server: Option<String>,
}

/// Which documents of an app manifest go to a cluster.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Selector {
    /// `"*"`: every document.
    All(String),
    /// Documents labelled `version: <v>` for these v, plus unlabelled ones.
    Versions(Vec<String>),
}

impl Selector {
    pub fn admits(&self, version: Option<&str>) -> bool {
        match (self, version) {
            (Selector::All(_), _) | (_, None) => true,
            (Selector::Versions(vs), Some(v)) => vs.iter().any(|x| x == v),
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct App {
    pub name: String,
    pub manifest: String,
    pub namespace: String,
    pub placement: BTreeMap<String, Selector>,
    /// The HTTP path `mesh verify` requests on this app's Service, if any.
    pub verify: Option<String>,
    /// Locality load balancing: a DestinationRule on every primary keeps
    /// the app's traffic in the caller's locality while it has endpoints
    /// there, and fails over to the nearest other when it has none.
    pub locality: bool,
    /// The app's Service (the one named as the app, else the first with a
    /// port) and its first port, from its manifest.
    pub service: Option<(String, u64)>,
}

/// `[verify]`: how `mesh verify` sends traffic.
#[derive(Serialize, Clone, Debug)]
pub struct Verify {
    /// The app whose pod sends the requests (it needs `sh` and `curl`).
    pub client: String,
    /// Requests per target app from each cluster.
    pub requests: u32,
}

#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum UserAction {
    Manifest {
        path: String,
    },
    Chart {
        chart: String,
        repo: Option<String>,
        version: Option<String>,
        release: String,
        namespace: String,
        values: Option<String>,
    },
    Command {
        argv: Vec<String>,
    },
}

#[derive(Serialize, Clone, Debug)]
pub struct UserTask {
    pub name: String,
    pub cluster: String,
    pub action: UserAction,
    /// Files and directories its command reads (a Kustomize overlay, say):
    /// plan files, hashed into its key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// Task ids this one runs after, with where each was written.
    #[serde(skip)]
    pub after: Vec<(String, Range<usize>)>,
}

/// Where a file's bytes came from.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Disk(PathBuf),
    /// A directory of manifests: its `.yaml` and `.yml` files, in name
    /// order, read as one multi-document text.
    Dir(PathBuf, Vec<PathBuf>),
    Embedded,
}

/// A file the plan's tasks read, loaded once.
#[derive(Clone, Debug)]
pub struct Source {
    pub origin: Origin,
    pub text: Arc<str>,
    pub digest: Digest,
}

/// A validated plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The file as the user named it, and its text (for later diagnostics).
    pub file: String,
    pub text: String,
    pub dir: PathBuf,
    pub mesh: Mesh,
    pub pki: Pki,
    pub versions: Versions,
    pub clusters: BTreeMap<String, Cluster>,
    pub apps: BTreeMap<String, App>,
    pub tasks: BTreeMap<String, UserTask>,
    pub verify: Verify,
    pub addons: Addons,
    /// Logical file name (`tasks/kind/cluster.yaml.j2`, an app's manifest
    /// path) → its bytes.
    pub files: BTreeMap<String, Source>,
}

impl Plan {
    pub fn file(&self, name: &str) -> &Source {
        self.files
            .get(name)
            .unwrap_or_else(|| panic!("file {name} was not loaded by validation"))
    }

    pub fn error(&self, diag: Diag) -> PlanError {
        PlanError::one(&self.file, &self.text, diag)
    }

    /// The primary a remote cluster uses.
    pub fn primary_of(&self, c: &Cluster) -> Option<&Cluster> {
        c.primary.as_ref().and_then(|p| self.clusters.get(p))
    }
}

pub const DEFAULT_KIND_SUBNET: &str = "172.18.0.0/16";
pub const MIN_ISTIO: (u64, u64) = (1, 24);
pub const MIN_ISTIO_AMBIENT_MULTINETWORK: (u64, u64) = (1, 27);

// ---------------------------------------------------------------- loading

/// Read and validate the plan at `path`; `file` is how messages name it.
pub fn load(path: &Path, file: &str) -> Result<Plan, PlanError> {
    crate::seen::look(path);
    let bytes = std::fs::read(path).map_err(|e| {
        let d = Diag::new(format!("cannot read the plan: {e}"));
        let d = if e.kind() == std::io::ErrorKind::NotFound {
            d.hint("run mesh in the directory holding plan.toml, or pass --plan FILE")
        } else {
            d
        };
        PlanError::one(file, "", d)
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            // Point at the first byte that is not UTF-8 (shown as U+FFFD).
            let at = e.utf8_error().valid_up_to();
            let bad = e.as_bytes()[at];
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let d = Diag::new("the plan is not UTF-8 text")
                .at(at..at + '\u{FFFD}'.len_utf8(), format!("byte 0x{bad:02x}"))
                .hint(
                    "TOML files are UTF-8: save plan.toml as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
                );
            return Err(PlanError::one(file, &lossy, d));
        }
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    parse(file, &text, &dir)
}

/// Parse and validate plan text; relative paths resolve against `dir`.
pub fn parse(file: &str, text: &str, dir: &Path) -> Result<Plan, PlanError> {
    let raw: RawPlan = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        let mut said = words::plain(first_line(&msg));
        if said.headline == "duplicate key"
            && let Some(key) = e.span().and_then(|s| text.get(s))
        {
            said.headline = format!("duplicate key `{key}`");
        }
        let mut d = Diag::new(said.headline);
        if let Some(span) = e.span() {
            d = d.at(span, said.label);
        }
        if let Some(h) = said.hint {
            d = d.hint(h);
        }
        PlanError::one(file, text, d)
    })?;
    let mut v = Validator::new(dir);
    let plan = v.validate(raw, file, text);
    if v.diags.is_empty() {
        Ok(plan)
    } else {
        Err(PlanError {
            file: file.to_string(),
            source: text.to_string(),
            diags: v.diags,
        })
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// What validation reads in an app's manifest, from one parse of it.
#[derive(Debug, Default)]
pub struct ManifestFacts {
    /// The `metadata.labels.version` values of its documents.
    pub versions: BTreeSet<String>,
    /// Its Services with a port: (name, first port), in document order.
    services: Vec<(String, u64)>,
}

impl ManifestFacts {
    /// Parse a multi-document manifest once.
    pub fn of(text: &str) -> Result<ManifestFacts, String> {
        let docs = crate::yaml::yaml_docs(text)?;
        Ok(ManifestFacts {
            versions: docs
                .iter()
                .filter_map(|d| crate::yaml::doc_version(&d.value))
                .collect(),
            services: docs
                .iter()
                .filter(|d| d.value["kind"] == "Service")
                .filter_map(|d| {
                    Some((
                        d.value.pointer("/metadata/name")?.as_str()?.to_string(),
                        d.value.pointer("/spec/ports/0/port")?.as_u64()?,
                    ))
                })
                .collect(),
        })
    }

    /// The app's Service: the one named as the app, else the first with a
    /// port: (name, its first port).
    pub fn service(&self, app: &str) -> Option<(String, u64)> {
        self.services
            .iter()
            .find(|(n, _)| n == app)
            .or(self.services.first())
            .cloned()
    }
}

/// The `metadata.labels.version` values found in a multi-document manifest.
pub fn manifest_versions(text: &str) -> Result<BTreeSet<String>, String> {
    ManifestFacts::of(text).map(|f| f.versions)
}
