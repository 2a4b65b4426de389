//! Crash safety through the real CLI: `vsctl apply` SIGKILLed at random
//! points while it clones a guest's rootfs leaves either no rootfs or a
//! complete one (and a guest record only next to a complete one), and the
//! next `vsctl apply` converges to a faithful clone of the template.
//!
//! The template is the fidelity fixture plus a few thousand small files,
//! imported with `vsctl template build` from a directory on the same loop
//! filesystem as the state directory, so the XFS guests are reflinks and the
//! ext4 ones full copies. Guests are compared with the template tree as vsctl
//! stored it; what the import itself loses against the fixture is printed
//! (see the report at the end of each run), not asserted here.

mod kill_points;
mod rootfs_support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kill_points::{Rng, sigkill_after};
use rootfs_support::*;

const TEMPLATE: &str = "crashbig";
const GUEST: &str = "crash";
/// Files vsctl itself writes into every guest tree after the clone.
const GUEST_FILES: [&str; 2] = ["etc/hostname", "etc/hosts"];

/// A template source big enough that a clone takes a while: the fidelity
/// fixture plus a few thousand small files in nested directories.
fn big_fixture(root: &Path) {
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

/// An isolated vsctl world (`--root`) on the loop filesystem.
struct Host {
    root: PathBuf,
}

impl Host {
    fn vsctl(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vsctl"));
        c.arg("--root").arg(&self.root);
        c
    }

    fn state(&self) -> PathBuf {
        self.root.join("var/lib/vsctl")
    }

    fn template_tree(&self) -> PathBuf {
        self.state().join("templates").join(TEMPLATE).join("rootfs")
    }

    fn guest_dir(&self) -> PathBuf {
        self.state().join("guests").join(GUEST)
    }

    /// Run vsctl to completion; returns (exit code, stdout + stderr).
    fn run(&self, args: &[&str]) -> (i32, String) {
        let out = self.vsctl().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Start `vsctl apply` and SIGKILL it after `delay`.
    fn kill_apply_after(&self, delay: Duration) {
        let child = self
            .vsctl()
            .arg("apply")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        sigkill_after(child, delay);
    }

    fn apply_ok(&self) -> Duration {
        let t0 = Instant::now();
        let (code, text) = self.run(&["apply"]);
        let took = t0.elapsed();
        assert_eq!(code, 0, "vsctl apply failed:\n{text}");
        took
    }

    /// Forget the guest's clone (rootfs and record) so the next apply clones
    /// again: the test's own reset between kill rounds, not a vsctl operation.
    fn reset_guest(&self) {
        vsctl::rootfs::purge_rootfs(&self.guest_dir()).unwrap();
        match std::fs::remove_file(self.guest_dir().join("record.json")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove record: {e}"),
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Temporary names `rootfs::guestfile::write` uses: a kill between creating
/// one and renaming it leaves it behind in the guest's /etc.
fn is_guest_file_tmp(rel: &Path) -> bool {
    rel.parent() == Some(Path::new("etc"))
        && rel
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n.contains(".vsctl-tmp-"))
}

/// Assert `clone` is a faithful copy of the stored template tree, except for
/// the guest files vsctl writes after cloning (and the mtime of /etc, which
/// those writes move). With `guest_files`, they must hold this guest's
/// values; without, each is either the template's or this guest's (a kill
/// may fall between the clone and the writes). Returns the leftover guest
/// file temporaries seen (ignored in the comparison, reported by the caller).
fn assert_clone_of(template: &Path, clone: &Path, guest_files: bool) -> Vec<PathBuf> {
    let tmps: Vec<PathBuf> = std::fs::read_dir(clone.join("etc"))
        .unwrap()
        .map(|e| Path::new("etc").join(e.unwrap().file_name()))
        .filter(|p| is_guest_file_tmp(p))
        .collect();
    let skip = |p: &Path| {
        p == Path::new("etc")
            || GUEST_FILES.iter().any(|g| p == Path::new(g))
            || is_guest_file_tmp(p)
    };
    let keep = |v: Vec<(PathBuf, i64, i64, i64, i64)>| {
        v.into_iter().filter(|e| !skip(&e.0)).collect::<Vec<_>>()
    };
    assert_eq!(
        keep(times(template)),
        keep(times(clone)),
        "timestamps differ between {} and {}",
        template.display(),
        clone.display()
    );
    let diff = rsync_diff_with(
        template,
        clone,
        &[
            "--omit-dir-times",
            "--exclude=/etc/hostname",
            "--exclude=/etc/hosts",
            "--exclude=/etc/.*.vsctl-tmp-*",
        ],
    );
    assert!(
        diff.trim().is_empty(),
        "clone differs from template:\n{diff}"
    );
    // Properties rsync does not see, compared with the template's own.
    let sparse_t = std::fs::metadata(template.join("sparse")).unwrap();
    let sparse_c = std::fs::metadata(clone.join("sparse")).unwrap();
    assert_eq!(sparse_c.len(), sparse_t.len());
    if sparse_t.blocks() * 512 < 1 << 20 {
        assert!(
            sparse_c.blocks() * 512 < 1 << 20,
            "sparse file lost its holes: {} blocks",
            sparse_c.blocks()
        );
    }
    let getcap = |p: &Path| {
        sh(&format!("getcap '{}'", p.join("bin/ping").display()))
            .split_whitespace()
            .skip(1)
            .collect::<String>()
    };
    assert_eq!(getcap(template), getcap(clone), "capability differs");
    for (rel, fresh) in [
        ("etc/hostname", format!("{GUEST}\n")),
        ("etc/hosts", String::new()),
    ] {
        let got = std::fs::read_to_string(clone.join(rel)).ok();
        let ours = got.as_deref().is_some_and(|g| {
            if rel == "etc/hosts" {
                g.contains(GUEST)
            } else {
                g == fresh
            }
        });
        if guest_files {
            assert!(ours, "{rel} does not hold the guest's value: {got:?}");
        } else {
            let theirs = std::fs::read_to_string(template.join(rel)).ok();
            assert!(
                ours || got == theirs,
                "{rel} is neither the template's nor the guest's: {got:?}"
            );
        }
    }
    tmps
}

/// What the directory import lost or changed against the fixture, for the
/// report: a list of human-readable findings (empty when faithful).
fn import_losses(fixture: &Path, tree: &Path) -> Vec<String> {
    let mut losses = Vec::new();
    let (a, b) = (times(fixture), times(tree));
    let by_path = |v: &[(PathBuf, i64, i64, i64, i64)]| {
        v.iter()
            .map(|e| (e.0.clone(), (e.1, e.2, e.3, e.4)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (by_path(&a), by_path(&b));
    let (mut mtime_s, mut mtime_ns, mut atime) = (0, 0, 0);
    let mut kinds_s = std::collections::BTreeSet::new();
    for (p, ta) in &a {
        let Some(tb) = b.get(p) else {
            losses.push(format!("missing in the template: {}", p.display()));
            continue;
        };
        if ta.0 != tb.0 {
            mtime_s += 1;
            let ft = std::fs::symlink_metadata(tree.join(p)).unwrap().file_type();
            kinds_s.insert(if ft.is_dir() {
                "directories"
            } else if ft.is_symlink() {
                "symlinks"
            } else {
                "other files"
            });
        } else if ta.1 != tb.1 {
            mtime_ns += 1;
        }
        if (ta.2, ta.3) != (tb.2, tb.3) {
            atime += 1;
        }
    }
    let kinds_s = kinds_s.into_iter().collect::<Vec<_>>().join(", ");
    let mtime_s_what = format!("mtime seconds differ ({kinds_s})");
    for (what, n) in [
        (mtime_s_what.as_str(), mtime_s),
        ("only mtime nanoseconds differ", mtime_ns),
        ("atime differs", atime),
    ] {
        if n > 0 {
            losses.push(format!("{what} on {n} of {} entries", a.len()));
        }
    }
    for line in rsync_diff_with(fixture, tree, &["--omit-dir-times"]).lines() {
        losses.push(format!("rsync: {line}"));
    }
    let sparse = std::fs::metadata(tree.join("sparse")).unwrap();
    if sparse.blocks() * 512 >= 1 << 20 {
        losses.push(format!("sparse file filled: {} blocks", sparse.blocks()));
    }
    let caps = sh(&format!("getcap '{}'", tree.join("bin/ping").display()));
    if !caps.contains("cap_net_raw") {
        losses.push("file capability on bin/ping".into());
    }
    let links = std::fs::metadata(tree.join("etc/link1")).unwrap().nlink();
    losses.push(format!("(info) etc/link1 link count in the tree: {links}"));
    losses
}

fn killed_applies_converge(fs: Fs, strategy: &str) {
    let fs = LoopFs::new(fs);
    let host = Host {
        root: fs.mnt.join("root"),
    };
    let fixture = fs.mnt.join("fixture");
    big_fixture(&fixture);
    write(
        &host
            .root
            .join(format!("etc/vsctl/templates/{TEMPLATE}.toml")),
        &format!(
            "description = \"crash-test fixture\"\nbootstrap = \"import\"\npath = \"{}\"\n",
            fixture.display()
        ),
    );
    // Stopped (nothing boots), no network, privileged so the tree keeps the
    // template's ids and compares one to one.
    write(
        &host.root.join(format!("etc/vsctl/guests.d/{GUEST}.toml")),
        &format!(
            "template = \"{TEMPLATE}\"\nstate = \"stopped\"\n\n[network]\nmode = \"none\"\n\n\
             [security]\nuserns = false\n\n[rootfs]\nstrategy = \"{strategy}\"\n"
        ),
    );
    let t0 = Instant::now();
    let (code, text) = host.run(&["template", "build", TEMPLATE]);
    assert_eq!(code, 0, "template build failed:\n{text}");
    eprintln!("template build {:?}", t0.elapsed());
    let tree = host.template_tree();
    for loss in import_losses(&fixture, &tree) {
        eprintln!("import: {loss}");
    }

    // Calibrate: one uninterrupted apply, and one with nothing to do (the
    // part of every run before the clone starts).
    let full = host.apply_ok();
    let guest = host.guest_dir();
    assert!(guest.join("record.json").exists());
    assert_clone_of(&tree, &guest.join("rootfs"), true);
    let t0 = Instant::now();
    assert_eq!(host.run(&["apply", "--detailed-exitcode"]).0, 0);
    let idle = t0.elapsed();
    host.reset_guest();

    let seed = kill_points::seed();
    eprintln!("seed {seed}, full apply {full:?}, idle apply {idle:?}");
    // Kill points from half the start-up time to the end of a full run.
    let lo = idle.as_micros() as u64 / 2;
    let span = (full.as_micros() as u64).saturating_sub(lo) + 1;
    let mut rng = Rng(seed);
    let (mut partial, mut published, mut recorded) = (0, 0, 0);
    let mut leftovers = Vec::new();
    for _ in 0..12 {
        host.kill_apply_after(Duration::from_micros(lo + rng.next() % span));
        let rootfs = guest.join("rootfs");
        let has_record = guest.join("record.json").exists();
        if rootfs.exists() {
            // Complete or absent, never half: a published rootfs is faithful.
            published += 1;
            leftovers.extend(assert_clone_of(&tree, &rootfs, has_record));
            recorded += usize::from(has_record);
            host.reset_guest();
        } else {
            assert!(
                !has_record,
                "a guest record exists without a rootfs after a kill"
            );
            partial += usize::from(guest.join("rootfs.building").exists());
        }
    }
    eprintln!(
        "kills: {partial} left a partial rootfs.building, {published} a published rootfs \
         ({recorded} with a record)"
    );
    if !leftovers.is_empty() {
        eprintln!("guest file temporaries left by killed applies: {leftovers:?}");
    }

    // One last kill that leaves whatever it leaves, then converge.
    host.kill_apply_after(Duration::from_micros(lo + rng.next() % span));
    host.apply_ok();
    let (code, text) = host.run(&["apply", "--detailed-exitcode"]);
    assert_eq!(code, 0, "apply after converging still has changes:\n{text}");
    assert!(!guest.join("rootfs.building").exists());
    assert!(guest.join("record.json").exists());
    assert_clone_of(&tree, &guest.join("rootfs"), true);
}

#[test]
fn sigkilled_reflink_applies_converge() {
    killed_applies_converge(Fs::Xfs { prjquota: false }, "reflink");
}

#[test]
fn sigkilled_copy_applies_converge() {
    killed_applies_converge(Fs::Ext4 { project: false }, "copy");
}
