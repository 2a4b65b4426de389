//! The planner: desired guest specs + observed state → a plan. Pure: no I/O,
//! no clock, no randomness, so the same inputs always give the same plan and
//! every decision is unit-tested by tables.
//!
//! Each field of a spec has a change class ([`ChangeClass`]): *live* changes
//! are applied to a running guest, *restart* changes need the guest restarted,
//! *rebuild* changes would destroy the guest's root filesystem and are never
//! made implicitly (only with `--recreate NAME`, and never for `protect`ed
//! guests). Guests whose file was removed are orphans: left alone unless
//! `--prune` (and their rootfs kept unless `--purge`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::config::GuestSpec;
use crate::config::guest::DesiredState;
use crate::state::GuestRecord;

/// Version of the JSON plan/result format (`--output json`).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeClass {
    /// Only vsctl's record changes (e.g. `protect`).
    Record,
    /// Applied to a running guest without restarting it.
    Live,
    /// Takes effect when the guest (re)starts.
    Restart,
    /// Needs a new root filesystem: destroys the old one.
    Rebuild,
}

/// The change class of a flattened field path such as `limits.memory`.
pub fn change_class(field: &str) -> ChangeClass {
    let top = field.split('.').next().unwrap_or(field);
    match (top, field) {
        // userns decides who owns the rootfs' files on the host (shifted ids).
        (_, "template" | "rootfs.strategy" | "security.userns") => ChangeClass::Rebuild,
        (_, "protect") => ChangeClass::Record,
        ("limits" | "disk", _) => ChangeClass::Live,
        (_, "network.addresses" | "network.gateway" | "network.gateway6" | "network.dns") => {
            ChangeClass::Live
        }
        _ => ChangeClass::Restart,
    }
}

/// What the guest's run state is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Stopped,
    /// Init died without being asked to stop.
    Crashed,
}

/// What exists for one guest.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedGuest {
    pub record: GuestRecord,
    pub run: RunStatus,
    /// Whether the root filesystem recorded in `record` is present.
    pub rootfs_present: bool,
}

/// Everything observed on the host that planning needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub guests: BTreeMap<String, ObservedGuest>,
    /// Templates built in the store.
    pub templates: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanOptions {
    /// Guests allowed to be rebuilt (`--recreate NAME`).
    pub recreate: BTreeSet<String>,
    /// Stop and unregister orphans.
    pub prune: bool,
    /// With prune (or recreate of an orphan): also delete the root filesystem.
    pub purge: bool,
    /// Plan only these guests (`vsctl apply NAME...`); empty means all.
    pub only: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Restart,
    Rebuild,
    Remove,
    Start,
    Stop,
    Noop,
}

/// One field that differs between the applied and the desired spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
    pub class: ChangeClass,
}

/// An executor step, in the order the executor runs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Stop the guest (for restart, rebuild, remove or `state = stopped`).
    Stop,
    /// Delete the guest's root filesystem (rebuild with --recreate, or --purge).
    PurgeRootfs,
    /// Remove the guest's record.
    Unregister,
    /// Clone the template into a new root filesystem.
    BuildRootfs,
    /// Set the disk quota on the guest's tree.
    ApplyQuota,
    /// Write /etc/hostname, /etc/hosts, /etc/resolv.conf into the guest.
    WriteGuestFiles,
    /// Change limits of the running guest.
    ApplyLimits,
    /// Change addresses, routes or DNS of the running guest.
    ApplyNetwork,
    /// Record the applied spec.
    WriteRecord,
    Start,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuestPlan {
    pub name: String,
    pub action: Action,
    /// Why this action, in words.
    pub reasons: Vec<String>,
    pub changes: Vec<FieldChange>,
    pub steps: Vec<Step>,
    /// Set when the action must not run; the reason says what would allow it.
    pub blocked: Option<String>,
    /// The guest's file was removed.
    pub orphan: bool,
}

impl GuestPlan {
    /// Whether running this entry changes anything.
    pub fn changes_something(&self) -> bool {
        self.blocked.is_none() && !self.steps.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub format_version: u32,
    /// Templates to build before any guest is cloned from them.
    pub templates_to_build: Vec<String>,
    pub guests: Vec<GuestPlan>,
}

impl Plan {
    /// Whether applying the plan would change anything.
    pub fn has_changes(&self) -> bool {
        !self.templates_to_build.is_empty() || self.guests.iter().any(GuestPlan::changes_something)
    }

    pub fn has_blocked(&self) -> bool {
        self.guests.iter().any(|g| g.blocked.is_some())
    }
}

/// Flatten a spec into `dotted.path -> value` (arrays stay whole), leaving out
/// the fields that are not configuration (`name`) or handled as run state.
fn flatten(spec: &GuestSpec) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    let path = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, inner, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        serde_json::to_value(spec).expect("specs always serialize"),
        &mut out,
    );
    out.remove("name");
    out.remove("state");
    out
}

/// Field-by-field differences between two specs, sorted by field path.
pub fn diff(before: &GuestSpec, after: &GuestSpec) -> Vec<FieldChange> {
    let old = flatten(before);
    let new = flatten(after);
    let fields: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    fields
        .into_iter()
        .filter_map(|field| {
            let b = old.get(field).cloned().unwrap_or(Value::Null);
            let a = new.get(field).cloned().unwrap_or(Value::Null);
            (b != a).then(|| FieldChange {
                field: field.clone(),
                class: change_class(field),
                before: b,
                after: a,
            })
        })
        .collect()
}

/// Compute the plan. `desired` holds every valid guest file's spec.
pub fn plan(desired: &[GuestSpec], observed: &Observed, options: &PlanOptions) -> Plan {
    let in_scope = |name: &str| options.only.is_empty() || options.only.contains(name);
    let mut guests = Vec::new();
    let mut templates_to_build = BTreeSet::new();

    for spec in desired.iter().filter(|s| in_scope(&s.name)) {
        let entry = match observed.guests.get(&spec.name) {
            None => plan_create(spec),
            Some(current) => plan_existing(spec, current, options),
        };
        let builds_rootfs = entry.steps.contains(&Step::BuildRootfs) && entry.blocked.is_none();
        if builds_rootfs && !observed.templates.contains(&spec.template) {
            templates_to_build.insert(spec.template.clone());
        }
        guests.push(entry);
    }

    let desired_names: BTreeSet<&str> = desired.iter().map(|s| s.name.as_str()).collect();
    for (name, current) in &observed.guests {
        if desired_names.contains(name.as_str()) || !in_scope(name) {
            continue;
        }
        guests.push(plan_orphan(name, current, options));
    }
    guests.sort_by(|a, b| a.name.cmp(&b.name));
    Plan {
        format_version: FORMAT_VERSION,
        templates_to_build: templates_to_build.into_iter().collect(),
        guests,
    }
}

fn new_entry(name: &str, action: Action) -> GuestPlan {
    GuestPlan {
        name: name.to_string(),
        action,
        reasons: Vec::new(),
        changes: Vec::new(),
        steps: Vec::new(),
        blocked: None,
        orphan: false,
    }
}

/// Steps that bring a freshly built (or rebuilt) guest up to its spec.
fn build_steps(spec: &GuestSpec, entry: &mut GuestPlan) {
    entry.steps.push(Step::BuildRootfs);
    if spec.disk.quota.is_some() || spec.disk.inodes.is_some() {
        entry.steps.push(Step::ApplyQuota);
    }
    entry.steps.push(Step::WriteGuestFiles);
    entry.steps.push(Step::WriteRecord);
    if spec.state == DesiredState::Running {
        entry.steps.push(Step::Start);
    }
}

fn plan_create(spec: &GuestSpec) -> GuestPlan {
    let mut entry = new_entry(&spec.name, Action::Create);
    entry.reasons.push(String::from("new guest file"));
    build_steps(spec, &mut entry);
    entry
}

/// The changed fields of one class, for a reason line.
fn fields_of_class(changes: &[FieldChange], class: ChangeClass) -> String {
    let fields: Vec<&str> = changes
        .iter()
        .filter(|c| c.class == class)
        .map(|c| c.field.as_str())
        .collect();
    fields.join(", ")
}

fn plan_existing(spec: &GuestSpec, current: &ObservedGuest, options: &PlanOptions) -> GuestPlan {
    // Most guests are unchanged on most runs: skip flattening them.
    let changes = if current.record.spec == *spec {
        Vec::new()
    } else {
        diff(&current.record.spec, spec)
    };
    let worst = changes.iter().map(|c| c.class).max();
    let running = current.run == RunStatus::Running;
    let protected = spec.protect || current.record.spec.protect;
    let mut entry = new_entry(&spec.name, Action::Noop);
    entry.changes = changes;

    if worst == Some(ChangeClass::Rebuild) {
        entry.action = Action::Rebuild;
        entry.reasons.push(format!(
            "{} changed: the root filesystem must be rebuilt",
            fields_of_class(&entry.changes, ChangeClass::Rebuild)
        ));
        if protected {
            entry.blocked = Some(String::from(
                "guest is protected (`protect = true`): it is never rebuilt",
            ));
        } else if !options.recreate.contains(&spec.name) {
            entry.blocked = Some(format!(
                "rebuilding destroys the guest's root filesystem; run `vsctl apply --recreate {}` to allow it",
                spec.name
            ));
        }
        if running || current.run == RunStatus::Crashed {
            entry.steps.push(Step::Stop);
        }
        entry.steps.push(Step::PurgeRootfs);
        build_steps(spec, &mut entry);
        return entry;
    }

    if !current.rootfs_present {
        entry.action = Action::Create;
        entry
            .reasons
            .push(String::from("root filesystem missing: building it"));
        build_steps(spec, &mut entry);
        return entry;
    }

    let wants_running = spec.state == DesiredState::Running;
    let restart_needed = worst == Some(ChangeClass::Restart);
    let has_live = entry.changes.iter().any(|c| c.class == ChangeClass::Live);
    let quota_changed = entry.changes.iter().any(|c| c.field.starts_with("disk."));
    let files_changed = entry.changes.iter().any(|c| {
        matches!(
            c.field.as_str(),
            "hostname" | "network.dns" | "network.addresses"
        )
    });

    if quota_changed
        && (spec.disk.quota.is_some()
            || spec.disk.inodes.is_some()
            || current.record.spec.disk != spec.disk)
    {
        entry.steps.push(Step::ApplyQuota);
    }
    if files_changed {
        entry.steps.push(Step::WriteGuestFiles);
    }

    let mut start = false;
    match (running, wants_running) {
        (true, false) => {
            entry.action = Action::Stop;
            entry.reasons.push(String::from("state = \"stopped\""));
            entry.steps.insert(0, Step::Stop);
        }
        (false, true) => {
            entry.action = Action::Start;
            entry.reasons.push(match current.run {
                RunStatus::Crashed => String::from("guest crashed: starting it again"),
                _ => String::from("state = \"running\""),
            });
            start = true;
        }
        (true, true) if restart_needed => {
            entry.action = Action::Restart;
            entry.reasons.push(format!(
                "{} changed: takes effect on restart",
                fields_of_class(&entry.changes, ChangeClass::Restart)
            ));
            entry.steps.insert(0, Step::Stop);
            start = true;
        }
        (true, true) => {
            if entry.changes.iter().any(|c| c.field.starts_with("limits.")) {
                entry.steps.push(Step::ApplyLimits);
            }
            if entry
                .changes
                .iter()
                .any(|c| c.field.starts_with("network."))
            {
                entry.steps.push(Step::ApplyNetwork);
            }
        }
        (false, false) => {}
    }
    if !entry.changes.is_empty() {
        if entry.action == Action::Noop {
            entry.action = Action::Update;
            entry.reasons.push(if has_live && running {
                String::from("applied to the running guest")
            } else {
                String::from("recorded; takes effect when the guest starts")
            });
        }
        entry.steps.push(Step::WriteRecord);
    }
    // The record is written before starting, so a failed start is retried by
    // the next apply as a plain start.
    if start {
        entry.steps.push(Step::Start);
    }
    entry
}

fn plan_orphan(name: &str, current: &ObservedGuest, options: &PlanOptions) -> GuestPlan {
    let mut entry = new_entry(name, Action::Noop);
    entry.orphan = true;
    if !options.prune {
        entry.reasons.push(String::from(
            "guest file removed; `--prune` stops and unregisters it",
        ));
        return entry;
    }
    entry.action = Action::Remove;
    entry.reasons.push(String::from("guest file removed"));
    if current.record.spec.protect {
        entry.blocked = Some(String::from(
            "guest is protected (`protect = true`): it is never removed",
        ));
    }
    if current.run != RunStatus::Stopped {
        entry.steps.push(Step::Stop);
    }
    if options.purge {
        entry
            .reasons
            .push(String::from("--purge: its root filesystem is deleted"));
        entry.steps.push(Step::PurgeRootfs);
    } else {
        entry
            .reasons
            .push(String::from("its root filesystem is kept"));
    }
    entry.steps.push(Step::Unregister);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::guest::*;
    use crate::config::units::{IpCidr, Size};

    /// The state store's test spec, without networking.
    fn spec(name: &str) -> GuestSpec {
        GuestSpec {
            network: NetworkSpec {
                mode: NetworkMode::None,
                ..Default::default()
            },
            ..crate::state::tests::spec(name)
        }
    }

    fn observed(spec: GuestSpec, run: RunStatus) -> ObservedGuest {
        ObservedGuest {
            record: GuestRecord::new(spec),
            run,
            rootfs_present: true,
        }
    }

    fn world(guests: Vec<ObservedGuest>) -> Observed {
        Observed {
            guests: guests
                .into_iter()
                .map(|g| (g.record.spec.name.clone(), g))
                .collect(),
            templates: ["busybox".to_string()].into(),
        }
    }

    fn one(plan: &Plan) -> &GuestPlan {
        assert_eq!(plan.guests.len(), 1, "{plan:#?}");
        &plan.guests[0]
    }

    #[test]
    fn change_classes_by_table() {
        let table = [
            ("template", ChangeClass::Rebuild),
            ("rootfs.strategy", ChangeClass::Rebuild),
            ("limits.memory", ChangeClass::Live),
            ("limits.io.read_bps", ChangeClass::Live),
            ("disk.quota", ChangeClass::Live),
            ("network.addresses", ChangeClass::Live),
            ("network.gateway", ChangeClass::Live),
            ("network.dns", ChangeClass::Live),
            ("network.mode", ChangeClass::Restart),
            ("network.parent", ChangeClass::Restart),
            ("hostname", ChangeClass::Restart),
            ("init.command", ChangeClass::Restart),
            ("security.userns", ChangeClass::Rebuild),
            ("security.cap_add", ChangeClass::Restart),
            ("mounts", ChangeClass::Restart),
            ("env.FOO", ChangeClass::Restart),
            ("protect", ChangeClass::Record),
        ];
        for (field, class) in table {
            assert_eq!(change_class(field), class, "{field}");
        }
    }

    /// (description, desired edit, observed run status, options edit, expected action, blocked?, expected steps)
    type Row = (
        &'static str,
        fn(&mut GuestSpec),
        RunStatus,
        fn(&mut PlanOptions),
        Action,
        bool,
        Vec<Step>,
    );

    #[test]
    fn existing_guests_by_table() {
        let rows: Vec<Row> = vec![
            (
                "nothing changed",
                |_| {},
                RunStatus::Running,
                |_| {},
                Action::Noop,
                false,
                vec![],
            ),
            (
                "live memory change",
                |s| s.limits.memory = Some(Size(256 << 20)),
                RunStatus::Running,
                |_| {},
                Action::Update,
                false,
                vec![Step::ApplyLimits, Step::WriteRecord],
            ),
            (
                "live change on stopped guest only records",
                |s| {
                    s.limits.pids = Some(64);
                    s.state = DesiredState::Stopped;
                },
                RunStatus::Stopped,
                |_| {},
                Action::Update,
                false,
                vec![Step::WriteRecord],
            ),
            (
                "address change is live and rewrites guest files",
                |s| s.network.addresses = vec!["10.0.0.2/24".parse::<IpCidr>().unwrap()],
                RunStatus::Running,
                |_| {},
                Action::Update,
                false,
                vec![Step::WriteGuestFiles, Step::ApplyNetwork, Step::WriteRecord],
            ),
            (
                "quota change is live",
                |s| s.disk.quota = Some(Size(1 << 30)),
                RunStatus::Running,
                |_| {},
                Action::Update,
                false,
                vec![Step::ApplyQuota, Step::WriteRecord],
            ),
            (
                "init change restarts a running guest",
                |s| s.init.command = vec!["/bin/sh".into()],
                RunStatus::Running,
                |_| {},
                Action::Restart,
                false,
                vec![Step::Stop, Step::WriteRecord, Step::Start],
            ),
            (
                "restart-class change on stopped guest is recorded",
                |s| {
                    s.env.insert("A".into(), "b".into());
                    s.state = DesiredState::Stopped;
                },
                RunStatus::Stopped,
                |_| {},
                Action::Update,
                false,
                vec![Step::WriteRecord],
            ),
            (
                "template change is blocked without recreate",
                |s| s.template = "debian-bookworm".into(),
                RunStatus::Running,
                |_| {},
                Action::Rebuild,
                true,
                vec![
                    Step::Stop,
                    Step::PurgeRootfs,
                    Step::BuildRootfs,
                    Step::WriteGuestFiles,
                    Step::WriteRecord,
                    Step::Start,
                ],
            ),
            (
                "template change with recreate rebuilds",
                |s| s.template = "debian-bookworm".into(),
                RunStatus::Running,
                |o| {
                    o.recreate.insert("g".into());
                },
                Action::Rebuild,
                false,
                vec![
                    Step::Stop,
                    Step::PurgeRootfs,
                    Step::BuildRootfs,
                    Step::WriteGuestFiles,
                    Step::WriteRecord,
                    Step::Start,
                ],
            ),
            (
                "strategy change of protected guest is blocked even with recreate",
                |s| {
                    s.rootfs.strategy = CloneStrategy::Copy;
                    s.protect = true;
                },
                RunStatus::Stopped,
                |o| {
                    o.recreate.insert("g".into());
                },
                Action::Rebuild,
                true,
                vec![
                    Step::PurgeRootfs,
                    Step::BuildRootfs,
                    Step::WriteGuestFiles,
                    Step::WriteRecord,
                    Step::Start,
                ],
            ),
            (
                "stopped guest that should run is started",
                |_| {},
                RunStatus::Stopped,
                |_| {},
                Action::Start,
                false,
                vec![Step::Start],
            ),
            (
                "crashed guest is started again",
                |_| {},
                RunStatus::Crashed,
                |_| {},
                Action::Start,
                false,
                vec![Step::Start],
            ),
            (
                "running guest that should stop is stopped",
                |s| s.state = DesiredState::Stopped,
                RunStatus::Running,
                |_| {},
                Action::Stop,
                false,
                vec![Step::Stop],
            ),
            (
                "protect flag alone only records",
                |s| s.protect = true,
                RunStatus::Running,
                |_| {},
                Action::Update,
                false,
                vec![Step::WriteRecord],
            ),
        ];
        for (what, edit, run, edit_options, action, blocked, steps) in rows {
            let mut desired = spec("g");
            edit(&mut desired);
            let mut options = PlanOptions::default();
            edit_options(&mut options);
            let plan = plan(&[desired], &world(vec![observed(spec("g"), run)]), &options);
            let entry = one(&plan);
            assert_eq!(entry.action, action, "{what}: {entry:#?}");
            assert_eq!(entry.blocked.is_some(), blocked, "{what}: {entry:#?}");
            assert_eq!(entry.steps, steps, "{what}");
        }
    }

    #[test]
    fn new_guests_are_created_and_their_template_built_once() {
        let mut a = spec("a");
        a.template = "debian-bookworm".into();
        let mut b = spec("b");
        b.template = "debian-bookworm".into();
        b.state = DesiredState::Stopped;
        b.disk.quota = Some(Size(1 << 30));
        let plan = plan(&[a, b], &world(vec![]), &PlanOptions::default());
        assert_eq!(plan.templates_to_build, vec!["debian-bookworm".to_string()]);
        assert_eq!(plan.guests[0].action, Action::Create);
        assert_eq!(
            plan.guests[0].steps,
            vec![
                Step::BuildRootfs,
                Step::WriteGuestFiles,
                Step::WriteRecord,
                Step::Start
            ]
        );
        assert_eq!(
            plan.guests[1].steps,
            vec![
                Step::BuildRootfs,
                Step::ApplyQuota,
                Step::WriteGuestFiles,
                Step::WriteRecord
            ]
        );
        assert!(plan.has_changes());
    }

    #[test]
    fn missing_rootfs_is_built_again_without_blocking() {
        let mut current = observed(spec("g"), RunStatus::Stopped);
        current.rootfs_present = false;
        let plan = plan(&[spec("g")], &world(vec![current]), &PlanOptions::default());
        assert_eq!(one(&plan).action, Action::Create);
        assert!(one(&plan).blocked.is_none());
    }

    #[test]
    fn orphans_prune_and_purge_by_table() {
        // (prune, purge, protect, run, action, blocked, steps)
        let rows = [
            (
                false,
                false,
                false,
                RunStatus::Running,
                Action::Noop,
                false,
                vec![],
            ),
            (
                true,
                false,
                false,
                RunStatus::Running,
                Action::Remove,
                false,
                vec![Step::Stop, Step::Unregister],
            ),
            (
                true,
                false,
                false,
                RunStatus::Stopped,
                Action::Remove,
                false,
                vec![Step::Unregister],
            ),
            (
                true,
                true,
                false,
                RunStatus::Running,
                Action::Remove,
                false,
                vec![Step::Stop, Step::PurgeRootfs, Step::Unregister],
            ),
            (
                true,
                true,
                true,
                RunStatus::Stopped,
                Action::Remove,
                true,
                vec![Step::PurgeRootfs, Step::Unregister],
            ),
            (
                false,
                true,
                false,
                RunStatus::Stopped,
                Action::Noop,
                false,
                vec![],
            ),
        ];
        for (prune, purge, protect, run, action, blocked, steps) in rows {
            let mut old = spec("gone");
            old.protect = protect;
            let options = PlanOptions {
                prune,
                purge,
                ..Default::default()
            };
            let plan = plan(&[], &world(vec![observed(old, run)]), &options);
            let entry = one(&plan);
            assert!(entry.orphan);
            assert_eq!(
                (entry.action, entry.blocked.is_some(), &entry.steps),
                (action, blocked, &steps),
                "{prune} {purge} {protect}"
            );
            assert_eq!(plan.has_changes(), !blocked && !steps.is_empty());
        }
    }

    #[test]
    fn only_limits_the_scope() {
        let options = PlanOptions {
            only: ["a".to_string()].into(),
            prune: true,
            ..Default::default()
        };
        let plan = plan(
            &[spec("a"), spec("b")],
            &world(vec![observed(spec("c"), RunStatus::Stopped)]),
            &options,
        );
        assert_eq!(
            plan.guests
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
            vec!["a"]
        );
    }

    #[test]
    fn diff_reports_before_and_after() {
        let mut after = spec("g");
        after.limits.memory = Some(Size(512 << 20));
        let changes = diff(&spec("g"), &after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].field, "limits.memory");
        assert_eq!(changes[0].before, Value::Null);
        assert_eq!(changes[0].after, Value::String("512MiB".into()));
    }
}
