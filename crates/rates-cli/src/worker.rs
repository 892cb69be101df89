//! `rates worker`: serves a Redis queue with the tasks of the `rates`
//! binary, on any host that reaches the broker, until SIGTERM or Ctrl-C,
//! then drains (reads no more, finishes and acknowledges what it holds)
//! and exits 0. A second signal ends it at once.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use concur::{CancelToken, WorkerOptions};

use crate::{Usage, cli, flags};

/// Options of `rates worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub queue: flags::QueueFlags,
    /// Tasks run at once by this worker.
    #[arg(long, default_value = "4", value_name = "N")]
    pub concurrency: usize,
    /// Take over a task another worker has left idle this long (it died).
    #[arg(long, value_parser = cli::duration, default_value = "30s", value_name = "T")]
    pub claim_after: Duration,
    /// A task delivered more than this many times goes to the dead letters.
    #[arg(long, default_value = "5", value_name = "N")]
    pub max_deliveries: u32,
}

pub(crate) fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let url = crate::queue_url::of_queue(&args.queue)?;
    if args.concurrency == 0 || args.max_deliveries == 0 {
        return Err(Usage("--concurrency and --max-deliveries must be at least 1".into()).into());
    }
    let (stop, done) = (CancelToken::new(), CancelToken::new());
    let watcher = stop_on_signals(stop.clone(), done.clone())?;
    let options = WorkerOptions::new()
        .concurrency(args.concurrency)
        .claim_after(args.claim_after)
        .max_deliveries(args.max_deliveries)
        .stop_on(stop.clone());
    let served = concur::serve_queue(&url, crate::worker_registry(), options);
    // Ends the signal watcher, whether or not a signal came.
    done.cancel();
    let _ = watcher.join();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// A thread that cancels `stop` on the first SIGTERM or SIGINT and ends the
/// process on the second; it ends when `done` is cancelled.
fn stop_on_signals(stop: CancelToken, done: CancelToken) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut term, mut int) = {
        let _in_runtime = rt.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
    };
    Ok(std::thread::spawn(move || {
        rt.block_on(async {
            let mut signals = 0;
            loop {
                let name = tokio::select! {
                    Some(()) = term.recv() => "SIGTERM",
                    Some(()) = int.recv() => "SIGINT",
                    () = done.cancelled() => return,
                };
                signals += 1;
                if signals > 1 {
                    eprintln!("rates worker: {name} again: stopping at once");
                    std::process::exit(if name == "SIGTERM" { 143 } else { 130 });
                }
                eprintln!("rates worker: {name}: draining");
                stop.cancel();
            }
        });
    }))
}
