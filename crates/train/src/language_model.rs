//! The step loop of a language model: random windows of the training ids, next-token
//! cross-entropy on the engine, gradient accumulation over micro-batches, evaluation of
//! the fixed validation windows every N steps, checkpoints by step.

use std::collections::BTreeMap;
use std::time::Instant;

use modelforge_data::{Corpus, Prepared, TOKENIZER};
use modelforge_model::Network;
use modelforge_model::burn::module::Module;
use modelforge_model::burn::optim::{GradientsAccumulator, GradientsParams};
use modelforge_spec::Spec;
use serde_json::json;

use crate::evaluation::{Tally, evaluate_tokens, token_ids, token_loss};
use crate::parallel::{self, Collective, Communicator};
use crate::run;
use crate::{
    Ending, EpochReport, Started, StepReport, TrainError, TrainOptions, Trained, Update, finish,
    reduce_tally, start, with_step_dropout,
};

/// Trains a language model on a corpus; rank 0 returns the result.
pub(crate) fn train(
    spec: &Spec,
    data: &Prepared,
    corpus: &Corpus,
    options: TrainOptions,
    comm: &mut dyn Communicator,
) -> Result<Option<Trained>, TrainError> {
    let (rank, world) = (comm.rank(), comm.size());
    let leader = rank == 0;
    let t = &spec.train;
    let seed = t.seed;
    let batch = *t.batch_size.get_ref();
    let micro_batches = *t.accumulate.get_ref();
    let max_steps = *t
        .max_steps
        .as_ref()
        .expect("validated: language models have max_steps")
        .get_ref();
    let windows = *t.eval_windows.get_ref();
    let context = corpus.context;
    let distributed = options.distributed;
    let Started {
        mut network,
        mut optim,
        mut state,
        mut chronicle,
        device,
        ad,
        spec_hash,
        progress,
    } = start(spec, data, None, options, comm)?;
    if let Some(chronicle) = &chronicle {
        let json = corpus.tokenizer.to_json();
        run::write_atomic(&chronicle.dir.join(TOKENIZER), json.as_bytes())?;
    }
    let steps = max_steps as usize;
    let update = Update::new(spec, &network, distributed, steps, steps, &device);
    let ckpt = t.checkpoint.get_ref().clone();
    // Evaluated during training: the validation windows, or the test windows without them.
    let (held_out, prefix) = match corpus.validation.is_empty() {
        false => (&corpus.validation, "val_"),
        true => (&corpus.test, "test_"),
    };
    let evaluations = match t.eval_every_steps {
        0 => 1,
        every => max_steps.div_ceil(every) as usize,
    };
    if leader {
        progress.start(evaluations, steps, state.step);
    }
    let tokens_per_step = (batch * micro_batches * context) as f64;
    let mut last_metrics = BTreeMap::new();
    let mut pruned = false;
    let started = Instant::now();
    let resumed_at = state.step;
    let outcome: Result<Network, TrainError> = (|| {
        while state.step < max_steps {
            let starts = corpus.train_starts(seed, state.step, batch * micro_batches);
            let mut step = Tally::default();
            let mut sum = GradientsAccumulator::<Network>::new();
            for rows in starts.chunks(batch) {
                let mine = parallel::shard(rows, rank, world);
                if mine.is_empty() {
                    continue;
                }
                let (inputs, targets) = corpus.batch(&corpus.train, mine);
                let logits = with_step_dropout(seed, state.step, rank, world, || {
                    network.forward_tokens(token_ids(inputs, mine.len(), &ad), None)
                });
                let loss = token_loss(logits, &targets, &ad);
                let value = loss.clone().into_scalar::<f32>() as f64;
                step.loss_sum += value * mine.len() as f64;
                step.count += mine.len() as u64;
                // This rank's share of the step's mean over every window of every micro-batch.
                let share = loss.mul_scalar(mine.len() as f32 / starts.len() as f32);
                sum.accumulate(
                    &network,
                    GradientsParams::from_grads(share.backward(), &network),
                );
            }
            let step = reduce_tally(comm, step, state.step)?;
            let lr;
            (network, lr) = update.apply(network, &mut optim, sum.grads(), comm, state.step)?;
            state.tally.merge(&step);
            state.step += 1;
            let evaluate_now = state.step == max_steps
                || (t.eval_every_steps > 0 && state.step.is_multiple_of(t.eval_every_steps));
            if let Some(chronicle) = chronicle.as_mut() {
                let elapsed = started.elapsed().as_secs_f64().max(1e-9);
                let report = StepReport {
                    epoch: state.epoch,
                    batch: state.step as usize,
                    batches: steps,
                    step: state.step,
                    loss: step.loss_sum / step.count.max(1) as f64,
                    accuracy: None,
                    samples_per_sec: (state.step - resumed_at) as f64 * tokens_per_step / elapsed,
                    lr,
                };
                if t.log_every_steps > 0 && state.step.is_multiple_of(t.log_every_steps as u64) {
                    // Figures only: a timing would make identical runs' logs differ.
                    chronicle.log.write(&json!({
                        "kind": "step", "step": state.step, "loss": report.loss, "lr": lr,
                    }))?;
                }
                progress.step(&report);
            }
            if evaluate_now {
                // Rank 0 measures the held-out windows and hands the figures to every rank,
                // so all decide alike.
                let mut metrics = BTreeMap::new();
                if leader {
                    metrics = state.tally.metrics("", false);
                    metrics.retain(|k, _| k == "loss");
                    metrics.insert("perplexity".into(), metrics["loss"].exp());
                    let eval = evaluate_tokens(
                        &network.valid(),
                        corpus,
                        held_out,
                        windows,
                        batch,
                        prefix,
                        &device,
                    );
                    metrics.extend(eval.metrics);
                    metrics.insert("lr".into(), lr);
                }
                let report = |metrics: &BTreeMap<String, f64>| EpochReport {
                    epoch: state.epoch,
                    epochs: evaluations,
                    metrics: metrics.clone(),
                    seconds: started.elapsed().as_secs_f64(),
                    steps: Some((state.step, max_steps)),
                };
                pruned = leader && progress.prune(&report(&metrics));
                if world > 1 {
                    let mut bytes =
                        serde_json::to_vec(&(&metrics, pruned)).expect("metrics serialise");
                    let at = Collective {
                        op: "broadcast(evaluation)",
                        step: state.step,
                    };
                    comm.broadcast(&mut bytes, at)?;
                    (metrics, pruned) =
                        serde_json::from_slice(&bytes).expect("rank 0 sent metrics");
                }
                if let Some(chronicle) = chronicle.as_mut() {
                    let mut line =
                        json!({ "kind": "epoch", "epoch": state.epoch, "step": state.step });
                    for (k, v) in &metrics {
                        line[k] = json!(v);
                    }
                    chronicle.log.write(&line)?;
                    progress.epoch(&report(&metrics));
                }
                last_metrics = metrics;
                state.epoch += 1;
                state.tally = Tally::default();
            }
            if let Some(chronicle) = chronicle.as_mut() {
                let due =
                    ckpt.every_steps > 0 && state.step.is_multiple_of(ckpt.every_steps as u64);
                if due || state.step == max_steps || pruned {
                    chronicle.checkpoint(&network, &optim, &mut state, ckpt.keep)?;
                }
            }
            if pruned {
                break;
            }
        }
        Ok(network)
    })();
    finish(
        spec,
        data,
        chronicle,
        spec_hash,
        Ending {
            outcome,
            state,
            metrics: last_metrics,
            stopped_early: false,
            pruned,
        },
    )
}
