//! `vsctl start|stop|restart|exec|enter|console|logs`: imperative commands on guests
//! that `vsctl apply` created. They act now, whatever the guest file's
//! `state`; the next apply brings the guest back to what its file says.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::time::Duration;

use super::{Host, exit};
use crate::cli::WaitArgs;
use crate::lifecycle;
use crate::plan::RunStatus;
use crate::runtime::{self, RuntimeError};
use crate::state::{GuestRecord, StateStore};

/// Exit codes of `vsctl exec` (as podman's).
pub mod exec_exit {
    pub const VSCTL_FAILED: i32 = 125;
    pub const NOT_RUNNING: i32 = 126;
}

fn fail(error: &dyn std::fmt::Display) -> i32 {
    eprintln!("vsctl: {error}");
    exit::ERROR
}

fn record(host: &Host, name: &str) -> Result<GuestRecord, i32> {
    match StateStore::new(&host.paths).read(name) {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(fail(&format!(
            "guest `{name}` does not exist (create it with `vsctl apply`)"
        ))),
        Err(e) => Err(fail(&e)),
    }
}

pub fn start(host: &Host, name: &str, wait: WaitArgs) -> i32 {
    let record = match record(host, name) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let store = StateStore::new(&host.paths);
    {
        // The lock is held while starting, not while waiting for readiness.
        let _lock = match store.lock(true) {
            Ok(lock) => lock,
            Err(e) => return fail(&e),
        };
        if lifecycle::run_status(&host.paths, name) == RunStatus::Running {
            eprintln!("vsctl: guest {name} is already running");
        } else {
            match lifecycle::start(&host.paths, &host.settings, &record) {
                Ok(started) => {
                    eprintln!("vsctl: started {name} (init pid {})", started.init_pid);
                }
                Err(e) => return fail(&e),
            }
        }
    }
    if wait.wait {
        wait_ready(host, name, Duration::from_secs(wait.timeout))
    } else {
        exit::OK
    }
}

/// `--wait`: until init reports READY=1 (sd_notify), init ends, or the timeout.
fn wait_ready(host: &Host, name: &str, timeout: Duration) -> i32 {
    match runtime::wait_ready(&host.paths.guest_run_dir(name), timeout) {
        Ok(runtime::Readiness::Ready { status }) => {
            let status = status.map(|s| format!(": {s}")).unwrap_or_default();
            eprintln!("vsctl: {name} is ready{status}");
            exit::OK
        }
        Ok(runtime::Readiness::NoNotify) => {
            eprintln!(
                "vsctl: {name}: its init does not report readiness (no sd_notify, e.g. busybox init \
                 or sysvinit); init has been started, not waiting further"
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("vsctl: {e} (see `vsctl logs {name}`)");
            exit::ERROR
        }
    }
}

pub fn stop(host: &Host, name: &str, timeout: Option<u64>) -> i32 {
    let record = match record(host, name) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let _lock = match StateStore::new(&host.paths).lock(true) {
        Ok(lock) => lock,
        Err(e) => return fail(&e),
    };
    let timeout = timeout.map_or(record.spec.init.stop_timeout.0, Duration::from_secs);
    match lifecycle::stop(&host.paths, name, timeout) {
        Ok(outcome) => {
            eprintln!(
                "vsctl: {name}: {}",
                match outcome {
                    runtime::StopOutcome::Clean { .. } => "stopped",
                    runtime::StopOutcome::Killed => "killed after the stop timeout",
                    runtime::StopOutcome::NotRunning => "was not running",
                }
            );
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

pub fn restart(host: &Host, name: &str, wait: WaitArgs) -> i32 {
    match stop(host, name, None) {
        exit::OK => start(host, name, wait),
        code => code,
    }
}

/// `vsctl console NAME`.
pub fn console(host: &Host, name: &str, idle_ms: u64, timeout: Option<u64>) -> i32 {
    if let Err(code) = record(host, name) {
        return code;
    }
    let opts = runtime::AttachOptions {
        idle: Duration::from_millis(idle_ms),
        timeout: timeout.map(Duration::from_secs),
    };
    match runtime::attach(&host.paths.guest_run_dir(name), name, opts) {
        Ok(_) => exit::OK,
        Err(RuntimeError::NotRunning(_)) => fail(&format!("guest {name} is not running")),
        Err(e) => fail(&e),
    }
}

pub fn exec(host: &Host, name: &str, command: &[String], tty: bool) -> i32 {
    if let Err(code) = record(host, name) {
        return if code == exit::ERROR {
            exec_exit::VSCTL_FAILED
        } else {
            code
        };
    }
    match runtime::exec(&host.paths.guest_run_dir(name), command, tty) {
        Ok(code) => code,
        Err(RuntimeError::NotRunning(_)) => {
            eprintln!("vsctl: guest {name} is not running");
            exec_exit::NOT_RUNNING
        }
        Err(e) => {
            eprintln!("vsctl: {e}");
            exec_exit::VSCTL_FAILED
        }
    }
}

/// A login shell: the guest's own if it has one of the usual ones.
pub fn enter(host: &Host, name: &str) -> i32 {
    let shell = vec![String::from("/bin/sh"), String::from("-l")];
    exec(host, name, &shell, std::io::stdin().is_terminal())
}

pub fn logs(host: &Host, name: &str, follow: bool) -> i32 {
    if let Err(code) = record(host, name) {
        return code;
    }
    let path = lifecycle::log_file(&host.paths, name);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("vsctl: guest {name} has no console log yet");
            return exit::OK;
        }
        Err(e) => return fail(&format!("open {}: {e}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if let Err(e) = file.read_to_end(&mut buf) {
            return fail(&format!("read {}: {e}", path.display()));
        }
        if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
            return exit::OK;
        }
        if !follow {
            return exit::OK;
        }
        // The log is rotated at its size cap: start over on the new file.
        let position = file.stream_position().unwrap_or(0);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() < position)
            && let Ok(new) = std::fs::File::open(&path)
        {
            file = new;
            let _ = file.seek(SeekFrom::Start(0));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
