//! Privileged network tests: real veth pairs, bridges, tc filters and
//! traffic, all inside network namespaces each test creates for itself.
//!
//! Layout of every test: one namespace plays "the host" (the library's host
//! side — bridge, host ends, host routes — is created there, never in the
//! real host namespace) and one namespace per simulated guest plays the
//! namespace the runtime would create for the guest's init. Namespaces are
//! made with `ip netns add` (a fixture tool, allowed in tests) and deleted by
//! a Drop guard even when an assertion fails. Library calls run on a scoped
//! thread that first `setns`es into the test's host namespace: `setns` only
//! moves the calling thread, so the test harness process itself never
//! creates or enters a namespace, and the thread's namespace is checked
//! before any library call. Traffic never leaves these namespaces: the only
//! uplinks are veth pairs between them.
//!
//! Needs root, iproute2 (`ip`, `tc`) and busybox (for `ping`). Tests skip
//! (pass with a note on stderr) when not root or a kernel feature is absent.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use vsctl::config::guest::{NetworkMode, NetworkSpec};
use vsctl::config::host::{HostNetwork, VethAttachment};
use vsctl::net;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipped: needs root");
        false
    }
}

/// A named network namespace, deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new(test: &str, role: &str) -> Ns {
        let name = format!("vst{}-{test}-{role}", std::process::id());
        // A leftover from a crashed run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Ns { name }
    }

    fn file(&self) -> File {
        File::open(format!("/run/netns/{}", self.name)).expect("open netns file")
    }

    /// Run a fixture/check command inside the namespace.
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} in {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether `addr` answers. Up to three one-second tries: when a bridge
    /// regains its first port its carrier comes back through the kernel's
    /// link-watch work, which may lose the very first packet.
    fn ping(&self, addr: &str) -> bool {
        (0..3).any(|_| self.ping_once(addr))
    }

    fn ping_once(&self, addr: &str) -> bool {
        let v6 = addr.contains(':');
        let mut args = vec!["busybox", "ping"];
        if v6 {
            args.push("-6");
        }
        args.extend(["-c1", "-W1", addr]);
        self.run(&args).status.success()
    }

    /// Run `f` on a thread inside this namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = self.file();
        let want = std::fs::metadata(format!("/run/netns/{}", self.name))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
                let now = std::fs::metadata("/proc/thread-self/ns/net")
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                    .unwrap();
                assert_eq!(now, want, "thread is not in the test namespace");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn spec(addrs: &[&str], gateway: Option<&str>, gateway6: Option<&str>) -> NetworkSpec {
    NetworkSpec {
        mode: NetworkMode::Veth,
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        gateway: gateway.map(|g| g.parse().unwrap()),
        gateway6: gateway6.map(|g| g.parse().unwrap()),
        dns: Vec::new(),
        parent: None,
    }
}

fn bridge_host() -> HostNetwork {
    HostNetwork {
        bridge: String::from("vstbr0"),
        veth: VethAttachment::Bridge,
        allow_host_mode: false,
    }
}

/// Guest names are per process so parallel test processes never share one.
fn guest_name(n: &str) -> String {
    format!("t{}-{n}", std::process::id())
}

/// Start a one-shot TCP server inside `ns` on `addr:port` that answers
/// "hello from ADDR"; returns once it is listening.
fn serve_once(ns: &Ns, addr: &str, port: u16) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let file = ns.file();
    let addr: IpAddr = addr.parse().unwrap();
    let handle = std::thread::spawn(move || {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
        let listener = TcpListener::bind(SocketAddr::new(addr, port)).expect("bind");
        tx.send(()).unwrap();
        listener.set_nonblocking(false).unwrap();
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(format!("hello from {addr}").as_bytes());
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("server listening");
    handle
}

fn fetch(ns: &Ns, addr: &str, port: u16) -> std::io::Result<String> {
    let addr: IpAddr = addr.parse().unwrap();
    ns.enter(|| {
        let mut conn =
            TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        Ok(text)
    })
}

#[test]
fn net_veth_bridge_guests_reach_each_other_and_nothing_unrouted() {
    if !root() {
        return;
    }
    let host = Ns::new("br", "h");
    let g1 = Ns::new("br", "g1");
    let g2 = Ns::new("br", "g2");
    let hn = bridge_host();
    let (n1, n2) = (guest_name("br1"), guest_name("br2"));
    let s1 = spec(
        &["10.50.0.2/24", "fd00:50::2/64"],
        Some("10.50.0.1"),
        Some("fd00:50::1"),
    );
    // The second guest has no gateway: it must reach its subnet only.
    let s2 = spec(&["10.50.0.3/24", "fd00:50::3/64"], None, None);
    let (st1, st2) = host.enter(|| {
        (
            net::setup(&n1, &s1, &hn, &g1.file()).expect("setup g1"),
            net::setup(&n2, &s2, &hn, &g2.file()).expect("setup g2"),
        )
    });
    assert!(st1.bridge_created, "{st1:?}");
    assert!(!st2.bridge_created, "{st2:?}");
    let (h1, _) = net::interface_names(&n1);
    assert_eq!(st1.host_if.as_deref(), Some(h1.as_str()));

    // Host end enslaved to the bridge, in the test's host namespace only.
    let ports = host.ok(&["ip", "-o", "link", "show", "master", "vstbr0"]);
    assert!(ports.contains(&h1), "{ports}");
    let bridge = host.ok(&["ip", "-o", "addr", "show", "dev", "vstbr0"]);
    assert!(
        bridge.contains("10.50.0.1/24") && bridge.contains("fd00:50::1/64"),
        "{bridge}"
    );

    // Inside the guest: exactly its own addresses on eth0, lo up, routes.
    let addrs = g1.ok(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains("10.50.0.2/24") && addrs.contains("fd00:50::2/64"),
        "{addrs}"
    );
    assert!(!addrs.contains("10.50.0.3"), "{addrs}");
    assert!(g1.ok(&["ip", "link", "show", "lo"]).contains("UP"));
    let routes = g1.ok(&["ip", "route", "show", "default"]);
    assert!(routes.contains("via 10.50.0.1 dev eth0"), "{routes}");
    let routes6 = g1.ok(&["ip", "-6", "route", "show", "default"]);
    assert!(routes6.contains("via fd00:50::1 dev eth0"), "{routes6}");

    // Guests reach each other (v4 and v6); the host reaches both.
    assert!(g1.ping("10.50.0.3"), "g1 -> g2");
    assert!(g2.ping("10.50.0.2"), "g2 -> g1");
    assert!(g1.ping("fd00:50::3"), "g1 -> g2 (v6)");
    assert!(host.ping("10.50.0.2"), "host -> g1");

    // The host namespace reaches a server in a guest at its address.
    let server = serve_once(&g2, "10.50.0.3", 8080);
    assert_eq!(
        fetch(&host, "10.50.0.3", 8080).unwrap(),
        "hello from 10.50.0.3"
    );
    server.join().unwrap();

    // An address outside every route: g1 (with a gateway) gets there via
    // the host, g2 (no gateway) cannot.
    host.ok(&["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"]);
    assert!(g1.ping("10.99.0.1"), "g1 via its gateway");
    assert!(!g2.ping_once("10.99.0.1"), "g2 has no route to 10.99.0.1");

    // status() reports what the guest sees.
    let status = net::status(&n1, &g1.file()).unwrap();
    let eth0 = status.iter().find(|i| i.name == "eth0").expect("eth0");
    assert!(
        eth0.addresses.contains(&"10.50.0.2/24".parse().unwrap()),
        "{status:?}"
    );
    assert!(status.iter().any(|i| i.name == "lo"));
}

/// Send one UDP datagram from `src` (bound inside `ns`) to `dst`.
fn send_udp(ns: &Ns, src: &str, dst: &str, port: u16, payload: &[u8]) {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = dst.parse().unwrap();
    ns.enter(|| {
        let sock = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind sender");
        sock.send_to(payload, SocketAddr::new(dst, port))
            .expect("send");
    });
}

/// Wait (bounded) until no IPv6 address of eth0 in `ns` is tentative (DAD).
fn wait_dad(ns: &Ns) {
    for _ in 0..60 {
        if !ns
            .ok(&["ip", "-6", "addr", "show", "dev", "eth0"])
            .contains("tentative")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("eth0 addresses still tentative after 6 s");
}

#[test]
fn net_link_local_sources_are_pinned_to_the_guest_mac() {
    if !root() {
        return;
    }
    let host = Ns::new("ll", "h");
    let ga = Ns::new("ll", "a");
    let gb = Ns::new("ll", "b");
    let hn = bridge_host();
    let (na, nb) = (guest_name("lla"), guest_name("llb"));
    host.enter(|| {
        net::setup(&na, &spec(&["10.53.0.2/24"], None, None), &hn, &ga.file()).expect("setup a");
        net::setup(&nb, &spec(&["10.53.0.3/24"], None, None), &hn, &gb.file()).expect("setup b");
    });
    let mac = |ns: &Ns| -> [u8; 6] {
        let text = ns.ok(&["cat", "/sys/class/net/eth0/address"]);
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    };
    let (a_mac, b_mac) = (mac(&ga), mac(&gb));
    let a_ll = std::net::Ipv6Addr::from(net::eui64_link_local(a_mac));
    let b_ll = std::net::Ipv6Addr::from(net::eui64_link_local(b_mac));
    // The kernel gave each guest exactly the address the filter pins.
    assert!(
        ga.ok(&["ip", "-6", "addr", "show", "dev", "eth0"])
            .contains(&a_ll.to_string())
    );
    wait_dad(&ga);
    wait_dad(&gb);
    let a_if: u32 = ga
        .ok(&["cat", "/sys/class/net/eth0/ifindex"])
        .trim()
        .parse()
        .unwrap();

    let file = gb.file();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
        let any = std::net::SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, 9002, 0, 0);
        let sock = UdpSocket::bind(any).expect("bind receiver");
        sock.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let msg = format!("{} from {}", String::from_utf8_lossy(&buf[..n]), from.ip());
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    ready_rx.recv().unwrap();
    let send_from = |src: std::net::Ipv6Addr, payload: &'static [u8]| {
        ga.enter(|| {
            let sock =
                UdpSocket::bind(std::net::SocketAddrV6::new(src, 0, 0, a_if)).expect("bind sender");
            sock.send_to(payload, std::net::SocketAddrV6::new(b_ll, 9002, 0, a_if))
                .expect("send");
        });
    };

    // Control: A's own link-local address gets through.
    send_from(a_ll, b"own");
    let got = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("datagram from the own link-local address");
    assert_eq!(got, format!("own from {a_ll}"));

    // A takes another link-local address (tests hold CAP_NET_ADMIN in A's
    // namespace; so would an unprivileged guest's root) and pins B's MAC so
    // no neighbour solicitation is needed. B must receive nothing.
    ga.ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fe80::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let b_mac_text = gb.ok(&["cat", "/sys/class/net/eth0/address"]);
    ga.ok(&[
        "ip",
        "-6",
        "neigh",
        "replace",
        &b_ll.to_string(),
        "lladdr",
        b_mac_text.trim(),
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    for _ in 0..3 {
        send_from("fe80::1".parse().unwrap(), b"spoofed");
    }
    if let Ok(msg) = rx.recv_timeout(Duration::from_millis(1000)) {
        panic!("datagram from a foreign link-local address arrived: {msg}");
    }
    drop(rx);
    receiver.join().unwrap();
}

#[test]
fn net_spoofed_source_address_never_reaches_another_guest() {
    if !root() {
        return;
    }
    let host = Ns::new("sp", "h");
    let ga = Ns::new("sp", "a");
    let gb = Ns::new("sp", "b");
    let gc = Ns::new("sp", "c");
    let hn = bridge_host();
    let (na, nb, nc) = (guest_name("spa"), guest_name("spb"), guest_name("spc"));
    let sa = spec(&["10.51.0.2/24"], Some("10.51.0.1"), None);
    let sb = spec(&["10.51.0.3/24"], Some("10.51.0.1"), None);
    let sc = spec(&["10.51.0.4/24"], Some("10.51.0.1"), None);
    host.enter(|| {
        net::setup(&na, &sa, &hn, &ga.file()).expect("setup a");
        net::setup(&nb, &sb, &hn, &gb.file()).expect("setup b");
        net::setup(&nc, &sc, &hn, &gc.file()).expect("setup c");
    });
    assert_eq!(host.enter(|| net::host_filter_count(&na)).unwrap(), 1);

    // B listens for UDP.
    let file = gb.file();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
        let sock = UdpSocket::bind("10.51.0.3:9000").expect("bind receiver");
        sock.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut msg = buf[..n].to_vec();
            msg.extend_from_slice(format!(" from {}", from.ip()).as_bytes());
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    ready_rx.recv().unwrap();

    // Control: A with its own address gets through.
    send_udp(&ga, "10.51.0.2", "10.51.0.3", 9000, b"honest");
    let got = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("honest datagram");
    assert_eq!(String::from_utf8_lossy(&got), "honest from 10.51.0.2");

    // A takes C's address (tests have CAP_NET_ADMIN in A's namespace; a
    // real guest would not) and pins B's MAC so no ARP is needed, then
    // sends from C's address. B must receive nothing.
    let b_mac = gb.ok(&["cat", "/sys/class/net/eth0/address"]);
    ga.ok(&["ip", "addr", "add", "10.51.0.4/32", "dev", "eth0"]);
    ga.ok(&[
        "ip",
        "neigh",
        "replace",
        "10.51.0.3",
        "lladdr",
        b_mac.trim(),
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    for _ in 0..3 {
        send_udp(&ga, "10.51.0.4", "10.51.0.3", 9000, b"spoofed");
    }
    match rx.recv_timeout(Duration::from_millis(1000)) {
        Err(_) => {}
        Ok(msg) => panic!(
            "spoofed datagram arrived: {}",
            String::from_utf8_lossy(&msg)
        ),
    }
    // The drops are visible as the filter's statistics on A's host end.
    let (ha, _) = net::interface_names(&na);
    let stats = host.ok(&["tc", "-s", "filter", "show", "dev", &ha, "ingress"]);
    assert!(
        stats.contains("bpf") && stats.contains("direct-action"),
        "{stats}"
    );

    // ARP: B first learns C's real MAC; after the neighbour lock time (1 s)
    // an unsolicited ARP from A claiming C's address would override that
    // entry. With the filter it never reaches B.
    let c_mac = gc.ok(&["cat", "/sys/class/net/eth0/address"]);
    let a_mac = ga.ok(&["cat", "/sys/class/net/eth0/address"]);
    assert!(gb.ping("10.51.0.4"), "b -> c");
    std::thread::sleep(Duration::from_millis(1200));
    let _ = ga.run(&[
        "busybox",
        "arping",
        "-U",
        "-c",
        "2",
        "-w",
        "2",
        "-s",
        "10.51.0.4",
        "-I",
        "eth0",
        "10.51.0.4",
    ]);
    let _ = ga.run(&[
        "busybox",
        "arping",
        "-A",
        "-c",
        "2",
        "-w",
        "2",
        "-s",
        "10.51.0.4",
        "-I",
        "eth0",
        "10.51.0.4",
    ]);
    let neigh = gb.ok(&["ip", "neigh", "show", "10.51.0.4"]);
    assert!(neigh.contains(c_mac.trim()), "B lost C's MAC: {neigh}");
    assert!(
        !neigh.contains(a_mac.trim()),
        "B learned A's MAC for C: {neigh}"
    );

    // MAC spoofing: A takes C's MAC. Its frames no longer pass, and the
    // bridge keeps C's MAC on C's port.
    ga.ok(&["ip", "addr", "del", "10.51.0.4/32", "dev", "eth0"]);
    ga.ok(&["ip", "link", "set", "eth0", "address", c_mac.trim()]);
    assert!(!ga.ping_once("10.51.0.3"), "a with c's mac reached b");
    let (hc, _) = net::interface_names(&nc);
    let fdb = host.ok(&["bridge", "fdb", "show", "br", "vstbr0"]);
    let c_port = fdb
        .lines()
        .find(|l| l.starts_with(c_mac.trim()) && !l.contains("permanent"))
        .unwrap_or("");
    assert!(c_port.is_empty() || c_port.contains(&hc), "{fdb}");

    drop(rx);
    receiver.join().unwrap();
}

#[test]
fn net_routed_veth_guest_reachable_and_reverse_path_filtered() {
    if !root() {
        return;
    }
    let host = Ns::new("rt", "h");
    let g1 = Ns::new("rt", "g1");
    let hn = HostNetwork {
        veth: VethAttachment::Routed,
        ..bridge_host()
    };
    let n1 = guest_name("rt1");
    // The host owns the gateway address on its loopback; the guest has a /32.
    host.ok(&["ip", "link", "set", "lo", "up"]);
    host.ok(&["ip", "addr", "add", "10.52.0.1/32", "dev", "lo"]);
    let s1 = spec(
        &["10.52.0.10/32", "fd00:52::10/128"],
        Some("10.52.0.1"),
        Some("fd00:52::1"),
    );
    let st = host.enter(|| net::setup(&n1, &s1, &hn, &g1.file()).expect("setup"));
    let h1 = st.host_if.clone().unwrap();
    assert!(!st.bridge_created);
    assert!(host.run(&["ip", "link", "show", "vstbr0"]).status.code() != Some(0));

    let route = host.ok(&["ip", "route", "show", "10.52.0.10"]);
    assert!(route.contains(&format!("dev {h1}")), "{route}");
    for (key, want) in [("rp_filter", "1"), ("proxy_arp", "1")] {
        let v = host.ok(&["cat", &format!("/proc/sys/net/ipv4/conf/{h1}/{key}")]);
        assert_eq!(v.trim(), want, "{key}");
    }
    let groute = g1.ok(&["ip", "route", "show", "default"]);
    assert!(
        groute.contains("via 10.52.0.1 dev eth0") && groute.contains("onlink"),
        "{groute}"
    );

    assert!(host.ping("10.52.0.10"), "host -> routed guest");
    assert!(g1.ping("10.52.0.1"), "routed guest -> gateway");
    // IPv6: the gateway is not a host address here; the host end answers
    // for it from its NDP proxy entry, and the host routes the /128.
    host.ok(&["ip", "addr", "add", "fd00:52::1/128", "dev", "lo", "nodad"]);
    assert!(host.ping("fd00:52::10"), "host -> routed guest (v6)");
    assert!(g1.ping("fd00:52::1"), "routed guest -> gateway (v6)");
    let proxy = host.ok(&["ip", "-6", "neigh", "show", "proxy"]);
    assert!(
        proxy.contains("fd00:52::1") && proxy.contains(&h1),
        "{proxy}"
    );
    let server = serve_once(&g1, "10.52.0.10", 8081);
    assert_eq!(
        fetch(&host, "10.52.0.10", 8081).unwrap(),
        "hello from 10.52.0.10"
    );
    server.join().unwrap();

    host.enter(|| net::teardown(&n1, &s1, &hn)).unwrap();
    let left = host.ok(&["ip", "route", "show"]);
    assert!(!left.contains("10.52.0.10"), "{left}");
    assert!(!host.ok(&["ip", "-o", "link"]).contains(&h1));
}

#[test]
fn net_live_update_adds_and_removes_addresses_and_gateway() {
    if !root() {
        return;
    }
    let host = Ns::new("up", "h");
    let g1 = Ns::new("up", "g1");
    let hn = bridge_host();
    let n1 = guest_name("up1");
    let old = spec(&["10.53.0.2/24"], Some("10.53.0.1"), None);
    host.enter(|| net::setup(&n1, &old, &hn, &g1.file()).expect("setup"));
    assert!(host.ping("10.53.0.2"));
    // A second host address on the bridge to serve as the new gateway.
    host.ok(&["ip", "addr", "add", "10.53.0.254/24", "dev", "vstbr0"]);

    let new = spec(
        &["10.53.0.12/24", "fd00:53::12/64"],
        Some("10.53.0.254"),
        None,
    );
    host.ok(&[
        "ip",
        "addr",
        "add",
        "fd00:53::1/64",
        "dev",
        "vstbr0",
        "nodad",
    ]);
    host.enter(|| net::update(&n1, &old, &new, &hn, &g1.file()))
        .expect("update");

    let addrs = g1.ok(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains("10.53.0.12/24") && addrs.contains("fd00:53::12/64"),
        "{addrs}"
    );
    assert!(!addrs.contains("10.53.0.2/"), "{addrs}");
    let routes = g1.ok(&["ip", "route", "show", "default"]);
    assert!(routes.contains("via 10.53.0.254"), "{routes}");
    // Reachable at the new addresses (the filter now admits their replies),
    // not at the old one.
    assert!(host.ping("10.53.0.12"), "new v4 address");
    assert!(host.ping("fd00:53::12"), "new v6 address");
    assert!(!host.ping_once("10.53.0.2"), "old address");
    // The guest can no longer send from the old address either.
    g1.ok(&["ip", "addr", "add", "10.53.0.2/32", "dev", "eth0"]);
    assert!(
        !g1.run(&[
            "busybox",
            "ping",
            "-c1",
            "-W1",
            "-I",
            "10.53.0.2",
            "10.53.0.1"
        ])
        .status
        .success()
    );

    // Updating back restores the original.
    g1.ok(&["ip", "addr", "del", "10.53.0.2/32", "dev", "eth0"]);
    host.enter(|| net::update(&n1, &new, &old, &hn, &g1.file()))
        .expect("update back");
    assert!(host.ping("10.53.0.2"));
    assert!(!host.ping_once("10.53.0.12"));
    assert!(
        g1.ok(&["ip", "-6", "route", "show", "default"])
            .trim()
            .is_empty()
    );
}

#[test]
fn net_teardown_leaves_no_veth_port_route_or_filter() {
    if !root() {
        return;
    }
    let host = Ns::new("td", "h");
    let g1 = Ns::new("td", "g1");
    let hn = bridge_host();
    let n1 = guest_name("td1");
    let s1 = spec(&["10.54.0.2/24"], Some("10.54.0.1"), None);
    host.enter(|| net::setup(&n1, &s1, &hn, &g1.file()).expect("setup"));
    let (h1, _) = net::interface_names(&n1);
    assert!(host.ok(&["ip", "-o", "link"]).contains(&h1));
    assert_eq!(host.enter(|| net::host_filter_count(&n1)).unwrap(), 1);

    host.enter(|| net::teardown(&n1, &s1, &hn))
        .expect("teardown");
    host.enter(|| net::teardown(&n1, &s1, &hn))
        .expect("teardown is idempotent");

    assert!(
        !host.ok(&["ip", "-o", "link"]).contains(&h1),
        "host end left"
    );
    assert!(
        host.ok(&["ip", "-o", "link", "show", "master", "vstbr0"])
            .trim()
            .is_empty()
    );
    assert!(!host.ok(&["ip", "route"]).contains(&h1));
    assert_eq!(host.enter(|| net::host_filter_count(&n1)).unwrap(), 0);
    // The guest's end went with the pair.
    assert!(!g1.ok(&["ip", "-o", "link"]).contains("eth0"));
    // The bridge stays (documented decision).
    assert!(host.run(&["ip", "link", "show", "vstbr0"]).status.success());
    // And setup works again afterwards (restart).
    host.enter(|| net::setup(&n1, &s1, &hn, &g1.file()).expect("setup again"));
    assert!(host.ping("10.54.0.2"), "reachable after restart");
}

#[test]
fn net_none_mode_has_only_loopback_and_host_mode_does_nothing() {
    if !root() {
        return;
    }
    let host = Ns::new("no", "h");
    let g1 = Ns::new("no", "g1");
    let s = NetworkSpec {
        mode: NetworkMode::None,
        ..NetworkSpec::default()
    };
    let st = host.enter(|| net::setup("none1", &s, &bridge_host(), &g1.file()).unwrap());
    assert_eq!(st, net::NetState::default());
    let links = g1.ok(&["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo") && links.contains("UP"));
    assert!(g1.ping("127.0.0.1"));
    let before = host.ok(&["ip", "-o", "link"]);
    let hs = NetworkSpec {
        mode: NetworkMode::Host,
        ..NetworkSpec::default()
    };
    host.enter(|| net::setup("host1", &hs, &bridge_host(), &g1.file()).unwrap());
    assert_eq!(before, host.ok(&["ip", "-o", "link"]));
}

#[test]
fn net_ipvlan_guests_reachable_over_uplink() {
    if !root() {
        return;
    }
    let host = Ns::new("iv", "h");
    let peer = Ns::new("iv", "p");
    let g1 = Ns::new("iv", "g1");
    let g2 = Ns::new("iv", "g2");
    // The "uplink": a veth whose far end sits in another test namespace
    // standing in for the LAN.
    host.ok(&[
        "ip", "link", "add", "vstup0", "type", "veth", "peer", "name", "vstlan0",
    ]);
    host.ok(&["ip", "link", "set", "vstlan0", "netns", &peer.name]);
    host.ok(&["ip", "link", "set", "vstup0", "up"]);
    peer.ok(&["ip", "addr", "add", "10.55.0.1/24", "dev", "vstlan0"]);
    peer.ok(&["ip", "link", "set", "vstlan0", "up"]);
    let mk = |a: &str| NetworkSpec {
        mode: NetworkMode::Ipvlan,
        addresses: vec![a.parse().unwrap()],
        gateway: Some("10.55.0.1".parse().unwrap()),
        parent: Some("vstup0".into()),
        ..NetworkSpec::default()
    };
    let (s1, s2) = (mk("10.55.0.2/24"), mk("10.55.0.3/24"));
    let r = host.enter(|| net::setup(&guest_name("iv1"), &s1, &bridge_host(), &g1.file()));
    match r {
        Err(net::NetError::Netlink { source, .. })
            if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            eprintln!("skipped: kernel without ipvlan ({source})");
            return;
        }
        other => {
            other.expect("setup ipvlan g1");
        }
    }
    host.enter(|| net::setup(&guest_name("iv2"), &s2, &bridge_host(), &g2.file()))
        .expect("setup ipvlan g2");
    let addrs = g1.ok(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("10.55.0.2/24"), "{addrs}");
    assert!(peer.ping("10.55.0.2"), "lan -> g1");
    assert!(peer.ping("10.55.0.3"), "lan -> g2");
    assert!(g1.ping("10.55.0.3"), "g1 -> g2");
    let server = serve_once(&g2, "10.55.0.3", 8082);
    assert_eq!(
        fetch(&peer, "10.55.0.3", 8082).unwrap(),
        "hello from 10.55.0.3"
    );
    server.join().unwrap();
    // Egress filter inside the guest: a foreign source address is dropped.
    g1.ok(&["ip", "addr", "add", "10.55.0.9/32", "dev", "eth0"]);
    assert!(
        !g1.run(&[
            "busybox",
            "ping",
            "-c1",
            "-W1",
            "-I",
            "10.55.0.9",
            "10.55.0.1"
        ])
        .status
        .success()
    );
}

#[test]
fn net_never_touches_a_foreign_interface_with_the_guests_name() {
    if !root() {
        return;
    }
    let host = Ns::new("fo", "h");
    let g1 = Ns::new("fo", "g1");
    let hn = bridge_host();
    let n1 = guest_name("fo1");
    let (h1, _) = net::interface_names(&n1);
    // Someone else's interface under the name vsctl would use.
    host.ok(&["ip", "link", "add", &h1, "type", "bridge"]);
    host.ok(&["ip", "link", "set", &h1, "alias", "someone else"]);
    let s1 = spec(&["10.56.0.2/24"], Some("10.56.0.1"), None);
    let err = host
        .enter(|| net::setup(&n1, &s1, &hn, &g1.file()))
        .unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    assert!(host.enter(|| net::teardown(&n1, &s1, &hn)).is_err());
    let link = host.ok(&["ip", "-d", "link", "show", &h1]);
    assert!(
        link.contains("bridge"),
        "foreign interface was replaced: {link}"
    );
    // Nothing was left half-made inside the guest either.
    assert!(!g1.ok(&["ip", "-o", "link"]).contains("eth0"));
}

#[test]
fn net_setup_replaces_a_stale_host_end_of_the_same_guest() {
    if !root() {
        return;
    }
    let host = Ns::new("st", "h");
    let old_ns = Ns::new("st", "old");
    let new_ns = Ns::new("st", "new");
    let hn = bridge_host();
    let n1 = guest_name("st1");
    let s1 = spec(&["10.57.0.2/24"], Some("10.57.0.1"), None);
    host.enter(|| net::setup(&n1, &s1, &hn, &old_ns.file()).expect("first start"));
    // The old namespace is still alive (say, held open by a stuck process)
    // when the guest starts again in a new one.
    host.enter(|| net::setup(&n1, &s1, &hn, &new_ns.file()).expect("restart"));
    assert!(!old_ns.ok(&["ip", "-o", "link"]).contains("eth0"));
    assert!(new_ns.ok(&["ip", "-o", "addr"]).contains("10.57.0.2/24"));
    let (h1, _) = net::interface_names(&n1);
    let alias = host.ok(&["ip", "-d", "link", "show", &h1]);
    assert!(
        alias.contains(&format!("alias vsctl guest {n1}")),
        "{alias}"
    );
    assert!(host.ping("10.57.0.2"));
}
