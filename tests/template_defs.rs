//! Definition loading and host apt source parsing (no root needed).

use vsctl::paths::Paths;
use vsctl::template::{self, Definitions, Source};

fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Paths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under_root(dir.path());
    std::fs::create_dir_all(&paths.templates_dir).unwrap();
    for (name, text) in files {
        std::fs::write(paths.templates_dir.join(name), text).unwrap();
    }
    (dir, paths)
}

#[test]
fn embedded_definitions_load_without_any_files() {
    let (_d, paths) = root_with(&[]);
    let defs = Definitions::load(&paths).expect("embedded definitions are valid");
    for n in [
        "busybox",
        "debian-bookworm",
        "debian-trixie",
        "debian-bookworm-web",
        "debian-bookworm-python",
    ] {
        assert!(defs.get(n).is_some(), "{n} missing");
    }
    assert_eq!(defs.get("busybox").unwrap().source, Source::Busybox);
    let web = defs.get("debian-bookworm-web").unwrap();
    assert_eq!(
        web.source,
        Source::Base {
            name: "debian-bookworm".into()
        }
    );
    assert!(web.packages.contains(&"nginx".to_string()));
    assert!(web.packages.contains(&"openssh-server".to_string()));
    assert!(defs.is_apt_based("debian-bookworm-python"));
    assert!(!defs.is_apt_based("busybox"));
    let inittab = defs
        .get("busybox")
        .unwrap()
        .files
        .iter()
        .find(|f| f.path == "/etc/inittab")
        .unwrap();
    let text = inittab.content.as_deref().unwrap();
    assert!(
        text.contains("::respawn:")
            && text.contains("::shutdown:")
            && text.contains("::sysinit:/etc/init.d/rcS")
    );
}

#[test]
fn user_definitions_override_and_extend() {
    let (_d, paths) = root_with(&[
        (
            "busybox.toml",
            "description = \"mine\"\nbootstrap = \"busybox\"\n",
        ),
        ("mine.toml", "base = \"busybox\"\nrun = [\"true\"]\n"),
    ]);
    let defs = Definitions::load(&paths).unwrap();
    assert_eq!(
        defs.get("busybox").unwrap().description.as_deref(),
        Some("mine")
    );
    assert!(defs.get("busybox").unwrap().files.is_empty());
    assert!(defs.names().contains(&"mine"));
}

fn single_error(files: &[(&str, &str)]) -> template::DefinitionError {
    let (_d, paths) = root_with(files);
    let errs = Definitions::load(&paths).expect_err("must fail");
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn unknown_field_is_reported_with_its_span() {
    let text = "bootstrap = \"busybox\"\ncolour = \"blue\"\n";
    let e = single_error(&[("x.toml", text)]);
    let span = e.span.clone().expect("span");
    assert!(text[span].contains("colour"), "{e:?}");
    assert!(e.message.contains("colour"));
    assert!(e.file.ends_with("x.toml"));
    assert_eq!(e.source_text, text);
}

#[test]
fn unknown_base_points_at_the_base_value() {
    let text = "description = \"d\"\nbase = \"no-such-template\"\n";
    let e = single_error(&[("x.toml", text)]);
    assert_eq!(&text[e.span.clone().unwrap()], "\"no-such-template\"");
    assert!(e.message.contains("unknown base"));
}

#[test]
fn base_cycles_and_bad_fields_are_rejected() {
    let (_d, paths) = root_with(&[("a.toml", "base = \"b\"\n"), ("b.toml", "base = \"a\"\n")]);
    let errs = Definitions::load(&paths).unwrap_err();
    assert!(errs.iter().any(|e| e.message.contains("cycle")), "{errs:?}");

    let text = "bootstrap = \"busybox\"\npackages = [\"vim\"]\n";
    let e = single_error(&[("x.toml", text)]);
    assert_eq!(&text[e.span.clone().unwrap()], "[\"vim\"]");

    let e = single_error(&[("x.toml", "bootstrap = \"mmdebstrap\"\n")]);
    assert!(e.message.contains("suite"));

    let e = single_error(&[(
        "x.toml",
        "bootstrap = \"busybox\"\n[[files]]\npath = \"/etc/../../x\"\ncontent = \"\"\n",
    )]);
    assert!(e.message.contains(".."), "{e:?}");

    let e = single_error(&[("Bad Name.toml", "bootstrap = \"busybox\"\n")]);
    assert!(e.message.contains("name"));
}

#[test]
fn host_mirror_from_deb822_and_one_line_sources() {
    let deb822 = "Types: deb\n# comment\nURIs: http://mirror.example.test/debian-security\nSuites: bookworm-security\n\n\
                  Types: deb-src\nURIs: http://src.example.test/debian\n\n\
                  Enabled: no\nTypes: deb\nURIs: http://disabled.example.test/debian\n\n\
                  Types: deb\nURIs: http://mirror.example.test/debian/\nSuites: bookworm\nComponents: main\n";
    assert_eq!(
        template::parse_deb822(deb822).as_deref(),
        Some("http://mirror.example.test/debian/")
    );
    let list = "# deb http://commented.example.test/debian bookworm main\n\
                deb [arch=amd64 signed-by=/k.gpg] https://packages.example.test/apt stable main\n\
                deb [ arch=amd64 ] http://one.example.test/debian bookworm main\n";
    assert_eq!(
        template::parse_one_line_style(list).as_deref(),
        Some("http://one.example.test/debian")
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sources.list.d")).unwrap();
    std::fs::write(
        dir.path().join("sources.list.d/other.list"),
        "deb http://x.example.test/ubuntu noble main\n",
    )
    .unwrap();
    assert_eq!(template::host_debian_mirror(dir.path()), None);
    std::fs::write(dir.path().join("sources.list.d/zz.sources"), deb822).unwrap();
    assert_eq!(
        template::host_debian_mirror(dir.path()).as_deref(),
        Some("http://mirror.example.test/debian/")
    );
}
