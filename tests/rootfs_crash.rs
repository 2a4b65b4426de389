//! Crash safety: a build SIGKILLed at random points leaves either no rootfs
//! or a complete one, and the next build converges to a faithful clone.
//!
//! Drives the temporary dev binary `vsctl-rootfs-dev` (the lead will switch
//! this to the real CLI once it exposes rootfs builds).

mod rootfs_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rootfs_support::*;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vsctl-rootfs-dev")
}

/// A template big enough that a build takes a while: the fidelity fixture
/// plus a few thousand small files in nested directories.
fn big_template(root: &Path) {
    make_fixture(root);
    for d in 0..40 {
        let dir = root.join(format!("usr/lib/pkg{d}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..60 {
            std::fs::write(dir.join(format!("file{f}")), format!("{d}-{f}").repeat(64)).unwrap();
        }
    }
    set_distinct_times(root);
}

/// A cheap xorshift seeded from the clock: kill points differ run to run;
/// the seed is printed so a failure can be replayed by reading the log.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn build(template: &Path, guest: &Path, strategy: &str) -> std::process::Child {
    Command::new(bin())
        .arg(template)
        .arg(guest)
        .arg(strategy)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn killed_builds_converge(fs: Fs, strategy: &str) {
    let fs = LoopFs::new(fs);
    let template = fs.mnt.join("template");
    big_template(&template);
    let guest = fs.mnt.join("guests/crash");

    // Calibrate: how long does one uninterrupted build take here?
    let cal = fs.mnt.join("guests/calibrate");
    let t0 = Instant::now();
    assert!(build(&template, &cal, strategy).wait().unwrap().success());
    let full = t0.elapsed();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}, full build {full:?}");
    let mut rng = Rng(seed);
    let mut saw_partial = false;
    for _ in 0..12 {
        let mut child = build(&template, &guest, strategy);
        let wait = Duration::from_micros(rng.next() % (full.as_micros() as u64 + 1));
        std::thread::sleep(wait);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        let done = guest.join("rootfs");
        if done.exists() {
            // Complete or absent, never half: a published rootfs is faithful.
            assert_faithful(&template, &done);
            // Start over for the next round.
            vsctl::rootfs::purge_rootfs(&guest).unwrap();
        } else if guest.join("rootfs.building").exists() {
            saw_partial = true;
        }
    }
    eprintln!("saw a partial build: {saw_partial}");
    let out = Command::new(bin())
        .arg(&template)
        .arg(&guest)
        .arg(strategy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!guest.join("rootfs.building").exists());
    assert_faithful(&template, &guest.join("rootfs"));
}

#[test]
fn sigkilled_reflink_builds_converge() {
    killed_builds_converge(Fs::Xfs { prjquota: false }, "reflink");
}

#[test]
fn sigkilled_copy_builds_converge() {
    killed_builds_converge(Fs::Ext4 { project: false }, "copy");
}
