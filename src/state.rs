//! Durable state, apart from the disposable cache: what the mesh *is* and
//! what mesh *owns* in the world. `cache/` may be deleted at any time
//! (`mesh clean`, a lost disk); `state/`, beside the plan, may not.
//!
//! It holds two things:
//!
//! - a root rotation in progress (`identity/rotation.json`: its phase and
//!   the new root, see [`Rotation`]);
//! - the mesh's identity: the root CA (`identity/root-cert.pem`,
//!   `identity/root-key.pem`) and the parameters it was made with
//!   (`identity/root.json`, written last: the commit point). `pki.root`
//!   restores the root from here instead of minting a new one, so a cache
//!   loss or an unrelated `[pki]` edit keeps the trust anchor;
//! - the inventory (`inventory.json`): every resource mesh created in the
//!   world: kind clusters, and what tasks installed into existing clusters
//!   (objects and Helm releases, with their cluster), each with its phase. Intent is recorded
//!   before acting (`creating`) and confirmed after (`created`); a kill in
//!   between leaves `creating`, which the next run settles by asking the
//!   world (kind lists the cluster or not), never by hand editing. A kind
//!   cluster of a planned name that is not in the inventory is not mesh's:
//!   mesh neither deletes it nor installs into it (`mesh adopt` records it).
//!
//! Every write is atomic (a temp file renamed over the old one, fsynced),
//! files are 0600 in 0700 directories whatever the umask, and nothing here
//! is ever printed. Writers hold the build lock (build, destroy, adopt);
//! within a process, inventory updates are serialized by a mutex. The
//! process's store is set once by the command line ([`init`]) and read by
//! the tasks that need it ([`get`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The state directory beside a plan.
pub const DIR: &str = "state";
const INVENTORY: &str = "inventory.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state {path}: {reason}")]
pub struct StateError {
    pub path: String,
    pub reason: String,
}

fn serr(path: &Path, reason: impl std::fmt::Display) -> StateError {
    StateError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Where a resource mesh owns stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// mesh is about to create it (or was killed while creating it).
    Creating,
    /// mesh created it.
    Created,
    /// It existed; the user gave it to mesh (`mesh adopt`).
    Adopted,
}

/// One resource mesh owns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owned {
    /// What it is: `kind-cluster`, or `install` (what a task applied to an
    /// existing cluster; `name` is the task's id).
    pub kind: String,
    pub name: String,
    pub phase: Phase,
    /// An install's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// An install's objects and Helm releases (the task's receipt): while
    /// `creating`, what it is about to apply (and what it applied before);
    /// once `created`, what it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<serde_json::Value>,
}

pub const KIND_CLUSTER: &str = "kind-cluster";
pub const INSTALL: &str = "install";

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    #[serde(default)]
    pub format: u32,
    #[serde(default)]
    pub resources: Vec<Owned>,
}

impl Inventory {
    pub fn phase(&self, kind: &str, name: &str) -> Option<Phase> {
        self.resources
            .iter()
            .find(|r| r.kind == kind && r.name == name)
            .map(|r| r.phase)
    }

    /// What tasks installed into existing clusters, oldest first.
    pub fn installs(&self) -> Vec<Owned> {
        self.resources
            .iter()
            .filter(|r| r.kind == INSTALL)
            .cloned()
            .collect()
    }

    /// The kind clusters mesh owns, in name order.
    pub fn kind_clusters(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .resources
            .iter()
            .filter(|r| r.kind == KIND_CLUSTER)
            .map(|r| r.name.clone())
            .collect();
        v.sort();
        v
    }
}

/// The mesh's root CA and what it was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The root's parameters, as `pki.root` states them.
    pub params: serde_json::Value,
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Store {
    dir: PathBuf,
    write: Mutex<()>,
}

static STORE: OnceLock<Store> = OnceLock::new();

/// Set this process's store (the command line does, once).
pub fn init(dir: &Path) {
    let s = Store::at(dir);
    s.tighten();
    let _ = STORE.set(s);
}

/// This process's store, if the command line set one.
pub fn get() -> Option<&'static Store> {
    STORE.get()
}

fn mkdir_private(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| serr(dir, e))?;
    // Whatever the umask, and whatever an earlier run left.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| serr(dir, e))
}

/// Write `bytes` to `path` atomically, 0600, fsynced.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("a state file has a directory");
    mkdir_private(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| serr(&tmp, e))?;
    f.write_all(bytes).map_err(|e| serr(&tmp, e))?;
    f.sync_all().map_err(|e| serr(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| serr(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl Store {
    /// The store in `dir` (created on first write).
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            write: Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Put back modes found looser than the store writes them (by hand,
    /// or by an older mesh): its directories 0700, its files 0600. Best
    /// effort, a few `stat`s; writing tightens again anyway.
    fn tighten(&self) {
        use std::os::unix::fs::PermissionsExt;
        let fix = |p: &Path, want: u32| {
            if let Ok(m) = std::fs::symlink_metadata(p)
                && !m.file_type().is_symlink()
                && m.permissions().mode() & 0o7777 != want
            {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(want));
            }
        };
        for d in [self.dir.clone(), self.dir.join("identity")] {
            fix(&d, 0o700);
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    fix(&e.path(), 0o600);
                }
            }
        }
    }

    /// The inventory; empty when there is none yet. A file that does not
    /// parse is an error naming it: ownership is never guessed.
    pub fn inventory(&self) -> Result<Inventory, StateError> {
        let path = self.dir.join(INVENTORY);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| serr(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Inventory::default()),
            Err(e) => Err(serr(&path, e)),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Inventory)) -> Result<(), StateError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut inv = self.inventory()?;
        f(&mut inv);
        inv.format = FORMAT;
        inv.resources
            .sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        let bytes = serde_json::to_vec_pretty(&inv).expect("the inventory serializes");
        write_private(&self.dir.join(INVENTORY), &bytes)
    }

    /// Record `kind`/`name` in `phase`.
    pub fn set(&self, kind: &str, name: &str, phase: Phase) -> Result<(), StateError> {
        self.update(|inv| {
            inv.resources
                .retain(|r| !(r.kind == kind && r.name == name));
            inv.resources.push(Owned {
                kind: kind.into(),
                name: name.into(),
                phase,
                cluster: None,
                holds: None,
            });
        })
    }

    /// Record what task `id` is installing (`Creating`) or installed
    /// (`Created`) in existing cluster `cluster`. An entry keeps its place:
    /// the inventory's order is the order installs began, which undo
    /// reverses (dependents began after what they depend on).
    pub fn set_install(
        &self,
        id: &str,
        cluster: &str,
        phase: Phase,
        holds: serde_json::Value,
    ) -> Result<(), StateError> {
        self.update(|inv| {
            let entry = Owned {
                kind: INSTALL.into(),
                name: id.into(),
                phase,
                cluster: Some(cluster.into()),
                holds: Some(holds),
            };
            match inv
                .resources
                .iter_mut()
                .find(|r| r.kind == INSTALL && r.name == id)
            {
                Some(r) => *r = entry,
                None => inv.resources.push(entry),
            }
        })
    }

    /// Forget `kind`/`name` (it is gone from the world).
    pub fn forget(&self, kind: &str, name: &str) -> Result<(), StateError> {
        self.update(|inv| {
            inv.resources
                .retain(|r| !(r.kind == kind && r.name == name))
        })
    }

    /// Delete the mesh's identity (the root CA): the parameters first (the
    /// commit point: without them there is no identity), then the rest.
    /// True if there was one.
    pub fn forget_identity(&self) -> Result<bool, StateError> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.dir.join("identity");
        let params = d.join("root.json");
        let had = match std::fs::remove_file(&params) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(serr(&params, e)),
        };
        match std::fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(serr(&d, e)),
        }
        Ok(had)
    }

    /// The mesh's identity, if one was saved.
    pub fn identity(&self) -> Result<Option<Identity>, StateError> {
        let d = self.dir.join("identity");
        let params_path = d.join("root.json");
        let params = match std::fs::read(&params_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| serr(&params_path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(serr(&params_path, e)),
        };
        let read = |f: &str| {
            let p = d.join(f);
            std::fs::read_to_string(&p).map_err(|e| serr(&p, e))
        };
        Ok(Some(Identity {
            params,
            cert_pem: read("root-cert.pem")?,
            key_pem: read("root-key.pem")?,
        }))
    }

    /// Save the mesh's identity: key and cert first, the parameters last
    /// (a kill before them leaves no identity, never a half one).
    pub fn save_identity(&self, id: &Identity) -> Result<(), StateError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.dir.join("identity");
        let _ = std::fs::remove_file(d.join("root.json"));
        write_private(&d.join("root-key.pem"), id.key_pem.as_bytes())?;
        write_private(&d.join("root-cert.pem"), id.cert_pem.as_bytes())?;
        let params = serde_json::to_vec_pretty(&id.params).expect("params serialize");
        write_private(&d.join("root.json"), &params)
    }

    /// The root rotation in progress, if any.
    pub fn rotation(&self) -> Result<Option<Rotation>, StateError> {
        let p = self.dir.join("identity").join(ROTATION);
        // Planning reads it (its phase is an input of pki.root).
        crate::seen::look(&p);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| serr(&p, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(serr(&p, e)),
        }
    }

    /// Record a rotation's phase (intent: written before the phase's build).
    pub fn save_rotation(&self, r: &Rotation) -> Result<(), StateError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let d = self.dir.join("identity");
        mkdir_private(&d)?;
        write_private(
            &d.join(ROTATION),
            &serde_json::to_vec_pretty(r).expect("a rotation serializes"),
        )
    }

    /// End a rotation: the new root becomes the identity, then the rotation
    /// record goes (a kill in between leaves phase 3 recorded with the new
    /// identity: finishing again is harmless).
    pub fn finish_rotation(&self, r: &Rotation) -> Result<(), StateError> {
        self.save_identity(&Identity {
            params: r.params.clone(),
            cert_pem: r.cert_pem.clone(),
            key_pem: r.key_pem.clone(),
        })?;
        let p = self.dir.join("identity").join(ROTATION);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(serr(&p, e)),
            _ => Ok(()),
        }
    }
}

const ROTATION: &str = "rotation.json";

/// A root rotation in progress, as Istio's plug-in CA rotation does it, in
/// three phases, each a whole build (new `cacerts`, istiod and the
/// workloads restarted): 1. every cluster trusts both roots, still signing
/// with the old; 2. intermediates signed by the new root, both trusted;
/// 3. only the new root trusted. Holds the new root (0600, never printed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    pub phase: u8,
    /// The new root's parameters (the plan's `[pki]`).
    pub params: serde_json::Value,
    pub cert_pem: String,
    pub key_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_inventory_round_trips_privately_and_a_corrupt_one_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::at(&d.path().join("state"));
        assert_eq!(s.inventory().unwrap(), Inventory::default());
        s.set(KIND_CLUSTER, "west", Phase::Creating).unwrap();
        s.set(KIND_CLUSTER, "east", Phase::Created).unwrap();
        s.set(KIND_CLUSTER, "west", Phase::Created).unwrap();
        let inv = s.inventory().unwrap();
        assert_eq!(inv.kind_clusters(), ["east", "west"]);
        assert_eq!(inv.phase(KIND_CLUSTER, "west"), Some(Phase::Created));
        s.forget(KIND_CLUSTER, "east").unwrap();
        assert_eq!(s.inventory().unwrap().kind_clusters(), ["west"]);
        assert_eq!(mode(&d.path().join("state")), 0o700);
        assert_eq!(mode(&d.path().join("state/inventory.json")), 0o600);
        std::fs::write(d.path().join("state/inventory.json"), "{not json").unwrap();
        let e = s.inventory().unwrap_err().to_string();
        assert!(e.contains("inventory.json"), "{e}");
        assert!(s.set(KIND_CLUSTER, "x", Phase::Created).is_err());
    }

    #[test]
    fn an_identity_is_whole_or_absent() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::at(&d.path().join("state"));
        assert_eq!(s.identity().unwrap(), None);
        let id = Identity {
            params: serde_json::json!({"algorithm": "ecdsa-p256", "root_days": 10}),
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
        };
        s.save_identity(&id).unwrap();
        assert_eq!(s.identity().unwrap(), Some(id));
        assert_eq!(mode(&d.path().join("state/identity/root-key.pem")), 0o600);
        assert_eq!(mode(&d.path().join("state/identity")), 0o700);
        // Without its parameters (a kill mid-save), there is none.
        std::fs::remove_file(d.path().join("state/identity/root.json")).unwrap();
        assert_eq!(s.identity().unwrap(), None);
    }
}
