//! The stat cache: what lets a no-op build trust a file's content digest
//! from one `stat` instead of reading and hashing the file, as git's index
//! does.
//!
//! Owns `cache/stat`. It maps a path (a blob in the store, a file under
//! `out/`; made absolute, and kept as the first 16 bytes of its blake3, so
//! an entry costs no allocation) to the digest its bytes had when mesh last hashed or wrote them,
//! and the file's [`Stamp`] at that moment: size, mtime and ctime (to the
//! nanosecond), inode, device and mode. A file whose stamp is unchanged is
//! taken to hold the same bytes. What changes a file changes its stamp:
//! writing it moves mtime and ctime; restoring the mtime afterwards
//! (`touch -d`, `utime`) moves ctime, which no user call can set; a rename
//! over it brings another inode; a chmod moves ctime and the mode.
//!
//! **Racy timestamps.** A file written in the same timestamp tick as it
//! was stamped, and not changed in size, keeps the stamp it was stamped
//! with. Git's rule closes that: an entry is trusted only when its mtime
//! and its ctime are strictly older than the stat cache file's own mtime
//! (written after every stamp in it was taken); a newer one is *racy*, and
//! its file is read and hashed as if there were no entry. When a build
//! re-verified a racy entry it rewrites the file, so that the entry (now
//! older than the new file) is trusted from then on. An entry carried over
//! unseen from the previous file that was racy there is dropped, not
//! carried: the new file's later mtime would otherwise make it look safe.
//!
//! **Corruption.** The file is binary: a header (`mesh-stat v2`), entries
//! of fixed size (path hash, digest, size, mtime, ctime, inode, device,
//! mode), and the blake3 of everything before it. A file that does not check out
//! is ignored whole (every file is hashed, as with no stat cache); an entry
//! only ever vouches for the digest the caller expects, so the worst a
//! stale or lost file can cause is a re-hash. It is written atomically
//! (temp file and rename) by the build holding the lock, after the build.
//!
//! `mesh build --verify` turns the trust off ([`StatCache::set_trust`]):
//! every file is hashed, and the entries are refreshed from what was read.

use crate::hash::Digest;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What `stat` says about a file, as far as its content goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub dev: u64,
    pub mode: u32,
}

impl Stamp {
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
            mode: m.mode(),
        }
    }

    /// Bytes of [`Stamp::encode`].
    pub const BYTES: usize = 8 + 16 + 16 + 8 + 8 + 4;

    /// The stamp as the stat cache (and `cache/noop`) store it: size,
    /// mtime, ctime, inode, device, mode, little-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.mtime.0.to_le_bytes());
        out.extend_from_slice(&self.mtime.1.to_le_bytes());
        out.extend_from_slice(&self.ctime.0.to_le_bytes());
        out.extend_from_slice(&self.ctime.1.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.dev.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
    }

    /// [`Stamp::encode`]'s bytes back; `None` unless exactly
    /// [`Stamp::BYTES`] long.
    pub fn decode(b: &[u8]) -> Option<Stamp> {
        if b.len() != Stamp::BYTES {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let i64_at = |i: usize| i64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Stamp {
            size: u64_at(0),
            mtime: (i64_at(8), i64_at(16)),
            ctime: (i64_at(24), i64_at(32)),
            ino: u64_at(40),
            dev: u64_at(48),
            mode: u32::from_le_bytes(b[56..60].try_into().expect("4 bytes")),
        })
    }

    /// Stamped in the same tick as (or after) `t`: not to be trusted
    /// against a stat cache file written at `t`.
    pub(crate) fn racy(&self, t: (i64, i64)) -> bool {
        self.mtime >= t || self.ctime >= t
    }
}

const MAGIC: &[u8] = b"mesh-stat v2\n";
/// Bytes of an entry: path hash, digest, size, mtime, ctime, ino, dev,
/// mode.
const ENTRY: usize = 16 + 32 + Stamp::BYTES;

/// A path, as the entries key it: the first 16 bytes of the blake3 of the
/// absolute path (two paths meeting there also need one inode to fool it).
type Key = [u8; 16];

type Entries = hashbrown::HashMap<Key, (Stamp, Digest)>;

/// The stat cache of one store: the entries read at the start, the ones
/// seen in this run, and whether to trust them.
#[derive(Debug)]
pub struct StatCache {
    file: PathBuf,
    /// The working directory: relative paths are keyed as absolute ones,
    /// so that a run from elsewhere never meets another file's entry.
    cwd: PathBuf,
    /// Entries of the file as read, trusted ones only (racy ones are left
    /// out: they vouch for nothing and are not carried over).
    old: Entries,
    /// Entries (re)stamped in this run.
    seen: Mutex<Entries>,
    trust: AtomicBool,
    /// A racy entry was re-verified, or an entry changed: write the file.
    dirty: AtomicBool,
}

impl StatCache {
    /// The stat cache in `file` (empty if it is absent or does not check
    /// out).
    pub fn load(file: &Path) -> StatCache {
        let old = std::fs::read(file)
            .ok()
            .zip(std::fs::metadata(file).ok())
            .and_then(|(bytes, m)| parse(&bytes, (m.mtime(), m.mtime_nsec())))
            .unwrap_or_default();
        StatCache {
            file: file.to_path_buf(),
            cwd: std::env::current_dir().unwrap_or_default(),
            old,
            seen: Mutex::new(Entries::new()),
            trust: AtomicBool::new(true),
            dirty: AtomicBool::new(false),
        }
    }

    /// Trust entries (the default), or hash every file (`--verify`).
    pub fn set_trust(&self, trust: bool) {
        self.trust.store(trust, Ordering::Relaxed);
    }

    /// Does the entry for `path` vouch that it holds `digest`, given what
    /// `stat` says of it now (`meta`)? Never when trust is off.
    pub fn vouches(&self, path: &Path, meta: &std::fs::Metadata, digest: &Digest) -> bool {
        if !self.trust.load(Ordering::Relaxed) {
            return false;
        }
        // A vouched entry stays as it is: carried over when the file is
        // written (`to_write`), so nothing is recorded here.
        self.old
            .get(&self.key(path))
            .is_some_and(|(stamp, d)| *stamp == Stamp::of(meta) && d == digest)
    }

    /// The stamp at which `path` was known to hold `digest`: hashed or
    /// written in this run, or a trusted entry's (which this run vouched
    /// for, or did not look at); `None` if none. This, not a `stat` taken
    /// later, is what the no-op fast path writes down: a file edited after
    /// its check then shows as changed.
    pub fn verified(&self, path: &Path, digest: &Digest) -> Option<Stamp> {
        let key = self.key(path);
        if let Some((s, d)) = self.lock().get(&key) {
            return (d == digest).then_some(*s);
        }
        if !self.trust.load(Ordering::Relaxed) {
            return None;
        }
        self.old
            .get(&key)
            .filter(|(_, d)| d == digest)
            .map(|(s, _)| *s)
    }

    /// `path` was just hashed (or written) to hold `digest`, and `stat`
    /// says `meta` of it.
    pub fn stamp(&self, path: &Path, meta: &std::fs::Metadata, digest: &Digest) {
        let now = Stamp::of(meta);
        let key = self.key(path);
        if self.old.get(&key) != Some(&(now, *digest)) {
            self.dirty.store(true, Ordering::Relaxed);
        }
        self.lock().insert(key, (now, *digest));
    }

    /// `path` as the entries key it: the hash of its absolute form
    /// without `.` components (`./out/x` and `out/x` are one file).
    fn key(&self, path: &Path) -> Key {
        use std::os::unix::ffi::OsStrExt;
        let b = path.as_os_str().as_bytes();
        if path.is_absolute() && !b.windows(3).any(|w| w == b"/./") && !b.ends_with(b"/.") {
            return path_key(path);
        }
        let mut key = if path.is_absolute() {
            PathBuf::new()
        } else {
            self.cwd.clone()
        };
        for c in path.components() {
            if c != std::path::Component::CurDir {
                key.push(c);
            }
        }
        path_key(&key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries to write, if anything changed: every entry stamped in
    /// this run, and the trusted entries of the file not stamped again
    /// (those vouched for, and those a partial build did not look at), in
    /// the file's format.
    pub fn to_write(&self) -> Option<Vec<u8>> {
        if !self.dirty.load(Ordering::Relaxed) {
            return None;
        }
        let seen = self.lock();
        let mut all: Vec<(&Key, &(Stamp, Digest))> = seen.iter().collect();
        all.extend(self.old.iter().filter(|(p, _)| !seen.contains_key(*p)));
        all.sort_by(|a, b| a.0.cmp(b.0));
        Some(render(&all))
    }

    /// Where the stat cache lives.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

/// The key of an absolute path.
pub fn path_key(path: &Path) -> Key {
    use std::os::unix::ffi::OsStrExt;
    let h = blake3::hash(path.as_os_str().as_bytes());
    h.as_bytes()[..16].try_into().expect("16 bytes")
}

fn render(entries: &[(&Key, &(Stamp, Digest))]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + entries.len() * ENTRY + 32);
    out.extend_from_slice(MAGIC);
    for (key, (s, d)) in entries {
        out.extend_from_slice(&key[..]);
        out.extend_from_slice(&d.0);
        s.encode(&mut out);
    }
    let sum = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&sum);
    out
}

/// The trusted entries of a stat cache file written at `written` (its
/// mtime); `None` when it does not check out.
fn parse(bytes: &[u8], written: (i64, i64)) -> Option<Entries> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let rest = body.strip_prefix(MAGIC)?;
    if rest.len() % ENTRY != 0 {
        return None;
    }
    let mut out = Entries::with_capacity(rest.len() / ENTRY);
    for e in rest.chunks_exact(ENTRY) {
        let key: Key = e[..16].try_into().expect("16 bytes");
        let digest = Digest(e[16..48].try_into().expect("32 bytes"));
        let stamp = Stamp::decode(&e[48..]).expect("an entry's stamp");
        if !stamp.racy(written) {
            out.insert(key, (stamp, digest));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> Digest {
        Digest::of_bytes(b)
    }

    fn set_mtime(path: &Path, t: std::time::SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// Age the stat cache file so that every entry in it is older than it
    /// (as after any real build but the quickest): not racy.
    fn age(file: &Path) {
        set_mtime(
            file,
            std::time::SystemTime::now() + std::time::Duration::from_secs(5),
        );
    }

    /// Write the stat cache as a build would, then age it.
    fn save_aged(sc: &StatCache) {
        let bytes = sc.to_write().expect("something to write");
        std::fs::write(sc.file(), bytes).unwrap();
        age(sc.file());
    }

    /// A file `a` holding "x" in a new directory, stamped in a saved,
    /// aged stat cache there; and its metadata.
    fn stamped() -> (tempfile::TempDir, PathBuf, std::fs::Metadata) {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
        std::fs::write(&f, b"x").unwrap();
        let sc = StatCache::load(&d.path().join("stat"));
        let m = std::fs::metadata(&f).unwrap();
        sc.stamp(&f, &m, &digest(b"x"));
        save_aged(&sc);
        (d, f, m)
    }

    /// What the no-op fast path writes down: the stamp a file had when this
    /// run (or a trusted entry) knew its digest, not its stamp now.
    #[test]
    fn verified_is_the_stamp_as_checked_not_as_now() {
        let (d, f, m) = stamped();
        let sc = StatCache::load(&d.path().join("stat"));
        assert_eq!(sc.verified(&f, &digest(b"x")), Some(Stamp::of(&m)));
        assert_eq!(sc.verified(&f, &digest(b"y")), None, "only its own digest");
        sc.set_trust(false);
        assert_eq!(sc.verified(&f, &digest(b"x")), None, "--verify trusts none");
        sc.set_trust(true);
        // Changed after the check (same size): what was checked is not
        // what is there now, so a later stat shows the change.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, b"z").unwrap();
        let now = std::fs::metadata(&f).unwrap();
        assert_ne!(sc.verified(&f, &digest(b"x")), Some(Stamp::of(&now)));
        sc.stamp(&f, &now, &digest(b"z"));
        assert_eq!(sc.verified(&f, &digest(b"z")), Some(Stamp::of(&now)));
        assert_eq!(sc.verified(&f, &digest(b"x")), None, "rewritten this run");
    }

    #[test]
    fn an_unchanged_file_is_vouched_for_and_any_change_to_it_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.pem");
        std::fs::write(&f, b"hello world").unwrap();
        let sc = StatCache::load(&d.path().join("stat"));
        let m = std::fs::metadata(&f).unwrap();
        assert!(!sc.vouches(&f, &m, &digest(b"hello world")), "no entry yet");
        sc.stamp(&f, &m, &digest(b"hello world"));
        save_aged(&sc);

        let sc = StatCache::load(&d.path().join("stat"));
        let m = std::fs::metadata(&f).unwrap();
        assert!(sc.vouches(&f, &m, &digest(b"hello world")));
        assert!(
            !sc.vouches(&f, &m, &digest(b"other")),
            "only its own digest"
        );

        // A byte flipped in place, size kept, mtime put back: ctime moved.
        let before = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"hello worle").unwrap();
        set_mtime(&f, before);
        let m2 = std::fs::metadata(&f).unwrap();
        assert_eq!(m2.modified().unwrap(), before);
        assert_eq!(m2.len(), m.len());
        assert!(!sc.vouches(&f, &m2, &digest(b"hello world")));
    }

    #[test]
    fn racy_entries_vouch_for_nothing_and_are_not_carried_over() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
        std::fs::write(&f, b"x").unwrap();
        let file = d.path().join("stat");
        let sc = StatCache::load(&file);
        let m = std::fs::metadata(&f).unwrap();
        sc.stamp(&f, &m, &digest(b"x"));
        std::fs::write(&file, sc.to_write().unwrap()).unwrap();
        // The stat cache's mtime is no later than the file's: say so.
        let t = std::fs::metadata(&f).unwrap().modified().unwrap();
        set_mtime(&file, t);
        let sc = StatCache::load(&file);
        assert!(!sc.vouches(&f, &m, &digest(b"x")), "racy: must be hashed");
        // Not re-verified, so not written again as if it were safe.
        sc.stamp(&d.path().join("b"), &m, &digest(b"y"));
        let text = sc.to_write().unwrap();
        let back = parse(&text, (i64::MAX, 0)).unwrap();
        assert!(!back.contains_key(&path_key(&f)));
        assert!(back.contains_key(&path_key(&d.path().join("b"))));
    }

    #[test]
    fn a_stat_cache_that_does_not_check_out_vouches_for_nothing() {
        let (d, f, m) = stamped();
        let file = d.path().join("stat");
        let mut bytes = std::fs::read(&file).unwrap();
        for i in [0, MAGIC.len() + 3, bytes.len() - 1] {
            bytes[i] ^= 1;
            std::fs::write(&file, &bytes).unwrap();
            age(&file);
            assert!(
                !StatCache::load(&file).vouches(&f, &m, &digest(b"x")),
                "flip at {i}"
            );
            bytes[i] ^= 1;
        }
        // Truncated anywhere: nothing.
        for n in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(parse(&bytes[..n], (i64::MAX, 0)).is_none(), "{n}");
        }
    }

    #[test]
    fn a_path_is_keyed_absolute_and_without_dots() {
        let sc = StatCache::load(Path::new("/nonexistent/stat"));
        let cwd = std::env::current_dir().unwrap();
        let want = path_key(&cwd.join("out/a"));
        assert_eq!(sc.key(Path::new("./out/a")), want);
        assert_eq!(sc.key(Path::new("out/./a")), want);
        assert_eq!(sc.key(Path::new("out/a")), want);
        assert_eq!(
            sc.key(Path::new("/x/./out/a")),
            path_key(Path::new("/x/out/a"))
        );
        assert_ne!(sc.key(Path::new("out/b")), want);
    }

    #[test]
    fn verify_mode_trusts_nothing() {
        let (d, f, m) = stamped();
        let sc = StatCache::load(&d.path().join("stat"));
        assert!(sc.vouches(&f, &m, &digest(b"x")));
        sc.set_trust(false);
        assert!(!sc.vouches(&f, &m, &digest(b"x")));
    }
}
