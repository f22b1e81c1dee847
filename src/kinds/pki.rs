//! The plug-in CA, as Istio's `tools/certs` makefiles make it.
//!
//! `pki.root` makes one self-signed root (CA:true critical; keyUsage critical
//! digitalSignature, nonRepudiation, keyEncipherment, keyCertSign; subject
//! O=Istio, CN=Root CA; subject key identifier). `pki.intermediate:<c>` makes
//! one intermediate per cluster, signed by the root: CA:true pathlen:0
//! critical, the same key usages, subject O=Istio, CN=Intermediate CA,
//! L=<cluster>, SAN DNS `istiod.istio-system.svc`, authority key identifier.
//! Both use the plan's algorithm (ECDSA P-256 / P-384, RSA 2048 / 4096) and
//! validity. Outputs are PEM; private keys are marked secret (0600, never
//! printed); the root key is not exported to `out/`. `cert-chain.pem` is the
//! intermediate followed by the root, as istiod expects in `cacerts`.
//!
//! Tasks: `pki.root` (no dependencies) and `pki.intermediate:<c>` (after
//! the root, reading its cert and key). The root reads only what defines it
//! (`[pki] algorithm` and `root_days`), so no other edit reruns it; and it
//! is the mesh's identity, kept in the state store (`state/identity/`):
//! `pki.root` restores it from there when its parameters match (after a
//! cache loss or `mesh clean`), mints and saves one when there is none, and
//! refuses to replace it while mesh owns live clusters (their workloads
//! trust the old root) unless asked to rotate: `mesh build --rotate-root`
//! records a `state::Rotation` and builds its three phases, in which this
//! task outputs the signing root and a trust bundle of both roots
//! ([`TRUST_BUNDLE`], which the intermediates put in `root-cert.pem`), so
//! every phase reruns the intermediates and `cacerts` (restarting istiod
//! and the workloads). Intermediates read the algorithm,
//! `intermediate_days` and their cluster.

use super::{Planner, Slice, TaskId};
use crate::graph::{OutFile, TaskError, blocking};
use crate::plan::{Algorithm, Pki};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

pub const VERSION: u32 = 2;

/// `pki.root`
pub fn root_id() -> TaskId {
    TaskId::new("pki.root")
}

/// `pki.intermediate:<c>`
pub fn intermediate_id(cluster: &str) -> TaskId {
    TaskId::new(format!("pki.intermediate:{cluster}"))
}

pub fn plan(p: &mut Planner) {
    let plan = p.plan;
    let algorithm = || Slice::new().put("algorithm", "pki.algorithm", plan.pki.algorithm);
    let pk = plan.pki.clone();
    match &plan.pki.root {
        // The user's root: its certificate file and its key's digest.
        Some(own) => {
            let cert = plan.files[own.cert.as_str()].text.to_string();
            let mine = own.clone();
            p.pure(
                root_id(),
                "pki.root",
                VERSION,
                &Slice::new().put("root_key", "pki.root_key", &own.key_digest),
                &[own.cert.as_str()],
                vec![],
                blocking(move |_| own_root(&cert, &mine)),
            );
        }
        None => {
            // A rotation in progress (the state's): its phase and new root
            // are inputs, so each phase reruns the root and what follows.
            let rotation = crate::state::get().and_then(|s| s.rotation().ok().flatten());
            let mut slice = algorithm().put("root_days", "pki.root_days", plan.pki.root_days);
            if let Some(r) = &rotation {
                slice = slice.put(
                    "rotation",
                    "state.identity.rotation",
                    serde_json::json!({
                        "phase": r.phase,
                        "root": crate::hash::Digest::of_bytes(r.cert_pem.as_bytes()).hex(),
                    }),
                );
            }
            p.pure(
                root_id(),
                "pki.root",
                VERSION,
                &slice,
                &[],
                vec![],
                blocking(move |ctx| match &rotation {
                    Some(r) => rotating_root(r),
                    None => root_identity(ctx, &pk),
                }),
            )
        }
    }
    for c in plan.clusters.values() {
        let (pk, name) = (plan.pki.clone(), c.name.clone());
        if let Some(own) = plan.pki.intermediates.get(&c.name) {
            let cert = plan.files[own.cert.as_str()].text.to_string();
            let chain = own
                .chain
                .as_ref()
                .map(|ch| plan.files[ch.as_str()].text.to_string());
            let mut files = vec![own.cert.as_str()];
            files.extend(own.chain.as_deref());
            let mine = own.clone();
            p.pure(
                intermediate_id(&c.name),
                "pki.intermediate",
                VERSION,
                &Slice::new()
                    .put(
                        "key",
                        format!("pki.intermediates.{}.key", c.name),
                        &own.key_digest,
                    )
                    .put("cluster", format!("clusters.{}.name", c.name), &c.name),
                &files,
                vec![root_id()],
                blocking(move |ctx| {
                    let root = ctx.read_string(&root_id(), "root-cert.pem")?;
                    own_intermediate(&name, &mine, &cert, chain.as_deref(), &root)
                }),
            );
            continue;
        }
        p.pure(
            intermediate_id(&c.name),
            "pki.intermediate",
            VERSION,
            &algorithm()
                .put(
                    "intermediate_days",
                    "pki.intermediate_days",
                    plan.pki.intermediate_days,
                )
                .put("cluster", format!("clusters.{}.name", c.name), &c.name),
            &[],
            vec![root_id()],
            blocking(move |ctx| {
                let cert = ctx.read_string(&root_id(), "root-cert.pem")?;
                let key = ctx.read_string(&root_id(), "root-key.pem")?;
                let mut files = intermediate(&pk, &name, &cert, &key)?;
                // During a rotation the clusters trust both roots.
                if let Ok(bundle) = ctx.read_string(&root_id(), TRUST_BUNDLE) {
                    for f in files.iter_mut().filter(|f| f.name == "root-cert.pem") {
                        f.bytes = bundle.clone().into_bytes();
                    }
                }
                Ok(files)
            }),
        );
    }
}

fn err(e: rcgen::Error) -> TaskError {
    TaskError::tool("rcgen", e.to_string())
}

fn generate(alg: Algorithm) -> Result<KeyPair, TaskError> {
    match alg {
        Algorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        Algorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        Algorithm::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        Algorithm::Rsa4096 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        }
    }
    .map_err(err)
}

fn ca_params(
    cn: &str,
    locality: Option<&str>,
    days: u32,
    pathlen: Option<u8>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Istio");
    dn.push(DnType::CommonName, cn);
    if let Some(l) = locality {
        dn.push(DnType::LocalityName, l);
    }
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(match pathlen {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    // Back-date a little for clock skew between the host and the nodes.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::now_utc());
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days as i64);
    p
}

/// `pki.root`: root-cert.pem (exported), root-key.pem (secret, cache only).
/// `pki.root` as a build runs it: the mesh's identity from the state
/// store when its parameters match; else a new root, saved there (refused
/// while mesh owns live clusters that trust the old one).
fn root_identity(ctx: &crate::graph::Ctx, pki: &Pki) -> Result<Vec<OutFile>, TaskError> {
    let Some(store) = crate::state::get() else {
        return root(pki);
    };
    let params = serde_json::json!({"algorithm": pki.algorithm, "root_days": pki.root_days});
    let serr = |e: crate::state::StateError| TaskError::new(e.to_string());
    let mut identity = store.identity().map_err(serr)?;
    if identity.is_none() {
        // A mesh from before the state store: its root is the one this
        // task recorded last (the cache), not a new one.
        let id = root_id();
        if let (Ok(cert_pem), Ok(key_pem)) = (
            ctx.read_string(id.as_str(), "root-cert.pem"),
            ctx.read_string(id.as_str(), "root-key.pem"),
        ) {
            let found = crate::state::Identity {
                params: params.clone(),
                cert_pem,
                key_pem,
            };
            store.save_identity(&found).map_err(serr)?;
            identity = Some(found);
        }
    }
    if let Some(id) = identity {
        if id.params == params {
            return Ok(root_files(id.cert_pem, id.key_pem));
        }
        let live = store.inventory().map_err(serr)?.kind_clusters();
        if !live.is_empty() {
            return Err(TaskError::new(format!(
                "the mesh's root CA was made with {}, and [pki] now asks for {params}: \
                 a new root at once would break trust with the workloads of {}. Rotate to it \
                 safely with `mesh build --rotate-root`, or put [pki] back",
                id.params,
                live.join(", ")
            )));
        }
    }
    let files = root(pki)?;
    let text = |name: &str| {
        files
            .iter()
            .find(|f| f.name == name)
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
            .unwrap_or_default()
    };
    store
        .save_identity(&crate::state::Identity {
            params,
            cert_pem: text("root-cert.pem"),
            key_pem: text("root-key.pem"),
        })
        .map_err(serr)?;
    Ok(files)
}

/// `pki.root` with the user's root (`[pki] root_cert`, `root_key`): the
/// key is read now and must be the one checked when the plan was read.
/// It becomes the mesh's identity; replacing a different one is refused
/// while mesh owns live clusters, as for a minted root.
fn own_root(cert: &str, own: &crate::plan::OwnRoot) -> Result<Vec<OutFile>, TaskError> {
    let (Some(path), Some(digest)) = (&own.key_path, &own.key_digest) else {
        // Every cluster brings its intermediate: the root is only trusted.
        return Ok(vec![
            OutFile::new("root-cert.pem", cert.to_string()).export("pki/root-cert.pem"),
        ]);
    };
    let key = read_key(path, digest)?;
    if let Some(store) = crate::state::get() {
        let serr = |e: crate::state::StateError| TaskError::new(e.to_string());
        let params = serde_json::json!({
            "root_cert": crate::hash::Digest::of_bytes(cert.as_bytes()).hex()
        });
        if let Some(id) = store.identity().map_err(serr)?
            && id.cert_pem != cert
        {
            let live = store.inventory().map_err(serr)?.kind_clusters();
            if !live.is_empty() {
                return Err(TaskError::new(format!(
                    "[pki] root_cert is not the mesh's root CA: a new root would break trust with \
                     the workloads of {} (`mesh build --rotate-root` rotates only roots mesh makes). Put [pki] back, or \
                     `mesh destroy` first",
                    live.join(", ")
                )));
            }
        }
        store
            .save_identity(&crate::state::Identity {
                params,
                cert_pem: cert.to_string(),
                key_pem: key.clone(),
            })
            .map_err(serr)?;
    }
    Ok(root_files(cert.to_string(), key))
}

/// A key file the plan names, read now: it must still be the one checked
/// when the plan was read (`digest`). Never quoted.
fn read_key(path: &std::path::Path, digest: &str) -> Result<String, TaskError> {
    let key = crate::cache::read_input_text(path)
        .map_err(|e| TaskError::new(format!("cannot read key {}: {e}", path.display())))?;
    if crate::hash::Digest::of_bytes(key.as_bytes()).hex() != digest {
        return Err(TaskError::new(format!(
            "key {} changed while mesh ran; run mesh again",
            path.display()
        )));
    }
    Ok(key)
}

/// `pki.intermediate:<c>` for an intermediate the user brings: its files,
/// and `cert-chain.pem` as istiod expects it (the intermediate, the chain
/// above it, the root).
fn own_intermediate(
    cluster: &str,
    own: &crate::plan::OwnIntermediate,
    cert: &str,
    chain: Option<&str>,
    root: &str,
) -> Result<Vec<OutFile>, TaskError> {
    let key = read_key(&own.key_path, &own.key_digest)?;
    let mut full = String::new();
    let chain = chain.unwrap_or("");
    if !chain.contains(cert.trim()) {
        full.push_str(cert.trim_end());
        full.push('\n');
    }
    if !chain.trim().is_empty() {
        full.push_str(chain.trim_end());
        full.push('\n');
    }
    if !full.trim_end().ends_with(root.trim()) {
        full.push_str(root.trim_end());
        full.push('\n');
    }
    let dir = format!("pki/{cluster}");
    Ok(vec![
        OutFile::new("ca-cert.pem", cert.to_string()).export(format!("{dir}/ca-cert.pem")),
        OutFile::new("ca-key.pem", key)
            .secret()
            .export(format!("{dir}/ca-key.pem")),
        OutFile::new("root-cert.pem", root.to_string()).export(format!("{dir}/root-cert.pem")),
        OutFile::new("cert-chain.pem", full).export(format!("{dir}/cert-chain.pem")),
    ])
}

/// The roots a cluster trusts during a rotation (PEM, the signing root
/// first); absent otherwise.
pub const TRUST_BUNDLE: &str = "trust-bundle.pem";

/// `pki.root` during a rotation (see `state::Rotation`): phase 1 signs with
/// the old root and trusts both; phase 2 signs with the new and trusts
/// both; phase 3 signs with and trusts the new one only.
fn rotating_root(r: &crate::state::Rotation) -> Result<Vec<OutFile>, TaskError> {
    let store = crate::state::get().ok_or_else(|| TaskError::new("no state store"))?;
    let old = store
        .identity()
        .map_err(|e| TaskError::new(e.to_string()))?
        .ok_or_else(|| TaskError::new("a rotation without an identity to rotate from"))?;
    let bundle = |a: &str, b: &str| {
        OutFile::new(
            TRUST_BUNDLE,
            format!("{}\n{}\n", a.trim_end(), b.trim_end()),
        )
        .export("pki/trust-bundle.pem")
    };
    Ok(match r.phase {
        1 => {
            let mut f = root_files(old.cert_pem.clone(), old.key_pem);
            f.push(bundle(&old.cert_pem, &r.cert_pem));
            f
        }
        2 => {
            let mut f = root_files(r.cert_pem.clone(), r.key_pem.clone());
            f.push(bundle(&r.cert_pem, &old.cert_pem));
            f
        }
        _ => root_files(r.cert_pem.clone(), r.key_pem.clone()),
    })
}

fn root_files(cert_pem: String, key_pem: String) -> Vec<OutFile> {
    vec![
        OutFile::new("root-cert.pem", cert_pem).export("pki/root-cert.pem"),
        OutFile::new("root-key.pem", key_pem).secret(),
    ]
}

/// A new root CA.
pub fn root(pki: &Pki) -> Result<Vec<OutFile>, TaskError> {
    let key = generate(pki.algorithm)?;
    let cert = ca_params("Root CA", None, pki.root_days, None)
        .self_signed(&key)
        .map_err(err)?;
    Ok(root_files(cert.pem(), key.serialize_pem()))
}

/// `pki.intermediate:<cluster>`: the four files of the `cacerts` secret.
pub fn intermediate(
    pki: &Pki,
    cluster: &str,
    root_cert: &str,
    root_key: &str,
) -> Result<Vec<OutFile>, TaskError> {
    let root_key = KeyPair::from_pem(root_key).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(root_cert, root_key).map_err(err)?;
    let key = generate(pki.algorithm)?;
    let mut params = ca_params(
        "Intermediate CA",
        Some(cluster),
        pki.intermediate_days,
        Some(0),
    );
    params.subject_alt_names = vec![SanType::DnsName(
        "istiod.istio-system.svc".try_into().map_err(err)?,
    )];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let ca_cert = cert.pem();
    let chain = format!("{ca_cert}{root_cert}");
    let dir = format!("pki/{cluster}");
    Ok(vec![
        OutFile::new("ca-cert.pem", ca_cert).export(format!("{dir}/ca-cert.pem")),
        OutFile::new("ca-key.pem", key.serialize_pem())
            .secret()
            .export(format!("{dir}/ca-key.pem")),
        OutFile::new("root-cert.pem", root_cert).export(format!("{dir}/root-cert.pem")),
        OutFile::new("cert-chain.pem", chain).export(format!("{dir}/cert-chain.pem")),
    ])
}
