//! Configuration: host settings, guest files, and the validation that must
//! pass before anything on the host changes.
//!
//! [`load`] reads every guest file and reports every problem in every file
//! (not only the first), so one `vsctl validate` shows the whole picture. It
//! only reads: validation never writes to the state directory.

pub mod diag;
pub mod guest;
pub mod host;
pub mod units;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

pub use diag::ConfigDiag;
pub use guest::{GuestSpec, ParsedGuest};
pub use host::HostSettings;

/// Every guest file in `dir`, sorted by name. Editor leftovers (`*.toml~`,
/// dotfiles) are ignored; only `*.toml` counts.
pub fn guest_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with('.') && path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parse and validate all guest files in `dir`. Returns the valid guests, or
/// every diagnostic found across all files.
pub fn load_guests(
    dir: &Path,
    known_templates: &BTreeSet<String>,
    host: &HostSettings,
) -> Result<Vec<ParsedGuest>, Vec<ConfigDiag>> {
    let files = guest_files(dir).map_err(|e| {
        vec![ConfigDiag::new(
            "vsctl::config::unreadable",
            dir,
            &Arc::new(String::new()),
            None,
            format!("cannot list guest files: {e}"),
        )]
    })?;
    let mut guests = Vec::new();
    let mut diags = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                diags.push(ConfigDiag::new(
                    "vsctl::config::unreadable",
                    &file,
                    &Arc::new(String::new()),
                    None,
                    format!("cannot read guest file: {e}"),
                ));
                continue;
            }
        };
        match guest::parse_guest_file(&file, text, known_templates, host) {
            Ok(parsed) => guests.push(parsed),
            Err(mut more) => diags.append(&mut more),
        }
    }
    diags.extend(guest::check_across_guests(&guests));
    if diags.is_empty() {
        Ok(guests)
    } else {
        Err(diags)
    }
}
