//! What a guest must not be able to do, checked from inside real guests
//! (privileged and unprivileged) through `exec`.

mod runtime_util;
use runtime_util::*;
use std::process::Command;
use std::time::Duration;

fn ok(g: &Guest, script: &str) -> String {
    let (code, out, err) = g.sh(script);
    assert_eq!(
        code, 0,
        "expected success: {script}\nstdout: {out}\nstderr: {err}"
    );
    out
}

fn fails(g: &Guest, script: &str) -> String {
    let (code, out, err) = g.sh(script);
    assert_ne!(
        code, 0,
        "expected failure: {script}\nstdout: {out}\nstderr: {err}"
    );
    err
}

fn check_restrictions(g: &Guest, privileged: bool) {
    // Kernel modules: finit_module/init_module are refused.
    ok(g, "echo notamodule > /tmp/x.ko");
    fails(g, "insmod /tmp/x.ko");

    // No host block devices, and none can be made or mounted.
    fails(
        g,
        "ls /dev/vda /dev/sda /dev/mem /dev/kmsg 2>/dev/null | grep .",
    );
    fails(g, "mknod /tmp/vda b 254 0");
    fails(g, "mknod /tmp/mem c 1 1");
    fails(g, "mount -t ext4 /dev/vda /mnt");
    fails(g, "mount -t ext4 /tmp/vda /mnt");
    if privileged {
        // Without CAP_SYS_ADMIN not even a tmpfs.
        fails(g, "mount -t tmpfs none /mnt");
    }
    if privileged {
        // A user namespace would give a privileged guest every capability
        // back over namespaces of its own: refused (seccomp, on the clone
        // and unshare flags). Forks and other namespaces' refusals as before.
        let err = fails(g, "unshare -U true");
        assert!(err.contains("Operation not permitted"), "{err}");
        ok(g, "sh -c 'true' && (true) && echo forked");
    } else {
        // An unprivileged guest is in a user namespace of its own and may
        // nest another (rootless containers, systemd's PrivateUsers=).
        ok(g, "unshare -U true");
    }
    if privileged {
        // (An unprivileged guest may mount its own cgroup subtree: the
        // cgroup namespace roots it at the guest's cgroup.)
        fails(g, "mount -t cgroup -o memory none /mnt");
    }

    // Own network namespace: only loopback, so no raw socket on host links.
    let out = ok(g, "cat /proc/net/dev");
    let ifaces: Vec<&str> = out
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim())
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}");
    let out = ok(g, "ls /sys/class/net");
    assert_eq!(out.trim(), "lo");

    // sysctls: host-wide ones are read-only; the guest's own network
    // sysctls need CAP_NET_ADMIN, which no guest has by default (its
    // network is vsctl's to configure).
    fails(g, "echo 1 > /proc/sys/kernel/sysrq");
    fails(g, "echo guest > /proc/sys/kernel/domainname");
    fails(g, "echo 1 > /proc/sysrq-trigger");
    fails(g, "echo 1 > /proc/sys/net/ipv4/ip_forward");
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(
        host_fwd.trim(),
        "0",
        "guest sysctl leaked to the host netns"
    );

    // The clock belongs to the host.
    let before = std::time::SystemTime::now();
    // (busybox date prints the error but exits 0.)
    let (_, _, err) = g.sh("date -s '2001-01-01 00:00:00'");
    assert!(err.contains("not permitted"), "{err}");
    assert!(std::time::SystemTime::now() >= before);

    // Immutable flags need CAP_LINUX_IMMUTABLE on the host.
    ok(g, "touch /tmp/imm");
    fails(g, "chattr +i /tmp/imm");
    ok(g, "rm /tmp/imm");

    // Masked /proc entries read as empty.
    let out = ok(g, "cat /proc/timer_list /proc/keys 2>/dev/null; echo end");
    assert_eq!(out, "end\n");

    // Seccomp filter active (mode 2), capabilities reduced, no NO_NEW_PRIVS.
    let out = ok(
        g,
        "grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status",
    );
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    let bnd = u64::from_str_radix(
        out.lines()
            .find(|l| l.starts_with("CapBnd"))
            .unwrap()
            .split('\t')
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    let cap = |n: &str| vsctl::caps::parse(n).unwrap();
    for c in ["SYS_MODULE", "SYS_RAWIO", "SYS_TIME"] {
        assert_eq!(bnd & cap(c), 0, "{c} in bounding set");
    }
    if !privileged {
        // Guest root traces its own processes, not those of other ids
        // (such as a process vsctl puts into the guest).
        assert_eq!(bnd & cap("SYS_PTRACE"), 0, "SYS_PTRACE in bounding set");
    }
    if privileged {
        for c in [
            "SYS_ADMIN",
            "MKNOD",
            "NET_ADMIN",
            "SYS_PTRACE",
            "DAC_READ_SEARCH",
        ] {
            assert_eq!(bnd & cap(c), 0, "{c} in bounding set of a privileged guest");
        }
    }

    // The guest sees its own cgroups, rooted at itself, and cannot change
    // its limits. Where the host has cgroup2 (pure or hybrid) the guest gets
    // exactly that at /sys/fs/cgroup (systemd's unified mode): it may build
    // a subtree (systemd needs to), never touch the files of its own root
    // beyond the delegation set. Pure v1 hosts: named v1 hierarchies.
    let out = ok(g, "cat /proc/self/cgroup");
    assert!(
        out.lines().all(|l| l.ends_with(":/")),
        "cgroup paths outside the guest's root:\n{out}"
    );
    let host_has_cgroup2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    if host_has_cgroup2 {
        let out = ok(
            g,
            "awk '$2 == \"/sys/fs/cgroup\" {print $3}' /proc/self/mounts && ls /sys/fs/cgroup",
        );
        assert!(out.starts_with("cgroup2\n"), "{out}");
        assert!(
            !out.contains("memory\n") && !out.contains("vsctl-test"),
            "{out}"
        );
        // Sub-cgroups work and stay inside the guest's.
        let out = ok(
            g,
            "mkdir /sys/fs/cgroup/sub && echo $$ > /sys/fs/cgroup/sub/cgroup.procs && grep ^0:: /proc/self/cgroup",
        );
        assert_eq!(out.trim(), "0::/sub", "{out}");
        // Limits at the guest's root are not the guest's to change (owned by
        // host root for unprivileged guests, read-only mounts for privileged).
        fails(g, "echo 3 > /sys/fs/cgroup/cgroup.max.depth");
        fails(g, "echo 3 > /sys/fs/cgroup/cgroup.max.descendants");
        if privileged {
            // ... and the read-only mounts cannot be removed.
            fails(g, "umount /sys/fs/cgroup/cgroup.max.depth");
        }
    } else if std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        ok(
            g,
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max",
        );
        fails(g, "echo 1 > /sys/fs/cgroup/pids/pids.max");
        if privileged {
            fails(g, "mkdir /sys/fs/cgroup/memory/sub");
        } else {
            // Delegated: sub-cgroups work, and stay inside the guest's.
            let out = ok(
                g,
                "mkdir /sys/fs/cgroup/memory/sub && echo $$ > /sys/fs/cgroup/memory/sub/cgroup.procs && grep memory /proc/self/cgroup",
            );
            assert!(out.trim().ends_with(":memory:/sub"), "{out}");
            fails(
                g,
                "echo 999999999999 > /sys/fs/cgroup/memory/memory.limit_in_bytes",
            );
        }
        let out = ok(g, "ls /sys/fs/cgroup/memory");
        assert!(
            !out.contains("vsctl-test"),
            "host cgroup tree visible:\n{out}"
        );
    }

    // Host processes are invisible.
    let mut marker = Command::new("/bin/sleep").arg("4242.4242").spawn().unwrap();
    let out = ok(g, "ps");
    marker.kill().unwrap();
    marker.wait().unwrap();
    assert!(!out.contains("4242.4242"), "{out}");
    let n = out.lines().count() - 1;
    assert!(n <= 5, "guest sees {n} processes:\n{out}");

    // No descriptor of the supervisor or of vsctl reaches the guest.
    let out = ok(g, "ls /proc/1/fd");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "init fds: {out}"
    );
    let out = ok(g, "ls /proc/self/fd");
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert!(fds.len() <= 4, "exec fds: {out}");

    // No host paths: the old root is gone.
    fails(g, "ls /proc/1/root/tmp/../../work 2>/dev/null | grep .");
    // Every mount point is a guest path: no old-root mounts survived pivot.
    // (Field 4, a bind source's path inside its filesystem, may name host
    // directories; that is how bind mounts read everywhere.)
    let out = ok(g, "cat /proc/self/mountinfo");
    for l in out.lines() {
        let mp = l.split(' ').nth(4).unwrap();
        assert!(
            !mp.starts_with("/tmp/") && !mp.starts_with("/work") && mp != "/boot",
            "host mount in guest: {l}"
        );
    }
    assert!(out.lines().count() < 80, "{out}");
}

#[test]
fn privileged_guest_is_confined() {
    let g = Guest::busybox("sec-priv", None);
    g.start();
    check_restrictions(&g, true);
    g.stop();
}

#[test]
fn unprivileged_guest_is_confined() {
    let g = Guest::busybox("sec-unpriv", Some(400_000));
    g.start();
    check_restrictions(&g, false);
    // Root in the guest is nobody on the host.
    let out = ok(&g, "cat /proc/self/uid_map");
    assert!(
        out.split_whitespace().collect::<Vec<_>>() == ["0", "400000", "65536"],
        "{out}"
    );
    g.stop();
}

#[test]
fn symlinks_planted_in_the_rootfs_do_not_redirect_mounts() {
    // A guest (or its image) replaces /dev and /proc with links to host
    // paths; the runtime must resolve them inside the guest root.
    let g = Guest::busybox("sec-symlink", None);
    let root = g.rootfs();
    std::fs::remove_dir(root.join("mnt")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("mnt")).unwrap();
    std::fs::remove_dir(root.join("dev")).unwrap();
    std::os::unix::fs::symlink("/../../../../etc", root.join("dev")).unwrap();
    let mut g = g;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("marker"), "m").unwrap();
    g.spec.mounts.push(vsctl::runtime::BindMount {
        source: src.path().to_path_buf(),
        target: "/mnt/data".into(),
        read_only: true,
        idmap: false,
    });
    g.save();
    g.start();
    // The bind landed in the guest's /etc (where its own /mnt link points).
    ok(&g, "cat /etc/data/marker");
    fails(&g, "touch /etc/data/x");
    assert!(
        !std::path::Path::new("/etc/data").exists(),
        "mount point created on the host"
    );
    g.stop();
}

/// A pty the test owns, standing in for the operator's terminal. The slave
/// is in raw mode, so anything pushed into its input queue (TIOCSTI) can be
/// read back at once.
struct OperatorTerminal {
    master: std::os::fd::OwnedFd,
    slave: std::os::fd::OwnedFd,
}

impl OperatorTerminal {
    fn new() -> OperatorTerminal {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut t = tcgetattr(&pty.slave).unwrap();
        cfmakeraw(&mut t);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t).unwrap();
        OperatorTerminal {
            master: pty.master,
            slave: pty.slave,
        }
    }

    /// `command` in a new session whose controlling terminal is this pty,
    /// as when an operator types it in an interactive shell.
    fn controlling(&self, command: &mut Command) {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let slave = self.slave.as_raw_fd();
        // SAFETY (test): setsid and ioctl are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setsid()?;
                if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    fn stdio(&self) -> std::process::Stdio {
        self.slave.try_clone().unwrap().into()
    }

    /// What was typed into the terminal (its input queue) since it was made.
    fn injected(&self) -> String {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let mut fds = [PollFd::new(self.slave.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(200u16)).unwrap() == 0 {
                break;
            }
            match nix::unistd::read(&self.slave, &mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        // Drain what the probe wrote to the terminal, so nothing blocks.
        let _ = nix::fcntl::fcntl(
            &self.master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        while nix::unistd::read(&self.master, &mut buf).is_ok_and(|n| n > 0) {}
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// HIGH 1 of the security review (lxc-attach CVE-2016-10124 class): the
/// command `exec` starts must never share the operator's session, so it
/// can neither open the operator's terminal (/dev/tty) nor push input into
/// it with TIOCSTI, whether vsctl's stdio is /dev/null or the terminal.
#[test]
fn exec_cannot_type_into_the_operators_terminal() {
    use std::process::Stdio;
    let g = Guest::busybox("sec-sti", Some(410_000));
    install_attack_probe(&g.rootfs());
    g.start();
    let term = OperatorTerminal::new();

    // `vsctl exec -T g -- cmd </dev/null >/dev/null 2>&1` from a shell.
    let mut cmd = rt(&g.spec_path);
    cmd.args(["exec", "--", "/bin/attack", "tiocsti"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    term.controlling(&mut cmd);
    let o = cmd.output().unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(report.contains("dev-tty: open failed"), "{report}");
    assert!(!report.contains("INJECTED"), "{report}");
    assert_eq!(
        term.injected(),
        "",
        "the guest typed into the operator's terminal"
    );

    // `vsctl exec -T g -- cmd` with the terminal as stdin and stderr.
    let mut cmd = rt(&g.spec_path);
    cmd.args(["exec", "--", "/bin/attack", "tiocsti"])
        .stdin(term.stdio())
        .stdout(Stdio::piped())
        .stderr(term.stdio());
    term.controlling(&mut cmd);
    let o = cmd.output().unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{report}");
    assert!(!report.contains("INJECTED"), "{report}");
    assert_eq!(
        term.injected(),
        "",
        "the guest typed into the operator's terminal"
    );
    g.stop();
}

/// HIGH 1: without a pty, the command's stdio are pipes vsctl relays; no
/// host descriptor enters the guest. Before, a privileged guest reopened
/// the operator's root-only files given as stdin/stdout through
/// /proc/self/fd and truncated or overwrote them.
#[test]
fn exec_stdio_reaches_the_guest_as_pipes_never_as_host_files() {
    use std::os::unix::fs::OpenOptionsExt;
    let g = Guest::busybox("sec-stdio", None);
    install_attack_probe(&g.rootfs());
    g.start();
    let files = tempfile::tempdir().unwrap();
    let output = files.path().join("operator-output");
    let input = files.path().join("operator-input");
    for (p, text) in [(&output, "operator-secret\n"), (&input, "input-secret\n")] {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
            .unwrap();
        std::fs::write(p, text).unwrap();
    }
    let open = |p: &std::path::Path, append: bool| {
        std::fs::OpenOptions::new()
            .read(!append)
            .append(append)
            .open(p)
            .unwrap()
    };

    let o = rt(&g.spec_path)
        .args(["exec", "--", "/bin/attack", "fds"])
        .stdin(open(&input, false))
        .output()
        .unwrap();
    let fds = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{fds}");
    for line in fds.lines() {
        assert!(
            line.split(' ').nth(1).unwrap().starts_with("pipe:"),
            "{fds}"
        );
    }

    // Reopen stdout to truncate it, stdin to overwrite it.
    let o = rt(&g.spec_path)
        .args([
            "exec",
            "--",
            "/bin/sh",
            "-c",
            ": > /proc/self/fd/1; echo overwritten > /proc/self/fd/0; echo relayed",
        ])
        .stdin(open(&input, false))
        .stdout(open(&output, true))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "operator-secret\nrelayed\n"
    );
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "input-secret\n");
    g.stop();
}

/// Run `vsctl exec -- true` `n` times while /bin/attack races to ptrace
/// and open /proc/PID/exe of every new process; returns the probe's report.
fn race_execs(g: &Guest, n: usize) -> String {
    let (code, _, err) = g.sh(
        "/bin/attack race 600 /tmp/race.out </dev/null >/dev/null 2>&1 & echo $! > /tmp/race.pid",
    );
    assert_eq!(code, 0, "{err}");
    for i in 0..n {
        // Bounded: a process the probe got hold of might never finish.
        let mut exec = rt(&g.spec_path)
            .args(["exec", "--", "/bin/true"])
            .spawn()
            .unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while exec.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > end {
                let _ = exec.kill();
                panic!(
                    "exec {i} hung; the probe's report so far:\n{}",
                    race_report(g)
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let (code, _, err) = g.sh("kill -INT $(cat /tmp/race.pid)");
    assert_eq!(code, 0, "{err}");
    assert!(
        g.wait_file("tmp/race.out", "done", Duration::from_secs(10)),
        "the probe did not finish"
    );
    let report = race_report(g);
    // It saw the execs' processes come and go.
    let tried: usize = report
        .rsplit("tried=")
        .next()
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        tried >= n / 2,
        "the probe saw only {tried} processes:\n{report}"
    );
    report
}

fn race_report(g: &Guest) -> String {
    std::fs::read_to_string(g.rootfs().join("tmp/race.out")).unwrap_or_default()
}

/// HIGH 2 (runc CVE-2016-9962 class): a guest process races every exec to
/// ptrace-attach to the new process, or to open its /proc/PID/exe (the
/// CVE-2019-5736 route to the vsctl binary), while it is still host root.
/// The exec'd process must be the guest's in every respect (ids,
/// capabilities, seccomp, not dumpable) before the guest can see it. The
/// unprivileged guest is given CAP_SYS_PTRACE back, so the ordering, not
/// only the missing capability, is what is tested.
#[test]
fn guests_cannot_ptrace_or_reach_the_binary_of_an_exec() {
    let mut unpriv = Guest::busybox("sec-race-u", Some(420_000));
    unpriv.spec.caps_add = vec!["SYS_PTRACE".into()];
    unpriv.save();
    let privileged = Guest::busybox("sec-race-p", None);
    for g in [&unpriv, &privileged] {
        install_attack_probe(&g.rootfs());
        g.start();
        let report = race_execs(g, 150);
        let hits: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with("attach") || l.starts_with("exe"))
            .collect();
        assert!(
            hits.is_empty(),
            "guest {} reached exec's process:\n{report}",
            g.spec.name
        );
        g.stop();
    }
}

/// `exec -t` takes a pty from the guest's own devpts, found through the
/// guest's root. The guest owns that path: an unprivileged guest can put a
/// symlink to a host path where its ptmx was, and vsctl (host root) must
/// not open what it names (on a real host: /dev/watchdog arms the watchdog
/// on open, a FIFO blocks). Watched with inotify on a host canary.
#[test]
fn exec_tty_never_opens_a_host_path_the_guest_planted() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let g = Guest::busybox("sec-ptmx", Some(430_000));
    g.start();
    let canary_dir = tempfile::tempdir().unwrap();
    let canary = canary_dir.path().join("canary");
    std::fs::write(&canary, "host file\n").unwrap();
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    inotify.add_watch(&canary, AddWatchFlags::IN_OPEN).unwrap();
    let (code, _, err) = g.sh(&format!(
        "umount -l /dev/pts && busybox ln -s {} /dev/pts/ptmx",
        canary.display()
    ));
    assert_eq!(code, 0, "{err}");

    let term = OperatorTerminal::new();
    let mut cmd = rt(&g.spec_path);
    cmd.args(["exec", "-t", "--", "/bin/true"])
        .stdin(term.stdio())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    term.controlling(&mut cmd);
    let o = cmd.output().unwrap();
    assert_ne!(
        o.status.code(),
        Some(0),
        "exec -t worked without a devpts ptmx"
    );
    let opened = inotify.read_events().map(|e| e.len()).unwrap_or(0);
    assert_eq!(opened, 0, "vsctl opened the host path the guest planted");
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host file\n");
    g.stop();
}

/// vsock is not network-namespaced: a guest's socket would share the host's
/// (or the VM's) vsock port space and reach the hypervisor. socket() and
/// socketpair() with AF_VSOCK fail inside every guest (EAFNOSUPPORT, as on
/// a kernel without vsock); the other families guests need still work.
/// Where the host has vsock, the leak itself is checked: a guest holding a
/// port made the host's bind of it fail with EADDRINUSE.
fn check_vsock_refused(g: &Guest, port: u32) {
    let probe = static_helper("sockprobe");
    let inside = g.rootfs().join("bin/sockprobe");
    std::fs::copy(&probe, &inside).unwrap();
    let out = ok(
        g,
        "sockprobe vsock vsock-pair inet inet6 unix unix-pair netlink",
    );
    let eafnosupport = format!("errno {}", libc::EAFNOSUPPORT);
    assert_eq!(
        out,
        format!(
            "vsock {eafnosupport}\nvsock-pair {eafnosupport}\ninet ok\ninet6 ok\nunix ok\nunix-pair ok\nnetlink ok\n"
        ),
        "socket families inside the guest"
    );

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr, bind, socket};
    let Ok(_) = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::empty(),
        None,
    ) else {
        eprintln!("this host has no vsock: the port leak itself is not checked");
        return;
    };
    // The guest tries to hold the port ...
    ok(
        g,
        &format!("(sockprobe bind-vsock {port} 30 > /tmp/vsock-bind.out 2>&1 &) ; true"),
    );
    let report = g.rootfs().join("tmp/vsock-bind.out");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&report).map_or(true, |s| !s.ends_with('\n')) {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest's bind attempt did not report"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let guest_said = std::fs::read_to_string(&report).unwrap();
    // ... and the host can still bind it.
    let host = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    let bound = bind(
        std::os::fd::AsRawFd::as_raw_fd(&host),
        &VsockAddr::new(libc::VMADDR_CID_ANY, port),
    );
    assert_eq!(
        bound,
        Ok(()),
        "the host could not bind vsock port {port}: the guest holds it ({guest_said})"
    );
    assert_eq!(guest_said.trim(), eafnosupport, "{guest_said}");
}

#[test]
fn guests_cannot_open_vsock_sockets() {
    let port = 40_000 + std::process::id() % 20_000;
    for (i, userns) in [None, Some(410_000)].into_iter().enumerate() {
        let g = Guest::busybox(&format!("sec-vsock{i}"), userns);
        g.start();
        check_vsock_refused(&g, port + i as u32);
        g.stop();
    }
}
