//! Observing the host and executing a plan.
//!
//! [`observe`] gathers what exists (records, rootfs presence, run state,
//! built templates); [`execute`] walks a [`Plan`] under the apply lock,
//! guest by guest, step by step, recording each completed guest so that an
//! apply killed at any point converges on the next run. A guest whose step
//! fails is reported and the others still proceed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::config::host::QuotaPolicy;
use crate::config::{GuestSpec, HostSettings};
use crate::host_access::{self, Access, Follow};
use crate::lifecycle;
use crate::paths::Paths;
use crate::plan::{Action, GuestPlan, Observed, ObservedGuest, Plan, RunStatus, Step};
use crate::quota;
use crate::rootfs::{self, IdShift, ResolvedStrategy, RootfsLayout};
use crate::runtime;
use crate::state::{
    GuestRecord, IdRange, StateError, StateStore, allocate_id_range, allocate_project_id,
};
use crate::template;
use crate::template::Definitions;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("guest {guest}: {message}")]
    Guest { guest: String, message: String },
    #[error("guest {guest}: no free uid/gid range left ([userns] ranges = {ranges} in vsctl.toml)")]
    NoIdRange { guest: String, ranges: u32 },
}

/// Everything observed about the host, for the planner.
pub fn observe(paths: &Paths, store: &StateStore) -> Result<Observed, StateError> {
    let mut observed = Observed::default();
    for (name, record) in store.records()? {
        let rootfs_present = match &record.rootfs {
            Some(RootfsLayout::Tree { path }) => path.is_dir(),
            Some(RootfsLayout::Overlay { upper, .. }) => upper.is_dir(),
            Some(RootfsLayout::Image { path }) => path.is_file(),
            // Registered without a root filesystem: the build facility was absent.
            None => true,
        };
        let run = crate::lifecycle::run_status(paths, &name);
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
        let mut stopped = self.stop_all(plan, observed);
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
                let stop = stopped.remove(&entry.name);
                match self.execute_guest(entry, spec, previous, &mut ids, stop) {
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
        stopped: Option<Result<(), String>>,
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
        let guest_dir = self.paths.guest_dir(&entry.name);
        for step in &entry.steps {
            match step {
                Step::WriteRecord => self.store.write(&record)?,
                Step::Unregister => {
                    self.store.remove(&entry.name)?;
                    self.remove_run_dir(&entry.name)?;
                    // The guest's directory goes too once nothing is left in it
                    // (after --purge); a kept root filesystem keeps it.
                    let _ = std::fs::remove_dir(&guest_dir);
                }
                Step::BuildRootfs => self.build_rootfs(&mut record, &guest_dir)?,
                Step::PurgeRootfs => {
                    rootfs::purge_rootfs(&guest_dir).map_err(|e| guest_error(&entry.name, e))?;
                    record.rootfs = None;
                    record.template_digest = None;
                }
                Step::ApplyQuota => self.apply_quota(&record)?,
                Step::WriteGuestFiles => self.write_guest_files(&record)?,
                Step::Start => {
                    lifecycle::start(self.paths, self.settings, &record)
                        .map_err(|e| guest_error(&entry.name, e))?;
                }
                Step::Stop => match &stopped {
                    Some(result) => result.clone().map_err(|e| guest_error(&entry.name, e))?,
                    None => {
                        let timeout = stop_timeout(&record, previous);
                        lifecycle::stop(self.paths, &entry.name, timeout)
                            .map_err(|e| guest_error(&entry.name, e))?;
                    }
                },
                Step::ApplyLimits => {
                    lifecycle::update_limits(self.paths, &record.spec)
                        .map_err(|e| guest_error(&entry.name, e))?;
                }
                Step::ApplyNetwork => {
                    lifecycle::update_network(self.paths, self.settings, &record.spec)
                        .map_err(|e| guest_error(&entry.name, e))?;
                }
            }
        }
        Ok(())
    }

    /// Stop every guest whose plan starts with a stop, all at once: each stop
    /// mostly waits for the guest's own shutdown (seconds for a busybox or
    /// systemd guest), so stopping one after another would make a large
    /// apply take minutes. The threads are joined before anything is
    /// started, because starting a guest forks and must be single-threaded.
    fn stop_all(&self, plan: &Plan, observed: &Observed) -> BTreeMap<String, Result<(), String>> {
        let stopping: Vec<(&str, std::time::Duration)> = plan
            .guests
            .iter()
            .filter(|g| g.blocked.is_none() && g.steps.first() == Some(&Step::Stop))
            .filter_map(|g| {
                let record = &observed.guests.get(&g.name)?.record;
                Some((g.name.as_str(), stop_timeout(record, Some(record))))
            })
            .collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = stopping
                .iter()
                .map(|(name, timeout)| {
                    let handle = scope.spawn(move || {
                        lifecycle::stop(self.paths, name, *timeout)
                            .map(drop)
                            .map_err(|e| e.to_string())
                    });
                    (name.to_string(), handle)
                })
                .collect();
            handles
                .into_iter()
                .map(|(name, handle)| {
                    let result = handle
                        .join()
                        .unwrap_or_else(|_| Err(String::from("stop panicked")));
                    (name, result)
                })
                .collect()
        })
    }

    /// Remove a stopped guest's runtime directory (state, spec, empty mount
    /// points). Refused while anything is mounted below it, so the delete
    /// can never reach into a guest's tree.
    fn remove_run_dir(&self, name: &str) -> Result<(), ApplyError> {
        let run_dir = self.paths.guest_run_dir(name);
        if !run_dir.exists() {
            return Ok(());
        }
        let mounted = rootfs::mounts_under(&run_dir).map_err(|e| guest_error(name, e))?;
        if !mounted.is_empty() {
            return Err(guest_error(
                name,
                format!("{} still has mounts: {mounted:?}", run_dir.display()),
            ));
        }
        std::fs::remove_dir_all(&run_dir)
            .map_err(|e| guest_error(name, format!("remove {}: {e}", run_dir.display())))
    }

    /// Clone the guest's template into its own root filesystem. Unprivileged
    /// guests with a tree of their own get its ownership shifted into their
    /// uid range; overlay guests keep the template's ids (the runtime maps
    /// them with idmapped layers).
    fn build_rootfs(&self, record: &mut GuestRecord, guest_dir: &Path) -> Result<(), ApplyError> {
        let spec = &record.spec;
        let fail = |e: &dyn std::fmt::Display| guest_error(&spec.name, e);
        let installed = template::installed(self.paths, &spec.template)
            .ok_or_else(|| fail(&format!("template {} is not built", spec.template)))?;
        let guests_dir = self.paths.guests_state_dir();
        // Root's only (an unprivileged guest with a tree gets its group
        // let through once the tree exists, below): see host_access.
        host_access::ensure_dir(&guests_dir, Access::Traverse, Follow::No).map_err(|e| fail(&e))?;
        host_access::create_dir(guest_dir, Access::Private).map_err(|e| fail(&e))?;
        let strategy = rootfs::resolve(spec.rootfs.strategy, &guests_dir).map_err(|e| fail(&e))?;
        let shift = match (record.id_range, strategy) {
            (Some(range), ResolvedStrategy::Reflink | ResolvedStrategy::Copy)
                if spec.security.userns =>
            {
                Some(IdShift {
                    host_base: range.host_base,
                    count: range.count,
                })
            }
            _ => None,
        };
        let tree = template::tree_path(self.paths, &spec.template);
        let layout = if strategy == ResolvedStrategy::Image {
            // One image per template tree digest, next to the guests (a
            // reflink cannot cross filesystems).
            let images = host_access::template_images_dir(self.paths);
            host_access::ensure_dir(&images, Access::Private, Follow::No).map_err(|e| fail(&e))?;
            let image = rootfs::image::template_image(
                &tree,
                &images,
                &spec.template,
                &installed.tree_digest,
            )
            .map_err(|e| fail(&e))?;
            rootfs::build_image_rootfs(&image, guest_dir, image_size(spec)).map_err(|e| fail(&e))?
        } else {
            rootfs::build_rootfs(&tree, guest_dir, strategy, shift).map_err(|e| fail(&e))?
        };
        record.rootfs = Some(layout);
        record.template_digest = Some(installed.tree_digest);
        host_access::tighten_dir(guest_dir, host_access::guest_dir_access(record), Follow::No)
            .map_err(|e| guest_error(&record.spec.name, e))
    }

    /// Write [`guest_files`]. A running guest gets them from inside its own
    /// namespaces ([`runtime::write_files`]); otherwise they go to its tree
    /// (owned by its root, shifted where the tree is) or its overlay upper
    /// layer. Either way through [`rootfs::guestfile`], which never follows
    /// a symlink out of the guest.
    fn write_guest_files(&self, record: &GuestRecord) -> Result<(), ApplyError> {
        let spec = &record.spec;
        let files = guest_files(spec);
        if lifecycle::run_status(self.paths, &spec.name) == RunStatus::Running {
            let files: Vec<(&str, Vec<u8>, u32)> = files
                .into_iter()
                .map(|(path, text)| (path, text.into_bytes(), 0o644))
                .collect();
            return runtime::write_files(&self.paths.guest_run_dir(&spec.name), &files)
                .map_err(|e| guest_error(&spec.name, e));
        }
        // An image guest's lock and mount, held until the writes are done
        // (the tuple drops the mount before the lock).
        let mut _image_mount = None;
        let (root, owner) = match &record.rootfs {
            Some(RootfsLayout::Tree { path }) => {
                let shifted = record.id_range.filter(|_| spec.security.userns);
                (path.clone(), shifted.map(|r| (r.host_base, r.host_base)))
            }
            Some(RootfsLayout::Overlay { upper, .. }) => (upper.clone(), None),
            Some(RootfsLayout::Image { path }) => {
                // Mounted for the writes only, attached nowhere: the mount
                // fd is the guest's root, and it goes when the fd closes.
                let fail = |e| guest_error(&spec.name, e);
                let locked = rootfs::image::lock(path).map_err(fail)?;
                let tree = rootfs::image::mount(&locked, None).map_err(fail)?;
                let root = std::path::PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&tree)
                ));
                _image_mount = Some((tree, locked));
                (root, None)
            }
            None => return Ok(()),
        };
        for (path, contents) in files {
            rootfs::guestfile::write(&root, path, contents.as_bytes(), 0o644, owner)
                .map_err(|e| guest_error(&spec.name, e))?;
        }
        Ok(())
    }

    /// `[disk]` for an image guest: `quota` is the size of its filesystem
    /// (resized offline while stopped, grown online while running); the
    /// inode count follows the size (one per 16 KiB), so `inodes` is a
    /// limit this strategy cannot set.
    fn size_image(&self, record: &GuestRecord, image: &Path) -> Result<(), ApplyError> {
        let spec = &record.spec;
        if spec.disk.inodes.is_some() {
            self.quota_unsupported(
                &spec.name,
                format!(
                    "cannot enforce [disk] inodes on {}: an image guest's inode count is fixed by its size \
                     (one inode per 16 KiB); drop `inodes`, or use strategy \"reflink\" or \"overlay\" on a \
                     filesystem with project quotas",
                    image.display()
                ),
            )?;
        }
        let size = image_size(spec);
        let result = match runtime::status(&self.paths.guest_run_dir(&spec.name)) {
            Ok(runtime::GuestRuntimeState::Running { init_pid, .. }) => {
                let root = Path::new("/proc").join(init_pid.to_string()).join("root");
                rootfs::image::grow_online(image, &root, size)
            }
            _ => rootfs::image::resize_offline(image, size),
        };
        result.map_err(|e| guest_error(&spec.name, e))
    }

    /// Set the disk quota from `[disk]` on the guest's tree, or fail (or
    /// warn, per host settings) where the filesystem cannot enforce one.
    fn apply_quota(&self, record: &GuestRecord) -> Result<(), ApplyError> {
        let spec = &record.spec;
        if let Some(RootfsLayout::Image { path }) = &record.rootfs {
            return self.size_image(record, path);
        }
        let (Some(layout), Some(project_id)) = (&record.rootfs, record.project_id) else {
            return Ok(());
        };
        let limits = quota::DiskLimits {
            bytes: spec.disk.quota.map(|s| s.bytes()),
            inodes: spec.disk.inodes,
        };
        match quota::apply(layout.quota_root(), project_id, &limits) {
            Ok(()) => Ok(()),
            Err(quota::QuotaError::Unsupported {
                path,
                reason,
                how_to_fix,
            }) => self.quota_unsupported(
                &spec.name,
                format!(
                    "cannot enforce [disk] limits on {}: {reason}; {how_to_fix}",
                    path.display()
                ),
            ),
            Err(e) => Err(guest_error(&spec.name, e)),
        }
    }

    /// A `[disk]` limit the filesystem or strategy cannot enforce: an error
    /// for the guest, or a warning if the host settings say
    /// `quota_unsupported = "warn"`. Never a silent no-op.
    fn quota_unsupported(&self, guest: &str, message: String) -> Result<(), ApplyError> {
        let message = format!(
            "{message} (or set quota_unsupported = \"warn\" under [defaults] in vsctl.toml)"
        );
        match self.settings.defaults.quota_unsupported {
            QuotaPolicy::Error => Err(guest_error(guest, message)),
            QuotaPolicy::Warn => {
                eprintln!("vsctl: warning: guest {guest}: {message}");
                Ok(())
            }
        }
    }
}

/// An image guest's size: `[disk] quota`, else the default image size.
fn image_size(spec: &GuestSpec) -> u64 {
    spec.disk
        .quota
        .map_or(rootfs::image::DEFAULT_SIZE, |q| q.bytes())
}

/// How long to wait for a guest's init before killing it: the timeout it
/// was started with (its previous record's), not a newly edited one.
fn stop_timeout(record: &GuestRecord, previous: Option<&GuestRecord>) -> std::time::Duration {
    previous
        .map_or(record.spec.init.stop_timeout, |p| p.spec.init.stop_timeout)
        .0
}

fn guest_error(guest: &str, error: impl std::fmt::Display) -> ApplyError {
    ApplyError::Guest {
        guest: guest.to_string(),
        message: error.to_string(),
    }
}

/// The files vsctl owns inside a guest: /etc/hostname, /etc/hosts and, when
/// the guest file names DNS servers, /etc/resolv.conf.
pub fn guest_files(spec: &GuestSpec) -> Vec<(&'static str, String)> {
    let short = spec.hostname.split('.').next().unwrap_or(&spec.hostname);
    let names = if short == spec.hostname {
        short.to_string()
    } else {
        format!("{} {short}", spec.hostname)
    };
    let mut hosts = String::from(
        "# written by vsctl from the guest file\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if spec.network.addresses.is_empty() {
        hosts.push_str(&format!("127.0.1.1\t{names}\n"));
    }
    for cidr in &spec.network.addresses {
        hosts.push_str(&format!("{}\t{names}\n", cidr.addr));
    }
    let mut files = vec![
        ("etc/hostname", format!("{}\n", spec.hostname)),
        ("etc/hosts", hosts),
    ];
    if !spec.network.dns.is_empty() {
        let mut resolv = String::from("# written by vsctl from the guest file\n");
        for server in &spec.network.dns {
            resolv.push_str(&format!("nameserver {server}\n"));
        }
        files.push(("etc/resolv.conf", resolv));
    }
    files
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
