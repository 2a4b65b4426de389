//! Running a command inside a running guest.
//!
//! The caller forks a helper that joins the guest's cgroup and, through a
//! pidfd on the guest's init, all of its namespaces at once. Joining a pid
//! namespace only applies to children, so the helper forks the real process,
//! which becomes root of the guest (its uid 0, mapped or not), drops to the
//! guest's capability bounding set, installs the guest's seccomp filter,
//! closes every inherited descriptor but stdio and execs. Exit codes follow
//! podman: the command's own code, 128+N when killed by signal N, 126 when
//! the command cannot be executed, 127 when it is not found.

use super::{RuntimeError, read_spec, read_state, same_process};
use crate::sys;
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

fn wait_code(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => return c,
            Ok(WaitStatus::Signaled(_, s, _)) => return 128 + s as i32,
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return 125,
        }
    }
}

/// Candidate paths for argv[0], searched in the guest's PATH like execvp.
fn candidates(cmd: &str, path: &str) -> Vec<CString> {
    if cmd.contains('/') {
        return CString::new(cmd).into_iter().collect();
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .filter_map(|d| CString::new(format!("{d}/{cmd}")).ok())
        .collect()
}

/// Run `argv` inside the guest whose run directory is `run_dir` and return
/// its exit code. With `tty` (and a terminal on stdin) the command gets a
/// pty of its own and the caller's terminal is relayed in raw mode.
pub fn exec(run_dir: &Path, argv: &[String], tty: bool) -> Result<i32, RuntimeError> {
    if argv.is_empty() {
        return Err(RuntimeError::Invalid("exec needs a command".into()));
    }
    if sys::thread_count() > 1 {
        return Err(RuntimeError::Threaded("runtime::exec"));
    }
    let st = read_state(run_dir)?.ok_or_else(|| RuntimeError::NotRunning(run_dir.to_path_buf()))?;
    let spec = read_spec(run_dir)?;
    // Everything computed before forking.
    let caps = crate::caps::bounding_set(
        spec.userns.is_some(),
        spec.seccomp,
        &spec.caps_add,
        &spec.caps_drop,
    )?;
    let last_cap = crate::caps::last_cap();
    let prog = spec
        .seccomp
        .then(|| crate::seccomp::build(crate::seccomp::GuestKind::of(spec.userns.is_some())));
    let env_pairs = super::plan::environment(&spec, "");
    let guest_path = env_pairs
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let env: Vec<CString> = env_pairs
        .iter()
        .filter(|(k, _)| k != "container_uuid")
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let cargv: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_str())
                .map_err(|_| RuntimeError::Invalid(format!("argument {a:?} contains NUL")))
        })
        .collect::<Result<_, _>>()?;
    let cands = candidates(&argv[0], &guest_path);

    let pidfd = sys::pidfd_open(st.init_pid)
        .map_err(|_| RuntimeError::NotRunning(run_dir.to_path_buf()))?;
    if !same_process(st.init_pid, st.init_start) {
        return Err(RuntimeError::NotRunning(run_dir.to_path_buf()));
    }
    let mgr = st.cgroup.open()?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    if spec.userns.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let use_pty = tty && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    // The pty comes from the guest's own devpts instance, so the command's
    // terminal has a name inside the guest (tty, ssh-less logins, job control).
    let pty = if use_pty {
        let ptmx = std::path::PathBuf::from(format!("/proc/{}/root/dev/pts/ptmx", st.init_pid));
        let (master, slave) = sys::open_pty_in(&ptmx).map_err(|e| RuntimeError::Io {
            what: format!("allocate pty in guest {}", st.name),
            source: e,
        })?;
        let _ = sys::copy_winsize(0, slave.as_raw_fd());
        if let Some(u) = spec.userns {
            // Owned by the guest's root rather than by an unmapped uid.
            let _ = nix::unistd::fchown(
                &slave,
                Some(Uid::from_raw(u.host_base)),
                Some(Gid::from_raw(u.host_base + 5)),
            );
        }
        Some(nix::pty::OpenptyResult { master, slave })
    } else {
        None
    };

    // On v2 a systemd guest's own cgroup takes no new members once systemd
    // has enabled controllers below it: join init's (leaf) cgroup instead.
    let leaf_procs =
        crate::cgroup::exec_leaf(&*mgr, &st.name, st.init_pid).map(|d| d.join("cgroup.procs"));

    let helper = sys::fork().map_err(|e| RuntimeError::Io {
        what: "fork exec helper".into(),
        source: e,
    })?;
    if helper == 0 {
        let fail = |msg: String| -> ! {
            eprintln!("vsctl exec: {msg}");
            sys::exit_now(125)
        };
        let joined = match &leaf_procs {
            Some(p) => std::fs::write(p, std::process::id().to_string())
                .map_err(|e| format!("cgroup {}: {e}", p.display())),
            None => mgr
                .add_process(&st.name, std::process::id() as i32)
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = joined {
            fail(e);
        }
        if let Err(e) = nix::sched::setns(pidfd.as_fd(), flags) {
            fail(format!("join namespaces of guest {}: {e}", st.name));
        }
        drop(pidfd);
        let child = match sys::fork() {
            Ok(c) => c,
            Err(e) => fail(format!("fork: {e}")),
        };
        if child != 0 {
            drop(pty);
            sys::exit_now(wait_code(child));
        }
        let setup = || -> Result<(), String> {
            sys::reset_signals();
            nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
            nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .map_err(|e| format!("setresgid: {e}"))?;
            nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .map_err(|e| format!("setresuid: {e}"))?;
            if let Some(p) = &pty {
                nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
                sys::set_controlling_tty(p.slave.as_raw_fd())
                    .map_err(|e| format!("controlling tty: {e}"))?;
                nix::unistd::dup2_stdin(&p.slave).map_err(|e| format!("dup2: {e}"))?;
                nix::unistd::dup2_stdout(&p.slave).map_err(|e| format!("dup2: {e}"))?;
                nix::unistd::dup2_stderr(&p.slave).map_err(|e| format!("dup2: {e}"))?;
            }
            nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
            let _ = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                1024,
                524_288,
            );
            crate::caps::apply(caps, last_cap).map_err(|e| e.to_string())?;
            if let Some(p) = &prog {
                crate::seccomp::install(p).map_err(|e| format!("seccomp: {e}"))?;
            }
            sys::close_fds_except(3, &[]).map_err(|e| format!("close_range: {e}"))?;
            Ok(())
        };
        if let Err(e) = setup() {
            fail(e);
        }
        let mut code = 127;
        for c in &cands {
            let e = sys::execve(c, &cargv, &env);
            match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
                _ => {
                    code = 126;
                    eprintln!("vsctl exec: {}: {e}", c.to_string_lossy());
                    break;
                }
            }
        }
        if code == 127 {
            eprintln!("vsctl exec: {}: command not found", argv[0]);
        }
        sys::exit_now(code);
    }
    drop(pidfd);
    if let Some(p) = pty {
        let nix::pty::OpenptyResult { master, slave } = p;
        drop(slave);
        relay(&master);
    }
    Ok(wait_code(helper))
}

/// Copy between the caller's terminal (raw mode) and the pty master until
/// the command's side closes.
fn relay(master: &OwnedFd) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
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
