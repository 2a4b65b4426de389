//! The per-guest supervisor: a small process that outlives `vsctl start`.
//!
//! It is the parent of the guest's init, so it is the one that learns how
//! init ended. It holds the console pty master (the guest's /dev/console and
//! init's stdio) and copies console output into a size-capped log. When init
//! ends it kills whatever is left in the guest's cgroup, then either boots
//! init again (reboot: the kernel reports init "killed by SIGHUP" after a
//! reboot(2) in a child pid namespace) or records the exit and removes the
//! cgroup (poweroff: SIGINT; a requested stop; a crash). Like LXC's monitor,
//! not a central daemon: one per guest, nothing shared.

use super::console::ConsoleServer;
use super::notify::{self, NotifySocket};
use super::plan::ChildPlan;
use super::{
    ExitInfo, Phase, RootfsMount, RunState, RuntimeError, RuntimeSpec, STOP_FILE, Started, child,
    now_unix, proc_start_time, write_state,
};
use crate::cgroup::{CgroupManager, DevNum, ManagerRef};
use crate::rootfs::image::ImageLock;
use crate::sys::{self, Cloned};
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// What a guest's supervisor is started with. It crosses an exec: `start`
/// serializes it into a memfd and execs the binary's supervisor mode, so a
/// supervisor's memory is a fresh process's, not a copy of its caller's
/// (a `vsctl apply` that parsed hundreds of guest files, say).
#[derive(Serialize, Deserialize)]
pub(super) struct Launch {
    pub spec: RuntimeSpec,
    /// Seeds the guest's `container_uuid` (and so its machine-id); fixed
    /// at start so a guest's reboots keep it.
    pub container_uuid: String,
    pub stop_signal: i32,
    pub cgroup: ManagerRef,
    pub root_dev: Option<DevNum>,
}

/// The supervisor's working set: the launch data plus the child plan
/// derived from it (pure, so recomputing it after the exec is exact).
pub(super) struct Context {
    pub spec: RuntimeSpec,
    pub plan: ChildPlan,
    pub stop_signal: i32,
    pub cgroup: ManagerRef,
    pub root_dev: Option<DevNum>,
}

/// The argument that selects the supervisor mode of the binary. `main`
/// checks it before any CLI parsing, so the mode costs nothing else.
pub const SUPERVISOR_ARG: &str = "__vsctl-supervisor";
/// Descriptors the exec'd supervisor finds its launch data and report
/// pipe on.
const LAUNCH_FD: i32 = 3;
const REPORT_FD: i32 = 4;
/// One byte here lets the supervisor boot; end-of-file without it (the
/// launcher failed to prepare the cgroup) makes it exit quietly.
const GO_FD: i32 = 5;

/// A supervisor launched but held before its first boot: its exec and
/// setup overlap whatever the caller still has to do (the cgroup), then
/// [`Pending::go`] lets it boot.
pub(super) struct Pending {
    name: String,
    report: OwnedFd,
    go: OwnedFd,
}

/// Launch the supervisor (double fork + setsid, so it is nobody's zombie and
/// has no controlling terminal, then exec of this binary's supervisor mode).
/// It waits for [`Pending::go`] before booting the guest.
pub(super) fn spawn(launch: Launch) -> Result<Pending, RuntimeError> {
    let name = launch.spec.name.clone();
    let data = serde_json::to_vec(&launch).expect("launch data serializes");
    let launch_fd = sys::memfd_with("vsctl-launch", &data).map_err(|e| RuntimeError::Io {
        what: "write supervisor launch data".into(),
        source: e,
    })?;
    let (rep_r, rep_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))?;
    let pid = sys::fork().map_err(|e| RuntimeError::Io {
        what: "fork supervisor".into(),
        source: e,
    })?;
    if pid == 0 {
        drop(rep_r);
        drop(go_w);
        let _ = nix::unistd::setsid();
        match sys::fork() {
            Ok(0) => {
                let e = exec_supervisor(&launch_fd, &rep_w, &go_r, &launch.spec.run_dir);
                let _ = nix::unistd::write(&rep_w, format!("err exec supervisor: {e}").as_bytes());
                sys::exit_now(1)
            }
            Ok(_) => sys::exit_now(0),
            Err(e) => {
                let _ = nix::unistd::write(&rep_w, format!("err fork: {e}").as_bytes());
                sys::exit_now(1)
            }
        }
    }
    drop(rep_w);
    drop(go_r);
    drop(launch_fd);
    let _ = waitpid(Pid::from_raw(pid), None);
    Ok(Pending {
        name,
        report: rep_r,
        go: go_w,
    })
}

impl Pending {
    /// Let the supervisor boot the guest and wait for its report on the
    /// first boot.
    pub(super) fn go(self) -> Result<Started, RuntimeError> {
        let Pending { name, report, go } = self;
        let _ = nix::unistd::write(&go, b"1");
        drop(go);
        let mut msg = String::new();
        let _ = File::from(report).read_to_string(&mut msg);
        let mut it = msg.split_whitespace();
        match it.next() {
            Some("ok") => {
                let init_pid = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let supervisor_pid = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                Ok(Started {
                    init_pid,
                    supervisor_pid,
                })
            }
            Some("err") => Err(RuntimeError::Boot {
                name,
                msg: msg.trim_start_matches("err").trim().to_string(),
            }),
            _ => Err(RuntimeError::Boot {
                name,
                msg: "supervisor exited without a report".into(),
            }),
        }
    }

    /// Call the launch off: the supervisor exits without booting anything.
    /// Returns once it has gone.
    pub(super) fn abort(self) {
        drop(self.go);
        let mut rest = Vec::new();
        let _ = File::from(self.report).read_to_end(&mut rest);
    }
}

/// In the forked grandchild: put the launch data and the report and go
/// pipes on their fixed descriptors (dup2 clears close-on-exec) and exec this
/// binary, sealed: the guest's init is cloned from the supervisor and runs
/// its code until it execs init, so the file behind its /proc/PID/exe must
/// not be one anybody could write through ([`sys::sealed_self_exe`]; the
/// run directory, which exists by now, serves as its empty layer).
/// Returns only on failure.
fn exec_supervisor(
    launch: &OwnedFd,
    report: &OwnedFd,
    go: &OwnedFd,
    run_dir: &std::path::Path,
) -> std::io::Error {
    use std::ffi::CString;
    if let Err(e) = sys::place_fds(&[
        (launch.as_fd(), LAUNCH_FD),
        (report.as_fd(), REPORT_FD),
        (go.as_fd(), GO_FD),
    ]) {
        return e;
    }
    // Opened after the descriptors are in place, so it is none of theirs.
    let sealed = match sys::sealed_self_exe(run_dir) {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    let argv = [
        CString::new("vsctl").expect("no NUL"),
        CString::new(SUPERVISOR_ARG).expect("no NUL"),
    ];
    sys::execveat_fd(sealed.as_raw_fd(), &argv, &[])
}

/// The supervisor mode's entry point (`main` dispatches here on
/// [`SUPERVISOR_ARG`]): read the launch data, derive the child plan, run.
pub fn supervisor_main() -> ! {
    // The launcher placed the report pipe and the launch memfd there.
    let report = sys::own_fd(REPORT_FD);
    let mut data = Vec::new();
    let mut launch_file = File::from(sys::own_fd(LAUNCH_FD));
    let read = launch_file.read_to_end(&mut data);
    drop(launch_file);
    let launch: Launch = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&data).map_err(|e| e.to_string()))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = nix::unistd::write(
                &report,
                format!("err supervisor launch data: {e}").as_bytes(),
            );
            sys::exit_now(1)
        }
    };
    drop(data);
    let plan = match super::plan::build(&launch.spec, &launch.container_uuid) {
        Ok(p) => p,
        Err(e) => {
            let _ = nix::unistd::write(&report, format!("err {e}").as_bytes());
            sys::exit_now(1)
        }
    };
    main(
        Context {
            spec: launch.spec,
            plan,
            stop_signal: launch.stop_signal,
            cgroup: launch.cgroup,
            root_dev: launch.root_dev,
        },
        report,
        sys::own_fd(GO_FD),
    )
}

fn io_err(what: &str, e: nix::Error) -> RuntimeError {
    RuntimeError::Io {
        what: what.into(),
        source: std::io::Error::from_raw_os_error(e as i32),
    }
}

/// The console log: appended, rotated to `NAME.log.1` past the cap.
struct ConsoleLog {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
}

impl ConsoleLog {
    /// The log is root's only (0600): a console carries whatever the guest
    /// and its users print or type there. One an older vsctl left readable
    /// is tightened.
    fn open(path: PathBuf, max: u64) -> ConsoleLog {
        let file = Self::open_file(&path);
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        ConsoleLog {
            path,
            file,
            size,
            max,
        }
    }

    fn write(&mut self, buf: &[u8]) {
        if self.size + buf.len() as u64 > self.max && self.size > 0 {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            let _ = fs::rename(&self.path, rotated);
            self.file = Self::open_file(&self.path);
            self.size = 0;
        }
        if let Some(f) = &mut self.file
            && f.write_all(buf).is_ok()
        {
            self.size += buf.len() as u64;
        }
    }

    fn open_file(path: &std::path::Path) -> Option<File> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(crate::host_access::PRIVATE_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        file.set_permissions(fs::Permissions::from_mode(
            crate::host_access::PRIVATE_FILE_MODE,
        ))
        .ok()?;
        Some(file)
    }

    fn note(&mut self, msg: &str) {
        self.write(format!("[vsctl] {msg}\n").as_bytes());
    }
}

struct Console {
    master: OwnedFd,
    slave: OwnedFd,
    slave_path: String,
}

fn open_console(spec: &RuntimeSpec) -> Result<Console, String> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| format!("cloexec: {e}"))?;
    }
    let slave_path = sys::ptsname(pty.master.as_raw_fd()).map_err(|e| format!("ptsname: {e}"))?;
    if let Some(u) = spec.userns {
        // The guest's root must be able to reopen /dev/console.
        nix::unistd::fchown(
            &pty.slave,
            Some(nix::unistd::Uid::from_raw(u.host_base)),
            Some(nix::unistd::Gid::from_raw(u.host_base)),
        )
        .map_err(|e| format!("chown console: {e}"))?;
    }
    Ok(Console {
        master: pty.master,
        slave: pty.slave,
        slave_path,
    })
}

fn clone_flags(userns: bool, host_network: bool) -> u64 {
    let mut f = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if !host_network {
        f |= libc::CLONE_NEWNET;
    }
    if userns {
        f |= libc::CLONE_NEWUSER;
    }
    f as u64
}

/// Clone init and finish its setup from outside; Ok once it exec'd.
fn boot(
    ctx: &Context,
    mgr: &dyn CgroupManager,
    console: &Console,
    image: Option<&ImageLock>,
) -> Result<(i32, OwnedFd), String> {
    let (sync_r, sync_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // The idmapped rootfs needs the child's user namespace, so it is made
    // after clone and handed over on a socket.
    let idmap = if ctx.plan.received_fds() > 0 {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        Some(
            socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| format!("socketpair: {e}"))?,
        )
    } else {
        None
    };
    // On cgroup v2 init is born in its cgroup; elsewhere it is added below.
    let cgroup_dir = mgr
        .clone_into_dir(&ctx.spec.name)
        .and_then(|d| File::open(d).ok());
    let flags = clone_flags(ctx.spec.userns.is_some(), ctx.spec.host_network());
    let (cloned, born_in_cgroup) = match sys::clone3(
        flags,
        libc::SIGCHLD,
        cgroup_dir.as_ref().map(|d| d.as_raw_fd()),
    ) {
        // Kernels before 5.7 know no CLONE_INTO_CGROUP.
        Err(e)
            if cgroup_dir.is_some()
                && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::E2BIG)) =>
        {
            (sys::clone3(flags, libc::SIGCHLD, None), false)
        }
        r => (r, cgroup_dir.is_some()),
    };
    drop(cgroup_dir);
    match cloned.map_err(|e| format!("clone3: {e}"))? {
        Cloned::Child => {
            drop(sync_w);
            drop(err_r);
            child::run(
                &ctx.plan,
                &console.slave_path,
                console.slave.as_raw_fd(),
                sync_r.as_raw_fd(),
                err_w.as_raw_fd(),
                idmap.as_ref().map(|(_, c)| c.as_raw_fd()),
            )
        }
        Cloned::Parent { pid, pidfd } => {
            drop(sync_r);
            drop(err_w);
            let setup = || -> Result<(), String> {
                if let Some(u) = ctx.spec.userns {
                    // Written by us (host root) so the map may name any range;
                    // setgroups stays allowed for the guest's own use.
                    let map = format!("0 {} {}\n", u.host_base, u.count);
                    fs::write(format!("/proc/{pid}/uid_map"), &map)
                        .map_err(|e| format!("write uid_map: {e}"))?;
                    fs::write(format!("/proc/{pid}/gid_map"), &map)
                        .map_err(|e| format!("write gid_map: {e}"))?;
                }
                if !born_in_cgroup {
                    mgr.add_process(&ctx.spec.name, pid)
                        .map_err(|e| e.to_string())?;
                }
                if let Some((ours, _)) = &idmap {
                    send_rootfs_trees(ours, pid, ctx, image)?;
                }
                Ok(())
            };
            // Addresses, routes and lo are in place before init runs, so a
            // guest boots networked even with an empty network config. Set
            // up while the child mounts its filesystems (it needs neither).
            let network = || -> Result<(), String> {
                if let Some(net) = &ctx.spec.network
                    && !ctx.spec.host_network()
                {
                    let netns = File::open(format!("/proc/{pid}/ns/net"))
                        .map_err(|e| format!("open network namespace of {pid}: {e}"))?;
                    crate::net::setup(&ctx.spec.name, &net.spec, &net.host, &netns)
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            };
            let ready = setup()
                .map(|()| {
                    let _ = nix::unistd::write(&sync_w, b"1");
                })
                .and_then(|()| network());
            if let Err(e) = ready {
                let _ = sys::pidfd_send_signal(pidfd.as_raw_fd(), libc::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
                // A child that failed first (its namespace then gone under
                // the network setup) has the error that explains it.
                let mut msg = String::new();
                let _ = File::from(err_r).read_to_string(&mut msg);
                return Err(if msg.is_empty() { e } else { msg });
            }
            let _ = nix::unistd::write(&sync_w, b"2");
            drop(sync_w);
            let mut msg = String::new();
            let _ = File::from(err_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                let _ = waitpid(Pid::from_raw(pid), None);
                return Err(msg);
            }
            Ok((pid, pidfd))
        }
    }
}

fn exit_info(ws: WaitStatus) -> Option<ExitInfo> {
    match ws {
        WaitStatus::Exited(_, c) => Some(ExitInfo::Exited(c)),
        WaitStatus::Signaled(_, s, _) => Some(ExitInfo::Signaled(s as i32)),
        _ => None,
    }
}

fn redirect_stdio() {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
}

fn main(ctx: Context, report: OwnedFd, go: OwnedFd) -> ! {
    redirect_stdio();
    // `ps`/`top` show which guest this supervisor belongs to (the kernel
    // keeps the first 15 bytes).
    if let Ok(c) = std::ffi::CString::new(format!("vsctl:{}", ctx.spec.name)) {
        let _ = nix::sys::prctl::set_name(&c);
    }
    // Do not pin the caller's working directory (and its filesystem) for
    // the guest's lifetime.
    let _ = nix::unistd::chdir("/");
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let _ = sys::close_fds_except(3, &[report.as_raw_fd(), go.as_raw_fd()]);
    let code = match run(&ctx, report, go) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    sys::exit_now(code)
}

/// How long after init's exec the supervisor sheds its boot-time pages.
const TRIM_DELAY: Duration = Duration::from_millis(250);

/// Wait for the launcher's go byte; false when it called the launch off.
fn wait_for_go(go: OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    matches!((&File::from(go)).read(&mut byte), Ok(1))
}

fn run(ctx: &Context, report: OwnedFd, go: OwnedFd) -> Result<(), ()> {
    let spec = &ctx.spec;
    let mut log = ConsoleLog::open(spec.log_file.clone(), spec.log_max_bytes);
    let me = std::process::id() as i32;
    let my_start = proc_start_time(me).unwrap_or(0);
    let mut state = RunState {
        name: spec.name.clone(),
        phase: Phase::Starting,
        supervisor_pid: me,
        supervisor_start: my_start,
        init_pid: 0,
        init_start: 0,
        since: now_unix(),
        restarts: 0,
        stop_signal: ctx.stop_signal,
        cgroup: ctx.cgroup.clone(),
        root_dev: ctx.root_dev,
        last_exit: None,
        reason: None,
        ready: false,
        notify_status: None,
    };
    let mut report = Some(report);
    // Until the go byte the launcher owns the cgroup (it is creating it),
    // so a failure then leaves the cgroup and network to the launcher.
    let fail = |state: &mut RunState,
                report: &mut Option<OwnedFd>,
                log: &mut ConsoleLog,
                launched: bool,
                msg: String| {
        log.note(&format!("boot failed: {msg}"));
        remove_sockets(spec);
        if launched {
            let _ = super::teardown_network(spec);
            if let Ok(mgr) = ctx.cgroup.open() {
                let _ = mgr.destroy(&spec.name, Duration::from_secs(5));
            }
        }
        state.phase = Phase::Crashed;
        state.reason = Some(msg.clone());
        let _ = write_state(&spec.run_dir, state);
        if let Some(r) = report.take() {
            let _ = nix::unistd::write(&r, format!("err {msg}").as_bytes());
        }
    };
    let mgr = match ctx.cgroup.open() {
        Ok(m) => m,
        Err(e) => {
            fail(&mut state, &mut report, &mut log, false, e.to_string());
            return Err(());
        }
    };
    let console = match open_console(spec) {
        Ok(c) => c,
        Err(e) => {
            fail(&mut state, &mut report, &mut log, false, e);
            return Err(());
        }
    };
    // Console clients are served from the poll loop: writes to the pty
    // master must never block it.
    if let Err(e) = set_nonblocking(&console.master) {
        fail(&mut state, &mut report, &mut log, false, e);
        return Err(());
    }
    // The notify socket is bound into the guest by the child plan, so it
    // must exist before the first boot; `vsctl console` is optional.
    let notify = match NotifySocket::bind(&spec.run_dir, spec.userns.map(|u| u.host_base)) {
        Ok(n) => n,
        Err(e) => {
            fail(&mut state, &mut report, &mut log, false, e);
            return Err(());
        }
    };
    let console_server = match ConsoleServer::listen(&spec.run_dir) {
        Ok(c) => Some(c),
        Err(e) => {
            log.note(&format!(
                "no console socket (vsctl console will not work): {e}"
            ));
            None
        }
    };
    let mut socks = Sockets {
        console: console_server,
        notify,
        guest_pidns: None,
    };
    // SIGCHLD (init ended) and SIGTERM (stop the guest) arrive through a
    // signalfd polled together with the console.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    let _ = mask.thread_block();
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            fail(
                &mut state,
                &mut report,
                &mut log,
                false,
                format!("signalfd: {e}"),
            );
            return Err(());
        }
    };

    // All of the above ran while the launcher prepared the cgroup; held
    // here until it is ready.
    if !wait_for_go(go) {
        remove_sockets(spec);
        return Err(());
    }
    // An image guest's image is ours for the guest's whole life, reboots
    // included: nothing else may mount or resize it meanwhile.
    let image_lock = match &spec.rootfs {
        RootfsMount::Image { path, .. } => match crate::rootfs::image::lock(path) {
            Ok(locked) => Some(locked),
            Err(e) => {
                fail(&mut state, &mut report, &mut log, true, e.to_string());
                return Err(());
            }
        },
        _ => None,
    };

    loop {
        let (init_pid, init_fd) = match boot(ctx, mgr.as_ref(), &console, image_lock.as_ref()) {
            Ok(v) => v,
            Err(msg) => {
                fail(&mut state, &mut report, &mut log, true, msg);
                return Err(());
            }
        };
        state.phase = Phase::Running;
        state.init_pid = init_pid;
        state.init_start = proc_start_time(init_pid).unwrap_or(0);
        state.since = now_unix();
        state.ready = false;
        state.notify_status = None;
        socks.guest_pidns = notify::pidns_of(init_pid);
        let _ = write_state(&spec.run_dir, &state);
        if let Some(r) = report.take() {
            let _ = nix::unistd::write(&r, format!("ok {init_pid} {me}").as_bytes());
        }
        log.note(&format!("init started as pid {init_pid}"));

        let status = watch(
            ctx, &sfd, &console, &mut log, init_pid, &init_fd, &mut socks, &mut state,
        );
        drop(init_fd);
        // Whatever init left behind (exec'd processes, escaped daemons)
        // goes with it, and so does its network's host side.
        let _ = mgr.kill_all(&spec.name, Duration::from_secs(10));
        if let RootfsMount::Image { path, .. } = &spec.rootfs {
            // Stopped means the image may be mounted again (or resized):
            // wait for the kernel to release the dead namespace's mount.
            match crate::loopdev::wait_released(path, Duration::from_secs(10)) {
                Ok(left) if !left.is_empty() => {
                    log.note(&format!("image still attached to {left:?}"))
                }
                Err(e) => log.note(&format!("checking the image's loop device: {e}")),
                Ok(_) => {}
            }
        }
        if let Err(e) = super::teardown_network(spec) {
            log.note(&format!("removing network: {e}"));
        }
        drain(&console, &mut log, &mut socks);
        if state.ready {
            // Not ready any more, whatever comes next (a reboot or the end).
            state.ready = false;
            let _ = write_state(&spec.run_dir, &state);
        }
        let info = exit_info(status);
        state.last_exit = info;
        let stop_requested = spec.run_dir.join(STOP_FILE).exists();
        log.note(&format!("init exited: {info:?}"));
        if !stop_requested && info == Some(ExitInfo::Signaled(libc::SIGHUP)) {
            // On cgroup v2 a systemd guest's leftover sub-cgroups would make
            // the new init's cgroup join fail (found by the QEMU lane).
            if let Err(e) = crate::cgroup::reset_for_reboot(mgr.as_ref(), &spec.name) {
                log.note(&format!("resetting the cgroup for reboot: {e}"));
            }
            state.restarts += 1;
            log.note("guest rebooted");
            continue;
        }
        let clean = stop_requested
            || info == Some(ExitInfo::Signaled(libc::SIGINT))
            || info == Some(ExitInfo::Exited(0));
        if clean {
            state.phase = Phase::Stopped;
        } else {
            state.phase = Phase::Crashed;
            state.reason = Some(format!("init ended unexpectedly: {info:?}"));
        }
        if let Err(e) = mgr.destroy(&spec.name, Duration::from_secs(10)) {
            log.note(&format!("removing cgroup: {e}"));
        }
        remove_sockets(spec);
        let _ = write_state(&spec.run_dir, &state);
        return Ok(());
    }
}

/// The supervisor's sockets besides the console pty (see `console` and
/// `notify`), served from the same poll loop.
struct Sockets {
    console: Option<ConsoleServer>,
    notify: NotifySocket,
    /// init's pid namespace: notify messages from elsewhere are dropped.
    guest_pidns: Option<(u64, u64)>,
}

fn remove_sockets(spec: &RuntimeSpec) {
    let _ = fs::remove_file(notify::host_path(&spec.run_dir));
    let _ = fs::remove_file(super::console::host_path(&spec.run_dir));
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), String> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("console flags: {e}"))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| format!("console flags: {e}"))?;
    Ok(())
}

/// Apply notify messages to the run state; true when it changed.
fn on_notify(state: &mut RunState, log: &mut ConsoleLog, msg: &notify::Message) -> bool {
    let mut changed = false;
    if msg.ready && !state.ready {
        state.ready = true;
        changed = true;
        log.note("init reported ready (READY=1)");
    }
    if msg.stopping && state.ready {
        state.ready = false;
        changed = true;
    }
    if let Some(s) = msg.status
        && state.notify_status.as_deref() != Some(s)
    {
        state.notify_status = Some(s.to_string());
        changed = true;
    }
    changed
}

/// Copy console output until init exits; returns its wait status.
#[allow(clippy::too_many_arguments)]
fn watch(
    ctx: &Context,
    sfd: &SignalFd,
    console: &Console,
    log: &mut ConsoleLog,
    init_pid: i32,
    init_fd: &OwnedFd,
    socks: &mut Sockets,
    state: &mut RunState,
) -> WaitStatus {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut buf = [0u8; 16384];
    // Set by SIGTERM: when init has not ended by then, it is killed (and
    // with it its pid namespace), as `vsctl stop` would after its timeout.
    let mut stop_deadline: Option<std::time::Instant> = None;
    // Booting ran most of the binary; idling needs a sliver of it, so the
    // rest leaves our resident set (it stays in the page cache). Not right
    // away: the caller waiting for our report and the booting guest want
    // the CPUs first.
    let mut trim_at = Some(std::time::Instant::now() + TRIM_DELAY);
    let readable = |f: &PollFd| {
        f.revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
        })
    };
    loop {
        let pending = socks.console.as_ref().is_some_and(|c| c.has_pending());
        let master_events = if pending {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        // Fixed slots: master, signals, notify, then the console listener
        // and its client when there are.
        let mut fds = [
            PollFd::new(console.master.as_fd(), master_events),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(socks.notify.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::empty()),
            PollFd::new(sfd.as_fd(), PollFlags::empty()),
        ];
        let mut n = 3;
        let mut listener_slot = None;
        let mut client_slot = None;
        if let Some(server) = &socks.console {
            fds[n] = PollFd::new(server.listener(), PollFlags::POLLIN);
            listener_slot = Some(n);
            n += 1;
            if let Some(client) = server.client() {
                // While its last input waits for the pty, only a hang-up
                // (always reported) is of interest.
                let events = if pending {
                    PollFlags::empty()
                } else {
                    PollFlags::POLLIN
                };
                fds[n] = PollFd::new(client, events);
                client_slot = Some(n);
                n += 1;
            }
        }
        let now = std::time::Instant::now();
        if trim_at.is_some_and(|t| t <= now) {
            let _ = sys::drop_clean_file_pages();
            trim_at = None;
        }
        if stop_deadline.is_some_and(|d| d <= now) {
            log.note("stop timeout passed: killing init");
            let _ = sys::pidfd_send_signal(init_fd.as_raw_fd(), libc::SIGKILL);
            stop_deadline = None;
        }
        let timeout = match [stop_deadline, trim_at].into_iter().flatten().min() {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(now);
                PollTimeout::try_from(left.as_millis().max(1).min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut fds[..n], timeout) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
        let console_ready = fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN));
        let console_writable = fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLOUT));
        let sig_ready = fds[1]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN));
        let notify_ready = readable(&fds[2]);
        let accept_ready = listener_slot.is_some_and(|i| readable(&fds[i]));
        let client_ready = client_slot.is_some_and(|i| readable(&fds[i]));
        let client_gone = client_slot.is_some_and(|i| {
            fds[i]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
        });
        if console_ready && let Ok(n) = nix::unistd::read(&console.master, &mut buf) {
            log.write(&buf[..n]);
            if let Some(server) = &mut socks.console {
                server.output(&buf[..n]);
            }
        }
        if let Some(server) = &mut socks.console {
            if console_writable {
                server.flush(console.master.as_fd());
            }
            if client_ready {
                server.input(console.master.as_fd());
            }
            if client_gone && server.has_pending() {
                // Its input can wait no longer: free the console.
                server.hang_up();
            }
            if accept_ready {
                server.accept();
            }
        }
        if notify_ready {
            let mut changed = false;
            socks
                .notify
                .drain(&mut buf[..notify::MAX_MESSAGE], socks.guest_pidns, |m| {
                    changed |= on_notify(state, log, &notify::parse(m))
                });
            if changed {
                let _ = write_state(&ctx.spec.run_dir, state);
            }
        }
        if sig_ready {
            while let Ok(Some(si)) = sfd.read_signal() {
                if si.ssi_signo == libc::SIGTERM as u32 {
                    // `kill SUPERVISOR` means "stop this guest".
                    let _ = fs::write(ctx.spec.run_dir.join(STOP_FILE), b"");
                    let _ = sys::pidfd_send_signal(init_fd.as_raw_fd(), ctx.stop_signal);
                    stop_deadline.get_or_insert(std::time::Instant::now() + ctx.spec.stop_timeout);
                }
            }
            // Reap every child; only init is ours to watch.
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(ws) => {
                        if ws.pid() == Some(Pid::from_raw(init_pid))
                            && matches!(ws, WaitStatus::Exited(..) | WaitStatus::Signaled(..))
                        {
                            return ws;
                        }
                    }
                }
            }
        }
    }
}

/// Read what is left in the console buffer without blocking.
fn drain(console: &Console, log: &mut ConsoleLog, socks: &mut Sockets) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut buf = [0u8; 16384];
    for _ in 0..64 {
        let mut fds = [PollFd::new(console.master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => match nix::unistd::read(&console.master, &mut buf) {
                Ok(n) if n > 0 => {
                    log.write(&buf[..n]);
                    if let Some(server) = &mut socks.console {
                        server.output(&buf[..n]);
                    }
                }
                _ => return,
            },
            _ => return,
        }
    }
}

/// Make the child's mounts and pass them over the socket in one message:
/// idmapped copies of the rootfs sources for its user namespace, or its
/// image mounted (idmapped if it has a user namespace), then the idmapped
/// bind mounts. Our copies close on return, so the guest's mount namespace
/// alone holds them.
fn send_rootfs_trees(
    sock: &OwnedFd,
    pid: i32,
    ctx: &Context,
    image: Option<&ImageLock>,
) -> Result<(), String> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let userns = ctx
        .spec
        .userns
        .map(|_| {
            File::open(format!("/proc/{pid}/ns/user"))
                .map_err(|e| format!("open user namespace: {e}"))
        })
        .transpose()?;
    let userns_fd = userns.as_ref().map(|ns| ns.as_raw_fd());
    // Idmapped sources and binds exist only with a user namespace (the
    // spec's validation refuses them otherwise).
    let need_userns =
        || userns_fd.ok_or_else(|| String::from("idmapped mounts need a user namespace"));
    let mut trees = Vec::new();
    if let Some(locked) = image {
        trees.push(crate::rootfs::image::mount(locked, userns_fd).map_err(|e| e.to_string())?);
    }
    for p in &ctx.plan.idmap_sources {
        trees.push(
            sys::idmapped_tree(p, need_userns()?, false)
                .map_err(|e| format!("idmapped mount of {}: {e}", p.display()))?,
        );
    }
    for (source, read_only) in &ctx.plan.idmap_binds {
        trees.push(
            sys::idmapped_tree(source, need_userns()?, *read_only)
                .map_err(|e| format!("idmapped bind mount of {}: {e}", source.display()))?,
        );
    }
    let fds: Vec<i32> = trees.iter().map(|t| t.as_raw_fd()).collect();
    let iov = [std::io::IoSlice::new(b"m")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("send idmapped rootfs: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_log_rotates_at_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g.log");
        let mut log = ConsoleLog::open(p.clone(), 100);
        log.write(&[b'a'; 60]);
        log.write(&[b'b'; 30]);
        assert_eq!(fs::read(&p).unwrap().len(), 90);
        log.write(&[b'c'; 20]); // would exceed 100: rotate first
        assert_eq!(fs::read(d.path().join("g.log.1")).unwrap().len(), 90);
        assert_eq!(fs::read(&p).unwrap(), vec![b'c'; 20]);
        // Reopening continues the current file's size.
        let log2 = ConsoleLog::open(p.clone(), 100);
        assert_eq!(log2.size, 20);
    }
}
