//! The read-only commands that explain the cache: `plan` (what a build
//! would do), `why` (one task's inputs against its record) and `status`
//! (every task's state). All three use the executor's one freshness
//! decision (`exec::predict`), plus the probes of live tasks.

use super::*;
use petgraph::graph::NodeIndex;
use std::io::Write as _;

pub(super) fn plan_cmd(
    plan_path: &Path,
    cache_dir: &Path,
    offline: bool,
    all: bool,
    json: bool,
) -> Result<(), Exit> {
    let l = load(
        plan_path,
        if offline { Build::Offline } else { Build::Live },
    )?;
    let sel = selection(&l.graph, offline);
    let cache = Cache::open_existing(cache_dir);
    let mut preds = exec::predict(&l.graph, &sel, cache.as_ref());
    if let (Some(cache), false) = (&cache, offline) {
        runtime()?.block_on(exec::probe_predictions(&l.graph, cache, &mut preds));
    }
    // What left the plan (live only: offline touches no cluster).
    let removals = if offline {
        Vec::new()
    } else {
        super::removals::orphans(&l.plan)?
    };
    let leftovers = match (&cache, offline) {
        (Some(c), false) => super::removals::leftovers(l, c, &removals),
        _ => Vec::new(),
    };
    if json {
        let mut gone: Vec<serde_json::Value> = leftovers
            .iter()
            .map(|t| json!({"kind": "task", "id": t.id, "cluster": t.cluster, "what": t.what()}))
            .collect();
        gone.extend(
            removals
                .iter()
                .map(|n| json!({"kind": crate::state::KIND_CLUSTER, "name": n})),
        );
        return print_plan_json(&l.graph, gone, &preds);
    }
    let run = preds
        .iter()
        .filter(|(_, p)| matches!(p, Prediction::Run { .. } | Prediction::Drifted { .. }))
        .count();
    let maybe = preds
        .iter()
        .filter(|(_, p)| matches!(p, Prediction::Maybe { .. }))
        .count();
    let unreachable = preds
        .iter()
        .filter(|(_, p)| matches!(p, Prediction::Unreachable { .. }))
        .count();
    let failing = if unreachable > 0 {
        format!(", {unreachable} unreachable (a build would fail them)")
    } else {
        String::new()
    };
    let removing = if removals.is_empty() && leftovers.is_empty() {
        String::new()
    } else {
        format!(", {} to remove", removals.len() + leftovers.len())
    };
    println!(
        "mesh plan: {} tasks: {run} would run, {maybe} may run, {} up to date{failing}{removing}",
        preds.len(),
        preds.len() - run - maybe - unreachable
    );
    if ui::quiet() {
        return Ok(());
    }
    for t in &leftovers {
        println!(
            "  remove {} from {}: it left {} ({})",
            t.id,
            t.cluster,
            l.plan.file,
            t.what()
        );
    }
    for n in &removals {
        println!(
            "  remove kind cluster {n}: it left {}, and mesh created it (with the remote secrets other clusters hold for it)",
            l.plan.file
        );
    }
    let width = preds
        .iter()
        .map(|(i, _)| l.graph.node(*i).id.len())
        .max()
        .unwrap_or(0);
    // One write per 8 KiB, not per line: a million-task plan prints a
    // million lines.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let cannot = |e: std::io::Error| fail(1, format!("cannot write the plan: {e}"));
    for (i, p) in &preds {
        let tag = match p {
            Prediction::UpToDate { .. } if !all => continue,
            Prediction::UpToDate { .. } => "ok   ",
            Prediction::Run { .. } | Prediction::Drifted { .. } => "run  ",
            Prediction::Maybe { .. } => "maybe",
            Prediction::Unreachable { .. } => "fail ",
        };
        let n = l.graph.node(*i);
        let live = if n.pure { "" } else { " [live]" };
        writeln!(out, "  {tag}  {:width$}  {}{live}", n.id, p.reason()).map_err(cannot)?;
    }
    out.flush().map_err(cannot)?;
    Ok(())
}

/// `mesh plan --json`, streamed: what `print_json` would print for
/// `{"removals": .., "schema", "tasks": [{"action", "id", "pure", "reason"}, ..]}`
/// (keys in the same order, every string redacted), without building the
/// document: a million-task plan would hold gigabytes of JSON values.
fn print_plan_json(
    graph: &Graph,
    mut removals: Vec<serde_json::Value>,
    preds: &[(petgraph::graph::NodeIndex, Prediction)],
) -> Result<(), Exit> {
    use serde::ser::{SerializeMap, SerializeSeq, Serializer};
    struct Task<'a>(&'a Graph, petgraph::graph::NodeIndex, &'a Prediction);
    impl serde::Serialize for Task<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let Task(g, i, p) = self;
            let node = g.node(*i);
            let action = match p {
                Prediction::UpToDate { .. } => "none",
                Prediction::Run { .. } | Prediction::Drifted { .. } => "run",
                Prediction::Maybe { .. } => "maybe",
                Prediction::Unreachable { .. } => "fail",
            };
            let mut m = s.serialize_map(Some(4))?;
            m.serialize_entry("action", action)?;
            m.serialize_entry("id", &crate::redact::text(&node.id))?;
            m.serialize_entry("pure", &node.pure)?;
            m.serialize_entry("reason", &crate::redact::text(&p.reason()))?;
            m.end()
        }
    }
    struct Tasks<'a>(&'a Graph, &'a [(petgraph::graph::NodeIndex, Prediction)]);
    impl serde::Serialize for Tasks<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.1.len()))?;
            for (i, p) in self.1 {
                seq.serialize_element(&Task(self.0, *i, p))?;
            }
            seq.end()
        }
    }
    removals.iter_mut().for_each(crate::redact::json);
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut ser = serde_json::Serializer::pretty(out);
    let cannot = |e: serde_json::Error| fail(1, format!("cannot write the plan: {e}"));
    let mut doc = ser.serialize_map(Some(3)).map_err(cannot)?;
    doc.serialize_entry("removals", &removals).map_err(cannot)?;
    doc.serialize_entry("schema", &super::schema("plan"))
        .map_err(cannot)?;
    doc.serialize_entry("tasks", &Tasks(graph, preds))
        .map_err(cannot)?;
    SerializeMap::end(doc).map_err(cannot)?;
    let mut out = ser.into_inner();
    writeln!(out)
        .and_then(|_| out.flush())
        .map_err(|e| fail(1, format!("cannot write the plan: {e}")))?;
    Ok(())
}

pub(super) fn why(plan_path: &Path, cache_dir: &Path, task: &str, json: bool) -> Result<(), Exit> {
    let l = load(plan_path, Build::Live)?;
    let Some(idx) = l.graph.find(task) else {
        let close = closest(&l.graph, task);
        return Err(fail(
            2,
            format!(
                "error: no task {task:?} in {}\nhint: {}",
                l.plan.file,
                if close.is_empty() {
                    "`mesh graph` lists every task".to_string()
                } else {
                    format!("did you mean {}?", close.join(", "))
                }
            ),
        ));
    };
    let sel = vec![true; l.graph.len()];
    let cache = Cache::open_existing(cache_dir);
    let preds = exec::predict(&l.graph, &sel, cache.as_ref());
    let p = &preds
        .iter()
        .find(|(i, _)| *i == idx)
        .expect("every node is predicted")
        .1;
    let rec = match cache.as_ref().map(|c| c.load(task)) {
        Some(cache::Load::Ok(r)) => Some(r),
        _ => None,
    };
    let node = l.graph.node(idx);
    let inputs: Vec<serde_json::Value> = node
        .inputs
        .iter()
        .map(|(k, d)| {
            let state = match rec.as_ref().map(|r| r.inputs.get(k)) {
                None => "unrecorded",
                Some(None) => "new",
                Some(Some(old)) if old == d => "same",
                Some(Some(_)) => "changed",
            };
            json!({"input": k, "digest": d.short(), "state": state})
        })
        .collect();
    if json {
        print_json(
            "why",
            &json!({
                "id": task,
                "state": p.label(),
                "reason": p.reason(),
                "deps": l.graph.dep_ids(idx),
                "inputs": inputs,
                "recorded": rec.as_ref().map(|r| json!({"key": r.key.short(), "started_ms": r.started_ms, "duration_ms": r.duration_us as f64 / 1e3})),
            }),
        );
        return Ok(());
    }
    println!("{task}: {} — {}", p.label(), p.reason());
    match &rec {
        Some(r) => println!(
            "  last run: {} ago, took {}; key {}",
            ago(r.started_ms),
            ui::fmt_us(r.duration_us),
            r.key.short()
        ),
        None => println!("  no recorded run"),
    }
    let deps = l.graph.dep_ids(idx);
    if !deps.is_empty() {
        println!("  depends on: {}", deps.join(", "));
    }
    println!("  inputs:");
    for i in &inputs {
        println!(
            "    {:<10} {}",
            i["state"].as_str().unwrap_or(""),
            i["input"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

pub(super) fn status(
    plan_path: &Path,
    cache_dir: &Path,
    filter: Option<&str>,
    offline: bool,
    json: bool,
) -> Result<(), Exit> {
    let l = load(
        plan_path,
        if offline { Build::Offline } else { Build::Live },
    )?;
    let sel: Vec<bool> = (0..l.graph.len())
        .map(|i| filter.is_none_or(|f| matches(&l.graph.node(NodeIndex::new(i)).id, f)))
        .collect();
    // Predictions need every dependency's: predict all, show the selection.
    let cache = Cache::open_existing(cache_dir);
    let mut preds = exec::predict(&l.graph, &vec![true; l.graph.len()], cache.as_ref());
    preds.retain(|(i, _)| sel[i.index()]);
    if let (Some(cache), false) = (&cache, offline) {
        let rt = runtime()?;
        rt.block_on(exec::probe_predictions(&l.graph, cache, &mut preds));
    }
    // By depth (a task after everything it depends on), then by id: the
    // bring-up's order, readable; the topological order is not.
    let depth = depths(&l.graph);
    preds.sort_by(|(a, _), (b, _)| {
        (depth[a.index()], &l.graph.node(*a).id).cmp(&(depth[b.index()], &l.graph.node(*b).id))
    });
    if json {
        print_json(
            "status",
            &json!({"tasks": preds.iter().map(|(i, p)| json!({
            "id": l.graph.node(*i).id,
            "state": p.label(),
            "pure": l.graph.node(*i).pure,
            "reason": p.reason(),
        })).collect::<Vec<_>>()}),
        );
        return Ok(());
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for (_, p) in &preds {
        match counts.iter_mut().find(|(k, _)| *k == p.label()) {
            Some((_, n)) => *n += 1,
            None => counts.push((p.label(), 1)),
        }
    }
    counts.sort_by_key(|(k, _)| STATES.iter().position(|s| s == k));
    let c: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let of = match filter {
        Some(f) => format!(" of {} matching {f:?}", l.graph.len()),
        None => String::new(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let cannot = |e: std::io::Error| fail(1, format!("cannot write the status: {e}"));
    writeln!(
        out,
        "mesh status: {} tasks{of}: {}",
        preds.len(),
        c.join(", ")
    )
    .map_err(cannot)?;
    if preds.is_empty() || ui::quiet() {
        return out.flush().map_err(cannot);
    }
    let width = preds
        .iter()
        .map(|(i, _)| l.graph.node(*i).id.len())
        .max()
        .unwrap_or(0)
        .max("TASK".len());
    writeln!(out, "{:<11} {:width$}  DETAIL", "STATE", "TASK").map_err(cannot)?;
    for (i, p) in &preds {
        let detail = match p {
            Prediction::UpToDate { record, .. } => {
                format!("ran {} ago", ago(record.started_ms))
            }
            other => other.reason(),
        };
        writeln!(
            out,
            "{:<11} {:width$}  {detail}",
            p.label(),
            l.graph.node(*i).id
        )
        .map_err(cannot)?;
    }
    out.flush().map_err(cannot)
}

/// The states `status` counts, in the order its summary lists them.
const STATES: [&str; 6] = [
    "up-to-date",
    "stale",
    "never-run",
    "drifted",
    "unreachable",
    "failed",
];

/// Each node's depth: 0 for a task with no dependency, else one more than
/// its deepest dependency's.
fn depths(g: &Graph) -> Vec<usize> {
    let mut d = vec![0; g.len()];
    for &i in g.topo() {
        d[i.index()] = g.deps(i).map(|j| d[j.index()] + 1).max().unwrap_or(0);
    }
    d
}

/// Does task `id` match `filter`? With a `*`, the whole id must match the
/// pattern (`*` stands for any run of characters); without, the filter
/// must be the id or one of its parts (`istiod:east` has the parts
/// `istiod` and `east`, `remote-secret:east->west` also `west`).
pub(super) fn matches(id: &str, filter: &str) -> bool {
    if filter.contains('*') {
        let parts: Vec<&str> = filter.split('*').collect();
        let (first, last) = (parts[0], parts[parts.len() - 1]);
        let Some(mut rest) = id.strip_prefix(first) else {
            return false;
        };
        for mid in &parts[1..parts.len() - 1] {
            match rest.find(mid) {
                Some(k) => rest = &rest[k + mid.len()..],
                None => return false,
            }
        }
        return rest.len() >= last.len() && rest.ends_with(last);
    }
    id == filter
        || id
            .split(':')
            .flat_map(|p| p.split("->"))
            .any(|p| p == filter)
}

pub(super) fn ago(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub(super) fn closest(graph: &Graph, wanted: &str) -> Vec<String> {
    let mut ids: Vec<&str> = graph
        .topo()
        .iter()
        .map(|&i| graph.node(i).id.as_str())
        .collect();
    ids.sort();
    let prefix = wanted.split(':').next().unwrap_or(wanted);
    ids.into_iter()
        .filter(|id| id.contains(wanted) || id.starts_with(prefix))
        .take(5)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn a_filter_is_a_part_of_the_id_or_a_pattern_of_the_whole() {
        for (id, f, want) in [
            ("istiod:east", "east", true),
            ("istiod:east", "istiod", true),
            ("istiod:east", "eas", false),
            ("remote-secret:east->west", "west", true),
            ("remote-secret:east->west", "remote-secret", true),
            ("render.app:helloworld:east", "helloworld", true),
            ("render.app:helloworld:east", "render.app", true),
            ("pki.root", "pki.root", true),
            ("istiod:east", "istiod:*", true),
            ("istiod:east", "*:east", true),
            ("render.istio:east", "istiod:*", false),
            ("remote-secret:east->west", "remote-secret:*->west", true),
            ("remote-secret:west->east", "remote-secret:*->west", false),
            ("ab", "a*b*b", false),
            ("abb", "a*b*b", true),
            ("anything", "*", true),
        ] {
            assert_eq!(matches(id, f), want, "{id} ~ {f}");
        }
    }
}
