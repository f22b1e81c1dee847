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
//! A spawned task (`run_node`) decides between *cached* and *ran*:
//!
//! 1. key = blake3 over [`KeyInput`]: the node's kind, its input manifest
//!    (plan fields, file bytes, implementation version — all digests), and the
//!    output digests of its dependencies from this build;
//! 2. if the stored record has that key and every blob it lists still hashes
//!    to its name, the task is up to date: its recorded output digest is
//!    passed on, and its exported files are restored under `out/` if needed;
//! 3. otherwise the action runs; on success its files go to the blob store
//!    and only then is the record written (atomically). The reason it ran
//!    (never run / which inputs changed / which dependency output changed /
//!    corrupt record / missing blob) is reported.
//!
//! Early cutoff falls out of step 1: a dependency that reran but produced the
//! same output digest leaves its dependents' keys unchanged.
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
use crate::graph::{Ctx, DepReader, Graph, Node, OutFile, TaskError};
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

/// What a cache key is made of. Printed, it is the explanation of a miss.
#[derive(Serialize)]
pub struct KeyInput<'a> {
    pub kind: &'a str,
    pub inputs: &'a BTreeMap<String, Digest>,
    pub deps: &'a BTreeMap<String, Digest>,
}

/// The key of a node given its dependencies' output digests.
pub fn key_of(node: &Node, deps: &BTreeMap<String, Digest>) -> Digest {
    digest_of(
        "mesh.task-key.v1",
        &KeyInput {
            kind: node.kind,
            inputs: &node.inputs,
            deps,
        },
    )
}

/// The output digest of a set of produced files.
/// Private files (probe bookkeeping) are left out: dependents only see what
/// they can depend on, so early cutoff is not defeated by bookkeeping.
pub fn output_digest(files: &[FileEntry]) -> Digest {
    let public: Vec<&FileEntry> = files.iter().filter(|f| !f.private).collect();
    digest_of("mesh.task-output.v1", &public)
}

/// Why a recorded task is not up to date with these dependency outputs.
pub fn why_stale(node: &Node, rec: &Record, deps: &BTreeMap<String, Digest>) -> Vec<String> {
    let mut out: Vec<String> = crate::graph::input_changes(node, rec)
        .into_iter()
        .map(|c| format!("input {c} changed"))
        .collect();
    for (d, dig) in deps {
        match rec.deps.get(d) {
            None => out.push(format!("new dependency {d}")),
            Some(old) if old != dig => out.push(format!("output of {d} changed")),
            _ => {}
        }
    }
    for d in rec.deps.keys() {
        if !deps.contains_key(d) {
            out.push(format!("no longer depends on {d}"));
        }
    }
    out
}

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
    fn skipped(id: &str, reason: String) -> TaskReport {
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
}

struct Shared {
    graph: Arc<Graph>,
    cache: Arc<Cache>,
    lock: Arc<BuildLock>,
    out_dir: Option<PathBuf>,
    epoch: Instant,
}

/// Reads dependency files out of the blob store.
struct StoreReader {
    cache: Arc<Cache>,
    files: HashMap<String, Arc<Vec<FileEntry>>>,
}

impl DepReader for StoreReader {
    fn read(&self, dep: &str, name: &str) -> Result<Vec<u8>, TaskError> {
        let entry = self
            .files
            .get(dep)
            .and_then(|fs| fs.iter().find(|f| f.name == name))
            .ok_or_else(|| TaskError::new(format!("dependency {dep} produced no file {name}")))?;
        self.cache.read_blob(&entry.blob).ok_or_else(|| {
            TaskError::new(format!(
                "blob of {dep}/{name} is missing or corrupt in the cache"
            ))
        })
    }
}

fn unix_ms() -> u64 {
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
    let n = graph.len();
    let selected = selected.unwrap_or_else(|| vec![true; n]);
    let shared = Arc::new(Shared {
        graph: graph.clone(),
        cache,
        lock,
        out_dir: opts.out_dir.clone(),
        epoch: Instant::now(),
    });
    let jobs = opts.jobs.max(1);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs);

    // Priority: the longest chain of selected dependents below a node, so
    // that when more tasks are ready than slots, the ones on the critical
    // path go first (ties: topological order).
    let mut height = vec![0u32; n];
    for &i in graph.topo().iter().rev() {
        if selected[i.index()] {
            height[i.index()] = 1 + graph
                .dependents(i)
                .filter(|d| selected[d.index()])
                .map(|d| height[d.index()])
                .max()
                .unwrap_or(0);
        }
    }
    let mut topo_pos = vec![0usize; n];
    for (pos, &i) in graph.topo().iter().enumerate() {
        topo_pos[i.index()] = pos;
    }
    let mut pending = vec![0u32; n];
    // Nodes whose dependencies are all done, not yet checked against the cache.
    let mut newly_ready: Vec<NodeIndex> = Vec::new();
    for &i in graph.topo().iter().rev() {
        if !selected[i.index()] {
            continue;
        }
        let deps = graph.deps(i).filter(|d| selected[d.index()]).count();
        assert_eq!(
            deps,
            graph.deps(i).count(),
            "selection is not closed under dependencies at {}",
            graph.node(i).id
        );
        pending[i.index()] = deps as u32;
        if deps == 0 {
            newly_ready.push(i);
        }
    }

    let mut ready: BinaryHeap<(u32, Reverse<usize>, NodeIndex)> = BinaryHeap::new();
    let mut to_run: HashMap<NodeIndex, ToRun> = HashMap::new();
    let mut reports: Vec<Option<TaskReport>> = vec![None; n];
    let mut handles: Vec<Option<JoinHandle<()>>> = (0..n).map(|_| None).collect();
    let mut free_lanes: BTreeSet<usize> = (0..jobs).collect();
    let mut verified: HashSet<Digest> = HashSet::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let (ptx, mut prx) = mpsc::unbounded_channel::<(NodeIndex, Gen, Result<(), String>)>();
    let probe_slots = Arc::new(tokio::sync::Semaphore::new(MAX_PROBES));
    // Nodes waiting on a probe, with the probe generation they wait for.
    let mut probing: HashMap<NodeIndex, (Box<Record>, ToRun, Gen)> = HashMap::new();
    let mut probe_handles: Vec<JoinHandle<()>> = Vec::new();
    // Probes start up front for every recorded live task, all in parallel:
    // a probe checks a receipt against the world, which does not depend on
    // the key, so waiting for the dependencies' probes first would only
    // chain them. A prefetched result counts only if none of the task's
    // dependencies ran in this build; otherwise the task is probed again.
    let mut prefetched: HashMap<NodeIndex, Option<Result<(), String>>> = HashMap::new();
    for &i in graph.topo() {
        let node = graph.node(i);
        if !selected[i.index()] || node.pure {
            continue;
        }
        let Load::Ok(rec) = shared.cache.load(&node.id) else {
            continue;
        };
        if let Some(fut) = node
            .action
            .probe(recorded_ctx(&graph, &shared.cache, i, &rec))
        {
            let (ptx, slots) = (ptx.clone(), probe_slots.clone());
            probe_handles.push(tokio::spawn(async move {
                let _permit = slots.acquire_owned().await;
                let _ = ptx.send((i, Gen::Prefetch, fut.await));
            }));
            prefetched.insert(i, None);
        }
    }
    let mut running = 0usize;
    let mut stopped_by: Option<String> = None;
    let mut interrupted = false;
    tokio::pin!(cancel);

    loop {
        // Cache checks run here, inline: a no-op build is this loop alone,
        // with no task handed to another thread.
        while stopped_by.is_none() && !newly_ready.is_empty() {
            // Check one wave of ready nodes (independent of each other),
            // spread over the CPUs.
            let wave: Vec<(NodeIndex, BTreeMap<String, Digest>, DepFiles)> =
                std::mem::take(&mut newly_ready)
                    .into_iter()
                    .map(|i| {
                        let (d, f) = dep_outputs(&graph, &reports, i);
                        (i, d, f)
                    })
                    .collect();
            let results = check_wave(&shared, &wave, &mut verified, threads, jobs);
            for ((i, deps, dep_files), checked) in wave.into_iter().zip(results) {
                match checked {
                    Checked::Hit(report) => {
                        observer.finished(&report);
                        reports[i.index()] = Some(report);
                        release(
                            &graph,
                            &selected,
                            &mut pending,
                            &reports,
                            i,
                            &mut newly_ready,
                        );
                    }
                    Checked::Miss {
                        key,
                        reason,
                        previous,
                    } => {
                        ready.push((height[i.index()], Reverse(topo_pos[i.index()]), i));
                        to_run.insert(
                            i,
                            ToRun {
                                i,
                                key,
                                reason,
                                deps,
                                dep_files,
                                previous,
                            },
                        );
                    }
                    Checked::Failed(report) => {
                        // Reported through the channel like a task that ran.
                        let _ = tx.send(Msg::Done(i, report));
                        running += 1;
                    }
                    Checked::Probe { key, record } => {
                        let job = ToRun {
                            i,
                            key,
                            reason: String::new(),
                            deps,
                            dep_files,
                            previous: Some(Arc::new(record.files.clone())),
                        };
                        let mut files = job.dep_files.clone();
                        files.insert(graph.node(i).id.clone(), Arc::new(record.files.clone()));
                        let ctx = Ctx {
                            id: graph.node(i).id.clone(),
                            deps: Arc::new(StoreReader {
                                cache: shared.cache.clone(),
                                files,
                            }),
                        };
                        let deps_ran = graph.deps(i).any(|d| {
                            reports[d.index()]
                                .as_ref()
                                .is_some_and(|r| r.status == Status::Ran)
                        });
                        let early = if deps_ran {
                            None
                        } else {
                            prefetched.remove(&i)
                        };
                        match early {
                            Some(Some(result)) => {
                                // Already answered: handled like any probe result.
                                let _ = ptx.send((i, Gen::Prefetch, result));
                                probing.insert(i, (record, job, Gen::Prefetch));
                                continue;
                            }
                            Some(None) => {
                                probing.insert(i, (record, job, Gen::Prefetch));
                                continue;
                            }
                            None => {}
                        }
                        match graph.node(i).action.probe(ctx) {
                            None => {
                                let report = cached_report(graph.node(i), &record, jobs);
                                observer.finished(&report);
                                reports[i.index()] = Some(report);
                                release(
                                    &graph,
                                    &selected,
                                    &mut pending,
                                    &reports,
                                    i,
                                    &mut newly_ready,
                                );
                            }
                            Some(fut) => {
                                let (ptx, slots) = (ptx.clone(), probe_slots.clone());
                                probe_handles.push(tokio::spawn(async move {
                                    let _permit = slots.acquire_owned().await;
                                    let _ = ptx.send((i, Gen::Fresh, fut.await));
                                }));
                                probing.insert(i, (record, job, Gen::Fresh));
                            }
                        }
                    }
                }
            }
        }
        while stopped_by.is_none() && running < jobs {
            let Some((_, _, i)) = ready.pop() else { break };
            let job = to_run
                .remove(&i)
                .expect("a ready node has its check result");
            let lane = free_lanes
                .pop_first()
                .expect("a lane is free when running < jobs");
            observer.started(&graph.node(i).id);
            let (sh, tx) = (shared.clone(), tx.clone());
            handles[i.index()] = Some(tokio::spawn(async move {
                let report = run_node(&sh, job, lane).await;
                let _ = tx.send(Msg::Done(i, report));
            }));
            running += 1;
        }
        if running == 0 && probing.is_empty() && (newly_ready.is_empty() || stopped_by.is_some()) {
            break;
        }
        if running == 0 && probing.is_empty() {
            continue;
        }
        let msg = tokio::select! {
            msg = rx.recv() => msg.expect("the scheduler holds a sender"),
            p = prx.recv() => Msg::Probed(p.expect("the scheduler holds a sender")),
            () = &mut cancel => {
                interrupted = true;
                let running: Vec<JoinHandle<()>> = handles.iter_mut().filter_map(Option::take).collect();
                for h in running.iter().chain(&probe_handles) {
                    h.abort();
                }
                // Let the aborted tasks settle (an await point is reached at
                // once; CPU work finishes first), so that a task which did
                // complete, record and all, is reported as run.
                let _ = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(running)).await;
                while let Ok(Msg::Done(i, report)) = rx.try_recv() {
                    if report.status == Status::Ran {
                        reports[i.index()] = Some(report);
                    }
                }
                break;
            }
        };
        let (i, report) = match msg {
            Msg::Done(i, report) => (i, report),
            Msg::Probed((i, generation, result)) => {
                let waited_for = probing.get(&i).map(|p| p.2);
                if waited_for != Some(generation) {
                    // A prefetch nobody waits for yet (keep it), or one
                    // superseded by a fresh probe (drop it).
                    if generation == Gen::Prefetch && prefetched.contains_key(&i) {
                        prefetched.insert(i, Some(result));
                    }
                    continue;
                }
                let (record, mut job, _) = probing.remove(&i).expect("a probed node was probing");
                match result {
                    Ok(()) => {
                        let report = cached_report(graph.node(i), &record, jobs);
                        observer.finished(&report);
                        reports[i.index()] = Some(report);
                        release(
                            &graph,
                            &selected,
                            &mut pending,
                            &reports,
                            i,
                            &mut newly_ready,
                        );
                    }
                    Err(why) => {
                        job.reason = format!("drifted: {why}");
                        ready.push((height[i.index()], Reverse(topo_pos[i.index()]), i));
                        to_run.insert(i, job);
                    }
                }
                continue;
            }
        };
        running -= 1;
        handles[i.index()] = None;
        if report.lane < jobs {
            free_lanes.insert(report.lane);
        }
        observer.finished(&report);
        let failed = report.status == Status::Failed;
        reports[i.index()] = Some(report);
        if failed {
            let root = graph.node(i).id.clone();
            if !opts.keep_going && stopped_by.is_none() {
                stopped_by = Some(root.clone());
            }
            // Everything downstream is skipped, naming the root failure.
            let mut stack: Vec<NodeIndex> = graph.dependents(i).collect();
            while let Some(d) = stack.pop() {
                if !selected[d.index()] || reports[d.index()].is_some() {
                    continue;
                }
                let r = TaskReport::skipped(&graph.node(d).id, format!("{root} failed"));
                observer.finished(&r);
                reports[d.index()] = Some(r);
                stack.extend(graph.dependents(d));
            }
        } else {
            release(
                &graph,
                &selected,
                &mut pending,
                &reports,
                i,
                &mut newly_ready,
            );
        }
    }

    let wall_us = shared.epoch.elapsed().as_micros() as u64;
    let mut tasks = Vec::new();
    for &i in graph.topo() {
        if !selected[i.index()] {
            continue;
        }
        let r = reports[i.index()].take().unwrap_or_else(|| {
            let reason = match (&stopped_by, interrupted) {
                (_, true) => "interrupted".into(),
                (Some(f), _) => format!("not started: the build stopped after {f} failed"),
                (None, false) => "not reached".into(),
            };
            TaskReport::skipped(&graph.node(i).id, reason)
        });
        tasks.push(r);
    }
    let (critical_path, critical_path_us) = critical_path(&graph, &selected, &tasks);
    BuildReport {
        tasks,
        wall_us,
        critical_path,
        critical_path_us,
        interrupted,
    }
}

type DepFiles = HashMap<String, Arc<Vec<FileEntry>>>;

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
const MAX_PROBES: usize = 16;

enum Msg {
    Done(NodeIndex, TaskReport),
    Probed((NodeIndex, Gen, Result<(), String>)),
}

/// Which probe of a node a result comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gen {
    /// Started up front, before the node was reached.
    Prefetch,
    /// Started when the node was reached.
    Fresh,
}

fn cached_report(node: &Node, rec: &Record, lane: usize) -> TaskReport {
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

enum Checked {
    /// Up to date, but an effectful task: probe the world first.
    Probe {
        key: Digest,
        record: Box<Record>,
    },
    Hit(TaskReport),
    Miss {
        key: Digest,
        reason: String,
        previous: Option<Arc<Vec<FileEntry>>>,
    },
    /// Up to date, but its exported files could not be restored.
    Failed(TaskReport),
}

/// Is node `i` up to date? Blobs verified earlier in this build (`known`,
/// or `fresh` in this wave) are not re-hashed.
fn check(
    sh: &Shared,
    i: NodeIndex,
    deps: &BTreeMap<String, Digest>,
    known: &HashSet<Digest>,
    fresh: &mut HashSet<Digest>,
    lane: usize,
) -> Checked {
    let node = sh.graph.node(i);
    let start = Instant::now();
    let key = key_of(node, deps);
    let report = |status, reason: String, output, files| TaskReport {
        id: node.id.clone(),
        status,
        reason,
        start_us: start.duration_since(sh.epoch).as_micros() as u64,
        duration_us: start.elapsed().as_micros() as u64,
        lane,
        output,
        files,
    };
    let mut previous = None;
    let reason = match sh.cache.load(&node.id) {
        Load::Ok(rec) if rec.key == key => {
            previous = Some(Arc::new(rec.files.clone()));
            let bad = rec.files.iter().find(|f| {
                if known.contains(&f.blob) || fresh.contains(&f.blob) {
                    return false;
                }
                let ok = sh.cache.blob_ok(&f.blob);
                if ok {
                    fresh.insert(f.blob);
                }
                !ok
            });
            match bad {
                None if !node.pure => {
                    return Checked::Probe {
                        key,
                        record: Box::new(rec),
                    };
                }
                None => {
                    return match materialize(sh, &rec.files) {
                        Ok(()) => Checked::Hit(report(
                            Status::Cached,
                            "up to date".into(),
                            Some(rec.output),
                            Some(Arc::new(rec.files)),
                        )),
                        Err(e) => Checked::Failed(report(Status::Failed, e, None, None)),
                    };
                }
                Some(f) => format!("output {} is missing or corrupt in the cache", f.name),
            }
        }
        Load::Ok(rec) => {
            previous = Some(Arc::new(rec.files.clone()));
            let why = why_stale(node, &rec, deps);
            if why.is_empty() {
                "key changed".into()
            } else {
                why.join(", ")
            }
        }
        Load::Missing => "never run".into(),
        Load::Corrupt(why) => format!("record was corrupt ({why})"),
    };
    Checked::Miss {
        key,
        reason,
        previous,
    }
}

/// Longest chain of dependencies by this build's durations.
fn critical_path(graph: &Graph, selected: &[bool], tasks: &[TaskReport]) -> (Vec<String>, u64) {
    let dur: HashMap<&str, u64> = tasks
        .iter()
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
    let files = match node.action.run(ctx).await {
        Ok(f) => f,
        Err(e) => return done(Status::Failed, e.to_string(), None, None),
    };
    match store(sh, node, job.key, job.deps, files, started_ms, start) {
        Ok((output, entries)) => match materialize(sh, &entries) {
            Ok(()) => done(
                Status::Ran,
                job.reason,
                Some(output),
                Some(Arc::new(entries)),
            ),
            Err(e) => done(Status::Failed, e, None, None),
        },
        Err(e) => done(Status::Failed, e, None, None),
    }
}

fn store(
    sh: &Shared,
    node: &Node,
    key: Digest,
    deps: BTreeMap<String, Digest>,
    files: Vec<OutFile>,
    started_ms: u64,
    start: Instant,
) -> Result<(Digest, Vec<FileEntry>), String> {
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        let blob = sh
            .cache
            .put_blob(&sh.lock, &f.bytes, f.secret)
            .map_err(|e| e.to_string())?;
        entries.push(FileEntry {
            name: f.name,
            blob,
            secret: f.secret,
            export: f.export,
            private: f.private,
        });
    }
    let output = output_digest(&entries);
    let rec = Record {
        id: node.id.clone(),
        key,
        inputs: node.inputs.clone(),
        deps,
        output,
        files: entries.clone(),
        started_ms,
        duration_us: start.elapsed().as_micros() as u64,
    };
    // Durable records for effectful tasks (minutes of work); pure ones are
    // cheaper to recompute than to fsync, and are verified when read.
    sh.cache
        .save(&sh.lock, &rec, !node.pure)
        .map_err(|e| e.to_string())?;
    Ok((output, entries))
}

/// Make `out/` hold exactly the exported files (restoring edited or deleted
/// ones from the store).
fn materialize(sh: &Shared, files: &[FileEntry]) -> Result<(), String> {
    let Some(out) = &sh.out_dir else {
        return Ok(());
    };
    for f in files {
        let Some(rel) = &f.export else { continue };
        let dest = out.join(rel);
        if std::fs::read(&dest).is_ok_and(|b| Digest::of_bytes(&b) == f.blob) {
            if f.secret {
                set_mode(&dest, 0o600)
                    .map_err(|e| format!("cannot chmod {}: {e}", dest.display()))?;
            }
            continue;
        }
        let bytes = sh
            .cache
            .read_blob(&f.blob)
            .ok_or_else(|| format!("blob of {} vanished from the cache", f.name))?;
        write_file_atomic(&dest, &bytes, if f.secret { 0o600 } else { 0o644 })
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Write a file through a temp file in the same directory and a rename.
pub fn write_file_atomic(dest: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = dest.parent().unwrap_or(Path::new("."));
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = dir.join(format!(
        ".{}.mesh-tmp.{}",
        dest.file_name().map_or("f".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        set_mode(&tmp, mode)?;
        std::fs::rename(&tmp, dest)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// What a build would do with a task, decided without running anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// Same key, outputs verified.
    UpToDate { output: Digest, record: Box<Record> },
    /// Will run, for this reason.
    Run { reason: String, never_run: bool },
    /// Will rerun only if this dependency's rerun changes its output
    /// (early cutoff may stop it).
    Maybe { after: String },
    /// Same key, but the world no longer matches (a failed probe).
    Drifted { reason: String },
}

impl Prediction {
    pub fn label(&self) -> &'static str {
        match self {
            Prediction::UpToDate { .. } => "up-to-date",
            Prediction::Run {
                never_run: true, ..
            } => "never-run",
            Prediction::Run { .. } => "stale",
            Prediction::Maybe { .. } => "stale",
            Prediction::Drifted { .. } => "drifted",
        }
    }
    pub fn reason(&self) -> String {
        match self {
            Prediction::UpToDate { .. } => "up to date".into(),
            Prediction::Run { reason, .. } => reason.clone(),
            Prediction::Maybe { after } => format!("{after} reruns (early cutoff may spare this)"),
            Prediction::Drifted { reason } => format!("drifted: {reason}"),
        }
    }
}

/// Dry-run the cache decisions of `selected` nodes in topological order.
pub fn predict(
    graph: &Graph,
    selected: &[bool],
    cache: Option<&Cache>,
) -> Vec<(NodeIndex, Prediction)> {
    let mut known: HashMap<NodeIndex, Digest> = HashMap::new();
    let mut verified: HashSet<Digest> = HashSet::new();
    let mut unknown_because: HashMap<NodeIndex, String> = HashMap::new();
    let mut out = Vec::new();
    for &i in graph.topo() {
        if !selected[i.index()] {
            continue;
        }
        let node = graph.node(i);
        let rec = match cache.map(|c| c.load(&node.id)) {
            Some(Load::Ok(r)) => Some(r),
            Some(Load::Corrupt(why)) => {
                let p = Prediction::Run {
                    reason: format!("record is corrupt ({why})"),
                    never_run: false,
                };
                unknown_because.insert(i, node.id.clone());
                out.push((i, p));
                continue;
            }
            _ => None,
        };
        let mut dep_ids: Vec<NodeIndex> = graph.deps(i).collect();
        dep_ids.sort_by(|a, b| graph.node(*a).id.cmp(&graph.node(*b).id));
        let rerunning_dep = dep_ids
            .iter()
            .find(|d| unknown_because.contains_key(d))
            .copied();
        let p = match (rec, rerunning_dep) {
            (None, _) => Prediction::Run {
                reason: "never run".into(),
                never_run: true,
            },
            (Some(rec), Some(d)) => {
                let changes = crate::graph::input_changes(node, &rec);
                if changes.is_empty() {
                    Prediction::Maybe {
                        after: graph.node(d).id.clone(),
                    }
                } else {
                    Prediction::Run {
                        reason: changes
                            .iter()
                            .map(|c| format!("input {c} changed"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        never_run: false,
                    }
                }
            }
            (Some(rec), None) => {
                let deps: BTreeMap<String, Digest> = dep_ids
                    .iter()
                    .map(|d| (graph.node(*d).id.clone(), known[d]))
                    .collect();
                let key = key_of(node, &deps);
                let cache = cache.expect("a record implies a cache");
                if rec.key == key {
                    let bad = rec.files.iter().find(|f| {
                        let ok = verified.contains(&f.blob) || cache.blob_ok(&f.blob);
                        if ok {
                            verified.insert(f.blob);
                        }
                        !ok
                    });
                    match bad {
                        None => Prediction::UpToDate {
                            output: rec.output,
                            record: Box::new(rec),
                        },
                        Some(f) => Prediction::Run {
                            reason: format!("output {} is missing or corrupt in the cache", f.name),
                            never_run: false,
                        },
                    }
                } else {
                    let why = why_stale(node, &rec, &deps);
                    Prediction::Run {
                        reason: if why.is_empty() {
                            "key changed".into()
                        } else {
                            why.join(", ")
                        },
                        never_run: false,
                    }
                }
            }
        };
        match &p {
            Prediction::UpToDate { output, .. } => {
                known.insert(i, *output);
            }
            _ => {
                unknown_because.insert(i, node.id.clone());
            }
        }
        out.push((i, p));
    }
    out
}

/// The files a task can read in a probe or undo: its dependencies' recorded
/// files, and its own under its id.
fn recorded_ctx(graph: &Graph, cache: &Arc<Cache>, i: NodeIndex, own: &Record) -> Ctx {
    let mut files: DepFiles = HashMap::new();
    for d in graph.deps(i) {
        if let Load::Ok(r) = cache.load(&graph.node(d).id) {
            files.insert(r.id.clone(), Arc::new(r.files));
        }
    }
    files.insert(own.id.clone(), Arc::new(own.files.clone()));
    Ctx {
        id: graph.node(i).id.clone(),
        deps: Arc::new(StoreReader {
            cache: cache.clone(),
            files,
        }),
    }
}

/// Probe every live task predicted up to date (in parallel, bounded); a
/// failed probe turns the prediction into a drift.
pub async fn probe_predictions(
    graph: &Graph,
    cache: &Cache,
    preds: &mut [(NodeIndex, Prediction)],
) {
    let cache = Arc::new(Cache::open_existing(cache.root()).expect("the cache exists"));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PROBES));
    let mut jobs = Vec::new();
    for (k, (i, p)) in preds.iter().enumerate() {
        let node = graph.node(*i);
        if let (false, Prediction::UpToDate { record, .. }) = (node.pure, p)
            && let Some(fut) = node.action.probe(recorded_ctx(graph, &cache, *i, record))
        {
            let slots = slots.clone();
            jobs.push(tokio::spawn(async move {
                let _permit = slots.acquire_owned().await;
                (k, fut.await)
            }));
        }
    }
    for j in jobs {
        if let Ok((k, Err(why))) = j.await {
            preds[k].1 = Prediction::Drifted { reason: why };
        }
    }
}

/// Undo recorded live tasks, dependents first. Returns the ids undone (or
/// with nothing to undo), and the first failure.
pub async fn undo_all(
    graph: &Graph,
    cache: &Arc<Cache>,
) -> (Vec<String>, Vec<(String, TaskError)>) {
    let mut done = Vec::new();
    for &i in graph.topo().iter().rev() {
        let node = graph.node(i);
        if node.pure {
            continue;
        }
        let Load::Ok(rec) = cache.load(&node.id) else {
            continue;
        };
        if let Some(fut) = node.action.undo(recorded_ctx(graph, cache, i, &rec))
            && let Err(e) = fut.await
        {
            return (done, vec![(node.id.clone(), e)]);
        }
        done.push(node.id.clone());
    }
    (done, Vec::new())
}
