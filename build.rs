//! Embeds every file under `tasks/` into the binary.
//!
//! Walks `tasks/` (sorted, so the generated list is stable) and writes
//! `$OUT_DIR/embedded.rs`: one `(path, include_str!(…))` entry per file,
//! the path relative to the crate root as a plan names it. A new template is
//! embedded by being there: no list to keep by hand. `rerun-if-changed` on
//! the directory and on every file makes cargo rebuild when one is added,
//! removed or edited.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        println!("cargo:rerun-if-changed={}", p.display());
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut files = Vec::new();
    println!("cargo:rerun-if-changed=tasks");
    walk(&root.join("tasks"), &mut files);
    let mut src = String::from("/// (path relative to the plan directory, contents)\n");
    src.push_str("pub static EMBEDDED: &[(&str, &str)] = &[\n");
    for f in files {
        let rel = f.strip_prefix(&root).expect("under the crate root");
        let rel = rel.to_str().expect("UTF-8 path").replace('\\', "/");
        src.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            f.to_str().expect("UTF-8 path")
        ));
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("embedded.rs");
    std::fs::write(out, src).expect("write embedded.rs");
}
