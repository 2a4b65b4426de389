//! What a guest must not be able to do, checked from inside real guests
//! (privileged and unprivileged) through `exec`.

mod runtime_util;
use runtime_util::*;
use std::process::Command;

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
