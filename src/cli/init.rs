//! `mesh init`: write a commented plan.toml for the mesh the flags
//! describe, refusing to overwrite one without `--force`.
//!
//! The plan is text assembled here, not a serialized struct, so that every
//! table carries the comments a new user needs (what the key does, which
//! values it takes); a test parses it, validates it and builds it offline
//! for each combination of flags, so the comments cannot promise a plan
//! that does not build. Clusters are named `east`, `west`, `north`,
//! `south`, `central`, then `c6`, `c7`…; each gets its own network and
//! subnets that overlap nothing (pods `10.<11+i>.0.0/16`, services
//! `10.<111+i>.0.0/16`: the kind network is in 172.16.0.0/12).

use super::{Exit, fail};
use clap::ValueEnum;
use std::fmt::Write as _;
use std::path::Path;

/// What `mesh init`'s flags ask for.
#[derive(Clone, Debug)]
pub struct Init {
    pub mode: Mode,
    pub topology: Topology,
    pub cni: Cni,
    pub clusters: u8,
    pub provider: Provider,
}

/// `--mode`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Sidecar,
    Ambient,
}

/// `--topology`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    MultiPrimary,
    PrimaryRemote,
}

/// `--cni` (kind clusters only).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cni {
    Cilium,
    Kindnet,
}

/// `--provider`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Kind,
    Kubeconfig,
}

const NAMES: [&str; 5] = ["east", "west", "north", "south", "central"];

fn name(i: usize) -> String {
    NAMES
        .get(i)
        .map_or_else(|| format!("c{}", i + 1), |n| n.to_string())
}

/// `text`, its comment aligned at column 30 (or one space after).
fn commented(w: &mut String, text: &str, comment: &str) {
    let pad = 30usize.saturating_sub(text.len()).max(1);
    writeln!(w, "{text}{}# {comment}", " ".repeat(pad)).unwrap();
}

/// The plan text for `init`. Errors are flag combinations Istio or mesh
/// do not support, in words.
pub fn plan_text(init: &Init) -> Result<String, String> {
    let n = init.clusters as usize;
    if init.mode == Mode::Ambient && init.topology == Topology::PrimaryRemote {
        return Err(
            "ambient mode supports multi-primary only (--topology multi-primary)".to_string(),
        );
    }
    if init.topology == Topology::PrimaryRemote && n < 2 {
        return Err("primary-remote needs at least 2 clusters (--clusters 2)".to_string());
    }
    let (mode, topology) = (
        match init.mode {
            Mode::Sidecar => "sidecar",
            Mode::Ambient => "ambient",
        },
        match init.topology {
            Topology::MultiPrimary => "multi-primary",
            Topology::PrimaryRemote => "primary-remote",
        },
    );
    let kind = init.provider == Provider::Kind;
    let mut s = String::new();
    let w = &mut s;
    writeln!(
        w,
        "# A mesh plan written by `mesh init`: {n} cluster{} in {topology}, {mode} mode.",
        if n == 1 { "" } else { "s" }
    )
    .unwrap();
    w.push_str(
        "# `mesh build --offline` renders everything into out/; `mesh build` brings it up;\n\
         # `mesh verify` proves traffic crosses the clusters. README.md documents every key.\n\n",
    );
    w.push_str("[mesh]\n");
    commented(w, "id = \"mesh1\"", "the mesh ID (global.meshID)");
    commented(
        w,
        "istio = \"1.28.0\"",
        "Istio release, 1.24 or later (ambient: 1.27 or later)",
    );
    commented(
        w,
        &format!("mode = \"{mode}\""),
        "\"sidecar\" | \"ambient\"",
    );
    commented(
        w,
        &format!("topology = \"{topology}\""),
        "\"multi-primary\" | \"primary-remote\"",
    );
    w.push('\n');
    w.push_str(
        "[pki]\n\
         algorithm = \"ecdsa-p256\"      # \"ecdsa-p256\" | \"ecdsa-p384\" | \"rsa-2048\" | \"rsa-4096\"\n\
         root_days = 3650              # the root CA's validity; it is made once and kept in state/\n\
         intermediate_days = 730       # each cluster's intermediate CA\n\n",
    );
    for i in 0..n {
        let c = name(i);
        writeln!(w, "[clusters.{c}]").unwrap();
        if kind {
            w.push_str(
                "provider = \"kind\"             # mesh creates (and destroys) this kind cluster\n",
            );
        } else {
            w.push_str("provider = \"kubeconfig\"       # an existing cluster: mesh never creates or deletes it\n");
            commented(
                w,
                &format!("context = \"{c}\""),
                "its context in $KUBECONFIG (or set kubeconfig = \"path\")",
            );
        }
        commented(
            w,
            &format!("network = \"network{}\"", i + 1),
            "each cluster its own Istio network",
        );
        if kind {
            writeln!(
                w,
                "pod_subnet = \"10.{}.0.0/16\"\nservice_subnet = \"10.{}.0.0/16\"",
                11 + i,
                111 + i
            )
            .unwrap();
            commented(w, "workers = 1", "worker nodes besides the control plane");
            let cni = match init.cni {
                Cni::Cilium => "cilium",
                Cni::Kindnet => "kindnet",
            };
            commented(
                w,
                &format!("cni = \"{cni}\""),
                "\"cilium\" | \"kindnet\" (then MetalLB)",
            );
        }
        if init.topology == Topology::PrimaryRemote {
            if i == 0 {
                w.push_str("role = \"primary\"              # runs the control plane of the remotes below\n");
                if !kind {
                    w.push_str(
                        "gateway_ip = \"192.0.2.10\"     # REPLACE: the address of this cluster's east-west gateway,\n\
                         \x20                             # which the remotes reach istiod through\n",
                    );
                }
            } else {
                writeln!(
                    w,
                    "role = \"remote\"               # its istiod runs in {}",
                    name(0)
                )
                .unwrap();
            }
        }
        w.push('\n');
    }
    let placement = |f: &dyn Fn(usize) -> &'static str| {
        (0..n)
            .map(|i| format!("{} = \"{}\"", name(i), f(i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        w,
        "# Sample apps. helloworld's v1 and v2 alternate across the clusters, so a\n\
         # request answered by the other version crossed clusters.\n\
         [apps.helloworld]\n\
         manifest = \"tasks/apps/helloworld.yaml\"   # built in; a path of yours works too\n\
         namespace = \"sample\"\n\
         placement = {{ {} }}\n\
         verify = \"/hello\"             # mesh verify requests this path from every cluster\n\n\
         [apps.curl]\n\
         manifest = \"tasks/apps/curl.yaml\"\n\
         namespace = \"sample\"\n\
         placement = {{ {} }}\n\n\
         [verify]\n\
         client = \"curl\"               # the app whose pods send mesh verify's requests\n\
         requests = 20                 # per target app, from each cluster",
        placement(&|i| if i % 2 == 0 { "v1" } else { "v2" }),
        placement(&|_| "*"),
    )
    .unwrap();
    Ok(s)
}

/// `mesh init`: write `path` unless it exists (or `force`).
pub fn run(path: &Path, init: &Init, force: bool) -> Result<(), Exit> {
    let text = plan_text(init).map_err(|e| fail(2, format!("error: {e}")))?;
    if path.exists() && !force {
        return Err(fail(
            1,
            format!(
                "error: {} exists; mesh init does not overwrite a plan\n  hint: --force replaces it",
                path.display()
            ),
        ));
    }
    crate::cache::write_file(path, text.as_bytes(), 0o644)
        .map_err(|e| fail(1, format!("error: cannot write {}: {e}", path.display())))?;
    eprintln!(
        "mesh init: wrote {} ({} cluster{}); next: mesh build --offline, or mesh doctor then mesh build",
        path.display(),
        init.clusters,
        if init.clusters == 1 { "" } else { "s" }
    );
    Ok(())
}
