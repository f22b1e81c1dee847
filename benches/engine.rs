//! The performance harness (`cargo bench --bench engine`).
//!
//! Measures, reporting medians from one run (these machines are shared and
//! noisy: compare the ratios printed side by side, not absolute numbers
//! across runs):
//!
//! 1. a no-op `mesh build --offline` of the default plan, wall time of the
//!    whole process;
//! 2. generated plans at scale: 100 clusters multi-primary (≈11k tasks, of
//!    which 9,900 remote secrets) and 1,000 clusters primary-remote: first
//!    offline build, no-op offline build, `mesh plan` of the whole graph, and
//!    the peak RSS of each (from `wait4`'s rusage);
//! 3. executor overhead per task on synthetic no-op tasks, in process: a
//!    random DAG of 10,000 tasks whose actions return at once, built once
//!    (records written) and then again (all cached);
//! 4. quadratic plans (issue 13): 1,000 clusters in multi-primary (a
//!    million remote secrets) side by side with the 1,000-cluster
//!    primary-remote plan of the same pure tasks, runs alternating: the
//!    offline no-op the long way (the plan touched, so that it is read and
//!    planned) and `mesh plan` of the whole graph, wall time and peak
//!    RSS, with their ratios and the whole graph's cost per task.
//!
//! 5. mesh against Ninja (issue 12): for the default plan, 100 clusters
//!    multi-primary and 1,000 clusters primary-remote, a `build.ninja` with
//!    the same nodes and edges as the offline graph (`mesh graph --offline
//!    --format json`; one output file per node, each made by `touch`), and
//!    the no-op of each, runs alternating: `mesh build --offline` against
//!    `ninja`, the ratio, and mesh's cost per pure task; then the same
//!    no-op the long way (the plan touched, its bytes unchanged: the fast
//!    path of `exec::noop` declines, so the plan is read and every key
//!    computed), and the peak RSS of both. Ninja comes from
//!    PyPI (`pip install --target`, pinned), installed by the bench; where
//!    it cannot be, the section says "skipped: <reason>".
//!
//! `MESH_BENCH_QUICK=1` shrinks the repetitions for a smoke run;
//! `MESH_BENCH_ONLY=5` runs only the numbered section.

use mesh::cache::Cache;
use mesh::exec::{self, Options, Quiet, Status};
use mesh::graph::{Action, BoxFuture, Ctx, GraphBuilder, Node, OutFile, TaskError};
use mesh::hash::Digest;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A generated plan: `n` kind clusters, helloworld (v1/v2 alternating) and
/// curl on every cluster. Primary-remote: the first cluster is the primary.
pub fn generate_plan(n: usize, primary_remote: bool) -> String {
    let mut s = String::new();
    let topology = if primary_remote {
        "primary-remote"
    } else {
        "multi-primary"
    };
    writeln!(s, "[mesh]\nid = \"bench\"\nistio = \"1.28.0\"\nmode = \"sidecar\"\ntopology = \"{topology}\"\nlb_size = 8\n").unwrap();
    let name = |i: usize| format!("c{i:04}");
    for i in 0..n {
        writeln!(
            s,
            "[clusters.{}]\nnetwork = \"net{i}\"\npod_subnet = \"10.{}.{}.0/24\"\nservice_subnet = \"100.{}.{}.0/24\"\n{}",
            name(i),
            i / 256,
            i % 256,
            64 + i / 256,
            i % 256,
            if primary_remote && i > 0 { "role = \"remote\"\n" } else { "" }
        )
        .unwrap();
    }
    let placement = |f: &dyn Fn(usize) -> &'static str| -> String {
        (0..n)
            .map(|i| format!("{} = \"{}\"", name(i), f(i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        s,
        "[apps.helloworld]\nmanifest = \"tasks/apps/helloworld.yaml\"\nnamespace = \"sample\"\nplacement = {{ {} }}\n",
        placement(&|i| if i % 2 == 0 { "v1" } else { "v2" })
    )
    .unwrap();
    writeln!(
        s,
        "[apps.curl]\nmanifest = \"tasks/apps/curl.yaml\"\nnamespace = \"sample\"\nplacement = {{ {} }}",
        placement(&|_| "*")
    )
    .unwrap();
    s
}

/// Run the mesh binary; wall time and peak RSS in KiB.
// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_mesh(dir: &Path, args: &[&str]) -> (Duration, i64, String) {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mesh");
    let pid = child.id() as libc::pid_t;
    let mut stdout = String::new();
    {
        use std::io::Read;
        let mut out = child.stdout.expect("piped");
        out.read_to_string(&mut stdout).expect("read stdout");
    }
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child; usage is a valid out-pointer.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(r, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "mesh {args:?} failed in {}",
        dir.display()
    );
    (wall, usage.ru_maxrss, stdout)
}

fn tasks_in_graph(dir: &Path) -> usize {
    let (_, _, out) = run_mesh(dir, &["plan", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("plan --json");
    v["tasks"].as_array().expect("tasks").len()
}

fn scale(label: &str, plan: &str, reps: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("plan.toml"), plan).expect("write plan");
    let total = tasks_in_graph(dir.path());
    // Each first build in a fresh directory, all kept until the end: ext4
    // slows inode allocation right after a mass delete (measured: 3 s → 9 s
    // for the 1,000-cluster bundle), which would measure the filesystem.
    let mut first = Vec::new();
    let mut first_rss = 0;
    let mut keep = Vec::new();
    for _ in 0..reps.clamp(1, 3) {
        let fresh = tempfile::tempdir().expect("tempdir");
        std::fs::write(fresh.path().join("plan.toml"), plan).expect("write plan");
        let (w, rss, _) = run_mesh(fresh.path(), &["build", "--offline"]);
        first.push(w);
        first_rss = first_rss.max(rss);
        keep.push(fresh);
    }
    run_mesh(dir.path(), &["build", "--offline"]);
    let mut noop = Vec::new();
    let mut noop_rss = 0;
    for _ in 0..reps {
        let (w, rss, _) = run_mesh(dir.path(), &["build", "--offline", "--json"]);
        noop.push(w);
        noop_rss = noop_rss.max(rss);
    }
    let (_, _, json) = run_mesh(dir.path(), &["build", "--offline", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let pure = v["tasks"].as_array().expect("tasks").len();
    let cached = v["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["status"] == "cached")
        .count();
    assert_eq!(cached, pure, "no-op build must be all cached");
    let mut planned = Vec::new();
    let mut plan_rss = 0;
    for _ in 0..reps.min(5) {
        let (w, rss, _) = run_mesh(dir.path(), &["plan"]);
        planned.push(w);
        plan_rss = plan_rss.max(rss);
    }
    println!("{label}: {total} tasks in the graph, {pure} pure (offline)");
    println!(
        "  first build --offline   {:>12}   peak RSS {:>6.1} MB",
        ms(median(first)),
        first_rss as f64 / 1024.0
    );
    println!(
        "  no-op build --offline   {:>12}   peak RSS {:>6.1} MB",
        ms(median(noop)),
        noop_rss as f64 / 1024.0
    );
    println!(
        "  plan (whole graph)      {:>12}   peak RSS {:>6.1} MB",
        ms(median(planned)),
        plan_rss as f64 / 1024.0
    );
}

struct NoOp;
impl Action for NoOp {
    fn run(&self, _ctx: Ctx) -> BoxFuture<Result<Vec<OutFile>, TaskError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn overhead(n: usize, reps: usize) {
    // A layered random DAG: each task depends on up to 3 of the previous 50.
    let build_graph = || {
        let mut b = GraphBuilder::new();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for i in 0..n {
            let mut inputs = BTreeMap::new();
            inputs.insert("v".to_string(), Digest::of_bytes(&(i as u64).to_le_bytes()));
            b.add(Node {
                id: format!("t{i}"),
                kind: "noop",
                pure: true,
                inputs: inputs.into(),
                action: Arc::new(NoOp),
            })
            .expect("unique");
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i > 0 {
                    let back = 1 + (x as usize % 50).min(i - 1);
                    b.edge(format!("t{}", i - back), format!("t{i}"));
                }
            }
        }
        Arc::new(b.seal().expect("acyclic"))
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut first = Vec::new();
    let mut noop = Vec::new();
    for _ in 0..reps.clamp(1, 3) {
        let dir = tempfile::tempdir().expect("tempdir");
        let graph = build_graph();
        let cache = Arc::new(Cache::open(&dir.path().join("cache")).expect("cache"));
        let lock = Arc::new(cache.lock().expect("lock"));
        let go = |graph| {
            rt.block_on(exec::execute(
                graph,
                None,
                cache.clone(),
                lock.clone(),
                Options {
                    jobs,
                    keep_going: false,
                    out_dir: None,
                    epoch: None,
                    verify: false,
                },
                Arc::new(Quiet),
                std::future::pending(),
            ))
        };
        let r = go(graph.clone());
        assert_eq!(r.count(Status::Ran), n);
        first.push(Duration::from_micros(r.wall_us));
        let r = go(graph);
        assert_eq!(r.count(Status::Cached), n);
        noop.push(Duration::from_micros(r.wall_us));
    }
    let per = |d: Duration| format!("{:.1} µs/task", d.as_secs_f64() * 1e6 / n as f64);
    println!("executor, {n} synthetic no-op tasks, -j {jobs}:");
    println!(
        "  first run (records written)         {:>12}  {}",
        ms(median(first.clone())),
        per(median(first))
    );
    println!(
        "  no-op run (all cached)              {:>12}  {}",
        ms(median(noop.clone())),
        per(median(noop))
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not run us
    // with it and only wants a smoke check.
    let quick =
        std::env::var_os("MESH_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench");
    let reps = if quick { 2 } else { 15 };

    let only = std::env::var("MESH_BENCH_ONLY").ok();
    let section = |n: &str| only.as_deref().is_none_or(|o| o == n);
    if section("1") {
        default_noop(reps);
    }
    if section("2") {
        let (mp, pr) = if quick { (20, 100) } else { (100, 1000) };
        scale(
            &format!("{mp} clusters multi-primary"),
            &generate_plan(mp, false),
            reps.min(7),
        );
        scale(
            &format!("{pr} clusters primary-remote"),
            &generate_plan(pr, true),
            reps.min(7),
        );
    }
    if section("3") {
        overhead(if quick { 1000 } else { 10_000 }, reps.min(5));
    }
    if section("4") {
        quadratic(if quick { 60 } else { 1000 }, reps.min(7));
    }
    if section("5") {
        against_ninja(quick, if quick { 3 } else { 11 });
    }
}

/// 1. The default plan's no-op.
fn default_noop(reps: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/plan.toml"),
        dir.path().join("plan.toml"),
    )
    .expect("plan");
    run_mesh(dir.path(), &["build", "--offline"]);
    let mut noop = Vec::new();
    let mut rss = 0;
    for _ in 0..reps * 2 {
        let (w, r, _) = run_mesh(dir.path(), &["build", "--offline"]);
        noop.push(w);
        rss = rss.max(r);
    }
    println!(
        "default plan: no-op build --offline   {:>10}   peak RSS {:.1} MB   (goal ≤ 10 ms)",
        ms(median(noop)),
        rss as f64 / 1024.0
    );
}

/// The Ninja the bench compares with, pinned.
const NINJA: &str = "ninja==1.13.2";

/// Ninja from PyPI, installed under the target directory once.
fn ninja() -> Result<std::path::PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tools/ninja");
    let bin = root.join("bin/ninja");
    if bin.is_file() {
        return Ok(bin);
    }
    let o = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&root)
        .arg(NINJA)
        .output()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if !o.status.success() || !bin.is_file() {
        return Err(format!(
            "pip install {NINJA} failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(bin)
}

/// A build.ninja with the nodes and edges of `dir`'s offline graph: node
/// `i` is the file `o/<i>`, made by `touch` after its dependencies' files.
fn ninja_file(dir: &Path) -> (String, usize) {
    let (_, _, out) = run_mesh(dir, &["graph", "--offline", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("graph --format json");
    let tasks = v["tasks"].as_array().expect("tasks");
    let index: std::collections::HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t["id"].as_str().expect("id"), i))
        .collect();
    let mut s = String::from("rule touch\n  command = touch $out\n\n");
    for (i, t) in tasks.iter().enumerate() {
        write!(s, "build o/{i}: touch").unwrap();
        let deps = t["deps"].as_array().expect("deps");
        if !deps.is_empty() {
            s.push_str(" |");
            for d in deps {
                write!(s, " o/{}", index[d.as_str().expect("dep id")]).unwrap();
            }
        }
        s.push('\n');
    }
    (s, tasks.len())
}

/// Wall time of one process, which must succeed.
fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let st = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn");
    let wall = start.elapsed();
    assert!(st.success(), "{cmd:?} failed");
    wall
}

/// 5. mesh's no-op against Ninja's on the same graph.
fn against_ninja(quick: bool, reps: usize) {
    let ninja = match ninja() {
        Ok(n) => n,
        Err(why) => {
            println!("mesh against ninja: skipped: {why}");
            return;
        }
    };
    let default = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plan.toml"))
        .expect("plan.toml");
    let (mp, pr) = if quick { (20, 100) } else { (100, 1000) };
    let plans = [
        ("default plan".to_string(), default),
        (
            format!("{mp} clusters, multi-primary"),
            generate_plan(mp, false),
        ),
        (
            format!("{pr} clusters, primary-remote"),
            generate_plan(pr, true),
        ),
    ];
    let mut points = Vec::new();
    println!("no-op against ninja (medians of {reps}, runs alternating):");
    println!(
        "  {:<32} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10} {:>12} {:>14}",
        "plan",
        "pure tasks",
        "mesh",
        "ninja",
        "mesh/ninja",
        "µs/task",
        "long way",
        "long/ninja",
        "peak RSS (MB)"
    );
    for (label, plan) in plans {
        let mesh_dir = tempfile::tempdir().expect("tempdir");
        let plan_file = mesh_dir.path().join("plan.toml");
        std::fs::write(&plan_file, plan).expect("plan");
        run_mesh(mesh_dir.path(), &["build", "--offline"]);
        // The first no-op may find cache/noop racy (written in the tick of
        // the build's last files) and write it again.
        run_mesh(mesh_dir.path(), &["build", "--offline"]);
        let ninja_dir = tempfile::tempdir().expect("tempdir");
        let (file, tasks) = ninja_file(mesh_dir.path());
        std::fs::write(ninja_dir.path().join("build.ninja"), file).expect("build.ninja");
        timed(Command::new(&ninja).arg("-C").arg(ninja_dir.path()));
        let (mut m, mut n, mut long) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rss, mut long_rss) = (0, 0);
        for _ in 0..reps {
            let (w, r, _) = run_mesh(mesh_dir.path(), &["build", "--offline"]);
            m.push(w);
            rss = rss.max(r);
            n.push(timed(Command::new(&ninja).arg("-C").arg(ninja_dir.path())));
            // The long way: the plan touched (its bytes unchanged), so the
            // fast path declines, the plan is read and planned, every key
            // computed and every record read; still nothing runs.
            touch(&plan_file);
            let (w, r, _) = run_mesh(mesh_dir.path(), &["build", "--offline"]);
            long.push(w);
            long_rss = long_rss.max(r);
        }
        let (m, n, long) = (median(m), median(n), median(long));
        points.push((tasks as f64, m.as_secs_f64() * 1e3, n.as_secs_f64() * 1e3));
        println!(
            "  {label:<32} {tasks:>10} {:>10} {:>10} {:>12.2} {:>10.2} {:>10} {:>12.2} {:>14}",
            ms(m),
            ms(n),
            m.as_secs_f64() / n.as_secs_f64(),
            m.as_secs_f64() * 1e6 / tasks as f64,
            ms(long),
            long.as_secs_f64() / n.as_secs_f64(),
            format!(
                "{:.1} / {:.1}",
                rss as f64 / 1024.0,
                long_rss as f64 / 1024.0
            )
        );
    }
    let (ma, mb) = line(points.iter().map(|p| (p.0, p.1)));
    let (na, nb) = line(points.iter().map(|p| (p.0, p.2)));
    println!(
        "  growth, least squares over the three: mesh {ma:.2} ms + {:.2} µs/task, ninja {na:.2} ms + {:.2} µs/task",
        mb * 1e3,
        nb * 1e3
    );
}

/// Set `path`'s mtime to now, its bytes unchanged: the next build goes
/// the long way (the no-op fast path, `exec::noop`, declines), plans the
/// whole graph and checks every task, and still runs nothing.
fn touch(path: &Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .expect("touch");
}

/// The least-squares line `a + b·x` through the points.
fn line(points: impl Iterator<Item = (f64, f64)>) -> (f64, f64) {
    let p: Vec<(f64, f64)> = points.collect();
    let n = p.len() as f64;
    let (sx, sy) = p.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = p.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = p.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    (my - b * mx, b)
}

/// The task count of a plan's whole graph, from `mesh plan`'s first line
/// (`mesh plan: N tasks: ...`).
fn plan_tasks(out: &str) -> usize {
    out.split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no task count in {:?}", out.lines().next()))
}

fn quadratic(n: usize, reps: usize) {
    let dirs: Vec<(&str, tempfile::TempDir)> = [("multi-primary", false), ("primary-remote", true)]
        .into_iter()
        .map(|(label, pr)| {
            let d = tempfile::tempdir().expect("tempdir");
            std::fs::write(d.path().join("plan.toml"), generate_plan(n, pr)).expect("plan");
            run_mesh(d.path(), &["build", "--offline"]);
            (label, d)
        })
        .collect();
    let mut noop = vec![Vec::new(); 2];
    let mut noop_rss = [0; 2];
    let mut plan = vec![Vec::new(); 2];
    let mut plan_rss = [0; 2];
    let mut tasks = [0; 2];
    for _ in 0..reps {
        for (k, (_, d)) in dirs.iter().enumerate() {
            // The long way, which plans: what this section compares.
            touch(&d.path().join("plan.toml"));
            let (w, rss, _) = run_mesh(d.path(), &["build", "--offline"]);
            noop[k].push(w);
            noop_rss[k] = noop_rss[k].max(rss);
        }
    }
    for _ in 0..reps.clamp(1, 3) {
        for (k, (_, d)) in dirs.iter().enumerate() {
            let (w, rss, out) = run_mesh(d.path(), &["plan"]);
            plan[k].push(w);
            plan_rss[k] = plan_rss[k].max(rss);
            tasks[k] = plan_tasks(&out);
        }
    }
    let noop: Vec<Duration> = noop.into_iter().map(median).collect();
    let plan: Vec<Duration> = plan.into_iter().map(median).collect();
    let mb = |kb: i64| kb as f64 / 1024.0;
    println!("{n} clusters, quadratic against linear (runs alternating):");
    println!(
        "  {:<30} {:>14} {:>14} {:>8}",
        "", dirs[0].0, dirs[1].0, "ratio"
    );
    let row = |what: &str, a: f64, b: f64, unit: &str| {
        println!(
            "  {what:<30} {:>11.1} {unit} {:>11.1} {unit} {:>8.2}",
            a,
            b,
            a / b
        );
    };
    let msf = |d: Duration| d.as_secs_f64() * 1e3;
    row("no-op build --offline", msf(noop[0]), msf(noop[1]), "ms");
    row("  peak RSS", mb(noop_rss[0]), mb(noop_rss[1]), "MB");
    row("plan (whole graph)", msf(plan[0]), msf(plan[1]), "ms");
    row("  peak RSS", mb(plan_rss[0]), mb(plan_rss[1]), "MB");
    println!(
        "  whole graph: {} and {} tasks; {:.2} µs and {:.0} B per task for {} (goal ≤ 5 µs, ≤ 500 B)",
        tasks[0],
        tasks[1],
        plan[0].as_secs_f64() * 1e6 / tasks[0] as f64,
        plan_rss[0] as f64 * 1024.0 / tasks[0] as f64,
        dirs[0].0
    );
}
