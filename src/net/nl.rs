//! A small synchronous rtnetlink client.
//!
//! vsctl configures a guest's network once, at start, and again on the rare
//! live update; every operation is a handful of request/ack round trips. A
//! blocking socket with one request in flight at a time is therefore all we
//! need, and it keeps an async runtime (and its worker threads, which would
//! each carry their own network namespace) out of the picture. Messages are
//! built and parsed with `netlink-packet-route`; `netlink-sys` owns the socket.
//!
//! The one subtle part is [`Nl::in_netns`]: a netlink socket talks to the
//! network namespace its creating thread was in when it was created, for its
//! whole life. We create the socket on a short-lived thread that first joins
//! the target namespace with `setns(CLONE_NEWNET)`. Only that thread changes
//! namespace (namespaces are per thread for `setns`), it exits right after,
//! and no other thread of the caller ever runs in the guest's namespace. This
//! is why we need neither `fork` nor a namespace-restoring dance on the
//! caller's thread, which would race with anything else the thread pool does.

use std::io;
use std::os::fd::BorrowedFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sched::{CloneFlags, setns};

/// A failed netlink operation: what we tried, and the kernel's answer.
#[derive(Debug)]
pub struct NlError {
    pub op: String,
    pub source: io::Error,
}

impl NlError {
    pub fn new(op: impl Into<String>, source: io::Error) -> NlError {
        NlError {
            op: op.into(),
            source,
        }
    }

    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// The object was already there (EEXIST).
    pub fn exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object was not there (ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL): the
    /// answers the kernel gives when deleting something already gone.
    pub fn missing(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }
}

pub type NlResult<T> = Result<T, NlError>;

/// A blocking rtnetlink socket bound to one network namespace.
pub struct Nl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Large enough for any single datagram the kernel sends on a dump
/// (it caps them at 32 KiB, or a page if larger).
const RECV_BUF: usize = 64 * 1024;

impl Nl {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> NlResult<Nl> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| NlError::new("open netlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| NlError::new("bind netlink socket", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| NlError::new("connect netlink socket", e))?;
        // Extended acks only improve error messages; old kernels lack them.
        let _ = socket.set_ext_ack(true);
        Ok(Nl {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// A socket in the network namespace `netns` refers to (a
    /// `/proc/PID/ns/net` or bind-mounted namespace file). See the module
    /// docs for why a thread.
    pub fn in_netns(netns: BorrowedFd<'_>) -> NlResult<Nl> {
        on_thread_in_netns(netns, Nl::new)
    }

    /// Write `value` to `/proc/sys/net/<key>` of the network namespace
    /// `netns` refers to: /proc/sys/net shows the namespace of the task that
    /// opens it, so the write happens on a thread that joined it.
    pub fn sysctl_in_netns(netns: BorrowedFd<'_>, key: &str, value: &str) -> NlResult<()> {
        on_thread_in_netns(netns, || {
            std::fs::write(format!("/proc/sys/net/{key}"), value)
                .map_err(|e| NlError::new("write guest sysctl", e))
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> NlResult<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket
            .send(&out, 0)
            .map_err(|e| NlError::new(op.to_string(), e))?;
        Ok(self.seq)
    }

    /// Receive datagrams until `f` says the reply to `seq` is complete.
    fn recv_until(
        &mut self,
        seq: u32,
        op: &str,
        mut f: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> NlResult<bool>,
    ) -> NlResult<()> {
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|e| NlError::new(op.to_string(), e))?;
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(|e| {
                        NlError::new(
                            op.to_string(),
                            io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                        )
                    })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    // A late answer to an earlier request; not ours.
                    continue;
                }
                if f(msg.payload)? {
                    return Ok(());
                }
            }
        }
    }

    /// Send a request and wait for its acknowledgement.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> NlResult<()> {
        let seq = self.send(msg, flags | NLM_F_ACK, op)?;
        self.recv_until(seq, op, |payload| match payload {
            NetlinkPayload::Error(err) => match err.code {
                None => Ok(true),
                Some(code) => Err(NlError::new(
                    op.to_string(),
                    io::Error::from_raw_os_error(-code.get()),
                )),
            },
            NetlinkPayload::Done(_) => Ok(true),
            _ => Ok(false),
        })
    }

    /// Send a GET request (not a dump) and collect its reply messages.
    pub fn get(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &str,
    ) -> NlResult<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_ACK, op)?;
        let mut out = Vec::new();
        self.recv_until(seq, op, |payload| match payload {
            NetlinkPayload::InnerMessage(inner) => {
                out.push(inner);
                Ok(false)
            }
            NetlinkPayload::Error(err) => match err.code {
                None => Ok(true),
                Some(code) => Err(NlError::new(
                    op.to_string(),
                    io::Error::from_raw_os_error(-code.get()),
                )),
            },
            NetlinkPayload::Done(_) => Ok(true),
            _ => Ok(false),
        })?;
        Ok(out)
    }

    /// Create something that must not exist yet.
    pub fn create(&mut self, msg: RouteNetlinkMessage, op: &str) -> NlResult<()> {
        self.request(msg, NLM_F_CREATE | NLM_F_EXCL, op)
    }

    /// Dump a table; returns every message of the reply.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &str,
    ) -> NlResult<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP, op)?;
        let mut out = Vec::new();
        self.recv_until(seq, op, |payload| match payload {
            NetlinkPayload::InnerMessage(inner) => {
                out.push(inner);
                Ok(false)
            }
            NetlinkPayload::Done(_) => Ok(true),
            NetlinkPayload::Error(err) => match err.code {
                None => Ok(true),
                Some(code) => Err(NlError::new(
                    op.to_string(),
                    io::Error::from_raw_os_error(-code.get()),
                )),
            },
            _ => Ok(false),
        })?;
        Ok(out)
    }
}

/// Run `work` on a short-lived thread that first joins the network namespace
/// `netns` refers to; only that thread ever changes namespace, and it exits
/// right after (see the module docs).
fn on_thread_in_netns<T: Send>(
    netns: BorrowedFd<'_>,
    work: impl FnOnce() -> NlResult<T> + Send,
) -> NlResult<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(netns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NlError::new("enter network namespace", io::Error::from(e)))?;
                work()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NlError::new(
                    "enter network namespace",
                    io::Error::other("helper thread panicked"),
                ))
            })
    })
}
