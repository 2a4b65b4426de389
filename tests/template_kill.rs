//! SIGKILL a template build at random moments, several times, then build
//! again: the visible template is always complete and the final state is
//! consistent (root needed). Drives the real `vsctl template build`.

mod kill_points;

use kill_points::{Rng, seed, sigkill_after};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vsctl::paths::Paths;
use vsctl::template;

const BIN: &str = env!("CARGO_BIN_EXE_vsctl");

fn make_source(dir: &Path) {
    for d in 0..10 {
        let sub = dir.join(format!("usr/share/d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..60 {
            std::fs::write(
                sub.join(format!("f{f}")),
                format!("file {d}/{f}\n").repeat(50 + f),
            )
            .unwrap();
        }
    }
    std::fs::write(dir.join("usr/big"), vec![7u8; 4 << 20]).unwrap();
}

fn build(root: &Path, name: &str, force: bool) -> std::process::Child {
    let mut c = Command::new(BIN);
    c.arg("--root").arg(root).args(["template", "build", name]);
    if force {
        c.arg("--force");
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn assert_consistent(paths: &Paths, name: &str, must_exist: bool) {
    let trees = paths.template_trees_dir();
    if let Some(inst) = template::installed(paths, name) {
        let r = template::verify(paths, name).unwrap();
        assert!(
            r.corrupted.is_empty() && r.missing.is_empty(),
            "visible template is incomplete: {r:?}"
        );
        assert_eq!(
            r.ok as u64,
            template::manifest(paths, name).unwrap().entries.len() as u64
        );
        assert_eq!(inst.files, 601);
    } else {
        assert!(!must_exist, "template vanished");
        assert!(
            !trees.join(name).exists(),
            "a template directory without a manifest is visible"
        );
    }
}

#[test]
fn killed_builds_never_leave_a_half_template() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_source(&src);
    let paths = Paths::under_root(dir.path());
    std::fs::create_dir_all(&paths.templates_dir).unwrap();
    std::fs::write(
        paths.templates_dir.join("big.toml"),
        format!(
            "bootstrap = \"import\"\npath = {:?}\n",
            src.to_str().unwrap()
        ),
    )
    .unwrap();

    // How long one undisturbed build takes, to spread kill points over it.
    let t = Instant::now();
    assert!(build(dir.path(), "big", false).wait().unwrap().success());
    let full = t.elapsed();
    template::remove(&paths, "big", &[]).unwrap();
    vsctl::store::gc(&paths).unwrap();

    let seed = seed();
    eprintln!("kill test seed {seed}, full build {full:?}");
    let mut rng = Rng(seed);
    let mut installed_once = false;
    for round in 0..10 {
        // First rounds: no template yet (plain rename path); later: forced
        // rebuilds over an installed one (exchange path).
        let force = installed_once;
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 + 1));
        let status = sigkill_after(build(dir.path(), "big", force), delay);
        eprintln!("round {round}: killed after {delay:?}, status {status:?}");
        assert_consistent(&paths, "big", installed_once);
        installed_once |= template::installed(&paths, "big").is_some();
        if round == 4 && !installed_once {
            assert!(build(dir.path(), "big", false).wait().unwrap().success());
            installed_once = true;
        }
    }

    // A final build succeeds, leaves no staging directory, and after gc
    // every object is referenced by the template.
    assert!(build(dir.path(), "big", true).wait().unwrap().success());
    assert_consistent(&paths, "big", true);
    let leftovers: Vec<_> = std::fs::read_dir(paths.template_trees_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "big")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    vsctl::store::gc(&paths).unwrap();
    let store = vsctl::store::Store::new(&paths);
    let mut objects = 0;
    for fan in std::fs::read_dir(store.objects_dir()).unwrap() {
        for o in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            let md = o.unwrap().metadata().unwrap();
            assert!(md.nlink() >= 2, "unreferenced object survived gc");
            objects += 1;
        }
    }
    let m = template::manifest(&paths, "big").unwrap();
    let distinct: std::collections::HashSet<_> =
        m.entries.iter().filter_map(|e| e.object.clone()).collect();
    assert_eq!(objects, distinct.len());
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

/// Processes whose root directory is below `dir` (i.e. chrooted into a
/// staging tree there).
fn processes_rooted_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().into_string().unwrap_or_default();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(root) = std::fs::read_link(e.path().join("root"))
            && root.starts_with(dir)
        {
            out.push(name);
        }
    }
    out
}

#[test]
fn killing_a_build_kills_its_isolated_steps_and_their_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under_root(dir.path());
    std::fs::create_dir_all(&paths.templates_dir).unwrap();
    std::fs::write(
        paths.templates_dir.join("slow.toml"),
        "base = \"busybox\"\nrun = [\"touch /started; sleep 30 & sleep 30\"]\n",
    )
    .unwrap();
    // Build the base first so the kill lands in the run step.
    assert!(
        build(dir.path(), "busybox", false)
            .wait()
            .unwrap()
            .success()
    );
    let mut child = build(dir.path(), "slow", false);
    let marker = paths
        .template_trees_dir()
        .join("slow.building/rootfs/started");
    let t = Instant::now();
    while !marker.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the run step never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !processes_rooted_below(dir.path()).is_empty(),
        "the step should be running now"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // PR_SET_PDEATHSIG takes the step's PID 1 down, and the PID namespace
    // takes the backgrounded sleep with it; the mount namespace goes too.
    let t = Instant::now();
    while !processes_rooted_below(dir.path()).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "build step processes survived the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(dir.path().to_str().unwrap()),
        "a build mount leaked:\n{info}"
    );
    assert!(template::installed(&paths, "slow").is_none());

    // The next build cleans the stale staging tree and succeeds.
    std::fs::write(
        paths.templates_dir.join("slow.toml"),
        "base = \"busybox\"\nrun = [\"touch /done\"]\n",
    )
    .unwrap();
    assert!(build(dir.path(), "slow", false).wait().unwrap().success());
    assert!(template::tree_path(&paths, "slow").join("done").exists());
    assert!(!template::tree_path(&paths, "slow").join("started").exists());
    assert!(!paths.template_trees_dir().join("slow.building").exists());
}
