//! Guest and template names given on the command line are checked with the
//! rule guest files and template definitions follow, before any path is
//! built from them (issue 23, MEDIUM 2). The attacks are real: a record, a
//! log and a run state with the PID of a live process are planted outside
//! the vsctl tree, where a traversal name would reach them; every command
//! must refuse the name as a usage error, read none of them and signal
//! nothing.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::{World, stderr, stdout};

/// A name that climbs from any vsctl directory to `dir/x`.
fn traversal_to(dir: &Path) -> String {
    let up = "../".repeat(40);
    format!(
        "{up}{}/x",
        dir.strip_prefix("/").unwrap_or(dir).to_string_lossy()
    )
}

/// A valid guest record whose hostname is `marker`.
fn planted_record(marker: &str) -> Vec<u8> {
    let spec: vsctl::config::GuestSpec = serde_json::from_value(serde_json::json!({
        "name": "x", "template": "busybox", "hostname": marker, "state": "running", "protect": false,
        "network": {"mode": "none", "addresses": [], "gateway": null, "gateway6": null, "dns": [], "parent": null},
        "limits": {"memory": null, "memory_swap": null, "cpus": null, "cpu_weight": null, "pids": null,
                   "io": {"read_bps": null, "write_bps": null, "read_iops": null, "write_iops": null}},
        "disk": {"quota": null, "inodes": null}, "rootfs": {"strategy": "auto"},
        "init": {"command": ["/sbin/init"], "stop_signal": null, "stop_timeout": "2s"},
        "security": {"userns": false, "cap_add": [], "cap_drop": [], "seccomp": "default"},
        "mounts": [], "env": {}
    }))
    .unwrap();
    serde_json::to_vec(&vsctl::state::GuestRecord::new(spec)).unwrap()
}

/// A supervisor record naming `victim` as the guest's init.
fn planted_run_state(victim: i32, cgroup_base: &str) -> Vec<u8> {
    let start = vsctl::runtime::proc_start_time(victim).unwrap();
    let version = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vsctl::cgroup::Version::V2
    } else {
        vsctl::cgroup::Version::V1
    };
    let state = vsctl::runtime::RunState {
        name: String::from("x"),
        phase: vsctl::runtime::Phase::Running,
        supervisor_pid: 0,
        supervisor_start: 0,
        init_pid: victim,
        init_start: start,
        since: 0,
        restarts: 0,
        stop_signal: libc::SIGTERM,
        cgroup: vsctl::cgroup::ManagerRef {
            version,
            root: "/sys/fs/cgroup".into(),
            base: cgroup_base.to_string(),
        },
        root_dev: None,
        last_exit: None,
        reason: None,
        ready: false,
        notify_status: None,
    };
    serde_json::to_vec(&state).unwrap()
}

/// A process that must outlive every command here; killed on drop.
struct Victim(Child);

impl Victim {
    fn start() -> Victim {
        Victim(Command::new("sleep").arg("1000").spawn().unwrap())
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A usage error about the name: clap's exit code, the rule, no panic,
/// nothing of the planted files.
fn assert_refused(args: &[&str], out: &std::process::Output, rule: &str, planted: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} was not refused as a usage error\nstdout: {}\nstderr: {err}",
        stdout(out)
    );
    // (A name starting with `-` is taken for an option: refused as one.)
    if !args.iter().any(|a| a.starts_with("-x")) {
        assert!(err.contains("invalid value"), "{args:?}: {err}");
        assert!(
            err.contains(rule),
            "{args:?} does not state the rule: {err}"
        );
    }
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    for marker in planted {
        assert!(
            !stdout(out).contains(marker) && !err.contains(marker),
            "{args:?} read a planted file ({marker})\nstdout: {}\nstderr: {err}",
            stdout(out)
        );
    }
}

const GUEST_RULE: &str = "guest names are 1-63 characters";
const TEMPLATE_RULE: &str = "template names are";

#[test]
fn status_logs_and_stop_refuse_a_traversal_name_and_touch_nothing_planted() {
    let world = World::new();
    let plant = tempfile::Builder::new()
        .prefix("vsctl-plant-")
        .tempdir_in("/tmp")
        .unwrap();
    let name = traversal_to(plant.path());
    // An existing install: the directories the name is joined to exist.
    for dir in ["var/lib/vsctl/guests", "var/log/vsctl", "run/vsctl"] {
        std::fs::create_dir_all(world.root().join(dir)).unwrap();
    }
    // Where an unchecked name leads: state_dir/guests/NAME/record.json,
    // log_dir/NAME.log and run_dir/NAME/state.json.
    let x = plant.path().join("x");
    std::fs::create_dir(&x).unwrap();
    std::fs::write(x.join("record.json"), planted_record("planted-record")).unwrap();
    std::fs::write(plant.path().join("x.log"), "planted-log-line\n").unwrap();
    let mut victim = Victim::start();
    std::fs::write(
        x.join("state.json"),
        planted_run_state(victim.pid(), &world.cgroup_base),
    )
    .unwrap();
    let markers = ["planted-record", "planted-log-line"];

    let out = world.vsctl(&["status", &name]);
    assert_refused(&["status"], &out, GUEST_RULE, &markers);
    let out = world.vsctl(&["--output", "json", "status", &name]);
    assert_refused(&["status", "--output json"], &out, GUEST_RULE, &markers);
    let out = world.vsctl(&["logs", &name]);
    assert_refused(&["logs"], &out, GUEST_RULE, &markers);
    let out = world.vsctl(&["stop", "--timeout", "2", &name]);
    assert_refused(&["stop"], &out, GUEST_RULE, &markers);
    assert!(
        victim.alive(),
        "vsctl stop killed the PID of a planted state.json"
    );
    let out = world.vsctl(&["restart", &name]);
    assert_refused(&["restart"], &out, GUEST_RULE, &markers);
    assert!(
        victim.alive(),
        "vsctl restart killed the PID of a planted state.json"
    );
    // Nothing of the plant was changed either.
    assert_eq!(
        std::fs::read(x.join("state.json")).unwrap(),
        planted_run_state(victim.pid(), &world.cgroup_base)
    );
    assert!(!x.join("stop-requested").exists());
}

#[test]
fn every_command_taking_a_name_refuses_invalid_names() {
    let world = World::new();
    let too_long = "a".repeat(64);
    let bad_guest_names = [
        "../x",
        "../../../../etc",
        "a/b",
        "/tmp/x",
        ".",
        "..",
        "",
        "-x",
        "Web1",
        "web_1",
        "web1.example",
        too_long.as_str(),
        "web\u{1b}]0;pwned\u{7}",
    ];
    for name in bad_guest_names {
        for args in [
            vec!["status", name],
            vec!["start", name],
            vec!["stop", name],
            vec!["restart", name],
            vec!["exec", name, "--", "/bin/true"],
            vec!["enter", name],
            vec!["console", name],
            vec!["logs", name],
            vec!["plan", name],
            vec!["apply", "--dry-run", name],
            vec!["apply", name],
            vec!["plan", "--recreate", name],
            vec!["apply", "--recreate", name],
        ] {
            let out = world.vsctl(&args);
            assert_refused(&args, &out, GUEST_RULE, &[]);
        }
    }
    for name in [
        "../busybox",
        "a/b",
        ".hidden",
        "-x",
        "Busybox",
        "",
        "x.building",
    ] {
        for args in [
            vec!["template", "build", name],
            vec!["template", "verify", name],
            vec!["template", "rm", name],
        ] {
            let out = world.vsctl(&args);
            assert_refused(&args, &out, TEMPLATE_RULE, &[]);
        }
    }
    // Nothing was created by any of them.
    assert!(!world.state_dir().exists(), "a refused command wrote state");
    assert!(!world.root().join("run").exists());

    // Valid names still get through to the commands themselves.
    let out = world.vsctl(&["status", "web1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let out = world.vsctl(&["template", "verify", "debian-bookworm"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("invalid value"), "{}", stderr(&out));
}
