//! Loop devices: a regular file made into a block device so that a
//! filesystem image (the `image` rootfs strategy) can be mounted.
//!
//! Devices are attached with LOOP_CONFIGURE and the AUTOCLEAR flag: the
//! kernel detaches the device by itself once its last user (the mounted
//! filesystem) lets go, so a guest whose mount namespace dies leaves no loop
//! device behind, and nothing here ever has to detach one. Nothing here runs
//! losetup(8).
//!
//! What this module must never do: attach an image that another loop device
//! already backs (two filesystems on one image corrupt it); callers check
//! with [`attached_to`] first.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// struct loop_info64 (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// struct loop_config (linux/loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device, open. Dropping it closes the device; with
/// AUTOCLEAR the kernel then detaches it unless something (a mount) still
/// uses it.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    pub fd: OwnedFd,
}

/// Attach `image` to a free loop device with AUTOCLEAR. A device taken by
/// another process between LOOP_CTL_GET_FREE and LOOP_CONFIGURE (EBUSY) is
/// skipped and the next free one tried.
pub fn attach(image: &File, read_only: bool) -> io::Result<LoopDevice> {
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let mut last = io::Error::from_raw_os_error(libc::EBUSY);
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns an index.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = File::options()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        // SAFETY: LoopConfig is plain old data; all-zero is its documented
        // "no options" value.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = image.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        // SAFETY: the ioctl reads one struct loop_config from `config`,
        // which outlives the call; the image fd in it is open.
        let rc = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok(LoopDevice {
                path,
                fd: OwnedFd::from(dev),
            });
        }
        last = io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::EBUSY) {
            return Err(last);
        }
    }
    Err(last)
}

/// Make the loop device see its backing file's new size (LOOP_SET_CAPACITY).
pub fn refresh_capacity(dev: &File) -> io::Result<()> {
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_CAPACITY, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Loop devices whose backing file is `image` (compared by device and inode
/// through /sys/block/loopN/loop/backing_file), e.g. one still held by a
/// guest's dying mount namespace.
pub fn attached_to(image: &Path) -> io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(image)?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        if let Ok(md) = std::fs::metadata(backing)
            && md.dev() == want.dev()
            && md.ino() == want.ino()
        {
            found.push(PathBuf::from(format!("/dev/{name}")));
        }
    }
    Ok(found)
}

/// Wait up to `timeout` until no loop device backs `image` any more (the
/// kernel releases a mount namespace's filesystems shortly after its last
/// process exits). Returns the devices still attached at the end.
pub fn wait_released(image: &Path, timeout: std::time::Duration) -> io::Result<Vec<PathBuf>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = attached_to(image)?;
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return Ok(left);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<super::LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<super::LoopConfig>(), 304);
    }
}
