//! Shared helpers for tests that drive the real `vsctl` binary in an
//! isolated root (every path under a temporary directory).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// A temporary vsctl world: `root/` is passed as `--root`, guest files live in
/// `root/etc/vsctl/guests.d`.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        World {
            dir: tempfile::Builder::new()
                .prefix("vsctl-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn guests_dir(&self) -> PathBuf {
        self.root().join("etc/vsctl/guests.d")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root().join("var/lib/vsctl")
    }

    pub fn write_guest(&self, name: &str, text: &str) {
        std::fs::create_dir_all(self.guests_dir()).unwrap();
        std::fs::write(self.guests_dir().join(format!("{name}.toml")), text).unwrap();
    }

    pub fn remove_guest(&self, name: &str) {
        std::fs::remove_file(self.guests_dir().join(format!("{name}.toml"))).unwrap();
    }

    /// `vsctl --root ROOT ARGS...`
    pub fn vsctl(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vsctl"));
        command
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env("NO_COLOR", "1");
        for var in [
            "VSCTL_ROOT",
            "VSCTL_CONFIG",
            "VSCTL_GUESTS_DIR",
            "VSCTL_STATE_DIR",
            "VSCTL_RUN_DIR",
            "VSCTL_LOG_DIR",
            "VSCTL_TEMPLATES_DIR",
        ] {
            command.env_remove(var);
        }
        command.output().expect("run vsctl")
    }

    pub fn vsctl_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.vsctl(&all);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), value)
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` with its content and mtime: equal snapshots mean
/// nothing was written.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let content = if meta.is_file() {
            std::fs::read(entry.path()).unwrap()
        } else {
            Vec::new()
        };
        out.insert(entry.path().to_path_buf(), (content, meta.modified().ok()));
    }
    out
}
