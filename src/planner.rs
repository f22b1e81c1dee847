//! The planner: derives the whole task graph from a validated plan.
//!
//! For every cluster `c` (kind clusters only: *):
//!
//! ```text
//! pki.root ─► pki.intermediate:c ─► render.cacerts:c ─► cacerts:c ─────────┐
//! render.kind:c* ─► cluster:c* ─► net.discover ─► net.alloc ─► render.*:c  │
//! render.cni:c* ─► cni:c* ─► lb:c* ─────────────────────────────────────── ├─► istiod:c ─► gateway:c
//! render.istio:c ──────────────────────────────────────────────────────────┘      │
//! istiod:a, istiod:b ─► remote-secret:a->b            (remote: gateway:<primary> ─► istiod:c)
//! render.namespace:ns:c ─► namespace:ns:c ─┐
//! render.app:x:c, istiod:c ────────────────┴─► app:x:c
//! ```
//!
//! Each kind plans itself (`src/kinds/`); this function only says in which
//! order, then checks the user tasks' `after` edges, and seals the graph.
//! A kind comes after the kinds whose ids it checks (user tasks check every
//! built-in id); edges may name a task planned later, since the seal
//! resolves them. An offline build plans the same kinds but builds no live
//! task at all, not even its id (a user task's `after` naming one is
//! checked against the plan by `kinds::live_exists`): so an offline build
//! of 1,000 primaries, a million remote secrets, costs what the pure tasks
//! cost.

use crate::diag::PlanError;
use crate::graph::{Graph, GraphError};
use crate::kinds::{self, Planner};
use crate::plan::Plan;
use std::sync::Arc;

pub use crate::kinds::Build;

/// Build the graph of `plan`.
pub fn build(plan: &Arc<Plan>, target: Build) -> Result<Graph, PlanError> {
    build_bumped(plan, target, &[])
}

/// Build the graph of `plan` as a release that bumps the `VERSION` of the
/// kinds named (id prefixes: `gateway`, `render.app`) would: what tests use
/// to show that a bump reaches only its own kind.
pub fn build_bumped(plan: &Arc<Plan>, target: Build, bumped: &[&str]) -> Result<Graph, PlanError> {
    Ok(build_counted(plan, target, bumped)?.0)
}

/// [`build_bumped`], and how many live tasks the planner built (what tests
/// use to show that an offline plan builds none).
pub fn build_counted(
    plan: &Arc<Plan>,
    target: Build,
    bumped: &[&str],
) -> Result<(Graph, usize), PlanError> {
    let mut p = Planner::new(plan, target);
    p.bump(bumped);
    kinds::net::plan(&mut p);
    kinds::pki::plan(&mut p);
    kinds::cluster::plan(&mut p);
    kinds::cni::plan(&mut p);
    kinds::lb::plan(&mut p);
    kinds::cacerts::plan(&mut p);
    kinds::istiod::plan(&mut p);
    kinds::gateway::plan(&mut p);
    kinds::ingress::plan(&mut p);
    kinds::remote_secret::plan(&mut p);
    kinds::namespace::plan(&mut p);
    kinds::app::plan(&mut p);
    kinds::locality::plan(&mut p);
    kinds::prometheus::plan(&mut p);
    kinds::kiali::plan(&mut p);
    let errors = kinds::user::plan(&mut p);
    let fail = |diags| PlanError {
        file: plan.file.clone(),
        source: plan.text.clone(),
        diags,
    };
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    let built = p.live_built();
    match p.into_builder().seal() {
        Ok(g) => Ok((g, built)),
        Err(GraphError::Cycle(path)) => Err(fail(vec![kinds::user::cycle(plan, &path)])),
        Err(e) => panic!("the kinds planned a broken graph: {e}"),
    }
}
