//! `vsctl template ...` and `vsctl gc`.

use std::io::IsTerminal;

use super::{Host, definitions, exit, print_json, report_diags};
use crate::cli::{OutputFormat, TemplateCommand};
use crate::plan::FORMAT_VERSION;
use crate::rootfs::RootfsLayout;
use crate::state::StateStore;
use crate::template;

fn fail(error: &dyn std::fmt::Display) -> i32 {
    eprintln!("vsctl: {error}");
    exit::ERROR
}

/// Guests whose record names this template, and those of them that use it
/// as their overlay lower layer (whose files would change under them).
fn users(host: &Host, name: &str) -> Result<(Vec<String>, Vec<String>), i32> {
    let records = StateStore::new(&host.paths)
        .records()
        .map_err(|e| fail(&e))?;
    let mut all = Vec::new();
    let mut overlay = Vec::new();
    for (guest, record) in records {
        if record.spec.template == name {
            if matches!(record.rootfs, Some(RootfsLayout::Overlay { .. })) {
                overlay.push(guest.clone());
            }
            all.push(guest);
        }
    }
    Ok((all, overlay))
}

pub fn run(host: &Host, command: TemplateCommand) -> i32 {
    match command {
        TemplateCommand::Build { name, force } => build(host, name.as_str(), force),
        TemplateCommand::List => list(host),
        TemplateCommand::Verify { name } => verify(host, name.as_str()),
        TemplateCommand::Rm { name } => {
            let name = name.as_str();
            let (guests, _) = match users(host, name) {
                Ok(users) => users,
                Err(code) => return code,
            };
            match template::remove(&host.paths, name, &guests) {
                Ok(()) => {
                    eprintln!(
                        "vsctl: removed template {name} (run `vsctl gc` to free its objects)"
                    );
                    exit::OK
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn build(host: &Host, name: &str, force: bool) -> i32 {
    let definitions = match definitions(&host.paths) {
        Ok(d) => d,
        Err(diags) => return report_diags(&diags, host.output),
    };
    if template::installed(&host.paths, name).is_some() {
        let (_, overlay) = match users(host, name) {
            Ok(users) => users,
            Err(code) => return code,
        };
        if !overlay.is_empty() {
            // A rebuild replaces the tree that is the lower layer of these guests.
            let definition_changed =
                template::needs_rebuild(&host.paths, &definitions, name).unwrap_or(true);
            if force || definition_changed {
                return fail(&format!(
                    "template {name} is the lower layer of overlay guest(s) {}: rebuilding it would change their files \
                     underneath them; remove or recreate those guests first",
                    overlay.join(", ")
                ));
            }
        }
    }
    let options = template::BuildOptions {
        force,
        progress: std::io::stderr().is_terminal(),
        mirror: host.settings.templates.mirror.clone(),
    };
    match template::build(&host.paths, &definitions, name, &options) {
        Ok(outcome) => {
            match host.output {
                OutputFormat::Json => print_json(
                    &serde_json::json!({ "format_version": FORMAT_VERSION, "build": outcome }),
                ),
                OutputFormat::Text => outln!(
                    "{} {} ({})",
                    outcome.name,
                    outcome.tree_digest,
                    if outcome.rebuilt {
                        "built"
                    } else {
                        "unchanged"
                    }
                ),
            }
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

fn list(host: &Host) -> i32 {
    let listing = match template::list(&host.paths) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    match host.output {
        OutputFormat::Json => print_json(
            &serde_json::json!({ "format_version": FORMAT_VERSION, "templates": listing }),
        ),
        OutputFormat::Text => {
            outln!(
                "{:<24} {:<16} {:>8} {:>12} {:>12}",
                "NAME",
                "DIGEST",
                "FILES",
                "BYTES",
                "SHARED"
            );
            for t in &listing {
                outln!(
                    "{:<24} {:<16} {:>8} {:>12} {:>12}",
                    t.name,
                    t.tree_digest.get(..16).unwrap_or(&t.tree_digest),
                    t.files,
                    t.bytes,
                    t.bytes_shared_with_others
                );
            }
        }
    }
    exit::OK
}

fn verify(host: &Host, name: &str) -> i32 {
    let report = match template::verify(&host.paths, name) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let damaged = !report.corrupted.is_empty() || !report.missing.is_empty();
    match host.output {
        OutputFormat::Json => {
            print_json(&serde_json::json!({ "format_version": FORMAT_VERSION, "verify": report }))
        }
        OutputFormat::Text => {
            for path in &report.corrupted {
                outln!("corrupted: {}", path.display());
            }
            for path in &report.missing {
                outln!("missing:   {}", path.display());
            }
            outln!(
                "{name}: {} ok, {} corrupted, {} missing",
                report.ok,
                report.corrupted.len(),
                report.missing.len()
            );
        }
    }
    if damaged { exit::ERROR } else { exit::OK }
}

pub fn gc(host: &Host) -> i32 {
    let images = crate::host_access::template_images_dir(&host.paths);
    let paths = &host.paths;
    let result = crate::store::gc(paths)
        .map_err(|e| e.to_string())
        .and_then(|mut report| {
            let (removed, freed) =
                crate::rootfs::image::remove_unused_template_images(&images, |name, key| {
                    template::installed(paths, name).is_some_and(|t| t.tree_digest == key)
                })
                .map_err(|e| e.to_string())?;
            report.removed_template_images = removed;
            report.freed_bytes += freed;
            Ok(report)
        });
    match result {
        Ok(report) => {
            match host.output {
                OutputFormat::Json => print_json(
                    &serde_json::json!({ "format_version": FORMAT_VERSION, "gc": report }),
                ),
                OutputFormat::Text => outln!(
                    "removed {} unreferenced object{}, {} stale build{} and {} unused template image{}, freed {} bytes",
                    report.removed_objects,
                    if report.removed_objects == 1 { "" } else { "s" },
                    report.removed_stale,
                    if report.removed_stale == 1 { "" } else { "s" },
                    report.removed_template_images,
                    if report.removed_template_images == 1 {
                        ""
                    } else {
                        "s"
                    },
                    report.freed_bytes
                ),
            }
            exit::OK
        }
        Err(e) => fail(&e),
    }
}
