//! Optimisers from the spec, and gradient clipping by global norm.

use modelforge_model::burn::module::{Module, ParamId};
use modelforge_model::burn::optim::decay::WeightDecayConfig;
use modelforge_model::burn::optim::momentum::MomentumConfig;
use modelforge_model::burn::optim::{
    AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig,
};
use modelforge_model::burn::tensor::Tensor;
use modelforge_spec::OptimizerSpec;

use crate::parallel::gradients::ParamList;

/// Builds the burn optimiser the spec describes. AdamW's decoupled weight decay is left
/// out of it: [`decoupled_decay`] gives the rate the loop applies to the weights it covers
/// ([`Network::decay_weights`](modelforge_model::Network::decay_weights)), so norms, biases
/// and embeddings are not decayed.
pub fn build(spec: &OptimizerSpec) -> ModuleOptimizer {
    let decay = |wd: f64| (wd > 0.0).then(|| WeightDecayConfig::new(wd as f32));
    match spec {
        OptimizerSpec::Sgd {
            momentum,
            nesterov,
            weight_decay,
            ..
        } => SgdConfig::new()
            .with_weight_decay(decay(*weight_decay))
            .with_momentum((*momentum > 0.0).then_some(MomentumConfig {
                momentum: *momentum,
                dampening: 0.0,
                nesterov: *nesterov,
            }))
            .init(),
        OptimizerSpec::Adam {
            beta1,
            beta2,
            epsilon,
            weight_decay,
            ..
        } => AdamConfig::new()
            .with_beta_1(*beta1 as f32)
            .with_beta_2(*beta2 as f32)
            .with_epsilon(*epsilon as f32)
            .with_weight_decay(decay(*weight_decay))
            .init(),
        OptimizerSpec::Adamw {
            beta1,
            beta2,
            epsilon,
            ..
        } => AdamWConfig::new()
            .with_beta_1(*beta1 as f32)
            .with_beta_2(*beta2 as f32)
            .with_epsilon(*epsilon as f32)
            .with_weight_decay(0.0)
            .init(),
    }
}

/// AdamW's decoupled weight-decay rate λ (0 for the other optimisers, whose decay is an L2
/// term inside their update).
pub fn decoupled_decay(spec: &OptimizerSpec) -> f64 {
    match spec {
        OptimizerSpec::Adamw { weight_decay, .. } => *weight_decay,
        OptimizerSpec::Sgd { .. } | OptimizerSpec::Adam { .. } => 0.0,
    }
}

fn squared_norm<const D: usize>(grads: &GradientsParams, id: ParamId) -> Option<Tensor<1>> {
    grads.get::<D>(id).map(|g| g.powi_scalar(2).sum())
}

fn rescale<const D: usize>(grads: &mut GradientsParams, id: ParamId, factor: f32) {
    if let Some(g) = grads.remove::<D>(id) {
        grads.register::<D>(id, g.mul_scalar(factor));
    }
}

/// Scales all gradients down so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let params = ParamList::of(module);
    let mut total: Option<Tensor<1>> = None;
    for (id, shape) in &params.0 {
        let id = *id;
        let part = match shape.len() {
            1 => squared_norm::<1>(grads, id),
            2 => squared_norm::<2>(grads, id),
            3 => squared_norm::<3>(grads, id),
            4 => squared_norm::<4>(grads, id),
            _ => None,
        };
        if let Some(p) = part {
            total = Some(match total {
                Some(t) => t + p,
                None => p,
            });
        }
    }
    let norm = total.map_or(0.0, |t| (t.into_scalar::<f32>() as f64).sqrt());
    if norm > max_norm {
        let factor = (max_norm / (norm + 1e-6)) as f32;
        for (id, shape) in &params.0 {
            let id = *id;
            match shape.len() {
                1 => rescale::<1>(grads, id, factor),
                2 => rescale::<2>(grads, id, factor),
                3 => rescale::<3>(grads, id, factor),
                4 => rescale::<4>(grads, id, factor),
                _ => {}
            }
        }
    }
    norm
}
