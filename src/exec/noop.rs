//! The no-op fast path: a rebuild that nothing touched answered from the
//! stats of the files the last clean build depended on, without reading the
//! plan, planning the graph, computing a key or reading a record.
//!
//! Owns `cache/noop`, written after an offline build in which every task
//! ran or was up to date. It holds:
//!
//! - a **fingerprint** of what decides the build besides files: the mesh
//!   binary (its path and stamp), the plan's and `out/`'s absolute paths,
//!   and every `MESH_*` variable and `KUBECONFIG` of the environment;
//! - the **deadline** of the plan's checks against the clock (`seen`: a
//!   CA's expiry), after which the plan must be read again;
//! - the **task ids**, in topological order, for the report;
//! - one **entry** per file the verdict rests on, with its stamp
//!   (`stamp::Stamp`: size, mtime, ctime, inode, device, mode) or its
//!   absence: what reading the plan and planning looked at (`seen`, stamped
//!   before being read), the records log, every blob a record lists, every
//!   exported file and every directory from `out/` down to one.
//!
//! **Why it is sound.** The graph and every key are functions of the plan's
//! files, the clock checks, the environment and the binary; whether a task
//! is up to date is a function of its key, its record (the log) and its
//! blobs; the exported files are restored from their blobs, with their
//! modes and their directories'. When all of these are as they were after a
//! build that left every task up to date, a full check would find every
//! task up to date again and change nothing, so the fast path reports that
//! without doing it. A file is taken as unchanged when its stamp is, under
//! the stat cache's rules (`stamp`): ctime and the inode make an edit that
//! restores the mtime show, and an entry stamped in the same timestamp tick
//! as (or after) `cache/noop` was written is *racy* and sends the build the
//! long way, which then writes a file it can trust.
//!
//! What it writes down for a blob or an exported file is the stamp at
//! which this build (or a trusted stat cache entry) *verified* it to hold
//! its digest, not a `stat` taken afterwards: a file edited after its
//! check then shows as changed on the next run. It is written only when
//! those stamps have the modes the long way leaves (a secret 0600, nothing
//! looser than 0644), and the directories (stat'ed after the build, with
//! the log) none writable by others and a secret's 0700.
//!
//! Any doubt means the long way: a missing, damaged (its blake3 trailer) or
//! foreign file, another fingerprint, a passed deadline, one stamp that
//! differs. Every build that may change the cache removes the file first
//! ([`forget`]), so a failed or killed build leaves none. `--verify`,
//! `--watch`, `--rotate-root` and live builds never take the fast path.
//!
//! The entries are stat'ed on up to four threads when there are thousands
//! (a `stat` costs microseconds here, and the machine's cores serve it as
//! they serve the build).

use super::*;
use crate::seen::Seen;
use crate::stamp::Stamp;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};

const MAGIC: &[u8] = b"mesh-noop v1\n";
const FILE: &str = "noop";
/// Entries above which the stats are spread over threads.
const PARALLEL_FROM: usize = 2048;

/// What decides a build besides the files the entries name.
pub fn fingerprint(plan_file: &Path, out_dir: &Path) -> Digest {
    let mut h = blake3::Hasher::new();
    let mut put = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    put(env!("CARGO_PKG_VERSION").as_bytes());
    let exe = std::env::current_exe().ok();
    match exe.as_ref().and_then(|e| std::fs::metadata(e).ok()) {
        Some(m) => {
            put(exe
                .as_deref()
                .unwrap_or(Path::new(""))
                .as_os_str()
                .as_encoded_bytes());
            let mut b = Vec::with_capacity(Stamp::BYTES);
            Stamp::of(&m).encode(&mut b);
            put(&b);
        }
        // A binary that cannot be stat'ed: a fingerprint no file matches.
        None => put(&std::process::id().to_le_bytes()),
    }
    for p in [plan_file, out_dir] {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        put(abs.as_os_str().as_encoded_bytes());
    }
    let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.as_encoded_bytes();
            k.starts_with(b"MESH_") || k == b"KUBECONFIG"
        })
        .collect();
    vars.sort();
    for (k, v) in vars {
        put(k.as_encoded_bytes());
        put(v.as_encoded_bytes());
    }
    Digest(*h.finalize().as_bytes())
}

/// Remove `cache/noop`: what follows may change what it vouches for.
pub fn forget(cache: &Cache, _lock: &BuildLock) {
    let _ = std::fs::remove_file(cache.root().join(FILE));
}

/// The report of a no-op if the last clean build's files are all as they
/// were (and its fingerprint is `fp`); else why the build must go the long
/// way (for `-v`: it names a path, never a file's bytes).
pub fn check(
    cache: &Cache,
    _lock: &BuildLock,
    fp: &Digest,
    epoch: Instant,
) -> Result<BuildReport, String> {
    use std::io::Read;
    let start = Instant::now();
    let path = cache.root().join(FILE);
    let mut f = std::fs::File::open(&path).map_err(|e| format!("no {}: {e}", path.display()))?;
    let written = f.metadata().map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(written.len() as usize);
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let parsed = parse(&bytes).ok_or_else(|| format!("{} is damaged", path.display()))?;
    if parsed.fingerprint != *fp {
        return Err("the binary, the paths or the MESH_* environment changed".into());
    }
    if let Some(until) = parsed.until
        && SystemTime::now() >= until
    {
        return Err("a check of the plan against the clock is due again".into());
    }
    let t = Stamp::of(&written).mtime;
    let changed = std::sync::Mutex::new(None);
    let fine = |e: &(PathBuf, Option<Stamp>)| {
        let now = std::fs::metadata(&e.0).ok().map(|m| Stamp::of(&m));
        let why = if now != e.1 {
            "changed"
        } else if e.1.is_some_and(|s| s.racy(t)) {
            "changed too close to the last build to trust its stat"
        } else {
            return true;
        };
        *changed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("{} {why}", e.0.display()));
        false
    };
    if !all(&parsed.entries, fine) {
        let why = changed.into_inner().unwrap_or_else(|p| p.into_inner());
        return Err(why.unwrap_or_else(|| "a file changed".into()));
    }
    let at = start.saturating_duration_since(epoch).as_micros() as u64;
    let took = start.elapsed().as_micros() as u64;
    let tasks = parsed
        .tasks
        .into_iter()
        .map(|id| TaskReport {
            id,
            status: Status::Cached,
            reason: "up to date".into(),
            start_us: at,
            duration_us: took,
            lane: 0,
            output: None,
            files: None,
        })
        .collect();
    Ok(BuildReport {
        tasks,
        wall_us: epoch.elapsed().as_micros() as u64,
        critical_path: Vec::new(),
        critical_path_us: 0,
        interrupted: false,
        retries: Vec::new(),
    })
}

/// After a build: write `cache/noop` if `report` says every task ran or
/// was up to date (`seen`: what its planning looked at). False when it
/// was not written.
pub fn save(
    cache: &Cache,
    _lock: &BuildLock,
    fp: &Digest,
    seen: &Seen,
    report: &BuildReport,
    out_dir: &Path,
) -> bool {
    let clean = report.ok()
        && report
            .tasks
            .iter()
            .all(|t| matches!(t.status, Status::Ran | Status::Cached) && t.files.is_some());
    if !clean {
        return false;
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let out = abs(out_dir);
    let stat = cache.stat();
    let ids: Vec<&str> = report.tasks.iter().map(|t| t.id.as_str()).collect();
    let mut entries = File::new(fp, seen.until, &ids);
    for (p, m) in &seen.files {
        entries.push(p, m.as_ref().map(Stamp::of).as_ref());
    }
    // Blobs and exported files: the stamp at which the build (or a trusted
    // stat cache entry) knew each to hold its digest, in the mode the long
    // way would leave it; else there is nothing to vouch for. (Keyed by
    // digest and by the export's text: hashing a `Path` walks its
    // components, which at ten thousand files is measurable.)
    let mut blob_path = abs(cache.root()).join("blobs");
    let mut blobs: HashMap<Digest, (Stamp, bool)> = HashMap::new();
    let mut files: HashSet<&str> = HashSet::new();
    let mut dirs: HashMap<&str, bool> = HashMap::new();
    for t in &report.tasks {
        for f in t.files.as_deref().into_iter().flatten() {
            if let Some((_, secret)) = blobs.get_mut(&f.blob) {
                *secret |= f.secret;
            } else {
                let hex = f.blob.hex();
                blob_path.push(&hex[..2]);
                blob_path.push(&hex);
                let s = stat.verified(&blob_path, &f.blob);
                entries.push(&blob_path, s.as_ref());
                blob_path.pop();
                blob_path.pop();
                let Some(s) = s else { return false };
                blobs.insert(f.blob, (s, f.secret));
            }
            let Some(rel) = f.export.as_deref() else {
                continue;
            };
            // Its directories, up to out/ (""): only its own is closed
            // for a secret.
            let mut tight = f.secret;
            let mut end = rel.len();
            while let Some(i) = rel[..end].rfind('/') {
                *dirs.entry(&rel[..i]).or_default() |= tight;
                tight = false;
                end = i;
            }
            *dirs.entry("").or_default() |= tight;
            if !files.insert(rel) {
                continue;
            }
            let dest = out.join(rel);
            let want = if f.secret { 0o600 } else { 0o644 };
            match stat.verified(&dest, &f.blob) {
                Some(s) if s.mode & 0o7777 == want => entries.push(&dest, Some(&s)),
                _ => return false,
            }
        }
    }
    if blobs
        .values()
        .any(|(s, secret)| (*secret && s.mode & 0o7777 != 0o600) || s.mode & 0o7777 & !0o644 != 0)
    {
        return false;
    }
    // Directories and the log: stat'ed now that the build is done (the
    // log is written only under the lock we hold).
    let dirs: Vec<(PathBuf, bool)> = dirs
        .into_iter()
        .map(|(d, tight)| {
            (
                if d.is_empty() {
                    out.clone()
                } else {
                    out.join(d)
                },
                tight,
            )
        })
        .collect();
    let mut now: Vec<PathBuf> = dirs.iter().map(|d| d.0.clone()).collect();
    now.push(abs(cache.records_path()));
    let metas = stat_all(&now);
    for (i, (path, m)) in now.iter().zip(metas).enumerate() {
        let Some(m) = m else {
            // No log yet (nothing recorded): absent it must stay.
            if i == dirs.len() {
                entries.push(path, None);
                continue;
            }
            return false;
        };
        if let Some((_, tight)) = dirs.get(i) {
            let bits = m.permissions().mode() & 0o7777;
            if bits & 0o022 != 0 || (*tight && bits != 0o700) {
                return false;
            }
        }
        entries.push(path, Some(&Stamp::of(&m)));
    }
    let bytes = entries.finish();
    crate::cache::write_file(&cache.root().join(FILE), &bytes, 0o600).is_ok()
}

/// Does `fine` hold for every entry? Stat'ed on several threads when there
/// are many; the first failure stops them all.
fn all(
    entries: &[(PathBuf, Option<Stamp>)],
    fine: impl Fn(&(PathBuf, Option<Stamp>)) -> bool + Sync,
) -> bool {
    let threads = threads_for(entries.len());
    if threads == 1 {
        return entries.iter().all(fine);
    }
    let bad = AtomicBool::new(false);
    let per = entries.len().div_ceil(threads);
    std::thread::scope(|s| {
        for chunk in entries.chunks(per) {
            let (bad, fine) = (&bad, &fine);
            s.spawn(move || {
                for e in chunk {
                    if bad.load(Ordering::Relaxed) {
                        return;
                    }
                    if !fine(e) {
                        bad.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    !bad.load(Ordering::Relaxed)
}

/// What `stat` says of each path (`None`: it does not exist), in order.
fn stat_all(paths: &[PathBuf]) -> Vec<Option<std::fs::Metadata>> {
    let one = |p: &PathBuf| std::fs::metadata(p).ok();
    let threads = threads_for(paths.len());
    if threads == 1 {
        return paths.iter().map(one).collect();
    }
    let per = paths.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = paths
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().map(one).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn threads_for(n: usize) -> usize {
    if n < PARALLEL_FROM {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |c| c.get().min(4))
}

/// The file, encoded as it is made: the header (magic, fingerprint,
/// deadline, task ids), the entry count (patched in by [`File::finish`]),
/// the entries, and the blake3 of it all.
struct File {
    bytes: Vec<u8>,
    count_at: usize,
    n: u64,
}

impl File {
    fn new(fp: &Digest, until: Option<SystemTime>, ids: &[&str]) -> File {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&fp.0);
        let until = until.map_or(i64::MAX, |u| match u.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => i64::MIN,
        });
        b.extend_from_slice(&until.to_le_bytes());
        b.extend_from_slice(&(ids.len() as u64).to_le_bytes());
        for id in ids {
            b.extend_from_slice(&(id.len() as u64).to_le_bytes());
            b.extend_from_slice(id.as_bytes());
        }
        let count_at = b.len();
        b.extend_from_slice(&0u64.to_le_bytes());
        File {
            bytes: b,
            count_at,
            n: 0,
        }
    }

    fn push(&mut self, path: &Path, s: Option<&Stamp>) {
        let p = path.as_os_str().as_encoded_bytes();
        self.bytes
            .extend_from_slice(&(p.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(p);
        match s {
            Some(s) => {
                self.bytes.push(1);
                s.encode(&mut self.bytes);
            }
            None => self.bytes.push(0),
        }
        self.n += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes[self.count_at..self.count_at + 8].copy_from_slice(&self.n.to_le_bytes());
        let sum = *blake3::hash(&self.bytes).as_bytes();
        self.bytes.extend_from_slice(&sum);
        self.bytes
    }
}

#[cfg(test)]
fn encode(
    fp: &Digest,
    until: Option<SystemTime>,
    ids: &[&str],
    entries: &[(PathBuf, Option<Stamp>)],
) -> Vec<u8> {
    let mut f = File::new(fp, until, ids);
    for (p, s) in entries {
        f.push(p, s.as_ref());
    }
    f.finish()
}

struct Parsed {
    fingerprint: Digest,
    until: Option<SystemTime>,
    tasks: Vec<String>,
    entries: Vec<(PathBuf, Option<Stamp>)>,
}

/// Reads [`encode`]'s bytes; `None` for anything else.
fn parse(bytes: &[u8]) -> Option<Parsed> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum || !body.starts_with(MAGIC) {
        return None;
    }
    let mut r = Reader(&body[MAGIC.len()..]);
    let fingerprint = Digest(r.take(32)?.try_into().ok()?);
    let until = match r.i64()? {
        i64::MAX => None,
        s if s < 0 => Some(UNIX_EPOCH),
        s => Some(UNIX_EPOCH + Duration::from_secs(s as u64)),
    };
    let n = r.u64()? as usize;
    let mut tasks = Vec::with_capacity(n.min(body.len()));
    for _ in 0..n {
        let len = r.u64()? as usize;
        tasks.push(String::from_utf8(r.take(len)?.to_vec()).ok()?);
    }
    let n = r.u64()? as usize;
    let mut entries = Vec::with_capacity(n.min(body.len()));
    for _ in 0..n {
        let len = r.u64()? as usize;
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(r.take(len)?));
        let s = match r.take(1)?[0] {
            0 => None,
            1 => Some(Stamp::decode(r.take(Stamp::BYTES)?)?),
            _ => return None,
        };
        entries.push((p, s));
    }
    r.0.is_empty().then_some(Parsed {
        fingerprint,
        until,
        tasks,
        entries,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

use std::os::unix::ffi::OsStrExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encoded_parses_back_and_a_flipped_byte_does_not() {
        let s = Stamp {
            size: 7,
            mtime: (1, 2),
            ctime: (3, 4),
            ino: 5,
            dev: 6,
            mode: 0o100644,
        };
        let fp = Digest([9; 32]);
        let entries = vec![
            (PathBuf::from("/a/b"), Some(s)),
            (PathBuf::from("/a/missing"), None),
        ];
        let until = UNIX_EPOCH + Duration::from_secs(1_000);
        let b = encode(&fp, Some(until), &["t:1", "t:2"], &entries);
        let p = parse(&b).expect("parses");
        assert_eq!(p.fingerprint, fp);
        assert_eq!(p.until, Some(until));
        assert_eq!(p.tasks, ["t:1", "t:2"]);
        assert_eq!(p.entries, entries);
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(parse(&bad).is_none(), "byte {i} flipped still parses");
        }
        assert!(parse(&b[..b.len() - 1]).is_none());
        assert!(parse(&encode(&fp, None, &[], &[])).is_some_and(|p| p.until.is_none()));
    }

    /// A cache whose `noop` vouches for `entries` (its mtime `written`).
    fn vouching(
        dir: &Path,
        until: Option<SystemTime>,
        entries: &[(PathBuf, Option<Stamp>)],
        written: SystemTime,
    ) -> (Cache, BuildLock) {
        let cache = Cache::open(&dir.join("cache")).unwrap();
        let lock = cache.lock().unwrap();
        let file = dir.join("cache").join(FILE);
        std::fs::write(&file, encode(&Digest([1; 32]), until, &["a", "b"], entries)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(written)
            .unwrap();
        (cache, lock)
    }

    fn stamp(p: &Path) -> Option<Stamp> {
        std::fs::metadata(p).ok().map(|m| Stamp::of(&m))
    }

    #[test]
    fn only_an_untouched_tree_under_the_same_fingerprint_and_clock_is_a_no_op() {
        let d = tempfile::tempdir().unwrap();
        let (f, gone) = (d.path().join("f"), d.path().join("gone"));
        std::fs::write(&f, "bytes").unwrap();
        let entries = vec![(f.clone(), stamp(&f)), (gone.clone(), None)];
        let later = SystemTime::now() + Duration::from_secs(30);
        let epoch = Instant::now();
        let fp = Digest([1; 32]);

        let (c, l) = vouching(d.path(), None, &entries, later);
        let r = check(&c, &l, &fp, epoch).expect("untouched");
        let ids: Vec<&str> = r.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(r.tasks.iter().all(|t| t.status == Status::Cached));
        // Another binary, path or environment.
        let e = check(&c, &l, &Digest([2; 32]), epoch).unwrap_err();
        assert!(e.contains("environment"), "{e}");
        drop((c, l));

        // The clock check's deadline passed.
        let past = Some(SystemTime::now() - Duration::from_secs(1));
        let (c, l) = vouching(d.path(), past, &entries, later);
        let e = check(&c, &l, &fp, epoch).unwrap_err();
        assert!(e.contains("clock"), "{e}");
        drop((c, l));

        // Stamped in the tick `noop` was written in: racy, not trusted.
        let racy_at = std::fs::metadata(&f).unwrap().modified().unwrap();
        let (c, l) = vouching(d.path(), None, &entries, racy_at);
        let e = check(&c, &l, &fp, epoch).unwrap_err();
        assert!(e.contains("too close"), "{e}");
        drop((c, l));

        // What was absent appears.
        std::fs::write(&gone, "").unwrap();
        let (c, l) = vouching(d.path(), None, &entries, later);
        let e = check(&c, &l, &fp, epoch).unwrap_err();
        assert!(e.contains("gone changed"), "{e}");
        drop((c, l));
        std::fs::remove_file(&gone).unwrap();

        // Same size, mtime put back: the ctime shows it.
        let m = std::fs::metadata(&f).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(&f, "BYTES").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(m.modified().unwrap())
            .unwrap();
        let (c, l) = vouching(d.path(), None, &entries, later);
        let e = check(&c, &l, &fp, epoch).unwrap_err();
        assert!(e.ends_with("/f changed"), "{e}");
    }

    /// A file edited after the build checked it (here: after its stamp
    /// went into the stat cache, before `save`) is written down as it was
    /// checked, so the next run sees the change (a `stat` at save time
    /// would have vouched for the edit).
    #[test]
    fn an_export_edited_after_its_check_is_not_vouched_for() {
        use std::os::unix::fs::DirBuilderExt;
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(&d.path().join("cache")).unwrap();
        let lock = cache.lock().unwrap();
        let out = d.path().join("out");
        std::fs::DirBuilder::new().mode(0o755).create(&out).unwrap();
        let blob = cache.put_blob(&lock, b"exported", false).unwrap();
        let dest = out.join("x.yaml");
        crate::cache::write_file(&dest, b"exported", 0o644).unwrap();
        let m = std::fs::metadata(&dest).unwrap();
        cache.stat().stamp(&dest, &m, &blob);
        let report = BuildReport {
            tasks: vec![TaskReport {
                id: "t".into(),
                status: Status::Ran,
                reason: String::new(),
                start_us: 0,
                duration_us: 0,
                lane: 0,
                output: None,
                files: Some(Arc::new(vec![FileEntry {
                    name: "x.yaml".into(),
                    blob,
                    secret: false,
                    export: Some("x.yaml".into()),
                    private: false,
                }])),
            }],
            wall_us: 0,
            critical_path: Vec::new(),
            critical_path_us: 0,
            interrupted: false,
            retries: Vec::new(),
        };
        let fp = Digest([1; 32]);
        let later = SystemTime::now() + Duration::from_secs(30);
        let age = || {
            std::fs::File::options()
                .write(true)
                .open(cache.root().join(FILE))
                .unwrap()
                .set_modified(later)
                .unwrap();
        };
        assert!(save(&cache, &lock, &fp, &Seen::default(), &report, &out));
        age();
        assert!(check(&cache, &lock, &fp, Instant::now()).is_ok());

        std::thread::sleep(Duration::from_millis(10));
        crate::cache::write_file(&dest, b"EXPORTED", 0o644).unwrap();
        assert!(save(&cache, &lock, &fp, &Seen::default(), &report, &out));
        age();
        let e = check(&cache, &lock, &fp, Instant::now()).unwrap_err();
        assert!(e.ends_with("x.yaml changed"), "{e}");
    }

    #[test]
    fn thousands_of_entries_are_checked_on_threads_and_one_change_is_found() {
        let d = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        for i in 0..3 * PARALLEL_FROM {
            let p = d.path().join(format!("f{i}"));
            std::fs::write(&p, i.to_string()).unwrap();
            entries.push((p.clone(), stamp(&p)));
        }
        let fp = Digest([1; 32]);
        let later = SystemTime::now() + Duration::from_secs(30);
        let (c, l) = vouching(d.path(), None, &entries, later);
        assert!(check(&c, &l, &fp, Instant::now()).is_ok());
        drop((c, l));
        let last = &entries[entries.len() - 1].0;
        std::fs::remove_file(last).unwrap();
        let (c, l) = vouching(d.path(), None, &entries, later);
        let e = check(&c, &l, &fp, Instant::now()).unwrap_err();
        assert!(e.contains(&last.display().to_string()), "{e}");
        let paths: Vec<PathBuf> = entries.iter().map(|e| e.0.clone()).collect();
        let stamps: Vec<Option<Stamp>> = stat_all(&paths)
            .iter()
            .map(|m| m.as_ref().map(Stamp::of))
            .collect();
        assert_eq!(stamps.len(), paths.len());
        assert!(
            stamps[..paths.len() - 1]
                .iter()
                .zip(&entries)
                .all(|(s, e)| *s == e.1)
        );
        assert_eq!(stamps[paths.len() - 1], None);
    }
}
