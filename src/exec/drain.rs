//! The scheduler's state while a build drains (cargo's `DrainState`): what
//! is pending, ready, running and probing, and what each message from a
//! task or a probe does to it. `execute` drives it: check what became
//! ready, start what fits, then wait for one message (a task done, a probe
//! answered, Ctrl-C) and apply it, until nothing runs or waits.

use super::*;

type BoxProbe = crate::graph::BoxFuture<Probe>;

/// A probe's answer, for the node and generation it was made for, and when
/// it ran.
pub(crate) type Probed = (NodeIndex, Gen, Probe, Span);

/// When a probe ran: its start (µs since the build's epoch) and length,
/// and which of the `MAX_PROBES` probe rows of the trace it ran in (probes
/// running at once must not share a row: a trace draws a row's events
/// nested).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    start_us: u64,
    duration_us: u64,
    row: usize,
}

pub(crate) struct DrainState {
    shared: Arc<Shared>,
    graph: Arc<Graph>,
    selected: Vec<bool>,
    jobs: usize,
    threads: usize,
    keep_going: bool,
    observer: Arc<dyn Observer>,
    /// Priority: the longest chain of selected dependents below a node.
    height: Vec<u32>,
    topo_pos: Vec<usize>,
    /// Unfinished dependencies per node.
    pending: Vec<u32>,
    /// Nodes whose dependencies are all done, not yet checked.
    newly_ready: Vec<NodeIndex>,
    ready: BinaryHeap<(u32, Reverse<usize>, NodeIndex)>,
    to_run: HashMap<NodeIndex, ToRun>,
    reports: Vec<Option<TaskReport>>,
    handles: Vec<Option<JoinHandle<()>>>,
    free_lanes: BTreeSet<usize>,
    /// Blobs verified in this build.
    verified: HashSet<Digest>,
    tx: mpsc::UnboundedSender<Msg>,
    pub(super) rx: mpsc::UnboundedReceiver<Msg>,
    ptx: mpsc::UnboundedSender<Probed>,
    pub(super) prx: mpsc::UnboundedReceiver<Probed>,
    probe_slots: Arc<tokio::sync::Semaphore>,
    /// The probe rows free now (as many as `probe_slots`).
    probe_rows: Arc<std::sync::Mutex<BTreeSet<usize>>>,
    /// Nodes waiting on a probe, with the probe generation they wait for.
    probing: HashMap<NodeIndex, (Box<Record>, ToRun, Gen)>,
    probe_handles: Vec<JoinHandle<()>>,
    /// Prefetched probes: `None` still running, `Some` answered (and when).
    prefetched: HashMap<NodeIndex, Option<(Probe, Span)>>,
    running: usize,
    stopped_by: Option<String>,
    interrupted: bool,
}

impl DrainState {
    pub(crate) fn new(
        shared: Arc<Shared>,
        selected: Vec<bool>,
        opts: &Options,
        observer: Arc<dyn Observer>,
    ) -> DrainState {
        let graph = shared.graph.clone();
        let n = graph.len();
        let jobs = opts.jobs.max(1);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(jobs);
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
        let mut newly_ready = Vec::new();
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
        let (tx, rx) = mpsc::unbounded_channel();
        let (ptx, prx) = mpsc::unbounded_channel();
        DrainState {
            shared,
            graph,
            selected,
            jobs,
            threads,
            keep_going: opts.keep_going,
            observer,
            height,
            topo_pos,
            pending,
            newly_ready,
            ready: BinaryHeap::new(),
            to_run: HashMap::new(),
            reports: vec![None; n],
            handles: (0..n).map(|_| None).collect(),
            free_lanes: (0..jobs).collect(),
            verified: HashSet::new(),
            tx,
            rx,
            ptx,
            prx,
            probe_slots: Arc::new(tokio::sync::Semaphore::new(MAX_PROBES)),
            probe_rows: Arc::new(std::sync::Mutex::new((0..MAX_PROBES).collect())),
            probing: HashMap::new(),
            probe_handles: Vec::new(),
            prefetched: HashMap::new(),
            running: 0,
            stopped_by: None,
            interrupted: false,
        }
    }

    /// Start the probe of every recorded live task at once: a probe checks
    /// a receipt against the world, which does not depend on the key, so
    /// waiting for the dependencies first would only chain them. They start
    /// (take a probe slot) in the order the scheduler runs tasks: the
    /// longest chain of dependents first, so that a cluster's own probe is
    /// not left behind the cheap leaves of others (in plain topological
    /// order the last cluster's was probed after 90 other probes).
    pub(crate) fn prefetch_probes(&mut self) {
        let graph = self.graph.clone();
        let mut order: Vec<NodeIndex> = graph
            .topo()
            .iter()
            .copied()
            .filter(|i| self.selected[i.index()] && !graph.node(*i).pure)
            .collect();
        order.sort_by_key(|i| (Reverse(self.height[i.index()]), self.topo_pos[i.index()]));
        for i in order {
            let node = graph.node(i);
            let Load::Ok(rec) = self.shared.cache.load(&node.id) else {
                continue;
            };
            if let Some(fut) = node
                .action
                .probe(recorded_ctx(&graph, &self.shared.cache, i, &rec))
            {
                self.spawn_probe(i, Gen::Prefetch, fut);
                self.prefetched.insert(i, None);
            }
        }
    }

    fn spawn_probe(&mut self, i: NodeIndex, generation: Gen, fut: BoxProbe) {
        let (ptx, slots) = (self.ptx.clone(), self.probe_slots.clone());
        let id: Arc<str> = self.graph.node(i).id.as_str().into();
        let (epoch, rows) = (self.shared.epoch, self.probe_rows.clone());
        self.probe_handles.push(tokio::spawn(async move {
            let _permit = slots.acquire_owned().await;
            let take = |rows: &std::sync::Mutex<BTreeSet<usize>>| {
                rows.lock().unwrap_or_else(|p| p.into_inner()).pop_first()
            };
            // One row per permit held: there is always one free.
            let row = take(&rows).unwrap_or(0);
            let start = Instant::now();
            let result = crate::events::scope(id, fut).await;
            let span = Span {
                start_us: start.saturating_duration_since(epoch).as_micros() as u64,
                duration_us: start.elapsed().as_micros() as u64,
                row,
            };
            rows.lock().unwrap_or_else(|p| p.into_inner()).insert(row);
            let _ = ptx.send((i, generation, result, span));
        }));
    }

    /// Check every newly ready node against the cache, inline: a no-op
    /// build is this loop alone, with no task handed to another thread.
    /// Each wave (nodes independent of each other) is spread over the CPUs.
    pub(crate) fn check_ready(&mut self) {
        while self.stopped_by.is_none() && !self.newly_ready.is_empty() {
            let wave: Vec<(NodeIndex, BTreeMap<String, Digest>, DepFiles)> =
                std::mem::take(&mut self.newly_ready)
                    .into_iter()
                    .map(|i| {
                        let (d, f) = dep_outputs(&self.graph, &self.reports, i);
                        (i, d, f)
                    })
                    .collect();
            let results = check_wave(
                &self.shared,
                &wave,
                &mut self.verified,
                self.threads,
                self.jobs,
            );
            for ((i, deps, dep_files), checked) in wave.into_iter().zip(results) {
                match checked {
                    Checked::Hit(report) => self.finished(i, report),
                    Checked::Miss {
                        key,
                        reason,
                        previous,
                    } => self.queue(ToRun {
                        i,
                        key,
                        reason,
                        deps,
                        dep_files,
                        previous,
                    }),
                    Checked::Failed(report) => {
                        // Reported through the channel like a task that ran.
                        let _ = self.tx.send(Msg::Done(i, report));
                        self.running += 1;
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
                        self.probe(record, job);
                    }
                }
            }
        }
    }

    /// An effectful task whose key matches: use its prefetched probe if no
    /// dependency ran in this build, else probe it now.
    fn probe(&mut self, record: Box<Record>, job: ToRun) {
        let i = job.i;
        let deps_ran = self.graph.deps(i).any(|d| {
            self.reports[d.index()]
                .as_ref()
                .is_some_and(|r| r.status == Status::Ran)
        });
        let early = if deps_ran {
            None
        } else {
            self.prefetched.remove(&i)
        };
        match early {
            Some(Some((result, span))) => {
                // Already answered: handled like any probe result.
                let _ = self.ptx.send((i, Gen::Prefetch, result, span));
                self.probing.insert(i, (record, job, Gen::Prefetch));
                return;
            }
            Some(None) => {
                self.probing.insert(i, (record, job, Gen::Prefetch));
                return;
            }
            None => {}
        }
        let mut files = job.dep_files.clone();
        files.insert(
            self.graph.node(i).id.clone(),
            Arc::new(record.files.clone()),
        );
        let ctx = Ctx {
            id: self.graph.node(i).id.clone(),
            deps: Arc::new(StoreReader {
                cache: self.shared.cache.clone(),
                files,
            }),
        };
        match self.graph.node(i).action.probe(ctx) {
            None => {
                let report = cached_report(self.graph.node(i), &record, self.jobs);
                self.finished(i, report);
            }
            Some(fut) => {
                self.spawn_probe(i, Gen::Fresh, fut);
                self.probing.insert(i, (record, job, Gen::Fresh));
            }
        }
    }

    fn queue(&mut self, job: ToRun) {
        let i = job.i;
        self.ready
            .push((self.height[i.index()], Reverse(self.topo_pos[i.index()]), i));
        self.to_run.insert(i, job);
    }

    /// A node is done without failing (cached, probed, or ran): record its
    /// report and count it off its dependents.
    fn finished(&mut self, i: NodeIndex, mut report: TaskReport) {
        if let std::borrow::Cow::Owned(r) = crate::redact::text(&report.reason) {
            report.reason = r;
        }
        self.observer.finished(&report);
        self.reports[i.index()] = Some(report);
        release(
            &self.graph,
            &self.selected,
            &mut self.pending,
            &self.reports,
            i,
            &mut self.newly_ready,
        );
    }

    /// Start ready tasks, critical path first, while slots are free.
    pub(crate) fn start_ready(&mut self) {
        while self.stopped_by.is_none() && self.running < self.jobs {
            let Some((_, _, i)) = self.ready.pop() else {
                break;
            };
            let job = self
                .to_run
                .remove(&i)
                .expect("a ready node has its check result");
            let lane = self
                .free_lanes
                .pop_first()
                .expect("a lane is free when running < jobs");
            self.observer.started(&self.graph.node(i).id);
            if !self.graph.node(i).pure {
                crate::events::world_moved();
            }
            let (sh, tx) = (self.shared.clone(), self.tx.clone());
            self.handles[i.index()] = Some(tokio::spawn(async move {
                let report = run_node(&sh, job, lane).await;
                let _ = tx.send(Msg::Done(i, report));
            }));
            self.running += 1;
        }
    }

    /// Is anything running or probing (so a message will come)?
    pub(crate) fn waiting(&self) -> bool {
        self.running > 0 || !self.probing.is_empty()
    }

    /// Nothing waits and nothing more can start: the build is over.
    pub(crate) fn idle(&self) -> bool {
        self.newly_ready.is_empty() || self.stopped_by.is_some()
    }

    /// Ctrl-C: abort running tasks and probes, and let the aborted tasks
    /// settle (an await point is reached at once; CPU work finishes first),
    /// so that a task which did complete, record and all, is reported as run.
    pub(crate) async fn interrupt(&mut self) {
        self.interrupted = true;
        let running: Vec<JoinHandle<()>> =
            self.handles.iter_mut().filter_map(Option::take).collect();
        for h in running.iter().chain(&self.probe_handles) {
            h.abort();
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::future::join_all(running),
        )
        .await;
        while let Ok(Msg::Done(i, report)) = self.rx.try_recv() {
            if report.status == Status::Ran {
                self.reports[i.index()] = Some(report);
            }
        }
    }

    /// A probe answered.
    pub(crate) fn on_probed(&mut self, i: NodeIndex, generation: Gen, result: Probe, span: Span) {
        let waited_for = self.probing.get(&i).map(|p| p.2);
        if waited_for != Some(generation) {
            // A prefetch nobody waits for yet (keep it), or one superseded
            // by a fresh probe (drop it).
            if generation == Gen::Prefetch && self.prefetched.contains_key(&i) {
                self.prefetched.insert(i, Some((result, span)));
            }
            return;
        }
        let (record, mut job, _) = self.probing.remove(&i).expect("a probed node was probing");
        match result {
            Ok(()) => {
                // Shown when, how long and in which probe row (after the
                // lanes of tasks and of cache checks) the probe ran.
                let lane = self.jobs + 1 + span.row;
                let mut report = cached_report(self.graph.node(i), &record, lane);
                report.start_us = span.start_us;
                report.duration_us = span.duration_us;
                self.finished(i, report);
            }
            Err(why @ ProbeError::Drift(_)) => {
                job.reason = why.to_string();
                self.queue(job);
            }
            Err(why @ ProbeError::Unreachable(_)) => {
                let mut report = TaskReport::skipped(&self.graph.node(i).id, why.to_string());
                report.status = Status::Failed;
                self.failed(i, report);
            }
        }
    }

    /// A task finished (ran, or failed).
    pub(crate) fn on_done(&mut self, i: NodeIndex, report: TaskReport) {
        if !self.graph.node(i).pure {
            crate::events::world_moved();
        }
        self.running -= 1;
        self.handles[i.index()] = None;
        if report.lane < self.jobs {
            self.free_lanes.insert(report.lane);
        }
        if report.status != Status::Failed {
            return self.finished(i, report);
        }
        self.failed(i, report);
    }

    /// A task failed: report it once, stop new work unless keep-going, and
    /// skip everything downstream, naming the root failure.
    fn failed(&mut self, i: NodeIndex, mut report: TaskReport) {
        if let std::borrow::Cow::Owned(r) = crate::redact::text(&report.reason) {
            report.reason = r;
        }
        self.observer.finished(&report);
        self.reports[i.index()] = Some(report);
        let root = self.graph.node(i).id.clone();
        if !self.keep_going && self.stopped_by.is_none() {
            self.stopped_by = Some(root.clone());
        }
        // Everything downstream is skipped, naming the root failure.
        let mut stack: Vec<NodeIndex> = self.graph.dependents(i).collect();
        while let Some(d) = stack.pop() {
            if !self.selected[d.index()] || self.reports[d.index()].is_some() {
                continue;
            }
            let r = TaskReport::skipped(&self.graph.node(d).id, format!("{root} failed"));
            self.observer.finished(&r);
            self.reports[d.index()] = Some(r);
            stack.extend(self.graph.dependents(d));
        }
    }

    /// The report: every selected task in topological order, those never
    /// reached marked skipped with the reason.
    pub(crate) fn finish(mut self) -> BuildReport {
        let wall_us = self.shared.epoch.elapsed().as_micros() as u64;
        let mut tasks = Vec::new();
        for &i in self.graph.topo() {
            if !self.selected[i.index()] {
                continue;
            }
            let r = self.reports[i.index()].take().unwrap_or_else(|| {
                let reason = match (&self.stopped_by, self.interrupted) {
                    (_, true) => "interrupted".into(),
                    (Some(f), _) => format!("not started: the build stopped after {f} failed"),
                    (None, false) => "not reached".into(),
                };
                TaskReport::skipped(&self.graph.node(i).id, reason)
            });
            tasks.push(r);
        }
        let (critical_path, critical_path_us) = critical_path(&self.graph, &self.selected, &tasks);
        let epoch = self.shared.epoch;
        let retries = crate::events::retries()
            .into_iter()
            .filter(|r| r.at >= epoch)
            .map(|r| RetryReport {
                task: r.task.map(|t| t.to_string()),
                at_us: r.at.duration_since(epoch).as_micros() as u64,
                reason: r.reason,
            })
            .collect();
        BuildReport {
            tasks,
            wall_us,
            critical_path,
            critical_path_us,
            interrupted: self.interrupted,
            retries,
        }
    }
}
