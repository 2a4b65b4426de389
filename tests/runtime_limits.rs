//! Limits bite inside real guests, and change live without a restart.

mod runtime_util;
use runtime_util::*;
use std::fs;
use std::time::{Duration, Instant};
use vsctl::cgroup::Limits;

fn v1_file(g: &Guest, ctrl: &str, file: &str) -> String {
    fs::read_to_string(format!(
        "/sys/fs/cgroup/{ctrl}/{}/{}/{file}",
        g.spec.cgroup_base, g.spec.name
    ))
    .unwrap_or_else(|e| panic!("{ctrl}/{file}: {e}"))
}

fn is_v1() -> bool {
    !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[test]
fn memory_hog_is_oom_killed_inside_the_guest_only() {
    let mut g = Guest::busybox("lim-mem", None);
    g.spec.limits.memory = Some(32 << 20);
    g.save();
    let init = g.start()["init_pid"].as_i64().unwrap();
    // dd allocates a 128 MiB buffer and fills it: far over the limit.
    let (code, _, err) = g.sh("dd if=/dev/zero of=/dev/null bs=128M count=1");
    assert_eq!(code, 137, "hog not killed by SIGKILL: {err}");
    // The guest survives; only the hog died.
    let st = g.status();
    assert_eq!(st["state"], "running");
    assert_eq!(st["init_pid"].as_i64().unwrap(), init);
    assert_eq!(g.sh("true").0, 0);
    if is_v1() {
        assert_eq!(
            v1_file(&g, "memory", "memory.limit_in_bytes").trim(),
            (32u64 << 20).to_string()
        );
        let oom = v1_file(&g, "memory", "memory.oom_control");
        assert!(
            oom.lines()
                .any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0"),
            "{oom}"
        );
    }
    g.stop();
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    let mut g = Guest::busybox("lim-pids", None);
    g.spec.limits.pids = Some(24);
    g.save();
    g.start();
    // Try to start 60 sleepers; the shell runs into EAGAIN at the limit.
    let (_, _, err) =
        g.sh("for i in $(seq 1 60); do sleep 30 </dev/null >/dev/null 2>&1 & done; true");
    let _ = err;
    let (_, out, _) = g.sh("ps | grep -c 'sleep 30'");
    let n: usize = out.trim().parse().unwrap_or(0);
    assert!(n < 24, "{n} sleepers survived a pids limit of 24");
    if is_v1() {
        let cur: u64 = v1_file(&g, "pids", "pids.current").trim().parse().unwrap();
        assert!(cur <= 24, "pids.current {cur}");
        let ev = v1_file(&g, "pids", "pids.events");
        assert!(ev.trim() != "max 0", "limit never hit: {ev}");
    }
    // The guest still works once the bomb is gone.
    assert_eq!(g.status()["state"], "running");
    g.stop();
}

fn cpu_ratio(g: &Guest, secs: f64) -> f64 {
    let usage = || -> u64 {
        String::from_utf8_lossy(&g.cmd(&["cpu-usage"]).stdout)
            .trim()
            .parse()
            .unwrap()
    };
    let t0 = Instant::now();
    let u0 = usage();
    let (code, _, err) = g.sh(&format!("timeout {secs} sh -c 'while :; do :; done'; true"));
    assert_eq!(code, 0, "{err}");
    let u1 = usage();
    (u1 - u0) as f64 / 1e9 / t0.elapsed().as_secs_f64()
}

#[test]
fn cpu_quota_bites_and_changes_live() {
    let mut g = Guest::busybox("lim-cpu", None);
    g.spec.limits.cpus = Some(0.5);
    g.save();
    let init = g.start()["init_pid"].as_i64().unwrap();
    let r = cpu_ratio(&g, 1.5);
    // The quota caps usage at half a core; the lower bound is loose because
    // CI machines are shared (a busy host can give less than the quota).
    assert!((0.2..=0.62).contains(&r), "cpus=0.5 gave {r:.2} cores");
    if is_v1() {
        let stat = v1_file(&g, "cpu", "cpu.stat");
        assert!(
            !stat.contains("nr_throttled 0\n"),
            "never throttled: {stat}"
        );
    }

    // Live change: a quarter core, same init, new quota in effect.
    let limits = Limits {
        cpus: Some(0.25),
        pids: Some(100),
        memory: Some(64 << 20),
        ..Default::default()
    };
    let lp = g.dir.path().join("limits.json");
    fs::write(&lp, serde_json::to_vec(&limits).unwrap()).unwrap();
    let o = g.cmd(&["update-limits", lp.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = cpu_ratio(&g, 1.5);
    assert!((0.08..=0.33).contains(&r), "cpus=0.25 gave {r:.2} cores");
    assert_eq!(
        g.status()["init_pid"].as_i64().unwrap(),
        init,
        "limit change restarted the guest"
    );
    if is_v1() {
        assert_eq!(v1_file(&g, "cpu", "cpu.cfs_quota_us").trim(), "25000");
        assert_eq!(v1_file(&g, "pids", "pids.max").trim(), "100");
        assert_eq!(
            v1_file(&g, "memory", "memory.limit_in_bytes").trim(),
            (64u64 << 20).to_string()
        );
    }
    // Removing limits resets them to unlimited.
    fs::write(&lp, b"{}").unwrap();
    assert!(
        g.cmd(&["update-limits", lp.to_str().unwrap()])
            .status
            .success()
    );
    if is_v1() {
        assert_eq!(v1_file(&g, "cpu", "cpu.cfs_quota_us").trim(), "-1");
        assert_eq!(v1_file(&g, "pids", "pids.max").trim(), "max");
    }
    g.stop();
}

#[test]
fn io_limits_target_the_root_device() {
    let mut g = Guest::busybox("lim-io", None);
    g.spec.limits.io.write_bps = Some(10 << 20);
    g.spec.limits.io.read_iops = Some(500);
    g.save();
    g.start();
    let dev = vsctl::cgroup::backing_device(&g.rootfs()).expect("rootfs on a block device");
    if is_v1() {
        let w = v1_file(&g, "blkio", "blkio.throttle.write_bps_device");
        assert_eq!(
            w.trim(),
            format!("{}:{} {}", dev.major, dev.minor, 10u64 << 20)
        );
        let r = v1_file(&g, "blkio", "blkio.throttle.read_iops_device");
        assert_eq!(r.trim(), format!("{}:{} 500", dev.major, dev.minor));
    }
    g.stop();
    let _ = Duration::ZERO;
}
