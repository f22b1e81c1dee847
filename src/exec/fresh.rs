//! Freshness: the one decision of whether a task is up to date, used by the
//! build (`check`, inline in the scheduler), and by `plan` and `status`
//! (`predict`, a dry run in topological order) alike, so they cannot
//! disagree.
//!
//! [`freshness`] takes a node, its stored record (or its absence or
//! corruption), its dependencies' output digests, and a way to verify a
//! blob: a task is current when the record's key equals the key computed
//! now and every blob it lists still hashes to its name; otherwise it is
//! stale, with the reason (never run, corrupt record, which inputs or
//! dependency outputs changed, a missing blob). A current effectful task is
//! only a candidate: its probe (see the module doc of `exec`) decides.

use super::*;
use crate::graph::Inputs;

/// What a cache key is made of. Printed, it is the explanation of a miss.
#[derive(Serialize)]
pub struct KeyInput<'a> {
    pub kind: &'a str,
    pub inputs: &'a Inputs,
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

/// What a node's last record says about its inputs compared to now.
pub fn input_changes(node: &Node, rec: &Record) -> Vec<String> {
    let mut out = Vec::new();
    for (k, d) in node.inputs.iter() {
        match rec.inputs.get(k) {
            None => out.push(format!("{k} (new input)")),
            Some(old) if old != d => out.push(k.to_string()),
            _ => {}
        }
    }
    for k in rec.inputs.keys() {
        if !node.inputs.contains_key(k) {
            out.push(format!("{k} (no longer read)"));
        }
    }
    out
}

/// Why a recorded task is not up to date with these dependency outputs.
pub fn why_stale(node: &Node, rec: &Record, deps: &BTreeMap<String, Digest>) -> Vec<String> {
    let mut out: Vec<String> = input_changes(node, rec)
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

pub(crate) enum Checked {
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
pub(crate) fn check(
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
    let verify = |f: &FileEntry| {
        if known.contains(&f.blob) || fresh.contains(&f.blob) {
            return true;
        }
        let ok = sh.cache.blob_ok_as(&f.blob, f.secret);
        if ok {
            fresh.insert(f.blob);
        }
        ok
    };
    match freshness(node, sh.cache.load(&node.id), key, deps, verify) {
        Fresh::Current(rec) if !node.pure => Checked::Probe { key, record: rec },
        Fresh::Current(rec) => match materialize(sh, &rec.files) {
            Ok(()) => Checked::Hit(report(
                Status::Cached,
                "up to date".into(),
                Some(rec.output),
                Some(Arc::new(rec.files)),
            )),
            Err(e) => Checked::Failed(report(Status::Failed, e.to_string(), None, None)),
        },
        Fresh::Stale {
            reason, previous, ..
        } => Checked::Miss {
            key,
            reason,
            previous: previous.map(|r| Arc::new(r.files)),
        },
    }
}

/// The freshness of one task whose dependencies' outputs are known.
pub enum Fresh {
    /// Same key, every blob verified.
    Current(Box<Record>),
    /// Must run, for `reason`; `previous` is its last record, if readable.
    Stale {
        reason: String,
        never_run: bool,
        previous: Option<Box<Record>>,
    },
}

/// Decide whether `node`, with dependency outputs `deps` (so key `key`), is
/// up to date given what the cache holds for it (`load`). `verify` checks
/// one recorded blob (and may remember the answer).
pub fn freshness(
    node: &Node,
    load: Load,
    key: Digest,
    deps: &BTreeMap<String, Digest>,
    mut verify: impl FnMut(&FileEntry) -> bool,
) -> Fresh {
    let stale = |reason: String, previous| Fresh::Stale {
        reason,
        never_run: false,
        previous,
    };
    match load {
        Load::Missing => Fresh::Stale {
            reason: "never run".into(),
            never_run: true,
            previous: None,
        },
        Load::Corrupt(why) => stale(format!("record is corrupt ({why})"), None),
        Load::Ok(rec) if rec.key == key => match rec.files.iter().find(|f| !verify(f)) {
            None => Fresh::Current(Box::new(rec)),
            Some(f) => stale(
                format!("output {} is missing or corrupt in the cache", f.name),
                Some(Box::new(rec)),
            ),
        },
        Load::Ok(rec) => {
            let why = why_stale(node, &rec, deps);
            let reason = if why.is_empty() {
                "key changed".into()
            } else {
                why.join(", ")
            };
            stale(reason, Some(Box::new(rec)))
        }
    }
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
    /// Same key, but the world could not be asked: a build would fail it.
    Unreachable { reason: String },
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
            Prediction::Unreachable { .. } => "unreachable",
        }
    }
    pub fn reason(&self) -> String {
        match self {
            Prediction::UpToDate { .. } => "up to date".into(),
            Prediction::Run { reason, .. } => reason.clone(),
            Prediction::Maybe { after } => format!("{after} reruns (early cutoff may spare this)"),
            Prediction::Drifted { reason } => format!("drifted: {reason}"),
            Prediction::Unreachable { reason } => format!("unreachable: {reason}"),
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
    // Will rerun (so its output is not known yet), by node number.
    let mut rerunning = vec![false; graph.len()];
    let mut out = Vec::with_capacity(graph.len());
    let recorded = cache.and_then(Cache::recorded);
    for &i in graph.topo() {
        if !selected[i.index()] {
            continue;
        }
        let node = graph.node(i);
        let load = match (cache, &recorded) {
            (Some(_), Some(ids)) if !ids.contains(&node.id) => Load::Missing,
            (Some(c), _) => c.load(&node.id),
            (None, _) => Load::Missing,
        };
        let mut dep_ids: Vec<NodeIndex> = graph.deps(i).collect();
        dep_ids.sort_by(|a, b| graph.node(*a).id.cmp(&graph.node(*b).id));
        let rerunning_dep = dep_ids.iter().find(|d| rerunning[d.index()]).copied();
        let p = match (load, rerunning_dep) {
            // A dependency will rerun: its output, and so this key, is not
            // known until it has. Input changes alone already decide.
            (Load::Ok(rec), Some(d)) => {
                let changes = input_changes(node, &rec);
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
            (load, _) => {
                let deps: BTreeMap<String, Digest> = match &load {
                    Load::Ok(_) => dep_ids
                        .iter()
                        .filter_map(|d| Some((graph.node(*d).id.clone(), *known.get(d)?)))
                        .collect(),
                    _ => BTreeMap::new(),
                };
                // Without a record, the key decides nothing: not computed.
                let key = match &load {
                    Load::Ok(_) => key_of(node, &deps),
                    _ => Digest::default(),
                };
                let verify = |f: &FileEntry| {
                    let ok =
                        verified.contains(&f.blob) || cache.is_some_and(|c| c.blob_ok(&f.blob));
                    if ok {
                        verified.insert(f.blob);
                    }
                    ok
                };
                match freshness(node, load, key, &deps, verify) {
                    Fresh::Current(record) => Prediction::UpToDate {
                        output: record.output,
                        record,
                    },
                    Fresh::Stale {
                        reason, never_run, ..
                    } => Prediction::Run { reason, never_run },
                }
            }
        };
        match &p {
            Prediction::UpToDate { output, .. } => {
                known.insert(i, *output);
            }
            _ => rerunning[i.index()] = true,
        }
        out.push((i, p));
    }
    out
}

/// The files a task can read in a probe or undo: its dependencies' recorded
/// files, and its own under its id.
pub(crate) fn recorded_ctx(graph: &Graph, cache: &Arc<Cache>, i: NodeIndex, own: &Record) -> Ctx {
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
            preds[k].1 = match why {
                ProbeError::Drift(reason) => Prediction::Drifted { reason },
                ProbeError::Unreachable(reason) => Prediction::Unreachable { reason },
            };
        }
    }
}
