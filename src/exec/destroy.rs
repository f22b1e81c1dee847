//! Destroy: undo every recorded live task, dependents first.

use super::*;

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
