//! The cgroup v2 device program, loaded and attached for real. This host
//! runs hybrid (v1 controllers + an empty cgroup2 at /sys/fs/cgroup/unified):
//! device programs need no controller, so the v2 policy is testable here.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use vsctl::cgroup::devices;

fn cgroup2_root() -> Option<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .map(|l| PathBuf::from(l.split(' ').nth(4).unwrap()))
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        if let Ok(p) = fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in p.lines().filter_map(|l| l.parse().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for _ in 0..100 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Device nodes outside the allow list that this host lets root open: a
/// block device (loop0) and a character device (kmsg, 1:11).
fn denied_candidates() -> Vec<PathBuf> {
    ["/dev/loop0", "/dev/kmsg"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| fs::File::open(p).is_ok())
        .collect()
}

#[test]
fn device_program_denies_block_devices_and_allows_null() {
    let Some(root) = cgroup2_root() else {
        eprintln!("skip: no cgroup2 mount");
        return;
    };
    let nodes = denied_candidates();
    if nodes.is_empty() {
        eprintln!("skip: no openable device node to test with");
        return;
    }
    let dir = Dir(root.join(format!("vsctl-test-dev-{}", std::process::id())));
    fs::create_dir(&dir.0).unwrap();
    devices::attach(&dir.0, &devices::default_rules()).unwrap();

    // A shell that waits for a line, then tries to open devices.
    let mut script = String::from("read x; ");
    for n in &nodes {
        // Open for reading without reading (kmsg would block).
        script.push_str(&format!(
            "( : <{0} ) 2>/dev/null && echo open || echo denied; ",
            n.display()
        ));
    }
    script.push_str("head -c1 /dev/zero >/dev/null 2>&1 && echo zero-open || echo zero-denied");
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    fs::write(dir.0.join("cgroup.procs"), child.id().to_string()).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap())
        .collect();
    child.wait().unwrap();
    let mut want: Vec<&str> = nodes.iter().map(|_| "denied").collect();
    want.push("zero-open");
    assert_eq!(out, want, "nodes tried: {nodes:?}");
}
