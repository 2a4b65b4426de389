//! Guest networking: give each guest exactly the addresses its file lists.
//!
//! A guest runs in its own network namespace, created by the runtime when it
//! clones init. This module fills that namespace, over rtnetlink and never
//! by running `ip`: a veth pair whose host end joins the host bridge (or is
//! routed, one host route per guest address), or an ipvlan device on a host
//! interface, with the guest's addresses, default routes and loopback. It
//! also fences the guest in: a tc filter on the path out of every guest only
//! lets through frames whose source addresses (IP, ARP sender, Ethernet
//! source) are the guest's own, so a guest cannot impersonate another guest
//! or the host even with raw sockets. Which guarantee holds in which mode is
//! spelled out in docs/network.md.
//!
//! What this module must never do: touch an interface it did not name
//! itself (host ends are `vs` + a hash of the guest name, see
//! [`interface_names`]), change global host settings (forwarding, firewall),
//! or run any code in a guest's namespace except on a short-lived helper
//! thread that only opens a netlink socket there (see `nl`). Teardown is
//! idempotent: whatever is already gone is fine.

mod filter;
pub use filter::eui64_link_local;
mod nl;
mod ops;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;

use netlink_packet_route::link::IpVlanMode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::guest::{NetworkMode, NetworkSpec};
use crate::config::host::{HostNetwork, VethAttachment};
use crate::config::units::IpCidr;

pub use filter::{Rule, SockFilter, Verdict, compile as compile_filter, rules as antispoof_rules};
use nl::{Nl, NlError};
use ops::{Hook, Route};

/// The name of the guest's interface inside its namespace, in every mode.
pub const GUEST_IF: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("guest {guest}: {op}: {source}")]
    Netlink {
        guest: String,
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guest {guest}: writing {path}: {source}")]
    Sysctl {
        guest: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest {guest}: interface {name} does not exist")]
    NoSuchInterface { guest: String, name: String },
    #[error("guest {guest}: {message}")]
    Invalid { guest: String, message: String },
}

/// What [`setup`] created, for the state record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    /// Host end of the veth pair (veth mode only).
    pub host_if: Option<String>,
    /// The guest's interface inside its namespace (veth, ipvlan).
    pub guest_if: Option<String>,
    /// The guest interface's MAC, `02:..` (veth mode only).
    pub mac: Option<String>,
    /// The bridge did not exist and this call created it.
    pub bridge_created: bool,
}

/// One interface as seen from inside a guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    pub name: String,
    pub addresses: Vec<IpCidr>,
}

fn digest(guest: &str) -> [u8; 32] {
    Sha256::digest(guest.as_bytes()).into()
}

/// Interface names for `guest`: (host end, guest end). The host end is `vs`
/// followed by 13 hex digits (52 bits) of SHA-256 of the guest name: 15
/// bytes, the kernel's limit, stable across restarts, and derived from the
/// unique guest name so two guests collide only by a 2^-52 chance. The host
/// end also carries the alias `vsctl guest NAME`; [`setup`] and
/// [`teardown`] never replace or delete an interface labelled otherwise, so
/// even a collision is reported as an error rather than breaking the other
/// guest.
pub fn interface_names(guest: &str) -> (String, String) {
    let mut host = String::from("vs");
    for byte in &digest(guest)[..7] {
        let _ = write!(host, "{byte:02x}");
    }
    host.truncate(15);
    (host, GUEST_IF.to_string())
}

/// The guest interface's MAC: locally administered, unicast, derived from
/// the guest name so the anti-spoofing filter can name it before the
/// interface exists, and so neighbours' caches stay valid across restarts.
pub fn guest_mac(guest: &str) -> [u8; 6] {
    let d = digest(guest);
    [(d[8] & 0xfc) | 0x02, d[9], d[10], d[11], d[12], d[13]]
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The alias vsctl puts on a guest's host end, so that it only ever
/// deletes or replaces interfaces it made for that guest.
fn owner_label(guest: &str) -> String {
    format!("vsctl guest {guest}")
}

/// Whether a host end with this alias is ours to replace or delete. An empty
/// alias counts: the kernel ignores `IFLA_IFALIAS` on creation, so a crash
/// between creating the pair and labelling it leaves our name unlabelled.
fn owned_by(alias: &str, guest: &str) -> bool {
    alias.is_empty() || alias == owner_label(guest)
}

struct Ctx<'a> {
    guest: &'a str,
}

impl Ctx<'_> {
    fn nl(&self, e: NlError) -> NetError {
        NetError::Netlink {
            guest: self.guest.to_string(),
            op: e.op,
            source: e.source,
        }
    }

    fn invalid(&self, message: impl Into<String>) -> NetError {
        NetError::Invalid {
            guest: self.guest.to_string(),
            message: message.into(),
        }
    }

    fn host_nl(&self) -> Result<Nl, NetError> {
        Nl::new().map_err(|e| self.nl(e))
    }

    fn guest_nl(&self, netns: &impl AsFd) -> Result<Nl, NetError> {
        Nl::in_netns(netns.as_fd()).map_err(|e| self.nl(e))
    }

    /// Write one per-interface sysctl of the caller's namespace.
    fn sysctl(&self, family: &str, ifname: &str, key: &str, value: &str) -> Result<(), NetError> {
        // Interface names we write come from `interface_names`; refuse
        // anything that could step out of the conf directory regardless.
        if ifname.is_empty() || ifname.contains('/') || ifname.starts_with('.') {
            return Err(self.invalid(format!("refusing sysctl for interface name {ifname:?}")));
        }
        let path = PathBuf::from(format!("/proc/sys/net/{family}/conf/{ifname}/{key}"));
        std::fs::write(&path, value).map_err(|source| NetError::Sysctl {
            guest: self.guest.to_string(),
            path,
            source,
        })
    }
}

fn index_of(ctx: &Ctx, nl: &mut Nl, name: &str) -> Result<u32, NetError> {
    ops::link_index(nl, name)
        .map_err(|e| ctx.nl(e))?
        .ok_or_else(|| NetError::NoSuchInterface {
            guest: ctx.guest.to_string(),
            name: name.to_string(),
        })
}

/// The address whose subnet holds `gateway`, if any.
fn subnet_of(spec: &NetworkSpec, gateway: IpAddr) -> Option<IpCidr> {
    spec.addresses
        .iter()
        .copied()
        .find(|a| a.addr.is_ipv4() == gateway.is_ipv4() && a.contains(gateway))
}

fn gateways(spec: &NetworkSpec) -> impl Iterator<Item = IpAddr> + '_ {
    spec.gateway.into_iter().chain(spec.gateway6)
}

fn host_route(addr: IpAddr, oif: u32) -> Route {
    Route {
        dst: Some(IpCidr {
            addr,
            prefix: IpCidr::max_prefix(addr),
        }),
        gateway: None,
        oif,
        onlink: false,
    }
}

fn default_route(spec: &NetworkSpec, gateway: IpAddr, oif: u32) -> Route {
    Route {
        dst: None,
        gateway: Some(gateway),
        oif,
        // A gateway outside every guest subnet (routed mode: the guest has
        // a /32) is still reachable on the link; say so.
        onlink: subnet_of(spec, gateway).is_none(),
    }
}

/// Attach the anti-spoofing filter for `addrs`, or replace the one there
/// in a single request: the guest is never unfiltered, and never filtered
/// by a mix of old and new rules.
fn install_filters(
    ctx: &Ctx,
    nl: &mut Nl,
    index: u32,
    hook: Hook,
    mac: Option<[u8; 6]>,
    addrs: &[IpAddr],
) -> Result<(), NetError> {
    let program = filter::compile(&filter::rules(mac, addrs));
    if program.len() > filter::MAX_INSNS {
        return Err(ctx.invalid("too many addresses for the anti-spoofing filter"));
    }
    ops::add_clsact(nl, index).map_err(|e| ctx.nl(e))?;
    ops::set_bpf_filter(nl, index, hook, &program).map_err(|e| ctx.nl(e))
}

fn addr_list(spec: &NetworkSpec) -> Vec<IpAddr> {
    spec.addresses.iter().map(|a| a.addr).collect()
}

/// Configure the guest's side: loopback, addresses on `eth0`, `eth0` up,
/// default routes. `gnl` talks to the guest's namespace.
fn configure_guest(ctx: &Ctx, gnl: &mut Nl, spec: &NetworkSpec) -> Result<(), NetError> {
    let lo = index_of(ctx, gnl, "lo")?;
    ops::link_up(gnl, lo, None).map_err(|e| ctx.nl(e))?;
    let eth = index_of(ctx, gnl, GUEST_IF)?;
    for cidr in &spec.addresses {
        ops::add_addr(gnl, eth, *cidr).map_err(|e| ctx.nl(e))?;
    }
    ops::link_up(gnl, eth, None).map_err(|e| ctx.nl(e))?;
    for gw in gateways(spec) {
        ops::replace_route(gnl, &default_route(spec, gw, eth)).map_err(|e| ctx.nl(e))?;
    }
    Ok(())
}

/// Give `guest` its network inside `netns` (an open `/proc/PID/ns/net` of
/// the guest's init, or a bind mount of it). Called once per start, after
/// the runtime created the namespace and before init runs its network
/// setup; the host-side objects are created in the caller's namespace.
pub fn setup(
    guest: &str,
    spec: &NetworkSpec,
    host: &HostNetwork,
    netns: &impl AsFd,
) -> Result<NetState, NetError> {
    let ctx = Ctx { guest };
    match spec.mode {
        NetworkMode::Host => Ok(NetState::default()),
        NetworkMode::None => {
            let mut gnl = ctx.guest_nl(netns)?;
            let lo = index_of(&ctx, &mut gnl, "lo")?;
            ops::link_up(&mut gnl, lo, None).map_err(|e| ctx.nl(e))?;
            Ok(NetState::default())
        }
        NetworkMode::Ipvlan => setup_ipvlan(&ctx, spec, netns),
        NetworkMode::Veth => setup_veth(&ctx, spec, host, netns),
    }
}

fn setup_ipvlan(ctx: &Ctx, spec: &NetworkSpec, netns: &impl AsFd) -> Result<NetState, NetError> {
    let parent_name = spec
        .parent
        .as_deref()
        .ok_or_else(|| ctx.invalid("ipvlan mode needs a parent interface"))?;
    let mut hnl = ctx.host_nl()?;
    let mut gnl = ctx.guest_nl(netns)?;
    let parent = index_of(ctx, &mut hnl, parent_name)?;
    ops::add_ipvlan(&mut hnl, parent, GUEST_IF, IpVlanMode::L2, netns.as_fd())
        .map_err(|e| ctx.nl(e))?;
    // ipvlan has no per-guest device on the host: the filter sits on the
    // egress of the guest's own interface, before it comes up.
    let eth = index_of(ctx, &mut gnl, GUEST_IF)?;
    install_filters(ctx, &mut gnl, eth, Hook::Egress, None, &addr_list(spec))?;
    configure_guest(ctx, &mut gnl, spec)?;
    Ok(NetState {
        guest_if: Some(GUEST_IF.to_string()),
        ..NetState::default()
    })
}

fn setup_veth(
    ctx: &Ctx,
    spec: &NetworkSpec,
    host: &HostNetwork,
    netns: &impl AsFd,
) -> Result<NetState, NetError> {
    let (host_if, guest_if) = interface_names(ctx.guest);
    let mac = guest_mac(ctx.guest);
    let mut hnl = ctx.host_nl()?;
    let mut gnl = ctx.guest_nl(netns)?;

    match ops::add_veth(&mut hnl, &host_if, &guest_if, mac, netns.as_fd()) {
        Ok(()) => {}
        Err(e) if e.exists() => {
            // A host end by our name exists. If it carries this guest's
            // label it is left over from an earlier run whose namespace is
            // still held open somewhere: replace it. Otherwise it belongs to
            // another guest (a hash collision) or to someone else: refuse.
            let alias = ops::alias_of(&mut hnl, &host_if).map_err(|e| ctx.nl(e))?;
            if alias.as_deref().is_some_and(|a| !owned_by(a, ctx.guest)) {
                return Err(ctx.invalid(format!(
                    "interface {host_if} exists and does not belong to this guest"
                )));
            }
            ops::del_link(&mut hnl, &host_if).map_err(|e| ctx.nl(e))?;
            ops::add_veth(&mut hnl, &host_if, &guest_if, mac, netns.as_fd())
                .map_err(|e| ctx.nl(e))?;
        }
        Err(e) => return Err(ctx.nl(e)),
    }
    let mut state = NetState {
        host_if: Some(host_if.clone()),
        guest_if: Some(guest_if),
        mac: Some(mac_string(mac)),
        bridge_created: false,
    };
    let result = (|| {
        let hidx = index_of(ctx, &mut hnl, &host_if)?;
        ops::set_alias(&mut hnl, hidx, &owner_label(ctx.guest)).map_err(|e| ctx.nl(e))?;
        // Filter first, link up last: the guest can send nothing unfiltered.
        install_filters(
            ctx,
            &mut hnl,
            hidx,
            Hook::Ingress,
            Some(mac),
            &addr_list(spec),
        )?;
        match host.veth {
            VethAttachment::Bridge => {
                let (bridge, created) = ensure_bridge(ctx, &mut hnl, host, spec)?;
                state.bridge_created = created;
                ops::link_up(&mut hnl, hidx, Some(bridge)).map_err(|e| ctx.nl(e))?;
            }
            VethAttachment::Routed => {
                // Strict reverse-path filtering: a packet from the guest
                // whose source does not route back through this interface
                // is dropped (IPv4 only; the tc filter covers IPv6).
                ctx.sysctl("ipv4", &host_if, "rp_filter", "1")?;
                ctx.sysctl("ipv4", &host_if, "proxy_arp", "1")?;
                if spec.addresses.iter().any(|a| a.addr.is_ipv6()) {
                    enable_ndp_proxy(ctx, &host_if)?;
                }
                ops::link_up(&mut hnl, hidx, None).map_err(|e| ctx.nl(e))?;
                for cidr in &spec.addresses {
                    ops::replace_route(&mut hnl, &host_route(cidr.addr, hidx))
                        .map_err(|e| ctx.nl(e))?;
                }
                if let Some(IpAddr::V6(gw)) = spec.gateway6 {
                    ops::add_proxy_ndp(&mut hnl, hidx, gw).map_err(|e| ctx.nl(e))?;
                }
            }
        }
        configure_guest(ctx, &mut gnl, spec)
    })();
    if let Err(e) = result {
        // Leave nothing half-made behind: the pair goes with its host end.
        let _ = ops::del_link(&mut hnl, &host_if);
        return Err(e);
    }
    Ok(state)
}

/// Let the host end answer neighbour solicitations for the gateway. The
/// kernel answers from its proxy table only on interfaces in router mode
/// (`forwarding` on that interface: for IPv6 this changes the interface's
/// host/router behaviour, not whether the host forwards, which only
/// `all.forwarding` decides; see ip-sysctl.rst).
fn enable_ndp_proxy(ctx: &Ctx, host_if: &str) -> Result<(), NetError> {
    ctx.sysctl("ipv6", host_if, "forwarding", "1")?;
    ctx.sysctl("ipv6", host_if, "proxy_ndp", "1")
}

/// Find the bridge, or create it with the guests' gateway addresses on it.
/// An existing bridge is used as it is: its addresses are the host
/// administrator's business.
fn ensure_bridge(
    ctx: &Ctx,
    hnl: &mut Nl,
    host: &HostNetwork,
    spec: &NetworkSpec,
) -> Result<(u32, bool), NetError> {
    if let Some(index) = ops::link_index(hnl, &host.bridge).map_err(|e| ctx.nl(e))? {
        return Ok((index, false));
    }
    let created = match ops::add_bridge(hnl, &host.bridge) {
        Ok(()) => true,
        // Another vsctl created it between our look-up and now.
        Err(e) if e.exists() => false,
        Err(e) => return Err(ctx.nl(e)),
    };
    let index = index_of(ctx, hnl, &host.bridge)?;
    if created {
        for gw in gateways(spec) {
            let prefix = subnet_of(spec, gw)
                .map(|s| s.prefix)
                .unwrap_or(IpCidr::max_prefix(gw));
            ops::add_addr(hnl, index, IpCidr { addr: gw, prefix }).map_err(|e| ctx.nl(e))?;
        }
    }
    ops::link_up(hnl, index, None).map_err(|e| ctx.nl(e))?;
    Ok((index, created))
}

/// Apply a changed network spec to a running guest: addresses added and
/// removed, default routes changed, host routes and filters to match. The
/// mode and parent cannot change live (the planner classes them restart).
pub fn update(
    guest: &str,
    old: &NetworkSpec,
    new: &NetworkSpec,
    host: &HostNetwork,
    netns: &impl AsFd,
) -> Result<(), NetError> {
    let ctx = Ctx { guest };
    if old.mode != new.mode || old.parent != new.parent {
        return Err(ctx.invalid("network mode and parent can only change with a restart"));
    }
    if matches!(new.mode, NetworkMode::Host | NetworkMode::None) {
        return Ok(());
    }
    let mut gnl = ctx.guest_nl(netns)?;
    let eth = index_of(&ctx, &mut gnl, GUEST_IF)?;
    let added: Vec<IpCidr> = new
        .addresses
        .iter()
        .filter(|a| !old.addresses.contains(a))
        .copied()
        .collect();
    let removed: Vec<IpCidr> = old
        .addresses
        .iter()
        .filter(|a| !new.addresses.contains(a))
        .copied()
        .collect();

    // 1. Filters for the new set (union with the old during the swap).
    let mut hnl = None;
    let mut hidx = None;
    if new.mode == NetworkMode::Veth {
        let (host_if, _) = interface_names(guest);
        let mut nl = ctx.host_nl()?;
        let idx = index_of(&ctx, &mut nl, &host_if)?;
        install_filters(
            &ctx,
            &mut nl,
            idx,
            Hook::Ingress,
            Some(guest_mac(guest)),
            &addr_list(new),
        )?;
        hnl = Some(nl);
        hidx = Some(idx);
    } else {
        install_filters(&ctx, &mut gnl, eth, Hook::Egress, None, &addr_list(new))?;
    }

    // 2. Addresses inside the guest: new ones first, then the old ones go.
    // Deleting an IPv4 subnet's primary address deletes its secondaries too
    // unless promote_secondaries is on, which would take addresses the guest
    // keeps (and the default route through them) with it.
    if !removed.is_empty() {
        let key = format!("ipv4/conf/{GUEST_IF}/promote_secondaries");
        Nl::sysctl_in_netns(netns.as_fd(), &key, "1").map_err(|e| ctx.nl(e))?;
    }
    for cidr in &added {
        ops::add_addr(&mut gnl, eth, *cidr).map_err(|e| ctx.nl(e))?;
    }
    for cidr in &removed {
        ops::del_addr(&mut gnl, eth, *cidr).map_err(|e| ctx.nl(e))?;
    }

    // 3. Default routes: set each family's to the new gateway, or remove it.
    for (old_gw, new_gw) in [(old.gateway, new.gateway), (old.gateway6, new.gateway6)] {
        match new_gw {
            Some(gw) => {
                ops::replace_route(&mut gnl, &default_route(new, gw, eth)).map_err(|e| ctx.nl(e))?
            }
            None => {
                if let Some(gw) = old_gw {
                    ops::del_route(&mut gnl, &default_route(old, gw, eth))
                        .map_err(|e| ctx.nl(e))?;
                }
            }
        }
    }

    // 4. Routed mode: host routes and the NDP proxy entry follow.
    if let (Some(nl), Some(idx)) = (hnl.as_mut(), hidx)
        && host.veth == VethAttachment::Routed
    {
        let (host_if, _) = interface_names(guest);
        if new.addresses.iter().any(|a| a.addr.is_ipv6()) {
            enable_ndp_proxy(&ctx, &host_if)?;
        }
        for cidr in &removed {
            ops::del_route(nl, &host_route(cidr.addr, idx)).map_err(|e| ctx.nl(e))?;
        }
        for cidr in &added {
            ops::replace_route(nl, &host_route(cidr.addr, idx)).map_err(|e| ctx.nl(e))?;
        }
        if let Some(IpAddr::V6(gw)) = new.gateway6 {
            ops::add_proxy_ndp(nl, idx, gw).map_err(|e| ctx.nl(e))?;
        }
    }
    Ok(())
}

/// Remove what [`setup`] made on the host side. Deleting the host end of the
/// veth deletes the pair, and with the device go its host routes, NDP proxy
/// entries, qdisc and filters and its bridge port. ipvlan devices and
/// everything inside the guest die with the guest's namespace. Missing
/// objects are fine, so this can run any number of times.
///
/// The bridge stays, even if this call's guest was its last port and vsctl
/// created it: the bridge carries the gateway address that other host
/// configuration (firewall rules, NAT, services bound to it) may refer to,
/// and an idle bridge costs nothing.
pub fn teardown(guest: &str, spec: &NetworkSpec, host: &HostNetwork) -> Result<(), NetError> {
    let ctx = Ctx { guest };
    let _ = host;
    if spec.mode != NetworkMode::Veth {
        return Ok(());
    }
    let (host_if, _) = interface_names(guest);
    let mut hnl = ctx.host_nl()?;
    match ops::alias_of(&mut hnl, &host_if).map_err(|e| ctx.nl(e))? {
        None => Ok(()),
        Some(alias) if owned_by(&alias, guest) => {
            ops::del_link(&mut hnl, &host_if).map_err(|e| ctx.nl(e))?;
            Ok(())
        }
        Some(_) => Err(ctx.invalid(format!(
            "interface {host_if} does not belong to this guest; left in place"
        ))),
    }
}

/// The interfaces and addresses inside a guest's namespace, for `vsctl
/// status`; sorted by interface name, addresses in kernel order.
pub fn status(guest: &str, netns: &impl AsFd) -> Result<Vec<InterfaceInfo>, NetError> {
    let ctx = Ctx { guest };
    let mut gnl = ctx.guest_nl(netns)?;
    let links = ops::links(&mut gnl).map_err(|e| ctx.nl(e))?;
    let addrs = ops::addrs(&mut gnl).map_err(|e| ctx.nl(e))?;
    let mut out: Vec<InterfaceInfo> = links
        .into_iter()
        .map(|(index, name, _)| InterfaceInfo {
            name,
            addresses: addrs
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, a)| *a)
                .collect(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// How many tc filters sit on the ingress of the guest's host end (veth
/// mode); 0 when the host end does not exist. For status and tests.
pub fn host_filter_count(guest: &str) -> Result<usize, NetError> {
    let ctx = Ctx { guest };
    let (host_if, _) = interface_names(guest);
    let mut hnl = ctx.host_nl()?;
    match ops::link_index(&mut hnl, &host_if).map_err(|e| ctx.nl(e))? {
        Some(index) => ops::filter_count(&mut hnl, index, Hook::Ingress).map_err(|e| ctx.nl(e)),
        None => Ok(0),
    }
}

/// Host-side view for checks and `vsctl status`: the host end's index and
/// bridge (controller) index, if the host end exists.
pub fn host_end(guest: &str) -> Result<Option<(u32, Option<u32>)>, NetError> {
    let ctx = Ctx { guest };
    let (host_if, _) = interface_names(guest);
    let mut hnl = ctx.host_nl()?;
    let links = ops::links(&mut hnl).map_err(|e| ctx.nl(e))?;
    Ok(links
        .into_iter()
        .find(|(_, name, _)| *name == host_if)
        .map(|(i, _, c)| (i, c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_distinct() {
        let (h1, g1) = interface_names("web1");
        assert_eq!(h1, interface_names("web1").0);
        assert_eq!(g1, "eth0");
        assert!(h1.len() <= 15 && h1.starts_with("vs"), "{h1}");
        assert!(h1[2..].chars().all(|c| c.is_ascii_hexdigit()));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..10_000 {
            assert!(seen.insert(interface_names(&format!("guest{i}")).0));
        }
        // A 200-byte name still gives a 15-byte interface name.
        assert_eq!(interface_names(&"x".repeat(200)).0.len(), 15);
    }

    #[test]
    fn mac_is_local_unicast_and_stable() {
        let mac = guest_mac("web1");
        assert_eq!(mac, guest_mac("web1"));
        assert_ne!(mac, guest_mac("web2"));
        assert_eq!(mac[0] & 0x03, 0x02);
    }

    #[test]
    fn default_route_is_onlink_only_outside_the_subnet() {
        let spec = NetworkSpec {
            addresses: vec![
                "10.0.0.2/24".parse().unwrap(),
                "10.1.0.2/32".parse().unwrap(),
            ],
            ..NetworkSpec::default()
        };
        assert!(!default_route(&spec, "10.0.0.1".parse().unwrap(), 2).onlink);
        assert!(default_route(&spec, "10.9.0.1".parse().unwrap(), 2).onlink);
    }
}
