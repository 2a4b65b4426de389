//! Templates: named, reproducible root filesystem trees that guests are
//! cloned from.
//!
//! A template is built from its definition (`templates/*.toml`, see
//! `man 5 vsctl-template.toml`) into a *staging* directory
//! `templates/NAME.building/` (tree in `rootfs/`, then `manifest.json`), its
//! files are ingested into the content-addressed [`crate::store`], and only
//! then is the staging directory renamed to `templates/NAME/` (or atomically
//! exchanged with the old one with `renameat2(RENAME_EXCHANGE)`). A build
//! killed at any moment therefore leaves either the old template or the new
//! one visible, never half of one; the next build (or gc) deletes stale
//! staging directories first. Builds hold the store lock.
//!
//! A template is rebuilt only when its *definition hash* changed (the
//! definition's canonical JSON, the content of files it copies in, and for a
//! derived template the tree digest of its base), or on `force`.
//!
//! What this module must never do: write through a symlink of a tree it
//! builds (all untrusted names go through [`safe`]), leave a mount or a
//! process behind (build steps run in private namespaces, see `isolate`),
//! modify an installed template in place, or delete a template some guest
//! still references (`remove` takes the referencing guests and refuses).

#![deny(unsafe_code)]

mod busybox;
mod debian;
mod def;
mod import;
mod isolate;
pub mod safe;

pub use debian::{host_debian_mirror, parse_deb822, parse_one_line_style};
pub use def::{
    Bootstrap, DefinitionError, Definitions, EMBEDDED, FileSpec, Source, TemplateDef, valid_name,
};

use crate::paths::Paths;
use crate::store::{EntryKind, Manifest, Store, StoreError};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Errors from building and managing templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No definition with that name.
    #[error("unknown template {0:?}")]
    Unknown(String),
    /// The template is not built.
    #[error("template {0:?} is not built")]
    NotBuilt(String),
    /// Guests still use it.
    #[error("template {name:?} is still used by guest(s): {}", guests.join(", "))]
    InUse {
        /// Template.
        name: String,
        /// Referencing guests.
        guests: Vec<String>,
    },
    /// A store operation failed.
    #[error("template {template:?}: {source}")]
    Store {
        /// Template.
        template: String,
        /// Cause.
        source: StoreError,
    },
    /// An I/O error.
    #[error("template {template:?}: {action} {path}: {source}")]
    Io {
        /// Template.
        template: String,
        /// What was being done.
        action: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// An archive or definition entry would escape the tree.
    #[error("template {template:?}: refusing entry {entry:?} from {}: {reason}", origin.display())]
    UnsafeEntry {
        /// Template.
        template: String,
        /// Tarball, directory or definition.
        origin: PathBuf,
        /// Entry name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// Bootstrapping could not start or failed.
    #[error("template {template:?}: {message}")]
    Bootstrap {
        /// Template.
        template: String,
        /// What went wrong.
        message: String,
    },
    /// A build step exited non-zero.
    #[error("template {template:?}: command failed with status {status}: {command}")]
    CommandFailed {
        /// Template.
        template: String,
        /// The command line.
        command: String,
        /// Exit status (128 + signal when killed).
        status: i32,
    },
    /// A stale staging directory has a mount below it; vsctl will not delete
    /// through a mount point.
    #[error("{0} has a mount point below it; unmount it before building")]
    MountedStaging(PathBuf),
}

impl TemplateError {
    fn store(template: &str) -> impl FnOnce(StoreError) -> TemplateError {
        let template = template.to_string();
        move |source| TemplateError::Store { template, source }
    }

    fn io(
        template: &str,
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> TemplateError {
        let (template, path) = (template.to_string(), path.into());
        move |source| TemplateError::Io {
            template,
            action,
            path,
            source,
        }
    }

    pub(crate) fn unsafe_entry(
        template: &str,
        source: &Path,
        entry: &str,
        e: safe::SafePathError,
    ) -> TemplateError {
        TemplateError::UnsafeEntry {
            template: template.to_string(),
            origin: source.to_path_buf(),
            entry: entry.to_string(),
            reason: e.to_string(),
        }
    }
}

/// Options for [`build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Rebuild even when the definition is unchanged (the named template
    /// only, not its bases).
    pub force: bool,
    /// Show indicatif progress bars on stderr.
    pub progress: bool,
    /// Host mirror setting; `None` means the host's apt sources.
    pub mirror: Option<String>,
}

/// What [`build`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildOutcome {
    /// Template.
    pub name: String,
    /// Digest of the installed tree.
    pub tree_digest: String,
    /// False when the installed template was already up to date.
    pub rebuilt: bool,
}

/// An installed template, from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstalledTemplate {
    /// Name.
    pub name: String,
    /// Tree digest.
    pub tree_digest: String,
    /// Definition hash it was built from.
    pub definition_hash: String,
    /// Regular files.
    pub files: u64,
    /// Bytes in regular files.
    pub bytes: u64,
}

/// One row of [`list`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TemplateListing {
    /// Name.
    pub name: String,
    /// Tree digest.
    pub tree_digest: String,
    /// Regular files.
    pub files: u64,
    /// Bytes in regular files.
    pub bytes: u64,
    /// Bytes of this template's objects that other templates also link.
    pub bytes_shared_with_others: u64,
}

/// Result of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Entries whose content, type or metadata differ from the manifest,
    /// whose file is no longer the store object, or that the manifest does
    /// not list at all.
    pub corrupted: Vec<PathBuf>,
    /// Entries in the manifest missing from the tree.
    pub missing: Vec<PathBuf>,
    /// Entries that check out.
    pub ok: usize,
}

/// `templates/NAME/`: tree plus manifest.
fn template_dir(paths: &Paths, name: &str) -> PathBuf {
    paths.template_trees_dir().join(name)
}

/// The root filesystem tree of a template.
pub fn tree_path(paths: &Paths, name: &str) -> PathBuf {
    template_dir(paths, name).join("rootfs")
}

/// The manifest of an installed template.
pub fn manifest_path(paths: &Paths, name: &str) -> PathBuf {
    template_dir(paths, name).join("manifest.json")
}

/// The full manifest of an installed template.
pub fn manifest(paths: &Paths, name: &str) -> Result<Manifest, TemplateError> {
    let p = manifest_path(paths, name);
    if !p.exists() {
        return Err(TemplateError::NotBuilt(name.to_string()));
    }
    Manifest::read(&p).map_err(TemplateError::store(name))
}

/// Summary of an installed template, if it is built.
pub fn installed(paths: &Paths, name: &str) -> Option<InstalledTemplate> {
    let m = Manifest::read(&manifest_path(paths, name)).ok()?;
    Some(InstalledTemplate {
        name: m.name,
        tree_digest: m.tree_digest,
        definition_hash: m.definition_hash,
        files: m.files,
        bytes: m.bytes,
    })
}

fn is_staging_name(n: &str) -> bool {
    n.ends_with(".building") || n.ends_with(".removing")
}

/// Mount points below `dir` according to /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Delete a directory tree we own, refusing if anything is mounted below it
/// (`remove_dir_all` would otherwise descend into the mount).
fn remove_owned_tree(dir: &Path) -> Result<(), TemplateError> {
    let canon = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !mounts_below(&canon).is_empty() {
        return Err(TemplateError::MountedStaging(dir.to_path_buf()));
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TemplateError::io("", "removing", dir)(e)),
    }
}

/// Remove interrupted `NAME.building` / `NAME.removing` directories. Callers
/// hold the store lock, so none of them belongs to a running build.
pub(crate) fn remove_stale_staging(paths: &Paths) -> Result<u64, StoreError> {
    let dir = paths.template_trees_dir();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io("reading", &dir)(e)),
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        if name.to_str().is_some_and(is_staging_name) {
            let p = e.path();
            remove_owned_tree(&p).map_err(|err| StoreError::Io {
                action: "removing stale staging directory",
                path: p.clone(),
                source: std::io::Error::other(err.to_string()),
            })?;
            n += 1;
        }
    }
    Ok(n)
}

/// Build `name` (and its bases first) unless it is up to date.
pub fn build(
    paths: &Paths,
    defs: &Definitions,
    name: &str,
    opts: &BuildOptions,
) -> Result<BuildOutcome, TemplateError> {
    // Template trees and the store hold setuid binaries and device nodes
    // with the modes the template gave them: root's only.
    crate::host_access::secure_layout(paths)
        .map_err(|e| TemplateError::store(name)(StoreError::from(e)))?;
    let store = Store::new(paths);
    store.create().map_err(TemplateError::store(name))?;
    let trees = paths.template_trees_dir();
    crate::host_access::ensure_dir(
        &trees,
        crate::host_access::Access::Private,
        crate::host_access::Follow::No,
    )
    .map_err(|e| TemplateError::store(name)(StoreError::from(e)))?;
    let _lock = store.lock().map_err(TemplateError::store(name))?;
    remove_stale_staging(paths).map_err(TemplateError::store(name))?;
    build_locked(paths, &store, defs, name, opts, opts.force, 0)
}

/// Whether `build` (without force) would rebuild `name`: it is not built, or
/// its definition changed since it was.
pub fn needs_rebuild(paths: &Paths, defs: &Definitions, name: &str) -> Result<bool, TemplateError> {
    let def = defs
        .get(name)
        .ok_or_else(|| TemplateError::Unknown(name.to_string()))?;
    let Some(inst) = installed(paths, name) else {
        return Ok(true);
    };
    Ok(definition_hash(paths, def)
        .map(|hash| hash != inst.definition_hash)
        .unwrap_or(true))
}

/// The definition hash: canonical JSON of the definition, contents of
/// `files` sources, and the base's tree digest.
fn definition_hash(paths: &Paths, def: &TemplateDef) -> Result<String, TemplateError> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"vsctl-template-definition-v1\0");
    h.update(serde_json::to_vec(def).expect("definitions serialise"));
    for f in &def.files {
        if let Some(src) = &f.source {
            let data =
                fs::read(src).map_err(TemplateError::io(&def.name, "reading file source", src))?;
            h.update((data.len() as u64).to_le_bytes());
            h.update(&data);
        }
    }
    if let Source::Base { name } = &def.source {
        let base = installed(paths, name).ok_or_else(|| TemplateError::NotBuilt(name.clone()))?;
        h.update(base.tree_digest.as_bytes());
    }
    Ok(crate::store::hex(&h.finalize()))
}

fn progress_bar(opts: &BuildOptions, name: &str) -> Option<indicatif::ProgressBar> {
    if !opts.progress {
        return None;
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix:>20} {msg:12} [{bar:30}] {bytes}/{total_bytes}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(name.to_string());
    Some(pb)
}

fn build_locked(
    paths: &Paths,
    store: &Store,
    defs: &Definitions,
    name: &str,
    opts: &BuildOptions,
    force: bool,
    depth: usize,
) -> Result<BuildOutcome, TemplateError> {
    let def = defs
        .get(name)
        .ok_or_else(|| TemplateError::Unknown(name.to_string()))?;
    if let Source::Base { name: base } = &def.source {
        if depth > 16 {
            return Err(TemplateError::Bootstrap {
                template: name.into(),
                message: "base chain too deep".into(),
            });
        }
        build_locked(paths, store, defs, base, opts, false, depth + 1)?;
    }
    let hash = definition_hash(paths, def)?;
    if !force
        && let Some(inst) = installed(paths, name)
        && inst.definition_hash == hash
    {
        return Ok(BuildOutcome {
            name: name.to_string(),
            tree_digest: inst.tree_digest,
            rebuilt: false,
        });
    }

    let pb = progress_bar(opts, name);
    let staging = paths.template_trees_dir().join(format!("{name}.building"));
    fs::create_dir(&staging).map_err(TemplateError::io(name, "creating", &staging))?;
    let rootfs = staging.join("rootfs");
    if let Some(pb) = &pb {
        pb.set_message("bootstrap");
    }
    match &def.source {
        Source::Busybox => {
            fs::create_dir(&rootfs).map_err(TemplateError::io(name, "creating", &rootfs))?;
            busybox::populate(name, &rootfs)?;
        }
        Source::Mmdebstrap {
            suite,
            variant,
            components,
            mirror,
            keyring,
        } => {
            let mirror = mirror
                .clone()
                .or_else(|| opts.mirror.clone())
                .or_else(|| host_debian_mirror(Path::new("/etc/apt")))
                .ok_or_else(|| TemplateError::Bootstrap {
                    template: name.to_string(),
                    message: "no mirror: set one in vsctl.toml or add a Debian archive to the host's apt sources".into(),
                })?;
            // mmdebstrap wants to create the target itself.
            debian::bootstrap(
                name,
                suite,
                variant,
                components,
                &def.packages,
                keyring.as_deref(),
                &mirror,
                &rootfs,
            )?;
        }
        Source::Import { path } => {
            fs::create_dir(&rootfs).map_err(TemplateError::io(name, "creating", &rootfs))?;
            import::import(name, path, &rootfs)?;
        }
        Source::Base { name: base } => {
            fs::create_dir(&rootfs).map_err(TemplateError::io(name, "creating", &rootfs))?;
            // A real copy, never hardlinks: packages and run steps write into
            // this tree, and writing through a hardlink would change the
            // base's store objects (and every template sharing them).
            import::copy_dir(name, &tree_path(paths, base), &rootfs)?;
        }
    }
    // Order: packages, then files (so they can override what packages
    // ship), then run commands.
    if matches!(def.source, Source::Base { .. }) && !def.packages.is_empty() {
        if !defs.is_apt_based(name) {
            return Err(TemplateError::Bootstrap {
                template: name.to_string(),
                message: "`packages` needs an apt-based base template".into(),
            });
        }
        if let Some(pb) = &pb {
            pb.set_message("packages");
        }
        let install = format!(
            "apt-get update && apt-get install -y --no-install-recommends {} && apt-get clean && rm -rf /var/lib/apt/lists/*",
            def.packages.join(" ")
        );
        run_steps(name, &rootfs, &[install])?;
    }
    for f in &def.files {
        write_definition_file(name, &rootfs, f)?;
    }
    if !def.run.is_empty() {
        if let Some(pb) = &pb {
            pb.set_message("run");
        }
        run_steps(name, &rootfs, &def.run)?;
    }

    if let Some(pb) = &pb {
        pb.set_message("ingest");
    }
    let (entries, _stats) = crate::store::ingest_tree(store, &rootfs, pb.as_ref())
        .map_err(TemplateError::store(name))?;
    let manifest = Manifest::new(name, &hash, entries);
    manifest
        .write(&staging.join("manifest.json"))
        .map_err(TemplateError::store(name))?;
    install_staging(paths, name, &staging)?;
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    Ok(BuildOutcome {
        name: name.to_string(),
        tree_digest: manifest.tree_digest,
        rebuilt: true,
    })
}

/// Atomically make the staging directory the template.
fn install_staging(paths: &Paths, name: &str, staging: &Path) -> Result<(), TemplateError> {
    let trees = paths.template_trees_dir();
    let dir = template_dir(paths, name);
    let trees_fd = fs::File::open(&trees).map_err(TemplateError::io(name, "opening", &trees))?;
    if fs::symlink_metadata(&dir).is_ok() {
        nix::fcntl::renameat2(
            &trees_fd,
            staging.file_name().expect("named"),
            &trees_fd,
            name,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| TemplateError::io(name, "installing", &dir)(e.into()))?;
        // `staging` now holds the previous tree; a crash here leaves it for
        // the next build's stale-staging cleanup.
        nix::unistd::fsync(&trees_fd)
            .map_err(|e| TemplateError::io(name, "syncing", &trees)(e.into()))?;
        remove_owned_tree(staging)?;
    } else {
        fs::rename(staging, &dir).map_err(TemplateError::io(name, "installing", &dir))?;
        nix::unistd::fsync(&trees_fd)
            .map_err(|e| TemplateError::io(name, "syncing", &trees)(e.into()))?;
    }
    Ok(())
}

fn write_definition_file(name: &str, rootfs: &Path, f: &FileSpec) -> Result<(), TemplateError> {
    let root = safe::SafeRoot::open(rootfs)
        .map_err(|e| TemplateError::unsafe_entry(name, rootfs, "/", e))?;
    let data = match (&f.content, &f.source) {
        (Some(c), _) => c.clone().into_bytes(),
        (None, Some(src)) => {
            fs::read(src).map_err(TemplateError::io(name, "reading file source", src))?
        }
        (None, None) => Vec::new(),
    };
    let meta = safe::Meta {
        mode: f.mode,
        uid: f.uid,
        gid: f.gid,
        mtime: None,
    };
    let rel = f.path.trim_start_matches('/');
    root.write_file(rel, &data, &meta)
        .map_err(|e| TemplateError::unsafe_entry(name, rootfs, &f.path, e))
}

/// Run shell steps inside the staging tree, with the host's resolv.conf so
/// apt can resolve names and a policy-rc.d so maintainer scripts do not
/// start services; both are put back as they were afterwards.
fn run_steps(name: &str, rootfs: &Path, steps: &[String]) -> Result<(), TemplateError> {
    let root = safe::SafeRoot::open(rootfs)
        .map_err(|e| TemplateError::unsafe_entry(name, rootfs, "/", e))?;
    let resolv_rel = "etc/resolv.conf";
    // Validate the parent first: `save_entry` reads by path, and must not
    // read through an `etc` symlink pointing out of the tree.
    open_parent_dir(name, &root, resolv_rel)?;
    let saved_resolv = save_entry(rootfs, resolv_rel);
    if let Ok(host) = fs::read("/etc/resolv.conf") {
        root.write_file(
            resolv_rel,
            &host,
            &safe::Meta {
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: None,
            },
        )
        .map_err(|e| TemplateError::unsafe_entry(name, rootfs, resolv_rel, e))?;
    }
    let policy_rel = "usr/sbin/policy-rc.d";
    let had_policy = fs::symlink_metadata(rootfs.join(policy_rel)).is_ok();
    if !had_policy {
        root.write_file(
            policy_rel,
            b"#!/bin/sh\nexit 101\n",
            &safe::Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: None,
            },
        )
        .map_err(|e| TemplateError::unsafe_entry(name, rootfs, policy_rel, e))?;
    }
    let mut result = Ok(());
    for step in steps {
        let status = isolate::run(&isolate::IsolatedCommand {
            root: Some(rootfs.to_path_buf()),
            argv: vec!["/bin/sh".into(), "-ec".into(), step.clone()],
            env: debian::build_env(),
            hostname: format!("vsctl-build-{name}"),
        })
        .map_err(|e| TemplateError::Bootstrap {
            template: name.to_string(),
            message: format!("running {step:?}: {e}"),
        });
        match status {
            Ok(0) => {}
            Ok(status) => {
                result = Err(TemplateError::CommandFailed {
                    template: name.to_string(),
                    command: step.clone(),
                    status,
                });
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if !had_policy {
        let _ = nix::unistd::unlinkat(
            &open_parent_dir(name, &root, policy_rel)?,
            "policy-rc.d",
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    restore_entry(name, &root, rootfs, resolv_rel, saved_resolv)?;
    result
}

enum Saved {
    Missing,
    File(Vec<u8>, u32),
    Symlink(PathBuf),
    Other,
}

fn save_entry(rootfs: &Path, rel: &str) -> Saved {
    let p = rootfs.join(rel);
    match fs::symlink_metadata(&p) {
        Err(_) => Saved::Missing,
        Ok(md) if md.file_type().is_symlink() => fs::read_link(&p)
            .map(Saved::Symlink)
            .unwrap_or(Saved::Other),
        // Only read it when it is a regular file (symlink checked above).
        Ok(md) if md.is_file() => fs::read(&p)
            .map(|d| Saved::File(d, md.mode() & 0o7777))
            .unwrap_or(Saved::Other),
        Ok(_) => Saved::Other,
    }
}

fn open_parent_dir(
    name: &str,
    root: &safe::SafeRoot,
    rel: &str,
) -> Result<std::os::fd::OwnedFd, TemplateError> {
    root.parent_of(rel, false)
        .map(|(fd, _)| fd)
        .map_err(|e| TemplateError::unsafe_entry(name, root.path(), rel, e))
}

fn restore_entry(
    name: &str,
    root: &safe::SafeRoot,
    rootfs: &Path,
    rel: &str,
    saved: Saved,
) -> Result<(), TemplateError> {
    let meta = |mode| safe::Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime: None,
    };
    let r = match saved {
        Saved::Missing => {
            let parent = open_parent_dir(name, root, rel)?;
            let last = Path::new(rel).file_name().expect("named");
            let _ = nix::unistd::unlinkat(&parent, last, nix::unistd::UnlinkatFlags::NoRemoveDir);
            Ok(())
        }
        Saved::File(data, mode) => root.write_file(rel, &data, &meta(mode)),
        Saved::Symlink(t) => root.symlink(rel, &t, &meta(0o777)),
        Saved::Other => Ok(()),
    };
    r.map_err(|e| TemplateError::unsafe_entry(name, rootfs, rel, e))
}

/// All installed templates with sharing figures.
pub fn list(paths: &Paths) -> Result<Vec<TemplateListing>, TemplateError> {
    let dir = paths.template_trees_dir();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TemplateError::io("", "reading", &dir)(e)),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| valid_name(n) && !is_staging_name(n))
        .collect();
    names.sort();
    let store = Store::new(paths);
    let mut out = Vec::new();
    for name in names {
        let Ok(m) = manifest(paths, &name) else {
            continue;
        };
        // How many names of each object this template holds.
        let mut refs: HashMap<&str, (u64, u64)> = HashMap::new();
        for e in m.entries.iter().filter(|e| e.kind == EntryKind::File) {
            if let Some(o) = &e.object {
                let r = refs.entry(o.as_str()).or_insert((0, e.size));
                r.0 += 1;
            }
        }
        let mut shared = 0;
        for (obj, (count, size)) in refs {
            // nlink = 1 (the store's name) + every tree name; more than ours
            // means another template links it too.
            if let Ok(md) = fs::metadata(store.object_path(obj))
                && md.nlink() > 1 + count
            {
                shared += size * count;
            }
        }
        out.push(TemplateListing {
            name: m.name.clone(),
            tree_digest: m.tree_digest.clone(),
            files: m.files,
            bytes: m.bytes,
            bytes_shared_with_others: shared,
        });
    }
    Ok(out)
}

/// Re-hash an installed template and compare it with its manifest.
pub fn verify(paths: &Paths, name: &str) -> Result<VerifyReport, TemplateError> {
    use sha2::Digest;
    use std::io::Read;
    let m = manifest(paths, name)?;
    let root = tree_path(paths, name);
    let store = Store::new(paths);
    let mut report = VerifyReport::default();
    let mut buf = vec![0u8; 256 * 1024];
    for e in &m.entries {
        let rel = e.path.trim_start_matches('/');
        let p = if rel.is_empty() {
            root.clone()
        } else {
            root.join(rel)
        };
        let md = match fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(_) => {
                report.missing.push(PathBuf::from(&e.path));
                continue;
            }
        };
        let meta_ok = md.mode() & 0o7777 == e.mode && md.uid() == e.uid && md.gid() == e.gid;
        let ok = match e.kind {
            EntryKind::Dir => md.is_dir() && meta_ok,
            EntryKind::Symlink => {
                md.file_type().is_symlink()
                    && fs::read_link(&p)
                        .ok()
                        .and_then(|t| t.to_str().map(str::to_string))
                        == e.target
            }
            EntryKind::File => {
                let same_obj = e
                    .object
                    .as_ref()
                    .and_then(|o| fs::symlink_metadata(store.object_path(o)).ok());
                let linked = same_obj.is_some_and(|o| o.ino() == md.ino() && o.dev() == md.dev());
                let content_ok = md.is_file()
                    && md.len() == e.size
                    && nix::fcntl::open(
                        p.as_path(),
                        nix::fcntl::OFlag::O_RDONLY
                            | nix::fcntl::OFlag::O_NOFOLLOW
                            | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .ok()
                    .map(fs::File::from)
                    .and_then(|mut f| {
                        let mut h = sha2::Sha256::new();
                        loop {
                            match f.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => h.update(&buf[..n]),
                                Err(_) => return None,
                            }
                        }
                        Some(crate::store::hex(&h.finalize()))
                    })
                    .is_some_and(|d| Some(d) == e.digest);
                linked && content_ok && meta_ok
            }
            EntryKind::Char | EntryKind::Block => meta_ok && Some(md.rdev()) == e.rdev,
            EntryKind::Fifo | EntryKind::Socket => meta_ok,
        };
        if ok {
            report.ok += 1;
        } else {
            report.corrupted.push(PathBuf::from(&e.path));
        }
    }
    // Anything in the tree the manifest does not list is a change too.
    let known: std::collections::HashSet<&str> =
        m.entries.iter().map(|e| e.path.as_str()).collect();
    for item in walkdir::WalkDir::new(&root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let Ok(item) = item else { continue };
        let rel = item.path().strip_prefix(&root).expect("below the root");
        let name = format!("/{}", rel.to_string_lossy());
        if !known.contains(name.as_str()) {
            report.corrupted.push(PathBuf::from(name));
        }
    }
    Ok(report)
}

/// Delete an installed template (its objects stay until [`crate::store::gc`]).
/// Refuses while `referenced_by` (the guests using it) is non-empty.
pub fn remove(paths: &Paths, name: &str, referenced_by: &[String]) -> Result<(), TemplateError> {
    if !referenced_by.is_empty() {
        return Err(TemplateError::InUse {
            name: name.to_string(),
            guests: referenced_by.to_vec(),
        });
    }
    if !valid_name(name) {
        return Err(TemplateError::Unknown(name.to_string()));
    }
    let dir = template_dir(paths, name);
    if fs::symlink_metadata(&dir).is_err() {
        return Err(TemplateError::NotBuilt(name.to_string()));
    }
    let store = Store::new(paths);
    let _lock = store.lock().map_err(TemplateError::store(name))?;
    // Rename first so a killed removal never leaves a half template visible.
    let doomed = paths.template_trees_dir().join(format!("{name}.removing"));
    remove_owned_tree(&doomed)?;
    fs::rename(&dir, &doomed).map_err(TemplateError::io(name, "removing", &dir))?;
    remove_owned_tree(&doomed)
}
