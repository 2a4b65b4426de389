//! Guest files: `guests.d/NAME.toml`, one per guest, the guest's name being the
//! file stem.
//!
//! Parsing happens in two stages, as ripgrep does with its flags: serde reads
//! the file into `Raw*` types that keep the byte span of every value
//! (`toml::Spanned`), then [`validate_guest`] turns those into a [`GuestSpec`]
//! of plain, normalised values, reporting every semantic problem with a span.
//! Checks across files (duplicate addresses and hostnames) run afterwards in
//! [`check_across_guests`]. Nothing here touches the host except reading the
//! files and checking that bind-mount sources exist.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::diag::{ConfigDiag, from_toml_error};
use super::host::HostSettings;
use super::units::{IpCidr, Size, Span};

/// Whether a guest should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    Stopped,
}

pub use crate::rootfs::CloneStrategy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    Veth,
    Ipvlan,
    Host,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// The built-in filter (like Docker's default profile).
    #[default]
    Default,
    /// No filter at all: only when written explicitly, and shown by `vsctl status`.
    Unconfined,
}

// ---------------------------------------------------------------------------
// Raw file shape (spans kept)
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuest {
    template: Spanned<String>,
    hostname: Option<Spanned<String>>,
    state: Option<DesiredState>,
    protect: Option<bool>,
    network: Option<RawNetwork>,
    limits: Option<RawLimits>,
    disk: Option<RawDisk>,
    rootfs: Option<RawRootfs>,
    init: Option<RawInit>,
    security: Option<RawSecurity>,
    mounts: Option<Vec<RawMount>>,
    env: Option<BTreeMap<Spanned<String>, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    mode: Option<Spanned<NetworkMode>>,
    addresses: Option<Vec<Spanned<String>>>,
    gateway: Option<Spanned<IpAddr>>,
    gateway6: Option<Spanned<IpAddr>>,
    dns: Option<Vec<IpAddr>>,
    parent: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Spanned<Size>>,
    memory_swap: Option<Spanned<Size>>,
    cpus: Option<Spanned<f64>>,
    cpu_weight: Option<Spanned<u64>>,
    pids: Option<Spanned<u64>>,
    io: Option<RawIo>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIo {
    read_bps: Option<Size>,
    write_bps: Option<Size>,
    read_iops: Option<Spanned<u64>>,
    write_iops: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    quota: Option<Size>,
    inodes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRootfs {
    strategy: Option<CloneStrategy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInit {
    command: Option<Spanned<Vec<String>>>,
    stop_signal: Option<Spanned<String>>,
    stop_timeout: Option<Span>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    userns: Option<bool>,
    cap_add: Option<Vec<Spanned<String>>>,
    cap_drop: Option<Vec<Spanned<String>>>,
    seccomp: Option<SeccompMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    source: Spanned<String>,
    target: Spanned<String>,
    read_only: Option<bool>,
    idmap: Option<Spanned<bool>>,
}

// ---------------------------------------------------------------------------
// Validated spec (what the planner diffs and the state store records)
// ---------------------------------------------------------------------------

/// A guest as desired: every value validated and normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    pub name: String,
    pub template: String,
    pub hostname: String,
    pub state: DesiredState,
    pub protect: bool,
    pub network: NetworkSpec,
    pub limits: Limits,
    pub disk: DiskSpec,
    pub rootfs: RootfsSpec,
    pub init: InitSpec,
    pub security: SecuritySpec,
    pub mounts: Vec<MountSpec>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetworkSpec {
    pub mode: NetworkMode,
    pub addresses: Vec<IpCidr>,
    pub gateway: Option<IpAddr>,
    pub gateway6: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Limits {
    pub memory: Option<Size>,
    /// Swap allowed on top of `memory` (cgroup v2 `memory.swap.max` semantics).
    pub memory_swap: Option<Size>,
    /// CPU bandwidth in cores (CFS quota / period).
    pub cpus: Option<f64>,
    /// Relative CPU weight, 1..=10000 (cgroup v2 `cpu.weight`; v1 shares are derived).
    pub cpu_weight: Option<u64>,
    pub pids: Option<u64>,
    pub io: IoLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IoLimits {
    pub read_bps: Option<Size>,
    pub write_bps: Option<Size>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiskSpec {
    pub quota: Option<Size>,
    pub inodes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RootfsSpec {
    pub strategy: CloneStrategy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSpec {
    pub command: Vec<String>,
    /// `None`: detected from the guest's init (systemd, sysvinit, busybox).
    pub stop_signal: Option<String>,
    pub stop_timeout: Span,
}

impl Default for InitSpec {
    fn default() -> InitSpec {
        InitSpec {
            command: vec![String::from("/sbin/init")],
            stop_signal: None,
            stop_timeout: Span(std::time::Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySpec {
    pub userns: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub seccomp: SeccompMode,
}

impl Default for SecuritySpec {
    fn default() -> SecuritySpec {
        SecuritySpec {
            userns: true,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            seccomp: SeccompMode::Default,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    /// Mount the source idmapped with the guest's user namespace: files the
    /// host owns as ids 0..65535 appear to the guest as its own 0..65535.
    #[serde(default)]
    pub idmap: bool,
}

/// A parsed guest file: the spec plus what cross-file checks need to point
/// back into the file.
#[derive(Debug, Clone)]
pub struct ParsedGuest {
    pub spec: GuestSpec,
    pub file: PathBuf,
    pub text: Arc<String>,
    template_span: Range<usize>,
    hostname_span: Option<Range<usize>>,
    /// Each address as written, with its span (file order, before sorting).
    address_spans: Vec<(IpAddr, Range<usize>)>,
}

impl ParsedGuest {
    fn diag(
        &self,
        code: &'static str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigDiag {
        ConfigDiag::new(code, &self.file, &self.text, span, message)
    }
}

/// Linux capability names accepted in `cap_add` / `cap_drop` (without `CAP_`):
/// the runtime's own table, so validation and enforcement never disagree.
pub use crate::caps::NAMES as CAPABILITY_NAMES;

/// Signal names accepted in `[init] stop_signal`.
pub const STOP_SIGNALS: &[&str] = &[
    "SIGTERM",
    "SIGINT",
    "SIGQUIT",
    "SIGHUP",
    "SIGUSR1",
    "SIGUSR2",
    "SIGPWR",
    "SIGRTMIN+3",
    "SIGKILL",
];

/// Whether `name` is a valid guest name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn valid_guest_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether `name` is a valid hostname for a UTS namespace (RFC 1123 labels,
/// at most 64 bytes because that is the kernel's limit for `sethostname`).
pub fn valid_hostname(name: &str) -> bool {
    name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn canonical_capability(name: &str) -> String {
    name.trim()
        .to_ascii_uppercase()
        .trim_start_matches("CAP_")
        .to_string()
}

/// Read, parse and validate one guest file. `known_templates` decides which
/// template names exist; `host` supplies host-level policy (host networking).
pub fn parse_guest_file(
    path: &Path,
    text: String,
    known_templates: &BTreeSet<String>,
    host: &HostSettings,
) -> Result<ParsedGuest, Vec<ConfigDiag>> {
    let text = Arc::new(text);
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let mut diags = Vec::new();
    if !valid_guest_name(&stem) {
        diags.push(
            ConfigDiag::new(
                "vsctl::config::bad_name",
                path,
                &text,
                None,
                format!("invalid guest name `{stem}` (from the file name)"),
            )
            .label("guest names come from the file name")
            .help("rename the file: names are 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit"),
        );
    }
    let raw: RawGuest = match toml::from_str(&text) {
        Ok(raw) => raw,
        Err(error) => {
            diags.push(from_toml_error(path, &text, &error));
            return Err(diags);
        }
    };
    match validate_guest(stem, path, &text, raw, known_templates, host) {
        Ok(parsed) if diags.is_empty() => Ok(parsed),
        Ok(_) => Err(diags),
        Err(mut more) => {
            diags.append(&mut more);
            Err(diags)
        }
    }
}

fn validate_guest(
    name: String,
    path: &Path,
    text: &Arc<String>,
    raw: RawGuest,
    known_templates: &BTreeSet<String>,
    host: &HostSettings,
) -> Result<ParsedGuest, Vec<ConfigDiag>> {
    let mut diags = Vec::new();
    let mut err = |code: &'static str,
                   span: Range<usize>,
                   message: String,
                   label: &str,
                   help: Option<String>| {
        let mut d = ConfigDiag::new(code, path, text, Some(span), message).label(label);
        d.help = help;
        diags.push(d);
    };

    // template
    let template_span = raw.template.span();
    let template = raw.template.into_inner();
    if !known_templates.contains(&template) {
        let close = super::diag::suggest(&template, known_templates.iter().map(String::as_str));
        err(
            "vsctl::config::unknown_template",
            template_span.clone(),
            format!("unknown template `{template}`"),
            "no template of this name",
            Some(match close {
                Some(c) => format!(
                    "did you mean `{c}`? known templates: {}",
                    join(known_templates)
                ),
                None => format!("known templates: {}", join(known_templates)),
            }),
        );
    }

    // hostname
    let (hostname, hostname_span) = match raw.hostname {
        Some(h) => {
            let span = h.span();
            let value = h.into_inner();
            if !valid_hostname(&value) {
                err(
                    "vsctl::config::bad_hostname",
                    span.clone(),
                    format!("invalid hostname `{value}`"),
                    "not a valid hostname",
                    Some(String::from(
                        "labels of a-z, 0-9 and `-` separated by dots, at most 64 characters",
                    )),
                );
            }
            (value.to_ascii_lowercase(), Some(span))
        }
        None => (name.clone(), None),
    };

    // network
    let mut network = NetworkSpec::default();
    let mut address_spans = Vec::new();
    if let Some(raw_net) = raw.network {
        if let Some(mode) = raw_net.mode {
            network.mode = *mode.get_ref();
            if network.mode == NetworkMode::Host && !host.network.allow_host_mode {
                err(
                    "vsctl::config::host_network_not_allowed",
                    mode.span(),
                    String::from("host networking is not allowed on this host"),
                    "shares the host's network namespace",
                    Some(String::from(
                        "a guest in host mode can use every host address; set `allow_host_mode = true` under [network] in vsctl.toml to permit it",
                    )),
                );
            }
            if network.mode == NetworkMode::Ipvlan && raw_net.parent.is_none() {
                err(
                    "vsctl::config::missing_parent",
                    mode.span(),
                    String::from("ipvlan mode needs a parent interface"),
                    "ipvlan without `parent`",
                    Some(String::from(
                        "add `parent = \"eth0\"` (the host interface the guest's addresses live on)",
                    )),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for address in raw_net.addresses.unwrap_or_default() {
            let span = address.span();
            let cidr: IpCidr = match address.get_ref().parse() {
                Ok(cidr) => cidr,
                Err(message) => {
                    err(
                        "vsctl::config::bad_value",
                        span,
                        message,
                        "invalid value",
                        Some(String::from(
                            "addresses are written as ADDRESS/PREFIX, e.g. \"10.0.0.2/24\" or \"fd00::2/64\"",
                        )),
                    );
                    continue;
                }
            };
            if !seen.insert(cidr.addr) {
                err(
                    "vsctl::config::duplicate_address",
                    span.clone(),
                    format!("address {} is listed twice", cidr.addr),
                    "listed again here",
                    None,
                );
            }
            network.addresses.push(cidr);
            address_spans.push((cidr.addr, span));
        }
        for (gateway, v4) in [(raw_net.gateway, true), (raw_net.gateway6, false)] {
            let Some(gateway) = gateway else { continue };
            let span = gateway.span();
            let ip = gateway.into_inner();
            let key = if v4 { "gateway" } else { "gateway6" };
            if ip.is_ipv4() != v4 {
                err(
                    "vsctl::config::bad_gateway",
                    span.clone(),
                    format!(
                        "`{key}` must be an IPv{} address, found {ip}",
                        if v4 { 4 } else { 6 }
                    ),
                    "wrong address family",
                    Some(String::from(
                        "use `gateway` for IPv4 and `gateway6` for IPv6",
                    )),
                );
            } else if !network.addresses.iter().any(|a| a.contains(ip)) {
                err(
                    "vsctl::config::gateway_outside_subnet",
                    span.clone(),
                    format!("gateway {ip} is outside the guest's subnets"),
                    "not in any subnet of `addresses`",
                    Some(format!(
                        "the guest can only reach a gateway on its own subnet; addresses: {}",
                        network
                            .addresses
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
            }
            if v4 {
                network.gateway = Some(ip);
            } else {
                network.gateway6 = Some(ip);
            }
        }
        network.dns = raw_net.dns.unwrap_or_default();
        network.parent = raw_net.parent.map(|p| p.into_inner());
    }
    network.addresses.sort();

    // limits
    let mut limits = Limits::default();
    if let Some(raw_limits) = raw.limits {
        limits.memory = raw_limits.memory.as_ref().map(|m| *m.get_ref());
        if let Some(memory) = &raw_limits.memory
            && memory.get_ref().bytes() < 4 << 20
        {
            err(
                "vsctl::config::bad_limit",
                memory.span(),
                format!("memory limit {} is too small", memory.get_ref()),
                "below 4MiB",
                Some(String::from(
                    "a guest needs at least a few MiB to boot its init",
                )),
            );
        }
        if let Some(swap) = &raw_limits.memory_swap
            && limits.memory.is_none()
        {
            err(
                "vsctl::config::bad_limit",
                swap.span(),
                String::from("memory_swap needs a memory limit"),
                "swap on top of what?",
                Some(String::from(
                    "memory_swap is the swap allowed on top of `memory`; set `memory` too",
                )),
            );
        }
        limits.memory_swap = raw_limits.memory_swap.map(|s| s.into_inner());
        if let Some(cpus) = raw_limits.cpus {
            let value = *cpus.get_ref();
            if !(value > 0.0 && value <= 1024.0) || (value * 100_000.0) < 1000.0 {
                err(
                    "vsctl::config::bad_limit",
                    cpus.span(),
                    format!("cpus = {value} is out of range"),
                    "must be more than 0.01 and at most 1024",
                    Some(String::from(
                        "cpus is a CPU bandwidth in cores, e.g. 0.5 or 2",
                    )),
                );
            }
            limits.cpus = Some(value);
        }
        if let Some(weight) = raw_limits.cpu_weight {
            let value = *weight.get_ref();
            if !(1..=10_000).contains(&value) {
                err(
                    "vsctl::config::bad_limit",
                    weight.span(),
                    format!("cpu_weight = {value} is out of range"),
                    "must be 1..=10000",
                    Some(String::from("100 is the default weight of every cgroup")),
                );
            }
            limits.cpu_weight = Some(value);
        }
        if let Some(pids) = raw_limits.pids {
            if *pids.get_ref() < 2 {
                err(
                    "vsctl::config::bad_limit",
                    pids.span(),
                    String::from("pids limit must be at least 2"),
                    "too small to run an init and a shell",
                    None,
                );
            }
            limits.pids = Some(*pids.get_ref());
        }
        if let Some(io) = raw_limits.io {
            for iops in [&io.read_iops, &io.write_iops].into_iter().flatten() {
                if *iops.get_ref() == 0 {
                    err(
                        "vsctl::config::bad_limit",
                        iops.span(),
                        String::from("an iops limit of 0 would stop all I/O"),
                        "must be at least 1",
                        Some(String::from("leave the key out for no limit")),
                    );
                }
            }
            limits.io = IoLimits {
                read_bps: io.read_bps,
                write_bps: io.write_bps,
                read_iops: io.read_iops.map(|v| v.into_inner()),
                write_iops: io.write_iops.map(|v| v.into_inner()),
            };
        }
    }

    // disk
    let mut disk = DiskSpec::default();
    if let Some(raw_disk) = raw.disk {
        disk.quota = raw_disk.quota;
        if let Some(inodes) = raw_disk.inodes {
            if *inodes.get_ref() == 0 {
                err(
                    "vsctl::config::bad_limit",
                    inodes.span(),
                    String::from("an inode limit of 0 leaves no room for the root filesystem"),
                    "must be at least 1",
                    None,
                );
            }
            disk.inodes = Some(inodes.into_inner());
        }
    }

    let rootfs = RootfsSpec {
        strategy: raw
            .rootfs
            .and_then(|r| r.strategy)
            .unwrap_or(host.defaults.clone_strategy),
    };

    // init
    let mut init = InitSpec::default();
    if let Some(raw_init) = raw.init {
        if let Some(command) = raw_init.command {
            let span = command.span();
            let argv = command.into_inner();
            match argv.first() {
                None => err(
                    "vsctl::config::bad_init",
                    span,
                    String::from("init command is empty"),
                    "needs at least the program",
                    Some(String::from("e.g. command = [\"/sbin/init\"]")),
                ),
                Some(program) if !program.starts_with('/') => err(
                    "vsctl::config::bad_init",
                    span,
                    format!("init program `{program}` is not an absolute path"),
                    "must start with /",
                    Some(String::from(
                        "init runs before any PATH exists; give the full path inside the guest",
                    )),
                ),
                Some(_) => init.command = argv,
            }
        }
        if let Some(signal) = raw_init.stop_signal {
            let span = signal.span();
            let value = signal.into_inner().to_ascii_uppercase();
            let value = if value.starts_with("SIG") {
                value
            } else {
                format!("SIG{value}")
            };
            if !STOP_SIGNALS.contains(&value.as_str()) {
                err(
                    "vsctl::config::bad_signal",
                    span,
                    format!("unknown stop signal `{value}`"),
                    "not a supported stop signal",
                    Some(format!("one of: {}", STOP_SIGNALS.join(", "))),
                );
            }
            init.stop_signal = Some(value);
        }
        if let Some(timeout) = raw_init.stop_timeout {
            init.stop_timeout = timeout;
        }
    }

    // security
    let mut security = SecuritySpec::default();
    if let Some(raw_security) = raw.security {
        security.userns = raw_security.userns.unwrap_or(true);
        security.seccomp = raw_security.seccomp.unwrap_or_default();
        for (list, out) in [
            (raw_security.cap_add, &mut security.cap_add),
            (raw_security.cap_drop, &mut security.cap_drop),
        ] {
            for cap in list.unwrap_or_default() {
                let canonical = canonical_capability(cap.get_ref());
                if !CAPABILITY_NAMES.contains(&canonical.as_str()) {
                    let close = super::diag::suggest(&canonical, CAPABILITY_NAMES.iter().copied());
                    err(
                        "vsctl::config::unknown_capability",
                        cap.span(),
                        format!("unknown capability `{}`", cap.get_ref()),
                        "not a Linux capability",
                        Some(match close {
                            Some(c) => format!("did you mean `CAP_{c}`?"),
                            None => String::from("see capabilities(7) for the names"),
                        }),
                    );
                } else if !out.contains(&canonical) {
                    out.push(canonical);
                }
            }
        }
        security.cap_add.sort();
        security.cap_drop.sort();
    }

    // mounts
    let mut mounts = Vec::new();
    let mut targets = BTreeSet::new();
    for mount in raw.mounts.unwrap_or_default() {
        let source_span = mount.source.span();
        let target_span = mount.target.span();
        let source = PathBuf::from(mount.source.into_inner());
        let target = PathBuf::from(mount.target.into_inner());
        if !source.is_absolute() {
            err(
                "vsctl::config::bad_mount",
                source_span.clone(),
                format!(
                    "mount source `{}` is not an absolute path",
                    source.display()
                ),
                "must be an absolute host path",
                None,
            );
        } else if !source.exists() {
            err(
                "vsctl::config::mount_source_missing",
                source_span.clone(),
                format!("mount source `{}` does not exist", source.display()),
                "no such file or directory on this host",
                Some(String::from("create it first, or fix the path")),
            );
        }
        if !target.is_absolute()
            || target
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            err(
                "vsctl::config::bad_mount",
                target_span.clone(),
                format!(
                    "mount target `{}` must be an absolute path inside the guest without `..`",
                    target.display()
                ),
                "not an absolute guest path",
                Some(String::from("e.g. target = \"/var/www\"")),
            );
        } else if target == Path::new("/") {
            err(
                "vsctl::config::bad_mount",
                target_span.clone(),
                String::from("a bind mount cannot replace the guest's root"),
                "target is /",
                None,
            );
        } else if !targets.insert(target.clone()) {
            err(
                "vsctl::config::bad_mount",
                target_span.clone(),
                format!("two mounts target `{}`", target.display()),
                "second mount on the same target",
                None,
            );
        }
        let idmap = match mount.idmap {
            Some(flag) if *flag.get_ref() && !security.userns => {
                err(
                    "vsctl::config::bad_mount",
                    flag.span(),
                    String::from("`idmap = true` needs the guest's own user namespace"),
                    "this guest has `[security] userns = false`",
                    Some(String::from(
                        "a privileged guest uses host ids as they are: drop `idmap`",
                    )),
                );
                false
            }
            Some(flag) => *flag.get_ref(),
            None => false,
        };
        mounts.push(MountSpec {
            source,
            target,
            read_only: mount.read_only.unwrap_or(true),
            idmap,
        });
    }

    // env
    let mut env = BTreeMap::new();
    for (key, value) in raw.env.unwrap_or_default() {
        let valid = key
            .get_ref()
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
            && !key.get_ref().is_empty();
        if !valid {
            err(
                "vsctl::config::bad_env",
                key.span(),
                format!("invalid environment variable name `{}`", key.get_ref()),
                "letters, digits and `_`, not starting with a digit",
                None,
            );
        }
        env.insert(key.into_inner(), value);
    }

    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(ParsedGuest {
        spec: GuestSpec {
            name,
            template,
            hostname,
            state: raw.state.unwrap_or_default(),
            protect: raw.protect.unwrap_or(false),
            network,
            limits,
            disk,
            rootfs,
            init,
            security,
            mounts,
            env,
        },
        file: path.to_path_buf(),
        text: Arc::clone(text),
        template_span,
        hostname_span,
        address_spans,
    })
}

fn join(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return String::from("(none)");
    }
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Checks that need all guests at once: an address or a hostname may belong
/// to one guest only. The later file (in name order) gets the error, with a
/// pointer to the first.
pub fn check_across_guests(guests: &[ParsedGuest]) -> Vec<ConfigDiag> {
    let mut diags = Vec::new();
    let mut addresses: BTreeMap<IpAddr, (usize, Range<usize>)> = BTreeMap::new();
    let mut hostnames: BTreeMap<&str, usize> = BTreeMap::new();
    for (g, guest) in guests.iter().enumerate() {
        for (addr, span) in &guest.address_spans {
            match addresses.get(addr) {
                Some((first_guest, first_span)) if *first_guest != g => {
                    let first = &guests[*first_guest];
                    diags.push(
                        guest
                            .diag(
                                "vsctl::config::address_in_use",
                                Some(span.clone()),
                                format!(
                                    "address {addr} is already used by guest `{}`",
                                    first.spec.name
                                ),
                            )
                            .label("used by another guest")
                            .help(format!(
                                "each address belongs to one guest; see {}",
                                first.file.display()
                            ))
                            .related(
                                first
                                    .diag(
                                        "vsctl::config::address_in_use",
                                        Some(first_span.clone()),
                                        format!("first used by `{}` here", first.spec.name),
                                    )
                                    .label("first use"),
                            ),
                    );
                }
                Some(_) => {}
                None => {
                    addresses.insert(*addr, (g, span.clone()));
                }
            }
        }
        if let Some(first) = hostnames.get(guest.spec.hostname.as_str()) {
            let first = &guests[*first];
            let span = guest
                .hostname_span
                .clone()
                .or(Some(guest.template_span.start..guest.template_span.start));
            diags.push(
                guest
                    .diag(
                        "vsctl::config::hostname_in_use",
                        span,
                        format!(
                            "hostname `{}` is already used by guest `{}`",
                            guest.spec.hostname, first.spec.name
                        ),
                    )
                    .label("same hostname as another guest")
                    .help(format!(
                        "give each guest its own hostname; see {}",
                        first.file.display()
                    )),
            );
        } else {
            hostnames.insert(guest.spec.hostname.as_str(), g);
        }
    }
    diags
}
