//! Disk quotas from `[disk]` end to end through `vsctl apply` (root): on a
//! btrfs loop image (qgroups) writing past the quota inside the guest fails
//! with EDQUOT, the limit changes live, `vsctl status` shows usage; where the
//! filesystem cannot enforce a quota, apply refuses (or warns, by setting).

mod common;
mod rootfs_support;

use common::{World, stderr, stdout};
use rootfs_support::{Fs, LoopFs};

fn guest(quota: &str) -> String {
    format!(
        "template = \"busybox\"\n[network]\nmode = \"none\"\n\
         [init]\nstop_timeout = \"10s\"\n[disk]\nquota = \"{quota}\"\n"
    )
}

/// A write of `mib` MiB inside the guest: exit code and output.
fn write_mib(world: &World, state: &str, mib: u32) -> (i32, String) {
    let script = format!(
        "dd if=/dev/zero of=/var/fill bs=1M count={mib} conv=fsync 2>&1; echo rc=$?; rm -f /var/fill; sync"
    );
    let out = world.vsctl(&[
        "--state-dir",
        state,
        "exec",
        "g",
        "-T",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ]);
    (out.status.code().unwrap_or(-1), stdout(&out))
}

#[test]
fn btrfs_quota_is_enforced_changed_live_and_reported() {
    let fs = LoopFs::new(Fs::Btrfs);
    let world = World::new();
    let state = fs.mnt.join("state");
    world.write_guest("g", &guest("32MiB"));
    let state_arg = state.display().to_string();
    let apply = |world: &World| world.vsctl(&["--state-dir", &state_arg, "apply"]);
    let out = apply(&world);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let (_, result) = write_mib(&world, &state_arg, 64);
    assert!(
        result.contains("Disk quota exceeded"),
        "writing 64MiB under a 32MiB quota: {result}"
    );
    let (_, result) = write_mib(&world, &state_arg, 8);
    assert!(result.contains("rc=0"), "a small write fits: {result}");

    world.write_guest("g", &guest("128MiB"));
    let (_, plan) = world.vsctl_json(&["--state-dir", &state_arg, "plan"]);
    assert_eq!(plan["guests"][0]["action"], "update", "{plan:#}");
    assert_eq!(apply(&world).status.code(), Some(0));
    let (_, result) = write_mib(&world, &state_arg, 64);
    assert!(
        result.contains("rc=0"),
        "the raised limit applies live: {result}"
    );

    let (_, status) = world.vsctl_json(&["--state-dir", &state_arg, "status", "g"]);
    assert_eq!(status["disk"]["bytes_limit"], 128 << 20, "{status:#}");
    assert!(status["disk"]["bytes_used"].as_u64().unwrap() > 0);

    // Stop and purge before the loop image goes away.
    world.remove_guest("g");
    assert_eq!(
        world
            .vsctl(&["--state-dir", &state_arg, "apply", "--prune", "--purge"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn a_quota_the_filesystem_cannot_enforce_fails_apply_unless_warn() {
    // ext4 without the project feature: no project quotas.
    let fs = LoopFs::new(Fs::Ext4 { project: false });
    let world = World::new();
    let state = fs.mnt.join("state").display().to_string();
    world.write_guest("g", &format!("state = \"stopped\"\n{}", guest("1GiB")));
    let out = world.vsctl(&["--state-dir", &state, "apply"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("cannot enforce [disk] limits"),
        "{message}"
    );
    assert!(
        message.contains("quota_unsupported"),
        "says how to proceed: {message}"
    );
    // Not recorded: the next apply tries again rather than pretending.
    assert!(!fs.mnt.join("state/guests/g/record.json").exists());

    world.write_settings("[defaults]\nquota_unsupported = \"warn\"\n");
    let out = world.vsctl(&["--state-dir", &state, "apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    world.remove_guest("g");
    assert_eq!(
        world
            .vsctl(&["--state-dir", &state, "apply", "--prune", "--purge"])
            .status
            .code(),
        Some(0)
    );
}
