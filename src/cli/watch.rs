//! `mesh build --watch`: build, then build again on every save of the plan
//! or of a file its graph reads, until Ctrl-C.
//!
//! What is watched is what the last load read: the plan file and every
//! file of `Plan::files` that came from disk (templates, manifests, values;
//! built-in copies have nothing to watch). Editors save by writing in place
//! or by renaming a new file over the old one, so the *directories* holding
//! them are watched (notify, not recursive) and an event counts when it
//! names a watched path. Events are debounced: after the first, more that
//! arrive within [`QUIET`] join the same rebuild; events during a build
//! are kept and start the next one at once. Each rebuild loads and plans
//! again from scratch (the cache makes it cost what changed). A plan that
//! does not load is shown, and the watch goes on with the plan file alone
//! until it loads. A failed build is shown too; only Ctrl-C or SIGTERM
//! (exit 130, also during a build or a load) ends the watch.

use super::{Exit, Loaded, fail, load_owned, runtime};
use crate::plan::Origin;
use crate::planner::Build;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the files must stay still before a rebuild starts.
pub const QUIET: Duration = Duration::from_millis(200);

/// `path` made absolute (its directory resolved, so a file replaced by a
/// rename keeps its name).
fn absolute(path: &Path) -> PathBuf {
    let name = path.file_name().map(PathBuf::from).unwrap_or_default();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::canonicalize(&dir).unwrap_or(dir).join(name)
}

/// Build with `once`, and again on every change, until Ctrl-C.
pub fn run(
    plan_file: &Path,
    target: Build,
    once: impl Fn(&Loaded) -> Result<(), Exit>,
) -> Result<(), Exit> {
    let rt = runtime()?;
    // One listener for the whole watch, made before the first build: a
    // signal that comes while nothing awaits it (during a load, between
    // two polls) is kept until the next wait sees it. A listener made per
    // wait would lose it, and the watch would never end.
    let (mut int, mut term) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _in = rt.enter();
        let listen =
            |k| signal(k).map_err(|e| fail(1, format!("error: cannot catch signals: {e}")));
        (
            listen(SignalKind::interrupt())?,
            listen(SignalKind::terminate())?,
        )
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !ev.kind.is_access()
        {
            let _ = tx.send(ev.paths);
        }
    })
    .map_err(|e| fail(1, format!("error: cannot watch files: {e}")))?;
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        let mut files = BTreeSet::from([absolute(plan_file)]);
        let mut whole: BTreeSet<PathBuf> = BTreeSet::new();
        // A plan error is shown by the load, a failed build by the build:
        // either way the watch goes on (and waits for the fix).
        if let Ok(l) = load_owned(plan_file, target) {
            for src in l.plan.files.values() {
                match &src.origin {
                    Origin::Disk(p) => {
                        files.insert(absolute(p));
                    }
                    // A manifest directory: its files, and any file that
                    // appears in it.
                    Origin::Dir(d, members) => {
                        files.extend(members.iter().map(|p| absolute(p)));
                        whole.insert(absolute(d));
                    }
                    Origin::Embedded => {}
                }
            }
            if let Err(Exit(130)) = once(&l) {
                return Err(Exit(130));
            }
        }
        // Watch each directory holding a watched file, once.
        let want: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .chain(whole.iter().cloned())
            .collect();
        for d in want.difference(&dirs) {
            if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                eprintln!("mesh: cannot watch {}: {e}", d.display());
            }
        }
        for d in dirs.difference(&want) {
            let _ = watcher.unwatch(d);
        }
        dirs = want;
        eprintln!(
            "mesh: watching {} file{}; Ctrl-C stops",
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
        let changed = rt.block_on(async {
            let relevant = |paths: &[PathBuf]| {
                paths
                    .iter()
                    .map(|p| absolute(p))
                    .any(|p| files.contains(&p) || p.parent().is_some_and(|d| whole.contains(d)))
            };
            // The first relevant event…
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Some(paths) if relevant(&paths) => break,
                        Some(_) => {}
                        None => return Err(fail(1, "error: the file watcher stopped")),
                    },
                    _ = int.recv() => return Err(Exit(130)),
                    _ = term.recv() => return Err(Exit(130)),
                }
            }
            // …then quiet for QUIET.
            loop {
                tokio::select! {
                    got = tokio::time::timeout(QUIET, rx.recv()) => match got {
                        Err(_) => return Ok(()),
                        Ok(Some(_)) => {}
                        Ok(None) => return Err(fail(1, "error: the file watcher stopped")),
                    },
                    _ = int.recv() => return Err(Exit(130)),
                    _ = term.recv() => return Err(Exit(130)),
                }
            }
        });
        changed?;
        eprintln!("mesh: a watched file changed; building again");
    }
}
