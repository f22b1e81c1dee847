//! The executor's side of the store: reading dependency files out of the
//! blob store, storing a task's outputs (blobs first, then the record,
//! atomically) and materialising exported files under `out/` (write to a
//! temp file, fsync where it matters, rename; secrets 0600).

use super::*;

/// Why storing or materialising a task's outputs failed (the task's work
/// itself succeeded; its record is not written).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("blob of {0} vanished from the cache")]
    Vanished(String),
}

/// Reads dependency files out of the blob store.
pub(crate) struct StoreReader {
    pub(crate) cache: Arc<Cache>,
    pub(crate) files: HashMap<String, Arc<Vec<FileEntry>>>,
}

impl DepReader for StoreReader {
    fn read(&self, dep: &str, name: &str) -> Result<Vec<u8>, TaskError> {
        let entry = self
            .files
            .get(dep)
            .and_then(|fs| fs.iter().find(|f| f.name == name))
            .ok_or_else(|| TaskError::new(format!("dependency {dep} produced no file {name}")))?;
        self.cache.read_blob(&entry.blob).ok_or_else(|| {
            TaskError::new(format!(
                "blob of {dep}/{name} is missing or corrupt in the cache"
            ))
        })
    }
}

/// What a past build recorded for task `id`: the bytes of its file `name`,
/// verified against its digest. `None` when the task has no readable
/// record, or the record no such file, or the blob is gone or corrupt.
/// (For commands that read results outside a build, as verify does.)
pub fn recorded_file(cache: &Cache, id: &str, name: &str) -> Option<Vec<u8>> {
    let Load::Ok(rec) = cache.load(id) else {
        return None;
    };
    let f = rec.files.iter().find(|f| f.name == name)?;
    cache.read_blob(&f.blob)
}

pub(crate) fn store(
    sh: &Shared,
    node: &Node,
    key: Digest,
    deps: BTreeMap<String, Digest>,
    files: Vec<OutFile>,
    started_ms: u64,
    start: Instant,
) -> Result<(Digest, Vec<FileEntry>), StoreError> {
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        let blob = sh.cache.put_blob(&sh.lock, &f.bytes, f.secret)?;
        entries.push(FileEntry {
            name: f.name,
            blob,
            secret: f.secret,
            export: f.export,
            private: f.private,
        });
    }
    let output = output_digest(&entries);
    let rec = Record {
        id: node.id.clone(),
        key,
        inputs: node.inputs.to_map(),
        deps,
        output,
        files: entries.clone(),
        started_ms,
        duration_us: start.elapsed().as_micros() as u64,
    };
    // Durable records for effectful tasks (minutes of work); pure ones are
    // cheaper to recompute than to fsync, and are verified when read.
    sh.cache.save(&sh.lock, &rec, !node.pure)?;
    Ok((output, entries))
}

/// Make `out/` hold exactly the exported files (restoring edited or deleted
/// ones from the store; a file whose stat the stat cache vouches for is not
/// read), with explicit modes whatever the umask: a secret
/// 0600 in a 0700 directory, anything else 0644, and no directory from
/// `out/` down writable by others. Modes found looser are put back, and a
/// directory is never loosened (a 0700 one that also holds public files
/// stays 0700), so the order tasks export in does not matter.
pub(crate) fn materialize(sh: &Shared, files: &[FileEntry]) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let Some(out) = &sh.out_dir else {
        return Ok(());
    };
    for f in files {
        let Some(rel) = &f.export else { continue };
        let dest = out.join(rel);
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Write { path, source }
        };
        dirs_for(out, &dest, f.secret, &sh.dirs).map_err(werr(&dest))?;
        let want = if f.secret { 0o600 } else { 0o644 };
        let stat = sh.cache.stat();
        // Its stat vouches for its bytes, and its mode is right: done.
        if let Ok(m) = std::fs::metadata(&dest)
            && m.permissions().mode() & 0o7777 == want
            && stat.vouches(&dest, &m, &f.blob)
        {
            continue;
        }
        if std::fs::read(&dest).is_ok_and(|b| Digest::of_bytes(&b) == f.blob) {
            let mode = std::fs::metadata(&dest)
                .map(|m| m.permissions().mode() & 0o7777)
                .map_err(werr(&dest))?;
            if mode != want {
                set_mode(&dest, want).map_err(werr(&dest))?;
            }
        } else {
            let bytes = sh
                .cache
                .read_blob(&f.blob)
                .ok_or_else(|| StoreError::Vanished(f.name.clone()))?;
            crate::cache::write_file(&dest, &bytes, want).map_err(werr(&dest))?;
        }
        if let Ok(m) = std::fs::metadata(&dest) {
            stat.stamp(&dest, &m, &f.blob);
        }
    }
    Ok(())
}

/// The directories from `out` down to `dest`'s: made 0755 (the last 0700
/// when `secret`), and those found writable by others, or the last one
/// found open while it gets a secret, tightened.
///
/// Each directory is looked at once a build (and once more to tighten it):
/// `seen` remembers it, and only once it is made, as another thread may be
/// making it right now and must not take it as done. Without that, every
/// task's files cost a `stat` of each directory from `out/` down (three
/// of every four `stat`s of a no-op at a thousand clusters).
fn dirs_for(
    out: &Path,
    dest: &Path,
    secret: bool,
    seen: &std::sync::Mutex<HashSet<(PathBuf, bool)>>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let Some(leaf) = dest.parent() else {
        return Ok(());
    };
    let done = |key: &(PathBuf, bool)| seen.lock().unwrap_or_else(|p| p.into_inner()).contains(key);
    let remember = |key| {
        seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
    };
    let leaf_key = (leaf.to_path_buf(), secret);
    if done(&leaf_key) {
        return Ok(());
    }
    // `--out new/bundle`: what leads to out/ is made as `mkdir -p` would.
    if let Some(up) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        let key = (up.to_path_buf(), false);
        if !done(&key) {
            if !up.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(up)?;
            }
            remember(key);
        }
    }
    let below = leaf.strip_prefix(out).unwrap_or(Path::new(""));
    let mut dir = out.to_path_buf();
    let mut chain = vec![dir.clone()];
    for c in below.components() {
        dir.push(c);
        chain.push(dir.clone());
    }
    for d in chain {
        let last = d.as_path() == leaf;
        let tight = secret && last;
        let key = (d, tight);
        if done(&key) {
            continue;
        }
        let d = key.0.as_path();
        match std::fs::metadata(d) {
            Ok(m) => {
                let mode = m.permissions().mode() & 0o7777;
                let want = if tight { 0o700 } else { mode & !0o022 };
                if mode != want {
                    set_mode(d, want)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(if tight { 0o700 } else { 0o755 })
                    .create(d)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })?;
                set_mode(d, if tight { 0o700 } else { 0o755 })?;
            }
            Err(e) => return Err(e),
        }
        remember(key);
    }
    Ok(())
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
