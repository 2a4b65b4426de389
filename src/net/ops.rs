//! One function per rtnetlink operation vsctl performs, on top of [`Nl`].
//!
//! Each builds exactly one request; callers decide what "already exists" or
//! "already gone" means for them via [`NlError::exists`] / [`NlError::missing`].

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoVeth, IpVlanMode, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::filter::SockFilter;
use super::nl::{Nl, NlResult};
use crate::config::units::IpCidr;

fn family(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_addr(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// Index of the interface called `name`, or `None` if there is none.
pub fn link_index(nl: &mut Nl, name: &str) -> NlResult<Option<u32>> {
    Ok(link_by_name(nl, name)?.map(|l| l.header.index))
}

pub fn link_by_name(nl: &mut Nl, name: &str) -> NlResult<Option<LinkMessage>> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    let op = format!("look up interface {name}");
    match nl.dump_one(RouteNetlinkMessage::GetLink(msg), &op) {
        Ok(Some(RouteNetlinkMessage::NewLink(link))) => Ok(Some(link)),
        Ok(_) => Ok(None),
        Err(e) if e.missing() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every interface: (index, name, controller index).
pub fn links(nl: &mut Nl) -> NlResult<Vec<(u32, String, Option<u32>)>> {
    let replies = nl.dump(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        "list interfaces",
    )?;
    let mut out = Vec::new();
    for reply in replies {
        if let RouteNetlinkMessage::NewLink(link) = reply {
            let mut name = String::new();
            let mut controller = None;
            for attr in &link.attributes {
                match attr {
                    LinkAttribute::IfName(n) => name = n.clone(),
                    LinkAttribute::Controller(c) => controller = Some(*c),
                    _ => {}
                }
            }
            out.push((link.header.index, name, controller));
        }
    }
    Ok(out)
}

/// A veth pair whose host end `host` stays here and whose peer is created
/// directly inside `peer_netns` as `peer` with MAC `mac`. Creating the peer
/// in place (rather than moving and renaming it) means its name never
/// appears, even briefly, in the host namespace.
pub fn add_veth(
    nl: &mut Nl,
    host: &str,
    peer: &str,
    mac: [u8; 6],
    peer_netns: BorrowedFd<'_>,
) -> NlResult<()> {
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(peer.to_string()));
    peer_msg
        .attributes
        .push(LinkAttribute::Address(mac.to_vec()));
    peer_msg
        .attributes
        .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(host.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));
    nl.create(
        RouteNetlinkMessage::NewLink(msg),
        &format!("create veth pair {host}/{peer}"),
    )
}

/// An ipvlan device on `parent` created directly inside `netns` as `name`.
pub fn add_ipvlan(
    nl: &mut Nl,
    parent: u32,
    name: &str,
    mode: IpVlanMode,
    netns: BorrowedFd<'_>,
) -> NlResult<()> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::Link(parent));
    msg.attributes
        .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::IpVlan),
        LinkInfo::Data(InfoData::IpVlan(vec![InfoIpVlan::Mode(mode)])),
    ]));
    nl.create(
        RouteNetlinkMessage::NewLink(msg),
        &format!("create ipvlan {name} on interface {parent}"),
    )
}

pub fn add_bridge(nl: &mut Nl, name: &str) -> NlResult<()> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Bridge,
        )]));
    nl.create(
        RouteNetlinkMessage::NewLink(msg),
        &format!("create bridge {name}"),
    )
}

/// Bring interface `index` up, optionally enslaving it to `controller`.
pub fn link_up(nl: &mut Nl, index: u32, controller: Option<u32>) -> NlResult<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    if let Some(c) = controller {
        msg.attributes.push(LinkAttribute::Controller(c));
    }
    nl.request(
        RouteNetlinkMessage::SetLink(msg),
        0,
        &format!("bring up interface {index}"),
    )
}

/// Label an interface (`IFLA_IFALIAS`, shown by `ip link` as "alias").
pub fn set_alias(nl: &mut Nl, index: u32, alias: &str) -> NlResult<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::IfAlias(alias.to_string()));
    nl.request(
        RouteNetlinkMessage::SetLink(msg),
        0,
        &format!("label interface {index}"),
    )
}

/// The alias of interface `name`: `Ok(None)` if the interface does not
/// exist, `Ok(Some(""))` if it has no alias.
pub fn alias_of(nl: &mut Nl, name: &str) -> NlResult<Option<String>> {
    Ok(link_by_name(nl, name)?.map(|link| {
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfAlias(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }))
}

/// Delete interface `name`; `Ok(false)` if it did not exist.
pub fn del_link(nl: &mut Nl, name: &str) -> NlResult<bool> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    match nl.request(
        RouteNetlinkMessage::DelLink(msg),
        0,
        &format!("delete interface {name}"),
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.missing() => Ok(false),
        Err(e) => Err(e),
    }
}

fn addr_msg(index: u32, cidr: IpCidr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(cidr.addr);
    msg.header.prefix_len = cidr.prefix;
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    msg.attributes.push(AddressAttribute::Local(cidr.addr));
    msg.attributes.push(AddressAttribute::Address(cidr.addr));
    msg
}

/// Add an address; `Ok(false)` if it was already there. IPv6 addresses skip
/// duplicate address detection: vsctl checks uniqueness across guests at
/// validation time, and DAD would leave the address "tentative" (unusable)
/// for about a second after every start.
pub fn add_addr(nl: &mut Nl, index: u32, cidr: IpCidr) -> NlResult<bool> {
    let mut msg = addr_msg(index, cidr);
    if cidr.addr.is_ipv6() {
        msg.header.flags = AddressHeaderFlags::Nodad;
    }
    match nl.create(
        RouteNetlinkMessage::NewAddress(msg),
        &format!("add address {cidr}"),
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Remove an address; `Ok(false)` if it was not there.
pub fn del_addr(nl: &mut Nl, index: u32, cidr: IpCidr) -> NlResult<bool> {
    match nl.request(
        RouteNetlinkMessage::DelAddress(addr_msg(index, cidr)),
        0,
        &format!("remove address {cidr}"),
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.missing() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every address: (interface index, address/prefix).
pub fn addrs(nl: &mut Nl) -> NlResult<Vec<(u32, IpCidr)>> {
    let replies = nl.dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "list addresses",
    )?;
    let mut out = Vec::new();
    for reply in replies {
        if let RouteNetlinkMessage::NewAddress(msg) = reply {
            // IFA_LOCAL is the interface's own address on point-to-point
            // links; IFA_ADDRESS otherwise. Prefer LOCAL when present.
            let mut addr = None;
            for attr in &msg.attributes {
                match attr {
                    AddressAttribute::Local(a) => addr = Some(*a),
                    AddressAttribute::Address(a) if addr.is_none() => addr = Some(*a),
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                out.push((
                    msg.header.index,
                    IpCidr {
                        addr,
                        prefix: msg.header.prefix_len,
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// A route in the main table. `dst = None` is the default route of the
/// gateway's family. `onlink` lets the gateway lie outside every subnet of
/// the interface (routed mode, where the guest has only its own /32).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub dst: Option<IpCidr>,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub onlink: bool,
}

fn route_msg(route: &Route) -> RouteMessage {
    let fam_addr = route
        .dst
        .map(|d| d.addr)
        .or(route.gateway)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(fam_addr);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if route.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if route.onlink {
        msg.header.flags = RouteFlags::Onlink;
    }
    if let Some(dst) = route.dst {
        msg.header.destination_prefix_length = dst.prefix;
        msg.attributes
            .push(RouteAttribute::Destination(route_addr(dst.addr)));
    }
    if let Some(gw) = route.gateway {
        msg.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
    }
    msg.attributes.push(RouteAttribute::Oif(route.oif));
    msg
}

fn describe(route: &Route) -> String {
    let dst = route
        .dst
        .map(|d| d.to_string())
        .unwrap_or_else(|| "default".into());
    match route.gateway {
        Some(gw) => format!("{dst} via {gw}"),
        None => format!("{dst} dev {}", route.oif),
    }
}

/// Add or replace a route.
pub fn replace_route(nl: &mut Nl, route: &Route) -> NlResult<()> {
    nl.request(
        RouteNetlinkMessage::NewRoute(route_msg(route)),
        NLM_F_CREATE | NLM_F_REPLACE,
        &format!("add route {}", describe(route)),
    )
}

/// Delete a route; `Ok(false)` if it was not there.
pub fn del_route(nl: &mut Nl, route: &Route) -> NlResult<bool> {
    match nl.request(
        RouteNetlinkMessage::DelRoute(route_msg(route)),
        0,
        &format!("delete route {}", describe(route)),
    ) {
        Ok(()) => Ok(true),
        Err(e) if e.missing() => Ok(false),
        Err(e) => Err(e),
    }
}

/// An NDP proxy entry: answer neighbour solicitations for `addr` arriving on
/// interface `index` (needs `proxy_ndp` on that interface).
pub fn add_proxy_ndp(nl: &mut Nl, index: u32, addr: std::net::Ipv6Addr) -> NlResult<()> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.ifindex = index;
    msg.header.flags = NeighbourFlags::Proxy;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
            addr,
        )));
    match nl.request(
        RouteNetlinkMessage::NewNeighbour(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
        &format!("add ndp proxy entry {addr}"),
    ) {
        Ok(()) => Ok(()),
        Err(e) if e.exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The clsact qdisc: an attachment point for ingress and egress filters
/// that does no queueing of its own.
pub fn add_clsact(nl: &mut Nl, index: u32) -> NlResult<()> {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    msg.header.parent = TcHandle::CLSACT;
    msg.attributes.push(TcAttribute::Kind("clsact".into()));
    match nl.create(
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        &format!("add clsact qdisc on interface {index}"),
    ) {
        Ok(()) => Ok(()),
        Err(e) if e.exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Which clsact hook a filter sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn parent(self) -> TcHandle {
        TcHandle {
            major: 0xffff,
            minor: match self {
                Hook::Ingress => TcHandle::MIN_INGRESS,
                Hook::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }
}

/// Attach (or atomically replace) the one classifier vsctl puts on a hook:
/// a classic BPF program in direct-action mode, whose return value is the
/// verdict (`TC_ACT_OK` 0, `TC_ACT_SHOT` 2). Classic BPF needs no verifier
/// round trip, no BPF filesystem and no gact module (often not built).
/// The attributes are `TCA_BPF_OPS_LEN`, `TCA_BPF_OPS` (an array of
/// `struct sock_filter`) and `TCA_BPF_FLAGS` from linux/pkt_cls.h.
pub fn set_bpf_filter(nl: &mut Nl, index: u32, hook: Hook, program: &[SockFilter]) -> NlResult<()> {
    const TCA_BPF_OPS_LEN: u16 = 4;
    const TCA_BPF_OPS: u16 = 5;
    const TCA_BPF_FLAGS: u16 = 8;
    const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
    let mut ops = Vec::with_capacity(program.len() * 8);
    for insn in program {
        ops.extend_from_slice(&insn.code.to_ne_bytes());
        ops.push(insn.jt);
        ops.push(insn.jf);
        ops.extend_from_slice(&insn.k.to_ne_bytes());
    }
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = hook.parent();
    msg.header.handle = TcHandle { major: 0, minor: 1 };
    // tcm_info = TC_H_MAKE(prio << 16, htons(ETH_P_ALL))
    msg.header.info = (FILTER_PRIO << 16) | u32::from(0x0003u16.to_be());
    msg.attributes.push(TcAttribute::Kind("bpf".into()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(
            TCA_BPF_OPS_LEN,
            (program.len() as u16).to_ne_bytes().to_vec(),
        ))),
        TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(TCA_BPF_OPS, ops))),
        TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(
            TCA_BPF_FLAGS,
            TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes().to_vec(),
        ))),
    ]));
    nl.request(
        RouteNetlinkMessage::NewTrafficFilter(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
        &format!("attach anti-spoofing filter to interface {index}"),
    )
}

/// The priority of vsctl's filter on each hook.
const FILTER_PRIO: u32 = 1;

/// How many filters sit on a hook (0 when the hook or device is absent).
pub fn filter_count(nl: &mut Nl, index: u32, hook: Hook) -> NlResult<usize> {
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.parent = hook.parent();
    match nl.dump(
        RouteNetlinkMessage::GetTrafficFilter(msg),
        &format!("list filters on interface {index}"),
    ) {
        Ok(r) => Ok(r
            .iter()
            .filter(|m| matches!(m, RouteNetlinkMessage::NewTrafficFilter(f) if f.header.handle != TcHandle::UNSPEC))
            .count()),
        Err(e) if e.missing() || e.errno() == Some(libc::EINVAL) => Ok(0),
        Err(e) => Err(e),
    }
}

impl Nl {
    /// A GET request answered by a single message (not a dump).
    pub fn dump_one(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &str,
    ) -> NlResult<Option<RouteNetlinkMessage>> {
        let mut reply = self.get(msg, op)?;
        Ok(reply.pop())
    }
}
