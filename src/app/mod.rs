//! Command implementations: glue between the CLI, configuration, planner,
//! state store and executors. Data goes to stdout, diagnostics and progress
//! to stderr; every function returns the process exit code.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;

use serde::Serialize;

/// `println!` that never panics. A command whose reader went away
/// (`vsctl apply | head -1`) carries on with its work and its exit code
/// instead of dying half-way; commands that only read get SIGPIPE's default
/// action instead (see `main`), so they end quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that never panics, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod guests;
mod plumbing;
mod status;
mod templates;

use crate::apply;
use crate::cli::{ApplyArgs, Cli, Command, GlobalArgs, OutputFormat, PlanArgs};
use crate::config::{self, ConfigDiag, HostSettings, ParsedGuest};
use crate::paths::Paths;
use crate::plan::{self, Plan, PlanOptions};
use crate::render::{self, Style};
use crate::state::StateStore;
use crate::template::Definitions;

/// Exit codes (documented in vsctl(8)).
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    /// With `--detailed-exitcode`: changes applied or pending.
    pub const CHANGES: i32 = 2;
}

/// Host paths and settings, resolved from flags, environment and vsctl.toml.
pub struct Host {
    pub paths: Paths,
    pub settings: HostSettings,
    pub output: OutputFormat,
}

impl Host {
    pub fn resolve(global: &GlobalArgs) -> Result<Host, Vec<ConfigDiag>> {
        let root = global.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        let mut paths = Paths::under_root(&root);
        if let Some(config) = &global.config {
            paths.config_file = config.clone();
        }
        let settings = HostSettings::load(&paths.config_file)?;
        // Paths from vsctl.toml live under --root; paths given as flags are taken as they are.
        let under_root = |p: &PathBuf| root.join(p.strip_prefix("/").unwrap_or(p));
        let configured = &settings.paths;
        for (slot, from_file, from_flag) in [
            (
                &mut paths.guests_dir,
                &configured.guests_dir,
                &global.guests_dir,
            ),
            (
                &mut paths.templates_dir,
                &configured.templates_dir,
                &global.templates_dir,
            ),
            (
                &mut paths.state_dir,
                &configured.state_dir,
                &global.state_dir,
            ),
            (&mut paths.run_dir, &configured.run_dir, &global.run_dir),
            (&mut paths.log_dir, &configured.log_dir, &global.log_dir),
        ] {
            if let Some(p) = from_file {
                *slot = under_root(p);
            }
            if let Some(p) = from_flag {
                *slot = p.clone();
            }
        }
        Ok(Host {
            paths,
            settings,
            output: global.output,
        })
    }
}

/// Template definitions (embedded ones plus the host's), as diagnostics on error.
pub fn definitions(paths: &Paths) -> Result<Definitions, Vec<ConfigDiag>> {
    Definitions::load(paths).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| {
                let text = std::sync::Arc::new(e.source_text);
                ConfigDiag::new(
                    "vsctl::template::definition",
                    &e.file,
                    &text,
                    e.span,
                    e.message,
                )
                .label("in this template definition")
            })
            .collect()
    })
}

pub fn run(cli: Cli) -> i32 {
    let host = match Host::resolve(&cli.global) {
        Ok(host) => host,
        Err(diags) => return report_diags(&diags, cli.global.output),
    };
    match cli.command {
        Command::Validate => validate(&host),
        Command::Plan(args) => plan_or_apply(
            &host,
            &ApplyArgs {
                plan: args,
                dry_run: true,
                no_wait: false,
            },
        ),
        Command::Apply(args) => plan_or_apply(&host, &args),
        Command::List => list(&host),
        Command::Status { name } => status::status(&host, name.as_str()),
        Command::Start { name, wait } => guests::start(&host, name.as_str(), wait),
        Command::Stop { name, timeout } => guests::stop(&host, name.as_str(), timeout),
        Command::Restart { name, wait } => guests::restart(&host, name.as_str(), wait),
        Command::Console {
            name,
            idle_ms,
            timeout,
        } => guests::console(&host, name.as_str(), idle_ms, timeout),
        Command::Exec {
            name,
            tty,
            no_tty,
            command,
        } => {
            let tty = tty || (!no_tty && std::io::stdin().is_terminal());
            guests::exec(&host, name.as_str(), &command, tty)
        }
        Command::Enter { name } => guests::enter(&host, name.as_str()),
        Command::Logs { name, follow } => guests::logs(&host, name.as_str(), follow),
        Command::Runtime { spec, command } => plumbing::run(&spec, command),
        Command::Template(command) => templates::run(&host, command),
        Command::Gc => templates::gc(&host),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut crate::cli::command(),
                "vsctl",
                &mut std::io::stdout(),
            );
            exit::OK
        }
    }
}

/// Print diagnostics (miette on stderr, or JSON on stdout) and return the error code.
pub(crate) fn report_diags(diags: &[ConfigDiag], output: OutputFormat) -> i32 {
    match output {
        OutputFormat::Json => {
            let records: Vec<_> = diags.iter().map(ConfigDiag::record).collect();
            print_json(&serde_json::json!({
                "format_version": plan::FORMAT_VERSION,
                "valid": false,
                "errors": records,
            }));
        }
        OutputFormat::Text => {
            for diag in diags {
                eprintln!("{:?}", diag.report());
            }
            eprintln!(
                "vsctl: {} error{} found; nothing was changed",
                diags.len(),
                if diags.len() == 1 { "" } else { "s" }
            );
        }
    }
    exit::ERROR
}

pub(crate) fn print_json<T: Serialize>(value: &T) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("output always serializes")
    );
}

/// Template definitions and every guest file, validated together.
fn load(host: &Host) -> Result<(Definitions, Vec<ParsedGuest>), Vec<ConfigDiag>> {
    let definitions = definitions(&host.paths)?;
    let known: BTreeSet<String> = definitions.names().into_iter().map(String::from).collect();
    let guests = config::load_guests(&host.paths.guests_dir, &known, &host.settings)?;
    Ok((definitions, guests))
}

fn validate(host: &Host) -> i32 {
    match load(host) {
        Err(diags) => report_diags(&diags, host.output),
        Ok((_, guests)) => {
            match host.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "format_version": plan::FORMAT_VERSION,
                    "valid": true,
                    "guests": guests.iter().map(|g| &g.spec.name).collect::<Vec<_>>(),
                    "errors": [],
                })),
                OutputFormat::Text => outln!(
                    "{} guest file{} valid",
                    guests.len(),
                    if guests.len() == 1 { "" } else { "s" }
                ),
            }
            exit::OK
        }
    }
}

fn plan_options(args: &PlanArgs) -> PlanOptions {
    PlanOptions {
        recreate: args
            .recreate
            .iter()
            .map(|n| n.as_str().to_string())
            .collect(),
        prune: args.prune,
        purge: args.purge,
        only: args.names.iter().map(|n| n.as_str().to_string()).collect(),
    }
}

fn style() -> Style {
    Style {
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

fn plan_or_apply(host: &Host, args: &ApplyArgs) -> i32 {
    let (definitions, guests) = match load(host) {
        Ok(loaded) => loaded,
        Err(diags) => return report_diags(&diags, host.output),
    };
    let desired: Vec<_> = guests.into_iter().map(|g| g.spec).collect();
    let store = StateStore::new(&host.paths);
    let options = plan_options(&args.plan);
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("vsctl: {e}");
        exit::ERROR
    };
    let changes_code = |changed: bool| {
        if args.plan.detailed_exitcode && changed {
            exit::CHANGES
        } else {
            exit::OK
        }
    };

    if args.dry_run {
        let observed = match apply::observe(&host.paths, &store) {
            Ok(o) => o,
            Err(e) => return fail(&e),
        };
        let plan = plan::plan(&desired, &observed, &options);
        emit_plan(host, &plan);
        return changes_code(plan.has_changes());
    }

    let _lock = match store.lock(!args.no_wait) {
        Ok(lock) => lock,
        Err(e) => return fail(&e),
    };
    // Observe under the lock: another apply may have just finished.
    let observed = match apply::observe(&host.paths, &store) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    // What older versions left readable by every host user is tightened
    // first, whatever the plan does with each guest.
    let records = observed.guests.values().map(|g| &g.record);
    if let Err(e) = crate::host_access::secure_all(&host.paths, records) {
        return fail(&e);
    }
    let plan = plan::plan(&desired, &observed, &options);
    if host.output == OutputFormat::Text {
        eprint!(
            "{}",
            render::plan_text(
                &plan,
                Style {
                    color: std::io::stderr().is_terminal()
                }
            )
        );
    }
    let executor = apply::Executor {
        paths: &host.paths,
        settings: &host.settings,
        store,
        definitions: &definitions,
        progress: std::io::stderr().is_terminal(),
    };
    let result = executor.execute(&plan, &desired, &observed);
    match host.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "format_version": plan::FORMAT_VERSION,
            "plan": plan,
            "result": result,
        })),
        OutputFormat::Text => {
            for outcome in &result.guests {
                if let Some(error) = &outcome.error
                    && outcome.status == "failed"
                {
                    eprintln!("vsctl: {error}");
                }
            }
            let applied = result
                .guests
                .iter()
                .filter(|g| g.status == "applied")
                .count();
            let failed = result
                .guests
                .iter()
                .filter(|g| g.status == "failed")
                .count();
            outln!(
                "Apply complete: {applied} guest{} changed, {failed} failed.",
                if applied == 1 { "" } else { "s" }
            );
        }
    }
    if result.failed {
        return exit::ERROR;
    }
    changes_code(result.changed || plan.has_blocked())
}

fn emit_plan(host: &Host, plan: &Plan) {
    match host.output {
        OutputFormat::Json => print_json(plan),
        OutputFormat::Text => out!("{}", render::plan_text(plan, style())),
    }
}

#[derive(Debug, Serialize)]
struct ListEntry {
    name: String,
    template: String,
    hostname: String,
    desired_state: Option<String>,
    status: String,
    addresses: Vec<String>,
    protect: bool,
}

fn list_entries(host: &Host) -> Result<Vec<ListEntry>, i32> {
    let (_, guests) = load(host).map_err(|diags| report_diags(&diags, host.output))?;
    let store = StateStore::new(&host.paths);
    let observed = apply::observe(&host.paths, &store).map_err(|e| {
        eprintln!("vsctl: {e}");
        exit::ERROR
    })?;
    let mut entries = Vec::new();
    let mut names = BTreeSet::new();
    for parsed in &guests {
        let spec = &parsed.spec;
        names.insert(spec.name.clone());
        let status = match observed.guests.get(&spec.name) {
            None => String::from("not created"),
            Some(current) => serde_json::to_value(current.run)
                .unwrap()
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        entries.push(ListEntry {
            name: spec.name.clone(),
            template: spec.template.clone(),
            hostname: spec.hostname.clone(),
            desired_state: Some(
                serde_json::to_value(spec.state)
                    .unwrap()
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            status,
            addresses: spec
                .network
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            protect: spec.protect,
        });
    }
    for (name, current) in &observed.guests {
        if names.contains(name) {
            continue;
        }
        let spec = &current.record.spec;
        entries.push(ListEntry {
            name: name.clone(),
            template: spec.template.clone(),
            hostname: spec.hostname.clone(),
            desired_state: None,
            status: String::from("orphan"),
            addresses: spec
                .network
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            protect: spec.protect,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn list(host: &Host) -> i32 {
    let entries = match list_entries(host) {
        Ok(entries) => entries,
        Err(code) => return code,
    };
    match host.output {
        OutputFormat::Json => print_json(
            &serde_json::json!({ "format_version": plan::FORMAT_VERSION, "guests": entries }),
        ),
        OutputFormat::Text => {
            outln!(
                "{:<20} {:<10} {:<12} {:<20} ADDRESSES",
                "NAME",
                "WANTED",
                "STATUS",
                "TEMPLATE"
            );
            for e in &entries {
                outln!(
                    "{:<20} {:<10} {:<12} {:<20} {}",
                    e.name,
                    e.desired_state.as_deref().unwrap_or("-"),
                    e.status,
                    e.template,
                    if e.addresses.is_empty() {
                        String::from("-")
                    } else {
                        e.addresses.join(",")
                    }
                );
            }
        }
    }
    exit::OK
}
