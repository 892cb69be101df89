//! The CPU workload of `rates bench`: each item is [`cpu_work`], a fixed
//! number of rounds of a hash, run by every model through the same
//! dispatcher as the fetches ([`CpuJob`]), and by the process pool as a
//! registered [`CpuWork`] task.

use std::time::{Duration, Instant};

use concur::{Pool, Task};
use rates_core::models::{Job, Workers};
use serde::{Deserialize, Serialize};

/// One item of the CPU workload: `rounds` rounds of the SplitMix64 mixer
/// from `seed`, each depending on the last, so the work can be neither
/// skipped nor vectorised (about a nanosecond a round). Pure computation:
/// no allocation, no I/O, no shared state.
pub fn cpu_work(rounds: u64, seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..rounds {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x = z ^ (z >> 31);
    }
    x
}

/// [`cpu_work`] as a pool [`Task`], so the process pool (and the dummy
/// pool, through the same `Pool` interface) can run it. A `rates` worker
/// process runs it only if `crate::worker_registry()` registers it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CpuWork {
    /// Rounds of the hash.
    pub rounds: u64,
    /// Where the hash starts (the item's index).
    pub seed: u64,
}

impl Task for CpuWork {
    type Output = u64;
    const NAME: &'static str = "rates-cli::bench::CpuWork";

    fn run(self) -> u64 {
        cpu_work(self.rounds, self.seed)
    }
}

/// Seconds one round of [`cpu_work`] takes on this machine (timing
/// doubling batches until one lasts 50 ms).
pub(super) fn seconds_per_round() -> f64 {
    let mut rounds: u64 = 1 << 14;
    loop {
        let started = Instant::now();
        std::hint::black_box(cpu_work(std::hint::black_box(rounds), 0));
        let took = started.elapsed();
        if took >= Duration::from_millis(50) || rounds >= 1 << 40 {
            return took.as_secs_f64() / rounds as f64;
        }
        rounds *= 2;
    }
}

/// The CPU workload as a [`Job`]: every model runs it through the same
/// dispatcher as the fetches, an item being its seed.
pub(super) struct CpuJob {
    pub(super) rounds: u64,
}

impl Job for CpuJob {
    type Item = u64;
    type Output = Result<u64, String>;
    type Shared = ();

    fn run(&self, &seed: &u64) -> Self::Output {
        Ok(cpu_work(self.rounds, seed))
    }

    fn run_on(&self, pool: &(impl Pool + Sync), &seed: &u64) -> Self::Output {
        pool.apply_async(CpuWork { rounds: self.rounds, seed }).wait().map_err(|e| e.to_string())
    }

    fn shared(&self, _: Workers) -> Result<(), String> {
        Ok(())
    }

    /// Computed inline: the work occupies the runtime's threads (one per
    /// core) while it runs, as CPU work on an event loop does.
    fn computes(&self) -> bool {
        true
    }

    async fn run_async(&self, (): &(), &seed: &u64) -> Self::Output {
        Ok(cpu_work(self.rounds, seed))
    }

    fn failed(&self, why: String) -> Self::Output {
        Err(why)
    }

    fn cancelled(&self) -> Self::Output {
        Err("cancelled".into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rates_core::{Model, Workers};

    use super::*;

    #[test]
    fn every_cpu_model_computes_the_same_values() {
        let want: Vec<Result<u64, String>> = (0..7).map(|i| Ok(cpu_work(1000, i))).collect();
        for &model in Model::ALL {
            if model == Model::ProcessPool {
                // Needs the `rates` binary as its worker: tests/bench.rs.
                continue;
            }
            let seeds: Vec<u64> = (0..7).collect();
            let got = rates_core::models::run(
                model,
                &Arc::new(CpuJob { rounds: 1000 }),
                &seeds,
                Workers::bounded(3).expect("not zero"),
            );
            assert_eq!(got, want, "{model}");
        }
    }
}
