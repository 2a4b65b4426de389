//! Capability sets for guests.
//!
//! A guest's root user keeps only the capabilities in its bounding set; this
//! module decides that set (pure functions, computed in the parent before
//! clone) and applies it in the guest's first process right before exec.
//!
//! Two defaults, documented in docs/runtime.md:
//!
//! * **unprivileged guests** (own user namespace): capabilities are then
//!   relative to the guest's namespaces, so nearly all can stay (systemd and
//!   friends need CAP_SYS_ADMIN to mount inside the guest). Dropped are the
//!   ones the kernel only ever checks against the initial namespace, where the
//!   guest has none anyway: keeping them out makes that explicit and survives
//!   kernel changes.
//! * **privileged guests** (host user namespace): every capability is a host
//!   capability, so everything that reaches beyond the guest's own namespaces
//!   is dropped: module loading, raw I/O, mounting, the clock, device nodes,
//!   MAC policy, audit, immutable flags, ptrace, bpf/perf.
//!
//! What this module must never do: *add* a capability the caller does not
//! already hold, or leave the inheritable/ambient sets wider than the
//! bounding set (root's exec would otherwise regain dropped capabilities).

#![deny(unsafe_code)]

use crate::sys;
use std::io;

/// Capability names in kernel order (index = capability number).
pub const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Dropped from unprivileged guests: all but NET_ADMIN and SYS_PTRACE are
/// only meaningful in the initial user namespace, so they could never work
/// for the guest anyway. NET_ADMIN would work in the guest's own network
/// namespace, and that is why it goes: a guest's addresses and routes are
/// vsctl's to set from its file, so that it uses only its own
/// (`cap_add = ["NET_ADMIN"]` gives it back). SYS_PTRACE lets the guest's
/// root trace processes of other ids in its namespace, which is how a guest
/// would reach a process vsctl puts into it before that process is wholly
/// the guest's; guest root still debugs its own processes without it, and
/// `cap_add = ["SYS_PTRACE"]` gives it back (a debugger tracing other
/// users' processes, say).
pub const DROP_UNPRIVILEGED: &[&str] = &[
    "NET_ADMIN",
    "SYS_PTRACE",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_TIME",
    "SYS_PACCT",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "LINUX_IMMUTABLE",
    "PERFMON",
    "BPF",
];

/// Dropped from privileged guests: each of these reaches the host.
/// CAP_SYS_BOOT is handled separately (see [`bounding_set`]).
pub const DROP_PRIVILEGED: &[&str] = &[
    "DAC_READ_SEARCH", // open_by_handle_at escapes ("shocker")
    "LINUX_IMMUTABLE",
    "NET_ADMIN", // mostly per netns, but some drivers and ioctls check it against the host
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {0:?}")]
    Unknown(String),
    #[error("capability {op}: {source}")]
    Sys { op: &'static str, source: io::Error },
}

/// Parse `CAP_NET_ADMIN`, `net_admin` or `ALL` into a bit mask.
pub fn parse(name: &str) -> Result<u64, CapsError> {
    let up = name.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    if bare == "ALL" {
        return Ok(all_mask());
    }
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| 1u64 << i)
        .ok_or_else(|| CapsError::Unknown(name.to_string()))
}

fn all_mask() -> u64 {
    (1u64 << NAMES.len()) - 1
}

fn mask_of(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| parse(n).expect("built-in cap name"))
        .fold(0, |a, b| a | b)
}

/// Names of the capabilities in `mask`, `CAP_` prefixed, kernel order.
pub fn names_of(mask: u64) -> Vec<String> {
    (0..NAMES.len())
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("CAP_{}", NAMES[i]))
        .collect()
}

/// The bounding set of a guest. `seccomp` matters for CAP_SYS_BOOT: in a
/// child pid namespace reboot(2) only ends the guest's own init (which is how
/// guests power off), but the same capability allows kexec_load on the host,
/// so a privileged guest keeps it only while the seccomp filter denies kexec.
pub fn bounding_set(
    unprivileged: bool,
    seccomp: bool,
    add: &[String],
    drop: &[String],
) -> Result<u64, CapsError> {
    let mut set = all_mask();
    if unprivileged {
        set &= !mask_of(DROP_UNPRIVILEGED);
    } else {
        set &= !mask_of(DROP_PRIVILEGED);
        if !seccomp {
            set &= !mask_of(&["SYS_BOOT"]);
        }
    }
    for d in drop {
        set &= !parse(d)?;
    }
    for a in add {
        set |= parse(a)?;
    }
    Ok(set)
}

/// Restrict the calling thread to `set`: drop everything else from the
/// bounding set, mask the inheritable set and clear the ambient set. The
/// effective and permitted sets stay until exec, which recomputes them from
/// the bounding set (the guest's init runs as uid 0 of its namespace).
pub fn apply(set: u64, last_cap: u32) -> Result<(), CapsError> {
    for cap in 0..=last_cap {
        if cap < 64 && set & (1u64 << cap) != 0 {
            continue;
        }
        match sys::capbset_drop(cap) {
            Ok(()) => {}
            // A capability newer than this kernel: nothing to drop.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(source) => {
                return Err(CapsError::Sys {
                    op: "bounding set drop",
                    source,
                });
            }
        }
    }
    let mut cur = sys::capget().map_err(|source| CapsError::Sys { op: "get", source })?;
    cur.inheritable &= set;
    sys::capset(cur).map_err(|source| CapsError::Sys { op: "set", source })?;
    sys::cap_ambient_clear().map_err(|source| CapsError::Sys {
        op: "ambient clear",
        source,
    })?;
    Ok(())
}

/// Highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or((NAMES.len() - 1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_in_all_spellings() {
        assert_eq!(parse("CAP_NET_ADMIN").unwrap(), 1 << 12);
        assert_eq!(parse("net_admin").unwrap(), 1 << 12);
        assert_eq!(parse("all").unwrap(), all_mask());
        assert!(parse("CAP_FLY").is_err());
    }

    #[test]
    fn privileged_default_drops_host_reaching_caps() {
        let s = bounding_set(false, true, &[], &[]).unwrap();
        for c in [
            "SYS_ADMIN",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_TIME",
            "MKNOD",
            "NET_ADMIN",
            "LINUX_IMMUTABLE",
            "MAC_ADMIN",
            "AUDIT_CONTROL",
            "SYSLOG",
            "SYS_PTRACE",
            "DAC_READ_SEARCH",
            "BPF",
        ] {
            assert_eq!(s & parse(c).unwrap(), 0, "{c} must be dropped");
        }
        for c in [
            "CHOWN",
            "SETUID",
            "KILL",
            "NET_BIND_SERVICE",
            "SYS_CHROOT",
            "SYS_BOOT",
        ] {
            assert_ne!(s & parse(c).unwrap(), 0, "{c} must stay");
        }
        // Without seccomp, kexec would be reachable through CAP_SYS_BOOT.
        let s = bounding_set(false, false, &[], &[]).unwrap();
        assert_eq!(s & parse("SYS_BOOT").unwrap(), 0);
    }

    #[test]
    fn unprivileged_default_keeps_namespaced_caps() {
        let s = bounding_set(true, true, &[], &[]).unwrap();
        for c in ["SYS_ADMIN", "MKNOD", "NET_RAW", "NET_BIND_SERVICE"] {
            assert_ne!(s & parse(c).unwrap(), 0, "{c}");
        }
        // NET_ADMIN goes too: a guest's addresses and routes are vsctl's;
        // and SYS_PTRACE: guest root traces only its own processes.
        for c in [
            "SYS_MODULE",
            "SYS_TIME",
            "SYS_RAWIO",
            "NET_ADMIN",
            "SYS_PTRACE",
        ] {
            assert_eq!(s & parse(c).unwrap(), 0, "{c}");
        }
        for c in ["NET_ADMIN", "SYS_PTRACE"] {
            let with = bounding_set(true, true, &[c.into()], &[]).unwrap();
            assert_ne!(with & parse(c).unwrap(), 0, "cap_add gives {c} back");
        }
    }

    #[test]
    fn add_and_drop_adjust_the_default() {
        let s = bounding_set(false, true, &["CAP_NET_ADMIN".into()], &["chown".into()]).unwrap();
        assert_ne!(s & parse("NET_ADMIN").unwrap(), 0);
        assert_eq!(s & parse("CHOWN").unwrap(), 0);
        assert!(bounding_set(false, true, &["bogus".into()], &[]).is_err());
        assert_eq!(
            names_of(parse("KILL").unwrap()),
            vec!["CAP_KILL".to_string()]
        );
    }
}
