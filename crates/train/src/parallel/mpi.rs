//! The MPI communicator (cargo feature `mpi`): one rank per process under `mpirun`, over the
//! system's Open MPI or MPICH.
//!
//! Every collective is started non-blocking and polled against the deadline, so a stopped
//! or hung peer cannot block a rank forever: when the deadline passes the rank prints which
//! collective on which step timed out and ends the whole job with `MPI_Abort`. (A pending
//! MPI request cannot be abandoned safely, so a timeout never returns.) A rank that fails or
//! exits likewise aborts the job, and `mpirun` names it.

use std::time::{Duration, Instant};

use mpi::collective::{CommunicatorCollectives as _, Root as _, SystemOperation};
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::request::{Request, Scope};
use mpi::topology::Communicator as _;
use mpi::topology::SimpleCommunicator;

use super::{Collective, Communicator};
use crate::TrainError;

/// Exit code of a job ended by a collective timeout.
const TIMED_OUT: i32 = 4;
/// Exit code of a job ended because a rank failed.
const FAILED: i32 = 2;

/// This process's rank in the MPI world; holds MPI initialised until dropped.
pub struct Mpi {
    world: SimpleCommunicator,
    timeout: Duration,
    _universe: Universe,
}

// SAFETY: MPI is initialised with MPI_THREAD_SERIALIZED (checked in `init`), which allows
// calls from any thread as long as no two run at once. An `Mpi` is owned by exactly one
// thread at a time (the leader of the process's workers), and every call goes through
// `&mut self` or `&self` on that owner, so calls never overlap.
unsafe impl Send for Mpi {}

impl Mpi {
    /// Whether this process was started by `mpirun`/`mpiexec` (Open MPI, MPICH, PMIx).
    pub fn launched() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    }

    /// Initialises MPI for calls from any one thread at a time (the leader of a process's
    /// local workers runs on a worker thread); collectives wait at most `timeout`.
    pub fn init(timeout: Duration) -> Result<Mpi, TrainError> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| {
                TrainError::World("MPI was already initialised in this process".into())
            })?;
        if threading < mpi::Threading::Serialized {
            return Err(TrainError::World(format!(
                "this MPI library gives thread level {threading:?}, but local workers need Serialized — use one worker per process"
            )));
        }
        Ok(Mpi {
            world: universe.world(),
            timeout,
            _universe: universe,
        })
    }

    /// Prints why this rank stops (in one write, so mpirun does not interleave it with
    /// other output) and ends the whole job.
    fn stop(&self, reason: &str, code: i32) -> ! {
        use std::io::Write as _;
        let line = format!("error: rank {}: {reason}\n", self.world.rank());
        let _ = std::io::stderr().write_all(line.as_bytes());
        self.world.abort(code)
    }

    /// Sums `buf` over all ranks, in place.
    fn sum<T: Equivalence + Clone>(&self, buf: &mut [T], at: Collective) {
        let send = buf.to_vec();
        mpi::request::scope(|scope| {
            let request =
                self.world
                    .immediate_all_reduce_into(scope, &send[..], buf, SystemOperation::sum());
            self.finish(request, at);
        });
    }

    /// Polls a started collective until it completes or the deadline passes.
    fn finish<'a, D: ?Sized, S: Scope<'a>>(&self, mut request: Request<'a, D, S>, at: Collective) {
        let deadline = Instant::now() + self.timeout;
        let mut polls = 0u32;
        loop {
            // Non-blocking collectives advance only inside MPI calls: poll without sleeping
            // (a rank has nothing else to do meanwhile), yielding to co-located ranks.
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(256) {
                if Instant::now() >= deadline {
                    let error = TrainError::CollectiveTimeout {
                        op: at.op.into(),
                        step: at.step,
                        seconds: self.timeout.as_secs_f64(),
                        waiting_for: "its peers".into(),
                    };
                    self.stop(&error.to_string(), TIMED_OUT);
                }
                std::thread::yield_now();
            }
        }
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_f32(&mut self, buf: &mut [f32], at: Collective) -> Result<(), TrainError> {
        self.sum(buf, at);
        Ok(())
    }

    fn all_reduce_f64(&mut self, buf: &mut [f64], at: Collective) -> Result<(), TrainError> {
        self.sum(buf, at);
        Ok(())
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>, at: Collective) -> Result<(), TrainError> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        mpi::request::scope(|scope| {
            let request = root.immediate_broadcast_into(scope, &mut len);
            self.finish(request, at);
        });
        bytes.resize(len as usize, 0);
        mpi::request::scope(|scope| {
            let request = root.immediate_broadcast_into(scope, &mut bytes[..]);
            self.finish(request, at);
        });
        Ok(())
    }

    fn barrier(&mut self, at: Collective) -> Result<(), TrainError> {
        let request = self.world.immediate_barrier();
        self.finish(request, at);
        Ok(())
    }

    fn abort(&mut self, reason: &str) {
        self.stop(reason, FAILED);
    }
}
