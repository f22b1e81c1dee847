//! The kind CLI: clusters are listed, created and deleted through it, and
//! their kubeconfigs read from it. kind is always given a private
//! kubeconfig file, and mesh edits the user's itself ([`kubeconfig`] says
//! why): kind's `kind-<name>` contexts are added for the user's kubectl
//! habits, and the user's current context is never switched, not even for
//! a moment.
use super::{Tool, ToolError, kubeconfig, run};
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

/// A kubeconfig file for kind alone, in a fresh 0700 directory (removed
/// with the returned guard, lock and all).
fn private_kubeconfig() -> Result<(tempfile::TempDir, std::path::PathBuf), ToolError> {
    let dir = tempfile::Builder::new()
        .prefix("mesh-kind-kubeconfig-")
        .tempdir()
        .map_err(|e| ToolError::BadOutput {
            tool: "kind",
            message: format!("cannot make a directory for its kubeconfig: {e}"),
        })?;
    let file = dir.path().join("kubeconfig");
    Ok((dir, file))
}

pub async fn create(name: &str, config: &Path) -> Result<(), ToolError> {
    let config = config.to_string_lossy();
    let (_private, file) = private_kubeconfig()?;
    let file_arg = file.to_string_lossy();
    run(
        Tool::Kind,
        &[
            "create",
            "cluster",
            "--name",
            name,
            "--config",
            &config,
            "--kubeconfig",
            &file_arg,
        ],
        CREATE_TIMEOUT,
    )
    .await?;
    let added = std::fs::read_to_string(&file).map_err(|e| ToolError::BadOutput {
        tool: "kind",
        message: format!("created {name} but wrote no kubeconfig: {e}"),
    })?;
    tokio::task::spawn_blocking(move || kubeconfig::merge(&added))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        .map_err(|reason| ToolError::BadOutput {
            tool: "kind",
            message: format!("created {name}, but cannot add its context kind-{name}: {reason}"),
        })?;
    Ok(())
}

/// Delete cluster `name`, then its `kind-<name>` entries from the user's
/// kubeconfig.
pub async fn delete(name: &str) -> Result<(), ToolError> {
    let (_private, file) = private_kubeconfig()?;
    let file_arg = file.to_string_lossy();
    run(
        Tool::Kind,
        &[
            "delete",
            "cluster",
            "--name",
            name,
            "--kubeconfig",
            &file_arg,
        ],
        CREATE_TIMEOUT,
    )
    .await?;
    let owned = name.to_string();
    tokio::task::spawn_blocking(move || kubeconfig::remove(&owned))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        .map_err(|reason| ToolError::BadOutput {
            tool: "kind",
            message: format!("deleted {name}, but cannot remove its context kind-{name}: {reason}"),
        })
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
