//! The executor: runs a sealed graph in parallel, with the cache in the loop.
//!
//! ## Algorithm
//!
//! One scheduler loop owns all state (no locks): the number of unfinished
//! dependencies of every selected node, a priority queue of ready nodes
//! (longest chain of dependents first, so the critical path starts early
//! when slots are scarce), and the
//! results so far. Whenever fewer than `jobs` tasks run, it pops a ready node
//! and spawns one tokio task for it; each spawned task reports back on an
//! mpsc channel, and the loop then decrements the counters of the node's
//! dependents, queueing those that reach zero. A task therefore starts the
//! moment its last dependency is done, and never more than `jobs` run at once.
//!
//! When a node's dependencies are done, the loop decides, inline and
//! without a thread hop (a no-op build is this loop alone), between
//! *cached* and *ran* (`fresh::freshness`, the same decision `plan` and
//! `status` make through [`predict`]):
//!
//! 1. key = blake3 over [`KeyInput`]: the node's kind, its input manifest
//!    (plan fields, file bytes, its kind's implementation version — all
//!    digests), and the output digests of its dependencies from this build;
//! 2. if the stored record has that key and every blob it lists still hashes
//!    to its name, the task is up to date: its recorded output digest is
//!    passed on, and its exported files are restored under `out/` if needed;
//! 3. otherwise it is queued and its action runs (`run_node`); on success its
//!    files go to the blob store and only then is the record written
//!    (atomically, `store`). The reason it ran (never run / which inputs
//!    changed / which dependency output changed / corrupt record / missing
//!    blob) is reported.
//!
//! Early cutoff falls out of step 1: a dependency that reran but produced the
//! same output digest leaves its dependents' keys unchanged.
//!
//! ## Probes (effectful tasks)
//!
//! A live task whose key matches is not yet up to date: the world may have
//! drifted. Its action's probe checks the recorded receipt against the
//! world; success makes it *cached (probed)*, failure queues it to run with
//! "drifted: …". Probes are the slow part of a live no-op, so they are
//! *prefetched*: when the build starts, every recorded live task's probe is
//! spawned at once (bounded by `MAX_PROBES`, longest chain of dependents
//! first, as tasks are run), before its dependencies are checked, because a
//! probe reads the receipt and the world, not the key.
//! A task found up to date by its probe reports when and how long the probe
//! ran (the trace draws it in a probe row of its own), but adds nothing to
//! the critical path: it ran alongside its dependencies' probes, not after
//! them.
//! Each result carries a generation: `Prefetch` for these, `Fresh` for a
//! probe started when the node is reached. A prefetched result is used only
//! if none of the node's dependencies ran in this build (a rerun
//! dependency may have changed what the probe would see); otherwise the
//! node is probed again and the prefetch, when it arrives, is dropped. A
//! node reached before its prefetch answered waits for that answer. Probe
//! results arrive on their own channel, so the loop never blocks on one.
//!
//! ## Failure and cancellation
//!
//! A failure is reported once, on its task; every transitive dependent is
//! marked `skipped: <task> failed`. Without `keep_going` the scheduler starts
//! nothing new after the first failure but lets running tasks finish (their
//! records are valid); what never started is `skipped` with that reason.
//! With `keep_going` every branch not downstream of a failure continues.
//! When the `cancel` future completes (Ctrl-C), running tasks are aborted:
//! dropping their futures kills their child processes (`kill_on_drop`), and
//! since a record is written only after success, nothing half-done is
//! recorded.

use crate::cache::{BuildLock, Cache, FileEntry, Load, Record};
use crate::graph::{Ctx, DepReader, Graph, Node, OutFile, Probe, ProbeError, TaskError};
use crate::hash::{Digest, digest_of};
use petgraph::graph::NodeIndex;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod destroy;
mod drain;
mod fresh;
pub mod noop;
mod report;
mod store;

pub use destroy::{to_undo, undo_all};
use drain::DrainState;
use fresh::{Checked, check, recorded_ctx};
pub use fresh::{
    KeyInput, Prediction, key_of, output_digest, predict, probe_predictions, why_stale,
};
pub use report::{BuildReport, Observer, Options, Quiet, RetryReport, Status, TaskReport};
pub use store::recorded_file;
use store::{StoreReader, materialize, store};

struct Shared {
    graph: Arc<Graph>,
    cache: Arc<Cache>,
    lock: Arc<BuildLock>,
    out_dir: Option<PathBuf>,
    epoch: Instant,
    /// Directories under `out/` checked in this build, and whether for a
    /// secret (`materialize`).
    dirs: std::sync::Mutex<HashSet<(PathBuf, bool)>>,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A node whose dependencies are done and whose cache check missed.
struct ToRun {
    i: NodeIndex,
    key: Digest,
    reason: String,
    deps: BTreeMap<String, Digest>,
    dep_files: HashMap<String, Arc<Vec<FileEntry>>>,
    /// The files of the task's last successful run, if any: a live task
    /// reads its old receipt to remove what it no longer installs.
    previous: Option<Arc<Vec<FileEntry>>>,
}

/// Run `selected` nodes of `graph` (all when `None`). The selection must be
/// closed under dependencies.
pub async fn execute(
    graph: Arc<Graph>,
    selected: Option<Vec<bool>>,
    cache: Arc<Cache>,
    lock: Arc<BuildLock>,
    opts: Options,
    observer: Arc<dyn Observer>,
    cancel: impl Future<Output = ()>,
) -> BuildReport {
    let selected = selected.unwrap_or_else(|| vec![true; graph.len()]);
    let shared = Arc::new(Shared {
        graph: graph.clone(),
        cache,
        lock,
        out_dir: opts.out_dir.clone(),
        epoch: opts.epoch.unwrap_or_else(Instant::now),
        dirs: Default::default(),
    });
    shared.cache.set_verify(opts.verify);
    let sh = shared.clone();
    let mut st = DrainState::new(shared, selected, &opts, observer);
    st.prefetch_probes();
    tokio::pin!(cancel);
    loop {
        st.check_ready();
        st.start_ready();
        if !st.waiting() {
            if st.idle() {
                break;
            }
            continue;
        }
        let msg = tokio::select! {
            msg = st.rx.recv() => msg.expect("the scheduler holds a sender"),
            p = st.prx.recv() => Msg::Probed(p.expect("the scheduler holds a sender")),
            () = &mut cancel => {
                st.interrupt().await;
                break;
            }
        };
        match msg {
            Msg::Done(i, report) => st.on_done(i, report),
            Msg::Probed((i, generation, result, span)) => st.on_probed(i, generation, result, span),
        }
    }
    let report = st.finish();
    // What this build hashed, for the next one. Not written, it costs the
    // next build a re-hash, nothing more.
    let _ = sh.cache.save_stat(&sh.lock);
    // Likewise: a log left long costs the next build a longer read.
    let _ = sh.cache.compact_records(&sh.lock);
    report
}

pub(crate) type DepFiles = HashMap<String, Arc<Vec<FileEntry>>>;

/// Check a wave of ready nodes, on up to `threads` scoped threads when the
/// wave is large enough to pay for them.
fn check_wave(
    sh: &Shared,
    wave: &[(NodeIndex, BTreeMap<String, Digest>, DepFiles)],
    verified: &mut HashSet<Digest>,
    threads: usize,
    lane: usize,
) -> Vec<Checked> {
    const MIN_PER_THREAD: usize = 32;
    let threads = threads.min(wave.len() / MIN_PER_THREAD).max(1);
    if threads == 1 {
        let mut fresh = HashSet::new();
        let out = wave
            .iter()
            .map(|(i, d, _)| check(sh, *i, d, verified, &mut fresh, lane))
            .collect();
        verified.extend(fresh);
        return out;
    }
    let chunk = wave.len().div_ceil(threads);
    let known: &HashSet<Digest> = verified;
    let parts: Vec<(Vec<Checked>, HashSet<Digest>)> = std::thread::scope(|s| {
        let handles: Vec<_> = wave
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut fresh = HashSet::new();
                    let out = part
                        .iter()
                        .map(|(i, d, _)| check(sh, *i, d, known, &mut fresh, lane))
                        .collect();
                    (out, fresh)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("cache check panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(wave.len());
    for (part, fresh) in parts {
        out.extend(part);
        verified.extend(fresh);
    }
    out
}

/// The finished dependencies' output digests and files.
fn dep_outputs(
    graph: &Graph,
    reports: &[Option<TaskReport>],
    i: NodeIndex,
) -> (BTreeMap<String, Digest>, DepFiles) {
    let mut deps = BTreeMap::new();
    let mut files = HashMap::new();
    for d in graph.deps(i) {
        let r = reports[d.index()].as_ref().expect("dependency finished");
        let id = graph.node(d).id.clone();
        deps.insert(
            id.clone(),
            r.output.expect("finished dependency has an output"),
        );
        files.insert(id, r.files.clone().expect("finished dependency has files"));
    }
    (deps, files)
}

/// Node `i` succeeded: count it off its dependents.
fn release(
    graph: &Graph,
    selected: &[bool],
    pending: &mut [u32],
    reports: &[Option<TaskReport>],
    i: NodeIndex,
    newly_ready: &mut Vec<NodeIndex>,
) {
    for d in graph.dependents(i).filter(|d| selected[d.index()]) {
        let p = &mut pending[d.index()];
        *p -= 1;
        if *p == 0 && reports[d.index()].is_none() {
            newly_ready.push(d);
        }
    }
}

/// At most this many drift probes at once.
pub(crate) const MAX_PROBES: usize = 16;

enum Msg {
    Done(NodeIndex, TaskReport),
    Probed(drain::Probed),
}

/// Which probe of a node a result comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gen {
    /// Started up front, before the node was reached.
    Prefetch,
    /// Started when the node was reached.
    Fresh,
}

pub(crate) fn cached_report(node: &Node, rec: &Record, lane: usize) -> TaskReport {
    TaskReport {
        id: node.id.clone(),
        status: Status::Cached,
        reason: "up to date (probed)".into(),
        start_us: 0,
        duration_us: 0,
        lane,
        output: Some(rec.output),
        files: Some(Arc::new(rec.files.clone())),
    }
}

/// Longest chain of dependencies by this build's durations. A cached task
/// counts as nothing: its check (or its probe, which ran alongside its
/// dependencies', not after them) held up no dependent's work.
fn critical_path(graph: &Graph, selected: &[bool], tasks: &[TaskReport]) -> (Vec<String>, u64) {
    let dur: HashMap<&str, u64> = tasks
        .iter()
        .filter(|t| t.status != Status::Cached)
        .map(|t| (t.id.as_str(), t.duration_us))
        .collect();
    let mut best: Vec<(u64, Option<NodeIndex>)> = vec![(0, None); graph.len()];
    let mut end: Option<(u64, NodeIndex)> = None;
    for &i in graph.topo() {
        if !selected[i.index()] {
            continue;
        }
        let pred = graph.deps(i).max_by_key(|d| best[d.index()].0);
        let acc = pred.map_or(0, |d| best[d.index()].0);
        let total = acc + dur.get(graph.node(i).id.as_str()).copied().unwrap_or(0);
        best[i.index()] = (total, pred);
        if end.is_none_or(|(t, _)| total > t) {
            end = Some((total, i));
        }
    }
    let Some((total, mut i)) = end else {
        return (Vec::new(), 0);
    };
    let mut chain = vec![graph.node(i).id.clone()];
    while let Some(p) = best[i.index()].1 {
        chain.push(graph.node(p).id.clone());
        i = p;
    }
    chain.reverse();
    (chain, total)
}

/// A panic's message, as a task's failure reason.
fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("panicked: {msg} (a bug in mesh: please report it)")
}

async fn run_node(sh: &Shared, job: ToRun, lane: usize) -> TaskReport {
    let node = sh.graph.node(job.i);
    let start = Instant::now();
    let start_us = start.duration_since(sh.epoch).as_micros() as u64;
    let done = |status, reason: String, output, files| TaskReport {
        id: node.id.clone(),
        status,
        reason,
        start_us,
        duration_us: start.elapsed().as_micros() as u64,
        lane,
        output,
        files,
    };
    let mut files = job.dep_files;
    if let Some(prev) = job.previous {
        files.insert(node.id.clone(), prev);
    }
    let ctx = Ctx {
        id: node.id.clone(),
        deps: Arc::new(StoreReader {
            cache: sh.cache.clone(),
            files,
        }),
    };
    let started_ms = unix_ms();
    // A panic in an action (when it is called, or while its future is
    // polled) fails that task like any error: the build never waits on a
    // task that cannot report.
    use futures_util::FutureExt;
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.action.run(ctx)));
    let outcome = match started {
        Ok(fut) => {
            crate::events::scope(
                node.id.as_str().into(),
                std::panic::AssertUnwindSafe(fut).catch_unwind(),
            )
            .await
        }
        Err(p) => Err(p),
    };
    let files = match outcome {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return done(Status::Failed, e.to_string(), None, None),
        Err(p) => return done(Status::Failed, panicked(p.as_ref()), None, None),
    };
    match store(sh, node, job.key, job.deps, files, started_ms, start) {
        Ok((output, entries)) => match materialize(sh, &entries) {
            Ok(()) => done(
                Status::Ran,
                job.reason,
                Some(output),
                Some(Arc::new(entries)),
            ),
            Err(e) => done(Status::Failed, e.to_string(), None, None),
        },
        Err(e) => done(Status::Failed, e.to_string(), None, None),
    }
}
