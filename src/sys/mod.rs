//! Raw system calls that neither std nor nix wrap safely.
//!
//! This is the one place where vsctl's runtime talks to the kernel through
//! `libc::syscall` and friends: clone3 with namespace flags, pidfds, the
//! capability and seccomp interfaces, close_range, controlling terminals.
//! Each wrapper is tiny, checks the return value and turns it into an
//! `io::Error`; callers above this module never write `unsafe`.
//!
//! What this module must never do: hold policy. It does not decide which
//! namespaces, capabilities or syscalls a guest gets; it only performs the
//! call it is given. Keep every unsafe block small with a `SAFETY:` line.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

mod sealed_exe;
pub use sealed_exe::sealed_self_exe;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// What [`clone3`] returned on each side.
#[derive(Debug)]
pub enum Cloned {
    /// We are the new process.
    Child,
    /// We are the caller; the child's pid (in our pid namespace) and a pidfd.
    Parent { pid: i32, pidfd: OwnedFd },
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3(2) without a new stack: fork-like semantics (the child continues
/// here on a copy of the address space) plus namespace flags and a pidfd.
///
/// With `cgroup`, a cgroup v2 directory, the child starts as a member of
/// that cgroup (CLONE_INTO_CGROUP): no migration afterwards, so none of the
/// RCU grace period a write to `cgroup.procs` can wait for.
///
/// Only call while the process is single-threaded: the child is a copy of
/// this thread alone, and any lock another thread held stays locked in it.
pub fn clone3(flags: u64, exit_signal: i32, cgroup: Option<RawFd>) -> io::Result<Cloned> {
    /// From linux/sched.h (5.7+); not in every libc crate release.
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: exit_signal as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: args is a valid clone_args of the size passed; without CLONE_VM
    // and with stack 0 the child gets a private copy of our memory and stack
    // and returns 0 here, exactly like fork(2).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let pid = check(ret)?;
    if pid == 0 {
        Ok(Cloned::Child)
    } else {
        // SAFETY: the kernel wrote a fresh pidfd we now own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok(Cloned::Parent {
            pid: pid as i32,
            pidfd,
        })
    }
}

/// fork(2) for a single-threaded caller. Returns 0 in the child.
pub fn fork() -> io::Result<i32> {
    // SAFETY: callers only fork while single-threaded (the runtime checks
    // /proc/self/status before start/exec), so the child inherits no lock held
    // by another thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Leave immediately without running destructors or atexit handlers: used in
/// forked children, which must not flush the parent's buffers twice.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// pidfd_open(2): a handle on a process that stays valid across pid reuse.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel returned a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_send_signal(2): signal exactly the process the pidfd refers to.
pub fn pidfd_send_signal(pidfd: RawFd, sig: i32) -> io::Result<()> {
    // SAFETY: null siginfo is allowed (behaves like kill(2)).
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// close_range(2) with flags (e.g. CLOSE_RANGE_CLOEXEC = 4).
pub fn close_range(first: u32, last: u32, flags: u32) -> io::Result<()> {
    // SAFETY: closing descriptors cannot violate memory safety of this
    // process as long as no live OwnedFd refers to them; callers close only
    // ranges above the fds they keep, right before exec.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) })?;
    Ok(())
}

/// Close every descriptor >= `first` except those in `keep` (sorted or not).
pub fn close_fds_except(first: RawFd, keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&f| f >= first).collect();
    keep.sort_unstable();
    let mut lo = first;
    for k in keep {
        if k > lo {
            close_range(lo as u32, (k - 1) as u32, 0)?;
        }
        lo = k + 1;
    }
    close_range(lo as u32, u32::MAX, 0)
}

/// prctl(PR_CAPBSET_DROP, cap).
pub fn capbset_drop(cap: u32) -> io::Result<()> {
    // SAFETY: integer-only prctl.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    check(r as libc::c_long)?;
    Ok(())
}

/// prctl(PR_CAPBSET_READ, cap): whether `cap` is in the bounding set.
/// Errors (EINVAL) for capabilities this kernel does not know.
pub fn capbset_read(cap: u32) -> io::Result<bool> {
    // SAFETY: integer-only prctl.
    let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
    Ok(check(r as libc::c_long)? == 1)
}

/// Clear the ambient capability set.
pub fn cap_ambient_clear() -> io::Result<()> {
    // SAFETY: integer-only prctl.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    check(r as libc::c_long)?;
    Ok(())
}

/// The three 64-bit capability sets of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// capget(2) for the calling thread.
pub fn capget() -> io::Result<CapSets> {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: header and a two-element data array as _LINUX_CAPABILITY_VERSION_3 requires.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) })?;
    let join = |lo: u32, hi: u32| (lo as u64) | ((hi as u64) << 32);
    Ok(CapSets {
        effective: join(d[0].effective, d[1].effective),
        permitted: join(d[0].permitted, d[1].permitted),
        inheritable: join(d[0].inheritable, d[1].inheritable),
    })
}

/// capset(2) for the calling thread.
pub fn capset(s: CapSets) -> io::Result<()> {
    let mut h = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(s.effective);
    let (p0, p1) = split(s.permitted);
    let (i0, i1) = split(s.inheritable);
    let d = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: header and two-element data array, read-only for the kernel.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) })?;
    Ok(())
}

/// Install a classic-BPF seccomp filter with seccomp(2), without setting
/// no_new_privs: the caller must hold CAP_SYS_ADMIN in its user namespace.
/// (Guests keep working setuid binaries, unlike under NO_NEW_PRIVS.)
pub fn seccomp_set_filter(prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `prog`, alive for the duration of the call; the
    // kernel copies the program.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    })?;
    Ok(())
}

/// Make `fd` (a terminal) our controlling terminal (after setsid).
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument, no pointers.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as libc::c_long)?;
    Ok(())
}

/// Copy the window size of terminal `from` to terminal `to`.
pub fn copy_winsize(from: RawFd, to: RawFd) -> io::Result<()> {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: ws is a valid winsize for both ioctls.
    check(unsafe { libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) } as libc::c_long)?;
    // SAFETY: as above.
    check(unsafe { libc::ioctl(to, libc::TIOCSWINSZ, &ws) } as libc::c_long)?;
    Ok(())
}

/// Name of the pty slave belonging to master `fd` (ptsname_r).
pub fn ptsname(fd: RawFd) -> io::Result<String> {
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: buf is writable and its length is passed.
    let r = unsafe { libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: ptsname_r wrote a NUL-terminated string into buf.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Ok(s.to_string_lossy().into_owned())
}

/// Number of threads of the calling process (from /proc/self/status): fork
/// and setns(CLONE_NEWUSER/NEWNS) need a single-threaded caller.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// execve(2) with prepared C strings; returns only on failure.
pub fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    match nix::unistd::execve(path, argv, envp) {
        Ok(never) => match never {},
        Err(e) => io::Error::from_raw_os_error(e as i32),
    }
}

/// execveat(2) of the file `fd` refers to (an O_PATH handle or a memfd,
/// see [`sealed_self_exe`]); returns only on failure.
pub fn execveat_fd(fd: RawFd, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: argv and envp are NULL-terminated arrays of pointers to
    // NUL-terminated strings that outlive the call; the empty path with
    // AT_EMPTY_PATH means the descriptor itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// prctl(PR_SET_DUMPABLE, 0): from now until the next exec, only a holder
/// of CAP_SYS_PTRACE in the user namespace this process's memory was
/// created in (the host's) may ptrace it or open its /proc/PID files
/// (exe, fd, mem, environ...). The kernel resets the flag when the
/// process's ids change and at exec, so callers set it again after both.
pub fn set_undumpable() -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } as libc::c_long)?;
    Ok(())
}

/// Put descriptors on fixed numbers for an exec (dup2 clears close-on-exec
/// on the copies). Every source is first moved above all targets, so
/// placing one can never clobber another still to be placed.
pub fn place_fds(fds: &[(std::os::fd::BorrowedFd<'_>, RawFd)]) -> io::Result<()> {
    let floor = fds.iter().map(|(_, t)| *t).max().unwrap_or(0) + 1;
    let mut moved = Vec::with_capacity(fds.len());
    for (fd, target) in fds {
        let high = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor))
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we now own.
        moved.push((unsafe { OwnedFd::from_raw_fd(high) }, *target));
    }
    for (fd, target) in &moved {
        // SAFETY: dup2 onto a plain integer slot; it closes whatever was
        // there, which callers reserve for this purpose before an exec.
        check(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(fd), *target) } as i64)?;
    }
    Ok(())
}

/// An anonymous in-memory file holding `data`, positioned at its start:
/// hands data of any size to an exec'd process as one descriptor.
pub fn memfd_with(name: &str, data: &[u8]) -> io::Result<OwnedFd> {
    use std::io::{Seek, Write};
    let cname =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: cname is a valid NUL-terminated string; flags are constants.
    let fd = check(unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) } as i64)?;
    // SAFETY: the kernel returned a new descriptor we now own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    file.write_all(data)?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// Unmap this process's clean, read-only file pages (code and read-only
/// data of the binary and its libraries) so that only what runs from now
/// on faults back in. Pages stay in the page cache; only this process's
/// resident set shrinks. Mappings holding any private (copied-on-write)
/// page, resident or swapped out, such as relocated RELRO data, are left
/// alone: dropping those would revert them to the file's contents.
/// Single-threaded callers only.
/// Returns the number of bytes of mappings dropped.
pub fn drop_clean_file_pages() -> io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut dropped = 0;
    let mut current: Option<(usize, usize, bool)> = None;
    // Private pages of the mapping being read: (resident "Anonymous:",
    // swapped "Swap:"), each None until its line is seen.
    type Private = (Option<u64>, Option<u64>);
    let mut flush = |vma: Option<(usize, usize, bool)>, private: Private| -> io::Result<()> {
        if let Some((start, end, clean_file)) = vma
            && clean_file
            && private == (Some(0), Some(0))
        {
            // SAFETY: [start, end) is a whole mapping of ours, read-only,
            // file-backed and without private pages: MADV_DONTNEED only
            // unmaps page-cache pages, which fault back in unchanged.
            check(unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            } as i64)?;
            dropped += end - start;
        }
        Ok(())
    };
    let kb = |rest: &str| {
        rest.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    let mut private: Private = (None, None);
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Anonymous:") {
            private.0 = Some(kb(rest).unwrap_or(1));
            continue;
        }
        if let Some(rest) = line.strip_prefix("Swap:") {
            private.1 = Some(kb(rest).unwrap_or(1));
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // A new mapping header: settle the previous one.
        flush(current.take(), private)?;
        private = (None, None);
        let perms = perms.as_bytes();
        let clean_file = perms.len() == 4 && perms[1] == b'-' && perms[3] == b'p' && inode != "0";
        current = Some((start, end, clean_file));
    }
    flush(current.take(), private)?;
    Ok(dropped)
}

/// Whether no process (or thread) with this pid exists any more, so that
/// scratch files named after it are stale. A pid that cannot be a process
/// (zero, negative) counts as present: nothing is ever cleaned for it.
pub fn pid_gone(pid: i32) -> bool {
    pid > 0
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

/// Borrow a raw descriptor the process keeps open until it execs or exits
/// (pipe ends and the console in forked children).
pub fn borrow_fd(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: callers only pass descriptors that stay open for the rest of
    // this (short-lived, pre-exec) process.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// Give a process about to exec a guest program pristine signal state: every
/// handler back to default (Rust ignores SIGPIPE, the supervisor blocks
/// SIGCHLD/SIGTERM) and an empty signal mask. Ignored dispositions and the
/// mask survive exec, so skipping this would hand them to the guest's init.
pub fn reset_signals() {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// What Rust's runtime does before `main` that vsctl needs, for its own
/// `main` that replaces the runtime's (see `src/main.rs`): descriptors 0-2
/// open (on /dev/null if the caller closed them, so no file this process
/// opens can become its stdout), and SIGPIPE ignored, so a write to a gone
/// reader fails with EPIPE instead of killing the process.
pub fn process_init() {
    use nix::sys::signal::{SigHandler, Signal};
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: fds is a valid array of three pollfd for the duration of the
    // call; poll only reports on the numbers (POLLNVAL for a closed one).
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0 {
        for f in fds.iter().filter(|f| f.revents & libc::POLLNVAL != 0) {
            // open() takes the lowest free descriptor, which is this closed
            // one; kept open for the process's lifetime on purpose.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                debug_assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&null), f.fd);
                std::mem::forget(null);
            }
        }
    }
    // SAFETY: installing SIG_IGN runs no code of ours in signal context.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// Let SIGPIPE end the process (ignored by default, which turns a closed
/// stdout into a panic on the next print).
pub fn default_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal};
    // SAFETY: installing SIG_DFL runs no code of ours in signal context.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Allocate a pty from a guest's own devpts instance: `root` is the guest's
/// root directory (e.g. `/proc/INIT/root` opened O_PATH), `ptmx` the path of
/// its ptmx below it. Returns (master, slave).
///
/// The guest owns that tree and may have put anything at that path: the
/// lookup stays inside `root` and follows no symlink (openat2
/// RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS), and only a devpts `ptmx`
/// character device is opened for reading and writing (a FIFO would block
/// the open, another device could act on it). The slave is opened with
/// TIOCGPTPEER, i.e. from the master itself, never by a path.
pub fn open_pty_in(
    root: std::os::fd::BorrowedFd<'_>,
    ptmx: &std::path::Path,
) -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use std::os::fd::AsRawFd;
    const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let path = openat2(root, ptmx, how).map_err(io::Error::from)?;
    let st = nix::sys::stat::fstat(&path).map_err(io::Error::from)?;
    let fs = nix::sys::statfs::fstatfs(&path).map_err(io::Error::from)?;
    let is_ptmx = st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && libc::major(st.st_rdev) == 5
        && libc::minor(st.st_rdev) == 2
        && fs.filesystem_type().0 as i64 == DEVPTS_SUPER_MAGIC;
    if !is_ptmx {
        return Err(io::Error::other(format!(
            "{} is not a devpts ptmx",
            ptmx.display()
        )));
    }
    use std::os::unix::fs::OpenOptionsExt;
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", path.as_raw_fd()))?
        .into();
    let m = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer.
    check(unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) } as libc::c_long)?;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd we own.
    let s = check(unsafe {
        libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    } as libc::c_long)?;
    // SAFETY: s is a fresh descriptor returned by the kernel.
    Ok((master, unsafe { OwnedFd::from_raw_fd(s as RawFd) }))
}

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _pad: [u64; 8],
}

#[repr(C)]
#[derive(Default)]
struct BpfProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: [u32; 11],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;

/// bpf(BPF_PROG_LOAD) for a program of `prog_type`; returns its fd.
/// On failure the verifier log is part of the error message.
pub fn bpf_prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[BpfInsn],
) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = BpfProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type,
        ..Default::default()
    };
    // SAFETY: attr points at the instructions, license and log buffer, all
    // alive for the call; the size passed is the struct's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut BpfProgLoadAttr,
            std::mem::size_of::<BpfProgLoadAttr>(),
        )
    };
    match check(r) {
        // SAFETY: a fresh fd returned by the kernel.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            let msg = String::from_utf8_lossy(&log[..end]).into_owned();
            Err(io::Error::new(
                e.kind(),
                format!("{e}; verifier: {}", msg.trim()),
            ))
        }
    }
}

/// bpf(BPF_PROG_ATTACH): attach program `prog` to cgroup directory `cgroup`.
pub fn bpf_prog_attach(cgroup: RawFd, prog: RawFd, attach_type: u32, flags: u32) -> io::Result<()> {
    let mut attr = BpfProgAttachAttr {
        target_fd: cgroup as u32,
        attach_bpf_fd: prog as u32,
        attach_type,
        attach_flags: flags,
        ..Default::default()
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix.
    check(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &mut attr as *mut BpfProgAttachAttr,
            std::mem::size_of::<BpfProgAttachAttr>(),
        )
    })?;
    Ok(())
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the mount at `path` (open_tree OPEN_TREE_CLONE), made
/// idmapped with the user namespace `userns` (mount_setattr
/// MOUNT_ATTR_IDMAP): files owned by host id N appear as the namespace's id N.
pub fn idmapped_tree(
    path: &std::path::Path,
    userns: RawFd,
    read_only: bool,
) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })?;
    // SAFETY: fresh fd from the kernel.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    set_mount_attrs(&tree, userns, read_only)?;
    Ok(tree)
}

/// Make the detached mount `tree` idmapped with the user namespace `userns`
/// (mount_setattr MOUNT_ATTR_IDMAP).
pub fn set_idmap(tree: &OwnedFd, userns: RawFd) -> io::Result<()> {
    set_mount_attrs(tree, userns, false)
}

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;

fn set_mount_attrs(tree: &OwnedFd, userns: RawFd, read_only: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns as u64,
    };
    // SAFETY: empty path with AT_EMPTY_PATH acts on the tree fd; attr is a
    // valid mount_attr of the size passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// A new, detached mount of a `fstype` filesystem (fsopen, fsconfig,
/// fsmount): `options` are `(key, Some(value))` strings or `(flag, None)`
/// flags, `source` among them for block filesystems. The mount is attached
/// nowhere; use it through the fd (as a directory fd), attach it with
/// [`move_mount_to`], or drop it to unmount.
pub fn mount_detached(fstype: &str, options: &[(&str, Option<&str>)]) -> io::Result<OwnedFd> {
    let cstr = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let t = cstr(fstype)?;
    // SAFETY: t is a valid NUL-terminated string for the call.
    let fsfd = check(unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fresh fd from the kernel.
    let fsfd = unsafe { OwnedFd::from_raw_fd(fsfd as RawFd) };
    use std::os::fd::AsRawFd;
    for (key, value) in options {
        let k = cstr(key)?;
        let v = value.map(cstr).transpose()?;
        let (cmd, vptr) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: k and v are NUL-terminated and outlive the call; a flag
        // takes a null value.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                cmd,
                k.as_ptr(),
                vptr,
                0,
            )
        })?;
    }
    // SAFETY: no pointers; the command acts on the fs context fd.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: no pointers; makes a mount of the created superblock.
    let m =
        check(unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

/// move_mount(2) a detached mount (fd) onto `target`.
pub fn move_mount_to(tree: RawFd, target: &std::path::Path) -> io::Result<()> {
    let t = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C strings; empty source path with F_EMPTY_PATH means the fd itself.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// move_mount(2) a detached mount (fd) onto the object `target` (an O_PATH
/// fd, resolved beforehand without leaving the guest root).
pub fn move_mount_onto(tree: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: empty C strings; both paths are the fds themselves
    // (F_EMPTY_PATH, T_EMPTY_PATH).
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            target,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Take ownership of a descriptor the kernel just installed (SCM_RIGHTS).
pub fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass only fresh descriptors nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_clean_file_pages_keeps_the_process_working() {
        // In a forked child: the test harness is multi-threaded, the child
        // is not.
        let (r, w) = nix::unistd::pipe().unwrap();
        let pid = fork().unwrap();
        if pid == 0 {
            let dropped = drop_clean_file_pages().unwrap_or(0);
            // Code, read-only data and relocated data all still work.
            let text = format!("{dropped} {}", ["a", "b"].join("-"));
            let ok = dropped > 0 && text.ends_with("a-b");
            let _ = nix::unistd::write(&w, if ok { b"y" } else { b"n" });
            exit_now(0);
        }
        drop(w);
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let mut answer = [0u8; 1];
        let n = nix::unistd::read(&r, &mut answer).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
        );
        assert_eq!(&answer[..n], b"y");
    }
}
