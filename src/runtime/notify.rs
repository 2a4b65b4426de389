//! systemd's readiness protocol (sd_notify(3)) between a guest's init and
//! its supervisor, the way systemd-nspawn offers it.
//!
//! The supervisor binds a unix datagram socket at `RUN_DIR/notify` (mode
//! 0600, owned by the guest's root: host root for privileged guests, the
//! first uid of the guest's range otherwise) before the first boot; the
//! guest sees it bind-mounted at [`GUEST_PATH`] and finds
//! `NOTIFY_SOCKET=/run/host/notify` in init's environment. A systemd init
//! sends `READY=1` once its boot transaction is done, `STATUS=...` lines
//! while it boots and `STOPPING=1` when it shuts down.
//!
//! The supervisor drains the socket from its poll loop, never blocking:
//! messages longer than [`MAX_MESSAGE`] are dropped whole, passed file
//! descriptors are discarded by the kernel (no room is offered for them),
//! and every message must carry the sender's credentials (SO_PASSCRED): a
//! message is accepted only from a process in the guest's own pid
//! namespace (one `stat` of `/proc/PID/ns/pid` per message).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the guest finds the socket, and the value of its NOTIFY_SOCKET.
pub const GUEST_PATH: &str = "/run/host/notify";
/// The socket's name in the guest's run directory.
pub const SOCKET_NAME: &str = "notify";
/// Longest message accepted (systemd's own limit, PIPE_BUF).
pub const MAX_MESSAGE: usize = 4096;

/// The socket on the host.
pub fn host_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_NAME)
}

/// What one datagram says, as far as the supervisor cares.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub ready: bool,
    pub stopping: bool,
    pub reloading: bool,
    /// The last `STATUS=` line of the message.
    pub status: Option<&'a str>,
}

impl Message<'_> {
    pub fn is_empty(&self) -> bool {
        *self == Message::default()
    }
}

/// Parse newline-separated `KEY=VALUE` assignments (sd_notify(3)). Unknown
/// keys, lines without `=` and lines that are not UTF-8 are ignored;
/// `READY`, `STOPPING` and `RELOADING` count only with the value `1`.
pub fn parse(buf: &[u8]) -> Message<'_> {
    let mut msg = Message::default();
    for line in buf.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "READY" => msg.ready |= value == "1",
            "STOPPING" => msg.stopping |= value == "1",
            "RELOADING" => msg.reloading |= value == "1",
            "STATUS" => msg.status = Some(value),
            _ => {}
        }
    }
    msg
}

/// The supervisor's end: a non-blocking datagram socket with SO_PASSCRED.
pub struct NotifySocket {
    fd: OwnedFd,
}

impl NotifySocket {
    /// Bind `RUN_DIR/notify` (replacing a stale one) for a guest whose root
    /// is host uid/gid `owner` (None: host root).
    pub fn bind(run_dir: &Path, owner: Option<u32>) -> Result<NotifySocket, String> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt};
        let path = host_path(run_dir);
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| format!("notify socket: {e}"))?;
        setsockopt(&fd, sockopt::PassCred, &true)
            .map_err(|e| format!("notify socket SO_PASSCRED: {e}"))?;
        super::console::bind_private(&fd, &path)?;
        if let Some(id) = owner {
            nix::unistd::chown(
                &path,
                Some(nix::unistd::Uid::from_raw(id)),
                Some(nix::unistd::Gid::from_raw(id)),
            )
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
        Ok(NotifySocket { fd })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Read every queued datagram without blocking and hand the ones sent
    /// from inside the guest's pid namespace (`guest_pidns`: device and
    /// inode of /proc/INIT/ns/pid) to `each`.
    pub fn drain(
        &self,
        buf: &mut [u8],
        guest_pidns: Option<(u64, u64)>,
        mut each: impl FnMut(&[u8]),
    ) {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg};
        for _ in 0..64 {
            let mut cmsg = nix::cmsg_space!(UnixCredentials);
            let mut iov = [std::io::IoSliceMut::new(buf)];
            let (len, flags, pid) = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => {
                    let mut pid = 0;
                    if let Ok(cmsgs) = m.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmCredentials(cred) = c {
                                pid = cred.pid();
                            }
                        }
                    }
                    (m.bytes, m.flags, pid)
                }
                Err(_) => return, // EAGAIN: drained
            };
            if flags.contains(MsgFlags::MSG_TRUNC) || len > MAX_MESSAGE || len > buf.len() {
                continue; // oversized: ignored whole
            }
            if pid <= 0 || guest_pidns.is_none() || pidns_of(pid) != guest_pidns {
                continue;
            }
            each(&buf[..len]);
        }
    }
}

/// Device and inode of a process's pid namespace.
pub fn pidns_of(pid: i32) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?;
    Some((m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sd_notify_messages() {
        let m = parse(b"READY=1\nSTATUS=Startup finished in 1.2s.\n");
        assert!(m.ready && !m.stopping);
        assert_eq!(m.status, Some("Startup finished in 1.2s."));

        // The last STATUS wins; values other than 1 do not count.
        let m = parse(b"STATUS=a\nREADY=0\nSTATUS=b=c\nSTOPPING=1");
        assert!(!m.ready && m.stopping);
        assert_eq!(m.status, Some("b=c"));

        // Unknown keys, junk and bad UTF-8 are ignored, not fatal.
        let m = parse(b"X_SYSTEMD_UNIT_ACTIVE=basic.target\nnonsense\n\xff\xfe=1\nRELOADING=1\n");
        assert!(m.reloading && !m.ready);
        assert_eq!(m.status, None);
        assert!(parse(b"").is_empty());
        assert!(parse(b"\n\nMAINPID=12\n").is_empty());
        assert_eq!(parse(b"STATUS=").status, Some(""));
    }

    #[test]
    fn socket_accepts_own_namespace_and_drops_oversized() {
        let d = tempfile::tempdir().unwrap();
        let sock = NotifySocket::bind(d.path(), None).unwrap();
        let mode = std::fs::metadata(host_path(d.path())).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
        tx.send_to(&vec![b'x'; MAX_MESSAGE + 10], host_path(d.path()))
            .unwrap();
        tx.send_to(b"READY=1\nSTATUS=up", host_path(d.path()))
            .unwrap();
        let mut buf = [0u8; MAX_MESSAGE];
        let ours = pidns_of(std::process::id() as i32);
        let mut got = Vec::new();
        sock.drain(&mut buf, ours, |m| got.push(m.to_vec()));
        assert_eq!(got, vec![b"READY=1\nSTATUS=up".to_vec()]);
        // From "another" namespace: dropped.
        tx.send_to(b"READY=1", host_path(d.path())).unwrap();
        sock.drain(&mut buf, Some((0, 0)), |_| panic!("accepted a stranger"));
    }
}
