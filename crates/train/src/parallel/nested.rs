//! Local workers inside every process of a larger world (`mpirun -np P … --workers N`): a
//! world of P·N ranks in which rank `p·N + t` is worker thread `t` of process `p`.
//!
//! A sum is reduced in three steps: over the process's threads, then over the processes
//! by each process's first thread (the leader, the only thread that talks to the outer
//! world), then handed back to the threads (the leader contributes the total, the others
//! zeros, so the second local sum is exact). Broadcasts and barriers go the same way.

use std::time::Duration;

use super::local::{self, Local};
use super::{Collective, Communicator};
use crate::TrainError;

/// One worker thread's view of the nested world.
pub struct Nested<G> {
    local: Local,
    /// The outer world, held by the leader (local rank 0) only.
    outer: Option<G>,
    process: usize,
    processes: usize,
}

/// The ranks of one process: `workers` threads, the first of which holds `outer`.
pub fn group<G: Communicator>(outer: G, workers: usize, timeout: Duration) -> Vec<Nested<G>> {
    let (process, processes) = (outer.rank(), outer.size());
    let mut outer = Some(outer);
    local::group(workers, timeout)
        .into_iter()
        .map(|local| Nested {
            local,
            outer: outer.take(),
            process,
            processes,
        })
        .collect()
}

impl<G: Communicator> Nested<G> {
    /// A sum over the whole world, through the leader.
    fn sum<T: Copy + Default>(
        &mut self,
        buf: &mut [T],
        at: Collective,
        local: fn(&mut Local, &mut [T], Collective) -> Result<(), TrainError>,
        outer: fn(&mut G, &mut [T], Collective) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        local(&mut self.local, buf, at)?;
        match &mut self.outer {
            Some(world) => outer(world, buf, at)?,
            None => buf.fill(T::default()),
        }
        local(&mut self.local, buf, at)
    }
}

impl<G: Communicator> Communicator for Nested<G> {
    fn rank(&self) -> usize {
        self.process * self.local.size() + self.local.rank()
    }

    fn size(&self) -> usize {
        self.processes * self.local.size()
    }

    fn all_reduce_f32(&mut self, buf: &mut [f32], at: Collective) -> Result<(), TrainError> {
        self.sum(buf, at, Local::all_reduce_f32, G::all_reduce_f32)
    }

    fn all_reduce_f64(&mut self, buf: &mut [f64], at: Collective) -> Result<(), TrainError> {
        self.sum(buf, at, Local::all_reduce_f64, G::all_reduce_f64)
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>, at: Collective) -> Result<(), TrainError> {
        if let Some(world) = &mut self.outer {
            world.broadcast(bytes, at)?;
        }
        self.local.broadcast(bytes, at)
    }

    fn barrier(&mut self, at: Collective) -> Result<(), TrainError> {
        self.local.barrier(at)?;
        if let Some(world) = &mut self.outer {
            world.barrier(at)?;
        }
        self.local.barrier(at)
    }

    fn abort(&mut self, reason: &str) {
        self.local.abort(reason);
        if let Some(world) = &mut self.outer {
            world.abort(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two "processes" of three threads each, the outer world being local threads too.
    #[test]
    fn sums_broadcasts_and_ranks_span_every_process() {
        let outer = local::group(2, Duration::from_secs(10));
        let at = Collective {
            op: "test",
            step: 0,
        };
        let results: Vec<(usize, usize, Vec<f32>, Vec<u8>)> = std::thread::scope(|s| {
            let handles: Vec<_> = outer
                .into_iter()
                .flat_map(|o| group(o, 3, Duration::from_secs(10)))
                .map(|mut comm| {
                    s.spawn(move || {
                        let mut buf = vec![comm.rank() as f32, 1.0];
                        comm.all_reduce_f32(&mut buf, at).unwrap();
                        let mut bytes = vec![comm.rank() as u8];
                        comm.broadcast(&mut bytes, at).unwrap();
                        comm.barrier(at).unwrap();
                        (comm.rank(), comm.size(), buf, bytes)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut ranks: Vec<usize> = results.iter().map(|r| r.0).collect();
        ranks.sort();
        assert_eq!(ranks, [0, 1, 2, 3, 4, 5]);
        for (_, size, sum, bytes) in results {
            assert_eq!(size, 6);
            assert_eq!(sum, [15.0, 6.0], "0+1+…+5 and six ones");
            assert_eq!(bytes, [0], "rank 0's bytes");
        }
    }
}
