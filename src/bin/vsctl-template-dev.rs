//! Temporary development driver for the template library, used by the
//! kill-during-build test until `vsctl template build` exists.
//!
//! Usage: vsctl-template-dev ROOT build NAME [--force] [--progress]
//!        vsctl-template-dev ROOT verify NAME
//!        vsctl-template-dev ROOT gc

use std::process::ExitCode;
use vsctl::paths::Paths;
use vsctl::template;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: vsctl-template-dev ROOT build|verify|gc [NAME] [--force]");
        return ExitCode::from(2);
    }
    let paths = Paths::under_root(std::path::Path::new(&args[1]));
    let name = args.get(3).map(String::as_str).unwrap_or("");
    let result: Result<String, String> = match args[2].as_str() {
        "build" => template::Definitions::load(&paths)
            .map_err(|errs| {
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .and_then(|defs| {
                let opts = template::BuildOptions {
                    force: args.iter().any(|a| a == "--force"),
                    progress: args.iter().any(|a| a == "--progress"),
                    mirror: std::env::var("VSCTL_MIRROR").ok(),
                };
                template::build(&paths, &defs, name, &opts)
                    .map(|o| format!("{} {} rebuilt={}", o.name, o.tree_digest, o.rebuilt))
                    .map_err(|e| e.to_string())
            }),
        "verify" => template::verify(&paths, name)
            .map(|r| {
                format!(
                    "ok={} corrupted={} missing={}",
                    r.ok,
                    r.corrupted.len(),
                    r.missing.len()
                )
            })
            .map_err(|e| e.to_string()),
        "gc" => vsctl::store::gc(&paths)
            .map(|r| {
                format!(
                    "removed_objects={} freed_bytes={}",
                    r.removed_objects, r.freed_bytes
                )
            })
            .map_err(|e| e.to_string()),
        other => Err(format!("unknown command {other}")),
    };
    match result {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
