//! Temporary development driver for the rootfs module, used by the crash-safety
//! test (which must SIGKILL a separate process) and benches/clone.sh, until the
//! real CLI exposes the same operation.
//!
//! Usage:
//!   vsctl-rootfs-dev TEMPLATE GUEST_DIR STRATEGY [--shift BASE:COUNT]
//!       build_rootfs; prints the layout as JSON
//!   vsctl-rootfs-dev --clone-only SRC DST STRATEGY
//!       clone_tree only (no rename, no syncfs), for benchmarking

use std::path::Path;
use std::process::ExitCode;

use vsctl::rootfs::{self, CloneStrategy, IdShift};

fn parse_strategy(s: &str, state_dir: &Path) -> Result<rootfs::ResolvedStrategy, String> {
    let requested = match s {
        "auto" => CloneStrategy::Auto,
        "reflink" => CloneStrategy::Reflink,
        "overlay" => CloneStrategy::Overlay,
        "copy" => CloneStrategy::Copy,
        other => return Err(format!("unknown strategy {other:?}")),
    };
    rootfs::resolve(requested, state_dir).map_err(|e| e.to_string())
}

fn run(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("--clone-only") {
        let [_, src, dst, strategy] = args else {
            return Err("usage: vsctl-rootfs-dev --clone-only SRC DST STRATEGY".into());
        };
        let dst = Path::new(dst);
        let parent = dst.parent().unwrap_or(Path::new("."));
        let s = parse_strategy(strategy, parent)?;
        return rootfs::clone_tree(Path::new(src), dst, s, None).map_err(|e| e.to_string());
    }
    let (template, guest_dir, strategy, rest) = match args {
        [t, g, s, rest @ ..] => (t, g, s, rest),
        _ => {
            return Err(
                "usage: vsctl-rootfs-dev TEMPLATE GUEST_DIR STRATEGY [--shift BASE:COUNT]".into(),
            );
        }
    };
    let shift = match rest {
        [] => None,
        [flag, v] if flag == "--shift" => {
            let (b, c) = v.split_once(':').ok_or("--shift wants BASE:COUNT")?;
            Some(IdShift {
                host_base: b.parse().map_err(|_| "bad shift base")?,
                count: c.parse().map_err(|_| "bad shift count")?,
            })
        }
        _ => return Err("unexpected arguments".into()),
    };
    let guest_dir = Path::new(guest_dir);
    let s = parse_strategy(strategy, guest_dir.parent().unwrap_or(Path::new(".")))?;
    let t0 = std::time::Instant::now();
    let layout = rootfs::build_rootfs(Path::new(template), guest_dir, s, shift)
        .map_err(|e| e.to_string())?;
    if std::env::var_os("VSCTL_DEV_TIMING").is_some() {
        // In-process time of the library call, for benches/clone.sh.
        eprintln!("build_rootfs_us {}", t0.elapsed().as_micros());
    }
    println!(
        "{}",
        serde_json::to_string(&layout).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsctl-rootfs-dev: {e}");
            ExitCode::FAILURE
        }
    }
}
