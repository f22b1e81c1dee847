//! mesh: an Istio multi-cluster mesh, brought up as a build system builds a
//! program.
//!
//! The layers, bottom up; a module imports only from its own layer or
//! below, and within a layer only from modules listed before it (peers
//! separated by commas, an order by "<"). `tests/layers.rs` enforces it.
//!
//! 1. the engine, which knows nothing of Istio: `hash` (digests), `redact`
//!    (secret bytes taken out of anything shown), `events`
//!    (what happened inside a running task: retries), `state` (the durable
//!    identity and inventory, apart from the cache), `seen` (what planning
//!    looked at, for the no-op fast path) < `graph`
//!    (nodes, actions and the sealed DAG) < `stamp` (the stat cache: a
//!    file's digest trusted from its `stat`) < `cache` (the store and its
//!    records) < `exec` (the parallel, cached executor);
//! 2. the input: `diag` (located errors), `yaml` (multi-document YAML),
//!    `assets` (the embedded `tasks/` files) < `plan` (plan.toml → a
//!    validated plan);
//! 3. the world: `providers` (kind, helm, docker, http: every process and
//!    download), `k8s` (every Kubernetes API call) < `access` (reaching a
//!    cluster's API with its credentials);
//! 4. the domain: `kinds` (one module per task kind: ids, version, slice,
//!    templates, action, probe, undo) < `planner` (plan → graph, kind by
//!    kind);
//! 5. the commands: `verify`, `doctor`, `ui` (progress, summary, trace,
//!    JSON) < `cli`.

pub mod access;
pub mod assets;
pub mod cache;
pub mod cli;
pub mod diag;
pub mod doctor;
pub mod events;
pub mod exec;
pub mod graph;
pub mod hash;
pub mod k8s;
pub mod kinds;
pub mod plan;
pub mod planner;
pub mod providers;
pub mod redact;
pub mod seen;
pub mod stamp;
pub mod state;
pub mod ui;
pub mod verify;
pub mod yaml;
