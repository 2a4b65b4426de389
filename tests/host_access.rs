//! What an unprivileged host user can reach of vsctl's files (issue 23,
//! MEDIUM 1 and 4), tried for real as host user `nobody` (setpriv, a
//! separate process): setuid-root binaries and device nodes inside template
//! trees, store objects and guests' root filesystems of every strategy,
//! template and guest images, and the guest's `[env]` (secrets) in
//! `spec.json` and `record.json`. Every attempt must fail with EACCES, for
//! trees vsctl made now and for an install whose directories an older vsctl
//! made world-readable (the next apply or start tightens them), while
//! privileged and unprivileged guests of every strategy still boot.

mod common;
mod rootfs_support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{World, stderr, stdout};
use rootfs_support::{Fs, LoopFs};

const NOBODY: u32 = 65534;

/// `args` run as host user nobody (group nogroup, no supplementary groups):
/// the ids are switched in the child before the exec, so even the exec's
/// own path lookup is nobody's. (`setpriv --reuid` is no such test: it
/// keeps every capability effective up to its exec (PR_SET_KEEPCAPS, then
/// capset), so that exec passes any directory.)
fn as_nobody(args: &[&str]) -> Tried {
    use std::os::unix::process::CommandExt;
    match Command::new(args[0])
        .args(&args[1..])
        .uid(NOBODY)
        .gid(NOBODY)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
    {
        Ok(out) => Tried {
            success: out.status.success(),
            stdout: stdout(&out),
            stderr: stderr(&out),
        },
        // The exec itself was refused.
        Err(e) => Tried {
            success: false,
            stdout: String::new(),
            stderr: e.to_string(),
        },
    }
}

/// How an attempt ended.
struct Tried {
    success: bool,
    stdout: String,
    stderr: String,
}

/// What nobody gets out of `path`: executing it (a setuid binary) or
/// reading its first bytes (a device node, an image, a secret).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Attack {
    Execute,
    Read,
}

fn attack(path: &Path, how: Attack) -> Tried {
    let p = path.to_str().unwrap();
    match how {
        Attack::Execute => as_nobody(&[p]),
        Attack::Read => as_nobody(&["head", "-c", "4096", p]),
    }
}

/// The attack on `path` fails with "Permission denied" and yields nothing.
fn assert_refused(path: &Path, how: Attack, secret: &str) {
    let out = attack(path, how);
    assert!(
        !out.success
            && out.stderr.contains("Permission denied")
            && !out.stdout.contains(secret)
            && !out.stdout.contains("euid="),
        "host user nobody got through to {} ({how:?})\nstdout: {}\nstderr: {}",
        path.display(),
        out.stdout,
        out.stderr
    );
}

/// The attack on `path` works (the old layout): proves the attack is real.
fn assert_reached(path: &Path, how: Attack, gain: &str) {
    let out = attack(path, how);
    assert!(
        out.success && out.stdout.contains(gain),
        "{} ({how:?}) should be reachable in the loosened layout: {}\n{}",
        path.display(),
        out.stdout,
        out.stderr
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// What an older vsctl left: every directory of the state and run trees
/// (but not inside guest or template trees) 0755, records and specs 0644.
fn loosen_like_an_old_install(state: &Path, run: &Path) {
    let mut dirs = vec![state.to_path_buf(), run.to_path_buf()];
    for sub in [
        "store",
        "store/objects",
        "templates",
        "guests",
        "guests/.images",
    ] {
        dirs.push(state.join(sub));
    }
    for parent in [state.join("guests"), run.to_path_buf()] {
        for entry in std::fs::read_dir(&parent).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
                for file in ["record.json", "spec.json", "state.json"] {
                    let f = entry.path().join(file);
                    if f.exists() {
                        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
                            .unwrap();
                    }
                }
            }
        }
    }
    // Template images were 0644 too.
    if let Ok(images) = std::fs::read_dir(state.join("guests/.images")) {
        for image in images.flatten() {
            std::fs::set_permissions(image.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        std::os::unix::fs::chown(dir, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A loop device backed by a small file holding `content`: a host disk a
/// template's device node points at. Detached on drop.
struct HostDisk {
    dev: String,
    _dir: tempfile::TempDir,
}

impl HostDisk {
    fn new(content: &str) -> HostDisk {
        let dir = tempfile::Builder::new()
            .prefix("vsctl-hostdisk-")
            .tempdir_in("/tmp")
            .unwrap();
        let img = dir.path().join("disk");
        let mut data = content.as_bytes().to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&img, data).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", stderr(&out));
        HostDisk {
            dev: stdout(&out).trim().to_string(),
            _dir: dir,
        }
    }

    fn rdev(&self) -> (u64, u64) {
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev) as u64, libc::minor(rdev) as u64)
    }
}

impl Drop for HostDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

const STRATEGIES: [&str; 4] = ["copy", "reflink", "overlay", "image"];

fn guest_file(strategy: &str, privileged: bool) -> String {
    format!(
        "template = \"evil\"\n[rootfs]\nstrategy = \"{strategy}\"\n[network]\nmode = \"none\"\n\
         [security]\nuserns = {}\n[init]\nstop_timeout = \"5s\"\n",
        !privileged
    )
}

fn names() -> Vec<(String, &'static str, bool)> {
    let mut v = Vec::new();
    for strategy in STRATEGIES {
        for privileged in [true, false] {
            let name = format!("{strategy}-{}", if privileged { "p" } else { "u" });
            v.push((name, strategy, privileged));
        }
    }
    v
}

#[test]
fn host_users_reach_no_setuid_binary_device_node_or_image_in_vsctl_trees() {
    let fs = LoopFs::new(Fs::Xfs { prjquota: false });
    let world = World::new();
    let state = fs.mnt.join("state");
    let state_arg = state.display().to_string();
    let run_dir = world.root().join("run/vsctl");
    let vsctl = |args: &[&str]| {
        let mut all = vec!["--state-dir", state_arg.as_str()];
        all.extend_from_slice(args);
        world.vsctl(&all)
    };
    let secret = "HOSTDISK-SECRET";
    let disk = HostDisk::new(secret);
    let (major, minor) = disk.rdev();
    // A template as an import could make it: a setuid-root binary (the
    // host's `id`, so running it shows the euid) and a world-readable block
    // device node for a host disk.
    let templates = world.root().join("etc/vsctl/templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("evil.toml"),
        format!(
            "base = \"busybox\"\n\
             run = [\"mknod /etc/hostdisk b {major} {minor} && chmod 666 /etc/hostdisk\"]\n\
             [[files]]\npath = \"/usr/bin/suid-id\"\nsource = \"/usr/bin/id\"\nmode = 0o4755\n"
        ),
    )
    .unwrap();
    for (name, strategy, privileged) in names() {
        world.write_guest(&name, &guest_file(strategy, privileged));
    }
    let out = vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Every guest boots, and its root makes a setuid copy of `id` in its
    // own tree (what a hostile guest root can always do).
    for (name, _, _) in names() {
        let out = vsctl(&[
            "exec",
            &name,
            "-T",
            "--",
            "/bin/sh",
            "-c",
            "cat /proc/1/comm && cp /usr/bin/suid-id /suid-copy && chmod 4755 /suid-copy",
        ]);
        assert_eq!(stdout(&out), "init\n", "{name}: {}", stderr(&out));
    }

    // The targets, checked to be what they claim as root first.
    let tree = state.join("templates/evil/rootfs");
    let object = walkdir::WalkDir::new(state.join("store/objects"))
        .into_iter()
        .flatten()
        .find(|e| {
            e.file_type().is_file()
                && e.metadata().unwrap().mode() & 0o4000 != 0
                && e.metadata().unwrap().len() == std::fs::metadata("/usr/bin/id").unwrap().len()
        })
        .expect("the setuid binary's store object")
        .into_path();
    let template_image = std::fs::read_dir(state.join("guests/.images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".ext4"))
        .expect("the template image");
    // (target, attack, what it yields, whether an older vsctl's layout
    // exposed it: overlay/ was 0700 and guest images 0600 already)
    let mut targets: Vec<(PathBuf, Attack, &str, bool)> = vec![
        (
            tree.join("usr/bin/suid-id"),
            Attack::Execute,
            "euid=0",
            true,
        ),
        (object, Attack::Execute, "euid=0", true),
        (tree.join("etc/hostdisk"), Attack::Read, secret, true),
        (template_image, Attack::Read, "", true),
    ];
    for (name, strategy, privileged) in names() {
        let dir = state.join("guests").join(&name);
        let euid = if privileged { "euid=0" } else { "euid=" };
        match strategy {
            "copy" | "reflink" => {
                let rootfs = dir.join("rootfs");
                targets.push((rootfs.join("usr/bin/suid-id"), Attack::Execute, euid, true));
                targets.push((rootfs.join("suid-copy"), Attack::Execute, euid, true));
                targets.push((rootfs.join("etc/hostdisk"), Attack::Read, secret, true));
            }
            "overlay" => targets.push((
                dir.join("overlay/upper/suid-copy"),
                Attack::Execute,
                euid,
                false,
            )),
            _ => targets.push((dir.join("rootfs.img"), Attack::Read, "", false)),
        }
    }
    for (path, how, _, _) in &targets {
        let md =
            std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match how {
            Attack::Execute => assert_ne!(md.mode() & 0o4000, 0, "{}", path.display()),
            Attack::Read if path.ends_with("etc/hostdisk") => {
                assert!(md.file_type().is_block_device() && md.mode() & 0o006 == 0o006)
            }
            Attack::Read => assert!(md.is_file()),
        }
    }

    // Nobody gets anywhere.
    for (path, how, _, _) in &targets {
        assert_refused(path, *how, secret);
    }
    assert_eq!(mode(&state), 0o711);
    assert_eq!(mode(&state.join("guests")), 0o711);
    for private in ["store", "templates", "guests/.images"] {
        assert_eq!(mode(&state.join(private)), 0o700, "{private}");
    }
    for (name, strategy, privileged) in names() {
        let dir = state.join("guests").join(&name);
        let md = std::fs::metadata(&dir).unwrap();
        if !privileged && matches!(strategy, "copy" | "reflink") {
            // Its init binds the tree from inside its user namespace: only
            // the guest root's group may pass.
            assert_eq!(md.mode() & 0o7777, 0o710, "{name}");
            assert_eq!(md.uid(), 0, "{name}");
            assert_ne!(md.gid(), 0, "{name}");
        } else {
            assert_eq!(md.mode() & 0o7777, 0o700, "{name}");
        }
    }

    // An install an older vsctl made: the same attacks get through ...
    loosen_like_an_old_install(&state, &run_dir);
    for (path, how, gain, _) in targets.iter().filter(|t| t.3) {
        assert_reached(path, *how, gain);
    }
    // ... until the next apply, which changes nothing else.
    let out = vsctl(&["apply", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (path, how, _, _) in &targets {
        assert_refused(path, *how, secret);
    }
    // And the next start: a stopped unprivileged tree guest (whose init
    // must still pass through its directory) boots again.
    for name in ["copy-u", "reflink-p"] {
        let out = vsctl(&["stop", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    loosen_like_an_old_install(&state, &run_dir);
    for name in ["copy-u", "reflink-p"] {
        let out = vsctl(&["start", name]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let out = vsctl(&["exec", name, "-T", "--", "/bin/cat", "/proc/1/comm"]);
        assert_eq!(stdout(&out), "init\n", "{name}: {}", stderr(&out));
    }
    for (path, how, _, _) in targets.iter().filter(|(p, _, _, _)| {
        p.starts_with(state.join("guests/copy-u")) || p.starts_with(state.join("guests/reflink-p"))
    }) {
        assert_refused(path, *how, secret);
    }
    assert_eq!(mode(&state), 0o711);
    for (name, _, _) in names() {
        let out = vsctl(&["stop", &name]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
}

#[test]
fn a_guests_environment_is_readable_by_root_only() {
    let world = World::new();
    let secret = format!("pw-{}", std::process::id());
    world.write_guest(
        "db",
        &format!(
            "template = \"busybox\"\n[network]\nmode = \"none\"\n[init]\nstop_timeout = \"5s\"\n\
             [env]\nDB_PASSWORD = \"{secret}\"\n"
        ),
    );
    std::fs::set_permissions(
        world.guests_dir().join("db.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out = world.vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let spec = world.root().join("run/vsctl/db/spec.json");
    let record = world.state_dir().join("guests/db/record.json");
    let state = world.root().join("run/vsctl/db/state.json");
    let log = world.root().join("var/log/vsctl/db.log");
    // Where the environment is kept (docs/runtime.md, vsctl.toml(5)).
    for file in [&spec, &record] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains(&secret), "{}: {text}", file.display());
    }
    let check = |when: &str| {
        for file in [&spec, &record, &state, &log] {
            assert_eq!(mode(file), 0o600, "{when}: {}", file.display());
            assert_refused(file, Attack::Read, &secret);
        }
    };
    check("after the first apply");

    // An older vsctl's files: tightened by the next apply ...
    loosen_like_an_old_install(&world.state_dir(), &world.root().join("run/vsctl"));
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_reached(&spec, Attack::Read, &secret);
    assert_reached(&record, Attack::Read, &secret);
    let out = world.vsctl(&["apply", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check("after an apply with nothing to do");

    // ... and by the next start.
    let out = world.vsctl(&["stop", "db"]);
    assert!(out.status.success(), "{}", stderr(&out));
    loosen_like_an_old_install(&world.state_dir(), &world.root().join("run/vsctl"));
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = world.vsctl(&["start", "db"]);
    assert!(out.status.success(), "{}", stderr(&out));
    check("after a start");
    let out = world.vsctl(&["stop", "db"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
