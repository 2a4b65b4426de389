//! Creating entries inside a tree without ever leaving it.
//!
//! Names in a tarball or a template definition are untrusted. They are
//! validated lexically (only normal components: no `..`, no absolute paths)
//! and then resolved *relative to a directory fd of the tree root* with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a symlink anywhere in the
//! parent chain, including one an earlier tar entry planted, makes the
//! resolution fail with ELOOP instead of being followed. The last component is
//! then created with `*at` calls that never follow it either (`O_NOFOLLOW |
//! O_EXCL`, `symlinkat`, `mknodat`, `linkat` without `AT_SYMLINK_FOLLOW`).

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// Why an untrusted path was refused or an entry could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SafePathError {
    /// The name contains `..`, is absolute or empty.
    #[error("path {0:?} is absolute or contains '..'; refusing to write outside the tree")]
    Escapes(String),
    /// A component on the way is a symlink.
    #[error("path {0:?} goes through a symlink inside the tree; refusing to follow it")]
    ThroughSymlink(String),
    /// A component on the way is not a directory.
    #[error("path {0:?}: a parent component is not a directory")]
    NotDir(String),
    /// Any other system error.
    #[error("{action} {path:?}: {source}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The in-tree path.
        path: String,
        /// The errno.
        source: Errno,
    },
}

/// Split an untrusted relative path into validated normal components.
/// A leading `./` is accepted (tarballs often have it); a leading `/` is not.
pub fn components(name: &str) -> Result<Vec<&OsStr>, SafePathError> {
    let p = Path::new(name);
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(SafePathError::Escapes(name.to_string())),
        }
    }
    Ok(out)
}

/// A tree root opened as a directory fd.
#[derive(Debug)]
pub struct SafeRoot {
    fd: OwnedFd,
    path: PathBuf,
}

fn sys(action: &'static str, path: &str) -> impl FnOnce(Errno) -> SafePathError {
    let path = path.to_string();
    move |source| match source {
        Errno::ELOOP | Errno::EXDEV => SafePathError::ThroughSymlink(path),
        Errno::ENOTDIR => SafePathError::NotDir(path),
        _ => SafePathError::Sys {
            action,
            path,
            source,
        },
    }
}

/// Metadata to apply to a created entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds), if known.
    pub mtime: Option<i64>,
}

impl SafeRoot {
    /// Open `path` (which the caller owns, e.g. a staging dir) as the root.
    pub fn open(path: &Path) -> Result<SafeRoot, SafePathError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("opening", &path.to_string_lossy()))?;
        Ok(SafeRoot {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root's host path (for messages only; never used to open things).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_dir_beneath(&self, comps: &[&OsStr], name: &str) -> Result<OwnedFd, SafePathError> {
        let rel: PathBuf = if comps.is_empty() {
            PathBuf::from(".")
        } else {
            comps.iter().collect()
        };
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        nix::fcntl::openat2(&self.fd, rel.as_path(), how).map_err(sys("opening parent of", name))
    }

    /// Open the parent directory of `name`, creating missing directories
    /// (mode 0755, root-owned) on the way. Returns the parent fd and the final
    /// component.
    pub fn parent_of<'a>(
        &self,
        name: &'a str,
        create: bool,
    ) -> Result<(OwnedFd, &'a OsStr), SafePathError> {
        let comps = components(name)?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(SafePathError::Escapes(name.to_string()));
        };
        match self.open_dir_beneath(parents, name) {
            Ok(fd) => return Ok((fd, last)),
            Err(SafePathError::Sys {
                source: Errno::ENOENT,
                ..
            }) if create => {}
            Err(e) => return Err(e),
        }
        let mut cur = self.open_dir_beneath(&[], name)?;
        for c in parents {
            match nix::sys::stat::mkdirat(&cur, *c, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(sys("creating directory", name)(e)),
            }
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            cur = nix::fcntl::openat2(&cur, *c, how).map_err(sys("opening", name))?;
        }
        Ok((cur, last))
    }

    /// Remove whatever is at `name` (not a non-empty directory), so a new
    /// entry can be created in its place. Returns whether the existing entry
    /// is a directory that was kept (directories are merged, not replaced).
    fn clear(
        &self,
        parent: &OwnedFd,
        last: &OsStr,
        keep_dir: bool,
        name: &str,
    ) -> Result<bool, SafePathError> {
        match nix::sys::stat::fstatat(parent, last, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let is_dir =
                    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
                if is_dir && keep_dir {
                    return Ok(true);
                }
                let flag = if is_dir {
                    UnlinkatFlags::RemoveDir
                } else {
                    UnlinkatFlags::NoRemoveDir
                };
                nix::unistd::unlinkat(parent, last, flag).map_err(sys("replacing", name))?;
                Ok(false)
            }
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(sys("inspecting", name)(e)),
        }
    }

    fn set_meta(
        &self,
        parent: &OwnedFd,
        last: &OsStr,
        meta: &Meta,
        symlink: bool,
        name: &str,
    ) -> Result<(), SafePathError> {
        nix::unistd::fchownat(
            parent,
            last,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(sys("changing owner of", name))?;
        // chmod after chown: chown clears setuid/setgid bits.
        if !symlink {
            nix::sys::stat::fchmodat(
                parent,
                last,
                Mode::from_bits_truncate(meta.mode & 0o7777),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(sys("changing mode of", name))?;
        }
        if let Some(t) = meta.mtime {
            let ts = nix::sys::time::TimeSpec::new(t, 0);
            nix::sys::stat::utimensat(parent, last, &ts, &ts, UtimensatFlags::NoFollowSymlink)
                .map_err(sys("setting times of", name))?;
        }
        Ok(())
    }

    /// Create (or merge into) a directory.
    pub fn mkdir(&self, name: &str, meta: &Meta) -> Result<(), SafePathError> {
        let comps = components(name)?;
        if comps.is_empty() {
            // The root itself: only metadata.
            return self.set_meta(
                &self.open_dir_beneath(&[], name)?,
                OsStr::new("."),
                meta,
                false,
                name,
            );
        }
        let (parent, last) = self.parent_of(name, true)?;
        if !self.clear(&parent, last, true, name)? {
            nix::sys::stat::mkdirat(&parent, last, Mode::from_bits_truncate(0o700))
                .map_err(sys("creating directory", name))?;
        }
        self.set_meta(&parent, last, &meta.no_mtime(), false, name)
    }

    /// Create a regular file and return it open for writing; metadata is
    /// applied by [`SafeRoot::finish_file`] after the content is written.
    pub fn create_file(&self, name: &str) -> Result<(File, OwnedFd, PathBuf), SafePathError> {
        let (parent, last) = self.parent_of(name, true)?;
        self.clear(&parent, last, false, name)?;
        let fd = nix::fcntl::openat(
            &parent,
            last,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(sys("creating", name))?;
        Ok((File::from(fd), parent, PathBuf::from(last)))
    }

    /// Apply owner, mode, time and xattrs to a file made by `create_file`.
    pub fn finish_file(
        &self,
        file: &File,
        parent: &OwnedFd,
        last: &Path,
        meta: &Meta,
        xattrs: &[(String, Vec<u8>)],
        name: &str,
    ) -> Result<(), SafePathError> {
        use xattr::FileExt;
        self.set_meta(parent, last.as_os_str(), meta, false, name)?;
        for (k, v) in xattrs {
            file.set_xattr(k, v).map_err(|e| SafePathError::Sys {
                action: "setting xattr on",
                path: name.to_string(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
        }
        Ok(())
    }

    /// Write a whole file.
    pub fn write_file(&self, name: &str, data: &[u8], meta: &Meta) -> Result<(), SafePathError> {
        use std::io::Write;
        let (mut f, parent, last) = self.create_file(name)?;
        f.write_all(data).map_err(|e| SafePathError::Sys {
            action: "writing",
            path: name.to_string(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        self.finish_file(&f, &parent, &last, meta, &[], name)
    }

    /// Create a symlink. Its target is stored verbatim: it is only text
    /// until something resolves it, and nothing in vsctl resolves tree
    /// symlinks on the host.
    pub fn symlink(&self, name: &str, target: &Path, meta: &Meta) -> Result<(), SafePathError> {
        let (parent, last) = self.parent_of(name, true)?;
        self.clear(&parent, last, false, name)?;
        nix::unistd::symlinkat(target, &parent, last).map_err(sys("creating symlink", name))?;
        self.set_meta(&parent, last, meta, true, name)
    }

    /// Create a hardlink to another entry of the same tree.
    pub fn hardlink(&self, name: &str, target: &str) -> Result<(), SafePathError> {
        let (tparent, tlast) = self.parent_of(target, false)?;
        let (parent, last) = self.parent_of(name, true)?;
        self.clear(&parent, last, false, name)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        nix::unistd::linkat(&tparent, tlast, &parent, last, AtFlags::empty())
            .map_err(sys("creating hardlink", name))
    }

    /// Create a device node or fifo.
    pub fn mknod(
        &self,
        name: &str,
        kind: SFlag,
        rdev: u64,
        meta: &Meta,
    ) -> Result<(), SafePathError> {
        let (parent, last) = self.parent_of(name, true)?;
        self.clear(&parent, last, false, name)?;
        nix::sys::stat::mknodat(&parent, last, kind, Mode::from_bits_truncate(0o600), rdev)
            .map_err(sys("creating node", name))?;
        self.set_meta(&parent, last, meta, false, name)
    }
}

impl Meta {
    fn no_mtime(&self) -> Meta {
        // Directory mtimes change as entries are added; setting them early
        // would be undone, and manifests ignore mtimes anyway.
        Meta {
            mtime: None,
            ..*self
        }
    }
}
