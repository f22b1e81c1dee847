//! The plug-in CA checked two independent ways: x509-parser (structure,
//! extensions, criticality) and the `openssl` CLI (chain verification, and
//! pathlen:0 actually enforced), for every supported algorithm.

mod common;
use common::Project;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::*;

fn plan(algorithm: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plan.toml"))
        .unwrap()
        .replace(
            "algorithm = \"ecdsa-p256\"",
            &format!("algorithm = \"{algorithm}\""),
        )
        .replace("intermediate_days = 730", "intermediate_days = 400")
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI on PATH");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn pem_der(text: &str) -> Vec<Vec<u8>> {
    Pem::iter_from_buffer(text.as_bytes())
        .map(|p| p.unwrap().contents)
        .collect()
}

fn check(algorithm: &str) {
    let p = Project::with_plan(&plan(algorithm));
    p.build();
    let root_pem = p.read("out/pki/root-cert.pem");
    let root_der = &pem_der(&root_pem)[0];
    let (_, root) = X509Certificate::from_der(root_der).unwrap();

    // Root: self-signed CA, Istio subject, critical CA and key usage, SKI.
    assert_eq!(root.subject().to_string(), "O=Istio, CN=Root CA");
    assert_eq!(root.issuer(), root.subject());
    let bc = root.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint.is_none());
    let ku = root.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(
        ku.value.digital_signature()
            && ku.value.non_repudiation()
            && ku.value.key_encipherment()
            && ku.value.key_cert_sign()
    );
    let root_ski = root
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("root has a subject key identifier");
    let days =
        (root.validity().not_after.timestamp() - root.validity().not_before.timestamp()) / 86400;
    assert!((3650..=3651).contains(&days), "root valid {days} days");

    for cluster in ["east", "west"] {
        let dir = format!("out/pki/{cluster}");
        let ca_pem = p.read(&format!("{dir}/ca-cert.pem"));
        let ca_der = pem_der(&ca_pem).remove(0);
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(
            ca.subject().to_string(),
            format!("O=Istio, CN=Intermediate CA, L={cluster}")
        );
        assert_eq!(ca.issuer(), root.subject());
        let bc = ca.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = ca.key_usage().unwrap().unwrap();
        assert!(
            ku.critical
                && ku.value.key_cert_sign()
                && ku.value.digital_signature()
                && ku.value.non_repudiation()
                && ku.value.key_encipherment()
        );
        let san = ca.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::DNSName("istiod.istio-system.svc")]
        );
        let aki = ca
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("intermediate has an authority key identifier");
        assert_eq!(aki, root_ski);
        let days =
            (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86400;
        assert!(
            (400..=401).contains(&days),
            "intermediate valid {days} days"
        );
        let alg = ca.public_key().algorithm.algorithm.to_id_string();
        match algorithm {
            "ecdsa-p256" | "ecdsa-p384" => assert_eq!(alg, "1.2.840.10045.2.1"),
            _ => assert_eq!(alg, "1.2.840.113549.1.1.1"),
        }

        // Files: root copy, chain order (intermediate then root), key perms.
        assert_eq!(p.read(&format!("{dir}/root-cert.pem")), root_pem);
        let chain = pem_der(&p.read(&format!("{dir}/cert-chain.pem")));
        assert_eq!(chain, vec![ca_der.clone(), root_der.clone()]);
        let key_path = p.path(&format!("{dir}/ca-key.pem"));
        assert_eq!(
            std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // openssl: the chain verifies, extensions read as Istio's makefiles write them.
        let d = p.dir.path();
        let (ok, out) = openssl(
            d,
            &[
                "verify",
                "-CAfile",
                "out/pki/root-cert.pem",
                &format!("{dir}/ca-cert.pem"),
            ],
        );
        assert!(ok, "{out}");
        let (ok, text) = openssl(
            d,
            &[
                "x509",
                "-in",
                &format!("{dir}/ca-cert.pem"),
                "-noout",
                "-text",
            ],
        );
        assert!(ok, "{text}");
        assert!(
            text.contains("X509v3 Basic Constraints: critical"),
            "{text}"
        );
        assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
        assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
        assert!(
            text.contains("Digital Signature, Non Repudiation, Key Encipherment, Certificate Sign"),
            "{text}"
        );
        assert!(text.contains("DNS:istiod.istio-system.svc"), "{text}");
        // The key belongs to the certificate.
        let (_, cert_pub) = openssl(
            d,
            &[
                "x509",
                "-in",
                &format!("{dir}/ca-cert.pem"),
                "-noout",
                "-pubkey",
            ],
        );
        let (ok, key_pub) = openssl(d, &["pkey", "-in", &format!("{dir}/ca-key.pem"), "-pubout"]);
        assert!(ok, "{key_pub}");
        assert_eq!(cert_pub, key_pub);

        // The cacerts secret carries exactly these four files.
        let secret: serde_json::Value =
            serde_saphyr::from_str(&p.read(&format!("out/{cluster}/istio/cacerts.yaml"))).unwrap();
        assert_eq!(secret["metadata"]["name"], "cacerts");
        assert_eq!(secret["metadata"]["namespace"], "istio-system");
        for f in [
            "ca-cert.pem",
            "ca-key.pem",
            "root-cert.pem",
            "cert-chain.pem",
        ] {
            assert_eq!(
                secret["stringData"][f].as_str().unwrap().trim(),
                p.read(&format!("{dir}/{f}")).trim(),
                "{cluster} cacerts {f}"
            );
        }
    }

    // The two intermediates are different keys under the same root.
    assert_ne!(
        p.read("out/pki/east/ca-key.pem"),
        p.read("out/pki/west/ca-key.pem")
    );
}

#[test]
fn ecdsa_p256() {
    check("ecdsa-p256");
}

#[test]
fn ecdsa_p384() {
    check("ecdsa-p384");
}

#[test]
fn rsa_2048() {
    check("rsa-2048");
}

#[test]
fn rsa_4096() {
    check("rsa-4096");
}

/// pathlen:0 is enforced: a leaf under the intermediate verifies, a CA
/// under it (and a leaf below that) does not.
#[test]
fn pathlen_zero_is_enforced_by_openssl() {
    let p = Project::with_plan(&plan("ecdsa-p256"));
    p.build();
    let issuer_key = rcgen::KeyPair::from_pem(&p.read("out/pki/east/ca-key.pem")).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&p.read("out/pki/east/ca-cert.pem"), issuer_key).unwrap();

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["helloworld.sample.svc".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    p.write("leaf.pem", &leaf.pem());

    let sub_key = rcgen::KeyPair::generate().unwrap();
    let mut sub = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    sub.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    sub.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    sub.distinguished_name
        .push(rcgen::DnType::CommonName, "Sneaky CA");
    let sub_cert = sub.signed_by(&sub_key, &issuer).unwrap();
    let sub_issuer = rcgen::Issuer::from_ca_cert_pem(&sub_cert.pem(), sub_key).unwrap();
    let deep_key = rcgen::KeyPair::generate().unwrap();
    let deep = rcgen::CertificateParams::new(vec!["evil.example".into()])
        .unwrap()
        .signed_by(&deep_key, &sub_issuer)
        .unwrap();
    p.write("deep.pem", &deep.pem());
    p.write(
        "untrusted.pem",
        &format!("{}{}", p.read("out/pki/east/ca-cert.pem"), sub_cert.pem()),
    );

    let d = p.dir.path();
    let (ok, out) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "out/pki/root-cert.pem",
            "-untrusted",
            "out/pki/east/ca-cert.pem",
            "leaf.pem",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "out/pki/root-cert.pem",
            "-untrusted",
            "untrusted.pem",
            "deep.pem",
        ],
    );
    assert!(
        !ok,
        "a CA under a pathlen:0 intermediate must not verify: {out}"
    );
    assert!(out.contains("path length"), "{out}");
    // And the west intermediate cannot stand in for east's: different keys.
    let (ok, _) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "out/pki/root-cert.pem",
            "-untrusted",
            "out/pki/west/ca-cert.pem",
            "leaf.pem",
        ],
    );
    assert!(!ok);
}

/// A CA made the way an organisation's would be (rcgen here: any tool).
fn org_ca(
    is_ca: bool,
    usages: &[rcgen::KeyUsagePurpose],
    not_after: (i32, u8, u8),
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Example Org Root CA");
    p.is_ca = if is_ca {
        rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        rcgen::IsCa::ExplicitNoCa
    };
    p.key_usages = usages.to_vec();
    p.not_before = rcgen::date_time_ymd(2019, 1, 1);
    p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn with_own_root(cert: &str, key: &str) -> Project {
    let p = Project::with_plan(&plan("ecdsa-p256").replace(
        "intermediate_days = 400",
        "intermediate_days = 400\nroot_cert = \"org/root-cert.pem\"\nroot_key = \"org/root-key.pem\"",
    ));
    std::fs::create_dir_all(p.path("org")).unwrap();
    std::fs::write(p.path("org/root-cert.pem"), cert).unwrap();
    std::fs::write(p.path("org/root-key.pem"), key).unwrap();
    p
}

const SIGN: &[rcgen::KeyUsagePurpose] = &[
    rcgen::KeyUsagePurpose::KeyCertSign,
    rcgen::KeyUsagePurpose::CrlSign,
];

/// The no-op fast path (issue 12) answers without reading the plan, so it
/// must not outlive the plan's checks against the clock: reading a plan
/// with the organisation's root records the moment its verdict would
/// change (the root expiring before an intermediate made then would:
/// 2090-01-01 less intermediate_days = 400), and the files it read.
#[test]
fn reading_a_plan_records_until_when_its_own_root_passes() {
    let (cert, key) = org_ca(true, SIGN, (2090, 1, 1));
    let p = with_own_root(&cert, &key);
    mesh::seen::start();
    let plan = mesh::plan::load(&p.path("plan.toml"), "plan.toml");
    let seen = mesh::seen::take().expect("recording");
    assert!(plan.is_ok());
    let days = 43_830 - 400; // 1970-01-01 to 2090-01-01, less 400
    let want = std::time::UNIX_EPOCH + std::time::Duration::from_secs(days * 86_400);
    assert_eq!(seen.until, Some(want));
    for f in ["plan.toml", "org/root-cert.pem", "org/root-key.pem"] {
        assert!(
            seen.files
                .iter()
                .any(|(path, m)| path.ends_with(f) && path.is_absolute() && m.is_some()),
            "{f} not recorded: {:?}",
            seen.files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
    }
}

#[test]
fn an_organisations_root_signs_the_intermediates_and_becomes_the_identity() {
    let (cert, key) = org_ca(true, SIGN, (2090, 1, 1));
    let p = with_own_root(&cert, &key);
    let o = p.build();
    assert_eq!(p.read("out/pki/root-cert.pem"), cert);
    assert_eq!(p.read("state/identity/root-cert.pem"), cert);
    for c in ["east", "west"] {
        let (ok, out) = openssl(
            &p.path(""),
            &[
                "verify",
                "-CAfile",
                "org/root-cert.pem",
                &format!("out/pki/{c}/ca-cert.pem"),
            ],
        );
        assert!(ok, "{c}: {out}");
        assert!(
            p.read(&format!("out/pki/{c}/cert-chain.pem"))
                .ends_with(&cert)
        );
    }
    // The key is never exported, printed or kept in the plan's files.
    assert!(!o.stdout.contains("PRIVATE") && !o.stderr.contains("PRIVATE"));
    assert!(!p.path("out/pki/root-key.pem").exists());
    // Editing the key file (here: another key) is caught before anything runs.
    let (_, other) = org_ca(true, SIGN, (2090, 1, 1));
    std::fs::write(p.path("org/root-key.pem"), other).unwrap();
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("org/root-key.pem is not the key of org/root-cert.pem")
            && o.stderr.contains("plan.toml:"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_root_that_cannot_serve_is_refused_before_anything_runs_with_its_location() {
    let (good, good_key) = org_ca(true, SIGN, (2090, 1, 1));
    let cases: Vec<(String, String, &str)> = vec![
        {
            let (c, k) = org_ca(false, SIGN, (2090, 1, 1));
            (c, k, "org/root-cert.pem:1: the certificate is not a CA")
        },
        {
            let (c, k) = org_ca(
                true,
                &[rcgen::KeyUsagePurpose::DigitalSignature],
                (2090, 1, 1),
            );
            (
                c,
                k,
                "may not sign certificates (its keyUsage lacks keyCertSign)",
            )
        },
        {
            let (c, k) = org_ca(true, SIGN, (2020, 1, 1));
            (
                c,
                k,
                "the certificate is valid from 2019-01-01 to 2020-01-01, not now",
            )
        },
        {
            // Expires before a 400-day intermediate made today would.
            let soon = ::time::OffsetDateTime::now_utc() + ::time::Duration::days(100);
            let (c, k) = org_ca(true, SIGN, (soon.year(), soon.month() as u8, soon.day()));
            (
                c,
                k,
                "before intermediates made today for intermediate_days = 400 would",
            )
        },
        (
            good.clone(),
            org_ca(true, SIGN, (2090, 1, 1)).1,
            "org/root-key.pem is not the key of org/root-cert.pem",
        ),
        (good_key.clone(), good_key.clone(), "not a CERTIFICATE"),
        (
            "not a certificate\n".into(),
            good_key.clone(),
            "org/root-cert.pem holds no PEM certificate",
        ),
        (
            good.clone(),
            "garbage\n".into(),
            "org/root-key.pem:1: no private key that parses",
        ),
    ];
    for (cert, key, want) in cases {
        let p = with_own_root(&cert, &key);
        let o = p.run(&["build", "--offline"]);
        assert_eq!(o.code, 2, "{want}: {}", o.stderr);
        assert!(o.stderr.contains(want), "{want}: {}", o.stderr);
        assert!(o.stderr.contains("plan.toml:"), "{want}: {}", o.stderr);
        assert!(!o.stderr.contains("PRIVATE KEY"), "{}", o.stderr);
        assert!(!p.path("cache").exists());
    }
    // Only one of the two.
    let p = Project::with_plan(&plan("ecdsa-p256").replace(
        "intermediate_days = 400",
        "intermediate_days = 400\nroot_cert = \"org/root-cert.pem\"",
    ));
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("root_cert and root_key go together"),
        "{}",
        o.stderr
    );
}

/// A CA signed by `issuer` (cert PEM, key PEM), as an organisation issues
/// a cluster's intermediate.
fn org_signed(issuer: &(String, String), cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = SIGN.to_vec();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2080, 1, 1);
    let ik = rcgen::KeyPair::from_pem(&issuer.1).unwrap();
    let is = rcgen::Issuer::from_ca_cert_pem(&issuer.0, ik).unwrap();
    (p.signed_by(&key, &is).unwrap().pem(), key.serialize_pem())
}

#[test]
fn intermediates_an_organisation_signed_are_checked_up_to_the_root_and_used() {
    let root = org_ca(true, SIGN, (2090, 1, 1));
    let issuing = org_signed(&root, "Org Issuing CA");
    let east = org_signed(&issuing, "east intermediate");
    let west = org_signed(&root, "west intermediate");
    let pki = "intermediate_days = 400\nroot_cert = \"org/root-cert.pem\"\n\n[pki.intermediates.east]\ncert = \"org/east.pem\"\nkey = \"org/east-key.pem\"\nchain = \"org/east-chain.pem\"\n\n[pki.intermediates.west]\ncert = \"org/west.pem\"\nkey = \"org/west-key.pem\"\n";
    let project = |east: &(String, String), pki: &str| {
        let p = Project::with_plan(&plan("ecdsa-p256").replace("intermediate_days = 400", pki));
        std::fs::create_dir_all(p.path("org")).unwrap();
        for (f, t) in [
            ("org/root-cert.pem", &root.0),
            ("org/east.pem", &east.0),
            ("org/east-key.pem", &east.1),
            ("org/east-chain.pem", &format!("{}{}", east.0, issuing.0)),
            ("org/west.pem", &west.0),
            ("org/west-key.pem", &west.1),
        ] {
            std::fs::write(p.path(f), t).unwrap();
        }
        p
    };
    let p = project(&east, pki);
    p.build();
    assert_eq!(p.read("out/pki/east/ca-cert.pem"), east.0);
    assert_eq!(p.read("out/pki/east/root-cert.pem"), root.0);
    assert!(
        !p.path("state/identity/root-key.pem").exists(),
        "no root key was given"
    );
    for c in ["east", "west"] {
        let (ok, out) = openssl(
            &p.path(""),
            &[
                "verify",
                "-CAfile",
                "org/root-cert.pem",
                "-untrusted",
                &format!("out/pki/{c}/cert-chain.pem"),
                &format!("out/pki/{c}/ca-cert.pem"),
            ],
        );
        assert!(ok, "{c}: {out}");
    }
    let chain = p.read("out/pki/east/cert-chain.pem");
    assert!(
        chain.starts_with(&east.0) && chain.ends_with(&root.0),
        "{chain}"
    );
    // Signed by another root: refused, naming the link.
    let stranger = org_ca(true, SIGN, (2090, 1, 1));
    let bad = org_signed(&stranger, "east intermediate");
    let p = project(&bad, &pki.replace("chain = \"org/east-chain.pem\"\n", ""));
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("org/east.pem:1: the certificate is not signed by org/root-cert.pem:1")
            && o.stderr.contains("plan.toml:"),
        "{}",
        o.stderr
    );
    // No root key, and west has no intermediate of its own.
    let only_east = pki.split("\n[pki.intermediates.west]").next().unwrap();
    let p = project(&east, only_east);
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("no root_key to sign intermediates for west"),
        "{}",
        o.stderr
    );
}
