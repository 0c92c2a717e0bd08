//! The ONNX backend on graphs written by the tests: signatures, runs, import and refusals.

use std::path::{Path, PathBuf};

use modelforge_onnx::{Import, OnnxError, OnnxModel, Overrides, import};
use modelforge_registry::Registry;
use modelforge_serve::{Runnable, Values};
use prost::Message as _;
use tract_onnx::pb::{
    self, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto,
    ValueInfoProto, tensor_proto::DataType, tensor_shape_proto::Dimension,
    tensor_shape_proto::dimension::Value as Dim,
};

/// A dimension: a number, or a symbol for any other text.
fn dim(d: &str) -> Dimension {
    Dimension {
        value: Some(match d.parse() {
            Ok(n) => Dim::DimValue(n),
            Err(_) => Dim::DimParam(d.into()),
        }),
        ..Default::default()
    }
}

fn tensor(name: &str, elem: DataType, dims: &[&str]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims.iter().map(|d| dim(d)).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// Writes a graph to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, graph: GraphProto) -> PathBuf {
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    let path = dir.join(name);
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

/// `y = a * 2` (FP32 [batch, 2]) and `z = b + 1` (INT64 [batch, 1]), batch symbolic.
fn two_in_two_out(dir: &Path, a_dims: &[&str]) -> PathBuf {
    let two = TensorProto {
        name: "two".into(),
        data_type: DataType::Float as i32,
        float_data: vec![2.0],
        ..Default::default()
    };
    let one = TensorProto {
        name: "one".into(),
        data_type: DataType::Int64 as i32,
        int64_data: vec![1],
        ..Default::default()
    };
    write(
        dir,
        "two.onnx",
        GraphProto {
            name: "two".into(),
            node: vec![
                node("Mul", &["a", "two"], "y"),
                node("Add", &["b", "one"], "z"),
            ],
            initializer: vec![two, one],
            input: vec![
                tensor("a", DataType::Float, a_dims),
                tensor("b", DataType::Int64, &["N", "1"]),
            ],
            output: vec![
                tensor("y", DataType::Float, a_dims),
                tensor("z", DataType::Int64, &["N", "1"]),
            ],
            ..Default::default()
        },
    )
}

#[test]
fn a_graph_with_two_typed_inputs_and_outputs_runs_at_any_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_in_two_out(dir.path(), &["N", "2"]);
    // Plans for batch 1 and 4; batch 3 runs the general plan.
    let mut model = OnnxModel::load_for(&path, &Overrides::default(), &[4, 1]).unwrap();
    let sig = model.signature().clone();
    assert!(sig.batchable);
    let names: Vec<_> = sig
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.clone()))
        .collect();
    assert_eq!(names, [("a", "FP32", vec![2]), ("b", "INT64", vec![1])]);
    let outs: Vec<_> = sig
        .outputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.clone()))
        .collect();
    assert_eq!(outs, [("y", "FP32", vec![2]), ("z", "INT64", vec![1])]);
    for batch in [1, 3, 4] {
        let a: Vec<f32> = (0..2 * batch).map(|v| v as f32).collect();
        let b: Vec<i64> = (0..batch as i64).collect();
        let out = model
            .run(vec![Values::F32(a.clone()), Values::I64(b.clone())], batch)
            .unwrap();
        assert_eq!(out[0], Values::F32(a.iter().map(|v| v * 2.0).collect()));
        assert_eq!(out[1], Values::I64(b.iter().map(|v| v + 1).collect()));
    }
}

#[test]
fn tensors_can_be_served_under_other_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_in_two_out(dir.path(), &["N", "2"]);
    let rename = |pairs: &[(&str, &str)]| Overrides {
        names: pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        ..Default::default()
    };
    let mut model = OnnxModel::load(&path, &rename(&[("a", "features"), ("z", "count")])).unwrap();
    let sig = model.signature().clone();
    assert_eq!(sig.inputs[0].name, "features");
    assert_eq!(sig.inputs[0].source.as_deref(), Some("a"));
    assert_eq!(sig.outputs[1].name, "count");
    assert_eq!(sig.inputs[1].source, None);
    // The recorded signature loads the same graph again, as the server does.
    let again = OnnxModel::load(&path, &sig.overrides()).unwrap();
    assert_eq!(again.signature(), &sig);
    let out = model
        .run(vec![Values::F32(vec![1.0, 2.0]), Values::I64(vec![4])], 1)
        .unwrap();
    assert_eq!(out[1], Values::I64(vec![5]));
    for (pair, expected) in [
        (
            ("c", "x"),
            "--rename names \"c\", which is no input or output",
        ),
        (("a", "b"), "two tensors would be served as \"b\""),
    ] {
        let err = OnnxModel::load(&path, &rename(&[pair]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn a_fixed_first_axis_is_not_a_batch_axis() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_in_two_out(dir.path(), &["1", "2"]);
    // `b`'s first axis is symbolic but `a`'s is not: the model takes whole tensors, and
    // `b` needs a shape.
    let err = OnnxModel::load(&path, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input \"b\" has a dynamic size on axis 0"),
        "{err}"
    );
    assert!(err.contains("--shape b="), "{err}");
    let overrides = Overrides {
        shapes: [("b".to_string(), vec![1, 1])].into(),
        ..Default::default()
    };
    let mut model = OnnxModel::load(&path, &overrides).unwrap();
    assert!(!model.signature().batchable);
    assert_eq!(model.signature().inputs[0].shape, vec![1, 2]);
    let out = model
        .run(vec![Values::F32(vec![1.0, 2.0]), Values::I64(vec![5])], 1)
        .unwrap();
    assert_eq!(out[1], Values::I64(vec![6]));
}

#[test]
fn a_dynamic_non_batch_axis_needs_a_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_in_two_out(dir.path(), &["N", "W"]);
    let err = OnnxModel::load(&path, &Overrides::default()).unwrap_err();
    assert!(matches!(err, OnnxError::Shape { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("input \"a\" has a dynamic size on axis 1"),
        "{text}"
    );
    assert!(text.contains("without the batch axis"), "{text}");
    let overrides = Overrides {
        shapes: [("a".to_string(), vec![2])].into(),
        ..Default::default()
    };
    assert!(
        OnnxModel::load(&path, &overrides)
            .unwrap()
            .signature()
            .batchable
    );
    let unknown = Overrides {
        shapes: [("c".to_string(), vec![2])].into(),
        ..Default::default()
    };
    let err = OnnxModel::load(&path, &unknown).unwrap_err().to_string();
    assert!(err.contains("no input \"c\"; its inputs are a, b"), "{err}");
}

#[test]
fn files_that_are_not_runnable_onnx_are_refused_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(dir.path().join("models"));
    let good = two_in_two_out(dir.path(), &["N", "2"]);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let text = dir.path().join("text.onnx");
    std::fs::write(&text, "this is not a model").unwrap();
    // One operator from `a` to `y`, both [N, 2] of `elem`.
    let one_op = |file: &str, op: &str, elem: DataType| {
        write(
            dir.path(),
            file,
            GraphProto {
                node: vec![node(op, &["a"], "y")],
                input: vec![tensor("a", elem, &["N", "2"])],
                output: vec![tensor("y", elem, &["N", "2"])],
                ..Default::default()
            },
        )
    };
    let unknown_op = one_op("unknown.onnx", "NoSuchOperator", DataType::Float);
    // An output no node produces (found by fuzzing: tract's reader aborted on it).
    let ghost = write(
        dir.path(),
        "ghost.onnx",
        GraphProto {
            name: "g".into(),
            node: vec![node("Relu", &["a"], "y")],
            input: vec![tensor("a", DataType::Float, &["N", "2"])],
            output: vec![tensor("ghost", DataType::Float, &["N", "2"])],
            ..Default::default()
        },
    );
    let strings = one_op("strings.onnx", "Identity", DataType::String);
    for (file, expect) in [
        (&truncated, "is not a readable ONNX model"),
        (&text, "is not a readable ONNX model"),
        (
            &dir.path().join("missing.onnx"),
            "is not a readable ONNX model",
        ),
        (&unknown_op, "NoSuchOperator"),
        (
            &ghost,
            "graph \"g\" names output \"ghost\", which no node, input or initializer produces",
        ),
        (&strings, "input \"a\" is String"),
    ] {
        let err = import(
            &registry,
            &Import {
                file,
                name: "m",
                labels: None,
                overrides: Overrides::default(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(expect),
            "{} gave {err}, not {expect}",
            file.display()
        );
    }
    assert!(
        registry.models().unwrap().is_empty(),
        "nothing half-imported"
    );
    let labels = dir.path().join("labels.txt");
    let with_labels = || {
        import(
            &registry,
            &Import {
                file: &good,
                name: "m",
                labels: Some(&labels),
                overrides: Overrides::default(),
            },
        )
    };
    std::fs::write(&labels, "cat\ndog\nbird\n").unwrap();
    let err = with_labels().unwrap_err().to_string();
    assert!(
        err.contains("3 labels but output \"y\" gives 2 values"),
        "{err}"
    );
    std::fs::write(&labels, "cat\ndog\n").unwrap();
    let version = with_labels().unwrap();
    assert_eq!(version.manifest.version, 1);
    assert_eq!(version.manifest.labels, ["cat", "dog"]);
    assert_eq!(version.manifest.task, "classification");
    let opened = registry.open("m", 1).unwrap();
    assert_eq!(opened.manifest.inputs.len(), 2);
}
