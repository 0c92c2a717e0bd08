//! Losses on the engine and metrics on the host: accuracy, per-class precision and
//! recall, confusion matrix, MAE and RMSE; next-token loss and perplexity.

use std::collections::BTreeMap;

use modelforge_data::{Corpus, Dataset, Prepared, Splits, Targets, Tokens};

use modelforge_model::burn::tensor::activation::log_softmax;
use modelforge_model::burn::tensor::{Device, Int, Tensor, TensorData};
use modelforge_model::{ModelError, Network};
use modelforge_spec::{Loss, Spec};
use serde::{Deserialize, Serialize};

/// The loss of a batch of logits against its targets (rows `rows` of `targets`).
pub fn batch_loss(
    loss: Loss,
    logits: Tensor<2>,
    targets: &Targets,
    rows: &[usize],
    device: &Device,
) -> Tensor<1> {
    let [batch, width] = logits.dims();
    match (loss, targets) {
        (Loss::CrossEntropy, Targets::Classes(c)) => {
            let mut onehot = vec![0f32; batch * width];
            for (i, &r) in rows.iter().enumerate() {
                onehot[i * width + c[r] as usize] = 1.0;
            }
            let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [batch, width]), device);
            (log_softmax(logits, 1) * onehot)
                .sum()
                .neg()
                .div_scalar(batch as f32)
        }
        (Loss::BinaryCrossEntropy, Targets::Classes(c)) => {
            let y: Vec<f32> = rows.iter().map(|&r| c[r] as f32).collect();
            let y = Tensor::<2>::from_data(TensorData::new(y, [batch, 1]), device);
            // max(x, 0) - x·y + log(1 + e^(-|x|)), stable for large |x|.
            let relu = logits.clone().clamp_min(0.0);
            let soft = logits.clone().abs().neg().exp().add_scalar(1.0).log();
            (relu - logits * y + soft).mean()
        }
        (_, Targets::Values { values, width: w }) => {
            let y: Vec<f32> = rows
                .iter()
                .flat_map(|&r| values[r * w..(r + 1) * w].iter().copied())
                .collect();
            let y = Tensor::<2>::from_data(TensorData::new(y, [batch, *w]), device);
            (logits - y).powi_scalar(2).mean()
        }
        (loss, Targets::Classes(_)) => {
            unreachable!("validated: {} takes class targets", loss.name())
        }
    }
}

/// Mean next-token cross-entropy of token logits `[batch, len, vocab]` against the target ids
/// (`batch · len` of them, row-major), on the engine: only the scalar leaves it.
pub fn token_loss(logits: Tensor<3>, targets: &[i64], device: &Device) -> Tensor<1> {
    let [batch, len, vocab] = logits.dims();
    let flat = logits.reshape([batch * len, vocab]);
    let y =
        Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [batch * len, 1]), device);
    log_softmax(flat, 1).gather(1, y).mean().neg()
}

/// Token ids `[windows, len]` on a device.
pub fn token_ids(ids: Vec<i64>, windows: usize, device: &Device) -> Tensor<2, Int> {
    let len = ids.len() / windows.max(1);
    Tensor::from_data(TensorData::new(ids, [windows, len]), device)
}

/// Evaluates a language model (inference mode) on the fixed windows of a split:
/// `{prefix}loss` (mean next-token cross-entropy, nats) and `{prefix}perplexity`.
pub fn evaluate_tokens(
    network: &Network,
    corpus: &Corpus,
    tokens: &Tokens,
    windows: usize,
    batch: usize,
    prefix: &str,
    device: &Device,
) -> Evaluation {
    let starts = corpus.eval_starts(tokens, windows);
    let mut sum = 0.0;
    for chunk in starts.chunks(batch.max(1)) {
        let (inputs, targets) = corpus.batch(tokens, chunk);
        let logits = network.forward_tokens(token_ids(inputs, chunk.len(), device), None);
        let loss = token_loss(logits, &targets, device).into_scalar::<f32>() as f64;
        sum += loss * chunk.len() as f64;
    }
    let loss = sum / starts.len().max(1) as f64;
    Evaluation {
        examples: starts.len() as u64,
        metrics: BTreeMap::from([
            (format!("{prefix}loss"), loss),
            (format!("{prefix}perplexity"), loss.exp()),
        ]),
        confusion: Vec::new(),
        precision: Vec::new(),
        recall: Vec::new(),
    }
}

/// A trained network's test figures (`test_` metrics): on the test examples, or for a
/// language model on the fixed test windows (the validation windows when no text was held
/// out for testing).
pub fn evaluate_test(
    spec: &Spec,
    network: &Network,
    data: &Prepared,
    device: &Device,
) -> Result<Evaluation, ModelError> {
    match &data.splits {
        Splits::Examples(e) => evaluate(
            network,
            &e.test,
            spec.loss(),
            crate::class_count(spec),
            "test_",
            device,
        ),
        Splits::Text(corpus) => {
            let tokens = match corpus.test.is_empty() {
                true => &corpus.validation,
                false => &corpus.test,
            };
            let t = &spec.train;
            Ok(evaluate_tokens(
                network,
                corpus,
                tokens,
                *t.eval_windows.get_ref(),
                *t.batch_size.get_ref(),
                "test_",
                device,
            ))
        }
    }
}

/// Running sums of a metric over batches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Sum of per-example losses.
    pub loss_sum: f64,
    /// Correct predictions (classification and binary).
    pub correct: u64,
    /// Sum of absolute errors (regression).
    pub abs_sum: f64,
    /// Sum of squared errors (regression).
    pub sq_sum: f64,
    /// Examples seen.
    pub count: u64,
    /// Target values seen (regression: examples × outputs).
    pub values: u64,
}

impl Tally {
    /// Adds a batch: its mean loss and its outputs (host copy, row-major `[batch, width]`).
    pub fn add(
        &mut self,
        mean_loss: f64,
        outputs: &[f32],
        width: usize,
        targets: &Targets,
        rows: &[usize],
        confusion: Option<&mut Vec<Vec<u64>>>,
    ) {
        self.loss_sum += mean_loss * rows.len() as f64;
        self.count += rows.len() as u64;
        match targets {
            Targets::Classes(c) => {
                let mut confusion = confusion;
                for (i, &r) in rows.iter().enumerate() {
                    let out = &outputs[i * width..(i + 1) * width];
                    let predicted = predicted_class(out);
                    let actual = c[r] as usize;
                    if predicted == actual {
                        self.correct += 1;
                    }
                    if let Some(m) = confusion.as_deref_mut() {
                        m[actual][predicted] += 1;
                    }
                }
            }
            Targets::Values { values, width: w } => {
                for (i, &r) in rows.iter().enumerate() {
                    for j in 0..*w {
                        let e = (outputs[i * width + j] - values[r * w + j]) as f64;
                        self.abs_sum += e.abs();
                        self.sq_sum += e * e;
                        self.values += 1;
                    }
                }
            }
        }
    }

    /// The sums as one buffer, for an all-reduce over ranks.
    pub fn to_sums(&self) -> [f64; 6] {
        [
            self.loss_sum,
            self.correct as f64,
            self.abs_sum,
            self.sq_sum,
            self.count as f64,
            self.values as f64,
        ]
    }

    /// The inverse of [`Tally::to_sums`].
    pub fn from_sums(s: [f64; 6]) -> Tally {
        Tally {
            loss_sum: s[0],
            correct: s[1] as u64,
            abs_sum: s[2],
            sq_sum: s[3],
            count: s[4] as u64,
            values: s[5] as u64,
        }
    }

    /// Adds another tally's sums to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.abs_sum += other.abs_sum;
        self.sq_sum += other.sq_sum;
        self.count += other.count;
        self.values += other.values;
    }

    /// Mean metrics under names with a prefix (`""`, `"val_"`, `"test_"`).
    pub fn metrics(&self, prefix: &str, classes: bool) -> BTreeMap<String, f64> {
        let n = self.count.max(1) as f64;
        let mut m = BTreeMap::new();
        m.insert(format!("{prefix}loss"), self.loss_sum / n);
        if classes {
            m.insert(format!("{prefix}accuracy"), self.correct as f64 / n);
        } else {
            let v = self.values.max(1) as f64;
            m.insert(format!("{prefix}mae"), self.abs_sum / v);
            m.insert(format!("{prefix}rmse"), (self.sq_sum / v).sqrt());
        }
        m
    }
}

/// The predicted class of one output row: argmax of logits, or `logit > 0` for one output.
pub fn predicted_class(row: &[f32]) -> usize {
    if row.len() == 1 {
        return usize::from(row[0] > 0.0);
    }
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

/// A model's figures on one data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: u64,
    /// Named figures: loss, accuracy or mae/rmse, prefixed.
    pub metrics: BTreeMap<String, f64>,
    /// `confusion[actual][predicted]` counts (classification and binary).
    pub confusion: Vec<Vec<u64>>,
    /// Per-class precision (classification and binary).
    pub precision: Vec<f64>,
    /// Per-class recall (classification and binary).
    pub recall: Vec<f64>,
}

/// Evaluates a network (inference mode) on a data set, `batch` examples at a time.
pub fn evaluate(
    network: &Network,
    data: &Dataset,
    loss: Loss,
    classes: usize,
    prefix: &str,
    device: &Device,
) -> Result<Evaluation, ModelError> {
    let is_classes = matches!(data.targets, Targets::Classes(_));
    let mut tally = Tally::default();
    let mut confusion = vec![vec![0u64; classes]; if is_classes { classes } else { 0 }];
    let mut buf = Vec::new();
    let rows: Vec<usize> = (0..data.len()).collect();
    for chunk in rows.chunks(1024) {
        data.gather_features(chunk, &mut buf);
        let x = network.input(&buf, chunk.len(), device)?;
        let logits = network.forward_logits(x);
        let width = logits.dims()[1];
        let l = batch_loss(loss, logits.clone(), &data.targets, chunk, device);
        let l: f64 = l.into_scalar::<f32>() as f64;
        let outputs: Vec<f32> = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
        tally.add(
            l,
            &outputs,
            width,
            &data.targets,
            chunk,
            is_classes.then_some(&mut confusion),
        );
    }
    let (precision, recall) = if is_classes {
        precision_recall(&confusion)
    } else {
        (vec![], vec![])
    };
    Ok(Evaluation {
        examples: tally.count,
        metrics: tally.metrics(prefix, is_classes),
        confusion,
        precision,
        recall,
    })
}

/// Per-class precision and recall from a confusion matrix (0 where undefined).
pub fn precision_recall(confusion: &[Vec<u64>]) -> (Vec<f64>, Vec<f64>) {
    let k = confusion.len();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = (0..k)
        .map(|c| ratio(confusion[c][c], (0..k).map(|a| confusion[a][c]).sum()))
        .collect();
    let recall = (0..k)
        .map(|c| ratio(confusion[c][c], confusion[c].iter().sum()))
        .collect();
    (precision, recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_and_recall_from_confusion() {
        let m = vec![vec![8, 2], vec![1, 9]];
        let (p, r) = precision_recall(&m);
        assert!((p[0] - 8.0 / 9.0).abs() < 1e-12 && (p[1] - 9.0 / 11.0).abs() < 1e-12);
        assert!((r[0] - 0.8).abs() < 1e-12 && (r[1] - 0.9).abs() < 1e-12);
    }

    #[test]
    fn predicted_class_handles_binary_and_multiclass() {
        assert_eq!(predicted_class(&[0.3]), 1);
        assert_eq!(predicted_class(&[-0.3]), 0);
        assert_eq!(predicted_class(&[0.1, 0.7, 0.2]), 1);
    }

    #[test]
    fn token_loss_is_the_mean_cross_entropy_over_every_position() {
        let device = Device::flex();
        // Two windows of two positions over a vocabulary of three.
        let v = [
            0.5f32, -1.0, 2.0, 0.0, 0.0, 0.0, 1.0, 3.0, -2.0, 0.2, 0.1, 0.4,
        ];
        let logits = Tensor::<3>::from_data(TensorData::new(v.to_vec(), [2, 2, 3]), &device);
        let targets = [2i64, 0, 1, 2];
        let l = token_loss(logits, &targets, &device).into_scalar::<f32>() as f64;
        let want: f64 = v
            .chunks(3)
            .zip(targets)
            .map(|(row, y)| {
                let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
                z.ln() - row[y as usize] as f64
            })
            .sum::<f64>()
            / 4.0;
        assert!((l - want).abs() < 1e-6, "{l} vs {want}");
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 1.0], [2, 2]),
            &device,
        );
        let t = Targets::Classes(vec![1, 0]);
        let l: f64 = batch_loss(Loss::CrossEntropy, logits, &t, &[0, 1], &device)
            .into_scalar::<f32>() as f64;
        let ce = |a: f64, b: f64, y: usize| -([a, b][y] - (a.exp() + b.exp()).ln());
        let want = (ce(1.0, 2.0, 1) + ce(3.0, 1.0, 0)) / 2.0;
        assert!((l - want).abs() < 1e-6, "{l} vs {want}");
    }
}
