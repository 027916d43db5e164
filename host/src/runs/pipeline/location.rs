//! Where a field is: its path as errors print it (`steps[2].on_failure.send_back_to`),
//! and, for TOML, its line.

use super::PipelineError;
use serde_path_to_error::Segment;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Line numbers of a TOML document's fields, by field path.
pub(super) type Lines = HashMap<String, usize>;

/// The file a pipeline came from and the lines of its fields. Errors made through it,
/// during validation or long after (loading plugins, checking grants), say where the
/// field was written.
#[derive(Clone, Default)]
pub(super) struct Origin {
    pub(super) file: Option<PathBuf>,
    lines: Arc<Lines>,
}

/// The file only: a pipeline's `Debug` output need not list a line per field.
impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Where a pipeline was written does not make it a different pipeline: a TOML file and
/// its JSON form are equal.
impl PartialEq for Origin {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Origin {
    pub(super) fn new(lines: Lines) -> Self {
        Origin {
            file: None,
            lines: Arc::new(lines),
        }
    }

    /// An error about `field`, with the field's line (or its nearest enclosing field's).
    pub(super) fn error(
        &self,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> PipelineError {
        let field = field.into();
        PipelineError {
            file: self.file.clone(),
            line: self.line(&field),
            field: Some(field),
            message: message.into(),
        }
    }

    /// The line of `field`, or of its nearest enclosing field that has one.
    fn line(&self, field: &str) -> Option<usize> {
        let mut path = field;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = path.get(..cut)?;
        }
    }
}

/// `parent.key`, quoting keys that are not plain identifiers.
pub(super) fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// A path from `serde_path_to_error` in the same notation as [`child_path`]
/// (empty for the document itself).
pub(super) fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => out = child_path(&out, key),
            Segment::Enum { variant } => out = child_path(&out, variant),
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// Byte offset -> 1-based line.
pub(super) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(super) fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i.saturating_add(1)))
            .collect();
        LineIndex { starts }
    }

    pub(super) fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fall_back_to_the_enclosing_field() {
        let lines = Lines::from([("steps".into(), 3), ("steps[1]".into(), 7)]);
        let origin = Origin::new(lines);
        assert_eq!(origin.line("steps[1].on_failure.max_loops"), Some(7));
        assert_eq!(origin.line("steps[0].name"), Some(3));
        assert_eq!(origin.line("name"), None);
        let e = origin.error("steps[1].plugin", "bad");
        assert_eq!(e.to_string(), "line 7: steps[1].plugin: bad");
    }

    #[test]
    fn odd_keys_are_quoted() {
        assert_eq!(child_path("", "name"), "name");
        assert_eq!(child_path("tools", "a b"), "tools.\"a b\"");
        assert_eq!(child_path("steps[0]", "x.y"), "steps[0].\"x.y\"");
    }

    #[test]
    fn byte_offsets_map_to_lines() {
        let index = LineIndex::new("a\nbb\n\nc");
        let lines: Vec<usize> = [0, 1, 2, 4, 5, 6, 99].map(|o| index.line(o)).into();
        assert_eq!(lines, [1, 1, 2, 2, 3, 4, 4]);
    }
}
