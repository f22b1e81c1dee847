//! Property tests of the executor on random DAGs of fake tasks, through the
//! real scheduler and the real on-disk cache.
//!
//! Each fake task's output is its own input value followed by its
//! dependencies' outputs (read back through the store), except "cutoff"
//! tasks, whose output is a constant: they are where early cutoff must stop
//! a rebuild. A model computed independently in the test says which tasks
//! must rerun, fail or be skipped; the executor must agree exactly.
//!
//! Effectful tasks (as live tasks are) have a probe that reads a fake
//! world: in sync, drifted, or unreachable. The model then also says what
//! `plan` and `status` (the executor's `predict` plus probes) report, and the
//! build must do what they said.

use mesh::cache::{Cache, Load};
use mesh::exec::{self, BuildReport, Options, Quiet, Status};
use mesh::graph::{
    Action, BoxFuture, Ctx, Graph, GraphBuilder, Node, OutFile, Probe, ProbeError, TaskError,
};
use mesh::hash::Digest;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Log {
    seq: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// (id, start seq, end seq)
    runs: Mutex<Vec<(usize, usize, usize)>>,
    /// Each probe's task, in the order the probes started.
    probes: Mutex<Vec<usize>>,
}

/// What an effectful task's probe finds in the fake world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WorldState {
    InSync,
    Drifted,
    Unreachable,
}

type World = Arc<Mutex<BTreeMap<usize, WorldState>>>;

struct Fake {
    idx: usize,
    /// Effectful: has a probe reading `world` (`Some(true)`), or none
    /// (`Some(false)`); pure: `None`.
    probe: Option<bool>,
    world: World,
    deps: Vec<usize>,
    cutoff: bool,
    fail: bool,
    input: String,
    sleep_us: u64,
    log: Arc<Log>,
}

impl Action for Fake {
    fn run(&self, ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        let (idx, deps, cutoff, fail, input, sleep_us, log, world) = (
            self.idx,
            self.deps.clone(),
            self.cutoff,
            self.fail,
            self.input.clone(),
            self.sleep_us,
            self.log.clone(),
            self.world.clone(),
        );
        Box::pin(async move {
            // An action cannot act on a world that does not answer.
            if world.lock().unwrap().get(&idx) == Some(&WorldState::Unreachable) {
                return Err(TaskError::tool("fake", format!("t{idx} does not answer")));
            }
            let now = log.running.fetch_add(1, Ordering::SeqCst) + 1;
            log.max_running.fetch_max(now, Ordering::SeqCst);
            let start = log.seq.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_micros(sleep_us)).await;
            let mut out = input.clone();
            for d in &deps {
                let bytes = ctx.read(&format!("t{d}"), "out")?;
                out.push('|');
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
            let end = log.seq.fetch_add(1, Ordering::SeqCst);
            log.runs.lock().unwrap().push((idx, start, end));
            log.running.fetch_sub(1, Ordering::SeqCst);
            if fail {
                return Err(TaskError::tool("fake", format!("t{idx} fails on purpose")));
            }
            let out = if cutoff { "const".to_string() } else { out };
            world.lock().unwrap().insert(idx, WorldState::InSync);
            Ok(vec![OutFile::new("out", out)])
        })
    }

    fn probe(&self, ctx: Ctx) -> Option<BoxFuture<Probe>> {
        if self.probe != Some(true) {
            return None;
        }
        let (idx, world, log) = (self.idx, self.world.clone(), self.log.clone());
        Some(Box::pin(async move {
            log.probes.lock().unwrap().push(idx);
            // A probe reads the task's own recorded output.
            ctx.read(&ctx.id, "out")
                .map_err(|e| ProbeError::Drift(e.to_string()))?;
            match world.lock().unwrap().get(&idx).copied() {
                Some(WorldState::InSync) => Ok(()),
                Some(WorldState::Drifted) => Err(ProbeError::Drift(format!("t{idx} changed"))),
                Some(WorldState::Unreachable) => {
                    Err(ProbeError::Unreachable(format!("t{idx} does not answer")))
                }
                None => Err(ProbeError::Drift(format!("t{idx} was never made"))),
            }
        }))
    }
}

#[derive(Debug, Clone)]
struct Dag {
    n: usize,
    /// deps[j] = sorted dependencies of j (all < j).
    deps: Vec<Vec<usize>>,
    cutoff: Vec<bool>,
    sleep_us: Vec<u64>,
}

fn dag() -> impl Strategy<Value = Dag> {
    (1usize..24).prop_flat_map(|n| {
        (
            proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n),
            proptest::collection::vec(proptest::bool::weighted(0.25), n),
            proptest::collection::vec(0u64..300, n),
        )
            .prop_map(move |(m, cutoff, sleep_us)| {
                let deps = (0..n)
                    // Mostly local edges, a few long ones: deep and wide graphs.
                    .map(|j| {
                        (0..j)
                            .filter(|&i| m[j][i] && (j - i <= 4 || m[i][j]))
                            .collect()
                    })
                    .collect();
                Dag {
                    n,
                    deps,
                    cutoff,
                    sleep_us,
                }
            })
    })
}

fn graph(d: &Dag, inputs: &[String], fail: &BTreeSet<usize>, log: &Arc<Log>) -> Arc<Graph> {
    graph_in(d, inputs, fail, log, &[], &World::default())
}

/// `effect[i]`: task i is effectful, with a probe (`Some(true)`) or none.
fn graph_in(
    d: &Dag,
    inputs: &[String],
    fail: &BTreeSet<usize>,
    log: &Arc<Log>,
    effect: &[Option<bool>],
    world: &World,
) -> Arc<Graph> {
    let mut b = GraphBuilder::new();
    for (i, input) in inputs.iter().enumerate().take(d.n) {
        let mut m = BTreeMap::new();
        m.insert("value".to_string(), Digest::of_bytes(input.as_bytes()));
        b.add(Node {
            id: format!("t{i}"),
            kind: "fake",
            pure: effect.get(i).copied().flatten().is_none(),
            inputs: m.into(),
            action: Arc::new(Fake {
                idx: i,
                probe: effect.get(i).copied().flatten(),
                world: world.clone(),
                deps: d.deps[i].clone(),
                cutoff: d.cutoff[i],
                fail: fail.contains(&i),
                input: input.clone(),
                sleep_us: d.sleep_us[i],
                log: log.clone(),
            }),
        })
        .unwrap();
        for &dep in &d.deps[i] {
            b.edge(format!("t{dep}"), format!("t{i}"));
        }
    }
    Arc::new(b.seal().unwrap())
}

fn run(cache: &Arc<Cache>, g: Arc<Graph>, jobs: usize, keep_going: bool) -> BuildReport {
    let lock = Arc::new(cache.lock().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(exec::execute(
        g,
        None,
        cache.clone(),
        lock,
        Options {
            jobs,
            keep_going,
            out_dir: None,
            epoch: None,
            verify: false,
        },
        Arc::new(Quiet),
        std::future::pending(),
    ))
}

/// A no-op's probes start longest chain of dependents first, as tasks run:
/// a task with work waiting below it (a cluster, under which everything of
/// that cluster waits for its probe) starts among the first probes, not
/// after every cheap leaf that comes before it in topological order.
#[test]
fn probes_start_with_the_longest_chain_of_dependents() {
    // t0 → t1 → t2: a chain; t3..t42: effectful leaves, which come first
    // in the graph's topological order.
    let n = 43;
    let mut deps = vec![vec![]; n];
    deps[1] = vec![0];
    deps[2] = vec![1];
    let d = Dag {
        n,
        deps,
        cutoff: vec![false; n],
        sleep_us: vec![0; n],
    };
    let effect = vec![Some(true); n];
    let world = World::default();
    let inputs: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
    let build = |log: &Arc<Log>| {
        let g = graph_in(&d, &inputs, &BTreeSet::new(), log, &effect, &world);
        run(&cache, g, 4, false)
    };
    assert_eq!(build(&Arc::new(Log::default())).count(Status::Ran), n);
    let log = Arc::new(Log::default());
    assert_eq!(build(&log).count(Status::Cached), n);
    let probes = log.probes.lock().unwrap().clone();
    let at = probes.iter().position(|&i| i == 0).unwrap();
    // Probes run 16 at once: the first 16 started take the first slots.
    assert!(at < 16, "t0 was probe {at}: {probes:?}");
}

fn status_of(r: &BuildReport) -> BTreeMap<usize, Status> {
    r.tasks
        .iter()
        .map(|t| (t.id[1..].parse().unwrap(), t.status))
        .collect()
}

fn check_order_and_once(d: &Dag, log: &Log, jobs: usize) -> Result<(), TestCaseError> {
    let runs = log.runs.lock().unwrap().clone();
    let mut seen = BTreeSet::new();
    let mut end_of = BTreeMap::new();
    for &(i, _, e) in &runs {
        prop_assert!(seen.insert(i), "t{} ran twice", i);
        end_of.insert(i, e);
    }
    for &(i, s, _) in &runs {
        for dep in &d.deps[i] {
            if let Some(&e) = end_of.get(dep) {
                prop_assert!(e < s, "t{} started before its dependency t{} ended", i, dep);
            }
        }
    }
    prop_assert!(
        log.max_running.load(Ordering::SeqCst) <= jobs,
        "more than {} at once",
        jobs
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Order, at-most-once, the -j bound, full caching on a rerun, and
    /// exactly the model's rerun set after changing one input.
    #[test]
    fn reruns_exactly_what_early_cutoff_does_not_stop(d in dag(), jobs in 1usize..5, pick in any::<proptest::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
        let mut inputs: Vec<String> = (0..d.n).map(|i| format!("v{i}")).collect();

        let log = Arc::new(Log::default());
        let r = run(&cache, graph(&d, &inputs, &BTreeSet::new(), &log), jobs, false);
        prop_assert_eq!(r.count(Status::Ran), d.n);
        check_order_and_once(&d, &log, jobs)?;
        for t in &r.tasks {
            prop_assert!(t.start_us + t.duration_us <= r.wall_us + 1000);
        }

        let log = Arc::new(Log::default());
        let r = run(&cache, graph(&d, &inputs, &BTreeSet::new(), &log), jobs, false);
        prop_assert_eq!(r.count(Status::Cached), d.n, "second build must be all cached");
        prop_assert!(log.runs.lock().unwrap().is_empty());

        // Change one input; the model says what reruns.
        let k = pick.index(d.n);
        inputs[k] = format!("changed{k}");
        let mut rerun = BTreeSet::new();
        let mut out_changed = BTreeSet::new();
        for j in 0..d.n {
            let dep_changed = d.deps[j].iter().any(|x| out_changed.contains(x));
            if j == k || dep_changed {
                rerun.insert(j);
                if !d.cutoff[j] {
                    out_changed.insert(j);
                }
            }
        }
        let log = Arc::new(Log::default());
        let r = run(&cache, graph(&d, &inputs, &BTreeSet::new(), &log), jobs, false);
        check_order_and_once(&d, &log, jobs)?;
        let ran: BTreeSet<usize> = status_of(&r).into_iter().filter(|(_, s)| *s == Status::Ran).map(|(i, _)| i).collect();
        prop_assert_eq!(&ran, &rerun);
        prop_assert_eq!(r.count(Status::Cached), d.n - rerun.len());
    }

    /// A failure skips exactly its dependents (keep-going), records nothing
    /// for them, and the next run resumes with exactly those.
    #[test]
    fn failure_skips_exactly_its_dependents(d in dag(), jobs in 1usize..4, fails in proptest::collection::btree_set(0usize..24, 1..3)) {
        let fail: BTreeSet<usize> = fails.into_iter().filter(|f| *f < d.n).collect();
        prop_assume!(!fail.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
        let inputs: Vec<String> = (0..d.n).map(|i| format!("v{i}")).collect();

        // Model.
        let mut failed = BTreeSet::new();
        let mut skipped = BTreeSet::new();
        for j in 0..d.n {
            if d.deps[j].iter().any(|x| failed.contains(x) || skipped.contains(x)) {
                skipped.insert(j);
            } else if fail.contains(&j) {
                failed.insert(j);
            }
        }

        let log = Arc::new(Log::default());
        let r = run(&cache, graph(&d, &inputs, &fail, &log), jobs, true);
        check_order_and_once(&d, &log, jobs)?;
        let st = status_of(&r);
        for j in 0..d.n {
            let want = if failed.contains(&j) { Status::Failed } else if skipped.contains(&j) { Status::Skipped } else { Status::Ran };
            prop_assert_eq!(st[&j], want, "t{}", j);
            let has_record = matches!(cache.load(&format!("t{j}")), Load::Ok(_));
            prop_assert_eq!(has_record, want == Status::Ran, "record of t{}", j);
        }
        // Skips name a root failure.
        for t in r.tasks.iter().filter(|t| t.status == Status::Skipped) {
            prop_assert!(t.reason.ends_with(" failed"), "{}", t.reason);
            let root: usize = t.reason.trim_start_matches('t').split(' ').next().unwrap().parse().unwrap();
            prop_assert!(failed.contains(&root));
        }

        // Fixed: exactly the failed and skipped ones run now.
        let log = Arc::new(Log::default());
        let r = run(&cache, graph(&d, &inputs, &BTreeSet::new(), &log), jobs, false);
        let ran: BTreeSet<usize> = status_of(&r).into_iter().filter(|(_, s)| *s == Status::Ran).map(|(i, _)| i).collect();
        let expect: BTreeSet<usize> = failed.union(&skipped).copied().collect();
        prop_assert_eq!(ran, expect);
    }

    /// Effectful tasks with probes: after drift, an unreachable world, and
    /// an input change, `plan`/`status` (predict + probes) and the build
    /// agree: what they call up to date stays cached, what they call stale
    /// or drifted runs, what they call unreachable fails without running
    /// (its dependents skipped), and only a "may run" (early cutoff) is left
    /// to the build. Once the world answers again, one build repairs the
    /// rest and the next one is a probe-only no-op.
    #[test]
    fn plan_status_and_build_agree_with_probes(
        d in dag(),
        jobs in 1usize..4,
        effect_seed in proptest::collection::vec(0u8..3, 24),
        world_seed in proptest::collection::vec(0u8..4, 24),
        change in proptest::option::of(any::<proptest::sample::Index>()),
    ) {
        // 0: pure, 1: effectful with a probe, 2: effectful without one.
        let effect: Vec<Option<bool>> = (0..d.n)
            .map(|i| match effect_seed[i] { 0 => None, 1 => Some(true), _ => Some(false) })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
        let world = World::default();
        let mut inputs: Vec<String> = (0..d.n).map(|i| format!("v{i}")).collect();
        let log = Arc::new(Log::default());
        let r = run(&cache, graph_in(&d, &inputs, &BTreeSet::new(), &log, &effect, &world), jobs, false);
        prop_assert_eq!(r.count(Status::Ran), d.n);

        // The world moves behind mesh's back, or stops answering.
        let (mut drifted, mut asleep) = (BTreeSet::new(), BTreeSet::new());
        for i in (0..d.n).filter(|&i| effect[i] == Some(true)) {
            match world_seed[i] {
                0 => drifted.insert(i),
                1 => asleep.insert(i),
                _ => continue,
            };
            let state = if world_seed[i] == 0 { WorldState::Drifted } else { WorldState::Unreachable };
            world.lock().unwrap().insert(i, state);
        }
        if let Some(k) = change {
            let k = k.index(d.n);
            inputs[k] = format!("changed{k}");
        }
        let log = Arc::new(Log::default());
        let g = graph_in(&d, &inputs, &BTreeSet::new(), &log, &effect, &world);

        // What plan and status say (the same decision, plus probes).
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sel = vec![true; g.len()];
        let mut preds = exec::predict(&g, &sel, Some(&cache));
        rt.block_on(exec::probe_predictions(&g, &cache, &mut preds));
        let said: BTreeMap<usize, exec::Prediction> = preds
            .into_iter()
            .map(|(i, p)| (g.node(i).id[1..].parse().unwrap(), p))
            .collect();

        let r = run(&cache, g, jobs, true);
        check_order_and_once(&d, &log, jobs)?;
        let st = status_of(&r);
        // Downstream of a failure: skipped, whatever was said of it.
        let mut below_failure = BTreeSet::new();
        for j in 0..d.n {
            if d.deps[j].iter().any(|x| st[x] == Status::Failed || below_failure.contains(x)) {
                below_failure.insert(j);
            }
        }
        for j in 0..d.n {
            if below_failure.contains(&j) {
                prop_assert_eq!(st[&j], Status::Skipped, "t{} is below a failure", j);
                continue;
            }
            if asleep.contains(&j) {
                // Probed unreachable, or rerun (its key changed) and failed.
                prop_assert_eq!(st[&j], Status::Failed, "t{} does not answer", j);
                continue;
            }
            match &said[&j] {
                exec::Prediction::UpToDate { .. } => prop_assert_eq!(st[&j], Status::Cached, "t{} was said up to date", j),
                exec::Prediction::Run { .. } | exec::Prediction::Drifted { .. } => prop_assert_eq!(st[&j], Status::Ran, "t{} was said to run", j),
                exec::Prediction::Unreachable { .. } => prop_assert_eq!(st[&j], Status::Failed, "t{} was said unreachable", j),
                exec::Prediction::Maybe { .. } => prop_assert!(st[&j] != Status::Failed && st[&j] != Status::Skipped),
            }
            // A drifted world is never trusted: the task reruns.
            if drifted.contains(&j) {
                prop_assert_eq!(st[&j], Status::Ran, "t{} drifted but was not rerun", j);
            }
        }
        // Nothing is done to a world that does not answer.
        let ran_now: BTreeSet<usize> = log.runs.lock().unwrap().iter().map(|x| x.0).collect();
        prop_assert!(ran_now.is_disjoint(&asleep));
        // Without an input change, status names exactly the broken ones.
        if change.is_none() {
            for j in 0..d.n {
                let said_drift = matches!(said[&j], exec::Prediction::Drifted { .. });
                let said_asleep = matches!(said[&j], exec::Prediction::Unreachable { .. });
                prop_assert_eq!(said_drift, drifted.contains(&j), "t{} drift", j);
                prop_assert_eq!(said_asleep, asleep.contains(&j), "t{} unreachable", j);
            }
        }

        // The world answers again: one build repairs the rest, then nothing.
        for j in &asleep {
            world.lock().unwrap().insert(*j, WorldState::InSync);
        }
        let log = Arc::new(Log::default());
        let r = run(&cache, graph_in(&d, &inputs, &BTreeSet::new(), &log, &effect, &world), jobs, false);
        prop_assert!(r.ok(), "the repair build failed");
        let log = Arc::new(Log::default());
        let g = graph_in(&d, &inputs, &BTreeSet::new(), &log, &effect, &world);
        let mut preds = exec::predict(&g, &sel, Some(&cache));
        rt.block_on(exec::probe_predictions(&g, &cache, &mut preds));
        let all_current = preds.iter().all(|(_, p)| matches!(p, exec::Prediction::UpToDate { .. }));
        prop_assert!(all_current, "status after the repair: {:?}", preds.iter().map(|(_, p)| p.label()).collect::<Vec<_>>());
        let r = run(&cache, g, jobs, false);
        prop_assert_eq!(r.count(Status::Cached), d.n);
    }

    /// Fail fast: after the first failure nothing new starts, and every
    /// task is accounted for.
    #[test]
    fn fail_fast_starts_nothing_after_a_failure(d in dag(), fails in 0usize..24) {
        prop_assume!(fails < d.n);
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
        let inputs: Vec<String> = (0..d.n).map(|i| format!("v{i}")).collect();
        let log = Arc::new(Log::default());
        let r = run(&cache, graph(&d, &inputs, &BTreeSet::from([fails]), &log), 1, false);
        prop_assert_eq!(r.tasks.len(), d.n);
        prop_assert_eq!(r.count(Status::Failed), 1);
        // With one slot, the failing task is the last one that started.
        let runs = log.runs.lock().unwrap().clone();
        let last = runs.iter().max_by_key(|x| x.1).unwrap();
        prop_assert_eq!(last.0, fails);
        prop_assert!(!r.ok());
    }
}

#[test]
fn cancellation_records_nothing_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
    let d = Dag {
        n: 3,
        deps: vec![vec![], vec![0], vec![1]],
        cutoff: vec![false; 3],
        sleep_us: vec![0, 2_000_000, 0],
    };
    let inputs: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
    let log = Arc::new(Log::default());
    let g = graph(&d, &inputs, &BTreeSet::new(), &log);
    let lock = Arc::new(cache.lock().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(exec::execute(
        g,
        None,
        cache.clone(),
        lock,
        Options {
            jobs: 2,
            keep_going: false,
            out_dir: None,
            epoch: None,
            verify: false,
        },
        Arc::new(Quiet),
        async { tokio::time::sleep(Duration::from_millis(200)).await },
    ));
    assert!(r.interrupted);
    assert_eq!(status_of(&r)[&0], Status::Ran);
    assert_eq!(status_of(&r)[&1], Status::Skipped);
    assert!(matches!(cache.load("t0"), Load::Ok(_)));
    assert!(matches!(cache.load("t1"), Load::Missing));
    assert!(matches!(cache.load("t2"), Load::Missing));
}

/// Waves large enough to be checked on several threads: the rerun set is
/// still exact and blobs shared between tasks are handled.
#[test]
fn wide_waves_are_checked_in_parallel_exactly() {
    let n = 600;
    let d = Dag {
        n,
        // 300 roots, each with one dependent; every 7th dependent is a cutoff.
        deps: (0..n)
            .map(|j| if j < 300 { vec![] } else { vec![j - 300] })
            .collect(),
        cutoff: (0..n).map(|j| j >= 300 && j % 7 == 0).collect(),
        sleep_us: vec![0; n],
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
    let mut inputs: Vec<String> = (0..n).map(|i| format!("v{}", i % 10)).collect();
    let log = Arc::new(Log::default());
    assert_eq!(
        run(&cache, graph(&d, &inputs, &BTreeSet::new(), &log), 4, false).count(Status::Ran),
        n
    );
    let log = Arc::new(Log::default());
    assert_eq!(
        run(&cache, graph(&d, &inputs, &BTreeSet::new(), &log), 4, false).count(Status::Cached),
        n
    );
    for k in (0..300).step_by(3) {
        inputs[k] = format!("changed{k}");
    }
    let log = Arc::new(Log::default());
    let r = run(&cache, graph(&d, &inputs, &BTreeSet::new(), &log), 4, false);
    let ran: BTreeSet<usize> = status_of(&r)
        .into_iter()
        .filter(|(_, s)| *s == Status::Ran)
        .map(|(i, _)| i)
        .collect();
    let want: BTreeSet<usize> = (0..300).step_by(3).flat_map(|k| [k, k + 300]).collect();
    assert_eq!(ran, want);
    check_order_and_once(&d, &log, 4).unwrap();
}

/// A panicking action fails its task like an error: dependents skipped,
/// the rest run, nothing recorded for it, and the build ends.
#[test]
fn a_panicking_task_fails_alone_and_never_hangs_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::open(&dir.path().join("cache")).unwrap());
    let mut b = GraphBuilder::new();
    let node = |id: &str, action: Arc<dyn Action>| Node {
        id: id.into(),
        kind: "fake",
        pure: true,
        inputs: Default::default(),
        action,
    };
    b.add(node(
        "boom",
        mesh::graph::blocking(|_| panic!("resulting value is out of range")),
    ))
    .unwrap();
    b.add(node(
        "after",
        mesh::graph::blocking(|_| Ok(vec![OutFile::new("x", "x")])),
    ))
    .unwrap();
    b.add(node(
        "beside",
        mesh::graph::blocking(|_| Ok(vec![OutFile::new("y", "y")])),
    ))
    .unwrap();
    b.edge("boom".to_string(), "after");
    let g = Arc::new(b.seal().unwrap());
    let lock = Arc::new(cache.lock().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let build = exec::execute(
        g,
        None,
        cache.clone(),
        lock,
        Options {
            jobs: 2,
            keep_going: true,
            out_dir: None,
            epoch: None,
            verify: false,
        },
        Arc::new(Quiet),
        std::future::pending(),
    );
    let r = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), build).await })
        .expect("the build ended");
    let by_id: BTreeMap<&str, &mesh::exec::TaskReport> =
        r.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    assert_eq!(by_id["boom"].status, Status::Failed);
    assert!(
        by_id["boom"]
            .reason
            .contains("panicked: resulting value is out of range"),
        "{}",
        by_id["boom"].reason
    );
    assert_eq!(by_id["after"].status, Status::Skipped);
    assert_eq!(by_id["beside"].status, Status::Ran);
    assert!(matches!(cache.load("boom"), Load::Missing));
    assert!(!r.ok());
}
