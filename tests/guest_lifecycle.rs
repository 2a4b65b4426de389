//! Guests from guest files, end to end through the real binary (root): the
//! busybox template is built, a rootfs cloned, init booted; limits change
//! live, restart-class changes restart, `state` stops and starts, prune and
//! purge leave nothing behind.

mod common;

use common::{World, leftovers, stderr, stdout};

fn guest(extra: &str) -> String {
    format!(
        "template = \"busybox\"\nhostname = \"box.example.test\"\n\
         [network]\nmode = \"none\"\n\
         [limits]\nmemory = \"64MiB\"\npids = 64\n\
         [init]\nstop_timeout = \"10s\"\n{extra}"
    )
}

fn init_pid(world: &World, name: &str) -> Option<i64> {
    let (_, json) = world.vsctl_json(&["status", name]);
    json["runtime"]["init_pid"].as_i64()
}

fn exec(world: &World, name: &str, script: &str) -> (i32, String) {
    let out = world.vsctl(&["exec", name, "-T", "--", "/bin/sh", "-c", script]);
    (out.status.code().unwrap_or(-1), stdout(&out))
}

fn cgroup_file(world: &World, controller: &str, name: &str, file: &str) -> Option<String> {
    let path = format!(
        "/sys/fs/cgroup/{controller}/{}/{name}/{file}",
        world.cgroup_base
    );
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn busybox_guest_lives_through_apply() {
    let world = World::new();
    world.write_guest("box", &guest(""));
    let first = world.vsctl(&["apply", "--detailed-exitcode"]);
    assert_eq!(first.status.code(), Some(2), "{}", stderr(&first));

    // Running, its own init as PID 1, its own hostname and files.
    let pid = init_pid(&world, "box").expect("guest runs after apply");
    let (code, out) = exec(
        &world,
        "box",
        "cat /proc/1/comm; hostname; cat /etc/hostname; ls /proc | grep -c '^[0-9]'",
    );
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["init", "box.example.test", "box.example.test"],
        "{out}"
    );
    assert!(
        lines[3].parse::<u32>().unwrap() < 10,
        "guest sees only its own processes: {out}"
    );
    assert_eq!(
        cgroup_file(&world, "pids", "box", "pids.max").as_deref(),
        Some("64")
    );

    // Idempotent while running: nothing to do, nothing written.
    let state = common::snapshot(&world.state_dir().join("guests/box/record.json"));
    assert_eq!(
        world.vsctl(&["apply", "--detailed-exitcode"]).status.code(),
        Some(0)
    );
    assert_eq!(
        common::snapshot(&world.state_dir().join("guests/box/record.json")),
        state
    );

    // Live change: the same init, a new limit.
    world.write_guest("box", &guest("").replace("pids = 64", "pids = 96"));
    let (_, plan) = world.vsctl_json(&["plan"]);
    assert_eq!(plan["guests"][0]["action"], "update");
    assert_eq!(
        world.vsctl(&["apply", "--detailed-exitcode"]).status.code(),
        Some(2)
    );
    assert_eq!(
        cgroup_file(&world, "pids", "box", "pids.max").as_deref(),
        Some("96")
    );
    assert_eq!(
        init_pid(&world, "box"),
        Some(pid),
        "a live change must not restart the guest"
    );

    // Restart-class change: a new init with the new environment.
    world.write_guest(
        "box",
        &guest("[env]\nGREETING = \"hello\"\n").replace("pids = 64", "pids = 96"),
    );
    let (_, plan) = world.vsctl_json(&["plan"]);
    assert_eq!(plan["guests"][0]["action"], "restart");
    assert_eq!(world.vsctl(&["apply"]).status.code(), Some(0));
    let restarted = init_pid(&world, "box").expect("running after restart");
    assert_ne!(restarted, pid);
    let (_, environ) = exec(&world, "box", "tr '\\0' '\\n' < /proc/1/environ");
    assert!(environ.contains("GREETING=hello"), "{environ}");

    // state = stopped: stopped, cgroup gone; imperative start/stop work too.
    world.write_guest(
        "box",
        &guest("").replace("template", "state = \"stopped\"\ntemplate"),
    );
    assert_eq!(world.vsctl(&["apply"]).status.code(), Some(0));
    let (_, status) = world.vsctl_json(&["status", "box"]);
    assert_eq!(status["status"], "stopped");
    assert!(cgroup_file(&world, "pids", "box", "pids.max").is_none());
    assert_eq!(
        world
            .vsctl(&["exec", "box", "--", "/bin/true"])
            .status
            .code(),
        Some(126)
    );
    assert_eq!(world.vsctl(&["start", "box"]).status.code(), Some(0));
    assert!(init_pid(&world, "box").is_some());
    // The file says stopped: apply stops it again.
    let (_, plan) = world.vsctl_json(&["plan"]);
    assert_eq!(plan["guests"][0]["action"], "stop");
    assert_eq!(world.vsctl(&["apply"]).status.code(), Some(0));
    assert!(init_pid(&world, "box").is_none());

    // Console log exists and holds init's output.
    let logs = world.vsctl(&["logs", "box"]);
    assert!(stdout(&logs).contains("init started"), "{}", stdout(&logs));

    // Prune and purge: no record, no rootfs, no run dir, no cgroup, no mount.
    world.remove_guest("box");
    assert_eq!(
        world.vsctl(&["apply", "--prune", "--purge"]).status.code(),
        Some(0)
    );
    assert!(!world.state_dir().join("guests/box").exists());
    assert!(!world.root().join("run/vsctl/box").exists());
    assert_eq!(
        leftovers(&format!("{}/box", world.cgroup_base)),
        Vec::<String>::new()
    );
    let root = world.root().display().to_string();
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&root)
    );
}

#[test]
fn exec_exit_codes_follow_podman() {
    let world = World::new();
    world.write_guest("box", &guest(""));
    assert_eq!(world.vsctl(&["apply"]).status.code(), Some(0));
    assert_eq!(
        world
            .vsctl(&["exec", "box", "--", "/bin/sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        world
            .vsctl(&["exec", "box", "--", "/no/such/program"])
            .status
            .code(),
        Some(127)
    );
    assert_eq!(
        world
            .vsctl(&["exec", "nope", "--", "/bin/true"])
            .status
            .code(),
        Some(125)
    );
    let out = world.vsctl(&["exec", "box", "--", "sh", "-c", "echo $PATH"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("/usr/bin"), "{}", stdout(&out));
}

#[test]
fn unprivileged_copy_guest_owns_its_files_through_its_uid_range() {
    let world = World::new();
    world.write_guest("shifted", &guest("[rootfs]\nstrategy = \"copy\"\n"));
    let out = world.vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(world.state_dir().join("guests/shifted/record.json")).unwrap(),
    )
    .unwrap();
    let base = record["id_range"]["host_base"].as_u64().unwrap() as u32;
    use std::os::unix::fs::MetadataExt;
    let hostname = world.state_dir().join("guests/shifted/rootfs/etc/hostname");
    assert_eq!(
        std::fs::metadata(&hostname).unwrap().uid(),
        base,
        "host sees the guest's range"
    );
    let (code, out) = exec(
        &world,
        "shifted",
        "id -u; stat -c %u /etc/hostname; cat /proc/self/uid_map",
    );
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(
        lines[1], "0",
        "the guest sees its files owned by its root: {out}"
    );
    assert!(
        lines[2]
            .split_whitespace()
            .eq(["0", &base.to_string(), "65536"]),
        "{out}"
    );
}

#[test]
fn a_guests_symlinks_never_redirect_host_side_writes() {
    let world = World::new();
    let decoy = world.root().join("decoy-host-file");
    std::fs::write(&decoy, b"host data\n").unwrap();
    for (name, strategy) in [("ovl", "overlay"), ("cpy", "copy")] {
        world.write_guest(
            name,
            &guest(&format!("[rootfs]\nstrategy = \"{strategy}\"\n"))
                .replace("box.example", &format!("{name}.example")),
        );
    }
    assert_eq!(world.vsctl(&["apply"]).status.code(), Some(0));
    // Inside each guest: /etc/hostname and /etc/hosts become symlinks to the
    // host decoy's absolute path, /etc/resolv.conf's parent a symlink to /.
    for name in ["ovl", "cpy"] {
        let script = format!(
            "ln -sf {d} /etc/hostname && ln -sf ../../../../../../../..{d} /etc/hosts && echo ok",
            d = decoy.display()
        );
        let (code, out) = exec(&world, name, &script);
        assert_eq!((code, out.trim()), (0, "ok"));
    }
    // A live DNS change rewrites hosts/resolv.conf while running; a hostname
    // change (restart) rewrites them while stopped.
    for name in ["ovl", "cpy"] {
        let text = guest(&format!(
            "[rootfs]\nstrategy = \"{}\"\n",
            if name == "ovl" { "overlay" } else { "copy" }
        ))
        .replace("box.example", &format!("{name}2.example"));
        world.write_guest(name, &text);
    }
    let out = world.vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&decoy).unwrap(),
        b"host data\n",
        "a host file changed through a guest symlink"
    );
    for name in ["ovl", "cpy"] {
        let (_, out) = exec(
            &world,
            name,
            "cat /etc/hostname; test -L /etc/hostname && echo link || echo file",
        );
        assert_eq!(out, format!("{name}2.example.test\nfile\n"));
    }
}
