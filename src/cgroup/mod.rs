//! Control groups: one guest, one cgroup, limits written straight into cgroupfs.
//!
//! Every guest gets its own cgroup below a configurable base (`vsctl` on a
//! real host, `vsctl-test-<random>` in tests), created before the guest's init
//! exists so that limits bite from its first instruction. The module hides
//! the two kernel interfaces behind one trait, [`CgroupManager`]:
//!
//! * [`V2`]: the unified hierarchy (`memory.max`, `cpu.max`, `io.max`, ...),
//! * [`V1`]: one hierarchy per controller (`memory.limit_in_bytes`,
//!   `cpu.cfs_quota_us`, `blkio.throttle.*`, `devices.deny`, ...).
//!
//! [`detect`] picks the backend from what is mounted at `/sys/fs/cgroup`.
//! Both write cgroupfs files directly (no systemd, no D-Bus); on a host whose
//! PID 1 is systemd the base must be a delegated subtree (see docs/runtime.md).
//!
//! What this module must never do: touch a cgroup outside its own base (every
//! path is `root/base/name`, names are validated to be a single component),
//! or leave a guest cgroup behind after [`CgroupManager::destroy`] returned Ok.

#![deny(unsafe_code)]

pub mod devices;

use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// CFS period used for CPU quotas, in microseconds (the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Resource limits of one guest. `None` means "no limit" (the kernel default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Memory + swap limit in bytes (v1 `memsw`); on v2 the swap part
    /// (`memory_swap - memory`) goes to `memory.swap.max`.
    pub memory_swap: Option<u64>,
    /// CPU quota in cores (0.5 = half a core), as a CFS quota per 100 ms period.
    pub cpus: Option<f64>,
    /// Relative CPU weight on the cgroup v2 scale (1..=10000, default 100);
    /// v1 `cpu.shares` gets `weight * 1024 / 100`.
    pub cpu_weight: Option<u64>,
    /// Maximum number of tasks (processes + threads).
    pub pids: Option<u64>,
    /// Block I/O throttling on the device backing the guest's root.
    pub io: IoLimits,
}

/// Block I/O throttles, per second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoLimits {
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

impl IoLimits {
    fn is_empty(&self) -> bool {
        self.read_bps.is_none()
            && self.write_bps.is_none()
            && self.read_iops.is_none()
            && self.write_iops.is_none()
    }
}

/// A block device number, as cgroupfs wants it (`MAJ:MIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevNum {
    pub major: u64,
    pub minor: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid cgroup name {0:?}: must be one non-empty path component")]
    BadName(String),
    #[error("invalid limit for guest cgroup {name}: {why}")]
    BadLimit { name: String, why: String },
    #[error("cgroup {path} still has processes after {waited:?}")]
    Busy { path: PathBuf, waited: Duration },
    #[error("no usable cgroup hierarchy found under {0}")]
    NoHierarchy(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which kernel interface a manager drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// One guest's cgroup(s). All methods take the guest name; the manager knows
/// its hierarchy root(s) and base.
pub trait CgroupManager: Send + Sync {
    fn version(&self) -> Version;
    /// The base below the hierarchy root(s), e.g. `vsctl`.
    fn base(&self) -> &str;
    /// Create the guest's cgroup (idempotent) and apply the device policy.
    fn create(&self, name: &str) -> Result<(), CgroupError>;
    /// Write limits; called before init runs and again live. Fields that are
    /// `None` are reset to "unlimited", so the cgroup always matches `limits`.
    /// `root_dev` is the block device under the guest's root, for I/O limits.
    fn apply(
        &self,
        name: &str,
        limits: &Limits,
        root_dev: Option<DevNum>,
    ) -> Result<(), CgroupError>;
    /// Move a process (and, on v1, its whole thread group) into the guest's cgroup.
    fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError>;
    /// The guest's cgroup directory when a process can be cloned straight
    /// into it (CLONE_INTO_CGROUP) instead of being added afterwards: the
    /// v2 backend. v1 has one directory per hierarchy and no such clone.
    fn clone_into_dir(&self, _name: &str) -> Option<PathBuf> {
        None
    }
    /// Process ids currently in the guest's cgroup.
    fn pids(&self, name: &str) -> Result<Vec<i32>, CgroupError>;
    /// SIGKILL everything in the cgroup and wait until it is empty.
    fn kill_all(&self, name: &str, timeout: Duration) -> Result<(), CgroupError>;
    /// Kill what is left and remove the cgroup directories. Ok if absent.
    fn destroy(&self, name: &str, timeout: Duration) -> Result<(), CgroupError>;
    /// Whether the guest's cgroup exists.
    fn exists(&self, name: &str) -> bool;
    /// Total CPU time used by the guest, for tests and `status`.
    fn cpu_usage(&self, name: &str) -> Result<Duration, CgroupError>;
    /// Directories making up the guest's cgroup (one per v1 hierarchy).
    fn dirs(&self, name: &str) -> Vec<PathBuf>;
    /// Delegate the guest's cgroup to uid/gid (its root in a user
    /// namespace): the directory and the membership files become theirs, so
    /// the guest can create sub-cgroups and move its processes (systemd
    /// needs this), while its own limit files stay root-owned. Everything
    /// below is bounded by the guest's limits (hierarchical accounting).
    fn delegate(&self, name: &str, uid: u32, gid: u32) -> Result<(), CgroupError> {
        check_name(name)?;
        for d in self.dirs(name) {
            for f in [
                None,
                Some("cgroup.procs"),
                Some("tasks"),
                Some("cgroup.threads"),
                Some("cgroup.subtree_control"),
            ] {
                let p = match f {
                    Some(f) => d.join(f),
                    None => d.clone(),
                };
                match std::os::unix::fs::lchown(&p, Some(uid), Some(gid)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&p)(e)),
                }
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.contains('\n')
    {
        return Err(CgroupError::BadName(name.to_string()));
    }
    Ok(())
}

fn check_base(base: &str) -> Result<(), CgroupError> {
    // The base may have several components (`vsctl/guests`), none of them `..`.
    if base.is_empty() || base.starts_with('/') {
        return Err(CgroupError::BadName(base.to_string()));
    }
    for c in base.split('/') {
        check_name(c)?;
    }
    Ok(())
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    // cgroupfs files exist already; `write` on a plain directory (unit tests)
    // creates them, which is what the v2 tests read back.
    fs::write(path, value).map_err(io_err(path))
}

fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Processes in a cgroup and all cgroups below it (a guest may have made
/// sub-cgroups; v1 and v2 list only direct members in cgroup.procs).
fn read_pids_tree(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut all = read_pids(&dir.join("cgroup.procs"))?;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                all.extend(read_pids_tree(&e.path())?);
            }
        }
    }
    Ok(all)
}

/// Remove a cgroup and every cgroup below it, deepest first.
fn rmdir_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            // file_type() does not follow symlinks: never leaves the tree.
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path(), deadline)?;
            }
        }
    }
    rmdir_retry(dir, deadline)
}

fn kill_pids(pids: &[i32]) {
    for &pid in pids {
        // ESRCH (already gone) is the expected race here.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Remove a cgroup directory, retrying while the kernel still tears down the
/// last exiting tasks (rmdir returns EBUSY until they are fully gone).
fn rmdir_retry(path: &Path, deadline: Instant) -> Result<(), CgroupError> {
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io_err(path)(e)),
        }
    }
}

/// The block device to throttle for a path: the whole disk behind the
/// filesystem holding it (throttling applies to disks, not partitions).
/// Returns None for filesystems without a block device (tmpfs, overlay with
/// anonymous dev numbers): nothing to throttle there.
pub fn backing_device(path: &Path) -> Option<DevNum> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    if major == 0 {
        return None;
    }
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return None;
    }
    if sys.join("partition").exists() {
        // ../<disk>/<part>: the disk's dev file holds MAJ:MIN.
        let parent = fs::canonicalize(&sys).ok()?.parent()?.join("dev");
        let s = fs::read_to_string(parent).ok()?;
        let (a, b) = s.trim().split_once(':')?;
        return Some(DevNum {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        });
    }
    Some(DevNum { major, minor })
}

fn validate(name: &str, l: &Limits) -> Result<(), CgroupError> {
    let bad = |why: &str| CgroupError::BadLimit {
        name: name.to_string(),
        why: why.to_string(),
    };
    if let Some(c) = l.cpus
        && !(c.is_finite() && c > 0.0 && c <= 1024.0)
    {
        return Err(bad("cpus must be a positive number of cores"));
    }
    if let Some(w) = l.cpu_weight
        && !(1..=10_000).contains(&w)
    {
        return Err(bad("cpu_weight must be within 1..=10000"));
    }
    if let (Some(m), Some(s)) = (l.memory, l.memory_swap)
        && s < m
    {
        return Err(bad("memory_swap must be >= memory"));
    }
    if l.pids == Some(0) {
        return Err(bad("pids must be at least 1"));
    }
    Ok(())
}

/// Pick the backend for this host: v2 when `/sys/fs/cgroup` is a cgroup2
/// mount, v1 otherwise. `base` is the subtree guests live under.
pub fn detect(base: &str) -> Result<Box<dyn CgroupManager>, CgroupError> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return Ok(Box::new(V2::new(root, base)?));
    }
    if root.join("memory").is_dir() || root.join("pids").is_dir() {
        return Ok(Box::new(V1::new(root, base)?));
    }
    Err(CgroupError::NoHierarchy(root.to_path_buf()))
}

/// Where a process joining a running guest (`vsctl exec`) must go, when that
/// is not the guest's own cgroup: on v2, a guest running systemd enables
/// controllers in its cgroup's `cgroup.subtree_control`, and from then on the
/// kernel refuses new members there (no internal processes: EBUSY). The
/// cgroup the guest's init lives in is a leaf by construction (init is in
/// it), so the process joins that one, like LXC's attach. Returns None on v1,
/// when init sits in the guest's cgroup itself, or when init's cgroup is not
/// inside the guest's tree (never follow a path out of it).
pub fn exec_leaf(mgr: &dyn CgroupManager, name: &str, init_pid: i32) -> Option<PathBuf> {
    if mgr.version() != Version::V2 || check_name(name).is_err() {
        return None;
    }
    let guest = mgr.dirs(name).into_iter().next()?;
    let text = fs::read_to_string(format!("/proc/{init_pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rel = Path::new(rel.trim()).strip_prefix("/").ok()?;
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    // The mount root is the guest dir minus base and name.
    let root = guest
        .ancestors()
        .nth(1 + Path::new(mgr.base()).components().count())?;
    let leaf = root.join(rel);
    (leaf != guest && leaf.starts_with(&guest)).then_some(leaf)
}

/// Make an emptied guest cgroup take a new init again (reboot). On v2 the
/// guest's previous init (systemd) left sub-cgroups and controllers enabled
/// in the guest cgroup's `cgroup.subtree_control`; while those are set the
/// kernel refuses the new init as a member (EBUSY), so the reboot would fail.
/// Removes the (empty) sub-cgroups, deepest first, then disables what the
/// guest enabled; the new init enables them again itself. v1: nothing to do.
/// Call only after [`CgroupManager::kill_all`] emptied the tree.
pub fn reset_for_reboot(mgr: &dyn CgroupManager, name: &str) -> Result<(), CgroupError> {
    check_name(name)?;
    if mgr.version() != Version::V2 {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for dir in mgr.dirs(name) {
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                // file_type() does not follow symlinks: never leaves the tree.
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path(), deadline)?;
                }
            }
        }
        let sc = dir.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&sc).unwrap_or_default();
        let off: Vec<String> = enabled
            .split_whitespace()
            .map(|c| format!("-{c}"))
            .collect();
        if !off.is_empty() {
            write_file(&sc, &off.join(" "))?;
        }
    }
    Ok(())
}

/// The manager the runtime records in a guest's run dir, to find the same
/// cgroup again from `stop`, `exec` and `update_limits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerRef {
    pub version: Version,
    pub root: PathBuf,
    pub base: String,
}

impl ManagerRef {
    pub fn open(&self) -> Result<Box<dyn CgroupManager>, CgroupError> {
        Ok(match self.version {
            Version::V1 => Box::new(V1::new(&self.root, &self.base)?),
            Version::V2 => Box::new(V2::new(&self.root, &self.base)?),
        })
    }
}

// ---------------------------------------------------------------- v2 ----

/// The unified hierarchy. `root` is the cgroup2 mount (or, in unit tests, a
/// temporary directory laid out like one).
#[derive(Debug, Clone)]
pub struct V2 {
    root: PathBuf,
    base: String,
    /// Whether `root` is a real cgroup2 mount (device programs need one).
    attach_devices: bool,
}

impl V2 {
    pub fn new(root: &Path, base: &str) -> Result<V2, CgroupError> {
        check_base(base)?;
        let attach_devices = nix::sys::statfs::statfs(root)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        Ok(V2 {
            root: root.to_path_buf(),
            base: base.to_string(),
            attach_devices,
        })
    }

    pub fn manager_ref(&self) -> ManagerRef {
        ManagerRef {
            version: Version::V2,
            root: self.root.clone(),
            base: self.base.clone(),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(&self.base).join(name)
    }

    /// Enable the controllers we use in every ancestor's subtree_control, so
    /// the guest cgroup gets memory.max, cpu.max, io.max and pids.max.
    fn enable_controllers(&self) -> Result<(), CgroupError> {
        let wanted = ["cpu", "memory", "io", "pids"];
        let available =
            fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        let enable: Vec<String> = wanted
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        let mut dir = self.root.clone();
        for comp in self.base.split('/') {
            if !enable.is_empty() {
                write_file(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
            }
            dir.push(comp);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        if !enable.is_empty() {
            write_file(&dir.join("cgroup.subtree_control"), &enable.join(" "))?;
        }
        Ok(())
    }
}

impl CgroupManager for V2 {
    fn version(&self) -> Version {
        Version::V2
    }
    fn base(&self) -> &str {
        &self.base
    }

    fn create(&self, name: &str) -> Result<(), CgroupError> {
        check_name(name)?;
        self.enable_controllers()?;
        let dir = self.dir(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&dir)(e)),
        }
        // Device access on v2 is an eBPF program, not a file. Skipped only on
        // a fake hierarchy (unit tests: a plain directory).
        if self.attach_devices {
            devices::attach(&dir, &devices::default_rules()).map_err(io_err(&dir))?;
        }
        Ok(())
    }

    fn apply(&self, name: &str, l: &Limits, root_dev: Option<DevNum>) -> Result<(), CgroupError> {
        check_name(name)?;
        validate(name, l)?;
        let d = self.dir(name);
        let opt = |v: Option<u64>| v.map_or("max".to_string(), |v| v.to_string());
        write_file(&d.join("memory.max"), &opt(l.memory))?;
        if l.memory_swap.is_some() || d.join("memory.swap.max").exists() {
            let swap = match (l.memory, l.memory_swap) {
                (Some(m), Some(s)) => Some(s - m),
                (None, Some(s)) => Some(s),
                _ => None,
            };
            write_file(&d.join("memory.swap.max"), &opt(swap))?;
        }
        let quota = l.cpus.map_or("max".to_string(), |c| {
            ((c * CPU_PERIOD_US as f64).round() as u64).to_string()
        });
        write_file(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        write_file(
            &d.join("cpu.weight"),
            &l.cpu_weight.unwrap_or(100).to_string(),
        )?;
        write_file(&d.join("pids.max"), &opt(l.pids))?;
        if let Some(dev) = root_dev
            && (!l.io.is_empty() || d.join("io.max").exists())
        {
            let io = &l.io;
            write_file(
                &d.join("io.max"),
                &format!(
                    "{}:{} rbps={} wbps={} riops={} wiops={}",
                    dev.major,
                    dev.minor,
                    opt(io.read_bps),
                    opt(io.write_bps),
                    opt(io.read_iops),
                    opt(io.write_iops)
                ),
            )?;
        }
        Ok(())
    }

    fn clone_into_dir(&self, name: &str) -> Option<PathBuf> {
        check_name(name).ok()?;
        Some(self.dir(name))
    }

    fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        check_name(name)?;
        write_file(&self.dir(name).join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self, name: &str) -> Result<Vec<i32>, CgroupError> {
        check_name(name)?;
        read_pids_tree(&self.dir(name))
    }

    fn kill_all(&self, name: &str, timeout: Duration) -> Result<(), CgroupError> {
        check_name(name)?;
        let dir = self.dir(name);
        let deadline = Instant::now() + timeout;
        let kill = dir.join("cgroup.kill");
        loop {
            let pids = self.pids(name)?;
            if pids.is_empty() {
                return Ok(());
            }
            if kill.exists() {
                // cgroup.kill (5.14+) kills atomically, forks included.
                write_file(&kill, "1")?;
            } else {
                kill_pids(&pids);
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Busy {
                    path: dir,
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn destroy(&self, name: &str, timeout: Duration) -> Result<(), CgroupError> {
        check_name(name)?;
        let dir = self.dir(name);
        if !dir.exists() {
            return Ok(());
        }
        self.kill_all(name, timeout)?;
        rmdir_tree(&dir, Instant::now() + timeout)
    }

    fn exists(&self, name: &str) -> bool {
        check_name(name).is_ok() && self.dir(name).is_dir()
    }

    fn cpu_usage(&self, name: &str) -> Result<Duration, CgroupError> {
        check_name(name)?;
        let p = self.dir(name).join("cpu.stat");
        let s = fs::read_to_string(&p).map_err(io_err(&p))?;
        let usec = s
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Duration::from_micros(usec))
    }

    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        vec![self.dir(name)]
    }
}

// ---------------------------------------------------------------- v1 ----

/// Hierarchies vsctl places guests in on v1: the controllers it limits
/// with, plus `cpuset` (cpus/mems copied from the parent, so the guest's
/// cgroup namespace hides the host's cpuset tree), the named `systemd`
/// hierarchy and the hybrid `unified` cgroup2 mount, for the same reason.
pub const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset", "systemd",
    "unified",
];

/// Character devices a guest may use (devices cgroup allow list): the nodes
/// the runtime puts into /dev plus the pty multiplexer and pty slaves.
pub const DEVICE_ALLOW: &[&str] = &[
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:1 rwm",   // console
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pty slaves (devpts)
];

/// One hierarchy per controller, each mounted at `root/<controller>`; the
/// hierarchies present are found at construction. Co-mounted controllers
/// (`cpu,cpuacct`) appear once, under the first name found.
#[derive(Debug, Clone)]
pub struct V1 {
    root: PathBuf,
    base: String,
    /// (controllers, mount dir) for each mounted hierarchy we manage.
    mounts: Vec<(Vec<String>, PathBuf)>,
}

impl V1 {
    pub fn new(root: &Path, base: &str) -> Result<V1, CgroupError> {
        check_base(base)?;
        let mut mounts: Vec<(Vec<String>, PathBuf)> = Vec::new();
        for c in V1_CONTROLLERS {
            let dir = root.join(c);
            if !dir.join("cgroup.procs").exists() {
                continue;
            }
            // `cpu` and `cpuacct` are often one hierarchy behind two symlinks.
            let canon = fs::canonicalize(&dir).unwrap_or(dir.clone());
            match mounts.iter_mut().find(|(_, d)| *d == canon) {
                Some((ctrls, _)) => ctrls.push(c.to_string()),
                None => mounts.push((vec![c.to_string()], canon)),
            }
        }
        if mounts.is_empty() {
            return Err(CgroupError::NoHierarchy(root.to_path_buf()));
        }
        Ok(V1 {
            root: root.to_path_buf(),
            base: base.to_string(),
            mounts,
        })
    }

    pub fn manager_ref(&self) -> ManagerRef {
        ManagerRef {
            version: Version::V1,
            root: self.root.clone(),
            base: self.base.clone(),
        }
    }

    /// The guest's directory in the hierarchy that has controller `ctrl`.
    fn ctrl_dir(&self, name: &str, ctrl: &str) -> Option<PathBuf> {
        self.mounts
            .iter()
            .find(|(c, _)| c.iter().any(|c| c == ctrl))
            .map(|(_, m)| m.join(&self.base).join(name))
    }

    fn write_opt(&self, path: &Path, v: Option<u64>, unlimited: &str) -> Result<(), CgroupError> {
        write_file(path, &v.map_or(unlimited.to_string(), |v| v.to_string()))
    }
}

impl CgroupManager for V1 {
    fn version(&self) -> Version {
        Version::V1
    }
    fn base(&self) -> &str {
        &self.base
    }

    fn create(&self, name: &str) -> Result<(), CgroupError> {
        check_name(name)?;
        for (ctrls, m) in &self.mounts {
            let dir = m.join(&self.base).join(name);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            if ctrls.iter().any(|c| c == "cpuset") {
                // A new cpuset cgroup has no cpus/mems and refuses tasks
                // until they are set: inherit them level by level.
                let mut d = m.clone();
                for comp in self.base.split('/').chain(std::iter::once(name)) {
                    let parent = d.clone();
                    d.push(comp);
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let cur = fs::read_to_string(d.join(f)).unwrap_or_default();
                        if cur.trim().is_empty() {
                            let v = fs::read_to_string(parent.join(f))
                                .map_err(io_err(&parent.join(f)))?;
                            write_file(&d.join(f), v.trim())?;
                        }
                    }
                }
            }
        }
        if let Some(d) = self.ctrl_dir(name, "memory") {
            // Hierarchical accounting so the guest's subtree counts as one.
            let _ = fs::write(d.join("memory.use_hierarchy"), "1");
        }
        if let Some(d) = self.ctrl_dir(name, "devices") {
            // Deny everything, then allow the few harmless character devices.
            // Only possible while the cgroup has no children (it is new).
            write_file(&d.join("devices.deny"), "a")?;
            for rule in DEVICE_ALLOW {
                write_file(&d.join("devices.allow"), rule)?;
            }
        }
        Ok(())
    }

    fn apply(&self, name: &str, l: &Limits, root_dev: Option<DevNum>) -> Result<(), CgroupError> {
        check_name(name)?;
        validate(name, l)?;
        if let Some(d) = self.ctrl_dir(name, "memory") {
            let memsw = d.join("memory.memsw.limit_in_bytes");
            let has_memsw = memsw.exists();
            // memsw must stay >= memory: lift memsw first, set memory, then
            // lower memsw to its target.
            if has_memsw {
                write_file(&memsw, "-1")?;
            }
            self.write_opt(&d.join("memory.limit_in_bytes"), l.memory, "-1")?;
            if has_memsw {
                self.write_opt(&memsw, l.memory_swap, "-1")?;
            }
        }
        if let Some(d) = self.ctrl_dir(name, "cpu") {
            write_file(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            let quota = l.cpus.map_or("-1".to_string(), |c| {
                ((c * CPU_PERIOD_US as f64).round() as u64).to_string()
            });
            write_file(&d.join("cpu.cfs_quota_us"), &quota)?;
            let shares = l.cpu_weight.map_or(1024, |w| (w * 1024 / 100).max(2));
            write_file(&d.join("cpu.shares"), &shares.to_string())?;
        }
        if let Some(d) = self.ctrl_dir(name, "pids") {
            self.write_opt(&d.join("pids.max"), l.pids, "max")?;
        }
        if let (Some(d), Some(dev)) = (self.ctrl_dir(name, "blkio"), root_dev) {
            let io = &l.io;
            for (file, v) in [
                ("blkio.throttle.read_bps_device", io.read_bps),
                ("blkio.throttle.write_bps_device", io.write_bps),
                ("blkio.throttle.read_iops_device", io.read_iops),
                ("blkio.throttle.write_iops_device", io.write_iops),
            ] {
                // 0 removes the rule for that device.
                write_file(
                    &d.join(file),
                    &format!("{}:{} {}", dev.major, dev.minor, v.unwrap_or(0)),
                )?;
            }
        }
        Ok(())
    }

    fn add_process(&self, name: &str, pid: i32) -> Result<(), CgroupError> {
        check_name(name)?;
        for (_, m) in &self.mounts {
            write_file(
                &m.join(&self.base).join(name).join("cgroup.procs"),
                &pid.to_string(),
            )?;
        }
        Ok(())
    }

    fn pids(&self, name: &str) -> Result<Vec<i32>, CgroupError> {
        check_name(name)?;
        let mut all = Vec::new();
        for (_, m) in &self.mounts {
            for p in read_pids_tree(&m.join(&self.base).join(name))? {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        Ok(all)
    }

    fn kill_all(&self, name: &str, timeout: Duration) -> Result<(), CgroupError> {
        check_name(name)?;
        let deadline = Instant::now() + timeout;
        let freezer = self.ctrl_dir(name, "freezer").filter(|d| d.exists());
        loop {
            // Freeze first so nothing can fork between listing and killing;
            // SIGKILL is delivered to frozen tasks once thawed.
            if let Some(f) = &freezer {
                let _ = fs::write(f.join("freezer.state"), "FROZEN");
            }
            let pids = self.pids(name)?;
            kill_pids(&pids);
            if let Some(f) = &freezer {
                let _ = fs::write(f.join("freezer.state"), "THAWED");
            }
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Busy {
                    path: self.mounts[0].1.join(&self.base).join(name),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn destroy(&self, name: &str, timeout: Duration) -> Result<(), CgroupError> {
        check_name(name)?;
        if !self.exists(name) {
            return Ok(());
        }
        self.kill_all(name, timeout)?;
        let deadline = Instant::now() + timeout;
        for (_, m) in &self.mounts {
            rmdir_tree(&m.join(&self.base).join(name), deadline)?;
        }
        Ok(())
    }

    fn exists(&self, name: &str) -> bool {
        check_name(name).is_ok()
            && self
                .mounts
                .iter()
                .any(|(_, m)| m.join(&self.base).join(name).is_dir())
    }

    fn cpu_usage(&self, name: &str) -> Result<Duration, CgroupError> {
        check_name(name)?;
        let d = self
            .ctrl_dir(name, "cpuacct")
            .ok_or_else(|| CgroupError::NoHierarchy(self.root.join("cpuacct")))?;
        let p = d.join("cpuacct.usage");
        let s = fs::read_to_string(&p).map_err(io_err(&p))?;
        Ok(Duration::from_nanos(s.trim().parse().unwrap_or(0)))
    }

    fn dirs(&self, name: &str) -> Vec<PathBuf> {
        self.mounts
            .iter()
            .map(|(_, m)| m.join(&self.base).join(name))
            .collect()
    }
}

/// A cgroup hierarchy of the host as the guest should mount it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHierarchy {
    /// Directory name under /sys/fs/cgroup ("" for a cgroup2 mount at the top).
    pub dir: String,
    /// "cgroup" or "cgroup2".
    pub fstype: String,
    /// Mount data: the controllers / `name=` of a v1 hierarchy, "" for v2.
    pub options: String,
}

/// The cgroup hierarchies mounted under /sys/fs/cgroup, from mountinfo.
pub fn host_hierarchies() -> Vec<HostHierarchy> {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_hierarchies(&mi)
}

fn parse_hierarchies(mountinfo: &str) -> Vec<HostHierarchy> {
    let mut v = Vec::new();
    for l in mountinfo.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let mp = pre.split(' ').nth(4).unwrap_or_default();
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or_default();
        let sopts = post.nth(1).unwrap_or_default();
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(rest) = mp.strip_prefix("/sys/fs/cgroup") else {
            continue;
        };
        let dir = rest.trim_start_matches('/');
        if dir.contains('/') {
            continue;
        }
        let options = if fstype == "cgroup" {
            sopts
                .split(',')
                .filter(|o| {
                    !matches!(*o, "rw" | "ro")
                        && !o.starts_with("release_agent")
                        && *o != "clone_children"
                })
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        };
        v.push(HostHierarchy {
            dir: dir.to_string(),
            fstype: fstype.to_string(),
            options,
        });
    }
    v
}

/// Remove the (empty) base directories left after the last guest is gone,
/// e.g. a test's `vsctl-test-<random>` subtree. Non-empty bases are kept.
pub fn remove_base(mgr: &dyn CgroupManager) {
    for d in mgr.dirs("x") {
        if let Some(base) = d.parent() {
            let _ = fs::remove_dir(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_tmp() -> (tempfile::TempDir, V2) {
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let m = V2::new(t.path(), "vsctl-test").unwrap();
        (t, m)
    }

    #[test]
    fn v2_reset_for_reboot_removes_subcgroups_and_controllers() {
        let (t, m) = v2_tmp();
        m.create("g").unwrap();
        let g = t.path().join("vsctl-test/g");
        fs::create_dir_all(g.join("system.slice/a.service")).unwrap();
        fs::create_dir_all(g.join("init.scope")).unwrap();
        fs::write(g.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        reset_for_reboot(&m, "g").unwrap();
        assert!(g.is_dir());
        assert!(!g.join("system.slice").exists() && !g.join("init.scope").exists());
        // A plain file records the last write: every enabled one switched off.
        assert_eq!(
            fs::read_to_string(g.join("cgroup.subtree_control")).unwrap(),
            "-cpu -memory -pids"
        );
    }

    #[test]
    fn v2_create_enables_controllers_in_ancestors() {
        let (t, m) = v2_tmp();
        m.create("web1").unwrap();
        assert!(t.path().join("vsctl-test/web1").is_dir());
        let root_ctl = fs::read_to_string(t.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(root_ctl, "+cpu +memory +io +pids");
        let base_ctl =
            fs::read_to_string(t.path().join("vsctl-test/cgroup.subtree_control")).unwrap();
        assert_eq!(base_ctl, "+cpu +memory +io +pids");
    }

    #[test]
    fn v2_apply_writes_every_limit() {
        let (t, m) = v2_tmp();
        m.create("g").unwrap();
        let l = Limits {
            memory: Some(512 << 20),
            memory_swap: Some(768 << 20),
            cpus: Some(1.5),
            cpu_weight: Some(200),
            pids: Some(64),
            io: IoLimits {
                read_bps: Some(50_000_000),
                write_bps: None,
                read_iops: None,
                write_iops: Some(100),
            },
        };
        m.apply(
            "g",
            &l,
            Some(DevNum {
                major: 254,
                minor: 0,
            }),
        )
        .unwrap();
        let r = |f: &str| fs::read_to_string(t.path().join("vsctl-test/g").join(f)).unwrap();
        assert_eq!(r("memory.max"), (512u64 << 20).to_string());
        assert_eq!(r("memory.swap.max"), (256u64 << 20).to_string());
        assert_eq!(r("cpu.max"), "150000 100000");
        assert_eq!(r("cpu.weight"), "200");
        assert_eq!(r("pids.max"), "64");
        assert_eq!(
            r("io.max"),
            "254:0 rbps=50000000 wbps=max riops=max wiops=100"
        );
    }

    #[test]
    fn v2_apply_resets_removed_limits_to_max() {
        let (t, m) = v2_tmp();
        m.create("g").unwrap();
        let mut l = Limits {
            memory: Some(1 << 30),
            pids: Some(10),
            cpus: Some(0.5),
            ..Limits::default()
        };
        m.apply("g", &l, None).unwrap();
        l.memory = None;
        l.pids = None;
        l.cpus = None;
        m.apply("g", &l, None).unwrap();
        let r = |f: &str| fs::read_to_string(t.path().join("vsctl-test/g").join(f)).unwrap();
        assert_eq!(r("memory.max"), "max");
        assert_eq!(r("pids.max"), "max");
        assert_eq!(r("cpu.max"), "max 100000");
        assert!(!t.path().join("vsctl-test/g/io.max").exists());
    }

    #[test]
    fn v2_add_process_and_pids() {
        let (t, m) = v2_tmp();
        m.create("g").unwrap();
        m.add_process("g", 4242).unwrap();
        assert_eq!(
            fs::read_to_string(t.path().join("vsctl-test/g/cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(m.pids("g").unwrap(), vec![4242]);
    }

    #[test]
    fn rejects_bad_names_and_limits() {
        let (_t, m) = v2_tmp();
        for bad in ["", "..", "a/b", "."] {
            assert!(
                matches!(m.create(bad), Err(CgroupError::BadName(_))),
                "{bad:?}"
            );
        }
        assert!(V2::new(Path::new("/x"), "../etc").is_err());
        assert!(V2::new(Path::new("/x"), "/abs").is_err());
        m.create("g").unwrap();
        for l in [
            Limits {
                cpus: Some(0.0),
                ..Default::default()
            },
            Limits {
                cpus: Some(f64::NAN),
                ..Default::default()
            },
            Limits {
                cpu_weight: Some(0),
                ..Default::default()
            },
            Limits {
                memory: Some(100),
                memory_swap: Some(50),
                ..Default::default()
            },
            Limits {
                pids: Some(0),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(m.apply("g", &l, None), Err(CgroupError::BadLimit { .. })),
                "{l:?}"
            );
        }
    }

    #[test]
    fn v2_destroy_removes_empty_cgroup() {
        let (t, m) = v2_tmp();
        m.create("g").unwrap();
        // A plain temp dir cannot rmdir with files in it; emulate cgroupfs
        // (whose files vanish with the directory) by creating none.
        m.destroy("g", Duration::from_millis(100)).unwrap();
        assert!(!t.path().join("vsctl-test/g").exists());
        assert!(!m.exists("g"));
    }

    #[test]
    fn parses_host_hierarchies() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd,release_agent=/x\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                  42 23 0:38 / /other rw - cgroup2 cgroup2 rw\n\
                  31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n";
        let h = parse_hierarchies(mi);
        assert_eq!(h.len(), 3);
        assert_eq!(
            h[0],
            HostHierarchy {
                dir: "cpu".into(),
                fstype: "cgroup".into(),
                options: "cpu".into()
            }
        );
        assert_eq!(h[1].options, "name=systemd");
        assert_eq!(
            h[2],
            HostHierarchy {
                dir: "unified".into(),
                fstype: "cgroup2".into(),
                options: "".into()
            }
        );
    }

    #[test]
    fn limits_serde_round_trip() {
        let l = Limits {
            memory: Some(1),
            cpus: Some(0.5),
            io: IoLimits {
                read_bps: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        let j = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Limits>(&j).unwrap(), l);
        assert_eq!(
            serde_json::from_str::<Limits>("{}").unwrap(),
            Limits::default()
        );
    }
}
