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
        inputs: node.inputs.clone(),
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
/// ones from the store).
pub(crate) fn materialize(sh: &Shared, files: &[FileEntry]) -> Result<(), StoreError> {
    let Some(out) = &sh.out_dir else {
        return Ok(());
    };
    for f in files {
        let Some(rel) = &f.export else { continue };
        let dest = out.join(rel);
        if std::fs::read(&dest).is_ok_and(|b| Digest::of_bytes(&b) == f.blob) {
            if f.secret {
                set_mode(&dest, 0o600).map_err(|source| StoreError::Write {
                    path: dest.clone(),
                    source,
                })?;
            }
            continue;
        }
        let bytes = sh
            .cache
            .read_blob(&f.blob)
            .ok_or_else(|| StoreError::Vanished(f.name.clone()))?;
        write_file_atomic(&dest, &bytes, if f.secret { 0o600 } else { 0o644 })
            .map_err(|source| StoreError::Write { path: dest, source })?;
    }
    Ok(())
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Write a file of `out/` through a temp file in its directory.
fn write_file_atomic(dest: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = dir.join(format!(
        ".{}.mesh-tmp.{}",
        dest.file_name().map_or("f".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    // A temp file left by a killed run of this pid would block create_new.
    let _ = std::fs::remove_file(&tmp);
    crate::cache::write_via(&tmp, dest, bytes, mode, false)
}
