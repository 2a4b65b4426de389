//! Running build commands (mmdebstrap, `run = [...]` steps) in a throwaway
//! isolated context.
//!
//! A build step gets its own mount, UTS, IPC and PID namespaces; the network
//! stays the host's so apt can fetch. When a tree is given, the step is
//! chrooted into it with a fresh `/proc` and a tmpfs `/dev` holding only the
//! harmless nodes (null, zero, full, random, urandom, tty) bind-mounted from the
//! host. Every mount lives in the private mount namespace, so it disappears
//! with the step, even if vsctl is SIGKILLed: both forked processes ask for
//! `PR_SET_PDEATHSIG`, and the second one is PID 1 of the new PID namespace,
//! whose death makes the kernel kill everything left inside. That is what
//! makes a killed build leave nothing mounted and nothing running.
//!
//! This is the only module of `template` with unsafe code: `fork` and the
//! async-signal-safe sequence the child runs before `execve`. Everything the
//! child needs (C strings, pointer arrays) is prepared before forking,
//! because a child of a multi-threaded process must not allocate.
//!
//! It must never: mount anything in the caller's mount namespace, follow a
//! symlink in the tree to a mount point outside it (the parent checks that
//! `/dev` and `/proc` in the tree are real directories first), or run without
//! a PID namespace (stray daemons started by maintainer scripts must die with
//! the step).

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A command to run isolated.
#[derive(Debug, Clone)]
pub(crate) struct IsolatedCommand {
    /// Chroot into this tree (with /proc and a minimal /dev), or stay on the
    /// host filesystem (used for mmdebstrap itself).
    pub root: Option<PathBuf>,
    /// Program (absolute path, inside `root` when chrooted) and arguments.
    pub argv: Vec<String>,
    /// The full environment.
    pub env: Vec<(String, String)>,
    /// Hostname inside the UTS namespace.
    pub hostname: String,
}

const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn cstr(s: impl AsRef<[u8]>) -> std::io::Result<CString> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| std::io::Error::other("NUL byte in command or path"))
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    cstr(p.as_os_str().as_bytes())
}

/// Make sure `root/name` is a real directory (not a symlink), creating it.
fn ensure_real_dir(root: &Path, name: &str) -> std::io::Result<PathBuf> {
    let p = root.join(name);
    match fs::symlink_metadata(&p) {
        Ok(md) if md.is_dir() => Ok(p),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not a directory (a symlink or file); refusing to mount over it",
            p.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir(&p)?;
            Ok(p)
        }
        Err(e) => Err(e),
    }
}

struct Prepared {
    root: Option<CString>,
    dev: Option<CString>,
    proc_: Option<CString>,
    nodes: Vec<(CString, CString)>,
    dev_fd: Option<CString>,
    dev_pts: Option<CString>,
    dev_shm: Option<CString>,
    hostname: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// Run the command and return its exit status (128 + signal if killed).
pub(crate) fn run(cmd: &IsolatedCommand) -> std::io::Result<i32> {
    let mut prep = Prepared {
        root: None,
        dev: None,
        proc_: None,
        nodes: Vec::new(),
        dev_fd: None,
        dev_pts: None,
        dev_shm: None,
        hostname: cstr(&cmd.hostname)?,
        argv: cmd.argv.iter().map(cstr).collect::<Result<_, _>>()?,
        envp: cmd
            .env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
    };
    if prep.argv.is_empty() {
        return Err(std::io::Error::other("empty command"));
    }
    if let Some(root) = &cmd.root {
        let md = fs::symlink_metadata(root)?;
        if !md.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let dev = ensure_real_dir(root, "dev")?;
        let proc_ = ensure_real_dir(root, "proc")?;
        prep.root = Some(cpath(root)?);
        for n in DEV_NODES {
            prep.nodes
                .push((cstr(format!("/dev/{n}"))?, cpath(&dev.join(n))?));
        }
        prep.dev_fd = Some(cpath(&dev.join("fd"))?);
        prep.dev_pts = Some(cpath(&dev.join("pts"))?);
        prep.dev_shm = Some(cpath(&dev.join("shm"))?);
        prep.dev = Some(cpath(&dev)?);
        prep.proc_ = Some(cpath(&proc_)?);
    }
    let argv_ptrs: Vec<*const libc::c_char> = prep
        .argv
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = prep
        .envp
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };

    // SAFETY: the child only calls async-signal-safe functions on data
    // prepared above and never returns (it ends in execve or _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child; see `intermediate`.
        unsafe { intermediate(&prep, parent, &argv_ptrs, &envp_ptrs) }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(decode_status(status))
}

fn decode_status(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Write a static message to stderr and exit: the only error reporting a
/// forked child can do safely.
unsafe fn die(msg: &[u8], code: i32) -> ! {
    // SAFETY: write(2) and _exit(2) are async-signal-safe; msg is valid.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(code)
    }
}

/// First child: enters the new namespaces, then forks PID 1 of the new PID
/// namespace and relays its exit status.
///
/// # Safety
/// Must only be called in a freshly forked child.
unsafe fn intermediate(
    prep: &Prepared,
    parent: libc::pid_t,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: all calls are async-signal-safe syscalls on valid pointers.
    unsafe {
        // Die with vsctl; re-check the parent to close the race where it died
        // before the prctl.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(125);
        }
        let flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
        if libc::unshare(flags) != 0 {
            die(b"vsctl build: unshare(mnt,uts,ipc,pid) failed\n", 125);
        }
        let pid = libc::fork();
        if pid < 0 {
            die(b"vsctl build: fork failed\n", 125);
        }
        if pid == 0 {
            init(prep, argv, envp);
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(125);
            }
        }
        libc::_exit(decode_status(status))
    }
}

/// PID 1 of the new PID namespace: set up mounts, chroot, exec.
///
/// # Safety
/// Must only be called in a freshly forked child.
unsafe fn init(prep: &Prepared, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> ! {
    // SAFETY: all calls are async-signal-safe syscalls on NUL-terminated
    // strings and null-terminated pointer arrays prepared before fork.
    unsafe {
        // Our parent is outside our PID namespace, so getppid() reads 0 and
        // the death race cannot be re-checked as in `intermediate`. The
        // window is the few instructions since fork: the intermediate only
        // dies by a signal, and this is the first thing we do.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        let null = std::ptr::null::<libc::c_char>();
        // Nothing we mount may propagate back to the host.
        if libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            die(b"vsctl build: making mounts private failed\n", 125);
        }
        libc::sethostname(prep.hostname.as_ptr(), prep.hostname.as_bytes().len());
        if let (Some(root), Some(dev), Some(proc_)) = (&prep.root, &prep.dev, &prep.proc_) {
            if libc::mount(
                c"tmpfs".as_ptr(),
                dev.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"mode=755,size=1m".as_ptr().cast(),
            ) != 0
            {
                die(b"vsctl build: mounting tmpfs on /dev failed\n", 125);
            }
            for (src, dst) in &prep.nodes {
                let fd = libc::open(
                    dst.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o666,
                );
                if fd < 0 {
                    die(b"vsctl build: creating a /dev node failed\n", 125);
                }
                libc::close(fd);
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    die(b"vsctl build: bind-mounting a /dev node failed\n", 125);
                }
            }
            if let Some(p) = &prep.dev_fd {
                libc::symlink(c"/proc/self/fd".as_ptr(), p.as_ptr());
            }
            if let Some(p) = &prep.dev_pts {
                libc::mkdir(p.as_ptr(), 0o755);
            }
            if let Some(p) = &prep.dev_shm {
                libc::mkdir(p.as_ptr(), 0o1777);
            }
            if libc::mount(
                c"proc".as_ptr(),
                proc_.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) != 0
            {
                die(b"vsctl build: mounting /proc failed\n", 125);
            }
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                die(b"vsctl build: chroot into the staging tree failed\n", 125);
            }
        }
        // Build output is log output: keep stdout for vsctl's data.
        libc::dup2(2, 1);
        libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
        die(b"vsctl build: exec failed\n", 127)
    }
}
