//! The `[train]` section: loop, optimiser, schedule, loss, checkpoints.

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The `[train]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Passes over the training split.
    #[serde(default = "default_epochs")]
    pub epochs: Spanned<usize>,
    /// Optimiser steps in all (language models: they train by steps, not epochs).
    pub max_steps: Option<Spanned<u64>>,
    /// Examples per micro-batch (language models: windows of `context` tokens).
    pub batch_size: Spanned<usize>,
    /// Micro-batches whose gradients are summed into one optimiser step.
    #[serde(default = "default_accumulate")]
    pub accumulate: Spanned<usize>,
    /// Language models: evaluate the validation windows every N steps (0: at the end only).
    #[serde(default)]
    pub eval_every_steps: u64,
    /// Language models: how many fixed validation windows an evaluation reads.
    #[serde(default = "default_eval_windows")]
    pub eval_windows: Spanned<usize>,
    /// Seed of weight initialisation, shuffling and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Loss; defaults from the task (cross_entropy, mse, binary_cross_entropy).
    pub loss: Option<Spanned<Loss>>,
    /// The optimiser.
    pub optimizer: Spanned<OptimizerSpec>,
    /// Learning-rate schedule.
    #[serde(default = "crate::unspanned")]
    pub schedule: Spanned<ScheduleSpec>,
    /// Clip gradients to this global L2 norm.
    pub clip_grad_norm: Option<Spanned<f64>>,
    /// Stop when a metric stops improving.
    pub early_stopping: Option<Spanned<EarlyStopping>>,
    /// When checkpoints are written and how many are kept.
    #[serde(default = "crate::unspanned")]
    pub checkpoint: Spanned<CheckpointSpec>,
    /// Write a metrics line every N steps (0: per epoch only).
    #[serde(default = "default_log_every")]
    pub log_every_steps: usize,
    /// Compute threads (default: 1; `--threads` overrides).
    pub threads: Option<Spanned<usize>>,
    /// Data-parallel worker threads in this process (default 1; `--workers` overrides).
    pub workers: Option<Spanned<usize>>,
    /// Settings of data-parallel training (local workers and MPI).
    #[serde(default = "crate::unspanned")]
    pub distributed: Spanned<DistributedSpec>,
}

/// The `[train.distributed]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedSpec {
    /// Gradient fusion bucket size in MiB: one all-reduce per bucket.
    #[serde(default = "default_bucket_mb")]
    pub bucket_mb: f64,
    /// Seconds any collective may wait for its peers before the job stops.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
}

fn default_bucket_mb() -> f64 {
    25.0
}
fn default_timeout_s() -> f64 {
    300.0
}

impl Default for DistributedSpec {
    fn default() -> Self {
        DistributedSpec {
            bucket_mb: default_bucket_mb(),
            timeout_s: default_timeout_s(),
        }
    }
}

fn default_epochs() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

fn default_accumulate() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

fn default_eval_windows() -> Spanned<usize> {
    Spanned::new(0..0, 200)
}

fn default_log_every() -> usize {
    100
}

/// Loss functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax cross-entropy on logits (classification).
    CrossEntropy,
    /// Mean squared error (regression).
    Mse,
    /// Sigmoid binary cross-entropy on one logit (binary).
    BinaryCrossEntropy,
}

impl Loss {
    /// The name as written in the file.
    pub fn name(self) -> &'static str {
        match self {
            Loss::CrossEntropy => "cross_entropy",
            Loss::Mse => "mse",
            Loss::BinaryCrossEntropy => "binary_cross_entropy",
        }
    }
}

/// Optimisers, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Stochastic gradient descent.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum (0: none).
        #[serde(default)]
        momentum: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam.
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        #[serde(default = "beta1")]
        beta1: f64,
        /// Second-moment decay.
        #[serde(default = "beta2")]
        beta2: f64,
        /// Added to the denominator.
        #[serde(default = "eps")]
        epsilon: f64,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay.
    Adamw {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        #[serde(default = "beta1")]
        beta1: f64,
        /// Second-moment decay.
        #[serde(default = "beta2")]
        beta2: f64,
        /// Added to the denominator.
        #[serde(default = "eps")]
        epsilon: f64,
        /// Decoupled weight decay.
        #[serde(default = "adamw_decay")]
        weight_decay: f64,
    },
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn adamw_decay() -> f64 {
    0.01
}

impl OptimizerSpec {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd { lr, .. }
            | OptimizerSpec::Adam { lr, .. }
            | OptimizerSpec::Adamw { lr, .. } => *lr,
        }
    }
}

/// Learning-rate schedules, chosen by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Decay factor.
        #[serde(default = "gamma")]
        gamma: f64,
    },
    /// Linear warm-up, then cosine decay to `min_lr` at the last step.
    Cosine {
        /// Steps of linear warm-up from 0.
        #[serde(default)]
        warmup_steps: usize,
        /// Final learning rate.
        #[serde(default)]
        min_lr: f64,
    },
}

fn gamma() -> f64 {
    0.1
}

/// Early stopping on a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Metric name, e.g. `val_loss` or `val_accuracy`.
    pub metric: String,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Whether smaller (`min`) or larger (`max`) is better; guessed from the name when absent.
    pub mode: Option<Mode>,
    /// Smallest change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
}

/// Direction in which a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

/// Checkpoint policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Write one after every N epochs (0: never by epoch).
    #[serde(default = "one")]
    pub every_epochs: usize,
    /// Write one after every N steps (0: never by step).
    #[serde(default)]
    pub every_steps: usize,
    /// Keep the newest K.
    #[serde(default = "keep")]
    pub keep: usize,
}

fn one() -> usize {
    1
}
fn keep() -> usize {
    3
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            every_epochs: 1,
            every_steps: 0,
            keep: 3,
        }
    }
}

/// Whether a larger value of a metric is better (accuracies); smaller is better for losses
/// and errors.
pub fn higher_is_better(metric: &str) -> bool {
    metric.ends_with("accuracy")
}

/// The known metric names for early stopping and gates.
pub fn metric_names() -> &'static [&'static str] {
    &[
        "loss",
        "accuracy",
        "mae",
        "rmse",
        "val_loss",
        "val_accuracy",
        "val_mae",
        "val_rmse",
        "perplexity",
        "val_perplexity",
    ]
}
