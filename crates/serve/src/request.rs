//! An inference request's input as the protocols carry it, checked against the model
//! once for REST and gRPC alike.

use crate::{ModelInfo, ServeError};

/// One input tensor of a request, decoded by a protocol adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    /// Its name; `None` where the protocol has none (TF-Serving `instances`).
    pub name: Option<String>,
    /// Its datatype as the request states it, e.g. `FP32`.
    pub datatype: String,
    /// Its shape as sent, batch first (sizes are checked here, negative ones too).
    pub shape: Vec<i64>,
    /// Its values, row-major.
    pub data: Vec<f32>,
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

/// What a version answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// The version that answered.
    pub info: ModelInfo,
    /// Samples in the request.
    pub batch: usize,
    /// Output values, `batch × output_len`, row-major.
    pub output: Vec<f32>,
}

impl ModelInfo {
    /// Checks a request's inputs against the model — one tensor with the model's input
    /// name, datatype and per-sample shape, and as many values as its shape says — and
    /// returns the batch size.
    pub fn check_inputs(&self, inputs: &[InputTensor]) -> Result<usize, ServeError> {
        let want = &self.manifest.input;
        let model = format!("{}@{}", self.name, self.version);
        let bad = |message: String| Err(ServeError::BadRequest(message));
        let takes = format!(
            "{model} takes one input \"{}\" {} [batch, {}]",
            want.name,
            want.datatype,
            want.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let input = match inputs {
            [] => return bad(format!("the request has no input tensor; {takes}")),
            [input] => input,
            [first, rest @ ..] => {
                if let Some(twice) = rest.iter().find(|i| i.name == first.name) {
                    let name = twice.name.as_deref().unwrap_or("");
                    return bad(format!("input \"{name}\" is given twice; {takes}"));
                }
                return bad(format!(
                    "the request has {} input tensors; {takes}",
                    inputs.len()
                ));
            }
        };
        let name = input.name.as_deref().unwrap_or(&want.name);
        if name != want.name {
            return bad(format!("{model} has no input \"{name}\"; {takes}"));
        }
        if input.datatype != want.datatype {
            let given = match input.datatype.as_str() {
                "" => "no datatype".to_string(),
                d => format!("datatype {d}"),
            };
            return bad(format!("input \"{name}\" has {given}; {takes}"));
        }
        let shape = &input.shape;
        let Some((&batch, sample)) = shape.split_first() else {
            return bad(format!("input \"{name}\" has an empty shape; {takes}"));
        };
        if shape.iter().any(|&d| d < 0) {
            return bad(format!(
                "input \"{name}\" has a negative size in its shape {shape:?}"
            ));
        }
        if !sample
            .iter()
            .map(|&d| d as usize)
            .eq(want.shape.iter().copied())
        {
            return bad(format!("input \"{name}\" has shape {shape:?}; {takes}"));
        }
        if batch == 0 {
            return bad(format!("input \"{name}\" has a batch of 0 samples"));
        }
        let values = usize::try_from(batch)
            .ok()
            .and_then(|b| b.checked_mul(self.input_len()));
        if values != Some(input.data.len()) {
            return bad(format!(
                "input \"{name}\" has {} values but its shape {shape:?} needs {}",
                input.data.len(),
                values.map_or_else(|| "more than memory holds".to_string(), |v| v.to_string())
            ));
        }
        Ok(batch as usize)
    }
}

impl ModelInfo {
    /// Checks that every output a request asks for by name exists.
    pub fn check_outputs(&self, names: &[String]) -> Result<(), ServeError> {
        let have = &self.manifest.output.name;
        match names.iter().find(|n| *n != have) {
            Some(name) => Err(ServeError::BadRequest(format!(
                "{}@{} has no output \"{name}\"; its output is \"{have}\"",
                self.name, self.version
            ))),
            None => Ok(()),
        }
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
            data: vec![0.5; values],
        }
    }

    #[test]
    fn a_fitting_input_gives_its_batch() {
        let info = info();
        assert_eq!(
            info.check_inputs(&[input(Some("x"), "FP32", &[3, 2], 6)])
                .unwrap(),
            3
        );
        assert_eq!(
            info.check_inputs(&[input(None, "FP32", &[1, 2], 2)])
                .unwrap(),
            1
        );
    }

    #[test]
    fn every_misfit_names_what_is_wrong() {
        let info = info();
        let x = |shape: &[i64], values| input(Some("x"), "FP32", shape, values);
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
            (
                vec![x(&[2, 2], 3)],
                "has 3 values but its shape [2, 2] needs 4",
            ),
            (vec![x(&[i64::MAX, 2], 2)], "needs 18446744073709551614"),
        ] {
            let err = info.check_inputs(&inputs).unwrap_err().to_string();
            assert!(err.contains(expect), "{err} lacks {expect}");
        }
    }

    #[test]
    fn outputs_are_asked_for_by_their_name() {
        let info = info();
        assert!(info.check_outputs(&["y".into()]).is_ok());
        let err = info
            .check_outputs(&["y".into(), "probs".into()])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "m@1 has no output \"probs\"; its output is \"y\""
        );
    }
}
