//! Host settings: `vsctl.toml`. Where things live and the host-wide defaults
//! that guest files do not say themselves. A missing file means all defaults.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::diag::{ConfigDiag, from_toml_error};
use super::guest::CloneStrategy;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSettings {
    pub paths: PathSettings,
    pub defaults: Defaults,
    pub network: HostNetwork,
    pub userns: UsernsSettings,
    pub templates: TemplateSettings,
    pub runtime: RuntimeSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// The cgroup subtree every guest's cgroup lives under.
    pub cgroup_base: String,
}

impl Default for RuntimeSettings {
    fn default() -> RuntimeSettings {
        RuntimeSettings {
            cgroup_base: String::from("vsctl"),
        }
    }
}

/// Overrides of the default layout. Relative to `--root` when one is given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathSettings {
    pub guests_dir: Option<PathBuf>,
    pub templates_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPolicy {
    /// A guest asks for a quota the filesystem cannot enforce: apply fails for it.
    #[default]
    Error,
    /// ... apply warns and goes on without the quota.
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Used by guests whose file has no `[rootfs] strategy`.
    pub clone_strategy: CloneStrategy,
    pub quota_unsupported: QuotaPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VethAttachment {
    /// Host ends join a bridge that carries the gateway address.
    #[default]
    Bridge,
    /// Host ends stay unbridged; a host route per guest address.
    Routed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostNetwork {
    pub bridge: String,
    pub veth: VethAttachment,
    /// Guests may use `mode = "host"` only when this is true.
    pub allow_host_mode: bool,
}

impl Default for HostNetwork {
    fn default() -> HostNetwork {
        HostNetwork {
            bridge: String::from("vsbr0"),
            veth: VethAttachment::Bridge,
            allow_host_mode: false,
        }
    }
}

/// Host uid/gid ranges handed to unprivileged guests, 65,536 ids each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsernsSettings {
    pub first_id: u32,
    /// How many guests' ranges fit (each 65,536 ids).
    pub ranges: u32,
}

impl Default for UsernsSettings {
    fn default() -> UsernsSettings {
        // Far above the ids of host users and of /etc/subuid's usual 100000 start.
        UsernsSettings {
            first_id: 1 << 24,
            ranges: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateSettings {
    /// Debian/Ubuntu mirror for bootstrap; default: the host's own apt sources.
    pub mirror: Option<String>,
}

impl HostSettings {
    /// Read `vsctl.toml`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<HostSettings, Vec<ConfigDiag>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(HostSettings::default());
            }
            Err(e) => {
                let empty = Arc::new(String::new());
                return Err(vec![ConfigDiag::new(
                    "vsctl::config::unreadable",
                    path,
                    &empty,
                    None,
                    format!("cannot read host settings: {e}"),
                )]);
            }
        };
        let text = Arc::new(text);
        let mut settings: HostSettings =
            toml::from_str(&text).map_err(|e| vec![from_toml_error(path, &text, &e)])?;
        if settings.userns.ranges == 0
            || u64::from(settings.userns.first_id) + u64::from(settings.userns.ranges) * 65_536
                > u64::from(u32::MAX)
        {
            return Err(vec![ConfigDiag::new(
                "vsctl::config::bad_value",
                path,
                &text,
                None,
                "[userns] first_id + ranges * 65536 must fit in 32 bits and ranges must be at least 1",
            )]);
        }
        let base = &settings.runtime.cgroup_base;
        if base.is_empty()
            || base.starts_with('.')
            || !base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(vec![ConfigDiag::new(
                "vsctl::config::bad_value",
                path,
                &text,
                None,
                "[runtime] cgroup_base must be one cgroup directory name (letters, digits, `-`, `_`, `.`)",
            )]);
        }
        if settings.network.bridge.is_empty() || settings.network.bridge.len() > 15 {
            settings.network.bridge = HostNetwork::default().bridge;
            return Err(vec![ConfigDiag::new(
                "vsctl::config::bad_value",
                path,
                &text,
                None,
                "[network] bridge must be an interface name of 1 to 15 characters",
            )]);
        }
        Ok(settings)
    }
}
