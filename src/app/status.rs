//! `vsctl status NAME`: one guest as it is now, from its record and the live
//! system (init process, cgroup limits, interfaces, disk usage).

use std::fs::File;

use serde::Serialize;

use super::{Host, exit, print_json};
use crate::cli::OutputFormat;
use crate::config::guest::{NetworkMode, SeccompMode};
use crate::lifecycle;
use crate::net::InterfaceInfo;
use crate::plan::{FORMAT_VERSION, RunStatus};
use crate::quota::{self, DiskUsage};
use crate::runtime::{self, GuestRuntimeState};
use crate::state::{GuestRecord, StateStore};

#[derive(Debug, Serialize)]
struct GuestStatus<'a> {
    format_version: u32,
    name: &'a str,
    status: RunStatus,
    runtime: Option<GuestRuntimeState>,
    /// The guest file, or None for an orphan.
    file: Option<String>,
    /// Interfaces and addresses inside the guest (running veth/ipvlan/none guests).
    interfaces: Option<Vec<InterfaceInfo>>,
    /// Where the guest's network lives, in words (host mode is said plainly).
    network: String,
    seccomp: &'static str,
    disk: Option<DiskUsage>,
    disk_error: Option<String>,
    /// Whether the guest's init reports readiness (READY=1 on NOTIFY_SOCKET).
    speaks_sd_notify: bool,
    record: &'a GuestRecord,
}

fn fail(error: &dyn std::fmt::Display) -> i32 {
    eprintln!("vsctl: {error}");
    exit::ERROR
}

pub fn status(host: &Host, name: &str) -> i32 {
    let file = host.paths.guests_dir.join(format!("{name}.toml"));
    let record = match StateStore::new(&host.paths).read(name) {
        Ok(Some(record)) => record,
        Ok(None) if file.exists() => {
            return fail(&format!(
                "guest `{name}` does not exist yet (run `vsctl apply`)"
            ));
        }
        Ok(None) => return fail(&format!("guest `{name}` does not exist")),
        Err(e) => return fail(&e),
    };
    let spec = &record.spec;
    let run_dir = host.paths.guest_run_dir(name);
    let runtime_state = runtime::status(&run_dir).ok();
    let init_pid = match runtime_state {
        Some(GuestRuntimeState::Running { init_pid, .. }) => Some(init_pid),
        _ => None,
    };
    let interfaces = match (init_pid, spec.network.mode) {
        (Some(pid), mode) if mode != NetworkMode::Host => File::open(format!("/proc/{pid}/ns/net"))
            .ok()
            .and_then(|netns| crate::net::status(name, &netns).ok()),
        _ => None,
    };
    let network = match spec.network.mode {
        NetworkMode::Host => {
            String::from("HOST network namespace: the guest shares every host address")
        }
        NetworkMode::None => String::from("own namespace, loopback only"),
        NetworkMode::Veth => format!(
            "own namespace, veth ({:?} on {})",
            host.settings.network.veth, host.settings.network.bridge
        ),
        NetworkMode::Ipvlan => format!(
            "own namespace, ipvlan over {}",
            spec.network.parent.as_deref().unwrap_or("?")
        ),
    };
    let (disk, disk_error) = match (&record.rootfs, record.project_id) {
        // The image's filesystem is the limit: its own counters tell.
        (Some(crate::rootfs::RootfsLayout::Image { path }), _) => {
            let root = init_pid.map(|pid| std::path::PathBuf::from(format!("/proc/{pid}/root")));
            match crate::rootfs::image::usage(path, root.as_deref()) {
                Ok(usage) => (Some(usage), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        (Some(layout), Some(project)) => match quota::usage(layout.quota_root(), project) {
            Ok(usage) => (Some(usage), None),
            Err(e) => (None, Some(e.to_string())),
        },
        _ => (None, None),
    };
    let report = GuestStatus {
        format_version: FORMAT_VERSION,
        name,
        status: lifecycle::run_status(&host.paths, name),
        runtime: runtime_state,
        file: file.exists().then(|| file.display().to_string()),
        interfaces,
        network,
        seccomp: match spec.security.seccomp {
            SeccompMode::Default => "default filter",
            SeccompMode::Unconfined => "UNCONFINED (no seccomp filter)",
        },
        disk,
        disk_error,
        speaks_sd_notify: runtime::read_spec(&run_dir)
            .map(|spec| runtime::speaks_sd_notify(&spec))
            .unwrap_or(false),
        record: &record,
    };
    match host.output {
        OutputFormat::Json => print_json(&report),
        OutputFormat::Text => print_text(&report),
    }
    exit::OK
}

fn word<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn print_text(report: &GuestStatus) {
    let spec = &report.record.spec;
    outln!("Name:       {}", report.name);
    let since = match &report.runtime {
        Some(GuestRuntimeState::Running {
            init_pid, since, ..
        }) => {
            format!(" (init pid {init_pid}, since unix time {since})")
        }
        Some(GuestRuntimeState::Crashed { reason, .. }) => format!(" ({reason})"),
        _ => String::new(),
    };
    outln!("Status:     {}{since}", word(&report.status));
    if let Some(GuestRuntimeState::Running {
        ready,
        notify_status,
        ..
    }) = &report.runtime
    {
        let readiness = match (ready, report.speaks_sd_notify) {
            (true, _) => String::from("ready"),
            (false, true) => String::from("starting (no READY=1 from init yet)"),
            (false, false) => String::from("unknown (init does not use sd_notify)"),
        };
        outln!("Readiness:  {readiness}");
        if let Some(text) = notify_status {
            outln!("  status    {text}");
        }
    }
    outln!("Wanted:     {}", word(&spec.state));
    outln!(
        "File:       {}",
        report.file.as_deref().unwrap_or("(removed: orphan)")
    );
    outln!(
        "Template:   {} ({})",
        spec.template,
        report
            .record
            .template_digest
            .as_deref()
            .unwrap_or("not built")
    );
    match &report.record.rootfs {
        Some(crate::rootfs::RootfsLayout::Tree { path }) => {
            outln!("Rootfs:     {}", path.display())
        }
        Some(crate::rootfs::RootfsLayout::Overlay { upper, .. }) => {
            outln!("Rootfs:     overlay, upper {}", upper.display())
        }
        Some(crate::rootfs::RootfsLayout::Image { path }) => {
            outln!("Rootfs:     ext4 image {}", path.display())
        }
        None => outln!("Rootfs:     (none)"),
    }
    outln!("Hostname:   {}", spec.hostname);
    outln!("Network:    {}", report.network);
    for address in &spec.network.addresses {
        outln!("  address   {address}");
    }
    for interface in report.interfaces.iter().flatten() {
        let addresses: Vec<String> = interface
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect();
        outln!("  live      {} {}", interface.name, addresses.join(" "));
    }
    match (report.record.id_range, spec.security.userns) {
        (Some(range), true) => {
            outln!(
                "Userns:     yes: host uids/gids {}..{}",
                range.host_base,
                range.host_base + range.count - 1
            )
        }
        _ => outln!("Userns:     no (privileged guest, reduced capabilities)"),
    }
    outln!("Seccomp:    {}", report.seccomp);
    let limits = &spec.limits;
    let show = |v: Option<String>| v.unwrap_or_else(|| String::from("-"));
    outln!(
        "Limits:     memory {} swap {} cpus {} weight {} pids {}",
        show(limits.memory.map(|s| s.to_string())),
        show(limits.memory_swap.map(|s| s.to_string())),
        show(limits.cpus.map(|c| c.to_string())),
        show(limits.cpu_weight.map(|c| c.to_string())),
        show(limits.pids.map(|c| c.to_string())),
    );
    if let Some(usage) = &report.disk {
        outln!(
            "Disk:       {} bytes used of {}, {} inodes used of {}",
            usage.bytes_used,
            show(usage.bytes_limit.map(|b| b.to_string())),
            show(usage.inodes_used.map(|b| b.to_string())),
            show(usage.inodes_limit.map(|b| b.to_string())),
        );
    }
    if let Some(error) = &report.disk_error {
        outln!("Disk:       {error}");
    }
    outln!("Protected:  {}", spec.protect);
}
