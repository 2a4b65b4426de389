//! The command line, defined once: the binary parses it, and the man pages
//! (`man/`) and shell completions are generated from the same definitions.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A name given on the command line that is not a valid guest or template
/// name. Refused by clap before any path is built from it: a name like
/// `../../tmp/x` would otherwise lead every command to files outside vsctl's
/// directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "guest names are 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit \
         (the guest file's name without .toml)"
    )]
    Guest,
    #[error(
        "template names are lower-case letters, digits, `-`, `_` and `.`, at most 64, \
         not starting with `.` or `-` (the definition's file name without .toml)"
    )]
    Template,
}

/// A guest name from the command line, checked with the rule guest file
/// names follow ([`crate::config::guest::valid_guest_name`]). Every command
/// takes its NAME as this type, so none can skip the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestName(String);

impl FromStr for GuestName {
    type Err = NameError;
    fn from_str(name: &str) -> Result<GuestName, NameError> {
        if crate::config::guest::valid_guest_name(name) {
            Ok(GuestName(name.to_string()))
        } else {
            Err(NameError::Guest)
        }
    }
}

impl GuestName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A template name from the command line, checked with the rule template
/// definitions follow ([`crate::template::valid_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateName(String);

impl FromStr for TemplateName {
    type Err = NameError;
    fn from_str(name: &str) -> Result<TemplateName, NameError> {
        if crate::template::valid_name(name) {
            Ok(TemplateName(name.to_string()))
        } else {
            Err(NameError::Template)
        }
    }
}

impl TemplateName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "vsctl",
    version,
    about = "Declarative system-container manager: many Linux servers on one host",
    long_about = "vsctl reads one TOML file per guest from guests.d/, compares what they describe with what exists, \
                  shows a plan, and makes the host match. Applying twice changes nothing the second time.\n\n\
                  Exit codes: 0 success (with --detailed-exitcode: no changes), 1 error, 2 changes applied or \
                  pending (only with --detailed-exitcode)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Prefix every default path with DIR (for isolated trees and tests)
    #[arg(long, global = true, env = "VSCTL_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Host settings file [default: ROOT/etc/vsctl/vsctl.toml]
    #[arg(long, global = true, env = "VSCTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of guest files [default: ROOT/etc/vsctl/guests.d]
    #[arg(long, global = true, env = "VSCTL_GUESTS_DIR", value_name = "DIR")]
    pub guests_dir: Option<PathBuf>,
    /// Directory of extra template definitions [default: ROOT/etc/vsctl/templates]
    #[arg(long, global = true, env = "VSCTL_TEMPLATES_DIR", value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,
    /// State directory: store, templates, guests [default: ROOT/var/lib/vsctl]
    #[arg(long, global = true, env = "VSCTL_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Runtime directory [default: ROOT/run/vsctl]
    #[arg(long, global = true, env = "VSCTL_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Console log directory [default: ROOT/var/log/vsctl]
    #[arg(long, global = true, env = "VSCTL_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Output format for data on stdout
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every guest file and the host settings; change nothing
    Validate,
    /// Show what apply would do (same as `apply --dry-run`)
    Plan(PlanArgs),
    /// Make the host match the guest files
    Apply(ApplyArgs),
    /// List guests: desired and existing
    List,
    /// Show one guest in detail
    Status {
        /// Guest name
        name: GuestName,
    },
    /// Start a guest now (whatever its file's `state`; the next apply restores that)
    Start {
        /// Guest name
        name: GuestName,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop a guest: the signal its init expects, then kill what is left after the timeout
    Stop {
        /// Guest name
        name: GuestName,
        /// Seconds to wait before killing [default: the guest's stop_timeout]
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Stop and start a guest
    Restart {
        /// Guest name
        name: GuestName,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Run a command inside a running guest (exit codes: the command's; 125 vsctl failed, 126 not running or not executable, 127 not found)
    #[command(
        long_about = "Run a command inside a running guest, as the guest's root, with the guest's capability \
                      set, seccomp filter and environment, in a session of its own.\n\n\
                      With a pseudo-terminal (-t, or by default when standard input is a terminal) the command \
                      gets a pty of the guest's own and your terminal is relayed in raw mode. Without one (-T, \
                      or standard input not a terminal) its standard input, output and error are pipes that \
                      vsctl relays: no descriptor of yours (a terminal, a file you redirected) ever reaches \
                      the guest. The relay ends when the command has exited and what it wrote is copied; a \
                      background process it left running does not keep vsctl waiting.\n\n\
                      Exit codes: the command's own; 128+N when it was killed by signal N; 125 vsctl failed; \
                      126 the guest is not running or the command cannot be executed; 127 not found."
    )]
    Exec {
        /// Guest name
        name: GuestName,
        /// Allocate a pseudo-terminal [default: when stdin is a terminal]
        #[arg(short = 't', long)]
        tty: bool,
        /// Never allocate a pseudo-terminal: relay stdin, stdout and stderr through pipes
        #[arg(short = 'T', long, conflicts_with = "tty")]
        no_tty: bool,
        /// The command and its arguments
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Open a login shell inside a running guest
    Enter {
        /// Guest name
        name: GuestName,
    },
    /// Attach the terminal to a running guest's console (Ctrl-a q detaches)
    #[command(
        long_about = "Attach the terminal to a running guest's console: what you type goes to the guest's \
                      /dev/console, what the guest writes there comes back (and still goes to the console log). \
                      A terminal is put in raw mode and restored on exit. Type Ctrl-a q to detach, Ctrl-a Ctrl-a \
                      to send a literal Ctrl-a. One client at a time: a second attach is refused.\n\n\
                      When standard input is not a terminal and ends (a pipe), vsctl console waits until the \
                      console has been quiet for --idle-ms milliseconds, then detaches; scripts can drive a \
                      console this way (add --timeout for a console that never goes quiet). Detaching leaves \
                      whatever runs on the console (e.g. a shell) running.\n\n\
                      Exit codes: 0 detached (Ctrl-a q, end of input, --timeout, or the guest stopped), 1 error \
                      (not running, another client attached)."
    )]
    Console {
        /// Guest name
        name: GuestName,
        /// After standard input ends: detach once no output came for this long
        #[arg(long, value_name = "MS", default_value_t = 300)]
        idle_ms: u64,
        /// Detach after this many seconds in any case
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Print a guest's console log
    Logs {
        /// Guest name
        name: GuestName,
        /// Keep printing what the console writes
        #[arg(short, long)]
        follow: bool,
    },
    /// Plumbing: drive the runtime directly from a runtime spec (JSON), without guest files or records
    #[command(hide = true)]
    Runtime {
        /// The runtime spec, as JSON
        spec: PathBuf,
        #[command(subcommand)]
        command: RuntimeCommand,
    },
    /// Build, list, verify and remove templates
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Remove store objects no template references, template images of the
    /// image strategy that no installed template matches, and interrupted builds
    Gc,
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `start --wait` / `restart --wait`.
#[derive(Debug, Args, Clone, Copy)]
pub struct WaitArgs {
    /// Return once the guest is ready: its init sent READY=1 on NOTIFY_SOCKET
    /// (systemd). For inits without sd_notify (busybox, sysvinit) this
    /// returns once init has been started, and says so
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up (exit 1) after this many seconds
    #[arg(long, value_name = "SECONDS", requires = "wait", default_value_t = 90)]
    pub timeout: u64,
}

/// `vsctl runtime SPEC ...`: the runtime without the declarative layer, for
/// debugging and for tests that need runtime specs no guest file produces.
#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Boot the guest; prints {"init_pid":..,"supervisor_pid":..}
    Start,
    /// Stop the guest (the spec's stop timeout unless given)
    Stop {
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
    /// Print the guest's runtime state as JSON
    Status,
    /// Run a command in the guest; exits with its code
    Exec {
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
    /// Apply limits (a cgroup limits JSON file) to the running guest
    UpdateLimits { limits: PathBuf },
    /// Print the guest's CPU time in nanoseconds
    CpuUsage,
}

impl Command {
    /// Commands that only read and print: when their reader goes away
    /// (`vsctl status | head`), they may simply end, like `cat`. Commands
    /// that change things never die half-way for a closed pipe.
    pub fn only_reads(&self) -> bool {
        matches!(
            self,
            Command::Validate
                | Command::Plan(_)
                | Command::List
                | Command::Status { .. }
                | Command::Logs { .. }
                | Command::Completions { .. }
                | Command::Template(TemplateCommand::List | TemplateCommand::Verify { .. })
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Build a template (only when its definition changed, unless --force)
    Build {
        /// Template name
        name: TemplateName,
        /// Rebuild even when the definition is unchanged
        #[arg(long)]
        force: bool,
    },
    /// List built templates with their size and bytes shared with others
    List,
    /// Re-hash a template against its manifest and report every damaged or missing file
    Verify {
        /// Template name
        name: TemplateName,
    },
    /// Remove a built template (refused while a guest uses it)
    Rm {
        /// Template name
        name: TemplateName,
    },
}

#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Only these guests (default: all)
    #[arg(value_name = "NAME")]
    pub names: Vec<GuestName>,
    /// Allow rebuilding this guest's root filesystem (destroys it); repeatable
    #[arg(long, value_name = "NAME")]
    pub recreate: Vec<GuestName>,
    /// Stop and unregister guests whose file was removed (their rootfs is kept)
    #[arg(long)]
    pub prune: bool,
    /// With --prune: also delete the removed guests' root filesystems
    #[arg(long, requires = "prune")]
    pub purge: bool,
    /// Exit 0 when there is nothing to change, 2 when there are changes, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Show the plan and stop
    #[arg(long)]
    pub dry_run: bool,
    /// Fail at once if another apply holds the lock, instead of waiting
    #[arg(long)]
    pub no_wait: bool,
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
