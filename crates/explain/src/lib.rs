//! Attributions: how much each input value moved one output of a native model, by the
//! engine's own autodiff — saliency, input × gradient, integrated gradients (with Captum's
//! integration rules and convergence delta) and SmoothGrad over any of them.
//!
//! Every point an explanation needs (integration steps, noisy copies, samples) runs as rows
//! of batched passes sized by a memory budget, not one pass per point.

mod gradient;
pub mod integration;
pub mod noise;

pub use modelforge_spec::explain::{Asked, Baseline, Explain, Method, Rule, Smoothing, Target};

use modelforge_model::burn::tensor::Device;
use modelforge_model::{ModelError, Network};

use gradient::Engine;

/// Everything an explanation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The target is not one of the model's outputs.
    #[error("target {target} is out of range: the model has {outputs} outputs — use 0 to {}", outputs - 1)]
    Target {
        /// The index asked for.
        target: usize,
        /// Outputs per sample.
        outputs: usize,
    },
    /// The baseline tensor does not have the input's shape.
    #[error(
        "baseline has {got} values but the input has {want} per sample — send one value per input value (or one set per sample)"
    )]
    BaselineShape {
        /// Values given.
        got: usize,
        /// Values per sample.
        want: usize,
    },
    /// The mean baseline was asked for where no training mean is known.
    #[error("baseline \"mean\" needs {0} — use \"zeros\", a number or a tensor")]
    NoMean(&'static str),
    /// A language model's prompt is empty, uneven over the batch or longer than its context.
    #[error(
        "{tokens} prompt token(s) in {batch} sample(s) do not fit a language model of context {context} — send 1 to {context} tokens per sample, the same number in each"
    )]
    Prompt {
        /// Tokens given in all.
        tokens: usize,
        /// Samples.
        batch: usize,
        /// The model's context.
        context: usize,
    },
    /// A token id is not one the model's embedding has.
    #[error("token id {id} is not one of the model's {vocab} ids — send whole numbers from 0 to {}", vocab - 1)]
    Id {
        /// The id given.
        id: f32,
        /// Ids the embedding has.
        vocab: usize,
    },
    /// The model is of a kind explanations do not cover.
    #[error("{0}")]
    Unsupported(String),
    /// The input does not fit the model.
    #[error(transparent)]
    Input(#[from] ModelError),
}

/// What an explanation runs with besides its settings.
#[derive(Debug, Clone)]
pub struct Setting<'a> {
    /// The compute device of the network.
    pub device: &'a Device,
    /// The training split's mean of each input value, when the version records it.
    pub mean: Option<&'a [f32]>,
    /// Bytes of activations one batched pass may keep.
    pub budget_bytes: usize,
    /// Whether the outputs are class scores (the predicted class is the highest one); a
    /// regression's predicted target is output 0.
    pub classifies: bool,
}

/// The default memory budget of one batched pass: 256 MiB.
pub const BUDGET_BYTES: usize = 256 << 20;

/// An explanation of a batch of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributions {
    /// The model's outputs for the samples, `[batch, outputs]`.
    pub outputs: Vec<f32>,
    /// Outputs per sample.
    pub output_len: usize,
    /// The attributions, `[batch, …]`: one per input value, or one per id (summed over its
    /// embedding vector) for a model that embeds ids.
    pub values: Vec<f32>,
    /// Per-sample shape of `values`: the input's, or `[len]` for ids.
    pub shape: Vec<usize>,
    /// The output explained, per sample.
    pub targets: Vec<usize>,
    /// Integrated gradients without smoothing: Σ attributions − (f(x) − f(baseline)) of the
    /// target, per sample (Captum's convergence delta).
    pub delta: Option<Vec<f32>>,
    /// Integrated gradients without smoothing: f(x) − f(baseline) of the target, per sample.
    pub gap: Option<Vec<f32>>,
}

/// The explained output of each sample: the one asked for, or the predicted one.
fn targets(
    target: Target,
    outputs: &[f32],
    width: usize,
    classifies: bool,
) -> Result<Vec<usize>, ExplainError> {
    outputs
        .chunks_exact(width)
        .map(|row| match target {
            Target::Index(t) if t < width => Ok(t),
            Target::Index(t) => Err(ExplainError::Target {
                target: t,
                outputs: width,
            }),
            Target::Predicted if !classifies => Ok(0),
            Target::Predicted => Ok(row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0),
        })
        .collect()
}

/// The baseline points `[batch, width]` of integrated gradients.
fn baseline(
    engine: &Engine,
    baseline: &Baseline,
    batch: usize,
    setting: &Setting,
    input_len: usize,
) -> Result<Vec<f32>, ExplainError> {
    let width = engine.width;
    let embedded = width != input_len;
    let per_sample = match baseline {
        Baseline::Zeros => return Ok(vec![0.0; batch * width]),
        Baseline::Constant(c) => return Ok(vec![*c; batch * width]),
        Baseline::Mean if embedded => {
            return Err(ExplainError::NoMean(
                "a float input; this model takes token ids (give baseline ids instead)",
            ));
        }
        Baseline::Mean => setting
            .mean
            .ok_or(ExplainError::NoMean(
                "the training mean, which this version does not record",
            ))?
            .to_vec(),
        Baseline::Values(v) if v.len() == batch * input_len => return engine.embed_baseline(v),
        Baseline::Values(v) => v.clone(),
    };
    if per_sample.len() != input_len {
        return Err(ExplainError::BaselineShape {
            got: per_sample.len(),
            want: input_len,
        });
    }
    engine.embed_baseline(&per_sample.repeat(batch))
}

/// Attributions of `batch` samples (`inputs` holds `batch × input` raw values, or ids) to
/// the output `settings.target` of `network`.
pub fn explain(
    network: &Network,
    inputs: &[f32],
    batch: usize,
    settings: &Explain,
    setting: &Setting,
) -> Result<Attributions, ExplainError> {
    let (engine, x) = Engine::new(network, inputs, batch, setting.device, setting.budget_bytes)?;
    let width = engine.width;
    let outputs = engine.outputs();
    let fx = engine.forward(&x, |r| r);
    let targets = targets(settings.target, &fx, outputs, setting.classifies)?;
    let integrated = settings.method == Method::IntegratedGradients;
    let b = match integrated {
        true => baseline(
            &engine,
            &settings.baseline,
            batch,
            setting,
            engine.input_len(),
        )?,
        false => Vec::new(),
    };
    let path = match integrated {
        true => integration::points(settings.rule, settings.steps),
        false => vec![(1.0, 1.0)],
    };
    // The points each copy starts from: the inputs, or their noisy copies.
    let copies = settings.smoothing.map_or(1, |s| s.samples);
    let starts: Vec<f32> = match settings.smoothing {
        None => x.clone(),
        Some(s) => {
            let mut gaussian = noise::Gaussian::new(s.seed);
            let mut starts = Vec::with_capacity(batch * copies * width);
            for sample in x.chunks_exact(width) {
                let sigma = s.stdev.unwrap_or_else(|| {
                    let (lo, hi) = sample
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                            (l.min(v), h.max(v))
                        });
                    0.15 * (hi - lo)
                }) as f64;
                for _ in 0..copies {
                    starts.extend(
                        sample
                            .iter()
                            .map(|&v| (v as f64 + sigma * gaussian.draw()) as f32),
                    );
                }
            }
            starts
        }
    };
    // Rows: sample-major, then copy, then integration step.
    let steps = path.len();
    let rows = batch * copies * steps;
    let copy_of = |r: usize| r / steps;
    let owner = |r: usize| r / (steps * copies);
    let mut sums = vec![0f32; batch * copies * width];
    engine.gradients(
        rows,
        |r, row| {
            let start = &starts[copy_of(r) * width..][..width];
            let (alpha, _) = path[r % steps];
            match integrated {
                false => row.copy_from_slice(start),
                true => {
                    let base = &b[owner(r) * width..][..width];
                    for ((v, s), b) in row.iter_mut().zip(start).zip(base) {
                        *v = b + (alpha as f32) * (s - b);
                    }
                }
            }
        },
        owner,
        &targets,
        |r, g| {
            let weight = path[r % steps].1 as f32;
            let sum = &mut sums[copy_of(r) * width..][..width];
            for (s, g) in sum.iter_mut().zip(g) {
                *s += weight * g;
            }
        },
    );
    // Each copy's attributions, averaged over the copies of its sample.
    let mut values = vec![0f32; batch * width];
    for (c, sum) in sums.chunks_exact(width).enumerate() {
        let sample = c / copies;
        let start = &starts[c * width..][..width];
        let out = &mut values[sample * width..][..width];
        for (j, (o, g)) in out.iter_mut().zip(sum).enumerate() {
            let a = match settings.method {
                Method::Saliency => g.abs(),
                Method::InputXGradient => start[j] * g,
                Method::IntegratedGradients => (start[j] - b[sample * width + j]) * g,
            };
            *o += a / copies as f32;
        }
    }
    let values = engine.per_token(values);
    // Completeness: integrated gradients add up to the change of the output.
    let (delta, gap) = match integrated && settings.smoothing.is_none() {
        false => (None, None),
        true => {
            let fb = engine.forward(&b, |r| r);
            let per = values.len() / batch;
            let (delta, gap) = (0..batch)
                .map(|s| {
                    let t = s * outputs + targets[s];
                    let gap = fx[t] - fb[t];
                    let total: f64 = values[s * per..(s + 1) * per]
                        .iter()
                        .map(|&v| v as f64)
                        .sum();
                    ((total - gap as f64) as f32, gap)
                })
                .unzip();
            (Some(delta), Some(gap))
        }
    };
    let shape = match network.embeds_ids() {
        true => vec![engine.input_len()],
        false => network.input_shape().to_vec(),
    };
    Ok(Attributions {
        outputs: fx,
        output_len: outputs,
        values,
        shape,
        targets,
        delta,
        gap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelforge_model::NamedTensor;

    /// A network for a `[model]` section, its weights drawn from a seeded generator.
    fn network(model: &str) -> Network {
        let spec: modelforge_spec::ModelSpec = toml::from_str(model).unwrap();
        let graph = modelforge_spec::graph::build(&spec).unwrap();
        Device::flex().seed(11);
        Network::from_graph(&graph, spec.input.get_ref(), &Device::flex())
    }

    fn setting(device: &Device) -> Setting<'_> {
        Setting {
            device,
            mean: None,
            budget_bytes: BUDGET_BYTES,
            classifies: true,
        }
    }

    fn tensor<'a>(tensors: &'a [NamedTensor], name: &str) -> &'a [f32] {
        &tensors.iter().find(|t| t.name == name).unwrap().values
    }

    const LINEAR: &str = r#"
name = "linear"
input = { shape = [3] }
output = { task = "regression" }
layers = [{ dense = { units = 2 }, name = "fc" }]
"#;

    const MLP: &str = r#"
name = "mlp"
input = { shape = [1, 3, 3] }
output = { task = "classification", classes = 4 }
layers = [
  { flatten = {} },
  { dense = { units = 16 } },
  { batch_norm = {} },
  { tanh = {} },
  { dropout = { rate = 0.5 } },
  { dense = { units = 4 } },
  { softmax = {} },
]
"#;

    fn settings(method: Method) -> Explain {
        Explain {
            method,
            ..Explain::default()
        }
    }

    #[test]
    fn a_linear_model_is_explained_exactly_by_every_method() {
        let net = network(LINEAR);
        let device = Device::flex();
        let w = tensor(&net.named_tensors(), "fc.weight").to_vec();
        let x = [0.5f32, -2.0, 1.5, 1.0, 0.0, -1.0];
        let target = Target::Index(1);
        let row = |s: usize| -> Vec<(f32, f32)> {
            w[3..6]
                .iter()
                .copied()
                .zip(x[s * 3..s * 3 + 3].iter().copied())
                .collect()
        };
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-5);
        for method in Method::ALL {
            let got = explain(
                &net,
                &x,
                2,
                &Explain {
                    target,
                    ..settings(method)
                },
                &setting(&device),
            )
            .unwrap();
            assert_eq!(got.targets, vec![1, 1]);
            let want: Vec<f32> = (0..2)
                .flat_map(|s| {
                    row(s).into_iter().map(move |(w, x)| match method {
                        Method::Saliency => w.abs(),
                        Method::InputXGradient | Method::IntegratedGradients => w * x,
                    })
                })
                .collect();
            assert!(
                close(&got.values, &want),
                "{method:?}: {:?} against {want:?}",
                got.values
            );
        }
        // A constant baseline: (x − b)·w, and the delta is zero.
        let ig = Explain {
            target,
            baseline: Baseline::Constant(0.25),
            steps: 3,
            ..settings(Method::IntegratedGradients)
        };
        let got = explain(&net, &x[..3], 1, &ig, &setting(&device)).unwrap();
        let want: Vec<f32> = row(0).into_iter().map(|(w, x)| w * (x - 0.25)).collect();
        assert!(close(&got.values, &want));
        assert!(got.delta.unwrap()[0].abs() < 1e-5);
    }

    #[test]
    fn integrated_gradients_converge_and_passes_split_by_budget_change_nothing() {
        let net = network(MLP);
        let device = Device::flex();
        let x: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
        let ig = Explain {
            steps: 64,
            ..settings(Method::IntegratedGradients)
        };
        let whole = explain(&net, &x, 2, &ig, &setting(&device)).unwrap();
        for (delta, gap) in whole
            .delta
            .as_ref()
            .unwrap()
            .iter()
            .zip(whole.gap.as_ref().unwrap())
        {
            assert!(
                delta.abs() < 0.01 * gap.abs().max(1e-3),
                "delta {delta} of {gap}"
            );
        }
        // One row per pass: the same numbers (dropout is off, batch norm uses its running
        // statistics, so rows do not see each other).
        let tiny = Setting {
            budget_bytes: 1,
            ..setting(&device)
        };
        let split = explain(&net, &x, 2, &ig, &tiny).unwrap();
        for (a, b) in whole.values.iter().zip(&split.values) {
            assert!((a - b).abs() < 1e-6, "{a} against {b}");
        }
        assert_eq!(whole.targets, split.targets);
    }

    #[test]
    fn saliency_is_the_finite_difference_gradient_of_the_target() {
        let net = network(MLP);
        let device = Device::flex();
        let x: Vec<f32> = (0..9).map(|i| (i as f32 * 0.71).cos()).collect();
        let ixg = explain(
            &net,
            &x,
            1,
            &settings(Method::InputXGradient),
            &setting(&device),
        )
        .unwrap();
        let t = ixg.targets[0];
        let f = |x: &[f32]| {
            let out = net.forward(net.input(x, 1, &device).unwrap());
            out.into_data().try_into_vec::<f32>().unwrap()[t] as f64
        };
        for i in 0..9 {
            let h = 1e-2f32;
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += h;
            down[i] -= h;
            let g = (f(&up) - f(&down)) / (2.0 * h as f64);
            let got = ixg.values[i] as f64 / x[i] as f64;
            assert!((got - g).abs() < 2e-3, "value {i}: {got} against {g}");
        }
    }

    #[test]
    fn smoothgrad_averages_noisy_copies_reproducibly() {
        let net = network(MLP);
        let device = Device::flex();
        let x: Vec<f32> = (0..9).map(|i| i as f32 / 9.0).collect();
        let smooth = |seed, samples| Explain {
            smoothing: Some(Smoothing {
                samples,
                stdev: Some(0.1),
                seed,
            }),
            ..settings(Method::Saliency)
        };
        let a = explain(&net, &x, 1, &smooth(5, 8), &setting(&device)).unwrap();
        assert_eq!(
            a,
            explain(&net, &x, 1, &smooth(5, 8), &setting(&device)).unwrap()
        );
        assert_ne!(
            a.values,
            explain(&net, &x, 1, &smooth(6, 8), &setting(&device))
                .unwrap()
                .values
        );
        assert!(a.delta.is_none());
        // Zero noise: the plain saliency.
        let zero = Explain {
            smoothing: Some(Smoothing {
                samples: 3,
                stdev: Some(0.0),
                seed: 1,
            }),
            ..settings(Method::Saliency)
        };
        let plain = explain(&net, &x, 1, &settings(Method::Saliency), &setting(&device)).unwrap();
        let got = explain(&net, &x, 1, &zero, &setting(&device)).unwrap();
        for (a, b) in got.values.iter().zip(&plain.values) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn token_models_are_explained_per_token_at_the_embedding() {
        let net = network(
            r#"
name = "text"
input = { shape = [5], dtype = "i64" }
output = { task = "classification", classes = 3 }
layers = [
  { embedding = { vocab = 20, dim = 6 } },
  { flatten = {} },
  { dense = { units = 8 } },
  { gelu = {} },
  { dense = { units = 3 } },
]
"#,
        );
        let device = Device::flex();
        let ids = [3.0f32, 7.0, 1.0, 19.0, 0.0];
        let ig = Explain {
            steps: 64,
            ..settings(Method::IntegratedGradients)
        };
        let got = explain(&net, &ids, 1, &ig, &setting(&device)).unwrap();
        assert_eq!(got.values.len(), 5, "one attribution per token");
        let (delta, gap) = (got.delta.unwrap()[0], got.gap.unwrap()[0]);
        assert!(delta.abs() < 0.01 * gap.abs().max(1e-3), "{delta} of {gap}");
        // Baseline ids (all 0) instead of zero vectors.
        let pad = Explain {
            baseline: Baseline::Values(vec![0.0; 5]),
            ..ig
        };
        let padded = explain(&net, &ids, 1, &pad, &setting(&device)).unwrap();
        assert!(
            padded.values[4].abs() < 1e-6,
            "the id equal to its baseline gets nothing"
        );
        let mean = Explain {
            baseline: Baseline::Mean,
            ..ig
        };
        assert!(matches!(
            explain(&net, &ids, 1, &mean, &setting(&device)),
            Err(ExplainError::NoMean(_))
        ));
    }

    /// A LLaMA-shaped language model: RMS norm, rotary positions, grouped-query attention,
    /// SwiGLU, an untied head.
    const LLAMA: &str = r#"
name = "llama"
input = { shape = [8], dtype = "i64" }
output = { task = "language_model" }
layers = [
  { embedding = { vocab = 13, dim = 16 } },
  { block = "decoder", repeat = 2 },
  { rms_norm = {} },
  { dense = { units = 13, bias = false } },
]
[blocks.decoder]
layers = [
  { rms_norm = {} },
  { self_attention = { heads = 4, kv_heads = 2, rope = {} }, name = "attn" },
  { add = {}, inputs = ["input", "attn"], name = "mid" },
  { rms_norm = {} },
  { swiglu = { hidden = 24 }, name = "ff" },
  { add = {}, inputs = ["mid", "ff"] },
]
"#;

    #[test]
    fn a_language_model_is_explained_at_its_next_token() {
        let net = network(LLAMA);
        let device = Device::flex();
        // A prompt shorter than the context: the next token's logits are the last row of
        // the full pass over the prompt.
        let prompt = [3.0f32, 7.0, 1.0, 12.0, 5.0];
        let ig = Explain {
            steps: 64,
            ..settings(Method::IntegratedGradients)
        };
        let got = explain(&net, &prompt, 1, &ig, &setting(&device)).unwrap();
        assert_eq!(got.shape, vec![5]);
        assert_eq!(got.values.len(), 5, "one attribution per prompt token");
        assert_eq!(got.output_len, 13);
        let ids: Vec<i64> = prompt.iter().map(|&v| v as i64).collect();
        let full = net.forward_tokens(
            modelforge_model::burn::tensor::Tensor::from_data(
                modelforge_model::burn::tensor::TensorData::new(ids, [1, 5]),
                &device,
            ),
            None,
        );
        let full = full.into_data().try_into_vec::<f32>().unwrap();
        let last = &full[4 * 13..];
        for (a, b) in got.outputs.iter().zip(last) {
            assert!((a - b).abs() < 1e-5, "{a} against {b}");
        }
        let greedy = (0..13)
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap();
        assert_eq!(got.targets, vec![greedy], "the predicted next token");
        let (delta, gap) = (got.delta.unwrap()[0], got.gap.unwrap()[0]);
        assert!(delta.abs() < 0.01 * gap.abs().max(1e-3), "{delta} of {gap}");
        // Causal attention: the last token's saliency is not zero, and a token the
        // explained position cannot see does not exist (the prompt ends there).
        let saliency = explain(
            &net,
            &prompt,
            1,
            &Explain {
                target: Target::Index(2),
                ..settings(Method::Saliency)
            },
            &setting(&device),
        )
        .unwrap();
        assert_eq!(saliency.targets, vec![2]);
        assert!(saliency.values.iter().all(|v| v.is_finite()));
        // Two prompts of one length explain as a batch, each as it would alone.
        let two = [prompt.as_slice(), &[0.0, 0.0, 4.0, 4.0, 9.0]].concat();
        let both = explain(&net, &two, 2, &ig, &setting(&device)).unwrap();
        for (a, b) in both.values[..5].iter().zip(&got.values) {
            assert!((a - b).abs() < 1e-5, "{a} against {b}");
        }
        // Refused: a prompt past the context, an empty one, ids the embedding lacks, a
        // baseline of the wrong length.
        let long = [1.0f32; 9];
        assert!(matches!(
            explain(&net, &long, 1, &ig, &setting(&device)),
            Err(ExplainError::Prompt { context: 8, .. })
        ));
        assert!(matches!(
            explain(&net, &[], 1, &ig, &setting(&device)),
            Err(ExplainError::Prompt { .. })
        ));
        let e = explain(&net, &[1.0, 13.0], 1, &ig, &setting(&device)).unwrap_err();
        assert!(e.to_string().contains("0 to 12"), "{e}");
        let short = Explain {
            baseline: Baseline::Values(vec![0.0; 3]),
            ..ig
        };
        assert!(matches!(
            explain(&net, &prompt, 1, &short, &setting(&device)),
            Err(ExplainError::BaselineShape { got: 3, want: 5 })
        ));
    }

    #[test]
    fn bad_targets_and_baselines_are_refused() {
        let net = network(LINEAR);
        let device = Device::flex();
        let far = Explain {
            target: Target::Index(2),
            ..Explain::default()
        };
        let e = explain(&net, &[1.0; 3], 1, &far, &setting(&device)).unwrap_err();
        assert!(e.to_string().contains("use 0 to 1"), "{e}");
        let short = Explain {
            baseline: Baseline::Values(vec![0.0; 2]),
            ..Explain::default()
        };
        let e = explain(&net, &[1.0; 3], 1, &short, &setting(&device)).unwrap_err();
        assert!(
            matches!(e, ExplainError::BaselineShape { got: 2, want: 3 }),
            "{e}"
        );
        assert!(matches!(
            explain(&net, &[1.0; 4], 1, &Explain::default(), &setting(&device)),
            Err(ExplainError::Input(_))
        ));
        let mean = Explain {
            baseline: Baseline::Mean,
            ..Explain::default()
        };
        let with_mean = Setting {
            mean: Some(&[1.0, 2.0, 3.0]),
            ..setting(&device)
        };
        let got = explain(&net, &[1.0, 2.0, 3.0], 1, &mean, &with_mean).unwrap();
        assert!(
            got.values.iter().all(|v| v.abs() < 1e-6),
            "x = mean: nothing to attribute"
        );
    }
}
