//! The local store under `cache/`: content-addressed blobs, a record per
//! task, and the build lock.
//!
//! On-disk format (everything below `cache/`, created 0700):
//!
//! ```text
//! cache/lock                  advisory lock file; holds the builder's pid
//! cache/blobs/ab/abcdef…      a blob, named by the blake3 of its bytes
//! cache/records.log           every task's record, appended (`records`)
//! cache/tmp/                  temp files; emptied by whoever takes the lock
//! cache/stat                  the stat cache (`stamp`): digests trusted from stat
//! ```
//!
//! A record is one JSON document, checksummed in the log by the digest of
//! its bytes. What a record promises: the task with this id ran to success
//! with exactly the key stored in it, and produced exactly the listed
//! blobs. It is appended only after the task succeeded and its blobs are in
//! the store, so a killed run leaves the old record or the new one, and at
//! worst a torn tail that claims nothing (see `records`). Records of
//! effectful tasks are fsynced (losing one means redoing minutes of work);
//! records of pure tasks are not (on this kind of disk an fsync costs more
//! than recomputing a render, and after a power cut a torn record or blob
//! fails verification and the task just reruns). One log read once, not a
//! file per task: a no-op at a thousand clusters opened 9,002 files.
//!
//! Nothing read back is trusted: a record whose checksum does not match (torn,
//! truncated, edited) loads as [`Load::Corrupt`] and is treated as absent; a
//! blob is re-hashed whenever it is read, and whenever it is verified
//! unless the stat cache vouches for it (the same size, mtime, ctime,
//! inode and mode as when it was last hashed, and not racy: see `stamp`;
//! `mesh build --verify` trusts no stat); a mismatch is a missing output. Blobs are not fsynced: a blob lost to a power cut is caught
//! by that verification and its task simply reruns.
//!
//! Writing needs a [`BuildLock`]: the only way to get one is
//! [`Cache::lock`], which takes an exclusive `flock`-style lock on
//! `cache/lock`, so "save without holding the lock" does not type-check. The
//! holder overwrites the file with its pid in place (never emptying it), and
//! a loser reads it again for up to half a second while it names no live
//! process, so a contest never reports "pid unknown". `mesh clean` deletes
//! everything while holding it, the lock file last. Reads
//! need no lock (renames are atomic). Blobs holding secrets are written 0600;
//! all blobs live under the 0700 cache directory.

mod records;

use crate::hash::Digest;
use crate::stamp::StatCache;
use records::{Entry, Log};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One file a task produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Name the task and its dependents use, e.g. `ca-key.pem`.
    pub name: String,
    /// Digest of the bytes (= blob name).
    pub blob: Digest,
    /// Private key or credential: 0600 everywhere, never printed.
    pub secret: bool,
    /// Where it goes under `out/`, if it is part of the offline bundle.
    pub export: Option<String>,
    /// Bookkeeping for the task's own probe (a Helm revision): recorded,
    /// but not part of the output digest, so dependents never see it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

/// What the store remembers about a task's last successful run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub key: Digest,
    /// The input manifest: input name → digest (plan fields, templates, …).
    pub inputs: BTreeMap<String, Digest>,
    /// Dependency id → that dependency's output digest, as used in the key.
    pub deps: BTreeMap<String, Digest>,
    /// Digest over `files`: what dependents see (early cutoff compares it).
    pub output: Digest,
    pub files: Vec<FileEntry>,
    /// Unix time in ms when the run started, and how long it took.
    pub started_ms: u64,
    pub duration_us: u64,
}

/// Result of loading a record.
#[derive(Debug)]
pub enum Load {
    Missing,
    Corrupt(String),
    Ok(Record),
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("another mesh build (pid {pid}) holds the cache lock {path}; wait for it to finish")]
    Locked { pid: String, path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Proof that this process holds the build lock on a cache. Dropping it
/// releases the lock.
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
    path: PathBuf,
}

impl BuildLock {
    /// Remove the lock file and the (by now empty) cache directory, still
    /// holding the lock until both are gone (`mesh clean`).
    pub fn remove(self) -> io::Result<()> {
        fs::remove_file(&self.path)?;
        if let Some(root) = self.path.parent() {
            match fs::remove_dir(root) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    pid: u32,
    tmp_counter: AtomicU64,
    /// `cache/stat`, read when first needed.
    stat: std::sync::OnceLock<StatCache>,
    /// `cache/records.log`, read when first needed.
    log: Log,
}

fn mkdir_private(path: &Path) -> Result<(), CacheError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => {}
        Err(e) => return Err(io_err("cannot create", path)(e)),
    }
    // An existing directory keeps whatever mode it had: tighten it.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(io_err("cannot chmod", path))
}

/// Task ids contain `:` and `>`; keep file names portable and unambiguous.
pub fn encode_id(id: &str) -> String {
    let mut s = String::with_capacity(id.len() + 8);
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
            s.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            s.push('%');
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
    }
    s
}

/// Inverse of [`encode_id`]; `None` for names we did not write.
pub fn decode_id(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Cache {
    /// Open (creating if needed) the cache rooted at `root`.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        mkdir_private(root)?;
        for sub in ["blobs", "tmp"] {
            mkdir_private(&root.join(sub))?;
        }
        Ok(Cache::at(root))
    }

    fn at(root: &Path) -> Cache {
        Cache {
            root: root.to_path_buf(),
            pid: std::process::id(),
            tmp_counter: AtomicU64::new(0),
            stat: std::sync::OnceLock::new(),
            log: Log::new(root),
        }
    }

    /// Open an existing cache for reading only; `None` when there is none.
    pub fn open_existing(root: &Path) -> Option<Cache> {
        (root.join("blobs").is_dir() || root.join("records").is_dir()).then(|| Cache::at(root))
    }

    /// The records log's path (for tests and tools that inspect it).
    pub fn records_path(&self) -> &Path {
        self.log.path()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Take the build lock, or say who holds it.
    pub fn lock(&self) -> Result<BuildLock, CacheError> {
        let path = self.root.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(CacheError::Locked {
                    pid: holder(&mut file).unwrap_or_else(|| "unknown".into()),
                    path,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("cannot lock", &path)(e)),
        }
        // Overwritten in place, never emptied first: a reader sees the old
        // holder's pid or ours, and retries while it names no live process.
        let me = format!("{}\n", std::process::id());
        {
            use std::os::unix::fs::FileExt;
            file.write_all_at(me.as_bytes(), 0)
                .map_err(io_err("cannot write", &path))?;
        }
        file.set_len(me.len() as u64)
            .map_err(io_err("cannot write", &path))?;
        // We are the only writer now: what others appended before is read
        // afresh, and leftovers of killed runs can go.
        self.log.reload();
        let tmp = self.root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(BuildLock { _file: file, path })
    }

    /// Remove everything in the cache but its lock, holding the lock; the
    /// caller removes the lock file and the directory last
    /// ([`BuildLock::remove`]).
    pub fn remove_contents(&self, _lock: &BuildLock) -> io::Result<()> {
        for e in fs::read_dir(&self.root)? {
            let e = e?;
            if e.file_name() == "lock" {
                continue;
            }
            if e.file_type()?.is_dir() {
                remove_dir(&e.path())?;
            } else {
                fs::remove_file(e.path())?;
            }
        }
        self.log.reload();
        Ok(())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root.join("blobs").join(&hex[..2]).join(&hex)
    }

    fn write_atomic(
        &self,
        dest: &Path,
        bytes: &[u8],
        mode: u32,
        sync: bool,
    ) -> Result<(), CacheError> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("tmp").join(format!("{}.{n}", self.pid));
        write_via(&tmp, dest, bytes, mode, sync).map_err(io_err("cannot write", dest))
    }

    /// The stat cache of this store (`stamp`): blobs and the files of
    /// `out/` whose `stat` is unchanged since they were hashed are not
    /// hashed again.
    pub fn stat(&self) -> &StatCache {
        self.stat
            .get_or_init(|| StatCache::load(&self.root.join("stat")))
    }

    /// Hash every file, trusting no stat (`mesh build --verify`).
    pub fn set_verify(&self, full: bool) {
        self.stat().set_trust(!full);
    }

    /// Write the stat cache if this run changed it (after a build).
    pub fn save_stat(&self, _lock: &BuildLock) -> Result<(), CacheError> {
        match self.stat().to_write() {
            Some(bytes) => self.write_atomic(self.stat().file(), &bytes, 0o600, false),
            None => Ok(()),
        }
    }

    /// Store bytes as a blob; returns its digest. Idempotent.
    pub fn put_blob(
        &self,
        _lock: &BuildLock,
        bytes: &[u8],
        secret: bool,
    ) -> Result<Digest, CacheError> {
        let d = Digest::of_bytes(bytes);
        let path = self.blob_path(&d);
        if self.blob_ok(&d) {
            return Ok(d);
        }
        let dir = path.parent().expect("blob path has a parent");
        if !dir.is_dir() {
            mkdir_private(dir)?;
        }
        self.write_atomic(&path, bytes, if secret { 0o600 } else { 0o644 }, false)?;
        if let Ok(m) = fs::metadata(&path) {
            self.stat().stamp(&path, &m, &d);
        }
        Ok(d)
    }

    /// Read a blob, verifying its digest.
    pub fn read_blob(&self, d: &Digest) -> Option<Vec<u8>> {
        let bytes = fs::read(self.blob_path(d)).ok()?;
        (Digest::of_bytes(&bytes) == *d).then_some(bytes)
    }

    /// Is the blob present with the right content? Its stat vouches for
    /// it, or it is read and hashed.
    pub fn blob_ok(&self, d: &Digest) -> bool {
        self.check_blob(d, None)
    }

    /// [`Cache::blob_ok`], and a mode found looser than mesh writes it (by
    /// hand, or by an older mesh) is put back: 0600 for a secret, at most
    /// 0644 otherwise.
    pub fn blob_ok_as(&self, d: &Digest, secret: bool) -> bool {
        self.check_blob(d, Some(secret))
    }

    /// The stat cache may vouch for the bytes (one `stat`, no read) when
    /// the mode is already right (`mode`: whether it is a secret, if the
    /// mode is to be checked); otherwise the blob is read and hashed, its
    /// mode put back, and it is stamped afresh.
    fn check_blob(&self, d: &Digest, mode: Option<bool>) -> bool {
        let path = self.blob_path(d);
        let loose = |m: &fs::Metadata| {
            let bits = m.permissions().mode() & 0o7777;
            mode.is_some_and(|secret| (secret && bits != 0o600) || bits & !0o644 != 0)
        };
        if let Ok(m) = fs::metadata(&path)
            && !loose(&m)
            && self.stat().vouches(&path, &m, d)
        {
            return true;
        }
        let Ok(mut f) = File::open(&path) else {
            return false;
        };
        let mut bytes = Vec::new();
        if f.read_to_end(&mut bytes).is_err() || Digest::of_bytes(&bytes) != *d {
            return false;
        }
        if let Ok(m) = f.metadata()
            && loose(&m)
        {
            let secret = mode == Some(true);
            let _ = f.set_permissions(fs::Permissions::from_mode(if secret {
                0o600
            } else {
                0o644
            }));
        }
        if let Ok(m) = f.metadata() {
            self.stat().stamp(&path, &m, d);
        }
        true
    }

    /// Load a task's record.
    pub fn load(&self, id: &str) -> Load {
        match self.log.get(id) {
            Entry::Missing => Load::Missing,
            Entry::Corrupt(why) => Load::Corrupt(why),
            Entry::Json(json) => match serde_json::from_slice::<Record>(&json) {
                Ok(r) if r.id == id => Load::Ok(r),
                Ok(r) => Load::Corrupt(format!("record names task {:?}", r.id)),
                Err(e) => Load::Corrupt(format!("bad record: {e}")),
            },
        }
    }

    /// Persist a record (after its blobs are stored); `durable` fsyncs it.
    pub fn save(&self, _lock: &BuildLock, rec: &Record, durable: bool) -> Result<(), CacheError> {
        let json = serde_json::to_vec(rec).expect("records serialize");
        self.log
            .append(&rec.id, &json, durable)
            .map_err(io_err("cannot write", self.log.path()))
    }

    /// Forget a task (so it reruns).
    pub fn remove(&self, _lock: &BuildLock, id: &str) -> Result<(), CacheError> {
        self.log
            .forget(id)
            .map_err(io_err("cannot write", self.log.path()))
    }

    /// After a build: rewrite the records log if it is mostly dead entries.
    pub fn compact_records(&self, _lock: &BuildLock) -> Result<(), CacheError> {
        self.log
            .compact_if_worth_it()
            .map_err(io_err("cannot write", self.log.path()))
    }

    /// Ids of every task with a record (valid or not), or `None` if the
    /// records cannot be listed. One index instead of a load per task: a
    /// plan asks about a million tasks, most of which never ran.
    pub fn recorded(&self) -> Option<hashbrown::HashSet<String>> {
        Some(self.log.ids().into_iter().collect())
    }

    /// Ids of every task with a record (valid or not), sorted.
    pub fn record_ids(&self) -> Vec<String> {
        let mut ids = self.log.ids();
        ids.sort();
        ids
    }

    /// Delete every blob that no valid record references. Returns
    /// (blobs removed, bytes freed).
    pub fn gc(&self, _lock: &BuildLock) -> Result<(usize, u64), CacheError> {
        let mut live = HashSet::new();
        for id in self.record_ids() {
            if let Load::Ok(r) = self.load(&id) {
                live.extend(r.files.iter().map(|f| f.blob.hex()));
            }
        }
        let (mut n, mut bytes) = (0, 0);
        let blobs = self.root.join("blobs");
        for shard in fs::read_dir(&blobs)
            .map_err(io_err("cannot read", &blobs))?
            .flatten()
        {
            for e in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !live.contains(&name) {
                    bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                    if fs::remove_file(e.path()).is_ok() {
                        n += 1;
                    }
                }
            }
        }
        Ok((n, bytes))
    }
}

/// Remove a whole cache directory.
pub fn remove_dir(path: &Path) -> io::Result<bool> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pid a held lock file names. The holder writes it just after it took
/// the lock, so a file that names no live process yet (empty, or a killed
/// holder's pid) is read again for a moment before giving up.
fn holder(file: &mut File) -> Option<String> {
    use std::os::unix::fs::FileExt;
    for _ in 0..50 {
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Ok(pid) = text.trim().parse::<i32>()
            && pid > 0
            // SAFETY: signal 0 only checks that the process exists.
            && (unsafe { libc::kill(pid, 0) } == 0
                || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
        {
            return Some(pid.to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// The most mesh reads from a file a user names (a manifest, a template,
/// a kubeconfig): far above any real one, far below what exhausts memory.
pub const MAX_INPUT: u64 = 16 << 20;

/// Read a file a user named: a regular file (not `/dev/zero`, a FIFO or a
/// directory) of at most [`MAX_INPUT`] bytes, else an error saying which.
///
/// What it read is recorded for the no-op fast path (`seen`), with the
/// stamp taken before the bytes are.
pub fn read_input(path: &Path) -> io::Result<Vec<u8>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            if e.kind() == io::ErrorKind::NotFound {
                crate::seen::file(path, None);
            }
            return Err(e);
        }
    };
    let m = f.metadata()?;
    crate::seen::file(path, Some(&m));
    if !m.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_INPUT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("larger than {} MiB", MAX_INPUT >> 20),
        ));
    }
    Ok(bytes)
}

/// [`read_input`] of a text file: UTF-8 or an error saying so (never
/// quoting the bytes).
pub fn read_input_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read_input(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Write a file atomically through a temp file beside it, `mode` whatever
/// the umask (reports and traces: 0644).
pub fn write_file(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.mesh-tmp.{}",
        dest.file_name().map_or("f".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    // A temp file left by a killed run of this pid would block create_new.
    let _ = fs::remove_file(&tmp);
    write_via(&tmp, dest, bytes, mode, false)
}

/// Write `dest` atomically: `bytes` into the new file `tmp` (same file
/// system), its mode set to `mode` whatever the umask, fsynced if `sync`,
/// then renamed over `dest`. On failure `tmp` is removed and `dest` is
/// untouched. The one atomic writer of the crate: the store's blobs and
/// records and the files of `out/` all go through it.
pub fn write_via(tmp: &Path, dest: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lock_just_taken_names_its_holder_once_written() {
        // The holder has the lock but has not written its pid yet (the
        // file is empty): the loser waits for it instead of "unknown".
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path()).unwrap();
        let path = d.path().join("lock");
        let held = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        held.try_lock().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(60));
            let mut f = &held;
            f.write_all(format!("{}\n", std::process::id()).as_bytes())
                .unwrap();
            held
        });
        match cache.lock() {
            Err(CacheError::Locked { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("{other:?}"),
        }
        drop(writer.join().unwrap());
        // Released: taken, and it names this process at once.
        let _l = cache.lock().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
    }

    use super::*;

    fn record(cache: &Cache, lock: &BuildLock) -> Record {
        let blob = cache.put_blob(lock, b"hello", false).unwrap();
        Record {
            id: "render.kind:east".into(),
            key: Digest::of_bytes(b"k"),
            inputs: BTreeMap::new(),
            deps: BTreeMap::new(),
            output: Digest::of_bytes(b"o"),
            files: vec![FileEntry {
                name: "x".into(),
                blob,
                secret: false,
                export: None,
                private: false,
            }],
            started_ms: 1,
            duration_us: 2,
        }
    }

    #[test]
    fn ids_round_trip() {
        for id in [
            "pki.root",
            "remote-secret:east->west",
            "app:hello world:east",
            "a%b",
        ] {
            assert_eq!(decode_id(&encode_id(id)).as_deref(), Some(id));
        }
        assert!(!encode_id("remote-secret:east->west").contains(':'));
    }

    #[test]
    fn records_round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let lock = cache.lock().unwrap();
        let rec = record(&cache, &lock);
        cache.save(&lock, &rec, true).unwrap();
        match cache.load(&rec.id) {
            Load::Ok(r) => assert_eq!(r, rec),
            other => panic!("{other:?}"),
        }
        let path = cache.records_path().to_path_buf();
        let mut bytes = fs::read(&path).unwrap();
        // Flip one digit inside the JSON: still valid JSON, wrong checksum.
        let json = bytes.iter().position(|&b| b == b'{').unwrap();
        let pos = json + bytes[json..].iter().position(|&b| b == b'1').unwrap();
        bytes[pos] = b'7';
        fs::write(&path, &bytes).unwrap();
        let reread = Cache::open(&dir.path().join("cache")).unwrap();
        assert!(matches!(reread.load(&rec.id), Load::Corrupt(_)));
        assert!(matches!(reread.load("nope"), Load::Missing));
        // Forgotten: missing from then on, in this store and the next.
        cache.remove(&lock, &rec.id).unwrap();
        assert!(matches!(cache.load(&rec.id), Load::Missing));
        let reread = Cache::open(&dir.path().join("cache")).unwrap();
        assert!(matches!(reread.load(&rec.id), Load::Missing));
    }

    #[test]
    fn corrupt_blob_is_not_ok_and_gc_removes_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let lock = cache.lock().unwrap();
        let rec = record(&cache, &lock);
        cache.save(&lock, &rec, true).unwrap();
        let orphan = cache.put_blob(&lock, b"orphan", true).unwrap();
        let mode = fs::metadata(cache.blob_path(&orphan))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(cache.gc(&lock).unwrap().0, 1);
        assert!(cache.blob_ok(&rec.files[0].blob));
        fs::write(cache.blob_path(&rec.files[0].blob), b"jello").unwrap();
        assert!(!cache.blob_ok(&rec.files[0].blob));
    }

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let _held = cache.lock().unwrap();
        let other = Cache::open(&dir.path().join("cache")).unwrap();
        let err = other.lock().unwrap_err().to_string();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        let mode = fs::metadata(dir.path().join("cache"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
