//! build_rootfs / cleanup_partial / purge_rootfs: existing guests are never
//! rebuilt, only *.building is cleaned implicitly, purge unmounts first and
//! never follows symlinks or crosses filesystems.

mod rootfs_support;

use std::os::unix::fs::MetadataExt;

use rootfs_support::*;
use vsctl::rootfs::{self, IdShift, ResolvedStrategy, RootfsLayout};

#[test]
fn existing_rootfs_is_returned_untouched() {
    let fs = LoopFs::new(Fs::Xfs { prjquota: false });
    let template = fs.mnt.join("template");
    make_fixture(&template);
    let g = fs.mnt.join("guests/g");
    let first = rootfs::build_rootfs(&template, &g, ResolvedStrategy::Reflink, None).unwrap();
    std::fs::write(g.join("rootfs/etc/hostname"), b"precious\n").unwrap();
    std::fs::write(g.join("rootfs/guest-data"), b"precious\n").unwrap();
    for s in [ResolvedStrategy::Reflink, ResolvedStrategy::Copy] {
        let again = rootfs::build_rootfs(&template, &g, s, None).unwrap();
        assert_eq!(again, first);
    }
    assert_eq!(
        std::fs::read(g.join("rootfs/etc/hostname")).unwrap(),
        b"precious\n"
    );
    assert_eq!(
        std::fs::read(g.join("rootfs/guest-data")).unwrap(),
        b"precious\n"
    );

    // Same for overlay: upper is the guest's data.
    let o = fs.mnt.join("guests/o");
    rootfs::build_rootfs(&template, &o, ResolvedStrategy::Overlay, None).unwrap();
    std::fs::write(o.join("overlay/upper/guest-data"), b"precious\n").unwrap();
    std::fs::remove_dir(o.join("overlay/work")).unwrap(); // scratch: recreated if lost
    let again = rootfs::build_rootfs(&template, &o, ResolvedStrategy::Overlay, None).unwrap();
    assert!(matches!(again, RootfsLayout::Overlay { .. }));
    assert_eq!(
        std::fs::read(o.join("overlay/upper/guest-data")).unwrap(),
        b"precious\n"
    );
    assert!(o.join("overlay/work").is_dir());
    // A published overlay whose upper vanished is an error, not a rebuild.
    std::fs::rename(o.join("overlay/upper"), o.join("upper-moved")).unwrap();
    assert!(rootfs::build_rootfs(&template, &o, ResolvedStrategy::Overlay, None).is_err());
    assert!(!o.join("overlay/upper").exists());

    // A symlink where the rootfs should be is refused, not followed.
    let s = fs.mnt.join("guests/s");
    std::fs::create_dir_all(&s).unwrap();
    std::os::unix::fs::symlink(&template, s.join("rootfs")).unwrap();
    assert!(rootfs::build_rootfs(&template, &s, ResolvedStrategy::Copy, None).is_err());
}

#[test]
fn cleanup_partial_removes_only_building_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let g = tmp.path();
    for d in [
        "rootfs.building/usr/bin",
        "overlay.building/upper/x",
        "rootfs/etc",
        "overlay/upper",
        "overlay/work",
    ] {
        std::fs::create_dir_all(g.join(d)).unwrap();
    }
    std::fs::write(g.join("rootfs/etc/keep"), b"k").unwrap();
    std::fs::write(g.join("record.json"), b"{}").unwrap();
    let decoy = tempfile::tempdir().unwrap();
    std::fs::write(decoy.path().join("f"), b"d").unwrap();
    std::os::unix::fs::symlink(decoy.path(), g.join("rootfs.building/usr/escape")).unwrap();
    rootfs::cleanup_partial(g).unwrap();
    assert!(!g.join("rootfs.building").exists());
    assert!(!g.join("overlay.building").exists());
    assert_eq!(std::fs::read(g.join("rootfs/etc/keep")).unwrap(), b"k");
    assert!(
        g.join("overlay/upper").is_dir()
            && g.join("overlay/work").is_dir()
            && g.join("record.json").is_file()
    );
    assert_eq!(std::fs::read(decoy.path().join("f")).unwrap(), b"d");
}

#[test]
fn purge_refuses_a_symlinked_guest_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir_all(real.join("rootfs/etc")).unwrap();
    std::fs::write(real.join("rootfs/etc/keep"), b"k").unwrap();
    let link = tmp.path().join("guest");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(rootfs::purge_rootfs(&link).is_err());
    assert_eq!(std::fs::read(real.join("rootfs/etc/keep")).unwrap(), b"k");
}

#[test]
fn purge_unmounts_and_never_follows_symlinks() {
    let fs = LoopFs::new(Fs::Ext4 { project: false });
    let template = fs.mnt.join("template");
    make_fixture(&template);
    let decoy = fs.mnt.join("decoy");
    std::fs::create_dir_all(decoy.join("sub")).unwrap();
    std::fs::write(decoy.join("sub/precious"), b"host").unwrap();

    // Tree guest with symlinks out and a bind mount of the decoy inside.
    let g = fs.mnt.join("guests/t");
    rootfs::build_rootfs(&template, &g, ResolvedStrategy::Copy, None).unwrap();
    std::os::unix::fs::symlink(&decoy, g.join("rootfs/escape")).unwrap();
    std::os::unix::fs::symlink("../../../../decoy/sub", g.join("rootfs/etc/rel-escape")).unwrap();
    std::fs::create_dir_all(g.join("rootfs/mnt/bound")).unwrap();
    nix::mount::mount(
        Some(&decoy),
        &g.join("rootfs/mnt/bound"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let _bind = MountGuard(g.join("rootfs/mnt/bound"));
    rootfs::purge_rootfs(&g).unwrap();
    assert!(!g.join("rootfs").exists());
    assert_eq!(std::fs::read(decoy.join("sub/precious")).unwrap(), b"host");

    // Overlay guest mounted under its own dir.
    let o = fs.mnt.join("guests/o");
    let RootfsLayout::Overlay { lower, upper, work } =
        rootfs::build_rootfs(&template, &o, ResolvedStrategy::Overlay, None).unwrap()
    else {
        panic!()
    };
    let merged = o.join("merged");
    std::fs::create_dir(&merged).unwrap();
    rootfs::mount_overlay(&lower, &upper, &work, &merged).unwrap();
    let _m = MountGuard(merged.clone());
    std::fs::write(merged.join("etc/new"), b"guest").unwrap();
    rootfs::purge_rootfs(&o).unwrap();
    assert!(!o.join("overlay").exists());
    // The template (lower layer) is intact.
    assert_eq!(rsync_diff(&template, &template), "");
    assert!(template.join("etc/hostname").is_file());
    assert!(!template.join("etc/new").exists());
}

#[test]
fn btrfs_guest_is_a_subvolume_and_purge_stays_on_it() {
    let fs = LoopFs::new(Fs::Btrfs);
    let template = fs.mnt.join("template");
    make_fixture(&template);
    let g = fs.mnt.join("guests/b");
    rootfs::build_rootfs(&template, &g, ResolvedStrategy::Reflink, None).unwrap();
    assert_eq!(
        std::fs::metadata(g.join("rootfs")).unwrap().ino(),
        256,
        "rootfs is not a subvolume"
    );
    assert_faithful(&template, &g.join("rootfs"));
    // A nested subvolume (another filesystem as far as st_dev goes) is not
    // descended into.
    vsctl::quota::btrfs::create_subvolume(&g.join("rootfs"), "nested".as_ref()).unwrap();
    std::fs::write(g.join("rootfs/nested/data"), b"n").unwrap();
    let err = rootfs::purge_rootfs(&g).unwrap_err().to_string();
    assert!(err.contains("another filesystem"), "{err}");
    assert_eq!(std::fs::read(g.join("rootfs/nested/data")).unwrap(), b"n");
    std::fs::remove_file(g.join("rootfs/nested/data")).unwrap();
    std::fs::remove_dir(g.join("rootfs/nested")).unwrap();
    rootfs::purge_rootfs(&g).unwrap();
    assert!(!g.join("rootfs").exists());
}

#[test]
fn invalid_combinations_fail_clearly() {
    let fs = LoopFs::new(Fs::Ext4 { project: false });
    let template = fs.mnt.join("template");
    std::fs::create_dir_all(template.join("etc")).unwrap();
    std::fs::write(template.join("etc/hostname"), b"t\n").unwrap();
    let err = rootfs::build_rootfs(
        &template,
        &fs.mnt.join("guests/x"),
        ResolvedStrategy::Overlay,
        Some(IdShift {
            host_base: 100_000,
            count: 65_536,
        }),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("overlay"), "{err}");
    let err = rootfs::build_rootfs(
        &template,
        &fs.mnt.join("guests/y"),
        ResolvedStrategy::Reflink,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cannot reflink"), "{err}");
    assert!(!fs.mnt.join("guests/y/rootfs").exists());
    // The failed attempt left only a partial build, which the next build clears.
    rootfs::build_rootfs(
        &template,
        &fs.mnt.join("guests/y"),
        ResolvedStrategy::Copy,
        None,
    )
    .unwrap();
    assert!(!fs.mnt.join("guests/y/rootfs.building").exists());
}
