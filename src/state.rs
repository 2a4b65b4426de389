//! The state store: what vsctl has applied, one record per guest, and the
//! lock that serialises applies.
//!
//! Records are written atomically (temp file, fsync, rename, fsync of the
//! directory) so a crash leaves either the old or the new record, never half
//! of one. Nothing here deletes a guest's root filesystem: unregistering
//! removes only the record file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::GuestSpec;
use crate::host_access::{self, Access, Follow, HostAccessError};
use crate::paths::Paths;
use crate::rootfs::RootfsLayout;

/// Version of the record format; bumped on incompatible changes.
pub const RECORD_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt record {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("another vsctl apply holds the lock {path}")]
    Locked { path: PathBuf },
    #[error(transparent)]
    Access(#[from] HostAccessError),
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> StateError + 'p {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A uid/gid range on the host given to one unprivileged guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub host_base: u32,
    pub count: u32,
}

/// What vsctl has applied for one guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestRecord {
    pub format_version: u32,
    /// The spec as last applied.
    pub spec: GuestSpec,
    /// Digest of the template tree the rootfs was cloned from.
    pub template_digest: Option<String>,
    pub rootfs: Option<RootfsLayout>,
    pub id_range: Option<IdRange>,
    /// Project id for disk quotas.
    pub project_id: Option<u32>,
}

impl GuestRecord {
    pub fn new(spec: GuestSpec) -> GuestRecord {
        GuestRecord {
            format_version: RECORD_FORMAT,
            spec,
            template_digest: None,
            rootfs: None,
            id_range: None,
            project_id: None,
        }
    }
}

/// The lowest free uid/gid range for a new unprivileged guest: ranges are
/// 65,536 ids from `first_id`, `ranges` of them, and never overlap a range
/// already recorded. Pure, so allocation is tested by tables.
pub fn allocate_id_range(used: &[IdRange], first_id: u32, ranges: u32) -> Option<IdRange> {
    const SIZE: u32 = 65_536;
    (0..ranges)
        .map(|n| IdRange {
            host_base: first_id + n * SIZE,
            count: SIZE,
        })
        .find(|candidate| {
            used.iter().all(|u| {
                let (a0, a1) = (
                    u64::from(candidate.host_base),
                    u64::from(candidate.host_base) + u64::from(candidate.count),
                );
                let (b0, b1) = (
                    u64::from(u.host_base),
                    u64::from(u.host_base) + u64::from(u.count),
                );
                a1 <= b0 || b1 <= a0
            })
        })
}

/// The lowest project id (for disk quotas) not used by another guest.
/// Starts high so it does not collide with project ids an administrator
/// set up by hand in /etc/projid.
pub fn allocate_project_id(used: &[u32]) -> u32 {
    (100_000u32..)
        .find(|id| !used.contains(id))
        .expect("fewer than 4 billion guests")
}

/// Access to the records under `state_dir/guests/NAME/record.json`.
#[derive(Debug, Clone)]
pub struct StateStore {
    state_dir: PathBuf,
    guests_dir: PathBuf,
    lock_file: PathBuf,
}

impl StateStore {
    pub fn new(paths: &Paths) -> StateStore {
        StateStore {
            state_dir: paths.state_dir.clone(),
            guests_dir: paths.guests_state_dir(),
            lock_file: paths.lock_file(),
        }
    }

    pub fn record_path(&self, name: &str) -> PathBuf {
        self.guests_dir.join(name).join("record.json")
    }

    /// All records. A missing state dir means none (and is not created).
    pub fn records(&self) -> Result<BTreeMap<String, GuestRecord>, StateError> {
        let mut records = BTreeMap::new();
        let entries = match fs::read_dir(&self.guests_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(records),
            Err(e) => return Err(io_err("list", &self.guests_dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.guests_dir))?;
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            // Guests are directories with guest names; hidden entries are
            // vsctl's own scratch files (a reflink probe a killed apply
            // left behind, say).
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(record) = self.read(&name)? {
                records.insert(name, record);
            }
        }
        Ok(records)
    }

    pub fn read(&self, name: &str) -> Result<Option<GuestRecord>, StateError> {
        let path = self.record_path(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Write a record atomically, readable by root only (it holds the
    /// guest's environment). Unchanged content is not rewritten, so an
    /// apply with nothing to do leaves every mtime as it was (a record an
    /// older vsctl left readable is tightened instead). A new guest's
    /// directory is made root's only (see [`host_access`]).
    pub fn write(&self, record: &GuestRecord) -> Result<(), StateError> {
        let path = self.record_path(&record.spec.name);
        let mut bytes = serde_json::to_vec_pretty(record).expect("records always serialize");
        bytes.push(b'\n');
        if fs::read(&path).is_ok_and(|old| old == bytes) {
            host_access::tighten_file(&path)?;
            return Ok(());
        }
        host_access::ensure_dir(&self.state_dir, Access::Traverse, Follow::Yes)?;
        host_access::ensure_dir(&self.guests_dir, Access::Traverse, Follow::No)?;
        host_access::create_dir(path.parent().expect("record has a parent"), Access::Private)?;
        write_atomic(&path, &bytes)
    }

    /// Forget a guest: remove its record only (its rootfs stays).
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.record_path(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().expect("record has a parent")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Take the global apply lock. With `wait`, block (saying so on stderr)
    /// until the holder releases it; otherwise fail at once.
    pub fn lock(&self, wait: bool) -> Result<ApplyLock, StateError> {
        host_access::ensure_dir(&self.state_dir, Access::Traverse, Follow::Yes)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_file)
            .map_err(io_err("open", &self.lock_file))?;
        use nix::fcntl::{Flock, FlockArg};
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(ApplyLock { _lock: lock }),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                if !wait {
                    return Err(StateError::Locked {
                        path: self.lock_file.clone(),
                    });
                }
                eprintln!(
                    "vsctl: waiting for another vsctl apply to finish (lock {})",
                    self.lock_file.display()
                );
                Flock::lock(file, FlockArg::LockExclusive)
                    .map(|lock| ApplyLock { _lock: lock })
                    .map_err(|(_, e)| io_err("lock", &self.lock_file)(e.into()))
            }
            Err((_, e)) => Err(io_err("lock", &self.lock_file)(e.into())),
        }
    }
}

/// Held for the duration of an apply; released on drop (or when the process dies).
#[derive(Debug)]
pub struct ApplyLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Write `bytes` to `path` so that readers see the old or the new content,
/// never a mixture, even across a crash. The file is root's only (0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().expect("atomic write target has a parent");
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let file_name = path
        .file_name()
        .expect("atomic write target has a name")
        .to_string_lossy();
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(host_access::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(io_err("create", &temp))?;
    // A stale temporary file of an earlier process keeps its own mode.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
        host_access::PRIVATE_FILE_MODE,
    ))
    .map_err(io_err("change the mode of", &temp))?;
    file.write_all(bytes).map_err(io_err("write", &temp))?;
    file.sync_all().map_err(io_err("sync", &temp))?;
    drop(file);
    fs::rename(&temp, path).map_err(io_err("rename into place", path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::guest::*;

    pub(crate) fn spec(name: &str) -> GuestSpec {
        GuestSpec {
            name: name.into(),
            template: "busybox".into(),
            hostname: name.into(),
            state: DesiredState::Running,
            protect: false,
            network: Default::default(),
            limits: Default::default(),
            disk: Default::default(),
            rootfs: Default::default(),
            init: Default::default(),
            security: Default::default(),
            mounts: vec![],
            env: Default::default(),
        }
    }

    #[test]
    fn records_skip_scratch_files_beside_the_guests() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&Paths::under_root(dir.path()));
        store.write(&GuestRecord::new(spec("web1"))).unwrap();
        let guests = store
            .record_path("web1")
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        // What a killed apply's reflink probe leaves, and a stray file.
        fs::write(guests.join(".vsctl-reflink-probe-1-2-a"), b"x").unwrap();
        fs::write(guests.join("notes.txt"), b"x").unwrap();
        let names: Vec<String> = store.records().unwrap().into_keys().collect();
        assert_eq!(names, ["web1"]);
    }

    #[test]
    fn records_round_trip_and_unchanged_writes_keep_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&Paths::under_root(dir.path()));
        assert!(store.records().unwrap().is_empty());
        let record = GuestRecord::new(spec("web1"));
        store.write(&record).unwrap();
        let path = store.record_path("web1");
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.write(&record).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(store.records().unwrap().get("web1"), Some(&record));
        store.remove("web1").unwrap();
        assert!(store.read("web1").unwrap().is_none());
    }

    #[test]
    fn id_ranges_never_overlap_by_table() {
        let r = |b| IdRange {
            host_base: b,
            count: 65_536,
        };
        let first = 1 << 24;
        // (used, expected)
        let table: Vec<(Vec<IdRange>, Option<u32>)> = vec![
            (vec![], Some(first)),
            (vec![r(first)], Some(first + 65_536)),
            (vec![r(first + 65_536)], Some(first)),
            (vec![r(first), r(first + 2 * 65_536)], Some(first + 65_536)),
            // A range recorded off the grid blocks the two slots it touches.
            (
                vec![IdRange {
                    host_base: first + 1000,
                    count: 65_536,
                }],
                Some(first + 2 * 65_536),
            ),
            ((0..4).map(|n| r(first + n * 65_536)).collect(), None),
        ];
        for (used, expected) in table {
            assert_eq!(
                allocate_id_range(&used, first, 4).map(|x| x.host_base),
                expected,
                "{used:?}"
            );
        }
        assert_eq!(allocate_project_id(&[100_000, 100_002]), 100_001);
    }

    #[test]
    fn second_lock_fails_without_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&Paths::under_root(dir.path()));
        let _held = store.lock(false).unwrap();
        assert!(matches!(store.lock(false), Err(StateError::Locked { .. })));
    }
}
