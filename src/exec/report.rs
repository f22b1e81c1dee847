//! What a build reports: the status of each task, the whole build's
//! outcome, the observer hooks progress displays implement, and the
//! executor's options.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ran,
    Cached,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ran => "ran",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// The outcome of one task in one build.
#[derive(Clone, Debug)]
pub struct TaskReport {
    pub id: String,
    pub status: Status,
    /// Why it ran, what failed, or why it was skipped.
    pub reason: String,
    /// Start relative to the build's start, and duration, in µs.
    pub start_us: u64,
    pub duration_us: u64,
    /// The concurrency slot it ran in (a trace row).
    pub lane: usize,
    pub output: Option<Digest>,
    pub files: Option<Arc<Vec<FileEntry>>>,
}

impl TaskReport {
    pub(crate) fn skipped(id: &str, reason: String) -> TaskReport {
        TaskReport {
            id: id.to_string(),
            status: Status::Skipped,
            reason,
            start_us: 0,
            duration_us: 0,
            lane: 0,
            output: None,
            files: None,
        }
    }
}

/// The outcome of a build.
#[derive(Debug)]
pub struct BuildReport {
    /// In topological order.
    pub tasks: Vec<TaskReport>,
    pub wall_us: u64,
    /// The chain of tasks that bounded the wall time, and its length.
    pub critical_path: Vec<String>,
    pub critical_path_us: u64,
    pub interrupted: bool,
    /// Transient errors retried during the build, in order.
    pub retries: Vec<RetryReport>,
}

/// A transient error retried during the build.
#[derive(Clone, Debug)]
pub struct RetryReport {
    /// The task it happened in, if any.
    pub task: Option<String>,
    /// When, relative to the build's start, in µs.
    pub at_us: u64,
    pub reason: String,
}

impl BuildReport {
    pub fn count(&self, s: Status) -> usize {
        self.tasks.iter().filter(|t| t.status == s).count()
    }
    pub fn ok(&self) -> bool {
        !self.interrupted && self.count(Status::Failed) == 0 && self.count(Status::Skipped) == 0
    }
}

/// Hooks for progress display.
pub trait Observer: Send + Sync {
    fn started(&self, _id: &str) {}
    fn finished(&self, _report: &TaskReport) {}
}

/// An observer that shows nothing.
pub struct Quiet;
impl Observer for Quiet {}

pub struct Options {
    /// Maximum concurrent tasks (≥ 1).
    pub jobs: usize,
    pub keep_going: bool,
    /// Where exported files are materialized (`out/`); `None`: nowhere.
    pub out_dir: Option<PathBuf>,
    /// Time zero of the report (task start times, the wall time): the
    /// process's start for `mesh build`; `None`: when the build starts.
    pub epoch: Option<std::time::Instant>,
    /// Hash every blob and exported file, trusting no stat (`--verify`).
    pub verify: bool,
}
