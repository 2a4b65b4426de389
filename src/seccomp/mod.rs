//! The guest's seccomp filter: a deny list decided by syscall number alone.
//!
//! Like Docker's default profile, the filter refuses (EPERM) the syscalls a
//! container has no business making even as root: loading kernel code
//! (init_module, kexec_load, bpf), reaching host objects by handle
//! (open_by_handle_at), the host clock, swap, accounting, quotas, the kernel
//! keyring, userfaultfd, perf, port I/O and io_uring. Everything else passes.
//!
//! A privileged guest (one in the host's user namespace) also may not make a
//! user namespace: in one it would hold every capability again, over
//! namespaces of its own, which is kernel attack surface the reduced
//! capability set exists to keep away (Docker refuses it the same way to
//! containers without CAP_SYS_ADMIN). `clone` and `unshare` with
//! CLONE_NEWUSER are refused (EPERM); `clone3`, whose flags live in memory a
//! filter cannot read, answers ENOSYS, so the C library falls back to
//! `clone`. Unprivileged guests already are in a user namespace of their own
//! and may nest more (systemd's PrivateUsers=, rootless containers).
//!
//! The filter is classic BPF built here by hand (a few dozen instructions) and
//! installed with seccomp(2) without NO_NEW_PRIVS, so setuid programs keep
//! working inside the guest. It inspects the architecture and the syscall
//! number, and arguments only of `clone` and `unshare` for privileged
//! guests: since Linux 5.11 the kernel proves per number that the result is
//! "allow" whatever the arguments and caches it, so every other allowed
//! syscall skips the BPF interpreter entirely.
//!
//! What this module must never do: decide on the arguments of any other
//! syscall (that would take it out of the kernel's allow cache) or let a
//! foreign-ABI syscall through unchecked (x32 numbers and 32-bit compat
//! calls are refused outright).

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
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

// offsetof(struct seccomp_data, nr / arch).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low 32 bits of args[0] (little endian), where clone and unshare take
/// their flags.
const OFF_ARG0_LO: u32 = 16;
const CLONE_NEWUSER: u32 = libc::CLONE_NEWUSER as u32;

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

/// Which guest the filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GuestKind {
    /// In a user namespace of its own: may nest more.
    Unprivileged,
    /// In the host's user namespace: may not make one.
    Privileged,
}

impl GuestKind {
    /// The kind of a guest with (true) or without a user namespace.
    pub fn of(has_userns: bool) -> GuestKind {
        if has_userns {
            GuestKind::Unprivileged
        } else {
            GuestKind::Privileged
        }
    }
}

/// Build the filter program. Layout:
///
/// ```text
///   ld arch; jeq NATIVE ? next : foreign
///   ld nr;   [x86_64: jge X32_BIT ? deny]
///   [privileged: jeq clone3 ? foreign; jeq clone ? flags; jeq unshare ? flags]
///   jeq nr_1 ? deny ... jeq nr_n ? deny
///   ret ALLOW
/// [flags: ld args[0]; jset CLONE_NEWUSER ? deny; ret ALLOW]
/// deny:    ret ERRNO(EPERM)
/// foreign: ret ERRNO(ENOSYS)
/// ```
pub fn build(kind: GuestKind) -> Vec<libc::sock_filter> {
    let denied = denied();
    let mut p = Vec::with_capacity(denied.len() + 16);
    p.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH));
    let arch_check = p.len();
    p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, 0)); // jf patched below
    p.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR));
    let mut deny_jumps = Vec::new();
    let mut enosys_jumps = Vec::new();
    let mut flag_jumps = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        deny_jumps.push(p.len());
        p.push(jump(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 0));
    }
    if kind == GuestKind::Privileged {
        enosys_jumps.push(p.len());
        p.push(jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::SYS_clone3 as u32,
            0,
            0,
        ));
        for nr in [libc::SYS_clone, libc::SYS_unshare] {
            flag_jumps.push(p.len());
            p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 0));
        }
    }
    for (_, nr) in &denied {
        deny_jumps.push(p.len());
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *nr as u32, 0, 0));
    }
    p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    let flags = p.len();
    if kind == GuestKind::Privileged {
        p.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARG0_LO));
        deny_jumps.push(p.len());
        p.push(jump(BPF_JMP | BPF_JSET | BPF_K, CLONE_NEWUSER, 0, 0));
        p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
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
    let offset =
        |from: usize, to: usize| u8::try_from(to - from - 1).expect("program fits 8-bit jumps");
    for j in deny_jumps {
        p[j].jt = offset(j, deny);
    }
    for j in enosys_jumps {
        p[j].jt = offset(j, foreign);
    }
    for j in flag_jumps {
        p[j].jt = offset(j, flags);
    }
    p[arch_check].jf = offset(arch_check, foreign);
    p
}

/// Evaluate the program for (arch, nr, low 32 bits of args[0]) like the
/// kernel would: a reference interpreter for the instruction subset `build`
/// emits, used by the tests.
pub fn evaluate(prog: &[libc::sock_filter], arch: u32, nr: u32, arg0: u32) -> u32 {
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = &prog[pc];
        match i.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => {
                acc = match i.k {
                    OFF_ARCH => arch,
                    OFF_NR => nr,
                    OFF_ARG0_LO => arg0,
                    k => panic!("unexpected load offset {k}"),
                };
                pc += 1;
            }
            c if c == BPF_JMP | BPF_JSET | BPF_K => {
                pc += 1 + if acc & i.k != 0 { i.jt } else { i.jf } as usize;
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

    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const NEWUSER: u32 = CLONE_NEWUSER;
    const NEWNET: u32 = libc::CLONE_NEWNET as u32;

    #[test]
    fn denies_listed_and_allows_the_rest() {
        for kind in [GuestKind::Unprivileged, GuestKind::Privileged] {
            let p = build(kind);
            for (name, nr) in denied() {
                assert_eq!(evaluate(&p, NATIVE_ARCH, nr as u32, 0), EPERM, "{name}");
            }
            for nr in [
                libc::SYS_read,
                libc::SYS_write,
                libc::SYS_openat,
                libc::SYS_reboot,
                libc::SYS_mount,
                libc::SYS_execve,
                libc::SYS_setns,
            ] {
                assert_eq!(
                    evaluate(&p, NATIVE_ARCH, nr as u32, NEWUSER),
                    SECCOMP_RET_ALLOW,
                    "{kind:?} nr {nr}"
                );
            }
        }
    }

    #[test]
    fn only_privileged_guests_are_kept_from_user_namespaces() {
        // (kind, syscall, flags) -> verdict, by table.
        let sig = libc::SIGCHLD as u32;
        for (kind, nr, flags, want) in [
            (
                GuestKind::Privileged,
                libc::SYS_clone,
                sig,
                SECCOMP_RET_ALLOW,
            ),
            (
                GuestKind::Privileged,
                libc::SYS_clone,
                sig | NEWNET,
                SECCOMP_RET_ALLOW,
            ),
            (GuestKind::Privileged, libc::SYS_clone, sig | NEWUSER, EPERM),
            (
                GuestKind::Privileged,
                libc::SYS_clone,
                NEWUSER | NEWNET,
                EPERM,
            ),
            (
                GuestKind::Privileged,
                libc::SYS_unshare,
                NEWNET,
                SECCOMP_RET_ALLOW,
            ),
            (GuestKind::Privileged, libc::SYS_unshare, NEWUSER, EPERM),
            (GuestKind::Privileged, libc::SYS_clone3, 0, ENOSYS),
            (
                GuestKind::Unprivileged,
                libc::SYS_clone,
                sig | NEWUSER,
                SECCOMP_RET_ALLOW,
            ),
            (
                GuestKind::Unprivileged,
                libc::SYS_unshare,
                NEWUSER,
                SECCOMP_RET_ALLOW,
            ),
            (
                GuestKind::Unprivileged,
                libc::SYS_clone3,
                0,
                SECCOMP_RET_ALLOW,
            ),
        ] {
            assert_eq!(
                evaluate(&build(kind), NATIVE_ARCH, nr as u32, flags),
                want,
                "{kind:?} nr {nr} flags {flags:#x}"
            );
        }
    }

    #[test]
    fn foreign_abis_are_refused() {
        for kind in [GuestKind::Unprivileged, GuestKind::Privileged] {
            let p = build(kind);
            assert_eq!(evaluate(&p, 0x4000_0003, 3, 0), ENOSYS);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                evaluate(&p, NATIVE_ARCH, X32_SYSCALL_BIT | libc::SYS_read as u32, 0),
                EPERM
            );
        }
    }

    #[test]
    fn arguments_are_read_only_for_clone_and_unshare() {
        // The kernel's allow cache needs every other syscall decided by
        // number: an argument load may only follow the clone/unshare jumps.
        assert!(
            build(GuestKind::Unprivileged)
                .iter()
                .all(|i| i.code != BPF_LD | BPF_W | BPF_ABS || i.k == OFF_NR || i.k == OFF_ARCH)
        );
        let p = build(GuestKind::Privileged);
        let arg_loads: Vec<usize> = (0..p.len())
            .filter(|&i| p[i].code == BPF_LD | BPF_W | BPF_ABS && p[i].k == OFF_ARG0_LO)
            .collect();
        assert_eq!(arg_loads.len(), 1);
        // Every syscall but clone and unshare returns before reaching it:
        // evaluating them with and without the flag gives the same verdict.
        for nr in 0..450u32 {
            if nr == libc::SYS_clone as u32 || nr == libc::SYS_unshare as u32 {
                continue;
            }
            assert_eq!(
                evaluate(&p, NATIVE_ARCH, nr, 0),
                evaluate(&p, NATIVE_ARCH, nr, u32::MAX),
                "nr {nr} depends on its arguments"
            );
        }
    }
}
