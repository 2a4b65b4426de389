//! The `image` strategy (root required): a guest's root filesystem is an
//! ext4 image of its own, one FICLONE of its template's image, loop-mounted
//! only inside the guest's mount namespace.
//!
//! On loop-mounted XFS (reflink=1) images the tests make themselves:
//! the template image is faithful to the template tree (rsync and
//! nanosecond times), guests are independent of each other and of the
//! template, and twenty clones cost next to no disk; through the real CLI an
//! unprivileged and a privileged guest boot from images, guest files are
//! written into a stopped guest's image, `[disk] quota` sizes the image
//! (shrunk while stopped, writes past it fail with ENOSPC), and stopping or
//! purging leaves no loop device, mount or image behind.

mod common;
mod rootfs_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{World, stderr, stdout};
use rootfs_support::*;
use vsctl::rootfs::{self, RootfsLayout, image};

/// Mount an image read-write (or read-only) at a fresh directory under
/// `dir` with mount(8), as an independent observer; unmounted on drop.
fn mount_image(img: &Path, dir: &Path, name: &str, ro: bool) -> MountGuard {
    // mount(8) reuses a loop device that still backs the same file: wait
    // until an earlier (lazily detached) mount's device is gone, or a
    // read-write mount could land on a read-only device.
    let left = vsctl::loopdev::wait_released(img, std::time::Duration::from_secs(10)).unwrap();
    assert!(
        left.is_empty(),
        "{} still attached to {left:?}",
        img.display()
    );
    let mnt = dir.join(name);
    std::fs::create_dir_all(&mnt).unwrap();
    let opts = if ro {
        "loop,ro,noatime"
    } else {
        "loop,noatime"
    };
    run(Command::new("mount").args(["-o", opts]).arg(img).arg(&mnt));
    MountGuard(mnt)
}

fn used_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    (st.blocks() - st.blocks_free()) * st.fragment_size()
}

/// Loop devices backing files under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    run(Command::new("losetup").args(["-a", "-O", "NAME,BACK-FILE", "-n"]))
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(String::from)
        .collect()
}

/// Everything below the root but lost+found, which every ext4 root has.
fn times_without_lost_found(root: &Path) -> Vec<(PathBuf, i64, i64, i64, i64)> {
    times(root)
        .into_iter()
        .filter(|t| !t.0.starts_with("lost+found"))
        .collect()
}

#[test]
fn image_clones_are_faithful_independent_and_nearly_free_on_xfs() {
    image_clones_are_faithful_independent_and_nearly_free(Fs::Xfs { prjquota: false });
}

#[test]
fn image_clones_are_faithful_independent_and_nearly_free_on_btrfs() {
    image_clones_are_faithful_independent_and_nearly_free(Fs::Btrfs);
}

fn image_clones_are_faithful_independent_and_nearly_free(kind: Fs) {
    let fs = LoopFs::new(kind);
    let template = fs.mnt.join("template");
    make_fixture(&template);
    // 8 MiB of data the template image must share with the tree, not copy.
    let big: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(template.join("usr/big"), &big).unwrap();
    set_distinct_times(&template);
    sh("sync");
    let before_image = used_bytes(&fs.mnt);
    let images = fs.mnt.join("images");
    let timg = image::template_image(&template, &images, "fix", "k1").unwrap();
    sh("sync");
    let image_cost = used_bytes(&fs.mnt) - before_image;
    // btrfs frees an extent only once nothing references any part of it,
    // and mkfs.ext4 wrote the data in extents shared with ext4's metadata:
    // there the sharing frees nothing (docs/rootfs.md).
    if matches!(kind, Fs::Xfs { .. }) {
        assert!(
            image_cost < 3 << 20,
            "the template image took {image_cost} bytes: its data is not shared with the tree"
        );
    }
    // Made once: a second call returns the same file untouched.
    let mtime = std::fs::metadata(&timg).unwrap().modified().unwrap();
    assert_eq!(
        image::template_image(&template, &images, "fix", "k1").unwrap(),
        timg
    );
    assert_eq!(std::fs::metadata(&timg).unwrap().modified().unwrap(), mtime);

    let ga = fs.mnt.join("guests/a");
    let gb = fs.mnt.join("guests/b");
    let la = rootfs::build_image_rootfs(&timg, &ga, image::DEFAULT_SIZE).unwrap();
    assert_eq!(
        la,
        RootfsLayout::Image {
            path: ga.join("rootfs.img")
        }
    );
    rootfs::build_image_rootfs(&timg, &gb, 160 << 20).unwrap();
    assert_eq!(
        image::read_superblock(&gb.join("rootfs.img"))
            .unwrap()
            .size(),
        160 << 20,
        "guest b's image is sized to its quota"
    );
    // An existing image is returned untouched, never rebuilt.
    let before = std::fs::metadata(ga.join("rootfs.img")).unwrap();
    rootfs::build_image_rootfs(&timg, &ga, 1 << 30).unwrap();
    let after = std::fs::metadata(ga.join("rootfs.img")).unwrap();
    assert_eq!(
        (before.len(), before.modified().unwrap()),
        (after.len(), after.modified().unwrap())
    );

    let obs = fs.mnt.join("obs");
    {
        let a = mount_image(&ga.join("rootfs.img"), &obs, "a", true);
        let b = mount_image(&gb.join("rootfs.img"), &obs, "b", true);
        for clone in [&a.0, &b.0] {
            assert_eq!(
                times(&template),
                times_without_lost_found(clone),
                "timestamps differ"
            );
            let diff = rsync_diff_with(&template, clone, &["--exclude=/lost+found"]);
            assert!(
                diff.trim().is_empty(),
                "image differs from template:\n{diff}"
            );
            let caps = sh(&format!("getcap '{}'", clone.join("bin/ping").display()));
            assert!(caps.contains("cap_net_raw"), "capability lost: {caps:?}");
            let sparse = std::fs::metadata(clone.join("sparse")).unwrap();
            assert_eq!(sparse.len(), 64 << 20);
        }
    }
    // A write in guest a reaches neither the template nor guest b.
    {
        let a = mount_image(&ga.join("rootfs.img"), &obs, "a", false);
        write_in_place(&a.0.join("etc/hostname"), b"GUEST-A");
        write_in_place(&a.0.join("usr/link2"), b"A-LINK");
        assert_eq!(
            std::fs::read(a.0.join("etc/link1")).unwrap(),
            b"A-LINK\n",
            "a hardlink pair inside the guest is still one inode"
        );
    }
    let template_hostname = std::fs::read(template.join("etc/hostname")).unwrap();
    {
        let b = mount_image(&gb.join("rootfs.img"), &obs, "b", true);
        assert_eq!(
            std::fs::read(b.0.join("etc/hostname")).unwrap(),
            template_hostname
        );
        assert_eq!(std::fs::read(b.0.join("etc/link1")).unwrap(), b"linked\n");
        let t = mount_image(&timg, &obs, "t", true);
        assert_eq!(
            std::fs::read(t.0.join("etc/hostname")).unwrap(),
            template_hostname
        );
    }

    // Density: twenty more guests at the default size share every block.
    // (sync first: XFS accounts delayed allocations lazily.)
    sh("sync");
    let before = used_bytes(&fs.mnt);
    for i in 0..20 {
        rootfs::build_image_rootfs(
            &timg,
            &fs.mnt.join(format!("guests/n{i}")),
            image::DEFAULT_SIZE,
        )
        .unwrap();
    }
    sh("sync");
    let grown = used_bytes(&fs.mnt).saturating_sub(before);
    let template_used = std::fs::metadata(&timg).unwrap();
    let template_used = std::os::unix::fs::MetadataExt::blocks(&template_used) * 512;
    assert!(
        grown < 20 * 64 * 1024,
        "20 image clones took {grown} bytes (template image: {template_used} bytes)"
    );

    // A template image of another tree digest replaces the old one.
    let newer = image::template_image(&template, &images, "fix", "k2").unwrap();
    assert!(newer.is_file());
    assert!(!timg.exists(), "stale template image kept");
    assert!(
        loops_under(&fs.mnt).is_empty(),
        "{:?}",
        loops_under(&fs.mnt)
    );
}

fn guest(extra: &str) -> String {
    format!(
        "template = \"busybox\"\n{extra}\n[rootfs]\nstrategy = \"image\"\n[network]\nmode = \"none\"\n\
         [init]\nstop_timeout = \"10s\"\n"
    )
}

#[test]
fn image_guests_boot_take_files_resize_and_leave_nothing_behind() {
    let fs = LoopFs::new(Fs::Xfs { prjquota: false });
    let world = World::new();
    let state = fs.mnt.join("state");
    let state_arg = state.display().to_string();
    let vsctl = |args: &[&str]| {
        let mut all = vec!["--state-dir", &state_arg];
        all.extend_from_slice(args);
        world.vsctl(&all)
    };
    let exec = |name: &str, script: &str| {
        let out = vsctl(&["exec", name, "-T", "--", "/bin/sh", "-c", script]);
        assert!(out.status.success(), "exec in {name}: {}", stderr(&out));
        stdout(&out)
    };
    world.write_guest("u", &guest("hostname = \"first\""));
    world.write_guest("p", &guest("[security]\nuserns = false"));
    let out = vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let image_u = state.join("guests/u/rootfs.img");
    let image_p = state.join("guests/p/rootfs.img");
    for (name, img) in [("u", &image_u), ("p", &image_p)] {
        assert!(img.is_file(), "{name}: no image");
        // Inside: root owns the files, the image is /, writes work.
        let seen = exec(
            name,
            "stat -c %u:%g /etc/passwd; id -u; echo hi > /root/note && cat /root/note; \
             grep ' / / ' /proc/self/mountinfo",
        );
        assert!(seen.starts_with("0:0\n0\nhi\n"), "{name}: {seen}");
        assert!(seen.contains(" ext4 /dev/loop"), "{name}: {seen}");
        // Mounted in the guest's namespace only, through one loop device.
        let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!host_mounts.contains(&*img.to_string_lossy()));
        assert_eq!(vsctl::loopdev::attached_to(img).unwrap().len(), 1, "{name}");
    }
    // A running guest's supervisor holds its image: nobody else may mount
    // or resize it (the lock is waited for a few seconds, then refused).
    let err = image::lock(&image_u).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    // The unprivileged guest's image is idmapped: its root is a host uid of
    // its range, but the image stores 0.
    assert!(exec("u", "grep ' / / ' /proc/self/mountinfo").contains("idmapped"));
    assert_eq!(exec("u", "cat /etc/hostname").trim(), "first");
    let (_, status) = world.vsctl_json(&["--state-dir", &state_arg, "status", "u"]);
    assert_eq!(
        status["disk"]["bytes_limit"],
        image::DEFAULT_SIZE,
        "{status:#}"
    );

    // Stopped: the loop device is gone, and apply writes guest files into
    // the image and sizes it to the quota.
    let out = vsctl(&["stop", "u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(vsctl::loopdev::attached_to(&image_u).unwrap().is_empty());
    world.write_guest(
        "u",
        &guest("hostname = \"second\"\nstate = \"stopped\"\n[disk]\nquota = \"96MiB\""),
    );
    let out = vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(image::read_superblock(&image_u).unwrap().size(), 96 << 20);
    assert_eq!(std::fs::metadata(&image_u).unwrap().len(), 96 << 20);
    assert!(vsctl::loopdev::attached_to(&image_u).unwrap().is_empty());
    world.write_guest(
        "u",
        &guest("hostname = \"second\"\n[disk]\nquota = \"96MiB\""),
    );
    let out = vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        exec("u", "cat /etc/hostname; cat /root/note"),
        "second\nhi\n"
    );
    // The image is the limit: writing past it fails with ENOSPC.
    let fill = exec(
        "u",
        "dd if=/dev/zero of=/fill bs=1M count=200 conv=fsync 2>&1; echo rc=$?; rm -f /fill; sync",
    );
    assert!(fill.contains("No space left on device"), "{fill}");
    assert!(!fill.contains("rc=0"), "{fill}");
    // What the guest deleted went back to the host (mounted with discard).
    let allocated =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&image_u).unwrap()) * 512;
    assert!(
        allocated < 48 << 20,
        "the image keeps {allocated} bytes after the guest deleted its fill"
    );

    // Growing a running guest: online where the host allows (it needs
    // CAP_SYS_RESOURCE), else a clear error and the grow finishes offline.
    world.write_guest(
        "u",
        &guest("hostname = \"second\"\n[disk]\nquota = \"128MiB\""),
    );
    let out = vsctl(&["apply"]);
    if out.status.success() {
        let df = exec("u", "df -k / | tail -1");
        assert!(!df.is_empty());
    } else {
        let err = stderr(&out);
        assert!(err.contains("CAP_SYS_RESOURCE"), "{err}");
        assert!(vsctl(&["stop", "u"]).status.success());
        let out = vsctl(&["apply"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(image::read_superblock(&image_u).unwrap().size() >> 20, 128);
    // Shrinking while running is refused, nothing changes.
    world.write_guest(
        "u",
        &guest("hostname = \"second\"\n[disk]\nquota = \"64MiB\""),
    );
    let out = vsctl(&["apply"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("cannot shrink while mounted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(exec("u", "cat /root/note"), "hi\n");

    // An inode limit is something an image cannot enforce: said plainly.
    world.write_guest(
        "p",
        &guest("[security]\nuserns = false\n[disk]\ninodes = 1000"),
    );
    let out = vsctl(&["apply"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("[disk] inodes"), "{}", stderr(&out));

    // Removing the guests with --prune --purge leaves nothing behind.
    world.remove_guest("u");
    world.remove_guest("p");
    let out = vsctl(&["apply", "--prune", "--purge"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!image_u.exists() && !image_p.exists());
    assert!(loops_under(&state).is_empty(), "{:?}", loops_under(&state));
    for name in ["u", "p"] {
        let left = common::leftovers(&format!("{}/{name}", world.cgroup_base));
        assert_eq!(left, Vec::<String>::new());
    }
    // gc keeps the template image of an installed template, and removes it
    // once the template is gone.
    let images = state.join("guests/.images");
    let count = || std::fs::read_dir(&images).unwrap().count();
    assert_eq!(count(), 1);
    let (_, gc) = world.vsctl_json(&["--state-dir", &state_arg, "gc"]);
    assert_eq!(gc["gc"]["removed_template_images"], 0, "{gc:#}");
    assert_eq!(count(), 1);
    let out = vsctl(&["template", "rm", "busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, gc) = world.vsctl_json(&["--state-dir", &state_arg, "gc"]);
    assert_eq!(gc["gc"]["removed_template_images"], 1, "{gc:#}");
    assert_eq!(count(), 0);
}

mod kill_points;

/// e2fsck -fn of an image: exit code and output.
fn fsck(img: &Path) -> (i32, String) {
    let out = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// Wait (up to 2 s) for the kernel to detach the loop devices of a killed
/// vsctl's mounts, then return those still attached under `dir`.
fn loops_after_kill(dir: &Path) -> Vec<String> {
    for _ in 0..200 {
        if loops_under(dir).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    loops_under(dir)
}

#[test]
fn sigkilled_image_applies_converge() {
    let fs = LoopFs::new(Fs::Xfs { prjquota: false });
    let world = World::new();
    let state = fs.mnt.join("state");
    let state_arg = state.display().to_string();
    // Stopped, sized (so a resize runs after the clone), with guest files.
    world.write_guest(
        "c",
        &guest("state = \"stopped\"\nhostname = \"crashy\"\n[disk]\nquota = \"128MiB\""),
    );
    let out = world.vsctl(&["--state-dir", &state_arg, "template", "build", "busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let guest_dir = state.join("guests/c");
    let images = state.join("guests/.images");
    let img = guest_dir.join("rootfs.img");
    let reset = || {
        vsctl::rootfs::purge_rootfs(&guest_dir).unwrap();
        let _ = std::fs::remove_file(guest_dir.join("record.json"));
        let _ = std::fs::remove_dir_all(&images);
    };
    let t0 = std::time::Instant::now();
    let out = world.vsctl(&["--state-dir", &state_arg, "apply"]);
    let full = t0.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fsck(&img).0, 0);

    let seed = kill_points::seed();
    eprintln!("seed {seed}, full apply {full:?}");
    let mut rng = kill_points::Rng(seed);
    let (mut published, mut none) = (0, 0);
    for _ in 0..10 {
        reset();
        let child = world
            .vsctl_command(&["--state-dir", &state_arg, "apply"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.next() % (full.as_micros() as u64 + 1);
        kill_points::sigkill_after(child, std::time::Duration::from_micros(delay));
        assert_eq!(loops_after_kill(&state), Vec::<String>::new());
        if img.exists() {
            // Published means complete: sized, and a clean filesystem.
            published += 1;
            let (code, text) = fsck(&img);
            assert_eq!(code, 0, "published image is not clean:\n{text}");
            assert_eq!(image::read_superblock(&img).unwrap().size(), 128 << 20);
        } else {
            none += 1;
            assert!(
                !guest_dir.join("record.json").exists(),
                "a record without an image after a kill"
            );
        }
    }
    eprintln!("kills: {published} left a published image, {none} none");
    // Converge from whatever the last kill left.
    let out = world.vsctl(&["--state-dir", &state_arg, "apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = world.vsctl(&["--state-dir", &state_arg, "apply", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(fsck(&img).0, 0);
    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        names(&guest_dir)
            .iter()
            .all(|n| !n.ends_with(".building") && !n.ends_with(".resizing")),
        "{:?}",
        names(&guest_dir)
    );
    assert_eq!(names(&images).len(), 1, "{:?}", names(&images));
    // The guest files are in the image.
    let obs = fs.mnt.join("obs");
    let m = mount_image(&img, &obs, "c", true);
    assert_eq!(
        std::fs::read_to_string(m.0.join("etc/hostname")).unwrap(),
        "crashy\n"
    );
}
