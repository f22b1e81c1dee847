//! Events inside a running task that the build's report shows: every
//! transient API error retried, for the trace and the summary (and `-v`);
//! and the process's clock and phases (reading the plan, planning the
//! graph, checking and running its tasks), so that the summary's time is
//! the process's wall time and the trace shows where it went before the
//! first task.
//!
//! The executor runs each action inside [`scope`], a tokio task-local
//! naming the task; code below it (the Kubernetes client's retry loop) calls
//! [`retried`] without knowing which task it serves, and the event is
//! tagged with the task that was running, or with none (verify, doctor).
//! Events go to one process-wide log, read once by the report. An event
//! holds what failed in words (a status code and reason), never a request
//! body or object data.
//!
//! With `-v` ([`set_verbose`]), [`say`] prints a line to stderr as it
//! happens: every tool command line and its exit, every API call and its
//! answer, each stamped with the time since the process started and the
//! task it serves, redacted like every other output.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

tokio::task_local! {
    static TASK: Arc<str>;
}

/// A transient error that was retried.
#[derive(Clone, Debug)]
pub struct Retry {
    pub at: Instant,
    /// The task it happened in, if any.
    pub task: Option<Arc<str>>,
    /// What failed, in words ("429 TooManyRequests", "connection reset").
    pub reason: String,
}

static LOG: Mutex<Vec<Retry>> = Mutex::new(Vec::new());

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turn `-v` lines on or off.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Is `-v` on?
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// With `-v`: print `line` to stderr, stamped with the milliseconds since
/// the process started and the task it serves (if any), redacted.
pub fn say(line: &str) {
    if verbose() {
        eprintln!("{}", stamped(start().elapsed(), line));
    }
}

/// A `-v` line: `mesh:   12.3 ms  [task] line`, redacted.
fn stamped(at: std::time::Duration, line: &str) -> String {
    let task = TASK.try_with(|t| format!("[{t}] ")).unwrap_or_default();
    let line = crate::redact::text(line);
    format!("mesh: {:>9.1} ms  {task}{line}", at.as_secs_f64() * 1e3)
}

/// With `-v`: print a line stamped `at` (a moment already past, such as
/// a phase's end).
pub fn say_at(at: Instant, line: &str) {
    if verbose() {
        eprintln!("{}", stamped(at.saturating_duration_since(start()), line));
    }
}

static START: OnceLock<Instant> = OnceLock::new();

/// When the process started: the first call (the first line of `main`)
/// fixes it; the build's epoch, so task times and the summary count from
/// there.
pub fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// A phase of the process: a span of its clock with a name.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: &'static str,
    pub start: Instant,
    pub end: Instant,
}

static PHASES: Mutex<Vec<Phase>> = Mutex::new(Vec::new());

/// Run `f` as phase `name` of the process.
pub fn phase<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let end = Instant::now();
    PHASES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Phase { name, start, end });
    out
}

/// Every phase so far, in the order they ended.
pub fn phases() -> Vec<Phase> {
    PHASES.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Run `fut` as task `id`: events inside it are tagged with `id`.
pub async fn scope<F: std::future::Future>(id: Arc<str>, fut: F) -> F::Output {
    TASK.scope(id, fut).await
}

/// Record a retried transient error.
pub fn retried(reason: impl Into<String>) {
    let task = TASK.try_with(Arc::clone).ok();
    let e = Retry {
        at: Instant::now(),
        task,
        reason: crate::redact::text(&reason.into()).into_owned(),
    };
    LOG.lock().unwrap_or_else(|p| p.into_inner()).push(e);
}

/// Every retry recorded so far in this process.
pub fn retries() -> Vec<Retry> {
    LOG.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Bumped whenever a task starts or finishes changing the world: what was
/// read from it before (a probe's lists, `k8s`) may be stale after.
static WORLD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A task starts or finishes running: reads made before are stale.
pub fn world_moved() {
    WORLD.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// How many times the world moved so far in this process.
pub fn world_epoch() -> u64 {
    WORLD.load(std::sync::atomic::Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_spans_of_the_process_clock_in_order() {
        let start = start();
        let x = phase("first", || 1);
        phase("second", || ());
        assert_eq!(x, 1);
        let p = phases();
        let (a, b) = (&p[p.len() - 2], &p[p.len() - 1]);
        assert_eq!((a.name, b.name), ("first", "second"));
        assert!(start <= a.start && a.start <= a.end && a.end <= b.start && b.start <= b.end);
        assert_eq!(super::start(), start, "the start is fixed once");
    }

    #[tokio::test]
    async fn a_verbose_line_names_its_task_and_hides_key_material() {
        let key = [
            "-----BEGIN ",
            "PRIVATE KEY-----\nMIIE\n-----END ",
            "PRIVATE KEY-----",
        ]
        .concat();
        let line = scope("cacerts:east".into(), async {
            stamped(
                std::time::Duration::from_millis(1234),
                &format!("$ helm x {key}"),
            )
        })
        .await;
        assert!(
            line.starts_with("mesh:    1234.0 ms  [cacerts:east] $ helm x "),
            "{line}"
        );
        assert!(!line.contains("MIIE"), "{line}");
        let outside = stamped(std::time::Duration::ZERO, "GET /version");
        assert_eq!(outside, "mesh:       0.0 ms  GET /version");
    }

    #[tokio::test]
    async fn a_retry_is_tagged_with_the_task_it_happened_in() {
        scope("pki.root".into(), async {
            retried("503 ServiceUnavailable")
        })
        .await;
        retried("outside");
        let log = retries();
        let inside = log
            .iter()
            .find(|r| r.reason == "503 ServiceUnavailable")
            .unwrap();
        assert_eq!(inside.task.as_deref(), Some("pki.root"));
        let outside = log.iter().find(|r| r.reason == "outside").unwrap();
        assert_eq!(outside.task, None);
    }
}
