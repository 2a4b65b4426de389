//! The cgroup backend of this host, for real: create, limit, move a process
//! in, kill everything, remove. Uses a unique base and removes it always.

use std::fs;
use std::process::Command;
use std::time::Duration;
use vsctl::cgroup::{self, IoLimits, Limits};

struct Base(String);
impl Drop for Base {
    fn drop(&mut self) {
        if let Ok(m) = cgroup::detect(&self.0) {
            let _ = m.destroy("g", Duration::from_secs(5));
            cgroup::remove_base(m.as_ref());
        }
        for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let _ = fs::remove_dir(e.path().join(&self.0).join("g"));
            let _ = fs::remove_dir(e.path().join(&self.0));
        }
    }
}

#[test]
fn host_backend_lifecycle() {
    let base = Base(format!("vsctl-test-cg-{}", std::process::id()));
    let m = cgroup::detect(&base.0).unwrap();
    m.create("g").unwrap();
    assert!(m.exists("g"));
    let limits = Limits {
        memory: Some(64 << 20),
        memory_swap: Some(64 << 20),
        cpus: Some(0.5),
        cpu_weight: Some(50),
        pids: Some(10),
        io: IoLimits {
            read_bps: Some(1 << 20),
            ..Default::default()
        },
    };
    let dev = cgroup::backing_device(std::path::Path::new("/tmp"));
    m.apply("g", &limits, dev).unwrap();
    if m.version() == cgroup::Version::V1 {
        let r = |c: &str, f: &str| {
            fs::read_to_string(format!("/sys/fs/cgroup/{c}/{}/g/{f}", base.0))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(
            r("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(r("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(r("cpu", "cpu.shares"), "512");
        assert_eq!(r("pids", "pids.max"), "10");
        let devices = r("devices", "devices.list");
        assert!(
            devices.contains("c 1:3 rwm") && !devices.contains("a *:* rwm"),
            "{devices}"
        );
        if let Some(d) = dev {
            assert_eq!(
                r("blkio", "blkio.throttle.read_bps_device"),
                format!("{}:{} 1048576", d.major, d.minor)
            );
        }
    }
    // A process moved in is listed, then killed with the rest.
    let mut child = Command::new("/bin/sleep").arg("60").spawn().unwrap();
    m.add_process("g", child.id() as i32).unwrap();
    assert_eq!(m.pids("g").unwrap(), vec![child.id() as i32]);
    // A sub-cgroup (as a delegated guest could make) with its own process:
    // listed, killed and removed with the guest's cgroup.
    let sub = m.dirs("g")[0].join("sub");
    fs::create_dir(&sub).unwrap();
    if m.version() == cgroup::Version::V1 && sub.join("cpuset.cpus").exists() {
        for f in ["cpuset.cpus", "cpuset.mems"] {
            fs::write(
                sub.join(f),
                fs::read_to_string(m.dirs("g")[0].join(f)).unwrap().trim(),
            )
            .unwrap();
        }
    }
    let mut child2 = Command::new("/bin/sleep").arg("60").spawn().unwrap();
    fs::write(sub.join("cgroup.procs"), child2.id().to_string()).unwrap();
    let mut pids = m.pids("g").unwrap();
    pids.sort();
    let mut want = vec![child.id() as i32, child2.id() as i32];
    want.sort();
    assert_eq!(pids, want);
    m.kill_all("g", Duration::from_secs(5)).unwrap();
    let st = child.wait().unwrap();
    assert!(!st.success());
    assert!(!child2.wait().unwrap().success());
    assert!(m.pids("g").unwrap().is_empty());
    let _ = m.cpu_usage("g").unwrap();
    m.destroy("g", Duration::from_secs(5)).unwrap();
    assert!(!m.exists("g"));
    for d in m.dirs("g") {
        assert!(!d.exists(), "{} left", d.display());
    }
}
