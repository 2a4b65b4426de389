//! The man pages in man/ are generated from the clap definitions; this test
//! fails when they are stale. `UPDATE_MAN=1 cargo test --test man_pages`
//! regenerates them.

use std::path::Path;

fn render(command: &clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .section("8")
        .render(&mut out)
        .expect("render man page");
    out
}

/// (file name, page) for vsctl(8) and every subcommand, recursively.
fn pages() -> Vec<(String, Vec<u8>)> {
    fn walk(command: &clap::Command, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for sub in command
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            let name = format!("{prefix}-{}", sub.get_name());
            let page = sub.clone().name(name.clone()).display_name(name.clone());
            out.push((format!("{name}.8"), render(&page)));
            walk(sub, &name, out);
        }
    }
    let top = vsctl::cli::command();
    let mut out = vec![(String::from("vsctl.8"), render(&top))];
    walk(&top, "vsctl", &mut out);
    out
}

#[test]
fn man_pages_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    let generated = pages();
    for (file, page) in &generated {
        let path = dir.join(file);
        if update {
            std::fs::write(&path, page).unwrap();
        } else if std::fs::read(&path).ok().as_ref() != Some(page) {
            stale.push(file.clone());
        }
    }
    // No leftover generated page for a subcommand that no longer exists.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".8") && !generated.iter().any(|(f, _)| *f == name) {
            stale.push(format!("{name} (no such command)"));
        }
    }
    assert!(
        stale.is_empty(),
        "stale man pages: {stale:?}; run `UPDATE_MAN=1 cargo test --test man_pages`"
    );
}

#[test]
fn hand_written_config_reference_exists_and_covers_every_section() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("man/vsctl.toml.5"))
            .unwrap();
    for section in [
        "[network]",
        "[limits]",
        "[disk]",
        "[rootfs]",
        "[init]",
        "[security]",
        "[[mounts]]",
        "[env]",
        "[paths]",
        "[defaults]",
        "[userns]",
        "[templates]",
        "[runtime]",
    ] {
        assert!(
            text.contains(section),
            "vsctl.toml(5) does not document {section}"
        );
    }
}
