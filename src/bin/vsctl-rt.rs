//! Temporary development driver for the runtime (issue 5): takes a
//! `RuntimeSpec` JSON file and runs one runtime operation, printing JSON on
//! stdout. Integration tests drive it as a separate process until `vsctl
//! start NAME` exists; then this binary goes away.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vsctl::runtime::{self, RuntimeSpec};

#[derive(Parser)]
#[command(name = "vsctl-rt", about = "vsctl runtime development driver")]
struct Cli {
    /// RuntimeSpec as JSON.
    spec: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot the guest; prints {"init_pid":..,"supervisor_pid":..}.
    Start,
    /// Stop the guest (timeout from the spec unless given).
    Stop {
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Print the guest's runtime state.
    Status,
    /// Run a command in the guest; exits with its code.
    Exec {
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
    /// Apply limits (cgroup::Limits JSON file) to the running guest.
    UpdateLimits { limits: PathBuf },
    /// Print the guest's CPU time in nanoseconds.
    CpuUsage,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let spec: RuntimeSpec = match std::fs::read(&cli.spec)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vsctl-rt: {}: {e}", cli.spec.display());
            return ExitCode::from(125);
        }
    };
    let res: Result<String, runtime::RuntimeError> = match cli.cmd {
        Cmd::Start => runtime::start(&spec).map(|s| serde_json::to_string(&s).unwrap()),
        Cmd::Stop { timeout } => {
            let t = timeout.map_or(spec.stop_timeout, Duration::from_secs_f64);
            runtime::stop(&spec.run_dir, t).map(|o| serde_json::to_string(&o).unwrap())
        }
        Cmd::Status => runtime::status(&spec.run_dir).map(|s| serde_json::to_string(&s).unwrap()),
        Cmd::Exec { tty, argv } => match runtime::exec(&spec.run_dir, &argv, tty) {
            Ok(code) => return ExitCode::from(code.clamp(0, 255) as u8),
            Err(e @ runtime::RuntimeError::NotRunning(_)) => {
                eprintln!("vsctl-rt: {e}");
                return ExitCode::from(126);
            }
            Err(e) => Err(e),
        },
        Cmd::UpdateLimits { limits } => {
            let l = match std::fs::read(&limits)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("vsctl-rt: {}: {e}", limits.display());
                    return ExitCode::from(125);
                }
            };
            runtime::update_limits(&spec.run_dir, &l).map(|()| "{}".to_string())
        }
        Cmd::CpuUsage => runtime::cpu_usage(&spec.run_dir).map(|d| d.as_nanos().to_string()),
    };
    match res {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vsctl-rt: {e}");
            ExitCode::from(125)
        }
    }
}
