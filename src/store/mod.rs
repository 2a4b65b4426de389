//! The content-addressed object store that template trees are made of.
//!
//! Every regular file of every template is an *object*: one inode under
//! `store/objects/xx/<id>`, hardlinked into each template tree that contains
//! an identical file. "Identical" means more than equal bytes: the object id is
//! a SHA-256 over the content digest **and** the owner, group, permission bits
//! and every extended attribute (file capabilities, POSIX ACLs, SELinux
//! labels). A hardlink shares the inode, so two files that differ only in mode
//! or owner must never be unified, or fixing one would silently change the
//! other.
//!
//! The link count is the reference count: an object whose `st_nlink` is 1 is
//! referenced by no template and [`gc`] removes it. That makes removal of a
//! template a plain `rm -r` of its tree, and crash recovery a matter of
//! deleting stale staging directories.
//!
//! What this module must never do:
//! - write into an existing object. Objects are only ever *created* (by
//!   linking a fully written, not-yet-visible staging file to its final name
//!   with `link(2)`, which refuses to replace) and *removed* (by gc, only when
//!   unreferenced). Nothing opens an object for writing.
//! - follow a symlink inside a tree it ingests: files are opened with
//!   `O_NOFOLLOW` and linked by file descriptor (`AT_EMPTY_PATH`), so the inode
//!   hashed is exactly the inode stored.
//! - hand out objects to guests for writing. Guests get reflinks or overlay
//!   upper layers (see `rootfs`); only template trees hardlink objects.

#![deny(unsafe_code)]

mod ingest;
mod manifest;

pub(crate) use ingest::read_xattrs_fd;
pub use ingest::{IngestStats, ingest_tree};
pub use manifest::{Entry, EntryKind, Manifest, tree_digest};

use crate::paths::Paths;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Errors from the object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error with the path it happened on.
    #[error("{action} {path}: {source}")]
    Io {
        /// What vsctl was doing, e.g. "hashing".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A name in a tree is not valid UTF-8 (manifests are JSON text).
    #[error("path {0:?} is not valid UTF-8; template trees must use UTF-8 names")]
    NonUtf8Path(PathBuf),
    /// The tree and the store are on different filesystems, so files cannot be
    /// hardlinked into the store.
    #[error(
        "template tree {tree} and store {store} are on different filesystems; both must live under the same state directory filesystem"
    )]
    CrossDevice {
        /// The tree being ingested.
        tree: PathBuf,
        /// The objects directory.
        store: PathBuf,
    },
    /// The manifest could not be read or written.
    #[error("manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The store directory could not be made root's only.
    #[error(transparent)]
    Access(#[from] crate::host_access::HostAccessError),
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn errno(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(nix::errno::Errno) -> StoreError {
        let path = path.into();
        move |e| StoreError::Io {
            action,
            path,
            source: std::io::Error::from(e),
        }
    }
}

/// The object store rooted at `paths.store_dir()`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store of a host layout. Nothing is created until [`Store::create`].
    pub fn new(paths: &Paths) -> Store {
        Store {
            dir: paths.store_dir(),
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `objects/`: one subdirectory per first id byte.
    pub fn objects_dir(&self) -> PathBuf {
        self.dir.join("objects")
    }

    /// `tmp/`: where objects that must be copied (not consumed) are written
    /// before they get their final name. Anything here is garbage after a crash.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The path of one object.
    pub fn object_path(&self, id: &str) -> PathBuf {
        self.objects_dir().join(&id[..2]).join(&id[2..])
    }

    /// The lock file serialising builds, removals and gc.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Create the directory layout (idempotent). The 256 fan-out directories
    /// are made up front so that parallel ingestion never races on mkdir.
    /// The store is root's only: its objects keep the modes of template
    /// files, setuid bits included (see [`crate::host_access`]).
    pub fn create(&self) -> Result<(), StoreError> {
        self.make_private()?;
        let objects = self.objects_dir();
        fs::create_dir_all(&objects).map_err(StoreError::io("creating", &objects))?;
        fs::create_dir_all(self.tmp_dir()).map_err(StoreError::io("creating", self.tmp_dir()))?;
        for b in 0..=255u8 {
            let d = objects.join(format!("{b:02x}"));
            match fs::create_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io("creating", d)(e)),
            }
        }
        Ok(())
    }

    /// Take the store-wide exclusive lock (blocking). Builds, removals and gc
    /// hold it; gc in particular must never run while a build has objects
    /// linked only from a staging tree that is about to be renamed.
    pub fn lock(&self) -> Result<StoreLock, StoreError> {
        self.make_private()?;
        let path = self.lock_path();
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::host_access::PRIVATE_FILE_MODE)
            .open(&path)
            .map_err(StoreError::io("opening", &path))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| StoreError::errno("locking", &path)(e))?;
        Ok(StoreLock { _lock: lock })
    }
}

impl Store {
    fn make_private(&self) -> Result<(), StoreError> {
        use crate::host_access::{Access, Follow, ensure_dir};
        Ok(ensure_dir(&self.dir, Access::Private, Follow::No)?)
    }
}

/// Held while the store is being changed; released on drop (or process death).
#[derive(Debug)]
pub struct StoreLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// The metadata that, together with the content digest, identifies an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey<'a> {
    /// SHA-256 of the content, hex.
    pub content_digest: &'a str,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Extended attributes, sorted by name, values raw.
    pub xattrs: &'a [(String, Vec<u8>)],
}

/// The object id: SHA-256 over a versioned, unambiguous encoding of content
/// digest and metadata. Length-prefixing every variable field means no two
/// different keys can encode to the same bytes.
pub fn object_id(key: &ObjectKey<'_>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"vsctl-object-v1\0");
    h.update(key.content_digest.as_bytes());
    h.update(key.uid.to_le_bytes());
    h.update(key.gid.to_le_bytes());
    h.update((key.mode & 0o7777).to_le_bytes());
    h.update((key.xattrs.len() as u64).to_le_bytes());
    for (name, value) in key.xattrs {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    }
    hex(&h.finalize())
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What [`gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Objects no template referenced.
    pub removed_objects: u64,
    /// Their apparent sizes, summed, plus stale temporary files.
    pub freed_bytes: u64,
    /// Stale temporary files and interrupted staging trees removed.
    pub removed_stale: u64,
    /// Image-strategy template images of removed or rebuilt templates
    /// (filled in by the caller, which knows where guests live).
    pub removed_template_images: u64,
}

/// Remove every object that no template tree links to (`st_nlink == 1`), every
/// stale temporary file, and every interrupted template staging directory.
///
/// Holds the store lock, so no build is running: every `NAME.building` or
/// `NAME.removing` directory is left over from a killed process.
pub fn gc(paths: &Paths) -> Result<GcReport, StoreError> {
    let store = Store::new(paths);
    store.create()?;
    let _lock = store.lock()?;
    let mut report = GcReport::default();
    report.removed_stale += crate::template::remove_stale_staging(paths)?;

    let tmp = store.tmp_dir();
    for entry in fs::read_dir(&tmp).map_err(StoreError::io("reading", &tmp))? {
        let entry = entry.map_err(StoreError::io("reading", &tmp))?;
        let p = entry.path();
        let md = fs::symlink_metadata(&p).map_err(StoreError::io("inspecting", &p))?;
        if md.is_dir() {
            fs::remove_dir_all(&p).map_err(StoreError::io("removing", &p))?;
        } else {
            fs::remove_file(&p).map_err(StoreError::io("removing", &p))?;
        }
        report.freed_bytes += md.len();
        report.removed_stale += 1;
    }

    let objects = store.objects_dir();
    for fan in fs::read_dir(&objects).map_err(StoreError::io("reading", &objects))? {
        let fan = fan.map_err(StoreError::io("reading", &objects))?.path();
        for obj in fs::read_dir(&fan).map_err(StoreError::io("reading", &fan))? {
            let p = obj.map_err(StoreError::io("reading", &fan))?.path();
            let md = fs::symlink_metadata(&p).map_err(StoreError::io("inspecting", &p))?;
            // Only our own temporary names start with '.'; an interrupted
            // ingestion can leave one behind.
            let stale_tmp = p
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
            if md.nlink() == 1 || stale_tmp {
                fs::remove_file(&p).map_err(StoreError::io("removing", &p))?;
                report.freed_bytes += md.len();
                if stale_tmp {
                    report.removed_stale += 1;
                } else {
                    report.removed_objects += 1;
                }
            }
        }
    }
    Ok(report)
}

/// Check that `tree` and the objects dir are on one filesystem.
pub(crate) fn same_device(store: &Store, tree: &Path) -> Result<(), StoreError> {
    let a = fs::metadata(store.objects_dir())
        .map_err(StoreError::io("inspecting", store.objects_dir()))?;
    let b = fs::metadata(tree).map_err(StoreError::io("inspecting", tree))?;
    if a.dev() != b.dev() {
        return Err(StoreError::CrossDevice {
            tree: tree.to_path_buf(),
            store: store.objects_dir(),
        });
    }
    Ok(())
}
