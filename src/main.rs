//! vsctl's entry point.
//!
//! `main` is ours, not Rust's runtime's (`no_main`): the runtime's start-up
//! reads and parses `/proc/self/maps` to place a stack guard, which was a
//! tenth of the instructions of a short vsctl command, and a guest start
//! runs this binary twice (the command, then the supervisor). What of that
//! start-up vsctl relies on, `sys::process_init` does; a stack overflow is
//! then a plain SIGSEGV instead of a message.
// The test harness brings its own `main` (this crate has no tests).
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
use clap::Parser;

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    vsctl::sys::process_init();
    // A guest's supervisor and the process `exec` enters a guest with are
    // this binary exec'd in modes of their own; dispatch before any CLI
    // parsing so they start small.
    let mode = std::env::args_os().nth(1);
    if mode.as_deref() == Some(std::ffi::OsStr::new(vsctl::runtime::SUPERVISOR_ARG)) {
        vsctl::runtime::supervisor_main();
    }
    if mode.as_deref() == Some(std::ffi::OsStr::new(vsctl::runtime::EXEC_HELPER_ARG)) {
        vsctl::runtime::exec_helper_main();
    }
    // A panic ends the process with 101, as under Rust's own `main`.
    let code = std::panic::catch_unwind(|| {
        let cli = vsctl::cli::Cli::parse();
        if cli.command.only_reads() {
            vsctl::sys::default_sigpipe();
        }
        vsctl::app::run(cli)
    })
    .unwrap_or(101);
    std::process::exit(code)
}
