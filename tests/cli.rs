//! The `mesh` binary end to end in temp directories: caching, incremental
//! rebuilds, crash safety, corruption, the build lock, secrets hygiene, and
//! the read-only commands.

mod common;
use common::Project;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

/// The default plan's pure tasks: net.alloc, the PKI (3), and per cluster
/// the renders of kind, cni, cacerts, istio, gateway, the `sample`
/// namespace and two apps.
const PURE_TASKS: usize = 20;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// aws-lc's CPU-jitter entropy costs each mesh process 20–50 ms of CPU at
/// its first TLS handshake (a third of a live no-op at 8 clusters);
/// `.cargo/config.toml` builds it out, and this shows that took effect:
/// aws-lc is linked (its `RAND_bytes` is there) but the jitter collector
/// is not.
#[test]
fn tls_is_built_without_cpu_jitter_entropy() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_mesh")).unwrap();
    // std's own (optimised) search, not a byte loop built without opt-level.
    let text = String::from_utf8_lossy(&bin);
    assert!(
        text.contains("RAND_bytes"),
        "aws-lc's symbols are not in the binary"
    );
    assert!(
        !text.contains("jent_entropy_init"),
        "aws-lc was built with CPU jitter entropy: is AWS_LC_SYS_NO_JITTER_ENTROPY in .cargo/config.toml?"
    );
}

#[test]
fn first_build_runs_all_second_is_all_cached() {
    let p = Project::default_plan();
    let first = p.build();
    assert_eq!(
        first.with("ran").len(),
        PURE_TASKS,
        "{:?}",
        first.statuses()
    );
    let j = first.json();
    assert!(j["wall_ms"].as_f64().unwrap() > 0.0);
    assert!(j["critical_path_ms"].as_f64().unwrap() > 0.0);
    assert!(j["tasks"][0]["reason"].is_string());
    let second = p.build();
    assert_eq!(second.with("cached").len(), PURE_TASKS);
    assert!(second.with("ran").is_empty());
}

#[test]
fn the_root_ca_survives_clean_a_lost_cache_and_unrelated_pki_edits() {
    // The root is the mesh's identity: kept in state/, not in the cache.
    let p = Project::default_plan();
    p.build();
    let root = p.read("out/pki/root-cert.pem");
    assert_eq!(p.read("state/identity/root-cert.pem"), root);
    assert_eq!(mode(&p.path("state/identity/root-key.pem")), 0o600);
    assert_eq!(mode(&p.path("state/identity")), 0o700);
    let same = |what: &str| assert_eq!(p.read("out/pki/root-cert.pem"), root, "{what}");
    // An intermediate's validity is not the root's business.
    p.edit("plan.toml", |t| {
        t.replace("intermediate_days = 730", "intermediate_days = 365")
    });
    let o = p.build();
    assert!(
        !o.with("ran").contains(&"pki.root".to_string()),
        "{:?}",
        o.with("ran")
    );
    assert_eq!(o.with("ran").len(), 2 + 2, "{:?}", o.with("ran"));
    same("intermediate_days edit");
    assert_eq!(p.run(&["clean"]).code, 0);
    assert!(p.path("state/identity/root-key.pem").exists());
    p.build();
    same("mesh clean");
    std::fs::remove_dir_all(p.path("cache")).unwrap();
    std::fs::remove_dir_all(p.path("out")).unwrap();
    p.build();
    same("a deleted cache");
    // With no live cluster owned, a root parameter edit makes a new root.
    p.edit("plan.toml", |t| {
        t.replace("root_days = 3650", "root_days = 3000")
    });
    let o = p.build();
    assert!(o.with("ran").contains(&"pki.root".to_string()));
    assert_ne!(p.read("out/pki/root-cert.pem"), root);
    assert_eq!(
        p.read("state/identity/root-cert.pem"),
        p.read("out/pki/root-cert.pem")
    );
}

#[test]
fn destroy_forgets_the_identity_only_when_asked_by_name() {
    let p = Project::default_plan();
    p.build();
    let root = p.read("state/identity/root-cert.pem");
    // Plain destroy keeps it.
    let o = p.run(&["destroy", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(p.path("state/identity/root-key.pem").exists());
    // Named but not confirmed (no terminal, no --yes), or a dry run: kept.
    let o = p.run(&["destroy", "--forget-identity"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("--yes"), "{}", o.stderr);
    let o = p.run(&["destroy", "--forget-identity", "--dry-run"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("root CA"), "{}", o.stderr);
    assert_eq!(p.read("state/identity/root-cert.pem"), root);
    // Named and confirmed: gone, and the next build mints a new root.
    let o = p.run(&["destroy", "--forget-identity", "--yes"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("forgot the mesh's identity"),
        "{}",
        o.stderr
    );
    assert!(!p.path("state/identity").exists());
    let o = p.build();
    assert!(o.with("ran").contains(&"pki.root".to_string()));
    assert_ne!(p.read("state/identity/root-cert.pem"), root);
}

#[test]
fn a_requested_root_rotation_goes_through_its_three_phases_to_the_new_root() {
    let p = Project::default_plan();
    p.build();
    let old = p.read("state/identity/root-cert.pem");
    let o = p.run(&["build", "--offline", "--rotate-root"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for phase in ["phase 1 of 3", "phase 2 of 3", "phase 3 of 3"] {
        assert!(o.stderr.contains(phase), "{phase}: {}", o.stderr);
    }
    let new = p.read("state/identity/root-cert.pem");
    assert_ne!(new, old);
    assert!(!p.path("state/identity/rotation.json").exists());
    assert_eq!(p.read("out/pki/root-cert.pem"), new);
    assert_eq!(
        p.read("out/pki/east/root-cert.pem"),
        new,
        "only the new root trusted"
    );
    assert!(p.read("out/pki/east/cert-chain.pem").ends_with(&new));
    // The next build keeps it: nothing but the root's own record reruns.
    let o = p.build();
    assert_eq!(p.read("state/identity/root-cert.pem"), new);
    assert!(
        !o.with("ran")
            .iter()
            .any(|t| t.starts_with("pki.intermediate")),
        "{:?}",
        o.with("ran")
    );
}

#[test]
fn a_rotation_left_unfinished_is_resumed_and_a_build_keeps_its_phase() {
    let p = Project::default_plan();
    p.build();
    let old = p.read("state/identity/root-cert.pem");
    // Phase 1 recorded, as a rotation killed during its first build leaves it.
    let o = p.run(&["build", "--offline", "--rotate-root"]);
    assert_eq!(o.code, 0);
    let new = p.read("state/identity/root-cert.pem");
    let rotation = serde_json::json!({"phase": 1, "params": {"algorithm": "ecdsa-p256", "root_days": 3650},
        "cert_pem": old, "key_pem": p.read("state/identity/root-key.pem")});
    // (Rotating back to the old root, from the new one.)
    std::fs::write(p.path("state/identity/rotation.json"), rotation.to_string()).unwrap();
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("phase 1 of 3"), "{}", o.stderr);
    let bundle = p.read("out/pki/east/root-cert.pem");
    assert!(
        bundle.contains(new.trim()) && bundle.contains(old.trim()),
        "both trusted: {bundle}"
    );
    assert_eq!(
        p.read("out/pki/root-cert.pem"),
        new,
        "still signing with the current root"
    );
    let o = p.run(&["build", "--offline", "--rotate-root"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("resuming at phase 1 of 3"),
        "{}",
        o.stderr
    );
    assert_eq!(p.read("state/identity/root-cert.pem"), old);
    assert_eq!(p.read("out/pki/east/root-cert.pem"), old);
}

#[test]
fn completions_and_the_man_page_cover_every_command_and_need_no_plan() {
    let empty = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
            .args(args)
            .current_dir(empty.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let text = run(&["completions", shell]);
        for word in [
            "build",
            "destroy",
            "verify",
            "rotate-root",
            "forget-identity",
        ] {
            assert!(text.contains(word), "{shell}: {word}");
        }
    }
    // bash sources the bash script without error and knows how to
    // complete `mesh` afterwards.
    let script = empty
        .path()
        .join("..")
        .join(format!("mesh-completion-{}.bash", std::process::id()));
    std::fs::write(&script, run(&["completions", "bash"])).unwrap();
    let o = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(r#"set -e; source "$1"; complete -p mesh"#)
        .arg("bash")
        .arg(&script)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&script);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success() && err.is_empty(), "{out}{err}");
    assert!(out.contains("complete") && out.contains(" mesh"), "{out}");
    let man = run(&["man"]);
    assert!(man.contains(".TH mesh 1"), "{man}");
    for word in ["build", "destroy", "adopt", "completions"] {
        assert!(man.contains(word), "{word}");
    }
    assert!(
        std::fs::read_dir(empty.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn editing_a_template_reruns_exactly_its_readers() {
    let p = Project::default_plan();
    p.build();
    p.edit("tasks/kind/cluster.yaml.j2", |t| {
        t.replace("kind: Cluster\n", "kind: Cluster\n# edited\n")
    });
    let o = p.build();
    assert_eq!(o.with("ran"), ["render.kind:east", "render.kind:west"]);
    assert!(p.read("out/east/kind-cluster.yaml").contains("edited"));
    // The reason names the file.
    let reason = o.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "render.kind:east")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("file:tasks/kind/cluster.yaml.j2"),
        "{reason}"
    );
}

#[test]
fn editing_an_app_manifest_reruns_only_that_app() {
    let p = Project::default_plan();
    p.build();
    p.edit("tasks/apps/helloworld.yaml", |t| {
        t.replace("cpu: 100m", "cpu: 50m")
    });
    let o = p.build();
    assert_eq!(
        o.with("ran"),
        ["render.app:helloworld:east", "render.app:helloworld:west"]
    );
}

#[test]
fn editing_one_plan_value_reruns_exactly_the_tasks_that_read_it() {
    let p = Project::default_plan();
    p.build();
    p.edit("plan.toml", |t| t.replacen("workers = 1", "workers = 2", 1));
    let why = p.run(&["why", "render.kind:east"]);
    assert_eq!(why.code, 0);
    assert!(
        why.stdout.contains("changed    plan:clusters.east.workers"),
        "{}",
        why.stdout
    );
    let plan = p.run(&["plan", "--offline"]);
    assert!(plan.stdout.contains("1 would run"), "{}", plan.stdout);
    let o = p.build();
    assert_eq!(o.with("ran"), ["render.kind:east"]);
    assert_eq!(
        p.read("out/east/kind-cluster.yaml")
            .matches("role: worker")
            .count(),
        2
    );

    // A mode switch touches what reads the mode, and nothing else.
    p.edit("plan.toml", |t| {
        t.replace("mode = \"sidecar\"", "mode = \"ambient\"")
    });
    let o = p.build();
    let ran = o.with("ran");
    assert!(ran.contains(&"render.istio:east".to_string()));
    assert!(ran.contains(&"render.gateway:west".to_string()));
    assert!(ran.contains(&"render.app:curl:east".to_string()));
    assert!(
        !ran.iter().any(|t| t.starts_with("pki.")
            || t.starts_with("render.kind")
            || t.starts_with("render.cacerts")),
        "{ran:?}"
    );
    assert!(
        p.read("out/east/istio/istiod-values.yaml")
            .contains("AMBIENT_ENABLE_MULTI_NETWORK")
    );
}

#[test]
fn reformatting_and_reordering_the_plan_reruns_nothing() {
    let p = Project::default_plan();
    p.build();
    // Same plan: tables reordered, inline tables exploded, comments and
    // blank lines changed, keys reordered.
    p.write(
        "plan.toml",
        r#"
[apps.curl]
placement.west = "*"
placement.east = "*"
namespace = "sample"
manifest = "tasks/apps/curl.yaml"

[clusters.west]
cni = "cilium"
workers = 1
service_subnet = "172.22.0.0/16"
pod_subnet   =   "10.21.0.0/16"
network = "network2"
provider = "kind"

[pki]
intermediate_days = 730
root_days = 3650
algorithm = "ecdsa-p256"

[mesh]
topology = "multi-primary"
mode = 'sidecar'
istio = "1.28.0"
id = "mesh1"

[apps.helloworld]
placement = {west = "v2", east = "v1"}
namespace = "sample"
manifest = "tasks/apps/helloworld.yaml"

[clusters.east]
cni = "cilium"
workers = 1
service_subnet = "172.21.0.0/16"
pod_subnet = "10.11.0.0/16"
network = "network1"
provider = "kind"
"#,
    );
    let o = p.build();
    assert_eq!(o.with("ran"), Vec::<String>::new());
    assert_eq!(o.with("cached").len(), PURE_TASKS);
}

/// Set a file's mtime to `t`, in place (its ctime moves: no user call can
/// set that).
fn set_mtime(path: &std::path::Path, t: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Flip one byte of `path` in place: same inode, same size, and its mtime
/// put back as it was.
fn flip_keeping_size_and_mtime(path: &std::path::Path) {
    let m = std::fs::metadata(path).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    bytes[10] ^= 0x20;
    std::thread::sleep(std::time::Duration::from_millis(10));
    std::fs::write(path, &bytes).unwrap();
    set_mtime(path, m.modified().unwrap());
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap(), after.ino()),
        (m.len(), m.modified().unwrap(), m.ino())
    );
}

/// Make the stat cache older than nothing in it (as after any build but
/// the quickest): its entries are trusted, not racy.
fn age_stat_cache(p: &Project) {
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(30);
    set_mtime(&p.path("cache/stat"), later);
}

/// Rewrite the stat cache's entry for `path` to `path`'s stamp now, as a
/// stat cache fooled by a coarse-timestamp file system would hold it
/// (the format `src/stamp.rs` documents: a header, entries of 108 bytes
/// keyed by the blake3 of the path, a blake3 of it all).
fn forge_stat_entry(p: &Project, path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let file = p.path("cache/stat");
    let bytes = std::fs::read(&file).unwrap();
    let body = &bytes[..bytes.len() - 32];
    let magic = b"mesh-stat v2\n";
    assert!(body.starts_with(magic));
    let hash = blake3::hash(path.as_os_str().as_bytes());
    let key = &hash.as_bytes()[..16];
    let m = std::fs::metadata(path).unwrap();
    let mut out = magic.to_vec();
    let mut forged = false;
    for entry in body[magic.len()..].chunks_exact(108) {
        let mut entry = entry.to_vec();
        if &entry[..16] == key {
            entry[56..64].copy_from_slice(&m.mtime().to_le_bytes());
            entry[64..72].copy_from_slice(&m.mtime_nsec().to_le_bytes());
            entry[72..80].copy_from_slice(&m.ctime().to_le_bytes());
            entry[80..88].copy_from_slice(&m.ctime_nsec().to_le_bytes());
            forged = true;
        }
        out.extend_from_slice(&entry);
    }
    assert!(forged, "no entry for {}", path.display());
    let sum = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&sum);
    std::fs::write(&file, out).unwrap();
    age_stat_cache(p);
}

/// The stat cache (issue 12) keeps content addressing honest: a byte
/// flipped in place, the size kept and the mtime put back, is caught by a
/// plain no-op (ctime and inode are part of the stamp, as in git's index),
/// in an exported file and in a blob; and `--verify` hashes everything, so
/// it catches even a change the stat cache vouches for.
#[test]
fn a_byte_flip_keeping_size_and_mtime_is_caught_by_a_no_op_and_by_verify() {
    let p = Project::default_plan();
    p.build();
    age_stat_cache(&p);
    // Trusted: a no-op reads no exported file (nothing to see here but
    // that it stays a no-op).
    assert!(p.build().with("ran").is_empty());

    // An exported file: restored from the store.
    let out = p.path("out/east/kind-cluster.yaml");
    let good = std::fs::read(&out).unwrap();
    flip_keeping_size_and_mtime(&out);
    let o = p.build();
    assert!(o.with("ran").is_empty(), "{:?}", o.with("ran"));
    assert_eq!(std::fs::read(&out).unwrap(), good, "restored");

    // A blob: its task reruns, the blob is put back.
    age_stat_cache(&p);
    let digest = blake3::hash(&good).to_hex().to_string();
    let blob = p.path(&format!("cache/blobs/{}/{}", &digest[..2], digest));
    flip_keeping_size_and_mtime(&blob);
    let o = p.build();
    assert_eq!(o.with("ran"), ["render.kind:east"]);
    assert_eq!(std::fs::read(&blob).unwrap(), good, "blob rewritten");

    // A change the stat cache vouches for anyway: --verify catches it.
    age_stat_cache(&p);
    assert!(p.build().with("ran").is_empty());
    flip_keeping_size_and_mtime(&out);
    forge_stat_entry(&p, &out);
    p.build();
    assert_ne!(
        std::fs::read(&out).unwrap(),
        good,
        "a plain no-op trusts the (forged) stat cache"
    );
    let o = p.run(&["build", "--offline", "--verify", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.with("ran").is_empty(), "{:?}", o.with("ran"));
    assert_eq!(std::fs::read(&out).unwrap(), good, "--verify restored it");
    // And a blob the forged cache vouches for: --verify reruns its task.
    age_stat_cache(&p);
    flip_keeping_size_and_mtime(&blob);
    forge_stat_entry(&p, &blob);
    assert!(p.build().with("ran").is_empty(), "trusted");
    let o = p.run(&["build", "--offline", "--verify", "--json"]);
    assert_eq!(o.with("ran"), ["render.kind:east"]);
    assert_eq!(std::fs::read(&blob).unwrap(), good);
}

/// `mesh -v build --offline --json` with `cache/noop` made older than
/// anything it vouches for (as after any build but the quickest): whether
/// it was answered by stat alone, and its output.
fn noop_build(p: &Project, env: &[(&str, &str)]) -> (bool, common::Out) {
    let noop = p.path("cache/noop");
    if noop.exists() {
        set_mtime(
            &noop,
            std::time::SystemTime::now() + std::time::Duration::from_secs(30),
        );
    }
    let mut c = p.cmd();
    c.args(["-v", "build", "--offline", "--json"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = common::Out::from(c.output().unwrap());
    assert_eq!(o.code, 0, "{}", o.stderr);
    let fast = o
        .stderr
        .contains("nothing changed since the last clean build");
    assert_eq!(
        !fast,
        o.stderr.contains("read and check the plan"),
        "the fast path reads no plan:\n{}",
        o.stderr
    );
    (fast, o)
}

fn assert_fast(p: &Project) {
    let (fast, o) = noop_build(p, &[]);
    assert!(fast, "the long way:\n{}", o.stderr);
}

/// Issue 12: a rebuild that nothing touched is answered from `cache/noop`
/// by stat alone (no plan read, no key computed), with the report the
/// long way gives; and each kind of change the long way would see sends it
/// the long way, which then acts on it.
#[test]
fn an_untouched_rebuild_is_answered_by_stat_and_every_change_goes_the_long_way() {
    let p = Project::default_plan();
    p.build();
    let (fast, o) = noop_build(&p, &[]);
    assert!(fast, "{}", o.stderr);
    assert!(o.with("ran").is_empty());
    // The same tasks, order and statuses as the long way (`--verify`
    // always goes the long way).
    let long = p.run(&["build", "--offline", "--verify", "--json"]);
    assert_eq!(long.code, 0, "{}", long.stderr);
    let rows = |o: &common::Out| -> Vec<(String, String, String)> {
        o.json()["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap().to_string();
                (s("id"), s("status"), s("reason"))
            })
            .collect()
    };
    assert_eq!(rows(&o), rows(&long));
    assert_fast(&p);

    // The plan's text, even with nothing that matters changed.
    p.edit("plan.toml", |t| t + "\n# a comment\n");
    let (fast, o) = noop_build(&p, &[]);
    assert!(!fast);
    assert!(o.stderr.contains("plan.toml changed"), "{}", o.stderr);
    assert!(o.with("ran").is_empty());
    assert_fast(&p);

    // A file the plan names: its task reruns.
    p.edit("tasks/apps/helloworld.yaml", |t| t + "\n# edited\n");
    let (fast, o) = noop_build(&p, &[]);
    assert!(!fast);
    assert!(
        o.with("ran")
            .iter()
            .any(|id| id.starts_with("render.app:helloworld")),
        "{:?}",
        o.with("ran")
    );
    assert_fast(&p);

    // The environment planning reads.
    let (fast, o) = noop_build(&p, &[("MESH_GATEWAY_API_CRDS", "crds.yaml")]);
    assert!(!fast);
    assert!(o.stderr.contains("environment changed"), "{}", o.stderr);
    assert!(!noop_build(&p, &[]).0, "and back");

    // An exported file, a byte flipped with its size and mtime kept:
    // restored.
    assert_fast(&p);
    let out = p.path("out/east/kind-cluster.yaml");
    let good = std::fs::read(&out).unwrap();
    flip_keeping_size_and_mtime(&out);
    let (fast, _) = noop_build(&p, &[]);
    assert!(!fast);
    assert_eq!(std::fs::read(&out).unwrap(), good, "restored");

    // A blob, likewise: its task reruns.
    assert_fast(&p);
    let digest = blake3::hash(&good).to_hex().to_string();
    let blob = p.path(&format!("cache/blobs/{}/{}", &digest[..2], digest));
    flip_keeping_size_and_mtime(&blob);
    let (fast, o) = noop_build(&p, &[]);
    assert!(!fast);
    assert_eq!(o.with("ran"), ["render.kind:east"]);
    assert_eq!(std::fs::read(&blob).unwrap(), good);

    // A directory of secrets opened to others: closed again.
    assert_fast(&p);
    let dir = p.path("out/east/istio");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (fast, _) = noop_build(&p, &[]);
    assert!(!fast);
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);

    // A damaged cache/noop is no answer.
    assert_fast(&p);
    let noop = p.path("cache/noop");
    let mut bytes = std::fs::read(&noop).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&noop, &bytes).unwrap();
    let (fast, o) = noop_build(&p, &[]);
    assert!(!fast);
    assert!(o.stderr.contains("is damaged"), "{}", o.stderr);
}

/// A build that fails leaves no `cache/noop` to vouch for what it left.
#[test]
fn a_failed_build_leaves_nothing_for_the_fast_path() {
    let p = Project::default_plan();
    p.build();
    assert!(p.path("cache/noop").exists());
    // Out of reach: `out/` is a file, so exporting fails.
    std::fs::remove_dir_all(p.path("out")).unwrap();
    std::fs::write(p.path("out"), "in the way").unwrap();
    let o = p.run(&["build", "--offline"]);
    assert_ne!(o.code, 0, "{}", o.stderr);
    assert!(!p.path("cache/noop").exists());
    std::fs::remove_file(p.path("out")).unwrap();
    p.build();
    assert!(p.path("cache/noop").exists());
}

#[test]
fn corrupted_blob_or_record_is_detected_and_rebuilt() {
    let p = Project::default_plan();
    p.build();
    // Find the blob behind out/east/kind-cluster.yaml and corrupt it.
    let digest = blake3::hash(p.read("out/east/kind-cluster.yaml").as_bytes())
        .to_hex()
        .to_string();
    let blob = p.path(&format!("cache/blobs/{}/{}", &digest[..2], digest));
    std::fs::write(&blob, b"garbage").unwrap();
    // Damage another task's record in the log: one byte of its JSON.
    let log = p.path("cache/records.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let head = b"{\"id\":\"render.istio:west\"";
    let at = bytes.windows(head.len()).rposition(|w| w == head).unwrap();
    bytes[at + 40] ^= 1;
    std::fs::write(&log, &bytes).unwrap();

    let status = p.run(&["status"]);
    assert!(
        status.stdout.contains("record is corrupt"),
        "{}",
        status.stdout
    );
    let o = p.build();
    let j = o.json();
    let reason = |id: &str| {
        j["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(o.with("ran"), ["render.istio:west", "render.kind:east"]);
    assert!(
        reason("render.kind:east").contains("missing or corrupt"),
        "{}",
        reason("render.kind:east")
    );
    assert!(
        reason("render.istio:west").contains("corrupt"),
        "{}",
        reason("render.istio:west")
    );
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        p.read("out/east/kind-cluster.yaml").as_bytes()
    );
    assert!(p.build().with("ran").is_empty());
}

#[test]
fn deleted_or_edited_outputs_are_restored_without_rerunning() {
    let p = Project::default_plan();
    p.build();
    let want = p.read("out/west/istio/istiod-values.yaml");
    std::fs::remove_file(p.path("out/west/istio/istiod-values.yaml")).unwrap();
    p.write("out/east/kind-cluster.yaml", "tampered");
    let o = p.build();
    assert!(o.with("ran").is_empty());
    assert_eq!(p.read("out/west/istio/istiod-values.yaml"), want);
    assert!(
        p.read("out/east/kind-cluster.yaml")
            .contains("kind: Cluster")
    );
}

#[test]
fn a_second_concurrent_build_is_refused_naming_the_holder() {
    let p = Project::default_plan();
    p.build();
    let cache = mesh::cache::Cache::open(&p.path("cache")).unwrap();
    let _held = cache.lock().unwrap();
    let o = p.run(&["build", "--offline"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains(&format!("pid {}", std::process::id())),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("another mesh build"), "{}", o.stderr);
}

#[test]
fn killed_build_then_rerun_converges_with_valid_outputs() {
    let p = Project::default_plan();
    // Slow keys make a window to kill in.
    p.edit("plan.toml", |t| {
        t.replace("algorithm = \"ecdsa-p256\"", "algorithm = \"rsa-4096\"")
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["build", "--offline", "-j", "1"])
        .current_dir(p.dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some, but not all, tasks have been recorded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = common::recorded(p.dir.path()).len();
        if n >= 3 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let recorded = common::recorded(p.dir.path()).len();
    assert!(
        recorded < PURE_TASKS,
        "the kill came too late to test anything ({recorded} records)"
    );

    let o = p.build();
    assert_eq!(o.with("ran").len() + o.with("cached").len(), PURE_TASKS);
    assert!(!o.with("ran").is_empty());
    // Converged: everything cached, and the PKI is a valid chain.
    assert_eq!(p.build().with("cached").len(), PURE_TASKS);
    let v = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            "out/pki/root-cert.pem",
            "out/pki/east/ca-cert.pem",
        ])
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn ctrl_c_stops_the_build_records_nothing_half_done_and_the_next_run_resumes() {
    let p = Project::default_plan();
    p.edit("plan.toml", |t| {
        t.replace("algorithm = \"ecdsa-p256\"", "algorithm = \"rsa-4096\"")
    });
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["build", "--offline", "-j", "1", "--json"])
        .current_dir(p.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::recorded(p.dir.path()).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    // The JSON document still comes out, and every task without a record is
    // reported as not done.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["interrupted"], true);
    let ids = common::recorded(p.dir.path());
    for t in doc["tasks"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let recorded = ids.iter().any(|r| r == id);
        assert_eq!(recorded, t["status"] == "ran", "{id}: {t}");
    }
    let o = p.build();
    assert_eq!(o.with("ran").len() + o.with("cached").len(), PURE_TASKS);
    assert!(
        !o.with("ran").is_empty() && !o.with("cached").is_empty(),
        "{:?}",
        o.statuses()
    );
}

#[test]
fn secrets_are_0600_under_a_0700_cache_and_never_printed() {
    let p = Project::default_plan();
    let o = p.run(&["build", "--offline", "--json", "--trace", "trace.json"]);
    assert_eq!(o.code, 0);
    assert_eq!(mode(&p.path("cache")), 0o700);
    assert_eq!(mode(&p.path("cache/blobs")), 0o700);
    assert_eq!(mode(&p.path("cache/records.log")), 0o600);
    for f in [
        "out/pki/east/ca-key.pem",
        "out/pki/west/ca-key.pem",
        "out/east/istio/cacerts.yaml",
    ] {
        assert_eq!(mode(&p.path(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&p.path("out/pki/east/ca-cert.pem")), 0o644);
    // The root key stays in the cache.
    assert!(
        !walk(&p.path("out"))
            .iter()
            .any(|f| f.ends_with("root-key.pem"))
    );
    // Every cached blob holding a private key is 0600.
    let mut keys = 0;
    for f in walk(&p.path("cache/blobs")) {
        if std::fs::read_to_string(&f).is_ok_and(|t| t.contains("PRIVATE KEY")) {
            keys += 1;
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    assert!(keys >= 3, "root + two intermediates ({keys})");
    // No key material in anything printed or traced.
    let trace = p.read("trace.json");
    for text in [&o.stdout, &o.stderr, &trace] {
        assert!(!text.contains("PRIVATE KEY"));
        assert!(!text.contains("BEGIN"));
    }
    let t: serde_json::Value = serde_json::from_str(&trace).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "pki.root" && e["ph"] == "X" && e["dur"].as_u64().unwrap() > 0)
    );
}

/// The summary's time and the trace count from the process's start, and
/// reading the plan and planning the graph are phases of their own (in the
/// trace and with -v), before the first task.
#[test]
fn the_summary_and_the_trace_count_from_the_process_start_with_its_phases() {
    let p = Project::default_plan();
    let o = p.run(&["build", "--offline", "-v", "--trace", "trace.json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let t: serde_json::Value = serde_json::from_str(&p.read("trace.json")).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let phase = |name: &str| {
        let e = events
            .iter()
            .find(|e| e["cat"] == "phase" && e["name"] == name)
            .unwrap_or_else(|| panic!("no phase {name:?} in the trace"));
        let ts = e["ts"].as_u64().unwrap();
        (ts, ts + e["dur"].as_u64().unwrap())
    };
    let read = phase("read and check the plan");
    let plan = phase("plan the graph");
    let run = phase("check and run the tasks");
    assert!(
        read.1 <= plan.0 && plan.1 <= run.0,
        "{read:?} {plan:?} {run:?}"
    );
    // Every task starts after the graph was planned, on the same clock.
    let tasks: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "phase")
        .collect();
    assert!(!tasks.is_empty());
    for e in &tasks {
        assert!(
            e["ts"].as_u64().unwrap() >= plan.1,
            "{e} starts before planning ended"
        );
    }
    // -v names each phase with its end time; the summary counts from the
    // start too, so it is no shorter than reading and planning.
    for name in [
        "read and check the plan",
        "plan the graph",
        "check and run the tasks",
    ] {
        assert!(
            o.stderr.contains(name),
            "-v does not show {name:?}:\n{}",
            o.stderr
        );
    }
    let summary = o
        .stderr
        .lines()
        .find(|l| l.starts_with("mesh: 20 tasks"))
        .unwrap();
    let took = summary.rsplit(" in ").next().unwrap();
    let us: f64 = [("µs", 1.0), ("ms", 1e3), ("s", 1e6)]
        .iter()
        .find_map(|(unit, k)| Some(took.strip_suffix(unit)?.parse::<f64>().ok()? * k))
        .unwrap_or_else(|| panic!("no time in {summary:?}"));
    // The summary rounds to 0.1 ms.
    assert!(
        us + 100.0 >= plan.1 as f64,
        "summary {took} < planning's end {} µs",
        plan.1
    );
    // Without -v, no phase lines.
    let quiet = p.run(&["build", "--offline"]);
    assert!(!quiet.stderr.contains("plan the graph"), "{}", quiet.stderr);
}

#[test]
fn every_mode_is_explicit_under_umask_000_for_every_pki_algorithm() {
    use std::os::unix::process::CommandExt;
    for alg in ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-4096"] {
        let p = Project::default_plan();
        p.edit("plan.toml", |t| {
            t.replace(
                "algorithm = \"ecdsa-p256\"",
                &format!("algorithm = \"{alg}\""),
            )
        });
        let run = |args: &[&str]| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"));
            c.current_dir(p.path("")).args(args);
            // SAFETY: umask is async-signal-safe.
            unsafe {
                c.pre_exec(|| {
                    libc::umask(0);
                    Ok(())
                });
            }
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{alg}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(&["build", "--offline", "--trace", "trace.json"]);
        check_modes(&p, alg);
        // Loosened by hand (or by an old mesh): tightened again by the
        // next build, even a no-op one.
        for d in [
            "out/pki/east",
            "out/east/istio",
            "cache/blobs",
            "state/identity",
        ] {
            std::fs::set_permissions(p.path(d), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        for f in walk(&p.path("cache/blobs"))
            .into_iter()
            .chain(walk(&p.path("out")))
        {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        run(&["build", "--offline", "--trace", "trace.json"]);
        check_modes(&p, alg);
    }
}

/// No file or directory mesh made is writable by others; a directory
/// holding a secret is 0700 and the secret 0600; the trace at most 0644.
fn check_modes(p: &Project, alg: &str) {
    assert!(
        mode(&p.path("trace.json")) & 0o133 == 0,
        "{alg}: trace {:o}",
        mode(&p.path("trace.json"))
    );
    for top in ["cache", "out", "state"] {
        let mut dirs = vec![p.path(top)];
        while let Some(d) = dirs.pop() {
            let m = mode(&d);
            assert!(m & 0o022 == 0, "{alg}: {} is {m:o}", d.display());
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let path = e.path();
                if e.file_type().unwrap().is_dir() {
                    dirs.push(path);
                    continue;
                }
                let fm = mode(&path);
                assert!(fm & 0o133 == 0, "{alg}: {} is {fm:o}", path.display());
                let secret = std::fs::read_to_string(&path)
                    .is_ok_and(|t| t.contains("PRIVATE KEY"))
                    || path.ends_with("cacerts.yaml");
                if secret {
                    assert_eq!(fm, 0o600, "{alg}: {}", path.display());
                    assert_eq!(m, 0o700, "{alg}: {} holds {}", d.display(), path.display());
                }
            }
        }
    }
}

#[test]
fn a_secret_never_reaches_stderr_json_or_trace_through_an_error() {
    // A template override that breaks the cacerts Secret's YAML inside its
    // private key: the parser's error would quote the key's lines.
    let p = Project::default_plan();
    let tpl = p.read("tasks/istio/cacerts.yaml.j2").replacen(
        "{{ pem.ca_key | trim | indent(4) }}",
        "{{ pem.ca_key | trim | indent(2) }}",
        1,
    );
    std::fs::write(p.path("cacerts-override.yaml.j2"), tpl).unwrap();
    p.edit("plan.toml", |t| {
        t + "\n[templates]\n\"tasks/istio/cacerts.yaml.j2\" = \"cacerts-override.yaml.j2\"\n"
    });
    let o = p.run(&["build", "--offline", "--json", "--trace", "trace.json"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("cacerts.yaml.j2"), "{}", o.stderr);
    let key = p.read("out/pki/east/ca-key.pem");
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!body.is_empty());
    let trace = p.read("trace.json");
    for (what, text) in [
        ("stderr", &o.stderr),
        ("json", &o.stdout),
        ("trace", &trace),
    ] {
        assert!(!text.contains("PRIVATE KEY"), "{what}: {text}");
        for line in &body {
            for chunk in line.as_bytes().chunks(12) {
                let chunk = std::str::from_utf8(chunk).unwrap();
                if chunk.len() == 12 {
                    assert!(
                        !text.contains(chunk),
                        "{what} holds key bytes {chunk}: {text}"
                    );
                }
            }
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn live_build_says_it_is_not_available_and_runs_nothing() {
    let p = Project::default_plan();
    let o = p.run(&["build"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("mesh build --offline"), "{}", o.stderr);
    assert!(common::recorded(p.dir.path()).is_empty());
}

#[test]
fn plan_graph_status_and_why_show_the_live_bring_up() {
    let p = Project::default_plan();
    let plan = p.run(&["plan", "--json"]);
    assert_eq!(plan.code, 0);
    let ids: Vec<String> = plan.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    for id in [
        "cluster:east",
        "cni:east",
        "lb:east",
        "cacerts:east",
        "istiod:east",
        "gateway:east",
        "remote-secret:east->west",
        "remote-secret:west->east",
        "app:helloworld:east",
        "app:curl:west",
    ] {
        assert!(ids.contains(&id.to_string()), "{id} missing from {ids:?}");
    }
    let dot = p.run(&["graph", "--format", "dot"]).stdout;
    for edge in [
        "\"pki.intermediate:east\" -> \"render.cacerts:east\"",
        "\"cacerts:east\" -> \"istiod:east\"",
        "\"istiod:east\" -> \"gateway:east\"",
        "\"istiod:west\" -> \"remote-secret:east->west\"",
        "\"istiod:east\" -> \"app:helloworld:east\"",
    ] {
        assert!(dot.contains(edge), "{edge} missing");
    }
    let mermaid = p.run(&["graph", "--format", "mermaid"]).stdout;
    assert!(mermaid.starts_with("flowchart LR\n"));
    assert!(mermaid.contains("([\"istiod:east\"])"));

    p.build();
    let st = p.run(&["status", "--json"]).json();
    let state = |id: &str| {
        st["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state("pki.root"), "up-to-date");
    assert_eq!(state("istiod:east"), "never-run");
    let why = p.run(&["why", "pki.root", "--json"]).json();
    assert_eq!(why["state"], "up-to-date");
    let bad = p.run(&["why", "istiod:nowhere"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("did you mean istiod:east"),
        "{}",
        bad.stderr
    );
}

#[test]
fn clean_removes_cache_and_out_and_gc_keeps_live_blobs() {
    let p = Project::default_plan();
    p.build();
    p.edit("tasks/kind/cluster.yaml.j2", |t| t + "# edit\n");
    p.build(); // the auto-GC after this build drops the old render blobs
    let gc = p.run(&["clean", "--gc"]);
    assert_eq!(gc.code, 0);
    assert!(
        gc.stderr.contains("removed 0 unreferenced blobs"),
        "{}",
        gc.stderr
    );
    assert!(p.build().with("ran").is_empty());
    let c = p.run(&["clean"]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(!p.path("cache").exists());
    assert!(!p.path("out").exists());
}

#[test]
fn clean_deletes_nothing_while_a_build_holds_the_lock() {
    let p = Project::default_plan();
    p.build();
    // A build holds the lock: clean refuses, naming it, and keeps all.
    let lock = std::fs::File::open(p.path("cache/lock")).unwrap();
    lock.try_lock().unwrap();
    let c = p.run(&["clean"]);
    assert_eq!(c.code, 1, "{}", c.stderr);
    assert!(c.stderr.contains("holds the cache lock"), "{}", c.stderr);
    assert!(p.path("cache/records.log").is_file() && p.path("out").is_dir());
    // A first build that has only just taken its lock (no records yet):
    // out/ is not deleted under it either.
    std::fs::remove_file(p.path("cache/records.log")).unwrap();
    let c = p.run(&["clean"]);
    assert_eq!(c.code, 1, "{}", c.stderr);
    assert!(p.path("out").is_dir(), "out/ deleted without the lock");
    drop(lock);
    let c = p.run(&["clean"]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(!p.path("cache").exists() && !p.path("out").exists());
    // Nothing at all: still fine, and nothing is left behind.
    let c = p.run(&["clean"]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(c.stderr.contains("no cache"), "{}", c.stderr);
    assert!(!p.path("cache").exists());
}

#[test]
fn default_plan_works_from_any_directory_with_embedded_tasks() {
    let p = Project::with_plan(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plan.toml")).unwrap(),
    );
    let o = p.build();
    assert_eq!(o.with("ran").len(), PURE_TASKS);
    // --plan from elsewhere: cache and out go beside the plan.
    let other = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args([
            "--plan",
            p.path("plan.toml").to_str().unwrap(),
            "build",
            "--offline",
        ])
        .current_dir(other.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        std::fs::read_dir(other.path()).unwrap().next().is_none(),
        "nothing written to the cwd"
    );
}

/// Plan discovery as cargo finds Cargo.toml: the first plan.toml in the
/// current directory or a parent; `--plan` a file or a directory;
/// `MESH_PLAN`; and none anywhere is an error that says what to do.
#[test]
fn the_plan_is_found_from_a_subdirectory_by_dir_and_by_mesh_plan() {
    let p = Project::default_plan();
    std::fs::create_dir_all(p.path("deep/er")).unwrap();
    let run_in = |dir: &str, args: &[&str], env: Option<&str>| {
        let mut c = p.cmd();
        c.current_dir(p.path(dir)).args(args);
        if let Some(v) = env {
            c.env("MESH_PLAN", v);
        }
        let o = c.output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run_in("deep/er", &["build", "--offline"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        p.path("cache/records.log").is_file(),
        "the cache goes beside the plan"
    );
    assert!(!p.path("deep/er/cache").exists() && !p.path("deep/er/out").exists());
    // A second run from anywhere below is a no-op.
    let (code, err) = run_in("deep", &["build", "--offline"], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(" 0 ran,"), "{err}");
    // --plan DIR and MESH_PLAN (a directory or a file), from elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let root = p.path("");
    for (args, env) in [
        (
            vec!["--plan", root.to_str().unwrap(), "status", "--offline"],
            None,
        ),
        (
            vec!["status", "--offline"],
            Some(root.to_str().unwrap().to_string()),
        ),
        (
            vec!["status", "--offline"],
            Some(p.path("plan.toml").to_str().unwrap().to_string()),
        ),
    ] {
        let mut c = p.cmd();
        c.current_dir(elsewhere.path()).args(&args);
        if let Some(v) = &env {
            c.env("MESH_PLAN", v);
        }
        let o = c.output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{args:?} {env:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.starts_with("mesh status: 20 tasks: 20 up-to-date"),
            "{args:?} {env:?}: {out}"
        );
    }
    // No plan here or above.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["build", "--offline"])
        .current_dir(elsewhere.path())
        .env_remove("MESH_PLAN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no plan.toml in") && err.contains("mesh init"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none()
    );
}

/// `mesh init` writes a plan that builds offline as is, for every
/// combination of its flags; never overwrites one without --force; and
/// refuses what Istio does not support, in words.
#[test]
fn init_writes_a_plan_that_builds_offline_for_every_combination() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("MESH_PLAN")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = mesh(&["init"]);
    assert_eq!(code, 0, "{err}");
    let default = std::fs::read_to_string(dir.path().join("plan.toml")).unwrap();
    insta::assert_snapshot!("init_default_plan", default);
    let (code, err) = mesh(&["init", "--clusters", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("plan.toml")).unwrap(),
        default
    );
    let (code, err) = mesh(&[
        "init",
        "--mode",
        "ambient",
        "--topology",
        "primary-remote",
        "--force",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ambient mode supports multi-primary only"),
        "{err}"
    );

    for mode in ["sidecar", "ambient"] {
        for topology in ["multi-primary", "primary-remote"] {
            for cni in ["cilium", "kindnet"] {
                for provider in ["kind", "kubeconfig"] {
                    for n in ["1", "2", "6"] {
                        let unsupported =
                            topology == "primary-remote" && (mode == "ambient" || n == "1");
                        // --cni is a kind cluster's: one run of kubeconfig is enough.
                        let redundant = provider == "kubeconfig" && cni == "kindnet";
                        if unsupported || redundant {
                            continue;
                        }
                        let flags = [
                            "init",
                            "--force",
                            "--mode",
                            mode,
                            "--topology",
                            topology,
                            "--cni",
                            cni,
                            "--provider",
                            provider,
                            "--clusters",
                            n,
                        ];
                        let (code, err) = mesh(&flags);
                        assert_eq!(code, 0, "{flags:?}: {err}");
                        let (code, err) = mesh(&["build", "--offline"]);
                        assert_eq!(code, 0, "{flags:?} does not build offline:\n{err}");
                        let plan = std::fs::read_to_string(dir.path().join("plan.toml")).unwrap();
                        assert!(plan.contains(&format!("mode = \"{mode}\"")), "{plan}");
                        assert_eq!(
                            plan.matches("[clusters.").count(),
                            n.parse::<usize>().unwrap(),
                            "{plan}"
                        );
                    }
                }
            }
        }
    }
}

/// `mesh status` after an offline build: `--offline` asks no cluster and
/// shows only pure tasks, all up to date; the summary comes first on
/// stdout, then a header and the rows by depth; a filter picks a part of
/// the ids or a pattern.
#[test]
fn status_offline_filtered_with_a_header_and_the_summary_first() {
    let p = Project::default_plan();
    p.build();
    let o = p.run(&["status", "--offline"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    insta::assert_snapshot!(
        "status_offline",
        o.stdout.replace(|c: char| c.is_ascii_digit(), "9")
    );
    let ids = |out: &str| -> Vec<String> {
        out.lines()
            .skip(2)
            .filter_map(|l| Some(l.split_whitespace().nth(1)?.to_string()))
            .collect()
    };
    let all = ids(&o.stdout);
    assert_eq!(all.len(), PURE_TASKS);
    let o = p.run(&["status", "--offline", "east"]);
    let east: Vec<&String> = all.iter().filter(|id| id.ends_with(":east")).collect();
    assert!(
        o.stdout.starts_with(&format!(
            "mesh status: {n} tasks of 20 matching \"east\": {n} up-to-date\n",
            n = east.len()
        )),
        "{}",
        o.stdout
    );
    assert_eq!(ids(&o.stdout).iter().collect::<Vec<_>>(), east);
    let o = p.run(&["status", "--offline", "render.*:west"]);
    let want: Vec<&String> = all
        .iter()
        .filter(|id| id.starts_with("render.") && id.ends_with(":west"))
        .collect();
    assert_eq!(ids(&o.stdout).iter().collect::<Vec<_>>(), want);
    let o = p.run(&["status", "nosuch"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout
            .starts_with("mesh status: 0 tasks of 41 matching \"nosuch\""),
        "{}",
        o.stdout
    );
}

/// Paths a build will write are checked before anything runs: a bad
/// `--trace` or `--out` is a usage error (exit 2) and no task runs.
#[test]
fn a_trace_or_out_path_that_cannot_be_written_stops_the_build_before_any_task() {
    let p = Project::default_plan();
    std::fs::write(p.path("a-file"), "x").unwrap();
    std::fs::create_dir(p.path("a-dir")).unwrap();
    for (args, says) in [
        (vec!["--trace", "no/such/dir/t.json"], "no directory"),
        (vec!["--trace", "a-dir"], "is a directory"),
        (vec!["--out", "a-file"], "is not a directory"),
        (vec!["--out", "a-file/below"], "is not a directory"),
    ] {
        let mut all = vec!["build", "--offline"];
        all.extend(&args);
        let o = p.run(&all);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains(args[0]) && o.stderr.contains(says),
            "{args:?}: {}",
            o.stderr
        );
        assert!(
            !p.path("cache/records.log").exists(),
            "{args:?}: a task ran"
        );
        assert!(!p.path("out").exists(), "{args:?}: out/ was written");
    }
    // A good trace path in a new --out directory works, and leaves no probe file.
    let o = p.run(&[
        "build",
        "--offline",
        "--trace",
        "t.json",
        "--out",
        "new/bundle",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(p.path("new/bundle/pki").is_dir() && p.path("t.json").is_file());
    let stray: Vec<_> = std::fs::read_dir(p.path(""))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".mesh-write-check")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn version_and_the_graph_as_json() {
    let p = Project::default_plan();
    let o = p.run(&["version"]);
    assert_eq!(o.code, 0);
    assert_eq!(
        o.stdout.trim(),
        format!("mesh {}", env!("CARGO_PKG_VERSION"))
    );
    let g = p.run(&["graph", "--format", "json"]).json();
    assert_eq!(g["schema"], "mesh.graph/v1");
    let tasks = g["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 41);
    let seen: std::collections::BTreeSet<&str> = tasks
        .iter()
        .enumerate()
        .flat_map(|(k, t)| {
            // Topological: every dependency comes earlier.
            for d in t["deps"].as_array().unwrap() {
                let at = tasks.iter().position(|x| x["id"] == *d).unwrap();
                assert!(at < k, "{} before its dependency {d}", t["id"]);
            }
            t["id"].as_str()
        })
        .collect();
    assert!(seen.contains("remote-secret:east->west"));
    let istiod = tasks.iter().find(|t| t["id"] == "istiod:east").unwrap();
    assert_eq!(istiod["pure"], false);
    assert_eq!(istiod["kind"], "istiod");
}

/// -q: errors and the final line only; --color colours errors and hints as
/// asked, honouring NO_COLOR and CLICOLOR_FORCE when left to `auto`.
#[test]
fn quiet_says_only_the_last_line_and_color_follows_the_flag_and_the_environment() {
    let p = Project::default_plan();
    let o = p.run(&["build", "--offline", "-q"]);
    assert_eq!(o.code, 0);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", o.stderr);
    assert!(
        lines[0].starts_with("mesh: 20 tasks: 20 ran"),
        "{}",
        o.stderr
    );
    let o = p.run(&["status", "--offline", "-q"]);
    assert_eq!(o.stdout.lines().count(), 1, "{}", o.stdout);
    let o = p.run(&["build", "--offline", "-q", "-v"]);
    assert_eq!(o.code, 2, "-q and -v conflict: {}", o.stderr);

    p.edit("plan.toml", |t| {
        t.replace("mode = \"sidecar\"", "mode = \"sidecars\"")
    });
    let red = "\x1b[1;31merror:\x1b[0m";
    let cyan = "\x1b[1;36m= hint:\x1b[0m";
    let with_env = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = p.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(2));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let plain = with_env(&["build", "--offline"], &[]);
    assert!(
        !plain.contains('\x1b'),
        "not a terminal: no colour\n{plain}"
    );
    let always = with_env(&["build", "--offline", "--color", "always"], &[]);
    assert!(always.contains(red) && always.contains(cyan), "{always:?}");
    assert_eq!(
        always.replace(red, "error:").replace(cyan, "= hint:"),
        plain,
        "colour changes nothing else"
    );
    let forced = with_env(&["build", "--offline"], &[("CLICOLOR_FORCE", "1")]);
    assert!(forced.contains(red), "{forced:?}");
    let both = with_env(
        &["build", "--offline"],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
    );
    assert!(
        both.contains(red),
        "CLICOLOR_FORCE wins over NO_COLOR: {both:?}"
    );
    let never = with_env(
        &["build", "--offline", "--color", "never"],
        &[("CLICOLOR_FORCE", "1")],
    );
    assert!(!never.contains('\x1b'), "{never:?}");
    let off = with_env(&["build", "--offline"], &[("CLICOLOR_FORCE", "0")]);
    assert!(!off.contains('\x1b'), "{off:?}");
}

/// Every `--json` document is an object naming its shape and version.
#[test]
fn every_json_document_is_an_object_with_its_schema() {
    let p = Project::default_plan();
    for (args, schema) in [
        (vec!["build", "--offline", "--json"], "mesh.build/v1"),
        (vec!["plan", "--json"], "mesh.plan/v1"),
        (vec!["status", "--json"], "mesh.status/v1"),
        (vec!["why", "pki.root", "--json"], "mesh.why/v1"),
        (vec!["graph", "--format", "json"], "mesh.graph/v1"),
    ] {
        let o = p.run(&args);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        let v = o.json();
        assert!(v.is_object(), "{args:?}");
        assert_eq!(v["schema"], schema, "{args:?}");
    }
}

/// `build --watch`: builds, then rebuilds exactly what each save touched
/// (an app's manifest, then a plan value), shows a plan error and goes on,
/// and stops on SIGINT with exit 130.
#[test]
fn watch_rebuilds_exactly_what_each_save_touched_until_sigint() {
    use std::io::BufRead;
    let p = Project::default_plan();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .current_dir(p.path(""))
        .env_remove("MESH_PLAN")
        .args(["build", "--offline", "--watch"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The lines of one build, up to the watcher's "watching …" line.
    let round = || -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no 'watching' line after {lines:#?}"));
            if l.starts_with("mesh: watching") {
                return lines;
            }
            lines.push(l);
        }
    };
    let ran = |lines: &[String]| -> Vec<String> {
        let mut v: Vec<String> = lines
            .iter()
            .filter_map(|l| {
                let rest = l.split_once("] ran")?.1;
                Some(rest.split_whitespace().next()?.to_string())
            })
            .collect();
        v.sort();
        v
    };
    let first = round();
    assert_eq!(ran(&first).len(), PURE_TASKS, "{first:#?}");

    p.edit("tasks/apps/helloworld.yaml", |t| format!("{t}\n# edited\n"));
    let second = round();
    assert_eq!(
        ran(&second),
        ["render.app:helloworld:east", "render.app:helloworld:west"],
        "{second:#?}"
    );

    p.edit("plan.toml", |t| t.replacen("workers = 1", "workers = 2", 1));
    let third = round();
    assert_eq!(ran(&third), ["render.kind:east"], "{third:#?}");

    // A plan error is shown, and the watch goes on; the fix builds nothing.
    p.edit("plan.toml", |t| t.replacen("workers = 2", "wokers = 2", 1));
    let broken = round();
    assert!(
        broken.iter().any(|l| l.contains("did you mean `workers`")),
        "{broken:#?}"
    );
    p.edit("plan.toml", |t| t.replacen("wokers = 2", "workers = 2", 1));
    let fixed = round();
    assert!(ran(&fixed).is_empty(), "{fixed:#?}");
    assert!(fixed.iter().any(|l| l.contains(" 0 ran,")), "{fixed:#?}");

    // SIGINT ends it with exit 130, even one that comes while the watch
    // is between waits (a save was seen: loading, planning, building).
    p.edit("plan.toml", |t| t.replacen("workers = 2", "workers = 3", 1));
    std::thread::sleep(std::time::Duration::from_millis(210));
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the watch did not end on SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
}
