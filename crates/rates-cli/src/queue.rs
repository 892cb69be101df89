//! The queue's side of `rates`: `rates queue status`, and the run of a
//! `fetch` or `history` whose requests go to a queue's workers
//! (`--queue`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use concur::{QueueStatus, RedisPool, RedisThrottle};
use rates::models::Job;
use rates::models::SharedLimit;
use rates::{Cancel, Workers, models};

use crate::config::Quota;
use crate::{config, flags};

/// `rates queue`: look at a queue.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// The subcommands of `rates queue`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Tasks queued, in flight per worker, dead letters, and workers seen.
    Status(flags::QueueFlags),
}

pub(crate) fn run_command(args: QueueArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        QueueCommand::Status(q) => {
            let url = config::queue_url(&q.queue)?;
            let status = concur::queue_status(&url, concur::queue::DEFAULT_NAMESPACE)?;
            print!("{}", render(&status, now()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The status as lines for a terminal.
fn render(status: &QueueStatus, now: u64) -> String {
    let mut out = String::new();
    let in_flight: u64 = status.in_flight.iter().map(|(_, n)| n).sum();
    let _ = writeln!(out, "queued: {}", status.queued);
    let _ = writeln!(out, "in flight: {in_flight}");
    for (worker, n) in &status.in_flight {
        let _ = writeln!(out, "  {worker}: {n}");
    }
    let _ = writeln!(out, "dead letters: {}", status.dead_letters);
    let _ = writeln!(out, "workers seen: {}", status.workers.len());
    for w in &status.workers {
        let _ = writeln!(out, "  {}: {}s ago", w.name, now.saturating_sub(w.last_seen));
    }
    out
}

/// Runs `items` of `job` on the workers of the queue at `url`, `workers`
/// in flight at once. What the job keeps around each task (the fetcher's
/// throttle and retries) stays here, so `--rate` holds across every worker
/// on every host; cancelling the job abandons what is still queued.
pub(crate) fn run<J: Job>(url: &str, job: &J, items: &[J::Item], workers: Workers) -> anyhow::Result<Vec<J::Output>> {
    let mut pool = RedisPool::builder(url);
    if let Some(cancel) = job.cancel() {
        pool = pool.cancel_on(cancel.clone());
    }
    let pool = pool.build().with_context(|| format!("cannot use the queue at {url}"))?;
    // Not an error: workers may be started after the run.
    if concur::queue_status(url, concur::queue::DEFAULT_NAMESPACE).is_ok_and(|s| s.workers.is_empty()) {
        eprintln!("rates: no worker serves {url} yet: the requests wait for one (start `rates worker --queue {url}`)");
    }
    Ok(models::run_on_pool(&pool, job, items, workers))
}

/// `--rate` with `--queue`: a limit kept on the queue's broker, shared by
/// every caller of the same API through it.
struct SharedThrottle(RedisThrottle);

impl SharedLimit for SharedThrottle {
    fn acquire_cancellable(&self, cancel: &Cancel) -> Result<(), concur::Cancelled> {
        self.0.acquire_cancellable(cancel)
    }
}

/// The shared limit of `quota` for requests to `api`, on the broker at `url`.
pub(crate) fn shared_limit(url: &str, api: &str, quota: Quota) -> anyhow::Result<Arc<dyn SharedLimit>> {
    let key = format!("{}:limit:{api}", concur::queue::DEFAULT_NAMESPACE);
    let throttle = RedisThrottle::new(url, &key, quota.rate(), quota.burst())
        .with_context(|| format!("cannot use the queue at {url}"))?;
    Ok(Arc::new(SharedThrottle(throttle)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let mut status = QueueStatus::default();
        status.queued = 3;
        status.in_flight = vec![("a-1".into(), 2), ("b-2".into(), 1)];
        status.dead_letters = 1;
        let text = render(&status, 100);
        assert_eq!(text, "queued: 3\nin flight: 3\n  a-1: 2\n  b-2: 1\ndead letters: 1\nworkers seen: 0\n");
    }
}
