//! Running a command inside a running guest.
//!
//! The guest is hostile, so the process that enters it must give it nothing
//! of the host's at any moment (the lxc-attach CVE-2016-10124 and runc
//! CVE-2016-9962/CVE-2019-5736 classes):
//!
//! - **No host descriptor or terminal.** Without a pty the command's stdio
//!   are pipes this process relays; with one, the pty comes from the guest's
//!   own devpts. The command always starts a new session, so it has no
//!   controlling terminal of the host's: /dev/tty fails and TIOCSTI has
//!   nothing of the operator's to type into.
//! - **Nothing to ptrace or to open in /proc.** The caller forks a helper and
//!   the helper execs vsctl's own binary, sealed (a read-only handle nobody
//!   can write through, see [`crate::sys::sealed_self_exe`]), in its exec
//!   helper mode. The helper is never dumpable. It joins the guest's cgroup
//!   and, through a pidfd on the guest's init, all of its namespaces, and
//!   becomes the guest's in every respect while the guest still cannot see
//!   it (joining a pid namespace only applies to children): the guest's
//!   root ids, the guest's capability bounding set, its seccomp filter.
//!   Only then does it fork the process that appears in the guest, which
//!   inherits all of that, starts its session and execs the command. Until
//!   that exec the process is not dumpable and its memory belongs to the
//!   host's user namespace, so the guest can neither ptrace it nor open its
//!   /proc files (exe, fd, mem, environ).
//!
//! Exit codes follow podman: the command's own code, 128+N when killed by
//! signal N, 126 when the command cannot be executed, 127 when it is not
//! found, 125 when vsctl itself failed.

use super::{RuntimeError, read_spec, read_state, same_process};
use crate::cgroup::ManagerRef;
use crate::seccomp::GuestKind;
use crate::sys;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The argument that selects the exec helper mode of the binary (`main`
/// dispatches it before any CLI parsing, like the supervisor's).
pub const EXEC_HELPER_ARG: &str = "__vsctl-exec";
/// Where the exec'd helper finds its launch data and the pidfd of the
/// guest's init; 0-2 are the command's stdio.
const LAUNCH_FD: i32 = 3;
const INIT_PIDFD: i32 = 4;
/// The sealed binary, exec'd from here (the helper closes it first thing).
const SEALED_EXE_FD: i32 = 5;
/// The helper's code when vsctl, not the command, failed.
const HELPER_FAILED: i32 = 125;

/// Everything the exec helper needs, computed by the caller before it
/// forks (the helper reads no file of the host's).
#[derive(Serialize, Deserialize)]
struct ExecLaunch {
    guest: String,
    /// CLONE_NEW* flags of the namespaces to join.
    namespaces: i32,
    cgroup: ManagerRef,
    /// On cgroup v2: join init's leaf cgroup rather than the guest's own.
    leaf_procs: Option<PathBuf>,
    caps: u64,
    last_cap: u32,
    /// The guest's seccomp filter, if it has one.
    seccomp: Option<GuestKind>,
    env: Vec<String>,
    argv: Vec<String>,
    /// Paths to try for argv[0], as execvp would.
    candidates: Vec<String>,
    /// stdin is a pty slave that becomes the command's controlling terminal.
    tty: bool,
}

fn wait_code(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => return c,
            Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return HELPER_FAILED,
        }
    }
}

/// Candidate paths for argv[0], searched in the guest's PATH like execvp.
fn candidates(cmd: &str, path: &str) -> Vec<String> {
    if cmd.contains('/') {
        return vec![cmd.to_string()];
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{cmd}"))
        .collect()
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()))
}

/// The command's side of its stdio and what this process keeps of it.
enum Stdio {
    /// A pty of the guest's devpts: the command gets the slave.
    Pty { master: OwnedFd, slave: OwnedFd },
    /// Pipes: the command gets the far ends; this process relays.
    Pipes {
        child: [OwnedFd; 3],
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

/// Run `argv` inside the guest whose run directory is `run_dir` and return
/// its exit code. With `tty` (and a terminal on stdin) the command gets a
/// pty of its own and the caller's terminal is relayed in raw mode;
/// otherwise its stdin, stdout and stderr are pipes relayed to this
/// process's own.
pub fn exec(run_dir: &Path, argv: &[String], tty: bool) -> Result<i32, RuntimeError> {
    if argv.is_empty() {
        return Err(RuntimeError::Invalid("exec needs a command".into()));
    }
    if sys::thread_count() > 1 {
        return Err(RuntimeError::Threaded("runtime::exec"));
    }
    let st = read_state(run_dir)?.ok_or_else(|| RuntimeError::NotRunning(run_dir.to_path_buf()))?;
    let spec = read_spec(run_dir)?;
    let env_pairs = super::plan::environment(&spec, "");
    let guest_path = env_pairs
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if let Some(a) = argv.iter().find(|a| a.contains('\0')) {
        return Err(RuntimeError::Invalid(format!(
            "argument {a:?} contains NUL"
        )));
    }
    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    if spec.userns.is_some() {
        namespaces |= CloneFlags::CLONE_NEWUSER;
    }
    let pidfd = sys::pidfd_open(st.init_pid)
        .map_err(|_| RuntimeError::NotRunning(run_dir.to_path_buf()))?;
    if !same_process(st.init_pid, st.init_start) {
        return Err(RuntimeError::NotRunning(run_dir.to_path_buf()));
    }
    let mgr = st.cgroup.open()?;
    let use_pty = tty && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let launch = ExecLaunch {
        guest: st.name.clone(),
        namespaces: namespaces.bits(),
        cgroup: st.cgroup.clone(),
        // On v2 a systemd guest's own cgroup takes no new members once
        // systemd has enabled controllers below it: join init's (leaf)
        // cgroup instead.
        leaf_procs: crate::cgroup::exec_leaf(&*mgr, &st.name, st.init_pid)
            .map(|d| d.join("cgroup.procs")),
        caps: crate::caps::bounding_set(
            spec.userns.is_some(),
            spec.seccomp,
            &spec.caps_add,
            &spec.caps_drop,
        )?,
        last_cap: crate::caps::last_cap(),
        seccomp: spec.seccomp.then(|| GuestKind::of(spec.userns.is_some())),
        env: env_pairs
            .iter()
            .filter(|(k, _)| k != "container_uuid")
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        argv: argv.to_vec(),
        candidates: candidates(&argv[0], &guest_path),
        tty: use_pty,
    };

    let stdio = if use_pty {
        // The pty comes from the guest's own devpts instance, so the
        // command's terminal has a name inside the guest (tty, ssh-less
        // logins, job control).
        let root = nix::fcntl::open(
            format!("/proc/{}/root", st.init_pid).as_str(),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io_err(format!("open the root of guest {}", st.name))(e.into()))?;
        let (master, slave) = sys::open_pty_in(root.as_fd(), Path::new("dev/pts/ptmx"))
            .map_err(io_err(format!("allocate pty in guest {}", st.name)))?;
        let _ = sys::copy_winsize(0, slave.as_raw_fd());
        if let Some(u) = spec.userns {
            // Owned by the guest's root rather than by an unmapped uid.
            let _ = nix::unistd::fchown(
                &slave,
                Some(Uid::from_raw(u.host_base)),
                Some(Gid::from_raw(u.host_base + 5)),
            );
        }
        Stdio::Pty { master, slave }
    } else {
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Stdio::Pipes {
            child: [in_r, out_w, err_w],
            stdin: in_w,
            stdout: out_r,
            stderr: err_r,
        }
    };
    let sealed =
        sys::sealed_self_exe(run_dir).map_err(io_err("make a sealed copy of the vsctl binary"))?;
    let launch_fd = sys::memfd_with(
        "vsctl-exec",
        &serde_json::to_vec(&launch).expect("exec launch data serializes"),
    )
    .map_err(io_err("write exec launch data"))?;

    let helper = sys::fork().map_err(io_err("fork exec helper"))?;
    if helper == 0 {
        // Not dumpable from the first instruction on: the helper is about
        // to become root of the guest's user namespace.
        let _ = sys::set_undumpable();
        let child_stdio: [BorrowedFd<'_>; 3] = match &stdio {
            Stdio::Pty { slave, .. } => [slave.as_fd(), slave.as_fd(), slave.as_fd()],
            Stdio::Pipes { child, .. } => [child[0].as_fd(), child[1].as_fd(), child[2].as_fd()],
        };
        let placed = sys::place_fds(&[
            (child_stdio[0], 0),
            (child_stdio[1], 1),
            (child_stdio[2], 2),
            (launch_fd.as_fd(), LAUNCH_FD),
            (pidfd.as_fd(), INIT_PIDFD),
            (sealed.as_fd(), SEALED_EXE_FD),
        ]);
        let e = match placed {
            Ok(()) => sys::execveat_fd(
                SEALED_EXE_FD,
                &[
                    CString::new("vsctl").expect("no NUL"),
                    CString::new(EXEC_HELPER_ARG).expect("no NUL"),
                ],
                &[],
            ),
            Err(e) => e,
        };
        eprintln!("vsctl exec: start the exec helper: {e}");
        sys::exit_now(HELPER_FAILED);
    }
    drop((pidfd, launch_fd, sealed));
    // The helper's exit ends the relay; a pidfd sees it without reaping.
    let helper_pidfd = sys::pidfd_open(helper).ok();
    match stdio {
        Stdio::Pty { master, slave } => {
            drop(slave);
            relay_pty(&master);
        }
        Stdio::Pipes {
            child,
            stdin,
            stdout,
            stderr,
        } => {
            drop(child);
            relay_pipes(stdin, stdout, stderr, helper_pidfd.as_ref());
        }
    }
    Ok(wait_code(helper))
}

/// The exec helper mode's entry point (`main` dispatches here on
/// [`EXEC_HELPER_ARG`]). Runs from the sealed binary with the command's
/// stdio on 0-2, its launch data on [`LAUNCH_FD`] and init's pidfd on
/// [`INIT_PIDFD`]; exits with the command's code.
pub fn exec_helper_main() -> ! {
    // exec made the process dumpable again.
    let _ = sys::set_undumpable();
    let fail = |msg: String| -> ! {
        eprintln!("vsctl exec: {msg}");
        sys::exit_now(HELPER_FAILED)
    };
    // The sealed binary, and whatever the caller's caller left open
    // without close-on-exec.
    if let Err(e) = sys::close_fds_except(SEALED_EXE_FD, &[]) {
        fail(format!("close_range: {e}"));
    }
    let pidfd = sys::own_fd(INIT_PIDFD);
    let launch: ExecLaunch = {
        let mut data = Vec::new();
        let read =
            std::io::Read::read_to_end(&mut std::fs::File::from(sys::own_fd(LAUNCH_FD)), &mut data);
        match read
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_slice(&data).map_err(|e| e.to_string()))
        {
            Ok(l) => l,
            Err(e) => fail(format!("exec launch data: {e}")),
        }
    };
    if let Err(e) = enter_guest(&launch, pidfd) {
        fail(e);
    }
    // The command is in a session of its own, so the operator's Ctrl-C
    // (SIGINT to vsctl's process group, this helper included) reaches it
    // only through here: held from before the fork (the command resets its
    // mask) and forwarded.
    let forwarded = forwarded_signals();
    let mut held = forwarded;
    held.add(Signal::SIGCHLD);
    let _ = held.thread_block();
    // From here on this process is the guest's: its ids, capabilities and
    // seccomp filter, which the command inherits. The fork is the first
    // time the guest can see anything of it.
    let child = match sys::fork() {
        Ok(c) => c,
        Err(e) => fail(format!("fork: {e}")),
    };
    if child == 0 {
        run_command(&launch);
    }
    // The command's stdio are its own: the relay ends when it (and what it
    // left running) closes them, not when this process does.
    let _ = sys::close_range(0, 2, 0);
    loop {
        match waitpid(Pid::from_raw(child), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => sys::exit_now(c),
            Ok(WaitStatus::Signaled(_, s, _)) => sys::exit_now(128 + s as i32),
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => sys::exit_now(HELPER_FAILED),
        }
        if let Ok(sig) = held.wait()
            && forwarded.contains(sig)
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(child), sig);
        }
    }
}

/// Signals the helper passes on to the command.
fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(sig);
    }
    set
}

/// Join the guest's cgroup and namespaces and take on its ids,
/// capabilities and seccomp filter, in the order that keeps the process
/// out of the guest's reach until it is entirely the guest's.
fn enter_guest(launch: &ExecLaunch, pidfd: OwnedFd) -> Result<(), String> {
    let me = std::process::id() as i32;
    match &launch.leaf_procs {
        Some(p) => {
            std::fs::write(p, me.to_string()).map_err(|e| format!("cgroup {}: {e}", p.display()))?
        }
        None => launch
            .cgroup
            .open()
            .and_then(|mgr| mgr.add_process(&launch.guest, me))
            .map_err(|e| e.to_string())?,
    }
    nix::sched::setns(
        pidfd.as_fd(),
        CloneFlags::from_bits_truncate(launch.namespaces),
    )
    .map_err(|e| format!("join namespaces of guest {}: {e}", launch.guest))?;
    drop(pidfd);
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    let (gid, uid) = (Gid::from_raw(0), Uid::from_raw(0));
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    // A change of ids sets dumpable to fs.suid_dumpable, which a host may
    // have set to 1.
    sys::set_undumpable().map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    let _ =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 1024, 524_288);
    // Capabilities before seccomp: installing the filter without
    // NO_NEW_PRIVS needs CAP_SYS_ADMIN, still effective here (only the
    // bounding set shrank; the command's exec applies it).
    crate::caps::apply(launch.caps, launch.last_cap).map_err(|e| e.to_string())?;
    if let Some(kind) = launch.seccomp {
        crate::seccomp::install(&crate::seccomp::build(kind))
            .map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

/// In the process the guest sees: a session of its own (with the pty as
/// controlling terminal, if any), then the command.
fn run_command(launch: &ExecLaunch) -> ! {
    sys::reset_signals();
    if let Err(e) = nix::unistd::setsid() {
        eprintln!("vsctl exec: setsid: {e}");
        sys::exit_now(HELPER_FAILED);
    }
    if launch.tty
        && let Err(e) = sys::set_controlling_tty(0)
    {
        eprintln!("vsctl exec: controlling tty: {e}");
        sys::exit_now(HELPER_FAILED);
    }
    let to_c = |v: &[String]| -> Vec<CString> {
        v.iter()
            .filter_map(|s| CString::new(s.as_str()).ok())
            .collect()
    };
    let (argv, env) = (to_c(&launch.argv), to_c(&launch.env));
    for candidate in to_c(&launch.candidates) {
        let e = sys::execve(&candidate, &argv, &env);
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            _ => {
                eprintln!("vsctl exec: {}: {e}", candidate.to_string_lossy());
                sys::exit_now(126);
            }
        }
    }
    eprintln!("vsctl exec: {}: command not found", launch.argv[0]);
    sys::exit_now(127)
}

/// Copy between the caller's terminal (raw mode) and the pty master until
/// the command's side closes.
fn relay_pty(master: &OwnedFd) {
    let stdin = std::io::stdin();
    let _raw = super::console::RawMode::enter(std::io::stdin());
    let stdout = std::io::stdout();
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        if let Err(e) = poll(&mut fds, PollTimeout::NONE) {
            if e == nix::Error::EINTR {
                continue;
            }
            break;
        }
        let m = fds[0].revents().unwrap_or(PollFlags::empty());
        let i = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        if m.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            match nix::unistd::read(master, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = nix::unistd::write(&stdout, &buf[..n]);
                }
                _ => break, // EIO: the last slave fd closed
            }
        }
        if i.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = nix::unistd::write(master, &buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
    }
}

/// The most a pipe can hold (Linux's default `fs.pipe-max-size`).
const MAX_PIPE_BYTES: usize = 1 << 20;

/// Write all of `data` to `fd` (blocking), false once the reader is gone.
fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Relay this process's stdin to the command's and the command's stdout and
/// stderr to this process's own, until both of the command's outputs end
/// or the helper exits (then what is already in the pipes is still
/// copied, but a background process the command left holding them does
/// not keep `exec` waiting). Input the command does not read waits in its
/// pipe; a command that closed its stdin gets no more.
fn relay_pipes(stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd, helper: Option<&OwnedFd>) {
    let (my_in, my_out, my_err) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let mut to_command: Option<OwnedFd> = Some(stdin);
    let mut pending: Vec<u8> = Vec::new();
    let mut outputs: [Option<(OwnedFd, BorrowedFd<'_>)>; 2] = [
        Some((stdout, my_out.as_fd())),
        Some((stderr, my_err.as_fd())),
    ];
    let mut reading_stdin = true;
    let mut buf = vec![0u8; 64 * 1024];
    let set_nonblocking = |fd: BorrowedFd<'_>| {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    };
    if let Some(fd) = &to_command {
        set_nonblocking(fd.as_fd());
    }
    let mut helper_done = false;
    while outputs.iter().any(Option::is_some) {
        if helper_done {
            // Copy what the command wrote before it ended (at most what a
            // pipe holds, so a process it left writing cannot keep this
            // going), then stop.
            for slot in outputs.iter_mut() {
                if let Some((from, to)) = slot.take() {
                    set_nonblocking(from.as_fd());
                    let mut left = MAX_PIPE_BYTES;
                    let chunk = buf.len();
                    while let Ok(n) = nix::unistd::read(&from, &mut buf[..left.min(chunk)]) {
                        if n == 0 || !write_all(to, &buf[..n]) {
                            break;
                        }
                        left -= n;
                        if left == 0 {
                            break;
                        }
                    }
                }
            }
            break;
        }
        // Poll set: [outputs..., command's stdin (when input waits),
        // my stdin (when nothing waits), helper].
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(5);
        let mut kinds: Vec<usize> = Vec::with_capacity(5);
        for (i, slot) in outputs.iter().enumerate() {
            if let Some((from, _)) = slot {
                fds.push(PollFd::new(from.as_fd(), PollFlags::POLLIN));
                kinds.push(i);
            }
        }
        if let Some(fd) = &to_command {
            if !pending.is_empty() {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                kinds.push(2);
            } else if reading_stdin {
                fds.push(PollFd::new(my_in.as_fd(), PollFlags::POLLIN));
                kinds.push(3);
            }
        }
        if let Some(h) = helper {
            fds.push(PollFd::new(h.as_fd(), PollFlags::POLLIN));
            kinds.push(4);
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<(usize, PollFlags)> = fds
            .iter()
            .zip(&kinds)
            .map(|(f, k)| (*k, f.revents().unwrap_or(PollFlags::empty())))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        drop(fds);
        for (kind, _) in ready {
            match kind {
                0 | 1 => {
                    let (from, to) = outputs[kind].as_ref().expect("polled");
                    match nix::unistd::read(from, &mut buf) {
                        Ok(0) => outputs[kind] = None,
                        // A gone reader of ours: keep draining, so the
                        // command is not stopped by a full pipe.
                        Ok(n) => {
                            let _ = write_all(*to, &buf[..n]);
                        }
                        Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                        Err(_) => outputs[kind] = None,
                    }
                }
                2 => {
                    let fd = to_command.as_ref().expect("polled");
                    match nix::unistd::write(fd, &pending) {
                        Ok(n) => {
                            pending.drain(..n);
                        }
                        Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                        // EPIPE: the command closed its stdin.
                        Err(_) => {
                            to_command = None;
                            pending.clear();
                        }
                    }
                    if pending.is_empty() && !reading_stdin {
                        to_command = None;
                    }
                }
                3 => match nix::unistd::read(&my_in, &mut buf) {
                    Ok(0) | Err(_) => {
                        reading_stdin = false;
                        to_command = None; // end of input for the command
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                },
                _ => helper_done = true,
            }
        }
    }
}

/// Write files inside a running guest, as the guest's root in its own user
/// and mount namespaces: ownership comes out as the guest expects whatever
/// its rootfs is (shifted tree, idmapped overlay), and overlay guests are
/// written through overlayfs rather than behind its back. Paths are still
/// resolved with `RESOLVE_IN_ROOT` ([`crate::rootfs::guestfile`]), so a
/// symlink in the guest cannot send the write anywhere the guest could not
/// write itself.
pub fn write_files(run_dir: &Path, files: &[(&str, Vec<u8>, u32)]) -> Result<(), RuntimeError> {
    if sys::thread_count() > 1 {
        return Err(RuntimeError::Threaded("runtime::write_files"));
    }
    let st = read_state(run_dir)?.ok_or_else(|| RuntimeError::NotRunning(run_dir.to_path_buf()))?;
    let spec = read_spec(run_dir)?;
    let pidfd = sys::pidfd_open(st.init_pid)
        .map_err(|_| RuntimeError::NotRunning(run_dir.to_path_buf()))?;
    if !same_process(st.init_pid, st.init_start) {
        return Err(RuntimeError::NotRunning(run_dir.to_path_buf()));
    }
    let mut flags = CloneFlags::CLONE_NEWNS;
    if spec.userns.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RuntimeError::Io {
            what: "pipe".into(),
            source: e.into(),
        })?;
    let helper = sys::fork().map_err(|e| RuntimeError::Io {
        what: "fork file writer".into(),
        source: e,
    })?;
    if helper == 0 {
        drop(err_r);
        // About to be root of the guest's user namespace: nothing of the
        // guest may ptrace or open it (it is outside the guest's pid
        // namespace too, so this is a second layer).
        let _ = sys::set_undumpable();
        let fail = |msg: String| -> ! {
            let _ = nix::unistd::write(&err_w, msg.as_bytes());
            sys::exit_now(1)
        };
        if let Err(e) = nix::sched::setns(pidfd.as_fd(), flags) {
            fail(format!("join namespaces of guest {}: {e}", st.name));
        }
        // Become the guest's root (its uid 0, mapped to the guest's range),
        // so new files are owned by it rather than by an unmapped id.
        if spec.userns.is_some() {
            let zero_g = Gid::from_raw(0);
            let zero_u = Uid::from_raw(0);
            if let Err(e) = nix::unistd::setresgid(zero_g, zero_g, zero_g)
                .and_then(|()| nix::unistd::setresuid(zero_u, zero_u, zero_u))
            {
                fail(format!("become root of guest {}: {e}", st.name));
            }
        }
        for (path, contents, mode) in files {
            if let Err(e) =
                crate::rootfs::guestfile::write(Path::new("/"), path, contents, *mode, None)
            {
                fail(e.to_string());
            }
        }
        sys::exit_now(0)
    }
    drop(err_w);
    let mut message = String::new();
    let _ = std::io::Read::read_to_string(&mut std::fs::File::from(err_r), &mut message);
    match wait_code(helper) {
        0 => Ok(()),
        _ => Err(RuntimeError::Io {
            what: format!("guest {}: write files", st.name),
            source: std::io::Error::other(message),
        }),
    }
}
