//! The CSV reader: the first byte picks the options (header or not, label first or last,
//! one skipped line, missing cells filled), the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelforge_spec::data::{CsvOptions, LabelColumn, Missing};

fuzz_target!(|data: &[u8]| {
    let Some((&options, text)) = data.split_first() else {
        return;
    };
    let options = CsvOptions {
        header: options & 1 != 0,
        skip_rows: usize::from(options >> 1 & 1),
        label: LabelColumn::Index(if options & 4 != 0 { 0 } else { -1 }),
        categorical: if options & 8 != 0 {
            vec!["colour".into()]
        } else {
            Vec::new()
        },
        missing: if options & 16 != 0 {
            Missing::Mean
        } else {
            Missing::default()
        },
    };
    let path = modelforge_fuzz::scratch_file("input.csv", text);
    let _ = modelforge_data::table::read_csv(&path, &options);
});
