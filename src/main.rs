use clap::Parser;

fn main() {
    // A guest's supervisor is this binary exec'd in a mode of its own;
    // dispatch before any CLI parsing so it starts small.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(vsctl::runtime::SUPERVISOR_ARG))
    {
        vsctl::runtime::supervisor_main();
    }
    let cli = vsctl::cli::Cli::parse();
    if cli.command.only_reads() {
        vsctl::sys::default_sigpipe();
    }
    std::process::exit(vsctl::app::run(cli));
}
