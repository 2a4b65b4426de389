//! Host-side writes of guest files must never change a host file, whatever
//! symlinks the guest planted. Each attack gets a decoy host file outside the
//! guest root and asserts it is byte-for-byte unchanged.

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use vsctl::rootfs::guestfile;

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    decoy: PathBuf,
    decoy_dir: PathBuf,
}

const DECOY: &[u8] = b"root:$6$host-shadow-do-not-touch:19000:0:99999:7:::\n";

fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("guest/root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let decoy_dir = tmp.path().join("host/etc");
    std::fs::create_dir_all(&decoy_dir).unwrap();
    let decoy = decoy_dir.join("shadow");
    std::fs::write(&decoy, DECOY).unwrap();
    World {
        _tmp: tmp,
        root,
        decoy,
        decoy_dir,
    }
}

impl World {
    fn assert_host_untouched(&self) {
        assert_eq!(
            std::fs::read(&self.decoy).unwrap(),
            DECOY,
            "host file changed"
        );
        let names: Vec<_> = std::fs::read_dir(&self.decoy_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("shadow")],
            "host dir gained files"
        );
    }
}

fn depth_escape(root: &Path, target: &Path) -> PathBuf {
    // ../ enough times to reach / from root/etc, then the absolute target.
    let ups = root.components().count() + 3;
    let mut p = PathBuf::new();
    for _ in 0..ups {
        p.push("..");
    }
    p.join(target.strip_prefix("/").unwrap())
}

#[test]
fn plain_write_creates_parents_with_owner_and_mode() {
    let w = world();
    guestfile::write(
        &w.root,
        "/etc/network/interfaces.d/eth0",
        b"auto eth0\n",
        0o640,
        Some((100_000, 100_004)),
    )
    .unwrap();
    let p = w.root.join("etc/network/interfaces.d/eth0");
    assert_eq!(std::fs::read(&p).unwrap(), b"auto eth0\n");
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (100_000, 100_004));
    let d = std::fs::metadata(w.root.join("etc/network")).unwrap();
    assert_eq!((d.uid(), d.gid()), (100_000, 100_004));
    // Rewriting replaces atomically and leaves no temporary file behind.
    guestfile::write(
        &w.root,
        "etc/network/interfaces.d/eth0",
        b"auto eth1\n",
        0o644,
        None,
    )
    .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"auto eth1\n");
    assert_eq!(
        std::fs::read_dir(w.root.join("etc/network/interfaces.d"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        guestfile::read(&w.root, "/etc/network/interfaces.d/eth0").unwrap(),
        b"auto eth1\n"
    );
}

#[test]
fn target_symlink_absolute_to_host_file_is_replaced() {
    let w = world();
    symlink(&w.decoy, w.root.join("etc/hostname")).unwrap();
    guestfile::write(&w.root, "/etc/hostname", b"web1\n", 0o644, None).unwrap();
    w.assert_host_untouched();
    let md = std::fs::symlink_metadata(w.root.join("etc/hostname")).unwrap();
    assert!(md.is_file(), "symlink must be replaced by a regular file");
    assert_eq!(
        std::fs::read(w.root.join("etc/hostname")).unwrap(),
        b"web1\n"
    );
}

#[test]
fn target_symlink_relative_escape_is_replaced() {
    let w = world();
    symlink(depth_escape(&w.root, &w.decoy), w.root.join("etc/hostname")).unwrap();
    guestfile::write(&w.root, "etc/hostname", b"web1\n", 0o644, None).unwrap();
    w.assert_host_untouched();
    assert!(
        std::fs::symlink_metadata(w.root.join("etc/hostname"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn target_hardlink_to_host_file_is_not_written_through() {
    let w = world();
    std::fs::hard_link(&w.decoy, w.root.join("etc/hostname")).unwrap();
    guestfile::write(&w.root, "etc/hostname", b"web1\n", 0o644, None).unwrap();
    w.assert_host_untouched();
}

#[test]
fn etc_symlink_to_slash_stays_in_the_guest() {
    let w = world();
    std::fs::remove_dir(w.root.join("etc")).unwrap();
    symlink("/", w.root.join("etc")).unwrap();
    let host_hostname = std::fs::read("/hostname").ok();
    guestfile::write(&w.root, "/etc/hostname", b"web1\n", 0o644, None).unwrap();
    // /etc -> / resolves to the guest root, so the file lands at root/hostname.
    assert_eq!(std::fs::read(w.root.join("hostname")).unwrap(), b"web1\n");
    assert_eq!(std::fs::read("/hostname").ok(), host_hostname);
    w.assert_host_untouched();
}

#[test]
fn parent_symlink_to_host_dir_absolute_and_relative() {
    for relative in [false, true] {
        let w = world();
        std::fs::remove_dir(w.root.join("etc")).unwrap();
        let target = if relative {
            depth_escape(&w.root, &w.decoy_dir)
        } else {
            w.decoy_dir.clone()
        };
        symlink(&target, w.root.join("etc")).unwrap();
        // Inside the guest the link points at a path that does not exist:
        // the write fails or lands inside the guest, never in the host dir.
        let _ = guestfile::write(&w.root, "/etc/shadow", b"pwned\n", 0o600, None);
        let _ = guestfile::write(&w.root, "/etc/newfile", b"pwned\n", 0o600, None);
        w.assert_host_untouched();
    }
}

#[test]
fn dotdot_in_requested_path_is_refused() {
    let w = world();
    let err = guestfile::write(&w.root, "../../host/etc/shadow", b"x", 0o600, None).unwrap_err();
    assert!(err.to_string().contains("'..'"), "{err}");
    w.assert_host_untouched();
}

#[test]
fn deep_parent_chain_escape() {
    let w = world();
    // etc/a -> ../../../..(past root)/host/etc ; the write goes under etc/a.
    std::fs::create_dir_all(w.root.join("etc")).unwrap();
    symlink(depth_escape(&w.root, &w.decoy_dir), w.root.join("etc/a")).unwrap();
    let _ = guestfile::write(&w.root, "etc/a/shadow", b"pwned\n", 0o600, None);
    w.assert_host_untouched();
    // And through a /proc magic link.
    symlink("/proc/self/root/", w.root.join("etc/p")).unwrap();
    let rel = format!("etc/p{}", w.decoy.display());
    let _ = guestfile::write(&w.root, &rel, b"pwned\n", 0o600, None);
    w.assert_host_untouched();
}

#[test]
fn reads_stay_in_the_guest_and_refuse_special_files() {
    let w = world();
    symlink(&w.decoy, w.root.join("etc/shadow")).unwrap();
    if let Ok(data) = guestfile::read(&w.root, "/etc/shadow") {
        assert_ne!(data, DECOY);
    }
    symlink(depth_escape(&w.root, &w.decoy), w.root.join("etc/rel")).unwrap();
    if let Ok(data) = guestfile::read(&w.root, "etc/rel") {
        assert_ne!(data, DECOY);
    }
    // A device node planted by the guest is not opened.
    nix::sys::stat::mknod(
        &w.root.join("etc/disk"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let err = guestfile::read(&w.root, "etc/disk").unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    nix::unistd::mkfifo(
        &w.root.join("etc/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    assert!(guestfile::read(&w.root, "etc/fifo").is_err());
}

/// A pid above the kernel's maximum (2^22): never a live process.
const DEAD_PID: u32 = 99_999_999;

#[test]
fn stale_temporaries_of_the_file_are_removed_without_following_symlinks() {
    let w = world();
    let etc = w.root.join("etc");
    // What a writer killed between creating its temporary and the rename
    // leaves behind, from an earlier run (its pid is gone).
    let stale = etc.join(format!(".hostname.vsctl-tmp-{DEAD_PID}-0"));
    std::fs::write(&stale, b"half-written").unwrap();
    let stale2 = etc.join(format!(".hostname.vsctl-tmp-{DEAD_PID}-7"));
    std::fs::write(&stale2, b"").unwrap();
    // A symlink named like a temporary, pointing at a host file: neither
    // followed (the host file keeps its bytes) nor removed.
    let trap = etc.join(format!(".hostname.vsctl-tmp-{}-1", DEAD_PID - 1));
    symlink(&w.decoy, &trap).unwrap();
    // A directory named like one is not ours either.
    let dir = etc.join(format!(".hostname.vsctl-tmp-{}-2", DEAD_PID - 2));
    std::fs::create_dir(&dir).unwrap();
    // Not stale: a live writer's (pid 1 always exists), another file's, and
    // names that only look similar.
    let live = etc.join(".hostname.vsctl-tmp-1-0");
    std::fs::write(&live, b"").unwrap();
    let other = etc.join(format!(".hosts.vsctl-tmp-{DEAD_PID}-0"));
    std::fs::write(&other, b"").unwrap();
    let similar = etc.join(format!(".hostname.vsctl-tmp-{DEAD_PID}-0.keep"));
    std::fs::write(&similar, b"").unwrap();

    guestfile::write(&w.root, "/etc/hostname", b"web1\n", 0o644, None).unwrap();

    assert_eq!(std::fs::read(etc.join("hostname")).unwrap(), b"web1\n");
    assert!(!stale.exists(), "stale temporary left behind");
    assert!(!stale2.exists(), "stale temporary left behind");
    w.assert_host_untouched();
    assert!(
        std::fs::symlink_metadata(&trap)
            .unwrap()
            .file_type()
            .is_symlink(),
        "a symlink named like a temporary must stay as it is"
    );
    assert_eq!(std::fs::read_link(&trap).unwrap(), w.decoy);
    assert!(dir.is_dir());
    assert!(live.exists(), "a live writer's temporary was removed");
    assert!(other.exists(), "another file's temporary was removed");
    assert!(
        similar.exists(),
        "a name that only looks like a temporary was removed"
    );
    let mut names: Vec<_> = std::fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn stale_temporary_symlink_into_a_host_dir_is_not_followed() {
    // The temporary's name in the guest points at a host directory holding a
    // regular file of the same name: nothing outside the guest is removed.
    let w = world();
    let etc = w.root.join("etc");
    let name = format!(".hostname.vsctl-tmp-{DEAD_PID}-0");
    std::fs::write(w.decoy_dir.join(&name), b"host file").unwrap();
    symlink(w.decoy_dir.join(&name), etc.join(&name)).unwrap();
    guestfile::write(&w.root, "/etc/hostname", b"web1\n", 0o644, None).unwrap();
    assert_eq!(
        std::fs::read(w.decoy_dir.join(&name)).unwrap(),
        b"host file"
    );
    assert!(
        std::fs::symlink_metadata(etc.join(&name))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::fs::remove_file(w.decoy_dir.join(&name)).unwrap();
    w.assert_host_untouched();
}
