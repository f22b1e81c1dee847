//! Bring your own root CA: `[pki] root_cert` and `root_key` name PEM files
//! (an organisation's CA, or one kept from an earlier mesh), checked before
//! anything runs.
//!
//! The checks, in order, each an error at the plan key that names the file
//! (and the line of the PEM block at fault): the certificate file holds a
//! PEM `CERTIFICATE` that parses as X.509; it is a CA (basicConstraints
//! CA:true); it may sign certificates (keyUsage, when present, has
//! keyCertSign); it is valid now; the intermediates mesh signs with it
//! (`intermediate_days` from today) do not outlive it; the key file holds a
//! private key that parses, and its public key is the certificate's. The
//! key file is read here only to check it and hash it: its bytes never
//! enter the plan (the digest does, so editing the key reruns `pki.root`),
//! and `pki.root` reads it again when it runs.
//!
//! Or per cluster, `[pki.intermediates.<c>]` names an intermediate an
//! organisation's CA signed (`cert`, `key`, optional `chain`): a CA allowed
//! to sign, valid now, its key matching, and signed by `root_cert`
//! directly or through the chain (each signature verified). `root_key` is
//! then needed only if some cluster has no intermediate of its own.

use crate::hash::Digest;

/// What the checks learn about a good root.
pub(super) struct Root {
    pub key_digest: Option<Digest>,
}

/// The line (1-based) of the first `-----BEGIN <label>` in `text`, or 1.
fn pem_line(text: &str, label: &str) -> usize {
    let marker = format!("-----BEGIN {label}");
    text.lines()
        .position(|l| l.contains(&marker))
        .map_or(1, |i| i + 1)
}

/// Check a root certificate and key (their texts; `cert_name` and
/// `key_name` as the plan names them); `Err` is the message and hint.
pub(super) fn check_root(
    cert_name: &str,
    cert_text: &str,
    key: Option<(&str, &str)>,
    intermediate_days: u32,
) -> Result<Root, (String, String)> {
    let at = |label: &str| format!("{cert_name}:{}", pem_line(cert_text, label));
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_text.as_bytes()).map_err(|_| {
        (
            format!("{cert_name} holds no PEM certificate"),
            "root_cert must be a PEM file starting with -----BEGIN CERTIFICATE-----".into(),
        )
    })?;
    if pem.label != "CERTIFICATE" {
        let what = if pem.label.contains("PRIVATE") {
            "a private key".to_string()
        } else {
            format!("a PEM {:?} block", pem.label)
        };
        return Err((
            format!("{}: {what}, not a CERTIFICATE", at(&pem.label)),
            "root_cert names the certificate; the key goes in root_key".into(),
        ));
    }
    let cert = pem.parse_x509().map_err(|e| {
        (
            format!("{}: the certificate does not parse: {e}", at("CERTIFICATE")),
            "export it again from your CA (PEM, X.509 v3)".into(),
        )
    })?;
    let now = ::time::OffsetDateTime::now_utc();
    let not_after = usable_ca(&cert, &at("CERTIFICATE"), &ROOT, now)?;
    let Some((key_name, key_text)) = key else {
        // No key: mesh signs nothing with this root.
        return Ok(Root { key_digest: None });
    };
    let reach = now + ::time::Duration::days(i64::from(intermediate_days));
    if reach > not_after {
        return Err((
            format!(
                "{}: the root expires on {}, before intermediates made today for intermediate_days = {intermediate_days} would",
                at("CERTIFICATE"),
                not_after.date()
            ),
            format!(
                "lower [pki] intermediate_days to at most {}",
                (not_after - now).whole_days().max(0)
            ),
        ));
    }
    key_matches(&cert, cert_name, (key_name, key_text), &ROOT)?;
    // Passed today; from this moment on the same plan would not.
    crate::seen::until((not_after - ::time::Duration::days(i64::from(intermediate_days))).into());
    Ok(Root {
        key_digest: Some(Digest::of_bytes(key_text.as_bytes())),
    })
}

/// What is wrong, and the hint.
type Problem = (String, String);

/// How the checks shared by a root and an intermediate word their
/// messages.
struct Role {
    /// What the certificate is called in a message.
    noun: &'static str,
    ca_hint: &'static str,
    valid_hint: &'static str,
    key_hint: &'static str,
    match_hint: &'static str,
}

const ROOT: Role = Role {
    noun: "certificate",
    ca_hint: "mesh signs an intermediate per cluster with this root: it must be a CA certificate",
    valid_hint: "use a root that is valid today",
    key_hint: "root_key must be the PEM private key of root_cert",
    match_hint: "name the private key that belongs to root_cert",
};

const INTERMEDIATE: Role = Role {
    noun: "intermediate",
    ca_hint: "istiod signs workload certificates with it: it must be a CA certificate",
    valid_hint: "use an intermediate that is valid today",
    key_hint: "key must be the PEM private key of cert",
    match_hint: "name the private key that belongs to the intermediate",
};

/// A CA (basicConstraints CA:true) allowed to sign (keyUsage, when
/// present, has keyCertSign) and valid `now`; its not-after.
fn usable_ca(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    at: &str,
    role: &Role,
    now: ::time::OffsetDateTime,
) -> Result<::time::OffsetDateTime, Problem> {
    let noun = role.noun;
    if !cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca)
    {
        return Err((
            format!("{at}: the {noun} is not a CA (basicConstraints CA:true is missing)"),
            role.ca_hint.into(),
        ));
    }
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err((
            format!("{at}: the {noun} may not sign certificates (its keyUsage lacks keyCertSign)"),
            "use a CA certificate whose key usage includes keyCertSign".into(),
        ));
    }
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    if not_after <= now || not_before > now {
        return Err((
            format!(
                "{at}: the {noun} is valid from {} to {}, not now",
                not_before.date(),
                not_after.date()
            ),
            role.valid_hint.into(),
        ));
    }
    // Valid now, and until it expires.
    crate::seen::until(not_after.into());
    Ok(not_after)
}

/// The key file holds a private key that parses, and it is `cert`'s.
/// Never quotes the key file: names it and the line of its block.
fn key_matches(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    cert_name: &str,
    (key_name, key_text): (&str, &str),
    role: &Role,
) -> Result<(), Problem> {
    let key = rcgen::KeyPair::from_pem(key_text).map_err(|_| {
        (
            format!(
                "{key_name}:{}: no private key that parses (PKCS#8, SEC1 or PKCS#1 PEM)",
                pem_line(key_text, "")
            ),
            role.key_hint.to_string(),
        )
    })?;
    if rcgen::PublicKeyData::der_bytes(&key) != cert.public_key().subject_public_key.data.as_ref() {
        return Err((
            format!("{key_name} is not the key of {cert_name} (their public keys differ)"),
            role.match_hint.into(),
        ));
    }
    Ok(())
}

/// The certificates of a PEM file, in order, with the line each starts on.
fn certs(name: &str, text: &str) -> Result<Vec<(usize, Vec<u8>)>, Problem> {
    let mut out = Vec::new();
    let starts: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("-----BEGIN CERTIFICATE"))
        .map(|(i, _)| i + 1)
        .collect();
    for (n, pem) in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()).enumerate() {
        let at = starts.get(n).copied().unwrap_or(1);
        let pem = pem.map_err(|_| {
            (
                format!("{name}:{at}: not a PEM block that parses"),
                "export the certificates again (PEM)".into(),
            )
        })?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        out.push((at, pem.contents));
    }
    if out.is_empty() {
        return Err((
            format!("{name} holds no PEM certificate"),
            "name a PEM file starting with -----BEGIN CERTIFICATE-----".into(),
        ));
    }
    Ok(out)
}

/// Check a cluster's intermediate: a CA allowed to sign, valid now, its key
/// matching, and signed by the root, directly or through `chain` (each
/// certificate signed by the next, the last by the root). `Err`: message
/// and hint.
pub(super) fn check_intermediate(
    cert: (&str, &str),
    key: (&str, &str),
    chain: Option<(&str, &str)>,
    root: (&str, &str),
) -> Result<Digest, (String, String)> {
    use x509_parser::prelude::*;
    let (cert_name, cert_text) = cert;
    let (at, der) = certs(cert_name, cert_text)?.remove(0);
    let where_ = format!("{cert_name}:{at}");
    let (_, c) = X509Certificate::from_der(&der).map_err(|e| {
        (
            format!("{where_}: the certificate does not parse: {e}"),
            "export it again from your CA (PEM, X.509 v3)".into(),
        )
    })?;
    usable_ca(
        &c,
        &where_,
        &INTERMEDIATE,
        ::time::OffsetDateTime::now_utc(),
    )?;
    key_matches(&c, cert_name, key, &INTERMEDIATE)?;
    // Up the chain: each certificate signed by the next, the last by the root.
    let mut links: Vec<(String, Vec<u8>)> = vec![(where_.clone(), der.clone())];
    if let Some((chain_name, chain_text)) = chain {
        for (i, (line, d)) in certs(chain_name, chain_text)?.into_iter().enumerate() {
            // The chain may start with the intermediate itself.
            if i == 0 && d == der {
                continue;
            }
            links.push((format!("{chain_name}:{line}"), d));
        }
    }
    let (root_name, root_text) = root;
    let (root_at, root_der) = certs(root_name, root_text)?.remove(0);
    if links.last().is_some_and(|(_, d)| *d == root_der) {
        links.pop();
    }
    links.push((format!("{root_name}:{root_at}"), root_der));
    for pair in links.windows(2) {
        let (child_at, child) = (&pair[0].0, &pair[0].1);
        let (parent_at, parent) = (&pair[1].0, &pair[1].1);
        let (_, cc) = X509Certificate::from_der(child).map_err(|e| {
            (
                format!("{child_at}: the certificate does not parse: {e}"),
                String::new(),
            )
        })?;
        let (_, pc) = X509Certificate::from_der(parent).map_err(|e| {
            (
                format!("{parent_at}: the certificate does not parse: {e}"),
                String::new(),
            )
        })?;
        if cc.verify_signature(Some(pc.public_key())).is_err() {
            return Err((
                format!("{child_at}: the certificate is not signed by {parent_at}"),
                "the chain runs from the intermediate up to the root, each certificate signed by the next".into(),
            ));
        }
    }
    Ok(Digest::of_bytes(key.1.as_bytes()))
}
