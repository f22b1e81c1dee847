//! The CLI's words, pinned as insta snapshots that read like a user's
//! terminal (as uv's tests do): timings, ages, keys and temp paths are
//! filtered out, everything else is what a user sees.

mod common;
use common::{Out, Project};

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({filters => vec![
        (r"\d+(\.\d+)?(ms|µs|s)\b", "[time]"),
        (r"last run: [^,]+ ago", "last run: [age] ago"),
        (r"key [0-9a-f]{12}", "key [key]"),
        (r"/tmp/\.tmp[A-Za-z0-9]+", "[dir]"),
    ]}, {
        insta::assert_snapshot!(name, text);
    });
}

/// stdout, then stderr, as a terminal interleaves them for a reader.
fn both(o: &Out) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        o.code, o.stdout, o.stderr
    )
}

#[test]
fn build_plan_why_and_status_after_one_edit() {
    let p = Project::default_plan();
    // The summary of a first build (rows sorted: parallel order varies).
    let o = p.run(&["build", "--offline"]);
    let mut rows: Vec<&str> = o
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix('[')?.split_once(']').map(|x| x.1))
        .collect();
    rows.sort_by_key(|l| l.split_whitespace().nth(1).unwrap_or("").to_string());
    let summary: Vec<&str> = o.stderr.lines().filter(|l| !l.starts_with('[')).collect();
    snapshot(
        "first_build",
        &format!("exit {}\n{}\n{}\n", o.code, rows.join("\n"), summary[0]),
    );
    snapshot("noop_build", &both(&p.run(&["build", "--offline"])));

    p.edit("plan.toml", |t| t.replacen("workers = 1", "workers = 2", 1));
    snapshot("plan_after_edit", &both(&p.run(&["plan", "--offline"])));
    snapshot(
        "why_after_edit",
        &both(&p.run(&["why", "render.kind:east"])),
    );
    snapshot("status_after_edit", &both(&p.run(&["status"])));
}
