//! The read-only commands that explain the cache: `plan` (what a build
//! would do), `why` (one task's inputs against its record) and `status`
//! (every task's state). All three use the executor's one freshness
//! decision (`exec::predict`), plus the probes of live tasks.

use super::*;
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
        print_json(&json!({
            "removals": gone,
            "tasks": preds.iter().map(|(i, p)| json!({
            "id": l.graph.node(*i).id,
            "action": match p { Prediction::UpToDate{..} => "none", Prediction::Run{..} | Prediction::Drifted{..} => "run", Prediction::Maybe{..} => "maybe", Prediction::Unreachable{..} => "fail" },
            "pure": l.graph.node(*i).pure,
            "reason": p.reason(),
        })).collect::<Vec<_>>()}));
        return Ok(());
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
        print_json(&json!({
            "id": task,
            "state": p.label(),
            "reason": p.reason(),
            "deps": l.graph.dep_ids(idx),
            "inputs": inputs,
            "recorded": rec.as_ref().map(|r| json!({"key": r.key.short(), "started_ms": r.started_ms, "duration_ms": r.duration_us as f64 / 1e3})),
        }));
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

pub(super) fn status(plan_path: &Path, cache_dir: &Path, json: bool) -> Result<(), Exit> {
    let l = load(plan_path, Build::Live)?;
    let sel = vec![true; l.graph.len()];
    let cache = Cache::open_existing(cache_dir);
    let mut preds = exec::predict(&l.graph, &sel, cache.as_ref());
    if let Some(cache) = &cache {
        let rt = runtime()?;
        rt.block_on(exec::probe_predictions(&l.graph, cache, &mut preds));
    }
    if json {
        print_json(&json!({"tasks": preds.iter().map(|(i, p)| json!({
            "id": l.graph.node(*i).id,
            "state": p.label(),
            "pure": l.graph.node(*i).pure,
            "reason": p.reason(),
        })).collect::<Vec<_>>()}));
        return Ok(());
    }
    let width = preds
        .iter()
        .map(|(i, _)| l.graph.node(*i).id.len())
        .max()
        .unwrap_or(0);
    let mut counts = std::collections::BTreeMap::new();
    for (i, p) in &preds {
        *counts.entry(p.label()).or_insert(0) += 1;
        let detail = match p {
            Prediction::UpToDate { record, .. } => {
                format!("ran {} ago", ago(record.started_ms))
            }
            other => other.reason(),
        };
        println!("{:<11} {:width$}  {detail}", p.label(), l.graph.node(*i).id);
    }
    let c: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    eprintln!("mesh status: {} tasks: {}", preds.len(), c.join(", "));
    Ok(())
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
