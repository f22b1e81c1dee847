//! The command line: parses flags (clap), loads the plan, builds the graph,
//! and runs one command.
//!
//! Exit codes (DESIGN.md's contract): 0 success, 1 a task failed (or the
//! cache is held by another build), 2 bad input (plan or flags), 130
//! interrupted. Human output goes to stderr; `--json` documents alone go to
//! stdout. Paths: the plan defaults to `./plan.toml`; the cache lives in
//! `cache/` beside the plan and the offline bundle in `out/` beside it (or
//! `--out DIR`).

use crate::cache::{self, Cache};
use crate::exec::{self, Prediction, Status};
use crate::graph::Graph;
use crate::plan::{self, Plan};
use crate::planner::Build;
use crate::{doctor, events, planner, ui};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

mod init;
mod inspect;
mod open;
mod removals;
mod watch;
use inspect::{plan_cmd, status, why};

#[derive(Parser, Debug)]
#[command(
    name = "mesh",
    version,
    about = "Bring up an Istio multi-cluster mesh as a cached, parallel task graph"
)]
pub struct Cli {
    /// The plan: a file, or a directory holding plan.toml (default: the
    /// first plan.toml in this directory or a parent, as cargo finds
    /// Cargo.toml).
    #[arg(long, global = true, env = "MESH_PLAN", value_name = "FILE|DIR")]
    pub plan: Option<PathBuf>,
    /// Say more on stderr: how long each phase took (reading the plan,
    /// planning the graph, checking and running its tasks), every tool
    /// command line and its exit, every API call and its answer; each line
    /// stamped with the time since mesh started and the task it serves,
    /// secrets redacted.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Say less: errors and each command's final line only (no progress,
    /// no critical path, no task rows).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colour errors and hints on stderr: `auto` (on a terminal, unless
    /// NO_COLOR is set; CLICOLOR_FORCE forces it), `always` or `never`.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a shell completion script (e.g. `mesh completions bash >
    /// ~/.local/share/bash-completion/completions/mesh`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff: `mesh man | man -l -`).
    Man,
    /// Print mesh's version (as `mesh --version` does).
    Version,
    /// Write a commented plan.toml here (or at --plan) for the mesh these
    /// flags describe; it builds offline as is.
    Init {
        /// Istio's data plane.
        #[arg(long, value_enum, default_value_t = init::Mode::Sidecar)]
        mode: init::Mode,
        /// Where the control planes run.
        #[arg(long, value_enum, default_value_t = init::Topology::MultiPrimary)]
        topology: init::Topology,
        /// The CNI of kind clusters (kindnet comes with MetalLB).
        #[arg(long, value_enum, default_value_t = init::Cni::Cilium)]
        cni: init::Cni,
        /// How many clusters.
        #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=50))]
        clusters: u8,
        /// kind clusters mesh creates, or existing ones from your kubeconfig.
        #[arg(long, value_enum, default_value_t = init::Provider::Kind)]
        provider: init::Provider,
        /// Overwrite an existing plan.
        #[arg(long)]
        force: bool,
    },
    /// Run every task that is not up to date.
    Build {
        /// Only the pure tasks: PKI and every rendered manifest, into out/.
        #[arg(long)]
        offline: bool,
        /// Run at most N tasks at once (default: the number of CPUs offline;
        /// four per cluster, at most 64, live)
        #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Keep running every branch that does not depend on a failure.
        #[arg(long)]
        keep_going: bool,
        /// Print one JSON document on stdout (progress stays on stderr).
        #[arg(long)]
        json: bool,
        /// Write a Chrome trace-event file (open it in Perfetto).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Where the offline bundle goes (default: out/ beside the plan).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Remove what left the plan (kind clusters mesh owns) without
        /// asking; needed when not on a terminal.
        #[arg(long)]
        yes: bool,
        /// Read and hash every cached blob and exported file, trusting no
        /// stat cache entry (a file edited behind mesh's back with its
        /// size, mtime, ctime and inode all kept is caught here); never
        /// answered by the no-op fast path (`cache/noop`).
        #[arg(long)]
        verify: bool,
        /// Build, then build again on every save of the plan or of a file
        /// it reads (templates, manifests, values), until Ctrl-C. A plan
        /// error is shown and the watch goes on.
        #[arg(long, conflicts_with_all = ["rotate_root", "json"])]
        watch: bool,
        /// Rotate the mesh's root CA to a new one (made with the plan's
        /// [pki]) without breaking trust: three builds (trust both roots,
        /// sign with the new, trust only the new), each restarting istiod
        /// and the workloads, then mesh verify. Resumes one left unfinished.
        #[arg(long)]
        rotate_root: bool,
    },
    /// Say what a build would run and why, doing nothing.
    Plan {
        /// Only the pure tasks.
        #[arg(long)]
        offline: bool,
        /// List up-to-date tasks too.
        #[arg(long)]
        all: bool,
        /// Print one JSON document on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Explain one task: which inputs changed since its recorded run.
    Why {
        /// A task id, e.g. render.kind:east
        task: String,
        /// Print one JSON document on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The state of every task: up-to-date, stale, never-run, drifted or
    /// unreachable; a summary line first, then one row per task, by depth
    /// in the graph.
    Status {
        /// Only tasks matching: a part of their id (`east`, `istiod`,
        /// `helloworld`) or the whole id with `*` wildcards (`'istiod:*'`).
        filter: Option<String>,
        /// Only the pure tasks (what `build --offline` builds); asks no
        /// cluster.
        #[arg(long)]
        offline: bool,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the task graph.
    Graph {
        /// Graphviz dot, a Mermaid flowchart, or JSON.
        #[arg(long, value_enum, default_value_t = Format::Dot)]
        format: Format,
        /// Only the pure tasks.
        #[arg(long)]
        offline: bool,
    },
    /// Delete the cache and the offline bundle (or, with --gc, only blobs no
    /// record references). The state (`state/`: the root CA and what mesh
    /// owns) stays.
    Clean {
        /// Keep the cache: delete only the blobs no record references.
        #[arg(long)]
        gc: bool,
    },
    /// Tear the mesh down: kind clusters are deleted; on existing clusters
    /// what mesh installed is removed. Forgets the live tasks' records.
    /// Every kind cluster in the inventory goes, even if the plan or the
    /// cache no longer knows it; the root CA stays. Shows what it will
    /// delete first, and asks on a terminal.
    Destroy {
        /// Go ahead without asking (needed when not on a terminal).
        #[arg(long)]
        yes: bool,
        /// Only show what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Also delete the mesh's identity, its root CA (state/identity):
        /// the next build mints a new one, which no workload trusts yet.
        /// Asked separately on a terminal.
        #[arg(long)]
        forget_identity: bool,
    },
    /// Give mesh a kind cluster of this plan that mesh did not create: it
    /// records it as owned, and the next build recreates it from the plan.
    Adopt {
        /// The plan's name for the cluster (its kind name).
        cluster: String,
    },
    /// Send requests from every cluster's client pod to every app with a
    /// `verify` path; pass only if every version answers from every cluster
    /// (with `locality`: if most requests stay in their cluster).
    Verify {
        /// Print one JSON document on stdout instead of text.
        #[arg(long)]
        json: bool,
        /// Keep checking for up to this many seconds until everything
        /// passes (istiod syncs remote clusters some seconds after a build).
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        wait: u64,
        /// Then, for each app and each cluster it runs in: scale its
        /// Deployments there to zero, show every request answered by the
        /// other clusters, scale them back, and report the distribution
        /// before, during and after.
        #[arg(long)]
        failover: bool,
    },
    /// Open an add-on's web UI: forward a local port to it through the API
    /// server (as kubectl port-forward) and print its URL, until Ctrl-C.
    Open {
        /// What to open.
        #[arg(value_enum)]
        what: open::Ui,
        /// The local port on 127.0.0.1 (0: any free one).
        #[arg(long, default_value_t = 20001)]
        port: u16,
    },
    /// Check the tools and contexts a live build of this plan needs.
    Doctor {
        /// Print one JSON document on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Dot,
    Mermaid,
    /// `{"schema", "tasks": [{"id", "kind", "pure", "deps"}]}`, in
    /// topological order.
    Json,
}

/// A failure that ends the command with an exit code.
struct Exit(u8);

fn fail(code: u8, msg: impl std::fmt::Display) -> Exit {
    eprintln!("{}", ui::paint(&crate::redact::text(&msg.to_string())));
    Exit(code)
}

struct Loaded {
    plan: Arc<Plan>,
    graph: Arc<Graph>,
    /// What reading the plan and planning looked at (`seen`).
    seen: crate::seen::Seen,
    plan_file: PathBuf,
}

/// Load the plan and its graph. They live until the process exits: a
/// CLI run is one command, and freeing ten thousand nodes one by one at exit
/// is measurable time for nothing, so they are deliberately leaked.
fn load(path: &Path, target: Build) -> Result<&'static Loaded, Exit> {
    Ok(Box::leak(Box::new(load_owned(path, target)?)))
}

/// [`load`], owned: what `build --watch` loads again on every save (each
/// leaked would grow the process by a graph per rebuild).
fn load_owned(path: &Path, target: Build) -> Result<Loaded, Exit> {
    let display = path.to_string_lossy().to_string();
    crate::seen::start();
    let planned = events::phase(READ, || plan::load(path, &display))
        .map(Arc::new)
        .and_then(|plan| Ok((events::phase(PLAN, || planner::build(&plan, target))?, plan)));
    let seen = crate::seen::take().unwrap_or_default();
    let (graph, plan) = planned.map_err(|e| fail(2, e))?;
    verbose(&format!(
        "{} tasks, {} edges",
        graph.len(),
        graph.edge_count()
    ));
    Ok(Loaded {
        plan,
        graph: Arc::new(graph),
        seen,
        plan_file: path.to_path_buf(),
    })
}

/// The `schema` of command `cmd`'s JSON documents.
fn schema(cmd: &str) -> String {
    format!("mesh.{cmd}/v1")
}

/// The phases of a command (see `events`).
const READ: &str = "read and check the plan";
const PLAN: &str = "plan the graph";
const RUN: &str = "check and run the tasks";
const NOOP: &str = "check the last clean build's files by stat";
const SAVE: &str = "write down the clean build for the next no-op";

/// With `-v`: every phase that ended since the last call, stamped with
/// its end and its length, then `more` (if not empty).
fn verbose(more: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SHOWN: AtomicUsize = AtomicUsize::new(0);
    if !events::verbose() {
        return;
    }
    let phases = events::phases();
    let from = SHOWN.swap(phases.len(), Ordering::Relaxed);
    for p in phases.iter().skip(from) {
        let ms = (p.end - p.start).as_secs_f64() * 1e3;
        events::say_at(p.end, &format!("{} ({ms:.1} ms)", p.name));
    }
    if !more.is_empty() {
        events::say(more);
    }
}

fn selection(graph: &Graph, offline: bool) -> Vec<bool> {
    (0..graph.len())
        .map(|i| !offline || graph.node(petgraph::graph::NodeIndex::new(i)).pure)
        .collect()
}

/// Print the JSON document of command `cmd`, every string in it redacted.
/// Every document is an object whose `schema` names its shape and version
/// (`mesh.<cmd>/v1`): a consumer checks it before reading on.
fn print_json(cmd: &str, v: &serde_json::Value) {
    let mut v = v.clone();
    let doc = v.as_object_mut().expect("every JSON document is an object");
    doc.insert("schema".into(), json!(schema(cmd)));
    crate::redact::json(&mut v);
    println!(
        "{}",
        serde_json::to_string_pretty(&v).expect("JSON serializes")
    );
}

/// Entry point: run the CLI, return the process exit code.
pub fn main() -> ExitCode {
    events::start();
    let cli = Cli::parse();
    events::set_verbose(cli.verbose);
    ui::set_quiet(cli.quiet);
    ui::set_color(
        &cli.color,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code)) => ExitCode::from(code),
    }
}

/// The plan file: `given` (`--plan` or `MESH_PLAN`; a directory means its
/// plan.toml), else the first plan.toml in the current directory or one
/// of its parents.
fn find_plan(given: Option<PathBuf>) -> Result<PathBuf, Exit> {
    if let Some(p) = given {
        return Ok(if p.is_dir() { p.join(PLAN_FILE) } else { p });
    }
    let cwd = std::env::current_dir()
        .map_err(|e| fail(2, format!("error: cannot read the current directory: {e}")))?;
    for d in cwd.ancestors() {
        let p = d.join(PLAN_FILE);
        if p.is_file() {
            // Relative when it is here, as messages have always named it.
            return Ok(if d == cwd {
                PathBuf::from(PLAN_FILE)
            } else {
                p
            });
        }
    }
    Err(fail(
        2,
        format!(
            "error: no {PLAN_FILE} in {} or any parent directory\n  \
             hint: `mesh init` writes one here; --plan FILE|DIR or MESH_PLAN names another",
            cwd.display()
        ),
    ))
}

const PLAN_FILE: &str = "plan.toml";

/// Can a file be written at `path` (named by `flag`)? Asked before a build
/// runs anything, so a typo does not cost a bring-up: the path is not a
/// directory, and its directory exists and takes a new file.
fn check_file_target(flag: &str, path: &Path) -> Result<(), Exit> {
    let bad = |why: String| fail(2, format!("error: {flag} {}: {why}", path.display()));
    if path.is_dir() {
        return Err(bad("is a directory".into()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    writable_dir(dir).map_err(bad)
}

/// Can `path` (named by `flag`) be a directory mesh writes into: an
/// existing directory, or one its first existing ancestor lets mesh make.
fn check_dir_target(flag: &str, path: &Path) -> Result<(), Exit> {
    let bad = |why: String| fail(2, format!("error: {flag} {}: {why}", path.display()));
    let base = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let Some(existing) = base.ancestors().find(|a| a.exists()) else {
        return Err(bad("no part of it exists".into()));
    };
    if !existing.is_dir() {
        return Err(bad(format!("{} is not a directory", existing.display())));
    }
    writable_dir(existing).map_err(bad)
}

/// Does `dir` exist and take a new file? (Tried, not guessed from modes.)
fn writable_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("no directory {}", dir.display()));
    }
    tempfile::Builder::new()
        .prefix(".mesh-write-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

fn run(cli: Cli) -> Result<(), Exit> {
    // Commands that read no plan and touch nothing.
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "mesh", &mut std::io::stdout());
            return Ok(());
        }
        Command::Version => {
            println!("mesh {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            return clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| fail(1, format!("error: cannot write the manual page: {e}")));
        }
        Command::Init {
            mode,
            topology,
            cni,
            clusters,
            provider,
            force,
        } => {
            // Here, or where --plan says: never a parent's plan.
            let path = match cli.plan.clone() {
                Some(p) if p.is_dir() => p.join(PLAN_FILE),
                Some(p) => p,
                None => PathBuf::from(PLAN_FILE),
            };
            let want = init::Init {
                mode: *mode,
                topology: *topology,
                cni: *cni,
                clusters: *clusters,
                provider: *provider,
            };
            return init::run(&path, &want, *force);
        }
        _ => {}
    }
    let plan_file = find_plan(cli.plan.clone())?;
    let dir = match plan_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let cache_dir = dir.join("cache");
    crate::state::init(&dir.join(crate::state::DIR));
    match cli.command {
        Command::Completions { .. } | Command::Man | Command::Version | Command::Init { .. } => {
            unreachable!("handled above")
        }
        Command::Build {
            offline,
            jobs,
            keep_going,
            json,
            trace,
            out,
            yes,
            verify,
            rotate_root,
            watch,
        } => {
            // Paths it will write, checked before anything runs.
            if let Some(t) = &trace {
                check_file_target("--trace", t)?;
            }
            if let Some(o) = &out {
                check_dir_target("--out", o)?;
            }
            let target = if offline { Build::Offline } else { Build::Live };
            if watch {
                let out_dir = out.unwrap_or_else(|| dir.join("out"));
                let once = |l: &Loaded| {
                    if !offline {
                        preflight(&l.plan, &cache_dir)?;
                        removals::remove_orphans(l, &cache_dir, &dir, yes)?;
                    }
                    build(
                        l,
                        &cache_dir,
                        out_dir.clone(),
                        offline,
                        jobs,
                        keep_going,
                        verify,
                        false,
                        trace.clone(),
                    )
                };
                return watch::run(&plan_file, target, once);
            }
            let out_dir = out.unwrap_or_else(|| dir.join("out"));
            if offline
                && !verify
                && !rotate_root
                && let Some(report) = noop_build(&plan_file, &cache_dir, &out_dir)
            {
                rotation_notice();
                return finish(&report, json, trace);
            }
            let l = load(&plan_file, target)?;
            if !offline {
                preflight(&l.plan, &cache_dir)?;
                removals::remove_orphans(l, &cache_dir, &dir, yes)?;
            }
            if rotate_root {
                return rotate(&plan_file, &cache_dir, out_dir, offline, jobs, keep_going);
            }
            rotation_notice();
            build(
                l, &cache_dir, out_dir, offline, jobs, keep_going, verify, json, trace,
            )
        }
        Command::Plan { offline, all, json } => {
            plan_cmd(&plan_file, &cache_dir, offline, all, json)
        }
        Command::Why { task, json } => why(&plan_file, &cache_dir, &task, json),
        Command::Status {
            filter,
            offline,
            json,
        } => status(&plan_file, &cache_dir, filter.as_deref(), offline, json),
        Command::Graph { format, offline } => {
            let l = load(
                &plan_file,
                if offline { Build::Offline } else { Build::Live },
            )?;
            // The offline graph holds only the pure tasks.
            let text = match format {
                Format::Dot => l.graph.to_dot(&|_| None),
                Format::Mermaid => l.graph.to_mermaid(),
                Format::Json => {
                    let g = &l.graph;
                    let tasks: Vec<serde_json::Value> = g
                        .topo()
                        .iter()
                        .map(|&i| {
                            let n = g.node(i);
                            json!({"id": n.id, "kind": n.kind, "pure": n.pure, "deps": g.dep_ids(i)})
                        })
                        .collect();
                    print_json("graph", &json!({"tasks": tasks}));
                    return Ok(());
                }
            };
            print!("{text}");
            Ok(())
        }
        Command::Clean { gc } => clean(&dir, &cache_dir, gc),
        Command::Destroy {
            yes,
            dry_run,
            forget_identity,
        } => {
            let l = load(&plan_file, Build::Live)?;
            destroy(l, &cache_dir, yes, dry_run)?;
            if forget_identity {
                forget_identity_cmd(&cache_dir, yes, dry_run)?;
            }
            Ok(())
        }
        Command::Adopt { cluster } => {
            let l = load(&plan_file, Build::Live)?;
            adopt(l, &cache_dir, &cluster)
        }
        Command::Verify {
            json,
            wait,
            failover,
        } => verify(&plan_file, &cache_dir, json, wait, failover),
        Command::Open { what, port } => open::run(&plan_file, &cache_dir, what, port),
        Command::Doctor { json } => doctor_cmd(&plan_file, json),
    }
}

fn clean(dir: &Path, cache_dir: &Path, gc: bool) -> Result<(), Exit> {
    let err = |e: &dyn std::fmt::Display| fail(1, format!("error: {e}"));
    if gc {
        let Some(cache) = Cache::open_existing(cache_dir) else {
            eprintln!("mesh clean: no cache at {}", cache_dir.display());
            return Ok(());
        };
        let lock = cache.lock().map_err(|e| err(&e))?;
        let (n, bytes) = cache.gc(&lock).map_err(|e| err(&e))?;
        eprintln!("mesh clean --gc: removed {n} unreferenced blobs ({bytes} bytes)");
        return Ok(());
    }
    // Everything is deleted under the build lock, `out/` first and the lock
    // last, so no build can run in between (even when there was no cache
    // yet: the lock is made for the purpose).
    let had = Cache::open_existing(cache_dir).is_some();
    let cache = Cache::open(cache_dir).map_err(|e| err(&e))?;
    let lock = cache.lock().map_err(|e| err(&e))?;
    remove_out(dir)?;
    let cannot = |e: std::io::Error| err(&format!("cannot remove {}: {e}", cache_dir.display()));
    cache.remove_contents(&lock).map_err(cannot)?;
    lock.remove().map_err(cannot)?;
    if had {
        eprintln!(
            "mesh clean: removed {} and {}",
            cache_dir.display(),
            dir.join("out").display()
        );
    } else {
        eprintln!(
            "mesh clean: no cache at {}; removed {}",
            cache_dir.display(),
            dir.join("out").display()
        );
    }
    Ok(())
}

fn verify(
    plan_path: &Path,
    cache_dir: &Path,
    json: bool,
    wait: u64,
    failover: bool,
) -> Result<(), Exit> {
    let l = load(plan_path, Build::Live)?;
    let Some(cache) = Cache::open_existing(cache_dir) else {
        return Err(fail(
            1,
            "error: nothing was built yet: run mesh build first",
        ));
    };
    let wait = std::time::Duration::from_secs(wait);
    let progress = |r: &crate::verify::Report, waited: std::time::Duration| {
        eprintln!(
            "verify: not yet ({}); checking again, {}s of {}s",
            crate::verify::pending(r),
            waited.as_secs(),
            wait.as_secs()
        );
    };
    let rt = runtime()?;
    let mut report = rt
        .block_on(crate::verify::run(
            &l.plan, &l.graph, &cache, wait, progress,
        ))
        .map_err(|e| fail(1, format!("error: {e}")))?;
    if failover && !report.passed {
        eprintln!("verify: failover not tried: the mesh does not pass as it is");
    } else if failover {
        report.failover = rt
            .block_on(crate::verify::failover(
                &l.plan,
                &cache,
                wait,
                interrupted(),
            ))
            .map_err(|e| {
                let code = if e.starts_with("interrupted") { 130 } else { 1 };
                fail(code, format!("error: {e}"))
            })?;
        if report.failover.is_empty() {
            return Err(fail(
                1,
                "error: nothing to fail over: no app with a verify path has Deployments",
            ));
        }
        report.passed = report.failover.iter().all(|f| f.passed);
    }
    if json {
        print_json(
            "verify",
            &serde_json::to_value(&report).expect("report serializes"),
        );
    } else {
        print!("{}", crate::redact::text(&crate::verify::text(&report)));
    }
    if report.passed { Ok(()) } else { Err(Exit(1)) }
}

fn doctor_cmd(plan_path: &Path, json: bool) -> Result<(), Exit> {
    let display = plan_path.to_string_lossy().to_string();
    let plan = plan::load(plan_path, &display).map_err(|e| fail(2, e))?;
    let rt = runtime()?;
    let checks = rt.block_on(doctor::checks(&plan));
    if json {
        print_json("doctor", &json!({ "checks": checks }));
    } else {
        print!("{}", doctor_text(&checks));
    }
    if checks.iter().all(|c| c.ok) {
        Ok(())
    } else {
        Err(Exit(1))
    }
}

/// A runtime for a command's API calls. Clients made on an earlier one
/// are forgotten: their connections died with it.
fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    crate::k8s::forget_discovery();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(1, format!("error: cannot start the runtime: {e}")))
}

fn doctor_text(checks: &[doctor::Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{} {:<40} {}\n",
            if c.ok { "ok  " } else { "FAIL" },
            c.what,
            c.detail
        ));
        if let (false, Some(h)) = (c.ok, &c.hint) {
            s.push_str(&format!("     hint: {h}\n"));
        }
    }
    s
}

/// The doctor's checks, before a live build touches anything: first those
/// that start no process; then the tools' versions (asked once per binary)
/// and, when a kind cluster is about to be created, Docker's daemon and
/// memory.
fn preflight(plan: &Plan, cache_dir: &Path) -> Result<(), Exit> {
    let mut checks = doctor::preflight(plan);
    if checks.iter().all(|c| c.ok) {
        let cache = Cache::open_existing(cache_dir);
        migrate_inventory(plan, cache.as_ref())?;
        let creates_a_kind_cluster = plan.clusters.values().any(|c| {
            c.provider == crate::plan::Provider::Kind
                && !cache.as_ref().is_some_and(|k| {
                    matches!(
                        k.load(crate::kinds::cluster::id(&c.name).as_str()),
                        crate::cache::Load::Ok(_)
                    )
                })
        });
        let memo = Some(cache_dir.join("tool-versions.json"));
        let rt = runtime()?;
        checks = rt.block_on(async {
            let versions = doctor::versions(plan, memo.as_deref());
            if creates_a_kind_cluster {
                let (mut d, v, o) = futures_util::future::join3(
                    doctor::docker(doctor::kind_nodes(plan)),
                    versions,
                    ownership(plan),
                )
                .await;
                d.extend(v);
                d.extend(o);
                d
            } else {
                versions.await
            }
        });
    }
    if checks.iter().all(|c| c.ok) {
        return Ok(());
    }
    Err(fail(
        1,
        format!(
            "error: this machine cannot run a live build of {} yet (nothing was done):\n{}(`mesh build --offline` needs none of these)",
            plan.file,
            doctor_text(&checks.into_iter().filter(|c| !c.ok).collect::<Vec<_>>())
        ),
    ))
}

/// Undo every recorded live task, dependents first, then forget them.
fn destroy(l: &Loaded, cache_dir: &Path, yes: bool, dry_run: bool) -> Result<(), Exit> {
    let store = crate::state::get().expect("the state store is set");
    migrate_inventory(&l.plan, Cache::open_existing(cache_dir).as_ref())?;
    let owned = store
        .inventory()
        .map_err(|e| fail(1, format!("error: {e}")))?
        .kind_clusters();
    let undo = Cache::open_existing(cache_dir)
        .map(|c| exec::to_undo(&l.graph, &c))
        .unwrap_or_default();
    // Tasks that left the plan but not the clusters (those on kind clusters
    // mesh deletes anyway go with them).
    let (left, with_cluster): (Vec<removals::Leftover>, Vec<removals::Leftover>) =
        Cache::open_existing(cache_dir)
            .map(|c| removals::leftovers(l, &c, &[]))
            .unwrap_or_default()
            .into_iter()
            .partition(|t| !owned.contains(&t.cluster));
    // Installs on existing clusters that only the state still knows
    // (the cache was cleaned): undone from what the state recorded.
    let unrecorded = removals::unrecorded_installs(l, Cache::open_existing(cache_dir).as_ref());
    if undo.is_empty() && owned.is_empty() && left.is_empty() && unrecorded.is_empty() {
        eprintln!("mesh destroy: nothing recorded, nothing to destroy");
        return Ok(());
    }
    // What will go, before anything goes.
    let mut preview = String::from("mesh destroy will:\n");
    for t in &unrecorded {
        preview.push_str(&format!(
            "  undo {} in {} ({}, as the state recorded it)\n",
            t.id,
            t.cluster,
            t.what()
        ));
    }
    for t in &left {
        preview.push_str(&format!(
            "  remove {} from {} ({}; it left {})\n",
            t.id,
            t.cluster,
            t.what(),
            l.plan.file
        ));
    }
    for id in &undo {
        preview.push_str(&format!("  undo {id}\n"));
    }
    for name in &owned {
        preview.push_str(&format!("  delete kind cluster {name}\n"));
    }
    eprint!("{preview}");
    if dry_run {
        eprintln!("mesh destroy --dry-run: nothing was changed");
        return Ok(());
    }
    if !confirmed(
        yes,
        "Delete all of it?",
        "error: mesh destroy deletes the above: pass --yes to go ahead (not on a terminal, so it cannot ask; nothing was done)",
    )? {
        return Err(fail(1, "mesh destroy: nothing was done"));
    }
    let cache = Cache::open(cache_dir).map_err(|e| fail(1, format!("error: {e}")))?;
    let lock = cache.lock().map_err(|e| fail(1, format!("error: {e}")))?;
    let rt = runtime()?;
    removals::remove_leftovers(l, &cache, &lock, &rt, &left, "mesh destroy")?;
    for t in &unrecorded {
        let access = crate::verify::access(&l.plan, &cache, &t.cluster)
            .map_err(|e| fail(1, format!("error: undoing {}: {e}", t.id)))?;
        rt.block_on(t.receipt.undo(&access))
            .map_err(|e| fail(1, format!("error: destroy stopped: task {}: {e}", t.id)))?;
        removals::forget_install(&t.id)?;
        eprintln!(
            "mesh destroy: undone {} (from the state; the cache had no record)",
            t.id
        );
    }
    let cache = Arc::new(cache);
    // Each record goes as soon as its task is undone, so a destroy killed
    // midway never leaves a record claiming what no longer exists. A kind
    // cluster's goes just before: the inventory still owns the cluster, and
    // the next destroy deletes it from there.
    let forget_failed = std::cell::RefCell::new(None);
    let forget = |id: &str| {
        if let Err(e) = cache.remove(&lock, id) {
            forget_failed.borrow_mut().get_or_insert(e);
        }
    };
    let is_cluster = |id: &str| id.starts_with("cluster:");
    let (done, failed) = rt.block_on(exec::undo_all(
        &l.graph,
        &cache,
        |id| {
            if is_cluster(id) {
                forget(id)
            }
        },
        |id| {
            if !is_cluster(id) {
                forget(id)
            }
            eprintln!("mesh destroy: undone {id}")
        },
    ));
    if let Some(e) = forget_failed.into_inner() {
        return Err(fail(1, format!("error: {e}")));
    }
    if let Some((id, e)) = failed.first() {
        return Err(fail(
            1,
            format!(
                "error: destroy stopped: task {id}: {e}\n(undone and forgotten so far: {}; rerun mesh destroy to continue)",
                done.len()
            ),
        ));
    }
    // What the inventory still holds: clusters the plan or the cache no
    // longer names (removed from plan.toml, or recorded in a cache since
    // deleted).
    let left = store
        .inventory()
        .map_err(|e| fail(1, format!("error: {e}")))?
        .kind_clusters();
    for name in &left {
        rt.block_on(crate::kinds::cluster::delete_owned(name))
            .map_err(|e| {
                fail(
                    1,
                    format!("error: destroy stopped: kind cluster {name}: {e}"),
                )
            })?;
        eprintln!("mesh destroy: deleted kind cluster {name} (not in the plan or the cache)");
    }
    // Their clusters are gone: so are they.
    for t in &with_cluster {
        cache
            .remove(&lock, &t.id)
            .map_err(|e| fail(1, format!("error: {e}")))?;
    }
    eprintln!(
        "mesh destroy: {} live tasks undone and forgotten; {} kind cluster(s) deleted",
        done.len(),
        owned.len()
    );
    Ok(())
}

/// Go ahead? Yes with `--yes`; else ask `question` on a terminal (y/N);
/// off a terminal, fail with `refusal` (nothing can be asked).
fn confirmed(yes: bool, question: &str, refusal: &str) -> Result<bool, Exit> {
    if yes {
        return Ok(true);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(fail(1, refusal));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `mesh build --rotate-root`: start a rotation (a new root made with the
/// plan's `[pki]`, recorded in the state before anything changes) or
/// resume one, then build each remaining phase in turn, the phase recorded
/// before its build and advanced after it succeeds (a failed or killed
/// phase is built again by the next `--rotate-root`), then end it (the new
/// root becomes the identity) and run verify.
fn rotate(
    plan_path: &Path,
    cache_dir: &Path,
    out_dir: PathBuf,
    offline: bool,
    jobs: Option<u16>,
    keep_going: bool,
) -> Result<(), Exit> {
    let store = crate::state::get().expect("the state store is set");
    let err = |e: crate::state::StateError| fail(1, format!("error: {e}"));
    let l = load(plan_path, Build::Offline)?;
    if l.plan.pki.root.is_some() {
        return Err(fail(
            1,
            "error: --rotate-root rotates roots mesh makes; with [pki] root_cert and root_key, the root is yours",
        ));
    }
    let mut r = match store.rotation().map_err(err)? {
        Some(r) => {
            eprintln!(
                "mesh build --rotate-root: resuming at phase {} of 3",
                r.phase
            );
            r
        }
        None => {
            if store.identity().map_err(err)?.is_none() {
                return Err(fail(
                    1,
                    "error: there is no root CA to rotate yet: the first mesh build makes one",
                ));
            }
            let files =
                crate::kinds::pki::root(&l.plan.pki).map_err(|e| fail(1, format!("error: {e}")))?;
            let text = |n: &str| {
                files
                    .iter()
                    .find(|f| f.name == n)
                    .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                    .unwrap_or_default()
            };
            let r = crate::state::Rotation {
                phase: 1,
                params: serde_json::json!({"algorithm": l.plan.pki.algorithm, "root_days": l.plan.pki.root_days}),
                cert_pem: text("root-cert.pem"),
                key_pem: text("root-key.pem"),
            };
            store.save_rotation(&r).map_err(err)?;
            r
        }
    };
    const WHAT: [&str; 3] = [
        "every cluster trusts the old and the new root",
        "intermediates signed by the new root",
        "only the new root trusted",
    ];
    loop {
        eprintln!(
            "mesh build --rotate-root: phase {} of 3: {}",
            r.phase,
            WHAT[usize::from(r.phase.clamp(1, 3)) - 1]
        );
        // Planned again: the phase is an input of pki.root.
        let l = load(
            plan_path,
            if offline { Build::Offline } else { Build::Live },
        )?;
        build(
            l,
            cache_dir,
            out_dir.clone(),
            offline,
            jobs,
            keep_going,
            false,
            false,
            None,
        )?;
        if r.phase >= 3 {
            break;
        }
        r.phase += 1;
        store.save_rotation(&r).map_err(err)?;
    }
    store.finish_rotation(&r).map_err(err)?;
    eprintln!("mesh build --rotate-root: the new root is the mesh's identity");
    if offline {
        return Ok(());
    }
    verify(plan_path, cache_dir, false, 120, false)
}

/// `mesh destroy --forget-identity`, once everything else is gone: delete
/// the root CA, asking first on a terminal (`--yes` answers).
fn forget_identity_cmd(cache_dir: &Path, yes: bool, dry_run: bool) -> Result<(), Exit> {
    let store = crate::state::get().expect("the state store is set");
    let err = |e: crate::state::StateError| fail(1, format!("error: {e}"));
    let dir = store.dir().join("identity");
    if store.identity().map_err(err)?.is_none() {
        eprintln!("mesh destroy: no identity to forget in {}", dir.display());
        return Ok(());
    }
    eprintln!(
        "mesh destroy will also delete the mesh's identity: its root CA in {} \
         (a new build mints a new root; nothing can bring this one back)",
        dir.display()
    );
    if dry_run {
        eprintln!("mesh destroy --dry-run: the identity was kept");
        return Ok(());
    }
    if !confirmed(
        yes,
        "Delete the root CA?",
        "error: pass --yes with --forget-identity to delete the root CA (not on a terminal, so it cannot ask; the identity was kept)",
    )? {
        eprintln!("mesh destroy: the identity was kept");
        return Ok(());
    }
    // pki.root's record goes first: the next build mints a new root
    // instead of trusting outputs made from the one being forgotten.
    if let Some(cache) = Cache::open_existing(cache_dir) {
        let lock = cache.lock().map_err(|e| fail(1, format!("error: {e}")))?;
        let id = crate::kinds::pki::root_id();
        cache
            .remove(&lock, id.as_str())
            .map_err(|e| fail(1, format!("error: {e}")))?;
    }
    store.forget_identity().map_err(err)?;
    eprintln!(
        "mesh destroy: forgot the mesh's identity (deleted {})",
        dir.display()
    );
    Ok(())
}

/// A mesh from before the state store: the kind clusters its cache
/// recorded are its own.
fn migrate_inventory(plan: &Plan, cache: Option<&Cache>) -> Result<(), Exit> {
    let Some(cache) = cache else { return Ok(()) };
    let store = crate::state::get().expect("the state store is set");
    let inv = store
        .inventory()
        .map_err(|e| fail(1, format!("error: {e}")))?;
    for c in plan
        .clusters
        .values()
        .filter(|c| c.provider == crate::plan::Provider::Kind)
    {
        let recorded = matches!(
            cache.load(crate::kinds::cluster::id(&c.name).as_str()),
            crate::cache::Load::Ok(_)
        );
        if recorded && inv.phase(crate::state::KIND_CLUSTER, &c.name).is_none() {
            store
                .set(
                    crate::state::KIND_CLUSTER,
                    &c.name,
                    crate::state::Phase::Created,
                )
                .map_err(|e| fail(1, format!("error: {e}")))?;
        }
    }
    Ok(())
}

/// The plan's kind clusters that exist but that mesh does not own: the
/// build must not start (it would delete them or install into them).
async fn ownership(plan: &Plan) -> Vec<doctor::Check> {
    let inv = match crate::state::get()
        .expect("the state store is set")
        .inventory()
    {
        Ok(inv) => inv,
        Err(e) => {
            return vec![doctor::Check {
                what: "state inventory".into(),
                ok: false,
                detail: e.to_string(),
                hint: Some("restore it from a backup, or move it aside to start over (mesh then owns nothing)".into()),
            }];
        }
    };
    let listed = match crate::providers::kind::clusters().await {
        Ok(l) => l,
        Err(e) => {
            return vec![doctor::Check {
                what: "kind get clusters".into(),
                ok: false,
                detail: e.to_string(),
                hint: None,
            }];
        }
    };
    plan.clusters
        .values()
        .filter(|c| c.provider == crate::plan::Provider::Kind)
        .filter(|c| listed.contains(&c.name))
        .filter(|c| inv.phase(crate::state::KIND_CLUSTER, &c.name).is_none())
        .map(|c| doctor::Check {
            what: format!("kind cluster {}", c.name),
            ok: false,
            detail: "exists, and mesh did not create it".into(),
            hint: Some(format!(
                "remove it (kind delete cluster --name {0}) or give it to mesh (mesh adopt {0}: the next build recreates it from the plan)",
                c.name
            )),
        })
        .collect()
}

/// `mesh adopt <cluster>`: record a kind cluster mesh did not create as
/// owned, under the build lock.
fn adopt(l: &Loaded, cache_dir: &Path, name: &str) -> Result<(), Exit> {
    let Some(c) = l.plan.clusters.get(name) else {
        return Err(fail(
            2,
            format!("error: {} has no cluster {name:?}", l.plan.file),
        ));
    };
    if c.provider != crate::plan::Provider::Kind {
        return Err(fail(
            2,
            format!(
                "error: cluster {name} is not a kind cluster: mesh never creates or deletes it, so there is nothing to adopt"
            ),
        ));
    }
    let cache = Cache::open(cache_dir).map_err(|e| fail(1, format!("error: {e}")))?;
    let _lock = cache.lock().map_err(|e| fail(1, format!("error: {e}")))?;
    let listed = runtime()?
        .block_on(crate::providers::kind::clusters())
        .map_err(|e| fail(1, format!("error: kind: {e}")))?;
    if !listed.iter().any(|x| x == name) {
        return Err(fail(
            1,
            format!(
                "error: kind lists no cluster {name}: there is nothing to adopt (mesh build creates it)"
            ),
        ));
    }
    let store = crate::state::get().expect("the state store is set");
    store
        .set(
            crate::state::KIND_CLUSTER,
            name,
            crate::state::Phase::Adopted,
        )
        .map_err(|e| fail(1, format!("error: {e}")))?;
    eprintln!(
        "mesh adopt: mesh now owns kind cluster {name}; the next mesh build recreates it from {}",
        l.plan.file
    );
    Ok(())
}

fn remove_out(dir: &Path) -> Result<(), Exit> {
    let out = dir.join("out");
    cache::remove_dir(&out)
        .map_err(|e| fail(1, format!("error: cannot remove {}: {e}", out.display())))?;
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Say so when a root rotation is in progress (a build does not finish
/// it).
fn rotation_notice() {
    if let Ok(Some(r)) = crate::state::get()
        .expect("the state store is set")
        .rotation()
    {
        eprintln!(
            "mesh build: a root rotation is in progress (phase {} of 3); `mesh build --rotate-root` finishes it",
            r.phase
        );
    }
}

/// An offline no-op answered from `cache/noop` (`exec::noop`), without
/// reading the plan; `None`: build the long way (which also says why a
/// locked or broken cache fails).
fn noop_build(plan_file: &Path, cache_dir: &Path, out_dir: &Path) -> Option<exec::BuildReport> {
    let cache = Cache::open_existing(cache_dir)?;
    let lock = cache.lock().ok()?;
    let fp = exec::noop::fingerprint(plan_file, out_dir);
    let checked = events::phase(NOOP, || {
        exec::noop::check(&cache, &lock, &fp, crate::events::start())
    });
    match checked {
        Ok(report) => {
            verbose("nothing changed since the last clean build: every task is up to date");
            Some(report)
        }
        Err(why) => {
            verbose(&format!("the long way: {why}"));
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    l: &Loaded,
    cache_dir: &Path,
    out_dir: PathBuf,
    offline: bool,
    jobs: Option<u16>,
    keep_going: bool,
    verify: bool,
    json: bool,
    trace: Option<PathBuf>,
) -> Result<(), Exit> {
    let cache = Cache::open(cache_dir).map_err(|e| fail(1, format!("error: {e}")))?;
    let lock = cache.lock().map_err(|e| fail(1, format!("error: {e}")))?;
    // What the last clean build vouched for may change from here on.
    exec::noop::forget(&cache, &lock);
    let cache = Arc::new(cache);
    let lock = Arc::new(lock);
    let sel = selection(&l.graph, offline);
    // Pure tasks are CPU work: one per CPU. Live tasks mostly wait on tools
    // and API servers: enough slots for every cluster's chain to progress.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let default_jobs = if offline {
        cpus
    } else {
        (4 * l.plan.clusters.len()).clamp(cpus, 64)
    };
    let jobs = jobs.map_or(default_jobs, |j| j as usize);
    let progress = Arc::new(ui::Progress::new(sel.iter().filter(|s| **s).count()));
    // A fresh runtime: what an earlier build discovered, listed and
    // connected is forgotten.
    let rt = runtime()?;
    let report = events::phase(RUN, || {
        rt.block_on(exec::execute(
            l.graph.clone(),
            Some(sel),
            cache.clone(),
            lock.clone(),
            exec::Options {
                jobs,
                keep_going,
                out_dir: Some(out_dir.clone()),
                epoch: Some(crate::events::start()),
                verify,
            },
            progress.clone(),
            interrupted(),
        ))
    });
    progress.finish();
    verbose("");
    if report.count(Status::Ran) > 0 && report.ok() {
        // Bound the store: drop blobs that no record references any more.
        let _ = cache.gc(&lock);
    }
    if offline && !report.interrupted {
        events::phase(SAVE, || {
            let fp = exec::noop::fingerprint(&l.plan_file, &out_dir);
            exec::noop::save(&cache, &lock, &fp, &l.seen, &report, &out_dir)
        });
        verbose("");
    }
    let done = finish(&report, json, trace);
    // Do not wait for abandoned blocking work after an interrupt, but do let
    // tools told to stop finish stopping (helm records its release failed).
    rt.shutdown_background();
    crate::providers::wait_for_stopping();
    done
}

/// Print a build's summary (and with `--trace`, `--json`, its trace and
/// report), and end as it did.
fn finish(report: &exec::BuildReport, json: bool, trace: Option<PathBuf>) -> Result<(), Exit> {
    eprint!("{}", ui::paint(&crate::redact::text(&ui::summary(report))));
    if let Some(path) = trace {
        let mut trace = ui::trace(report, &events::phases(), events::start());
        crate::redact::json(&mut trace);
        let text = serde_json::to_string(&trace).expect("trace serializes");
        cache::write_file(&path, text.as_bytes(), 0o644).map_err(|e| {
            fail(
                1,
                format!("error: cannot write trace {}: {e}", path.display()),
            )
        })?;
    }
    if json {
        print_json("build", &ui::json(report));
    }
    if report.interrupted {
        return Err(Exit(130));
    }
    if report.ok() { Ok(()) } else { Err(Exit(1)) }
}
