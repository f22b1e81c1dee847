//! External tools (kind, helm, docker), HTTP downloads, and the two cluster
//! providers.
//!
//! Owns running a tool: the binary is found on PATH (or named by the
//! `MESH_KIND`, `MESH_HELM`, `MESH_DOCKER` environment variables), runs with
//! no stdin, its output captured, under a timeout. If the task running it is
//! dropped (Ctrl-C, or a fail-fast stop) the tool gets SIGTERM and
//! [`GRACE`] to finish before SIGKILL ([`Stopper`]): helm, for one, marks
//! its release failed on SIGTERM (retryable), where SIGKILL leaves it
//! `pending-*` and blocks every later upgrade. The CLI waits for stopping
//! tools before it exits ([`wait_for_stopping`]). If mesh itself dies
//! (SIGKILL, a crash), Linux sends each running tool SIGTERM too
//! (`PR_SET_PDEATHSIG`): an orphaned helm would otherwise go on working on
//! a release the next run is already recovering. A
//! failure becomes a [`ToolError`] (converted to the task's error at the kind
//! boundary) that names the tool, the command line and
//! the last lines of its stderr. Tool stdout that carries credentials
//! (kubeconfigs) is never put into an error message.
//!
//! Providers: `kind` creates, deletes and lists clusters and returns their
//! kubeconfigs (the internal one, whose server is the control-plane
//! container's address, is what other clusters can reach); `kubeconfig`
//! reads an existing cluster's kubeconfig file and never creates or deletes
//! anything. `http` downloads a URL (the Gateway API CRDs); [`command`] runs
//! a user task's command.

use crate::graph::TaskError;

pub mod docker;
pub mod helm;
pub mod http;
pub mod kind;
pub mod kubeconfig;

/// Run a user task's command (`argv`, in `dir`, no stdin, these extra
/// environment variables), stopped like a tool if the task is dropped.
pub async fn command(
    argv: &[String],
    dir: &Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<(), ToolError> {
    let shown = argv.join(" ");
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..]).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let spawn_error = |e: std::io::Error| ToolError::CommandSpawn {
        program: program.clone(),
        cmd: shown.clone(),
        reason: e.to_string(),
    };
    crate::events::say(&format!("$ {shown}"));
    let began = std::time::Instant::now();
    let (child, mut stopper) = spawn(&mut cmd).map_err(spawn_error)?;
    let out = child.wait_with_output().await;
    stopper.done();
    let out = out.map_err(spawn_error)?;
    said_exit(&program, &out.status, began);
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let mut tail: Vec<String> = err.lines().rev().take(5).map(str::to_string).collect();
    tail.reverse();
    Err(ToolError::CommandFailed {
        program,
        cmd: shown,
        status: out.status.to_string(),
        stderr_tail: tail,
    })
}
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

    /// Where the tool is: `$MESH_<TOOL>` (which must name an executable
    /// file: an empty one is a mistake, not "use PATH") or the first match
    /// on PATH.
    pub fn locate(self) -> Result<PathBuf, ToolError> {
        if let Some(p) = std::env::var_os(self.env()) {
            let p = PathBuf::from(p);
            if p.as_os_str().is_empty() {
                return Err(ToolError::BadOverride {
                    tool: self.name(),
                    reason: format!(
                        "{} is set but empty; unset it to use {} from PATH, or set it to its path",
                        self.env(),
                        self.name()
                    ),
                });
            }
            if !is_executable(&p) {
                return Err(ToolError::BadOverride {
                    tool: self.name(),
                    reason: format!("{}={} is not an executable file", self.env(), p.display()),
                });
            }
            return Ok(p);
        }
        std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join(self.name()))
                    .find(|p| is_executable(p))
            })
            .ok_or(ToolError::NotFound {
                tool: self.name(),
                hint: self.install_hint(),
            })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why a tool call failed. Its text never holds the tool's stdout (it may
/// carry credentials): at most the last lines of stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("not found on PATH; {hint}")]
    NotFound {
        tool: &'static str,
        hint: &'static str,
    },
    /// `MESH_<TOOL>` names no executable.
    #[error("{reason}")]
    BadOverride { tool: &'static str, reason: String },
    #[error("cannot run `{cmd}`: {reason}")]
    Spawn {
        tool: &'static str,
        cmd: String,
        reason: String,
    },
    #[error("`{cmd}` did not finish in {secs}s (killed)")]
    Timeout {
        tool: &'static str,
        cmd: String,
        secs: u64,
    },
    #[error("`{cmd}` {status}{}", stderr_suffix(.stderr_tail))]
    Failed {
        tool: &'static str,
        cmd: String,
        status: String,
        stderr_tail: Vec<String>,
    },
    /// The tool failed because the cluster's API server did not answer
    /// (refused, reset, timed out): not the tool's fault, and not a reason
    /// to undo anything.
    #[error(
        "unreachable: `{cmd}` could not reach the API server ({detail}); nothing was deleted, rerun to resume"
    )]
    Unreachable {
        tool: &'static str,
        cmd: String,
        detail: String,
    },
    #[error("`{cmd}` printed non-UTF-8 output")]
    NotUtf8 { tool: &'static str, cmd: String },
    /// The tool answered, but not what mesh needs (the text says what it
    /// printed, never the bytes of a credential).
    #[error("{message}")]
    BadOutput { tool: &'static str, message: String },
    /// An HTTP download (`http`).
    #[error("{url}: {reason}")]
    Download { url: String, reason: String },
    /// A user task's command could not start.
    #[error("cannot run `{cmd}`: {reason}")]
    CommandSpawn {
        program: String,
        cmd: String,
        reason: String,
    },
    /// A user task's command failed.
    #[error("`{cmd}` failed ({status}): {}", .stderr_tail.join(" | "))]
    CommandFailed {
        program: String,
        cmd: String,
        status: String,
        stderr_tail: Vec<String>,
    },
}

/// What client-go prints when the API server does not answer.
const UNREACHABLE: &[&str] = &[
    "Kubernetes cluster unreachable",
    "connect: connection refused",
    "connection reset by peer",
    "i/o timeout",
    "no route to host",
    "http2: client connection lost",
];

impl ToolError {
    /// A failure whose output says the API server did not answer becomes
    /// [`ToolError::Unreachable`]; anything else is kept as it is.
    pub fn unreachable_if_so(self) -> ToolError {
        match self {
            ToolError::Failed {
                tool,
                cmd,
                stderr_tail,
                ..
            } if stderr_tail
                .iter()
                .any(|l| UNREACHABLE.iter().any(|p| l.contains(p))) =>
            {
                let detail = stderr_tail
                    .iter()
                    .rev()
                    .find(|l| UNREACHABLE.iter().any(|p| l.contains(p)))
                    .cloned()
                    .unwrap_or_default();
                ToolError::Unreachable { tool, cmd, detail }
            }
            other => other,
        }
    }
}

fn stderr_suffix(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.join(" | "))
    }
}

impl ToolError {
    /// The tool at fault, as error messages name it.
    pub fn tool(&self) -> &str {
        match self {
            ToolError::CommandSpawn { program, .. } | ToolError::CommandFailed { program, .. } => {
                program
            }
            ToolError::NotFound { tool, .. }
            | ToolError::BadOverride { tool, .. }
            | ToolError::Spawn { tool, .. }
            | ToolError::Timeout { tool, .. }
            | ToolError::Failed { tool, .. }
            | ToolError::Unreachable { tool, .. }
            | ToolError::NotUtf8 { tool, .. }
            | ToolError::BadOutput { tool, .. } => tool,
            ToolError::Download { .. } => "download",
        }
    }
}

impl From<ToolError> for TaskError {
    fn from(e: ToolError) -> TaskError {
        TaskError::tool(e.tool(), e.to_string())
    }
}

/// How long a dropped tool may take to stop after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(10);

static STOPPING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Stops a child process that is still running when the call waiting for
/// it is dropped: SIGTERM, then SIGKILL after [`GRACE`], on a thread the
/// CLI joins before exiting.
struct Stopper {
    pid: Option<i32>,
}

impl Stopper {
    fn done(&mut self) {
        self.pid = None;
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        let Some(pid) = self.pid else { return };
        // SAFETY: signalling a child this process started and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + GRACE;
            while std::time::Instant::now() < deadline {
                let mut status = 0;
                // SAFETY: reaping our own child, without blocking.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r != 0 {
                    return; // exited (reaped here), or reaped by tokio already
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; it ignored SIGTERM for the whole grace period.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        });
        STOPPING.lock().expect("not poisoned").push(t);
    }
}

/// Start `cmd` with no stdin and its output captured, with a [`Stopper`]
/// that stops it if the caller is dropped before it exits.
fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<(tokio::process::Child, Stopper)> {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    // The signal comes when the thread that spawned the child ends: tokio's
    // worker threads live as long as the runtime, which is the process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false)
        .spawn()?;
    let stopper = Stopper {
        pid: child.id().map(|p| p as i32),
    };
    Ok((child, stopper))
}

/// Wait until every tool that was told to stop has stopped (at most
/// [`GRACE`] each, in parallel).
pub fn wait_for_stopping() {
    let threads = std::mem::take(&mut *STOPPING.lock().expect("not poisoned"));
    for t in threads {
        let _ = t.join();
    }
}

/// With `-v`: how a tool call ended and how long it took.
fn said_exit(program: &str, status: &std::process::ExitStatus, began: std::time::Instant) {
    let how = status
        .code()
        .map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"));
    let ms = began.elapsed().as_secs_f64() * 1e3;
    crate::events::say(&format!("{program}: {how} in {ms:.1} ms"));
}

/// Run a tool; its stdout on success.
pub async fn run(tool: Tool, args: &[&str], timeout: Duration) -> Result<String, ToolError> {
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
) -> Result<String, ToolError> {
    let timeout = cap(timeout);
    let shown = format!("{} {}", tool.name(), args.join(" "));
    let bin = tool.locate()?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::events::say(&format!("$ {shown}"));
    let began = std::time::Instant::now();
    let (child, mut stopper) = spawn(&mut cmd).map_err(|e| ToolError::Spawn {
        tool: tool.name(),
        cmd: shown.clone(),
        reason: e.to_string(),
    })?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => {
            stopper.done();
            let out = r.map_err(|e| ToolError::Spawn {
                tool: tool.name(),
                cmd: shown.clone(),
                reason: e.to_string(),
            })?;
            said_exit(tool.name(), &out.status, began);
            out
        }
        Err(_) => {
            // Timed out: the stopper sends SIGTERM, then SIGKILL.
            drop(stopper);
            crate::events::say(&format!(
                "{} did not finish in {}s: stopping it",
                tool.name(),
                timeout.as_secs()
            ));
            return Err(ToolError::Timeout {
                tool: tool.name(),
                cmd: shown,
                secs: timeout.as_secs(),
            });
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<String> = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(str::to_string)
            .collect();
        let status = out.status.code().map_or_else(
            || "was killed by a signal".to_string(),
            |c| format!("exited with status {c}"),
        );
        return Err(ToolError::Failed {
            tool: tool.name(),
            cmd: shown,
            status,
            stderr_tail: tail,
        });
    }
    String::from_utf8(out.stdout).map_err(|_| ToolError::NotUtf8 {
        tool: tool.name(),
        cmd: shown,
    })
}
