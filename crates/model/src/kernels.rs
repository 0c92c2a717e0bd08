//! Fused CPU kernels the engine's CPU backend lacks, as a burn backend extension with its
//! own backward pass: the exact (erf) GELU.
//!
//! The CPU backend computes GELU with a scalar `erff` per value, forward and again in the
//! backward pass; in the Shakespeare example that was a fifth of a training step. Here the
//! normal CDF comes from two short polynomials and one exponential, written so that the
//! compiler vectorises them (AVX2 where the CPU has it): `Φ(x) = ½(1 + x/√2 · P(u²))` near
//! zero, and `½ e^{-u²} R(1/(1 + u/2))` (`u = |x|/√2`) for the tails, which also keeps the
//! negative tail's small values exact instead of cancelling `1 + erf`. Both polynomials are
//! minimax fits of erf made for this file; the values agree with `libm::erff`'s formula to
//! 2 × 10⁻⁷ (tested below). Other devices, and tensors that are not contiguous `f32`, keep the
//! backend's own GELU.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

/// Values per parallel chunk of a kernel.
const CHUNK: usize = 16 * 1024;

/// The GELU kernels, per backend.
#[backend_extension(Flex, Autodiff)]
pub trait GeluKernels: Backend {
    /// `x · Φ(x)`.
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `grad · (Φ(x) + x · φ(x))`.
    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The exact GELU of `x`: the fused kernel on the CPU backend, the backend's own elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.device().inner() != Device::flex() {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as GeluKernels>::gelu_exact(x.into_dispatch()))
}

impl GeluKernels for Flex {
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match contiguous_f32(&x) {
            Some(values) => {
                let mut out = vec![0f32; values.len()];
                out.par_chunks_mut(CHUNK)
                    .zip(values.par_chunks(CHUNK))
                    .for_each(|(out, x)| simd::gelu(x, out));
                from_values(out, &x)
            }
            None => Flex::gelu(x),
        }
    }

    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        match (contiguous_f32(&x), contiguous_f32(&grad)) {
            (Some(values), Some(g)) if values.len() == g.len() => {
                let mut out = vec![0f32; values.len()];
                out.par_chunks_mut(CHUNK)
                    .zip(values.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
                    .for_each(|(out, (x, g))| simd::gelu_backward(x, g, out));
                from_values(out, &x)
            }
            _ => Flex::gelu_backward(x, grad),
        }
    }
}

impl<B: Backend + GeluKernels, C: CheckpointStrategy> GeluKernels for Autodiff<B, C> {
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        /// The backward step: the input is kept, the CDF recomputed from it.
        #[derive(Debug)]
        struct GeluBackward;

        impl<B: Backend + GeluKernels> Backward<B, 1> for GeluBackward {
            type State = NodeId;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let input = checkpointer.retrieve_node_output(ops.state);
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::gelu_exact_backward(input, grad)
                });
            }
        }

        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, B::gelu_exact(x.primitive().clone()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_exact(x.into_primitive())),
        }
    }

    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // Second derivatives are not taken through GELU; the composed formula serves them.
        Self::gelu_backward(x, grad)
    }
}

/// The values of a contiguous `f32` tensor, or `None`.
fn contiguous_f32(t: &FlexTensor) -> Option<&[f32]> {
    match t.dtype() {
        DType::F32 => t.as_slice::<f32>(),
        _ => None,
    }
}

/// A tensor of `like`'s shape holding `values`.
fn from_values(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.layout().shape().clone()))
}

/// The element loops, compiled twice: for AVX2 with FMA when the CPU has them, and for the
/// baseline target.
mod simd {
    use super::math;

    /// `out[i] = gelu(x[i])`.
    pub fn gelu(x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { gelu_avx2(x, out) };
        }
        gelu_any(x, out)
    }

    /// `out[i] = g[i] · gelu'(x[i])`.
    pub fn gelu_backward(x: &[f32], g: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { gelu_backward_avx2(x, g, out) };
        }
        gelu_backward_any(x, g, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gelu_avx2(x: &[f32], out: &mut [f32]) {
        gelu_any(x, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gelu_backward_avx2(x: &[f32], g: &[f32], out: &mut [f32]) {
        gelu_backward_any(x, g, out)
    }

    #[inline(always)]
    fn gelu_any(x: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = x * math::cdf_and_gauss(x).0;
        }
    }

    #[inline(always)]
    fn gelu_backward_any(x: &[f32], g: &[f32], out: &mut [f32]) {
        for ((o, &x), &g) in out.iter_mut().zip(x).zip(g) {
            let (cdf, gauss) = math::cdf_and_gauss(x);
            *o = g * (cdf + x * gauss * math::INV_SQRT_2PI);
        }
    }
}

/// The normal CDF, branch-free so that it vectorises.
mod math {
    use std::f32::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, LN_2, LOG2_E};

    /// `1 / √(2π)`.
    pub const INV_SQRT_2PI: f32 = 0.398_942_3;

    /// Below this `|x|/√2` erf is `u · P(u²)`; above, `1 - e^{-u²} R(t)`.
    const SPLIT: f32 = 0.85;

    /// `erf(u) / u` as a polynomial in `u²`, on `[0, 0.85]` (its constant term is 2/√π).
    const P: [f32; 7] = [
        FRAC_2_SQRT_PI,
        -0.376_126_34,
        0.112_837_12,
        -0.026_860_823,
        0.005_205_512_7,
        -0.000_820_274_2,
        0.000_086_606_175,
    ];

    /// `erfc(u) · e^{u²}` as a polynomial in `t = 1 / (1 + u/2)`, on `u` in `[0.85, 4]`.
    const R: [f32; 8] = [
        0.000_053_013_266,
        0.282_344_55,
        0.273_256_5,
        0.308_177_9,
        -0.034_536_52,
        0.491_383_53,
        -0.429_844_33,
        0.109_201_62,
    ];

    /// Horner's rule, highest power last in `c`.
    #[inline(always)]
    fn horner<const N: usize>(c: &[f32; N], v: f32) -> f32 {
        let mut acc = c[N - 1];
        for k in (0..N - 1).rev() {
            acc = acc * v + c[k];
        }
        acc
    }

    /// `e^{-z}` for `z` in `[0, 81]`: `2^n · e^r` with `|r| ≤ ln2 / 2` and a degree-7 series.
    #[inline(always)]
    pub fn exp_neg(z: f32) -> f32 {
        let a = -z;
        // Round to nearest with the 1.5 · 2²³ trick (no libm call on any target): the sum's
        // low mantissa bits are then n itself, read as an integer without a conversion
        // (a saturating float-to-int cast would not vectorise).
        let shifted = a * LOG2_E + 12_582_912.0;
        let n = shifted - 12_582_912.0;
        let n_int = shifted.to_bits().wrapping_sub(0x4B40_0000) as i32;
        // ln 2 split so that n · LN2_HI is exact.
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = LN_2 - LN2_HI;
        let r = (a - n * LN2_HI) - n * LN2_LO;
        const SERIES: [f32; 8] = [
            1.0,
            1.0,
            0.5,
            1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 120.0,
            1.0 / 720.0,
            1.0 / 5040.0,
        ];
        let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
        horner(&SERIES, r) * scale
    }

    /// `(Φ(x), e^{-x²/2})`: the normal CDF and the unnormalised density, which share the
    /// exponential.
    #[inline(always)]
    pub fn cdf_and_gauss(x: f32) -> (f32, f32) {
        let u = (x * FRAC_1_SQRT_2).clamp(-9.0, 9.0);
        let a = u.abs();
        let z = u * u;
        let gauss = exp_neg(z);
        let near = 0.5 + 0.5 * u * horner(&P, z);
        let half_tail = 0.5 * gauss * horner(&R, 1.0 / (1.0 + 0.5 * a));
        let far = if u > 0.0 { 1.0 - half_tail } else { half_tail };
        (if a < SPLIT { near } else { far }, gauss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: `x · Φ(x)` in f64.
    fn gelu64(x: f64) -> f64 {
        0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
    }

    /// Its derivative in f64.
    fn gelu_prime64(x: f64) -> f64 {
        0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
            + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
    }

    /// Every 1/1024 from -12 to 12, and the extremes.
    fn grid() -> Vec<f32> {
        let mut xs: Vec<f32> = (-12 * 1024..=12 * 1024)
            .map(|i| i as f32 / 1024.0)
            .collect();
        xs.extend([f32::MIN_POSITIVE, -1e-30, 30.0, -30.0, 1e4, -1e4]);
        xs
    }

    /// The kernels agree with the f64 formulas to 2 × 10⁻⁷ of `max(1, |x|)`, both through
    /// the AVX2 path (where the CPU has it) and the baseline one.
    #[test]
    fn the_fused_gelu_and_its_derivative_match_the_f64_formulas() {
        let xs = grid();
        let ones = vec![1f32; xs.len()];
        let (mut y, mut dy) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
        simd::gelu(&xs, &mut y);
        simd::gelu_backward(&xs, &ones, &mut dy);
        for (i, &x) in xs.iter().enumerate() {
            let bound = 2e-7 * f64::from(x.abs()).max(1.0);
            let (want, want_d) = (gelu64(x.into()), gelu_prime64(x.into()));
            assert!(
                (f64::from(y[i]) - want).abs() <= bound,
                "gelu({x}) = {} against {want}",
                y[i]
            );
            assert!(
                (f64::from(dy[i]) - want_d).abs() <= bound,
                "gelu'({x}) = {} against {want_d}",
                dy[i]
            );
        }
    }

    /// The negative tail keeps its relative precision (`1 + erf` would cancel to 0 or noise)
    /// over the fitted range, `|x| ≤ 4√2`.
    #[test]
    fn the_negative_tail_is_exact_relative_to_its_size() {
        for x in [-1.5f32, -3.0, -4.5, -5.6] {
            let (cdf, _) = math::cdf_and_gauss(x);
            let want = 0.5 * libm::erfc(-f64::from(x) / std::f64::consts::SQRT_2);
            assert!(
                ((f64::from(cdf) - want) / want).abs() < 1e-5,
                "Φ({x}) = {cdf} against {want}"
            );
        }
    }

    /// Through the engine: the fused GELU's values and gradients match burn's own on the CPU
    /// backend, for a contiguous tensor and a transposed (strided) one.
    #[test]
    fn through_autodiff_the_fused_gelu_matches_the_backend() {
        let device = Device::flex().autodiff();
        let values: Vec<f32> = (0..96).map(|i| (i as f32 - 48.0) / 9.0).collect();
        let x = || {
            Tensor::<2>::from_data(TensorData::new(values.clone(), [8, 12]), &device).require_grad()
        };
        for transposed in [false, true] {
            let view = |t: Tensor<2>| if transposed { t.transpose() } else { t };
            let (a, b) = (x(), x());
            let weights = Tensor::<2>::from_data(
                TensorData::new(
                    (0..96).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>(),
                    [8, 12],
                ),
                &device,
            );
            let weights = view(weights);
            let ours = gelu(view(a.clone()));
            let theirs = burn::tensor::activation::gelu(view(b.clone()));
            let (ga, gb) = (
                (ours.clone() * weights.clone()).sum().backward(),
                (theirs.clone() * weights).sum().backward(),
            );
            let close = |p: Tensor<2>, q: Tensor<2>| {
                let (p, q): (Vec<f32>, Vec<f32>) = (
                    p.into_data().try_to_vec().unwrap(),
                    q.into_data().try_to_vec().unwrap(),
                );
                for (u, v) in p.iter().zip(&q) {
                    assert!((u - v).abs() <= 1e-6 * v.abs().max(1.0), "{u} against {v}");
                }
            };
            close(ours, theirs);
            close(a.grad(&ga).unwrap(), b.grad(&gb).unwrap());
        }
    }
}
