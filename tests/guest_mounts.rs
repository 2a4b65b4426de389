//! Bind mounts from `[[mounts]]` through `vsctl apply` (root): a plain
//! read-only bind shows the host's ownership (ids outside the guest's range
//! as nobody) and refuses writes; an `idmap = true` bind shows the host's
//! ids 0..65535 as the guest's own, and what the guest writes there is owned
//! by those same ids on the host, not by the guest's shifted range.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{World, stderr, stdout};

#[test]
fn plain_and_idmapped_bind_mounts_into_an_unprivileged_guest() {
    let world = World::new();
    let data = world.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("by-root"), "r\n").unwrap();
    std::fs::write(data.join("by-1000"), "u\n").unwrap();
    std::os::unix::fs::chown(data.join("by-1000"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    world.write_guest(
        "m",
        &format!(
            "template = \"busybox\"\n[network]\nmode = \"none\"\n[init]\nstop_timeout = \"5s\"\n\
             [[mounts]]\nsource = \"{d}\"\ntarget = \"/srv/plain\"\n\
             [[mounts]]\nsource = \"{d}\"\ntarget = \"/srv/shared\"\nread_only = false\nidmap = true\n",
            d = data.display()
        ),
    );
    let out = world.vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sh = |script: &str| {
        let out = world.vsctl(&["exec", "m", "-T", "--", "/bin/sh", "-c", script]);
        (out.status.code(), stdout(&out), stderr(&out))
    };

    // Plain (read-only by default): host ids, unmapped ones as nobody.
    let (_, owners, _) = sh("stat -c '%u:%g' /srv/plain/by-root /srv/plain/by-1000");
    assert_eq!(owners, "65534:65534\n65534:65534\n");
    let (code, _, _) = sh("echo x > /srv/plain/new");
    assert_ne!(code, Some(0), "a read-only bind took a write");

    // Idmapped: the host's 0 and 1000 are the guest's 0 and 1000.
    let (_, owners, err) = sh("stat -c '%u:%g' /srv/shared/by-root /srv/shared/by-1000");
    assert_eq!(owners, "0:0\n1000:1000\n", "{err}");
    let (code, _, err) = sh("echo hi > /srv/shared/new && chown 1000:1000 /srv/shared/new");
    assert_eq!(code, Some(0), "{err}");
    let md = std::fs::metadata(data.join("new")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    assert_eq!(std::fs::read_to_string(data.join("new")).unwrap(), "hi\n");
    let (_, mountinfo, _) = sh("grep ' /srv/shared ' /proc/self/mountinfo");
    assert!(mountinfo.contains("idmapped"), "{mountinfo}");

    let out = world.vsctl(&["stop", "m"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
