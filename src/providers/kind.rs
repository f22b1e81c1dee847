//! The kind CLI. `kind create cluster` adds a `kind-<name>` context to the
//! user's kubeconfig and makes it the current one; mesh puts the user's
//! current context back, so a build never switches it (the context itself
//! stays, for the user's kubectl habits).
use super::{Tool, ToolError, run};
use std::path::Path;
use std::time::Duration;

pub const CREATE_TIMEOUT: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_secs(60);

pub async fn clusters() -> Result<Vec<String>, ToolError> {
    let out = run(Tool::Kind, &["get", "clusters"], SHORT).await?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("No kind clusters"))
        .map(str::to_string)
        .collect())
}

pub async fn create(name: &str, config: &Path) -> Result<(), ToolError> {
    let config = config.to_string_lossy();
    let kubeconfig = user_kubeconfig_path();
    // The user's context before this process created any cluster (creates
    // run in parallel: one's "before" may be another's kind-<name>).
    static ORIGINAL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let before = ORIGINAL
        .get_or_init(|| current_context(&kubeconfig))
        .clone();
    run(
        Tool::Kind,
        &["create", "cluster", "--name", name, "--config", &config],
        CREATE_TIMEOUT,
    )
    .await?;
    let path = kubeconfig.clone();
    tokio::task::spawn_blocking(move || restore_current_context(&path, before.as_deref()))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        .map_err(|reason| ToolError::BadOutput {
            tool: "kind",
            message: format!(
                "created {name}, but cannot put back the current context of {}: {reason}",
                kubeconfig.display()
            ),
        })
}

/// Run `f` holding the kubeconfig's lock as client-go and kind take it
/// (`<file>.lock`, created exclusively; waited for up to 30 s).
fn with_kubeconfig_lock<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let lock = path.with_file_name(name);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot lock {}: {e}", lock.display())),
        }
    }
    let r = f();
    let _ = std::fs::remove_file(&lock);
    r
}

/// The user's kubeconfig, as kubectl and kind find it: `$KUBECONFIG`'s first
/// file, else `~/.kube/config`.
pub fn user_kubeconfig_path() -> std::path::PathBuf {
    match std::env::var_os("KUBECONFIG") {
        Some(k) if !k.is_empty() => std::env::split_paths(&k).next().unwrap_or_default(),
        _ => std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".kube/config"),
    }
}

fn read_kubeconfig(path: &Path) -> Option<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(path).ok()?;
    let v = serde_saphyr::from_str(&text).ok()?;
    Some((text, v))
}

/// The current context of a kubeconfig file (None: no file, or none set).
fn current_context(path: &Path) -> Option<String> {
    let (_, v) = read_kubeconfig(path)?;
    v["current-context"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Set a kubeconfig's current context back to `before` (none: unset), if
/// it changed. Written atomically, in the file's own syntax (JSON stays
/// JSON), with its mode kept.
fn restore_current_context(path: &Path, before: Option<&str>) -> Result<(), String> {
    if !path.exists() {
        return Ok(());
    }
    with_kubeconfig_lock(path, || restore_locked(path, before))
}

fn restore_locked(path: &Path, before: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let Some((text, mut v)) = read_kubeconfig(path) else {
        return Ok(());
    };
    let now = v["current-context"].as_str().unwrap_or("").to_string();
    if now == before.unwrap_or("") {
        return Ok(());
    }
    v["current-context"] = serde_json::Value::String(before.unwrap_or("").to_string());
    let out = if text.trim_start().starts_with('{') {
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
    } else {
        serde_saphyr::to_string(&v).map_err(|e| e.to_string())?
    };
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    tmp.write_all(out.as_bytes()).map_err(|e| e.to_string())?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
        .map_err(|e| e.to_string())?;
    tmp.persist(path).map_err(|e| e.to_string())?;
    Ok(())
}

pub async fn delete(name: &str) -> Result<(), ToolError> {
    run(
        Tool::Kind,
        &["delete", "cluster", "--name", name],
        CREATE_TIMEOUT,
    )
    .await?;
    Ok(())
}

/// The kubeconfig of a cluster; `internal`: the server is the
/// control-plane container's address, reachable from other clusters.
pub async fn kubeconfig(name: &str, internal: bool) -> Result<String, ToolError> {
    let mut args = vec!["get", "kubeconfig", "--name", name];
    if internal {
        args.push("--internal");
    }
    let out = run(Tool::Kind, &args, SHORT).await?;
    // Never echo it: it holds a client key.
    if kube::config::Kubeconfig::from_yaml(&out).is_err() {
        return Err(ToolError::BadOutput {
            tool: "kind",
            message: format!(
                "`kind {}` printed something that is not a kubeconfig ({} bytes)",
                args.join(" "),
                out.len()
            ),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_context_is_put_back_in_the_files_own_syntax() {
        let d = tempfile::tempdir().unwrap();
        let yaml = d.path().join("config");
        std::fs::write(
            &yaml,
            "apiVersion: v1\nkind: Config\ncontexts:\n- name: mine\n  context: {cluster: c, user: u}\n- name: kind-east\n  context: {cluster: k, user: k}\ncurrent-context: kind-east\n",
        )
        .unwrap();
        restore_current_context(&yaml, Some("mine")).unwrap();
        assert_eq!(current_context(&yaml).as_deref(), Some("mine"));
        let text = std::fs::read_to_string(&yaml).unwrap();
        assert!(!text.trim_start().starts_with('{'), "{text}");
        assert!(text.contains("kind-east"), "{text}");
        // None before: unset again.
        restore_current_context(&yaml, None).unwrap();
        assert_eq!(current_context(&yaml), None);
        // JSON stays JSON.
        let json = d.path().join("config.json");
        std::fs::write(&json, r#"{"current-context": "kind-east", "contexts": []}"#).unwrap();
        restore_current_context(&json, Some("mine")).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["current-context"], "mine");
        // No file: nothing to do.
        restore_current_context(&d.path().join("none"), Some("x")).unwrap();
    }
}
