//! Device access policy for cgroup v2: an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE attached to the guest's cgroup.
//!
//! cgroup v2 has no devices.allow/deny files; the kernel instead runs an eBPF
//! program on every open/mknod of a device node by a member of the cgroup.
//! The program built here allows exactly the rules in
//! [`super::DEVICE_ALLOW`] (character devices, any access) and denies
//! everything else, block devices included. It is attached with
//! BPF_F_ALLOW_MULTI so programs of ancestors (systemd's) still run: access
//! needs every program's consent.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::sys::{self, BpfInsn};

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_DEVCG_DEV_CHAR: i32 = 2;
const BPF_DEVCG_DEV_BLOCK: i32 = 1;

/// One rule: device type ('c' or 'b'), major, minor (None = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevRule {
    pub kind: char,
    pub major: u32,
    pub minor: Option<u32>,
}

/// Parse the `c 1:3 rwm` form used by the v1 allow list.
pub fn parse_rule(s: &str) -> Option<DevRule> {
    let mut it = s.split_whitespace();
    let kind = it.next()?.chars().next()?;
    let (maj, min) = it.next()?.split_once(':')?;
    Some(DevRule {
        kind,
        major: maj.parse().ok()?,
        minor: if min == "*" {
            None
        } else {
            Some(min.parse().ok()?)
        },
    })
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// eBPF opcodes.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

/// The program: r2 = device type, r4 = major, r5 = minor (from struct
/// bpf_cgroup_dev_ctx { access_type, major, minor }); one block per rule
/// returning 1 on match; 0 at the end.
pub fn program(rules: &[DevRule]) -> Vec<BpfInsn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules {
        let ty = if r.kind == 'b' {
            BPF_DEVCG_DEV_BLOCK
        } else {
            BPF_DEVCG_DEV_CHAR
        };
        let n_checks = if r.minor.is_some() { 3 } else { 2 };
        // Each check jumps over the rest of this block (remaining checks + mov + exit).
        let mut block = Vec::new();
        let mut left = n_checks;
        let mut push_check = |reg: u8, imm: i32, block: &mut Vec<BpfInsn>| {
            left -= 1;
            block.push(insn(JMP_JNE_K, reg, 0, (left + 2) as i16, imm));
        };
        push_check(2, ty, &mut block);
        push_check(4, r.major as i32, &mut block);
        if let Some(m) = r.minor {
            push_check(5, m as i32, &mut block);
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Load the program for `rules` and attach it to the cgroup v2 directory.
pub fn attach(cgroup_dir: &Path, rules: &[DevRule]) -> io::Result<()> {
    let prog = sys::bpf_prog_load(
        BPF_PROG_TYPE_CGROUP_DEVICE,
        BPF_CGROUP_DEVICE,
        &program(rules),
    )?;
    let dir = std::fs::File::open(cgroup_dir)?;
    sys::bpf_prog_attach(
        dir.as_raw_fd(),
        prog.as_raw_fd(),
        BPF_CGROUP_DEVICE,
        BPF_F_ALLOW_MULTI,
    )
}

/// The default rules, from the shared allow list.
pub fn default_rules() -> Vec<DevRule> {
    super::DEVICE_ALLOW
        .iter()
        .filter_map(|r| parse_rule(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interpret the emitted subset, like the kernel would.
    fn run(p: &[BpfInsn], ty: u32, major: u32, minor: u32) -> u64 {
        let ctx = [ty | (6 << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, _src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[i.off as usize / 4] as u64,
                ALU64_AND_K => r[dst] &= i.imm as u64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                ALU64_MOV_K => r[dst] = i.imm as u64,
                JMP_JNE_K => {
                    if r[dst] != i.imm as u64 {
                        pc = (pc as i64 + i.off as i64) as usize;
                    }
                }
                JMP_EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn allows_listed_character_devices_only() {
        let p = program(&default_rules());
        assert_eq!(run(&p, 2, 1, 3), 1, "null");
        assert_eq!(run(&p, 2, 1, 9), 1, "urandom");
        assert_eq!(run(&p, 2, 136, 42), 1, "pts wildcard");
        assert_eq!(run(&p, 2, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&p, 1, 1, 3), 0, "block 1:3");
        assert_eq!(run(&p, 1, 254, 0), 0, "host disk");
        assert_eq!(run(&p, 2, 4, 0), 0, "tty0");
    }

    #[test]
    fn parses_rules() {
        assert_eq!(
            parse_rule("c 136:* rwm"),
            Some(DevRule {
                kind: 'c',
                major: 136,
                minor: None
            })
        );
        assert_eq!(
            parse_rule("b 8:0 r"),
            Some(DevRule {
                kind: 'b',
                major: 8,
                minor: Some(0)
            })
        );
        assert_eq!(parse_rule("junk"), None);
    }
}
