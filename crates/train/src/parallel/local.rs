//! The local communicator: worker threads of one process, no system dependency.
//!
//! Every collective costs one barrier. Ranks deposit their buffers into one of two slot
//! sets (alternating, so a fast rank never overwrites what a slow one still reads), meet at
//! the barrier, then each sums all deposits itself in rank order, so every rank gets the
//! same bits on every run. The barrier spins briefly, then sleeps, and gives up after the
//! timeout naming the ranks that never arrived.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::{Collective, Communicator};
use crate::TrainError;

/// Makes the communicators of `size` worker threads; give one to each thread.
pub fn group(size: usize, timeout: Duration) -> Vec<Local> {
    let shared = Arc::new(Shared {
        size,
        timeout,
        generation: AtomicU64::new(0),
        arrivals: AtomicUsize::new(0),
        reached: (0..size).map(|_| AtomicU64::new(0)).collect(),
        stopped: AtomicBool::new(false),
        failure: Mutex::new(None),
        sleep: Mutex::new(()),
        turn: Condvar::new(),
        f32s: [Deposits::new(size), Deposits::new(size)],
        f64s: [Deposits::new(size), Deposits::new(size)],
        bytes: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
    });
    (0..size)
        .map(|rank| Local {
            rank,
            passed: 0,
            shared: shared.clone(),
        })
        .collect()
}

/// One worker thread's end of a local group.
pub struct Local {
    rank: usize,
    /// Barriers this rank has passed (all ranks agree on it between collectives).
    passed: u64,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    timeout: Duration,
    /// Barriers completed.
    generation: AtomicU64,
    /// Ranks arrived at the barrier in progress.
    arrivals: AtomicUsize,
    /// Per rank: barriers it has arrived at.
    reached: Vec<AtomicU64>,
    stopped: AtomicBool,
    failure: Mutex<Option<(usize, String)>>,
    sleep: Mutex<()>,
    turn: Condvar,
    f32s: [Deposits<f32>; 2],
    f64s: [Deposits<f64>; 2],
    bytes: [Mutex<Vec<u8>>; 2],
}

/// Per-rank inputs of one element type.
struct Deposits<T> {
    inputs: Vec<RwLock<Vec<T>>>,
}

impl<T> Deposits<T> {
    fn new(size: usize) -> Deposits<T> {
        Deposits {
            inputs: (0..size).map(|_| RwLock::new(Vec::new())).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spins this long for a barrier before sleeping: peers usually arrive within it.
const SPIN: Duration = Duration::from_micros(200);

impl Shared {
    fn failed(&self) -> TrainError {
        let (rank, reason) = lock(&self.failure)
            .clone()
            .unwrap_or((usize::MAX, "unknown".into()));
        TrainError::PeerFailed { rank, reason }
    }

    fn stop(&self, rank: usize, reason: String) {
        let mut failure = lock(&self.failure);
        if failure.is_none() {
            *failure = Some((rank, reason));
        }
        self.stopped.store(true, Ordering::Release);
        drop(failure);
        let _sleep = lock(&self.sleep);
        self.turn.notify_all();
    }
}

impl Local {
    /// Waits at the barrier until every rank arrives, a rank stops, or the timeout passes.
    fn wait(&mut self, at: Collective) -> Result<(), TrainError> {
        let shared = &*self.shared;
        if shared.stopped.load(Ordering::Acquire) {
            return Err(shared.failed());
        }
        let generation = self.passed;
        self.passed += 1;
        shared.reached[self.rank].store(generation + 1, Ordering::Release);
        if shared.arrivals.fetch_add(1, Ordering::AcqRel) + 1 == shared.size {
            shared.arrivals.store(0, Ordering::Relaxed);
            shared.generation.store(generation + 1, Ordering::Release);
            let _sleep = lock(&shared.sleep);
            shared.turn.notify_all();
            return Ok(());
        }
        let started = Instant::now();
        loop {
            if shared.generation.load(Ordering::Acquire) > generation {
                return Ok(());
            }
            if shared.stopped.load(Ordering::Acquire) {
                return Err(shared.failed());
            }
            let waited = started.elapsed();
            if waited < SPIN {
                std::hint::spin_loop();
                continue;
            }
            if waited >= shared.timeout {
                let missing: Vec<usize> = (0..shared.size)
                    .filter(|&r| shared.reached[r].load(Ordering::Acquire) <= generation)
                    .collect();
                let error = TrainError::CollectiveTimeout {
                    op: at.op.into(),
                    step: at.step,
                    seconds: shared.timeout.as_secs_f64(),
                    waiting_for: format!("rank(s) {missing:?}"),
                };
                shared.stop(self.rank, error.to_string());
                return Err(error);
            }
            let sleep = lock(&shared.sleep);
            if shared.generation.load(Ordering::Acquire) > generation
                || shared.stopped.load(Ordering::Acquire)
            {
                continue;
            }
            let slice = (shared.timeout - waited).min(Duration::from_millis(50));
            drop(
                shared
                    .turn
                    .wait_timeout(sleep, slice)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }

    /// The slot set of the next collective.
    fn parity(&self) -> usize {
        (self.passed % 2) as usize
    }

    fn all_reduce<T: Copy + std::ops::AddAssign>(
        &mut self,
        deposits: &[Deposits<T>; 2],
        buf: &mut [T],
        at: Collective,
    ) -> Result<(), TrainError> {
        let set = &deposits[self.parity()];
        {
            let mut mine = set.inputs[self.rank]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            mine.clear();
            mine.extend_from_slice(buf);
        }
        self.wait(at)?;
        for (rank, input) in set.inputs.iter().enumerate() {
            let input = input.read().unwrap_or_else(PoisonError::into_inner);
            if input.len() != buf.len() {
                return Err(TrainError::World(format!(
                    "{} at step {}: rank {rank} passed {} values, rank {} {}",
                    at.op,
                    at.step,
                    input.len(),
                    self.rank,
                    buf.len()
                )));
            }
            if rank == 0 {
                buf.copy_from_slice(&input);
            } else {
                buf.iter_mut().zip(input.iter()).for_each(|(b, v)| *b += *v);
            }
        }
        Ok(())
    }
}

impl Communicator for Local {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_f32(&mut self, buf: &mut [f32], at: Collective) -> Result<(), TrainError> {
        let shared = self.shared.clone();
        self.all_reduce(&shared.f32s, buf, at)
    }

    fn all_reduce_f64(&mut self, buf: &mut [f64], at: Collective) -> Result<(), TrainError> {
        let shared = self.shared.clone();
        self.all_reduce(&shared.f64s, buf, at)
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>, at: Collective) -> Result<(), TrainError> {
        let shared = self.shared.clone();
        let slot = &shared.bytes[self.parity()];
        if self.rank == 0 {
            lock(slot).clone_from(bytes);
        }
        self.wait(at)?;
        if self.rank != 0 {
            bytes.clone_from(&lock(slot));
        }
        Ok(())
    }

    fn barrier(&mut self, at: Collective) -> Result<(), TrainError> {
        self.wait(at)
    }

    fn abort(&mut self, reason: &str) {
        self.shared.stop(self.rank, reason.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Collective = Collective {
        op: "test",
        step: 7,
    };

    fn run<R: Send>(size: usize, f: impl Fn(Local) -> R + Sync) -> Vec<R> {
        std::thread::scope(|s| {
            let handles: Vec<_> = group(size, Duration::from_secs(30))
                .into_iter()
                .map(|c| s.spawn(|| f(c)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn all_reduce_sums_and_averages_on_every_rank() {
        let out = run(3, |mut c| {
            let r = c.rank() as f32;
            let mut sums = Vec::new();
            // Many rounds in a row: the alternating slots keep fast ranks from racing ahead.
            for round in 0..200 {
                let mut a = vec![r + round as f32, 10.0 * r, 1.0, 2.0, 3.0];
                c.all_reduce_f32(&mut a, AT).unwrap();
                sums.push(a);
            }
            let mut m = vec![r; 4];
            c.all_reduce_mean_f32(&mut m, AT).unwrap();
            let mut d = vec![0.5f64 + r as f64];
            c.all_reduce_f64(&mut d, AT).unwrap();
            (sums, m, d)
        });
        for (sums, m, d) in out {
            for (round, a) in sums.iter().enumerate() {
                assert_eq!(a, &vec![3.0 + 3.0 * round as f32, 30.0, 3.0, 6.0, 9.0]);
            }
            assert_eq!(m, vec![1.0; 4]);
            assert_eq!(d, vec![4.5]);
        }
    }

    #[test]
    fn broadcast_hands_out_rank_zeros_bytes() {
        let out = run(3, |mut c| {
            let mut got = Vec::new();
            for round in 0..50u8 {
                let mut bytes = vec![round + c.rank() as u8; c.rank() + 1];
                c.broadcast(&mut bytes, AT).unwrap();
                got.push(bytes);
            }
            c.barrier(AT).unwrap();
            got
        });
        for got in out {
            for (round, bytes) in got.iter().enumerate() {
                assert_eq!(bytes, &[round as u8]);
            }
        }
    }

    #[test]
    fn a_rank_that_stops_releases_the_others() {
        let out = run(3, |mut c| {
            if c.rank() == 1 {
                c.abort("it broke");
                return String::new();
            }
            c.barrier(AT).unwrap_err().to_string()
        });
        assert!(
            out[0].contains("rank 1") && out[0].contains("it broke"),
            "{}",
            out[0]
        );
    }

    #[test]
    fn a_missing_rank_times_out_with_its_name() {
        let mut comms = group(2, Duration::from_millis(100));
        let _absent = comms.pop();
        let err = comms[0].barrier(AT).unwrap_err().to_string();
        assert!(
            err.contains("test") && err.contains("step 7") && err.contains("[1]"),
            "{err}"
        );
    }
}
