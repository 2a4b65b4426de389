//! The `image` strategy: each guest's root filesystem is an ext4 image file
//! of its own, a whole-file reflink (FICLONE) of its template's image, and is
//! mounted through a loop device when the guest runs.
//!
//! Why: a per-file clone gives every guest a new inode and directory block
//! for each of the template's files (about 4.6 MiB per Debian minbase guest
//! on XFS, the same as `cp --reflink`), while a clone of one image file
//! shares everything, metadata included, until the guest writes. The cost is
//! a filesystem on a loop device: the host sees the guest's files only while
//! it is mounted, and the guest's disk size is the image's size.
//!
//! The template image is made once per template tree digest with
//! `mkfs.ext4 -d` (which packs the files at the start of the image, so that
//! shrinking a guest's image moves little), then corrected where mke2fs is
//! not faithful (nanosecond timestamps, the root directory's owner and
//! mode), and its file data is shared with the template tree's files
//! (FIDEDUPERANGE), so that it costs little more than its metadata. Like any
//! ext4 root it has a `lost+found` the template lacks. Sizes are changed
//! with resize2fs while the guest is stopped, or grown online
//! (EXT4_IOC_RESIZE_FS) while it runs.
//!
//! What this module must never do: mount one image twice (see [`lock`]), or
//! change a guest's image in place where a failure could leave it half
//! changed (resizes work on a reflink copy that replaces it by rename).

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{BUILDING, RootfsError, io_err};

/// Size of a guest image when `[disk] quota` does not say (sparse: only
/// what the guest writes takes space), as LXD's default block volume size.
pub const DEFAULT_SIZE: u64 = 10 << 30;
/// File name of a guest's image inside its guest directory.
pub const IMAGE_NAME: &str = "rootfs.img";
/// How long to wait for the kernel to let go of an image's loop device (a
/// stopped guest's mount namespace is torn down shortly after its last
/// process exits).
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// Online-resize headroom reserved at mkfs time: up to 1 TiB of 4 KiB
/// blocks (the default, 1024x the size, reserves 4 MiB of descriptor blocks
/// that every resize rewrites).
const RESIZE_MAX_BLOCKS: u64 = 1 << 28;
const BLOCK: u64 = 4096;
/// Template images are `TEMPLATE@KEY.ext4`.
const IMAGE_SUFFIX: &str = ".ext4";
/// Suffix of the reflink copy a resize works on.
pub(crate) const RESIZING: &str = ".resizing";

/// Run an e2fsprogs tool; exit codes up to `ok_up_to` are success (e2fsck
/// exits 1 when it corrected something, such as a missing lost+found).
fn run_tool(
    cmd: &mut Command,
    tool: &'static str,
    path: &Path,
    ok_up_to: i32,
) -> Result<(), RootfsError> {
    let out = cmd.env("LC_ALL", "C").output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RootfsError::ToolMissing { tool }
        } else {
            io_err("run", Path::new(tool), e)
        }
    })?;
    if out
        .status
        .code()
        .is_some_and(|c| (0..=ok_up_to).contains(&c))
    {
        Ok(())
    } else {
        Err(RootfsError::ToolFailed {
            tool,
            path: path.to_path_buf(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The template image for the tree `tree` at `dir/TEMPLATE@KEY.ext4`, made
/// if missing (crash-safe: built as `TEMPLATE@KEY.ext4.PID.building`,
/// renamed when complete). Images of the same `template` with another key
/// are removed first (guests are clones and never refer to them after they
/// are made), and so are builds of killed runs (named by pid, so that an
/// mkfs.ext4 orphaned by a kill writes only to its own, unlinked, file).
pub fn template_image(
    tree: &Path,
    dir: &Path,
    template: &str,
    key: &str,
) -> Result<PathBuf, RootfsError> {
    let name = format!("{template}@{key}{IMAGE_SUFFIX}");
    let path = dir.join(&name);
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    remove_unused_template_images(dir, |t, k| t != template || k == key)?;
    let building = dir.join(format!("{name}.{}{BUILDING}", std::process::id()));
    let result = build_template_image(tree, &building);
    match result {
        Ok(()) => std::fs::rename(&building, &path)
            .map_err(|e| io_err("rename into place", &path, e))
            .map(|()| path),
        Err(e) => {
            let _ = std::fs::remove_file(&building);
            Err(e)
        }
    }
}

/// mkfs.ext4 -d, the fix-up, the data sharing: everything but the rename.
fn build_template_image(tree: &Path, building: &Path) -> Result<(), RootfsError> {
    let building = building.to_path_buf();
    // The image holds the whole template, /etc/shadow included: root's only.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&building)
            .map_err(|e| io_err("create", &building, e))?
    };
    file.set_len(DEFAULT_SIZE)
        .map_err(|e| io_err("size", &building, e))?;
    drop(file);
    let extended =
        format!("lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0,resize={RESIZE_MAX_BLOCKS}");
    run_tool(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-T", "default", "-m", "0"])
            .args([
                "-J",
                // A 16 MiB journal (mke2fs would pick 64 MiB for 10 GiB) lets
                // a guest's image shrink to a few dozen MiB.
                "location=0,size=16",
                "-L",
                "vsctl-guest",
                "-E",
                &extended,
                "-d",
            ])
            .arg(tree)
            .arg(&building),
        "mkfs.ext4",
        &building,
        0,
    )?;
    let placed = {
        let root = mount(&lock(&building)?, None)?;
        fix_up(tree, &root, &building)?;
        placements(tree, &root, &building)?
    };
    wait_unused(&building)?;
    let file = File::options()
        .read(true)
        .write(true)
        .open(&building)
        .map_err(|e| io_err("open", &building, e))?;
    share_with_tree(&placed, &file)?;
    file.sync_all().map_err(|e| io_err("fsync", &building, e))
}

/// Remove the template images in `dir` that `keep(template, key)` rejects
/// (a template removed or rebuilt since), and builds whose process is gone.
/// Guests never refer to a template image after they are cloned, so this
/// frees only the images themselves. Returns (files removed, bytes freed).
pub fn remove_unused_template_images(
    dir: &Path,
    keep: impl Fn(&str, &str) -> bool,
) -> Result<(u64, u64), RootfsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io_err("read", dir, e)),
    };
    let (mut removed, mut freed) = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let unused = if let Some(rest) = name.strip_suffix(BUILDING) {
            rest.rsplit('.')
                .next()
                .and_then(|pid| pid.parse::<i32>().ok())
                .is_some_and(crate::sys::pid_gone)
        } else if let Some((template, key)) = name
            .strip_suffix(IMAGE_SUFFIX)
            .and_then(|s| s.split_once('@'))
        {
            !keep(template, key)
        } else {
            false
        };
        let Ok(md) = entry.metadata() else { continue };
        if unused && md.is_file() {
            std::fs::remove_file(entry.path()).map_err(|e| io_err("remove", &entry.path(), e))?;
            removed += 1;
            freed += md.blocks() * 512;
        }
    }
    Ok((removed, freed))
}

/// What mke2fs -d does not copy faithfully: sub-second timestamps (it keeps
/// whole seconds and sets atime to mtime) and the root directory's owner and
/// mode. Every path here comes from walking the template tree and is
/// resolved beneath the image's root without following symlinks. The
/// `lost+found` mke2fs adds stays: e2fsck wants it and would make it again.
fn fix_up(tree: &Path, root: &OwnedFd, image: &Path) -> Result<(), RootfsError> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let resolve = |rel: &Path| open_in_image(root, rel, OFlag::O_PATH, image);
    for entry in walkdir::WalkDir::new(tree).contents_first(true) {
        let entry = entry.map_err(|e| io_err("walk", tree, std::io::Error::other(e)))?;
        let rel = entry.path().strip_prefix(tree).unwrap_or(Path::new(""));
        let md = entry
            .metadata()
            .map_err(|e| io_err("stat", entry.path(), std::io::Error::other(e)))?;
        let (parent, name): (PathBuf, &OsStr) = match rel.file_name() {
            Some(n) => (rel.parent().unwrap_or(Path::new("")).to_path_buf(), n),
            None => {
                // The root: owner and mode too, which mke2fs sets its own way.
                let fd = resolve(rel)?;
                let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
                std::os::unix::fs::chown(&p, Some(md.uid()), Some(md.gid()))
                    .map_err(|e| io_err("chown", image, e))?;
                std::fs::set_permissions(
                    &p,
                    std::os::unix::fs::PermissionsExt::from_mode(md.mode() & 0o7777),
                )
                .map_err(|e| io_err("chmod", image, e))?;
                (PathBuf::new(), OsStr::new("."))
            }
        };
        let dir = resolve(&parent)?;
        utimensat(
            dir.as_fd(),
            name,
            &TimeSpec::new(md.atime(), md.atime_nsec()),
            &TimeSpec::new(md.mtime(), md.mtime_nsec()),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_err("set times", &image.join(rel), e))?;
    }
    Ok(())
}

/// Open `rel` below the mounted image's `root` (`.` for the root itself),
/// following no symlink on the way and not at the end.
fn open_in_image(
    root: &OwnedFd,
    rel: &Path,
    flags: nix::fcntl::OFlag,
    image: &Path,
) -> Result<OwnedFd, RootfsError> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let p = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(root.as_fd(), p, how).map_err(|e| io_err("open in image", &image.join(rel), e))
}

/// Where the data of a template file landed in the image: `(tree file,
/// extents)`, each extent's `physical` being its byte offset in the image.
type Placements = Vec<(PathBuf, Vec<super::sys::Extent>)>;

/// For every regular file of the tree (once per inode), the extents its
/// copy occupies in the mounted image (FIEMAP through the mount).
fn placements(tree: &Path, root: &OwnedFd, image: &Path) -> Result<Placements, RootfsError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.map_err(|e| io_err("walk", tree, std::io::Error::other(e)))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let md = entry
            .metadata()
            .map_err(|e| io_err("stat", entry.path(), std::io::Error::other(e)))?;
        if md.len() < BLOCK || !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        let rel = entry.path().strip_prefix(tree).unwrap_or(entry.path());
        let copy = open_in_image(root, rel, nix::fcntl::OFlag::O_RDONLY, image)?;
        let extents = super::sys::data_extents(copy.as_fd())
            .map_err(|e| io_err("map extents of", &image.join(rel), e))?;
        out.push((entry.path().to_path_buf(), extents));
    }
    Ok(out)
}

/// Make the image share its file data with the template tree's files (the
/// store objects) where the bytes are equal: FIDEDUPERANGE from each tree
/// file onto the image range holding its copy. The kernel compares before it
/// remaps, so a wrong placement shares nothing rather than corrupting
/// anything. mke2fs wrote a second copy of the template's data; after this
/// the template image costs its metadata and the partial last block of each
/// file. Best effort: a range that cannot be shared stays a copy.
fn share_with_tree(placed: &Placements, image: &File) -> Result<(), RootfsError> {
    // XFS shares at most 16 MiB per call; larger asks come back short.
    const CHUNK: u64 = 16 << 20;
    for (path, extents) in placed {
        let Ok(src) = File::open(path) else {
            continue;
        };
        let size = src.metadata().map(|m| m.len()).unwrap_or(0);
        for e in extents {
            let end = (e.logical + e.length).min(size);
            let mut off = e.logical;
            while off + BLOCK <= end {
                // Whole blocks: a partial last block cannot be shared.
                let len = (end - off).min(CHUNK) / BLOCK * BLOCK;
                match super::sys::dedupe(
                    src.as_fd(),
                    off,
                    len,
                    image.as_fd(),
                    e.physical + (off - e.logical),
                ) {
                    Ok(n) if n > 0 => off += n,
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

/// Clone `template_image` into `dst` (which must not exist) with FICLONE:
/// one call shares every block of the image.
pub fn clone_image(template_image: &Path, dst: &Path) -> Result<(), RootfsError> {
    let src = File::open(template_image).map_err(|e| io_err("open", template_image, e))?;
    let out = File::options()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| io_err("create", dst, e))?;
    std::fs::set_permissions(dst, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| io_err("chmod", dst, e))?;
    super::sys::ficlone(out.as_fd(), src.as_fd()).map_err(|e| RootfsError::ReflinkUnsupported {
        path: dst.parent().unwrap_or(dst).to_path_buf(),
        source: e,
    })?;
    // XFS copies on write in 128 KiB extents by default: one 4 KiB metadata
    // update of the guest's ext4 would then unshare 32 blocks. One block is
    // what a filesystem image wants. Other filesystems have no such hint.
    let _ = crate::quota::set_cow_extent_size(out.as_fd(), BLOCK as u32);
    out.sync_all().map_err(|e| io_err("fsync", dst, e))
}

/// Error unless no loop device backs `image` (waiting a little for one that
/// a stopped guest's namespace is still releasing).
fn wait_unused(image: &Path) -> Result<(), RootfsError> {
    let left = crate::loopdev::wait_released(image, RELEASE_WAIT)
        .map_err(|e| io_err("check loop devices of", image, e))?;
    match left.first() {
        None => Ok(()),
        Some(dev) => Err(RootfsError::ImageInUse {
            path: image.to_path_buf(),
            by: dev.display().to_string(),
        }),
    }
}

/// Exclusive use of a guest's image (an flock on it): whoever mounts the
/// image or resizes it holds this first, for as long as the mount or the
/// resize lasts (the supervisor: the guest's whole life). Together with the
/// loop-device check in [`mount`] it makes sure one ext4 image is never
/// mounted twice, not even by two vsctl commands racing.
#[derive(Debug)]
pub struct ImageLock {
    path: PathBuf,
    file: nix::fcntl::Flock<File>,
}

/// Take [`ImageLock`] on `image`, waiting a little for a holder that is
/// finishing (a guest being stopped, a guest-file write).
pub fn lock(image: &Path) -> Result<ImageLock, RootfsError> {
    use nix::fcntl::{Flock, FlockArg};
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| io_err("open", image, e))?;
    let deadline = std::time::Instant::now() + RELEASE_WAIT;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                return Ok(ImageLock {
                    path: image.to_path_buf(),
                    file: locked,
                });
            }
            Err((f, nix::Error::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((_, nix::Error::EWOULDBLOCK)) => {
                return Err(RootfsError::ImageInUse {
                    path: image.to_path_buf(),
                    by: "another vsctl process (a running guest's supervisor, an apply)".into(),
                });
            }
            Err((_, e)) => return Err(io_err("lock", image, e)),
        }
    }
}

/// Mount the locked image (ext4) as a new detached mount through a loop
/// device of its own, idmapped with the user namespace `userns` if given.
/// The mount is attached nowhere; dropping the fd unmounts it and the loop
/// device detaches itself (AUTOCLEAR). Refuses an image some loop device
/// still backs (a stopped guest's namespace not yet gone after the wait):
/// two mounts of one ext4 image would corrupt it.
pub fn mount(locked: &ImageLock, userns: Option<RawFd>) -> Result<OwnedFd, RootfsError> {
    let image = locked.path.as_path();
    wait_unused(image)?;
    let file: &File = &locked.file;
    let dev = crate::loopdev::attach(file, false)
        .map_err(|e| io_err("attach loop device for", image, e))?;
    let source = dev.path.to_string_lossy().into_owned();
    let tree = crate::sys::mount_detached(
        "ext4",
        // noinit_itable: never zero the inode tables mke2fs left lazy (that
        // would unshare them in every guest); discard: blocks a guest frees
        // are punched out of the image, back to the host.
        &[
            ("source", Some(source.as_str())),
            ("noinit_itable", None),
            ("discard", None),
        ],
    )
    .map_err(|e| io_err("mount the ext4 image", image, e))?;
    // The mount now holds the device; ours may go.
    drop(dev);
    if let Some(ns) = userns {
        crate::sys::set_idmap(&tree, ns).map_err(|e| io_err("idmap mount of", image, e))?;
    }
    Ok(tree)
}

/// Size and usage as recorded in an image's ext4 superblock (exact for a
/// cleanly unmounted image; while mounted the kernel updates it lazily).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
}

impl Superblock {
    pub fn size(&self) -> u64 {
        self.blocks * self.block_size
    }
}

/// Parse the primary ext4 superblock (1024 bytes at offset 1024).
pub fn parse_superblock(sb: &[u8]) -> Option<Superblock> {
    let u32_at = |o: usize| Some(u32::from_le_bytes(sb.get(o..o + 4)?.try_into().ok()?) as u64);
    let u16_at = |o: usize| Some(u16::from_le_bytes(sb.get(o..o + 2)?.try_into().ok()?));
    if u16_at(0x38)? != 0xEF53 {
        return None;
    }
    let incompat = u32_at(0x60)?;
    let wide = incompat & 0x80 != 0; // INCOMPAT_64BIT
    let hi = |o: usize| if wide { u32_at(o) } else { Some(0) };
    let log = u32_at(0x18)?;
    if log > 6 {
        return None;
    }
    Some(Superblock {
        block_size: 1024 << log,
        blocks: u32_at(0x04)? | hi(0x150)? << 32,
        free_blocks: u32_at(0x0C)? | hi(0x158)? << 32,
        inodes: u32_at(0x00)?,
        free_inodes: u32_at(0x10)?,
    })
}

pub fn read_superblock(image: &Path) -> Result<Superblock, RootfsError> {
    use std::os::unix::fs::FileExt;
    let f = File::open(image).map_err(|e| io_err("open", image, e))?;
    let mut buf = vec![0u8; 1024];
    f.read_exact_at(&mut buf, 1024)
        .map_err(|e| io_err("read superblock of", image, e))?;
    parse_superblock(&buf).ok_or_else(|| {
        io_err(
            "read superblock of",
            image,
            std::io::Error::other("not an ext4 image"),
        )
    })
}

/// Used and total bytes and inodes of an image guest's filesystem: the free
/// counts from the mounted filesystem at `mounted_root` while the guest runs
/// (the superblock on disk lags then), else from the image's superblock.
/// "Used" is the image's size minus what is free, so it includes ext4's own
/// metadata (journal, inode tables): what the guest can still write is
/// `limit - used` either way.
pub fn usage(
    image: &Path,
    mounted_root: Option<&Path>,
) -> Result<crate::quota::DiskUsage, RootfsError> {
    let sb = match mounted_root.map(nix::sys::statvfs::statvfs) {
        Some(Ok(st)) => Superblock {
            block_size: st.fragment_size(),
            blocks: std::fs::metadata(image)
                .map_err(|e| io_err("stat", image, e))?
                .len()
                / st.fragment_size().max(1),
            free_blocks: st.blocks_free(),
            inodes: st.files(),
            free_inodes: st.files_free(),
        },
        _ => read_superblock(image)?,
    };
    Ok(crate::quota::DiskUsage {
        bytes_used: (sb.blocks - sb.free_blocks.min(sb.blocks)) * sb.block_size,
        bytes_limit: Some(sb.size()),
        inodes_used: Some(sb.inodes - sb.free_inodes.min(sb.inodes)),
        inodes_limit: Some(sb.inodes),
    })
}

/// Resize a stopped guest's image to `bytes` (rounded down to whole blocks)
/// with e2fsck and resize2fs. The tools work on a reflink copy
/// (`IMAGE.resizing`) that replaces the image by rename only once resized:
/// an aborted resize2fs (shrinking below what the guest uses, a crash)
/// leaves the guest's image exactly as it was.
pub fn resize_offline(image: &Path, bytes: u64) -> Result<(), RootfsError> {
    let bytes = bytes / BLOCK * BLOCK;
    if read_superblock(image)?.size() == bytes {
        return Ok(());
    }
    let _lock = lock(image)?;
    wait_unused(image)?;
    let mut tmp = image.as_os_str().to_owned();
    tmp.push(RESIZING);
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp, e)),
    }
    let result = (|| {
        clone_image(image, &tmp)?;
        // resize2fs wants a freshly checked filesystem; -p only repairs what
        // is safe to repair unattended.
        run_tool(
            Command::new("e2fsck").args(["-f", "-p"]).arg(&tmp),
            "e2fsck",
            &tmp,
            1,
        )?;
        let file = File::options()
            .write(true)
            .open(&tmp)
            .map_err(|e| io_err("open", &tmp, e))?;
        if bytes > file.metadata().map_err(|e| io_err("stat", &tmp, e))?.len() {
            file.set_len(bytes).map_err(|e| io_err("grow", &tmp, e))?;
        }
        run_tool(
            Command::new("resize2fs")
                .arg(&tmp)
                .arg(format!("{}K", bytes / 1024)),
            "resize2fs",
            &tmp,
            0,
        )?;
        file.set_len(bytes).map_err(|e| io_err("size", &tmp, e))?;
        file.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
        std::fs::rename(&tmp, image).map_err(|e| io_err("rename into place", image, e))?;
        if let Some(dir) = image.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err("fsync", dir, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Grow a running guest's image to `bytes`: the file, its loop device's
/// capacity, then the mounted filesystem (EXT4_IOC_RESIZE_FS through the
/// guest's root `mounted_root`). ext4 cannot shrink while mounted.
pub fn grow_online(image: &Path, mounted_root: &Path, bytes: u64) -> Result<(), RootfsError> {
    let bytes = bytes / BLOCK * BLOCK;
    let root = File::open(mounted_root).map_err(|e| io_err("open", mounted_root, e))?;
    let st = nix::sys::statvfs::fstatvfs(&root).map_err(|e| io_err("statfs", mounted_root, e))?;
    // The file's length is the filesystem's size (kept equal by every
    // resize); statfs's block count leaves out ext4's own metadata.
    let current = std::fs::metadata(image)
        .map_err(|e| io_err("stat", image, e))?
        .len();
    if bytes <= current {
        if bytes == current {
            return Ok(());
        }
        return Err(RootfsError::ImageShrinkWhileRunning {
            path: image.to_path_buf(),
        });
    }
    let devices =
        crate::loopdev::attached_to(image).map_err(|e| io_err("find loop device of", image, e))?;
    let [dev] = devices.as_slice() else {
        return Err(io_err(
            "find loop device of",
            image,
            std::io::Error::other(format!("expected one loop device, found {devices:?}")),
        ));
    };
    let file = File::options()
        .write(true)
        .open(image)
        .map_err(|e| io_err("open", image, e))?;
    file.set_len(bytes).map_err(|e| io_err("grow", image, e))?;
    let loop_fd = File::open(dev).map_err(|e| io_err("open", dev, e))?;
    crate::loopdev::refresh_capacity(&loop_fd).map_err(|e| io_err("set capacity of", dev, e))?;
    super::sys::ext4_resize(root.as_fd(), bytes / st.fragment_size()).map_err(|e| {
        io_err(
            "grow the mounted filesystem of",
            image,
            if e.raw_os_error() == Some(libc::EPERM) {
                std::io::Error::other(format!(
                    "{e} (online resize needs CAP_SYS_RESOURCE; the file is grown, so stopping the guest and applying again finishes it)"
                ))
            } else {
                e
            },
        )
    })
}

/// Where a guest's image lives.
pub fn guest_image(guest_dir: &Path) -> PathBuf {
    guest_dir.join(IMAGE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(blocks: u64, free: u64, log: u32, wide: bool) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0..4].copy_from_slice(&1000u32.to_le_bytes());
        b[4..8].copy_from_slice(&(blocks as u32).to_le_bytes());
        b[0x0C..0x10].copy_from_slice(&(free as u32).to_le_bytes());
        b[0x10..0x14].copy_from_slice(&900u32.to_le_bytes());
        b[0x18..0x1C].copy_from_slice(&log.to_le_bytes());
        b[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        if wide {
            b[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
            b[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
            b[0x158..0x15C].copy_from_slice(&((free >> 32) as u32).to_le_bytes());
        }
        b
    }

    #[test]
    fn superblocks_by_table() {
        for (blocks, free, log, wide, size) in [
            (262_144, 1000, 2, true, 1u64 << 30),
            (1 << 33, 1 << 32, 2, true, 1 << 45),
            (1024, 10, 0, false, 1 << 20),
        ] {
            let s = parse_superblock(&sb(blocks, free, log, wide)).unwrap();
            assert_eq!(s.size(), size);
            assert_eq!(s.free_blocks, free);
            assert_eq!((s.inodes, s.free_inodes), (1000, 900));
        }
        let mut bad = sb(1, 1, 2, true);
        bad[0x38] = 0;
        assert_eq!(parse_superblock(&bad), None);
        assert_eq!(parse_superblock(&[0u8; 10]), None);
    }
}
