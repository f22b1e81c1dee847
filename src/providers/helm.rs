//! The helm CLI.
use super::{Tool, ToolError, run};
use std::path::Path;
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(900);

/// A chart install.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub chart: String,
    pub repo: Option<String>,
    pub version: Option<String>,
}

/// `helm upgrade --install` with a values file. Without `--wait`: mesh
/// waits for what each task declares itself (resuming broken watches,
/// rollout-complete, bounded by `MESH_WAIT_TIMEOUT`, naming the object that
/// is not ready), where `helm --wait` would wait up to its own `--timeout`
/// and say only "context deadline exceeded". It also keeps the release
/// `pending-*` only while helm applies, not while pods pull images, so an
/// interrupted build rarely leaves a release to recover.
pub async fn upgrade(
    r: &Release,
    values: Option<&Path>,
    kubeconfig: &Path,
    context: Option<&str>,
) -> Result<(), ToolError> {
    let kc = kubeconfig.to_string_lossy().to_string();
    let mut args: Vec<String> = vec![
        "upgrade".into(),
        "--install".into(),
        r.name.clone(),
        r.chart.clone(),
        "--namespace".into(),
        r.namespace.clone(),
        "--create-namespace".into(),
        "--timeout".into(),
        "10m".into(),
        "--kubeconfig".into(),
        kc,
    ];
    if let Some(c) = context {
        args.extend(["--kube-context".into(), c.into()]);
    }
    if let Some(repo) = &r.repo {
        args.extend(["--repo".into(), repo.clone()]);
    }
    if let Some(v) = &r.version {
        args.extend(["--version".into(), v.clone()]);
    }
    if let Some(v) = values {
        args.extend(["--values".into(), v.to_string_lossy().to_string()]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run(Tool::Helm, &a, TIMEOUT)
        .await
        .map_err(ToolError::unreachable_if_so)?;
    Ok(())
}

/// `helm <verb> <release>` on the release's namespace and cluster, with
/// `extra` flags, waiting for the result.
async fn on_release(
    verb: &str,
    r: &Release,
    kubeconfig: &Path,
    context: Option<&str>,
    extra: &[&str],
) -> Result<(), ToolError> {
    let kc = kubeconfig.to_string_lossy().to_string();
    let mut args = vec![
        verb,
        &r.name,
        "--namespace",
        &r.namespace,
        "--kubeconfig",
        &kc,
    ];
    args.extend(extra);
    if let Some(c) = context {
        args.extend(["--kube-context", c]);
    }
    run(Tool::Helm, &args, TIMEOUT)
        .await
        .map_err(ToolError::unreachable_if_so)?;
    Ok(())
}

/// `helm rollback` to the last deployed revision: how helm itself gets a
/// release out of `pending-upgrade` or `pending-rollback`.
pub async fn rollback(
    r: &Release,
    kubeconfig: &Path,
    context: Option<&str>,
) -> Result<(), ToolError> {
    on_release("rollback", r, kubeconfig, context, &[]).await
}

/// `helm uninstall`; an absent release is fine.
pub async fn uninstall(
    r: &Release,
    kubeconfig: &Path,
    context: Option<&str>,
) -> Result<(), ToolError> {
    on_release(
        "uninstall",
        r,
        kubeconfig,
        context,
        &["--ignore-not-found", "--wait"],
    )
    .await
}
