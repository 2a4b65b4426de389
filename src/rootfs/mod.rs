//! Guest root filesystems: copy-on-write clones of template trees, built so
//! that a crash at any point leaves either no rootfs or a complete one, and
//! host-side writes of guest files that cannot be redirected by the guest.
//!
//! A template tree is a farm of hardlinks into the content-addressed store,
//! shared by every guest made from it. A guest's rootfs must therefore never
//! share a *writable* inode with the template or with another guest: one
//! guest writing a file in place would change it everywhere. The strategies
//! here give each guest its own inodes: `reflink` (every regular file a
//! FICLONE of the template's, so blocks are shared until written), `copy`
//! (a full copy), `overlay` (the template is a read-only lower layer and
//! the guest writes into its own upper directory), or `image` (an ext4
//! image of the guest's own, one FICLONE of the template's image, see
//! [`image`]). See docs/rootfs.md.
//!
//! What this module must never do: rebuild or overwrite an existing guest
//! rootfs implicitly (`build_rootfs` returns an existing one untouched; only
//! `purge_rootfs`, called on an explicit user request, deletes), follow a
//! symlink out of a guest or template tree when writing, or cross into
//! another filesystem while deleting.

#![deny(unsafe_code)]

mod clone;
pub mod guestfile;
pub mod image;
mod overlay;
pub use overlay::mounts_under;
mod remove;
#[allow(unsafe_code)]
mod sys;

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, RenameFlags, renameat2};
use nix::sys::stat::Mode;

pub use overlay::{mount_overlay, unmount};

/// The `[rootfs] strategy` setting: how a guest's root filesystem is made from
/// its template.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CloneStrategy {
    /// Reflink when the state directory's filesystem can, else overlay.
    #[default]
    Auto,
    /// Every regular file a FICLONE of the template's; fails where unsupported.
    Reflink,
    /// Template as read-only lower layer, per-guest upper and work directories.
    Overlay,
    /// A full, independent copy.
    Copy,
    /// An ext4 image file per guest, a whole-file reflink of the template's
    /// image, loop-mounted while the guest runs; fails where unsupported.
    Image,
}

/// A strategy after [`resolve`]: what will actually be done on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolvedStrategy {
    Reflink,
    Overlay,
    Copy,
    Image,
}

/// Ownership shift for unprivileged guests on filesystems without idmapped
/// mounts: every uid/gid `u < count` in the template becomes `host_base + u`
/// in the clone (also inside ACLs and file capabilities). Ids outside the
/// range are an error, never silently squashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IdShift {
    pub host_base: u32,
    pub count: u32,
}

/// Where a guest's root filesystem lives; stored in the guest record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RootfsLayout {
    /// A complete tree (reflink or copy strategy).
    Tree { path: PathBuf },
    /// Overlay layers; the runtime mounts them with [`mount_overlay`].
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
    },
    /// An ext4 image file; the runtime mounts it with [`image::mount`].
    Image { path: PathBuf },
}

impl RootfsLayout {
    /// The tree to pass to `quota::apply`: the rootfs itself, or for overlay
    /// the directory holding upper/ and work/ (both must be in the quota
    /// tree, see `build_rootfs`).
    pub fn quota_root(&self) -> &Path {
        match self {
            RootfsLayout::Tree { path } => path,
            RootfsLayout::Overlay { upper, .. } => upper.parent().unwrap_or(upper),
            // Sized, not quota'd: see `image::resize_offline`.
            RootfsLayout::Image { path } => path,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the filesystem holding {path} cannot reflink ({source}); use an XFS filesystem made with \
         `mkfs.xfs -m reflink=1`, btrfs, bcachefs or ZFS with block cloning, or set \
         `[rootfs] strategy = \"overlay\"` or \"copy\""
    )]
    ReflinkUnsupported {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what} {id} is outside the shifted range 0..{count}")]
    IdShiftOutOfRange {
        path: PathBuf,
        what: &'static str,
        id: u32,
        count: u32,
    },
    #[error("set xattr {name} on {path}: {source}")]
    Xattr {
        path: PathBuf,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is on another filesystem; refusing to cross a mount or subvolume boundary")]
    CrossesFilesystem { path: PathBuf },
    #[error("{path}: unknown file type")]
    UnknownFileType { path: PathBuf },
    #[error(
        "{path} changed while being cloned (replaced by another file); template trees must not change"
    )]
    ChangedDuringClone { path: PathBuf },
    #[error("{path} contains ',', ':', '\\' or a newline, which overlayfs options cannot carry")]
    BadOverlayPath { path: PathBuf },
    #[error("mount overlay at {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unmount {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} exists but is not a directory (or is a symlink); refusing to use it as a rootfs"
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "{path}: ownership shifting cannot be combined with the overlay strategy (the lower layer \
         keeps the template's ids); use reflink or copy"
    )]
    ShiftWithOverlay { path: PathBuf },
    #[error("{path}: the {strategy} strategy does not make a tree; use build_rootfs")]
    NotATree {
        path: PathBuf,
        strategy: &'static str,
    },
    #[error("{path}: the image strategy clones the template's image; use build_image_rootfs")]
    ImageNeedsTemplateImage { path: PathBuf },
    #[error(
        "{path} is in use by {by}; an ext4 image must never be mounted twice \
         (is the guest running?)"
    )]
    ImageInUse { path: PathBuf, by: String },
    #[error(
        "{path}: ext4 cannot shrink while mounted; stop the guest, then apply again to shrink its image"
    )]
    ImageShrinkWhileRunning { path: PathBuf },
    #[error(
        "{tool} is not installed; the image strategy needs e2fsprogs (apt-get install e2fsprogs)"
    )]
    ToolMissing { tool: &'static str },
    #[error("{tool} {path} failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("create btrfs subvolume {path}: {source}")]
    Subvolume {
        path: PathBuf,
        #[source]
        source: crate::quota::QuotaError,
    },
    #[error("guest file {rel} under {root}: {reason}")]
    GuestPath {
        root: PathBuf,
        rel: String,
        reason: String,
    },
    #[error("guest file {rel} under {root}: {op}: {source}")]
    GuestIo {
        root: PathBuf,
        rel: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(op: &'static str, path: &Path, e: impl Into<std::io::Error>) -> RootfsError {
    RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Decide the concrete strategy for guests kept under `state_dir`.
///
/// Reflink support is probed with a real FICLONE of a small temporary file in
/// `state_dir` (created if missing): filesystem type alone does not tell
/// (XFS without `reflink=1`, ZFS without block cloning).
pub fn resolve(
    requested: CloneStrategy,
    state_dir: &Path,
) -> Result<ResolvedStrategy, RootfsError> {
    match requested {
        CloneStrategy::Overlay => Ok(ResolvedStrategy::Overlay),
        CloneStrategy::Copy => Ok(ResolvedStrategy::Copy),
        CloneStrategy::Reflink => {
            probe_reflink(state_dir)?;
            Ok(ResolvedStrategy::Reflink)
        }
        CloneStrategy::Image => {
            probe_reflink(state_dir)?;
            Ok(ResolvedStrategy::Image)
        }
        CloneStrategy::Auto => match probe_reflink(state_dir) {
            Ok(()) => Ok(ResolvedStrategy::Reflink),
            Err(RootfsError::ReflinkUnsupported { .. }) => Ok(ResolvedStrategy::Overlay),
            Err(e) => Err(e),
        },
    }
}

const REFLINK_PROBE_PREFIX: &str = ".vsctl-reflink-probe-";

/// Remove probe files that a killed vsctl left behind (their pid is gone).
fn remove_stale_probes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(REFLINK_PROBE_PREFIX))
        else {
            continue;
        };
        let pid_gone = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(crate::sys::pid_gone);
        if pid_gone && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn probe_reflink(dir: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    remove_stale_probes(dir);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let a = dir.join(format!(
        "{REFLINK_PROBE_PREFIX}{}-{stamp}-a",
        std::process::id()
    ));
    let b = dir.join(format!(
        "{REFLINK_PROBE_PREFIX}{}-{stamp}-b",
        std::process::id()
    ));
    let result = (|| {
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(p)
                .map_err(|e| io_err("create", p, e))
        };
        let mut fa = open(&a)?;
        fa.write_all(&[0x5a; 4096])
            .map_err(|e| io_err("write", &a, e))?;
        let fb = open(&b)?;
        sys::ficlone(fb.as_fd(), fa.as_fd()).map_err(|e| RootfsError::ReflinkUnsupported {
            path: dir.to_path_buf(),
            source: e,
        })
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    result
}

/// Clone the tree `src` to the new directory `dst` (which must not exist, or
/// be an empty directory such as a fresh btrfs subvolume) with every attribute
/// kept; see the `clone` submodule for what "faithful" covers. Only `Reflink`
/// and `Copy` make trees; for `Overlay` use [`build_rootfs`].
pub fn clone_tree(
    src: &Path,
    dst: &Path,
    strategy: ResolvedStrategy,
    shift: Option<IdShift>,
) -> Result<(), RootfsError> {
    let mode = match strategy {
        ResolvedStrategy::Reflink => clone::DataMode::Reflink,
        ResolvedStrategy::Copy => clone::DataMode::Copy,
        ResolvedStrategy::Overlay | ResolvedStrategy::Image => {
            return Err(RootfsError::NotATree {
                path: dst.to_path_buf(),
                strategy: if strategy == ResolvedStrategy::Image {
                    "image"
                } else {
                    "overlay"
                },
            });
        }
    };
    match std::fs::create_dir(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let md = std::fs::symlink_metadata(dst).map_err(|e| io_err("stat", dst, e))?;
            if !md.is_dir() {
                return Err(RootfsError::NotADirectory {
                    path: dst.to_path_buf(),
                });
            }
            if std::fs::read_dir(dst)
                .map_err(|e| io_err("read", dst, e))?
                .next()
                .is_some()
            {
                return Err(io_err(
                    "clone into",
                    dst,
                    std::io::Error::from_raw_os_error(libc::ENOTEMPTY),
                ));
            }
        }
        Err(e) => return Err(io_err("create", dst, e)),
    }
    clone::clone_into(src, dst, mode, shift)
}

const BUILDING: &str = ".building";

fn existing_dir(p: &Path) -> Result<bool, RootfsError> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => Ok(true),
        Ok(_) => Err(RootfsError::NotADirectory {
            path: p.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("stat", p, e)),
    }
}

fn open_dir(p: &Path) -> Result<std::os::fd::OwnedFd, RootfsError> {
    nix::fcntl::open(
        p,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open", p, e))
}

/// How much of the new tree must be made durable before it is published.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// A whole cloned tree: syncfs, one flush instead of one fsync per file.
    Filesystem,
    /// A single new (empty) directory: fsync it alone.
    Directory,
    /// Made durable by whoever built it (an image file, fsynced by the
    /// clone and the resize): only the rename remains.
    Synced,
}

/// Move `name.building` to `name` inside `dir`, never replacing anything, and
/// make the rename durable.
fn publish(dir: &Path, name: &str, durability: Durability) -> Result<(), RootfsError> {
    let dfd = open_dir(dir)?;
    let tmp = format!("{name}{BUILDING}");
    // Data and metadata of the new tree reach the disk before the name that
    // declares it complete.
    match durability {
        Durability::Filesystem => {
            nix::unistd::syncfs(&dfd).map_err(|e| io_err("syncfs", dir, e))?
        }
        Durability::Directory => {
            let p = dir.join(&tmp);
            let fd = open_dir(&p)?;
            nix::unistd::fsync(&fd).map_err(|e| io_err("fsync", &p, e))?;
        }
        Durability::Synced => {}
    }
    renameat2(
        &dfd,
        tmp.as_str(),
        &dfd,
        name,
        RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| io_err("rename into place", &dir.join(name), e))?;
    nix::unistd::fsync(&dfd).map_err(|e| io_err("fsync", dir, e))
}

/// Build a guest's root filesystem from `template_tree` under `guest_dir`.
///
/// Crash-safe: the tree is built as `rootfs.building` (overlay:
/// `overlay.building/{upper,work}`) and renamed into place only when
/// complete; a stale `*.building` from a killed run is removed first. An
/// existing `rootfs` (or `overlay`) is returned untouched, never rebuilt. On
/// btrfs the tree (or the overlay directory) is made a subvolume so it can
/// carry its own qgroup.
pub fn build_rootfs(
    template_tree: &Path,
    guest_dir: &Path,
    strategy: ResolvedStrategy,
    shift: Option<IdShift>,
) -> Result<RootfsLayout, RootfsError> {
    std::fs::create_dir_all(guest_dir).map_err(|e| io_err("create", guest_dir, e))?;
    match strategy {
        ResolvedStrategy::Image => Err(RootfsError::ImageNeedsTemplateImage {
            path: guest_dir.to_path_buf(),
        }),
        ResolvedStrategy::Reflink | ResolvedStrategy::Copy => {
            let path = guest_dir.join("rootfs");
            if existing_dir(&path)? {
                return Ok(RootfsLayout::Tree { path });
            }
            cleanup_partial(guest_dir)?;
            if strategy == ResolvedStrategy::Reflink {
                // Fail with the clear error before creating anything.
                probe_reflink(guest_dir)?;
            }
            let building = guest_dir.join(format!("rootfs{BUILDING}"));
            if crate::quota::is_btrfs(guest_dir) {
                crate::quota::btrfs::create_subvolume(guest_dir, OsStr::new("rootfs.building"))
                    .map_err(|source| RootfsError::Subvolume {
                        path: building.clone(),
                        source,
                    })?;
            }
            clone_tree(template_tree, &building, strategy, shift)?;
            publish(guest_dir, "rootfs", Durability::Filesystem)?;
            Ok(RootfsLayout::Tree { path })
        }
        ResolvedStrategy::Overlay => {
            if shift.is_some() {
                return Err(RootfsError::ShiftWithOverlay {
                    path: guest_dir.to_path_buf(),
                });
            }
            // upper/ and work/ live together in one directory (on btrfs one
            // subvolume): overlayfs copy-up creates files in work/ and
            // renames or links them into upper/, which fails with EXDEV
            // across btrfs subvolumes and across XFS/ext4 project-quota
            // trees. That directory is also what gets the quota.
            let dir = guest_dir.join("overlay");
            let upper = dir.join("upper");
            let work = dir.join("work");
            let layout = RootfsLayout::Overlay {
                lower: template_tree.to_path_buf(),
                upper: upper.clone(),
                work: work.clone(),
            };
            if existing_dir(&dir)? {
                // Published, so upper/ (the guest's data) was complete: never
                // touch it, and never silently replace it if it went missing.
                if !existing_dir(&upper)? {
                    return Err(RootfsError::NotADirectory { path: upper });
                }
                // work/ holds only overlayfs scratch state: recreating a
                // missing one loses nothing.
                if !existing_dir(&work)? {
                    make_work_dir(&work)?;
                }
                return Ok(layout);
            }
            cleanup_partial(guest_dir)?;
            let building = guest_dir.join(format!("overlay{BUILDING}"));
            if crate::quota::is_btrfs(guest_dir) {
                // Its own subvolume, so the guest's writes get their own qgroup.
                crate::quota::btrfs::create_subvolume(guest_dir, OsStr::new("overlay.building"))
                    .map_err(|source| RootfsError::Subvolume {
                        path: building.clone(),
                        source,
                    })?;
            } else {
                std::fs::create_dir(&building).map_err(|e| io_err("create", &building, e))?;
            }
            std::fs::set_permissions(
                &building,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .map_err(|e| io_err("chmod", &building, e))?;
            let bupper = building.join("upper");
            std::fs::create_dir(&bupper).map_err(|e| io_err("create", &bupper, e))?;
            // The merged root takes its attributes from the upper root.
            copy_root_attrs(template_tree, &bupper)?;
            make_work_dir(&building.join("work"))?;
            let fd = open_dir(&bupper)?;
            nix::unistd::fsync(&fd).map_err(|e| io_err("fsync", &bupper, e))?;
            publish(guest_dir, "overlay", Durability::Directory)?;
            Ok(layout)
        }
    }
}

/// Build a guest's root filesystem image `guest_dir/rootfs.img` as a clone of
/// `template_image` sized `size` bytes (see [`image`]), crash-safe like
/// [`build_rootfs`]: made as `rootfs.img.building`, published by rename; an
/// existing image is returned untouched. Unprivileged guests use it through
/// an idmapped mount, so ownership is never shifted.
pub fn build_image_rootfs(
    template_image: &Path,
    guest_dir: &Path,
    size: u64,
) -> Result<RootfsLayout, RootfsError> {
    std::fs::create_dir_all(guest_dir).map_err(|e| io_err("create", guest_dir, e))?;
    let path = image::guest_image(guest_dir);
    match std::fs::symlink_metadata(&path) {
        Ok(md) if md.is_file() => return Ok(RootfsLayout::Image { path }),
        Ok(_) => return Err(RootfsError::NotADirectory { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", &path, e)),
    }
    cleanup_partial(guest_dir)?;
    let building = guest_dir.join(format!("{}{BUILDING}", image::IMAGE_NAME));
    image::clone_image(template_image, &building)?;
    image::resize_offline(&building, size)?;
    publish(guest_dir, image::IMAGE_NAME, Durability::Synced)?;
    Ok(RootfsLayout::Image { path })
}

fn make_work_dir(work: &Path) -> Result<(), RootfsError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(work) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create", work, e)),
    }
}

fn copy_root_attrs(template: &Path, dir: &Path) -> Result<(), RootfsError> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(template).map_err(|e| io_err("stat", template, e))?;
    std::os::unix::fs::chown(dir, Some(md.uid()), Some(md.gid()))
        .map_err(|e| io_err("chown", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| io_err("chmod", dir, e))?;
    let t = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dir,
        &t(md.atime(), md.atime_nsec()),
        &t(md.mtime(), md.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_err("set times", dir, e))
}

/// Remove stale `*.building` entries left by an interrupted build (and the
/// `*.resizing` copies of an interrupted image resize), and only those.
/// Never touches `rootfs`, `overlay` or `rootfs.img`.
pub fn cleanup_partial(guest_dir: &Path) -> Result<(), RootfsError> {
    let dfd = match nix::fcntl::open(
        guest_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io_err("open", guest_dir, e)),
    };
    for ent in std::fs::read_dir(guest_dir).map_err(|e| io_err("read", guest_dir, e))? {
        let ent = ent.map_err(|e| io_err("read", guest_dir, e))?;
        let name = ent.file_name();
        let bytes = name.as_encoded_bytes();
        if bytes.ends_with(BUILDING.as_bytes()) || bytes.ends_with(image::RESIZING.as_bytes()) {
            remove::remove_entry(&dfd, guest_dir, &name)?;
        }
    }
    Ok(())
}

/// Delete a guest's root filesystem (tree, overlay layers or image, and any
/// partial build). Only for an explicit user request (`--recreate`, `--prune
/// --purge`). Everything mounted at or below `guest_dir` is detached first;
/// the delete walk never follows symlinks nor crosses filesystems.
pub fn purge_rootfs(guest_dir: &Path) -> Result<(), RootfsError> {
    // The guest directory itself must be a real directory: a symlink there
    // would aim the delete at whatever it points to.
    match std::fs::symlink_metadata(guest_dir) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(RootfsError::NotADirectory {
                path: guest_dir.to_path_buf(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("stat", guest_dir, e)),
    }
    let guest_dir = match std::fs::canonicalize(guest_dir) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("resolve", guest_dir, e)),
    };
    let mounts =
        overlay::mounts_under(&guest_dir).map_err(|e| io_err("read mountinfo", &guest_dir, e))?;
    for m in mounts {
        // Detached mounts vanish from the tree at once, so the walk below
        // cannot descend into them even if still busy.
        overlay::detach(&m)?;
    }
    cleanup_partial(&guest_dir)?;
    let dfd = open_dir(&guest_dir)?;
    for name in ["rootfs", "overlay", image::IMAGE_NAME] {
        remove::remove_entry(&dfd, &guest_dir, OsStr::new(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_reflink_probes_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22: this pid cannot be running.
        let dead = dir
            .path()
            .join(format!("{REFLINK_PROBE_PREFIX}99999999-1-a"));
        let live = dir
            .path()
            .join(format!("{REFLINK_PROBE_PREFIX}{}-1-a", std::process::id()));
        let other = dir.path().join("web1");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        remove_stale_probes(dir.path());
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(other.exists());
    }

    #[test]
    fn strategy_config_spelling() {
        #[derive(serde::Deserialize)]
        struct Cfg {
            strategy: CloneStrategy,
        }
        for (s, want) in [
            ("auto", CloneStrategy::Auto),
            ("reflink", CloneStrategy::Reflink),
            ("overlay", CloneStrategy::Overlay),
            ("copy", CloneStrategy::Copy),
            ("image", CloneStrategy::Image),
        ] {
            let c: Cfg = toml::from_str(&format!("strategy = \"{s}\"")).unwrap();
            assert_eq!(c.strategy, want);
        }
        assert!(toml::from_str::<Cfg>("strategy = \"hardlink\"").is_err());
    }

    #[test]
    fn layout_round_trips_through_json() {
        for l in [
            RootfsLayout::Tree {
                path: "/var/lib/vsctl/guests/a/rootfs".into(),
            },
            RootfsLayout::Overlay {
                lower: "/var/lib/vsctl/templates/t".into(),
                upper: "/var/lib/vsctl/guests/a/overlay/upper".into(),
                work: "/var/lib/vsctl/guests/a/overlay/work".into(),
            },
            RootfsLayout::Image {
                path: "/var/lib/vsctl/guests/a/rootfs.img".into(),
            },
        ] {
            let j = serde_json::to_string(&l).unwrap();
            assert_eq!(serde_json::from_str::<RootfsLayout>(&j).unwrap(), l);
        }
        let j = serde_json::to_value(RootfsLayout::Tree { path: "/x".into() }).unwrap();
        assert_eq!(j["kind"], "tree");
    }

    #[test]
    fn overlay_is_not_a_tree() {
        let e = clone_tree(
            Path::new("/nonexistent-src"),
            Path::new("/nonexistent-dst"),
            ResolvedStrategy::Overlay,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, RootfsError::NotATree { .. }));
    }
}
