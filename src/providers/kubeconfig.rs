//! The user's kubeconfig: mesh adds `kind-<name>` entries to it after kind
//! created a cluster, and removes them after kind deleted one, never
//! touching its current context.
//!
//! kind itself is pointed at a private kubeconfig (`--kubeconfig` in a 0700
//! temporary directory), for three reasons read in kind's
//! `pkg/cluster/internal/kubeconfig`: kind makes the new context current;
//! it locks the file client-go's way (`<file>.lock`, created exclusively,
//! one attempt), so two clusters created in parallel can fail on each
//! other's lock; and a kind killed while it holds the lock leaves the lock
//! behind, which then fails every later kind and kubectl edit until someone
//! deletes it. The private file's lock dies with its directory.
//!
//! The edit itself follows kind and kubectl: entries are merged into the
//! first file of `$KUBECONFIG` that exists (else its last; else
//! `~/.kube/config`) and removed from every file of the list; the file keeps
//! its syntax (JSON stays JSON) and its mode (a new one is 0600 in a 0700
//! directory). It runs under the same `<file>.lock`, which mesh creates by
//! hard-linking a file that already names it (`mesh <pid>`), so the lock
//! says who holds it from its first instant: a lock naming a mesh process
//! that is gone was left by a killed mesh and is cleared; any other lock is
//! waited for ([`LOCK_WAIT`]) and then reported with the file to delete.
//! Nothing here ever quotes a kubeconfig's content (it holds keys).

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a lock someone else holds is waited for.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The files of the user's kubeconfig, as kubectl and kind read them:
/// `$KUBECONFIG`'s list (empty entries and duplicates dropped), else
/// `~/.kube/config`.
pub fn paths() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    if let Some(k) = std::env::var_os("KUBECONFIG") {
        for p in std::env::split_paths(&k) {
            if !p.as_os_str().is_empty() && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    if out.is_empty() {
        out.push(PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".kube/config"));
    }
    out
}

/// The file new entries go to: the first of [`paths`] that exists, else the
/// last (kind's and kubectl's rule).
pub fn path_for_merge() -> PathBuf {
    let p = paths();
    p.iter()
        .find(|f| f.exists())
        .or(p.last())
        .cloned()
        .unwrap_or_default()
}

/// Add (or replace) the cluster, user and context of `kubeconfig` (kind's
/// `kind-<name>` entries) in the user's kubeconfig; the current context is
/// left as it is.
pub fn merge(kubeconfig: &str) -> Result<PathBuf, String> {
    let new: Value = serde_saphyr::from_str(kubeconfig)
        .map_err(|_| "the cluster's kubeconfig is not YAML".to_string())?;
    let path = path_for_merge();
    edit(&path, |v| {
        for section in ["clusters", "users", "contexts"] {
            let add = new[section].as_array().cloned().unwrap_or_default();
            let names: Vec<&str> = add.iter().filter_map(|e| e["name"].as_str()).collect();
            let mut kept: Vec<Value> = v[section]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !names.contains(&e["name"].as_str().unwrap_or("")))
                .collect();
            kept.extend(add.iter().cloned());
            v[section] = Value::Array(kept);
        }
        true
    })?;
    Ok(path)
}

/// Remove the entries named `kind-<name>` from every file of the user's
/// kubeconfig, and unset the current context if it was that one (as
/// `kind delete cluster` does).
pub fn remove(name: &str) -> Result<(), String> {
    let key = format!("kind-{name}");
    for path in paths() {
        if !path.exists() {
            continue;
        }
        edit(&path, |v| {
            let mut changed = false;
            for section in ["clusters", "users", "contexts"] {
                if let Some(list) = v[section].as_array_mut() {
                    let before = list.len();
                    list.retain(|e| e["name"].as_str() != Some(key.as_str()));
                    changed |= list.len() != before;
                }
            }
            if v["current-context"].as_str() == Some(key.as_str()) {
                v["current-context"] = Value::String(String::new());
                changed = true;
            }
            changed
        })?;
    }
    Ok(())
}

/// Read, change and write back `path` under its lock; `f` says whether it
/// changed anything (nothing is written if not).
fn edit(path: &Path, f: impl FnOnce(&mut Value) -> bool) -> Result<(), String> {
    // One edit at a time in this process (clusters are created in
    // parallel); the lock file covers other processes.
    static EDITS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = EDITS.lock().unwrap_or_else(|p| p.into_inner());
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let _lock = Lock::acquire(path, LOCK_WAIT)?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut v: Value = match text.as_deref() {
        Some(t) if !t.trim().is_empty() => serde_saphyr::from_str(t).map_err(|_| {
            format!(
                "{} is not a kubeconfig (not YAML); mesh leaves it alone",
                path.display()
            )
        })?,
        _ => serde_json::json!({"apiVersion": "v1", "kind": "Config", "preferences": {}}),
    };
    if !v.is_object() {
        return Err(format!("{} is not a kubeconfig", path.display()));
    }
    if !f(&mut v) {
        return Ok(());
    }
    let json = text
        .as_deref()
        .is_some_and(|t| t.trim_start().starts_with('{'));
    let out = if json {
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
    } else {
        serde_saphyr::to_string(&v).map_err(|e| e.to_string())?
    };
    write_keeping_mode(path, out.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Replace `path` atomically with `bytes`, keeping its mode (0600 when new).
fn write_keeping_mode(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o600);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `<file>.lock`, held while it exists; removed on drop.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Take `<file>.lock`, waiting up to `wait` for another holder; a lock
    /// left by a mesh process that is gone is cleared at once.
    pub fn acquire(file: &Path, wait: Duration) -> Result<Lock, String> {
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let lock = file.with_file_name(name);
        let dir = file.parent().unwrap_or(Path::new("."));
        let me = format!("mesh {}\n", std::process::id());
        let deadline = Instant::now() + wait;
        loop {
            // The lock's content is in place before the lock exists.
            let mut tmp = tempfile::Builder::new()
                .prefix(".mesh-lock-")
                .tempfile_in(dir)
                .map_err(|e| format!("cannot lock {}: {e}", file.display()))?;
            tmp.write_all(me.as_bytes())
                .map_err(|e| format!("cannot lock {}: {e}", file.display()))?;
            match std::fs::hard_link(tmp.path(), &lock) {
                Ok(()) => return Ok(Lock { path: lock }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot lock {}: {e}", file.display())),
            }
            drop(tmp);
            if clear_if_left_by_dead_mesh(&lock) {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} exists: a kubectl or kind is editing {}, or one was killed while it \
                     did and left its lock; if none is running, delete {}",
                    lock.display(),
                    file.display(),
                    lock.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid of the mesh process a lock file names, if it names one.
fn mesh_holder(content: &str) -> Option<i32> {
    content
        .strip_prefix("mesh ")?
        .trim_end_matches('\n')
        .parse()
        .ok()
        .filter(|p: &i32| *p > 0)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Remove `lock` if a mesh process that is no longer running left it. The
/// lock is first renamed to a name of this process's own, so two processes
/// clearing the same stale lock cannot remove a fresh one taken in
/// between; if what was taken turns out to be live, it is linked back.
fn clear_if_left_by_dead_mesh(lock: &Path) -> bool {
    let stale = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|c| mesh_holder(&c))
            .is_some_and(|pid| !alive(pid))
    };
    if !stale(lock) {
        return false;
    }
    let mut mine = lock.as_os_str().to_os_string();
    mine.push(format!(".stale-{}", std::process::id()));
    let mine = PathBuf::from(mine);
    if std::fs::rename(lock, &mine).is_err() {
        return false;
    }
    if !stale(&mine) {
        let _ = std::fs::hard_link(&mine, lock);
    }
    let _ = std::fs::remove_file(&mine);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> i32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        pid
    }

    #[test]
    fn a_lock_names_its_holder_and_a_dead_meshs_lock_is_cleared() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("config");
        let lock = d.path().join("config.lock");
        {
            let _l = Lock::acquire(&file, Duration::ZERO).unwrap();
            let held = std::fs::read_to_string(&lock).unwrap();
            assert_eq!(mesh_holder(&held), Some(std::process::id() as i32));
            // Held by a live process (this one): not cleared, reported.
            let e = Lock::acquire(&file, Duration::from_millis(50)).unwrap_err();
            assert!(
                e.contains("config.lock exists") && e.contains("delete"),
                "{e}"
            );
        }
        assert!(!lock.exists(), "dropped: released");
        std::fs::write(&lock, format!("mesh {}\n", dead_pid())).unwrap();
        let _l = Lock::acquire(&file, Duration::ZERO).unwrap();
        drop(_l);
        // An empty lock (kind's, kubectl's) is never cleared.
        std::fs::write(&lock, "").unwrap();
        assert!(Lock::acquire(&file, Duration::from_millis(50)).is_err());
        assert!(lock.exists());
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".mesh-lock-") || n.contains(".stale-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn merge_and_remove_keep_the_current_context_and_the_files_syntax() {
        let d = tempfile::tempdir().unwrap();
        let json = d.path().join("config.json");
        std::fs::write(
            &json,
            r#"{"apiVersion":"v1","kind":"Config","clusters":[{"name":"prod","cluster":{}}],
               "users":[],"contexts":[{"name":"prod","context":{}}],"current-context":"prod"}"#,
        )
        .unwrap();
        let kind = "apiVersion: v1\nkind: Config\nclusters:\n- name: kind-east\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: kind-east\n  user: {token: t}\ncontexts:\n- name: kind-east\n  context: {cluster: kind-east, user: kind-east}\ncurrent-context: kind-east\n";
        let missing = d.path().join("sub/none");
        let list = std::env::join_paths([&missing, &json]).unwrap();
        // SAFETY: this is the only test in the crate that sets KUBECONFIG.
        unsafe { std::env::set_var("KUBECONFIG", &list) };
        assert_eq!(path_for_merge(), json, "the first file that exists");
        merge(kind).unwrap();
        merge(kind).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["current-context"], "prod");
        assert_eq!(v["contexts"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["clusters"][1]["name"], "kind-east");
        remove("east").unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["contexts"].as_array().unwrap().len(), 1, "{v}");
        assert!(!missing.exists(), "removal creates nothing");
        // No file yet: the last of the list, created 0600 as YAML.
        std::fs::remove_file(&json).unwrap();
        assert_eq!(path_for_merge(), json);
        merge(kind).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&json).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        let text = std::fs::read_to_string(&json).unwrap();
        assert!(!text.trim_start().starts_with('{'), "{text}");
        let v: Value = serde_saphyr::from_str(&text).unwrap();
        assert!(v["current-context"].is_null(), "{v}");
        unsafe { std::env::remove_var("KUBECONFIG") };
    }
}
