//! Deleting trees without following anything: the only code in vsctl that
//! removes guest data, called for stale `*.building` directories and for an
//! explicit purge. It walks with directory fds, never follows a symlink
//! (symlinks are unlinked, not traversed) and refuses to descend into a
//! directory on another filesystem (a mount left behind, a nested btrfs
//! subvolume), so a delete can never reach outside the tree it was given.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::RootfsError;

fn io_err(op: &'static str, path: &Path, e: nix::errno::Errno) -> RootfsError {
    RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Remove `name` inside the directory `parent` (whose path is `parent_path`,
/// used for messages only). Missing entries are fine.
pub(crate) fn remove_entry(
    parent: &OwnedFd,
    parent_path: &Path,
    name: &OsStr,
) -> Result<(), RootfsError> {
    let path = parent_path.join(name);
    let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io_err("stat", &path, e)),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_err("unlink", &path, e));
    }
    // The top directory may itself be a btrfs subvolume (own st_dev): its
    // device is the one the walk must stay on.
    remove_dir_contents(parent, name, &path, st.st_dev)?;
    unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(|e| io_err("rmdir", &path, e))
}

fn remove_dir_contents(
    parent: &OwnedFd,
    name: &OsStr,
    path: &Path,
    dev: u64,
) -> Result<(), RootfsError> {
    let dir = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open", path, e))?;
    let st = nix::sys::stat::fstat(&dir).map_err(|e| io_err("stat", path, e))?;
    if st.st_dev != dev {
        return Err(RootfsError::CrossesFilesystem {
            path: path.to_path_buf(),
        });
    }
    let names: Vec<OsString> = {
        let dup = dir.try_clone().map_err(|e| RootfsError::Io {
            op: "dup",
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut d = Dir::from_fd(dup).map_err(|e| io_err("opendir", path, e))?;
        let mut v = Vec::new();
        for ent in d.iter() {
            let ent = ent.map_err(|e| io_err("readdir", path, e))?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                v.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        v
    };
    for n in names {
        let child = path.join(&n);
        let cst = match fstatat(&dir, n.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(io_err("stat", &child, e)),
        };
        if cst.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if cst.st_dev != dev {
                return Err(RootfsError::CrossesFilesystem { path: child });
            }
            remove_dir_contents(&dir, &n, &child, dev)?;
            unlinkat(&dir, n.as_os_str(), UnlinkatFlags::RemoveDir)
                .map_err(|e| io_err("rmdir", &child, e))?;
        } else {
            unlinkat(&dir, n.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_err("unlink", &child, e))?;
        }
    }
    Ok(())
}
