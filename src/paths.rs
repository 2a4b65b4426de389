//! Where vsctl keeps things on the host.
//!
//! Every path vsctl reads or writes is derived from one [`Paths`] value, so that
//! `--root DIR` (or `VSCTL_ROOT`) can move the whole world under a temporary
//! directory: tests and cautious users run fully isolated trees, and nothing
//! outside that root is touched.

use std::path::{Path, PathBuf};

/// Resolved host paths. Build it with [`Paths::under_root`] and then apply
/// overrides from `vsctl.toml` and the command line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Paths {
    /// The prefix every default path lives under (`/` on a real host).
    pub root: PathBuf,
    /// Host settings file, `/etc/vsctl/vsctl.toml`.
    pub config_file: PathBuf,
    /// Desired guests, one TOML file each: `/etc/vsctl/guests.d`.
    pub guests_dir: PathBuf,
    /// Template definitions added by the administrator: `/etc/vsctl/templates`.
    pub templates_dir: PathBuf,
    /// Persistent state: store, template trees, guest records and root filesystems.
    pub state_dir: PathBuf,
    /// Runtime state that dies with the host: supervisor pids, sockets.
    pub run_dir: PathBuf,
    /// Console logs.
    pub log_dir: PathBuf,
}

impl Paths {
    /// The default layout, every path prefixed by `root`.
    pub fn under_root(root: &Path) -> Paths {
        Paths {
            root: root.to_path_buf(),
            config_file: root.join("etc/vsctl/vsctl.toml"),
            guests_dir: root.join("etc/vsctl/guests.d"),
            templates_dir: root.join("etc/vsctl/templates"),
            state_dir: root.join("var/lib/vsctl"),
            run_dir: root.join("run/vsctl"),
            log_dir: root.join("var/log/vsctl"),
        }
    }

    /// Content-addressed objects and per-template manifests.
    pub fn store_dir(&self) -> PathBuf {
        self.state_dir.join("store")
    }

    /// Built template trees (hardlinks into the store).
    pub fn template_trees_dir(&self) -> PathBuf {
        self.state_dir.join("templates")
    }

    /// Per-guest directories: record, root filesystem (or overlay upper/work).
    pub fn guests_state_dir(&self) -> PathBuf {
        self.state_dir.join("guests")
    }

    /// One guest's persistent directory.
    pub fn guest_dir(&self, name: &str) -> PathBuf {
        self.guests_state_dir().join(name)
    }

    /// One guest's runtime directory.
    pub fn guest_run_dir(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }

    /// The apply lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("lock")
    }
}
