//! What decided the graph: every file and directory that reading the plan
//! and planning looked at, each with what `stat` said of it *before* its
//! bytes or entries were read, and the earliest moment at which a check of
//! the plan against the clock (a CA's validity, the longest certificate
//! X.509 can encode) would answer otherwise. The no-op fast path
//! (`exec::noop`) reuses a past clean build's verdict only while every one
//! of these is as it was, so that it can skip reading the plan at all.
//!
//! Recording is off until [`start`] and ends at [`take`]; the readers call
//! [`file`] or [`look`] unconditionally, and they cost nothing while it is
//! off. Paths are kept absolute (joined to the current directory), so a
//! later run from elsewhere stats the same files. A path looked at twice
//! is kept twice: if it changed in between, one of the two stamps cannot
//! match again, and the fast path declines, as it must.
//!
//! Why the stat comes before the read: a file changed after its stat and
//! before its read would otherwise be recorded with its new stamp and its
//! old bytes' verdict; taken first, the stamp is the old one, and the next
//! run's differs.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// What one planning looked at.
#[derive(Debug, Default)]
pub struct Seen {
    /// Each path (absolute) and its metadata (`None`: it did not exist).
    pub files: Vec<(PathBuf, Option<Metadata>)>,
    /// The earliest moment a clock-dependent check would change its answer.
    pub until: Option<SystemTime>,
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

fn with(f: impl FnOnce(&mut Seen)) {
    let mut g = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = g.as_mut() {
        f(s);
    }
}

/// Begin recording (forgetting what an earlier recording held).
pub fn start() {
    *SEEN.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen::default());
}

/// End recording and return what was seen (`None` if it was not on).
pub fn take() -> Option<Seen> {
    SEEN.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Record `path` as about to be read, with the metadata its reader already
/// has (an open file's `fstat`), or `None` when it does not exist.
pub fn file(path: &Path, meta: Option<&Metadata>) {
    with(|s| {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        s.files.push((abs, meta.cloned()));
    });
}

/// `stat` `path` (following symlinks, as reading it does), record it, and
/// return what `stat` said.
pub fn look(path: &Path) -> Option<Metadata> {
    let meta = std::fs::metadata(path).ok();
    file(path, meta.as_ref());
    meta
}

/// A check against the clock holds until `t` (the earliest such moment is
/// kept).
pub fn until(t: SystemTime) {
    with(|s| {
        s.until = Some(s.until.map_or(t, |u| u.min(t)));
    });
}
