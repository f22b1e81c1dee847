//! What left the plan: kind clusters mesh owns (the state's inventory)
//! that plan.toml no longer names, and live tasks recorded in the cache
//! that the plan no longer has (an app, a namespace, a user task, a remote
//! secret a topology change dropped) on clusters that stay ([`leftovers`]:
//! undone from their receipts, dependents first, each record forgotten
//! once its objects and releases are gone). `mesh plan` lists them as removals;
//! `mesh build` removes them before anything else runs, after asking on a
//! terminal (or with `--yes`; elsewhere it refuses and says so):
//!
//! 1. the remote secrets the remaining clusters hold for a removed cluster
//!    (`remote-secret:<removed>-><c>`, objects from the cache's receipts),
//!    so no istiod keeps watching a cluster that is gone; their records are
//!    forgotten;
//! 2. the records of every task of that cluster, so the cache never claims
//!    what no longer exists (forgotten before the cluster is deleted: a kill
//!    in between leaves an owned cluster with no records, which the next
//!    build removes);
//! 3. the cluster itself (`kind delete`, then forgotten by the inventory);
//! 4. its files under `out/` (`out/<c>/`, `out/pki/<c>/`).

use super::{Exit, Loaded, fail, runtime};
use crate::cache::{Cache, Load};
use crate::graph::TaskError;
use crate::plan::{Plan, Provider};
use crate::{exec, kinds};
use std::path::Path;

/// The kind clusters mesh owns that the plan no longer names.
pub(super) fn orphans(plan: &Plan) -> Result<Vec<String>, Exit> {
    let store = crate::state::get().expect("the state store is set");
    let inv = store
        .inventory()
        .map_err(|e| fail(1, format!("error: {e}")))?;
    Ok(inv
        .kind_clusters()
        .into_iter()
        .filter(|n| {
            plan.clusters
                .get(n)
                .is_none_or(|c| c.provider != Provider::Kind)
        })
        .collect())
}

/// A live task that left the plan and left something in a cluster that
/// stays: objects or Helm releases its receipt names.
pub(super) struct Leftover {
    pub id: String,
    /// Where it acted.
    pub cluster: String,
    pub receipt: kinds::step::Receipt,
}

impl Leftover {
    /// "3 objects, 1 Helm release".
    pub(super) fn what(&self) -> String {
        let (o, r) = (self.receipt.objects.len(), self.receipt.releases.len());
        let mut parts = vec![];
        if o > 0 {
            parts.push(format!("{o} object{}", if o == 1 { "" } else { "s" }));
        }
        if r > 0 {
            parts.push(format!("{r} Helm release{}", if r == 1 { "" } else { "s" }));
        }
        parts.join(", ")
    }
}

/// Live tasks recorded in the cache that the plan no longer has (an app,
/// a namespace, a user task, a remote secret a topology change dropped),
/// on clusters that stay, with what their receipts say they left; those
/// that depend on others first. A task on a cluster that left the plan
/// goes with that cluster instead.
pub(super) fn leftovers(l: &Loaded, cache: &Cache, gone: &[String]) -> Vec<Leftover> {
    let mut out: Vec<(Leftover, Vec<String>)> = Vec::new();
    for id in cache.record_ids() {
        // A task named after a cluster that leaves goes with it, unless it
        // recorded that it acted elsewhere (Kiali's secret for that cluster
        // lives in Kiali's home); remote secrets have their own pass below.
        let of_gone = gone.iter().any(|g| of_cluster(&id, g));
        if l.graph.find(&id).is_some() || (of_gone && id.starts_with("remote-secret:")) {
            continue;
        }
        let Load::Ok(rec) = cache.load(&id) else {
            continue;
        };
        let Some(receipt) = exec::recorded_file(cache, &id, kinds::step::RECEIPT)
            .and_then(|b| serde_json::from_slice::<kinds::step::Receipt>(&b).ok())
            .filter(kinds::step::Receipt::holds_anything)
        else {
            continue;
        };
        let recorded = exec::recorded_file(cache, &id, kinds::step::CLUSTER)
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if of_gone && recorded.as_ref().is_none_or(|c| gone.contains(c)) {
            continue;
        }
        let Some(cluster) = recorded.or_else(|| cluster_of(&id)) else {
            continue;
        };
        let deps = rec.deps.keys().cloned().collect();
        out.push((
            Leftover {
                id,
                cluster,
                receipt,
            },
            deps,
        ));
    }
    // Installs on existing clusters the state still holds but the cache
    // no longer records (after `mesh clean`): newest first.
    if let Some(store) = crate::state::get() {
        for o in store
            .inventory()
            .map(|i| i.installs())
            .unwrap_or_default()
            .into_iter()
            .rev()
        {
            if l.graph.find(&o.name).is_some() || out.iter().any(|(x, _)| x.id == o.name) {
                continue;
            }
            let (Some(cluster), Some(receipt)) = (
                o.cluster,
                o.holds
                    .and_then(|h| serde_json::from_value::<kinds::step::Receipt>(h).ok())
                    .filter(kinds::step::Receipt::holds_anything),
            ) else {
                continue;
            };
            out.push((
                Leftover {
                    id: o.name,
                    cluster,
                    receipt,
                },
                vec![],
            ));
        }
    }
    // Dependents first: a leftover goes before every leftover it depends on.
    let mut ordered = Vec::with_capacity(out.len());
    while !out.is_empty() {
        let i = (0..out.len())
            .find(|&i| {
                let id = &out[i].0.id;
                !out.iter().any(|(_, deps)| deps.contains(id))
            })
            .unwrap_or(0);
        ordered.push(out.remove(i).0);
    }
    ordered
}

/// The cluster a built-in live task acted on, from its id: the last part
/// (`app:<a>:<c>`, `namespace:<ns>:<c>`), or where a remote secret lives
/// (`remote-secret:<from>-><to>`).
fn cluster_of(id: &str) -> Option<String> {
    if let Some(pair) = id.strip_prefix("remote-secret:") {
        return pair.split("->").nth(1).map(str::to_string);
    }
    let mut parts = id.split(':');
    let kind = parts.next()?;
    let last = parts.next_back()?;
    matches!(kind, "app" | "namespace").then(|| last.to_string())
}

/// Undo leftovers (dependents first), forgetting each record once its
/// objects and releases are gone.
pub(super) fn remove_leftovers(
    l: &Loaded,
    cache: &Cache,
    lock: &crate::cache::BuildLock,
    rt: &tokio::runtime::Runtime,
    items: &[Leftover],
    who: &str,
) -> Result<(), Exit> {
    for item in items {
        if !l.plan.clusters.contains_key(&item.cluster) {
            return Err(fail(
                1,
                format!(
                    "error: cannot remove {}: its cluster {} is no longer in {}, so mesh cannot reach it (put the cluster back to remove it)",
                    item.id, item.cluster, l.plan.file
                ),
            ));
        }
        let access = crate::verify::access(&l.plan, cache, &item.cluster)
            .map_err(|e| fail(1, format!("error: removing {}: {e}", item.id)))?;
        rt.block_on(item.receipt.undo(&access))
            .map_err(|e| fail(1, format!("error: removing {}: {e}", item.id)))?;
        cache
            .remove(lock, &item.id)
            .map_err(|e| fail(1, format!("error: {e}")))?;
        forget_install(&item.id)?;
        eprintln!(
            "{who}: removed {} from {} ({}; it left {})",
            item.id,
            item.cluster,
            item.what(),
            l.plan.file
        );
    }
    Ok(())
}

/// The state's inventory forgets task `id`'s install (it is gone).
pub(super) fn forget_install(id: &str) -> Result<(), Exit> {
    if let Some(store) = crate::state::get() {
        store
            .forget(crate::state::INSTALL, id)
            .map_err(|e| fail(1, format!("error: {e}")))?;
    }
    Ok(())
}

/// Installs of tasks still in the plan that the state holds and the cache
/// no longer records (after `mesh clean`): what destroy must still undo,
/// newest first.
pub(super) fn unrecorded_installs(l: &Loaded, cache: Option<&Cache>) -> Vec<Leftover> {
    let Some(store) = crate::state::get() else {
        return vec![];
    };
    store
        .inventory()
        .map(|i| i.installs())
        .unwrap_or_default()
        .into_iter()
        .rev()
        .filter(|o| {
            l.graph.find(&o.name).is_some()
                && cache.is_none_or(|c| !matches!(c.load(&o.name), Load::Ok(_)))
        })
        .filter_map(|o| {
            let receipt = o
                .holds
                .and_then(|h| serde_json::from_value::<kinds::step::Receipt>(h).ok())
                .filter(kinds::step::Receipt::holds_anything)?;
            Some(Leftover {
                id: o.name,
                cluster: o.cluster?,
                receipt,
            })
        })
        .collect()
}

fn confirm(names: &[String], file: &str, yes: bool) -> Result<(), Exit> {
    let what = names.join(", ");
    let question = format!(
        "mesh build: {what} left {file}. Remove them (a kind cluster with the remote secrets other clusters hold for it)?"
    );
    let refusal = format!(
        "error: {what} left {file}, and mesh made them: this build would remove them (a kind cluster with what mesh installed for it). Pass --yes to go ahead (mesh plan lists it; nothing was done)"
    );
    if super::confirmed(yes, &question, &refusal)? {
        Ok(())
    } else {
        Err(fail(1, "mesh build: nothing was done"))
    }
}

/// Remove what left the plan (see the module doc).
pub(super) fn remove_orphans(
    l: &Loaded,
    cache_dir: &Path,
    dir: &Path,
    yes: bool,
) -> Result<(), Exit> {
    let gone = orphans(&l.plan)?;
    let left = Cache::open_existing(cache_dir)
        .map(|c| leftovers(l, &c, &gone))
        .unwrap_or_default();
    if gone.is_empty() && left.is_empty() {
        return Ok(());
    }
    let mut what: Vec<String> = left
        .iter()
        .map(|t| format!("{} in {}", t.id, t.cluster))
        .collect();
    what.extend(gone.iter().map(|n| format!("kind cluster {n}")));
    confirm(&what, &l.plan.file, yes)?;
    let cache = Cache::open(cache_dir).map_err(|e| fail(1, format!("error: {e}")))?;
    let lock = cache.lock().map_err(|e| fail(1, format!("error: {e}")))?;
    let rt = runtime()?;
    remove_leftovers(l, &cache, &lock, &rt, &left, "mesh build")?;
    for name in &gone {
        for to in l.plan.clusters.keys() {
            let id = kinds::remote_secret::id(name, to);
            if !matches!(cache.load(id.as_str()), Load::Ok(_)) {
                continue;
            }
            rt.block_on(delete_secret(&l.plan, &cache, id.as_str(), to))
                .map_err(|e| fail(1, format!("error: removing {id}: {e}")))?;
            cache
                .remove(&lock, id.as_str())
                .map_err(|e| fail(1, format!("error: {e}")))?;
            eprintln!("mesh build: removed {id} (cluster {name} left the plan)");
        }
        for id in cache
            .record_ids()
            .into_iter()
            .filter(|id| of_cluster(id, name))
        {
            cache
                .remove(&lock, &id)
                .map_err(|e| fail(1, format!("error: {e}")))?;
        }
        rt.block_on(kinds::cluster::delete_owned(name))
            .map_err(|e| fail(1, format!("error: removing kind cluster {name}: {e}")))?;
        for sub in [name.clone(), format!("pki/{name}")] {
            let d = dir.join("out").join(sub);
            crate::cache::remove_dir(&d)
                .map_err(|e| fail(1, format!("error: cannot remove {}: {e}", d.display())))?;
        }
        eprintln!("mesh build: deleted kind cluster {name} (it left the plan)");
    }
    Ok(())
}

/// Is task `id` one of cluster `name`'s? Task ids end with their cluster
/// (`cacerts:east`, `app:helloworld:east`, `render.kind:east`), and a
/// remote secret names both of its (`remote-secret:east->west`).
fn of_cluster(id: &str, name: &str) -> bool {
    let last = id.rsplit(':').next().unwrap_or("");
    if let Some(pair) = id.strip_prefix("remote-secret:") {
        return pair.split("->").any(|c| c == name);
    }
    last == name
}

/// Delete what `remote-secret:<from>-><to>` applied in `to`, from its
/// recorded receipt.
async fn delete_secret(plan: &Plan, cache: &Cache, id: &str, to: &str) -> Result<(), TaskError> {
    let Some(receipt) = exec::recorded_file(cache, id, kinds::step::RECEIPT)
        .and_then(|b| serde_json::from_slice::<kinds::step::Receipt>(&b).ok())
    else {
        return Ok(());
    };
    let access = crate::verify::access(plan, cache, to).map_err(TaskError::new)?;
    let client = access.client().await?;
    crate::k8s::delete(&client, &receipt.objects).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_clusters_tasks_are_found_by_their_ids() {
        for id in [
            "cluster:west",
            "render.kind:west",
            "app:helloworld:west",
            "namespace:sample:west",
            "pki.intermediate:west",
            "remote-secret:west->east",
            "remote-secret:east->west",
        ] {
            assert!(super::of_cluster(id, "west"), "{id}");
        }
        for id in [
            "cluster:east",
            "namespace:west:east",
            "pki.root",
            "net.alloc",
        ] {
            assert!(!super::of_cluster(id, "west"), "{id}");
        }
    }
}
