//! In-process clone timing: `vsctl::rootfs::clone_tree` alone (no process
//! start, no config, no syncfs, no rename), to tell the clone walk's own cost
//! from the rest of `vsctl apply` in benches/clone.sh, which runs this once
//! per round, interleaved with `cp -a --reflink=always` and `vsctl apply`.
//!
//! Run: `cargo bench --bench clone -- SRC DST_DIR [ROUNDS] [reflink|copy]`.
//! Clones SRC to DST_DIR/clone-N (left in place: deleting them is not what is
//! measured) and prints one line per round (`clone_ms N`) and the median.
//! Without SRC (a plain `cargo bench`) it says so and does nothing: it needs
//! a real tree on a reflink-capable filesystem, which benches/clone.sh makes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vsctl::rootfs::{self, CloneStrategy};

fn main() {
    // cargo passes `--bench` (and libtest-style flags) to harness = false
    // targets; only the positional arguments are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [src, dst_dir, rest @ ..] = args.as_slice() else {
        eprintln!(
            "clone bench: no source tree given, skipping \
             (usage: cargo bench --bench clone -- SRC DST_DIR [ROUNDS] [reflink|copy]; \
             benches/clone.sh runs it)"
        );
        return;
    };
    let rounds: usize = rest.first().map_or(1, |r| r.parse().expect("ROUNDS"));
    let requested = match rest.get(1).map(String::as_str) {
        None | Some("reflink") => CloneStrategy::Reflink,
        Some("copy") => CloneStrategy::Copy,
        Some(other) => panic!("strategy {other:?}: want reflink or copy"),
    };
    let dst_dir = PathBuf::from(dst_dir);
    std::fs::create_dir_all(&dst_dir).expect("create DST_DIR");
    let strategy = rootfs::resolve(requested, &dst_dir).expect("resolve strategy");
    let first = (0..)
        .find(|n| !dst_dir.join(format!("clone-{n}")).exists())
        .expect("a free name");
    let mut samples: Vec<Duration> = Vec::with_capacity(rounds);
    for n in first..first + rounds {
        let dst = dst_dir.join(format!("clone-{n}"));
        let t0 = Instant::now();
        rootfs::clone_tree(src.as_ref(), &dst, strategy, None).expect("clone_tree");
        let took = t0.elapsed();
        println!("clone_ms {:.1}", took.as_secs_f64() * 1e3);
        samples.push(took);
    }
    samples.sort();
    println!(
        "median_ms {:.1}",
        samples[samples.len() / 2].as_secs_f64() * 1e3
    );
}
