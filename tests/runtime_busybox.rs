//! End-to-end: busybox guests boot their own init, run a service, stop
//! cleanly and leave nothing behind.

mod runtime_util;
use runtime_util::*;
use std::fs;
use std::time::{Duration, Instant};
use vsctl::runtime::RootfsMount;

fn assert_nothing_left(
    g: &Guest,
    init_pid: i32,
    sup_pid: i32,
    ns: &[(String, String)],
    stop_began: u64,
) {
    assert!(!alive(init_pid), "init {init_pid} still alive");
    assert!(!alive(sup_pid), "supervisor {sup_pid} still alive");
    for (kind, id) in ns {
        assert!(
            pids_in_ns_started_before(kind, id, stop_began).is_empty(),
            "processes left in {kind} namespace {id}"
        );
    }
    assert!(
        g.cgroup_dirs().is_empty(),
        "cgroups left: {:?}",
        g.cgroup_dirs()
    );
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(g.dir.path().to_str().unwrap()),
        "host mount table references the guest:\n{mi}"
    );
}

fn boot_run_stop(g: &Guest) {
    let started = g.start();
    let init_pid = started["init_pid"].as_i64().unwrap() as i32;
    let sup_pid = started["supervisor_pid"].as_i64().unwrap() as i32;
    assert!(
        g.wait_file("tmp/rcs.log", "rcS-ran", Duration::from_secs(5)),
        "rcS did not run; log:\n{}",
        g.log()
    );
    assert!(
        g.wait_file("tmp/svc.log", "svc-start", Duration::from_secs(5)),
        "service did not start"
    );
    let st = g.status();
    assert_eq!(st["state"], "running");
    assert_eq!(st["init_pid"].as_i64().unwrap() as i32, init_pid);

    // PID 1 in the guest is busybox init; the service runs under it.
    let (code, out, err) = g.sh("ps");
    assert_eq!(code, 0, "{err}");
    let first = out.lines().nth(1).unwrap_or_default();
    assert!(
        first.trim_start().starts_with("1 ") && first.ends_with("init"),
        "ps:\n{out}"
    );
    assert!(out.contains("sleep 100000"), "ps:\n{out}");
    let ns: Vec<(String, String)> = ["mnt", "pid", "net", "uts", "ipc", "cgroup"]
        .iter()
        .map(|k| (k.to_string(), ns_of(init_pid, k).unwrap()))
        .collect();
    for (k, id) in &ns {
        assert_ne!(
            Some(id.clone()),
            ns_of(std::process::id() as i32, k),
            "{k} namespace shared with host"
        );
    }
    assert!(!g.cgroup_dirs().is_empty());

    let stop_began = boot_ticks();
    let out = g.stop();
    assert!(out.get("clean").is_some(), "not a clean stop: {out}");
    assert_eq!(g.status()["state"], "stopped");
    assert!(
        g.log().contains("guest-shutting-down"),
        "console log lacks shutdown action:\n{}",
        g.log()
    );
    assert_nothing_left(g, init_pid, sup_pid, &ns, stop_began);
}

#[test]
fn privileged_busybox_guest_boots_runs_service_and_stops_cleanly() {
    let g = Guest::busybox("bb-priv", None);
    assert_eq!(g.status()["state"], "not_started");
    boot_run_stop(&g);
}

#[test]
fn unprivileged_busybox_guest_boots_with_shifted_ids() {
    let g = Guest::busybox("bb-unpriv", Some(300_000));
    g.start();
    let (code, out, err) = g.sh("cat /proc/self/uid_map; id -u; touch /root/made-inside");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("300000") && out.contains("65536"), "{out}");
    // Files created by guest root belong to the shifted range on the host.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(g.rootfs().join("root/made-inside"))
            .unwrap()
            .uid(),
        300_000
    );
    drop(g.stop());
    let g2 = Guest::busybox("bb-unpriv2", Some(300_000));
    boot_run_stop(&g2);
}

#[test]
fn overlay_rootfs_keeps_lower_untouched() {
    let dir = scratch_dir();
    let lower = dir.path().join("lower");
    busybox_rootfs(&lower, INITTAB, None);
    for d in ["upper", "work"] {
        fs::create_dir(dir.path().join(d)).unwrap();
    }
    let rootfs = RootfsMount::Overlay {
        lower: vec![lower.clone()],
        upper: dir.path().join("upper"),
        work: dir.path().join("work"),
    };
    let g = Guest::from_rootfs(dir, "bb-overlay", rootfs, None);
    g.start();
    assert!(
        g.wait_file("tmp/svc.log", "svc-start", Duration::from_secs(5)),
        "log:\n{}",
        g.log()
    );
    assert!(
        !lower.join("tmp/svc.log").exists(),
        "guest wrote into the lower layer"
    );
    let (code, _, err) = g.sh("echo hi > /etc/motd");
    assert_eq!(code, 0, "{err}");
    assert!(g.dir.path().join("upper/etc/motd").exists());
    g.stop();
    assert!(g.cgroup_dirs().is_empty());
}

#[test]
fn exec_propagates_exit_codes() {
    let g = Guest::busybox("bb-exec", None);
    g.start();
    assert_eq!(g.sh("exit 7").0, 7);
    assert_eq!(g.sh("kill -9 $$").0, 137);
    let o = g.cmd(&["exec", "--", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127));
    let o = g.cmd(&["exec", "--", "/etc/inittab"]);
    assert_eq!(o.status.code(), Some(126));
    // The guest sees its own hostname and a reset environment.
    let (_, out, _) = g.sh("hostname; echo \"$container\"; echo \"[$HOSTNAME_FROM_HOST]\"; cat /run/host/container-manager");
    assert_eq!(out, "bb-exec\nvsctl\n[]\nvsctl\n");
    // Large output and input pass through the relay whole, both ways.
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let mut child = rt(&g.spec_path)
        .args(["exec", "--", "/bin/sh", "-c", "cat; echo done >&2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = big.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(feed.as_bytes()).unwrap();
    });
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(o.status.success());
    assert!(o.stdout == big.as_bytes(), "{} bytes back", o.stdout.len());
    assert_eq!(String::from_utf8_lossy(&o.stderr), "done\n");
    // A daemon left holding the command's stdout does not keep exec waiting.
    let start = Instant::now();
    let (code, out, _) = g.sh("sleep 30 & echo started");
    assert_eq!((code, out.as_str()), (0, "started\n"));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    g.stop();
    let o = g.cmd(&["exec", "--", "true"]);
    assert_eq!(o.status.code(), Some(126), "exec into a stopped guest");
}

/// The command runs in a session of its own, yet the operator's Ctrl-C
/// (SIGINT to vsctl's process group) still reaches it.
#[test]
fn exec_passes_the_operators_interrupt_on() {
    use std::os::unix::process::CommandExt;
    let g = Guest::busybox("bb-exec-int", None);
    g.start();
    let mut exec = rt(&g.spec_path)
        .args([
            "exec",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo interrupted > /tmp/int; exit 5' INT; echo ready > /tmp/ready; \
             while true; do sleep 0.1; done",
        ])
        .process_group(0)
        .spawn()
        .unwrap();
    assert!(g.wait_file("tmp/ready", "ready", Duration::from_secs(10)));
    let pgrp = nix::unistd::Pid::from_raw(-(exec.id() as i32));
    nix::sys::signal::kill(pgrp, nix::sys::signal::Signal::SIGINT).unwrap();
    assert!(
        g.wait_file("tmp/int", "interrupted", Duration::from_secs(10)),
        "the command never saw the interrupt"
    );
    let _ = exec.wait();
    g.stop();
}

#[test]
fn guest_reboot_restarts_init_and_poweroff_stops() {
    let g = Guest::busybox("bb-reboot", None);
    let first = g.start()["init_pid"].as_i64().unwrap();
    // busybox `reboot` asks init (SIGTERM) to reboot; the kernel then
    // reports init killed by SIGHUP and the supervisor boots it again.
    let _ = g.sh("reboot");
    let end = Instant::now() + Duration::from_secs(15);
    let mut second = first;
    while Instant::now() < end {
        let st = g.status();
        if st["state"] == "running" && st["init_pid"].as_i64().unwrap() != first {
            second = st["init_pid"].as_i64().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(first, second, "init was not restarted; log:\n{}", g.log());
    assert!(g.wait_file(
        "tmp/svc.log",
        "svc-start\nsvc-start",
        Duration::from_secs(5)
    ));
    // `poweroff` from inside ends the guest for good.
    let _ = g.sh("poweroff");
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end && g.status()["state"] == "running" {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(g.status()["state"], "stopped", "log:\n{}", g.log());
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && !g.cgroup_dirs().is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(g.cgroup_dirs().is_empty());
}

/// A guest whose init (a shell) ignores its stop signal, SIGUSR2, and
/// never exits on its own.
fn stubborn_guest(name: &str, stop_timeout: Duration) -> Guest {
    let mut g = Guest::busybox(name, None);
    g.spec.init = vec![
        "/bin/sh".into(),
        "-c".into(),
        "trap '' USR2 TERM INT; while :; do sleep 1; done".into(),
    ];
    g.spec.stop_signal = Some(libc::SIGUSR2);
    g.spec.stop_timeout = stop_timeout;
    g.save();
    g
}

#[test]
fn stop_kills_an_init_that_ignores_the_stop_signal() {
    // Stop must fall back to killing the cgroup.
    let g = stubborn_guest("bb-stubborn", Duration::from_millis(500));
    let pid = g.start()["init_pid"].as_i64().unwrap() as i32;
    let out = g.stop();
    assert_eq!(out, serde_json::json!("killed"));
    assert!(!alive(pid));
    assert!(g.cgroup_dirs().is_empty());
}

#[test]
fn sigterm_to_the_supervisor_stops_the_guest_within_its_stop_timeout() {
    // What a service manager does to the supervisors in its unit's cgroup
    // on `systemctl stop`: SIGTERM means "stop this guest", and an init
    // that ignores the stop signal is killed once the stop timeout passes.
    let g = stubborn_guest("bb-sigterm", Duration::from_millis(700));
    let started = g.start();
    let init = started["init_pid"].as_i64().unwrap() as i32;
    let supervisor = started["supervisor_pid"].as_i64().unwrap() as i32;
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    while alive(supervisor) && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    assert!(
        !alive(supervisor),
        "supervisor still running after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(600),
        "init was not given its stop timeout: {took:?}"
    );
    assert!(!alive(init));
    assert!(g.cgroup_dirs().is_empty());
    assert_eq!(g.status()["state"], "stopped", "{}", g.status());
}

#[test]
fn boot_failure_is_reported_and_cleaned_up() {
    let mut g = Guest::busybox("bb-badinit", None);
    g.spec.init = vec!["/sbin/does-not-exist".into()];
    g.save();
    let o = g.cmd(&["start"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does-not-exist"), "{err}");
    assert!(g.cgroup_dirs().is_empty());
    assert_ne!(g.status()["state"], "running");
}

#[test]
fn exec_with_tty_gets_a_guest_pty() {
    // util-linux `script` gives the driver a terminal on stdin.
    for userns in [None, Some(500_000)] {
        let g = Guest::busybox("bb-tty", userns);
        g.start();
        let cmd = format!(
            "{} runtime {} exec -t -- /bin/sh -c 'tty; ls -ln $(tty); exit 3'",
            vsctl(),
            g.spec_path.display()
        );
        let o = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(3), "{out}");
        assert!(out.contains("/dev/pts/0"), "no guest pty: {out}");
        assert!(out.contains(" 0 "), "pty not owned by guest root: {out}");
        g.stop();
    }
}

#[test]
fn unprivileged_guest_on_unshifted_tree_via_idmapped_mount() {
    // The rootfs stays owned by host root (as a plain clone of a template
    // would be); the idmapped mount shows it as owned by the guest's root.
    let mut g = Guest::busybox("bb-idmap", None);
    g.spec.userns = Some(vsctl::runtime::IdRange {
        host_base: 600_000,
        count: 65536,
    });
    g.spec.idmap_rootfs = true;
    g.save();
    g.start();
    assert!(
        g.wait_file("tmp/svc.log", "svc-start", Duration::from_secs(5)),
        "log:\n{}",
        g.log()
    );
    let (code, out, err) =
        g.sh("ls -ln /etc/inittab; touch /root/idmapped; cat /proc/self/uid_map");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(" 0        0 ") || out.split_whitespace().nth(2) == Some("0"),
        "{out}"
    );
    assert!(out.contains("600000"), "{out}");
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(g.rootfs().join("root/idmapped")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (0, 0),
        "file created by guest root must be host-root-owned through the idmap"
    );
    boot_stop_after(&g);
}

fn boot_stop_after(g: &Guest) {
    let out = g.stop();
    assert!(out.get("clean").is_some(), "{out}");
    assert!(g.cgroup_dirs().is_empty());
}

#[test]
fn init_exit_is_recorded_as_crash_or_stop() {
    // "killed" = init SIGKILLed from the host (a guest cannot signal its own
    // init with a default-action signal).
    for (script, want) in [
        ("exit 3", "crashed"),
        ("exit 0", "stopped"),
        ("killed", "crashed"),
    ] {
        let mut g = Guest::busybox("bb-crash", None);
        let cmd = if script == "killed" {
            "sleep 100".to_string()
        } else {
            format!("sleep 0.3; {script}")
        };
        g.spec.init = vec!["/bin/sh".into(), "-c".into(), cmd];
        g.save();
        let pid = g.start()["init_pid"].as_i64().unwrap() as i32;
        if script == "killed" {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && g.status()["state"] == "running" {
            std::thread::sleep(Duration::from_millis(50));
        }
        let st = g.status();
        assert_eq!(st["state"], want, "{script}: {st}");
        // The supervisor removed the cgroup on its own.
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && !g.cgroup_dirs().is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(g.cgroup_dirs().is_empty(), "{script}");
        assert_eq!(g.stop(), serde_json::json!("not_running"));
    }
}

#[test]
fn unprivileged_overlay_guest_on_shared_unshifted_layers() {
    // Template layer and the guest's upper/work stay owned by host ids; each
    // layer is idmapped and overlay is built from them inside the guest.
    let dir = scratch_dir();
    let lower = dir.path().join("template");
    busybox_rootfs(&lower, INITTAB, None);
    let gdir = dir.path().join("guest");
    for d in ["upper", "work"] {
        fs::create_dir_all(gdir.join(d)).unwrap();
    }
    let rootfs = RootfsMount::Overlay {
        lower: vec![lower.clone()],
        upper: gdir.join("upper"),
        work: gdir.join("work"),
    };
    let mut g = Guest::from_rootfs(dir, "bb-ovl-idmap", rootfs, Some(700_000));
    g.spec.idmap_rootfs = true;
    g.save();
    g.start();
    assert!(
        g.wait_file("tmp/svc.log", "svc-start", Duration::from_secs(5)),
        "log:\n{}",
        g.log()
    );
    let (code, out, err) = g.sh("ls -ln /bin/busybox; echo x > /root/new; cat /proc/self/uid_map");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("700000"), "{out}");
    assert_eq!(
        out.split_whitespace().nth(2),
        Some("0"),
        "template file not owned by guest root: {out}"
    );
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(gdir.join("upper/root/new")).unwrap();
    assert_eq!(
        m.uid(),
        0,
        "upper file must be stored with host id 0 through the idmap"
    );
    assert!(!lower.join("root/new").exists());
    boot_stop_after(&g);
}
