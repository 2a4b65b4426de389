//! Template definitions: the TOML files in `templates/` (embedded in the
//! binary) and in `paths.templates_dir` (the administrator's, which override
//! embedded ones of the same name). The format is documented in
//! `man/vsctl-template.toml.5`.

use crate::paths::Paths;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The definitions shipped with vsctl, compiled in so that `busybox` works
/// with nothing installed.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("busybox", include_str!("../../templates/busybox.toml")),
    (
        "debian-bookworm",
        include_str!("../../templates/debian-bookworm.toml"),
    ),
    (
        "debian-trixie",
        include_str!("../../templates/debian-trixie.toml"),
    ),
    (
        "debian-bookworm-web",
        include_str!("../../templates/debian-bookworm-web.toml"),
    ),
    (
        "debian-bookworm-python",
        include_str!("../../templates/debian-bookworm-python.toml"),
    ),
    (
        "ubuntu-noble",
        include_str!("../../templates/ubuntu-noble.toml"),
    ),
];

/// A definition file that could not be used, with a byte span into its text
/// for a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    /// The file (for embedded definitions: `<embedded>/NAME.toml`).
    pub file: PathBuf,
    /// The whole text of the file.
    pub source_text: String,
    /// Where in `source_text` the problem is.
    pub span: Option<Range<usize>>,
    /// Lower-case message.
    pub message: String,
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for DefinitionError {}

/// How the tree is first populated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bootstrap {
    /// Static busybox from the host, no network.
    Busybox,
    /// `mmdebstrap` from a Debian-style mirror.
    Mmdebstrap,
    /// A local directory or tarball.
    Import,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDef {
    description: Option<String>,
    bootstrap: Option<Spanned<Bootstrap>>,
    base: Option<Spanned<String>>,
    suite: Option<String>,
    variant: Option<String>,
    #[serde(default)]
    components: Vec<String>,
    packages: Option<Spanned<Vec<String>>>,
    mirror: Option<String>,
    keyring: Option<String>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<RawFile>>,
    #[serde(default)]
    run: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    content: Option<String>,
    source: Option<String>,
    #[serde(default = "default_mode")]
    mode: u32,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

fn default_mode() -> u32 {
    0o644
}

/// Where a tree's first content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Static busybox plus the definition's files.
    Busybox,
    /// mmdebstrap.
    Mmdebstrap {
        /// Suite (codename), e.g. `bookworm`.
        suite: String,
        /// mmdebstrap variant, default `minbase`.
        variant: String,
        /// Archive components, default `["main"]`.
        components: Vec<String>,
        /// A mirror fixed by the definition (else host setting / host apt sources).
        mirror: Option<String>,
        /// A keyring file for mirrors the host does not trust by default.
        keyring: Option<PathBuf>,
    },
    /// A directory or tarball on the host.
    Import {
        /// Absolute, or relative to the definition file's directory.
        path: PathBuf,
    },
    /// A copy of another template.
    Base {
        /// The base template's name.
        name: String,
    },
}

/// A file the definition puts into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSpec {
    /// Absolute path inside the tree.
    pub path: String,
    /// Literal content, or the content of `source` (read at build time).
    pub content: Option<String>,
    /// Host file, relative to the definition file's directory.
    pub source: Option<PathBuf>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// A validated template definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateDef {
    /// Name (the file stem).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The file it came from (`<embedded>/NAME.toml` for built-ins).
    #[serde(skip)]
    pub file: PathBuf,
    /// How the tree starts.
    pub source: Source,
    /// Packages to install (mmdebstrap `--include`, or apt in a derived tree).
    pub packages: Vec<String>,
    /// Files written after bootstrap.
    pub files: Vec<FileSpec>,
    /// Shell commands run inside the tree, in order, after packages and files.
    pub run: Vec<String>,
}

/// All known definitions, by name.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    defs: BTreeMap<String, TemplateDef>,
}

/// Template names: lower-case letters, digits, `-`, `_`, `.`; not starting
/// with `.` or `-`, so they are safe as directory names next to staging dirs.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && !name.ends_with(".building")
        && !name.ends_with(".removing")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

struct Parsed {
    def: TemplateDef,
    base_span: Option<Range<usize>>,
    text: String,
}

fn parse_one(
    name: &str,
    file: &Path,
    text: &str,
    embedded: bool,
) -> Result<Parsed, DefinitionError> {
    let err = |span: Option<Range<usize>>, message: String| DefinitionError {
        file: file.to_path_buf(),
        source_text: text.to_string(),
        span,
        message,
    };
    if !valid_name(name) {
        return Err(err(
            None,
            format!("template name {name:?} must be lower-case letters, digits, '-', '_' or '.'"),
        ));
    }
    let raw: RawDef = toml::from_str(text).map_err(|e| err(e.span(), e.message().to_string()))?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    let source = match (&raw.bootstrap, &raw.base) {
        (Some(_), Some(base)) => {
            return Err(err(
                Some(base.span()),
                "a template has either `bootstrap` or `base`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(err(
                None,
                "a template needs `bootstrap = \"...\"` or `base = \"NAME\"`".into(),
            ));
        }
        (None, Some(base)) => Source::Base {
            name: base.get_ref().clone(),
        },
        (Some(b), None) => match b.get_ref() {
            Bootstrap::Busybox => Source::Busybox,
            Bootstrap::Mmdebstrap => Source::Mmdebstrap {
                suite: raw
                    .suite
                    .clone()
                    .ok_or_else(|| err(Some(b.span()), "mmdebstrap needs `suite`".into()))?,
                variant: raw.variant.clone().unwrap_or_else(|| "minbase".into()),
                components: if raw.components.is_empty() {
                    vec!["main".into()]
                } else {
                    raw.components.clone()
                },
                mirror: raw.mirror.clone(),
                keyring: raw.keyring.as_ref().map(|k| dir.join(k)),
            },
            Bootstrap::Import => {
                let p = raw
                    .path
                    .as_ref()
                    .ok_or_else(|| err(Some(b.span()), "import needs `path`".into()))?;
                if embedded && !Path::new(p.get_ref()).is_absolute() {
                    return Err(err(
                        Some(p.span()),
                        "embedded definitions need an absolute import path".into(),
                    ));
                }
                Source::Import {
                    path: dir.join(p.get_ref()),
                }
            }
        },
    };
    let mmdebstrap = matches!(source, Source::Mmdebstrap { .. });
    if !mmdebstrap {
        for (field, set) in [
            ("suite", raw.suite.is_some()),
            ("variant", raw.variant.is_some()),
            ("components", !raw.components.is_empty()),
            ("mirror", raw.mirror.is_some()),
            ("keyring", raw.keyring.is_some()),
        ] {
            if set {
                return Err(err(
                    None,
                    format!("`{field}` only applies to `bootstrap = \"mmdebstrap\"`"),
                ));
            }
        }
    }
    if !matches!(source, Source::Import { .. })
        && let Some(p) = &raw.path
    {
        return Err(err(
            Some(p.span()),
            "`path` only applies to `bootstrap = \"import\"`".into(),
        ));
    }
    let packages_span = raw.packages.as_ref().map(|p| p.span());
    let packages: Vec<String> = raw
        .packages
        .clone()
        .map(Spanned::into_inner)
        .unwrap_or_default();
    if !packages.is_empty() && matches!(source, Source::Busybox | Source::Import { .. }) {
        return Err(err(
            packages_span.clone(),
            "`packages` needs an apt-based tree (mmdebstrap or a base that is one)".into(),
        ));
    }
    for p in &packages {
        if p.is_empty()
            || p.starts_with('-')
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.:_=~".contains(&b))
        {
            return Err(err(
                packages_span.clone(),
                format!("{p:?} is not a valid package name"),
            ));
        }
    }
    let mut files = Vec::new();
    for f in &raw.files {
        let span = f.span();
        let f = f.get_ref();
        if !f.path.starts_with('/')
            || super::safe::components(&f.path[1..])
                .map(|c| c.is_empty())
                .unwrap_or(true)
        {
            return Err(err(
                Some(span),
                format!(
                    "file path {:?} must be absolute and must not contain '..'",
                    f.path
                ),
            ));
        }
        match (&f.content, &f.source) {
            (Some(_), None) => {}
            (None, Some(_)) if embedded => {
                return Err(err(
                    Some(span),
                    "embedded definitions can only use inline `content`".into(),
                ));
            }
            (None, Some(_)) => {}
            _ => {
                return Err(err(
                    Some(span),
                    "a file needs exactly one of `content` or `source`".into(),
                ));
            }
        }
        if f.mode > 0o7777 {
            return Err(err(
                Some(span),
                format!(
                    "mode {:o} is not a permission mode (write it as 0o644)",
                    f.mode
                ),
            ));
        }
        files.push(FileSpec {
            path: f.path.clone(),
            content: f.content.clone(),
            source: f.source.as_ref().map(|s| dir.join(s)),
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
        });
    }
    Ok(Parsed {
        base_span: raw.base.as_ref().map(|b| b.span()),
        text: text.to_string(),
        def: TemplateDef {
            name: name.to_string(),
            description: raw.description,
            file: file.to_path_buf(),
            source,
            packages,
            files,
            run: raw.run,
        },
    })
}

impl Definitions {
    /// Load the embedded definitions, then every `*.toml` of
    /// `paths.templates_dir` (same name overrides). All errors are collected.
    pub fn load(paths: &Paths) -> Result<Definitions, Vec<DefinitionError>> {
        let mut parsed: BTreeMap<String, Parsed> = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, text) in EMBEDDED {
            let file = PathBuf::from(format!("<embedded>/{name}.toml"));
            match parse_one(name, &file, text, true) {
                Ok(p) => {
                    parsed.insert(name.to_string(), p);
                }
                Err(e) => errors.push(e),
            }
        }
        let mut user_files = Vec::new();
        match std::fs::read_dir(&paths.templates_dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "toml") {
                        user_files.push(p);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(DefinitionError {
                file: paths.templates_dir.clone(),
                source_text: String::new(),
                span: None,
                message: format!("reading template directory: {e}"),
            }),
        }
        user_files.sort();
        for p in user_files {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            let text = match std::fs::read_to_string(&p) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(DefinitionError {
                        file: p.clone(),
                        source_text: String::new(),
                        span: None,
                        message: format!("reading definition: {e}"),
                    });
                    continue;
                }
            };
            match parse_one(&name, &p, &text, false) {
                Ok(d) => {
                    parsed.insert(name, d);
                }
                Err(e) => errors.push(e),
            }
        }
        // Cross-definition checks: each definition's own base exists (the
        // error points at its `base` value), and base chains have no cycle.
        for p in parsed.values() {
            let Source::Base { name: base } = &p.def.source else {
                continue;
            };
            if !parsed.contains_key(base) {
                errors.push(DefinitionError {
                    file: p.def.file.clone(),
                    source_text: p.text.clone(),
                    span: p.base_span.clone(),
                    message: format!("unknown base template {base:?}"),
                });
                continue;
            }
            let mut seen = vec![p.def.name.as_str()];
            let mut cur = base;
            while let Some(next) = parsed.get(cur) {
                if seen.contains(&cur.as_str()) {
                    errors.push(DefinitionError {
                        file: p.def.file.clone(),
                        source_text: p.text.clone(),
                        span: p.base_span.clone(),
                        message: format!(
                            "base templates form a cycle: {} -> {cur}",
                            seen.join(" -> ")
                        ),
                    });
                    break;
                }
                seen.push(cur);
                let Source::Base { name } = &next.def.source else {
                    break;
                };
                cur = name;
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Definitions {
            defs: parsed.into_iter().map(|(k, v)| (k, v.def)).collect(),
        })
    }

    /// One definition.
    pub fn get(&self, name: &str) -> Option<&TemplateDef> {
        self.defs.get(name)
    }

    /// All names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.defs.keys().map(String::as_str).collect()
    }

    /// Whether `name` ultimately bootstraps with apt (mmdebstrap, or a base
    /// chain ending in one).
    pub fn is_apt_based(&self, name: &str) -> bool {
        let mut cur = self.get(name);
        let mut depth = 0;
        while let Some(d) = cur {
            match &d.source {
                Source::Mmdebstrap { .. } => return true,
                Source::Base { name } if depth < 32 => {
                    cur = self.get(name);
                    depth += 1;
                }
                _ => return false,
            }
        }
        false
    }
}
