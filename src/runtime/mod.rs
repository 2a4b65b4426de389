//! Booting a guest: security context, init as PID 1, supervision, exec.
//!
//! This module turns a [`RuntimeSpec`] (built by the caller from a guest file)
//! into a running guest. [`start`] computes everything up front (mount steps,
//! capability set, seccomp program, environment: see `plan`), creates the
//! guest's cgroup with its limits, then forks a small per-guest supervisor
//! that outlives the command. The supervisor holds the console pty, clones
//! the guest's init into new mount, pid, uts, ipc, net, cgroup (and, for
//! unprivileged guests, user) namespaces, writes the uid/gid maps, logs the
//! console to a size-capped file, reaps init, restarts it on reboot and
//! records its exit in the run directory. There is no central daemon.
//!
//! [`stop`] signals init the way that init expects, waits, then kills what is
//! left in the guest's cgroup. [`exec`] joins the namespaces and cgroup of a
//! running guest with the guest's own capabilities and seccomp filter.
//! [`status`] reads the run directory and checks the live process, robust to
//! pid reuse (start times are recorded and compared).
//!
//! What this module must never do: shell out to mount/unshare/nsenter/chroot,
//! leak a host descriptor or environment variable into a guest, follow a
//! guest-planted symlink out of the guest root when mounting (targets are
//! resolved with openat2 RESOLVE_IN_ROOT), or leave a process, mount, cgroup
//! or namespace behind after a guest stopped. It never writes into the guest's
//! root filesystem except to create missing mount points.

#![deny(unsafe_code)]

mod child;
pub mod console;
mod exec;
pub mod notify;
pub mod plan;
mod supervisor;

pub use console::{AttachOptions, Detached, attach};
pub use exec::{EXEC_HELPER_ARG, exec, exec_helper_main, write_files};
pub use supervisor::{SUPERVISOR_ARG, supervisor_main};

use crate::cgroup::{self, CgroupError, Limits, ManagerRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The guest's root filesystem as the runtime mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RootfsMount {
    /// A ready tree (reflink clone, btrfs subvolume...): bind-mounted.
    Tree { path: PathBuf },
    /// Overlay of read-only lower layers (first = top) and the guest's
    /// upper/work directories, mounted inside the guest's mount namespace.
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// An ext4 image file: the supervisor mounts it through a loop device
    /// as a detached mount (idmapped for an unprivileged guest) and hands it
    /// to init, so it is mounted only inside the guest's mount namespace and
    /// goes away with it.
    Image {
        path: PathBuf,
        /// A tree with the same init as the image (its template), to guess
        /// the init's kind without mounting the image.
        #[serde(default)]
        init_guess: Option<PathBuf>,
    },
}

/// A uid/gid range on the host that maps to 0..count inside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    pub host_base: u32,
    pub count: u32,
}

/// A host path made visible inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the guest.
    pub target: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// Attach the source idmapped with the guest's user namespace (needs
    /// `userns` and a filesystem with idmapped mounts); not recursive.
    #[serde(default)]
    pub idmap: bool,
}

fn default_init() -> Vec<String> {
    vec!["/sbin/init".to_string()]
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_cgroup_base() -> String {
    "vsctl".to_string()
}
fn default_log_max() -> u64 {
    1 << 20
}

/// Everything the runtime needs to boot one guest. Self-contained: it is
/// also stored in the run directory so that stop/exec/restart see the spec
/// the guest was started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub name: String,
    pub rootfs: RootfsMount,
    pub hostname: String,
    #[serde(default = "default_init")]
    pub init: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Signal asking init to power off; None = guess from the init binary
    /// (busybox: SIGUSR2, systemd: SIGRTMIN+3, otherwise SIGPWR like LXC).
    #[serde(default)]
    pub stop_signal: Option<i32>,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Duration,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub caps_add: Vec<String>,
    #[serde(default)]
    pub caps_drop: Vec<String>,
    #[serde(default = "default_true")]
    pub seccomp: bool,
    /// None = privileged guest (host user namespace, reduced capabilities).
    #[serde(default)]
    pub userns: Option<IdRange>,
    /// With `userns`: the rootfs is owned by plain host ids (0..count, e.g.
    /// an unshifted reflink clone or shared template layers) and is mounted
    /// through idmapped mounts (open_tree + mount_setattr MOUNT_ATTR_IDMAP),
    /// so it need not be chowned into the guest's range. Tree: the tree is
    /// idmapped. Overlay: every lower layer and the common parent of upper
    /// and work are idmapped, then overlay is mounted from those inside the
    /// guest (overlayfs itself cannot be idmapped). Needs filesystems that
    /// support idmapped mounts (ext4, XFS, btrfs, tmpfs).
    #[serde(default)]
    pub idmap_rootfs: bool,
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    /// `paths.guest_run_dir(name)`.
    pub run_dir: PathBuf,
    /// `paths.log_dir/NAME.log`.
    pub log_file: PathBuf,
    /// Console log size cap in bytes; one rotated `.1` file is kept.
    #[serde(default = "default_log_max")]
    pub log_max_bytes: u64,
    /// cgroup subtree guests live under (`vsctl`; tests use unique names).
    #[serde(default = "default_cgroup_base")]
    pub cgroup_base: String,
    /// Guest networking, configured from the host side (netlink) after init
    /// is cloned into its network namespace and before it is let run, and
    /// torn down when init ends. `None`: loopback only.
    #[serde(default)]
    pub network: Option<GuestNetwork>,
}

/// What [`crate::net`] needs to wire a guest up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNetwork {
    pub spec: crate::config::guest::NetworkSpec,
    pub host: crate::config::host::HostNetwork,
}

impl RuntimeSpec {
    /// Whether the guest shares the host's network namespace (`mode = "host"`).
    pub fn host_network(&self) -> bool {
        self.network
            .as_ref()
            .is_some_and(|n| n.spec.mode == crate::config::guest::NetworkMode::Host)
    }
}

/// Remove the host side of a guest's network (veth host end, routes,
/// filters). Idempotent; errors are reported, not fatal, because the guest
/// is already gone.
pub(crate) fn teardown_network(spec: &RuntimeSpec) -> Result<(), String> {
    match &spec.network {
        Some(net) => {
            crate::net::teardown(&spec.name, &net.spec, &net.host).map_err(|e| e.to_string())
        }
        None => Ok(()),
    }
}

impl RuntimeSpec {
    /// A spec with every optional field at its default.
    pub fn new(
        name: &str,
        rootfs: RootfsMount,
        run_dir: PathBuf,
        log_file: PathBuf,
    ) -> RuntimeSpec {
        RuntimeSpec {
            name: name.to_string(),
            rootfs,
            hostname: name.to_string(),
            init: default_init(),
            env: BTreeMap::new(),
            stop_signal: None,
            stop_timeout: default_stop_timeout(),
            limits: Limits::default(),
            caps_add: Vec::new(),
            caps_drop: Vec::new(),
            seccomp: true,
            userns: None,
            idmap_rootfs: false,
            mounts: Vec::new(),
            run_dir,
            log_file,
            log_max_bytes: default_log_max(),
            cgroup_base: default_cgroup_base(),
            network: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid runtime spec: {0}")]
    Invalid(String),
    #[error("guest {0} is already running")]
    AlreadyRunning(String),
    #[error("guest in {0} is not running")]
    NotRunning(PathBuf),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Caps(#[from] crate::caps::CapsError),
    #[error("guest {name} failed to boot: {msg}")]
    Boot { name: String, msg: String },
    #[error("{0} must be called from a single-threaded process (it forks and joins namespaces)")]
    Threaded(&'static str),
    #[error("console of guest {name}: {msg}")]
    Console { name: String, msg: String },
    #[error("guest {name} did not report ready: {msg}")]
    NotReady { name: String, msg: String },
    #[error(transparent)]
    Access(#[from] crate::host_access::HostAccessError),
}

fn io_ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

/// How init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitInfo {
    Exited(i32),
    Signaled(i32),
}

/// What [`status`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum GuestRuntimeState {
    NotStarted,
    Running {
        init_pid: i32,
        since: u64,
        /// init sent READY=1 on its notify socket (sd_notify) since it started.
        #[serde(default)]
        ready: bool,
        /// The last STATUS= line init sent, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify_status: Option<String>,
    },
    Stopped {
        last_exit: Option<ExitInfo>,
    },
    Crashed {
        last_exit: Option<ExitInfo>,
        reason: String,
    },
}

/// What [`start`] returns once init is exec'd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub init_pid: i32,
    pub supervisor_pid: i32,
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// Init exited on its own after the stop signal.
    Clean { last_exit: Option<ExitInfo> },
    /// The timeout expired; everything in the cgroup was killed.
    Killed,
    /// Nothing was running.
    NotRunning,
}

/// The supervisor's record in `run_dir/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub name: String,
    pub phase: Phase,
    pub supervisor_pid: i32,
    pub supervisor_start: u64,
    pub init_pid: i32,
    /// /proc/PID/stat start time (clock ticks since boot): tells our init
    /// from a later process that got the same pid.
    pub init_start: u64,
    /// Unix time init was started.
    pub since: u64,
    pub restarts: u32,
    pub stop_signal: i32,
    pub cgroup: ManagerRef,
    pub root_dev: Option<cgroup::DevNum>,
    pub last_exit: Option<ExitInfo>,
    pub reason: Option<String>,
    /// init sent READY=1 (sd_notify) since it last started; cleared again
    /// by STOPPING=1 and by a reboot.
    #[serde(default)]
    pub ready: bool,
    /// The last STATUS= line init sent since it last started.
    #[serde(default)]
    pub notify_status: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Running,
    Stopped,
    Crashed,
}

const STATE_FILE: &str = "state.json";
const SPEC_FILE: &str = "spec.json";
const STOP_FILE: &str = "stop-requested";

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Start time of a process (field 22 of /proc/PID/stat), None if gone.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parens: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the (live, non-zombie) process that started at `start`.
pub fn same_process(pid: i32, start: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("Z");
    if state == "Z" || state == "X" {
        return false;
    }
    fields.nth(18).and_then(|v| v.parse().ok()) == Some(start)
}

/// Record the supervisor's state (root's only, as every file of the run
/// directory; see [`crate::host_access`]).
pub(crate) fn write_state(run_dir: &Path, st: &RunState) -> Result<(), RuntimeError> {
    let tmp = run_dir.join(".state.json.tmp");
    let data = serde_json::to_vec_pretty(st).expect("state serializes");
    crate::host_access::write_private(&tmp, &data)?;
    fs::rename(&tmp, run_dir.join(STATE_FILE)).map_err(io_ctx(format!("rename {}", tmp.display())))
}

/// The supervisor's last record, if any.
pub fn read_state(run_dir: &Path) -> Result<Option<RunState>, RuntimeError> {
    let p = run_dir.join(STATE_FILE);
    match fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| RuntimeError::Invalid(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_ctx(format!("read {}", p.display()))(e)),
    }
}

/// The spec a guest was started with.
pub fn read_spec(run_dir: &Path) -> Result<RuntimeSpec, RuntimeError> {
    let p = run_dir.join(SPEC_FILE);
    let b = fs::read(&p).map_err(io_ctx(format!("read {}", p.display())))?;
    serde_json::from_slice(&b).map_err(|e| RuntimeError::Invalid(format!("{}: {e}", p.display())))
}

/// The live state of the guest whose run directory is `run_dir`.
pub fn status(run_dir: &Path) -> Result<GuestRuntimeState, RuntimeError> {
    let Some(st) = read_state(run_dir)? else {
        return Ok(GuestRuntimeState::NotStarted);
    };
    Ok(match st.phase {
        Phase::Running | Phase::Starting => {
            if same_process(st.init_pid, st.init_start)
                // Between init's exit and the supervisor's record (or a reboot).
                || same_process(st.supervisor_pid, st.supervisor_start)
            {
                GuestRuntimeState::Running {
                    init_pid: st.init_pid,
                    since: st.since,
                    ready: st.ready,
                    notify_status: st.notify_status,
                }
            } else {
                GuestRuntimeState::Crashed {
                    last_exit: st.last_exit,
                    reason: "supervisor and init vanished without a record".into(),
                }
            }
        }
        Phase::Stopped => GuestRuntimeState::Stopped {
            last_exit: st.last_exit,
        },
        Phase::Crashed => GuestRuntimeState::Crashed {
            last_exit: st.last_exit,
            reason: st.reason.unwrap_or_default(),
        },
    })
}

/// An unprivileged guest's init mounts its root (and idmapped layers) on
/// mount points under its run directory while already inside its user
/// namespace, where it is an ordinary host user: every directory on the way
/// must be searchable by others. Say so plainly instead of failing later
/// with a bare EACCES from inside the child.
fn reachable_by_guest(run_dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    let absolute =
        fs::canonicalize(run_dir).map_err(io_ctx(format!("resolve {}", run_dir.display())))?;
    for dir in absolute.ancestors() {
        let mode = fs::metadata(dir)
            .map_err(io_ctx(format!("stat {}", dir.display())))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(RuntimeError::Invalid(format!(
                "an unprivileged guest cannot reach its run directory {}: {} has mode {:o}, which others may not search; \
                 make it o+x (e.g. chmod 755) or use a run directory under one that is",
                run_dir.display(),
                dir.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

fn validate(spec: &RuntimeSpec) -> Result<(), RuntimeError> {
    let bad = |m: String| Err(RuntimeError::Invalid(m));
    if spec.name.is_empty() || spec.name.contains('/') || spec.name.starts_with('.') {
        return bad(format!("guest name {:?}", spec.name));
    }
    if spec.init.is_empty() || !spec.init[0].starts_with('/') {
        return bad(format!(
            "init must be an absolute path, got {:?}",
            spec.init
        ));
    }
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        return bad(format!("hostname {:?} must be 1..=64 bytes", spec.hostname));
    }
    if let Some(u) = spec.userns
        && (u.count == 0 || u.host_base == 0 || u.host_base.checked_add(u.count).is_none())
    {
        return bad(format!(
            "uid range {}+{} (must not include host root)",
            u.host_base, u.count
        ));
    }
    if spec.userns.is_none()
        && let Some(m) = spec.mounts.iter().find(|m| m.idmap)
    {
        return bad(format!(
            "bind mount of {} is idmapped, which needs a user namespace (userns)",
            m.source.display()
        ));
    }
    if spec.idmap_rootfs && spec.userns.is_none() {
        return bad("idmap_rootfs needs a user namespace (userns)".into());
    }
    if spec.idmap_rootfs
        && let RootfsMount::Overlay { upper, work, .. } = &spec.rootfs
        && (upper.parent() != work.parent()
            || upper.file_name().is_none()
            || work.file_name().is_none())
    {
        return bad(
            "idmap_rootfs with overlay needs upper and work in one parent directory".into(),
        );
    }
    let check_dir = |p: &Path, what: &str| {
        if p.is_dir() {
            Ok(())
        } else {
            Err(RuntimeError::Invalid(format!(
                "{what} {} is not a directory",
                p.display()
            )))
        }
    };
    match &spec.rootfs {
        RootfsMount::Tree { path } => check_dir(path, "rootfs")?,
        RootfsMount::Overlay { lower, upper, work } => {
            if lower.is_empty() {
                return bad("overlay needs at least one lower layer".into());
            }
            for l in lower {
                check_dir(l, "overlay lower")?;
                if l.to_string_lossy().contains([':', ',']) {
                    return bad(format!(
                        "overlay layer path {} contains ':' or ','",
                        l.display()
                    ));
                }
            }
            check_dir(upper, "overlay upper")?;
            check_dir(work, "overlay work")?;
        }
        RootfsMount::Image { path, .. } => {
            if !path.is_file() {
                return bad(format!("rootfs image {} is not a file", path.display()));
            }
        }
    }
    Ok(())
}

/// The init binary as a host path, to guess its stop signal.
fn init_on_host(spec: &RuntimeSpec) -> Option<PathBuf> {
    let rel = plan::guest_rel(Path::new(&spec.init[0])).ok()?;
    let roots: Vec<PathBuf> = match &spec.rootfs {
        RootfsMount::Tree { path } => vec![path.clone()],
        RootfsMount::Overlay { lower, upper, .. } => std::iter::once(upper.clone())
            .chain(lower.iter().cloned())
            .collect(),
        RootfsMount::Image { init_guess, .. } => init_guess.iter().cloned().collect(),
    };
    roots
        .into_iter()
        .map(|r| r.join(&rel))
        .find(|p| p.symlink_metadata().is_ok())
}

/// Which init a guest boots, guessed from its init binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitKind {
    Busybox,
    Systemd,
    /// sysvinit or anything else.
    Other,
}

/// Guess the guest's init from the name its init path links to (only the
/// link target's *name* is read, never followed on the host).
pub fn init_kind(spec: &RuntimeSpec) -> InitKind {
    let target = init_on_host(spec)
        .and_then(|p| fs::read_link(&p).ok().or(Some(p)))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if target.ends_with("busybox") {
        InitKind::Busybox
    } else if target.contains("systemd") {
        InitKind::Systemd
    } else {
        InitKind::Other
    }
}

/// Whether the guest's init reports readiness on NOTIFY_SOCKET (systemd
/// does; busybox init and sysvinit do not).
pub fn speaks_sd_notify(spec: &RuntimeSpec) -> bool {
    init_kind(spec) == InitKind::Systemd
}

/// The signal that asks this guest's init to power off.
pub fn stop_signal_for(spec: &RuntimeSpec) -> i32 {
    if let Some(s) = spec.stop_signal {
        return s;
    }
    match init_kind(spec) {
        InitKind::Busybox => libc::SIGUSR2, // USR1 halt, USR2 poweroff, TERM reboot
        InitKind::Systemd => libc::SIGRTMIN() + 3, // SIGRTMIN+3 = halt/poweroff
        InitKind::Other => libc::SIGPWR,    // sysvinit (and LXC's default)
    }
}

/// What [`wait_ready`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// init sent READY=1; its last STATUS= line, if any.
    Ready { status: Option<String> },
    /// init does not speak sd_notify: it has been exec'd, nothing more is
    /// known.
    NoNotify,
}

/// Wait until the guest in `run_dir` is ready: its init sent READY=1 on the
/// notify socket. For inits that do not speak sd_notify (see
/// [`speaks_sd_notify`]) this returns [`Readiness::NoNotify`] at once, the
/// guest being running. Fails if init ends first or `timeout` passes.
pub fn wait_ready(run_dir: &Path, timeout: Duration) -> Result<Readiness, RuntimeError> {
    let spec = read_spec(run_dir)?;
    let not_ready = |msg: String| RuntimeError::NotReady {
        name: spec.name.clone(),
        msg,
    };
    let notifies = speaks_sd_notify(&spec);
    let deadline = Instant::now() + timeout;
    loop {
        match status(run_dir)? {
            GuestRuntimeState::Running {
                ready: true,
                notify_status,
                ..
            } => {
                return Ok(Readiness::Ready {
                    status: notify_status,
                });
            }
            GuestRuntimeState::Running { .. } if !notifies => {
                return Ok(Readiness::NoNotify);
            }
            GuestRuntimeState::Running { .. } => {}
            GuestRuntimeState::NotStarted => {
                return Err(not_ready("the guest was never started".into()));
            }
            GuestRuntimeState::Stopped { last_exit } => {
                return Err(not_ready(format!(
                    "init ended before it reported ready ({last_exit:?})"
                )));
            }
            GuestRuntimeState::Crashed { last_exit, reason } => {
                return Err(not_ready(format!(
                    "init ended before it reported ready: {reason} ({last_exit:?})"
                )));
            }
        }
        if Instant::now() >= deadline {
            let last = read_state(run_dir)?
                .and_then(|s| s.notify_status)
                .map(|s| format!("; its last status: {s}"))
                .unwrap_or_default();
            return Err(not_ready(format!(
                "no READY=1 within {} s{last}",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn random_uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Boot the guest. Returns once init has been exec'd; the guest keeps
/// running under its supervisor after the caller exits.
///
/// The supervisor is this executable re-exec'd (`/proc/self/exe`) with
/// [`SUPERVISOR_ARG`]: a program calling this must dispatch that argument
/// to [`supervisor_main`] first thing in `main`, as vsctl's does.
pub fn start(spec: &RuntimeSpec) -> Result<Started, RuntimeError> {
    validate(spec)?;
    if crate::sys::thread_count() > 1 {
        return Err(RuntimeError::Threaded("runtime::start"));
    }
    if let GuestRuntimeState::Running { .. } = status(&spec.run_dir)? {
        return Err(RuntimeError::AlreadyRunning(spec.name.clone()));
    }
    let container_uuid = random_uuid();
    let stop_signal = stop_signal_for(spec);
    // The supervisor binds its sockets in the run directory and opens the
    // log before it is told to boot. Both are the host's business: the run
    // directory may only be passed through (an unprivileged guest's init
    // mounts its root there), a log directory vsctl makes is root's only.
    {
        use crate::host_access::{self, Access, Follow};
        host_access::ensure_dir(&spec.run_dir, Access::Traverse, Follow::No)?;
        if let Some(dir) = spec.log_file.parent() {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent)
                    .map_err(io_ctx(format!("create {}", parent.display())))?;
            }
            host_access::create_dir(dir, Access::Private)?;
        }
    }
    if spec.userns.is_some() {
        reachable_by_guest(&spec.run_dir)?;
    }
    let mgr = cgroup::detect(&spec.cgroup_base)?;
    let root_dev = match &spec.rootfs {
        RootfsMount::Tree { path } => cgroup::backing_device(path),
        RootfsMount::Overlay { upper, .. } => cgroup::backing_device(upper),
        // The loop device's I/O is issued in the guest's cgroup onto the
        // device holding the image.
        RootfsMount::Image { path, .. } => cgroup::backing_device(path),
    };
    let cgroup_ref = ManagerRef {
        version: mgr.version(),
        root: PathBuf::from("/sys/fs/cgroup"),
        base: spec.cgroup_base.clone(),
    };
    // The supervisor's exec and setup run while this process does the rest
    // (mount points, the spec file, the cgroup); it boots nothing until
    // told to go.
    let pending = supervisor::spawn(supervisor::Launch {
        spec: spec.clone(),
        container_uuid: container_uuid.clone(),
        stop_signal,
        cgroup: cgroup_ref,
        root_dev,
    })?;
    if let Err(e) = prepare_start(spec, &container_uuid, mgr.as_ref(), root_dev) {
        pending.abort();
        let _ = mgr.destroy(&spec.name, Duration::from_secs(5));
        return Err(e);
    }
    let res = pending.go();
    if res.is_err() {
        let _ = mgr.destroy(&spec.name, Duration::from_secs(5));
    }
    res
}

/// The part of a start that overlaps the supervisor's exec: everything
/// the guest needs on the host before its init may be cloned.
fn prepare_start(
    spec: &RuntimeSpec,
    container_uuid: &str,
    mgr: &dyn cgroup::CgroupManager,
    root_dev: Option<cgroup::DevNum>,
) -> Result<(), RuntimeError> {
    // The supervisor derives the same plan; this catches its errors here.
    let child_plan = plan::build(spec, container_uuid)?;
    let root = spec.run_dir.join("root");
    fs::create_dir_all(&root).map_err(io_ctx(format!("create {}", root.display())))?;
    // Mount points for idmapped overlay layers (used only inside the guest's
    // mount namespace, empty on the host).
    for i in 0..child_plan.idmap_sources.len() {
        let d = child_plan.layers_dir.join(i.to_string());
        fs::create_dir_all(&d).map_err(io_ctx(format!("create {}", d.display())))?;
    }
    let _ = fs::remove_file(spec.run_dir.join(STOP_FILE));
    let spec_path = spec.run_dir.join(SPEC_FILE);
    let spec_json = serde_json::to_vec_pretty(spec).expect("spec serializes");
    // The spec holds the guest's environment, secrets included: root's
    // only. A restart usually finds the same spec; truncating and
    // rewriting it costs half a millisecond on ext4.
    if fs::read(&spec_path).ok().as_deref() != Some(spec_json.as_slice()) {
        crate::host_access::write_private(&spec_path, &spec_json)?;
    } else {
        crate::host_access::tighten_file(&spec_path)?;
    }
    // A previous crashed run may have left the cgroup: start from scratch.
    // Limits are in place before init exists, so they bite from its first
    // instruction.
    mgr.destroy(&spec.name, Duration::from_secs(5))?;
    mgr.create(&spec.name)?;
    mgr.apply(&spec.name, &spec.limits, root_dev)?;
    if let Some(u) = spec.userns {
        mgr.delegate(&spec.name, u.host_base, u.host_base)?;
    }
    Ok(())
}

fn wait_pidfd(fd: &std::os::fd::OwnedFd, timeout: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// Ask init to power off, wait up to `timeout`, then kill everything left in
/// the guest's cgroup. Returns when the supervisor has recorded the exit and
/// the cgroup is gone.
pub fn stop(run_dir: &Path, timeout: Duration) -> Result<StopOutcome, RuntimeError> {
    let Some(st) = read_state(run_dir)? else {
        return Ok(StopOutcome::NotRunning);
    };
    if matches!(st.phase, Phase::Stopped | Phase::Crashed) {
        // Already recorded; make sure no cgroup is left from a crash.
        if let Ok(mgr) = st.cgroup.open() {
            mgr.destroy(&st.name, Duration::from_secs(5))?;
        }
        return Ok(StopOutcome::NotRunning);
    }
    let sup_alive = same_process(st.supervisor_pid, st.supervisor_start);
    let init_alive = same_process(st.init_pid, st.init_start);
    if !sup_alive && !init_alive {
        // Nothing to signal; make sure no cgroup is left from a crash.
        if let Ok(mgr) = st.cgroup.open() {
            mgr.destroy(&st.name, Duration::from_secs(5))?;
        }
        return Ok(StopOutcome::NotRunning);
    }
    fs::write(run_dir.join(STOP_FILE), b"").map_err(io_ctx(format!(
        "write {}",
        run_dir.join(STOP_FILE).display()
    )))?;
    // pidfds taken now, checked against the recorded start times: a reused
    // pid is never signalled.
    let sup_fd = crate::sys::pidfd_open(st.supervisor_pid)
        .ok()
        .filter(|_| same_process(st.supervisor_pid, st.supervisor_start));
    let init_fd = crate::sys::pidfd_open(st.init_pid)
        .ok()
        .filter(|_| same_process(st.init_pid, st.init_start));
    if let Some(fd) = &init_fd {
        let _ = crate::sys::pidfd_send_signal(fd.as_raw_fd(), st.stop_signal);
    }
    let mgr = st.cgroup.open()?;
    let mut killed = false;
    let clean = match &init_fd {
        Some(fd) => wait_pidfd(fd, timeout),
        None => true,
    };
    if !clean {
        killed = true;
        mgr.kill_all(&st.name, Duration::from_secs(10))?;
    }
    match &sup_fd {
        Some(fd) => {
            if !wait_pidfd(fd, Duration::from_secs(10)) {
                return Err(RuntimeError::Io {
                    what: format!(
                        "guest {}: supervisor {} did not exit",
                        st.name, st.supervisor_pid
                    ),
                    source: io::Error::from(io::ErrorKind::TimedOut),
                });
            }
        }
        None => {
            // Supervisor gone: finish its job.
            mgr.destroy(&st.name, Duration::from_secs(5))?;
            if let Ok(spec) = read_spec(run_dir) {
                let _ = teardown_network(&spec);
            }
            let mut st2 = st.clone();
            st2.phase = Phase::Stopped;
            write_state(run_dir, &st2)?;
        }
    }
    // The supervisor removes the cgroup; make sure, it is cheap.
    mgr.destroy(&st.name, Duration::from_secs(5))?;
    let _ = fs::remove_file(run_dir.join(STOP_FILE));
    let last = read_state(run_dir)?.and_then(|s| s.last_exit);
    Ok(if killed {
        StopOutcome::Killed
    } else {
        StopOutcome::Clean { last_exit: last }
    })
}

/// Change a running guest's limits in place (and in its stored spec, so a
/// reboot keeps them).
pub fn update_limits(run_dir: &Path, limits: &Limits) -> Result<(), RuntimeError> {
    let st = read_state(run_dir)?.ok_or_else(|| RuntimeError::NotRunning(run_dir.to_path_buf()))?;
    let mgr = st.cgroup.open()?;
    if !mgr.exists(&st.name) {
        return Err(RuntimeError::NotRunning(run_dir.to_path_buf()));
    }
    mgr.apply(&st.name, limits, st.root_dev)?;
    let mut spec = read_spec(run_dir)?;
    spec.limits = limits.clone();
    let p = run_dir.join(SPEC_FILE);
    Ok(crate::host_access::write_private(
        &p,
        &serde_json::to_vec_pretty(&spec).expect("spec serializes"),
    )?)
}

/// Change a running guest's network in place (addresses, routes), and
/// record it in its stored spec so teardown removes what is there now.
pub fn update_network(run_dir: &Path, network: &GuestNetwork) -> Result<(), RuntimeError> {
    let mut spec = read_spec(run_dir)?;
    let GuestRuntimeState::Running { init_pid, .. } = status(run_dir)? else {
        return Err(RuntimeError::NotRunning(run_dir.to_path_buf()));
    };
    if let Some(old) = &spec.network
        && !spec.host_network()
    {
        let netns = fs::File::open(format!("/proc/{init_pid}/ns/net"))
            .map_err(io_ctx(format!("open network namespace of {init_pid}")))?;
        crate::net::update(&spec.name, &old.spec, &network.spec, &network.host, &netns).map_err(
            |e| RuntimeError::Io {
                what: String::from("network update"),
                source: io::Error::other(e.to_string()),
            },
        )?;
    }
    spec.network = Some(network.clone());
    let p = run_dir.join(SPEC_FILE);
    Ok(crate::host_access::write_private(
        &p,
        &serde_json::to_vec_pretty(&spec).expect("spec serializes"),
    )?)
}

/// CPU time used by a guest so far (from its cgroup).
pub fn cpu_usage(run_dir: &Path) -> Result<Duration, RuntimeError> {
    let st = read_state(run_dir)?.ok_or_else(|| RuntimeError::NotRunning(run_dir.to_path_buf()))?;
    Ok(st.cgroup.open()?.cpu_usage(&st.name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec for guest "g" whose rootfs is the tree at `root`.
    fn tree_spec(root: &Path) -> RuntimeSpec {
        RuntimeSpec::new(
            "g",
            RootfsMount::Tree { path: root.into() },
            "/r".into(),
            "/l".into(),
        )
    }

    #[test]
    fn spec_json_defaults() {
        let j = r#"{"name":"g","rootfs":{"tree":{"path":"/x"}},"hostname":"g","run_dir":"/run/vsctl/g","log_file":"/var/log/vsctl/g.log"}"#;
        let s: RuntimeSpec = serde_json::from_str(j).unwrap();
        assert_eq!(
            s,
            RuntimeSpec::new(
                "g",
                RootfsMount::Tree { path: "/x".into() },
                "/run/vsctl/g".into(),
                "/var/log/vsctl/g.log".into()
            )
        );
        let back: RuntimeSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(
            serde_json::from_str::<RuntimeSpec>(
                &j.replace("\"hostname\"", "\"bogus\":1,\"hostname\"")
            )
            .is_err()
        );
    }

    #[test]
    fn proc_start_time_of_self() {
        let me = std::process::id() as i32;
        let t = proc_start_time(me).unwrap();
        assert!(same_process(me, t));
        assert!(!same_process(me, t + 1));
    }

    #[test]
    fn stop_signal_guess() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sbin")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", d.path().join("sbin/init")).unwrap();
        let mut s = tree_spec(d.path());
        assert_eq!(stop_signal_for(&s), libc::SIGUSR2);
        assert_eq!(init_kind(&s), InitKind::Busybox);
        assert!(!speaks_sd_notify(&s));
        std::fs::remove_file(d.path().join("sbin/init")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/systemd", d.path().join("sbin/init")).unwrap();
        assert_eq!(stop_signal_for(&s), libc::SIGRTMIN() + 3);
        assert!(speaks_sd_notify(&s));
        s.stop_signal = Some(15);
        assert_eq!(stop_signal_for(&s), 15);
    }

    #[test]
    fn validate_rejects_host_root_mapping() {
        let d = tempfile::tempdir().unwrap();
        let mut s = tree_spec(d.path());
        assert!(validate(&s).is_ok());
        s.userns = Some(IdRange {
            host_base: 0,
            count: 65536,
        });
        assert!(validate(&s).is_err());
        s.userns = None;
        s.init = vec!["sbin/init".into()];
        assert!(validate(&s).is_err());
    }
}
