//! Per-guest disk quotas: `[disk] quota` (bytes) and `inodes`.
//!
//! A guest's tree (`RootfsLayout::quota_root()`: the rootfs, or the
//! directory holding an overlay's upper/ and work/) is made one accounting
//! unit: on XFS and ext4 a *project*: every directory and file
//! carries the guest's project id and directories carry PROJINHERIT so new
//! files inherit it; limits and usage go through quotactl_fd(2) for project
//! quotas. On btrfs the tree is a subvolume and its level-0 qgroup carries the
//! byte limit (btrfs has no inode limits).
//!
//! What this module must never do: pretend. A filesystem that cannot enforce
//! the requested limit yields [`QuotaError::Unsupported`] with the reason and
//! how to fix it, never a silent no-op; the caller decides between failing and
//! warning. It also never follows symlinks or crosses mount points while
//! tagging a tree.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod sys;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstat, fstatat};

const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
const EXT4_SUPER_MAGIC: i64 = 0xEF53;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// What kind of quota the filesystem under a path can enforce.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum QuotaSupport {
    /// XFS with project quotas enforced (mounted with `prjquota`).
    Xfs,
    /// ext4 with the `project` and `quota` features, mounted with `prjquota`.
    Ext4,
    /// btrfs: qgroup limit on the guest's subvolume (bytes only).
    Btrfs,
    Unsupported {
        reason: String,
        how_to_fix: String,
    },
}

/// Requested limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskLimits {
    pub bytes: Option<u64>,
    pub inodes: Option<u64>,
}

/// Current use and limits of one guest tree. `inodes_used` is `None` where
/// the filesystem does not count inodes per quota unit (btrfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DiskUsage {
    pub bytes_used: u64,
    pub bytes_limit: Option<u64>,
    pub inodes_used: Option<u64>,
    pub inodes_limit: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("disk quota for {path} is not supported: {reason}; to fix: {how_to_fix}")]
    Unsupported {
        path: PathBuf,
        reason: String,
        how_to_fix: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "project id 0 is the default project of untagged files and cannot be a guest's ({path})"
    )]
    ProjectIdZero { path: PathBuf },
}

fn io_err(op: &'static str, path: &Path, e: impl Into<std::io::Error>) -> QuotaError {
    QuotaError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn open_dir(path: &Path) -> Result<OwnedFd, QuotaError> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open", path, e))
}

fn fs_type(path: &Path) -> Result<i64, QuotaError> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| io_err("statfs", path, e))?;
    Ok(st.filesystem_type().0 as i64)
}

/// Whether `path` is on btrfs (then guest trees are made subvolumes).
pub fn is_btrfs(path: &Path) -> bool {
    fs_type(path).is_ok_and(|t| t == BTRFS_SUPER_MAGIC)
}

/// What quota `path`'s filesystem can enforce right now.
pub fn probe(path: &Path) -> Result<QuotaSupport, QuotaError> {
    let t = fs_type(path)?;
    let unsupported = |reason: &str, fix: &str| QuotaSupport::Unsupported {
        reason: reason.to_string(),
        how_to_fix: fix.to_string(),
    };
    match t {
        XFS_SUPER_MAGIC => {
            let fd = open_dir(path)?;
            let Some(flags) = quota_state(fd.as_fd(), path)? else {
                // No quotactl operations at all for this filesystem: the
                // kernel was built without its quota support.
                return Ok(unsupported(
                    "this kernel was built without XFS quota support (CONFIG_XFS_QUOTA)",
                    "boot a kernel with CONFIG_XFS_QUOTA=y and mount the filesystem with -o prjquota",
                ));
            };
            let ok = flags & sys::FS_QUOTA_PDQ_ACCT != 0 && flags & sys::FS_QUOTA_PDQ_ENFD != 0;
            Ok(if ok {
                QuotaSupport::Xfs
            } else {
                unsupported(
                    "XFS project quotas are not enforced on this mount",
                    "mount the filesystem with -o prjquota (for the root filesystem: rootflags=prjquota on the kernel command line)",
                )
            })
        }
        EXT4_SUPER_MAGIC => probe_ext4(path),
        BTRFS_SUPER_MAGIC => Ok(QuotaSupport::Btrfs),
        other => Ok(unsupported(
            &format!("filesystem type {other:#x} has no per-directory quotas vsctl can use"),
            "keep the state directory on XFS mounted with prjquota, ext4 with -O quota,project mounted with prjquota, or btrfs (btrfs quota enable)",
        )),
    }
}

/// The filesystem's project quota state flags: `None` when it answers no
/// quota state query at all (ENOSYS), 0 when quotas are merely off.
fn quota_state(fd: BorrowedFd<'_>, path: &Path) -> Result<Option<u16>, QuotaError> {
    match sys::quota_state_flags(fd) {
        Ok(flags) => Ok(Some(flags)),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok(None),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ESRCH | libc::ENOTSUP | libc::EINVAL)
            ) =>
        {
            Ok(Some(0))
        }
        Err(e) => Err(io_err("quotactl", path, e)),
    }
}

/// How to give an existing ext4 filesystem project quotas; shared by the
/// messages below.
const EXT4_ADD_FEATURES: &str = "unmount it and run tune2fs -O quota,project on its device (project ids need inodes larger than 128 bytes: a filesystem made with -I 128 must be made again with mkfs.ext4 -I 256 -O quota,project), then mount it with -o prjquota; the kernel needs CONFIG_QFMT_V2 (module quota_v2) for the hidden quota inodes";

/// ext4: project quotas need the kernel's quota support, the filesystem's
/// `quota` and `project` features (hidden quota inodes, a project id per
/// inode) and the `prjquota` mount option (enforcement). Each missing piece
/// gets its own reason and fix.
fn probe_ext4(path: &Path) -> Result<QuotaSupport, QuotaError> {
    let unsupported = |reason: &str, fix: &str| QuotaSupport::Unsupported {
        reason: reason.to_string(),
        how_to_fix: fix.to_string(),
    };
    let fd = open_dir(path)?;
    let Some(flags) = quota_state(fd.as_fd(), path)? else {
        // ext4 offers the quota state (Q_XGETQSTATV) only with the `quota`
        // feature (hidden quota inodes). Without it, Q_GETFMT still answers
        // if the kernel has quota support at all.
        return Ok(match sys::prj_getfmt(fd.as_fd()) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => unsupported(
                "this kernel was built without quota support for ext4 (CONFIG_QUOTA)",
                "boot a kernel with CONFIG_QUOTA=y and CONFIG_QFMT_V2=y, make the filesystem with mkfs.ext4 -I 256 -O quota,project and mount it with -o prjquota",
            ),
            _ => unsupported(
                "this ext4 filesystem was made without the quota and project features (no project ids, no quota accounting)",
                EXT4_ADD_FEATURES,
            ),
        });
    };
    Ok(
        match (
            flags & sys::FS_QUOTA_PDQ_ACCT != 0,
            flags & sys::FS_QUOTA_PDQ_ENFD != 0,
        ) {
            (true, true) => QuotaSupport::Ext4,
            (true, false) => unsupported(
                "ext4 project quotas are counted but not enforced: the filesystem is mounted without prjquota",
                "mount it with -o prjquota (add prjquota to its options in /etc/fstab; for the root filesystem: rootflags=prjquota on the kernel command line)",
            ),
            (false, _) => unsupported(
                "this ext4 filesystem keeps no project quota (it has the quota feature, but not the project feature or no project quota inode)",
                EXT4_ADD_FEATURES,
            ),
        },
    )
}

fn require(path: &Path) -> Result<QuotaSupport, QuotaError> {
    match probe(path)? {
        QuotaSupport::Unsupported { reason, how_to_fix } => Err(QuotaError::Unsupported {
            path: path.to_path_buf(),
            reason,
            how_to_fix,
        }),
        s => Ok(s),
    }
}

/// Put the tree at `path` under `limits`, tagging it with `project_id` on
/// XFS/ext4 (btrfs uses the subvolume's own qgroup and ignores the id).
/// Calling it again changes the limits of a live guest; new files are
/// Set the copy-on-write extent size hint of a file (XFS; FS_IOC_FSSETXATTR
/// with FS_XFLAG_COWEXTSIZE). Fails on filesystems without the hint.
pub fn set_cow_extent_size(fd: BorrowedFd<'_>, bytes: u32) -> std::io::Result<()> {
    let mut x = sys::get_fsxattr(fd)?;
    x.fsx_xflags |= sys::FS_XFLAG_COWEXTSIZE;
    x.fsx_cowextsize = bytes;
    sys::set_fsxattr(fd, &x)
}

/// tagged by inheritance, so only the first call walks far.
pub fn apply(path: &Path, project_id: u32, limits: &DiskLimits) -> Result<(), QuotaError> {
    match require(path)? {
        kind @ (QuotaSupport::Xfs | QuotaSupport::Ext4) => {
            if project_id == 0 {
                return Err(QuotaError::ProjectIdZero {
                    path: path.to_path_buf(),
                });
            }
            tag_tree(path, project_id)?;
            let fd = open_dir(path)?;
            if kind == QuotaSupport::Xfs {
                let mut q = sys::FsDiskQuota {
                    d_version: sys::FS_DQUOT_VERSION,
                    d_flags: sys::FS_PROJ_QUOTA,
                    d_fieldmask: sys::FS_DQ_BHARD
                        | sys::FS_DQ_BSOFT
                        | sys::FS_DQ_IHARD
                        | sys::FS_DQ_ISOFT,
                    d_id: project_id,
                    // XFS counts in 512-byte basic blocks; 0 means no limit.
                    d_blk_hardlimit: limits.bytes.map_or(0, |b| b.div_ceil(512)),
                    d_ino_hardlimit: limits.inodes.unwrap_or(0),
                    ..Default::default()
                };
                sys::prj_xsetqlim(fd.as_fd(), project_id, &mut q)
                    .map_err(|e| io_err("set XFS project quota", path, e))
            } else {
                // Read-modify-write keeps usage fields; a zero limit means unlimited.
                let mut q = sys::prj_getquota(fd.as_fd(), project_id)
                    .map_err(|e| io_err("get ext4 project quota", path, e))?;
                // if_dqblk limits count 1 KiB blocks (QIF_DQBLKSIZE).
                q.dqb_bhardlimit = limits.bytes.map_or(0, |b| b.div_ceil(1024));
                q.dqb_bsoftlimit = 0;
                q.dqb_ihardlimit = limits.inodes.unwrap_or(0);
                q.dqb_isoftlimit = 0;
                q.dqb_valid = libc::QIF_LIMITS;
                sys::prj_setquota(fd.as_fd(), project_id, &mut q)
                    .map_err(|e| io_err("set ext4 project quota", path, e))
            }
        }
        QuotaSupport::Btrfs => {
            if limits.inodes.is_some() {
                return Err(QuotaError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "btrfs qgroups limit bytes, not inodes".into(),
                    how_to_fix: "drop `[disk] inodes` for guests on btrfs, or keep them on XFS/ext4 with project quotas".into(),
                });
            }
            let fd = btrfs::subvolume_fd(path)?;
            btrfs::ensure_quota_enabled(fd.as_fd(), path)?;
            let mut args = sys::BtrfsQgroupLimitArgs {
                qgroupid: 0, // 0: the subvolume the fd is in
                lim: sys::BtrfsQgroupLimit {
                    flags: sys::BTRFS_QGROUP_LIMIT_MAX_RFER,
                    // u64::MAX clears the limit (what `btrfs qgroup limit none` sends).
                    max_rfer: limits.bytes.unwrap_or(u64::MAX),
                    ..Default::default()
                },
            };
            sys::btrfs_qgroup_limit(fd.as_fd(), &mut args)
                .map_err(|e| io_err("set btrfs qgroup limit", path, e))
        }
        QuotaSupport::Unsupported { .. } => unreachable!("require() turned it into an error"),
    }
}

/// Current use and limits of the tree at `path`.
pub fn usage(path: &Path, project_id: u32) -> Result<DiskUsage, QuotaError> {
    let nz = |v: u64| (v != 0).then_some(v);
    match require(path)? {
        QuotaSupport::Xfs => {
            let fd = open_dir(path)?;
            let q = sys::prj_xgetquota(fd.as_fd(), project_id)
                .map_err(|e| io_err("get XFS project quota", path, e))?;
            Ok(DiskUsage {
                bytes_used: q.d_bcount * 512,
                bytes_limit: nz(q.d_blk_hardlimit * 512),
                inodes_used: Some(q.d_icount),
                inodes_limit: nz(q.d_ino_hardlimit),
            })
        }
        QuotaSupport::Ext4 => {
            let fd = open_dir(path)?;
            let q = sys::prj_getquota(fd.as_fd(), project_id)
                .map_err(|e| io_err("get ext4 project quota", path, e))?;
            Ok(DiskUsage {
                bytes_used: q.dqb_curspace,
                bytes_limit: nz(q.dqb_bhardlimit * 1024),
                inodes_used: Some(q.dqb_curinodes),
                inodes_limit: nz(q.dqb_ihardlimit),
            })
        }
        QuotaSupport::Btrfs => {
            let fd = btrfs::subvolume_fd(path)?;
            btrfs::usage(fd.as_fd(), path)
        }
        QuotaSupport::Unsupported { .. } => unreachable!("require() turned it into an error"),
    }
}

/// Tag the tree at `path` with `project_id` without touching limits: what
/// [`apply`] does first on XFS/ext4. Works whenever the filesystem stores
/// project ids (XFS; ext4 with the `project` feature), enforced or not.
pub fn set_project(path: &Path, project_id: u32) -> Result<(), QuotaError> {
    if project_id == 0 {
        return Err(QuotaError::ProjectIdZero {
            path: path.to_path_buf(),
        });
    }
    tag_tree(path, project_id)
}

/// Tag every directory and regular file of the tree with `project_id`
/// (directories also with PROJINHERIT). Symlinks and special files cannot be
/// opened for the ioctl; they take the project of their directory when
/// created after tagging and otherwise stay in project 0 (a few bytes each).
fn tag_tree(path: &Path, project_id: u32) -> Result<(), QuotaError> {
    let root = open_dir(path)?;
    let dev = fstat(&root).map_err(|e| io_err("stat", path, e))?.st_dev;
    tag_fd(&root, path, project_id, true)?;
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(root, path.to_path_buf())];
    while let Some((dir, dpath)) = stack.pop() {
        let names: Vec<OsString> = {
            let dup = dir.try_clone().map_err(|e| io_err("dup", &dpath, e))?;
            let mut d = Dir::from_fd(dup).map_err(|e| io_err("opendir", &dpath, e))?;
            let mut v = Vec::new();
            for ent in d.iter() {
                let ent = ent.map_err(|e| io_err("readdir", &dpath, e))?;
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    v.push(OsStr::from_bytes(n).to_os_string());
                }
            }
            v
        };
        for n in names {
            let cpath = dpath.join(&n);
            let st = match fstatat(&dir, n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(io_err("stat", &cpath, e)),
            };
            let fmt = st.st_mode & libc::S_IFMT;
            if st.st_dev != dev || (fmt != libc::S_IFDIR && fmt != libc::S_IFREG) {
                continue;
            }
            let is_dir = fmt == libc::S_IFDIR;
            let flags = OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | if is_dir {
                    OFlag::O_DIRECTORY
                } else {
                    OFlag::empty()
                };
            let fd = match openat(&dir, n.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(io_err("open", &cpath, e)),
            };
            let now = fstat(&fd).map_err(|e| io_err("stat", &cpath, e))?;
            if now.st_ino != st.st_ino || now.st_dev != dev {
                continue; // replaced under us: not ours to tag
            }
            tag_fd(&fd, &cpath, project_id, is_dir)?;
            if is_dir {
                stack.push((fd, cpath));
            }
        }
    }
    Ok(())
}

fn tag_fd(fd: &OwnedFd, path: &Path, project_id: u32, is_dir: bool) -> Result<(), QuotaError> {
    let mut x = sys::get_fsxattr(fd.as_fd()).map_err(|e| io_err("get project id", path, e))?;
    let want_flags = if is_dir {
        x.fsx_xflags | sys::FS_XFLAG_PROJINHERIT
    } else {
        x.fsx_xflags
    };
    if x.fsx_projid == project_id && x.fsx_xflags == want_flags {
        return Ok(());
    }
    x.fsx_projid = project_id;
    x.fsx_xflags = want_flags;
    sys::set_fsxattr(fd.as_fd(), &x).map_err(|e| io_err("set project id", path, e))
}

/// btrfs subvolumes and qgroups.
pub mod btrfs {
    use super::*;

    const QUOTA_TREE: u64 = 8;
    const QGROUP_STATUS_KEY: u32 = 240;
    const QGROUP_INFO_KEY: u32 = 242;
    const QGROUP_LIMIT_KEY: u32 = 244;

    /// Create subvolume `name` in directory `parent` (BTRFS_IOC_SUBVOL_CREATE).
    pub fn create_subvolume(parent: &Path, name: &OsStr) -> Result<(), QuotaError> {
        let fd = open_dir(parent)?;
        sys::btrfs_subvol_create(fd.as_fd(), name.as_bytes())
            .map_err(|e| io_err("create btrfs subvolume", &parent.join(name), e))
    }

    /// Open `path`, which must be the root of a btrfs subvolume.
    pub(super) fn subvolume_fd(path: &Path) -> Result<OwnedFd, QuotaError> {
        let fd = open_dir(path)?;
        let st = fstat(&fd).map_err(|e| io_err("stat", path, e))?;
        if st.st_ino != 256 {
            return Err(QuotaError::Unsupported {
                path: path.to_path_buf(),
                reason: "on btrfs the guest tree must be its own subvolume to have its own qgroup".into(),
                how_to_fix: "recreate the guest (vsctl builds guest trees on btrfs as subvolumes), or `btrfs subvolume create` it and move the files in".into(),
            });
        }
        Ok(fd)
    }

    fn quota_enabled(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<bool, QuotaError> {
        match sys::btrfs_search(fd, QUOTA_TREE, 0, QGROUP_STATUS_KEY, 0) {
            Ok(items) => Ok(!items.is_empty()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(io_err("read btrfs quota status", path, e)),
        }
    }

    /// Turn on qgroups for the whole filesystem if they are off (what
    /// `btrfs quota enable` does), then wait for the initial rescan.
    pub(super) fn ensure_quota_enabled(
        fd: std::os::fd::BorrowedFd<'_>,
        path: &Path,
    ) -> Result<(), QuotaError> {
        if quota_enabled(fd, path)? {
            return Ok(());
        }
        sys::btrfs_quota_enable(fd).map_err(|e| io_err("enable btrfs quota", path, e))?;
        sys::btrfs_rescan_wait(fd).map_err(|e| io_err("wait for btrfs quota rescan", path, e))
    }

    pub(super) fn usage(
        fd: std::os::fd::BorrowedFd<'_>,
        path: &Path,
    ) -> Result<DiskUsage, QuotaError> {
        if !quota_enabled(fd, path)? {
            return Err(QuotaError::Unsupported {
                path: path.to_path_buf(),
                reason: "btrfs quotas are disabled".into(),
                how_to_fix: "btrfs quota enable <mountpoint> (vsctl does it when a guest has a [disk] quota)".into(),
            });
        }
        let subvol =
            sys::btrfs_tree_id(fd).map_err(|e| io_err("look up btrfs subvolume id", path, e))?;
        // Accounting is updated at transaction commit.
        sys::btrfs_sync(fd).map_err(|e| io_err("btrfs sync", path, e))?;
        let le = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let info = sys::btrfs_search(fd, QUOTA_TREE, 0, QGROUP_INFO_KEY, subvol)
            .map_err(|e| io_err("read btrfs qgroup", path, e))?;
        // struct btrfs_qgroup_info_item: generation, rfer, rfer_cmpr, excl, excl_cmpr.
        let rfer = info
            .first()
            .filter(|(_, b)| b.len() >= 40)
            .map(|(_, b)| le(b, 1))
            .unwrap_or(0);
        let limit = sys::btrfs_search(fd, QUOTA_TREE, 0, QGROUP_LIMIT_KEY, subvol)
            .map_err(|e| io_err("read btrfs qgroup limit", path, e))?;
        // struct btrfs_qgroup_limit_item: flags, max_rfer, max_excl, rsv_rfer, rsv_excl.
        let bytes_limit = limit
            .first()
            .filter(|(_, b)| b.len() >= 40)
            .and_then(|(_, b)| {
                (le(b, 0) & sys::BTRFS_QGROUP_LIMIT_MAX_RFER != 0 && le(b, 1) != u64::MAX)
                    .then(|| le(b, 1))
            });
        Ok(DiskUsage {
            bytes_used: rfer,
            bytes_limit,
            inodes_used: None,
            inodes_limit: None,
        })
    }
}
