//! `vsctl plan` with nothing to change, over 100, 1,000 and 5,000 guest files:
//! the real binary, the real files, median of repeated runs. Target: under
//! 50 ms for 1,000 guests, and cost linear in the number of guests.
//!
//! Run: `cargo bench --bench plan`

use std::process::Command;
use std::time::{Duration, Instant};

fn guest(i: usize) -> String {
    let n = i + 2;
    format!(
        "template = \"busybox\"\nhostname = \"g{i}.example.test\"\nstate = \"stopped\"\n\
         [network]\naddresses = [\"10.{}.{}.{}/8\"]\ngateway = \"10.0.0.1\"\n\
         [limits]\nmemory = \"256MiB\"\ncpus = 0.5\npids = 256\n",
        n >> 16,
        (n >> 8) & 255,
        n & 255,
    )
}

fn vsctl(root: &std::path::Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_vsctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    println!("| guests | vsctl plan (no changes), median | per guest | vsctl validate, median |");
    println!("|---:|---:|---:|---:|");
    for count in [100usize, 1_000, 5_000] {
        let dir = tempfile::tempdir().unwrap();
        let guests = dir.path().join("etc/vsctl/guests.d");
        std::fs::create_dir_all(&guests).unwrap();
        // Room for 5,000 unprivileged guests' uid ranges (the default is 4,096).
        std::fs::write(
            dir.path().join("etc/vsctl/vsctl.toml"),
            "[userns]\nranges = 8192\n",
        )
        .unwrap();
        for i in 0..count {
            std::fs::write(guests.join(format!("g{i}.toml")), guest(i)).unwrap();
        }
        vsctl(dir.path(), &["apply"]);
        let runs = if count > 1_000 { 7 } else { 21 };
        let plan = median((0..runs).map(|_| vsctl(dir.path(), &["plan"])).collect());
        let validate = median(
            (0..runs)
                .map(|_| vsctl(dir.path(), &["validate"]))
                .collect(),
        );
        println!(
            "| {count} | {:.1} ms | {:.1} µs | {:.1} ms |",
            plan.as_secs_f64() * 1e3,
            plan.as_secs_f64() * 1e6 / count as f64,
            validate.as_secs_f64() * 1e3
        );
    }
}
