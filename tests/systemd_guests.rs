//! Debian guests booting systemd as PID 1, through the real `vsctl` binary.
//!
//! Each test builds real templates with mmdebstrap from the host's apt
//! sources (network to the Debian archive; bookworm + bookworm-web take about
//! a minute, trixie about half of that), declares unprivileged guests (the
//! default) and privileged ones (`userns = false`), applies, waits for
//! `systemctl is-system-running` inside each, checks the systemd container
//! interface (unified cgroup tree, container detection, /run/host), and stops
//! them, checking that no process, cgroup, veth or mount is left. Only the
//! template builds run in the host's network namespace (they download from
//! the archive); guests, bridge and every connection stay in the test's.
//!
//! Isolation: every test has its own `--root` temp dir, its own
//! `[runtime] cgroup_base`, its own uid ranges, and a network namespace it
//! creates with `ip netns add`. Every vsctl command runs as
//! `nsenter --net=/run/netns/NS vsctl ...` (only the network namespace is
//! switched: `ip netns exec` would also remount /sys and hide the cgroup
//! hierarchies), so the bridge, the veth host ends and the supervisors live
//! in NS, never in the real host namespace. The test talks to the guests
//! from a thread that `setns`es into NS. Drop guards stop the guests, remove
//! their cgroups and delete the namespace even when an assertion fails.
//!
//! Needs root, iproute2 (`ip`), util-linux (`nsenter`) and mmdebstrap.
//! `VSCTL_SKIP_NETWORK_TESTS=1` skips these tests unless `CI=true`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{World, stderr, stdout};

fn skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !ci && std::env::var_os("VSCTL_SKIP_NETWORK_TESTS").is_some() {
        eprintln!("skipped: VSCTL_SKIP_NETWORK_TESTS is set and CI is not true");
        return true;
    }
    false
}

/// One test's world: temp root, network namespace, cgroup base, guests
/// (all from [`World::in_netns`], whose drop stops the guests and removes
/// their cgroups and the namespace).
struct Lab {
    world: World,
    netns: String,
    guests: Vec<String>,
}

impl Lab {
    fn new(_tag: &str, first_id: u32) -> Lab {
        let world = World::in_netns();
        world.write_settings(&format!("[userns]\nfirst_id = {first_id}\nranges = 16\n"));
        let netns = world.netns.clone().expect("in a network namespace");
        Lab {
            world,
            netns,
            guests: Vec::new(),
        }
    }

    /// `nsenter --net=NS vsctl --root ROOT ARGS...`
    fn vsctl(&self, args: &[&str]) -> Output {
        self.world.vsctl(args)
    }

    fn vsctl_ok(&self, args: &[&str]) -> String {
        let out = self.vsctl(args);
        assert!(
            out.status.success(),
            "vsctl {args:?}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Built in the host's network namespace: mmdebstrap and apt fetch
    /// from the Debian archive named by the host's apt sources.
    fn build_template(&self, name: &str) {
        let t = Instant::now();
        let out = self.world.vsctl_host_network(&["template", "build", name]);
        assert!(
            out.status.success(),
            "template build {name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        eprintln!("template {name} built in {:.1?}", t.elapsed());
    }

    fn add_guest(&mut self, name: &str, text: &str) {
        self.world.write_guest(name, text);
        self.guests.push(name.to_string());
    }

    /// Run a command in a guest; (exit code, stdout + stderr).
    fn exec(&self, guest: &str, cmd: &[&str]) -> (i32, String) {
        let mut args = vec!["exec", guest, "--"];
        args.extend(cmd);
        let out = self.vsctl(&args);
        (
            out.status.code().unwrap_or(-1),
            format!("{}{}", stdout(&out), stderr(&out)),
        )
    }

    fn sh(&self, guest: &str, script: &str) -> (i32, String) {
        self.exec(guest, &["sh", "-c", script])
    }

    /// Poll `systemctl is-system-running` until boot is over (bounded);
    /// returns the final state and the failed units, both printed.
    fn wait_for_boot(&self, guest: &str, limit: Duration) -> (String, String) {
        let t = Instant::now();
        let mut state = String::new();
        while t.elapsed() < limit {
            let (_, out) = self.exec(guest, &["systemctl", "is-system-running"]);
            // Before systemd listens on its private socket, systemctl fails
            // to connect: keep polling then, and while it says "starting".
            state = out.lines().last().unwrap_or("").trim().to_string();
            if matches!(
                state.as_str(),
                "running" | "degraded" | "maintenance" | "stopping" | "offline"
            ) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let (_, failed) = self.exec(
            guest,
            &[
                "systemctl",
                "--failed",
                "--no-legend",
                "--plain",
                "--no-pager",
            ],
        );
        eprintln!(
            "{guest}: is-system-running = {state:?} after {:.1?}; failed units: {:?}",
            t.elapsed(),
            failed.trim()
        );
        if !failed.trim().is_empty() {
            let (_, status) = self.exec(
                guest,
                &["systemctl", "status", "--failed", "--no-pager", "--full"],
            );
            eprintln!("{guest}: status of failed units:\n{status}");
        }
        (state, failed)
    }

    /// Run `f` on a thread inside the test's network namespace.
    fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.netns);
        let file = std::fs::File::open(&path).expect("open netns");
        let want = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns");
                let now = std::os::unix::fs::MetadataExt::ino(
                    &std::fs::metadata("/proc/thread-self/ns/net").unwrap(),
                );
                assert_eq!(now, want, "thread is not in the test namespace");
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    fn links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.netns, "-o", "link", "show"])
            .output()
            .unwrap();
        stdout(&out)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    fn cgroup_dirs(&self, guest: &str) -> Vec<std::path::PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|e| e.path().join(&self.world.cgroup_base).join(guest))
            .filter(|p| p.exists())
            .collect()
    }

    /// Stop a guest and check that nothing of it is left.
    fn stop_and_check(&self, guest: &str) -> Duration {
        let run_dir = self.world.root().join("run/vsctl").join(guest);
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("state.json")).unwrap()).unwrap();
        let sup = state["supervisor_pid"].as_i64().unwrap() as i32;
        let init = state["init_pid"].as_i64().unwrap() as i32;
        // Detected from /sbin/init -> systemd: halt via SIGRTMIN+3.
        assert_eq!(
            state["stop_signal"].as_i64(),
            Some(i64::from(libc::SIGRTMIN() + 3)),
            "{guest}: {state}"
        );
        let t = Instant::now();
        let out = self.vsctl(&["stop", guest]);
        let took = t.elapsed();
        assert!(out.status.success(), "stop {guest}: {}", stderr(&out));
        // "stopped": systemd powered off on SIGRTMIN+3 within the default
        // stop timeout (30 s), nothing had to be killed.
        assert!(
            stderr(&out).contains(&format!("{guest}: stopped")),
            "{guest} did not stop cleanly: {}",
            stderr(&out)
        );
        eprintln!("{guest}: stopped in {took:.1?}");
        for pid in [init, sup] {
            assert!(!alive(pid), "{guest}: process {pid} is still alive");
        }
        assert!(
            self.cgroup_dirs(guest).is_empty(),
            "{guest}: cgroups left: {:?}",
            self.cgroup_dirs(guest)
        );
        let (host_end, _) = vsctl::net::interface_names(guest);
        let links = self.links();
        assert!(
            !links.contains(&host_end),
            "{guest}: veth host end {host_end} left in the namespace: {links:?}"
        );
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mi.contains(self.world.root().to_str().unwrap()),
            "{guest}: mounts left on the host"
        );
        let log = stdout(&self.vsctl(&["logs", guest]));
        assert!(
            log.contains("init exited"),
            "{guest}: no exit recorded:\n{log}"
        );
        took
    }
}

/// Alive and not a zombie (a stopped supervisor may wait to be reaped by
/// whatever reaper adopted it).
fn alive(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().next())
            .unwrap_or("X");
        if matches!(state, "Z" | "X") {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn guest_file(template: &str, addr: &str, privileged: bool) -> String {
    let mut s = format!(
        "template = \"{template}\"\n[network]\naddresses = [\"{addr}/24\"]\ngateway = \"10.79.0.1\"\n"
    );
    if privileged {
        s.push_str("[security]\nuserns = false\n");
    }
    s
}

/// The container interface as systemd sees it, checked from inside.
fn check_container_interface(lab: &Lab, guest: &str, privileged: bool) {
    let (code, out) = lab.sh(
        guest,
        "readlink /proc/1/exe; systemd-detect-virt; stat -fc %T /sys/fs/cgroup; \
         grep '^0::' /proc/1/cgroup; cat /run/host/container-manager; \
         tr '\\0' '\\n' < /proc/1/environ | grep -c '^container=vsctl$'; \
         test -s /run/host/os-release && echo os-release; \
         cat /sys/fs/cgroup/system.slice/systemd-journald.service/cgroup.procs | wc -l; \
         test -w /sys/fs/cgroup/cgroup.procs && echo procs-writable; \
         stat -fc %T /run/lock",
    );
    assert_eq!(code, 0, "{guest}: {out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(
        lines[0].ends_with("systemd"),
        "{guest}: PID 1 is {}",
        lines[0]
    );
    assert_eq!(lines[1], "container-other", "{guest}: {out}");
    // Unified mode: cgroup2 at /sys/fs/cgroup, PID 1 in its own init.scope.
    assert_eq!(lines[2], "cgroup2fs", "{guest}: {out}");
    assert_eq!(lines[3], "0::/init.scope", "{guest}: {out}");
    assert_eq!(lines[4], "vsctl", "{guest}: {out}");
    assert_eq!(lines[5], "1", "{guest}: container env: {out}");
    assert_eq!(lines[6], "os-release", "{guest}: {out}");
    // systemd tracks its services in sub-cgroups of the guest's tree.
    assert!(
        lines[7].parse::<u32>().is_ok_and(|n| n >= 1),
        "{guest}: journald not in its own cgroup: {out}"
    );
    assert_eq!(lines[8], "procs-writable", "{guest}: {out}");
    assert_eq!(lines[9], "tmpfs", "{guest}: /run/lock: {out}");
    let host = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap();
    let (_, guest_copy) = lab.exec(guest, &["cat", "/run/host/os-release"]);
    assert_eq!(guest_copy, host, "{guest}: /run/host/os-release");
    if privileged {
        // Host root, but its own cgroup's limit files are read-only mounts
        // it cannot remove (no CAP_SYS_ADMIN); sub-cgroups work.
        let (code, out) = lab.sh(
            guest,
            "echo 3 > /sys/fs/cgroup/cgroup.max.depth && echo WROTE; \
             mkdir /sys/fs/cgroup/probe && rmdir /sys/fs/cgroup/probe && echo SUBTREE; \
             umount /sys/fs/cgroup/cgroup.max.depth 2>/dev/null && echo UNMOUNTED; true",
        );
        assert_eq!(code, 0, "{guest}: {out}");
        assert!(
            !out.contains("WROTE"),
            "{guest}: limit file writable: {out}"
        );
        assert!(!out.contains("UNMOUNTED"), "{guest}: {out}");
        assert!(out.contains("SUBTREE"), "{guest}: {out}");
        let host_copy = lab
            .cgroup_dirs(guest)
            .into_iter()
            .find(|d| d.join("cgroup.max.depth").exists())
            .map(|d| std::fs::read_to_string(d.join("cgroup.max.depth")).unwrap());
        assert_eq!(host_copy.as_deref().map(str::trim), Some("max"));
    }
}

/// GET / over HTTP and the SSH banner, from inside the test's namespace.
fn check_http_and_ssh(lab: &Lab, addr: &str) {
    let ip: std::net::IpAddr = addr.parse().unwrap();
    let (http, ssh) = lab.in_netns(|| {
        let connect = |port: u16| -> std::io::Result<TcpStream> {
            let sa = SocketAddr::new(ip, port);
            let mut last = None;
            for _ in 0..20 {
                match TcpStream::connect_timeout(&sa, Duration::from_secs(2)) {
                    Ok(s) => {
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        return Ok(s);
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(last.unwrap())
        };
        let mut http = String::new();
        let mut s = connect(80).expect("connect to port 80");
        s.write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")
            .unwrap();
        s.read_to_string(&mut http).unwrap();
        let mut s = connect(22).expect("connect to port 22");
        let mut banner = Vec::new();
        let mut buf = [0u8; 256];
        while !banner.contains(&b'\n') {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => banner.extend_from_slice(&buf[..n]),
            }
        }
        (http, String::from_utf8_lossy(&banner).into_owned())
    });
    assert!(http.starts_with("HTTP/1.1 200"), "{addr}: {http}");
    assert!(
        http.contains("vsctl debian-bookworm-web guest"),
        "{addr}: {http}"
    );
    assert!(ssh.starts_with("SSH-2.0-"), "{addr}: banner {ssh:?}");
}

fn boot_check(lab: &Lab, guest: &str, privileged: bool) {
    let (state, failed) = lab.wait_for_boot(guest, Duration::from_secs(120));
    assert!(
        state == "running" || state == "degraded",
        "{guest}: is-system-running = {state:?}; log:\n{}",
        stdout(&lab.vsctl(&["logs", guest]))
    );
    // Every unit that failed for lack of container support is fixed: none
    // may fail (the output above names them if one does).
    assert_eq!(failed.trim(), "", "{guest}: failed units");
    assert_eq!(state, "running", "{guest}");
    check_container_interface(lab, guest, privileged);
}

/// `vsctl start --wait` returns only once systemd is done booting, and
/// `vsctl status` says the guest is ready.
fn check_start_wait(lab: &Lab, guest: &str) {
    let t = Instant::now();
    let out = lab.vsctl(&["start", guest, "--wait", "--timeout", "120"]);
    assert!(
        out.status.success(),
        "{guest}: start --wait: {}\nlog:\n{}",
        stderr(&out),
        stdout(&lab.vsctl(&["logs", guest]))
    );
    assert!(stderr(&out).contains("is ready"), "{}", stderr(&out));
    eprintln!("{guest}: ready after {:.1?}", t.elapsed());
    let (_, state) = lab.exec(guest, &["systemctl", "is-system-running"]);
    let state = state.trim();
    assert!(
        state == "running" || state == "degraded",
        "{guest}: is-system-running right after start --wait: {state:?}"
    );
    let status = lab.vsctl_ok(&["status", guest]);
    assert!(status.contains("Readiness:  ready"), "{guest}: {status}");
    eprintln!(
        "{guest}: {:?}",
        status
            .lines()
            .skip_while(|l| !l.starts_with("Readiness:"))
            .take(2)
            .collect::<Vec<_>>()
    );
    let (_, json) = lab.world.vsctl_json(&["status", guest]);
    assert_eq!(json["runtime"]["ready"], true, "{json}");
}

#[test]
fn bookworm_guests_boot_systemd_and_serve_http_and_ssh() {
    if skip() {
        return;
    }
    let t0 = Instant::now();
    let mut lab = Lab::new("bw", 0x0300_0000);
    // Builds debian-bookworm (systemd) first, then derives the web template.
    lab.build_template("debian-bookworm-web");
    lab.add_guest(
        "sdweb1",
        &guest_file("debian-bookworm-web", "10.79.0.2", false),
    );
    lab.add_guest(
        "sdweb2",
        &guest_file("debian-bookworm-web", "10.79.0.3", true),
    );
    // The plain base template (built on the way) boots the same way.
    lab.add_guest("sdbw", &guest_file("debian-bookworm", "10.79.0.4", false));
    let t = Instant::now();
    lab.vsctl_ok(&["apply"]);
    eprintln!("apply (3 guests) took {:.1?}", t.elapsed());
    check_start_wait(&lab, "sdbw");
    boot_check(&lab, "sdbw", false);

    for (g, privileged, addr) in [
        ("sdweb1", false, "10.79.0.2"),
        ("sdweb2", true, "10.79.0.3"),
    ] {
        boot_check(&lab, g, privileged);
        check_http_and_ssh(&lab, addr);
        // Host keys were made in this guest at first boot, not in the template.
        let (code, out) = lab.sh(g, "ls /etc/ssh/ssh_host_ed25519_key.pub");
        assert_eq!(code, 0, "{g}: {out}");
    }
    // Two guests, two different host keys and machine ids.
    let key = |g| lab.exec(g, &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).1;
    assert_ne!(key("sdweb1"), key("sdweb2"));
    let mid = |g| lab.exec(g, &["cat", "/etc/machine-id"]).1;
    assert_ne!(mid("sdweb1"), mid("sdweb2"));

    for g in ["sdweb1", "sdweb2", "sdbw"] {
        lab.stop_and_check(g);
    }
    assert_eq!(lab.links(), ["lo", "vsbr0"]);
    eprintln!("whole test: {:.1?}", t0.elapsed());
}

#[test]
fn trixie_guests_boot_systemd_in_unified_mode() {
    if skip() {
        return;
    }
    let t0 = Instant::now();
    let mut lab = Lab::new("tx", 0x0310_0000);
    lab.build_template("debian-trixie");
    lab.add_guest("sdtx1", &guest_file("debian-trixie", "10.79.0.2", false));
    lab.add_guest("sdtx2", &guest_file("debian-trixie", "10.79.0.3", true));
    lab.vsctl_ok(&["apply"]);
    // `start --wait` on a guest apply just booted: returns once its systemd
    // sent READY=1 through /run/host/notify (unprivileged: sent by a mapped
    // uid), and boot is then over.
    check_start_wait(&lab, "sdtx1");
    for (g, privileged) in [("sdtx1", false), ("sdtx2", true)] {
        boot_check(&lab, g, privileged);
    }
    // A guest that reboots itself comes back (the supervisor boots init
    // again) and reaches the same state, with the machine id its first boot
    // committed (journal directories are named after it).
    let machine_id = lab.exec("sdtx1", &["cat", "/etc/machine-id"]).1;
    assert_eq!(machine_id.trim().len(), 32, "{machine_id:?}");
    let (code, out) = lab.exec("sdtx1", &["systemctl", "reboot"]);
    assert_eq!(code, 0, "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_dir = lab.world.root().join("run/vsctl/sdtx1");
    loop {
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("state.json")).unwrap()).unwrap();
        if st["restarts"].as_u64() == Some(1) && st["phase"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "sdtx1 did not reboot: {st}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Readiness is per boot: the rebooted init reports it again.
    check_start_wait(&lab, "sdtx1");
    boot_check(&lab, "sdtx1", false);
    assert_eq!(lab.exec("sdtx1", &["cat", "/etc/machine-id"]).1, machine_id);
    for g in ["sdtx1", "sdtx2"] {
        lab.stop_and_check(g);
    }
    // From stopped: `start --wait` boots the (privileged) guest and waits.
    check_start_wait(&lab, "sdtx2");
    lab.stop_and_check("sdtx2");
    assert_eq!(lab.links(), ["lo", "vsbr0"]);
    assert!(Path::new(&format!("/run/netns/{}", lab.netns)).exists());
    eprintln!("whole test: {:.1?}", t0.elapsed());
}
