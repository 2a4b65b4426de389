//! Files the host writes into (or reads from) a guest tree: /etc/hostname,
//! /etc/hosts, resolv.conf, network configuration.
//!
//! The guest owns its tree and may have made any path a symlink to anything:
//! `/etc/hostname -> /etc/shadow`, `/etc -> /`, `../../../../etc/passwd`.
//! Nothing written here may land outside the guest root. So the root is
//! opened once, every lookup below it goes through openat2 with
//! `RESOLVE_IN_ROOT` (absolute symlinks and `..` are resolved as if the guest
//! root were `/`, like a chroot, but race-free) and `RESOLVE_NO_MAGICLINKS`
//! (no /proc/self/fd jumps). Missing parent directories are created one
//! component at a time relative to the directory fd found so far. The file
//! itself is written to a fresh temporary name (`O_CREAT|O_EXCL|O_NOFOLLOW`),
//! fsynced and renamed over the target, so a symlink at the target is
//! replaced, never followed, and a reader sees the old or the new file.
//! Temporaries of the same file left by a killed writer are removed first
//! (regular files only, by `unlinkat` on the directory fd).
//! Reads refuse anything that is not a regular file (a guest could plant a
//! device node of the host's disk) and cap the size.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag, openat, openat2, renameat2};
use nix::sys::stat::{Mode, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fsync, unlinkat};

use super::RootfsError;

/// Largest guest file [`read`] returns.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

struct Ctx<'a> {
    root_path: &'a Path,
    rel: &'a str,
}

impl Ctx<'_> {
    fn path_err(&self, reason: impl Into<String>) -> RootfsError {
        RootfsError::GuestPath {
            root: self.root_path.to_path_buf(),
            rel: self.rel.to_string(),
            reason: reason.into(),
        }
    }
    fn io(&self, op: &'static str, e: impl Into<std::io::Error>) -> RootfsError {
        RootfsError::GuestIo {
            root: self.root_path.to_path_buf(),
            rel: self.rel.to_string(),
            op,
            source: e.into(),
        }
    }
}

/// Split a guest path ("/etc/hostname" or "etc/hostname") into its parent
/// components and final name. `.` and `..` are refused outright: the path
/// comes from vsctl itself, and a name that needs them is a bug.
fn split<'a>(cx: &Ctx<'_>, rel: &'a str) -> Result<(Vec<&'a str>, &'a str), RootfsError> {
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(s) => parts.push(s.to_str().expect("from a &str")),
            _ => return Err(cx.path_err("path must not contain '.' or '..'")),
        }
    }
    let name = parts
        .pop()
        .ok_or_else(|| cx.path_err("path names no file"))?;
    Ok((parts, name))
}

fn open_root(cx: &Ctx<'_>) -> Result<OwnedFd, RootfsError> {
    nix::fcntl::open(
        cx.root_path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| cx.io("open guest root", e))
}

fn open_in_root(root: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(
        root,
        rel,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve_flags()),
    )
}

/// Open (creating as needed) the parent directory of the target, every step
/// resolved inside the guest root.
fn open_parent(
    cx: &Ctx<'_>,
    root: &OwnedFd,
    parents: &[&str],
    owner: Option<(u32, u32)>,
) -> Result<OwnedFd, RootfsError> {
    let dflags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let full = parents.join("/");
    match open_in_root(root, &full, dflags) {
        Ok(fd) => return Ok(fd),
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(cx.io("open parent directory", e)),
    }
    // Walk from the root, creating what is missing. Each step re-resolves the
    // prefix inside the root, so a symlink met on the way is followed only
    // within the guest.
    let mut dir = open_in_root(root, ".", dflags).map_err(|e| cx.io("open guest root", e))?;
    for i in 0..parents.len() {
        let prefix = parents[..=i].join("/");
        match open_in_root(root, &prefix, dflags) {
            Ok(fd) => dir = fd,
            Err(nix::errno::Errno::ENOENT) => {
                match mkdirat(&dir, parents[i], Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {
                        if let Some((u, g)) = owner {
                            nix::unistd::fchownat(
                                &dir,
                                parents[i],
                                Some(Uid::from_raw(u)),
                                Some(Gid::from_raw(g)),
                                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                            )
                            .map_err(|e| cx.io("chown new directory", e))?;
                        }
                    }
                    // Raced with a creator, fine; a dangling symlink here
                    // also gives EEXIST and the open below then fails.
                    Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(cx.io("create parent directory", e)),
                }
                dir = open_in_root(root, &prefix, dflags)
                    .map_err(|e| cx.io("open parent directory", e))?;
            }
            Err(e) => return Err(cx.io("open parent directory", e)),
        }
    }
    Ok(dir)
}

/// Start of the temporary names of `name`: `.NAME.vsctl-tmp-`, then
/// `PID-ATTEMPT`. The name is cut to 64 characters so that a long target
/// name cannot push the temporary past NAME_MAX.
fn tmp_prefix(name: &str) -> String {
    let short: String = name.chars().take(64).collect();
    format!(".{short}.vsctl-tmp-")
}

/// The pid a temporary name of `prefix` was made by, if `entry` is one.
fn tmp_pid(entry: &[u8], prefix: &str) -> Option<i32> {
    let rest = std::str::from_utf8(entry.strip_prefix(prefix.as_bytes())?).ok()?;
    let (pid, attempt) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(attempt) {
        return None;
    }
    pid.parse().ok()
}

/// Remove temporaries of this very file that a writer killed between
/// creating and renaming its temporary left in `parent`. Only names of the
/// form `prefix` + `PID-N` whose writer is gone (`kill(PID, 0)` says ESRCH;
/// a live writer's temporary is left alone) and only regular files: the
/// entry is examined with `AT_SYMLINK_NOFOLLOW` and removed with `unlinkat`
/// on the directory fd, so a symlink named like a temporary is neither
/// followed nor removed, and nothing outside `parent` is reached. A guest
/// swapping the file for something else between the check and the unlink
/// at worst loses that entry: `unlinkat` removes a name, never follows it.
fn remove_stale_temporaries(
    cx: &Ctx<'_>,
    parent: &OwnedFd,
    prefix: &str,
) -> Result<(), RootfsError> {
    // An own fd for reading the directory: the parent's offset stays alone.
    let dirfd = openat(
        parent,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| cx.io("open parent directory", e))?;
    let mut dir = Dir::from_fd(dirfd).map_err(|e| cx.io("read parent directory", e))?;
    let mut stale = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| cx.io("read parent directory", e))?;
        let bytes = entry.file_name().to_bytes();
        if let Some(pid) = tmp_pid(bytes, prefix) {
            stale.push((entry.file_name().to_owned(), pid));
        }
    }
    for (entry, pid) in stale {
        if !crate::sys::pid_gone(pid) {
            continue;
        }
        let st = match fstatat(parent, entry.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(cx.io("stat stale temporary file", e)),
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        match unlinkat(parent, entry.as_c_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(cx.io("remove stale temporary file", e)),
        }
    }
    Ok(())
}

/// Write `contents` to `rel_path` inside the guest tree at `root`, atomically
/// (temp file + fsync + rename), with permission bits `mode`. `owner` is the
/// (uid, gid) of the guest's root as seen on the host (shifted guests); new
/// parent directories get it too. A symlink at the target is replaced.
pub fn write(
    root: &Path,
    rel_path: &str,
    contents: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), RootfsError> {
    let cx = Ctx {
        root_path: root,
        rel: rel_path,
    };
    let (parents, name) = split(&cx, rel_path)?;
    let rootfd = open_root(&cx)?;
    let parent = open_parent(&cx, &rootfd, &parents, owner)?;
    let prefix = tmp_prefix(name);
    remove_stale_temporaries(&cx, &parent, &prefix)?;

    let mut tmp_name = String::new();
    let mut file = None;
    for attempt in 0..100u32 {
        tmp_name = format!("{prefix}{}-{attempt}", std::process::id());
        match openat(
            &parent,
            tmp_name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => {
                file = Some(fd);
                break;
            }
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(cx.io("create temporary file", e)),
        }
    }
    let fd = file.ok_or_else(|| cx.path_err("no free temporary name"))?;
    let result = (|| {
        if let Some((u, g)) = owner {
            fchown(&fd, Some(Uid::from_raw(u)), Some(Gid::from_raw(g)))
                .map_err(|e| cx.io("chown", e))?;
        }
        fchmod(&fd, Mode::from_bits_truncate(mode & 0o7777)).map_err(|e| cx.io("chmod", e))?;
        let mut f = std::fs::File::from(fd.try_clone().map_err(|e| cx.io("dup", e))?);
        f.write_all(contents).map_err(|e| cx.io("write", e))?;
        fsync(&fd).map_err(|e| cx.io("fsync", e))?;
        // renameat replaces a symlink (or file) named `name`; it never follows it.
        renameat2(
            &parent,
            tmp_name.as_str(),
            &parent,
            name,
            RenameFlags::empty(),
        )
        .map_err(|e| cx.io("rename into place", e))?;
        fsync(&parent).map_err(|e| cx.io("fsync directory", e))
    })();
    if result.is_err() {
        let _ = unlinkat(&parent, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Read a regular file inside the guest tree (symlinks resolved within the
/// guest root). Refuses non-regular files and files over [`MAX_READ`].
pub fn read(root: &Path, rel_path: &str) -> Result<Vec<u8>, RootfsError> {
    let cx = Ctx {
        root_path: root,
        rel: rel_path,
    };
    let (mut parents, name) = split(&cx, rel_path)?;
    parents.push(name);
    let rootfd = open_root(&cx)?;
    // O_PATH first: opening a device or fifo for reading can have effects.
    let pfd =
        open_in_root(&rootfd, &parents.join("/"), OFlag::O_PATH).map_err(|e| cx.io("open", e))?;
    let st = fstat(&pfd).map_err(|e| cx.io("stat", e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(cx.path_err("not a regular file"));
    }
    if st.st_size as u64 > MAX_READ {
        return Err(cx.path_err(format!("larger than {MAX_READ} bytes")));
    }
    // Re-open the very inode we checked through its O_PATH fd.
    let proc = format!("/proc/self/fd/{}", pfd.as_fd().as_raw_fd());
    let fd = nix::fcntl::open(
        proc.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| cx.io("open", e))?;
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_READ + 1)
        .read_to_end(&mut buf)
        .map_err(|e| cx.io("read", e))?;
    if buf.len() as u64 > MAX_READ {
        return Err(cx.path_err(format!("larger than {MAX_READ} bytes")));
    }
    Ok(buf)
}
