//! The embedded busybox template builds offline and runs; derived templates
//! run their steps isolated (root needed: chroot, namespaces).

use std::process::Command;
use vsctl::paths::Paths;
use vsctl::template::{self, BuildOptions, Definitions};

fn setup(user_defs: &[(&str, &str)]) -> (tempfile::TempDir, Paths, Definitions) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under_root(dir.path());
    std::fs::create_dir_all(&paths.templates_dir).unwrap();
    for (n, t) in user_defs {
        std::fs::write(paths.templates_dir.join(n), t).unwrap();
    }
    let defs = Definitions::load(&paths).unwrap();
    (dir, paths, defs)
}

fn mounts_mentioning(p: &std::path::Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    info.lines().filter(|l| l.contains(p)).count()
}

#[test]
fn busybox_builds_offline_and_runs_in_chroot() {
    let (dir, paths, defs) = setup(&[]);
    let out = template::build(&paths, &defs, "busybox", &BuildOptions::default()).unwrap();
    assert!(out.rebuilt);
    let tree = template::tree_path(&paths, "busybox");
    let o = Command::new("chroot")
        .arg(&tree)
        .args(["/bin/sh", "-c", "echo ok"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n");

    // Init, applets and boot files are there.
    for p in [
        "sbin/init",
        "bin/sh",
        "usr/sbin/httpd",
        "etc/inittab",
        "etc/init.d/rcS",
        "etc/passwd",
        "etc/group",
    ] {
        assert!(tree.join(p).symlink_metadata().is_ok(), "{p} missing");
    }
    let o = Command::new("chroot")
        .arg(&tree)
        .args(["/bin/sh", "-c", "id -un; ls /usr/bin/wget"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "root\n/usr/bin/wget\n",
        "{o:?}"
    );

    // Unchanged definition: no rebuild, same digest; forced rebuild of the
    // same definition is bit-for-bit the same tree.
    let again = template::build(&paths, &defs, "busybox", &BuildOptions::default()).unwrap();
    assert!(!again.rebuilt);
    assert_eq!(again.tree_digest, out.tree_digest);
    let forced = template::build(
        &paths,
        &defs,
        "busybox",
        &BuildOptions {
            force: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(forced.rebuilt);
    assert_eq!(forced.tree_digest, out.tree_digest);
    let names: Vec<String> = std::fs::read_dir(paths.template_trees_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["busybox".to_string()],
        "no staging dirs left behind"
    );

    let report = template::verify(&paths, "busybox").unwrap();
    assert!(
        report.corrupted.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
    assert!(report.ok > 250);
    let inst = template::installed(&paths, "busybox").unwrap();
    assert_eq!(inst.tree_digest, out.tree_digest);
    assert!(inst.files >= 10);
    assert_eq!(mounts_mentioning(dir.path()), 0);
}

#[test]
fn derived_template_runs_steps_in_isolated_namespaces() {
    let def = r#"
base = "busybox"
run = [
  "echo hello > /etc/motd",
  "hostname > /etc/built-hostname",
  "echo $$ > /etc/build-pid",
  "ls /proc | grep -E '^[0-9]+$' | wc -l > /etc/build-nprocs",
  "test -c /dev/null && echo yes > /etc/devnull",
]

[[files]]
path = "/etc/extra.conf"
mode = 0o600
uid = 33
content = "x = 1\n"
"#;
    let (dir, paths, defs) = setup(&[("bb-derived.toml", def)]);
    let out = template::build(&paths, &defs, "bb-derived", &BuildOptions::default()).unwrap();
    assert!(out.rebuilt);
    // The base was built first.
    assert!(template::installed(&paths, "busybox").is_some());
    let tree = template::tree_path(&paths, "bb-derived");
    let read = |p: &str| std::fs::read_to_string(tree.join(p)).unwrap();
    assert_eq!(read("etc/motd"), "hello\n");
    assert_eq!(read("etc/built-hostname"), "vsctl-build-bb-derived\n");
    assert_eq!(
        read("etc/build-pid"),
        "1\n",
        "the step's shell is PID 1 of its own PID namespace"
    );
    let nprocs: u32 = read("etc/build-nprocs").trim().parse().unwrap();
    assert!(
        nprocs <= 4,
        "only the step's own processes are visible, saw {nprocs}"
    );
    assert_eq!(read("etc/devnull"), "yes\n");
    // Build-time mounts stayed in the private namespace: the tree's /dev and
    // /proc are empty directories and nothing is mounted on the host.
    assert_eq!(std::fs::read_dir(tree.join("dev")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(tree.join("proc")).unwrap().count(), 0);
    assert_eq!(mounts_mentioning(dir.path()), 0);
    // The temporary resolv.conf is gone again (busybox has none).
    assert!(tree.join("etc/resolv.conf").symlink_metadata().is_err());
    use std::os::unix::fs::MetadataExt;
    let md = tree.join("etc/extra.conf").symlink_metadata().unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o600, 33));

    // Derived trees are copies: the base's binary is shared through the
    // store (same object), but the derived tree's /etc/motd is its own.
    let base = template::tree_path(&paths, "busybox");
    assert_eq!(
        base.join("bin/busybox").metadata().unwrap().ino(),
        tree.join("bin/busybox").metadata().unwrap().ino()
    );
    assert!(base.join("etc/motd").symlink_metadata().is_err());

    // A failing step fails the build and installs nothing.
    std::fs::write(
        paths.templates_dir.join("bb-fail.toml"),
        "base = \"busybox\"\nrun = [\"exit 3\"]\n",
    )
    .unwrap();
    let defs = Definitions::load(&paths).unwrap();
    let err = template::build(&paths, &defs, "bb-fail", &BuildOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            template::TemplateError::CommandFailed { status: 3, .. }
        ),
        "{err}"
    );
    assert!(template::installed(&paths, "bb-fail").is_none());
    assert!(!template::tree_path(&paths, "bb-fail").exists());
}

#[test]
fn rebuilds_follow_definition_file_sources_and_base_changes() {
    let def = "base = \"busybox\"\n[[files]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\nmode = 0o640\n";
    let (_dir, paths, _) = setup(&[("child.toml", def)]);
    std::fs::create_dir_all(paths.templates_dir.join("files")).unwrap();
    std::fs::write(paths.templates_dir.join("files/motd"), "one\n").unwrap();
    let defs = Definitions::load(&paths).unwrap();
    let opts = BuildOptions::default();
    let first = template::build(&paths, &defs, "child", &opts).unwrap();
    assert!(first.rebuilt);
    assert!(
        !template::build(&paths, &defs, "child", &opts)
            .unwrap()
            .rebuilt
    );
    let motd = template::tree_path(&paths, "child").join("etc/motd");
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "one\n");

    // The content of a `source` file is part of the definition hash.
    std::fs::write(paths.templates_dir.join("files/motd"), "two\n").unwrap();
    let second = template::build(&paths, &defs, "child", &opts).unwrap();
    assert!(second.rebuilt);
    assert_ne!(second.tree_digest, first.tree_digest);
    assert_eq!(std::fs::read_to_string(&motd).unwrap(), "two\n");

    // A changed base is rebuilt first, and the child follows it.
    std::fs::write(
        paths.templates_dir.join("busybox.toml"),
        "bootstrap = \"busybox\"\n[[files]]\npath = \"/etc/issue\"\ncontent = \"changed base\\n\"\n",
    )
    .unwrap();
    let defs = Definitions::load(&paths).unwrap();
    let third = template::build(&paths, &defs, "child", &opts).unwrap();
    assert!(third.rebuilt);
    let tree = template::tree_path(&paths, "child");
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/issue")).unwrap(),
        "changed base\n"
    );
    assert_eq!(
        std::fs::read_to_string(template::tree_path(&paths, "busybox").join("etc/issue")).unwrap(),
        "changed base\n"
    );
    assert!(
        !template::build(&paths, &defs, "child", &opts)
            .unwrap()
            .rebuilt
    );

    let names: Vec<String> = template::list(&paths)
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, vec!["busybox".to_string(), "child".to_string()]);
    assert!(matches!(
        template::remove(&paths, "nope", &[]),
        Err(template::TemplateError::NotBuilt(_))
    ));
}
