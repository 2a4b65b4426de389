//! From guest records to running guests: builds the [`RuntimeSpec`] a
//! recorded guest boots with, and wraps the runtime's start, stop, status
//! and live updates for the executor and the CLI.
//!
//! The choice of how an unprivileged guest's files are owned lives here:
//! trees of its own (reflink or copy clones) were shifted into the guest's
//! uid range when cloned, so they are used as they are; overlay guests share
//! the template's unshifted layers and are mounted through idmapped mounts.

use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup;
use crate::config::GuestSpec;
use crate::config::guest::NetworkMode;
use crate::config::host::HostSettings;
use crate::paths::Paths;
use crate::plan::RunStatus;
use crate::rootfs::RootfsLayout;
use crate::runtime::{
    self, BindMount, GuestNetwork, GuestRuntimeState, IdRange, RootfsMount, RuntimeError,
    RuntimeSpec,
};
use crate::state::GuestRecord;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("guest {0} has no root filesystem yet (run `vsctl apply`)")]
    NoRootfs(String),
    #[error("guest {0} is unprivileged but has no uid range in its record")]
    NoIdRange(String),
    /// The guest's name is added by whoever reports it (apply, the CLI).
    #[error("{source}")]
    Runtime { guest: String, source: RuntimeError },
    #[error(transparent)]
    Access(#[from] crate::host_access::HostAccessError),
}

/// Signal number of a validated `[init] stop_signal` name.
pub fn signal_number(name: &str) -> Option<i32> {
    match name {
        "SIGRTMIN+3" => Some(libc::SIGRTMIN() + 3),
        other => other
            .parse::<nix::sys::signal::Signal>()
            .ok()
            .map(|s| s as i32),
    }
}

/// The cgroup limits of a spec. `memory_swap` in a guest file is swap on
/// top of memory; the cgroup layer takes memory + swap.
pub fn cgroup_limits(spec: &GuestSpec) -> cgroup::Limits {
    let limits = &spec.limits;
    let bytes = |s: Option<crate::config::units::Size>| s.map(|s| s.bytes());
    cgroup::Limits {
        memory: bytes(limits.memory),
        memory_swap: match (limits.memory, limits.memory_swap) {
            (Some(memory), Some(swap)) => Some(memory.bytes().saturating_add(swap.bytes())),
            _ => None,
        },
        cpus: limits.cpus,
        cpu_weight: limits.cpu_weight,
        pids: limits.pids,
        io: cgroup::IoLimits {
            read_bps: bytes(limits.io.read_bps),
            write_bps: bytes(limits.io.write_bps),
            read_iops: limits.io.read_iops,
            write_iops: limits.io.write_iops,
        },
    }
}

pub fn log_file(paths: &Paths, name: &str) -> PathBuf {
    paths.log_dir.join(format!("{name}.log"))
}

/// What the guest's network looks like to the runtime.
pub fn guest_network(spec: &GuestSpec, settings: &HostSettings) -> Option<GuestNetwork> {
    match spec.network.mode {
        NetworkMode::None if spec.network.addresses.is_empty() => None,
        _ => Some(GuestNetwork {
            spec: spec.network.clone(),
            host: settings.network.clone(),
        }),
    }
}

/// The runtime spec a recorded guest boots with.
pub fn runtime_spec(
    paths: &Paths,
    settings: &HostSettings,
    record: &GuestRecord,
) -> Result<RuntimeSpec, LifecycleError> {
    let spec = &record.spec;
    let userns = if spec.security.userns {
        let range = record
            .id_range
            .ok_or_else(|| LifecycleError::NoIdRange(spec.name.clone()))?;
        Some(IdRange {
            host_base: range.host_base,
            count: range.count,
        })
    } else {
        None
    };
    let (rootfs, idmap_rootfs) = match &record.rootfs {
        Some(RootfsLayout::Tree { path }) => (RootfsMount::Tree { path: path.clone() }, false),
        Some(RootfsLayout::Overlay { lower, upper, work }) => (
            RootfsMount::Overlay {
                lower: vec![lower.clone()],
                upper: upper.clone(),
                work: work.clone(),
            },
            userns.is_some(),
        ),
        // Idmapped by the runtime whenever the guest has a user namespace.
        Some(RootfsLayout::Image { path }) => (
            RootfsMount::Image {
                path: path.clone(),
                init_guess: Some(crate::template::tree_path(paths, &spec.template))
                    .filter(|t| t.is_dir()),
            },
            false,
        ),
        None => return Err(LifecycleError::NoRootfs(spec.name.clone())),
    };
    let mut runtime = RuntimeSpec::new(
        &spec.name,
        rootfs,
        paths.guest_run_dir(&spec.name),
        log_file(paths, &spec.name),
    );
    runtime.hostname = spec.hostname.clone();
    runtime.init = spec.init.command.clone();
    runtime.env = spec.env.clone();
    runtime.stop_signal = spec.init.stop_signal.as_deref().and_then(signal_number);
    runtime.stop_timeout = spec.init.stop_timeout.0;
    runtime.limits = cgroup_limits(spec);
    runtime.caps_add = spec.security.cap_add.clone();
    runtime.caps_drop = spec.security.cap_drop.clone();
    runtime.seccomp = spec.security.seccomp == crate::config::guest::SeccompMode::Default;
    runtime.userns = userns;
    runtime.idmap_rootfs = idmap_rootfs;
    runtime.mounts = spec
        .mounts
        .iter()
        .map(|m| BindMount {
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
            idmap: m.idmap,
        })
        .collect();
    runtime.cgroup_base = settings.runtime.cgroup_base.clone();
    runtime.network = guest_network(spec, settings);
    Ok(runtime)
}

/// The guest's run state, checked against the live processes.
pub fn run_status(paths: &Paths, name: &str) -> RunStatus {
    match runtime::status(&paths.guest_run_dir(name)) {
        Ok(GuestRuntimeState::Running { .. }) => RunStatus::Running,
        Ok(GuestRuntimeState::Crashed { .. }) => RunStatus::Crashed,
        Ok(GuestRuntimeState::Stopped { .. } | GuestRuntimeState::NotStarted) | Err(_) => {
            RunStatus::Stopped
        }
    }
}

fn runtime_err(name: &str) -> impl FnOnce(RuntimeError) -> LifecycleError + '_ {
    move |source| LifecycleError::Runtime {
        guest: name.to_string(),
        source,
    }
}

/// Start a recorded guest. Its directories and files are first given the
/// access they must have (installs of older versions made them readable by
/// everyone; see [`crate::host_access`]).
pub fn start(
    paths: &Paths,
    settings: &HostSettings,
    record: &GuestRecord,
) -> Result<runtime::Started, LifecycleError> {
    let spec = runtime_spec(paths, settings, record)?;
    use crate::host_access::{self, Access, Follow};
    host_access::secure_layout(paths)?;
    host_access::ensure_dir(&paths.run_dir, Access::Traverse, Follow::Yes)?;
    host_access::secure_guest(paths, record)?;
    runtime::start(&spec).map_err(runtime_err(&record.spec.name))
}

pub fn stop(
    paths: &Paths,
    name: &str,
    timeout: Duration,
) -> Result<runtime::StopOutcome, LifecycleError> {
    runtime::stop(&paths.guest_run_dir(name), timeout).map_err(runtime_err(name))
}

pub fn update_limits(paths: &Paths, spec: &GuestSpec) -> Result<(), LifecycleError> {
    runtime::update_limits(&paths.guest_run_dir(&spec.name), &cgroup_limits(spec))
        .map_err(runtime_err(&spec.name))
}

pub fn update_network(
    paths: &Paths,
    settings: &HostSettings,
    spec: &GuestSpec,
) -> Result<(), LifecycleError> {
    let network = GuestNetwork {
        spec: spec.network.clone(),
        host: settings.network.clone(),
    };
    runtime::update_network(&paths.guest_run_dir(&spec.name), &network)
        .map_err(runtime_err(&spec.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_by_table() {
        for (name, number) in [
            ("SIGTERM", libc::SIGTERM),
            ("SIGPWR", libc::SIGPWR),
            ("SIGUSR2", libc::SIGUSR2),
            ("SIGINT", libc::SIGINT),
            ("SIGRTMIN+3", libc::SIGRTMIN() + 3),
        ] {
            assert_eq!(signal_number(name), Some(number), "{name}");
        }
        for name in crate::config::guest::STOP_SIGNALS {
            assert!(
                signal_number(name).is_some(),
                "{name} is accepted by validation but has no number"
            );
        }
    }

    #[test]
    fn swap_is_added_to_memory_for_the_cgroup_layer() {
        let mut spec: GuestSpec = serde_json::from_value(serde_json::json!({
            "name": "g", "template": "busybox", "hostname": "g", "state": "running", "protect": false,
            "network": {"mode": "none", "addresses": [], "gateway": null, "gateway6": null, "dns": [], "parent": null},
            "limits": {"memory": "256MiB", "memory_swap": "64MiB", "cpus": 0.5, "cpu_weight": null, "pids": 64,
                       "io": {"read_bps": "1MiB", "write_bps": null, "read_iops": null, "write_iops": 10}},
            "disk": {"quota": null, "inodes": null}, "rootfs": {"strategy": "auto"},
            "init": {"command": ["/sbin/init"], "stop_signal": null, "stop_timeout": "30s"},
            "security": {"userns": true, "cap_add": [], "cap_drop": [], "seccomp": "default"},
            "mounts": [], "env": {}
        }))
        .unwrap();
        let limits = cgroup_limits(&spec);
        assert_eq!(limits.memory, Some(256 << 20));
        assert_eq!(limits.memory_swap, Some(320 << 20));
        assert_eq!(limits.io.read_bps, Some(1 << 20));
        assert_eq!(limits.io.write_iops, Some(10));
        spec.limits.memory = None;
        assert_eq!(cgroup_limits(&spec).memory_swap, None);
    }
}
