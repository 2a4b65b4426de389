//! `vsctl runtime SPEC ...` (hidden): one runtime operation on a guest
//! described by a runtime spec file, printing JSON. The declarative commands
//! build the same specs from guest records; this is the layer below them,
//! for debugging and for runtime tests with hand-made root filesystems.

use std::path::Path;
use std::time::Duration;

use super::guests::exec_exit;
use crate::cli::RuntimeCommand;
use crate::runtime::{self, RuntimeError, RuntimeSpec};

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("runtime answers serialize")
}

pub fn run(spec_path: &Path, command: RuntimeCommand) -> i32 {
    let spec: RuntimeSpec = match read_json(spec_path) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("vsctl runtime: {e}");
            return exec_exit::VSCTL_FAILED;
        }
    };
    let result: Result<String, RuntimeError> = match command {
        RuntimeCommand::Start => runtime::start(&spec).map(|s| json(&s)),
        RuntimeCommand::Stop { timeout } => {
            let timeout = timeout.map_or(spec.stop_timeout, Duration::from_secs_f64);
            runtime::stop(&spec.run_dir, timeout).map(|o| json(&o))
        }
        RuntimeCommand::Status => runtime::status(&spec.run_dir).map(|s| json(&s)),
        RuntimeCommand::Exec { tty, argv } => {
            return match runtime::exec(&spec.run_dir, &argv, tty) {
                Ok(code) => code,
                Err(e @ RuntimeError::NotRunning(_)) => {
                    eprintln!("vsctl runtime: {e}");
                    exec_exit::NOT_RUNNING
                }
                Err(e) => {
                    eprintln!("vsctl runtime: {e}");
                    exec_exit::VSCTL_FAILED
                }
            };
        }
        RuntimeCommand::UpdateLimits { limits } => match read_json(&limits) {
            Ok(limits) => {
                runtime::update_limits(&spec.run_dir, &limits).map(|()| String::from("{}"))
            }
            Err(e) => {
                eprintln!("vsctl runtime: {e}");
                return exec_exit::VSCTL_FAILED;
            }
        },
        RuntimeCommand::CpuUsage => {
            runtime::cpu_usage(&spec.run_dir).map(|d| d.as_nanos().to_string())
        }
    };
    match result {
        Ok(out) => {
            outln!("{out}");
            0
        }
        Err(e) => {
            eprintln!("vsctl runtime: {e}");
            exec_exit::VSCTL_FAILED
        }
    }
}
