//! Guest networking end to end through `vsctl apply` (root). Everything runs
//! inside a network namespace the test creates (entered with nsenter): the bridge,
//! the veths and all traffic stay there, and are gone when the test ends.

mod common;

use common::{World, stderr, stdout};

fn guest(addresses: &str, extra: &str) -> String {
    format!(
        "template = \"busybox\"\n\
         [network]\naddresses = [{addresses}]\ngateway = \"10.77.0.1\"\ndns = [\"10.77.0.1\"]\n\
         [init]\nstop_timeout = \"10s\"\n{extra}"
    )
}

fn exec(world: &World, name: &str, script: &str) -> (i32, String) {
    let out = world.vsctl(&["exec", name, "-T", "--", "/bin/sh", "-c", script]);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// `ip -o link` names in the test namespace starting with `vs`.
fn host_links(world: &World) -> Vec<String> {
    let out = world
        .command("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .filter(|n| n.starts_with("vs"))
        .collect()
}

/// One bounded attempt loop: a bridge port that just came up may drop the
/// first packet while the bridge's carrier settles.
fn ping_from_guest(world: &World, name: &str, target: &str) -> bool {
    (0..3).any(|_| exec(world, name, &format!("ping -c1 -W1 {target}")).0 == 0)
}

/// The body of `http://ADDRESS/` fetched from the test namespace, or an
/// empty string. A few bounded tries: a guest's httpd starts with its init.
fn http_get(world: &World, address: &str) -> String {
    http_get_tries(world, address, 5)
}

fn http_get_tries(world: &World, address: &str, tries: u32) -> String {
    for _ in 0..tries {
        let out = world
            .command("curl")
            .args(["-s", "--max-time", "2", &format!("http://{address}/")])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    String::new()
}

#[test]
fn veth_guests_on_a_bridge_reach_each_other_and_only_their_own_addresses() {
    let world = World::in_netns();
    world.write_guest("web-a", &guest("\"10.77.0.11/24\"", ""));
    world.write_guest("web-b", &guest("\"10.77.0.12/24\"", ""));
    let out = world.vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The bridge carries the gateway address; each guest has eth0 with its address.
    let bridge = world
        .command("ip")
        .args(["-o", "addr", "show", "vsbr0"])
        .output()
        .unwrap();
    assert!(
        stdout(&bridge).contains("10.77.0.1/24"),
        "{}",
        stdout(&bridge)
    );
    let (_, addrs) = exec(
        &world,
        "web-a",
        "ip -o addr show eth0; ip route; cat /etc/resolv.conf",
    );
    assert!(addrs.contains("10.77.0.11/24"), "{addrs}");
    assert!(addrs.contains("default via 10.77.0.1"), "{addrs}");
    assert!(addrs.contains("nameserver 10.77.0.1"), "{addrs}");

    assert!(
        ping_from_guest(&world, "web-a", "10.77.0.12"),
        "web-a cannot reach web-b"
    );
    assert!(http_get(&world, "10.77.0.11").contains("vsctl busybox guest"));
    assert!(http_get(&world, "10.77.0.12").contains("vsctl busybox guest"));

    // No route to anywhere else from a guest without a gateway.
    world.write_guest(
        "web-b",
        &guest("\"10.77.0.12/24\"", "").replace("gateway = \"10.77.0.1\"\n", ""),
    );
    assert_eq!(world.vsctl(&["apply"]).status.code(), Some(0));
    let (code, out) = exec(&world, "web-b", "ping -c1 -W1 192.0.2.1");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("unreachable"), "{out}");

    // A guest cannot take another's address or change its routes.
    let (code, out) = exec(&world, "web-a", "ip addr add 10.77.0.12/24 dev eth0");
    assert_ne!(code, 0, "guest added an address: {out}");
    let (code, out) = exec(&world, "web-a", "ip route del default");
    assert_ne!(code, 0, "guest changed its routes: {out}");

    // Status shows the live interfaces.
    let (_, status) = world.vsctl_json(&["status", "web-a"]);
    let live = serde_json::to_string(&status["interfaces"]).unwrap();
    assert!(live.contains("10.77.0.11/24"), "{status:#}");

    // Stopping removes the host ends; purging removes everything else.
    std::fs::remove_file(world.guests_dir().join("web-a.toml")).unwrap();
    std::fs::remove_file(world.guests_dir().join("web-b.toml")).unwrap();
    assert_eq!(
        world.vsctl(&["apply", "--prune", "--purge"]).status.code(),
        Some(0)
    );
    assert_eq!(
        host_links(&world),
        vec!["vsbr0".to_string()],
        "only the shared bridge stays"
    );
    let ports = world
        .command("ip")
        .args(["-o", "link", "show", "master", "vsbr0"])
        .output()
        .unwrap();
    assert_eq!(stdout(&ports).trim(), "", "bridge ports left");
}

#[test]
fn addresses_change_live_without_restarting_the_guest() {
    let world = World::in_netns();
    world.write_guest("live", &guest("\"10.77.0.31/24\"", ""));
    assert_eq!(world.vsctl(&["apply"]).status.code(), Some(0));
    let (_, before) = world.vsctl_json(&["status", "live"]);
    let pid = before["runtime"]["init_pid"].as_i64().unwrap();

    world.write_guest("live", &guest("\"10.77.0.31/24\", \"10.77.0.32/24\"", ""));
    let (_, plan) = world.vsctl_json(&["plan"]);
    assert_eq!(plan["guests"][0]["action"], "update", "{plan:#}");
    let out = world.vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, after) = world.vsctl_json(&["status", "live"]);
    assert_eq!(
        after["runtime"]["init_pid"].as_i64(),
        Some(pid),
        "the guest was restarted"
    );
    let (_, addrs) = exec(&world, "live", "ip -o addr show eth0; cat /etc/hosts");
    assert!(addrs.contains("10.77.0.32/24"), "{addrs}");
    assert!(
        addrs.contains("10.77.0.32\tlive"),
        "/etc/hosts follows: {addrs}"
    );
    assert!(http_get(&world, "10.77.0.32").contains("vsctl busybox guest"));

    world.write_guest("live", &guest("\"10.77.0.32/24\"", ""));
    let out = world.vsctl(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, addrs) = exec(&world, "live", "ip -o addr show eth0");
    assert!(!addrs.contains("10.77.0.31/"), "{addrs}");
    assert!(http_get_tries(&world, "10.77.0.31", 1).is_empty());

    // A mode change needs a restart, and the plan says so.
    world.write_guest(
        "live",
        &guest("\"10.77.0.32/24\"", "").replace("[network]\n", "[network]\nmode = \"none\"\n"),
    );
    let (_, plan) = world.vsctl_json(&["plan"]);
    assert_eq!(plan["guests"][0]["action"], "restart", "{plan:#}");
}
