//! Turning a freshly built staging tree into store objects.
//!
//! The staging tree is ours and nothing else runs in it any more, so its
//! regular files can be *consumed*: instead of copying a file into the store,
//! the file's own inode becomes the object (one `link(2)`), or, if an equal
//! object already exists, the staging name is re-pointed at that object (a
//! `link` to a temporary name plus an atomic `rename` over the staging name).
//! No file data is copied, which is what makes ingestion cheaper than `cp -a`.
//!
//! Hashing is the only real work; it runs on every core with scoped threads
//! pulling file indexes from one atomic counter.

use super::{Entry, EntryKind, ObjectKey, Store, StoreError, hex, object_id};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters from one ingestion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Regular files seen.
    pub files: u64,
    /// Files that became new objects.
    pub new_objects: u64,
    /// Files replaced by a link to an existing object.
    pub deduplicated: u64,
    /// Bytes hashed.
    pub bytes: u64,
}

struct FileJob {
    index: usize,
    path: PathBuf,
}

/// Ingest every regular file below `root` into the store and return the
/// sorted manifest entries of the whole tree.
///
/// `root` must be a staging tree owned by the caller: its regular files become
/// (or are replaced by links to) store objects.
pub fn ingest_tree(
    store: &Store,
    root: &Path,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<(Vec<Entry>, IngestStats), StoreError> {
    store.create()?;
    super::same_device(store, root)?;

    let mut entries: Vec<Entry> = Vec::new();
    let mut jobs: Vec<FileJob> = Vec::new();
    let mut total_bytes = 0u64;
    for item in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let item = item.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf());
            StoreError::Io {
                action: "walking",
                path,
                source: e.into(),
            }
        })?;
        let path = item.path();
        let rel = path
            .strip_prefix(root)
            .expect("walkdir yields paths below its root");
        let rel = rel
            .to_str()
            .ok_or_else(|| StoreError::NonUtf8Path(path.to_path_buf()))?;
        let md = fs::symlink_metadata(path).map_err(StoreError::io("inspecting", path))?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_char_device() {
            EntryKind::Char
        } else if ft.is_block_device() {
            EntryKind::Block
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            EntryKind::Socket
        };
        let mut entry = Entry {
            path: format!("/{rel}"),
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: 0,
            digest: None,
            object: None,
            target: None,
            xattrs: BTreeMap::new(),
            rdev: None,
        };
        match kind {
            EntryKind::File => {
                total_bytes += md.len();
                jobs.push(FileJob {
                    index: entries.len(),
                    path: path.to_path_buf(),
                });
            }
            EntryKind::Symlink => {
                let t = fs::read_link(path).map_err(StoreError::io("reading link", path))?;
                entry.target = Some(
                    t.to_str()
                        .ok_or_else(|| StoreError::NonUtf8Path(path.to_path_buf()))?
                        .to_string(),
                );
            }
            EntryKind::Char | EntryKind::Block => entry.rdev = Some(md.rdev()),
            _ => {}
        }
        if kind != EntryKind::File && kind != EntryKind::Symlink {
            entry.xattrs = read_xattrs_path(path)?
                .into_iter()
                .map(|(k, v)| (k, hex(&v)))
                .collect();
        }
        entries.push(entry);
    }

    if let Some(pb) = progress {
        pb.set_length(total_bytes);
        pb.set_position(0);
    }

    let next = AtomicUsize::new(0);
    let new_objects = AtomicU64::new(0);
    let dedup = AtomicU64::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let results: Vec<Result<Vec<(usize, Entry)>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (jobs, next, entries, new_objects, dedup) =
                    (&jobs, &next, &entries, &new_objects, &dedup);
                s.spawn(move || -> Result<Vec<(usize, Entry)>, StoreError> {
                    let mut out = Vec::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut tmp_counter = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let mut entry = entries[job.index].clone();
                        let created = ingest_file(
                            store,
                            job,
                            &mut entry,
                            &mut buf,
                            t,
                            &mut tmp_counter,
                            progress,
                        )?;
                        if created {
                            new_objects.fetch_add(1, Ordering::Relaxed);
                        } else {
                            dedup.fetch_add(1, Ordering::Relaxed);
                        }
                        out.push((job.index, entry));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ingest worker panicked"))
            .collect()
    });
    for r in results {
        for (i, e) in r? {
            entries[i] = e;
        }
    }

    // One syncfs instead of an fsync per object: every object's data and
    // every link is durable before the caller writes the manifest and renames
    // the tree into place.
    let dirf = fs::File::open(store.objects_dir())
        .map_err(StoreError::io("opening", store.objects_dir()))?;
    nix::unistd::syncfs(&dirf).map_err(StoreError::errno("syncing", store.objects_dir()))?;

    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let stats = IngestStats {
        files: jobs.len() as u64,
        new_objects: new_objects.into_inner(),
        deduplicated: dedup.into_inner(),
        bytes: total_bytes,
    };
    Ok((entries, stats))
}

/// Hash one staging file, then make it an object or a link to an existing
/// one. Returns whether a new object was created.
fn ingest_file(
    store: &Store,
    job: &FileJob,
    entry: &mut Entry,
    buf: &mut [u8],
    thread: usize,
    tmp_counter: &mut u64,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<bool, StoreError> {
    use sha2::Digest;
    let path = &job.path;
    let file = nix::fcntl::open(
        path.as_path(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(StoreError::errno("opening", path))?;
    let mut file = fs::File::from(file);
    let md = file
        .metadata()
        .map_err(StoreError::io("inspecting", path))?;
    if !md.file_type().is_file() {
        // The walk saw a regular file; anything else now means someone is
        // changing the staging tree under us.
        return Err(StoreError::Io {
            action: "hashing",
            path: path.clone(),
            source: std::io::Error::other("file changed type during ingestion"),
        });
    }
    let mut h = sha2::Sha256::new();
    let mut size = 0u64;
    loop {
        let n = file.read(buf).map_err(StoreError::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
        if let Some(pb) = progress {
            pb.inc(n as u64);
        }
    }
    let digest = hex(&h.finalize());
    let xattrs = read_xattrs_fd(&file, path)?;
    let id = object_id(&ObjectKey {
        content_digest: &digest,
        uid: md.uid(),
        gid: md.gid(),
        mode: md.mode(),
        xattrs: &xattrs,
    });
    entry.size = size;
    entry.mode = md.mode() & 0o7777;
    entry.uid = md.uid();
    entry.gid = md.gid();
    entry.digest = Some(digest);
    entry.xattrs = xattrs.iter().map(|(k, v)| (k.clone(), hex(v))).collect();
    let obj = store.object_path(&id);
    entry.object = Some(id);

    // Link the very inode we hashed (by fd, so a rename in the tree cannot
    // substitute another file). link(2) never replaces an existing name, so
    // an existing object is never touched.
    match nix::unistd::linkat(
        &file,
        "",
        nix::fcntl::AT_FDCWD,
        obj.as_path(),
        AtFlags::AT_EMPTY_PATH,
    ) {
        Ok(()) => return Ok(true),
        Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(StoreError::errno("linking into the store", &obj)(e)),
    }
    let omd = fs::symlink_metadata(&obj).map_err(StoreError::io("inspecting", &obj))?;
    if omd.ino() == md.ino() && omd.dev() == md.dev() {
        // Another name of the same inode was ingested first.
        return Ok(false);
    }
    // Point the staging name at the existing object: link to a temporary
    // sibling, then rename over the staging name (atomic replacement).
    let parent = path.parent().expect("files below the root have a parent");
    *tmp_counter += 1;
    let tmp = parent.join(format!(
        ".vsctl-ingest-{}-{thread}-{tmp_counter}",
        std::process::id()
    ));
    drop(file);
    fs::hard_link(&obj, &tmp).map_err(StoreError::io("linking from the store", &tmp))?;
    fs::rename(&tmp, path).map_err(StoreError::io("replacing", path))?;
    Ok(false)
}

/// All extended attributes of an open file, sorted by name.
pub(crate) fn read_xattrs_fd(
    file: &fs::File,
    path: &Path,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    use xattr::FileExt;
    let mut out = Vec::new();
    let names = match file.list_xattr() {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(StoreError::io("listing xattrs of", path)(e)),
    };
    for name in names {
        let n = name
            .to_str()
            .ok_or_else(|| StoreError::NonUtf8Path(path.to_path_buf()))?
            .to_string();
        if let Some(v) = file
            .get_xattr(&name)
            .map_err(StoreError::io("reading xattrs of", path))?
        {
            out.push((n, v));
        }
    }
    out.sort();
    Ok(out)
}

/// All extended attributes of a path (not following a final symlink).
pub(crate) fn read_xattrs_path(path: &Path) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(StoreError::io("listing xattrs of", path)(e)),
    };
    for name in names {
        let n = name
            .to_str()
            .ok_or_else(|| StoreError::NonUtf8Path(path.to_path_buf()))?
            .to_string();
        if let Some(v) =
            xattr::get(path, &name).map_err(StoreError::io("reading xattrs of", path))?
        {
            out.push((n, v));
        }
    }
    out.sort();
    Ok(out)
}
