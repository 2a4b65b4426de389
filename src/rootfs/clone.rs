//! Tree cloning: the engine behind the `reflink` and `copy` strategies.
//!
//! A clone must be indistinguishable from the template to the guest (owner,
//! mode bits including setuid/setgid/sticky, timestamps, xattrs, ACLs,
//! hardlinks, symlinks, device nodes, fifos, sockets, sparse files) while
//! sharing no writable inode with the template or any other guest: regular
//! files get their own inode, whose data is either a reflink (block-level
//! copy-on-write) or a real copy. It must never hardlink to the template,
//! whose files are hardlinks into the content-addressed store.
//!
//! Every destination object is created relative to a directory fd we created
//! ourselves (`mkdirat`, `openat(O_CREAT|O_EXCL|O_NOFOLLOW)`, `symlinkat`,
//! `mknodat`), and every source object is opened with `O_NOFOLLOW` and checked
//! against the `(dev, ino)` seen by `fstatat`, so a template that changes
//! under us (or contains hostile symlinks) cannot redirect a read or a write
//! outside the two trees. Directories are re-opened with `openat2`
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`.
//!
//! Work is spread over a small pool of threads, one directory at a time;
//! hardlinks are created after all files exist, and directory timestamps are
//! set last, deepest first, because creating an entry changes its parent's
//! mtime.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat, futimens,
    mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};

use super::sys::{self, XattrTarget};
use super::{IdShift, RootfsError};

/// How regular file data is duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataMode {
    Reflink,
    Copy,
}

type Stat = libc::stat;

fn io_err(op: &'static str, path: &Path, e: impl Into<io::Error>) -> RootfsError {
    RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

impl IdShift {
    fn map(&self, id: u32, what: &'static str, path: &Path) -> Result<u32, RootfsError> {
        if id < self.count {
            self.host_base
                .checked_add(id)
                .ok_or_else(|| RootfsError::IdShiftOutOfRange {
                    path: path.to_path_buf(),
                    what,
                    id,
                    count: self.count,
                })
        } else {
            Err(RootfsError::IdShiftOutOfRange {
                path: path.to_path_buf(),
                what,
                id,
                count: self.count,
            })
        }
    }
}

struct Queue {
    jobs: Vec<PathBuf>,
    in_flight: usize,
    failed: bool,
}

/// What a new entry in one destination directory gets without being asked:
/// its owner (our euid, and the directory's gid if it is setgid) and, if the
/// directory has a default ACL, an inherited access ACL.
struct DirCx {
    new_owner: (u32, u32),
    inherits_acl: bool,
}

struct DirTimes {
    rel: PathBuf,
    atime: TimeSpec,
    mtime: TimeSpec,
}

struct Ctx<'a> {
    src_root: OwnedFd,
    dst_root: OwnedFd,
    src_path: &'a Path,
    dst_path: &'a Path,
    src_dev: u64,
    mode: DataMode,
    shift: Option<IdShift>,
    queue: Mutex<Queue>,
    cv: Condvar,
    /// First clone path of every multiply-linked source inode, by (dev, ino).
    link_primary: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Further names of such inodes: (source key, destination relative path).
    deferred_links: Mutex<Vec<((u64, u64), PathBuf)>>,
    dir_times: Mutex<Vec<DirTimes>>,
    error: Mutex<Option<RootfsError>>,
}

fn times_of(st: &Stat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

fn beneath_dir(root: BorrowedFd<'_>, rel: &Path) -> nix::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(
        root,
        rel,
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            ),
    )
}

/// Clone the tree at `src` into the existing, empty directory `dst`.
pub(crate) fn clone_into(
    src: &Path,
    dst: &Path,
    mode: DataMode,
    shift: Option<IdShift>,
) -> Result<(), RootfsError> {
    let src_root = nix::fcntl::open(
        src,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open template", src, e))?;
    let dst_root = nix::fcntl::open(
        dst,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open clone target", dst, e))?;
    let src_st = fstat(&src_root).map_err(|e| io_err("stat", src, e))?;

    let ctx = Ctx {
        src_root,
        dst_root,
        src_path: src,
        dst_path: dst,
        src_dev: src_st.st_dev,
        mode,
        shift,
        queue: Mutex::new(Queue {
            jobs: vec![PathBuf::new()],
            in_flight: 0,
            failed: false,
        }),
        cv: Condvar::new(),
        link_primary: Mutex::new(HashMap::new()),
        deferred_links: Mutex::new(Vec::new()),
        dir_times: Mutex::new(Vec::new()),
        error: Mutex::new(None),
    };

    // Root directory metadata: owner, xattrs, mode now; times at the very end.
    {
        let d = ctx.dst_root.as_fd();
        ctx.apply_owner_fd(d, &src_st, dst)?;
        ctx.copy_xattrs(
            &XattrTarget::Fd(ctx.src_root.as_fd()),
            &XattrTarget::Fd(d),
            src,
            false,
        )?;
        fchmod(d, Mode::from_bits_truncate(src_st.st_mode & 0o7777))
            .map_err(|e| io_err("chmod", dst, e))?;
        let (a, m) = times_of(&src_st);
        ctx.dir_times.lock().unwrap().push(DirTimes {
            rel: PathBuf::new(),
            atime: a,
            mtime: m,
        });
    }

    // Per-file work is mostly waiting on the filesystem (inode allocation,
    // log space for FICLONE), so a couple of threads more than CPUs keeps the
    // cores busy. VSCTL_CLONE_THREADS overrides, for benchmarking.
    let workers = std::env::var("VSCTL_CLONE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                * 2
        })
        .clamp(1, 16);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| ctx.worker());
        }
    });
    if let Some(e) = ctx.error.lock().unwrap().take() {
        return Err(e);
    }

    // Hardlinks: every primary exists and is complete now.
    let deferred = std::mem::take(&mut *ctx.deferred_links.lock().unwrap());
    let primaries = std::mem::take(&mut *ctx.link_primary.lock().unwrap());
    for (key, rel) in deferred {
        let primary = &primaries[&key];
        let (pdir, pname) = split_rel(primary);
        let (ldir, lname) = split_rel(&rel);
        let pfd = beneath_dir(ctx.dst_root.as_fd(), pdir)
            .map_err(|e| io_err("open", &dst.join(pdir), e))?;
        let lfd = beneath_dir(ctx.dst_root.as_fd(), ldir)
            .map_err(|e| io_err("open", &dst.join(ldir), e))?;
        linkat(&pfd, pname, &lfd, lname, AtFlags::empty())
            .map_err(|e| io_err("link", &dst.join(&rel), e))?;
    }

    // Directory times, deepest first (a child's creation touched its parent).
    let mut dirs = std::mem::take(&mut *ctx.dir_times.lock().unwrap());
    dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.components().count()));
    for d in dirs {
        let fd = beneath_dir(ctx.dst_root.as_fd(), &d.rel)
            .map_err(|e| io_err("open", &dst.join(&d.rel), e))?;
        futimens(&fd, &d.atime, &d.mtime).map_err(|e| io_err("set times", &dst.join(&d.rel), e))?;
    }
    Ok(())
}

fn split_rel(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name()
            .expect("relative path of a non-root entry has a name"),
    )
}

impl Ctx<'_> {
    fn worker(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap();
                loop {
                    if q.failed {
                        return;
                    }
                    if let Some(j) = q.jobs.pop() {
                        q.in_flight += 1;
                        break j;
                    }
                    if q.in_flight == 0 {
                        return;
                    }
                    q = self.cv.wait(q).unwrap();
                }
            };
            let res = self.clone_dir(&job);
            let mut q = self.queue.lock().unwrap();
            q.in_flight -= 1;
            if let Err(e) = res {
                q.failed = true;
                let mut slot = self.error.lock().unwrap();
                if slot.is_none() {
                    *slot = Some(e);
                }
            }
            self.cv.notify_all();
        }
    }

    fn push_dir(&self, rel: PathBuf) {
        let mut q = self.queue.lock().unwrap();
        q.jobs.push(rel);
        self.cv.notify_one();
    }

    fn uid_gid(&self, st: &Stat, path: &Path) -> Result<(u32, u32), RootfsError> {
        match &self.shift {
            None => Ok((st.st_uid, st.st_gid)),
            Some(s) => Ok((
                s.map(st.st_uid, "uid", path)?,
                s.map(st.st_gid, "gid", path)?,
            )),
        }
    }

    /// chown only when the new entry's automatic owner is not already the
    /// wanted one: on XFS every chown is a logged transaction.
    fn owner_if_needed(
        &self,
        fd: BorrowedFd<'_>,
        dcx: &DirCx,
        st: &Stat,
        path: &Path,
    ) -> Result<(), RootfsError> {
        let (u, g) = self.uid_gid(st, path)?;
        if (u, g) == dcx.new_owner {
            return Ok(());
        }
        fchown(fd, Some(Uid::from_raw(u)), Some(Gid::from_raw(g)))
            .map_err(|e| io_err("chown", path, e))
    }

    fn apply_owner_fd(
        &self,
        fd: BorrowedFd<'_>,
        st: &Stat,
        path: &Path,
    ) -> Result<(), RootfsError> {
        let (u, g) = self.uid_gid(st, path)?;
        fchown(fd, Some(Uid::from_raw(u)), Some(Gid::from_raw(g)))
            .map_err(|e| io_err("chown", path, e))
    }

    /// Copy every xattr, rewriting ids inside ACLs and file capabilities when
    /// shifting ownership. Order matters to the caller: xattrs go after chown
    /// (chown drops security.capability) and after the data is written.
    fn copy_xattrs(
        &self,
        from: &XattrTarget<'_>,
        to: &XattrTarget<'_>,
        path: &Path,
        strip_inherited: bool,
    ) -> Result<(), RootfsError> {
        let names = sys::list_xattrs(from).map_err(|e| io_err("list xattrs", path, e))?;
        if strip_inherited {
            // Created under a default ACL, the new entry got ACLs the
            // template entry does not have: remove those.
            for acl in [c"system.posix_acl_access", c"system.posix_acl_default"] {
                if !names.iter().any(|n| n.as_c_str() == acl) {
                    sys::remove_xattr(to, acl).map_err(|e| RootfsError::Xattr {
                        path: path.to_path_buf(),
                        name: acl.to_string_lossy().into_owned(),
                        source: e,
                    })?;
                }
            }
        }
        for name in names {
            // XFS also lists its on-disk ACLs as trusted.SGI_ACL_{FILE,DEFAULT}:
            // aliases of system.posix_acl_*, copied through those (and shifted
            // there); writing the raw alias too would undo the shift.
            if matches!(
                name.to_bytes(),
                b"trusted.SGI_ACL_FILE" | b"trusted.SGI_ACL_DEFAULT"
            ) {
                continue;
            }
            let value = match sys::get_xattr(from, &name) {
                Ok(v) => v,
                // Raced away or not readable on this object: nothing to copy.
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
                Err(e) => return Err(io_err("get xattr", path, e)),
            };
            let value = match &self.shift {
                Some(s) => shift_xattr(&name, value, s, path)?,
                None => value,
            };
            sys::set_xattr(to, &name, &value).map_err(|e| RootfsError::Xattr {
                path: path.to_path_buf(),
                name: name.to_string_lossy().into_owned(),
                source: e,
            })?;
        }
        Ok(())
    }

    fn clone_dir(&self, rel: &Path) -> Result<(), RootfsError> {
        let src_path = self.src_path.join(rel);
        let dst_path = self.dst_path.join(rel);
        let sdir =
            beneath_dir(self.src_root.as_fd(), rel).map_err(|e| io_err("open", &src_path, e))?;
        let ddir =
            beneath_dir(self.dst_root.as_fd(), rel).map_err(|e| io_err("open", &dst_path, e))?;
        let dst_st = fstat(&ddir).map_err(|e| io_err("stat", &dst_path, e))?;
        let dcx = DirCx {
            new_owner: (
                nix::unistd::geteuid().as_raw(),
                if dst_st.st_mode & libc::S_ISGID != 0 {
                    dst_st.st_gid
                } else {
                    nix::unistd::getegid().as_raw()
                },
            ),
            inherits_acl: sys::get_xattr(
                &XattrTarget::Fd(ddir.as_fd()),
                c"system.posix_acl_default",
            )
            .is_ok(),
        };
        let names: Vec<OsString> = {
            let dup = sdir.try_clone().map_err(|e| io_err("dup", &src_path, e))?;
            let mut d = Dir::from_fd(dup).map_err(|e| io_err("opendir", &src_path, e))?;
            let mut v = Vec::new();
            for ent in d.iter() {
                let ent = ent.map_err(|e| io_err("readdir", &src_path, e))?;
                let n = ent.file_name().to_bytes();
                if n == b"." || n == b".." {
                    continue;
                }
                v.push(OsStr::from_bytes(n).to_os_string());
            }
            v
        };
        for name in names {
            if self.queue.lock().unwrap().failed {
                return Ok(());
            }
            self.clone_entry(&sdir, &ddir, &dcx, rel, &name)?;
        }
        Ok(())
    }

    fn clone_entry(
        &self,
        sdir: &OwnedFd,
        ddir: &OwnedFd,
        dcx: &DirCx,
        rel_dir: &Path,
        name: &OsStr,
    ) -> Result<(), RootfsError> {
        let rel = rel_dir.join(name);
        let spath = self.src_path.join(&rel);
        let dpath = self.dst_path.join(&rel);
        let st = fstatat(sdir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| io_err("stat", &spath, e))?;
        if st.st_dev != self.src_dev {
            return Err(RootfsError::CrossesFilesystem { path: spath });
        }
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt == libc::S_IFDIR {
            return self.clone_subdir(sdir, ddir, dcx, rel, name, &st);
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            let mut map = self.link_primary.lock().unwrap();
            if map.contains_key(&key) {
                drop(map);
                self.deferred_links.lock().unwrap().push((key, rel));
                return Ok(());
            }
            map.insert(key, rel.clone());
        }
        match fmt {
            libc::S_IFREG => self.clone_file(sdir, ddir, dcx, name, &st, &spath, &dpath),
            libc::S_IFLNK => {
                let target = readlinkat(sdir, name).map_err(|e| io_err("readlink", &spath, e))?;
                symlinkat(target.as_os_str(), ddir, name)
                    .map_err(|e| io_err("symlink", &dpath, e))?;
                self.special_meta(sdir, ddir, dcx, name, &st, &spath, &dpath, true)
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {
                let kind = SFlag::from_bits_truncate(fmt);
                mknodat(
                    ddir,
                    name,
                    kind,
                    Mode::from_bits_truncate(0o600),
                    st.st_rdev,
                )
                .map_err(|e| io_err("mknod", &dpath, e))?;
                self.special_meta(sdir, ddir, dcx, name, &st, &spath, &dpath, false)
            }
            _ => Err(RootfsError::UnknownFileType { path: spath }),
        }
    }

    fn clone_subdir(
        &self,
        sdir: &OwnedFd,
        ddir: &OwnedFd,
        dcx: &DirCx,
        rel: PathBuf,
        name: &OsStr,
        st: &Stat,
    ) -> Result<(), RootfsError> {
        let spath = self.src_path.join(&rel);
        let dpath = self.dst_path.join(&rel);
        nix::sys::stat::mkdirat(ddir, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| io_err("mkdir", &dpath, e))?;
        let dflags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let sfd = openat(sdir, name, dflags | OFlag::O_NOATIME, Mode::empty())
            .map_err(|e| io_err("open", &spath, e))?;
        same_inode(&sfd, st, &spath)?;
        let dfd =
            openat(ddir, name, dflags, Mode::empty()).map_err(|e| io_err("open", &dpath, e))?;
        self.owner_if_needed(dfd.as_fd(), dcx, st, &dpath)?;
        self.copy_xattrs(
            &XattrTarget::Fd(sfd.as_fd()),
            &XattrTarget::Fd(dfd.as_fd()),
            &dpath,
            dcx.inherits_acl,
        )?;
        fchmod(&dfd, Mode::from_bits_truncate(st.st_mode & 0o7777))
            .map_err(|e| io_err("chmod", &dpath, e))?;
        let (atime, mtime) = times_of(st);
        self.dir_times.lock().unwrap().push(DirTimes {
            rel: rel.clone(),
            atime,
            mtime,
        });
        self.push_dir(rel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn clone_file(
        &self,
        sdir: &OwnedFd,
        ddir: &OwnedFd,
        dcx: &DirCx,
        name: &OsStr,
        st: &Stat,
        spath: &Path,
        dpath: &Path,
    ) -> Result<(), RootfsError> {
        // O_NONBLOCK: if the entry was swapped for a fifo after fstatat, the
        // open must not hang; same_inode() then rejects it.
        let sfd = openat(
            sdir,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY
                | OFlag::O_NONBLOCK
                | OFlag::O_NOATIME,
            Mode::empty(),
        )
        .map_err(|e| io_err("open", spath, e))?;
        same_inode(&sfd, st, spath)?;
        let dfd = openat(
            ddir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            // Created with its final permission bits (umask permitting) so
            // the chmod below is usually unnecessary; special bits come later.
            Mode::from_bits_truncate(st.st_mode & 0o777),
        )
        .map_err(|e| io_err("create", dpath, e))?;
        if st.st_size > 0 {
            match self.mode {
                DataMode::Reflink => sys::ficlone(dfd.as_fd(), sfd.as_fd())
                    .map_err(|e| io_err("reflink (FICLONE)", dpath, e))?,
                DataMode::Copy => {
                    copy_sparse(&sfd, &dfd, st.st_size).map_err(|e| io_err("copy", dpath, e))?
                }
            }
        }
        self.owner_if_needed(dfd.as_fd(), dcx, st, dpath)?;
        self.copy_xattrs(
            &XattrTarget::Fd(sfd.as_fd()),
            &XattrTarget::Fd(dfd.as_fd()),
            dpath,
            dcx.inherits_acl,
        )?;
        // chmod only when the mode is not already right (umask, ACL mask,
        // setuid/setgid/sticky): on XFS each chmod is a logged transaction,
        // an fstat is not. Checked after chown and xattrs, which can change it.
        let want = st.st_mode & 0o7777;
        let now = fstat(&dfd).map_err(|e| io_err("stat", dpath, e))?;
        if now.st_mode & 0o7777 != want {
            fchmod(&dfd, Mode::from_bits_truncate(want)).map_err(|e| io_err("chmod", dpath, e))?;
        }
        let (a, m) = times_of(st);
        futimens(&dfd, &a, &m).map_err(|e| io_err("set times", dpath, e))?;
        Ok(())
    }

    /// Metadata of symlinks and special files, which we never open for I/O:
    /// owner and times through the `*at` calls with AT_SYMLINK_NOFOLLOW,
    /// xattrs through an O_PATH fd.
    #[allow(clippy::too_many_arguments)]
    fn special_meta(
        &self,
        sdir: &OwnedFd,
        ddir: &OwnedFd,
        dcx: &DirCx,
        name: &OsStr,
        st: &Stat,
        spath: &Path,
        dpath: &Path,
        is_symlink: bool,
    ) -> Result<(), RootfsError> {
        let (u, g) = self.uid_gid(st, dpath)?;
        if (u, g) != dcx.new_owner {
            fchownat(
                ddir,
                name,
                Some(Uid::from_raw(u)),
                Some(Gid::from_raw(g)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err("chown", dpath, e))?;
        }
        let pflags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let sfd =
            openat(sdir, name, pflags, Mode::empty()).map_err(|e| io_err("open", spath, e))?;
        same_inode(&sfd, st, spath)?;
        let dfd =
            openat(ddir, name, pflags, Mode::empty()).map_err(|e| io_err("open", dpath, e))?;
        self.copy_xattrs(
            &XattrTarget::ProcFd(sfd.as_fd()),
            &XattrTarget::ProcFd(dfd.as_fd()),
            dpath,
            dcx.inherits_acl && !is_symlink,
        )?;
        if !is_symlink {
            // The node was created by us in a directory only we write to, so
            // following here cannot leave the clone; symlinks have no mode.
            fchmodat(
                ddir,
                name,
                Mode::from_bits_truncate(st.st_mode & 0o7777),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io_err("chmod", dpath, e))?;
        }
        let (a, m) = times_of(st);
        utimensat(ddir, name, &a, &m, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| io_err("set times", dpath, e))?;
        Ok(())
    }
}

fn same_inode(fd: &OwnedFd, st: &Stat, path: &Path) -> Result<(), RootfsError> {
    let now = fstat(fd).map_err(|e| io_err("stat", path, e))?;
    if now.st_dev != st.st_dev
        || now.st_ino != st.st_ino
        || (now.st_mode & libc::S_IFMT) != (st.st_mode & libc::S_IFMT)
    {
        return Err(RootfsError::ChangedDuringClone {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Copy `size` bytes, visiting only data extents (SEEK_DATA/SEEK_HOLE) so
/// holes stay holes, then set the length so a trailing hole survives.
fn copy_sparse(src: &OwnedFd, dst: &OwnedFd, size: i64) -> io::Result<()> {
    use nix::unistd::{Whence, lseek};
    let mut buf = vec![0u8; 256 * 1024];
    let mut off: i64 = 0;
    while off < size {
        let data = match lseek(src, off, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(src, data, Whence::SeekHole)?;
        let mut pos = data;
        while pos < hole {
            let want = ((hole - pos) as usize).min(buf.len());
            let n = nix::sys::uio::pread(src, &mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            let mut w = 0;
            while w < n {
                w += nix::sys::uio::pwrite(dst, &buf[w..n], pos + w as i64)?;
            }
            pos += n as i64;
        }
        off = hole;
    }
    nix::unistd::ftruncate(dst, size)?;
    Ok(())
}

const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;

/// Rewrite the ids stored inside xattr values when shifting ownership:
/// named users/groups of POSIX ACLs, and the root id of file capabilities
/// (a v2 capability is upgraded to v3 so the kernel honours it only for the
/// shifted root, see capabilities(7) "namespaced file capabilities").
fn shift_xattr(
    name: &CStr,
    mut value: Vec<u8>,
    shift: &IdShift,
    path: &Path,
) -> Result<Vec<u8>, RootfsError> {
    let n = name.to_bytes();
    if n == b"system.posix_acl_access" || n == b"system.posix_acl_default" {
        // struct posix_acl_xattr_header { le32 version } then entries of
        // { le16 tag, le16 perm, le32 id }.
        let mut i = 4;
        while i + 8 <= value.len() {
            let tag = u16::from_le_bytes([value[i], value[i + 1]]);
            if tag == ACL_USER || tag == ACL_GROUP {
                let id = u32::from_le_bytes(value[i + 4..i + 8].try_into().unwrap());
                let what = if tag == ACL_USER {
                    "acl uid"
                } else {
                    "acl gid"
                };
                let mapped = shift.map(id, what, path)?;
                value[i + 4..i + 8].copy_from_slice(&mapped.to_le_bytes());
            }
            i += 8;
        }
    } else if n == b"security.capability" && value.len() >= 20 {
        let magic = u32::from_le_bytes(value[0..4].try_into().unwrap());
        let rootid = shift.map(0, "capability root id", path)?;
        match magic & VFS_CAP_REVISION_MASK {
            VFS_CAP_REVISION_2 => {
                let flags = magic & !VFS_CAP_REVISION_MASK;
                value.truncate(20);
                value[0..4].copy_from_slice(&(VFS_CAP_REVISION_3 | flags).to_le_bytes());
                value.extend_from_slice(&rootid.to_le_bytes());
            }
            VFS_CAP_REVISION_3 if value.len() >= 24 => {
                let old = u32::from_le_bytes(value[20..24].try_into().unwrap());
                let mapped = shift.map(old, "capability root id", path)?;
                value[20..24].copy_from_slice(&mapped.to_le_bytes());
            }
            _ => {}
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_ids_are_shifted() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, id) in [
            (0x01u16, u32::MAX),
            (ACL_USER, 1000),
            (ACL_GROUP, 5),
            (0x20, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&7u16.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let s = IdShift {
            host_base: 100_000,
            count: 65536,
        };
        let out = shift_xattr(c"system.posix_acl_access", v, &s, Path::new("x")).unwrap();
        let id_at =
            |i: usize| u32::from_le_bytes(out[4 + i * 8 + 4..4 + i * 8 + 8].try_into().unwrap());
        assert_eq!(id_at(0), u32::MAX);
        assert_eq!(id_at(1), 101_000);
        assert_eq!(id_at(2), 100_005);
        assert_eq!(id_at(3), u32::MAX);
    }

    #[test]
    fn v2_capability_becomes_v3_with_shifted_root() {
        let mut v = (VFS_CAP_REVISION_2 | 1).to_le_bytes().to_vec();
        v.extend_from_slice(&[0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let s = IdShift {
            host_base: 200_000,
            count: 65536,
        };
        let out = shift_xattr(c"security.capability", v.clone(), &s, Path::new("x")).unwrap();
        assert_eq!(out.len(), 24);
        assert_eq!(
            u32::from_le_bytes(out[0..4].try_into().unwrap()),
            VFS_CAP_REVISION_3 | 1
        );
        assert_eq!(&out[4..20], &v[4..20]);
        assert_eq!(u32::from_le_bytes(out[20..24].try_into().unwrap()), 200_000);
    }

    #[test]
    fn ids_outside_the_range_are_refused() {
        let s = IdShift {
            host_base: 100_000,
            count: 1000,
        };
        assert!(s.map(999, "uid", Path::new("x")).is_ok());
        assert!(s.map(1000, "uid", Path::new("x")).is_err());
    }
}
