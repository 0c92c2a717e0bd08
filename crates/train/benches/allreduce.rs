//! All-reduce bandwidth of the communicators, reported as nccl-tests does: for a buffer of
//! S bytes taking t seconds, algbw = S / t and busbw = algbw · 2(N−1)/N (the bytes each
//! rank must move in an optimal ring, so figures compare across rank counts).
//!
//! `cargo bench -p modelforge-train --bench allreduce -- --ranks 2` (local worker threads);
//! with the `mpi` feature, `mpirun -np 2 <bench binary> --mpi` measures MPI ranks instead.

use std::time::{Duration, Instant};

use modelforge_train::parallel::{Collective, Communicator, local};

const AT: Collective = Collective {
    op: "bench",
    step: 0,
};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Times all-reduces of growing buffers on one rank; rank 0 prints a line per size.
fn measure(comm: &mut dyn Communicator) {
    let n = comm.size();
    if comm.rank() == 0 {
        println!(
            "{:>12} {:>10} {:>12} {:>12}   ({n} ranks)",
            "bytes", "time µs", "algbw GB/s", "busbw GB/s"
        );
    }
    for power in (10..=26).step_by(2) {
        let floats = (1usize << power) / 4;
        let mut buf = vec![1.0f32; floats];
        let rounds = (1 << 28 >> power).clamp(5, 200);
        comm.all_reduce_f32(&mut buf, AT).expect("warm-up");
        comm.barrier(AT).expect("barrier");
        let started = Instant::now();
        for _ in 0..rounds {
            comm.all_reduce_f32(&mut buf, AT).expect("all-reduce");
        }
        let seconds = started.elapsed().as_secs_f64() / rounds as f64;
        let mut worst = [seconds];
        // Averaged over the ranks.
        comm.all_reduce_f64(&mut worst, AT).expect("reduce time");
        let seconds = worst[0] / n as f64;
        if comm.rank() == 0 {
            let bytes = (floats * 4) as f64;
            let algbw = bytes / seconds / 1e9;
            let busbw = algbw * 2.0 * (n as f64 - 1.0) / n as f64;
            println!(
                "{:>12} {:>10.1} {:>12.2} {:>12.2}",
                floats * 4,
                seconds * 1e6,
                algbw,
                busbw
            );
        }
    }
}

fn main() {
    #[cfg(feature = "mpi")]
    if std::env::args().any(|a| a == "--mpi") {
        let mut world = modelforge_train::parallel::mpi::Mpi::init(Duration::from_secs(300))
            .expect("MPI starts");
        measure(&mut world);
        return;
    }
    let ranks: usize = arg("--ranks").and_then(|v| v.parse().ok()).unwrap_or(2);
    let comms = local::group(ranks, Duration::from_secs(300));
    std::thread::scope(|s| {
        for mut comm in comms {
            s.spawn(move || measure(&mut comm));
        }
    });
}
