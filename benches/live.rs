//! Live bring-up benchmark (`cargo bench --bench live`): the real `mesh`
//! binary against the test suite's fake world (fake kind/helm/docker and fake
//! API servers on 127.0.0.1), with tool steps that take the seeds' times
//! scaled down 100×: kind create 20 s, CNI 30 s, istiod 40 s, gateway 20 s,
//! app 10 s → 0.2, 0.3, 0.4, 0.2, 0.1 s.
//!
//! For 2, 8 and 32 clusters (multi-primary, helloworld + curl everywhere),
//! from one run:
//! - wall / critical path of the parallel build (mesh's own critical path);
//! - wall / the same steps one after another (`-j 1`, a fresh world);
//! - the no-op live rerun (probes only), median of 5, with its API requests
//!   and the TLS connections they took per cluster;
//! - after editing one app: rerun wall minus that app task's own time;
//! - what the real world's hazards cost: the 2-cluster bring-up in a calm
//!   fake world (watches that never end, no bookmarks), in the default one
//!   (watches ended every 3 s, then compacted: 410 Gone; bookmarks), and in
//!   the default one with one API call in 5 failing (429/503/webhook
//!   timeout), each in a fresh world.
//!
//! `MESH_BENCH_QUICK=1` (and `cargo test --benches`) runs 2 clusters only;
//! `MESH_BENCH_N=8` runs that size only. `MESH_BENCH_PROFILE=<dir>` also
//! writes there one no-op's `-v` log (`noop-<n>.log`) and trace
//! (`trace-<n>.json`), and the edit-one-app run's trace (`edit-<n>.json`).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fake/mod.rs"]
mod fake;

use fake::{World, mesh};
use std::time::{Duration, Instant};

fn plan(n: usize) -> String {
    let mut s = String::from(
        "[mesh]\nid = \"bench\"\nistio = \"1.28.0\"\nmode = \"sidecar\"\ntopology = \"multi-primary\"\n\n",
    );
    let name = |i: usize| format!("c{i}");
    for i in 0..n {
        s.push_str(&format!(
            "[clusters.{}]\nnetwork = \"net{i}\"\npod_subnet = \"10.{}.0.0/16\"\nservice_subnet = \"100.{}.0.0/16\"\n\n",
            name(i),
            20 + i,
            64 + i
        ));
    }
    let placement = |f: &dyn Fn(usize) -> &'static str| {
        (0..n)
            .map(|i| format!("{} = \"{}\"", name(i), f(i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    s.push_str(&format!(
        "[apps.helloworld]\nmanifest = \"tasks/apps/helloworld.yaml\"\nnamespace = \"sample\"\nplacement = {{ {} }}\nverify = \"/hello\"\n\n",
        placement(&|i| if i % 2 == 0 { "v1" } else { "v2" })
    ));
    s.push_str(&format!("[apps.curl]\nmanifest = \"tasks/apps/curl.yaml\"\nnamespace = \"sample\"\nplacement = {{ {} }}\n", placement(&|_| "*")));
    s
}

fn world(n: usize) -> World {
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let w = World::new(&refs);
    w.configure(serde_json::json!({
        "delay": {
            "kind create": 0.2,
            "helm upgrade cilium": 0.3,
            "helm upgrade istiod": 0.4,
            "helm upgrade istio-eastwestgateway": 0.2,
        },
        // As much as the pre-flight asks for n kind nodes.
        "docker_memory": (2u64 << 30) * n as u64 + (8u64 << 30),
    }));
    for a in w.apis.values() {
        a.knobs
            .ready_delay_in
            .lock()
            .unwrap()
            .insert("sample".into(), Duration::from_millis(100));
    }
    w
}

/// CPU seconds used by finished child processes (mesh and its tools).
fn children_cpu() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn timed(w: &World, dir: &std::path::Path, args: &[&str]) -> (Duration, serde_json::Value) {
    let t = Instant::now();
    let o = mesh(w, dir, args);
    let wall = t.elapsed();
    assert_eq!(o.code, 0, "mesh {args:?} failed:\n{}", o.stderr);
    (wall, o.json())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(n: usize) {
    let text = plan(n);
    // Parallel.
    let w = world(n);
    let p = fake::project(&text);
    let cpu0 = children_cpu();
    let (wall, doc) = timed(&w, p.path(), &["build", "--json"]);
    let cpu = children_cpu() - cpu0;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cp = doc["critical_path_ms"].as_f64().unwrap();
    let tasks = doc["tasks"].as_array().unwrap().len();
    // Sequential: the same steps one after another, in a fresh world.
    let ws = world(n);
    let ps = fake::project(&text);
    let (seq, _) = timed(&ws, ps.path(), &["build", "-j", "1", "--json"]);
    // No-op live rerun: probes only.
    let noop: Vec<Duration> = (0..5)
        .map(|_| timed(&w, p.path(), &["build", "--json"]).0)
        .collect();
    if let Ok(dir) = std::env::var("MESH_BENCH_PROFILE") {
        let o = mesh(
            &w,
            p.path(),
            &["-v", "build", "--trace", &format!("{dir}/trace-{n}.json")],
        );
        std::fs::write(format!("{dir}/noop-{n}.log"), &o.stderr).unwrap();
    }
    // What one more no-op asks each API server (mesh's own requests).
    for a in w.apis.values() {
        a.calls.lock().unwrap().clear();
        a.mesh_connections
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }
    timed(&w, p.path(), &["build", "--json"]);
    let connections = w
        .apis
        .values()
        .map(|a| a.mesh_connections.load(std::sync::atomic::Ordering::SeqCst))
        .sum::<usize>() as f64
        / n as f64;
    let calls: Vec<Vec<String>> = w
        .apis
        .values()
        .map(|a| a.calls.lock().unwrap().clone())
        .collect();
    let per_cluster = calls.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    // Round trips by kind of request: method and path without the name.
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for l in &calls[0] {
        let mut it = l.split(' ');
        let (method, path) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let shape: Vec<&str> = path.split('/').collect();
        let key = format!("{method} {}", shape[..shape.len().min(7)].join("/"));
        *kinds.entry(key).or_default() += 1;
    }
    // Edit one app: c0 gets both versions.
    let edited = text.replacen("c0 = \"v1\"", "c0 = [\"v1\", \"v2\"]", 1);
    std::fs::write(p.path().join("plan.toml"), edited).unwrap();
    let trace = std::env::var("MESH_BENCH_PROFILE").map(|d| format!("{d}/edit-{n}.json"));
    let mut args = vec!["build", "--json"];
    if let Ok(t) = &trace {
        args.extend(["--trace", t.as_str()]);
    }
    let (edit_wall, doc) = timed(&w, p.path(), &args);
    let ran: Vec<(String, f64)> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "ran")
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["duration_ms"].as_f64().unwrap(),
            )
        })
        .collect();
    let app_ms = ran
        .iter()
        .find(|(id, _)| id == "app:helloworld:c0")
        .map(|r| r.1)
        .unwrap_or(0.0);
    println!("{n} clusters ({tasks} tasks):");
    println!(
        "  parallel build wall            {:>9.0} ms   CPU of mesh + fake tools {:.1} s = {:.0} ms of wall on {cores} cores",
        ms(wall),
        cpu,
        cpu * 1e3 / cores
    );
    println!(
        "  critical path (mesh's own)     {:>9.0} ms   wall / critical path = {:.3}  (goal ≤ 1.05)",
        cp,
        ms(wall) / cp
    );
    println!(
        "  sequential (-j 1) wall         {:>9.0} ms   wall / sequential    = {:.3}  (goal ≤ {})",
        ms(seq),
        ms(wall) / ms(seq),
        if n <= 2 { "0.55" } else { "0.15" }
    );
    println!(
        "  no-op live rerun (probes)      {:>9.0} ms   (median of 5)",
        ms(median(noop))
    );
    println!(
        "  no-op API requests per cluster {per_cluster:>9.1}      over {connections:.1} TLS connections; c0's: {kinds:?}"
    );
    println!(
        "  edit one app: rerun wall       {:>9.0} ms − app task {:.0} ms = {:.0} ms  (goal ≤ 50 ms); ran {:?}",
        ms(edit_wall),
        app_ms,
        ms(edit_wall) - app_ms,
        ran.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()
    );
}

fn hazards(n: usize) {
    let text = plan(n);
    let run = |setup: &dyn Fn(&World)| {
        let w = world(n);
        setup(&w);
        let p = fake::project(&text);
        let (wall, doc) = timed(&w, p.path(), &["build", "--json"]);
        let faults: usize = w
            .apis
            .values()
            .map(|a| a.faults.load(std::sync::atomic::Ordering::SeqCst))
            .sum();
        (wall, doc["retries"].as_array().map_or(0, Vec::len), faults)
    };
    let (calm, _, _) = run(&|w| {
        for a in w.apis.values() {
            *a.knobs.watch_life.lock().unwrap() = None;
            *a.knobs.bookmark_every.lock().unwrap() = None;
        }
    });
    let (hazards, _, _) = run(&|_| {});
    let (chaos, retries, faults) = run(&|w| {
        for a in w.apis.values() {
            a.knobs
                .fault_every
                .store(5, std::sync::atomic::Ordering::SeqCst);
        }
    });
    println!("hazards, {n} clusters (fresh world each):");
    println!("  calm fake world                {:>9.0} ms", ms(calm));
    println!(
        "  default hazards                {:>9.0} ms   / calm = {:.3}",
        ms(hazards),
        ms(hazards) / ms(calm)
    );
    println!(
        "  hazards + 1 in 5 calls failing {:>9.0} ms   / calm = {:.3}   ({faults} faults injected, {retries} retries)",
        ms(chaos),
        ms(chaos) / ms(calm)
    );
}

fn main() {
    let quick =
        std::env::var_os("MESH_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench");
    if let Ok(n) = std::env::var("MESH_BENCH_N") {
        bench(n.parse().unwrap());
        return;
    }
    bench(2);
    hazards(2);
    if !quick {
        bench(8);
        bench(32);
    }
}
