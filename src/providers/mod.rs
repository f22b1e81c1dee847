//! External tools (kind, helm, docker), HTTP downloads, and the two cluster
//! providers.
//!
//! Owns running a tool: the binary is found on PATH (or named by the
//! `MESH_KIND`, `MESH_HELM`, `MESH_DOCKER` environment variables), runs with
//! no stdin, its output captured, under a timeout, and is killed if the task
//! running it is dropped (Ctrl-C, or a fail-fast stop): `kill_on_drop`. A
//! failure becomes a [`TaskError`] that names the tool, the command line and
//! the last lines of its stderr. Tool stdout that carries credentials
//! (kubeconfigs) is never put into an error message.
//!
//! Providers: `kind` creates, deletes and lists clusters and returns their
//! kubeconfigs (the internal one, whose server is the control-plane
//! container's address, is what other clusters can reach); `kubeconfig`
//! reads an existing cluster's kubeconfig file and never creates or deletes
//! anything. `http` downloads a URL (the Gateway API CRDs).

use crate::graph::TaskError;

pub mod docker;
pub mod helm;
pub mod http;
pub mod kind;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The tools mesh drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Kind,
    Helm,
    Docker,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Kind => "kind",
            Tool::Helm => "helm",
            Tool::Docker => "docker",
        }
    }
    fn env(self) -> &'static str {
        match self {
            Tool::Kind => "MESH_KIND",
            Tool::Helm => "MESH_HELM",
            Tool::Docker => "MESH_DOCKER",
        }
    }
    pub fn install_hint(self) -> &'static str {
        match self {
            Tool::Kind => {
                "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (or set MESH_KIND)"
            }
            Tool::Helm => "install helm 3: https://helm.sh/docs/intro/install/ (or set MESH_HELM)",
            Tool::Docker => {
                "install Docker and start its daemon: https://docs.docker.com/engine/install/ (or set MESH_DOCKER)"
            }
        }
    }

    /// Where the tool is: `$MESH_<TOOL>` or the first match on PATH.
    pub fn locate(self) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(self.env()) {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(self.name()))
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Run a tool; its stdout on success.
pub async fn run(tool: Tool, args: &[&str], timeout: Duration) -> Result<String, TaskError> {
    run_env(tool, args, &[], timeout).await
}

/// `MESH_TOOL_TIMEOUT` (seconds) caps every tool call's timeout.
fn cap(timeout: Duration) -> Duration {
    match std::env::var("MESH_TOOL_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(secs) => timeout.min(Duration::from_secs(secs)),
        None => timeout,
    }
}

/// Run a tool with extra environment variables.
pub async fn run_env(
    tool: Tool,
    args: &[&str],
    env: &[(&str, &Path)],
    timeout: Duration,
) -> Result<String, TaskError> {
    let timeout = cap(timeout);
    let shown = format!("{} {}", tool.name(), args.join(" "));
    let bin = tool.locate().ok_or_else(|| {
        TaskError::tool(
            tool.name(),
            format!("not found on PATH; {}", tool.install_hint()),
        )
    })?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| TaskError::tool(tool.name(), format!("cannot run `{shown}`: {e}")))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| TaskError::tool(tool.name(), format!("`{shown}`: {e}")))?,
        Err(_) => {
            return Err(TaskError::tool(
                tool.name(),
                format!(
                    "`{shown}` did not finish in {}s (killed)",
                    timeout.as_secs()
                ),
            ));
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let status = out.status.code().map_or_else(
            || "was killed by a signal".to_string(),
            |c| format!("exited with status {c}"),
        );
        return Err(TaskError::tool(
            tool.name(),
            format!(
                "`{shown}` {status}{}{}",
                if tail.is_empty() { "" } else { ": " },
                tail.join(" | ")
            ),
        ));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| TaskError::tool(tool.name(), format!("`{shown}` printed non-UTF-8 output")))
}
