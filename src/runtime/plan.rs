//! The list of steps a guest's first process executes, computed in the parent.
//!
//! Everything here is pure: it turns a [`RuntimeSpec`] into data (mount steps
//! with guest-relative targets, the capability mask, the seccomp program,
//! argv/env as C strings). The cloned child then only walks the list, so no
//! policy decision, allocation-heavy parsing or file lookup happens between
//! clone and exec, and the list can be unit-tested and printed.

use super::{RootfsMount, RuntimeError, RuntimeSpec};
use nix::mount::MsFlags;
use std::ffi::CString;
use std::path::PathBuf;

/// One setup operation inside the guest's mount namespace. `target`s are
/// relative to the guest root and resolved with openat2(RESOLVE_IN_ROOT), so a
/// symlink planted in the guest's tree can never redirect them to the host.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// mount(source, target, fstype, flags, data) onto a directory, created if missing.
    Mount {
        source: String,
        target: PathBuf,
        fstype: String,
        flags: MsFlags,
        data: Option<String>,
    },
    /// Bind a host path (trusted: from the spec or /dev) onto a guest path,
    /// creating a file or directory mount point as needed; optionally read-only.
    BindHost {
        source: PathBuf,
        target: PathBuf,
        dir: bool,
        read_only: bool,
    },
    /// Attach the `index`-th idmapped bind mount the supervisor handed over
    /// (see [`ChildPlan::idmap_binds`]) at this guest path, creating a file
    /// or directory mount point as needed.
    AttachIdmapped {
        index: usize,
        target: PathBuf,
        dir: bool,
    },
    /// Bind the console pty slave onto this guest path (known only at boot).
    Console { target: PathBuf },
    /// Bind a guest path onto itself (recursively) and make the top read-only.
    /// Missing paths are skipped: they differ between kernels.
    ReadOnly { target: PathBuf },
    /// Bind a guest path onto itself, keeping it writable (so a later
    /// ReadOnly of its parent leaves it writable as a sub-mount).
    KeepWritable { target: PathBuf },
    /// Hide a path: /dev/null over files, an empty read-only tmpfs over
    /// directories. Missing paths are skipped.
    Mask { target: PathBuf },
    /// Bind every regular file directly in this guest directory read-only
    /// onto itself, except the names in `keep`: the interface files of a
    /// privileged guest's own cgroup (its limits), while the delegation
    /// files stay writable. A privileged guest has no CAP_SYS_ADMIN, so it
    /// can never remove these mounts.
    ReadOnlyFiles { target: PathBuf, keep: Vec<String> },
    /// symlink(link_to, target)
    Symlink { link_to: String, target: PathBuf },
    /// Create a file with this content (on a tmpfs the runtime mounted).
    WriteFile { target: PathBuf, content: String },
}

/// /proc entries that leak host information or control the host (Docker's
/// and LXC's lists).
pub const PROC_MASKED: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "proc/sysrq-trigger",
    "proc/kallsyms",
    "proc/kmsg",
    "sys/firmware",
    "sys/devices/virtual/powercap",
    "sys/kernel/security",
    "sys/kernel/debug",
];

/// /proc subtrees that stay visible but read-only.
pub const PROC_READ_ONLY: &[&str] = &["proc/bus", "proc/fs", "proc/irq", "proc/sys"];

/// Host device nodes bind-mounted into the guest's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The systemd drop-in for guests that cannot mount (see `build`).
pub const NO_MOUNT_DROPIN: &str = "\
# Written by vsctl: this guest has no CAP_SYS_ADMIN, so it cannot mount
# filesystems; mount units are skipped instead of failing.
[Unit]
ConditionCapability=CAP_SYS_ADMIN
";

/// Everything the child needs, precomputed.
#[derive(Debug, Clone)]
pub struct ChildPlan {
    /// Where the guest root is mounted in the child's mount namespace.
    pub new_root: PathBuf,
    pub rootfs: RootfsMount,
    pub steps: Vec<Step>,
    pub hostname: String,
    pub caps: u64,
    pub last_cap: u32,
    pub seccomp: Option<Vec<libc::sock_filter>>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// (resource, soft, hard)
    pub rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
    pub userns: bool,
    /// Host paths the supervisor idmaps and hands over, in order (empty
    /// without `idmap_rootfs`): Tree: the tree; Overlay: the lower layers,
    /// then the parent of upper and work.
    pub idmap_sources: Vec<PathBuf>,
    /// Where the child attaches idmapped overlay layers: `run_dir/layers/N`.
    pub layers_dir: PathBuf,
    /// Bind mounts with `idmap`, in order: (host source, read-only). The
    /// supervisor makes each an idmapped detached mount and hands it over
    /// after the rootfs mounts; `Step::AttachIdmapped` attaches them.
    pub idmap_binds: Vec<(PathBuf, bool)>,
}

impl ChildPlan {
    /// How many of the mount fds the supervisor hands the child are the
    /// rootfs: the idmapped sources, or the one mounted image.
    pub fn rootfs_fds(&self) -> usize {
        match self.rootfs {
            RootfsMount::Image { .. } => 1,
            _ => self.idmap_sources.len(),
        }
    }

    /// All mount fds handed over: the rootfs's, then the idmapped binds.
    pub fn received_fds(&self) -> usize {
        self.rootfs_fds() + self.idmap_binds.len()
    }
}

fn cstr(s: &str, what: &str) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|_| RuntimeError::Invalid(format!("{what} contains a NUL byte: {s:?}")))
}

/// A guest path from the spec as a relative path without `..`.
pub fn guest_rel(p: &std::path::Path) -> Result<PathBuf, RuntimeError> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(RuntimeError::Invalid(format!(
                    "guest path {} must be absolute without '..'",
                    p.display()
                )));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(RuntimeError::Invalid(format!(
            "guest path {} is the root",
            p.display()
        )));
    }
    Ok(out)
}

/// The environment init starts with: a fixed base, then the spec's variables.
/// Nothing is inherited from the host.
pub fn environment(spec: &RuntimeSpec, uuid: &str) -> Vec<(String, String)> {
    let mut env = std::collections::BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    );
    env.insert("TERM".to_string(), "linux".to_string());
    env.insert("HOME".to_string(), "/root".to_string());
    // systemd's container interface (systemd.io/CONTAINER_INTERFACE).
    env.insert("container".to_string(), "vsctl".to_string());
    env.insert("container_uuid".to_string(), uuid.to_string());
    for (k, v) in &spec.env {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}

/// Build the step list and the rest of the child plan.
pub fn build(spec: &RuntimeSpec, uuid: &str) -> Result<ChildPlan, RuntimeError> {
    let r = PathBuf::from;
    let unprivileged = spec.userns.is_some();
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut steps = vec![
        Step::Mount {
            source: "proc".into(),
            target: r("proc"),
            fstype: "proc".into(),
            flags: nosuid_nodev_noexec,
            data: None,
        },
        Step::Mount {
            source: "sysfs".into(),
            target: r("sys"),
            fstype: "sysfs".into(),
            flags: nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            data: None,
        },
        Step::Mount {
            source: "tmpfs".into(),
            target: r("dev"),
            fstype: "tmpfs".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_STRICTATIME,
            data: Some("mode=755,size=65536k".into()),
        },
    ];
    for d in DEVICES {
        steps.push(Step::BindHost {
            source: PathBuf::from("/dev").join(d),
            target: r("dev").join(d),
            dir: false,
            read_only: false,
        });
    }
    steps.extend([
        Step::Mount {
            source: "devpts".into(),
            target: r("dev/pts"),
            fstype: "devpts".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5".into()),
        },
        Step::Symlink {
            link_to: "pts/ptmx".into(),
            target: r("dev/ptmx"),
        },
        Step::Mount {
            source: "shm".into(),
            target: r("dev/shm"),
            fstype: "tmpfs".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=1777,size=65536k".into()),
        },
        Step::Mount {
            source: "mqueue".into(),
            target: r("dev/mqueue"),
            fstype: "mqueue".into(),
            flags: nosuid_nodev_noexec,
            data: None,
        },
        Step::Console {
            target: r("dev/console"),
        },
        Step::Symlink {
            link_to: "/proc/self/fd".into(),
            target: r("dev/fd"),
        },
        Step::Symlink {
            link_to: "/proc/self/fd/0".into(),
            target: r("dev/stdin"),
        },
        Step::Symlink {
            link_to: "/proc/self/fd/1".into(),
            target: r("dev/stdout"),
        },
        Step::Symlink {
            link_to: "/proc/self/fd/2".into(),
            target: r("dev/stderr"),
        },
        Step::Symlink {
            link_to: "/proc/kcore".into(),
            target: r("dev/core"),
        },
        // systemd's container interface (systemd.io/CONTAINER_INTERFACE): a
        // tmpfs /run prepared by the manager (systemd keeps an existing /run
        // mount) holding /run/host/container-manager, as systemd-nspawn does.
        Step::Mount {
            source: "tmpfs".into(),
            target: r("run"),
            fstype: "tmpfs".into(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
            data: Some("mode=755,size=20%".into()),
        },
        Step::WriteFile {
            target: r("run/host/container-manager"),
            content: "vsctl\n".into(),
        },
        Step::WriteFile {
            target: r("run/systemd/container"),
            content: "vsctl\n".into(),
        },
    ]);
    // /run/lock, the lock directory Debian's systemd mounts as an API
    // filesystem (fatal if it cannot: a privileged guest has no
    // CAP_SYS_ADMIN) and newer ones as run-lock.mount. Mounted here like
    // /run itself; the guest's systemd finds it in place and goes on.
    steps.push(Step::Mount {
        source: "tmpfs".into(),
        target: r("run/lock"),
        fstype: "tmpfs".into(),
        flags: nosuid_nodev_noexec,
        data: Some("mode=1777,size=5242880".into()),
    });
    let caps =
        crate::caps::bounding_set(unprivileged, spec.seccomp, &spec.caps_add, &spec.caps_drop)?;
    if caps & crate::caps::parse("SYS_ADMIN")? == 0 {
        // Without CAP_SYS_ADMIN (privileged guests) no mount can succeed, so
        // tell a systemd guest to skip its mount units (e.g. trixie's
        // tmp.mount) instead of failing them: a top-level drop-in for every
        // mount unit (systemd.unit(5), "mount.d/"), in the runtime's own
        // /run. Filesystems already mounted by the runtime stay active.
        steps.push(Step::WriteFile {
            target: r("run/systemd/system/mount.d/50-vsctl-no-cap-sys-admin.conf"),
            content: NO_MOUNT_DROPIN.into(),
        });
    }
    // The host's os-release, so software in the guest can tell what it runs
    // on (CONTAINER_INTERFACE: /run/host/os-release). Read now, in the
    // parent, from the host's trusted tree; a host without one gets none.
    if let Some(text) = host_os_release() {
        steps.push(Step::WriteFile {
            target: r("run/host/os-release"),
            content: text,
        });
    }
    // systemd's readiness protocol, as systemd-nspawn offers it: the
    // supervisor's datagram socket (created before the first boot) at
    // /run/host/notify, named by NOTIFY_SOCKET in init's environment.
    steps.push(Step::BindHost {
        source: super::notify::host_path(&spec.run_dir),
        target: r(super::notify::GUEST_PATH.trim_start_matches('/')),
        dir: false,
        read_only: false,
    });
    steps.extend(cgroup_steps(
        &crate::cgroup::host_hierarchies(),
        spec.userns.is_some(),
    ));
    let mut idmapped = 0;
    for m in &spec.mounts {
        let target = guest_rel(&m.target)?;
        let meta = std::fs::metadata(&m.source).map_err(|e| RuntimeError::Io {
            what: format!("bind mount source {}", m.source.display()),
            source: e,
        })?;
        if m.idmap {
            steps.push(Step::AttachIdmapped {
                index: idmapped,
                target,
                dir: meta.is_dir(),
            });
            idmapped += 1;
        } else {
            steps.push(Step::BindHost {
                source: m.source.clone(),
                target,
                dir: meta.is_dir(),
                read_only: m.read_only,
            });
        }
    }
    for m in PROC_MASKED {
        steps.push(Step::Mask { target: r(m) });
    }
    // /proc/sys/net belongs to the guest's own network namespace: keep it
    // writable as a sub-mount before /proc/sys goes read-only.
    steps.push(Step::KeepWritable {
        target: r("proc/sys/net"),
    });
    for p in PROC_READ_ONLY {
        steps.push(Step::ReadOnly { target: r(p) });
    }
    // sysrq-trigger is masked above; read-only on top costs nothing.
    let argv = spec
        .init
        .iter()
        .map(|a| cstr(a, "init argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = environment(spec, uuid);
    // Only init's: processes `vsctl exec` starts do not get it.
    if !spec.env.contains_key("NOTIFY_SOCKET") {
        env.push((
            "NOTIFY_SOCKET".to_string(),
            super::notify::GUEST_PATH.to_string(),
        ));
    }
    let env = env
        .into_iter()
        .map(|(k, v)| {
            if k.contains('=') || k.is_empty() {
                return Err(RuntimeError::Invalid(format!(
                    "bad environment variable name {k:?}"
                )));
            }
            cstr(&format!("{k}={v}"), "environment")
        })
        .collect::<Result<Vec<_>, _>>()?;
    use nix::sys::resource::Resource;
    Ok(ChildPlan {
        new_root: spec.run_dir.join("root"),
        rootfs: spec.rootfs.clone(),
        steps,
        hostname: spec.hostname.clone(),
        caps,
        last_cap: crate::caps::last_cap(),
        seccomp: spec
            .seccomp
            .then(|| crate::seccomp::build(crate::seccomp::GuestKind::of(spec.userns.is_some()))),
        argv,
        env,
        rlimits: vec![
            (Resource::RLIMIT_NOFILE, 1024, 524_288),
            (Resource::RLIMIT_CORE, 0, u64::MAX),
        ],
        userns: unprivileged,
        idmap_sources: if spec.idmap_rootfs {
            idmap_sources(&spec.rootfs)
        } else {
            Vec::new()
        },
        layers_dir: spec.run_dir.join("layers"),
        idmap_binds: spec
            .mounts
            .iter()
            .filter(|m| m.idmap)
            .map(|m| (m.source.clone(), m.read_only))
            .collect(),
    })
}

/// Files of a cgroup a guest's systemd must write to manage its own
/// subtree (the cgroup v2 delegation set, Documentation/admin-guide/cgroup-v2.rst
/// "Delegation Containment"); everything else at the guest's cgroup root
/// sets or reports its limits.
pub const CGROUP_DELEGATED_FILES: &[&str] =
    &["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

/// How the guest sees cgroups at /sys/fs/cgroup.
///
/// Whenever the host has a cgroup2 hierarchy (pure v2 at /sys/fs/cgroup, or
/// hybrid with it at /sys/fs/cgroup/unified) the guest gets exactly that:
/// cgroup2 mounted at its /sys/fs/cgroup, rooted at its own cgroup by its
/// cgroup namespace, writable, so its systemd runs in unified mode and
/// tracks its services in sub-cgroups (systemd 256+ supports nothing
/// else; on a hybrid host the controllers stay on v1, where the runtime
/// enforces the limits outside the guest's view). Unprivileged guests own
/// their cgroup directory and its delegation files (chowned before boot);
/// privileged guests are host root, so every other file at their cgroup
/// root is bound read-only: they can build a subtree, never lift a limit.
///
/// Hosts without cgroup2 (pure v1): a tmpfs with every v1 hierarchy by
/// name, read-only for privileged guests (systemd in the guest then runs in
/// legacy mode only if it still supports it).
pub fn cgroup_steps(hier: &[crate::cgroup::HostHierarchy], unprivileged: bool) -> Vec<Step> {
    let r = PathBuf::from;
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut steps = Vec::new();
    if hier.iter().any(|h| h.fstype == "cgroup2") {
        steps.push(Step::Mount {
            source: "cgroup2".into(),
            target: r("sys/fs/cgroup"),
            fstype: "cgroup2".into(),
            flags: nosuid_nodev_noexec,
            data: None,
        });
        if !unprivileged {
            steps.push(Step::ReadOnlyFiles {
                target: r("sys/fs/cgroup"),
                keep: CGROUP_DELEGATED_FILES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            });
        }
    } else if !hier.is_empty() {
        let ro = if unprivileged {
            MsFlags::empty()
        } else {
            MsFlags::MS_RDONLY
        };
        steps.push(Step::Mount {
            source: "cgroup".into(),
            target: r("sys/fs/cgroup"),
            fstype: "tmpfs".into(),
            flags: nosuid_nodev_noexec,
            data: Some("mode=755,size=64k".into()),
        });
        for h in hier.iter().filter(|h| !h.dir.is_empty()) {
            steps.push(Step::Mount {
                source: "cgroup".into(),
                target: r("sys/fs/cgroup").join(&h.dir),
                fstype: h.fstype.clone(),
                flags: nosuid_nodev_noexec | ro,
                data: (!h.options.is_empty()).then(|| h.options.clone()),
            });
        }
        steps.push(Step::ReadOnly {
            target: r("sys/fs/cgroup"),
        });
    }
    steps
}

/// The host's os-release text (os-release(5): /etc/os-release, else
/// /usr/lib/os-release), capped at 64 KiB.
fn host_os_release() -> Option<String> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .filter(|t| !t.is_empty() && t.len() <= 64 << 10 && !t.contains('\0'))
}

fn idmap_sources(rootfs: &RootfsMount) -> Vec<PathBuf> {
    match rootfs {
        // Mounted and idmapped by the supervisor itself (see RootfsMount::Image).
        RootfsMount::Image { .. } => Vec::new(),
        RootfsMount::Tree { path } => vec![path.clone()],
        RootfsMount::Overlay { lower, upper, .. } => {
            let mut v = lower.clone();
            v.push(upper.parent().map(PathBuf::from).unwrap_or_default());
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{BindMount, IdRange};

    fn spec() -> RuntimeSpec {
        RuntimeSpec::new(
            "g1",
            RootfsMount::Tree {
                path: "/srv/g1".into(),
            },
            "/run/vsctl/g1".into(),
            "/var/log/vsctl/g1.log".into(),
        )
    }

    #[test]
    fn steps_mount_proc_before_masking_and_read_only() {
        let p = build(&spec(), "u").unwrap();
        let pos = |pred: &dyn Fn(&Step) -> bool| p.steps.iter().position(pred).unwrap();
        let proc_ = pos(&|s| matches!(s, Step::Mount { fstype, .. } if fstype == "proc"));
        let kcore =
            pos(&|s| matches!(s, Step::Mask { target } if target == &PathBuf::from("proc/kcore")));
        let net = pos(&|s| matches!(s, Step::KeepWritable { .. }));
        let sys_ro = pos(
            &|s| matches!(s, Step::ReadOnly { target } if target == &PathBuf::from("proc/sys")),
        );
        assert!(proc_ < kcore && kcore < sys_ro && net < sys_ro);
        assert!(p.steps.iter().any(|s| matches!(s, Step::Console { .. })));
        // Only harmless device nodes: no block devices, no /dev/mem.
        let devs: Vec<_> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::BindHost { source, .. } if source.starts_with("/dev") => Some(source.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(devs.len(), DEVICES.len());
        assert!(p.seccomp.is_some());
        assert!(!p.userns);
    }

    #[test]
    fn environment_is_reset_and_spec_wins() {
        let mut s = spec();
        s.env.insert("TERM".into(), "vt100".into());
        s.env.insert("FOO".into(), "bar".into());
        let env = environment(&s, "abc");
        assert!(env.contains(&("TERM".into(), "vt100".into())));
        assert!(env.contains(&("container".into(), "vsctl".into())));
        assert!(env.contains(&("container_uuid".into(), "abc".into())));
        assert!(!env.iter().any(|(k, _)| k == "USER" || k == "SSH_AUTH_SOCK"));
    }

    #[test]
    fn init_gets_the_notify_socket() {
        let p = build(&spec(), "u").unwrap();
        assert!(
            p.env
                .contains(&CString::new("NOTIFY_SOCKET=/run/host/notify").unwrap())
        );
        let run = p
            .steps
            .iter()
            .position(
                |s| matches!(s, Step::Mount { target, .. } if target == &PathBuf::from("run")),
            )
            .unwrap();
        let bind = p
            .steps
            .iter()
            .position(|s| {
                matches!(s, Step::BindHost { source, target, dir: false, .. }
                    if source == &PathBuf::from("/run/vsctl/g1/notify")
                        && target == &PathBuf::from("run/host/notify"))
            })
            .unwrap();
        assert!(run < bind, "bound after /run is mounted");
        // Not for processes `vsctl exec` starts (they use `environment`).
        assert!(
            !environment(&spec(), "u")
                .iter()
                .any(|(k, _)| k == "NOTIFY_SOCKET")
        );
        // The guest file's own value wins.
        let mut s = spec();
        s.env.insert("NOTIFY_SOCKET".into(), "/x".into());
        let env = build(&s, "u").unwrap().env;
        assert_eq!(
            env.iter()
                .filter(|e| e.to_bytes().starts_with(b"NOTIFY_SOCKET="))
                .count(),
            1
        );
    }

    #[test]
    fn bind_targets_must_stay_inside_the_guest() {
        let mut s = spec();
        s.mounts.push(BindMount {
            source: "/tmp".into(),
            target: "/../etc".into(),
            read_only: true,
            idmap: false,
        });
        assert!(build(&s, "u").is_err());
        assert_eq!(
            guest_rel(std::path::Path::new("/var/www")).unwrap(),
            PathBuf::from("var/www")
        );
        assert!(guest_rel(std::path::Path::new("/")).is_err());
    }

    #[test]
    fn idmapped_binds_are_handed_over_after_the_rootfs_in_order() {
        let mut s = spec();
        for (target, idmap, read_only) in
            [("/a", true, false), ("/b", false, true), ("/c", true, true)]
        {
            s.mounts.push(BindMount {
                source: "/tmp".into(),
                target: target.into(),
                read_only,
                idmap,
            });
        }
        let p = build(&s, "u").unwrap();
        assert_eq!(
            p.idmap_binds,
            vec![
                (PathBuf::from("/tmp"), false),
                (PathBuf::from("/tmp"), true)
            ]
        );
        assert_eq!(p.received_fds(), p.rootfs_fds() + 2);
        let attach: Vec<(usize, PathBuf)> = p
            .steps
            .iter()
            .filter_map(|st| match st {
                Step::AttachIdmapped { index, target, .. } => Some((*index, target.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            attach,
            vec![(0, PathBuf::from("a")), (1, PathBuf::from("c"))]
        );
        assert!(
            p.steps
                .iter()
                .any(|st| matches!(st, Step::BindHost { target, read_only: true, .. } if target == &PathBuf::from("b")))
        );
    }

    fn hier(dir: &str, fstype: &str, options: &str) -> crate::cgroup::HostHierarchy {
        crate::cgroup::HostHierarchy {
            dir: dir.into(),
            fstype: fstype.into(),
            options: options.into(),
        }
    }

    #[test]
    fn guests_get_cgroup2_whenever_the_host_has_it() {
        let hybrid = [
            hier("memory", "cgroup", "memory"),
            hier("systemd", "cgroup", "name=systemd"),
            hier("unified", "cgroup2", ""),
        ];
        let pure = [hier("", "cgroup2", "")];
        for h in [&hybrid[..], &pure[..]] {
            // Unprivileged: one writable cgroup2 mount (delegated cgroup).
            let s = cgroup_steps(h, true);
            assert_eq!(s.len(), 1);
            assert!(matches!(&s[0], Step::Mount { fstype, target, flags, .. }
                if fstype == "cgroup2" && target == &PathBuf::from("sys/fs/cgroup")
                    && !flags.contains(MsFlags::MS_RDONLY)));
            // Privileged: the same, then every file but the delegation set
            // of its cgroup root read-only.
            let s = cgroup_steps(h, false);
            assert_eq!(s.len(), 2);
            match &s[1] {
                Step::ReadOnlyFiles { target, keep } => {
                    assert_eq!(target, &PathBuf::from("sys/fs/cgroup"));
                    assert_eq!(keep, &CGROUP_DELEGATED_FILES.to_vec());
                }
                other => panic!("{other:?}"),
            }
        }
        // Pure v1: the old tmpfs of named hierarchies, read-only when privileged.
        let v1 = [
            hier("memory", "cgroup", "memory"),
            hier("pids", "cgroup", "pids"),
        ];
        let s = cgroup_steps(&v1, false);
        assert!(matches!(&s[0], Step::Mount { fstype, .. } if fstype == "tmpfs"));
        assert!(
            s[1..3]
                .iter()
                .all(|st| matches!(st, Step::Mount { flags, .. }
            if flags.contains(MsFlags::MS_RDONLY)))
        );
        assert!(matches!(s.last(), Some(Step::ReadOnly { .. })));
        assert!(cgroup_steps(&[], true).is_empty());
    }

    #[test]
    fn container_interface_files_and_run_lock() {
        let mut s = spec();
        let has = |p: &ChildPlan, path: &str| {
            p.steps.iter().any(|st| match st {
                Step::WriteFile { target, .. } | Step::Mount { target, .. } => {
                    target == &PathBuf::from(path)
                }
                _ => false,
            })
        };
        let dropin = "run/systemd/system/mount.d/50-vsctl-no-cap-sys-admin.conf";
        // Privileged (no CAP_SYS_ADMIN): mount units are skipped.
        let p = build(&s, "u").unwrap();
        for f in [
            "run/host/container-manager",
            "run/systemd/container",
            "run/lock",
            dropin,
        ] {
            assert!(has(&p, f), "{f}");
        }
        if std::path::Path::new("/etc/os-release").exists() {
            assert!(has(&p, "run/host/os-release"));
        }
        // /run/lock is mounted after /run, on the tmpfs the runtime made.
        let pos = |path: &str| {
            p.steps
                .iter()
                .position(
                    |st| matches!(st, Step::Mount { target, .. } if target == &PathBuf::from(path)),
                )
                .unwrap()
        };
        assert!(pos("run") < pos("run/lock"));
        // With CAP_SYS_ADMIN (unprivileged, or added back) systemd mounts itself.
        s.caps_add = vec!["SYS_ADMIN".into()];
        assert!(!has(&build(&s, "u").unwrap(), dropin));
        s.caps_add.clear();
        s.userns = Some(IdRange {
            host_base: 100_000,
            count: 65_536,
        });
        assert!(!has(&build(&s, "u").unwrap(), dropin));
    }

    #[test]
    fn unprivileged_plan_keeps_sys_admin() {
        let mut s = spec();
        s.userns = Some(IdRange {
            host_base: 100_000,
            count: 65_536,
        });
        let p = build(&s, "u").unwrap();
        assert!(p.userns);
        assert_ne!(p.caps & crate::caps::parse("SYS_ADMIN").unwrap(), 0);
        let p = build(&spec(), "u").unwrap();
        assert_eq!(p.caps & crate::caps::parse("SYS_ADMIN").unwrap(), 0);
    }
}
