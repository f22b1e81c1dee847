//! Diagnostics for bad input: what went wrong, where (file:line:col with the
//! offending text underlined), and a hint.
//!
//! Owns the [`PlanError`] type that every input check returns (exit code 2).
//! Spans are byte ranges into the plan's source text, as `toml::Spanned`
//! records them; rendering is delegated to `codespan-reporting`, without
//! colour, so messages are stable enough to pin in snapshots and readable
//! in a CI log.

use codespan_reporting::diagnostic::{Diagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, Config};
use std::fmt;
use std::ops::Range;

/// One problem in the input.
#[derive(Debug, Clone)]
pub struct Diag {
    pub message: String,
    /// Where, with a short label under the text.
    pub primary: Option<(Range<usize>, String)>,
    /// Other places that explain the problem.
    pub secondary: Vec<(Range<usize>, String)>,
    pub hint: Option<String>,
}

impl Diag {
    pub fn new(message: impl Into<String>) -> Diag {
        Diag {
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            hint: None,
        }
    }

    pub fn at(mut self, span: Range<usize>, label: impl Into<String>) -> Diag {
        self.primary = Some((span, label.into()));
        self
    }

    pub fn also(mut self, span: Range<usize>, label: impl Into<String>) -> Diag {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diag {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem found in one input file.
#[derive(Debug, Clone)]
pub struct PlanError {
    /// The file as the user named it.
    pub file: String,
    pub source: String,
    pub diags: Vec<Diag>,
}

impl PlanError {
    pub fn one(file: &str, source: &str, diag: Diag) -> PlanError {
        PlanError {
            file: file.to_string(),
            source: source.to_string(),
            diags: vec![diag],
        }
    }

    /// `file:line:col` of a byte offset (1-based line and column, columns in
    /// characters).
    pub fn location(&self, offset: usize) -> String {
        let (line, col) = line_col(&self.source, offset);
        format!("{}:{line}:{col}", self.file)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = SimpleFile::new(self.file.as_str(), self.source.as_str());
        let config = Config::default();
        let mut out = String::new();
        for d in &self.diags {
            let mut labels = Vec::new();
            if let Some((span, label)) = &d.primary {
                labels.push(Label::primary((), clamp(span, &self.source)).with_message(label));
            }
            for (span, label) in &d.secondary {
                labels.push(Label::secondary((), clamp(span, &self.source)).with_message(label));
            }
            let mut diag = Diagnostic::error()
                .with_message(&d.message)
                .with_labels(labels);
            if let Some(h) = &d.hint {
                diag = diag.with_notes(vec![format!("hint: {h}")]);
            }
            if d.primary.is_none() {
                out.push_str(&format!("{}: ", self.file));
            }
            term::emit_to_string(&mut out, &config, &file, &diag).map_err(|_| fmt::Error)?;
        }
        f.write_str(out.trim_end())
    }
}

fn clamp(span: &Range<usize>, source: &str) -> Range<usize> {
    let end = span.end.min(source.len());
    span.start.min(end)..end
}

impl std::error::Error for PlanError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 10), (2, 4));
    }

    #[test]
    fn renders_location_and_hint() {
        let e = PlanError::one(
            "plan.toml",
            "[mesh]\nmode = \"x\"\n",
            Diag::new("bad mode").at(14..17, "here").hint("use sidecar"),
        );
        let s = e.to_string();
        assert!(s.contains("plan.toml:2:8"), "{s}");
        assert!(s.contains("hint: use sidecar"), "{s}");
    }
}
