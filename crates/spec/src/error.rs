//! The one error type of the spec crate.

use std::path::PathBuf;

/// Everything that can be wrong with a spec file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read from disk.
    #[error("{}: cannot read the spec file: {source} — check the path", path.display())]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// The file holds bytes that are not UTF-8 text.
    #[error(
        "{}: the file is not UTF-8 text (invalid byte at offset {offset}) — save it as UTF-8",
        path.display()
    )]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The TOML syntax, a key or the type of a value is wrong.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The values parse but do not fit together (range, shapes, missing pieces).
    #[error("{}:{line}:{column}: {message} — {fix}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// A request setting (an explanation's method, steps, …) is unknown or out of range.
    #[error("{field}: {message} — {fix}")]
    Setting {
        /// The setting.
        field: String,
        /// What is wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
}

/// Line and column (both 1-based) of a byte offset in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn offsets_map_to_lines_and_columns() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 4));
        assert_eq!(line_column(text, 1000), (3, 1));
    }
}
