//! An inference request's inputs as the protocols carry them, checked against the model
//! once for REST and gRPC alike, and the outputs that answer it.

use crate::tensor::Values;
use crate::{ModelInfo, ServeError};
use modelforge_registry::TensorInfo;

/// One input tensor of a request, decoded by a protocol adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    /// Its name; `None` where the protocol has none (TF-Serving `instances`).
    pub name: Option<String>,
    /// Its datatype as the request states it, e.g. `FP32`.
    pub datatype: String,
    /// Its shape as sent, batch first (sizes are checked here, negative ones too).
    pub shape: Vec<i64>,
    /// Its values decoded as the stated datatype, or why they could not be (reported
    /// after the name and datatype are checked against the model).
    pub data: Result<Values, String>,
}

/// An inference request for a resolved version ([`crate::Core::version`]), decoded by a
/// protocol adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The input tensors.
    pub inputs: Vec<InputTensor>,
    /// Names of the outputs asked for (empty: all).
    pub outputs: Vec<String>,
    /// How long the caller waits; a request still queued when it passes is not computed.
    pub timeout: Option<std::time::Duration>,
}

/// One output tensor of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Its name.
    pub name: String,
    /// Its shape, batch first (the request's batch size) when the model is batchable.
    pub shape: Vec<i64>,
    /// Its values, row-major.
    pub data: Values,
}

/// What a version answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// The version that answered.
    pub info: ModelInfo,
    /// The outputs asked for (all when none were named), in the model's order.
    pub outputs: Vec<OutputTensor>,
}

/// `"x" FP32 [batch, 2]`, or the whole shape when the model is not batchable.
fn describe(t: &TensorInfo, batchable: bool) -> String {
    let mut dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    if batchable {
        dims.insert(0, "batch".into());
    }
    format!("\"{}\" {} [{}]", t.name, t.datatype, dims.join(", "))
}

impl ModelInfo {
    /// `model@version`.
    fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// What the model takes, for error messages (built only when a check fails: this is
    /// every request's path).
    fn takes(&self) -> String {
        let m = &self.manifest;
        let list: Vec<String> = m.inputs.iter().map(|t| describe(t, m.batchable)).collect();
        match list.as_slice() {
            [one] => format!("{} takes one input {one}", self.label()),
            _ => format!("{} takes inputs {}", self.label(), list.join(", ")),
        }
    }

    /// Checks a request's inputs against the model — each of its inputs once, by name,
    /// with its datatype and per-sample shape, all with one batch size and as many values
    /// as their shapes say — and returns the batch size and the values in the model's order.
    pub fn check_inputs(
        &self,
        inputs: Vec<InputTensor>,
    ) -> Result<(usize, Vec<Values>), ServeError> {
        let m = &self.manifest;
        let bad = |message: String| Err(ServeError::BadRequest(message));
        if inputs.is_empty() {
            return bad(format!("the request has no input tensor; {}", self.takes()));
        }
        for (i, input) in inputs.iter().enumerate() {
            if let Some(twice) = inputs[..i].iter().find(|j| j.name == input.name) {
                let name = twice.name.as_deref().unwrap_or("");
                return bad(format!("input \"{name}\" is given twice; {}", self.takes()));
            }
        }
        if inputs.len() > m.inputs.len() {
            return bad(format!(
                "the request has {} input tensors; {}",
                inputs.len(),
                self.takes()
            ));
        }
        let mut slots: Vec<Option<InputTensor>> = vec![None; m.inputs.len()];
        for input in inputs {
            let at = match input.name.as_deref() {
                None if m.inputs.len() == 1 => 0,
                None => {
                    return bad(format!(
                        "an input has no name; {} — name each input",
                        self.takes()
                    ));
                }
                Some(name) => match m.inputs.iter().position(|t| t.name == name) {
                    Some(at) => at,
                    None => {
                        return bad(format!(
                            "{} has no input \"{name}\"; {}",
                            self.label(),
                            self.takes()
                        ));
                    }
                },
            };
            slots[at] = Some(input);
        }
        let mut batch: Option<(usize, &str)> = None;
        let mut values = Vec::with_capacity(slots.len());
        for (want, slot) in m.inputs.iter().zip(slots) {
            let Some(input) = slot else {
                return bad(format!(
                    "input \"{}\" is missing; {}",
                    want.name,
                    self.takes()
                ));
            };
            let (n, data) = self.check_input(want, input)?;
            match batch {
                Some((b, first)) if b != n => {
                    return bad(format!(
                        "input \"{}\" has a batch of {n} but input \"{first}\" has {b}; \
                         every input needs the same batch size",
                        want.name
                    ));
                }
                _ => batch = Some((n, &want.name)),
            }
            values.push(data);
        }
        Ok((batch.map_or(1, |(b, _)| b), values))
    }

    /// Checks one input against the model's tensor `want`: its batch size and values.
    fn check_input(
        &self,
        want: &TensorInfo,
        input: InputTensor,
    ) -> Result<(usize, Values), ServeError> {
        let bad = |message: String| Err(ServeError::BadRequest(message));
        let name = &want.name;
        if input.datatype != want.datatype {
            let given = match input.datatype.as_str() {
                "" => "no datatype".to_string(),
                d => format!("datatype {d}"),
            };
            return bad(format!("input \"{name}\" has {given}; {}", self.takes()));
        }
        let shape = &input.shape;
        if shape.is_empty() {
            return bad(format!(
                "input \"{name}\" has an empty shape; {}",
                self.takes()
            ));
        }
        if shape.iter().any(|&d| d < 0) {
            return bad(format!(
                "input \"{name}\" has a negative size in its shape {shape:?}"
            ));
        }
        let (batch, sample) = match self.manifest.batchable {
            true => (shape[0], &shape[1..]),
            false => (1, &shape[..]),
        };
        if !sample
            .iter()
            .map(|&d| d as usize)
            .eq(want.shape.iter().copied())
        {
            return bad(format!(
                "input \"{name}\" has shape {shape:?}; {}",
                self.takes()
            ));
        }
        if batch == 0 {
            return bad(format!("input \"{name}\" has a batch of 0 samples"));
        }
        let data = input
            .data
            .map_err(|e| ServeError::BadRequest(format!("input \"{name}\": {e}")))?;
        let needed = usize::try_from(batch)
            .ok()
            .and_then(|b| b.checked_mul(want.len()));
        if needed != Some(data.len()) {
            return bad(format!(
                "input \"{name}\" has {} values but its shape {shape:?} needs {}",
                data.len(),
                needed.map_or_else(|| "more than memory holds".to_string(), |v| v.to_string())
            ));
        }
        Ok((batch as usize, data))
    }

    /// The outputs at positions `wanted` of a compute call's `values` for `batch` samples,
    /// named and shaped (batch first when the model is batchable).
    pub fn output_tensors(
        &self,
        batch: usize,
        values: Vec<Values>,
        wanted: &[usize],
    ) -> Vec<OutputTensor> {
        let m = &self.manifest;
        let mut values: Vec<Option<Values>> = values.into_iter().map(Some).collect();
        wanted
            .iter()
            .map(|&i| {
                let t = &m.outputs[i];
                let batch = m.batchable.then_some(batch as i64);
                OutputTensor {
                    name: t.name.clone(),
                    shape: batch
                        .into_iter()
                        .chain(t.shape.iter().map(|&d| d as i64))
                        .collect(),
                    data: values[i].take().expect("each output once"),
                }
            })
            .collect()
    }

    /// Checks that every output a request asks for by name exists, and returns the
    /// positions of those asked for (all when none are named).
    pub fn check_outputs(&self, names: &[String]) -> Result<Vec<usize>, ServeError> {
        let have = &self.manifest.outputs;
        if names.is_empty() {
            return Ok((0..have.len()).collect());
        }
        names
            .iter()
            .map(|name| {
                have.iter().position(|t| &t.name == name).ok_or_else(|| {
                    let list: Vec<String> =
                        have.iter().map(|t| format!("\"{}\"", t.name)).collect();
                    let its = match list.len() {
                        1 => "its output is",
                        _ => "its outputs are",
                    };
                    ServeError::BadRequest(format!(
                        "{} has no output \"{name}\"; {its} {}",
                        self.label(),
                        list.join(", ")
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::info;

    fn input(name: Option<&str>, datatype: &str, shape: &[i64], values: usize) -> InputTensor {
        InputTensor {
            name: name.map(str::to_string),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            data: Ok(Values::F32(vec![0.5; values])),
        }
    }

    /// A model with two inputs, `a` FP32 [2] and `b` INT64 [1], and two outputs.
    fn two_inputs() -> ModelInfo {
        let mut info = info();
        let t = |name: &str, datatype: &str, len| TensorInfo {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![len],
            source: None,
        };
        info.manifest.inputs = vec![t("a", "FP32", 2), t("b", "INT64", 1)];
        info.manifest.outputs = vec![t("y", "FP32", 2), t("z", "INT64", 1)];
        info
    }

    #[test]
    fn a_fitting_input_gives_its_batch() {
        let info = info();
        let (batch, values) = info
            .check_inputs(vec![input(Some("x"), "FP32", &[3, 2], 6)])
            .unwrap();
        assert_eq!((batch, values.len()), (3, 1));
        let (batch, _) = info
            .check_inputs(vec![input(None, "FP32", &[1, 2], 2)])
            .unwrap();
        assert_eq!(batch, 1);
    }

    #[test]
    fn several_inputs_are_put_in_the_models_order() {
        let info = two_inputs();
        let b = InputTensor {
            data: Ok(Values::I64(vec![7, 8])),
            ..input(Some("b"), "INT64", &[2, 1], 0)
        };
        let (batch, values) = info
            .check_inputs(vec![b.clone(), input(Some("a"), "FP32", &[2, 2], 4)])
            .unwrap();
        assert_eq!(batch, 2);
        assert_eq!(values[1], Values::I64(vec![7, 8]));
        let err = info
            .check_inputs(vec![b.clone(), input(Some("a"), "FP32", &[3, 2], 6)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("input \"b\" has a batch of 2 but input \"a\" has 3"),
            "{err}"
        );
        let err = info.check_inputs(vec![b]).unwrap_err().to_string();
        assert!(
            err.contains("input \"a\" is missing; m@1 takes inputs \"a\" FP32 [batch, 2], \"b\" INT64 [batch, 1]"),
            "{err}"
        );
        let err = info
            .check_inputs(vec![input(None, "FP32", &[1, 2], 2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("an input has no name"), "{err}");
    }

    #[test]
    fn a_model_that_is_not_batchable_takes_its_whole_shape() {
        let mut info = info();
        info.manifest.batchable = false;
        info.manifest.inputs[0].shape = vec![1, 2];
        let (batch, _) = info
            .check_inputs(vec![input(Some("x"), "FP32", &[1, 2], 2)])
            .unwrap();
        assert_eq!(batch, 1);
        let err = info
            .check_inputs(vec![input(Some("x"), "FP32", &[2, 2], 4)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("has shape [2, 2]; m@1 takes one input \"x\" FP32 [1, 2]"),
            "{err}"
        );
    }

    #[test]
    fn every_misfit_names_what_is_wrong() {
        let info = info();
        let x = |shape: &[i64], values| input(Some("x"), "FP32", shape, values);
        let undecodable = InputTensor {
            data: Err("1.5 is not INT64 data".into()),
            ..x(&[1, 2], 0)
        };
        for (inputs, expect) in [
            (
                vec![],
                "no input tensor; m@1 takes one input \"x\" FP32 [batch, 2]",
            ),
            (
                vec![x(&[1, 2], 2), x(&[1, 2], 2)],
                "input \"x\" is given twice",
            ),
            (
                vec![x(&[1, 2], 2), input(Some("z"), "FP32", &[1, 2], 2)],
                "has 2 input tensors",
            ),
            (
                vec![input(Some("z"), "FP32", &[1, 2], 2)],
                "m@1 has no input \"z\"",
            ),
            (
                vec![input(Some("x"), "BYTES", &[1, 2], 2)],
                "has datatype BYTES; m@1 takes",
            ),
            (vec![input(Some("x"), "", &[1, 2], 2)], "has no datatype"),
            (vec![x(&[], 0)], "has an empty shape"),
            (vec![x(&[-1, 2], 2)], "negative size"),
            (vec![x(&[1, 3], 3)], "has shape [1, 3]; m@1 takes"),
            (vec![x(&[2], 2)], "has shape [2]"),
            (vec![x(&[0, 2], 0)], "batch of 0 samples"),
            (vec![undecodable], "input \"x\": 1.5 is not INT64 data"),
            (
                vec![x(&[2, 2], 3)],
                "has 3 values but its shape [2, 2] needs 4",
            ),
            (vec![x(&[i64::MAX, 2], 2)], "needs 18446744073709551614"),
        ] {
            let err = info.check_inputs(inputs).unwrap_err().to_string();
            assert!(err.contains(expect), "{err} lacks {expect}");
        }
    }

    #[test]
    fn outputs_are_asked_for_by_their_name() {
        let info = two_inputs();
        assert_eq!(info.check_outputs(&[]).unwrap(), vec![0, 1]);
        assert_eq!(info.check_outputs(&["z".into()]).unwrap(), vec![1]);
        let err = info
            .check_outputs(&["y".into(), "probs".into()])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "m@1 has no output \"probs\"; its outputs are \"y\", \"z\""
        );
    }
}
