//! The invalid-file corpus: every file under tests/invalid/ (or directory of
//! files, for checks across guests) carries a `# expect: CODE LINE:COL
//! MESSAGE [| HELP]` line. `vsctl validate` must report exactly that, exit
//! non-zero, and leave the state directory byte-for-byte unchanged.

mod common;

use std::path::{Path, PathBuf};

use common::{World, snapshot, stderr};

struct Expectation {
    file_name: String,
    code: String,
    line: usize,
    column: usize,
    message: String,
    help: Option<String>,
}

fn expectation(path: &Path) -> Option<Expectation> {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("# expect: "))?;
    let (main, help) = match line.split_once(" | ") {
        Some((m, h)) => (m, Some(h.to_string())),
        None => (line, None),
    };
    let mut parts = main.splitn(3, ' ');
    let code = parts.next().unwrap().to_string();
    let (l, c) = parts.next().unwrap().split_once(':').unwrap();
    Some(Expectation {
        file_name: path.file_name().unwrap().to_string_lossy().into_owned(),
        code,
        line: l.parse().unwrap(),
        column: c.parse().unwrap(),
        message: parts.next().unwrap_or_default().to_string(),
        help,
    })
}

/// Cases: (files to copy into guests.d, the one with the expectation).
fn cases() -> Vec<(Vec<PathBuf>, PathBuf)> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let files: Vec<PathBuf> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            let expecting = files
                .iter()
                .find(|f| expectation(f).is_some())
                .expect("a case directory has an expectation")
                .clone();
            cases.push((files, expecting));
        } else {
            cases.push((vec![path.clone()], path));
        }
    }
    cases.sort_by(|a, b| a.1.cmp(&b.1));
    cases
}

#[test]
fn corpus_is_large_enough() {
    assert!(
        cases().len() >= 30,
        "the corpus must hold at least 30 cases, has {}",
        cases().len()
    );
}

#[test]
fn every_invalid_file_is_reported_with_its_location_and_changes_nothing() {
    let mut failures = Vec::new();
    for (files, expecting) in cases() {
        let expected = expectation(&expecting).unwrap();
        let world = World::new();
        std::fs::create_dir_all(world.guests_dir()).unwrap();
        for file in &files {
            std::fs::copy(file, world.guests_dir().join(file.file_name().unwrap())).unwrap();
        }
        // A state dir with something in it, which must stay as it is.
        std::fs::create_dir_all(world.state_dir().join("guests/old")).unwrap();
        std::fs::write(world.state_dir().join("guests/old/keep"), b"data").unwrap();
        let before = snapshot(world.root());

        let (code, json) = world.vsctl_json(&["validate"]);
        let text = world.vsctl(&["validate"]);
        let applied = world.vsctl(&["apply"]);
        let after = snapshot(world.root());

        let name = expecting.display().to_string();
        let errors = json["errors"].as_array().cloned().unwrap_or_default();
        let found = errors.iter().find(|e| {
            e["code"] == expected.code.as_str()
                && e["file"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with(&expected.file_name)
                && e["line"] == expected.line
                && e["column"] == expected.column
                && e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&expected.message)
                && expected
                    .help
                    .as_ref()
                    .is_none_or(|h| e["help"].as_str().unwrap_or_default().contains(h.as_str()))
        });
        let location = format!(
            "{}:{}:{}",
            expected.file_name, expected.line, expected.column
        );
        if code != 1 || found.is_none() || errors.len() != 1 {
            failures.push(format!(
                "{name}: exit {code}, expected one error {} at {location}; got {json:#}",
                expected.code
            ));
        }
        if text.status.code() != Some(1)
            || !stderr(&text).contains(&location)
            || !stderr(&text).contains(&expected.code)
        {
            failures.push(format!(
                "{name}: text output lacks {location} / {}:\n{}",
                expected.code,
                stderr(&text)
            ));
        }
        if applied.status.code() != Some(1) {
            failures.push(format!("{name}: apply exited {:?}", applied.status.code()));
        }
        if before != after {
            failures.push(format!(
                "{name}: validate/apply changed files under the root"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn errors_from_all_files_are_reported_in_one_run() {
    let world = World::new();
    world.write_guest("a", "template = \"busybox\"\n[limits]\npids = 1\n");
    world.write_guest("b", "template = \"nope\"\n");
    world.write_guest("c", "template = \"busybox\"\nhostname = \"ok\"\n");
    let (code, json) = world.vsctl_json(&["validate"]);
    assert_eq!(code, 1);
    let files: Vec<&str> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].as_str().unwrap())
        .collect();
    assert_eq!(files.len(), 2, "{json:#}");
    assert!(
        files[0].ends_with("a.toml") && files[1].ends_with("b.toml"),
        "{files:?}"
    );
}

#[test]
fn valid_files_pass() {
    let world = World::new();
    world.write_guest(
        "web1",
        r#"
template = "busybox"
hostname = "web1.example.test"
state = "running"
[network]
mode = "veth"
addresses = ["10.10.0.11/24", "fd00:10::11/64"]
gateway = "10.10.0.1"
gateway6 = "fd00:10::1"
dns = ["10.10.0.1"]
[limits]
memory = "512MiB"
memory_swap = "0"
cpus = 1.5
cpu_weight = 200
pids = 512
io = { read_bps = "50MB", write_bps = "20MB", read_iops = 1000, write_iops = 500 }
[disk]
quota = "8GiB"
inodes = 200_000
[rootfs]
strategy = "overlay"
[init]
command = ["/sbin/init"]
stop_signal = "SIGPWR"
stop_timeout = "45s"
[security]
userns = true
cap_add = ["NET_RAW"]
cap_drop = ["CAP_CHOWN"]
seccomp = "default"
[[mounts]]
source = "/tmp"
target = "/var/www"
[env]
LANG = "C.UTF-8"
"#,
    );
    let out = world.vsctl(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(common::stdout(&out).trim(), "1 guest file valid");
}
