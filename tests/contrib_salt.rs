//! The Salt execution and state modules (contrib/salt) driven by the real
//! `salt-call --local` against the real vsctl binary in an isolated root.
//!
//! Needs `tests/contrib/setup-venv.sh` to have run; fails under CI=true when
//! it has not, skips locally.

mod common;
#[path = "contrib/mod.rs"]
mod contrib;

use contrib::*;
use serde_json::Value;
use std::path::PathBuf;

struct Salt {
    // Dropped first: stops the guests while their root still exists.
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

const GUESTS_SLS: &str = r#"
web1:
  vsctl.running:
    - template: busybox
    - hostname: web1.example.test
    - network:
        addresses: [10.88.0.11/24]
    - limits:
        memory: {{ pillar.get('mem', '64MiB') }}
        cpus: 0.5
web2:
  vsctl.stopped:
    - content: |
        template = "busybox"
        [limits]
        memory = "32MiB"
"#;

const GONE_SLS: &str = "web2:\n  vsctl.guest_absent: []\n";

/// `limitz` is a typo for `limits`.
const TYPO_SLS: &str =
    "web9:\n  vsctl.running:\n    - template: busybox\n    - limitz: {memory: 64MiB}\n";

impl Salt {
    fn new(bin: PathBuf) -> Salt {
        let dir = tempfile::Builder::new()
            .prefix("vsctl-salt-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path();
        for sub in ["cfg", "srv", "root", "salt"] {
            std::fs::create_dir_all(path.join(sub)).unwrap();
        }
        // A masterless minion whose whole world is this directory; the
        // contrib tree is a file root so saltutil.sync_all finds _modules and
        // _states the way a real deployment does.
        std::fs::write(
            path.join("cfg/minion"),
            format!(
                "file_client: local\nroot_dir: {salt}\nfile_roots:\n  base:\n    - {srv}\n    - {contrib}\n\
                 vsctl:\n  binary: {bin}\n  root: {root}\n",
                salt = path.join("salt").display(),
                srv = path.join("srv").display(),
                contrib = repo().join("contrib/salt").display(),
                bin = vsctl_bin().display(),
                root = path.join("root").display(),
            ),
        )
        .unwrap();
        std::fs::write(path.join("srv/guests.sls"), GUESTS_SLS).unwrap();
        std::fs::write(path.join("srv/gone.sls"), GONE_SLS).unwrap();
        std::fs::write(path.join("srv/typo.sls"), TYPO_SLS).unwrap();
        let sandbox = Sandbox::new(&path.join("root"));
        let salt = Salt { sandbox, dir, bin };
        salt.call(&["saltutil.sync_all"]);
        salt
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn guest_file(&self, name: &str) -> PathBuf {
        self.root().join(format!("etc/vsctl/guests.d/{name}.toml"))
    }

    /// `salt-call --local ARGS --out=json`, the `local` part of its output.
    fn call(&self, args: &[&str]) -> Value {
        self.call_with(args, &[0])
    }

    /// Like `call`, accepting the exit codes in `codes`.
    fn call_with(&self, args: &[&str], codes: &[i32]) -> Value {
        let out = self.call_output(args, codes);
        let value: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("salt-call printed no JSON ({e}):\n{}", stdout(&out)));
        value["local"].clone()
    }

    /// `salt-call --local ARGS --out=json` as it ended, exit code in `codes`.
    fn call_output(&self, args: &[&str], codes: &[i32]) -> std::process::Output {
        run(
            self.sandbox
                .command(self.bin.join("salt-call"))
                .current_dir(self.dir.path())
                .arg("--local")
                .arg(format!(
                    "--config-dir={}",
                    self.dir.path().join("cfg").display()
                ))
                .args(["--out=json", "--retcode-passthrough", "--log-level=quiet"])
                .args(args),
            codes,
        )
    }

    /// state.apply SLS; returns {state id: state return}.
    fn apply(&self, sls: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["state.apply", sls];
        args.extend_from_slice(extra);
        let local = self.call(&args);
        let map = local
            .as_object()
            .unwrap_or_else(|| panic!("state.apply returned {local}"));
        let mut states: Vec<Value> = map.values().cloned().collect();
        states.sort_by_key(|s| s["__run_num__"].as_u64());
        for state in &states {
            assert!(state.get("name").is_some(), "not a state return: {state}");
        }
        states
    }
}

#[test]
fn salt_states_test_mode_apply_and_rerun() {
    let Some(bin) = venv_bin("salt-call") else {
        return;
    };
    let salt = Salt::new(bin);

    // test=True: pending changes reported with result None, nothing written.
    let before = snapshot(&salt.root());
    let states = salt.apply("guests", &["test=True"]);
    assert_eq!(states.len(), 2);
    for state in &states {
        assert!(state["result"].is_null(), "test mode result: {state}");
        let name = state["name"].as_str().unwrap();
        assert_eq!(
            state["changes"]["plan"][name]["action"], "create",
            "{state}"
        );
        assert!(
            state["changes"]["diff"]
                .as_str()
                .is_some_and(|d| d.contains("+template = \"busybox\"")),
            "{state}"
        );
    }
    assert_eq!(snapshot(&salt.root()), before, "test=True changed files");

    // A real run applies both.
    let states = salt.apply("guests", &[]);
    for state in &states {
        assert_eq!(state["result"], true, "{state}");
        let name = state["name"].as_str().unwrap();
        assert_eq!(state["changes"]["applied"][name], "applied", "{state}");
    }
    assert_eq!(listed_guests(&salt.root()), ["web1", "web2"]);
    let web1 = std::fs::read_to_string(salt.guest_file("web1")).unwrap();
    assert!(web1.contains("state = \"running\""), "{web1}");
    assert!(web1.contains("memory = \"64MiB\""), "{web1}");
    let web2 = std::fs::read_to_string(salt.guest_file("web2")).unwrap();
    assert!(web2.starts_with("state = \"stopped\"\n"), "{web2}");

    // A rerun reports no changes and rewrites nothing.
    let before = snapshot(&salt.root());
    for state in salt.apply("guests", &[]) {
        assert_eq!(state["result"], true, "{state}");
        assert_eq!(state["changes"], serde_json::json!({}), "{state}");
    }
    assert_eq!(snapshot(&salt.root()), before);

    // A changed field in test mode: pending, the field shown, nothing touched.
    let states = salt.apply("guests", &["test=True", r#"pillar={"mem": "96MiB"}"#]);
    assert!(states[0]["result"].is_null(), "{}", states[0]);
    assert_eq!(
        states[0]["changes"]["plan"]["web1"]["changes"]["limits.memory"],
        serde_json::json!({"old": "64MiB", "new": "96MiB", "class": "live"})
    );
    assert_eq!(
        states[1]["result"], true,
        "web2 is unchanged: {}",
        states[1]
    );
    assert_eq!(snapshot(&salt.root()), before);

    // guest_absent: test mode, then for real, then again.
    let states = salt.apply("gone", &["test=True"]);
    assert!(states[0]["result"].is_null(), "{}", states[0]);
    assert_eq!(states[0]["changes"]["plan"]["web2"]["action"], "remove");
    assert!(salt.guest_file("web2").exists());
    let states = salt.apply("gone", &[]);
    assert_eq!(states[0]["result"], true, "{}", states[0]);
    assert!(!salt.guest_file("web2").exists());
    assert_eq!(listed_guests(&salt.root()), ["web1"]);
    let states = salt.apply("gone", &[]);
    assert_eq!(states[0]["changes"], serde_json::json!({}), "{}", states[0]);
}

#[test]
fn salt_execution_module_plan_apply_list_status() {
    let Some(bin) = venv_bin("salt-call") else {
        return;
    };
    let salt = Salt::new(bin);
    let guests = salt.root().join("etc/vsctl/guests.d");
    std::fs::create_dir_all(&guests).unwrap();
    std::fs::write(guests.join("app1.toml"), "template = \"busybox\"\n").unwrap();

    let planned = salt.call(&["vsctl.plan"]);
    assert_eq!(planned["pending"], true, "{planned}");
    assert_eq!(planned["plan"]["guests"][0]["action"], "create");

    let before = snapshot(&salt.root());
    let tested = salt.call(&["vsctl.apply", "test=True"]);
    assert_eq!(tested["changed"], true, "{tested}");
    assert!(tested.get("result").is_none());
    assert_eq!(
        snapshot(&salt.root()),
        before,
        "apply test=True changed state"
    );

    let applied = salt.call(&["vsctl.apply"]);
    assert_eq!(applied["changed"], true, "{applied}");
    assert_eq!(applied["result"]["guests"][0]["status"], "applied");
    let again = salt.call(&["vsctl.apply"]);
    assert_eq!(again["changed"], false, "{again}");

    let listed = salt.call(&["vsctl.list"]);
    assert_eq!(listed[0]["name"], "app1", "{listed}");
    assert_eq!(listed[0]["template"], "busybox");
    let status = salt.call(&["vsctl.status", "app1"]);
    assert_eq!(status["name"], "app1", "{status}");
    assert_eq!(status["record"]["spec"]["template"], "busybox");

    // A misspelt field fails the state instead of falling back to a default.
    let typo = salt.call_with(&["state.apply", "typo"], &[1, 2]);
    let state = typo.as_object().unwrap().values().next().unwrap().clone();
    assert_eq!(state["result"], false, "{state}");
    assert!(
        state["comment"]
            .as_str()
            .unwrap()
            .contains("unknown argument(s) limitz"),
        "{state}"
    );
    assert!(!salt.guest_file("web9").exists());

    // Prune through the execution module once the file is gone.
    std::fs::remove_file(guests.join("app1.toml")).unwrap();
    let pruned = salt.call(&["vsctl.apply", "prune=True"]);
    assert_eq!(pruned["changed"], true, "{pruned}");
    assert!(listed_guests(&salt.root()).is_empty());
}

/// A name that climbs out of every vsctl directory to `dir/x`.
fn traversal_to(dir: &std::path::Path) -> String {
    format!(
        "{}{}/x",
        "../".repeat(40),
        dir.strip_prefix("/").unwrap().display()
    )
}

#[test]
fn salt_refuses_guest_names_that_are_not_guest_names() {
    let Some(bin) = venv_bin("salt-call") else {
        return;
    };
    let salt = Salt::new(bin);
    // A record planted where `status ../../x` would read it (issue 23).
    let plant = tempfile::Builder::new()
        .prefix("vsctl-plant-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir(plant.path().join("x")).unwrap();
    std::fs::write(plant.path().join("x/record.json"), "planted-record").unwrap();
    std::fs::create_dir_all(salt.root().join("var/lib/vsctl/guests")).unwrap();
    let name = traversal_to(plant.path());
    let before = snapshot(&salt.root());
    for args in [
        vec!["vsctl.status".to_string(), name.clone()],
        vec!["vsctl.plan".to_string(), format!("names={name}")],
        vec!["vsctl.plan".to_string(), format!("recreate={name}")],
        vec!["vsctl.apply".to_string(), format!("names={name}")],
        vec![
            "vsctl.converge".to_string(),
            name.clone(),
            "text=template = \"busybox\"".to_string(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = salt.call_output(&args, &[1]);
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("invalid guest name"), "{args:?}: {text}");
        assert!(!text.contains("planted-record"), "{args:?}: {text}");
    }
    // The state module refuses a state whose id is such a name.
    std::fs::write(
        salt.dir.path().join("srv/evil.sls"),
        format!("'{name}':\n  vsctl.running:\n    - template: busybox\n"),
    )
    .unwrap();
    let out = salt.call_with(&["state.apply", "evil"], &[1, 2]);
    let state = out.as_object().unwrap().values().next().unwrap().clone();
    assert_eq!(state["result"], false, "{state}");
    assert!(
        state["comment"]
            .as_str()
            .unwrap()
            .contains("invalid guest name"),
        "{state}"
    );
    assert_eq!(
        snapshot(&salt.root()),
        before,
        "a refused name changed files"
    );
}
