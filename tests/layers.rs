//! The layers `src/lib.rs` names, enforced: a module may use modules of its
//! own layer or below, never above. Read from the source (every
//! `crate::<module>` path outside comments), so a new upward import fails
//! here before review.

use std::collections::BTreeMap;
use std::path::Path;

/// Module → layer, as the `src/lib.rs` doc lists them.
const LAYERS: &[(&str, u8)] = &[
    // 1, the engine, in its own order: hash < graph < stamp < cache < exec (the
    // graph knows nothing of the store; only exec joins them).
    ("hash", 10),
    ("redact", 10),
    ("events", 10),
    ("state", 10),
    ("seen", 10),
    ("graph", 11),
    ("stamp", 12),
    ("cache", 13),
    ("exec", 14),
    // 2, the input: diag, yaml, assets < plan.
    ("diag", 20),
    ("yaml", 20),
    ("assets", 20),
    ("plan", 21),
    // 3, the world: providers, k8s < access.
    ("providers", 30),
    ("k8s", 30),
    ("access", 31),
    // 4, the domain: kinds < planner.
    ("kinds", 40),
    ("planner", 41),
    // 5, the commands: verify, doctor, ui < cli.
    ("verify", 50),
    ("doctor", 50),
    ("ui", 50),
    ("cli", 51),
];

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut bad = Vec::new();
    let mut seen = 0;
    for f in &all {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let Some(&own) = layer.get(top.as_str()) else {
            assert!(
                ["lib", "main"].contains(&top.as_str()),
                "{top} is in no layer: add it to src/lib.rs's doc and to LAYERS"
            );
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let targets: Vec<String> = if name.is_empty() && rest.starts_with('{') {
                    // `use crate::{a, b::c}`
                    rest[1..rest.find('}').unwrap_or(rest.len())]
                        .split(',')
                        .map(|s| s.trim().split("::").next().unwrap_or("").to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                } else {
                    vec![name]
                };
                for t in targets {
                    seen += 1;
                    if let Some(&theirs) = layer.get(t.as_str())
                        && theirs > own
                    {
                        bad.push(format!(
                            "{}:{}: {top} (layer {own}) uses {t} (layer {theirs})",
                            rel.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(seen > 50, "the scan found only {seen} crate paths");
    assert!(bad.is_empty(), "imports up the layers:\n{}", bad.join("\n"));
}
