//! What a seccomp filter costs a syscall-heavy loop: 2M one-byte reads of
//! /dev/zero and writes to /dev/null (what `dd bs=1 count=2M` does), with
//! no filter, with a one-instruction allow-all filter (the least any
//! seccomp filter can cost: the kernel's entry path alone), and with
//! vsctl's guest filter. Variants run as separate processes, interleaved,
//! so drift hits all of them alike. Prints medians and ratios.
//!
//! Run: `cargo bench --bench seccomp` (no root needed).

use std::fs::OpenOptions;
use std::process::Command;
use std::time::Instant;

const ROUNDS: usize = 9;
const CALLS: usize = 2_000_000;
const VARIANTS: [&str; 3] = ["none", "allow-all", "vsctl"];
const CHILD_ENV: &str = "VSCTL_BENCH_SECCOMP_VARIANT";

fn child(variant: &str) {
    nix::sys::prctl::set_no_new_privs().expect("no_new_privs");
    match variant {
        "none" => {}
        "allow-all" => {
            let allow = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            vsctl::seccomp::install(&allow).expect("install allow-all filter");
        }
        "vsctl" => vsctl::seccomp::install(&vsctl::seccomp::build(
            vsctl::seccomp::GuestKind::Unprivileged,
        ))
        .expect("install filter"),
        other => panic!("unknown variant {other}"),
    }
    let zero = OpenOptions::new().read(true).open("/dev/zero").unwrap();
    let null = OpenOptions::new().write(true).open("/dev/null").unwrap();
    let mut byte = [0u8; 1];
    let t = Instant::now();
    for _ in 0..CALLS {
        nix::unistd::read(&zero, &mut byte).unwrap();
        nix::unistd::write(&null, &byte).unwrap();
    }
    println!("{}", t.elapsed().as_secs_f64() * 1000.0);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if let Ok(variant) = std::env::var(CHILD_ENV) {
        return child(&variant);
    }
    let exe = std::env::current_exe().unwrap();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for _ in 0..ROUNDS {
        for (i, v) in VARIANTS.iter().enumerate() {
            let out = Command::new(&exe).env(CHILD_ENV, v).output().unwrap();
            assert!(
                out.status.success(),
                "{v}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            times[i].push(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap());
        }
    }
    let base = median(&mut times[0].clone());
    println!("2M read+write pairs of one byte, median of {ROUNDS}:");
    println!("| filter | ms | ratio to none |");
    println!("|---|---:|---:|");
    for (i, v) in VARIANTS.iter().enumerate() {
        let m = median(&mut times[i]);
        println!("| {v} | {m:.0} | {:.3} |", m / base);
    }
}
