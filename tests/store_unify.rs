//! Hardlink unification in the store: what is shared, what never is, verify
//! and gc (root needed: chown).

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use vsctl::paths::Paths;
use vsctl::store;
use vsctl::template::{self, BuildOptions, Definitions};

const COMMON: usize = 40;

fn make_source(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc/sub")).unwrap();
    for i in 0..COMMON {
        std::fs::write(
            dir.join(format!("etc/sub/f{i}")),
            format!("common content {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    for f in ["by-mode", "by-owner", "by-xattr", "by-acl", "by-cap"] {
        std::fs::write(dir.join("etc").join(f), b"same bytes in both trees\n").unwrap();
    }
    std::os::unix::fs::symlink("sub/f1", dir.join("etc/link")).unwrap();
}

fn run(cmd: &str, args: &[&str]) {
    let st = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}");
}

fn setup() -> (tempfile::TempDir, Paths, Definitions) {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("src-a");
    let b = dir.path().join("src-b");
    make_source(&a);
    make_source(&b);
    // B differs from A only in metadata of three files, plus one extra file.
    std::fs::set_permissions(
        b.join("etc/by-mode"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::chown(b.join("etc/by-owner"), Some(1000), Some(1000)).unwrap();
    xattr::set(b.join("etc/by-xattr"), "user.vsctl-test", b"1").unwrap();
    // A POSIX ACL (system.posix_acl_access) and a file capability
    // (security.capability), set with the usual tools. The ACL keeps the
    // mode bits unchanged (mask r--), so only the xattr differs.
    run(
        "setfacl",
        &["-m", "u:1000:r", b.join("etc/by-acl").to_str().unwrap()],
    );
    run(
        "setcap",
        &["cap_net_raw+ep", b.join("etc/by-cap").to_str().unwrap()],
    );
    std::fs::write(b.join("etc/only-b"), b"only in b\n").unwrap();

    let paths = Paths::under_root(dir.path());
    std::fs::create_dir_all(&paths.templates_dir).unwrap();
    for (n, src) in [("ta", &a), ("tb", &b)] {
        std::fs::write(
            paths.templates_dir.join(format!("{n}.toml")),
            format!(
                "bootstrap = \"import\"\npath = {:?}\n",
                src.to_str().unwrap()
            ),
        )
        .unwrap();
    }
    let defs = Definitions::load(&paths).unwrap();
    (dir, paths, defs)
}

fn ino(p: &Path) -> u64 {
    p.symlink_metadata().unwrap().ino()
}

fn objects(m: &vsctl::store::Manifest) -> HashSet<String> {
    m.entries.iter().filter_map(|e| e.object.clone()).collect()
}

#[test]
fn identical_files_share_inodes_and_metadata_differences_never_do() {
    let (_d, paths, defs) = setup();
    template::build(&paths, &defs, "ta", &BuildOptions::default()).unwrap();
    template::build(&paths, &defs, "tb", &BuildOptions::default()).unwrap();
    let ta = template::tree_path(&paths, "ta");
    let tb = template::tree_path(&paths, "tb");

    let shared = (0..COMMON)
        .filter(|i| {
            let p = format!("etc/sub/f{i}");
            ino(&ta.join(&p)) == ino(&tb.join(&p))
        })
        .count();
    assert_eq!(shared, COMMON, "every identical file is one inode");
    for f in [
        "etc/by-mode",
        "etc/by-owner",
        "etc/by-xattr",
        "etc/by-acl",
        "etc/by-cap",
    ] {
        assert_ne!(
            ino(&ta.join(f)),
            ino(&tb.join(f)),
            "{f} differs in metadata and must not be shared"
        );
    }
    // Metadata survived: B's copies keep their own mode, owner, xattr.
    assert_eq!(
        tb.join("etc/by-mode").metadata().unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(tb.join("etc/by-owner").metadata().unwrap().uid(), 1000);
    assert_eq!(
        xattr::get(tb.join("etc/by-xattr"), "user.vsctl-test")
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );
    // Symlinks stay symlinks in the tree.
    assert_eq!(
        std::fs::read_link(ta.join("etc/link")).unwrap(),
        Path::new("sub/f1")
    );
    // Link count = store name + one per template.
    assert_eq!(ta.join("etc/sub/f3").metadata().unwrap().nlink(), 3);
    // In A, the five by-* files are identical in bytes and metadata:
    // one object with three names; in B each is its own object.
    assert_eq!(ta.join("etc/by-mode").metadata().unwrap().nlink(), 6);
    assert_eq!(ino(&ta.join("etc/by-mode")), ino(&ta.join("etc/by-owner")));
    assert_eq!(tb.join("etc/by-mode").metadata().unwrap().nlink(), 2);

    let list = template::list(&paths).unwrap();
    assert_eq!(list.len(), 2);
    let la = list.iter().find(|l| l.name == "ta").unwrap();
    let common_bytes: u64 = (0..COMMON)
        .map(|i| format!("common content {i}\n").len() as u64 * (i as u64 + 1))
        .sum();
    assert_eq!(la.bytes_shared_with_others, common_bytes);
    assert_eq!(la.files, COMMON as u64 + 5);
}

#[test]
fn verify_detects_a_flipped_byte_in_an_object() {
    let (_d, paths, defs) = setup();
    template::build(&paths, &defs, "ta", &BuildOptions::default()).unwrap();
    let before = template::verify(&paths, "ta").unwrap();
    assert!(before.corrupted.is_empty() && before.missing.is_empty());

    // Corrupt the object behind /etc/sub/f5 directly in the store.
    let m = template::manifest(&paths, "ta").unwrap();
    let e = m.entries.iter().find(|e| e.path == "/etc/sub/f5").unwrap();
    let obj = vsctl::store::Store::new(&paths).object_path(e.object.as_ref().unwrap());
    let mut data = std::fs::read(&obj).unwrap();
    data[3] ^= 0x01;
    std::fs::write(&obj, &data).unwrap();

    // And delete one tree file, and plant one the manifest does not list.
    let tree = template::tree_path(&paths, "ta");
    std::fs::remove_file(tree.join("etc/sub/f7")).unwrap();
    std::fs::write(tree.join("etc/planted"), b"x").unwrap();

    let after = template::verify(&paths, "ta").unwrap();
    assert_eq!(
        after.corrupted,
        vec![
            Path::new("/etc/sub/f5").to_path_buf(),
            Path::new("/etc/planted").to_path_buf()
        ]
    );
    assert_eq!(after.missing, vec![Path::new("/etc/sub/f7").to_path_buf()]);
    assert_eq!(after.ok, before.ok - 2);
}

#[test]
fn gc_removes_exactly_the_unreferenced_objects() {
    let (_d, paths, defs) = setup();
    template::build(&paths, &defs, "ta", &BuildOptions::default()).unwrap();
    template::build(&paths, &defs, "tb", &BuildOptions::default()).unwrap();
    let st = vsctl::store::Store::new(&paths);
    let nothing = store::gc(&paths).unwrap();
    assert_eq!(nothing.removed_objects, 0);

    let ma = template::manifest(&paths, "ta").unwrap();
    let mb = template::manifest(&paths, "tb").unwrap();
    let only_b: HashSet<String> = objects(&mb).difference(&objects(&ma)).cloned().collect();
    assert_eq!(
        only_b.len(),
        6,
        "by-mode, by-owner, by-xattr, by-acl, by-cap, only-b"
    );

    // Referenced templates cannot be removed.
    let err = template::remove(&paths, "tb", &["web1".to_string()]).unwrap_err();
    assert!(err.to_string().contains("web1"));
    template::remove(&paths, "tb", &[]).unwrap();
    assert!(template::installed(&paths, "tb").is_none());

    let report = store::gc(&paths).unwrap();
    assert_eq!(report.removed_objects, only_b.len() as u64);
    for o in &only_b {
        assert!(!st.object_path(o).exists());
    }
    for o in objects(&ma) {
        assert!(
            st.object_path(&o).exists(),
            "object of a live template was removed"
        );
    }
    assert!(template::verify(&paths, "ta").unwrap().corrupted.is_empty());
    // Idempotent.
    assert_eq!(store::gc(&paths).unwrap().removed_objects, 0);
}
