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

/// One mapped extent of a file (FS_IOC_FIEMAP): `length` bytes at file
/// offset `logical` live at byte `physical` of the filesystem's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

const FIEMAP_BATCH: usize = 64;

#[repr(C)]
struct Fiemap {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
    fm_extents: [FiemapExtent; FIEMAP_BATCH],
}

const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Extents whose bytes on the device are not the file's plain data
/// (unknown, delayed, encoded, encrypted, unaligned, inline, tail-packed,
/// unwritten): never shared.
const FIEMAP_EXTENT_NOT_PLAIN: u32 = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800;

/// The plain data extents of the file `fd` (FS_IOC_FIEMAP with SYNC).
pub(crate) fn data_extents(fd: BorrowedFd<'_>) -> io::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut map = Fiemap {
            fm_start: start,
            fm_length: u64::MAX - start,
            fm_flags: FIEMAP_FLAG_SYNC,
            fm_mapped_extents: 0,
            fm_extent_count: FIEMAP_BATCH as u32,
            fm_reserved: 0,
            fm_extents: [FiemapExtent::default(); FIEMAP_BATCH],
        };
        // SAFETY: the kernel reads the header and writes at most
        // fm_extent_count extents into the array that follows it, all
        // inside `map`, which we own.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (map.fm_mapped_extents as usize).min(FIEMAP_BATCH);
        if n == 0 {
            return Ok(out);
        }
        for e in &map.fm_extents[..n] {
            if e.fe_flags & FIEMAP_EXTENT_NOT_PLAIN == 0 {
                out.push(Extent {
                    logical: e.fe_logical,
                    physical: e.fe_physical,
                    length: e.fe_length,
                });
            }
            start = e.fe_logical + e.fe_length;
            if e.fe_flags & FIEMAP_EXTENT_LAST != 0 {
                return Ok(out);
            }
        }
    }
}

#[repr(C)]
struct DedupeRange {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
    dest_fd: i64,
    dest_offset: u64,
    bytes_deduped: u64,
    status: i32,
    reserved: u32,
}

const FIDEDUPERANGE: libc::c_ulong = 0xC018_9436;

/// Share `len` bytes at `src_off` of `src` with `dst` at `dst_off` if their
/// contents are equal (FIDEDUPERANGE; the kernel compares, locks and
/// remaps). Returns the bytes shared: 0 when the ranges differ. The kernel
/// may share less than asked (a partial last block, its per-call limit).
pub(crate) fn dedupe(
    src: BorrowedFd<'_>,
    src_off: u64,
    len: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
) -> io::Result<u64> {
    let mut arg = DedupeRange {
        src_offset: src_off,
        src_length: len,
        dest_count: 1,
        reserved1: 0,
        reserved2: 0,
        dest_fd: i64::from(dst.as_raw_fd()),
        dest_offset: dst_off,
        bytes_deduped: 0,
        status: 0,
        reserved: 0,
    };
    // SAFETY: `arg` is a file_dedupe_range header followed by exactly the
    // one file_dedupe_range_info that dest_count announces; the kernel
    // reads it and writes bytes_deduped and status back into it.
    let rc = unsafe { libc::ioctl(src.as_raw_fd(), FIDEDUPERANGE, &mut arg as *mut DedupeRange) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    match arg.status {
        0 => Ok(arg.bytes_deduped),
        1 => Ok(0), // FILE_DEDUPE_RANGE_DIFFERS
        e if e < 0 => Err(io::Error::from_raw_os_error(-e)),
        _ => Ok(0),
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn ioctl_structs_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<super::FiemapExtent>(), 56);
        assert_eq!(std::mem::size_of::<super::DedupeRange>(), 56);
        assert_eq!(
            std::mem::size_of::<super::Fiemap>(),
            32 + 56 * super::FIEMAP_BATCH
        );
    }
}
