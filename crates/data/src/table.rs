//! CSV files: numeric and categorical feature columns plus one label column.

use std::collections::BTreeSet;
use std::path::Path;

use modelforge_spec::data::{CsvOptions, LabelColumn, Missing};

use crate::{DataError, read_maybe_gz};

/// A CSV file read into feature rows and raw label strings.
#[derive(Debug, Clone)]
pub struct Table {
    /// Names of the feature columns after one-hot expansion.
    pub feature_names: Vec<String>,
    /// Row-major features.
    pub features: Vec<f32>,
    /// The label cell of each row, as text.
    pub labels: Vec<String>,
    /// File line number of each row (1-based), for error messages.
    pub lines: Vec<usize>,
}

impl Table {
    /// Number of feature columns.
    pub fn width(&self) -> usize {
        self.feature_names.len()
    }
}

/// Reads a CSV file as the options say.
pub fn read_csv(path: &Path, options: &CsvOptions) -> Result<Table, DataError> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| DataError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ),
    })?;
    let csv_err = |line: usize, message: String| DataError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_err(i + 1, e.to_string()))?;
        let line = record.position().map_or(i + 1, |p| p.line() as usize);
        if line <= options.skip_rows {
            continue;
        }
        records.push((line, record));
    }
    let header: Vec<String> = if options.header {
        if records.is_empty() {
            return Err(csv_err(
                options.skip_rows + 1,
                "no header line: the file is empty".into(),
            ));
        }
        let (_, h) = records.remove(0);
        h.iter().map(|s| s.trim().to_string()).collect()
    } else {
        let width = records.first().map_or(0, |(_, r)| r.len());
        (0..width).map(|i| format!("c{i}")).collect()
    };
    if records.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let width = header.len();
    let label_index = match &options.label {
        LabelColumn::Name(name) => header.iter().position(|h| h == name).ok_or_else(|| {
            csv_err(
                options.skip_rows + 1,
                format!(
                    "no column named {name:?}; the columns are {}",
                    header.join(", ")
                ),
            )
        })?,
        LabelColumn::Index(i) => {
            let idx = if *i < 0 { width as i64 + i } else { *i };
            if idx < 0 || idx >= width as i64 {
                return Err(csv_err(
                    options.skip_rows + 1,
                    format!("label column {i} is outside the {width} columns"),
                ));
            }
            idx as usize
        }
    };
    for name in &options.categorical {
        if !header.contains(name) {
            return Err(csv_err(
                options.skip_rows + 1,
                format!(
                    "categorical column {name:?} is not in the header ({})",
                    header.join(", ")
                ),
            ));
        }
    }
    let categorical: Vec<bool> = header
        .iter()
        .map(|h| options.categorical.contains(h))
        .collect();
    for (line, record) in &records {
        if record.len() != width {
            return Err(csv_err(
                *line,
                format!(
                    "the row has {} fields but the header has {width}",
                    record.len()
                ),
            ));
        }
    }
    // Categories per categorical column, in sorted order, from the whole file.
    let categories: Vec<Vec<String>> = (0..width)
        .map(|c| {
            if categorical[c] {
                let set: BTreeSet<String> = records
                    .iter()
                    .map(|(_, r)| r[c].trim().to_string())
                    .collect();
                set.into_iter().collect()
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut feature_names = Vec::new();
    for c in (0..width).filter(|&c| c != label_index) {
        if categorical[c] {
            feature_names.extend(categories[c].iter().map(|v| format!("{}={v}", header[c])));
        } else {
            feature_names.push(header[c].clone());
        }
    }
    let mut features = Vec::with_capacity(records.len() * feature_names.len());
    let mut labels = Vec::with_capacity(records.len());
    let mut lines = Vec::with_capacity(records.len());
    let mut holes: Vec<(usize, usize)> = Vec::new();
    'rows: for (line, record) in &records {
        let start = features.len();
        for c in (0..width).filter(|&c| c != label_index) {
            let cell = record[c].trim();
            if categorical[c] {
                features.extend(
                    categories[c]
                        .iter()
                        .map(|v| if v == cell { 1.0 } else { 0.0 }),
                );
                continue;
            }
            if cell.is_empty() {
                match options.missing {
                    Missing::Error => {
                        return Err(csv_err(
                            *line,
                            format!(
                                "column {:?} is empty — fill it, or set data.csv.missing = \"drop\", \"mean\" or \"zero\"",
                                header[c]
                            ),
                        ));
                    }
                    Missing::Drop => {
                        features.truncate(start);
                        continue 'rows;
                    }
                    Missing::Zero => features.push(0.0),
                    Missing::Mean => {
                        holes.push((
                            features.len(),
                            feature_names
                                .iter()
                                .position(|n| *n == header[c])
                                .expect("numeric column named"),
                        ));
                        features.push(0.0);
                    }
                }
                continue;
            }
            let value: f32 = cell.parse().map_err(|_| {
                csv_err(
                    *line,
                    format!(
                        "column {:?} holds {cell:?}, which is not a number — list the column in data.csv.categorical if it holds categories",
                        header[c]
                    ),
                )
            })?;
            if !value.is_finite() {
                return Err(csv_err(
                    *line,
                    format!(
                        "column {:?} holds {cell}, which is not a finite number",
                        header[c]
                    ),
                ));
            }
            features.push(value);
        }
        let label = record[label_index].trim();
        if label.is_empty() {
            return Err(csv_err(
                *line,
                format!("the label column {:?} is empty", header[label_index]),
            ));
        }
        labels.push(label.to_string());
        lines.push(*line);
    }
    if labels.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    fill_means(&mut features, feature_names.len(), &holes);
    Ok(Table {
        feature_names,
        features,
        labels,
        lines,
    })
}

/// Replaces the listed holes with the mean of the other values of their column.
fn fill_means(features: &mut [f32], width: usize, holes: &[(usize, usize)]) {
    if holes.is_empty() {
        return;
    }
    let mut sums = vec![0f64; width];
    let mut counts = vec![0usize; width];
    let is_hole: BTreeSet<usize> = holes.iter().map(|h| h.0).collect();
    for (i, v) in features.iter().enumerate() {
        if !is_hole.contains(&i) {
            sums[i % width] += *v as f64;
            counts[i % width] += 1;
        }
    }
    for &(at, column) in holes {
        features[at] = if counts[column] > 0 {
            (sums[column] / counts[column] as f64) as f32
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn reads_numeric_categorical_and_label_by_name() {
        let f = write("a,color,y\n1,red,0\n2,blue,1\n");
        let opts = CsvOptions {
            label: LabelColumn::Name("y".into()),
            categorical: vec!["color".into()],
            ..CsvOptions::default()
        };
        let t = read_csv(f.path(), &opts).unwrap();
        assert_eq!(t.feature_names, vec!["a", "color=blue", "color=red"]);
        assert_eq!(t.features, vec![1.0, 0.0, 1.0, 2.0, 1.0, 0.0]);
        assert_eq!(t.labels, vec!["0", "1"]);
    }

    #[test]
    fn missing_values_error_or_fill() {
        let f = write("a,b,y\n1,,0\n3,4,1\n");
        let err = read_csv(f.path(), &CsvOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2:") && err.contains("\"b\" is empty"),
            "{err}"
        );
        let mean = CsvOptions {
            missing: Missing::Mean,
            ..CsvOptions::default()
        };
        assert_eq!(
            read_csv(f.path(), &mean).unwrap().features,
            vec![1.0, 4.0, 3.0, 4.0]
        );
        let drop = CsvOptions {
            missing: Missing::Drop,
            ..CsvOptions::default()
        };
        assert_eq!(read_csv(f.path(), &drop).unwrap().labels, vec!["1"]);
    }

    #[test]
    fn ragged_rows_and_nan_are_errors() {
        let f = write("a,y\n1,0\n2\n");
        assert!(
            read_csv(f.path(), &CsvOptions::default())
                .unwrap_err()
                .to_string()
                .contains(":3:")
        );
        let f = write("a,y\nNaN,0\n");
        assert!(
            read_csv(f.path(), &CsvOptions::default())
                .unwrap_err()
                .to_string()
                .contains("not a finite number")
        );
    }
}
