//! `vsctl plan` / `vsctl apply` through the real binary in isolated roots:
//! plan output snapshots (text and JSON), exit codes, idempotency, orphans,
//! prune/purge, recreate, and the apply lock.

mod common;

use std::path::Path;

use common::{World, snapshot, stderr, stdout};

const WEB: &str = r#"
template = "busybox"
hostname = "web1.example.test"
state = "stopped"
[network]
addresses = ["10.10.0.11/24"]
gateway = "10.10.0.1"
[limits]
memory = "256MiB"
pids = 128
"#;

const DB: &str = r#"
template = "busybox"
state = "stopped"
[limits]
cpus = 0.5
"#;

/// Compare with `tests/snapshots/NAME`; `UPDATE_SNAPSHOTS=1` rewrites it.
fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing snapshot {}", path.display()));
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept)"
    );
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn plan_text_and_json_snapshots_for_create() {
    let world = World::new();
    world.write_guest("web1", WEB);
    world.write_guest("db1", DB);
    let text = world.vsctl(&["plan"]);
    assert_eq!(code(&text), 0, "{}", stderr(&text));
    assert_snapshot("plan-create.txt", &stdout(&text));
    let json = world.vsctl(&["plan", "--output", "json"]);
    assert_snapshot("plan-create.json", &stdout(&json));
    // plan never writes anything
    assert!(!world.state_dir().exists());
}

#[test]
fn detailed_exitcode_apply_twice_and_update_in_place() {
    let world = World::new();
    world.write_guest("web1", WEB);
    world.write_guest("db1", DB);
    assert_eq!(code(&world.vsctl(&["plan", "--detailed-exitcode"])), 2);
    let first = world.vsctl(&["apply", "--detailed-exitcode"]);
    assert_eq!(code(&first), 2, "{}", stderr(&first));
    let state_before = snapshot(&world.state_dir());

    // Idempotency gate: the second apply finds nothing to do and writes nothing.
    let second = world.vsctl(&["apply", "--detailed-exitcode"]);
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert!(
        stderr(&second).contains("No changes."),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        snapshot(&world.state_dir()),
        state_before,
        "second apply touched the state dir"
    );
    assert_eq!(code(&world.vsctl(&["plan", "--detailed-exitcode"])), 0);
    assert_eq!(code(&world.vsctl(&["plan"])), 0);

    // A live change shows as update in place with old -> new.
    world.write_guest("web1", &WEB.replace("256MiB", "512MiB"));
    let plan = world.vsctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 2);
    assert_snapshot("plan-update.txt", &stdout(&plan));
    let (exit, json) = world.vsctl_json(&["plan"]);
    assert_eq!(exit, 0);
    let web = &json["guests"][1];
    assert_eq!(web["name"], "web1");
    assert_eq!(web["action"], "update");
    assert_eq!(web["changes"][0]["field"], "limits.memory");
    assert_eq!(web["changes"][0]["before"], "256MiB");
    assert_eq!(web["changes"][0]["after"], "512MiB");
    assert_eq!(web["changes"][0]["class"], "live");

    let (exit, json) = world.vsctl_json(&["apply", "--detailed-exitcode"]);
    assert_eq!(exit, 2);
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["result"]["changed"], true);
    assert_eq!(json["result"]["guests"][1]["status"], "applied");
    assert_eq!(code(&world.vsctl(&["apply", "--detailed-exitcode"])), 0);
}

#[test]
fn rebuild_is_blocked_until_recreate_and_never_for_protected_guests() {
    let world = World::new();
    world.write_guest("web1", WEB);
    assert_eq!(code(&world.vsctl(&["apply"])), 0);
    world.write_guest(
        "web1",
        &WEB.replace("[limits]", "[rootfs]\nstrategy = \"copy\"\n[limits]"),
    );
    let plan = world.vsctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 0, "a blocked rebuild is not a pending change");
    assert_snapshot("plan-rebuild-blocked.txt", &stdout(&plan));
    let (_, json) = world.vsctl_json(&["plan", "--recreate", "web1"]);
    assert_eq!(json["guests"][0]["action"], "rebuild");
    assert_eq!(json["guests"][0]["blocked"], serde_json::Value::Null);

    world.write_guest(
        "web1",
        &format!(
            "protect = true\n{}",
            WEB.replace("[limits]", "[rootfs]\nstrategy = \"copy\"\n[limits]")
        ),
    );
    let (_, json) = world.vsctl_json(&["plan", "--recreate", "web1"]);
    assert!(
        json["guests"][0]["blocked"]
            .as_str()
            .unwrap()
            .contains("protected"),
        "{json:#}"
    );
}

#[test]
fn orphans_are_kept_until_prune_and_protected_ones_always() {
    let world = World::new();
    world.write_guest("web1", WEB);
    world.write_guest("db1", &format!("protect = true\n{DB}"));
    assert_eq!(code(&world.vsctl(&["apply"])), 0);
    world.remove_guest("web1");
    world.remove_guest("db1");

    let plan = world.vsctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(code(&plan), 0);
    assert_snapshot("plan-orphans.txt", &stdout(&plan));
    let list = world.vsctl(&["list"]);
    assert!(stdout(&list).contains("orphan"), "{}", stdout(&list));

    let (exit, json) = world.vsctl_json(&["apply", "--prune", "--detailed-exitcode"]);
    assert_eq!(exit, 2, "{json:#}");
    let by_name = |n: &str| {
        json["result"]["guests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("web1")["status"], "applied");
    assert_eq!(by_name("db1")["status"], "blocked");
    assert!(world.state_dir().join("guests/db1/record.json").exists());
    assert!(!world.state_dir().join("guests/web1/record.json").exists());
    // Unregistering keeps the guest's directory (and so its rootfs).
    assert!(world.state_dir().join("guests/web1").is_dir());
}

#[test]
fn purge_requires_prune() {
    let world = World::new();
    let out = world.vsctl(&["apply", "--purge"]);
    assert_eq!(code(&out), 2, "clap usage error");
    assert!(stderr(&out).contains("--prune"), "{}", stderr(&out));
}

#[test]
fn apply_for_named_guests_only() {
    let world = World::new();
    world.write_guest("web1", WEB);
    world.write_guest("db1", DB);
    let (_, json) = world.vsctl_json(&["apply", "db1"]);
    assert_eq!(json["plan"]["guests"].as_array().unwrap().len(), 1);
    assert!(world.state_dir().join("guests/db1/record.json").exists());
    assert!(!world.state_dir().join("guests/web1/record.json").exists());
}

#[test]
fn status_and_list_report_guests() {
    let world = World::new();
    world.write_guest(
        "web1",
        &WEB.replace("[limits]", "[security]\nseccomp = \"unconfined\"\n[limits]"),
    );
    assert_eq!(code(&world.vsctl(&["apply"])), 0);
    let status = world.vsctl(&["status", "web1"]);
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    assert!(
        stdout(&status).contains("UNCONFINED"),
        "{}",
        stdout(&status)
    );
    let (_, json) = world.vsctl_json(&["list"]);
    assert_eq!(json["guests"][0]["name"], "web1");
    assert_eq!(json["guests"][0]["addresses"][0], "10.10.0.11/24");
    let missing = world.vsctl(&["status", "nope"]);
    assert_eq!(code(&missing), 1);
}

/// Run vsctl with the read end of its stdout closed before it writes its
/// first line.
fn with_stdout_closed(world: &World, args: &[&str]) -> std::process::Output {
    let mut child = world
        .vsctl_command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn read_only_commands_end_quietly_when_their_reader_goes_away() {
    use std::os::unix::process::ExitStatusExt;
    let world = World::new();
    world.write_guest("web1", WEB);
    assert_eq!(code(&world.vsctl(&["apply"])), 0);
    for args in [&["status", "web1"][..], &["list"], &["plan"]] {
        let out = with_stdout_closed(&world, args);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn apply_finishes_its_work_when_its_reader_goes_away() {
    let world = World::new();
    world.write_guest("web1", WEB);
    let out = with_stdout_closed(&world, &["apply"]);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code(&out), 0, "{err}");
    let (_, json) = world.vsctl_json(&["list"]);
    assert_eq!(json["guests"][0]["name"], "web1");
}

#[test]
fn second_apply_waits_for_or_fails_on_the_lock() {
    use nix::fcntl::{Flock, FlockArg};
    let world = World::new();
    world.write_guest("web1", WEB);
    std::fs::create_dir_all(world.state_dir()).unwrap();
    let file = std::fs::File::create(world.state_dir().join("lock")).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusive).unwrap();

    let out = world.vsctl(&["apply", "--no-wait"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("holds the lock"), "{}", stderr(&out));
    assert!(
        !world.state_dir().join("guests").exists(),
        "nothing written without the lock"
    );

    let mut waiting = std::process::Command::new(env!("CARGO_BIN_EXE_vsctl"))
        .arg("--root")
        .arg(world.root())
        .arg("apply")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "apply must wait for the lock"
    );
    assert!(!world.state_dir().join("guests").exists());
    drop(held);
    let done = waiting.wait_with_output().unwrap();
    assert!(done.status.success());
    assert!(String::from_utf8_lossy(&done.stderr).contains("waiting for another vsctl apply"));
    assert!(world.state_dir().join("guests/web1/record.json").exists());
}

#[test]
fn concurrent_applies_never_interleave() {
    let world = World::new();
    for i in 0..40 {
        world.write_guest(
            &format!("g{i}"),
            &format!(
                "template = \"busybox\"\nstate = \"stopped\"\n[limits]\npids = {}\n",
                10 + i
            ),
        );
    }
    let children: Vec<_> = (0..6)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_vsctl"))
                .arg("--root")
                .arg(world.root())
                .args(["apply", "--output", "json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut changed = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if json["result"]["changed"] == true {
            changed += 1;
            assert_eq!(json["result"]["guests"].as_array().unwrap().len(), 40);
        }
    }
    assert_eq!(
        changed, 1,
        "exactly one apply made the changes; the others saw them done"
    );
    for i in 0..40 {
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(world.state_dir().join(format!("guests/g{i}/record.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(record["spec"]["limits"]["pids"], 10 + i);
    }
}
