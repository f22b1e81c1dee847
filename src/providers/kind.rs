//! The kind CLI.
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
    run(
        Tool::Kind,
        &["create", "cluster", "--name", name, "--config", &config],
        CREATE_TIMEOUT,
    )
    .await?;
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
