//! The records log: every task record of a store in one append-only file,
//! `cache/records.log`, read once per run instead of a file per task (the
//! shape of Ninja's `.ninja_log`). It owns the file's framing, its index
//! (task id → its latest entry) and its compaction; what a record says is
//! `cache`'s business: here an entry is an id and some checksummed bytes.
//!
//! **Format.** A header line `mesh-records v1`, then entries of two lines
//! each: one JSON document (it never holds a raw newline) and
//! `#blake3=<hex>`, the digest of the JSON bytes. A record's JSON begins
//! `{"id":"<id>"`; a forgotten task's entry is `{"forget":"<id>"}`. The
//! latest entry of an id is the one that counts.
//!
//! **Reading.** The file is read once, in large pieces, and split into
//! frames: a JSON line followed by a trailer line. What stays in memory is
//! the index: per id, where its latest JSON is, how long, and the digest
//! its trailer names. The id is taken from the entry's first bytes; the
//! bytes are read back (one `pread`), checked against the digest and parsed
//! when that task's record is asked for, on whichever thread asks. A JSON
//! line without a trailer (an edit, a lost newline) names its id as
//! corrupt, and the next line starts a new frame, so one damaged entry
//! never takes its neighbours with it. A last line without its newline, or
//! a JSON line whose trailer never came, is a torn append (a killed run, a
//! power cut): it is not an entry, and the next writer cuts it off before
//! appending. A file whose header is wrong vouches for nothing at all.
//!
//! **Writing** needs the build lock (the caller holds it): an entry is
//! appended with one `write` on an `O_APPEND` descriptor, after its task's
//! blobs are stored, and fsynced when the caller asks (records of
//! effectful tasks). A run killed mid-append leaves a torn tail, which
//! claims nothing. **Compaction** rewrites the file with the latest entry
//! of each id (temp file, fsync, rename) once dead entries outweigh live
//! ones, so the file stays within about twice what it holds.
//!
//! **Views.** Each open store indexes the file on first use and sees its
//! own appends at once; another process's appends are seen by a store
//! opened after them (a writer re-reads the file when it takes the lock).
//! A store of the old layout (`cache/records/`, a file per task) is read
//! as if it were the log, and its first writer moves it into the log.

use crate::hash::Digest;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

const HEADER: &[u8] = b"mesh-records v1\n";
const TRAILER: &[u8] = b"#blake3=";
const RECORD_PREFIX: &[u8] = b"{\"id\":\"";
const FORGET_PREFIX: &[u8] = b"{\"forget\":\"";

/// Where an id's latest entry is.
#[derive(Clone, Debug)]
enum Slot {
    /// In the log: the JSON's offset and length, and the digest its
    /// trailer names (`None`: not a digest). Only this is kept in memory;
    /// the bytes are read back (one `pread`) when the record is asked for.
    File {
        at: u64,
        len: usize,
        sum: Option<Digest>,
        forget: bool,
    },
    /// Read from an old `records/` file, not yet moved into the log.
    Mem {
        json: Arc<Vec<u8>>,
        sum: Option<Digest>,
    },
    /// Its latest entry could not be read (no trailer): the task reruns.
    Damaged(&'static str),
}

/// What the log holds for an id.
#[derive(Debug)]
pub enum Entry {
    Missing,
    /// The entry is damaged: why.
    Corrupt(String),
    /// The JSON bytes, their checksum verified.
    Json(Vec<u8>),
}

#[derive(Debug, Default)]
struct Index {
    slots: HashMap<String, Slot>,
    /// The log, open for reading back entries (none: no file yet).
    file: Option<Arc<File>>,
    /// Bytes of the file that are whole frames (the rest is a torn tail).
    valid_len: u64,
    /// The file's header checked out (or there is no file yet).
    header_ok: bool,
    /// Entries read from an old `records/` directory, still to be moved
    /// into the log.
    legacy: bool,
    /// Bytes of entries that are no one's latest, and of those that are
    /// (compaction weighs them).
    dead: u64,
    live: u64,
}

/// The records log of one store.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    legacy_dir: PathBuf,
    tmp_dir: PathBuf,
    index: RwLock<Option<Index>>,
    /// The append descriptor and the file's length, from the first write
    /// of this run.
    writer: Mutex<Option<(Arc<File>, u64)>>,
}

impl Log {
    /// The log of the store rooted at `root` (nothing is read yet).
    pub fn new(root: &Path) -> Log {
        Log {
            path: root.join("records.log"),
            legacy_dir: root.join("records"),
            tmp_dir: root.join("tmp"),
            index: RwLock::new(None),
            writer: Mutex::new(None),
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with_index<T>(&self, f: impl FnOnce(&Index) -> T) -> T {
        if let Some(ix) = self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return f(ix);
        }
        let mut w = self.index.write().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            *w = Some(read_index(&self.path, &self.legacy_dir));
        }
        f(w.as_ref().expect("just indexed"))
    }

    /// Forget what was read: the next use reads the file again (a writer
    /// taking the lock, which other processes may have written before).
    pub fn reload(&self) {
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = None;
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The latest entry of `id`, its checksum verified.
    pub fn get(&self, id: &str) -> Entry {
        let (slot, file) = self.with_index(|ix| (ix.slots.get(id).cloned(), ix.file.clone()));
        let (json, sum) = match slot {
            None | Some(Slot::File { forget: true, .. }) => return Entry::Missing,
            Some(Slot::Damaged(why)) => return Entry::Corrupt(why.into()),
            Some(Slot::Mem { json, sum }) => (json.to_vec(), sum),
            Some(Slot::File { at, len, sum, .. }) => {
                let mut buf = vec![0; len];
                match file.map(|f| f.read_exact_at(&mut buf, at)) {
                    Some(Ok(())) => (buf, sum),
                    _ => return Entry::Corrupt("unreadable".into()),
                }
            }
        };
        if sum != Some(Digest::of_bytes(&json)) {
            return Entry::Corrupt("checksum mismatch".into());
        }
        Entry::Json(json)
    }

    /// Every id with a record (valid or not).
    pub fn ids(&self) -> Vec<String> {
        self.with_index(|ix| {
            ix.slots
                .iter()
                .filter(|(_, s)| !matches!(s, Slot::File { forget: true, .. }))
                .map(|(id, _)| id.clone())
                .collect()
        })
    }

    /// Append the record `json` of `id` (`durable`: fsync it).
    pub fn append(&self, id: &str, json: &[u8], durable: bool) -> io::Result<()> {
        self.write_entry(id, json, false, durable)
    }

    /// Append that `id` has no record any more (durable: a forgotten
    /// effectful task must not come back).
    pub fn forget(&self, id: &str) -> io::Result<()> {
        if !self.with_index(|ix| ix.slots.contains_key(id)) {
            return Ok(());
        }
        let json =
            serde_json::to_vec(&serde_json::json!({ "forget": id })).expect("an id serializes");
        self.write_entry(id, &json, true, true)
    }

    fn write_entry(&self, id: &str, json: &[u8], forget: bool, durable: bool) -> io::Result<()> {
        let sum = Digest::of_bytes(json);
        let mut entry = Vec::with_capacity(json.len() + TRAILER.len() + 66);
        entry.extend_from_slice(json);
        entry.push(b'\n');
        entry.extend_from_slice(TRAILER);
        entry.extend_from_slice(sum.hex().as_bytes());
        entry.push(b'\n');
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            *w = Some(self.open_writer()?);
        }
        let (f, end) = w.as_mut().expect("just opened");
        let at = *end;
        (&**f).write_all(&entry)?;
        *end += entry.len() as u64;
        if durable {
            f.sync_data()?;
        }
        let file = f.clone();
        drop(w);
        let slot = Slot::File {
            at,
            len: json.len(),
            sum: Some(sum),
            forget,
        };
        let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
        let ix = ix.get_or_insert_with(Index::default);
        ix.file = Some(file);
        let old = ix.slots.insert(id.to_string(), slot);
        ix.count(old, entry.len() as u64);
        ix.valid_len = at + entry.len() as u64;
        Ok(())
    }

    /// Open the file for appending: an old `records/` directory is moved
    /// in, a file whose header is wrong started afresh, a torn tail cut off.
    fn open_writer(&self) -> io::Result<(Arc<File>, u64)> {
        // What is on disk now (we hold the lock: no one else appends).
        let (legacy, header_ok) = self.with_index(|ix| (ix.legacy, ix.header_ok));
        if legacy || !header_ok {
            self.compact_now()?;
        }
        if legacy {
            super::remove_dir(&self.legacy_dir)?;
        }
        let valid_len = self.with_index(|ix| ix.valid_len);
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        let mut len = f.metadata()?.len();
        if len == 0 {
            (&f).write_all(HEADER)?;
            len = HEADER.len() as u64;
        } else if len > valid_len {
            f.set_len(valid_len)?;
            len = valid_len;
        }
        Ok((Arc::new(f), len))
    }

    /// Rewrite the file when dead entries outweigh live ones, or move an
    /// old `records/` directory in (after a build, holding the lock).
    pub fn compact_if_worth_it(&self) -> io::Result<()> {
        let (worth, legacy) = self.with_index(|ix| (ix.dead > ix.live.max(64 * 1024), ix.legacy));
        if worth || legacy {
            *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.compact_now()?;
        }
        if legacy {
            super::remove_dir(&self.legacy_dir)?;
        }
        Ok(())
    }

    /// Write the latest entry of every id to a new file (temp file, fsync,
    /// rename over the log) and index that.
    fn compact_now(&self) -> io::Result<()> {
        let mut ids = self.ids();
        ids.sort();
        let mut bytes = HEADER.to_vec();
        let mut damaged = Vec::new();
        for id in ids {
            match self.get(&id) {
                Entry::Json(json) => {
                    bytes.extend_from_slice(&json);
                    bytes.push(b'\n');
                    bytes.extend_from_slice(TRAILER);
                    bytes.extend_from_slice(Digest::of_bytes(&json).hex().as_bytes());
                    bytes.push(b'\n');
                }
                // Damaged entries stay damaged (in this run): their tasks
                // rerun, and their new records are appended.
                _ => damaged.push(id),
            }
        }
        let tmp = self.tmp_dir.join(format!("records.{}", std::process::id()));
        super::write_via(&tmp, &self.path, &bytes, 0o600, true)?;
        let mut fresh = read_index(&self.path, &self.legacy_dir);
        fresh.legacy = false;
        for id in damaged {
            fresh.slots.insert(id, Slot::Damaged("checksum mismatch"));
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        Ok(())
    }
}

impl Index {
    /// `old` was replaced by an entry of `len` bytes.
    fn count(&mut self, old: Option<Slot>, len: u64) {
        if let Some(Slot::File { len: n, .. }) = old {
            let n = (n + TRAILER.len() + 66) as u64;
            self.dead += n;
            self.live = self.live.saturating_sub(n);
        }
        self.live += len;
    }
}

/// Read and index the log (or, without one, an old `records/` directory).
fn read_index(path: &Path, legacy_dir: &Path) -> Index {
    match File::open(path) {
        Ok(f) => index_file(f).unwrap_or_default(),
        Err(_) => match fs::read_dir(legacy_dir) {
            Ok(entries) => legacy_index(entries),
            Err(_) => Index {
                header_ok: true,
                ..Index::default()
            },
        },
    }
}

/// Index the log frame by frame, keeping the latest entry of each id;
/// read in large pieces, a line at a time, nothing kept but the index.
fn index_file(f: File) -> io::Result<Index> {
    let f = Arc::new(f);
    let mut ix = Index::default();
    let mut r = io::BufReader::with_capacity(1 << 18, &*f);
    // A whole line (with its newline), or nothing at the end of the file
    // or of its last whole line (a torn tail).
    let mut pos = 0u64;
    let mut line = |buf: &mut Vec<u8>| -> io::Result<Option<u64>> {
        buf.clear();
        let n = r.read_until(b'\n', buf)?;
        if n == 0 || !buf.ends_with(b"\n") {
            return Ok(None);
        }
        let at = pos;
        pos += n as u64;
        Ok(Some(at))
    };
    let (mut cur, mut next) = (Vec::new(), Vec::new());
    if line(&mut cur)?.is_none() || cur != HEADER {
        return Ok(ix);
    }
    ix.header_ok = true;
    ix.valid_len = HEADER.len() as u64;
    let mut at = line(&mut cur)?;
    while let Some(start) = at {
        if cur.starts_with(TRAILER) {
            // A trailer without its JSON (the line before it was damaged).
            ix.valid_len = start + cur.len() as u64;
            at = line(&mut cur)?;
            continue;
        }
        let Some(tstart) = line(&mut next)? else {
            break; // a torn append: its trailer never came
        };
        if !next.starts_with(TRAILER) {
            // No trailer: this line is damaged; the next starts a frame.
            if let Some(id) = id_of(&cur) {
                ix.slots.insert(id, Slot::Damaged("no checksum trailer"));
            }
            ix.valid_len = tstart;
            std::mem::swap(&mut cur, &mut next);
            at = Some(tstart);
            continue;
        }
        ix.valid_len = tstart + next.len() as u64;
        if let Some(id) = id_of(&cur) {
            let hex = std::str::from_utf8(&next[TRAILER.len()..next.len() - 1]).ok();
            let slot = Slot::File {
                at: start,
                len: cur.len() - 1,
                sum: hex.and_then(Digest::from_hex),
                forget: cur.starts_with(FORGET_PREFIX),
            };
            let old = ix.slots.insert(id, slot);
            ix.count(old, (cur.len() + next.len()) as u64);
        }
        at = line(&mut cur)?;
    }
    ix.file = Some(f);
    Ok(ix)
}

/// The id an entry's JSON names in its first bytes (`{"id":"…"` or
/// `{"forget":"…"`), if it is spelled without escapes.
fn id_of(json: &[u8]) -> Option<String> {
    let rest = json
        .strip_prefix(RECORD_PREFIX)
        .or_else(|| json.strip_prefix(FORGET_PREFIX))?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    (rest[end] == b'"')
        .then(|| std::str::from_utf8(&rest[..end]).ok().map(str::to_string))
        .flatten()
}

/// The old layout: a file per task, `<json>\n#blake3=<hex>\n`, read as
/// entries (a file that is not one is its task's damaged entry).
fn legacy_index(entries: fs::ReadDir) -> Index {
    let mut ix = Index {
        header_ok: true,
        legacy: true,
        ..Index::default()
    };
    for e in entries.flatten() {
        let Some(id) = e.file_name().to_str().and_then(super::decode_id) else {
            continue;
        };
        let mut bytes = fs::read(e.path()).unwrap_or_default();
        let cut = memchr::memmem::rfind(&bytes, b"\n#blake3=");
        let slot = match cut {
            Some(cut) => {
                let hex = std::str::from_utf8(&bytes[cut + 1 + TRAILER.len()..])
                    .ok()
                    .map(str::trim_end);
                let sum = hex.and_then(Digest::from_hex);
                bytes.truncate(cut);
                Slot::Mem {
                    json: Arc::new(bytes),
                    sum,
                }
            }
            None => Slot::Damaged("no checksum trailer (truncated?)"),
        };
        ix.slots.insert(id, slot);
    }
    ix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, n: u32) -> Vec<u8> {
        format!("{{\"id\":\"{id}\",\"n\":{n}}}").into_bytes()
    }

    fn json(e: Entry) -> String {
        match e {
            Entry::Json(j) => String::from_utf8(j).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// A store's log, as `Cache::open` lays the store out.
    fn fresh(dir: &Path) -> Log {
        fs::create_dir_all(dir.join("tmp")).unwrap();
        Log::new(dir)
    }

    #[test]
    fn the_latest_entry_counts_and_a_forgotten_id_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let log = fresh(d.path());
        log.append("a", &rec("a", 1), false).unwrap();
        log.append("b", &rec("b", 1), true).unwrap();
        log.append("a", &rec("a", 2), false).unwrap();
        assert_eq!(json(log.get("a")), "{\"id\":\"a\",\"n\":2}");
        log.forget("b").unwrap();
        assert!(matches!(log.get("b"), Entry::Missing));
        // Read back by another store, as the next run reads it.
        let again = fresh(d.path());
        assert_eq!(json(again.get("a")), "{\"id\":\"a\",\"n\":2}");
        assert!(matches!(again.get("b"), Entry::Missing));
        assert_eq!(again.ids(), ["a"]);
        let mode = fs::metadata(log.path()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_flipped_byte_damages_one_entry_only() {
        let d = tempfile::tempdir().unwrap();
        let log = fresh(d.path());
        for id in ["a", "b", "c"] {
            log.append(id, &rec(id, 1), false).unwrap();
        }
        let mut bytes = fs::read(log.path()).unwrap();
        // In b's JSON: its checksum no longer matches.
        let at = bytes.windows(5).position(|w| w == b"\"b\",\"").unwrap() + 9;
        bytes[at] = b'7';
        fs::write(log.path(), &bytes).unwrap();
        let again = fresh(d.path());
        assert!(matches!(again.get("b"), Entry::Corrupt(_)));
        assert_eq!(json(again.get("a")), "{\"id\":\"a\",\"n\":1}");
        assert_eq!(json(again.get("c")), "{\"id\":\"c\",\"n\":1}");
        // b's newline lost: b is damaged, c still reads.
        let mut bytes = fs::read(log.path()).unwrap();
        let nl = bytes.windows(5).position(|w| w == b"\"b\",\"").unwrap();
        let nl = nl + bytes[nl..].iter().position(|&x| x == b'\n').unwrap();
        bytes[nl] = b' ';
        fs::write(log.path(), &bytes).unwrap();
        let again = fresh(d.path());
        assert!(matches!(again.get("b"), Entry::Corrupt(_)));
        assert_eq!(json(again.get("c")), "{\"id\":\"c\",\"n\":1}");
    }

    #[test]
    fn a_torn_append_claims_nothing_and_the_next_writer_cuts_it_off() {
        let d = tempfile::tempdir().unwrap();
        let log = fresh(d.path());
        log.append("a", &rec("a", 1), false).unwrap();
        log.append("b", &rec("b", 1), false).unwrap();
        let whole = fs::read(log.path()).unwrap();
        // Killed halfway through a's second entry: JSON written, trailer not.
        let mut torn = whole.clone();
        torn.extend_from_slice(b"{\"id\":\"a\",\"n\":2}\n#blake3=12");
        fs::write(log.path(), &torn).unwrap();
        let again = fresh(d.path());
        assert_eq!(json(again.get("a")), "{\"id\":\"a\",\"n\":1}");
        again.append("c", &rec("c", 1), false).unwrap();
        let third = fresh(d.path());
        assert_eq!(json(third.get("a")), "{\"id\":\"a\",\"n\":1}");
        assert_eq!(json(third.get("c")), "{\"id\":\"c\",\"n\":1}");
        let now = fs::read(log.path()).unwrap();
        assert!(now.starts_with(&whole) && !now.windows(3).any(|w| w == b"=12"));
    }

    #[test]
    fn a_wrong_header_vouches_for_nothing() {
        let d = tempfile::tempdir().unwrap();
        let log = fresh(d.path());
        log.append("a", &rec("a", 1), false).unwrap();
        let mut bytes = fs::read(log.path()).unwrap();
        bytes[0] = b'M';
        fs::write(log.path(), &bytes).unwrap();
        let again = fresh(d.path());
        assert!(matches!(again.get("a"), Entry::Missing));
        again.append("b", &rec("b", 1), false).unwrap();
        let third = fresh(d.path());
        assert!(matches!(third.get("a"), Entry::Missing));
        assert_eq!(json(third.get("b")), "{\"id\":\"b\",\"n\":1}");
    }

    #[test]
    fn compaction_keeps_the_latest_of_each_and_damage_stays_damage() {
        let d = tempfile::tempdir().unwrap();
        let log = fresh(d.path());
        let big = |n| {
            format!(
                "{{\"id\":\"a\",\"n\":{n},\"pad\":\"{}\"}}",
                "x".repeat(4096)
            )
            .into_bytes()
        };
        for n in 0..40 {
            log.append("a", &big(n), false).unwrap();
        }
        log.append("b", &rec("b", 1), false).unwrap();
        log.append("c", &rec("c", 1), false).unwrap();
        log.forget("c").unwrap();
        let before = fs::metadata(log.path()).unwrap().len();
        log.compact_if_worth_it().unwrap();
        let after = fs::metadata(log.path()).unwrap().len();
        assert!(after * 10 < before, "{before} -> {after}");
        for l in [&log, &fresh(d.path())] {
            assert!(json(l.get("a")).contains("\"n\":39"));
            assert_eq!(json(l.get("b")), "{\"id\":\"b\",\"n\":1}");
            assert!(matches!(l.get("c"), Entry::Missing));
        }
        // Appends after a compaction land in the new file.
        log.append("b", &rec("b", 2), false).unwrap();
        assert_eq!(json(fresh(d.path()).get("b")), "{\"id\":\"b\",\"n\":2}");
    }

    #[test]
    fn an_old_records_directory_is_read_and_moved_in_by_the_first_writer() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("records");
        fs::create_dir_all(&dir).unwrap();
        let j = rec("x:east", 1);
        let mut file = j.clone();
        file.extend_from_slice(b"\n#blake3=");
        file.extend_from_slice(Digest::of_bytes(&j).hex().as_bytes());
        file.push(b'\n');
        fs::write(dir.join(crate::cache::encode_id("x:east")), &file).unwrap();
        fs::write(dir.join("y"), b"{\"id\":\"y\"").unwrap();
        let log = fresh(d.path());
        assert_eq!(
            json(log.get("x:east")),
            String::from_utf8(j.clone()).unwrap()
        );
        assert!(matches!(log.get("y"), Entry::Corrupt(_)));
        log.append("z", &rec("z", 1), false).unwrap();
        assert!(!dir.exists());
        let again = fresh(d.path());
        assert_eq!(json(again.get("x:east")), String::from_utf8(j).unwrap());
        assert_eq!(json(again.get("z")), "{\"id\":\"z\",\"n\":1}");
    }
}
