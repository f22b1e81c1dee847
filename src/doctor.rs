//! `mesh doctor`: is this machine ready for a live build of this plan?
//!
//! Checks only what the plan needs: for kind clusters Docker's daemon and
//! the memory it may use (about [`GIB_PER_NODE`] per node, plus one), kind's
//! version (at least [`KIND_MIN`]) and the inotify limits kind documents
//! (many nodes exhaust the defaults: "too many open files"); helm's version
//! always (at least [`HELM_MIN`], Helm 4 included); for each existing cluster
//! its kubeconfig and context. Every failed check says what is wrong and the
//! command or step that fixes it.
//!
//! `mesh build` runs them first ([`preflight`]): tools on PATH, contexts and
//! inotify without starting a process (so a missing tool fails the build in
//! milliseconds); then the versions, asked once per tool binary (remembered
//! by path, size and mtime in `cache/tool-versions.json`); and Docker's
//! daemon and memory only when a kind cluster is about to be created.

use crate::plan::{Plan, Provider};
use crate::providers::{Tool, run};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// The version found, or what is wrong.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

const QUICK: Duration = Duration::from_secs(15);

/// The oldest helm mesh works with: `uninstall --ignore-not-found` came in
/// 3.13.
pub const HELM_MIN: semver::Version = semver::Version::new(3, 13, 0);
/// The oldest kind mesh works with: the first release whose node images
/// include Kubernetes 1.34 (the default `kind_node`).
pub const KIND_MIN: semver::Version = semver::Version::new(0, 30, 0);
/// Memory Docker should have per kind node (sidecar Istio, Cilium).
pub const GIB_PER_NODE: f64 = 1.5;
/// kind's documented inotify settings for several clusters.
pub const INOTIFY: &[(&str, u64)] = &[
    ("fs.inotify.max_user_watches", 524288),
    ("fs.inotify.max_user_instances", 512),
];

/// The first semantic version (`v` optional) in a tool's version output:
/// `v3.19.0+g3d8990f`, `kind v0.30.0 go1.24.6 linux/amd64`.
pub fn parse_version(s: &str) -> Option<semver::Version> {
    s.split_whitespace()
        .find_map(|w| semver::Version::parse(w.strip_prefix('v').unwrap_or(w)).ok())
}

fn version_check(what: &str, out: &str, min: semver::Version, hint: &str) -> Check {
    let line = first_line(out);
    match parse_version(&line) {
        Some(v) if v >= min => Check {
            what: what.into(),
            ok: true,
            detail: line,
            hint: None,
        },
        Some(v) => Check {
            what: what.into(),
            ok: false,
            detail: format!(
                "{}.{}.{} is too old: mesh needs {min} or newer",
                v.major, v.minor, v.patch
            ),
            hint: Some(hint.into()),
        },
        None => Check {
            what: what.into(),
            ok: false,
            detail: format!("cannot read a version in {line:?}"),
            hint: Some(hint.into()),
        },
    }
}

const HELM_HINT: &str = "install helm 3.13+ or 4: https://helm.sh/docs/intro/install/";
const KIND_HINT: &str = "upgrade kind: go install sigs.k8s.io/kind@v0.30.0 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)";

/// helm's and (for kind clusters) kind's versions, each asked of its
/// binary once: `memo` remembers the answer by the binary's path, size and
/// mtime.
pub async fn versions(plan: &Plan, memo: Option<&std::path::Path>) -> Vec<Check> {
    let kind = plan.clusters.values().any(|c| c.provider == Provider::Kind);
    let mut asks = vec![(Tool::Helm, vec!["version", "--short"], HELM_MIN, HELM_HINT)];
    if kind {
        asks.push((Tool::Kind, vec!["version"], KIND_MIN, KIND_HINT));
    }
    let mut known: std::collections::BTreeMap<String, String> = memo
        .and_then(|m| std::fs::read(m).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut learned = false;
    for (t, args, min, hint) in asks {
        let what = format!("{} version", t.name());
        let id = t.locate().ok().and_then(|p| {
            let m = std::fs::metadata(&p).ok()?;
            let mtime = m
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            Some(format!("{}:{}:{}", p.display(), m.len(), mtime.as_nanos()))
        });
        let answer = match id.as_ref().and_then(|id| known.get(id)) {
            Some(a) => Ok(a.clone()),
            None => run(t, &args, QUICK).await,
        };
        match answer {
            Ok(text) => {
                let c = version_check(&what, &text, min, hint);
                if let (true, Some(id)) = (c.ok, id) {
                    learned |= known.insert(id, text).is_none();
                }
                out.push(c);
            }
            Err(e) => out.push(Check {
                what,
                ok: false,
                detail: e.to_string(),
                hint: Some(hint.into()),
            }),
        }
    }
    if let (true, Some(m)) = (learned, memo) {
        // Best effort: a lost memo only means asking again.
        use std::os::unix::fs::DirBuilderExt;
        if let Some(dir) = m.parent() {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        let _ = crate::cache::write_file(
            m,
            &serde_json::to_vec(&known).expect("a map serializes"),
            0o644,
        );
    }
    out
}

/// Docker's daemon answers, and may use enough memory for `nodes` kind
/// nodes.
pub async fn docker(nodes: usize) -> Vec<Check> {
    let hint =
        "start the Docker daemon (or install Docker: https://docs.docker.com/engine/install/)";
    let info = run(
        Tool::Docker,
        &["info", "--format", "{{.ServerVersion}} {{.MemTotal}}"],
        QUICK,
    )
    .await;
    let text = match info {
        Ok(t) => t,
        Err(e) => {
            return vec![Check {
                what: "docker daemon".into(),
                ok: false,
                detail: e.to_string(),
                hint: Some(hint.into()),
            }];
        }
    };
    let mut words = text.split_whitespace();
    let version = words.next().unwrap_or("").to_string();
    let mut out = vec![Check {
        what: "docker daemon".into(),
        ok: true,
        detail: version,
        hint: None,
    }];
    let need = GIB_PER_NODE * nodes as f64 + 1.0;
    let have = words
        .next()
        .and_then(|m| m.parse::<u64>().ok())
        .map(|b| b as f64 / (1u64 << 30) as f64);
    out.push(match have {
        Some(have) if have + 0.05 >= need => Check {
            what: "docker memory".into(),
            ok: true,
            detail: format!("{have:.1} GiB for {nodes} kind nodes (about {need:.1} GiB needed)"),
            hint: None,
        },
        Some(have) => Check {
            what: "docker memory".into(),
            ok: false,
            detail: format!("{have:.1} GiB for {nodes} kind nodes: about {need:.1} GiB needed"),
            hint: Some(format!(
                "give Docker at least {:.0} GiB (Docker Desktop: Settings > Resources > Memory), or plan fewer clusters or workers",
                need.ceil()
            )),
        },
        None => Check {
            what: "docker memory".into(),
            ok: true,
            detail: "unknown (docker info did not say)".into(),
            hint: None,
        },
    });
    out
}

/// The kind nodes a plan runs: a control plane plus its workers, per kind
/// cluster.
pub fn kind_nodes(plan: &Plan) -> usize {
    plan.clusters
        .values()
        .filter(|c| c.provider == Provider::Kind)
        .map(|c| 1 + c.workers as usize)
        .sum()
}

/// The inotify limits kind documents, read from `root` (`/proc/sys` on
/// Linux; elsewhere the Docker VM's limits apply and nothing is checked).
pub fn inotify(root: &std::path::Path) -> Vec<Check> {
    INOTIFY
        .iter()
        .filter_map(|(key, want)| {
            let file = root.join(key.replace('.', "/"));
            let have: u64 = std::fs::read_to_string(&file).ok()?.trim().parse().ok()?;
            Some(if have >= *want {
                Check {
                    what: (*key).into(),
                    ok: true,
                    detail: have.to_string(),
                    hint: None,
                }
            } else {
                Check {
                    what: (*key).into(),
                    ok: false,
                    detail: format!(
                        "{have}: kind needs {want} for several clusters (\"too many open files\")"
                    ),
                    hint: Some(format!(
                        "sudo sysctl {key}={want} (and add it to /etc/sysctl.d/ to keep it)"
                    )),
                }
            })
        })
        .collect()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// The first pre-flight of `mesh build`: the tools the plan needs are
/// present, existing clusters' contexts exist, inotify allows several kind
/// clusters. No process is started, so it takes microseconds.
pub fn preflight(plan: &Plan) -> Vec<Check> {
    let kind = plan.clusters.values().any(|c| c.provider == Provider::Kind);
    let mut tools = vec![Tool::Helm];
    if kind {
        tools.extend([Tool::Docker, Tool::Kind]);
    }
    let mut out: Vec<Check> = tools
        .into_iter()
        .map(|t| match t.locate() {
            Ok(p) => Check {
                what: t.name().into(),
                ok: true,
                detail: p.display().to_string(),
                hint: None,
            },
            Err(crate::providers::ToolError::NotFound { hint, .. }) => Check {
                what: t.name().into(),
                ok: false,
                detail: "not found on PATH".into(),
                hint: Some(hint.into()),
            },
            Err(e) => Check {
                what: t.name().into(),
                ok: false,
                detail: e.to_string(),
                hint: None,
            },
        })
        .collect();
    if kind {
        out.extend(inotify(&proc_sys()));
    }
    out.extend(contexts(plan));
    out
}

/// Where the kernel's settings are read (a test may point it elsewhere
/// with `MESH_PROC_SYS`).
const PROC_SYS: &str = "/proc/sys";

fn proc_sys() -> std::path::PathBuf {
    std::env::var_os("MESH_PROC_SYS")
        .map(Into::into)
        .unwrap_or_else(|| PROC_SYS.into())
}

/// Run every check the plan needs.
pub async fn checks(plan: &Plan) -> Vec<Check> {
    let kind = plan.clusters.values().any(|c| c.provider == Provider::Kind);
    let (mut out, versions) = if kind {
        futures_util::future::join(docker(kind_nodes(plan)), versions(plan, None)).await
    } else {
        (Vec::new(), versions(plan, None).await)
    };
    out.extend(versions);
    if kind {
        out.extend(inotify(&proc_sys()));
    }
    out.extend(contexts(plan));
    out
}

/// Existing clusters: the kubeconfig is readable and holds the context.
fn contexts(plan: &Plan) -> Vec<Check> {
    let mut out = Vec::new();
    for c in plan
        .clusters
        .values()
        .filter(|c| c.provider == Provider::Kubeconfig)
    {
        let ctx = c.context.clone().unwrap_or_default();
        let target = crate::access::Target::of(c);
        let what = format!("kubeconfig context {ctx} (cluster {})", c.name);
        let check = match target.kubeconfig_text() {
            Err(e) => Check {
                what,
                ok: false,
                detail: e.message,
                hint: Some("set clusters.<name>.kubeconfig, or KUBECONFIG".into()),
            },
            Ok(text) => match crate::k8s::server_and_ca(&text, Some(&ctx)) {
                Ok((server, _)) => Check {
                    what,
                    ok: true,
                    detail: server,
                    hint: None,
                },
                Err(e) => Check {
                    what,
                    ok: false,
                    detail: e.to_string(),
                    hint: Some("kubectl config get-contexts lists the contexts you have".into()),
                },
            },
        };
        out.push(check);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_as_the_tools_print_them() {
        let v = |s: &str| parse_version(s).map(|v| (v.major, v.minor, v.patch));
        assert_eq!(v("v3.19.0+g3d8990f"), Some((3, 19, 0)));
        assert_eq!(v("v4.0.1+g12500dd"), Some((4, 0, 1)));
        assert_eq!(v("kind v0.30.0 go1.24.6 linux/amd64"), Some((0, 30, 0)));
        assert_eq!(v("no version here"), None);
        assert!(!version_check("helm version", "v3.12.3+gabc", HELM_MIN, "h").ok);
        assert!(version_check("helm version", "v3.13.0+gabc", HELM_MIN, "h").ok);
        assert!(!version_check("helm version", "v3.13.0-rc.1+gabc", HELM_MIN, "h").ok);
        assert!(version_check("helm version", "v4.0.0+gabc", HELM_MIN, "h").ok);
    }

    #[test]
    fn inotify_limits_below_kinds_advice_fail_with_the_sysctl_to_run() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("fs/inotify");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("max_user_watches"), "8192\n").unwrap();
        std::fs::write(dir.join("max_user_instances"), "512\n").unwrap();
        let checks = inotify(d.path());
        assert_eq!(checks.len(), 2);
        let bad: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].what, "fs.inotify.max_user_watches");
        assert_eq!(
            bad[0].hint.as_deref().unwrap().split(" (").next(),
            Some("sudo sysctl fs.inotify.max_user_watches=524288")
        );
        // Not Linux (no such files): nothing to check.
        assert!(inotify(&d.path().join("nowhere")).is_empty());
    }
}
