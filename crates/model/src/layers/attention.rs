//! `self_attention`: multi-head self-attention over a `[len, dim]` sequence, with
//! grouped-query key/value heads, rotary positions in either layout, dropout on the
//! attention weights, and a key/value cache so that each generated token costs one position.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Tensor, TensorData, activation};
use modelforge_spec::{Rope, RopeLayout};

use super::{Activation, Context, Group, TensorVisitor, dense};

/// Keys and values of the positions seen so far, `[batch, kv_heads, len, head_dim]` each.
pub type KeyValues = (Tensor<4>, Tensor<4>);

/// Cosines and sines of the rotary angles, `[1, 1, len, head_dim / 2]` each.
type Rotations = (Tensor<4>, Tensor<4>);

/// The attention layer: four projections and its head layout.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// `dim → heads · head_dim`.
    pub q: Linear,
    /// `dim → kv_heads · head_dim`.
    pub k: Linear,
    /// `dim → kv_heads · head_dim`.
    pub v: Linear,
    /// `heads · head_dim → dim`.
    pub o: Linear,
    /// On the attention weights, in training.
    pub dropout: Dropout,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    kv_heads: usize,
    #[module(skip)]
    causal: bool,
    #[module(skip)]
    rope: Option<Rope>,
}

/// The options of an attention layer, as written in the spec.
pub(crate) struct Options {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Causal masking.
    pub causal: bool,
    /// Rotary positions.
    pub rope: Option<Rope>,
    /// Attention-weight dropout.
    pub dropout: f64,
    /// Projection biases.
    pub bias: bool,
}

/// The projections for a `[len, dim]` input.
pub(crate) fn init(input: &[usize], o: Options, device: &Device) -> SelfAttention {
    let dim = *input.last().expect("a [len, dim] sequence");
    let kv_dim = dim / o.heads * o.kv_heads;
    let linear = |i, out| LinearConfig::new(i, out).with_bias(o.bias).init(device);
    SelfAttention {
        q: linear(dim, dim),
        k: linear(dim, kv_dim),
        v: linear(dim, kv_dim),
        o: linear(dim, dim),
        dropout: DropoutConfig::new(o.dropout).init(),
        heads: o.heads,
        kv_heads: o.kv_heads,
        causal: o.causal,
        rope: o.rope,
    }
}

impl SelfAttention {
    /// Floats one position adds to the cache: a key and a value per key/value head.
    pub(crate) fn cache_floats_per_token(&self) -> usize {
        let [_, kv_dim] = self.k.weight.dims();
        2 * kv_dim
    }

    /// `[batch, len, heads · head_dim]` to `[batch, heads, len, head_dim]`.
    fn split(x: Tensor<3>, heads: usize) -> Tensor<4> {
        let [b, t, d] = x.dims();
        x.reshape([b, t, heads, d / heads]).swap_dims(1, 2)
    }

    /// The rotation angles' cosines and sines for positions `offset..offset + len` of heads
    /// `hd` wide, each `[1, 1, len, hd / 2]`; `None` without rotary positions. Queries and keys
    /// share them.
    fn rotations(
        &self,
        offset: usize,
        len: usize,
        hd: usize,
        device: &Device,
    ) -> Option<Rotations> {
        let rope = self.rope.as_ref()?;
        let half = hd / 2;
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in offset..offset + len {
            for i in 0..half {
                let freq = rope.base.powf(-2.0 * i as f64 / hd as f64);
                let angle = p as f64 * freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let table = |v: Vec<f32>| {
            Tensor::<2>::from_data(TensorData::new(v, [len, half]), device).unsqueeze::<4>()
        };
        Some((table(cos), table(sin)))
    }

    /// Rotates the head features (`[batch, heads, len, hd]`) by the angles of their positions.
    fn rotate(&self, x: Tensor<4>, rotations: &Option<Rotations>) -> Tensor<4> {
        let (Some(rope), Some((cos, sin))) = (&self.rope, rotations) else {
            return x;
        };
        let (cos, sin) = (cos.clone(), sin.clone());
        let [b, h, t, hd] = x.dims();
        let half = hd / 2;
        match rope.layout {
            RopeLayout::Halves => {
                let x1 = x.clone().narrow(3, 0, half);
                let x2 = x.narrow(3, half, half);
                let r1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
                let r2 = x2 * cos + x1 * sin;
                Tensor::cat(vec![r1, r2], 3)
            }
            RopeLayout::AdjacentPairs => {
                let pairs: Tensor<5> = x.reshape([b, h, t, half, 2]);
                let even = pairs.clone().narrow(4, 0, 1).reshape([b, h, t, half]);
                let odd = pairs.narrow(4, 1, 1).reshape([b, h, t, half]);
                let r_even = even.clone() * cos.clone() - odd.clone() * sin.clone();
                let r_odd = odd * cos + even * sin;
                Tensor::cat(
                    vec![r_even.unsqueeze_dim::<5>(4), r_odd.unsqueeze_dim::<5>(4)],
                    4,
                )
                .reshape([b, h, t, hd])
            }
        }
    }

    /// Key/value heads repeated to one per query head (grouped-query attention).
    fn widen(&self, x: Tensor<4>) -> Tensor<4> {
        let groups = self.heads / self.kv_heads;
        if groups == 1 {
            return x;
        }
        let [b, kv, t, hd] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .repeat_dim(2, groups)
            .reshape([b, kv * groups, t, hd])
    }

    /// Attention of the new positions of `x` (`[batch, len, dim]`) over themselves and, with a
    /// cache, every earlier position; each group of rows stands at its own position and
    /// extends its own cache by `len`. The projections run over the whole batch at once.
    fn attend(
        &self,
        x: Tensor<3>,
        groups: Vec<(Group, Option<&mut Option<KeyValues>>)>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let hd = d / self.heads;
        let q = Self::split(self.q.forward(x.clone()), self.heads);
        let k = Self::split(self.k.forward(x.clone()), self.kv_heads);
        let v = Self::split(self.v.forward(x), self.kv_heads);
        let whole = groups.len() == 1;
        let rows = |x: &Tensor<4>, r: &std::ops::Range<usize>| match whole {
            true => x.clone(),
            false => x.clone().narrow(0, r.start, r.len()),
        };
        let ys: Vec<Tensor<4>> = groups
            .into_iter()
            .map(|((range, offset), cache)| {
                let rotations = self.rotations(offset, t, hd, &q.device());
                let q = self.rotate(rows(&q, &range), &rotations);
                let k = self.rotate(rows(&k, &range), &rotations);
                let v = rows(&v, &range);
                let (k, v) = match cache {
                    Some(slot) => {
                        let (k, v) = match slot.take() {
                            Some((pk, pv)) => {
                                (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2))
                            }
                            None => (k, v),
                        };
                        *slot = Some((k.clone(), v.clone()));
                        (k, v)
                    }
                    None => (k, v),
                };
                self.attention(q, self.widen(k), self.widen(v))
            })
            .collect();
        let y = match whole {
            true => ys.into_iter().next().expect("one group"),
            false => Tensor::cat(ys, 0),
        };
        self.o.forward(y.swap_dims(1, 2).reshape([b, t, d]))
    }

    /// softmax(q·kᵀ/√d, causally masked) · v, with dropout on the weights in training.
    fn attention(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        if self.dropout.prob > 0.0 {
            return self.attend_with_dropout(q, k, v);
        }
        attention(
            q,
            k,
            v,
            None,
            None,
            AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: self.causal,
            },
        )
    }

    /// softmax(q·kᵀ/√d, causally masked) with dropout on the weights, then · v.
    fn attend_with_dropout(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let [b, h, t, hd] = q.dims();
        let total = k.dims()[2];
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
        let scores = if self.causal {
            // Query i (at position total - t + i) may not see keys after it.
            let mask =
                Tensor::<2, Bool>::triu_mask([t, total], (total - t) as i64 + 1, &scores.device());
            scores.mask_fill(
                mask.unsqueeze::<4>().expand([b, h, t, total]),
                f32::NEG_INFINITY,
            )
        } else {
            scores
        };
        let weights = super::dropout::drop(&self.dropout, activation::softmax(scores, 3));
        weights.matmul(v)
    }
}

/// Attention of a `[batch, len, dim]` batch; block `index` of the network, for its cache slot.
pub(crate) fn forward(
    a: &SelfAttention,
    x: Activation,
    ctx: &mut Context,
    index: usize,
) -> Activation {
    match x {
        Activation::R3(t) => {
            let groups = ctx.slots(t.dims()[0], index);
            Activation::R3(a.attend(t, groups))
        }
        other => unreachable!(
            "self_attention takes [batch, len, dim], got {:?}",
            other.dims()
        ),
    }
}

/// `q_proj`, `k_proj`, `v_proj` and `o_proj` (weights `[out, in]`, Hugging Face LLaMA's names).
pub(crate) fn tensors(
    mut a: SelfAttention,
    v: &mut impl TensorVisitor,
) -> Result<SelfAttention, String> {
    a.q = dense::tensors_under("q_proj", a.q, v)?;
    a.k = dense::tensors_under("k_proj", a.k, v)?;
    a.v = dense::tensors_under("v_proj", a.v, v)?;
    a.o = dense::tensors_under("o_proj", a.o, v)?;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotates one head of four features at position 3 and checks each layout's pairs
    /// against the formula written out by hand.
    #[test]
    fn rotary_layouts_rotate_their_pairs() {
        let device = Device::flex();
        let x = [0.3f32, -1.2, 0.7, 2.0];
        let base = 10000.0f64;
        let angle = |i: usize| 3.0 * base.powf(-2.0 * i as f64 / 4.0);
        for layout in [RopeLayout::Halves, RopeLayout::AdjacentPairs] {
            let a = init(
                &[4, 4],
                Options {
                    heads: 1,
                    kv_heads: 1,
                    causal: true,
                    rope: Some(Rope { base, layout }),
                    dropout: 0.0,
                    bias: false,
                },
                &device,
            );
            let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [1, 1, 1, 4]), &device);
            let rotations = a.rotations(3, 1, 4, &device);
            let got: Vec<f32> = a.rotate(t, &rotations).into_data().try_to_vec().unwrap();
            let pairs = match layout {
                RopeLayout::Halves => [(0, 2), (1, 3)],
                RopeLayout::AdjacentPairs => [(0, 1), (2, 3)],
            };
            let mut want = [0f32; 4];
            for (i, (p, q)) in pairs.into_iter().enumerate() {
                let (c, s) = (angle(i).cos() as f32, angle(i).sin() as f32);
                want[p] = x[p] * c - x[q] * s;
                want[q] = x[q] * c + x[p] * s;
            }
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{layout:?}: {got:?} against {want:?}");
            }
        }
    }
}
