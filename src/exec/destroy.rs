//! Destroy: undo every recorded live task, dependents first.

use super::*;

/// The recorded live tasks `undo_all` would undo, in its order.
pub fn to_undo(graph: &Graph, cache: &Cache) -> Vec<String> {
    graph
        .topo()
        .iter()
        .rev()
        .map(|&i| graph.node(i))
        .filter(|n| !n.pure && matches!(cache.load(&n.id), Load::Ok(_)))
        .map(|n| n.id.clone())
        .collect()
}

/// Undo recorded live tasks, dependents first, telling `before` of each
/// one about to be undone and `progress` of each one undone. Returns the
/// ids undone (or with nothing to undo), and the first failure.
pub async fn undo_all(
    graph: &Graph,
    cache: &Arc<Cache>,
    mut before: impl FnMut(&str),
    mut progress: impl FnMut(&str),
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
        let ctx = recorded_ctx(graph, cache, i, &rec);
        before(&node.id);
        if let Some(fut) = node.action.undo(ctx)
            && let Err(e) = fut.await
        {
            return (done, vec![(node.id.clone(), e)]);
        }
        progress(&node.id);
        done.push(node.id.clone());
    }
    (done, Vec::new())
}
