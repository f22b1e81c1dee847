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

// ---------------------------------------------------------------- raw (serde)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    mesh: Spanned<RawMesh>,
    #[serde(default)]
    pki: RawPki,
    #[serde(default)]
    versions: RawVersions,
    clusters: Spanned<BTreeMap<String, Spanned<RawCluster>>>,
    #[serde(default)]
    apps: BTreeMap<String, Spanned<RawApp>>,
    #[serde(default)]
    tasks: BTreeMap<String, Spanned<RawTask>>,
    #[serde(default)]
    templates: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    verify: RawVerify,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    id: Spanned<String>,
    istio: Spanned<String>,
    mode: Option<Spanned<Mode>>,
    topology: Option<Spanned<Topology>>,
    kind_subnet: Option<Spanned<String>>,
    lb_size: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPki {
    algorithm: Option<Spanned<Algorithm>>,
    root_days: Option<Spanned<u32>>,
    intermediate_days: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVersions {
    cilium: Option<Spanned<String>>,
    metallb: Option<Spanned<String>>,
    gateway_api: Option<Spanned<String>>,
    kind_node: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    provider: Option<Spanned<Provider>>,
    context: Option<Spanned<String>>,
    kubeconfig: Option<Spanned<String>>,
    network: Spanned<String>,
    pod_subnet: Option<Spanned<String>>,
    service_subnet: Option<Spanned<String>>,
    workers: Option<Spanned<u32>>,
    cni: Option<Spanned<Cni>>,
    role: Option<Spanned<Role>>,
    primary: Option<Spanned<String>>,
    gateway_ip: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    manifest: Spanned<String>,
    namespace: Option<Spanned<String>>,
    placement: Spanned<BTreeMap<String, Spanned<RawSelector>>>,
    verify: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    client: Option<Spanned<String>>,
    requests: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSelector {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    cluster: Spanned<String>,
    manifest: Option<Spanned<String>>,
    chart: Option<Spanned<String>>,
    repo: Option<Spanned<String>>,
    version: Option<Spanned<String>>,
    release: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
    values: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    after: Option<Spanned<Vec<Spanned<String>>>>,
}

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
}

#[derive(Serialize, Clone, Debug)]
pub struct Versions {
    pub cilium: String,
    pub metallb: String,
    pub gateway_api: String,
    pub kind_node: String,
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
    /// Task ids this one runs after, with where each was written.
    #[serde(skip)]
    pub after: Vec<(String, Range<usize>)>,
}

/// Where a file's bytes came from.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Disk(PathBuf),
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
    let text = std::fs::read_to_string(path).map_err(|e| {
        PlanError::one(
            file,
            "",
            Diag::new(format!("cannot read the plan: {e}"))
                .hint("run mesh in the directory holding plan.toml, or pass --plan FILE"),
        )
    })?;
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
        let mut headline = first_line(&msg).to_string();
        if headline == "duplicate key"
            && let Some(key) = e.span().and_then(|s| text.get(s))
        {
            headline = format!("duplicate key `{key}`");
        }
        let mut d = Diag::new(headline);
        if let Some(span) = e.span() {
            d = d.at(span, "here");
        }
        let hint = if msg.contains("unknown field") {
            Some("check the spelling; README.md lists every plan.toml key")
        } else if msg.contains("unknown variant") {
            Some("use one of the values listed above")
        } else if msg.contains("missing field") {
            Some("add the key; README.md lists the required ones")
        } else if msg.contains("duplicate key") {
            Some("each cluster, app and task name may appear once")
        } else {
            None
        };
        if let Some(h) = hint {
            d = d.hint(h);
        }
        PlanError::one(file, text, d)
    })?;
    let mut v = Validator {
        diags: Vec::new(),
        dir: dir.to_path_buf(),
        files: BTreeMap::new(),
    };
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

struct Validator {
    diags: Vec<Diag>,
    dir: PathBuf,
    files: BTreeMap<String, Source>,
}

/// A name Kubernetes and kind accept as a label value / DNS label.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn parse_version(s: &str) -> Option<semver::Version> {
    semver::Version::parse(s.strip_prefix('v').unwrap_or(s)).ok()
}

/// Overlap of two CIDR blocks (one contains the other's network address).
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Validator {
    fn err(&mut self, d: Diag) {
        self.diags.push(d);
    }

    /// Load a file the plan names: beside the plan, then embedded.
    fn load_file(&mut self, name: &str, span: Option<Range<usize>>, what: &str) -> bool {
        if self.files.contains_key(name) {
            return true;
        }
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                self.files.insert(
                    name.to_string(),
                    Source {
                        origin: Origin::Disk(PathBuf::from(name)),
                        digest: Digest::of_bytes(text.as_bytes()),
                        text: text.into(),
                    },
                );
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(text) = assets::embedded(name) {
                    self.files.insert(
                        name.to_string(),
                        Source {
                            origin: Origin::Embedded,
                            digest: Digest::of_bytes(text.as_bytes()),
                            text: text.into(),
                        },
                    );
                    return true;
                }
                let mut d = Diag::new(format!("missing {what}: {name}")).hint(format!(
                    "paths are relative to the plan's directory ({})",
                    self.dir.display()
                ));
                if let Some(s) = span {
                    d = d.at(s, "no such file");
                }
                self.err(d);
                false
            }
            Err(e) => {
                let mut d = Diag::new(format!("cannot read {what} {name}: {e}"));
                if let Some(s) = span {
                    d = d.at(s, "unreadable");
                }
                self.err(d);
                false
            }
        }
    }

    fn version(&mut self, v: &Option<Spanned<String>>, default: &str, what: &str) -> String {
        match v {
            None => default.to_string(),
            Some(s) => {
                if parse_version(s.get_ref()).is_none() {
                    self.err(
                        Diag::new(format!("bad {what} version {:?}", s.get_ref()))
                            .at(s.span(), "not a MAJOR.MINOR.PATCH version")
                            .hint(format!("for example {default:?}")),
                    );
                }
                s.get_ref().clone()
            }
        }
    }

    fn validate(&mut self, raw: RawPlan, file: &str, text: &str) -> Plan {
        let mesh_span = raw.mesh.span();
        let rm = raw.mesh.into_inner();

        // [mesh]
        if !is_dns_label(rm.id.get_ref()) {
            self.err(
                Diag::new(format!("bad mesh id {:?}", rm.id.get_ref()))
                    .at(rm.id.span(), "not a DNS label")
                    .hint("lowercase letters, digits and '-', at most 63 characters"),
            );
        }
        let istio = rm.istio.get_ref().clone();
        let istio_v = parse_version(&istio);
        match &istio_v {
            None => self.err(
                Diag::new(format!("bad Istio version {istio:?}"))
                    .at(rm.istio.span(), "not a MAJOR.MINOR.PATCH version")
                    .hint("for example \"1.28.0\""),
            ),
            Some(v) if (v.major, v.minor) < MIN_ISTIO => self.err(
                Diag::new(format!("Istio {istio} is too old for mesh"))
                    .at(rm.istio.span(), "unsupported")
                    .hint(format!(
                        "mesh installs Istio {}.{} or later (the Helm charts and multi-cluster values it uses)",
                        MIN_ISTIO.0, MIN_ISTIO.1
                    )),
            ),
            _ => {}
        }
        let mode = rm.mode.as_ref().map_or(Mode::Sidecar, |m| *m.get_ref());
        let topology = rm
            .topology
            .as_ref()
            .map_or(Topology::MultiPrimary, |t| *t.get_ref());
        let mode_span = rm.mode.as_ref().map_or(mesh_span.clone(), |m| m.span());
        let topo_span = rm.topology.as_ref().map_or(mesh_span.clone(), |t| t.span());
        if mode == Mode::Ambient && topology == Topology::PrimaryRemote {
            self.err(
                Diag::new("ambient mode with topology primary-remote is not supported")
                    .at(topo_span.clone(), "primary-remote")
                    .also(mode_span.clone(), "ambient")
                    .hint(
                        "Istio's ambient multi-cluster supports multi-primary, multi-network meshes only; \
                         use topology = \"multi-primary\" or mode = \"sidecar\"",
                    ),
            );
        }
        if mode == Mode::Ambient
            && let Some(v) = &istio_v
            && (v.major, v.minor) < MIN_ISTIO_AMBIENT_MULTINETWORK
        {
            self.err(
                Diag::new(format!(
                    "ambient multi-network needs Istio 1.27 or later, the plan says {istio}"
                ))
                .at(rm.istio.span(), "too old for ambient multi-cluster")
                .also(mode_span.clone(), "ambient"),
            );
        }
        let kind_subnet = match &rm.kind_subnet {
            None => DEFAULT_KIND_SUBNET.parse().expect("default subnet parses"),
            Some(s) => match s.get_ref().parse::<Ipv4Net>() {
                Ok(n) => n.trunc(),
                Err(_) => {
                    self.err(
                        Diag::new(format!("bad kind_subnet {:?}", s.get_ref()))
                            .at(s.span(), "not an IPv4 CIDR")
                            .hint("for example \"172.18.0.0/16\" (docker network inspect kind)"),
                    );
                    DEFAULT_KIND_SUBNET.parse().expect("default subnet parses")
                }
            },
        };
        let lb_size = rm.lb_size.as_ref().map_or(16, |s| *s.get_ref());
        if let Some(s) = &rm.lb_size
            && !(2..=1024).contains(s.get_ref())
        {
            self.err(
                Diag::new(format!("lb_size {} is out of range", s.get_ref()))
                    .at(s.span(), "must be 2..=1024")
                    .hint("the number of LoadBalancer addresses each cluster gets"),
            );
        }
        let mesh = Mesh {
            id: rm.id.get_ref().clone(),
            istio,
            mode,
            topology,
            kind_subnet,
            lb_size,
        };

        // [pki]
        let algorithm = raw
            .pki
            .algorithm
            .as_ref()
            .map_or(Algorithm::EcdsaP256, |a| *a.get_ref());
        let root_days = raw.pki.root_days.as_ref().map_or(3650, |d| *d.get_ref());
        let intermediate_days = raw
            .pki
            .intermediate_days
            .as_ref()
            .map_or(730, |d| *d.get_ref());
        for d in [&raw.pki.root_days, &raw.pki.intermediate_days]
            .into_iter()
            .flatten()
        {
            if *d.get_ref() == 0 {
                self.err(
                    Diag::new("a certificate must be valid for at least one day")
                        .at(d.span(), "0 days"),
                );
            }
        }
        if intermediate_days > root_days {
            let span = raw
                .pki
                .intermediate_days
                .as_ref()
                .map_or(0..0, |d| d.span());
            let mut d = Diag::new(format!(
                "intermediate_days ({intermediate_days}) outlives root_days ({root_days})"
            ))
            .hint("an intermediate cannot be valid after its root expires");
            if !span.is_empty() {
                d = d.at(span, "longer than the root");
            }
            self.err(d);
        }
        let pki = Pki {
            algorithm,
            root_days,
            intermediate_days,
        };

        // [versions]
        let rv = &raw.versions;
        let versions = Versions {
            cilium: self.version(&rv.cilium, "1.18.3", "cilium"),
            metallb: self.version(&rv.metallb, "0.15.2", "metallb"),
            gateway_api: self.version(&rv.gateway_api, "1.4.0", "gateway_api"),
            kind_node: self.version(&rv.kind_node, "v1.34.0", "kind_node"),
        };

        // [clusters.*]
        let clusters_span = raw.clusters.span();
        let raw_clusters = raw.clusters.into_inner();
        if raw_clusters.is_empty() {
            self.err(
                Diag::new("the plan declares no cluster")
                    .at(clusters_span, "empty")
                    .hint("add [clusters.<name>] tables"),
            );
        }
        let primaries: BTreeSet<String> = raw_clusters
            .iter()
            .filter(|(_, c)| {
                c.get_ref()
                    .role
                    .as_ref()
                    .is_none_or(|r| *r.get_ref() == Role::Primary)
            })
            .map(|(n, _)| n.clone())
            .collect();
        let mut clusters = BTreeMap::new();
        let mut networks: BTreeMap<String, (String, Range<usize>)> = BTreeMap::new();
        let mut nets: Vec<(String, &'static str, Ipv4Net, Range<usize>)> = Vec::new();
        for (name, rc) in &raw_clusters {
            let span = rc.span();
            let rc = rc.get_ref();
            if !is_dns_label(name) || name.len() > 40 {
                self.err(
                    Diag::new(format!("bad cluster name {name:?}"))
                        .at(span.clone(), "this cluster")
                        .hint("lowercase letters, digits and '-', at most 40 characters (kind names containers after it)"),
                );
            }
            let provider = rc
                .provider
                .as_ref()
                .map_or(Provider::Kind, |p| *p.get_ref());
            let network = rc.network.get_ref().clone();
            if !is_label_value(&network) {
                self.err(
                    Diag::new(format!("bad network name {network:?}"))
                        .at(rc.network.span(), "not a Kubernetes label value")
                        .hint("letters, digits, '-', '_' and '.', at most 63 characters"),
                );
            }
            if let Some((other, other_span)) = networks.get(&network) {
                self.err(
                    Diag::new(format!(
                        "clusters {other} and {name} share network {network:?}"
                    ))
                    .at(rc.network.span(), "used again here")
                    .also(other_span.clone(), "first used here")
                    .hint("mesh builds multi-network meshes: give each cluster its own network"),
                );
            } else {
                networks.insert(network.clone(), (name.clone(), rc.network.span()));
            }
            let mut subnet = |v: &Option<Spanned<String>>, key: &'static str| -> Option<Ipv4Net> {
                let s = v.as_ref()?;
                match s.get_ref().parse::<Ipv4Net>() {
                    Ok(n) if n.trunc() == n => {
                        nets.push((name.clone(), key, n, s.span()));
                        Some(n)
                    }
                    Ok(n) => {
                        self.diags.push(
                            Diag::new(format!("{key} {:?} has host bits set", s.get_ref()))
                                .at(s.span(), format!("did you mean {}?", n.trunc())),
                        );
                        None
                    }
                    Err(_) => {
                        self.diags.push(
                            Diag::new(format!("bad {key} {:?}", s.get_ref()))
                                .at(s.span(), "not an IPv4 CIDR")
                                .hint("for example \"10.11.0.0/16\""),
                        );
                        None
                    }
                }
            };
            let pod_subnet = subnet(&rc.pod_subnet, "pod_subnet");
            let service_subnet = subnet(&rc.service_subnet, "service_subnet");
            match provider {
                Provider::Kind => {
                    for (v, key) in [
                        (&rc.pod_subnet, "pod_subnet"),
                        (&rc.service_subnet, "service_subnet"),
                    ] {
                        if v.is_none() {
                            self.err(
                                Diag::new(format!("kind cluster {name} needs a {key}"))
                                    .at(span.clone(), format!("no {key}"))
                                    .hint("each kind cluster gets its own pod and service ranges, distinct from the others'"),
                            );
                        }
                    }
                    for (v, key) in [(&rc.context, "context"), (&rc.kubeconfig, "kubeconfig")] {
                        if let Some(s) = v {
                            self.err(
                                Diag::new(format!("{key} applies to provider = \"kubeconfig\" only"))
                                    .at(s.span(), "not used by kind clusters")
                                    .hint("set provider = \"kubeconfig\" to install into an existing cluster"),
                            );
                        }
                    }
                    if let Some(s) = &rc.gateway_ip {
                        self.err(
                            Diag::new("gateway_ip applies to provider = \"kubeconfig\" only")
                                .at(s.span(), "kind clusters get theirs from the LoadBalancer range mesh allocates"),
                        );
                    }
                }
                Provider::Kubeconfig => {
                    if rc.context.is_none() {
                        self.err(
                            Diag::new(format!("existing cluster {name} needs a context"))
                                .at(span.clone(), "no context")
                                .hint("context = \"<kubeconfig context name>\" (kubectl config get-contexts)"),
                        );
                    }
                    for (present, key) in [
                        (rc.workers.as_ref().map(|w| w.span()), "workers"),
                        (rc.cni.as_ref().map(|c| c.span()), "cni"),
                    ] {
                        if let Some(s) = present {
                            self.err(
                                Diag::new(format!("{key} applies to provider = \"kind\" only"))
                                    .at(s, "mesh does not create existing clusters"),
                            );
                        }
                    }
                }
            }
            let workers = rc.workers.as_ref().map_or(0, |w| *w.get_ref());
            if workers > 16 {
                self.err(
                    Diag::new(format!(
                        "{workers} workers is more than mesh will create on one host"
                    ))
                    .at(rc.workers.as_ref().unwrap().span(), "at most 16"),
                );
            }
            let role = rc.role.as_ref().map_or(Role::Primary, |r| *r.get_ref());
            let mut primary = None;
            if role == Role::Remote {
                let role_span = rc.role.as_ref().unwrap().span();
                if topology != Topology::PrimaryRemote {
                    self.err(
                        Diag::new(format!(
                            "cluster {name} is a remote but the topology is multi-primary"
                        ))
                        .at(role_span, "remote")
                        .also(topo_span.clone(), "topology")
                        .hint(
                            "set [mesh] topology = \"primary-remote\", or drop role = \"remote\"",
                        ),
                    );
                } else if let Some(p) = &rc.primary {
                    if primaries.contains(p.get_ref()) {
                        primary = Some(p.get_ref().clone());
                    } else {
                        self.err(
                            Diag::new(format!(
                                "remote {name} names primary {:?}, which is not a primary cluster",
                                p.get_ref()
                            ))
                            .at(p.span(), "not a primary")
                            .hint(format!("primaries: {}", list_or_none(&primaries))),
                        );
                    }
                } else if primaries.len() == 1 {
                    primary = primaries.iter().next().cloned();
                } else if primaries.is_empty() {
                    self.err(
                        Diag::new(format!("remote cluster {name} has no primary"))
                            .at(role_span, "remote")
                            .hint("a remote runs no istiod: declare a cluster with role = \"primary\" for it to use"),
                    );
                } else {
                    self.err(
                        Diag::new(format!(
                            "remote cluster {name} does not say which primary it uses"
                        ))
                        .at(role_span, "remote")
                        .hint(format!(
                            "add primary = \"<name>\"; primaries: {}",
                            list_or_none(&primaries)
                        )),
                    );
                }
            } else if let Some(p) = &rc.primary {
                self.err(
                    Diag::new("primary = … applies to role = \"remote\" clusters only")
                        .at(p.span(), "this cluster is a primary"),
                );
            }
            let gateway_ip =
                rc.gateway_ip
                    .as_ref()
                    .and_then(|s| match s.get_ref().parse::<Ipv4Addr>() {
                        Ok(ip) => Some(ip),
                        Err(_) => {
                            self.diags.push(
                                Diag::new(format!("bad gateway_ip {:?}", s.get_ref()))
                                    .at(s.span(), "not an IPv4 address"),
                            );
                            None
                        }
                    });
            clusters.insert(
                name.clone(),
                Cluster {
                    name: name.clone(),
                    provider,
                    context: rc.context.as_ref().map(|s| s.get_ref().clone()),
                    kubeconfig: rc.kubeconfig.as_ref().map(|s| s.get_ref().clone()),
                    network,
                    pod_subnet,
                    service_subnet,
                    workers,
                    cni: rc.cni.as_ref().map_or(Cni::Cilium, |c| *c.get_ref()),
                    role,
                    primary,
                    gateway_ip,
                },
            );
        }
        // A remote's install points at its primary's east-west gateway address.
        for c in clusters.values() {
            if let Some(p) = c.primary.as_ref().and_then(|p| clusters.get(p))
                && p.provider == Provider::Kubeconfig
                && p.gateway_ip.is_none()
            {
                self.err(
                    Diag::new(format!(
                        "remote {} needs the address of primary {}'s east-west gateway",
                        c.name, p.name
                    ))
                    .at(raw_clusters[&p.name].span(), "existing cluster, no gateway_ip")
                    .hint("set gateway_ip on the primary (its istio-eastwestgateway LoadBalancer address)"),
                );
            }
        }

        // CIDRs: no two blocks of the mesh may overlap, nor sit inside the
        // Docker network the nodes and LoadBalancer ranges live in.
        let mut reported = 0;
        for i in 0..nets.len() {
            let (ca, ka, na, sa) = &nets[i];
            for (cb, kb, nb, sb) in &nets[i + 1..] {
                if overlaps(na, nb) && reported < 20 {
                    reported += 1;
                    let whose = if ca == cb {
                        format!("{ca}'s own {ka}")
                    } else {
                        format!("clusters.{ca}.{ka}")
                    };
                    self.err(
                        Diag::new(format!("overlapping CIDRs: clusters.{cb}.{kb} {nb} overlaps {whose} {na}"))
                            .at(sb.clone(), "overlaps")
                            .also(sa.clone(), "this range")
                            .hint("give every cluster its own pod and service ranges; routes between clusters need them distinct"),
                    );
                }
            }
            if clusters
                .get(ca)
                .is_some_and(|c| c.provider == Provider::Kind)
                && overlaps(na, &kind_subnet)
            {
                self.err(
                    Diag::new(format!(
                        "clusters.{ca}.{ka} {na} overlaps the kind network {kind_subnet}"
                    ))
                    .at(sa.clone(), "overlaps the Docker network")
                    .hint("pick a range outside the kind Docker network (mesh.kind_subnet)"),
                );
            }
        }
        // LoadBalancer ranges are carved from the top half of kind_subnet.
        let kind_count = clusters
            .values()
            .filter(|c| c.provider == Provider::Kind)
            .count() as u64;
        let half = 1u64 << (31 - kind_subnet.prefix_len().min(31));
        if kind_count * lb_size as u64 > half {
            let span = rm
                .kind_subnet
                .as_ref()
                .map_or(mesh_span.clone(), |s| s.span());
            self.err(
                Diag::new(format!(
                    "kind_subnet {kind_subnet} is too small: {kind_count} clusters × lb_size {lb_size} addresses do not fit in its upper half ({half})"
                ))
                .at(span, "too small")
                .hint("use a larger kind network, or a smaller [mesh] lb_size"),
            );
        }

        // [templates]
        let known: BTreeSet<&str> = assets::template_names().collect();
        let mut overrides = BTreeMap::new();
        for (k, v) in &raw.templates {
            if !known.contains(k.as_str()) {
                self.err(
                    Diag::new(format!("unknown template {k:?}"))
                        .at(v.span(), "overrides nothing")
                        .hint(format!(
                            "templates: {}",
                            known.iter().copied().collect::<Vec<_>>().join(", ")
                        )),
                );
                continue;
            }
            overrides.insert(k.clone(), v);
        }
        for name in known {
            match overrides.get(name) {
                Some(path) => {
                    // The override is read under the template's logical name.
                    let p = path.get_ref().clone();
                    if self.load_file(&p, Some(path.span()), "template") {
                        let src = self.files.remove(&p).expect("just loaded");
                        self.files.insert(name.to_string(), src);
                    }
                }
                None => {
                    self.load_file(name, None, "template");
                }
            }
        }

        // [apps.*]
        let mut apps = BTreeMap::new();
        for (name, ra) in &raw.apps {
            let ra_span = ra.span();
            let ra = ra.get_ref();
            if !is_dns_label(name) {
                self.err(
                    Diag::new(format!("bad app name {name:?}"))
                        .at(ra_span.clone(), "not a DNS label"),
                );
            }
            let namespace = ra
                .namespace
                .as_ref()
                .map_or(name.clone(), |n| n.get_ref().clone());
            if let Some(n) = &ra.namespace
                && !is_dns_label(n.get_ref())
            {
                self.err(
                    Diag::new(format!("bad namespace {:?}", n.get_ref()))
                        .at(n.span(), "not a DNS label"),
                );
            }
            let manifest = ra.manifest.get_ref().clone();
            let versions = if self.load_file(&manifest, Some(ra.manifest.span()), "manifest") {
                match manifest_versions(&self.files[&manifest].text) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.err(
                            Diag::new(format!("manifest {manifest} is not valid YAML: {e}"))
                                .at(ra.manifest.span(), "this file"),
                        );
                        None
                    }
                }
            } else {
                None
            };
            let mut placement = BTreeMap::new();
            if ra.placement.get_ref().is_empty() {
                self.err(
                    Diag::new(format!("app {name} is placed nowhere"))
                        .at(ra.placement.span(), "empty placement")
                        .hint("placement = { east = \"v1\", west = \"v2\" }, or \"*\" for every document"),
                );
            }
            for (cluster, sel) in ra.placement.get_ref() {
                if !clusters.contains_key(cluster) {
                    self.err(
                        Diag::new(format!(
                            "app {name} is placed on unknown cluster {cluster:?}"
                        ))
                        .at(sel.span(), "no such cluster")
                        .hint(format!(
                            "clusters: {}",
                            clusters.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    );
                    continue;
                }
                let selector = match sel.get_ref() {
                    RawSelector::One(s) if s == "*" => Selector::All(s.clone()),
                    RawSelector::One(s) => Selector::Versions(vec![s.clone()]),
                    RawSelector::Many(v) => Selector::Versions(v.clone()),
                };
                if let (Selector::Versions(wanted), Some(have)) = (&selector, &versions) {
                    for w in wanted {
                        if !have.contains(w) {
                            self.err(
                                Diag::new(format!(
                                    "no document of {manifest} has label version={w}"
                                ))
                                .at(sel.span(), "unknown version")
                                .hint(format!(
                                    "versions in {manifest}: {}; \"*\" places every document",
                                    list_or_none(have)
                                )),
                            );
                        }
                    }
                }
                placement.insert(cluster.clone(), selector);
            }
            apps.insert(
                name.clone(),
                App {
                    name: name.clone(),
                    manifest,
                    namespace,
                    placement,
                    verify: ra.verify.as_ref().map(|v| v.get_ref().clone()),
                },
            );
        }

        // [verify]
        let client = raw
            .verify
            .client
            .as_ref()
            .map_or("curl".to_string(), |c| c.get_ref().clone());
        if let Some(c) = &raw.verify.client
            && !apps.contains_key(c.get_ref())
        {
            self.err(
                Diag::new(format!("verify client {:?} is not an app of this plan", c.get_ref()))
                    .at(c.span(), "no such app")
                    .hint("name the app whose pods send the requests (it needs sh and curl), e.g. \"curl\""),
            );
        }
        for (name, ra) in &raw.apps {
            if let Some(v) = &ra.get_ref().verify
                && !v.get_ref().starts_with('/')
            {
                self.err(
                    Diag::new(format!("app {name}: verify must be an HTTP path"))
                        .at(v.span(), "does not start with /")
                        .hint("for example verify = \"/hello\""),
                );
            }
        }
        let requests = raw.verify.requests.as_ref().map_or(20, |r| *r.get_ref());
        if let Some(r) = &raw.verify.requests
            && !(1..=1000).contains(r.get_ref())
        {
            self.err(Diag::new("verify requests must be 1..=1000").at(r.span(), "out of range"));
        }
        let verify = Verify { client, requests };

        // [tasks.*]
        let mut tasks = BTreeMap::new();
        for (name, rt) in &raw.tasks {
            let rt_span = rt.span();
            let rt = rt.get_ref();
            if !is_dns_label(name) {
                self.err(
                    Diag::new(format!("bad task name {name:?}"))
                        .at(rt_span.clone(), "not a DNS label"),
                );
            }
            if !clusters.contains_key(rt.cluster.get_ref()) {
                self.err(
                    Diag::new(format!(
                        "task {name} targets unknown cluster {:?}",
                        rt.cluster.get_ref()
                    ))
                    .at(rt.cluster.span(), "no such cluster"),
                );
            }
            let kinds = [
                rt.manifest.is_some(),
                rt.chart.is_some(),
                rt.command.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                self.err(
                    Diag::new(format!("task {name} must have exactly one of manifest, chart or command"))
                        .at(rt_span.clone(), "this task")
                        .hint("manifest = \"path.yaml\" | chart = \"repo/chart\" | command = [\"argv\", …]"),
                );
            }
            let action = if let Some(m) = &rt.manifest {
                self.load_file(m.get_ref(), Some(m.span()), "manifest");
                UserAction::Manifest {
                    path: m.get_ref().clone(),
                }
            } else if let Some(c) = &rt.chart {
                if let Some(vf) = &rt.values {
                    self.load_file(vf.get_ref(), Some(vf.span()), "values file");
                }
                UserAction::Chart {
                    chart: c.get_ref().clone(),
                    repo: rt.repo.as_ref().map(|s| s.get_ref().clone()),
                    version: rt.version.as_ref().map(|s| s.get_ref().clone()),
                    release: rt
                        .release
                        .as_ref()
                        .map_or(name.clone(), |s| s.get_ref().clone()),
                    namespace: rt
                        .namespace
                        .as_ref()
                        .map_or("default".into(), |s| s.get_ref().clone()),
                    values: rt.values.as_ref().map(|s| s.get_ref().clone()),
                }
            } else if let Some(c) = &rt.command {
                if c.get_ref().is_empty() || c.get_ref()[0].is_empty() {
                    self.err(
                        Diag::new(format!("task {name} has an empty command"))
                            .at(c.span(), "empty"),
                    );
                }
                UserAction::Command {
                    argv: c.get_ref().clone(),
                }
            } else {
                UserAction::Command { argv: Vec::new() }
            };
            let after = rt
                .after
                .as_ref()
                .map(|a| {
                    a.get_ref()
                        .iter()
                        .map(|s| (s.get_ref().clone(), s.span()))
                        .collect()
                })
                .unwrap_or_default();
            tasks.insert(
                name.clone(),
                UserTask {
                    name: name.clone(),
                    cluster: rt.cluster.get_ref().clone(),
                    action,
                    after,
                },
            );
        }

        Plan {
            file: file.to_string(),
            text: text.to_string(),
            dir: self.dir.clone(),
            mesh,
            pki,
            versions,
            clusters,
            apps,
            tasks,
            verify,
            files: std::mem::take(&mut self.files),
        }
    }
}

fn list_or_none(s: &BTreeSet<String>) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        s.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The `metadata.labels.version` values found in a multi-document manifest.
pub fn manifest_versions(text: &str) -> Result<BTreeSet<String>, String> {
    let docs = crate::yaml::yaml_docs(text)?;
    Ok(docs
        .iter()
        .filter_map(|d| crate::yaml::doc_version(&d.value))
        .collect())
}
