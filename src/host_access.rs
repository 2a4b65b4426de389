//! Who on the host may reach vsctl's own directories and files.
//!
//! Template trees, store objects and guests' root filesystems hold
//! setuid-root binaries and device nodes with the modes the guest or the
//! template gave them; a guest's record and runtime spec hold its `[env]`,
//! secrets included. None of that may be reachable by an unprivileged host
//! user (the Docker CVE-2021-41091 class; LXD and Incus keep their trees
//! the same way). So, under the state directory:
//!
//! | path                         | mode | why                                   |
//! |------------------------------|------|---------------------------------------|
//! | `STATE` and `STATE/guests`   | 0711 | passed (never listed) by the init of an unprivileged guest with a shifted tree |
//! | `STATE/store`, `templates`, `guests/.images` | 0700 | root only |
//! | `STATE/guests/NAME`          | 0700, or 0710 `root:GUEST_ROOT_GID` | see [`guest_dir_access`] |
//! | records, specs, run states, console logs | 0600 | the guest's environment, its console |
//!
//! The run directory (`RUN` and `RUN/NAME`) is 0711: an unprivileged
//! guest's init mounts its root on `RUN/NAME/root` and binds its notify
//! socket from there from inside its user namespace; its files are 0600.
//! The log directory is made 0700 when vsctl creates it; an existing one is
//! left as the administrator made it (it may be shared, say `/var/log`), its
//! console logs are 0600 whatever it is.
//!
//! Installs made by older versions had all of this 0755/0644: the next
//! `apply` or `start` tightens what exists ([`secure_all`],
//! [`secure_guest`]). What this module must never do: follow a symlink
//! below the configured state and run directories, or touch anything inside
//! a guest's or a template's tree.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::paths::Paths;
use crate::rootfs::RootfsLayout;
use crate::state::GuestRecord;

/// Mode of every file only root may read.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Who besides root may pass through a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// 0700 `root:root`: nobody else.
    Private,
    /// 0711: anyone may pass through to a child whose name they know (never
    /// list); the child's own mode decides the rest.
    Traverse,
    /// 0710 `root:GID`: only the group `gid`, the host gid of an
    /// unprivileged guest's root, may pass through.
    GuestTraverse { gid: u32 },
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Private => 0o700,
            Access::Traverse => 0o711,
            Access::GuestTraverse { .. } => 0o710,
        }
    }

    /// The owner to set, if the access needs one.
    fn owner(self) -> Option<(u32, u32)> {
        match self {
            Access::Private => Some((0, 0)),
            Access::Traverse => None,
            Access::GuestTraverse { gid } => Some((0, gid)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostAccessError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
}

fn io_err<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> HostAccessError + 'p {
    move |source| HostAccessError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a path's last component may be a symlink: the configured state
/// and run directories may be (an administrator's `/var/lib/vsctl ->
/// /srv/vsctl`); nothing vsctl made below them may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    Yes,
    No,
}

fn open_dir(path: &Path, follow: Follow) -> Result<Option<OwnedFd>, HostAccessError> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if follow == Follow::No {
        flags |= OFlag::O_NOFOLLOW;
    }
    match nix::fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(nix::Error::ENOENT) => Ok(None),
        Err(nix::Error::ENOTDIR | nix::Error::ELOOP) => Err(HostAccessError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err("open", path)(e.into())),
    }
}

/// Give the open directory `fd` exactly `access` (owner where it has one).
fn set_access(fd: &OwnedFd, path: &Path, access: Access) -> Result<(), HostAccessError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| io_err("stat", path)(e.into()))?;
    if let Some((uid, gid)) = access.owner()
        && (st.st_uid, st.st_gid) != (uid, gid)
    {
        nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| io_err("change the owner of", path)(e.into()))?;
    }
    if st.st_mode & 0o7777 != access.mode() {
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(access.mode()))
            .map_err(|e| io_err("change the mode of", path)(e.into()))?;
    }
    Ok(())
}

/// Make `path` a directory with exactly `access`: create it (and missing
/// parents, with the usual modes) or tighten (or fix) the existing one.
pub fn ensure_dir(path: &Path, access: Access, follow: Follow) -> Result<(), HostAccessError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    match fs::DirBuilder::new().mode(access.mode()).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", path)(e)),
    }
    let fd = open_dir(path, follow)?
        .ok_or_else(|| io_err("open", path)(io::Error::from(io::ErrorKind::NotFound)))?;
    set_access(&fd, path, access)
}

/// Create `path` with `access` unless it exists (an existing one is left
/// as it is: its access is [`secure_guest`]'s to decide).
pub fn create_dir(path: &Path, access: Access) -> Result<(), HostAccessError> {
    match fs::DirBuilder::new().mode(access.mode()).create(path) {
        Ok(()) => {
            // The umask may have taken bits the access needs.
            let fd = open_dir(path, Follow::No)?
                .ok_or_else(|| io_err("open", path)(io::Error::from(io::ErrorKind::NotFound)))?;
            set_access(&fd, path, access)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create", path)(e)),
    }
}

/// Give an existing directory exactly `access`; a missing one is fine.
pub fn tighten_dir(path: &Path, access: Access, follow: Follow) -> Result<(), HostAccessError> {
    match open_dir(path, follow)? {
        Some(fd) => set_access(&fd, path, access),
        None => Ok(()),
    }
}

/// Make an existing file mode 0600 (never following a symlink); a missing
/// one is fine.
pub fn tighten_file(path: &Path) -> Result<(), HostAccessError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    set_file_private(&file, path)
}

fn set_file_private(file: &File, path: &Path) -> Result<(), HostAccessError> {
    let md = file.metadata().map_err(io_err("stat", path))?;
    if md.mode() & 0o7777 != PRIVATE_FILE_MODE {
        file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
            .map_err(io_err("change the mode of", path))?;
    }
    Ok(())
}

/// Create or replace the content of `path` (never through a symlink) as a
/// file only root may read, tightening an existing file's mode too.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HostAccessError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("create", path))?;
    set_file_private(&file, path)?;
    file.write_all(bytes).map_err(io_err("write", path))
}

/// A guest directory's access. An unprivileged guest whose root is a tree
/// of its own (a reflink or copy clone, shifted into its id range) has its
/// init bind-mount that tree from inside its user namespace, where it is
/// the host uid and gid of the guest's root: the guest root's group may pass
/// through (0710 `root:GID`), nobody else. Every other guest's root reaches
/// the guest through mounts the supervisor makes as host root (idmapped
/// trees and layers, images), or its init is host root (privileged): 0700.
pub fn guest_dir_access(record: &GuestRecord) -> Access {
    match (&record.rootfs, record.id_range) {
        (Some(RootfsLayout::Tree { .. }), Some(range)) if record.spec.security.userns => {
            Access::GuestTraverse {
                gid: range.host_base,
            }
        }
        _ => Access::Private,
    }
}

/// The state and run directories of `paths` with the access of the table
/// above: the state directory is created if missing, the rest tightened
/// where they exist (their makers create them with the right access).
pub fn secure_layout(paths: &Paths) -> Result<(), HostAccessError> {
    ensure_dir(&paths.state_dir, Access::Traverse, Follow::Yes)?;
    for private in [
        paths.store_dir(),
        paths.template_trees_dir(),
        template_images_dir(paths),
    ] {
        tighten_dir(&private, Access::Private, Follow::No)?;
    }
    tighten_dir(&paths.guests_state_dir(), Access::Traverse, Follow::No)?;
    tighten_dir(&paths.run_dir, Access::Traverse, Follow::Yes)
}

/// Where the image strategy keeps template images (next to the guests: a
/// reflink cannot cross filesystems).
pub fn template_images_dir(paths: &Paths) -> PathBuf {
    paths.guests_state_dir().join(".images")
}

/// The layout, every recorded guest ([`secure_guest`]), and the directory
/// of every guest without a record (a root filesystem `--prune` kept):
/// root's only. What `vsctl apply` runs before its plan.
pub fn secure_all<'r>(
    paths: &Paths,
    records: impl IntoIterator<Item = &'r GuestRecord>,
) -> Result<(), HostAccessError> {
    secure_layout(paths)?;
    let mut recorded = std::collections::BTreeSet::new();
    for record in records {
        secure_guest(paths, record)?;
        recorded.insert(record.spec.name.as_str());
    }
    let guests = paths.guests_state_dir();
    let entries = match fs::read_dir(&guests) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list", &guests)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("list", &guests))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Hidden entries are vsctl's own (template images, probes).
        if name.starts_with('.')
            || recorded.contains(name)
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        tighten_dir(&entry.path(), Access::Private, Follow::No)?;
    }
    Ok(())
}

/// One recorded guest's directory, record, run directory and files, and
/// console logs, with the access of the table above.
pub fn secure_guest(paths: &Paths, record: &GuestRecord) -> Result<(), HostAccessError> {
    let name = &record.spec.name;
    let dir = paths.guest_dir(name);
    tighten_dir(&dir, guest_dir_access(record), Follow::No)?;
    tighten_file(&dir.join("record.json"))?;
    let run = paths.guest_run_dir(name);
    tighten_dir(&run, Access::Traverse, Follow::No)?;
    for file in ["spec.json", "state.json"] {
        tighten_file(&run.join(file))?;
    }
    let log = crate::lifecycle::log_file(paths, name);
    let mut rotated = log.clone().into_os_string();
    rotated.push(".1");
    tighten_file(&log)?;
    tighten_file(Path::new(&rotated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn directories_get_exactly_their_access_whatever_the_umask_or_old_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a/b");
        ensure_dir(&a, Access::Traverse, Follow::Yes).unwrap();
        assert_eq!(mode(&a), 0o711);
        fs::set_permissions(&a, fs::Permissions::from_mode(0o4777)).unwrap();
        ensure_dir(&a, Access::Private, Follow::No).unwrap();
        assert_eq!(mode(&a), 0o700);
        tighten_dir(&a, Access::GuestTraverse { gid: 12345 }, Follow::No).unwrap();
        assert_eq!(mode(&a), 0o710);
        assert_eq!(fs::metadata(&a).unwrap().gid(), 12345);
        tighten_dir(&a, Access::Private, Follow::No).unwrap();
        assert_eq!(fs::metadata(&a).unwrap().gid(), 0);
        // Missing: nothing to tighten, nothing created.
        tighten_dir(&dir.path().join("none"), Access::Private, Follow::No).unwrap();
        assert!(!dir.path().join("none").exists());
        // An existing directory is left alone by create_dir.
        fs::set_permissions(&a, fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&a, Access::Private).unwrap();
        assert_eq!(mode(&a), 0o755);
        let c = dir.path().join("c");
        create_dir(&c, Access::Private).unwrap();
        assert_eq!(mode(&c), 0o700);
    }

    #[test]
    fn symlinks_below_the_configured_directories_are_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            tighten_dir(&link, Access::Private, Follow::No),
            Err(HostAccessError::NotADirectory { .. })
        ));
        assert_eq!(mode(&target), 0o755);
        tighten_dir(&link, Access::Traverse, Follow::Yes).unwrap();
        assert_eq!(mode(&target), 0o711);
        let file_link = dir.path().join("file-link");
        fs::write(dir.path().join("f"), b"x").unwrap();
        fs::set_permissions(dir.path().join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("f"), &file_link).unwrap();
        assert!(tighten_file(&file_link).is_err());
        assert!(write_private(&file_link, b"y").is_err());
        assert_eq!(mode(&dir.path().join("f")), 0o644);
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"x");
    }

    #[test]
    fn private_files_are_0600_new_or_old() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("spec.json");
        write_private(&f, b"{}").unwrap();
        assert_eq!(mode(&f), 0o600);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&f, b"{\"a\":1}").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(fs::read(&f).unwrap(), b"{\"a\":1}");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        tighten_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        tighten_file(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn everything_an_older_version_left_open_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under_root(dir.path());
        let mut record = GuestRecord::new(crate::state::tests::spec("web1"));
        record.spec.security.userns = true;
        record.id_range = Some(crate::state::IdRange {
            host_base: 1 << 24,
            count: 65536,
        });
        record.rootfs = Some(RootfsLayout::Tree {
            path: paths.guest_dir("web1").join("rootfs"),
        });
        let open_dirs = [
            paths.state_dir.clone(),
            paths.store_dir(),
            paths.template_trees_dir(),
            template_images_dir(&paths),
            paths.guest_dir("web1"),
            paths.guest_dir("web1").join("rootfs"),
            paths.guest_dir("pruned"),
            paths.guest_run_dir("web1"),
        ];
        for d in &open_dirs {
            fs::create_dir_all(d).unwrap();
        }
        let open_files = [
            paths.guest_dir("web1").join("record.json"),
            paths.guest_run_dir("web1").join("spec.json"),
            paths.guest_run_dir("web1").join("state.json"),
            crate::lifecycle::log_file(&paths, "web1"),
        ];
        fs::create_dir_all(&paths.log_dir).unwrap();
        for f in &open_files {
            fs::write(f, b"{}").unwrap();
        }
        for p in open_dirs.iter().chain(&open_files).chain([&paths.run_dir]) {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(&paths.log_dir, fs::Permissions::from_mode(0o755)).unwrap();
        secure_all(&paths, [&record]).unwrap();
        assert_eq!(mode(&paths.state_dir), 0o711);
        assert_eq!(mode(&paths.guests_state_dir()), 0o711);
        assert_eq!(mode(&paths.run_dir), 0o711);
        assert_eq!(mode(&paths.guest_run_dir("web1")), 0o711);
        for private in [
            paths.store_dir(),
            paths.template_trees_dir(),
            template_images_dir(&paths),
            paths.guest_dir("pruned"),
        ] {
            assert_eq!(mode(&private), 0o700, "{}", private.display());
        }
        assert_eq!(mode(&paths.guest_dir("web1")), 0o710);
        assert_eq!(
            fs::metadata(paths.guest_dir("web1")).unwrap().gid(),
            1 << 24
        );
        for f in &open_files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        // Inside the guest's tree nothing changes; an existing log
        // directory is the administrator's.
        assert_eq!(mode(&paths.guest_dir("web1").join("rootfs")), 0o755);
        assert_eq!(mode(&paths.log_dir), 0o755);
    }

    #[test]
    fn only_unprivileged_guests_with_a_tree_of_their_own_get_a_group_to_pass() {
        let mut record = GuestRecord::new(crate::state::tests::spec("g"));
        let range = crate::state::IdRange {
            host_base: 1 << 24,
            count: 65536,
        };
        let tree = RootfsLayout::Tree {
            path: "/x/rootfs".into(),
        };
        let overlay = RootfsLayout::Overlay {
            lower: "/t".into(),
            upper: "/x/overlay/upper".into(),
            work: "/x/overlay/work".into(),
        };
        let image = RootfsLayout::Image {
            path: "/x/rootfs.img".into(),
        };
        // (userns, layout, access)
        for (userns, layout, want) in [
            (
                true,
                Some(tree.clone()),
                Access::GuestTraverse { gid: 1 << 24 },
            ),
            (false, Some(tree), Access::Private),
            (true, Some(overlay.clone()), Access::Private),
            (false, Some(overlay), Access::Private),
            (true, Some(image), Access::Private),
            (true, None, Access::Private),
        ] {
            record.spec.security.userns = userns;
            record.id_range = userns.then_some(range);
            record.rootfs = layout;
            assert_eq!(guest_dir_access(&record), want, "{record:?}");
        }
    }
}
