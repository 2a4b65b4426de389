//! `vsctl console`: attaching a terminal to a running guest's console.
//!
//! The supervisor holds the console pty master. It listens on a unix stream
//! socket `RUN_DIR/console.sock` (mode 0600, host root's) and serves one
//! client at a time from its poll loop: what the client sends goes to the
//! pty master (the guest's /dev/console input), what the guest writes to
//! its console goes to the console log and to the client.
//!
//! The protocol is a greeting line and then raw bytes both ways: on accept
//! the supervisor writes `vsctl-console ok\n`, or `vsctl-console busy\n`
//! and hangs up when another client is attached (the second client is
//! refused, the first keeps the console).
//!
//! The supervisor never blocks on a client: output is sent with
//! MSG_DONTWAIT and whatever the client's socket buffer cannot take is
//! dropped for that client (the console log still gets all of it); input
//! is read only while the previous chunk has been written to the pty, so a
//! guest that does not read its console slows the client, not init.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{GuestRuntimeState, RuntimeError};

/// The socket's name in the guest's run directory.
pub const SOCKET_NAME: &str = "console.sock";
const GREETING_OK: &[u8] = b"vsctl-console ok\n";
const GREETING_BUSY: &[u8] = b"vsctl-console busy\n";
/// Ctrl-a: the escape key of the client (`Ctrl-a q` detaches).
pub const ESCAPE: u8 = 0x01;

pub fn host_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// `/proc/self/fd/N/NAME` for a directory opened as N: unix socket paths
/// are limited to 107 bytes, run directories are not.
fn short_path(dir: &OwnedFd, path: &Path) -> Result<nix::sys::socket::UnixAddr, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: no file name", path.display()))?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    nix::sys::socket::UnixAddr::new(&short).map_err(|e| format!("{}: {e}", path.display()))
}

fn open_parent(path: &Path) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    let dir = path.parent().unwrap_or(Path::new("/"));
    nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", dir.display()))
}

/// Bind `fd` at `path` (replacing a stale socket) with mode 0600: the
/// umask is tightened around bind(2), so there is no window in which
/// others could connect. The supervisor is single-threaded.
pub(super) fn bind_private(fd: &OwnedFd, path: &Path) -> Result<(), String> {
    use nix::sys::stat::{Mode, umask};
    let dir = open_parent(path)?;
    let addr = short_path(&dir, path)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("remove stale {}: {e}", path.display())),
    }
    let old = umask(Mode::from_bits_truncate(0o177));
    let res = nix::sys::socket::bind(fd.as_raw_fd(), &addr);
    umask(old);
    res.map_err(|e| format!("bind {}: {e}", path.display()))
}

/// The supervisor's side: the listening socket and at most one client.
pub(super) struct ConsoleServer {
    listener: UnixListener,
    client: Option<UnixStream>,
    /// Client input not yet written to the pty master.
    pending: [u8; 1024],
    pending_start: usize,
    pending_end: usize,
}

impl ConsoleServer {
    pub fn listen(run_dir: &Path) -> Result<ConsoleServer, String> {
        use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, listen, socket};
        let path = host_path(run_dir);
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("console socket: {e}"))?;
        bind_private(&fd, &path)?;
        listen(&fd, Backlog::new(4).unwrap_or(Backlog::MAXCONN))
            .map_err(|e| format!("listen on {}: {e}", path.display()))?;
        Ok(ConsoleServer {
            listener: UnixListener::from(fd),
            client: None,
            pending: [0; 1024],
            pending_start: 0,
            pending_end: 0,
        })
    }

    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    pub fn client(&self) -> Option<BorrowedFd<'_>> {
        self.client.as_ref().map(|c| c.as_fd())
    }

    /// Whether client input waits for the pty (poll the master for POLLOUT,
    /// not the client for POLLIN).
    pub fn has_pending(&self) -> bool {
        self.pending_start < self.pending_end
    }

    /// The listener is readable: take the client, or refuse it.
    pub fn accept(&mut self) {
        while let Ok((fd, _)) = self.listener.accept() {
            if fd.set_nonblocking(true).is_err() {
                continue;
            }
            if self.client.is_some() {
                let _ = send_nowait(&fd, GREETING_BUSY);
                continue; // dropped: closed
            }
            if send_nowait(&fd, GREETING_OK).is_ok() {
                self.client = Some(fd);
                self.pending_start = 0;
                self.pending_end = 0;
            }
        }
    }

    /// Console output: to the client if it keeps up, else dropped for it.
    pub fn output(&mut self, buf: &[u8]) {
        if let Some(c) = &self.client {
            match send_nowait(c, buf) {
                Ok(_) | Err(nix::Error::EAGAIN) => {}
                Err(_) => self.hang_up(),
            }
        }
    }

    /// The client is readable (or hung up): read a chunk and write what the
    /// pty takes now.
    pub fn input(&mut self, master: BorrowedFd) {
        let Some(c) = &self.client else { return };
        if self.has_pending() {
            return;
        }
        match nix::sys::socket::recv(
            c.as_raw_fd(),
            &mut self.pending,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => self.hang_up(),
            Ok(n) => {
                self.pending_start = 0;
                self.pending_end = n;
                self.flush(master);
            }
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => {}
            Err(_) => self.hang_up(),
        }
    }

    /// Write pending client input to the pty master without blocking.
    pub fn flush(&mut self, master: BorrowedFd) {
        while self.has_pending() {
            match nix::unistd::write(master, &self.pending[self.pending_start..self.pending_end]) {
                Ok(n) if n > 0 => self.pending_start += n,
                Err(nix::Error::EINTR) => {}
                _ => return, // EAGAIN: the guest reads its console later
            }
        }
    }

    pub fn hang_up(&mut self) {
        self.client = None;
        self.pending_start = 0;
        self.pending_end = 0;
    }
}

fn send_nowait(fd: &impl AsRawFd, buf: &[u8]) -> nix::Result<usize> {
    use nix::sys::socket::{MsgFlags, send};
    send(
        fd.as_raw_fd(),
        buf,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
}

/// The escape filter of the client: `Ctrl-a q` detaches, `Ctrl-a Ctrl-a`
/// sends one Ctrl-a, Ctrl-a before anything else sends both bytes.
#[derive(Debug, Default)]
pub struct Escape {
    armed: bool,
}

impl Escape {
    /// Append what to send for `input` to `out`; true when the user asked
    /// to detach (the rest of `input` is dropped).
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.armed {
                self.armed = false;
                match b {
                    b'q' | b'Q' => return true,
                    ESCAPE => out.push(ESCAPE),
                    other => out.extend([ESCAPE, other]),
                }
            } else if b == ESCAPE {
                self.armed = true;
            } else {
                out.push(b);
            }
        }
        false
    }
}

/// How an attach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// Ctrl-a q.
    Escape,
    /// Standard input ended and the console went quiet.
    InputEnded,
    /// The supervisor hung up: the guest stopped.
    GuestEnded,
    /// `AttachOptions::timeout` passed.
    TimedOut,
}

/// Options of [`attach`].
#[derive(Debug, Clone, Copy)]
pub struct AttachOptions {
    /// After standard input ends: detach once no output came for this long.
    pub idle: Duration,
    /// Detach after this long in any case (None: never).
    pub timeout: Option<Duration>,
}

/// Puts a terminal in raw mode and restores it when dropped (also on
/// errors and panics). `vsctl console` and `vsctl exec` with a pty use it.
pub(super) struct RawMode {
    tty: std::io::Stdin,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// None when `tty` is not a terminal (nothing to restore then).
    pub(super) fn enter(tty: std::io::Stdin) -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let saved = tcgetattr(tty.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(tty.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { tty, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(self.tty.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

fn console_err(name: &str, what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Console {
        name: name.to_string(),
        msg: what.to_string(),
    }
}

/// Attach this process's stdin/stdout to the console of the running guest
/// in `run_dir`. Prints a hint on stderr once connected.
pub fn attach(run_dir: &Path, name: &str, opts: AttachOptions) -> Result<Detached, RuntimeError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::IsTerminal;
    if !matches!(super::status(run_dir)?, GuestRuntimeState::Running { .. }) {
        return Err(RuntimeError::NotRunning(run_dir.to_path_buf()));
    }
    let path = host_path(run_dir);
    let sock = connect(&path).map_err(|e| console_err(name, e))?;
    // The greeting, byte by byte up to its newline (it is short).
    let mut greeting = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut byte = [0u8; 1];
    while !greeting.ends_with(b"\n") && greeting.len() < 64 {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let ms =
            PollTimeout::try_from(left.as_millis().min(5000) as i32).unwrap_or(PollTimeout::ZERO);
        match poll(&mut fds, ms) {
            Ok(0) => return Err(console_err(name, "the supervisor did not answer")),
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(console_err(name, e)),
        }
        match nix::unistd::read(&sock, &mut byte) {
            Ok(0) => break,
            Ok(_) => greeting.push(byte[0]),
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(console_err(name, e)),
        }
    }
    if greeting == GREETING_BUSY {
        return Err(console_err(
            name,
            "another client is attached (one at a time; detach it with Ctrl-a q)",
        ));
    }
    if greeting != GREETING_OK {
        return Err(console_err(name, "unexpected answer from the supervisor"));
    }
    let stdin = std::io::stdin();
    let is_tty = stdin.is_terminal();
    eprintln!("Connected to guest {name}'s console; type Ctrl-a q to detach");
    let _raw = if is_tty {
        RawMode::enter(std::io::stdin())
    } else {
        None
    };
    let mut stdout = std::io::stdout().lock();
    let mut escape = Escape::default();
    let mut buf = [0u8; 8192];
    let mut send_buf = Vec::with_capacity(buf.len() * 2);
    let mut stdin_open = true;
    let mut last_output = Instant::now();
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    loop {
        // The nearest of: the idle limit once stdin ended, the deadline.
        let mut wait: Option<Duration> = None;
        if !stdin_open {
            let left = opts.idle.saturating_sub(last_output.elapsed());
            if left.is_zero() {
                return Ok(Detached::InputEnded);
            }
            wait = Some(left);
        }
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(_raw);
                if is_tty {
                    eprintln!("\r\nvsctl: detached from guest {name}'s console (timeout)");
                }
                return Ok(Detached::TimedOut);
            }
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        let timeout = match wait {
            None => PollTimeout::NONE,
            Some(w) => PollTimeout::try_from(w.as_millis().clamp(1, 60_000) as i32)
                .unwrap_or(PollTimeout::ZERO),
        };
        let stdin_fd = stdin.as_fd();
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdin_fd, PollFlags::POLLIN),
        ];
        let n = if stdin_open { 2 } else { 1 };
        match poll(&mut fds[..n], timeout) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(console_err(name, e)),
        }
        let ready = |f: &PollFd| {
            f.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        if ready(&fds[0]) {
            match nix::unistd::read(&sock, &mut buf) {
                Ok(0) | Err(nix::Error::ECONNRESET) => {
                    drop(_raw);
                    eprintln!("\r\nvsctl: the console of guest {name} closed (the guest stopped)");
                    return Ok(Detached::GuestEnded);
                }
                Ok(k) => {
                    stdout
                        .write_all(&buf[..k])
                        .and_then(|()| stdout.flush())
                        .map_err(|e| console_err(name, format!("write to stdout: {e}")))?;
                    last_output = Instant::now();
                }
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                Err(e) => return Err(console_err(name, e)),
            }
        }
        if n == 2 && ready(&fds[1]) {
            match nix::unistd::read(stdin_fd, &mut buf) {
                Ok(0) => {
                    stdin_open = false;
                    last_output = Instant::now();
                }
                Ok(k) => {
                    send_buf.clear();
                    let detach = escape.filter(&buf[..k], &mut send_buf);
                    write_all_fd(&sock, &send_buf)
                        .map_err(|e| console_err(name, format!("send: {e}")))?;
                    if detach {
                        drop(_raw);
                        if is_tty {
                            eprintln!("\r\nvsctl: detached from guest {name}'s console");
                        }
                        return Ok(Detached::Escape);
                    }
                }
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                Err(e) => return Err(console_err(name, format!("read stdin: {e}"))),
            }
        }
    }
}

fn write_all_fd(fd: &OwnedFd, mut buf: &[u8]) -> nix::Result<()> {
    use nix::sys::socket::{MsgFlags, send};
    while !buf.is_empty() {
        match send(fd.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn connect(path: &Path) -> Result<OwnedFd, String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, connect, socket};
    let dir = open_parent(path)?;
    let addr = short_path(&dir, path)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    connect(fd.as_raw_fd(), &addr).map_err(|e| match e {
        nix::Error::ENOENT | nix::Error::ECONNREFUSED => format!(
            "no console socket at {} (was the guest started by an older vsctl?)",
            path.display()
        ),
        e => format!("connect to {}: {e}", path.display()),
    })?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences() {
        let mut e = Escape::default();
        let mut out = Vec::new();
        assert!(!e.filter(b"ls\n", &mut out));
        assert_eq!(out, b"ls\n");
        out.clear();
        // Ctrl-a Ctrl-a: one literal Ctrl-a; Ctrl-a x: both bytes.
        assert!(!e.filter(&[ESCAPE, ESCAPE, b'a', ESCAPE, b'x'], &mut out));
        assert_eq!(out, [ESCAPE, b'a', ESCAPE, b'x']);
        out.clear();
        // Split across reads, then q: detach, nothing after it is sent.
        assert!(!e.filter(b"ab\x01", &mut out));
        assert!(e.filter(b"qzz", &mut out));
        assert_eq!(out, b"ab");
    }

    #[test]
    fn one_client_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let mut server = ConsoleServer::listen(d.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(host_path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = connect(&host_path(d.path())).unwrap();
        let second = connect(&host_path(d.path())).unwrap();
        server.accept();
        let mut buf = [0u8; 64];
        let n = nix::unistd::read(&first, &mut buf).unwrap();
        assert_eq!(&buf[..n], GREETING_OK);
        let n = nix::unistd::read(&second, &mut buf).unwrap();
        assert_eq!(&buf[..n], GREETING_BUSY);
        assert_eq!(nix::unistd::read(&second, &mut buf).unwrap(), 0);
        // Output reaches the client; a gone client is dropped on output.
        server.output(b"hi");
        let n = nix::unistd::read(&first, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        drop(first);
        server.output(b"x");
        server.output(b"y");
        assert!(server.client().is_none());
    }
}
