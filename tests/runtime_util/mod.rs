//! Shared fixtures for the runtime integration tests: a busybox rootfs built
//! from the host's static busybox, a unique cgroup base per test, and a
//! guard that stops the guest and removes its cgroups even when a test fails.
//! Guests are driven through the real binary's `vsctl runtime SPEC ...`
//! plumbing, each call a separate process (namespaces are never created
//! inside the test harness).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use vsctl::runtime::{IdRange, RootfsMount, RuntimeSpec};

pub const BUSYBOX: &str = "/bin/busybox";

pub fn vsctl() -> &'static str {
    env!("CARGO_BIN_EXE_vsctl")
}

/// `vsctl runtime SPEC` (then the operation and its arguments).
pub fn rt(spec: &Path) -> Command {
    let mut command = Command::new(vsctl());
    command.arg("runtime").arg(spec);
    command
}

/// Default inittab: rcS, one respawned service, a shutdown action.
pub const INITTAB: &str = "::sysinit:/etc/init.d/rcS\n\
::respawn:/bin/sh -c 'echo svc-start >> /tmp/svc.log; exec sleep 100000'\n\
::shutdown:/bin/echo guest-shutting-down\n";

const APPLETS: &[&str] = &[
    "sh", "ls", "ps", "cat", "echo", "sleep", "mount", "umount", "insmod", "mknod", "date",
    "chattr", "lsattr", "hostname", "id", "sysctl", "mkdir", "rm", "dd", "true", "false", "touch",
    "grep", "seq", "timeout", "reboot", "poweroff", "head", "wc", "kill", "pkill", "nc", "ip",
    "readlink",
];

/// Build a minimal busybox system under `root`. `busybox` is hardlinked
/// from `shared` when given (many guests), copied otherwise.
pub fn busybox_rootfs(root: &Path, inittab: &str, shared: Option<&Path>) {
    for d in [
        "bin",
        "sbin",
        "etc/init.d",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "mnt",
        "run",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    match shared {
        Some(s) => fs::hard_link(s, root.join("bin/busybox")).unwrap(),
        None => {
            fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        }
    }
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    symlink("../bin/busybox", root.join("sbin/init")).unwrap();
    fs::write(root.join("etc/inittab"), inittab).unwrap();
    fs::write(
        root.join("etc/init.d/rcS"),
        "#!/bin/sh\necho rcS-ran > /tmp/rcs.log\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        root.join("etc/init.d/rcS"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
}

/// lchown every entry under `root` to uid/gid `id` (what the rootfs helper's
/// shifted clone does for unprivileged guests).
pub fn shift_ownership(root: &Path, id: u32) {
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        std::os::unix::fs::lchown(e.path(), Some(id), Some(id)).unwrap();
    }
}

pub fn unique(prefix: &str) -> String {
    let n: u64 = fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap()[..8]
        .chars()
        .fold(0, |a, c| a * 16 + c.to_digit(16).unwrap_or(0) as u64);
    format!("{prefix}-{}-{n:x}", std::process::id())
}

/// One test guest with its own temp dir and cgroup base.
pub struct Guest {
    pub dir: tempfile::TempDir,
    pub spec: RuntimeSpec,
    pub spec_path: PathBuf,
}

impl Guest {
    /// A busybox guest; `userns` = Some(base) for an unprivileged guest.
    pub fn busybox(name: &str, userns: Option<u32>) -> Guest {
        Self::with_inittab(name, userns, INITTAB)
    }

    pub fn with_inittab(name: &str, userns: Option<u32>, inittab: &str) -> Guest {
        let dir = scratch_dir();
        let root = dir.path().join("rootfs");
        busybox_rootfs(&root, inittab, None);
        if let Some(base) = userns {
            shift_ownership(&root, base);
        }
        Self::from_rootfs(dir, name, RootfsMount::Tree { path: root }, userns)
    }

    pub fn from_rootfs(
        dir: tempfile::TempDir,
        name: &str,
        rootfs: RootfsMount,
        userns: Option<u32>,
    ) -> Guest {
        let mut spec = RuntimeSpec::new(
            name,
            rootfs,
            dir.path().join("run"),
            dir.path().join("log").join(format!("{name}.log")),
        );
        spec.cgroup_base = unique("vsctl-test");
        spec.stop_timeout = Duration::from_secs(10);
        spec.userns = userns.map(|b| IdRange {
            host_base: b,
            count: 65536,
        });
        let spec_path = dir.path().join("spec.json");
        let g = Guest {
            dir,
            spec,
            spec_path,
        };
        g.save();
        g
    }

    pub fn save(&self) {
        fs::write(
            &self.spec_path,
            serde_json::to_vec_pretty(&self.spec).unwrap(),
        )
        .unwrap();
    }

    pub fn rootfs(&self) -> PathBuf {
        match &self.spec.rootfs {
            RootfsMount::Tree { path } => path.clone(),
            RootfsMount::Overlay { upper, .. } => upper.clone(),
            RootfsMount::Image { .. } => panic!("image guests have no host tree"),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        rt(&self.spec_path).args(args).output().unwrap()
    }

    pub fn start(&self) -> serde_json::Value {
        let o = self.cmd(&["start"]);
        assert!(
            o.status.success(),
            "start failed: {}\nlog: {}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        let o = self.cmd(&["status"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn stop(&self) -> serde_json::Value {
        let o = self.cmd(&["stop"]);
        assert!(
            o.status.success(),
            "stop failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Run a shell snippet in the guest; (exit code, stdout, stderr).
    pub fn sh(&self, script: &str) -> (i32, String, String) {
        let o = self.cmd(&["exec", "--", "/bin/sh", "-c", script]);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.spec.log_file).unwrap_or_default()
    }

    /// Wait until a file in the guest's root exists and contains `needle`.
    pub fn wait_file(&self, rel: &str, needle: &str, timeout: Duration) -> bool {
        let p = self.rootfs().join(rel);
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if fs::read_to_string(&p).is_ok_and(|s| s.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.spec.cgroup_base, &self.spec.name)
    }
}

/// Every directory of `base/name` in any mounted hierarchy.
pub fn cgroup_dirs(base: &str, name: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = e.path().join(base).join(name);
        if d.is_dir() {
            v.push(d);
        }
    }
    v
}

/// Remove a test cgroup base everywhere (after killing what is inside).
pub fn remove_cgroup_base(base: &str) {
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let b = e.path().join(base);
        if !b.is_dir() {
            continue;
        }
        if let Ok(children) = fs::read_dir(&b) {
            for c in children.flatten() {
                if c.path().is_dir() {
                    for _ in 0..200 {
                        if let Ok(p) = fs::read_to_string(c.path().join("cgroup.procs")) {
                            for pid in p.lines().filter_map(|l| l.parse::<i32>().ok()) {
                                unsafe_free_kill(pid);
                            }
                        }
                        if fs::remove_dir(c.path()).is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        let _ = fs::remove_dir(&b);
    }
}

fn unsafe_free_kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

impl Drop for Guest {
    fn drop(&mut self) {
        // Stop quickly if still running, then make sure no cgroup remains.
        let _ = rt(&self.spec_path)
            .args(["stop", "--timeout", "1"])
            .output();
        remove_cgroup_base(&self.spec.cgroup_base);
    }
}

/// Namespace inode of a process, e.g. ns_of(pid, "mnt").
pub fn ns_of(pid: i32, ns: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Pids of every live (non-zombie) process in a given namespace.
/// Now, in the clock ticks since boot that /proc/PID/stat start times use.
pub fn boot_ticks() -> u64 {
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap_or(100) as f64;
    (uptime * hz) as u64
}

/// [`pids_in_ns`] limited to processes started before `ticks`: the kernel
/// reuses a freed namespace id, possibly for a namespace another test running
/// beside this one makes after the guest stopped; a process the guest leaked
/// started before its stop.
pub fn pids_in_ns_started_before(ns: &str, id: &str, ticks: u64) -> Vec<i32> {
    pids_in_ns(ns, id)
        .into_iter()
        .filter(|pid| vsctl::runtime::proc_start_time(*pid).is_some_and(|start| start < ticks))
        .collect()
}

pub fn pids_in_ns(ns: &str, id: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if ns_of(pid, ns).as_deref() == Some(id) {
            let zombie = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            });
            if !zombie {
                v.push(pid);
            }
        }
    }
    v
}

pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// A temporary directory under /tmp (a real disk filesystem, which guests'
/// run directories and rootfs need), removed on drop.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vsctl-rt-")
        .tempdir_in("/tmp")
        .unwrap()
}

/// A test helper from `tests/helpers/NAME.c`, built statically (guests have
/// no C library of the host's) into the target's scratch directory once per
/// test process, and its path.
pub fn static_helper(name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers")
        .join(format!("{name}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    if out.is_file() {
        return out;
    }
    let building = out.with_extension("building");
    let built = Command::new("cc")
        .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&building)
        .arg(&source)
        .output()
        .expect("run cc (the tests need a C compiler and the static C library)");
    assert!(
        built.status.success(),
        "cc {}: {}",
        source.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    fs::rename(&building, &out).unwrap();
    out
}

/// Put the attack probe (tests/helpers/attack.c) into a guest's tree as
/// /bin/attack.
pub fn install_attack_probe(rootfs: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dst = rootfs.join("bin/attack");
    fs::copy(static_helper("attack"), &dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
}
