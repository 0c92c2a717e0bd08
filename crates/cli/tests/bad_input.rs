//! Malformed specs, data, registries and requests: each gives one clear error
//! line, exit code 2, no panic, and leaves no run folder or registry version behind.

use crate::common::{Sandbox, csv_spec};

/// A clean CSV: 40 rows, 4 features, 2 classes.
fn good_csv() -> String {
    (0..40)
        .map(|i| {
            let c = i % 2;
            let v = |k: i32| (i * 7 + k * 3) % 11 + c * 10;
            format!("{},{},{},{},{c}\n", v(1), v(2), v(3), v(4))
        })
        .collect()
}

fn spec() -> String {
    csv_spec("data.csv", 4, 2, "")
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_u8(dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(values);
    out
}

fn idx_spec(images: &str, labels: &str) -> String {
    format!(
        r#"[model]
name = "idx"
input = {{ shape = [1, 2, 2] }}
output = {{ task = "classification", classes = 2 }}
layers = [{{ flatten = {{}} }}, {{ dense = {{ units = 2 }} }}]
[data]
format = "idx"
train = {{ images = "{images}", labels = "{labels}" }}
[train]
epochs = 1
batch_size = 2
optimizer = {{ kind = "sgd", lr = 0.1 }}
"#
    )
}

struct Case {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    args: Vec<&'static str>,
    expect: &'static str,
}

fn case(
    name: &'static str,
    spec_text: String,
    args: &[&'static str],
    expect: &'static str,
) -> Case {
    Case {
        name,
        files: vec![
            ("spec.toml", spec_text.into_bytes()),
            ("data.csv", good_csv().into_bytes()),
        ],
        args: args.to_vec(),
        expect,
    }
}

const TRAIN: &[&str] = &["train", "spec.toml", "--threads", "1"];
const CHECK: &[&str] = &["check", "spec.toml"];

fn cases() -> Vec<Case> {
    let s = spec();
    let mut v = vec![
        case("unknown layer", s.replace("{ relu = {} }", "{ rellu = {} }"), CHECK, "unknown variant `rellu`"),
        case("wrong type", s.replace("units = 16", "units = \"sixteen\""), CHECK, "spec.toml:6:"),
        case("negative size", s.replace("units = 16", "units = -16"), CHECK, "invalid value: integer `-16`"),
        case("zero size", s.replace("units = 16", "units = 0"), CHECK, "layer 1 (dense): `units` is 0"),
        // Refused with the memory it would take, at the layer, before anything is allocated.
        case("absurd width", s.replace("units = 16", "units = 100000000000"), TRAIN, "spec.toml:6:3: training this model needs"),
        case("absurd width, checked", s.replace("units = 16", "units = 100000000000"), CHECK, "more than this machine's"),
        case("absurd input", s.replace("shape = [4]", "shape = [4000000000000000000, 4000000000000000000]").replace("{ dense = { units = 16 } },", "{ flatten = {} }, { dense = { units = 16 } },"), CHECK, "holds more values than any machine can address"),
        case("absurd batch", s.replace("batch_size = 16", "batch_size = 100000000000000"), TRAIN, "activations"),
        case(
            "shape mismatch",
            s.replace("shape = [4]", "shape = [1, 2, 2]"),
            CHECK,
            "but dense needs rank 1 (or 2 for sequences) — add `{ flatten = {} }` before it",
        ),
        case(
            "conv on a vector",
            s.replace("{ dense = { units = 16 } },", "{ conv2d = { filters = 2, kernel = 3 } }, { flatten = {} }, { dense = { units = 16 } },"),
            CHECK,
            "conv2d needs [channels, height, width]",
        ),
        case("dropout rate", s.replace("{ relu = {} },", "{ relu = {} }, { dropout = { rate = 1.5 } },"), CHECK, "`rate` is 1.5"),
        case("classes mismatch", s.replace("classes = 2", "classes = 3"), CHECK, "the last layer gives [2] but the output has 3 classes"),
        case("unknown optimiser key", s.replace("lr = 0.01", "lr = 0.01, beta3 = 0.9"), CHECK, "unknown field `beta3`"),
        case("unknown optimiser", s.replace("kind = \"adam\"", "kind = \"adagrad\""), CHECK, "unknown variant `adagrad`"),
        case("negative learning rate", s.replace("lr = 0.01", "lr = -0.01"), CHECK, "learning rate -0.01 is not positive"),
        case("zero epochs", s.replace("epochs = 5", "epochs = 0"), CHECK, "epochs is 0"),
        case("misspelt section", s.replace("[train]", "[trian]"), CHECK, "unknown field `trian`"),
        case("missing section", s[..s.find("[train]").unwrap()].to_string(), CHECK, "missing field `train`"),
        case("toml syntax", s.replace("layers = [", "layers = [[ "), CHECK, "spec.toml:11:1: missing comma between array elements"),
        case("empty file", String::new(), CHECK, "the spec file is empty"),
        case("fractions leave nothing", s.replace("test_fraction = 0.25", "test_fraction = 0.5\nvalidation = 0.6"), CHECK, "leave no training examples"),
        case(
            "unknown early-stopping metric",
            csv_spec("data.csv", 4, 2, "early_stopping = { metric = \"val_f1\", patience = 2 }"),
            CHECK,
            "unknown metric \"val_f1\"",
        ),
        case(
            "embedding on floats",
            s.replace("{ dense = { units = 16 } },", "{ embedding = { vocab = 10, dim = 4 } }, { flatten = {} }, { dense = { units = 16 } },"),
            CHECK,
            "embedding needs integer ids",
        ),
        case("missing csv file", s.replace("data.csv", "nope.csv"), TRAIN, "nope.csv does not exist"),
        case("label column by unknown name", s.replace("label = -1", "label = \"species\"").replace("header = false", "header = true"), TRAIN, "no column named \"species\""),
        case("early stopping without validation", csv_spec("data.csv", 4, 2, "early_stopping = { metric = \"val_loss\", patience = 2 }"), TRAIN, "there is no validation split"),
        case("resume of an unknown run", s.clone(), &["train", "spec.toml", "--threads", "1", "--resume", "nope"], "no run \"nope\""),
        case("graph format", s.clone(), &["check", "spec.toml", "--graph", "g.png"], "give a file ending in .svg or .dot"),
        case("zero workers in the spec", csv_spec("data.csv", 4, 2, "workers = 0"), CHECK, "workers is 0 — use 1 or more workers"),
        case(
            "negative bucket",
            csv_spec("data.csv", 4, 2, "distributed = { bucket_mb = -1 }"),
            CHECK,
            "distributed.bucket_mb is -1 — use a positive size in MiB",
        ),
        case(
            "unknown distributed key",
            csv_spec("data.csv", 4, 2, "distributed = { backend = \"nccl\" }"),
            CHECK,
            "unknown field `backend`",
        ),
        case("zero workers on the command line", s.clone(), &["train", "spec.toml", "--workers", "0"], "--workers 0: use 1 or more workers"),
        case(
            "zero collective timeout",
            s.clone(),
            &["train", "spec.toml", "--workers", "2", "--collective-timeout", "0"],
            "--collective-timeout 0: use a positive number",
        ),
    ];
    let with_csv = |name: &'static str, csv: &str, expect: &'static str| Case {
        name,
        files: vec![
            ("spec.toml", spec().into_bytes()),
            ("data.csv", csv.as_bytes().to_vec()),
        ],
        args: TRAIN.to_vec(),
        expect,
    };
    let mut ragged = good_csv();
    ragged.push_str("1,2,3\n");
    let mut nan = good_csv();
    nan = nan.replacen("\n", "\nNaN,1,1,1,0\n", 1);
    let mut out_of_range = good_csv();
    out_of_range.push_str("1,2,3,4,7\n");
    let mut missing = good_csv();
    missing = missing.replacen("\n", "\n1,,3,4,0\n", 1);
    let mut word = good_csv();
    word = word.replacen("\n", "\n1,two,3,4,0\n", 1);
    v.push(with_csv(
        "ragged csv row",
        &ragged,
        "data.csv:41: the row has 3 fields but the header has 5",
    ));
    v.push(with_csv(
        "nan in data",
        &nan,
        "data.csv:2: column \"c0\" holds NaN, which is not a finite number",
    ));
    v.push(with_csv(
        "label out of range",
        &out_of_range,
        "label 7 is out of range for 2 classes",
    ));
    v.push(with_csv(
        "missing value",
        &missing,
        "data.csv:2: column \"c1\" is empty",
    ));
    v.push(with_csv(
        "text in a numeric column",
        &word,
        "holds \"two\", which is not a number",
    ));
    v.push(with_csv("empty csv", "", "holds no examples"));
    let idx = |name: &'static str, images: Vec<u8>, labels: Vec<u8>, expect: &'static str| Case {
        name,
        files: vec![
            (
                "spec.toml",
                idx_spec("images.idx", "labels.idx").into_bytes(),
            ),
            ("images.idx", images),
            ("labels.idx", labels),
        ],
        args: TRAIN.to_vec(),
        expect,
    };
    let images = idx_u8(&[3, 2, 2], &[0; 12]);
    let labels = idx_u8(&[3], &[0, 1, 0]);
    v.push(idx(
        "truncated header",
        images[..14].to_vec(),
        labels.clone(),
        "truncated header: 14 bytes",
    ));
    v.push(idx(
        "truncated idx",
        images[..images.len() - 3].to_vec(),
        labels.clone(),
        "the file is truncated or corrupt",
    ));
    v.push(idx(
        "idx with a bad magic number",
        b"PK\x03\x04 not idx at all".to_vec(),
        labels.clone(),
        "is not IDX",
    ));
    v.push(idx(
        "idx count mismatch",
        images.clone(),
        idx_u8(&[2], &[0, 1]),
        "2 labels for 3 images",
    ));
    v.push(idx(
        "damaged gzip",
        {
            let mut g = gz(&images);
            g.truncate(g.len() / 2);
            g
        },
        labels.clone(),
        "gzip stream is damaged",
    ));
    v.push(idx(
        "idx label out of range",
        gz(&images),
        idx_u8(&[3], &[0, 1, 9]),
        "label 9 is out of range for 2 classes",
    ));
    v.push(Case {
        name: "non-UTF-8 spec",
        files: vec![("spec.toml", vec![b'[', 0xff, 0xfe, b']'])],
        args: CHECK.to_vec(),
        expect: "not UTF-8 text (invalid byte at offset 1)",
    });
    v
}

#[test]
fn every_malformed_input_gets_one_clear_error() {
    let all = cases();
    assert!(all.len() >= 30, "only {} cases", all.len());
    let mut failures = Vec::new();
    for c in all {
        let sb = Sandbox::new();
        for (name, bytes) in &c.files {
            sb.write(name, bytes);
        }
        let out = sb.run(&c.args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        let problems = [
            (
                out.status.code() != Some(2),
                format!("exit code {:?}", out.status.code()),
            ),
            (
                !stderr.contains(c.expect),
                format!("message lacks {:?}", c.expect),
            ),
            (lines.len() != 1, format!("{} error lines", lines.len())),
            (stderr.contains("panicked"), "panicked".into()),
            (
                !sb.entries("runs").is_empty(),
                format!("left runs {:?}", sb.entries("runs")),
            ),
            (!sb.entries("models").is_empty(), "left a registry".into()),
        ];
        for (bad, what) in problems {
            if bad {
                failures.push(format!("{}: {what}\n    stderr: {}", c.name, stderr.trim()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
