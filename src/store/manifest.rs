//! The manifest: a complete, ordered description of a template tree.
//!
//! The tree digest is the SHA-256 of the *canonical form* of the entry list:
//! compact JSON (`serde_json::to_vec`) of the entries sorted by path, with
//! struct fields in declaration order and xattrs in a `BTreeMap`. Two trees
//! with the same digest have the same names, types, owners, modes, contents,
//! link targets, device numbers and xattrs; mtimes are deliberately left out
//! so that rebuilding identical content gives an identical digest.

use super::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file, stored as an object.
    File,
    /// A symbolic link (kept in the tree, not in the store).
    Symlink,
    /// A character device node.
    Char,
    /// A block device node.
    Block,
    /// A named pipe.
    Fifo,
    /// A unix socket left in the tree.
    Socket,
}

/// One entry of a template tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Path inside the tree, starting with `/` (the root is `/`).
    pub path: String,
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files only, 0 otherwise).
    #[serde(default)]
    pub size: u64,
    /// SHA-256 of the content, hex (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Object id in the store (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Extended attributes, values in hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// Device number for char/block devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
}

/// The manifest file written next to each template tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bumped when the layout changes.
    pub format_version: u32,
    /// Template name.
    pub name: String,
    /// Hash of the definition the tree was built from.
    pub definition_hash: String,
    /// SHA-256 of the canonical entry list.
    pub tree_digest: String,
    /// Number of regular files.
    pub files: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
    /// Every entry, sorted by path.
    pub entries: Vec<Entry>,
}

/// SHA-256 over the canonical form of `entries` (which must be sorted).
pub fn tree_digest(entries: &[Entry]) -> String {
    use sha2::Digest;
    let canonical = serde_json::to_vec(entries).expect("manifest entries always serialise");
    super::hex(&sha2::Sha256::digest(&canonical))
}

impl Manifest {
    /// Current format.
    pub const FORMAT_VERSION: u32 = 1;

    /// Build a manifest, computing digest and totals.
    pub fn new(name: &str, definition_hash: &str, mut entries: Vec<Entry>) -> Manifest {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let files = entries.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
        let bytes = entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.size)
            .sum();
        Manifest {
            format_version: Self::FORMAT_VERSION,
            name: name.to_string(),
            definition_hash: definition_hash.to_string(),
            tree_digest: tree_digest(&entries),
            files,
            bytes,
            entries,
        }
    }

    /// Read a manifest file.
    pub fn read(path: &Path) -> Result<Manifest, StoreError> {
        let text = std::fs::read(path).map_err(StoreError::io("reading", path))?;
        serde_json::from_slice(&text).map_err(|e| StoreError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Write a manifest file and fsync it (the caller renames the directory
    /// holding it into place afterwards).
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        use std::io::Write;
        let text = serde_json::to_vec(self).expect("manifest always serialises");
        let mut f = std::fs::File::create(path).map_err(StoreError::io("writing", path))?;
        f.write_all(&text)
            .map_err(StoreError::io("writing", path))?;
        f.sync_all().map_err(StoreError::io("syncing", path))?;
        Ok(())
    }
}
