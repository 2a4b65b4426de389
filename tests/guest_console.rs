//! `vsctl console` and `vsctl start --wait` on a busybox guest, through the
//! real binary (root): the console is driven with a pipe, output comes back
//! and still reaches the console log, a second client is refused, a stopped
//! guest has no console; `--wait` returns at once for an init without
//! sd_notify.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{World, leftovers, stderr, stdout};

const GUEST: &str = "template = \"busybox\"\nhostname = \"con.example.test\"\n\
                     [network]\nmode = \"none\"\n\
                     [limits]\nmemory = \"64MiB\"\npids = 64\n\
                     [init]\nstop_timeout = \"10s\"\n";

/// Wait for a child at most `limit`, killing it after that (a hung client
/// must fail the test, not hang it).
fn wait_limited(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "vsctl console did not end within {limit:?}\nstdout: {}\nstderr: {}",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `vsctl console NAME --idle-ms IDLE` fed `input` on a pipe that then ends.
fn console_with_input(world: &World, name: &str, input: &[u8], idle_ms: u64) -> Output {
    let idle = idle_ms.to_string();
    let mut child = world
        .vsctl_command(&["console", name, "--idle-ms", &idle])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    wait_limited(child, Duration::from_secs(30))
}

#[test]
fn console_attach_relay_refusal_and_start_wait() {
    let world = World::new();
    world.write_guest("con", GUEST);
    let applied = world.vsctl(&["apply"]);
    assert!(applied.status.success(), "{}", stderr(&applied));

    // Enter activates the console shell (busybox `askfirst`); the command's
    // result, not its echo, is what comes back. The first tries may race
    // the guest's boot: try a few times.
    let mut seen = String::new();
    for _ in 0..10 {
        let out = console_with_input(&world, "con", b"\necho hello-$((40+2))\n", 1500);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("Connected to guest con's console; type Ctrl-a q to detach"),
            "{}",
            stderr(&out)
        );
        seen = stdout(&out);
        if seen.contains("hello-42") {
            break;
        }
    }
    assert!(seen.contains("hello-42"), "console output: {seen:?}");
    let logs = stdout(&world.vsctl(&["logs", "con"]));
    assert!(logs.contains("hello-42"), "console log: {logs}");

    // One client at a time: a second attach is refused while the first is
    // attached; the first detaches with Ctrl-a q.
    let mut first = world
        .vsctl_command(&["console", "con"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_err = BufReader::new(first.stderr.take().unwrap());
    let mut hint = String::new();
    first_err.read_line(&mut hint).unwrap();
    assert!(hint.contains("Connected to guest con's console"), "{hint}");
    let second = console_with_input(&world, "con", b"", 300);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another client is attached"),
        "{}",
        stderr(&second)
    );
    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(b"echo still-$((6*7))\n\x01q").unwrap();
    let started = Instant::now();
    let first_out = wait_limited(first, Duration::from_secs(10));
    drop(stdin); // Ctrl-a q ended it, not the end of input
    assert!(first_out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut rest = String::new();
    first_err.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("error"), "{rest}");
    // Detached: the console is free again.
    let again = console_with_input(&world, "con", b"", 300);
    assert!(again.status.success(), "{}", stderr(&again));
    // --timeout ends an attach whose input never ends.
    let mut held = world
        .vsctl_command(&["console", "con", "--timeout", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let open_stdin = held.stdin.take();
    let timed = wait_limited(held, Duration::from_secs(10));
    drop(open_stdin);
    assert!(timed.status.success(), "{}", stderr(&timed));

    // busybox init does not speak sd_notify: --wait returns once init runs.
    assert!(world.vsctl(&["stop", "con"]).status.success());
    let began = Instant::now();
    let started = world.vsctl(&["start", "con", "--wait", "--timeout", "30"]);
    assert!(started.status.success(), "{}", stderr(&started));
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&started).contains("does not report readiness"),
        "{}",
        stderr(&started)
    );
    let status = stdout(&world.vsctl(&["status", "con"]));
    assert!(
        status.contains("Readiness:  unknown (init does not use sd_notify)"),
        "{status}"
    );
    let (_, json) = world.vsctl_json(&["status", "con"]);
    assert_eq!(json["runtime"]["ready"], false);

    // A stopped guest has no console: a clear error, exit 1.
    assert!(world.vsctl(&["stop", "con"]).status.success());
    let stopped = console_with_input(&world, "con", b"", 300);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        stderr(&stopped).contains("guest con is not running"),
        "{}",
        stderr(&stopped)
    );
    let run_dir = world.root().join("run/vsctl/con");
    assert!(!run_dir.join("console.sock").exists());
    assert!(!run_dir.join("notify").exists());
    let missing = console_with_input(&world, "nosuch", b"", 300);
    assert_eq!(missing.status.code(), Some(1));

    let base = world.cgroup_base.clone();
    drop(world);
    assert_eq!(leftovers(&base), Vec::<String>::new());
}

/// `--wait` for an init that is taken for systemd (by its name) but never
/// sends READY=1: the timeout, then init dying first, each a clear error.
#[test]
fn start_wait_fails_on_timeout_and_when_init_dies_first() {
    let world = World::new();
    world.write_guest("fake", GUEST);
    let applied = world.vsctl(&["apply"]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    // An "init" named systemd: sleeps, or exits at once once /die exists.
    let script = "mkdir -p /usr/lib/systemd && printf '#!/bin/sh\\n[ -e /die ] && exit 3\\nexec sleep 60\\n' \
                  > /usr/lib/systemd/systemd && chmod 755 /usr/lib/systemd/systemd";
    let out = world.vsctl(&["exec", "fake", "-T", "--", "/bin/sh", "-c", script]);
    assert!(out.status.success(), "{}", stderr(&out));
    world.write_guest(
        "fake",
        &GUEST
            .replace("template", "state = \"stopped\"\ntemplate")
            .replace(
                "stop_timeout = \"10s\"",
                "stop_timeout = \"1s\"\ncommand = [\"/usr/lib/systemd/systemd\"]",
            ),
    );
    let applied = world.vsctl(&["apply"]);
    assert!(applied.status.success(), "{}", stderr(&applied));

    let began = Instant::now();
    let out = world.vsctl(&["start", "fake", "--wait", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&out).contains("did not report ready: no READY=1 within 2 s"),
        "{}",
        stderr(&out)
    );
    let status = stdout(&world.vsctl(&["status", "fake"]));
    assert!(status.contains("Readiness:  starting"), "{status}");

    let out = world.vsctl(&["exec", "fake", "-T", "--", "/bin/touch", "/die"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(world.vsctl(&["stop", "fake"]).status.success());
    let out = world.vsctl(&["start", "fake", "--wait", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("init ended before it reported ready"),
        "{}",
        stderr(&out)
    );

    let base = world.cgroup_base.clone();
    drop(world);
    assert_eq!(leftovers(&base), Vec::<String>::new());
}
