//! The guest's seccomp filter: a deny list decided by syscall number alone.
//!
//! Like Docker's default profile, the filter refuses (EPERM) the syscalls a
//! container has no business making even as root: loading kernel code
//! (init_module, kexec_load, bpf), reaching host objects by handle
//! (open_by_handle_at), the host clock, swap, accounting, quotas, the kernel
//! keyring, userfaultfd, perf, port I/O and io_uring. Everything else passes.
//!
//! The filter is classic BPF built here by hand (a few dozen instructions) and
//! installed with seccomp(2) without NO_NEW_PRIVS, so setuid programs keep
//! working inside the guest. It inspects only the architecture and the
//! syscall number, never arguments: since Linux 5.11 the kernel then proves
//! per number that the result is "allow" and caches it, so allowed syscalls
//! skip the BPF interpreter entirely and run at host speed.
//!
//! What this module must never do: decide on syscall arguments (that would
//! defeat the kernel's allow cache) or let a foreign-ABI syscall through
//! unchecked (x32 numbers and 32-bit compat calls are refused outright).

#![deny(unsafe_code)]

use std::io;

// BPF opcodes (linux/bpf_common.h, linux/filter.h).
const BPF_LD: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// offsetof(struct seccomp_data, nr / arch).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// Bit set on x32 syscall numbers, which share AUDIT_ARCH_X86_64.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The denied syscalls, by name and number, for this architecture.
pub fn denied() -> Vec<(&'static str, i64)> {
    macro_rules! sc {
        ($($n:ident),* $(,)?) => { vec![$((stringify!($n), libc::$n as i64)),*] };
    }
    #[allow(unused_mut)]
    let mut v = sc![
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_open_by_handle_at,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_userfaultfd,
        SYS_swapon,
        SYS_swapoff,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_adjtimex,
        SYS_acct,
        SYS_quotactl,
        SYS_quotactl_fd,
        SYS_lookup_dcookie,
        SYS_syslog,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend(sc![
        SYS_iopl,
        SYS_ioperm,
        SYS_nfsservctl,
        SYS_uselib,
        SYS__sysctl,
    ]);
    v.iter_mut()
        .for_each(|(n, _)| *n = n.trim_start_matches("SYS_"));
    v
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Build the filter program. Layout:
///
/// ```text
///   ld arch; jeq NATIVE ? next : foreign
///   ld nr;   [x86_64: jge X32_BIT ? deny]
///   jeq nr_1 ? deny ... jeq nr_n ? deny
///   ret ALLOW
/// deny:    ret ERRNO(EPERM)
/// foreign: ret ERRNO(ENOSYS)
/// ```
pub fn build() -> Vec<libc::sock_filter> {
    let denied = denied();
    let mut p = Vec::with_capacity(denied.len() + 8);
    p.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH));
    let arch_check = p.len();
    p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, 0)); // jf patched below
    p.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR));
    let mut deny_jumps = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        deny_jumps.push(p.len());
        p.push(jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 0));
    }
    for (_, nr) in &denied {
        deny_jumps.push(p.len());
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *nr as u32, 0, 0));
    }
    p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    let deny = p.len();
    p.push(stmt(
        BPF_RET | BPF_K,
        SECCOMP_RET_ERRNO | libc::EPERM as u32,
    ));
    let foreign = p.len();
    p.push(stmt(
        BPF_RET | BPF_K,
        SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    ));
    for j in deny_jumps {
        p[j].jt = u8::try_from(deny - j - 1).expect("deny list fits 8-bit jumps");
    }
    p[arch_check].jf = u8::try_from(foreign - arch_check - 1).expect("short program");
    p
}

/// Evaluate the program for (arch, nr) like the kernel would: a reference
/// interpreter for the instruction subset `build` emits, used by the tests.
pub fn evaluate(prog: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = &prog[pc];
        match i.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => {
                acc = if i.k == OFF_ARCH { arch } else { nr };
                pc += 1;
            }
            c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                pc += 1 + if acc == i.k { i.jt } else { i.jf } as usize;
            }
            c if c == BPF_JMP | BPF_JGE | BPF_K => {
                pc += 1 + if acc >= i.k { i.jt } else { i.jf } as usize;
            }
            c if c == BPF_RET | BPF_K => return i.k,
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

/// Install the filter on the calling thread (inherited across fork and exec).
pub fn install(prog: &[libc::sock_filter]) -> io::Result<()> {
    crate::sys::seccomp_set_filter(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denies_listed_and_allows_the_rest() {
        let p = build();
        let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        for (name, nr) in denied() {
            assert_eq!(evaluate(&p, NATIVE_ARCH, nr as u32), eperm, "{name}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_clone,
            libc::SYS_reboot,
            libc::SYS_mount,
            libc::SYS_execve,
        ] {
            assert_eq!(
                evaluate(&p, NATIVE_ARCH, nr as u32),
                SECCOMP_RET_ALLOW,
                "nr {nr}"
            );
        }
    }

    #[test]
    fn foreign_abis_are_refused() {
        let p = build();
        assert_eq!(
            evaluate(&p, 0x4000_0003, 3),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            evaluate(&p, NATIVE_ARCH, X32_SYSCALL_BIT | libc::SYS_read as u32),
            SECCOMP_RET_ERRNO | libc::EPERM as u32
        );
    }

    #[test]
    fn program_is_number_only() {
        // Only loads of nr/arch: the kernel's allow cache needs exactly that.
        for i in build() {
            if i.code == BPF_LD | BPF_W | BPF_ABS {
                assert!(i.k == OFF_NR || i.k == OFF_ARCH);
            }
        }
    }
}
