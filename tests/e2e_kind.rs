//! The real thing: `mesh build` against Docker, kind and helm on this host,
//! then `mesh verify` (v1 and v2 reached from both clusters), an app edit and
//! rebuild, and `mesh destroy`. It pulls images and charts from the
//! internet and takes minutes, so it runs only with MESH_E2E=1 on a host
//! with Docker, kind and helm; elsewhere it reports itself skipped, with the
//! reason. Ambient mode needs MESH_GATEWAY_API_CRDS as well.

use std::process::Command;

fn skip_reason() -> Option<String> {
    if std::env::var("MESH_E2E").as_deref() != Ok("1") {
        return Some("MESH_E2E=1 is not set (this test creates real Kind clusters)".into());
    }
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok("docker", &["info"]) {
        return Some("no Docker daemon answers `docker info`".into());
    }
    if !ok("kind", &["version"]) {
        return Some("kind is not on PATH".into());
    }
    if !ok("helm", &["version"]) {
        return Some("helm is not on PATH".into());
    }
    None
}

fn mesh(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn real_kind_bring_up_verify_edit_destroy() {
    if let Some(reason) = skip_reason() {
        // Straight to stderr: libtest captures println!, and the skip must
        // show in a CI log.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plan.toml")).unwrap();
    std::fs::write(dir.path().join("plan.toml"), &plan).unwrap();
    let run = |args: &[&str]| {
        let o = mesh(dir.path(), args);
        println!(
            "mesh {args:?}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    };
    let destroy_at_end = scopeguard(dir.path().to_path_buf());
    assert!(run(&["build"]).status.success(), "build");
    assert!(
        run(&["verify"]).status.success(),
        "verify: v1 and v2 from both clusters"
    );
    std::fs::write(
        dir.path().join("plan.toml"),
        plan.replace("west = \"v2\"", "west = [\"v1\", \"v2\"]"),
    )
    .unwrap();
    let o = run(&["build", "--json"]);
    assert!(o.status.success(), "rebuild after an app edit");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ran: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "ran")
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ran, ["render.app:helloworld:west", "app:helloworld:west"]);
    assert!(run(&["verify"]).status.success(), "verify after the edit");
    drop(destroy_at_end);
}

/// Destroys the clusters even when an assertion fails.
struct Guard(std::path::PathBuf);
fn scopeguard(dir: std::path::PathBuf) -> Guard {
    Guard(dir)
}
impl Drop for Guard {
    fn drop(&mut self) {
        let o = mesh(&self.0, &["destroy"]);
        println!("mesh destroy: {}", String::from_utf8_lossy(&o.stderr));
    }
}
