//! Validation: what serde cannot check, with every problem collected.
//!
//! [`Validator::validate`] walks the parsed plan table by table, one method
//! each (`[mesh]`, `[pki]`, `[versions]`, `[clusters.*]` and the checks
//! across clusters: networks, roles, CIDR overlaps, LoadBalancer capacity;
//! `[templates]`, `[apps.*]`, `[verify]`, `[tasks.*]`). A check that fails
//! pushes a [`Diag`] with the span of the value at fault and goes on, so one
//! run reports every error; the value then takes its default so later
//! checks still run. Files the plan names are loaded here, once.

use super::raw::*;
use super::*;

mod apps;
mod ca;
mod clusters;

/// What the cluster checks need from `[mesh]`.
pub(super) struct MeshCtx {
    topology: Topology,
    topo_span: Range<usize>,
    kind_subnet_span: Range<usize>,
}

/// A CIDR block a cluster declares: (cluster, key, block, span).
type Net = (String, &'static str, Ipv4Net, Range<usize>);

pub(super) struct Validator {
    pub(super) diags: Vec<Diag>,
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

/// A release version as documented: `MAJOR.MINOR.PATCH`, digits only, with a
/// leading `v` exactly when `v_prefix` (image tags such as kindest/node's).
/// `Err`: the label and hint of what is wrong.
fn release_version(s: &str, v_prefix: bool) -> Result<semver::Version, (&'static str, String)> {
    let bare = s.strip_prefix('v');
    let core = match (v_prefix, bare) {
        (true, Some(_)) | (false, None) => bare.unwrap_or(s),
        (true, None) => return Err(("no leading 'v'", format!("write \"v{s}\" (an image tag)"))),
        (false, Some(b)) => return Err(("a leading 'v'", format!("write \"{b}\""))),
    };
    let Ok(v) = semver::Version::parse(core) else {
        return Err(("not a MAJOR.MINOR.PATCH version", String::new()));
    };
    if !v.pre.is_empty() || !v.build.is_empty() {
        let release = format!(
            "{}{}.{}.{}",
            if v_prefix { "v" } else { "" },
            v.major,
            v.minor,
            v.patch
        );
        return Err((
            "a pre-release or build suffix",
            format!("mesh installs releases only, such as \"{release}\""),
        ));
    }
    Ok(v)
}

/// Overlap of two CIDR blocks (one contains the other's network address).
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Validator {
    pub(super) fn new(dir: &Path) -> Validator {
        Validator {
            diags: Vec::new(),
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
        }
    }

    fn err(&mut self, d: Diag) {
        self.diags.push(d);
    }

    /// Load a file the plan names: beside the plan, then embedded.
    fn load_file(&mut self, name: &str, span: Option<Range<usize>>, what: &str) -> bool {
        if self.files.contains_key(name) {
            return true;
        }
        let path = self.dir.join(name);
        let read = crate::cache::read_input(&path).and_then(|b| {
            String::from_utf8(b).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
                )
            })
        });
        match read {
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

    /// Load an app's manifest: a file as [`Self::load_file`] does, or a
    /// directory, whose `.yaml` and `.yml` files (not its subdirectories)
    /// are read in name order and joined into one multi-document text,
    /// hashed as one input.
    fn load_manifest(&mut self, name: &str, span: Range<usize>) -> bool {
        let dir = self.dir.join(name);
        if self.files.contains_key(name) || !crate::seen::look(&dir).is_some_and(|m| m.is_dir()) {
            return self.load_file(name, Some(span), "manifest");
        }
        let listed = std::fs::read_dir(&dir).and_then(|r| {
            let mut v = Vec::new();
            for e in r {
                let p = e?.path();
                let yaml = p.extension().is_some_and(|x| x == "yaml" || x == "yml");
                if yaml && p.is_file() {
                    v.push(p);
                }
            }
            v.sort();
            Ok(v)
        });
        let members = match listed {
            Ok(m) if m.is_empty() => {
                self.err(
                    Diag::new(format!(
                        "manifest directory {name} has no .yaml or .yml file"
                    ))
                    .at(span, "empty directory"),
                );
                return false;
            }
            Ok(m) => m,
            Err(e) => {
                self.err(
                    Diag::new(format!("cannot read manifest directory {name}: {e}"))
                        .at(span, "unreadable"),
                );
                return false;
            }
        };
        let mut text = String::new();
        for m in &members {
            match crate::cache::read_input_text(m) {
                Ok(t) => {
                    if !text.is_empty() {
                        text.push_str("---\n");
                    }
                    text.push_str(&t);
                    if !t.ends_with('\n') {
                        text.push('\n');
                    }
                }
                Err(e) => {
                    self.err(
                        Diag::new(format!("cannot read {}: {e}", m.display()))
                            .at(span.clone(), "in this manifest directory"),
                    );
                    return false;
                }
            }
        }
        let rel = |p: &PathBuf| PathBuf::from(name).join(p.file_name().unwrap_or_default());
        self.files.insert(
            name.to_string(),
            Source {
                origin: Origin::Dir(PathBuf::from(name), members.iter().map(rel).collect()),
                digest: Digest::of_bytes(text.as_bytes()),
                text: text.into(),
            },
        );
        true
    }

    /// Load a user task's input: a file, or a directory with everything
    /// under it (in path order). Its digest covers each file's path
    /// relative to the input, its length and its bytes, so a rename, an
    /// added or a removed file changes it as an edit does; binary files are
    /// fine. Its text is the list of those paths.
    fn load_tree(&mut self, name: &str, span: Range<usize>) -> bool {
        if self.files.contains_key(name) {
            return true;
        }
        let root = self.dir.join(name);
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
            crate::seen::look(dir);
            let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    walk(&p, out)?;
                } else {
                    out.push(p);
                }
            }
            Ok(())
        }
        let mut members = Vec::new();
        let found = crate::seen::look(&root);
        let listed = if found.as_ref().is_some_and(|m| m.is_dir()) {
            walk(&root, &mut members)
        } else if found.is_some() {
            members.push(root.clone());
            Ok(())
        } else {
            self.err(
                Diag::new(format!("missing input: {name}"))
                    .at(span, "no such file or directory")
                    .hint(format!(
                        "paths are relative to the plan's directory ({})",
                        self.dir.display()
                    )),
            );
            return false;
        };
        if let Err(e) = listed {
            self.err(Diag::new(format!("cannot read input {name}: {e}")).at(span, "unreadable"));
            return false;
        }
        let mut h = blake3::Hasher::new();
        let mut text = String::new();
        let mut rel_members = Vec::new();
        for m in &members {
            let rel = m
                .strip_prefix(&root)
                .unwrap_or(m)
                .to_string_lossy()
                .into_owned();
            let bytes = match crate::cache::read_input(m) {
                Ok(b) => b,
                Err(e) => {
                    self.err(
                        Diag::new(format!("cannot read {}: {e}", m.display()))
                            .at(span, "in this input"),
                    );
                    return false;
                }
            };
            h.update(&(rel.len() as u64).to_le_bytes());
            h.update(rel.as_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
            text.push_str(&rel);
            text.push('\n');
            rel_members.push(PathBuf::from(name).join(m.strip_prefix(&root).unwrap_or(m)));
        }
        let origin = if root.is_dir() {
            Origin::Dir(PathBuf::from(name), rel_members)
        } else {
            Origin::Disk(PathBuf::from(name))
        };
        self.files.insert(
            name.to_string(),
            Source {
                origin,
                digest: Digest(*h.finalize().as_bytes()),
                text: text.into(),
            },
        );
        true
    }

    fn version(&mut self, v: &Option<Spanned<String>>, default: &str, what: &str) -> String {
        match v {
            None => default.to_string(),
            Some(s) => {
                self.check_version(s, default.starts_with('v'), what, default);
                s.get_ref().clone()
            }
        }
    }

    /// Report `s` if it is not a release version as documented.
    fn check_version(
        &mut self,
        s: &Spanned<String>,
        v_prefix: bool,
        what: &str,
        example: &str,
    ) -> Option<semver::Version> {
        match release_version(s.get_ref(), v_prefix) {
            Ok(v) => Some(v),
            Err((label, hint)) => {
                let hint = if hint.is_empty() {
                    format!("for example {example:?}")
                } else {
                    hint
                };
                self.err(
                    Diag::new(format!("bad {what} version {:?}", s.get_ref()))
                        .at(s.span(), label)
                        .hint(hint),
                );
                None
            }
        }
    }

    /// Validate a parsed plan, collecting every problem into `self.diags`.
    pub(super) fn validate(&mut self, raw: RawPlan, file: &str, text: &str) -> Plan {
        let mesh_span = raw.mesh.span();
        let rm = raw.mesh.into_inner();
        let (mesh, ctx) = self.mesh(&rm, mesh_span);
        let pki = self.pki(&raw.pki);
        let versions = self.versions(&raw.versions);
        let clusters_span = raw.clusters.span();
        let raw_clusters = raw.clusters.into_inner();
        let (clusters, nets) = self.clusters(&raw_clusters, clusters_span, &ctx);
        let mut pki = pki;
        self.own_intermediates(&raw.pki, &mut pki, &clusters);
        self.remote_gateways(&clusters, &raw_clusters);
        self.cidrs(&nets, &clusters, mesh.kind_subnet);
        self.lb_capacity(&clusters, &mesh, &ctx);
        self.templates(&raw.templates);
        let apps = self.apps(&raw.apps, &clusters);
        let verify = self.verify(&raw.verify, &raw.apps, &apps);
        let tasks = self.tasks(&raw.tasks, &clusters);
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
            addons: self.addons(&raw.addons),
            files: std::mem::take(&mut self.files),
        }
    }

    /// `[mesh]`.
    fn mesh(&mut self, rm: &RawMesh, mesh_span: Range<usize>) -> (Mesh, MeshCtx) {
        if !is_dns_label(rm.id.get_ref()) {
            self.err(
                Diag::new(format!("bad mesh id {:?}", rm.id.get_ref()))
                    .at(rm.id.span(), "not a DNS label")
                    .hint("lowercase letters, digits and '-', at most 63 characters"),
            );
        }
        let istio = rm.istio.get_ref().clone();
        let istio_v = self.check_version(&rm.istio, false, "Istio", "1.28.0");
        match &istio_v {
        None => {}
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

        let ctx = MeshCtx {
            topology,
            topo_span,
            kind_subnet_span: rm.kind_subnet.as_ref().map_or(mesh_span, |s| s.span()),
        };
        (mesh, ctx)
    }

    /// `[pki]`.
    fn pki(&mut self, raw: &RawPki) -> Pki {
        // The longest validity a certificate made today can have.
        fn max_days() -> u64 {
            let today = time::OffsetDateTime::now_utc().date();
            let last = time::Date::from_calendar_date(9999, time::Month::December, 30)
                .expect("a valid date");
            (last - today).whole_days().max(1) as u64
        }
        // The day from which `days` exceeds max_days(): the answer below
        // holds until then.
        fn holds_until(days: u64) {
            let last = time::Date::from_calendar_date(9999, time::Month::December, 30)
                .expect("a valid date");
            let day = last
                .checked_sub(time::Duration::days(days as i64 - 1))
                .unwrap_or(time::Date::MIN);
            crate::seen::until(day.midnight().assume_utc().into());
        }
        let algorithm = raw
            .algorithm
            .as_ref()
            .map_or(Algorithm::EcdsaP256, |a| *a.get_ref());
        let root_days = raw.root_days.as_ref().map_or(3650, |d| *d.get_ref());
        let intermediate_days = raw.intermediate_days.as_ref().map_or(730, |d| *d.get_ref());
        for d in [&raw.root_days, &raw.intermediate_days]
            .into_iter()
            .flatten()
        {
            if *d.get_ref() == 0 {
                self.err(
                    Diag::new("a certificate must be valid for at least one day")
                        .at(d.span(), "0 days"),
                );
            } else if u64::from(*d.get_ref()) > max_days() {
                self.err(
                    Diag::new(format!(
                        "a certificate valid for {} days from today would expire after 9999-12-31, which X.509 cannot encode",
                        d.get_ref()
                    ))
                    .at(d.span(), "expires after 9999-12-31")
                    .hint("a root is usually valid for 10 years (3650 days)"),
                );
            } else {
                holds_until(u64::from(*d.get_ref()));
            }
        }
        if intermediate_days > root_days {
            let span = raw.intermediate_days.as_ref().map_or(0..0, |d| d.span());
            let mut d = Diag::new(format!(
                "intermediate_days ({intermediate_days}) outlives root_days ({root_days})"
            ))
            .hint("an intermediate cannot be valid after its root expires");
            if !span.is_empty() {
                d = d.at(span, "longer than the root");
            }
            self.err(d);
        }
        let root = self.own_root(raw, intermediate_days);
        Pki {
            algorithm,
            root_days,
            intermediate_days,
            root,
            intermediates: BTreeMap::new(),
        }
    }

    /// `[pki] root_cert` and `root_key` (the key may be left out when every
    /// cluster brings its intermediate: see [`Validator::own_intermediates`]),
    /// then checked (see [`ca`]).
    fn own_root(&mut self, raw: &RawPki, intermediate_days: u32) -> Option<crate::plan::OwnRoot> {
        let (cert, key) = match (&raw.root_cert, &raw.root_key) {
            (None, None) => return None,
            (Some(c), k) => (c, k.as_ref()),
            (None, Some(one)) => {
                self.err(
                    Diag::new("root_key without root_cert")
                        .at(one.span(), "a key alone")
                        .hint("name the root CA's certificate (root_cert) with its key"),
                );
                return None;
            }
        };
        if key.is_none() && raw.intermediates.as_ref().is_none_or(|m| m.is_empty()) {
            self.err(
                Diag::new("root_cert and root_key go together")
                    .at(cert.span(), "only one of the two")
                    .hint("name both the root CA's certificate and its private key, or neither (mesh then makes a root); the key may be left out only when [pki.intermediates] gives every cluster its own"),
            );
            return None;
        }
        if !self.load_file(cert.get_ref(), Some(cert.span()), "root_cert") {
            return None;
        }
        let cert_text = self.files[cert.get_ref()].text.to_string();
        let key_read = match key {
            None => None,
            Some(k) => {
                let path = self.dir.join(k.get_ref());
                match crate::cache::read_input_text(&path) {
                    Ok(t) => Some((k, path, t)),
                    Err(e) => {
                        self.err(
                            Diag::new(format!("cannot read root_key {}: {e}", k.get_ref()))
                                .at(k.span(), "unreadable")
                                .hint(format!(
                                    "paths are relative to the plan's directory ({})",
                                    self.dir.display()
                                )),
                        );
                        return None;
                    }
                }
            }
        };
        let checked = ca::check_root(
            cert.get_ref(),
            &cert_text,
            key_read
                .as_ref()
                .map(|(k, _, t)| (k.get_ref().as_str(), t.as_str())),
            intermediate_days,
        );
        match checked {
            Ok(r) => Some(crate::plan::OwnRoot {
                cert: cert.get_ref().clone(),
                key_path: key_read.map(|(_, p, _)| p),
                key_digest: r.key_digest.map(|d| d.hex()),
            }),
            Err((message, hint)) => {
                let span = match key {
                    Some(k) if message.starts_with(k.get_ref().as_str()) => k.span(),
                    _ => cert.span(),
                };
                self.err(Diag::new(message).at(span, "this root").hint(hint));
                None
            }
        }
    }

    /// `[pki.intermediates.<c>]`, once the clusters are known: each names a
    /// cluster of the plan and is checked against the root; a cluster
    /// without one needs `root_key`.
    fn own_intermediates(
        &mut self,
        raw: &RawPki,
        pki: &mut Pki,
        clusters: &BTreeMap<String, Cluster>,
    ) {
        let Some(list) = &raw.intermediates else {
            return;
        };
        let Some(root) = pki.root.clone() else {
            if let Some((_, first)) = list.iter().next() {
                self.err(
                    Diag::new("[pki.intermediates] needs the root that signed them")
                        .at(first.span(), "signed by which root?")
                        .hint("name it: [pki] root_cert = \"<file>\" (its key is not needed)"),
                );
            }
            return;
        };
        let root_text = self.files[root.cert.as_str()].text.to_string();
        for (name, entry) in list {
            if !clusters.contains_key(name) {
                self.err(
                    Diag::new(format!("an intermediate for unknown cluster {name:?}"))
                        .at(entry.span(), "no such cluster")
                        .hint(format!(
                            "clusters: {}",
                            clusters.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                );
                continue;
            }
            let e = entry.get_ref();
            if !self.load_file(e.cert.get_ref(), Some(e.cert.span()), "intermediate cert") {
                continue;
            }
            if let Some(ch) = &e.chain
                && !self.load_file(ch.get_ref(), Some(ch.span()), "intermediate chain")
            {
                continue;
            }
            let key_path = self.dir.join(e.key.get_ref());
            let key_text = match crate::cache::read_input_text(&key_path) {
                Ok(t) => t,
                Err(err) => {
                    self.err(
                        Diag::new(format!("cannot read key {}: {err}", e.key.get_ref()))
                            .at(e.key.span(), "unreadable"),
                    );
                    continue;
                }
            };
            let cert_text = self.files[e.cert.get_ref()].text.to_string();
            let chain_text = e.chain.as_ref().map(|c| {
                (
                    c.get_ref().clone(),
                    self.files[c.get_ref()].text.to_string(),
                )
            });
            match ca::check_intermediate(
                (e.cert.get_ref(), &cert_text),
                (e.key.get_ref(), &key_text),
                chain_text.as_ref().map(|(n, t)| (n.as_str(), t.as_str())),
                (&root.cert, &root_text),
            ) {
                Ok(d) => {
                    pki.intermediates.insert(
                        name.clone(),
                        crate::plan::OwnIntermediate {
                            cert: e.cert.get_ref().clone(),
                            chain: e.chain.as_ref().map(|c| c.get_ref().clone()),
                            key_path,
                            key_digest: d.hex(),
                        },
                    );
                }
                Err((message, hint)) => {
                    let span = if message.starts_with(e.key.get_ref().as_str()) {
                        e.key.span()
                    } else if e
                        .chain
                        .as_ref()
                        .is_some_and(|c| message.starts_with(c.get_ref().as_str()))
                    {
                        e.chain.as_ref().map(|c| c.span()).unwrap_or(entry.span())
                    } else {
                        e.cert.span()
                    };
                    self.err(Diag::new(message).at(span, "this intermediate").hint(hint));
                }
            }
        }
        if root.key_path.is_none() {
            let missing: Vec<&String> =
                clusters.keys().filter(|c| !list.contains_key(*c)).collect();
            if !missing.is_empty() {
                let span = raw.root_cert.as_ref().map(|c| c.span()).unwrap_or(0..0);
                self.err(
                    Diag::new(format!(
                        "no root_key to sign intermediates for {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .at(span, "a root without its key")
                    .hint("give those clusters [pki.intermediates.<c>], or name root_key"),
                );
            }
        }
    }

    /// `[addons]`: Kiali needs Prometheus.
    fn addons(&mut self, ra: &RawAddons) -> Addons {
        let on = |x: &Option<Spanned<bool>>| x.as_ref().is_some_and(|x| *x.get_ref());
        let a = Addons {
            prometheus: on(&ra.prometheus),
            kiali: on(&ra.kiali),
        };
        if let (Some(k), false) = (ra.kiali.as_ref().filter(|_| a.kiali), a.prometheus) {
            self.err(
                Diag::new("the kiali add-on needs the prometheus add-on")
                    .at(k.span(), "kiali reads its metrics from Prometheus")
                    .hint("add prometheus = true to [addons]"),
            );
        }
        a
    }

    /// `[versions]`.
    fn versions(&mut self, rv: &RawVersions) -> Versions {
        Versions {
            cilium: self.version(&rv.cilium, "1.18.3", "cilium"),
            metallb: self.version(&rv.metallb, "0.15.2", "metallb"),
            gateway_api: self.version(&rv.gateway_api, "1.4.0", "gateway_api"),
            kind_node: self.version(&rv.kind_node, "v1.34.0", "kind_node"),
            prometheus: self.version(&rv.prometheus, "27.19.0", "prometheus"),
            kiali: self.version(&rv.kiali, "2.21.0", "kiali"),
        }
    }

    /// `[templates]`: overrides, then every built-in template loaded.
    fn templates(&mut self, raw: &BTreeMap<String, Spanned<String>>) {
        let known: BTreeSet<&str> = assets::template_names().collect();
        let mut overrides = BTreeMap::new();
        for (k, v) in raw {
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
    }
}

fn list_or_none(s: &BTreeSet<String>) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        s.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}
