//! Import from tarballs: compressed formats work; hostile archives are
//! refused and nothing outside the staging tree changes (root needed: chown).

use std::path::{Path, PathBuf};
use vsctl::paths::Paths;
use vsctl::template::{self, BuildOptions, Definitions, TemplateError};

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// Write raw headers so that names the tar crate's builder would refuse
/// (`..`, absolute) can be put in the archive.
fn tarball(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data, kind, link): (&str, &[u8], tar::EntryType, Option<&str>) = match e {
            E::Dir(n) => (n, b"", tar::EntryType::Directory, None),
            E::File(n, d) => (n, d, tar::EntryType::Regular, None),
            E::Symlink(n, t) => (n, b"", tar::EntryType::Symlink, Some(t)),
            E::Hardlink(n, t) => (n, b"", tar::EntryType::Link, Some(t)),
        };
        let raw = h.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

struct Env {
    dir: tempfile::TempDir,
    paths: Paths,
    outside: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under_root(dir.path());
    std::fs::create_dir_all(&paths.templates_dir).unwrap();
    std::fs::create_dir_all(&paths.state_dir).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"host secret\n").unwrap();
    Env {
        dir,
        paths,
        outside,
    }
}

impl Env {
    fn build(
        &self,
        name: &str,
        archive: &[u8],
        file: &str,
    ) -> Result<template::BuildOutcome, TemplateError> {
        let defs = self.prepare(name, archive, file);
        template::build(&self.paths, &defs, name, &BuildOptions::default())
    }

    fn prepare(&self, name: &str, archive: &[u8], file: &str) -> Definitions {
        let p = self.dir.path().join(file);
        std::fs::write(&p, archive).unwrap();
        std::fs::write(
            self.paths.templates_dir.join(format!("{name}.toml")),
            format!("bootstrap = \"import\"\npath = {:?}\n", p.to_str().unwrap()),
        )
        .unwrap();
        Definitions::load(&self.paths).unwrap()
    }

    /// Every path under the temp root except the staging/template trees and
    /// the store, to prove nothing else was created or changed.
    fn snapshot(&self) -> Vec<(PathBuf, usize, u64)> {
        let skip = [self.paths.state_dir.clone()];
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(self.dir.path()).sort_by_file_name() {
            let e = e.unwrap();
            if skip.iter().any(|s| e.path().starts_with(s)) {
                continue;
            }
            let data = if e.file_type().is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            let sum = data
                .iter()
                .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(*b as u64));
            out.push((e.path().to_path_buf(), data.len(), sum));
        }
        out
    }

    fn refuse(&self, name: &str, entries: &[E], needle: &str) {
        let defs = self.prepare(name, &tarball(entries), &format!("{name}.tar"));
        let before = self.snapshot();
        let err = template::build(&self.paths, &defs, name, &BuildOptions::default())
            .expect_err("hostile archive accepted");
        assert!(
            matches!(err, TemplateError::UnsafeEntry { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(needle), "{name}: {err}");
        assert!(template::installed(&self.paths, name).is_none());
        let after: Vec<_> = self.snapshot();
        assert_eq!(
            before, after,
            "{name}: something outside the staging tree changed"
        );
        assert_eq!(
            std::fs::read(self.outside.join("secret")).unwrap(),
            b"host secret\n"
        );
    }
}

fn outside_rel(e: &Env) -> String {
    // From templates/NAME.building/rootfs/ up to the temp root: 5 levels of
    // var/lib/vsctl/templates/NAME.building/rootfs.
    let _ = e;
    "../../../../../../outside".to_string()
}

#[test]
fn parent_dir_and_absolute_names_are_refused() {
    let e = env();
    let up = format!("{}/escaped", outside_rel(&e));
    e.refuse("dotdot", &[E::Dir("etc"), E::File(&up, b"x")], "..");
    e.refuse(
        "dotdot-mid",
        &[E::Dir("etc"), E::File("etc/../../escaped", b"x")],
        "..",
    );
    let abs = format!("{}/abs", e.outside.display());
    e.refuse("absolute", &[E::File(&abs, b"x")], "absolute");
    assert!(!e.outside.join("escaped").exists() && !e.outside.join("abs").exists());
}

#[test]
fn writing_through_a_planted_symlink_is_refused() {
    let e = env();
    let target = e.outside.to_str().unwrap().to_string();
    e.refuse(
        "symlink-abs",
        &[E::Symlink("etc", &target), E::File("etc/pwned", b"x")],
        "symlink",
    );
    e.refuse(
        "symlink-rel",
        &[
            E::Dir("a"),
            E::Symlink("a/b", &outside_rel(&e)),
            E::File("a/b/pwned", b"x"),
        ],
        "symlink",
    );
    // A directory entry through a symlink is refused the same way.
    e.refuse(
        "symlink-dir",
        &[E::Symlink("d", &target), E::Dir("d/sub")],
        "symlink",
    );
    // Replacing a symlink by a file at the same name is fine (the symlink
    // itself is replaced, never followed): covered by extraction succeeding
    // and the outside secret staying intact.
    let ok = e.build(
        "symlink-replaced",
        &tarball(&[
            E::Symlink("secret", &format!("{target}/secret")),
            E::File("secret", b"inside\n"),
        ]),
        "replaced.tar",
    );
    ok.unwrap();
    assert_eq!(
        std::fs::read(e.outside.join("secret")).unwrap(),
        b"host secret\n"
    );
    let tree = template::tree_path(&e.paths, "symlink-replaced");
    assert_eq!(std::fs::read(tree.join("secret")).unwrap(), b"inside\n");
    assert!(!e.outside.join("pwned").exists() && !e.outside.join("sub").exists());
}

#[test]
fn hardlinks_to_outside_are_refused() {
    let e = env();
    let up = format!("{}/secret", outside_rel(&e));
    e.refuse("hardlink-up", &[E::Hardlink("stolen", &up)], "..");
    let abs = format!("{}/secret", e.outside.display());
    e.refuse("hardlink-abs", &[E::Hardlink("stolen", &abs)], "absolute");
    let target = e.outside.to_str().unwrap().to_string();
    e.refuse(
        "hardlink-via-symlink",
        &[E::Symlink("l", &target), E::Hardlink("stolen", "l/secret")],
        "symlink",
    );
    // The secret's link count shows no new name was made for it.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(e.outside.join("secret").metadata().unwrap().nlink(), 1);
}

#[test]
fn plain_gzip_and_zstd_tarballs_import_with_inner_hardlinks() {
    let e = env();
    let entries = [
        E::Dir("./"),
        E::Dir("./etc"),
        E::File("./etc/hostname", b"imported\n"),
        E::Hardlink("./etc/hostname2", "./etc/hostname"),
        E::Symlink("./etc/alias", "hostname"),
        E::File("usr/bin/tool", b"#!/bin/sh\n"), // parent dirs missing from the archive
    ];
    let plain = tarball(&entries);
    let gz = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&plain).unwrap();
        enc.finish().unwrap()
    };
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    let mut digests = Vec::new();
    for (name, data, file) in [
        ("t-plain", &plain, "a.tar"),
        ("t-gz", &gz, "a.tar.gz"),
        ("t-zst", &zst, "a.tar.zst"),
    ] {
        let out = e.build(name, data, file).unwrap();
        let tree = template::tree_path(&e.paths, name);
        assert_eq!(
            std::fs::read(tree.join("etc/hostname2")).unwrap(),
            b"imported\n"
        );
        assert_eq!(
            std::fs::read_link(tree.join("etc/alias")).unwrap(),
            Path::new("hostname")
        );
        assert!(tree.join("usr/bin/tool").is_file());
        digests.push(out.tree_digest);
    }
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "same content, same tree digest: {digests:?}"
    );
}
