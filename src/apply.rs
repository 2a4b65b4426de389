//! Observing the host and executing a plan.
//!
//! [`observe`] gathers what exists (records, rootfs presence, run state,
//! built templates); [`execute`] walks a [`Plan`] under the apply lock,
//! guest by guest, step by step, recording each completed guest so that an
//! apply killed at any point converges on the next run. A guest whose step
//! fails is reported and the others still proceed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{GuestSpec, HostSettings};
use crate::paths::Paths;
use crate::plan::{Action, GuestPlan, Observed, ObservedGuest, Plan, RunStatus, Step};
use crate::state::{
    GuestRecord, IdRange, StateError, StateStore, allocate_id_range, allocate_project_id,
};
use crate::template::Definitions;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("guest {guest}: step {step} is not supported by this build of vsctl")]
    Unsupported { guest: String, step: &'static str },
    #[error("guest {guest}: no free uid/gid range left ([userns] ranges = {ranges} in vsctl.toml)")]
    NoIdRange { guest: String, ranges: u32 },
}

/// Everything observed about the host, for the planner.
pub fn observe(paths: &Paths, store: &StateStore) -> Result<Observed, StateError> {
    let mut observed = Observed::default();
    for (name, record) in store.records()? {
        let rootfs_present = match &record.rootfs {
            Some(crate::state::RootfsRecord::Tree { path, .. }) => path.is_dir(),
            Some(crate::state::RootfsRecord::Overlay { upper, .. }) => upper.is_dir(),
            // Registered without a root filesystem: the build facility was absent.
            None => true,
        };
        let run = RunStatus::Stopped;
        observed.guests.insert(
            name,
            ObservedGuest {
                record,
                run,
                rootfs_present,
            },
        );
    }
    if let Ok(entries) = std::fs::read_dir(paths.template_trees_dir()) {
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str()
                && crate::template::valid_name(name)
                && crate::template::installed(paths, name).is_some()
            {
                observed.templates.insert(name.to_string());
            }
        }
    }
    Ok(observed)
}

/// Outcome of one guest's part of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct GuestOutcome {
    pub name: String,
    pub action: Action,
    /// `applied`, `unchanged`, `blocked` or `failed`.
    pub status: &'static str,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyResult {
    pub format_version: u32,
    pub changed: bool,
    pub failed: bool,
    pub templates_built: Vec<String>,
    pub guests: Vec<GuestOutcome>,
}

/// What executing a plan needs: where things are, host policy, the store.
pub struct Executor<'a> {
    pub paths: &'a Paths,
    pub settings: &'a HostSettings,
    pub store: StateStore,
    pub definitions: &'a Definitions,
    /// Show progress bars (stderr is a terminal).
    pub progress: bool,
}

impl Executor<'_> {
    /// Run the plan. `desired` supplies the specs the plan was made from.
    pub fn execute(&self, plan: &Plan, desired: &[GuestSpec], observed: &Observed) -> ApplyResult {
        let specs: BTreeMap<&str, &GuestSpec> =
            desired.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut result = ApplyResult {
            format_version: crate::plan::FORMAT_VERSION,
            changed: false,
            failed: false,
            templates_built: Vec::new(),
            guests: Vec::new(),
        };
        let mut ids = IdAllocator {
            ranges: observed
                .guests
                .values()
                .filter_map(|g| g.record.id_range)
                .collect(),
            projects: observed
                .guests
                .values()
                .filter_map(|g| g.record.project_id)
                .collect(),
        };
        // Templates first: every guest cloned from one needs it built.
        let mut failed_templates = BTreeMap::new();
        for name in &plan.templates_to_build {
            let options = crate::template::BuildOptions {
                force: false,
                progress: self.progress,
                mirror: self.settings.templates.mirror.clone(),
            };
            match crate::template::build(self.paths, self.definitions, name, &options) {
                Ok(_) => result.templates_built.push(name.clone()),
                Err(e) => {
                    result.failed = true;
                    failed_templates.insert(name.clone(), e.to_string());
                }
            }
        }
        let bar = self.progress_bar(plan);
        for entry in &plan.guests {
            bar.set_message(entry.name.clone());
            let outcome = if entry.blocked.is_some() {
                GuestOutcome {
                    name: entry.name.clone(),
                    action: entry.action,
                    status: "blocked",
                    error: entry.blocked.clone(),
                }
            } else if entry.steps.is_empty() {
                GuestOutcome {
                    name: entry.name.clone(),
                    action: entry.action,
                    status: "unchanged",
                    error: None,
                }
            } else if let Some(error) = specs
                .get(entry.name.as_str())
                .and_then(|s| failed_templates.get(&s.template))
            {
                result.failed = true;
                GuestOutcome {
                    name: entry.name.clone(),
                    action: entry.action,
                    status: "failed",
                    error: Some(format!("template build failed: {error}")),
                }
            } else {
                let spec = specs.get(entry.name.as_str()).copied();
                let previous = observed.guests.get(&entry.name).map(|g| &g.record);
                match self.execute_guest(entry, spec, previous, &mut ids) {
                    Ok(()) => {
                        result.changed = true;
                        GuestOutcome {
                            name: entry.name.clone(),
                            action: entry.action,
                            status: "applied",
                            error: None,
                        }
                    }
                    Err(e) => {
                        result.failed = true;
                        GuestOutcome {
                            name: entry.name.clone(),
                            action: entry.action,
                            status: "failed",
                            error: Some(e.to_string()),
                        }
                    }
                }
            };
            result.guests.push(outcome);
            bar.inc(1);
        }
        bar.finish_and_clear();
        result
    }

    fn progress_bar(&self, plan: &Plan) -> indicatif::ProgressBar {
        let busy = plan.guests.iter().filter(|g| g.changes_something()).count();
        if !self.progress || busy == 0 {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(plan.guests.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} applying [{bar:30}] {pos}/{len} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar
    }

    fn execute_guest(
        &self,
        entry: &GuestPlan,
        spec: Option<&GuestSpec>,
        previous: Option<&GuestRecord>,
        ids: &mut IdAllocator,
    ) -> Result<(), ApplyError> {
        let mut record = match (previous, spec) {
            (Some(previous), Some(spec)) => GuestRecord {
                spec: spec.clone(),
                ..previous.clone()
            },
            (None, Some(spec)) => GuestRecord::new(spec.clone()),
            (Some(previous), None) => previous.clone(),
            (None, None) => unreachable!("a plan entry always has a spec or a record"),
        };
        record.format_version = crate::state::RECORD_FORMAT;
        if record.spec.security.userns && record.id_range.is_none() {
            record.id_range = Some(ids.range(&entry.name, self.settings)?);
        }
        if (record.spec.disk.quota.is_some() || record.spec.disk.inodes.is_some())
            && record.project_id.is_none()
        {
            record.project_id = Some(ids.project());
        }
        for step in &entry.steps {
            match step {
                Step::WriteRecord => self.store.write(&record)?,
                Step::Unregister => self.store.remove(&entry.name)?,
                other => {
                    return Err(ApplyError::Unsupported {
                        guest: entry.name.clone(),
                        step: step_name(other),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Hands out uid ranges and project ids during one apply.
struct IdAllocator {
    ranges: Vec<IdRange>,
    projects: Vec<u32>,
}

impl IdAllocator {
    fn range(&mut self, guest: &str, settings: &HostSettings) -> Result<IdRange, ApplyError> {
        let range = allocate_id_range(
            &self.ranges,
            settings.userns.first_id,
            settings.userns.ranges,
        )
        .ok_or_else(|| ApplyError::NoIdRange {
            guest: guest.to_string(),
            ranges: settings.userns.ranges,
        })?;
        self.ranges.push(range);
        Ok(range)
    }

    fn project(&mut self) -> u32 {
        let id = allocate_project_id(&self.projects);
        self.projects.push(id);
        id
    }
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Stop => "stop",
        Step::PurgeRootfs => "purge-rootfs",
        Step::BuildRootfs => "build-rootfs",
        Step::ApplyQuota => "apply-quota",
        Step::WriteGuestFiles => "write-guest-files",
        Step::ApplyLimits => "apply-limits",
        Step::ApplyNetwork => "apply-network",
        Step::Start => "start",
        Step::WriteRecord => "write-record",
        Step::Unregister => "unregister",
    }
}
