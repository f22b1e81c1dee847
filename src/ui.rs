//! What a person (or a program) sees of a build.
//!
//! Owns the progress display and the three ways a finished build is told:
//! the human summary (counts, what failed and why, the critical path), the
//! `--json` document of DESIGN.md's contract, and the `--trace` file in Chrome
//! trace-event format (one complete event per task, one row per concurrency
//! slot; opens in Perfetto). Progress goes to stderr: on a terminal an
//! indicatif overall bar plus a spinner per running task; otherwise one plain
//! line per task that ran, failed or was skipped (cached tasks are counted,
//! not listed). Nothing here ever prints file contents, so no secret can
//! reach the terminal, a log or a trace: only task ids, statuses, reasons
//! and times.

use crate::exec::{BuildReport, Observer, Status, TaskReport};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Progress on stderr.
pub enum Progress {
    Bars {
        multi: MultiProgress,
        total: ProgressBar,
        running: Mutex<HashMap<String, ProgressBar>>,
    },
    Plain {
        done: Mutex<usize>,
        total: usize,
    },
    /// `-q`: nothing per task.
    Quiet,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        if quiet() {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() && !crate::events::verbose() {
            // `-v` lines go straight to stderr: bars would draw over them.
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar = multi.add(ProgressBar::new(total as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} tasks  {elapsed}  {msg}",
                )
                .expect("static template"),
            );
            Progress::Bars {
                multi,
                total: bar,
                running: Mutex::new(HashMap::new()),
            }
        } else {
            Progress::Plain {
                done: Mutex::new(0),
                total,
            }
        }
    }

    pub fn finish(&self) {
        if let Progress::Bars { total, multi, .. } = self {
            total.finish_and_clear();
            let _ = multi.clear();
        }
    }
}

fn line(r: &TaskReport) -> String {
    match r.status {
        Status::Ran => format!(
            "ran      {}  {}  ({})",
            r.id,
            fmt_us(r.duration_us),
            r.reason
        ),
        Status::Cached => format!("cached   {}", r.id),
        Status::Failed => format!("FAILED   {}  {}", r.id, r.reason),
        Status::Skipped => format!("skipped  {}  ({})", r.id, r.reason),
    }
}

impl Observer for Progress {
    fn started(&self, id: &str) {
        if let Progress::Bars { multi, running, .. } = self {
            let sp = multi.add(ProgressBar::new_spinner());
            sp.set_style(
                ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                    .expect("static template"),
            );
            sp.set_message(id.to_string());
            sp.enable_steady_tick(Duration::from_millis(120));
            running
                .lock()
                .expect("progress lock")
                .insert(id.to_string(), sp);
        }
    }

    fn finished(&self, r: &TaskReport) {
        match self {
            Progress::Bars {
                multi,
                total,
                running,
            } => {
                if let Some(sp) = running.lock().expect("progress lock").remove(&r.id) {
                    sp.finish_and_clear();
                    multi.remove(&sp);
                }
                total.inc(1);
                if r.status != Status::Cached {
                    let _ = multi.println(line(r));
                }
            }
            Progress::Quiet => {}
            Progress::Plain { done, total } => {
                let mut d = done.lock().expect("progress lock");
                *d += 1;
                if r.status != Status::Cached {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(
                        err,
                        "[{:>w$}/{total}] {}",
                        *d,
                        line(r),
                        w = total.to_string().len()
                    );
                }
            }
        }
    }
}

static QUIET: AtomicBool = AtomicBool::new(false);
static COLOR: AtomicBool = AtomicBool::new(false);

/// `-q`: errors and each command's final line only.
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `--color`: `always`/`never` as asked; `auto` colours stderr when it is
/// a terminal, unless `NO_COLOR` is set (no-color.org), and always when
/// `CLICOLOR_FORCE` is set and not `0` (bixense.com/clicolors).
pub fn set_color(choice: &str, stderr_is_tty: bool) {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let on = match choice {
        "always" => true,
        "never" => false,
        _ if env("CLICOLOR_FORCE").is_some_and(|v| v != "0") => true,
        _ if env("NO_COLOR").is_some() => false,
        _ => stderr_is_tty,
    };
    COLOR.store(on, Ordering::Relaxed);
}
pub fn color() -> bool {
    COLOR.load(Ordering::Relaxed)
}

/// A message for stderr, its `error:`, `warning:` and `hint:` labels
/// coloured when colour is on.
pub fn paint(msg: &str) -> String {
    if !color() {
        return msg.to_string();
    }
    let mut out = String::with_capacity(msg.len() + 32);
    for line in msg.split_inclusive('\n') {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let label = [
            ("error:", "1;31"),
            ("warning:", "1;33"),
            ("hint:", "1;36"),
            ("= hint:", "1;36"),
        ]
        .into_iter()
        .find(|(l, _)| body.starts_with(l));
        match label {
            Some((l, code)) => {
                out.push_str(indent);
                out.push_str(&format!("\x1b[{code}m{l}\x1b[0m"));
                out.push_str(&body[l.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The human summary.
/// The trace row (`tid`) of the process's phases.
pub const PHASE_ROW: u64 = 1_000_000;

pub fn summary(r: &BuildReport) -> String {
    let mut s = String::new();
    let failed: Vec<&TaskReport> = r
        .tasks
        .iter()
        .filter(|t| t.status == Status::Failed)
        .collect();
    for t in &failed {
        s.push_str(&format!("error: task {} failed: {}\n", t.id, t.reason));
    }
    s.push_str(&format!(
        "mesh: {} tasks: {} ran, {} cached, {} failed, {} skipped in {}",
        r.tasks.len(),
        r.count(Status::Ran),
        r.count(Status::Cached),
        r.count(Status::Failed),
        r.count(Status::Skipped),
        fmt_us(r.wall_us)
    ));
    if r.interrupted {
        s.push_str(" (interrupted: nothing half-done was recorded; rerun to resume)");
    }
    if !r.retries.is_empty() {
        let n = r.retries.len();
        s.push_str(&format!(
            " ({n} transient API error{} retried)",
            if n == 1 { "" } else { "s" }
        ));
    }
    s.push('\n');
    if !r.critical_path.is_empty() && r.count(Status::Ran) > 0 && !quiet() {
        s.push_str(&format!(
            "critical path {}: {}\n",
            fmt_us(r.critical_path_us),
            r.critical_path.join(" → ")
        ));
    }
    s
}

/// DESIGN.md's `--json` document.
pub fn json(r: &BuildReport) -> serde_json::Value {
    json!({
        "wall_ms": r.wall_us as f64 / 1e3,
        "critical_path_ms": r.critical_path_us as f64 / 1e3,
        "critical_path": r.critical_path,
        "interrupted": r.interrupted,
        "retries": r.retries.iter().map(|x| json!({
            "task": x.task,
            "at_ms": x.at_us as f64 / 1e3,
            "reason": x.reason,
        })).collect::<Vec<_>>(),
        "tasks": r.tasks.iter().map(|t| json!({
            "id": t.id,
            "status": t.status.as_str(),
            "duration_ms": t.duration_us as f64 / 1e3,
            "reason": t.reason,
        })).collect::<Vec<_>>(),
    })
}

/// Chrome trace events: one "X" (complete) event per task that ran or was
/// checked, on the row of its concurrency slot; one "i" (instant) event per
/// transient error retried, on its task's row.
pub fn trace(
    r: &BuildReport,
    phases: &[crate::events::Phase],
    epoch: std::time::Instant,
) -> serde_json::Value {
    let mut events =
        vec![json!({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "mesh build"}})];
    // The process's phases, on a row of their own above the tasks' lanes.
    events.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": PHASE_ROW, "args": {"name": "phases"}}));
    events.push(json!({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": PHASE_ROW, "args": {"sort_index": -1}}));
    for p in phases {
        let us = |t: std::time::Instant| t.saturating_duration_since(epoch).as_micros() as u64;
        events.push(json!({
            "name": p.name,
            "cat": "phase",
            "ph": "X",
            "ts": us(p.start),
            "dur": us(p.end).saturating_sub(us(p.start)).max(1),
            "pid": 1,
            "tid": PHASE_ROW,
        }));
    }
    for t in &r.tasks {
        if t.status == Status::Skipped {
            continue;
        }
        events.push(json!({
            "name": t.id,
            "cat": t.status.as_str(),
            "ph": "X",
            "ts": t.start_us,
            "dur": t.duration_us.max(1),
            "pid": 1,
            "tid": t.lane,
            "args": {"status": t.status.as_str(), "reason": t.reason},
        }));
    }
    // Each retry: an instant event on its task's row.
    for x in &r.retries {
        let lane = x
            .task
            .as_ref()
            .and_then(|id| r.tasks.iter().find(|t| &t.id == id))
            .map_or(0, |t| t.lane);
        events.push(json!({
            "name": format!("retry: {}", x.reason),
            "cat": "retry",
            "ph": "i",
            "s": "t",
            "ts": x.at_us,
            "pid": 1,
            "tid": lane,
            "args": {"task": x.task, "reason": x.reason},
        }));
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}
