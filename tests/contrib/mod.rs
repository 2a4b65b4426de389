//! Shared helpers for the contrib tests (tests/contrib_*.rs): they drive the
//! real Ansible and Salt, installed by `tests/contrib/setup-venv.sh` into a
//! virtualenv, against the real `vsctl` binary in an isolated `--root`.
//!
//! A missing virtualenv is a failure under CI (`CI=true`): a silently skipped
//! integration test proves nothing. Locally the tests skip with the reason.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Environment variables that would redirect vsctl away from the test's root.
const VSCTL_VARS: &[&str] = &[
    "VSCTL_ROOT",
    "VSCTL_CONFIG",
    "VSCTL_GUESTS_DIR",
    "VSCTL_TEMPLATES_DIR",
    "VSCTL_STATE_DIR",
    "VSCTL_RUN_DIR",
    "VSCTL_LOG_DIR",
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn vsctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vsctl"))
}

/// The virtualenv's `bin/` when it holds `tool`; `None` (with the reason
/// printed) to skip locally; a panic under CI.
pub fn venv_bin(tool: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("VSCTL_CONTRIB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/contrib-venv"));
    let bin = venv.join("bin");
    if bin.join(tool).is_file() {
        return Some(bin);
    }
    let reason = format!(
        "{} not found: run tests/contrib/setup-venv.sh (or set VSCTL_CONTRIB_VENV)",
        bin.join(tool).display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {reason}");
    }
    eprintln!("skipping: {reason}");
    None
}

/// Isolation for the guests a contrib test starts through Ansible or Salt:
/// the root's vsctl.toml gives them a cgroup base of their own, every command
/// that may start or stop one runs inside a network namespace made here (so
/// bridges and veths never touch the host's), and dropping the sandbox stops
/// whatever is still running and removes the cgroups and the namespace.
pub struct Sandbox {
    root: PathBuf,
    netns: String,
    cgroup_base: String,
}

impl Sandbox {
    pub fn new(root: &Path) -> Sandbox {
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        let suffix = format!("{}-{}", std::process::id(), &uuid[..8]);
        let sandbox = Sandbox {
            root: root.to_path_buf(),
            netns: format!("vsc-{suffix}"),
            cgroup_base: format!("vsctl-test-{suffix}"),
        };
        std::fs::create_dir_all(root.join("etc/vsctl")).unwrap();
        std::fs::write(
            root.join("etc/vsctl/vsctl.toml"),
            format!("[runtime]\ncgroup_base = \"{}\"\n", sandbox.cgroup_base),
        )
        .unwrap();
        let added = Command::new("ip")
            .args(["netns", "add", &sandbox.netns])
            .status()
            .unwrap();
        assert!(added.success(), "ip netns add {}", sandbox.netns);
        sandbox
    }

    /// `program` run inside the sandbox's network namespace (nsenter: unlike
    /// `ip netns exec` it leaves /sys, and so the cgroup mounts, alone).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = command("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        cmd
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.root.join("run/vsctl")) {
            for entry in entries.flatten() {
                let _ = self
                    .command(vsctl_bin())
                    .arg("--root")
                    .arg(&self.root)
                    .args(["stop", "--timeout", "2"])
                    .arg(entry.file_name())
                    .output();
            }
        }
        crate::common::remove_cgroup_tree(&self.cgroup_base);
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}

/// A command with vsctl's own environment variables removed.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for var in VSCTL_VARS {
        command.env_remove(var);
    }
    command.env("NO_COLOR", "1");
    command
}

/// Run, and panic with everything it printed unless the exit code is one of `codes`.
pub fn run(command: &mut Command, codes: &[i32]) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let code = output.status.code().unwrap_or(-1);
    assert!(
        codes.contains(&code),
        "{command:?} exited {code} (wanted {codes:?})\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `vsctl --root ROOT ARGS... --output json`, parsed.
pub fn vsctl_json(root: &Path, args: &[&str]) -> serde_json::Value {
    let output = run(
        command(vsctl_bin())
            .arg("--root")
            .arg(root)
            .args(args)
            .args(["--output", "json"]),
        &[0, 2],
    );
    serde_json::from_slice(&output.stdout).expect("vsctl printed JSON")
}

/// Names of the guests `vsctl list` knows.
pub fn listed_guests(root: &Path) -> Vec<String> {
    vsctl_json(root, &["list"])["guests"]
        .as_array()
        .expect("guests array")
        .iter()
        .map(|g| g["name"].as_str().expect("name").to_string())
        .collect()
}

/// Every file, directory and symlink under `dir` with its content (files),
/// target (symlinks) or nothing (directories): equal snapshots mean nothing
/// under `dir` was created, removed or rewritten with other bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.expect("walk");
        let path = entry.path().strip_prefix(dir).unwrap().to_path_buf();
        let kind = entry.file_type();
        let content = if kind.is_file() {
            Some(std::fs::read(entry.path()).expect("read"))
        } else if kind.is_symlink() {
            Some(
                std::fs::read_link(entry.path())
                    .expect("readlink")
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else {
            None
        };
        out.insert(path, content);
    }
    out
}

/// The counters of one host's line in an Ansible PLAY RECAP.
pub fn recap(output: &str, host: &str) -> BTreeMap<String, u64> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(host) && l.contains("ok="))
        .unwrap_or_else(|| panic!("no PLAY RECAP line for {host} in:\n{output}"));
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("recap counter")))
        .collect()
}
