//! Generated hostile plans: the default plan mutated (values swapped for
//! hostile ones, bytes inserted and deleted, lines duplicated, clusters
//! cloned). For each, `mesh plan --offline` and `mesh build --offline`
//! never panic, never hang (each is killed after a deadline, which fails
//! the case), exit 0, 1 or 2, and every exit 2 names a location
//! (`file:line:col`). `PROPTEST_CASES` sets how many plans (default 100).

mod common;
use common::{Project, default_plan};
use proptest::prelude::*;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

/// Values a user, a typo or an attacker may write in place of another.
const HOSTILE: &[&str] = &[
    "-1",
    "0",
    "4294967296",
    "99999999999999999999",
    "3000000",
    "1.5",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"x\"",
    "\"../../etc/passwd\"",
    "\"/dev/zero\"",
    "\"10.0.0.0/8\"",
    "\"256.1.1.1/33\"",
    "\"0.0.0.0/0\"",
    "\"v1.28.0\"",
    "\"1.28.0-rc.1\"",
    "\"*\"",
    "\"é東\"",
    "{ east = \"v9\" }",
    "{ nowhere = \"*\" }",
    "[\"v1\", \"v1\"]",
    "\"kind\"",
    "\"ambient\"",
    "\"primary-remote\"",
];

#[derive(Debug, Clone)]
enum Op {
    /// Replace the value of the n-th `key = value` line.
    Value(usize, usize),
    /// Delete `len` bytes at a position.
    Delete(usize, usize),
    /// Insert bytes (any, including invalid UTF-8 and NUL) at a position.
    Insert(usize, Vec<u8>),
    /// Duplicate the n-th line.
    DupLine(usize),
    /// Delete the n-th line.
    DropLine(usize),
    /// Clone `[clusters.east]` under a new name.
    Clone(String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<usize>(), 0..HOSTILE.len()).prop_map(|(a, b)| Op::Value(a, b)),
        1 => (any::<usize>(), 1usize..12).prop_map(|(a, b)| Op::Delete(a, b)),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(a, b)| Op::Insert(a, b)),
        1 => any::<usize>().prop_map(Op::DupLine),
        1 => any::<usize>().prop_map(Op::DropLine),
        1 => "[a-z][a-z0-9-]{0,12}".prop_map(Op::Clone),
    ]
}

fn lines(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect()
}

fn apply(plan: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Value(n, v) => {
            let mut ls = lines(plan);
            let with_value: Vec<usize> = (0..ls.len())
                .filter(|i| {
                    let l = String::from_utf8_lossy(&ls[*i]);
                    !l.trim_start().starts_with('#') && l.contains(" = ")
                })
                .collect();
            if let Some(&i) = with_value.get(n % with_value.len().max(1)) {
                let l = String::from_utf8_lossy(&ls[i]).into_owned();
                let key = l.split(" = ").next().unwrap_or("");
                ls[i] = format!("{key} = {}", HOSTILE[*v]).into_bytes();
            }
            *plan = ls.join(&b'\n');
        }
        Op::Delete(at, len) => {
            let at = at % plan.len().max(1);
            let end = (at + len).min(plan.len());
            plan.drain(at..end);
        }
        Op::Insert(at, bytes) => {
            let at = at % (plan.len() + 1);
            plan.splice(at..at, bytes.iter().copied());
        }
        Op::DupLine(n) | Op::DropLine(n) => {
            let mut ls = lines(plan);
            let i = n % ls.len();
            if matches!(op, Op::DupLine(_)) {
                let l = ls[i].clone();
                ls.insert(i, l);
            } else {
                ls.remove(i);
            }
            *plan = ls.join(&b'\n');
        }
        Op::Clone(name) => {
            let text = String::from_utf8_lossy(plan).into_owned();
            if let Some(start) = text.find("[clusters.east]") {
                let rest = &text[start + 1..];
                let end = rest.find("\n[").map_or(text.len(), |e| start + 1 + e + 1);
                let block =
                    text[start..end].replacen("[clusters.east]", &format!("[clusters.{name}]"), 1);
                plan.extend_from_slice(format!("\n{block}").as_bytes());
            }
        }
    }
}

/// Run mesh with `args` in `p`, killing it at the deadline.
fn run(p: &Project, args: &[&str]) -> Result<(i32, String), String> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .current_dir(p.path(""))
        .env_remove("RUST_BACKTRACE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok((status.code().unwrap_or(-1), reader.join().unwrap()));
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`mesh {}` hung for {DEADLINE:?}", args.join(" ")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `name:line:col` somewhere in `s`.
fn has_location(s: &str) -> bool {
    s.split_whitespace().any(|w| {
        let parts: Vec<&str> = w
            .trim_end_matches([',', ')', ';'])
            .rsplitn(3, ':')
            .collect();
        parts.len() == 3
            && !parts[2].is_empty()
            && !parts[0].is_empty()
            && parts[0].bytes().all(|b| b.is_ascii_digit())
            && !parts[1].is_empty()
            && parts[1].bytes().all(|b| b.is_ascii_digit())
    })
}

fn check(plan: &[u8]) -> Result<(), String> {
    let p = Project::with_plan("");
    std::fs::write(p.path("plan.toml"), plan).unwrap();
    for args in [&["plan", "--offline"][..], &["build", "--offline"][..]] {
        let (code, stderr) = run(&p, args)?;
        let what = format!("`mesh {}` exited {code}:\n{stderr}", args.join(" "));
        if stderr.contains("panicked") || !(0..=2).contains(&code) {
            return Err(what);
        }
        if code == 2 && !has_location(&stderr) {
            return Err(format!("no file:line:col in {what}"));
        }
        if code != 0 && !stderr.contains("error") {
            return Err(format!("no error named in {what}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(100),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mutated_plan_never_panics_hangs_or_fails_unlocated(ops in proptest::collection::vec(op(), 1..4)) {
        let mut plan = default_plan().into_bytes();
        for o in &ops {
            apply(&mut plan, o);
        }
        if let Err(e) = check(&plan) {
            return Err(TestCaseError::fail(format!(
                "{e}\nplan:\n{}", String::from_utf8_lossy(&plan)
            )));
        }
    }
}

#[test]
fn the_location_check_itself_can_fail() {
    assert!(has_location("error: bad\n  ┌─ plan.toml:3:9\n"));
    assert!(!has_location(
        "error: cannot read the plan: stream did not contain valid UTF-8"
    ));
    assert!(!has_location("at 10:30 the build failed"));
}
