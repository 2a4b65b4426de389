//! Anti-spoofing rules: which frames a guest may send.
//!
//! The rules are computed here as plain data (ethertype, byte matches,
//! verdict) so they can be unit-tested without a kernel, then installed as tc
//! u32 filters with a gact verdict on a clsact hook: the ingress hook of the
//! host end of a veth (everything the guest transmits arrives there, before
//! the bridge or the routing code sees it), or the egress hook of an ipvlan
//! device inside the guest (ipvlan has no host-side device per guest).
//!
//! Offsets are relative to the network header, as u32 defines them; the
//! Ethernet source address sits 8 bytes before it (`-8..-2`). The policy is
//! an allow list ending in "drop everything":
//!
//! * IPv4 whose source is one of the guest's addresses;
//! * ARP whose sender hardware address is the guest's MAC and whose sender
//!   protocol address is one of its IPv4 addresses (or 0.0.0.0, a probe that
//!   poisons no cache);
//! * IPv6 neighbour advertisements only for the guest's own addresses or
//!   link-local targets; router advertisements and redirects never;
//! * IPv6 whose source is one of the guest's addresses, link-local, or the
//!   unspecified address (duplicate address detection);
//! * and on a veth every allowed frame must also carry the guest's MAC as
//!   Ethernet source, so a guest cannot poison the bridge's forwarding table.

use std::net::IpAddr;

use netlink_packet_route::tc::TcU32Key;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ALL: u16 = 0x0003;

const ICMPV6: u8 = 58;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

/// One u32 filter: an ethertype and byte matches (offset, value, mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub protocol: u16,
    pub matches: Vec<(i32, Vec<u8>, Vec<u8>)>,
    pub verdict: Verdict,
}

impl Rule {
    fn new(protocol: u16, verdict: Verdict) -> Rule {
        Rule {
            protocol,
            matches: Vec::new(),
            verdict,
        }
    }

    fn at(mut self, offset: i32, value: &[u8]) -> Rule {
        self.matches
            .push((offset, value.to_vec(), vec![0xff; value.len()]));
        self
    }

    fn masked(mut self, offset: i32, value: &[u8], mask: &[u8]) -> Rule {
        self.matches.push((offset, value.to_vec(), mask.to_vec()));
        self
    }

    fn from_mac(self, mac: Option<[u8; 6]>) -> Rule {
        match mac {
            Some(mac) => self.at(-8, &mac),
            None => self,
        }
    }

    /// The matches as u32 keys: 32-bit words at 4-byte aligned offsets with
    /// per-byte masks (the kernel reads each key as one big-endian word).
    pub fn keys(&self) -> Vec<TcU32Key> {
        let mut words: Vec<(i32, [u8; 4], [u8; 4])> = Vec::new();
        for (offset, value, mask) in &self.matches {
            for (i, (v, m)) in value.iter().zip(mask).enumerate() {
                let pos = offset + i as i32;
                let word = pos.div_euclid(4) * 4;
                let byte = (pos - word) as usize;
                let slot = match words.iter().position(|w| w.0 == word) {
                    Some(slot) => slot,
                    None => {
                        words.push((word, [0; 4], [0; 4]));
                        words.len() - 1
                    }
                };
                words[slot].1[byte] = v & m;
                words[slot].2[byte] = *m;
            }
        }
        if words.is_empty() {
            // Match everything: one key with an empty mask.
            words.push((0, [0; 4], [0; 4]));
        }
        words
            .into_iter()
            .map(|(off, val, mask)| {
                let mut key = TcU32Key::default();
                key.off = off;
                key.val = u32::from_be_bytes(val);
                key.mask = u32::from_be_bytes(mask);
                key
            })
            .collect()
    }
}

/// The allow list for a guest with addresses `addrs`. `mac` is the guest
/// interface's MAC where it is the guest's own (veth); `None` for ipvlan,
/// whose slaves all share the parent's MAC.
pub fn rules(mac: Option<[u8; 6]>, addrs: &[IpAddr]) -> Vec<Rule> {
    use Verdict::{Drop, Pass};
    let mut out = Vec::new();
    let v4: Vec<[u8; 4]> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(a.octets()),
            _ => None,
        })
        .collect();
    let v6: Vec<[u8; 16]> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(a.octets()),
            _ => None,
        })
        .collect();

    for a in &v4 {
        out.push(Rule::new(ETH_P_IP, Pass).from_mac(mac).at(12, a));
    }
    // ARP (Ethernet/IPv4): sha at 8..14, spa at 14..18.
    for a in v4.iter().chain(std::iter::once(&[0u8; 4])) {
        let mut rule = Rule::new(ETH_P_ARP, Pass).from_mac(mac);
        if let Some(mac) = mac {
            rule = rule.at(8, &mac);
        }
        out.push(rule.at(14, a));
    }
    // IPv6: next header at 6, source at 8..24, ICMPv6 type at 40, ND target
    // at 48..64 (assuming no extension headers, see docs/network.md).
    let link_local = [0xfe, 0x80];
    let link_local_mask = [0xff, 0xc0];
    for a in &v6 {
        out.push(
            Rule::new(ETH_P_IPV6, Pass)
                .from_mac(mac)
                .at(6, &[ICMPV6])
                .at(40, &[ND_NEIGHBOR_ADVERT])
                .at(48, a),
        );
    }
    out.push(
        Rule::new(ETH_P_IPV6, Pass)
            .from_mac(mac)
            .at(6, &[ICMPV6])
            .at(40, &[ND_NEIGHBOR_ADVERT])
            .masked(48, &link_local, &link_local_mask),
    );
    for kind in [ND_NEIGHBOR_ADVERT, ND_ROUTER_ADVERT, ND_REDIRECT] {
        out.push(Rule::new(ETH_P_IPV6, Drop).at(6, &[ICMPV6]).at(40, &[kind]));
    }
    for a in &v6 {
        out.push(Rule::new(ETH_P_IPV6, Pass).from_mac(mac).at(8, a));
    }
    out.push(
        Rule::new(ETH_P_IPV6, Pass)
            .from_mac(mac)
            .masked(8, &link_local, &link_local_mask),
    );
    out.push(Rule::new(ETH_P_IPV6, Pass).from_mac(mac).at(8, &[0u8; 16]));
    out.push(Rule::new(ETH_P_ALL, Drop));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_aligned_words_with_byte_masks() {
        let rule = Rule::new(ETH_P_IPV6, Verdict::Pass)
            .at(6, &[58])
            .at(40, &[136]);
        let keys = rule.keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].off, 4);
        assert_eq!(keys[0].mask, 0x0000_ff00);
        assert_eq!(keys[0].val, 0x0000_3a00);
        assert_eq!(keys[1].off, 40);
        assert_eq!(keys[1].mask, 0xff00_0000);
        assert_eq!(keys[1].val, 0x8800_0000);
    }

    #[test]
    fn mac_match_spans_two_words_before_the_network_header() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let keys = Rule::new(ETH_P_IP, Verdict::Pass)
            .from_mac(Some(mac))
            .keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].off, keys[0].val, keys[0].mask),
            (-8, 0x0211_2233, u32::MAX)
        );
        assert_eq!(
            (keys[1].off, keys[1].val, keys[1].mask),
            (-4, 0x4455_0000, 0xffff_0000)
        );
    }

    #[test]
    fn empty_rule_matches_everything() {
        let keys = Rule::new(ETH_P_ALL, Verdict::Drop).keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].mask, 0);
    }

    #[test]
    fn allow_list_ends_in_drop_and_names_each_address() {
        let addrs: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let rules = rules(Some([2, 0, 0, 0, 0, 1]), &addrs);
        let last = rules.last().unwrap();
        assert_eq!((last.protocol, last.verdict), (ETH_P_ALL, Verdict::Drop));
        let v4 = rules
            .iter()
            .filter(|r| r.protocol == ETH_P_IP)
            .collect::<Vec<_>>();
        assert_eq!(v4.len(), 1);
        assert!(
            v4[0]
                .matches
                .iter()
                .any(|m| m.0 == 12 && m.1 == [10, 0, 0, 2])
        );
        // Every pass rule pins the Ethernet source.
        for r in rules.iter().filter(|r| r.verdict == Verdict::Pass) {
            assert!(r.matches.iter().any(|m| m.0 == -8), "{r:?}");
        }
        // Neighbour advertisements for foreign targets are dropped before
        // the link-local source rule could let them through.
        let na_drop = rules
            .iter()
            .position(|r| r.verdict == Verdict::Drop && r.matches.iter().any(|m| m.1 == [136]))
            .unwrap();
        let ll_pass = rules
            .iter()
            .position(|r| {
                r.verdict == Verdict::Pass
                    && r.matches.iter().any(|m| m.0 == 8 && m.1 == [0xfe, 0x80])
            })
            .unwrap();
        assert!(na_drop < ll_pass);
    }

    #[test]
    fn ipvlan_rules_do_not_match_mac() {
        let rules = rules(None, &["10.0.0.2".parse().unwrap()]);
        assert!(rules.iter().all(|r| r.matches.iter().all(|m| m.0 >= 0)));
    }
}
