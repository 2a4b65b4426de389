//! `vsctl template build|list|verify|rm` and `vsctl gc` through the binary
//! (root: builds the offline busybox template).

mod common;

use common::{World, stderr, stdout};

#[test]
fn build_list_verify_rm_and_gc() {
    let world = World::new();
    let (code, json) = world.vsctl_json(&["template", "build", "busybox"]);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["build"]["rebuilt"], true);
    let digest = json["build"]["tree_digest"].as_str().unwrap().to_string();

    // Unchanged definition: nothing rebuilt, same digest.
    let (_, again) = world.vsctl_json(&["template", "build", "busybox"]);
    assert_eq!(again["build"]["rebuilt"], false);
    assert_eq!(again["build"]["tree_digest"], digest.as_str());

    let (_, list) = world.vsctl_json(&["template", "list"]);
    assert_eq!(list["templates"][0]["name"], "busybox");
    assert!(list["templates"][0]["files"].as_u64().unwrap() >= 5);

    let verify = world.vsctl(&["template", "verify", "busybox"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));

    // Flip a byte in a store object: verify names the file and fails.
    let passwd = world
        .state_dir()
        .join("templates/busybox/rootfs/etc/passwd");
    let mut bytes = std::fs::read(&passwd).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&passwd, bytes).unwrap();
    let verify = world.vsctl(&["template", "verify", "busybox"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        stdout(&verify).contains("corrupted: /etc/passwd"),
        "{}",
        stdout(&verify)
    );

    // A guest record referencing the template blocks its removal.
    world.write_guest("g1", "template = \"busybox\"\nstate = \"stopped\"\n");
    assert_eq!(world.vsctl(&["apply"]).status.code(), Some(0));
    let rm = world.vsctl(&["template", "rm", "busybox"]);
    assert_eq!(rm.status.code(), Some(1));
    assert!(
        stderr(&rm).contains("still used by guest(s): g1"),
        "{}",
        stderr(&rm)
    );

    world.remove_guest("g1");
    assert_eq!(
        world.vsctl(&["apply", "--prune", "--purge"]).status.code(),
        Some(0)
    );
    assert_eq!(
        world.vsctl(&["template", "rm", "busybox"]).status.code(),
        Some(0)
    );
    let (code, gc) = world.vsctl_json(&["gc"]);
    assert_eq!(code, 0);
    assert!(gc["gc"]["removed_objects"].as_u64().unwrap() >= 5, "{gc:#}");
    assert!(!world.state_dir().join("templates/busybox").exists());
}

#[test]
fn a_bad_template_definition_is_a_located_diagnostic() {
    let world = World::new();
    let dir = world.root().join("etc/vsctl/templates");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mine.toml"),
        "base = \"busybox\"\nrun = [\"true\"]\npackges = [\"x\"]\n",
    )
    .unwrap();
    let (code, json) = world.vsctl_json(&["validate"]);
    assert_eq!(code, 1);
    let error = &json["errors"][0];
    assert_eq!(error["code"], "vsctl::template::definition");
    assert!(error["file"].as_str().unwrap().ends_with("mine.toml"));
    assert_eq!(error["line"], 3, "{json:#}");
}

#[test]
fn unknown_template_build_fails_cleanly() {
    let world = World::new();
    let out = world.vsctl(&["template", "build", "no-such-template"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown template"),
        "{}",
        stderr(&out)
    );
    assert!(
        !world
            .state_dir()
            .join("templates/no-such-template")
            .exists()
    );
}
