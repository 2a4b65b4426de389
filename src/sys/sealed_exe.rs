//! The running binary, sealed: a handle on vsctl's own executable through
//! which nobody can write it, to exec processes that a guest might reach
//! before they exec the guest's program (runc's CVE-2019-5736 fix).
//!
//! A process that joins a guest's namespaces is visible to the guest for a
//! moment before it execs the guest's command; the guest could try to open
//! its `/proc/PID/exe` and, once vsctl has exited, rewrite vsctl's binary
//! through that handle. vsctl's processes there are never dumpable (so the
//! open is refused), and on top of that they run from this sealed handle:
//! the binary seen through a private, read-only, lower-only overlayfs mount
//! that is attached nowhere (fsopen/fsmount; there is nothing to unmount
//! and nothing to leak, the mount lives as long as a process runs from it).
//! Writes through it fail with EROFS, and no path leads from it back to the
//! real file. Where overlayfs cannot be used (the binary deleted or on a
//! filesystem overlayfs refuses), a sealed memfd copy serves instead.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::check;

/// overlayfs splits `lowerdir` on ':' and takes '\' as an escape.
fn escape_lowerdir(path: &Path) -> Option<String> {
    let s = path.to_str()?;
    Some(s.replace('\\', "\\\\").replace(':', "\\:"))
}

/// A handle (O_PATH, or a sealed memfd) on this process's own executable
/// that can be exec'd with [`super::execveat_fd`] and never written
/// through. `empty_dir` is any existing directory on a different path from
/// the binary's (its content is never visible): overlayfs needs a second
/// lower layer to be read-only without an upper one.
pub fn sealed_self_exe(empty_dir: &Path) -> io::Result<OwnedFd> {
    match overlay_exe(empty_dir) {
        Ok(fd) => Ok(fd),
        Err(_) => memfd_exe(),
    }
}

fn overlay_exe(empty_dir: &Path) -> io::Result<OwnedFd> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
    let exe = std::fs::read_link("/proc/self/exe")?;
    let (dir, name) = match (exe.parent(), exe.file_name()) {
        (Some(d), Some(n)) if exe.is_absolute() => (d, n),
        _ => return Err(invalid()),
    };
    let lowerdir = format!(
        "{}:{}",
        escape_lowerdir(dir).ok_or_else(invalid)?,
        escape_lowerdir(empty_dir).ok_or_else(invalid)?
    );
    let mount = super::mount_detached(
        "overlay",
        &[("lowerdir", Some(&lowerdir)), ("xino", Some("off"))],
    )?;
    let name = CString::new(name.as_encoded_bytes()).map_err(|_| invalid())?;
    // SAFETY: a valid directory fd and NUL-terminated name; the result is
    // checked and owned below.
    let fd = check(unsafe {
        libc::openat(
            mount.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    } as libc::c_long)?;
    // SAFETY: a fresh descriptor from the kernel.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // The file through the overlay is the one running (a binary replaced
    // on disk since this process started would not be).
    let ours = std::fs::metadata("/proc/self/exe")?;
    let sealed = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if !sealed.is_file() || sealed.len() != ours.len() || sealed.mtime() != ours.mtime() {
        return Err(io::Error::other("the binary changed on disk"));
    }
    Ok(fd)
}

const MFD_EXEC: libc::c_uint = 0x10;

/// A copy of the running binary in a memfd sealed against every change.
fn memfd_exe() -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a static NUL-terminated name and constant flags. MFD_EXEC
    // (Linux 6.3+) keeps the copy executable under vm.memfd_noexec;
    // older kernels refuse the flag, so retry without.
    let mut fd = unsafe { libc::memfd_create(c"vsctl".as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c"vsctl".as_ptr(), flags) };
    }
    check(fd as libc::c_long)?;
    // SAFETY: a fresh descriptor from the kernel.
    let memfd = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut source = std::fs::File::open("/proc/self/exe")?;
    io::copy(&mut source, &mut &memfd)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own descriptor with integer arguments.
    check(unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } as libc::c_long)?;
    Ok(memfd.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_paths_are_escaped() {
        assert_eq!(escape_lowerdir(Path::new("/a/b")).unwrap(), "/a/b");
        assert_eq!(
            escape_lowerdir(Path::new("/a:b\\c")).unwrap(),
            "/a\\:b\\\\c"
        );
    }

    fn write_fails(fd: &OwnedFd) -> io::Error {
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .expect_err("the sealed binary opened for writing")
    }

    #[test]
    fn the_sealed_binary_cannot_be_written() {
        if !nix::unistd::geteuid().is_root() {
            return; // overlayfs mounts need root; the memfd case still runs
        }
        let empty = tempfile::tempdir().unwrap();
        let fd = overlay_exe(empty.path()).expect("sealed overlay of the test binary");
        assert_eq!(write_fails(&fd).raw_os_error(), Some(libc::EROFS));
        let size = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .len();
        assert_eq!(size, std::fs::metadata("/proc/self/exe").unwrap().len());
    }

    #[test]
    fn the_memfd_copy_is_sealed() {
        let fd = memfd_exe().unwrap();
        // F_SEAL_WRITE: opening for write works on a memfd, writing not.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap();
        let e = std::io::Write::write_all(&mut f, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        // SAFETY (test): fcntl on our own descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_SEAL, 0);
    }
}
