//! The Ansible collection `vsctl.vsctl` (contrib/ansible) driven by the real
//! ansible-core against the real vsctl binary in an isolated root.
//!
//! Needs `tests/contrib/setup-venv.sh` to have run; fails under CI=true when
//! it has not, skips locally.

mod common;
#[path = "contrib/mod.rs"]
mod contrib;

use contrib::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary Ansible world: `root/` for vsctl, `ansible/` for Ansible's own
/// files, playbooks next to them.
struct World {
    // Dropped first: stops the guests while their root still exists.
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl World {
    fn new(bin: PathBuf) -> World {
        let dir = tempfile::Builder::new()
            .prefix("vsctl-ansible-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        let sandbox = Sandbox::new(&dir.path().join("root"));
        World { sandbox, dir, bin }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn guest_file(&self, name: &str) -> PathBuf {
        self.root().join(format!("etc/vsctl/guests.d/{name}.toml"))
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Write guest file NAME.toml and `vsctl apply` it inside the sandbox
    /// (which stops the guest when the test ends, however it ends).
    fn apply_guest(&self, name: &str, text: &str) {
        let guests_dir = self.root().join("etc/vsctl/guests.d");
        std::fs::create_dir_all(&guests_dir).unwrap();
        std::fs::write(guests_dir.join(format!("{name}.toml")), text).unwrap();
        run(
            self.sandbox
                .command(vsctl_bin())
                .arg("--root")
                .arg(self.root())
                .arg("apply"),
            &[0],
        );
    }

    /// An inventory file for the vsctl inventory plugin over this world's root.
    fn inventory(&self) -> PathBuf {
        self.write(
            "guests.vsctl.yml",
            &format!(
                "plugin: vsctl.vsctl.vsctl\nbinary: {}\nroot: {}\n",
                vsctl_bin().display(),
                self.root().display()
            ),
        )
    }

    fn ansible(&self, tool: &str) -> Command {
        let mut cmd = self.sandbox.command(self.bin.join(tool));
        cmd.current_dir(self.dir.path())
            .env("ANSIBLE_COLLECTIONS_PATH", repo().join("contrib/ansible"))
            .env("ANSIBLE_HOME", self.dir.path().join("ansible"))
            .env("ANSIBLE_CONFIG", self.dir.path().join("no-ansible.cfg"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_LOCALHOST_WARNING", "False")
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            .env("ANSIBLE_STDOUT_CALLBACK", "default");
        cmd
    }

    /// `ansible-playbook PLAYBOOK -e root=.. -e bin=.. EXTRA...`
    fn playbook(&self, playbook: &Path, extra: &[&str]) -> Output {
        run(
            self.ansible("ansible-playbook")
                .arg(playbook)
                .arg("-e")
                .arg(format!("root={}", self.root().display()))
                .arg("-e")
                .arg(format!("bin={}", vsctl_bin().display()))
                .arg("-e")
                .arg(format!(
                    "ansible_python_interpreter={}",
                    self.bin.join("python").display()
                ))
                .args(extra),
            &[0],
        )
    }
}

/// Two guests: web1 from module options, web2 from TOML content; `mem` sets
/// web1's memory limit. The asserts check the modules' return values.
const GUESTS: &str = r#"
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    mem: 64MiB
  tasks:
    - name: web1 from options
      vsctl.vsctl.vsctl_guest:
        name: web1
        state: running
        template: busybox
        hostname: web1.example.test
        network:
          addresses: [10.88.0.11/24]
          gateway: 10.88.0.1
        limits:
          memory: "{{ mem }}"
          cpus: 0.5
          pids: 256
        env:
          GREETING: 'say "hi"'
        root: "{{ root }}"
        binary: "{{ bin }}"
      register: web1
    - name: web2 from TOML
      vsctl.vsctl.vsctl_guest:
        name: web2
        state: stopped
        content: |
          template = "busybox"
          [limits]
          memory = "32MiB"
        root: "{{ root }}"
        binary: "{{ bin }}"
      register: web2
    - name: the modules return vsctl's plan (and result unless checking)
      ansible.builtin.assert:
        that:
          - web1.plan.format_version == 1
          - web1.plan.guests | map(attribute='name') | list == ['web1']
          - ansible_check_mode or web1.result.guests[0].status in ['applied', 'unchanged']
          - ansible_check_mode or (web1.result.changed or web1.file_changed) == web1.changed
          - web2.guest_file == root ~ '/etc/vsctl/guests.d/web2.toml'
    - name: whole guests.d
      vsctl.vsctl.vsctl_apply:
        root: "{{ root }}"
        binary: "{{ bin }}"
      register: all
    - ansible.builtin.assert:
        that:
          - all.plan.guests | map(attribute='name') | sort == ['web1', 'web2']
"#;

const ABSENT: &str = r#"
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - vsctl.vsctl.vsctl_guest:
        name: web2
        state: absent
        root: "{{ root }}"
        binary: "{{ bin }}"
"#;

#[test]
fn ansible_playbook_creates_converges_checks_diffs_and_removes() {
    let Some(bin) = venv_bin("ansible-playbook") else {
        return;
    };
    let world = World::new(bin);
    let guests = world.write("guests.yml", GUESTS);

    // First run creates both guests.
    let out = stdout(&world.playbook(&guests, &[]));
    let counts = recap(&out, "localhost");
    assert_eq!(counts["changed"], 2, "{out}");
    assert_eq!(counts["failed"], 0, "{out}");
    assert_eq!(listed_guests(&world.root()), ["web1", "web2"]);
    let web1 = std::fs::read_to_string(world.guest_file("web1")).unwrap();
    assert!(web1.contains("memory = \"64MiB\""), "{web1}");
    assert!(web1.contains(r#"GREETING = "say \"hi\"""#), "{web1}");
    let web2 = std::fs::read_to_string(world.guest_file("web2")).unwrap();
    assert!(web2.starts_with("state = \"stopped\"\n"), "{web2}");
    let status = vsctl_json(&world.root(), &["status", "web1"]);
    assert_eq!(status["record"]["spec"]["limits"]["memory"], "64MiB");

    // Second run changes nothing anywhere.
    let before = snapshot(&world.root());
    let out = stdout(&world.playbook(&guests, &[]));
    assert_eq!(recap(&out, "localhost")["changed"], 0, "{out}");
    assert_eq!(snapshot(&world.root()), before, "a no-op run rewrote files");

    // Check mode on a modified guest: reported, shown, not done.
    let before = snapshot(&world.root());
    let out = stdout(&world.playbook(&guests, &["-e", "mem=96MiB", "--check", "--diff"]));
    assert_eq!(recap(&out, "localhost")["changed"], 1, "{out}");
    assert!(out.contains("-memory = \"64MiB\""), "{out}");
    assert!(out.contains("+memory = \"96MiB\""), "{out}");
    assert!(
        out.contains("limits.memory: \"64MiB\" -> \"96MiB\""),
        "diff lacks the plan's field change:\n{out}"
    );
    assert_eq!(
        snapshot(&world.root()),
        before,
        "check mode touched files or state"
    );

    // The same change for real, with --diff.
    let out = stdout(&world.playbook(&guests, &["-e", "mem=96MiB", "--diff"]));
    assert_eq!(recap(&out, "localhost")["changed"], 1, "{out}");
    assert!(out.contains("+memory = \"96MiB\""), "{out}");
    let status = vsctl_json(&world.root(), &["status", "web1"]);
    assert_eq!(status["record"]["spec"]["limits"]["memory"], "96MiB");

    // The inventory plugin sees both guests.
    let inventory = world.inventory();
    let listed = run(
        world
            .ansible("ansible-inventory")
            .arg("-i")
            .arg(&inventory)
            .arg("--list"),
        &[0],
    );
    let inv: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("inventory JSON");
    let hostvars = &inv["_meta"]["hostvars"];
    assert_eq!(hostvars["web1"]["vsctl_template"], "busybox");
    assert_eq!(hostvars["web1"]["vsctl_hostname"], "web1.example.test");
    assert_eq!(hostvars["web1"]["vsctl_addresses"][0], "10.88.0.11/24");
    assert_eq!(hostvars["web2"]["vsctl_desired_state"], "stopped");
    assert!(hostvars["web2"]["vsctl_status"].is_string());
    assert_eq!(hostvars["web1"]["ansible_connection"], "vsctl.vsctl.vsctl");
    let mut members: Vec<_> = inv["vsctl"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    members.sort();
    assert_eq!(members, ["web1", "web2"]);

    // state=absent removes the file and unregisters; again is a no-op.
    let absent = world.write("absent.yml", ABSENT);
    let out = stdout(&world.playbook(&absent, &[]));
    assert_eq!(recap(&out, "localhost")["changed"], 1, "{out}");
    assert!(!world.guest_file("web2").exists());
    assert_eq!(listed_guests(&world.root()), ["web1"]);
    let out = stdout(&world.playbook(&absent, &[]));
    assert_eq!(recap(&out, "localhost")["changed"], 0, "{out}");
}

#[test]
fn ansible_guest_module_refuses_invalid_files_without_writing_them() {
    let Some(bin) = venv_bin("ansible-playbook") else {
        return;
    };
    let world = World::new(bin);
    let playbook = world.write(
        "bad.yml",
        r#"
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - vsctl.vsctl.vsctl_guest:
        name: bad1
        content: |
          template = "busybox"
          [limits]
          memroy = "64MiB"
        root: "{{ root }}"
        binary: "{{ bin }}"
      register: bad
      ignore_errors: true
    - ansible.builtin.assert:
        that:
          - bad is failed
          - "'unknown key' in bad.msg"
          - "'guests.d/bad1.toml:3' in bad.msg"
"#,
    );
    let out = stdout(&world.playbook(&playbook, &[]));
    assert_eq!(recap(&out, "localhost")["failed"], 0, "{out}");
    assert!(
        !world.guest_file("bad1").exists(),
        "an invalid guest file was left in guests.d"
    );
    assert!(listed_guests(&world.root()).is_empty());
}

#[test]
fn ansible_doc_renders_every_plugin_and_offline_sanity_passes() {
    let Some(bin) = venv_bin("ansible-doc") else {
        return;
    };
    let world = World::new(bin);
    for (kind, name, options) in [
        (
            "module",
            "vsctl.vsctl.vsctl_guest",
            &["name", "state", "content", "limits", "root", "binary"][..],
        ),
        (
            "module",
            "vsctl.vsctl.vsctl_apply",
            &["prune", "purge", "names"][..],
        ),
        (
            "connection",
            "vsctl.vsctl.vsctl",
            &["remote_addr", "vsctl_binary"][..],
        ),
        (
            "inventory",
            "vsctl.vsctl.vsctl",
            &["plugin", "binary", "keyed_groups"][..],
        ),
    ] {
        let out = run(
            world
                .ansible("ansible-doc")
                .args(["-t", kind, "--json", name]),
            &[0],
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{kind} {name}: ansible-doc JSON: {e}"));
        let entry = &doc[name];
        let text_stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !text_stderr.contains("WARNING"),
            "{kind} {name}: {text_stderr}"
        );
        for option in options {
            assert!(
                entry["doc"]["options"].get(*option).is_some(),
                "{kind} {name} documents no option {option}"
            );
        }
        if kind == "module" {
            assert!(entry["examples"].as_str().is_some_and(|e| e.contains(name)));
            assert!(entry["return"].is_object(), "{name} has no RETURN");
        }
        // The text rendering works too (it is what users read).
        let text = run(world.ansible("ansible-doc").args(["-t", kind, name]), &[0]);
        assert!(stdout(&text).contains(name), "{kind} {name}");
    }
    // ansible-test sanity, on a copy: it writes tests/output into the collection.
    let source = repo().join("contrib/ansible/ansible_collections/vsctl/vsctl");
    let copy = world
        .dir
        .path()
        .join("sanity/ansible_collections/vsctl/vsctl");
    for entry in walkdir::WalkDir::new(&source) {
        let entry = entry.unwrap();
        let to = copy.join(entry.path().strip_prefix(&source).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else if entry.path().extension().is_none_or(|x| x != "pyc") {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    let version = run(
        command(world.bin.join("python"))
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
        &[0],
    );
    let mut sanity = world.ansible("ansible-test");
    sanity
        .current_dir(&copy)
        .args(["sanity", "--local", "--python", stdout(&version).trim()]);
    for test in OFFLINE_SANITY {
        sanity.args(["--test", test]);
    }
    run(&mut sanity, &[0]);

    // Every Python file compiles (module_utils and plugins ansible-doc only
    // parses), without leaving __pycache__ in the source tree.
    let sources: Vec<PathBuf> = walkdir::WalkDir::new(repo().join("contrib"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    assert!(sources.len() >= 7, "{sources:?}");
    run(
        command(world.bin.join("python"))
            .arg("-c")
            .arg("import sys\nfor p in sys.argv[1:]:\n    compile(open(p).read(), p, 'exec')")
            .args(&sources),
        &[0],
    );
}

/// The `ansible-test sanity` tests that run without network or containers
/// (validate-modules, pep8, pylint and friends need ansible-test to bootstrap
/// pip from ci-files.testing.ansible.com into venvs of their own).
const OFFLINE_SANITY: &[&str] = &[
    "action-plugin-docs",
    "compile",
    "empty-init",
    "line-endings",
    "no-assert",
    "no-get-exception",
    "no-illegal-filenames",
    "no-smart-quotes",
    "replace-urlopen",
    "shebang",
    "symlinks",
    "use-argspec-type-path",
    "use-compat-six",
];

/// Whether this vsctl has `exec` (the runtime issue adds it).
fn vsctl_has_exec() -> bool {
    command(vsctl_bin())
        .args(["exec", "--help"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Drives the connection plugin directly (no Python needed in the guest):
/// exec with exit code and stdin, put_file through a guest symlink that points
/// at a host path, fetch_file.
const CONNECTION_DRIVER: &str = r#"
import json, os, sys
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.playbook.play_context import PlayContext

collections, binary, root, guest, canary, work = sys.argv[1:7]
init_plugin_loader([collections])
conn = connection_loader.get("vsctl.vsctl.vsctl", PlayContext(), None)
conn.set_options(var_options={
    "inventory_hostname": guest,
    "ansible_vsctl_binary": binary,
    "ansible_vsctl_root": root,
})
conn._connect()
out = {}
rc, so, se = conn.exec_command("echo out; echo err >&2; exit 3")
out["exec"] = [rc, so.decode(), se.decode()]
rc, so, se = conn.exec_command("cat", in_data=b"through stdin")
out["stdin"] = [rc, so.decode()]
# What the guest gets as stdio: pipes vsctl relays, never a host file.
rc, so, se = conn.exec_command("ls -l /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2")
out["fds"] = [rc, so.decode()]
# A guest-side symlink to a host path: the write must land inside the guest.
conn.exec_command("ln -sf %s /tmp/evil" % canary)
src = os.path.join(work, "payload")
with open(src, "wb") as f:
    f.write(b"payload \x00 bytes\n")
conn.put_file(src, "/tmp/evil")
conn.put_file(src, "/tmp/plain file")
dst = os.path.join(work, "fetched")
conn.fetch_file("/tmp/plain file", dst)
with open(dst, "rb") as f:
    out["fetched"] = f.read().decode()
rc, so, se = conn.exec_command("cat /tmp/evil")
out["inside"] = [rc, so.decode()]
print(json.dumps(out))
"#;

#[test]
fn ansible_connection_plugin_runs_inside_a_guest() {
    if !vsctl_has_exec() {
        eprintln!(
            "skipping: this vsctl has no `exec` subcommand yet (the runtime issue adds it); \
             the connection plugin's live test runs once `vsctl exec --help` succeeds"
        );
        return;
    }
    let Some(bin) = venv_bin("ansible-playbook") else {
        return;
    };
    let world = World::new(bin);
    let root = world.root();
    // The sandbox stops the guest whatever happens below.
    world.apply_guest("conn1", "template = \"busybox\"\nstate = \"running\"\n");

    let canary = world.dir.path().join("host-canary");
    std::fs::write(&canary, "host file\n").unwrap();
    let driver = world.write("driver.py", CONNECTION_DRIVER);
    let out = run(
        world
            .ansible("python")
            .arg(&driver)
            .arg(repo().join("contrib/ansible"))
            .arg(vsctl_bin())
            .arg(&root)
            .arg("conn1")
            .arg(&canary)
            .arg(world.dir.path()),
        &[0],
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("driver JSON");
    assert_eq!(got["exec"][0], 3, "exit code propagated: {got}");
    assert_eq!(got["exec"][1], "out\n");
    assert_eq!(got["exec"][2], "err\n");
    assert_eq!(got["stdin"], serde_json::json!([0, "through stdin"]));
    assert_eq!(got["fds"][0], 0, "{got}");
    let fds = got["fds"][1].as_str().unwrap();
    assert_eq!(fds.lines().count(), 3, "{fds}");
    assert!(
        fds.lines().all(|l| l.contains(" -> pipe:")),
        "host descriptors in the guest: {fds}"
    );
    assert_eq!(got["fetched"], "payload \u{0} bytes\n");
    assert_eq!(got["inside"][1], "payload \u{0} bytes\n");
    assert_eq!(
        std::fs::read_to_string(&canary).unwrap(),
        "host file\n",
        "put_file followed a guest symlink out to the host"
    );

    // And through a playbook: the inventory plugin plus raw.
    let inventory = world.inventory();
    let playbook = world.write(
        "raw.yml",
        "- hosts: conn1\n  gather_facts: false\n  tasks:\n    - ansible.builtin.raw: hostname\n      register: h\n    - ansible.builtin.assert:\n        that: [\"h.stdout | trim == 'conn1'\"]\n",
    );
    let out = run(
        world
            .ansible("ansible-playbook")
            .arg("-i")
            .arg(&inventory)
            .arg(&playbook),
        &[0],
    );
    assert_eq!(recap(&stdout(&out), "conn1")["failed"], 0);
}

/// Ansible's own modules (command, copy, file) inside a running Debian guest
/// with python3, through the connection plugin: the files land in the guest,
/// nothing on the host changes. Builds debian-bookworm-python from Debian's
/// archive (skipped with VSCTL_SKIP_NETWORK_TESTS=1 outside CI).
#[test]
fn ansible_modules_run_inside_a_debian_guest() {
    let Some(bin) = venv_bin("ansible-playbook") else {
        return;
    };
    if std::env::var("VSCTL_SKIP_NETWORK_TESTS").is_ok_and(|v| v == "1")
        && std::env::var("CI").as_deref() != Ok("true")
    {
        eprintln!("skipping: VSCTL_SKIP_NETWORK_TESTS=1");
        return;
    }
    let world = World::new(bin);
    let root = world.root();
    // The template build downloads packages: host network, not the sandbox.
    run(
        command(vsctl_bin()).arg("--root").arg(&root).args([
            "template",
            "build",
            "debian-bookworm-python",
        ]),
        &[0],
    );
    world.apply_guest(
        "py1",
        "template = \"debian-bookworm-python\"\n[network]\nmode = \"none\"\n",
    );
    let host_before = snapshot(Path::new("/srv"));

    let inventory = world.inventory();
    let playbook = world.write(
        "inside.yml",
        "- hosts: py1\n  gather_facts: false\n  vars:\n    ansible_python_interpreter: /usr/bin/python3\n  tasks:\n\
         \x20   - ansible.builtin.command: cat /etc/debian_version\n      register: version\n\
         \x20   - ansible.builtin.file:\n        path: /srv/vsctl-ansible\n        state: directory\n        mode: \"0750\"\n\
         \x20   - ansible.builtin.copy:\n        dest: /srv/vsctl-ansible/motd\n        content: \"hello from ansible\\n\"\n        mode: \"0640\"\n\
         \x20   - ansible.builtin.assert:\n        that: [\"version.stdout is match('12')\"]\n",
    );
    let out = run(
        world
            .ansible("ansible-playbook")
            .arg("-i")
            .arg(&inventory)
            .arg(&playbook),
        &[0],
    );
    let recap_py1 = recap(&stdout(&out), "py1");
    assert_eq!(recap_py1["failed"], 0, "{}", stdout(&out));
    assert!(recap_py1["changed"] >= 2, "{}", stdout(&out));

    // Inside the guest: the directory and file, with their modes.
    let inside = run(
        command(vsctl_bin()).arg("--root").arg(&root).args([
            "exec",
            "py1",
            "--",
            "/bin/sh",
            "-c",
            "stat -c '%a %n' /srv/vsctl-ansible /srv/vsctl-ansible/motd; cat /srv/vsctl-ansible/motd",
        ]),
        &[0],
    );
    assert_eq!(
        stdout(&inside),
        "750 /srv/vsctl-ansible\n640 /srv/vsctl-ansible/motd\nhello from ansible\n"
    );
    // And nothing on the host.
    assert!(!Path::new("/srv/vsctl-ansible").exists());
    assert_eq!(snapshot(Path::new("/srv")), host_before);

    // A second run changes nothing.
    let again = run(
        world
            .ansible("ansible-playbook")
            .arg("-i")
            .arg(&inventory)
            .arg(&playbook),
        &[0],
    );
    assert_eq!(
        recap(&stdout(&again), "py1")["changed"],
        1,
        "only the command task reports a change: {}",
        stdout(&again)
    );
}

/// The modules refuse a guest name that is not one before running vsctl,
/// and the connection plugin's `vsctl exec` refuses it too (issue 23): no
/// planted record outside the vsctl tree is read, nothing is written.
#[test]
fn ansible_refuses_guest_names_that_are_not_guest_names() {
    let Some(bin) = venv_bin("ansible-playbook") else {
        return;
    };
    let world = World::new(bin);
    let plant = tempfile::Builder::new()
        .prefix("vsctl-plant-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir(plant.path().join("x")).unwrap();
    std::fs::write(plant.path().join("x/record.json"), "planted-record").unwrap();
    std::fs::create_dir_all(world.root().join("var/lib/vsctl/guests")).unwrap();
    std::fs::create_dir_all(world.root().join("run/vsctl")).unwrap();
    let name = format!(
        "{}{}/x",
        "../".repeat(40),
        plant.path().strip_prefix("/").unwrap().display()
    );
    let before = snapshot(&world.root());
    let playbook = world.write(
        "evil.yml",
        &format!(
            r#"
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - vsctl.vsctl.vsctl_guest:
        name: "{name}"
        template: busybox
        root: "{{{{ root }}}}"
        binary: "{{{{ bin }}}}"
      register: guest
      ignore_errors: true
    - vsctl.vsctl.vsctl_apply:
        names: ["{name}"]
        root: "{{{{ root }}}}"
        binary: "{{{{ bin }}}}"
      register: names
      ignore_errors: true
    - vsctl.vsctl.vsctl_apply:
        recreate: ["{name}"]
        root: "{{{{ root }}}}"
        binary: "{{{{ bin }}}}"
      register: recreate
      ignore_errors: true
    - ansible.builtin.assert:
        that:
          - guest is failed
          - "'invalid guest name' in guest.msg"
          - names is failed
          - "'invalid guest name' in names.msg"
          - recreate is failed
          - "'invalid guest name' in recreate.msg"
"#
        ),
    );
    let out = stdout(&world.playbook(&playbook, &[]));
    assert_eq!(recap(&out, "localhost")["failed"], 0, "{out}");
    assert!(!out.contains("planted-record"), "{out}");

    // The connection plugin with such a name as the guest: `vsctl exec`
    // refuses it as a usage error, the task fails, nothing is read.
    let inventory = world.write(
        "evil-hosts.yml",
        &format!(
            "all:\n  hosts:\n    evil:\n      ansible_connection: vsctl.vsctl.vsctl\n      ansible_host: \"{name}\"\n\
             \x20     ansible_vsctl_binary: \"{}\"\n      ansible_vsctl_root: \"{}\"\n",
            vsctl_bin().display(),
            world.root().display()
        ),
    );
    let raw = world.write(
        "evil-raw.yml",
        "- hosts: evil\n  gather_facts: false\n  tasks:\n    - ansible.builtin.raw: cat /etc/hostname\n",
    );
    let out = run(
        world
            .ansible("ansible-playbook")
            .arg("-i")
            .arg(&inventory)
            .arg(&raw),
        &[2, 4],
    );
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("guest names are"), "{text}");
    assert!(!text.contains("planted-record"), "{text}");
    assert_eq!(
        snapshot(&world.root()),
        before,
        "a refused name changed files"
    );
}
