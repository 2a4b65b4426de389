//! The guest's seccomp filter: a deny list decided by syscall number alone.
//!
//! Like Docker's default profile, the filter refuses (EPERM) the syscalls a
//! container has no business making even as root: loading kernel code
//! (init_module, kexec_load, bpf), reaching host objects by handle
//! (open_by_handle_at), the host clock, swap, accounting, quotas, the kernel
//! keyring, userfaultfd, perf, port I/O and io_uring. Everything else passes.
//!
//! A few syscalls are decided by their first argument ([`arg_rules`]):
//!
//! - `socket` and `socketpair` with AF_VSOCK fail with EAFNOSUPPORT (what a
//!   kernel without vsock answers) in every guest. vsock is not
//!   network-namespaced: a guest's vsock socket lives in the host's (or the
//!   VM's) port space, where it can take ports from the host and reach the
//!   hypervisor's channel. Docker's default profile refuses address family
//!   40 the same way.
//! - A privileged guest (one in the host's user namespace) also may not make
//!   a user namespace: in one it would hold every capability again, over
//!   namespaces of its own, which is kernel attack surface the reduced
//!   capability set exists to keep away (Docker refuses it the same way to
//!   containers without CAP_SYS_ADMIN). `clone` and `unshare` with
//!   CLONE_NEWUSER are refused (EPERM); `clone3`, whose flags live in memory
//!   a filter cannot read, answers ENOSYS, so the C library falls back to
//!   `clone`. Unprivileged guests already are in a user namespace of their
//!   own and may nest more (systemd's PrivateUsers=, rootless containers).
//!
//! The filter is classic BPF built here by hand (a few dozen instructions) and
//! installed with seccomp(2) without NO_NEW_PRIVS, so setuid programs keep
//! working inside the guest. It inspects the architecture and the syscall
//! number, and the first argument only of the syscalls of [`arg_rules`]:
//! since Linux 5.11 the kernel proves per number that the result is "allow"
//! whatever the arguments and caches it, so every other allowed syscall
//! skips the BPF interpreter entirely.
//!
//! What this module must never do: decide on the arguments of any syscall
//! but those of [`arg_rules`] (that would take it out of the kernel's allow
//! cache) or let a foreign-ABI syscall through unchecked (x32 numbers and
//! 32-bit compat calls, `socketcall` among them, are refused outright).

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
/// The low 32 bits of args[0] (little endian): the flags of clone and
/// unshare, the address family of socket and socketpair (an `int`, so the
/// kernel reads no more).
const OFF_ARG0_LO: u32 = 16;
const CLONE_NEWUSER: u32 = libc::CLONE_NEWUSER as u32;
const AF_VSOCK: u32 = libc::AF_VSOCK as u32;

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

/// What a syscall's first argument (its low 32 bits) is tested for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgTest {
    /// Any of these bits set (BPF `jset`).
    AnyBit(u32),
    /// Exactly this value (BPF `jeq`).
    Equals(u32),
}

/// Syscalls refused with `errno` when their first argument passes `test`,
/// and allowed otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgRule {
    pub syscalls: Vec<(&'static str, i64)>,
    pub test: ArgTest,
    pub errno: i32,
}

/// The syscalls this kind of guest gets decided by their first argument;
/// every other syscall is decided by its number alone.
pub fn arg_rules(kind: GuestKind) -> Vec<ArgRule> {
    let mut rules = vec![ArgRule {
        syscalls: vec![
            ("socket", libc::SYS_socket),
            ("socketpair", libc::SYS_socketpair),
        ],
        test: ArgTest::Equals(AF_VSOCK),
        errno: libc::EAFNOSUPPORT,
    }];
    if kind == GuestKind::Privileged {
        rules.push(ArgRule {
            syscalls: vec![("clone", libc::SYS_clone), ("unshare", libc::SYS_unshare)],
            test: ArgTest::AnyBit(CLONE_NEWUSER),
            errno: libc::EPERM,
        });
    }
    rules
}

/// Build the filter program. Layout:
///
/// ```text
///   ld arch; jeq NATIVE ? next : foreign
///   ld nr;   [x86_64: jge X32_BIT ? deny]
///   [privileged: jeq clone3 ? foreign]
///   jeq rule_nr_1 ? rule_1 ... (every syscall of every argument rule)
///   jeq nr_1 ? deny ... jeq nr_n ? deny
///   ret ALLOW
/// [rule_k: ld args[0]; jset/jeq K ? +1 : +0; ret ALLOW; ret ERRNO(errno_k)]
/// deny:    ret ERRNO(EPERM)
/// foreign: ret ERRNO(ENOSYS)
/// ```
pub fn build(kind: GuestKind) -> Vec<libc::sock_filter> {
    let denied = denied();
    let rules = arg_rules(kind);
    let mut p = Vec::with_capacity(denied.len() + 32);
    p.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH));
    let arch_check = p.len();
    p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, 0)); // jf patched below
    p.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR));
    let mut deny_jumps = Vec::new();
    let mut enosys_jumps = Vec::new();
    // (jump, index of the rule it leads to)
    let mut rule_jumps = Vec::new();
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
    }
    for (index, rule) in rules.iter().enumerate() {
        for (_, nr) in &rule.syscalls {
            rule_jumps.push((p.len(), index));
            p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *nr as u32, 0, 0));
        }
    }
    for (_, nr) in &denied {
        deny_jumps.push(p.len());
        p.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *nr as u32, 0, 0));
    }
    p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    let mut rule_starts = Vec::new();
    for rule in &rules {
        rule_starts.push(p.len());
        p.push(stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARG0_LO));
        p.push(match rule.test {
            ArgTest::AnyBit(bits) => jump(BPF_JMP | BPF_JSET | BPF_K, bits, 1, 0),
            ArgTest::Equals(value) => jump(BPF_JMP | BPF_JEQ | BPF_K, value, 1, 0),
        });
        p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
        p.push(stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | rule.errno as u32));
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
    for (j, rule) in rule_jumps {
        p[j].jt = offset(j, rule_starts[rule]);
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
    fn vsock_sockets_are_refused_in_every_guest() {
        const EAFNOSUPPORT: u32 = SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
        // (syscall, address family) -> verdict, for both kinds of guest.
        let table: &[(i64, i32, u32)] = &[
            (libc::SYS_socket, libc::AF_VSOCK, EAFNOSUPPORT),
            (libc::SYS_socketpair, libc::AF_VSOCK, EAFNOSUPPORT),
            (libc::SYS_socket, libc::AF_INET, SECCOMP_RET_ALLOW),
            (libc::SYS_socket, libc::AF_INET6, SECCOMP_RET_ALLOW),
            (libc::SYS_socket, libc::AF_UNIX, SECCOMP_RET_ALLOW),
            (libc::SYS_socket, libc::AF_NETLINK, SECCOMP_RET_ALLOW),
            (libc::SYS_socket, libc::AF_PACKET, SECCOMP_RET_ALLOW),
            (libc::SYS_socketpair, libc::AF_UNIX, SECCOMP_RET_ALLOW),
            // Near misses: only the one family is refused.
            (libc::SYS_socket, libc::AF_VSOCK - 1, SECCOMP_RET_ALLOW),
            (libc::SYS_socket, libc::AF_VSOCK + 1, SECCOMP_RET_ALLOW),
            // A family in the flags' place of another syscall means nothing.
            (libc::SYS_read, libc::AF_VSOCK, SECCOMP_RET_ALLOW),
            (libc::SYS_bind, libc::AF_VSOCK, SECCOMP_RET_ALLOW),
        ];
        for kind in [GuestKind::Unprivileged, GuestKind::Privileged] {
            let p = build(kind);
            for (nr, family, want) in table {
                assert_eq!(
                    evaluate(&p, NATIVE_ARCH, *nr as u32, *family as u32),
                    *want,
                    "{kind:?} nr {nr} family {family}"
                );
            }
        }
    }

    #[test]
    fn arguments_are_read_only_for_the_argument_rules() {
        // The kernel's allow cache needs every other syscall decided by
        // number: an argument load only follows the jumps of the rules.
        for kind in [GuestKind::Unprivileged, GuestKind::Privileged] {
            let p = build(kind);
            let rules = arg_rules(kind);
            let arg_loads = p
                .iter()
                .filter(|i| i.code == BPF_LD | BPF_W | BPF_ABS && i.k == OFF_ARG0_LO)
                .count();
            assert_eq!(arg_loads, rules.len(), "{kind:?}");
            let ruled: Vec<u32> = rules
                .iter()
                .flat_map(|r| r.syscalls.iter().map(|(_, nr)| *nr as u32))
                .collect();
            // Every other syscall gives the same verdict whatever its
            // first argument.
            for nr in (0..460u32).filter(|nr| !ruled.contains(nr)) {
                let verdict = evaluate(&p, NATIVE_ARCH, nr, 0);
                for arg in [u32::MAX, AF_VSOCK, CLONE_NEWUSER, 1] {
                    assert_eq!(
                        evaluate(&p, NATIVE_ARCH, nr, arg),
                        verdict,
                        "{kind:?} nr {nr} depends on its arguments"
                    );
                }
            }
            // And each ruled syscall does depend on it.
            for nr in ruled {
                let verdicts: std::collections::BTreeSet<u32> = [0, AF_VSOCK, CLONE_NEWUSER]
                    .into_iter()
                    .map(|arg| evaluate(&p, NATIVE_ARCH, nr, arg))
                    .collect();
                assert!(verdicts.len() > 1, "{kind:?} nr {nr} ignores its argument");
            }
        }
        // Unprivileged guests read arguments only of socket and socketpair.
        let names: Vec<&str> = arg_rules(GuestKind::Unprivileged)
            .iter()
            .flat_map(|r| r.syscalls.iter().map(|(n, _)| *n))
            .collect();
        assert_eq!(names, ["socket", "socketpair"]);
    }
}
