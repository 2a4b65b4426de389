//! Filling a staging tree from a tarball or a directory.
//!
//! Tarballs are read with the `tar` crate (plain, gzip or zstd, detected from
//! the magic bytes, not the file name) but never unpacked with its `unpack`
//! helpers: each entry is validated and created through [`SafeRoot`], so
//! `..`, absolute names, hardlinks pointing outside, and writes through a
//! symlink planted by an earlier entry are all refused with an error naming
//! the entry. Nothing outside the staging tree is ever created or changed.
//!
//! Directories are copied entry by entry the same way (the source is the
//! user's and is only read; symlinks in it are copied as symlinks, never
//! followed).

use super::TemplateError;
use super::safe::{Meta, SafePathError, SafeRoot};
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

fn safe_err(
    template: &str,
    source: &Path,
    entry: &str,
) -> impl FnOnce(SafePathError) -> TemplateError {
    let (template, source, entry) = (
        template.to_string(),
        source.to_path_buf(),
        entry.to_string(),
    );
    move |e| TemplateError::UnsafeEntry {
        template,
        origin: source,
        entry,
        reason: e.to_string(),
    }
}

/// Import `source` (directory or tarball) into the empty staging tree `dest`.
pub(crate) fn import(template: &str, source: &Path, dest: &Path) -> Result<(), TemplateError> {
    let md = std::fs::metadata(source).map_err(TemplateError::io(
        template,
        "reading import source",
        source,
    ))?;
    if md.is_dir() {
        copy_dir(template, source, dest)
    } else {
        extract_tarball(template, source, dest)
    }
}

/// Extract a (possibly compressed) tarball.
pub(crate) fn extract_tarball(
    template: &str,
    source: &Path,
    dest: &Path,
) -> Result<(), TemplateError> {
    let mut f = File::open(source).map_err(TemplateError::io(template, "opening", source))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(TemplateError::io(template, "reading", source))?;
    drop(f);
    let f = BufReader::with_capacity(
        1 << 20,
        File::open(source).map_err(TemplateError::io(template, "opening", source))?,
    );
    let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(f).map_err(TemplateError::io(
                template,
                "decompressing",
                source,
            ))?,
        )
    } else {
        Box::new(f)
    };
    let root = SafeRoot::open(dest).map_err(safe_err(template, source, "/"))?;
    let mut archive = tar::Archive::new(reader);
    let entries =
        archive
            .entries()
            .map_err(TemplateError::io(template, "reading tarball", source))?;
    for entry in entries {
        let mut entry = entry.map_err(TemplateError::io(template, "reading tarball", source))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|_| TemplateError::UnsafeEntry {
            template: template.to_string(),
            origin: source.to_path_buf(),
            entry: "<non-UTF-8 name>".into(),
            reason: "entry names must be UTF-8".into(),
        })?;
        let h = entry.header();
        let meta = Meta {
            mode: h.mode().unwrap_or(0o644),
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mtime: h.mtime().ok().map(|t| t as i64),
        };
        let kind = h.entry_type();
        let serr = safe_err(template, source, &name);
        // A bare "./" or "/" root entry only carries the root's metadata.
        let comps = super::safe::components(&name).map_err(safe_err(template, source, &name))?;
        if comps.is_empty() {
            if kind.is_dir() {
                root.mkdir(&name, &meta).map_err(serr)?;
            }
            continue;
        }
        match kind {
            tar::EntryType::Directory => root.mkdir(&name, &meta).map_err(serr)?,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut xattrs = Vec::new();
                if let Ok(Some(exts)) = entry.pax_extensions() {
                    for ext in exts.flatten() {
                        if let (Ok(k), v) = (ext.key(), ext.value_bytes())
                            && let Some(attr) = k.strip_prefix("SCHILY.xattr.")
                        {
                            xattrs.push((attr.to_string(), v.to_vec()));
                        }
                    }
                }
                let (mut f, parent, last) = root
                    .create_file(&name)
                    .map_err(safe_err(template, source, &name))?;
                std::io::copy(&mut entry, &mut f).map_err(TemplateError::io(
                    template,
                    "extracting",
                    source,
                ))?;
                root.finish_file(&f, &parent, &last, &meta, &xattrs, &name)
                    .map_err(serr)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(TemplateError::io(template, "reading tarball", source))?
                    .ok_or_else(|| TemplateError::UnsafeEntry {
                        template: template.to_string(),
                        origin: source.to_path_buf(),
                        entry: name.clone(),
                        reason: "symlink without a target".into(),
                    })?;
                root.symlink(&name, &target, &meta).map_err(serr)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                let target = String::from_utf8(target).unwrap_or_default();
                root.hardlink(&name, &target)
                    .map_err(|e| TemplateError::UnsafeEntry {
                        template: template.to_string(),
                        origin: source.to_path_buf(),
                        entry: name.clone(),
                        reason: format!("hardlink to {target:?}: {e}"),
                    })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let rdev = nix::sys::stat::makedev(major as u64, minor as u64);
                root.mknod(&name, sflag, rdev, &meta).map_err(serr)?;
            }
            // Long-name and PAX headers are consumed by the tar crate; other
            // types (volume labels, ...) carry no tree content.
            _ => {}
        }
    }
    Ok(())
}

/// Copy a directory tree (read-only on the source side).
pub(crate) fn copy_dir(template: &str, source: &Path, dest: &Path) -> Result<(), TemplateError> {
    let root = SafeRoot::open(dest).map_err(safe_err(template, source, "/"))?;
    let mut dirs = Vec::new();
    for item in walkdir::WalkDir::new(source).follow_links(false) {
        let item = item.map_err(|e| TemplateError::io(template, "walking", source)(e.into()))?;
        let path = item.path();
        let rel = path.strip_prefix(source).expect("below the walk root");
        let name = rel.to_str().ok_or_else(|| TemplateError::UnsafeEntry {
            template: template.to_string(),
            origin: source.to_path_buf(),
            entry: rel.to_string_lossy().into_owned(),
            reason: "names must be UTF-8".into(),
        })?;
        let name = if name.is_empty() { "." } else { name };
        let md = std::fs::symlink_metadata(path).map_err(TemplateError::io(
            template,
            "inspecting",
            path,
        ))?;
        let meta = Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: Some(md.mtime()),
        };
        let serr = safe_err(template, source, name);
        let ft = md.file_type();
        if ft.is_dir() {
            root.mkdir(
                name,
                &Meta {
                    mode: 0o755,
                    ..meta
                },
            )
            .map_err(serr)?;
            dirs.push((name.to_string(), meta));
        } else if ft.is_file() {
            let src = nix::fcntl::open(
                path,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| TemplateError::io(template, "opening", path)(e.into()))?;
            let mut src = File::from(src);
            let xattrs = crate::store::read_xattrs_fd(&src, path).map_err(|e| {
                TemplateError::io(template, "reading xattrs", path)(std::io::Error::other(
                    e.to_string(),
                ))
            })?;
            let (mut f, parent, last) = root
                .create_file(name)
                .map_err(safe_err(template, source, name))?;
            // io::copy uses copy_file_range, which reflinks where the
            // filesystem can.
            std::io::copy(&mut src, &mut f)
                .map_err(TemplateError::io(template, "copying", path))?;
            root.finish_file(&f, &parent, &last, &meta, &xattrs, name)
                .map_err(serr)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(TemplateError::io(
                template,
                "reading link",
                path,
            ))?;
            root.symlink(name, &target, &meta).map_err(serr)?;
        } else {
            let sflag = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                continue; // sockets are runtime artefacts
            };
            root.mknod(name, sflag, md.rdev(), &meta).map_err(serr)?;
        }
    }
    // Directory modes last, deepest first: a read-only directory must not
    // block creating its children (root bypasses it, but stay honest).
    for (name, meta) in dirs.iter().rev() {
        root.mkdir(name, meta)
            .map_err(safe_err(template, source, name))?;
    }
    Ok(())
}
