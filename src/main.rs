use clap::Parser;

fn main() {
    let cli = vsctl::cli::Cli::parse();
    std::process::exit(vsctl::app::run(cli));
}
