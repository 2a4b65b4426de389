//! Time to give one guest its network (veth on a bridge, one IPv4 and one
//! IPv6 address, default routes, anti-spoofing filter), `net::setup` against
//! the same work done by iproute2 (`ip -batch` for each namespace plus `tc`),
//! interleaved in one run. Target: `net::setup` median under 10 ms.
//!
//! Everything happens inside network namespaces made for the run (the bridge
//! too); nothing touches the real host's interfaces. Needs root, iproute2.
//!
//! Run: `cargo bench --bench net`

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use vsctl::config::guest::{NetworkMode, NetworkSpec};
use vsctl::config::host::{HostNetwork, VethAttachment};
use vsctl::net;

const ROUNDS: usize = 40;

struct Ns(String);

impl Ns {
    fn new(name: String) -> Ns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        Ns(name)
    }

    fn file(&self) -> File {
        File::open(format!("/run/netns/{}", self.0)).unwrap()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ip_batch(netns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "ip -batch failed:\n{script}"
    );
}

fn tc(netns: &str, args: &[&str]) {
    let ok = Command::new("ip")
        .args(["netns", "exec", netns, "tc"])
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "tc {args:?}");
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[v.len() * 9 / 10]))
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("net bench: needs root, skipped");
        return;
    }
    let pid = std::process::id();
    let host = Ns::new(format!("vsb{pid}-h"));
    let hostfile = host.file();
    let hn = HostNetwork {
        bridge: String::from("vsbbr0"),
        veth: VethAttachment::Bridge,
        allow_host_mode: false,
    };
    let spec = NetworkSpec {
        mode: NetworkMode::Veth,
        addresses: vec![
            "10.60.0.2/24".parse().unwrap(),
            "fd00:60::2/64".parse().unwrap(),
        ],
        gateway: Some("10.60.0.1".parse().unwrap()),
        gateway6: Some("fd00:60::1".parse().unwrap()),
        ..NetworkSpec::default()
    };
    // The bridge exists before timing starts, as on a host with guests.
    ip_batch(
        &host.0,
        "link add vsbbr0 type bridge\naddr add 10.60.0.1/24 dev vsbbr0\n\
         addr add fd00:60::1/64 dev vsbbr0 nodad\nlink set vsbbr0 up\n",
    );
    // The same anti-spoofing program vsctl installs, for the peer's tc.
    let mac = net::guest_mac("bench");
    let prog = net::compile_filter(&net::antispoof_rules(
        Some(mac),
        &spec.addresses.iter().map(|a| a.addr).collect::<Vec<_>>(),
    ));
    let bytecode = std::iter::once(prog.len().to_string())
        .chain(
            prog.iter()
                .map(|i| format!("{} {} {} {}", i.code, i.jt, i.jf, i.k)),
        )
        .collect::<Vec<_>>()
        .join(",");
    let mac_s = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");

    let (mut ours, mut peer, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // vsctl: net::setup on a thread inside the bench's host namespace.
        let guest = Ns::new(format!("vsb{pid}-g{round}"));
        let gfile = guest.file();
        let (t_setup, t_down) = std::thread::scope(|s| {
            s.spawn(|| {
                setns(hostfile.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
                let start = Instant::now();
                net::setup("bench", &spec, &hn, &gfile).unwrap();
                let t_setup = start.elapsed();
                let start = Instant::now();
                net::teardown("bench", &spec, &hn).unwrap();
                (t_setup, start.elapsed())
            })
            .join()
            .unwrap()
        });
        ours.push(t_setup);
        down.push(t_down);
        drop(guest);

        // Peer: iproute2 doing the same steps.
        let guest = Ns::new(format!("vsb{pid}-p{round}"));
        let start = Instant::now();
        ip_batch(
            &host.0,
            &format!(
                "link add vsbpeer type veth peer name eth0 address {mac_s} netns {g}\n",
                g = guest.0
            ),
        );
        tc(&host.0, &["qdisc", "add", "dev", "vsbpeer", "clsact"]);
        tc(
            &host.0,
            &[
                "filter", "add", "dev", "vsbpeer", "ingress", "prio", "1", "bpf", "bytecode",
                &bytecode, "da",
            ],
        );
        ip_batch(&host.0, "link set vsbpeer master vsbbr0 up\n");
        ip_batch(
            &guest.0,
            "link set lo up\naddr add 10.60.0.2/24 dev eth0\n\
             addr add fd00:60::2/64 dev eth0 nodad\nlink set eth0 up\n\
             route replace default via 10.60.0.1 dev eth0\n\
             route replace default via fd00:60::1 dev eth0\n",
        );
        peer.push(start.elapsed());
        ip_batch(&host.0, "link del vsbpeer\n");
    }

    let (om, o90) = stats(ours);
    let (pm, p90) = stats(peer);
    let (dm, d90) = stats(down);
    println!("net: one veth guest on a bridge, 2 addresses, routes, filter ({ROUNDS} rounds)");
    println!("{:<34} {:>10} {:>10}", "operation", "median ms", "p90 ms");
    println!("{:<34} {:>10.2} {:>10.2}", "vsctl net::setup", om, o90);
    println!(
        "{:<34} {:>10.2} {:>10.2}",
        "iproute2 + tc (same steps)", pm, p90
    );
    println!("{:<34} {:>10.2} {:>10.2}", "vsctl net::teardown", dm, d90);
    println!("ratio setup vsctl/iproute2: {:.2}", om / pm);
    println!(
        "target: setup median < 10 ms: {}",
        if om < 10.0 { "met" } else { "NOT met" }
    );
}
