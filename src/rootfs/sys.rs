//! The raw syscalls the rootfs module needs and nix does not wrap: FICLONE and
//! the extended-attribute family. Every `unsafe` block of `rootfs` lives here,
//! each with the reason it is sound; everything above this file works with
//! `OwnedFd`/`BorrowedFd` and `io::Result`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Share all of `src`'s data extents with `dst` (ioctl FICLONE, see
/// ioctl_ficlone(2)). Fails with EOPNOTSUPP/EINVAL/EXDEV when the filesystem
/// cannot reflink or the files are on different filesystems.
pub(crate) fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument and touches no
    // user memory; both fds are valid for the duration of the call (borrowed).
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

nix::ioctl_write_ptr!(ext4_ioc_resize_fs, b'f', 16, u64);

/// Grow the mounted ext4 filesystem holding `fd` to `blocks` blocks
/// (EXT4_IOC_RESIZE_FS; needs CAP_SYS_RESOURCE).
pub(crate) fn ext4_resize(fd: BorrowedFd<'_>, blocks: u64) -> io::Result<()> {
    // SAFETY: the ioctl reads one u64 from `blocks`, alive for the call.
    unsafe { ext4_ioc_resize_fs(fd.as_raw_fd(), &blocks) }?;
    Ok(())
}

/// Where an xattr call should act: on an open fd (regular files and
/// directories), or on a path (used with `/proc/self/fd/N` of an `O_PATH` fd
/// for symlinks and special files, which cannot be opened for I/O without side
/// effects; the magic link resolves to the object itself, never through it).
pub(crate) enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    /// Path through a proc magic link of an `O_PATH` fd.
    ProcFd(BorrowedFd<'a>),
}

fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a formatted path")
}

/// Names of all extended attributes of the target.
pub(crate) fn list_xattrs(target: &XattrTarget<'_>) -> io::Result<Vec<CString>> {
    let mut buf: Vec<u8> = vec![0; 1024];
    loop {
        let rc = match target {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes for the call.
            XattrTarget::Fd(fd) => unsafe {
                libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
            },
            XattrTarget::ProcFd(fd) => {
                let p = proc_path(*fd);
                // SAFETY: p is NUL-terminated and outlives the call; buf as above.
                unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
            }
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => {
                    let n = buf.len() * 4;
                    buf.resize(n, 0);
                    continue;
                }
                // Filesystems (or file types) without xattr support have none.
                Some(libc::ENOTSUP) => return Ok(Vec::new()),
                _ => return Err(e),
            }
        }
        buf.truncate(rc as usize);
        return Ok(buf
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| CString::new(n).expect("split on NUL"))
            .collect());
    }
}

/// Value of one extended attribute.
pub(crate) fn get_xattr(target: &XattrTarget<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = vec![0; 256];
    loop {
        let rc = match target {
            // SAFETY: name is NUL-terminated; buf is writable for buf.len() bytes.
            XattrTarget::Fd(fd) => unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            },
            XattrTarget::ProcFd(fd) => {
                let p = proc_path(*fd);
                // SAFETY: p and name are NUL-terminated and live across the call.
                unsafe {
                    libc::getxattr(
                        p.as_ptr(),
                        name.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                }
            }
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                let n = buf.len() * 8;
                buf.resize(n, 0);
                continue;
            }
            return Err(e);
        }
        buf.truncate(rc as usize);
        return Ok(buf);
    }
}

/// Set one extended attribute (create or replace).
pub(crate) fn set_xattr(target: &XattrTarget<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    let rc = match target {
        // SAFETY: name is NUL-terminated; value is readable for value.len() bytes.
        XattrTarget::Fd(fd) => unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        },
        XattrTarget::ProcFd(fd) => {
            let p = proc_path(*fd);
            // SAFETY: as above, p is NUL-terminated and lives across the call.
            unsafe {
                libc::setxattr(
                    p.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            }
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Remove one extended attribute; a missing one is not an error.
pub(crate) fn remove_xattr(target: &XattrTarget<'_>, name: &CStr) -> io::Result<()> {
    let rc = match target {
        // SAFETY: name is NUL-terminated and lives across the call.
        XattrTarget::Fd(fd) => unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) },
        XattrTarget::ProcFd(fd) => {
            let p = proc_path(*fd);
            // SAFETY: p and name are NUL-terminated and live across the call.
            unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }
        }
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODATA) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}
