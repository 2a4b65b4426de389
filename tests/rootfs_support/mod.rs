//! Shared fixtures for the rootfs and quota tests: loop-mounted filesystems
//! that tear themselves down (even on panic), a template tree with every file
//! type and attribute a clone must keep, and independent comparisons (rsync,
//! lstat) that do not use the code under test.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh(script: &str) -> String {
    run(Command::new("sh").arg("-ec").arg(script))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    /// XFS with reflink=1; `prjquota` says whether to mount with project quotas.
    Xfs {
        prjquota: bool,
    },
    /// ext4; `project` adds `-O quota,project` and mounts with prjquota.
    Ext4 {
        project: bool,
    },
    Btrfs,
}

/// A filesystem image in a temp dir, attached to a loop device and mounted at
/// `mnt`. Drop unmounts everything below `mnt` (lazily), detaches the loop
/// device and removes the image, in that order, also when a test panics.
pub struct LoopFs {
    pub mnt: PathBuf,
    pub dev: String,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    pub fn new(fs: Fs) -> LoopFs {
        LoopFs::try_new(fs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `new`, but a failed mount is returned (the guard already cleaned
    /// up), for tests that skip when the kernel lacks a feature.
    pub fn try_new(fs: Fs) -> Result<LoopFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("vsctl-loop")
            .tempdir_in("/tmp")
            .unwrap();
        let img = dir.path().join("img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let size = match fs {
            Fs::Xfs { .. } => "512M",
            Fs::Ext4 { .. } => "256M",
            Fs::Btrfs => "384M",
        };
        run(Command::new("truncate").args(["-s", size]).arg(&img));
        match fs {
            Fs::Xfs { .. } => run(Command::new("mkfs.xfs")
                .args(["-q", "-f", "-m", "reflink=1"])
                .arg(&img)),
            Fs::Ext4 { project: true } => run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-I", "256", "-O", "quota,project"])
                .arg(&img)),
            Fs::Ext4 { project: false } => {
                run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))
            }
            Fs::Btrfs => run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&img)),
        };
        let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(&img))
            .trim()
            .to_string();
        let opts = match fs {
            Fs::Xfs { prjquota: true } | Fs::Ext4 { project: true } => Some("prjquota"),
            _ => None,
        };
        let fstype = match fs {
            Fs::Xfs { .. } => "xfs",
            Fs::Ext4 { .. } => "ext4",
            Fs::Btrfs => "btrfs",
        };
        let guard = LoopFs {
            mnt: mnt.clone(),
            dev: dev.clone(),
            _dir: dir,
        };
        // noatime: the comparisons read the trees, which must not move the atimes
        // being compared (explicit utimensat still sets them).
        nix::mount::mount(
            Some(dev.as_str()),
            &mnt,
            Some(fstype),
            nix::mount::MsFlags::MS_NOATIME,
            opts,
        )
        .map_err(|e| format!("mount {dev} ({fstype}, {opts:?}) at {}: {e}", mnt.display()))?;
        Ok(guard)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Anything a test mounted below (overlays) first, deepest first.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mps: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&self.mnt))
            .collect();
        mps.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in mps {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Whether the running kernel was built with `CONFIG_<name>=y`, from
/// /proc/config.gz; `None` when the kernel does not expose its config.
pub fn kernel_config(name: &str) -> Option<bool> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("zcat /proc/config.gz")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().any(|l| l == format!("CONFIG_{name}=y")))
}

/// An overlay mount made by a test, unmounted on drop.
pub struct MountGuard(pub PathBuf);
impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Build the fidelity fixture at `root` (created): every file type, special
/// mode bits, owners, xattrs (security.capability, trusted.*, user.*), ACLs,
/// a hardlink pair across directories, dangling/absolute/relative symlinks,
/// device nodes, a fifo, a unix socket, a sparse file, an empty directory,
/// and distinct nanosecond timestamps on everything (set deepest first).
pub fn make_fixture(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let r = root.display();
    sh(&format!(
        r#"
cd '{r}'
mkdir -p etc bin usr/share/doc/pkg empty sticky setgid deep/a/b/c
printf 'hello\n' > etc/hostname
head -c 300000 /dev/urandom > usr/share/doc/pkg/blob
cp /bin/true bin/ping
chmod 0755 bin/ping
setcap cap_net_raw+ep bin/ping
printf 'suid\n' > bin/su; chmod 4755 bin/su
printf 'sgid\n' > bin/wall; chown 0:5 bin/wall; chmod 2755 bin/wall
chmod 1777 sticky
chown 0:50 setgid; chmod 2775 setgid
printf 'owned\n' > etc/owned; chown 1000:1001 etc/owned; chmod 0640 etc/owned
printf 'w\n' > etc/world-writable; chmod 0666 etc/world-writable
setfattr -n trusted.vsctl -v trustedvalue etc/owned
setfattr -n user.vsctl -v uservalue etc/owned
setfattr -n user.dirattr -v d usr
setfacl -m u:1234:rwx,g:55:r etc/owned
setfacl -d -m u:1234:rx,g:55:rx setgid
setfacl -m u:1234:rx setgid
printf 'plain\n' > setgid/plain; setfacl -b setgid/plain
mkdir setgid/noacl; setfacl -b -k setgid/noacl
printf 'inherited\n' > setgid/inherited
printf 'linked\n' > etc/link1; ln etc/link1 usr/link2; chown 7:8 etc/link1
ln -s /nonexistent/target dangling
ln -s /etc/passwd abs
ln -s ../etc/hostname usr/rel
ln -s deep/a/b/c dirlink
mknod dev-null c 1 3; chmod 0666 dev-null
mknod dev-loop b 7 200; chown 0:6 dev-loop; chmod 0660 dev-loop
mkfifo fifo; chmod 0620 fifo
truncate -s 64M sparse
printf 'data-in-the-middle' | dd of=sparse bs=1 seek=33554432 conv=notrunc status=none
printf 'x' > deep/a/b/c/leaf
"#
    ));
    {
        let l = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
        drop(l);
    }
    std::os::unix::fs::lchown(root.join("socket"), Some(33), Some(33)).unwrap();
    std::os::unix::fs::lchown(root.join("abs"), Some(2), Some(3)).unwrap();
    set_distinct_times(root);
}

/// Give every entry (dirs and symlinks included) its own atime/mtime with
/// nanoseconds, children before parents.
pub fn set_distinct_times(root: &Path) {
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .contents_first(true)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    entries.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in entries.iter().enumerate() {
        let i = i as i64;
        let a = nix::sys::time::TimeSpec::new(1_000_000_000 + i * 10, 100 + i);
        let m = nix::sys::time::TimeSpec::new(1_100_000_000 + i * 10, 200 + i);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &a,
            &m,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

/// (relative path, mtime s, mtime ns, atime s, atime ns) of every entry.
pub fn times(root: &Path) -> Vec<(PathBuf, i64, i64, i64, i64)> {
    let mut v: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            (
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                md.mtime(),
                md.mtime_nsec(),
                md.atime(),
                md.atime_nsec(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Independent comparison: rsync in dry-run mode with archive, hardlinks,
/// ACLs, xattrs, numeric ids, checksums and --delete must have nothing to do.
pub fn rsync_diff(a: &Path, b: &Path) -> String {
    rsync_diff_with(a, b, &[])
}

/// [`rsync_diff`] with extra rsync arguments (excludes, `--omit-dir-times`).
pub fn rsync_diff_with(a: &Path, b: &Path, extra: &[&str]) -> String {
    let out = Command::new("rsync")
        .args([
            "-aHAXn",
            "--checksum",
            "--delete",
            "--itemize-changes",
            "--numeric-ids",
        ])
        .args(extra)
        .arg(format!("{}/", a.display()))
        .arg(format!("{}/", b.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rsync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assert `clone` is faithful to `template`: identical timestamps (checked
/// first: rsync reading directories may touch atimes), nothing for rsync to
/// do, the sparse file still sparse and the capability still on ping.
pub fn assert_faithful(template: &Path, clone: &Path) {
    assert_eq!(times(template), times(clone), "timestamps differ");
    let diff = rsync_diff(template, clone);
    assert!(
        diff.trim().is_empty(),
        "clone differs from template:\n{diff}"
    );
    let sparse = std::fs::metadata(clone.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 64 << 20);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file lost its holes: {} blocks",
        sparse.blocks()
    );
    let caps = sh(&format!("getcap '{}'", clone.join("bin/ping").display()));
    assert!(caps.contains("cap_net_raw"), "capability lost: {caps:?}");
    let st = std::fs::symlink_metadata(clone.join("socket")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&st.file_type()));
}

/// Overwrite the first bytes of a file in place (no truncate, no rename): the
/// write that would leak through a shared inode.
pub fn write_in_place(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}
