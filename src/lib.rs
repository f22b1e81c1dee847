//! mesh: an Istio multi-cluster mesh, brought up as a build system builds a
//! program.
//!
//! The layers, bottom up: `hash` (digests), `cache` (the store), `plan`
//! (plan.toml → validated plan, with `diag` for errors), `graph` (nodes and
//! the sealed DAG), `planner` (plan → graph), `tasks` (what pure tasks
//! compute), `providers` (kind, helm, docker) and `k8s` (the Kubernetes API)
//! under `live` (what live tasks do), `exec` (the parallel, cached
//! executor), `ui` (progress, summary, trace, JSON) and `cli` (the commands).

pub mod assets;
pub mod cache;
pub mod cli;
pub mod diag;
pub mod doctor;
pub mod exec;
pub mod graph;
pub mod hash;
pub mod k8s;
pub mod live;
pub mod plan;
pub mod planner;
pub mod providers;
pub mod tasks;
pub mod ui;
pub mod verify;
