//! Clone fidelity and independence for each strategy, on loop-mounted
//! filesystems the tests make themselves (root required).

mod rootfs_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rootfs_support::*;
use vsctl::rootfs::{self, CloneStrategy, IdShift, ResolvedStrategy, RootfsLayout};

fn independent_trees(template: &Path, a: &Path, b: &Path) {
    let before_t = std::fs::read(template.join("etc/hostname")).unwrap();
    write_in_place(&a.join("etc/hostname"), b"GUEST-A");
    write_in_place(&a.join("usr/link2"), b"A-LINK");
    assert_eq!(
        std::fs::read(template.join("etc/hostname")).unwrap(),
        before_t
    );
    assert_eq!(std::fs::read(b.join("etc/hostname")).unwrap(), before_t);
    assert_eq!(
        std::fs::read(template.join("etc/link1")).unwrap(),
        b"linked\n"
    );
    assert_eq!(std::fs::read(b.join("etc/link1")).unwrap(), b"linked\n");
    // The hardlink pair inside guest a is still one inode.
    assert_eq!(std::fs::read(a.join("etc/link1")).unwrap(), b"A-LINK\n");
    // No regular file of a clone shares an inode with the template.
    for e in walkdir::WalkDir::new(a) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(a).unwrap();
            let t = std::fs::symlink_metadata(template.join(rel)).unwrap();
            let c = e.metadata().unwrap();
            assert!(
                !(t.dev() == c.dev() && t.ino() == c.ino()),
                "{rel:?} shares an inode"
            );
        }
    }
}

#[test]
fn reflink_clone_is_faithful_and_independent_on_xfs() {
    let fs = LoopFs::new(Fs::Xfs { prjquota: false });
    let template = fs.mnt.join("template");
    make_fixture(&template);
    assert_eq!(
        rootfs::resolve(CloneStrategy::Auto, &fs.mnt).unwrap(),
        ResolvedStrategy::Reflink
    );
    let ga = fs.mnt.join("guests/a");
    let gb = fs.mnt.join("guests/b");
    let la = rootfs::build_rootfs(&template, &ga, ResolvedStrategy::Reflink, None).unwrap();
    let lb = rootfs::build_rootfs(&template, &gb, ResolvedStrategy::Reflink, None).unwrap();
    assert_eq!(
        la,
        RootfsLayout::Tree {
            path: ga.join("rootfs")
        }
    );
    assert_faithful(&template, &ga.join("rootfs"));
    assert_faithful(&template, &gb.join("rootfs"));
    independent_trees(&template, &ga.join("rootfs"), &gb.join("rootfs"));
    let RootfsLayout::Tree { path } = lb else {
        panic!("tree expected")
    };
    assert_eq!(path, gb.join("rootfs"));
}

#[test]
fn copy_clone_is_faithful_and_independent_on_ext4() {
    let fs = LoopFs::new(Fs::Ext4 { project: false });
    let template = fs.mnt.join("template");
    make_fixture(&template);
    // ext4 cannot reflink: auto falls back to overlay, explicit reflink is an error.
    assert_eq!(
        rootfs::resolve(CloneStrategy::Auto, &fs.mnt).unwrap(),
        ResolvedStrategy::Overlay
    );
    let err = rootfs::resolve(CloneStrategy::Reflink, &fs.mnt)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot reflink") && err.contains("reflink=1"),
        "{err}"
    );
    let ga = fs.mnt.join("guests/a");
    let gb = fs.mnt.join("guests/b");
    rootfs::build_rootfs(&template, &ga, ResolvedStrategy::Copy, None).unwrap();
    rootfs::build_rootfs(&template, &gb, ResolvedStrategy::Copy, None).unwrap();
    assert_faithful(&template, &ga.join("rootfs"));
    assert_faithful(&template, &gb.join("rootfs"));
    independent_trees(&template, &ga.join("rootfs"), &gb.join("rootfs"));
}

#[test]
fn overlay_view_is_faithful_and_independent() {
    let fs = LoopFs::new(Fs::Ext4 { project: false });
    let template = fs.mnt.join("template");
    make_fixture(&template);
    let mut merged = Vec::new();
    let mut guards = Vec::new();
    for g in ["a", "b"] {
        let gdir = fs.mnt.join("guests").join(g);
        let layout =
            rootfs::build_rootfs(&template, &gdir, ResolvedStrategy::Overlay, None).unwrap();
        let RootfsLayout::Overlay { lower, upper, work } = layout else {
            panic!("overlay expected")
        };
        assert_eq!(lower, template);
        assert_eq!(upper, gdir.join("overlay/upper"));
        assert_eq!(work, gdir.join("overlay/work"));
        let target = gdir.join("merged");
        std::fs::create_dir(&target).unwrap();
        rootfs::mount_overlay(&lower, &upper, &work, &target).unwrap();
        guards.push(MountGuard(target.clone()));
        merged.push(target);
    }
    assert_faithful(&template, &merged[0]);
    assert_faithful(&template, &merged[1]);
    let before = std::fs::read(template.join("etc/hostname")).unwrap();
    write_in_place(&merged[0].join("etc/hostname"), b"GUEST-A");
    assert_eq!(
        std::fs::read(template.join("etc/hostname")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read(merged[1].join("etc/hostname")).unwrap(),
        before
    );
    assert_eq!(
        &std::fs::read(merged[0].join("etc/hostname")).unwrap()[..7],
        b"GUEST-A"
    );
    // The guest's change lives in its upper layer.
    assert!(fs.mnt.join("guests/a/overlay/upper/etc/hostname").exists());
    rootfs::unmount(&merged[1]).unwrap();
    assert!(!merged[1].join("etc").exists());
}

#[test]
fn ownership_shift_maps_owners_acls_and_capabilities() {
    let fs = LoopFs::new(Fs::Xfs { prjquota: false });
    let template = fs.mnt.join("template");
    make_fixture(&template);
    let shift = IdShift {
        host_base: 100_000,
        count: 65_536,
    };
    let g = fs.mnt.join("guests/shifted");
    rootfs::build_rootfs(&template, &g, ResolvedStrategy::Reflink, Some(shift)).unwrap();
    let root = g.join("rootfs");
    for e in walkdir::WalkDir::new(&template) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&template).unwrap();
        let t = std::fs::symlink_metadata(e.path()).unwrap();
        let c = std::fs::symlink_metadata(root.join(rel)).unwrap();
        assert_eq!(c.uid(), t.uid() + 100_000, "{rel:?} uid");
        assert_eq!(c.gid(), t.gid() + 100_000, "{rel:?} gid");
        assert_eq!(
            c.mode(),
            t.mode(),
            "{rel:?} mode (setuid/setgid must survive the chown)"
        );
    }
    let acl = sh(&format!(
        "getfacl -n '{}'",
        root.join("etc/owned").display()
    ));
    assert!(
        acl.contains("user:101234:rwx") && acl.contains("group:100055:r--"),
        "{acl}"
    );
    let dacl = sh(&format!("getfacl -n '{}'", root.join("setgid").display()));
    assert!(dacl.contains("default:user:101234:r-x"), "{dacl}");
    // A namespaced (v3) capability whose root is the shifted root.
    let cap = sh(&format!(
        "getfattr -e hex -n security.capability '{}'",
        root.join("bin/ping").display()
    ));
    let hex = cap.split("0x").nth(1).unwrap().trim().to_string();
    // magic_etc (little-endian) = VFS_CAP_REVISION_3 | VFS_CAP_FLAGS_EFFECTIVE.
    assert!(hex.starts_with("01000003"), "not a v3 capability: {hex}");
    assert!(hex.ends_with("a0860100"), "rootid is not 100000: {hex}");

    // Ids outside the shifted range are refused, not squashed.
    let small = IdShift {
        host_base: 100_000,
        count: 1000,
    };
    let err = rootfs::build_rootfs(
        &template,
        &fs.mnt.join("guests/small"),
        ResolvedStrategy::Reflink,
        Some(small),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("outside the shifted range"), "{err}");
    assert!(!fs.mnt.join("guests/small/rootfs").exists());
}

#[test]
fn clone_never_follows_template_symlinks() {
    let fs = LoopFs::new(Fs::Ext4 { project: false });
    let template = fs.mnt.join("template");
    std::fs::create_dir_all(template.join("etc")).unwrap();
    let outside = fs.mnt.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"host secret").unwrap();
    std::os::unix::fs::symlink(&outside, template.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), template.join("etc/secret")).unwrap();
    let g = fs.mnt.join("guests/x");
    rootfs::build_rootfs(&template, &g, ResolvedStrategy::Copy, None).unwrap();
    let r = g.join("rootfs");
    assert!(
        std::fs::symlink_metadata(r.join("escape"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(r.join("etc/secret")).unwrap(),
        outside.join("secret")
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
}
