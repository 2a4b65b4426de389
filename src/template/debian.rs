//! The `mmdebstrap` bootstrap and the host apt sources it takes its mirror from.
//!
//! Why mmdebstrap rather than debootstrap: it resolves dependencies with apt
//! itself instead of per-suite shell scripts (so new suites need no new
//! script), downloads and unpacks in parallel (a bookworm minbase takes about
//! 17 s here against about a minute for debootstrap), takes keyrings from
//! the host apt configuration, and its `--variant` / `--include` /
//! `--components` options map one-to-one onto the definition fields.
//! When mmdebstrap is missing, debootstrap is used with the same options.
//!
//! mmdebstrap runs in its own mount, UTS, IPC and PID namespace
//! ([`super::isolate`]): the /proc, /sys and /dev/pts mounts it makes in the
//! target die with the namespace, even if vsctl is killed mid-build, so a
//! stale staging directory never has a host mount inside it.
//!
//! The project hard-codes no mirror host. The mirror is, in order: the
//! definition's `mirror`, the host setting passed in by the caller, or the
//! first Debian archive URI of the host's own apt sources.

use super::TemplateError;
use super::isolate::{self, IsolatedCommand};
use std::path::{Path, PathBuf};

fn looks_like_debian_archive(uri: &str) -> bool {
    let u = uri.trim_end_matches('/');
    (uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("file:/"))
        && u.ends_with("/debian")
}

/// The first Debian archive URI (path ending in `/debian`, so not
/// `debian-security` or a third-party repository) in the apt sources under
/// `apt_dir` (normally `/etc/apt`): `sources.list`, then
/// `sources.list.d/*.list` and `*.sources` (deb822) in name order.
pub fn host_debian_mirror(apt_dir: &Path) -> Option<String> {
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(rd) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let found = if f.extension().is_some_and(|x| x == "sources") {
            parse_deb822(&text)
        } else {
            parse_one_line_style(&text)
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `deb [options] URI suite components...` lines.
pub fn parse_one_line_style(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut uri = words.next()?;
        if uri.starts_with('[') {
            // Options may contain spaces: skip to the closing bracket.
            let mut w = uri;
            while !w.ends_with(']') {
                w = words.next()?;
            }
            uri = words.next()?;
        }
        if looks_like_debian_archive(uri) {
            return Some(uri.to_string());
        }
    }
    None
}

/// deb822 stanzas (`Types: deb`, `URIs: ...`, optional `Enabled: no`).
pub fn parse_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut types = String::new();
        let mut uris = String::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') || line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = v.trim().to_string(),
                "uris" => uris = v.trim().to_string(),
                "enabled" => enabled = !v.trim().eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if !enabled || !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if let Some(u) = uris
            .split_whitespace()
            .find(|u| looks_like_debian_archive(u))
        {
            return Some(u.to_string());
        }
    }
    None
}

/// Find an executable on the host PATH (the isolated child gets an absolute path).
pub(crate) fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// The environment build steps run with: a fixed base plus the host's proxy
/// settings (apt honours them), nothing else from vsctl's own environment.
pub(crate) fn build_env() -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME".into(), "/root".into()),
        ("LC_ALL".into(), "C.UTF-8".into()),
        ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
        ("DEBCONF_NONINTERACTIVE_SEEN".into(), "true".into()),
    ];
    for k in [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.to_string(), v));
        }
    }
    env
}

/// Run mmdebstrap (or debootstrap) into `target` (which must not exist yet).
#[allow(clippy::too_many_arguments)]
pub(crate) fn bootstrap(
    template: &str,
    suite: &str,
    variant: &str,
    components: &[String],
    packages: &[String],
    keyring: Option<&Path>,
    mirror: &str,
    target: &Path,
) -> Result<(), TemplateError> {
    // mmdebstrap when installed; debootstrap (slower, same result for
    // minbase) as a fallback. Both take the same option spellings here.
    let (exe, extra): (PathBuf, &[&str]) = if let Some(m) = which("mmdebstrap") {
        (m, &["--mode=root", "--quiet"])
    } else if let Some(d) = which("debootstrap") {
        (d, &[])
    } else {
        return Err(TemplateError::Bootstrap {
            template: template.to_string(),
            message: "neither mmdebstrap nor debootstrap is installed (apt-get install mmdebstrap)"
                .into(),
        });
    };
    let mut argv = vec![exe.to_string_lossy().into_owned()];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.push(format!("--variant={variant}"));
    argv.push(format!("--components={}", components.join(",")));
    if !packages.is_empty() {
        argv.push(format!("--include={}", packages.join(",")));
    }
    if let Some(k) = keyring {
        argv.push(format!("--keyring={}", k.display()));
    }
    argv.push(suite.to_string());
    argv.push(target.to_string_lossy().into_owned());
    argv.push(mirror.to_string());
    let status = isolate::run(&IsolatedCommand {
        root: None,
        argv: argv.clone(),
        env: build_env(),
        hostname: format!("vsctl-build-{template}"),
    })
    .map_err(|e| TemplateError::Bootstrap {
        template: template.to_string(),
        message: format!("running {}: {e}", argv[0]),
    })?;
    if status != 0 {
        return Err(TemplateError::CommandFailed {
            template: template.to_string(),
            command: argv.join(" "),
            status,
        });
    }
    Ok(())
}
