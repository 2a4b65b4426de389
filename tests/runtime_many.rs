//! Density: 50 busybox guests start, run and stop; nothing leaks (processes,
//! mounts, cgroups, descriptors, namespaces).

mod runtime_util;
use runtime_util::*;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

const N: usize = 50;

fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn fifty_guests_start_run_stop_without_leaks() {
    let fds_before = fd_count();
    // Other work on the machine may mount things meanwhile: compare only
    // mounts that mention this test's directories.
    let shared = tempfile::Builder::new()
        .prefix("vsctl-rt-bb-")
        .tempdir_in("/tmp")
        .unwrap();
    let bb = shared.path().join("busybox");
    fs::copy(BUSYBOX, &bb).unwrap();
    let base = unique("vsctl-test-many");

    let mut guests = Vec::new();
    for i in 0..N {
        let dir = scratch_dir();
        let root = dir.path().join("rootfs");
        busybox_rootfs(&root, INITTAB, Some(&bb));
        let mut g = Guest::from_rootfs(
            dir,
            &format!("many{i}"),
            vsctl::runtime::RootfsMount::Tree { path: root },
            None,
        );
        g.spec.cgroup_base = base.clone();
        g.save();
        guests.push(g);
    }
    let t = Instant::now();
    let mut inits = Vec::new();
    for g in &guests {
        inits.push(g.start()["init_pid"].as_i64().unwrap() as i32);
    }
    eprintln!("started {N} guests in {:?}", t.elapsed());
    let mut nss = Vec::new();
    for (g, pid) in guests.iter().zip(&inits) {
        assert!(
            g.wait_file("tmp/svc.log", "svc-start", Duration::from_secs(10)),
            "{} service",
            g.spec.name
        );
        nss.push(ns_of(*pid, "pid").unwrap());
        nss.push(ns_of(*pid, "mnt").unwrap());
    }
    // Every guest has its own namespaces.
    let mut uniq = nss.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 2 * N);

    // Stop all at once (busybox init takes ~2 s to power off).
    let stop_began = boot_ticks();
    let t = Instant::now();
    let children: Vec<_> = guests
        .iter()
        .map(|g| {
            rt(&g.spec_path)
                .arg("stop")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (c, g) in children.into_iter().zip(&guests) {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            g.spec.name,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    eprintln!("stopped {N} guests in {:?}", t.elapsed());

    for pid in &inits {
        assert!(!alive(*pid));
    }
    // Reading namespaces of dead processes fails, so any ns id still found
    // belongs to a leaked process, unless the kernel has since reused the
    // freed id for a namespace made by another test running beside this one:
    // its processes started after this test's stop began; a leaked guest
    // process started before.
    for (i, id) in nss.iter().enumerate() {
        let kind = if i % 2 == 0 { "pid" } else { "mnt" };
        let leaked: Vec<i32> = pids_in_ns(kind, id)
            .into_iter()
            .filter(|pid| {
                vsctl::runtime::proc_start_time(*pid).is_some_and(|start| start < stop_began)
            })
            .collect();
        assert!(leaked.is_empty(), "leak in {kind} ns {id}: {leaked:?}");
    }
    for g in &guests {
        assert!(g.cgroup_dirs().is_empty(), "{} cgroup left", g.spec.name);
        assert_eq!(g.status()["state"], "stopped");
    }
    assert_eq!(fd_count(), fds_before, "descriptor leak in the caller");
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains("/vsctl-rt-"), "host mount leak:\n{mi}");
    drop(guests);
    remove_cgroup_base(&base);
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        assert!(
            !e.path().join(&base).exists(),
            "cgroup base left in {}",
            e.path().display()
        );
    }
}
