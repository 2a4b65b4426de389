//! Observing the host and executing a plan.
//!
//! [`observe`] gathers what exists (records, rootfs presence, run state,
//! built templates); [`execute`] walks a [`Plan`] under the apply lock,
//! guest by guest, step by step, recording each completed guest so that an
//! apply killed at any point converges on the next run. A guest whose step
//! fails is reported and the others still proceed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::GuestSpec;
use crate::paths::Paths;
use crate::plan::{Action, GuestPlan, Observed, ObservedGuest, Plan, RunStatus, Step};
use crate::state::{GuestRecord, StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("guest {guest}: step {step} is not supported by this build of vsctl")]
    Unsupported { guest: String, step: &'static str },
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
                && !name.contains('.')
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

/// Run the plan. `desired` supplies the specs the plan was made from.
pub fn execute(
    plan: &Plan,
    desired: &[GuestSpec],
    observed: &Observed,
    store: &StateStore,
) -> ApplyResult {
    let specs: BTreeMap<&str, &GuestSpec> = desired.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut result = ApplyResult {
        format_version: crate::plan::FORMAT_VERSION,
        changed: false,
        failed: false,
        templates_built: Vec::new(),
        guests: Vec::new(),
    };
    for entry in &plan.guests {
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
        } else {
            let spec = specs.get(entry.name.as_str()).copied();
            let previous = observed.guests.get(&entry.name).map(|g| &g.record);
            match execute_guest(entry, spec, previous, store) {
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
    }
    result
}

fn execute_guest(
    entry: &GuestPlan,
    spec: Option<&GuestSpec>,
    previous: Option<&GuestRecord>,
    store: &StateStore,
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
    for step in &entry.steps {
        match step {
            Step::WriteRecord => store.write(&record)?,
            Step::Unregister => store.remove(&entry.name)?,
            other => {
                let step = match other {
                    Step::Stop => "stop",
                    Step::PurgeRootfs => "purge-rootfs",
                    Step::BuildRootfs => "build-rootfs",
                    Step::ApplyQuota => "apply-quota",
                    Step::WriteGuestFiles => "write-guest-files",
                    Step::ApplyLimits => "apply-limits",
                    Step::ApplyNetwork => "apply-network",
                    Step::Start => "start",
                    Step::WriteRecord | Step::Unregister => unreachable!(),
                };
                return Err(ApplyError::Unsupported {
                    guest: entry.name.clone(),
                    step,
                });
            }
        }
    }
    record.format_version = crate::state::RECORD_FORMAT;
    Ok(())
}
