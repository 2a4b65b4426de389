//! overlayfs mounts for the `overlay` strategy: the template tree is the
//! read-only lower layer, each guest owns an upper and a work directory. The
//! runtime mounts this in the guest's mount namespace when the guest starts;
//! nothing here runs the mount(8) binary.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::RootfsError;

/// overlayfs splits its options on ',' and lowerdir on ':'; a backslash
/// escapes. Rather than escaping, refuse paths that would need it: vsctl's own
/// paths never contain these characters.
fn check_option_path(p: &Path) -> Result<&str, RootfsError> {
    let s = p.to_str().ok_or_else(|| RootfsError::BadOverlayPath {
        path: p.to_path_buf(),
    })?;
    if s.contains([',', ':', '\\', '\n']) {
        return Err(RootfsError::BadOverlayPath {
            path: p.to_path_buf(),
        });
    }
    Ok(s)
}

/// Mount an overlay of `lower` (read-only) and `upper` (the guest's writable
/// layer, `work` being overlayfs's scratch directory on the same filesystem)
/// at `target`.
pub fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), RootfsError> {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        check_option_path(lower)?,
        check_option_path(upper)?,
        check_option_path(work)?
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| RootfsError::Mount {
        target: target.to_path_buf(),
        source: e.into(),
    })
}

/// Unmount whatever is mounted at `target` (one mount). A busy mount is
/// reported, not lazily detached: callers that must get rid of it (purge) use
/// `purge_rootfs`'s lazy detach.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    umount2(target, MntFlags::empty()).map_err(|e| RootfsError::Unmount {
        target: target.to_path_buf(),
        source: e.into(),
    })
}

/// Lazily detach the mount at `target` (MNT_DETACH): it disappears from the
/// tree at once, so a following delete walk cannot reach into it.
pub(crate) fn detach(target: &Path) -> Result<(), RootfsError> {
    umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(|e| {
        RootfsError::Unmount {
            target: target.to_path_buf(),
            source: e.into(),
        }
    })
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo
/// (octal escapes in the mount point field decoded).
pub fn mounts_under(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    use std::os::unix::ffi::OsStringExt;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        let p = std::path::PathBuf::from(std::ffi::OsString::from_vec(unescape(mp)));
        if p.starts_with(dir) {
            out.push(p);
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    Ok(out)
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(super::unescape(r"/a\040b\134c"), b"/a b\\c".to_vec());
    }

    #[test]
    fn option_breaking_paths_are_refused() {
        assert!(super::check_option_path(std::path::Path::new("/a,b")).is_err());
        assert!(super::check_option_path(std::path::Path::new("/a:b")).is_err());
        assert!(super::check_option_path(std::path::Path::new("/a/b")).is_ok());
    }
}
