//! Anti-spoofing rules: which frames a guest may send.
//!
//! The rules are computed here as plain data (ethertype, byte matches,
//! verdict) so they can be unit-tested without a kernel, then compiled into
//! one classic BPF program attached as a direct-action `bpf` classifier on a
//! clsact hook: the ingress hook of the host end of a veth (everything the
//! guest transmits arrives there, before the bridge or the routing code sees
//! it), or the egress hook of an ipvlan device inside the guest (ipvlan has
//! no host-side device per guest). Classic BPF rather than u32 + gact: the
//! program's return value is the verdict, so no action module is needed
//! (many kernels, this project's CI among them, build none), and a whole
//! policy is one filter that a live update replaces atomically.
//!
//! Rule offsets are relative to the network header; the Ethernet source
//! address sits 8 bytes before it (`-8..-2`). The policy is an allow list
//! ending in "drop everything":
//!
//! * no VLAN-tagged frames at all;
//! * IPv4 whose source is one of the guest's addresses;
//! * ARP whose sender hardware address is the guest's MAC and whose sender
//!   protocol address is one of its IPv4 addresses (or 0.0.0.0, a probe that
//!   poisons no cache);
//! * IPv6 neighbour advertisements only for the guest's own addresses or
//!   its link-local address; router advertisements and redirects never;
//! * no IPv6 hop-by-hop, routing or destination-options headers (they would
//!   hide an ICMPv6 type from the checks), except the 8-byte hop-by-hop
//!   header of MLD messages from its link-local or the unspecified source;
//! * IPv6 whose source is one of the guest's addresses, its link-local
//!   address, or the unspecified address (duplicate address detection);
//!
//! "Its link-local address": on a veth, the one the kernel derives from the
//! guest's MAC (EUI-64, `fe80::` + MAC with the U/L bit flipped and `ff:fe`
//! in the middle), which is what a fresh network namespace generates; a
//! guest cannot take another guest's link-local address. ipvlan guests
//! share the parent's MAC, so there any `fe80::/10` source passes;
//! * and on a veth every allowed frame must also carry the guest's MAC as
//!   Ethernet source, so a guest cannot poison the bridge's forwarding table.

use std::net::IpAddr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ALL: u16 = 0x0003;

const ICMPV6: u8 = 58;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_DSTOPTS: u8 = 60;
/// MLD query, v1 report, v1 done, v2 report.
const MLD_TYPES: [u8; 4] = [130, 131, 132, 143];

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

    fn sent_by(self, mac: Option<[u8; 6]>) -> Rule {
        match mac {
            Some(mac) => self.at(-8, &mac),
            None => self,
        }
    }

    /// The matches as (offset, value, mask) 32-bit words at 4-byte aligned
    /// network-header offsets, big-endian as BPF loads them.
    pub fn words(&self) -> Vec<(i32, u32, u32)> {
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
        words
            .into_iter()
            .map(|(off, val, mask)| (off, u32::from_be_bytes(val), u32::from_be_bytes(mask)))
            .collect()
    }
}

/// One classic BPF instruction (`struct sock_filter`, linux/filter.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const LD_W_LEN: u16 = 0x80; // BPF_LD | BPF_W | BPF_LEN
const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT: 1 if the frame carried a VLAN tag
/// that the driver moved out of the packet data.
const AD_VLAN_TAG_PRESENT: u32 = (-0x1000i32 + 48) as u32;
const ETH_HLEN: i32 = 14;
/// tc verdicts (linux/pkt_cls.h).
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
/// The kernel's limit on a classic program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Compile rules into a classic BPF program for a tc hook, where data
/// starts at the Ethernet header. Each rule becomes a block that falls
/// through to the next block on the first mismatch. Every block first checks
/// the frame is long enough for its loads: an out-of-bounds load would end
/// the program with 0, which for tc means "pass".
pub fn compile(rules: &[Rule]) -> Vec<SockFilter> {
    let mut prog = vec![
        insn(LD_W_ABS, 0, 0, AD_VLAN_TAG_PRESENT),
        insn(JMP_JEQ_K, 1, 0, 0),
        insn(RET_K, 0, 0, TC_ACT_SHOT),
    ];
    for rule in rules {
        let words = rule.words();
        let mut block = Vec::new();
        let need = words
            .iter()
            .map(|w| w.0 + ETH_HLEN + 4)
            .max()
            .unwrap_or(0)
            .max(if rule.protocol == ETH_P_ALL {
                0
            } else {
                ETH_HLEN
            });
        if need > 0 {
            block.push(insn(LD_W_LEN, 0, 0, 0));
            block.push(insn(JMP_JGE_K, 0, 0, need as u32));
        }
        if rule.protocol != ETH_P_ALL {
            block.push(insn(LD_H_ABS, 0, 0, 12));
            block.push(insn(JMP_JEQ_K, 0, 0, u32::from(rule.protocol)));
        }
        for (off, val, mask) in words {
            block.push(insn(LD_W_ABS, 0, 0, (off + ETH_HLEN) as u32));
            if mask != u32::MAX {
                block.push(insn(ALU_AND_K, 0, 0, mask));
            }
            block.push(insn(JMP_JEQ_K, 0, 0, val));
        }
        let verdict = match rule.verdict {
            Verdict::Pass => TC_ACT_OK,
            Verdict::Drop => TC_ACT_SHOT,
        };
        block.push(insn(RET_K, 0, 0, verdict));
        // On mismatch, skip to the first instruction after this block.
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JMP_JEQ_K || ins.code == JMP_JGE_K {
                ins.jt = 0;
                ins.jf = u8::try_from(len - i - 1).expect("rule block under 256 instructions");
            }
        }
        prog.extend(block);
    }
    prog.push(insn(RET_K, 0, 0, TC_ACT_SHOT));
    prog
}

/// The link-local address the kernel gives an interface with this MAC
/// (`addr_gen_mode` eui64, the default): RFC 4291 appendix A.
pub fn eui64_link_local(mac: [u8; 6]) -> [u8; 16] {
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
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
        out.push(Rule::new(ETH_P_IP, Pass).sent_by(mac).at(12, a));
    }
    // ARP (Ethernet/IPv4): sha at 8..14, spa at 14..18.
    for a in v4.iter().chain(std::iter::once(&[0u8; 4])) {
        let mut rule = Rule::new(ETH_P_ARP, Pass).sent_by(mac);
        if let Some(mac) = mac {
            rule = rule.at(8, &mac);
        }
        out.push(rule.at(14, a));
    }
    // IPv6: next header at 6, source at 8..24, ICMPv6 type at 40, ND target
    // at 48..64 (assuming no extension headers, see docs/network.md).
    let (link_local, link_local_mask): (Vec<u8>, Vec<u8>) = match mac {
        Some(mac) => (eui64_link_local(mac).to_vec(), vec![0xff; 16]),
        None => (vec![0xfe, 0x80], vec![0xff, 0xc0]),
    };
    for a in &v6 {
        out.push(
            Rule::new(ETH_P_IPV6, Pass)
                .sent_by(mac)
                .at(6, &[ICMPV6])
                .at(40, &[ND_NEIGHBOR_ADVERT])
                .at(48, a),
        );
    }
    out.push(
        Rule::new(ETH_P_IPV6, Pass)
            .sent_by(mac)
            .at(6, &[ICMPV6])
            .at(40, &[ND_NEIGHBOR_ADVERT])
            .masked(48, &link_local, &link_local_mask),
    );
    for kind in [ND_NEIGHBOR_ADVERT, ND_ROUTER_ADVERT, ND_REDIRECT] {
        out.push(Rule::new(ETH_P_IPV6, Drop).at(6, &[ICMPV6]).at(40, &[kind]));
    }
    // Extension headers would hide an ICMPv6 type from the checks above.
    // The one a guest legitimately sends is the 8-byte hop-by-hop header
    // (router alert) in front of MLD, from a link-local or unspecified
    // source: admit exactly that, then drop every hop-by-hop, routing and
    // destination-options header. (Fragments may pass: Linux ignores
    // fragmented ND messages, RFC 6980.)
    for kind in MLD_TYPES {
        for (src, mask) in [
            (&link_local[..], &link_local_mask[..]),
            (&[0u8; 16][..], &[0xffu8; 16][..]),
        ] {
            out.push(
                Rule::new(ETH_P_IPV6, Pass)
                    .sent_by(mac)
                    .at(6, &[IPV6_HOPOPTS])
                    .masked(8, src, mask)
                    .at(40, &[ICMPV6, 0])
                    .at(48, &[kind]),
            );
        }
    }
    for header in [IPV6_HOPOPTS, IPV6_ROUTING, IPV6_DSTOPTS] {
        out.push(Rule::new(ETH_P_IPV6, Drop).at(6, &[header]));
    }
    for a in &v6 {
        out.push(Rule::new(ETH_P_IPV6, Pass).sent_by(mac).at(8, a));
    }
    out.push(
        Rule::new(ETH_P_IPV6, Pass)
            .sent_by(mac)
            .masked(8, &link_local, &link_local_mask),
    );
    out.push(Rule::new(ETH_P_IPV6, Pass).sent_by(mac).at(8, &[0u8; 16]));
    out.push(Rule::new(ETH_P_ALL, Drop));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter (the subset `compile` emits), so the
    /// compiled policy can be checked against hand-made frames.
    fn run(prog: &[SockFilter], frame: &[u8], vlan: bool) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS if i.k == AD_VLAN_TAG_PRESENT => a = vlan as u32,
                LD_W_ABS => match frame.get(i.k as usize..i.k as usize + 4) {
                    Some(b) => a = u32::from_be_bytes(b.try_into().unwrap()),
                    None => return 0,
                },
                LD_H_ABS => match frame.get(i.k as usize..i.k as usize + 2) {
                    Some(b) => a = u32::from(u16::from_be_bytes(b.try_into().unwrap())),
                    None => return 0,
                },
                LD_W_LEN => a = frame.len() as u32,
                ALU_AND_K => a &= i.k,
                JMP_JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JMP_JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn ipv4(src_mac: [u8; 6], src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&[10, 0, 0, 3]);
        ip.extend_from_slice(&[0; 8]);
        f.extend(ip);
        f
    }

    fn arp(src_mac: [u8; 6], sha: [u8; 6], spa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&spa);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 0, 0, 3]);
        f
    }

    fn ipv6(src_mac: [u8; 6], src: [u8; 16], icmp: Option<(u8, [u8; 16])>) -> Vec<u8> {
        let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32]);
        f.push(if icmp.is_some() { 58 } else { 17 });
        f.push(255);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        match icmp {
            Some((kind, target)) => {
                f.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
                f.extend_from_slice(&target);
            }
            None => f.extend_from_slice(&[0; 24]),
        }
        f
    }

    #[test]
    fn words_are_aligned_with_byte_masks() {
        let rule = Rule::new(ETH_P_IPV6, Verdict::Pass)
            .at(6, &[58])
            .at(40, &[136]);
        assert_eq!(
            rule.words(),
            vec![
                (4, 0x0000_3a00, 0x0000_ff00),
                (40, 0x8800_0000, 0xff00_0000)
            ]
        );
        let mac = Rule::new(ETH_P_IP, Verdict::Pass)
            .sent_by(Some(MAC))
            .words();
        assert_eq!(
            mac,
            vec![(-8, 0x0211_2233, u32::MAX), (-4, 0x4455_0000, 0xffff_0000)]
        );
    }

    #[test]
    fn compiled_policy_admits_only_the_guests_own_sources() {
        let addrs: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let prog = compile(&rules(Some(MAC), &addrs));
        assert!(prog.len() < MAX_INSNS);
        let other_mac = [0x02, 0, 0, 0, 0, 9];
        let own6: [u8; 16] = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let other6: [u8; 16] = "fd00::3".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let ll = eui64_link_local(MAC);
        let other_ll: [u8; 16] = "fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets();

        assert_eq!(run(&prog, &ipv4(MAC, [10, 0, 0, 2]), false), TC_ACT_OK);
        assert_eq!(run(&prog, &ipv4(MAC, [10, 0, 0, 2]), true), TC_ACT_SHOT);
        assert_eq!(run(&prog, &ipv4(MAC, [10, 0, 0, 3]), false), TC_ACT_SHOT);
        assert_eq!(
            run(&prog, &ipv4(other_mac, [10, 0, 0, 2]), false),
            TC_ACT_SHOT
        );
        // Truncated before the source address: dropped, not passed.
        assert_eq!(
            run(&prog, &ipv4(MAC, [10, 0, 0, 2])[..20], false),
            TC_ACT_SHOT
        );

        assert_eq!(run(&prog, &arp(MAC, MAC, [10, 0, 0, 2]), false), TC_ACT_OK);
        assert_eq!(run(&prog, &arp(MAC, MAC, [0, 0, 0, 0]), false), TC_ACT_OK);
        assert_eq!(
            run(&prog, &arp(MAC, MAC, [10, 0, 0, 3]), false),
            TC_ACT_SHOT
        );
        assert_eq!(
            run(&prog, &arp(MAC, other_mac, [10, 0, 0, 2]), false),
            TC_ACT_SHOT
        );

        assert_eq!(run(&prog, &ipv6(MAC, own6, None), false), TC_ACT_OK);
        assert_eq!(run(&prog, &ipv6(MAC, ll, None), false), TC_ACT_OK);
        // Another link-local address (another guest's, say) is not its own.
        assert_eq!(run(&prog, &ipv6(MAC, other_ll, None), false), TC_ACT_SHOT);
        assert_eq!(
            run(&prog, &ipv6(MAC, ll, Some((136, other_ll))), false),
            TC_ACT_SHOT
        );
        assert_eq!(
            run(&prog, &ipv6(MAC, ll, Some((136, ll))), false),
            TC_ACT_OK
        );
        assert_eq!(run(&prog, &ipv6(MAC, [0; 16], None), false), TC_ACT_OK);
        assert_eq!(run(&prog, &ipv6(MAC, other6, None), false), TC_ACT_SHOT);
        // Neighbour advertisements: own target yes, another guest's no,
        // even from a link-local source; router advertisements never.
        assert_eq!(
            run(&prog, &ipv6(MAC, ll, Some((136, own6))), false),
            TC_ACT_OK
        );
        assert_eq!(
            run(&prog, &ipv6(MAC, ll, Some((136, other6))), false),
            TC_ACT_SHOT
        );
        assert_eq!(
            run(&prog, &ipv6(MAC, ll, Some((134, [0; 16]))), false),
            TC_ACT_SHOT
        );
        assert_eq!(
            run(&prog, &ipv6(MAC, ll, Some((135, other6))), false),
            TC_ACT_OK
        );

        // An NA hidden behind a hop-by-hop header is dropped; MLD behind
        // the usual 8-byte router-alert header passes.
        let hbh = |kind: u8, target: [u8; 16]| {
            let mut f = ipv6(MAC, ll, None);
            f[14 + 6] = 0; // next header: hop-by-hop
            f.truncate(14 + 40);
            f.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]); // -> ICMPv6, router alert
            f.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
            f.extend_from_slice(&target);
            f
        };
        assert_eq!(run(&prog, &hbh(136, other6), false), TC_ACT_SHOT);
        assert_eq!(run(&prog, &hbh(143, [0; 16]), false), TC_ACT_OK);
        let mut dstopt = hbh(136, other6);
        dstopt[14 + 6] = 60;
        assert_eq!(run(&prog, &dstopt, false), TC_ACT_SHOT);

        // Anything else (here: an unknown ethertype) is dropped.
        let mut odd = ipv4(MAC, [10, 0, 0, 2]);
        odd[12] = 0x88;
        assert_eq!(run(&prog, &odd, false), TC_ACT_SHOT);
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
                    && r.matches
                        .iter()
                        .any(|m| m.0 == 8 && m.1 == eui64_link_local([2, 0, 0, 0, 0, 1]))
            })
            .unwrap();
        assert!(na_drop < ll_pass);
    }

    #[test]
    fn ipvlan_rules_do_not_match_mac() {
        let rules = rules(None, &["10.0.0.2".parse().unwrap()]);
        assert!(rules.iter().all(|r| r.matches.iter().all(|m| m.0 >= 0)));
        // Any link-local source: ipvlan guests share the parent's MAC.
        assert!(rules.iter().any(|r| {
            r.verdict == Verdict::Pass
                && r.matches
                    .iter()
                    .any(|m| m.0 == 8 && m.1 == [0xfe, 0x80] && m.2 == [0xff, 0xc0])
        }));
    }

    #[test]
    fn eui64_link_local_by_table() {
        for (mac, want) in [
            ([0x02, 0x00, 0x5e, 0x10, 0x20, 0x30], "fe80::5eff:fe10:2030"),
            (
                [0x00, 0x11, 0x22, 0x33, 0x44, 0x55],
                "fe80::211:22ff:fe33:4455",
            ),
        ] {
            let want: std::net::Ipv6Addr = want.parse().unwrap();
            assert_eq!(eui64_link_local(mac), want.octets());
        }
    }
}
