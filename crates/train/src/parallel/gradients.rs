//! Gradients summed over ranks in fusion buckets: parameters in module order are packed
//! into flat f32 buffers of about the bucket size, one all-reduce each.

use modelforge_model::burn::module::{Module, ModuleVisitor, Param, ParamId};
use modelforge_model::burn::optim::GradientsParams;
use modelforge_model::burn::tensor::{Device, Tensor, TensorData};

use super::{Collective, Communicator};
use crate::TrainError;

/// Every float parameter of a module: its id and shape, in module order.
#[derive(Default)]
pub struct ParamList(pub Vec<(ParamId, Vec<usize>)>);

impl ParamList {
    /// The parameters of `module`.
    pub fn of<M: Module>(module: &M) -> ParamList {
        let mut list = ParamList::default();
        module.visit(&mut list);
        list
    }

    /// Number of values over all parameters.
    pub fn values(&self) -> usize {
        self.0
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

impl ModuleVisitor for ParamList {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, param.val().dims().to_vec()));
    }
}

fn take<const D: usize>(grads: &mut GradientsParams, id: ParamId, out: &mut Vec<f32>, n: usize) {
    match grads.remove::<D>(id) {
        Some(g) => {
            let data = g.into_data();
            match data.as_slice::<f32>() {
                Ok(values) => out.extend_from_slice(values),
                Err(_) => out.extend(data.iter::<f32>()),
            }
        }
        None => out.resize(out.len() + n, 0.0),
    }
}

fn put<const D: usize>(
    grads: &mut GradientsParams,
    id: ParamId,
    values: &[f32],
    shape: &[usize],
    device: &Device,
) {
    let data = TensorData::new(values.to_vec(), shape.to_vec());
    grads.register::<D>(id, Tensor::<D>::from_data(data, device));
}

/// Sums the gradients of every rank, in place; a parameter without a gradient (a rank with
/// no rows in this batch) contributes zeros.
pub fn all_reduce(
    params: &ParamList,
    grads: &mut GradientsParams,
    comm: &mut dyn Communicator,
    bucket_floats: usize,
    step: u64,
    device: &Device,
) -> Result<(), TrainError> {
    let at = Collective {
        op: "all-reduce(gradients)",
        step,
    };
    let mut start = 0;
    while start < params.0.len() {
        // One bucket: parameters from `start` until the bucket is full (at least one).
        let mut end = start;
        let mut bucket = Vec::new();
        while end < params.0.len() && (end == start || bucket.len() < bucket_floats) {
            let (id, shape) = &params.0[end];
            let n = shape.iter().product();
            match shape.len() {
                1 => take::<1>(grads, *id, &mut bucket, n),
                2 => take::<2>(grads, *id, &mut bucket, n),
                3 => take::<3>(grads, *id, &mut bucket, n),
                4 => take::<4>(grads, *id, &mut bucket, n),
                rank => unreachable!("parameters have rank 1 to 4, not {rank}"),
            }
            end += 1;
        }
        comm.all_reduce_f32(&mut bucket, at)?;
        let mut offset = 0;
        for (id, shape) in &params.0[start..end] {
            let n: usize = shape.iter().product();
            let values = &bucket[offset..offset + n];
            match shape.len() {
                1 => put::<1>(grads, *id, values, shape, device),
                2 => put::<2>(grads, *id, values, shape, device),
                3 => put::<3>(grads, *id, values, shape, device),
                _ => put::<4>(grads, *id, values, shape, device),
            }
            offset += n;
        }
        start = end;
    }
    Ok(())
}
