//! The `busybox` bootstrap: a static busybox binary and one symlink per applet.
//!
//! Source of the binary, in order: the host's `/bin/busybox` or
//! `/usr/bin/busybox` when it is statically linked (Debian's `busybox-static`
//! package installs exactly that), else the `busybox-static` package fetched
//! with `apt-get download` and unpacked with `dpkg -x` into a temporary
//! directory. A dynamically linked busybox is never used: it would need the
//! host's libc inside the guest.

use super::TemplateError;
use super::safe::{Meta, SafeRoot};
use std::path::{Path, PathBuf};

const CANDIDATES: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

/// Whether an ELF file has no program interpreter (PT_INTERP), i.e. is static.
pub(crate) fn is_static_elf(data: &[u8]) -> bool {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return false; // only 64-bit little-endian is handled; others count as "not usable"
    }
    let u16at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16at(0x36), u16at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > data.len() {
            return false;
        }
        if u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes")) == 3 {
            return false; // PT_INTERP
        }
    }
    true
}

/// Find (or fetch) a static busybox; returns its bytes and where it came from.
fn static_busybox(template: &str) -> Result<(Vec<u8>, PathBuf), TemplateError> {
    for c in CANDIDATES {
        if let Ok(data) = std::fs::read(c)
            && is_static_elf(&data)
        {
            return Ok((data, PathBuf::from(c)));
        }
    }
    // Fallback: the Debian package, unpacked without installing it.
    let tmp = std::env::temp_dir().join(format!("vsctl-busybox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(TemplateError::io(template, "creating", &tmp))?;
    let result = (|| {
        let st = std::process::Command::new("apt-get")
            .args(["download", "busybox-static"])
            .current_dir(&tmp)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(TemplateError::io(template, "running", Path::new("apt-get")))?;
        let deb = std::fs::read_dir(&tmp)
            .map_err(TemplateError::io(template, "reading", &tmp))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"));
        let (true, Some(deb)) = (st.success(), deb) else {
            return Err(TemplateError::Bootstrap {
                template: template.to_string(),
                message: "no static busybox on the host and `apt-get download busybox-static` failed; install busybox-static".into(),
            });
        };
        let out = tmp.join("x");
        let st = std::process::Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&out)
            .status()
            .map_err(TemplateError::io(template, "running", Path::new("dpkg")))?;
        let bin = out.join("bin/busybox");
        let data = std::fs::read(&bin).map_err(TemplateError::io(template, "reading", &bin))?;
        if !st.success() || !is_static_elf(&data) {
            return Err(TemplateError::Bootstrap {
                template: template.to_string(),
                message: "the busybox-static package did not contain a static bin/busybox".into(),
            });
        }
        Ok((data, PathBuf::from("busybox-static.deb")))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Applet paths (relative, e.g. `usr/bin/wget`) by asking the binary itself.
/// The host busybox is the very binary being installed, or one from the
/// same package when fetched; running it on the host is safe either way.
fn applets(template: &str, binary: &Path) -> Result<Vec<String>, TemplateError> {
    let out = std::process::Command::new(binary)
        .arg("--list-full")
        .output()
        .map_err(TemplateError::io(template, "running", binary))?;
    if !out.status.success() {
        return Err(TemplateError::Bootstrap {
            template: template.to_string(),
            message: format!("{} --list-full failed", binary.display()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Populate an empty staging tree.
pub(crate) fn populate(template: &str, dest: &Path) -> Result<(), TemplateError> {
    let (data, from) = static_busybox(template)?;
    let root =
        SafeRoot::open(dest).map_err(|e| TemplateError::unsafe_entry(template, dest, "/", e))?;
    let se = |name: &str| {
        let name = name.to_string();
        move |e| TemplateError::unsafe_entry(template, dest, &name, e)
    };
    let dir = |mode| Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime: None,
    };
    for (d, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc/init.d", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("mnt", 0o755),
        ("var/log", 0o755),
        ("var/www", 0o755),
        ("var/tmp", 0o1777),
    ] {
        root.mkdir(d, &dir(mode)).map_err(se(d))?;
    }
    root.write_file("bin/busybox", &data, &dir(0o755))
        .map_err(se("bin/busybox"))?;
    // Ask the host copy for the applet list; for a fetched binary, run the
    // copy we just wrote (same bytes, static, so it runs on the host).
    let lister = if from.is_absolute() {
        from
    } else {
        dest.join("bin/busybox")
    };
    for applet in applets(template, &lister)? {
        if applet == "bin/busybox" {
            continue;
        }
        root.symlink(&applet, Path::new("/bin/busybox"), &dir(0o777))
            .map_err(se(&applet))?;
    }
    Ok(())
}
