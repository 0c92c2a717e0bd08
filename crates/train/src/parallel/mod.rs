//! Data-parallel training: ranks that each train on a shard of every batch and agree
//! through a [`Communicator`] (Horovod / PyTorch DDP semantics).
//!
//! Every rank starts from rank 0's snapshot, draws the same seeded permutation each epoch
//! and takes its own contiguous share of every global batch. Its loss is scaled by its share
//! of the batch, so the summed gradients are exactly the gradient of the whole batch, whatever
//! the number of ranks; the sums travel in fusion buckets, one all-reduce each, after the
//! backward pass. Only rank 0 writes logs, checkpoints and results.

pub mod gradients;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod nested;

use std::time::Duration;

use crate::TrainError;

/// Which collective a rank is in, for the message when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collective {
    /// The operation, e.g. `all-reduce(gradients)`.
    pub op: &'static str,
    /// The optimiser step it belongs to.
    pub step: u64,
}

/// How ranks talk: collectives over f32, f64 and bytes, each bounded by a timeout.
pub trait Communicator {
    /// This rank, 0-based.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Sums `buf` element-wise over all ranks, in place on every rank.
    fn all_reduce_f32(&mut self, buf: &mut [f32], at: Collective) -> Result<(), TrainError>;
    /// Sums `buf` element-wise over all ranks, in place on every rank.
    fn all_reduce_f64(&mut self, buf: &mut [f64], at: Collective) -> Result<(), TrainError>;
    /// Replaces `bytes` on every rank with rank 0's.
    fn broadcast(&mut self, bytes: &mut Vec<u8>, at: Collective) -> Result<(), TrainError>;
    /// Waits until every rank has arrived.
    fn barrier(&mut self, at: Collective) -> Result<(), TrainError>;
    /// Tells the other ranks that this one stops, so that none waits for it.
    fn abort(&mut self, reason: &str);

    /// Averages `buf` element-wise over all ranks, in place on every rank.
    fn all_reduce_mean_f32(&mut self, buf: &mut [f32], at: Collective) -> Result<(), TrainError> {
        self.all_reduce_f32(buf, at)?;
        let n = self.size() as f32;
        buf.iter_mut().for_each(|v| *v /= n);
        Ok(())
    }
}

/// A world of one: every collective is a no-op.
pub struct Solo;

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&mut self, _: &mut [f32], _: Collective) -> Result<(), TrainError> {
        Ok(())
    }
    fn all_reduce_f64(&mut self, _: &mut [f64], _: Collective) -> Result<(), TrainError> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut Vec<u8>, _: Collective) -> Result<(), TrainError> {
        Ok(())
    }
    fn barrier(&mut self, _: Collective) -> Result<(), TrainError> {
        Ok(())
    }
    fn abort(&mut self, _: &str) {}
}

/// Settings of data-parallel training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distributed {
    /// Gradient values per all-reduce.
    pub bucket_floats: usize,
    /// Longest wait of any collective.
    pub timeout: Duration,
}

impl Distributed {
    /// From the spec's `[train.distributed]` table.
    pub fn from_spec(spec: &modelforge_spec::DistributedSpec) -> Distributed {
        Distributed {
            bucket_floats: ((spec.bucket_mb * (1 << 20) as f64) / 4.0).max(1.0) as usize,
            timeout: Duration::from_secs_f64(spec.timeout_s),
        }
    }
}

/// This rank's contiguous share of a global batch: rows `[r·n/N, (r+1)·n/N)`.
pub fn shard(rows: &[usize], rank: usize, size: usize) -> &[usize] {
    let n = rows.len();
    &rows[rank * n / size..(rank + 1) * n / size]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_once_in_order() {
        let rows: Vec<usize> = (0..10).collect();
        for size in 1..=4 {
            let joined: Vec<usize> = (0..size)
                .flat_map(|r| shard(&rows, r, size).to_vec())
                .collect();
            assert_eq!(joined, rows, "size {size}");
        }
        // A batch smaller than the world leaves some ranks without rows.
        assert!(shard(&rows[..1], 0, 3).is_empty());
        assert_eq!(shard(&rows[..1], 2, 3), &[0]);
    }

    #[test]
    fn bucket_size_from_mib() {
        let d = Distributed::from_spec(&modelforge_spec::DistributedSpec {
            bucket_mb: 1.0,
            timeout_s: 2.5,
        });
        assert_eq!(d.bucket_floats, 262_144);
        assert_eq!(d.timeout, Duration::from_millis(2500));
    }
}
