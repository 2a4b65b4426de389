//! Diagnostics for configuration files: one error type that knows its file,
//! its source text and the byte span of the offending value, rendered by
//! miette with a label at line:column and emitted as JSON for machines.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, SourceCode};
use serde::Serialize;

/// One problem in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConfigDiag {
    /// Stable code, e.g. `vsctl::config::unknown_key`.
    pub code: &'static str,
    pub message: String,
    pub file: PathBuf,
    /// The whole file's text (shared between the diagnostics of one file).
    pub text: Arc<String>,
    /// Byte range of the offending value; `None` for whole-file problems.
    pub span: Option<Range<usize>>,
    pub label: String,
    pub help: Option<String>,
    /// A second location, e.g. where a duplicate address was first used.
    pub related: Option<Box<ConfigDiag>>,
}

/// A stable, machine-readable view of a diagnostic (`vsctl validate --output json`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiagRecord {
    pub code: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
}

impl ConfigDiag {
    pub fn new(
        code: &'static str,
        file: &Path,
        text: &Arc<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigDiag {
        ConfigDiag {
            code,
            message: message.into(),
            file: file.to_path_buf(),
            text: Arc::clone(text),
            span,
            label: String::from("here"),
            help: None,
            related: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> ConfigDiag {
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> ConfigDiag {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, other: ConfigDiag) -> ConfigDiag {
        self.related = Some(Box::new(other));
        self
    }

    /// 1-based line and column of the start of the span (1:1 without a span).
    pub fn line_column(&self) -> (usize, usize) {
        let offset = self
            .span
            .as_ref()
            .map_or(0, |s| s.start)
            .min(self.text.len());
        line_column(&self.text, offset)
    }

    pub fn record(&self) -> DiagRecord {
        let (line, column) = self.line_column();
        DiagRecord {
            code: self.code.to_string(),
            file: self.file.display().to_string(),
            line,
            column,
            message: self.message.clone(),
            label: self.label.clone(),
            help: self.help.clone(),
        }
    }

    /// The miette report for this diagnostic (source attached, named by path).
    pub fn report(&self) -> miette::Report {
        miette::Report::new(self.clone())
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl Diagnostic for ConfigDiag {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(self)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span.clone().unwrap_or(0..0);
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(Some(self.label.clone()), span.start..span.end),
        )))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        self.related
            .as_ref()
            .map(|r| Box::new(std::iter::once(r.as_ref() as &dyn Diagnostic)) as Box<_>)
    }
}

/// The file's name travels with the source so miette prints `[file:line:col]`.
impl SourceCode for ConfigDiag {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let contents =
            self.text
                .as_str()
                .read_span(span, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.file.display().to_string(),
            contents.data(),
            *contents.span(),
            contents.line(),
            contents.column(),
            contents.line_count(),
        )))
    }
}

/// Levenshtein distance, for "did you mean" suggestions on unknown keys.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b_chars: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b_chars.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b_chars.len() + 1];
        for (j, cb) in b_chars.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b_chars.len()]
}

/// The closest candidate to `word`, if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Split serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown
/// variant ...") into the unknown name and the names it expected.
fn unknown_name<'m>(message: &'m str, prefix: &str) -> Option<(&'m str, Vec<&'m str>)> {
    let rest = message.strip_prefix(prefix)?;
    let unknown = rest.split('`').next().unwrap_or_default();
    let expected = rest
        .split_once("expected ")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    Some((unknown, expected))
}

/// Turn a toml/serde error into a diagnostic, recognising serde's
/// "unknown field `x`, expected one of `a`, `b`" to add a suggestion.
pub fn from_toml_error(file: &Path, text: &Arc<String>, error: &toml::de::Error) -> ConfigDiag {
    let message = error.message().trim().to_string();
    let span = error.span();
    if let Some((unknown, expected)) = unknown_name(&message, "unknown field `") {
        let mut diag = ConfigDiag::new(
            "vsctl::config::unknown_key",
            file,
            text,
            span,
            format!("unknown key `{unknown}`"),
        )
        .label("not a known key here");
        diag.help = Some(match suggest(unknown, expected.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None if !expected.is_empty() => format!("known keys here: {}", expected.join(", ")),
            None => String::from("this table takes no keys"),
        });
        return diag;
    }
    if let Some((unknown, expected)) = unknown_name(&message, "unknown variant `") {
        let mut diag = ConfigDiag::new(
            "vsctl::config::bad_value",
            file,
            text,
            span,
            format!("unknown value `{unknown}`"),
        )
        .label("not one of the allowed values");
        diag.help = Some(match suggest(unknown, expected.iter().copied()) {
            Some(close) => format!("did you mean `{close}`? allowed: {}", expected.join(", ")),
            None => format!("allowed: {}", expected.join(", ")),
        });
        return diag;
    }
    // toml's own wording for a value of the wrong kind where an enum string goes.
    let message = if message.starts_with("wanted string or table") {
        String::from("invalid type: expected a string")
    } else {
        message
    };
    let code = if message.starts_with("invalid type") || message.starts_with("missing field") {
        "vsctl::config::bad_type"
    } else if span.is_some() && (message.starts_with("invalid") || message.starts_with("expected"))
    {
        "vsctl::config::bad_value"
    } else {
        "vsctl::config::syntax"
    };
    let label = match code {
        "vsctl::config::bad_type" => "wrong type",
        "vsctl::config::bad_value" => "invalid value",
        _ => "here",
    };
    let message = message.lines().next().unwrap_or_default().to_string();
    ConfigDiag::new(code, file, text, span, message).label(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        let offset = text.find('=').unwrap();
        assert_eq!(line_column(text, offset), (1, 3));
        let offset = text.find('"').unwrap();
        assert_eq!(line_column(text, offset), (2, 6));
    }

    #[test]
    fn suggestions_pick_close_keys_only() {
        assert_eq!(
            suggest("memroy", ["memory", "pids", "cpus"]),
            Some("memory")
        );
        assert_eq!(suggest("cpu", ["memory", "pids", "cpus"]), Some("cpus"));
        assert_eq!(suggest("zzzzzz", ["memory", "pids", "cpus"]), None);
    }
}
