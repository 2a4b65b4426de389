//! Disk quotas on loop-mounted XFS (prjquota), ext4 (-O quota,project,
//! prjquota) and btrfs (qgroups): writes past the limit fail with EDQUOT,
//! inode limits hold, raising a limit live lets the write succeed, usage is
//! reported, and unsupported setups say why and how to fix them.
//!
//! Writers run without CAP_SYS_RESOURCE (setpriv), as guests do: the VFS
//! quota code lets that capability exceed hard limits on ext4.

#[path = "rootfs_support/mod.rs"]
mod rootfs_support;

use std::path::Path;
use std::process::Command;

use rootfs_support::*;
use vsctl::quota::{self, DiskLimits, QuotaSupport};

const MIB: u64 = 1 << 20;

/// dd as root but without CAP_SYS_RESOURCE; returns (success, stderr).
fn dd(path: &Path, mib: u64) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-sys_resource",
            "--inh-caps=-sys_resource",
            "--",
        ])
        .arg("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .args([
            "bs=1M",
            &format!("count={mib}"),
            "conv=fsync",
            "status=none",
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Create empty files until one fails; returns (created, stderr of failure).
fn touch_many(dir: &Path, max: usize) -> (usize, String) {
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-sys_resource",
            "--inh-caps=-sys_resource",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "i=0; while [ $i -lt {max} ]; do : > \"$0/f$i\" || exit 1; i=$((i+1)); done"
        ))
        .arg(dir)
        .output()
        .unwrap();
    let n = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('f')
        })
        .count();
    (n, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Mount a project-quota filesystem, or explain why this kernel cannot and
/// return None (the test then skips, loudly). A kernel that claims support
/// but fails to mount is a test failure.
fn quota_fs(fs: Fs) -> Option<LoopFs> {
    let needed: &[&str] = match fs {
        Fs::Xfs { .. } => &["XFS_QUOTA"],
        Fs::Ext4 { .. } => &["QUOTA", "QFMT_V2"],
        Fs::Btrfs => &[],
    };
    match LoopFs::try_new(fs) {
        Ok(l) => Some(l),
        Err(e) => {
            let missing: Vec<&&str> = needed
                .iter()
                .filter(|c| kernel_config(c) == Some(false))
                .collect();
            assert!(!missing.is_empty(), "{e}");
            eprintln!(
                "SKIP: kernel built without CONFIG_{missing:?}; project quotas on {fs:?} cannot be tested here ({e})"
            );
            None
        }
    }
}

fn exercise(guest: &Path, project: u32, inodes: bool) {
    // Existing content is tagged too.
    std::fs::create_dir_all(guest.join("var/lib")).unwrap();
    std::fs::write(guest.join("var/lib/seed"), vec![1u8; 100_000]).unwrap();
    quota::apply(
        guest,
        project,
        &DiskLimits {
            bytes: Some(8 * MIB),
            inodes: None,
        },
    )
    .unwrap();

    let (ok, err) = dd(&guest.join("big"), 16);
    assert!(!ok, "writing 16 MiB under an 8 MiB quota succeeded");
    assert!(err.contains("Disk quota exceeded"), "dd stderr: {err}");
    std::fs::remove_file(guest.join("big")).unwrap();

    // Live change: raise the limit, the same write now fits.
    quota::apply(
        guest,
        project,
        &DiskLimits {
            bytes: Some(64 * MIB),
            inodes: None,
        },
    )
    .unwrap();
    let (ok, err) = dd(&guest.join("big"), 16);
    assert!(ok, "write under a raised limit failed: {err}");
    let u = quota::usage(guest, project).unwrap();
    assert!(
        u.bytes_used >= 16 * MIB && u.bytes_used < 24 * MIB,
        "usage {u:?}"
    );
    assert_eq!(u.bytes_limit, Some(64 * MIB));

    if inodes {
        let used = u.inodes_used.expect("inode usage");
        assert!(used >= 5, "inodes used {used}"); // root, var, lib, seed, big
        quota::apply(
            guest,
            project,
            &DiskLimits {
                bytes: Some(64 * MIB),
                inodes: Some(used + 20),
            },
        )
        .unwrap();
        let files = guest.join("files");
        std::fs::create_dir(&files).unwrap();
        let (n, err) = touch_many(&files, 200);
        assert!(
            (15..=20).contains(&n),
            "created {n} files under a limit of 19 more"
        );
        assert!(err.contains("Disk quota exceeded"), "stderr: {err}");
        let u = quota::usage(guest, project).unwrap();
        assert_eq!(u.inodes_limit, Some(used + 20));
        // Raising it live lets creation continue.
        quota::apply(
            guest,
            project,
            &DiskLimits {
                bytes: Some(64 * MIB),
                inodes: Some(used + 400),
            },
        )
        .unwrap();
        let (n2, err) = touch_many(&files, 200);
        assert_eq!(n2, 200, "{err}");
    }
}

#[test]
fn xfs_project_quota() {
    let Some(fs) = quota_fs(Fs::Xfs { prjquota: true }) else {
        return;
    };
    assert_eq!(quota::probe(&fs.mnt).unwrap(), QuotaSupport::Xfs);
    let guest = fs.mnt.join("guests/g1/rootfs");
    std::fs::create_dir_all(&guest).unwrap();
    exercise(&guest, 4242, true);
    // A neighbour outside the project is not limited by it.
    std::fs::create_dir_all(fs.mnt.join("other")).unwrap();
    assert!(dd(&fs.mnt.join("other/f"), 80).0);
}

#[test]
fn ext4_project_quota() {
    let Some(fs) = quota_fs(Fs::Ext4 { project: true }) else {
        return;
    };
    assert_eq!(quota::probe(&fs.mnt).unwrap(), QuotaSupport::Ext4);
    let guest = fs.mnt.join("guests/g1/rootfs");
    std::fs::create_dir_all(&guest).unwrap();
    exercise(&guest, 4243, true);
}

#[test]
fn btrfs_qgroup_quota() {
    let fs = LoopFs::new(Fs::Btrfs);
    assert_eq!(quota::probe(&fs.mnt).unwrap(), QuotaSupport::Btrfs);
    std::fs::create_dir_all(fs.mnt.join("guests/g1")).unwrap();
    // A plain directory has no qgroup of its own: refused with the fix.
    let plain = fs.mnt.join("guests/g1/plain");
    std::fs::create_dir(&plain).unwrap();
    let err = quota::apply(
        &plain,
        1,
        &DiskLimits {
            bytes: Some(MIB),
            inodes: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("subvolume"), "{err}");
    quota::btrfs::create_subvolume(&fs.mnt.join("guests/g1"), "rootfs".as_ref()).unwrap();
    let guest = fs.mnt.join("guests/g1/rootfs");
    exercise(&guest, 1, false);
    // Inode limits do not exist on btrfs: an error, never a silent no-op.
    let err = quota::apply(
        &guest,
        1,
        &DiskLimits {
            bytes: None,
            inodes: Some(100),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not inodes") && err.contains("to fix"),
        "{err}"
    );
}

#[test]
fn unsupported_filesystems_say_how_to_fix() {
    let fs = LoopFs::new(Fs::Ext4 { project: false });
    match quota::probe(&fs.mnt).unwrap() {
        QuotaSupport::Unsupported { reason, how_to_fix } => {
            assert!(reason.contains("ext4"), "{reason}");
            // The kernel has quota support (CONFIG_QUOTA): the reason is the
            // filesystem's missing features, not the kernel.
            if kernel_config("QUOTA") == Some(true) {
                assert!(
                    reason.contains("made without the quota and project features"),
                    "{reason}"
                );
                assert!(!reason.contains("kernel"), "{reason}");
            }
            assert!(
                how_to_fix.contains("prjquota") && how_to_fix.contains("tune2fs -O quota,project"),
                "{how_to_fix}"
            );
        }
        other => panic!("expected unsupported, got {other:?}"),
    }
    let err = quota::apply(
        &fs.mnt,
        7,
        &DiskLimits {
            bytes: Some(MIB),
            inodes: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not supported") && err.contains("to fix"),
        "{err}"
    );

    let xfs = LoopFs::new(Fs::Xfs { prjquota: false });
    match quota::probe(&xfs.mnt).unwrap() {
        QuotaSupport::Unsupported { how_to_fix, .. } => {
            assert!(how_to_fix.contains("prjquota"), "{how_to_fix}")
        }
        other => panic!("expected unsupported, got {other:?}"),
    }
    // tmpfs has no project quotas vsctl can use.
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    assert!(matches!(
        quota::probe(tmp.path()).unwrap(),
        QuotaSupport::Unsupported { .. }
    ));
}

#[test]
fn overlay_upper_is_the_quota_tree_xfs() {
    if let Some(fs) = quota_fs(Fs::Xfs { prjquota: true }) {
        overlay_upper_is_the_quota_tree(fs);
    }
}

#[test]
fn overlay_upper_is_the_quota_tree_btrfs() {
    overlay_upper_is_the_quota_tree(LoopFs::new(Fs::Btrfs));
}

#[test]
fn project_ids_tag_the_whole_tree_with_inheritance() {
    // Storing project ids needs no quota support, so this runs on any kernel.
    let fs = LoopFs::new(Fs::Xfs { prjquota: false });
    let g = fs.mnt.join("g");
    std::fs::create_dir_all(g.join("a/b")).unwrap();
    std::fs::write(g.join("a/b/f"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", g.join("a/link")).unwrap();
    quota::set_project(&g, 777).unwrap();
    std::fs::write(g.join("a/b/new"), b"y").unwrap();
    std::fs::create_dir(g.join("a/newdir")).unwrap();
    for p in ["", "a", "a/b", "a/b/f", "a/b/new", "a/newdir"] {
        let out = sh(&format!("xfs_io -c lsproj '{}'", g.join(p).display()));
        assert!(out.contains("projid = 777"), "{p}: {out}");
    }
    for p in ["", "a", "a/b", "a/newdir"] {
        let out = sh(&format!("xfs_io -c lsattr '{}'", g.join(p).display()));
        assert!(
            out.split_whitespace().next().unwrap().contains('P'),
            "{p} lacks PROJINHERIT: {out}"
        );
    }
    assert!(quota::set_project(&g, 0).is_err());
}

fn overlay_upper_is_the_quota_tree(fs: LoopFs) {
    let template = fs.mnt.join("template");
    std::fs::create_dir_all(template.join("etc")).unwrap();
    std::fs::write(template.join("etc/big"), vec![0u8; 4 << 20]).unwrap();
    std::fs::write(template.join("etc/small"), b"small\n").unwrap();
    let g = fs.mnt.join("guests/o");
    let layout = vsctl::rootfs::build_rootfs(
        &template,
        &g,
        vsctl::rootfs::ResolvedStrategy::Overlay,
        None,
    )
    .unwrap();
    let quota_root = layout.quota_root().to_path_buf();
    assert_eq!(quota_root, g.join("overlay"));
    let vsctl::rootfs::RootfsLayout::Overlay { lower, upper, work } = layout else {
        panic!()
    };
    quota::apply(
        &quota_root,
        99,
        &DiskLimits {
            bytes: Some(2 * MIB),
            inodes: None,
        },
    )
    .unwrap();
    let merged = g.join("merged");
    std::fs::create_dir(&merged).unwrap();
    vsctl::rootfs::mount_overlay(&lower, &upper, &work, &merged).unwrap();
    let _m = MountGuard(merged.clone());
    // Reading the 4 MiB lower file is free; writing 4 MiB into the guest is not.
    assert_eq!(
        std::fs::metadata(merged.join("etc/big")).unwrap().len(),
        4 << 20
    );
    let (ok, err) = dd(&merged.join("new"), 4);
    assert!(!ok && err.contains("Disk quota exceeded"), "{err}");
    std::fs::remove_file(merged.join("new")).unwrap();
    // Copy-up (a lower file modified in the guest) goes through the work
    // directory and a rename/link into upper: it must not hit EXDEV from a
    // project-id or subvolume boundary between work and upper.
    write_in_place(&merged.join("etc/small"), b"GUEST");
    assert_eq!(std::fs::read(merged.join("etc/small")).unwrap(), b"GUEST\n");
    assert_eq!(
        std::fs::read(template.join("etc/small")).unwrap(),
        b"small\n"
    );
    // Replacing a file (whiteout + create over it) also uses the work dir.
    std::fs::remove_file(merged.join("etc/small")).unwrap();
    std::fs::write(merged.join("etc/small"), b"again\n").unwrap();
    std::fs::create_dir(merged.join("etc/newdir")).unwrap();
}
