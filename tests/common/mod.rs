//! Shared helpers for tests that drive the real `vsctl` binary in an
//! isolated root (every path under a temporary directory).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// A temporary vsctl world: `root/` is passed as `--root`, guest files live in
/// `root/etc/vsctl/guests.d`, guests' cgroups under a base of their own.
/// Dropping it stops every guest it started and removes its cgroups, mounts
/// and network namespace, even when the test failed.
pub struct World {
    pub dir: tempfile::TempDir,
    pub cgroup_base: String,
    /// Network namespace every vsctl command runs in (entered with nsenter).
    pub netns: Option<String>,
}

fn unique_suffix() -> String {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    format!("{}-{}", std::process::id(), &uuid[..8])
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("vsctl-test-")
            .tempdir()
            .expect("tempdir");
        let cgroup_base = format!("vsctl-test-{}", unique_suffix());
        let world = World {
            dir,
            cgroup_base,
            netns: None,
        };
        world.write_settings("");
        world
    }

    /// A world whose commands (and so guests' host-side network) run in a
    /// network namespace of its own: no link or address touches the host's.
    pub fn in_netns() -> World {
        let mut world = World::new();
        let name = format!("vst-{}", unique_suffix());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(status.success(), "ip netns add {name}");
        world.netns = Some(name);
        let up = world
            .command("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        world
    }

    /// Host settings: a unique cgroup base plus `extra` TOML.
    pub fn write_settings(&self, extra: &str) {
        let dir = self.root().join("etc/vsctl");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("vsctl.toml"),
            format!(
                "{extra}\n[runtime]\ncgroup_base = \"{}\"\n",
                self.cgroup_base
            ),
        )
        .unwrap();
    }

    /// A command run inside the world's network namespace, if it has one.
    /// nsenter switches only the network namespace; `ip netns exec` would also
    /// remount /sys and so hide the host's cgroup hierarchies.
    pub fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn guests_dir(&self) -> PathBuf {
        self.root().join("etc/vsctl/guests.d")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root().join("var/lib/vsctl")
    }

    pub fn write_guest(&self, name: &str, text: &str) {
        std::fs::create_dir_all(self.guests_dir()).unwrap();
        std::fs::write(self.guests_dir().join(format!("{name}.toml")), text).unwrap();
    }

    pub fn remove_guest(&self, name: &str) {
        std::fs::remove_file(self.guests_dir().join(format!("{name}.toml"))).unwrap();
    }

    /// `vsctl --root ROOT ARGS...`
    pub fn vsctl(&self, args: &[&str]) -> Output {
        self.run_vsctl(self.command(env!("CARGO_BIN_EXE_vsctl")), args)
    }

    /// `vsctl --root ROOT ARGS...` in the host's network namespace even for
    /// a world that has its own: for template builds, which download from
    /// the package archive.
    pub fn vsctl_host_network(&self, args: &[&str]) -> Output {
        self.run_vsctl(Command::new(env!("CARGO_BIN_EXE_vsctl")), args)
    }

    /// `vsctl --root ROOT ARGS...` to spawn (stdin, stdout, stderr as the
    /// caller sets them).
    pub fn vsctl_command(&self, args: &[&str]) -> Command {
        let mut command = self.command(env!("CARGO_BIN_EXE_vsctl"));
        self.prepare_vsctl(&mut command, args);
        command
    }

    fn run_vsctl(&self, mut command: Command, args: &[&str]) -> Output {
        self.prepare_vsctl(&mut command, args);
        command.output().expect("run vsctl")
    }

    fn prepare_vsctl(&self, command: &mut Command, args: &[&str]) {
        command
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env("NO_COLOR", "1");
        for var in [
            "VSCTL_ROOT",
            "VSCTL_CONFIG",
            "VSCTL_GUESTS_DIR",
            "VSCTL_STATE_DIR",
            "VSCTL_RUN_DIR",
            "VSCTL_LOG_DIR",
            "VSCTL_TEMPLATES_DIR",
        ] {
            command.env_remove(var);
        }
    }

    pub fn vsctl_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.vsctl(&all);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), value)
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` with its content and mtime: equal snapshots mean
/// nothing was written.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let content = if meta.is_file() {
            std::fs::read(entry.path()).unwrap()
        } else {
            Vec::new()
        };
        out.insert(entry.path().to_path_buf(), (content, meta.modified().ok()));
    }
    out
}

impl Drop for World {
    fn drop(&mut self) {
        // Stop every guest this world started (quickly), then make sure
        // nothing of them is left: cgroups, mounts, the network namespace.
        if let Ok(entries) = std::fs::read_dir(self.root().join("run/vsctl")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let _ = self.vsctl(&["stop", &name, "--timeout", "2"]);
            }
        }
        remove_cgroup_tree(&self.cgroup_base);
        unmount_under(self.root());
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// Kill what is left in every hierarchy's `base` cgroup and remove it,
/// deepest first.
pub fn remove_cgroup_tree(base: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let top = hierarchy.path().join(base);
        if !top.is_dir() {
            continue;
        }
        let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(&top)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            for _ in 0..200 {
                if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Detach every mount at or below `dir`.
pub fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut targets: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|t| Path::new(t).starts_with(dir))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every mountpoint and cgroup directory naming `needle`: what a test must
/// have cleaned up.
pub fn leftovers(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
        found.extend(
            mountinfo
                .lines()
                .filter(|l| l.contains(needle))
                .map(|l| format!("mount: {l}")),
        );
    }
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            if h.path().join(needle).exists() {
                found.push(format!("cgroup: {}", h.path().join(needle).display()));
            }
        }
    }
    found
}
