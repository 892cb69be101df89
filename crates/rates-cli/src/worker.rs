//! `rates worker`: serves a Redis queue with the tasks of the `rates`
//! binary, on any host that reaches the broker, until SIGTERM or Ctrl-C,
//! then drains (reads no more, finishes and acknowledges what it holds)
//! and exits 0. A second signal ends it at once ([`crate::exit::on_signals`]).

use std::num::{NonZeroU32, NonZeroUsize};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use concur::CancelToken;
use concur_redis::WorkerOptions;

use crate::{Usage, exit, flags, parse};

/// Options of `rates worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub queue: flags::QueueFlags,
    /// Tasks run at once by this worker.
    #[arg(long, default_value = "4", value_parser = parse::concurrency, value_name = "N")]
    pub concurrency: NonZeroUsize,
    /// Take over a task another worker has left idle this long (it died).
    #[arg(long, value_parser = parse::duration, default_value = "30s", value_name = "T")]
    pub claim_after: Duration,
    /// A task delivered more than this many times goes to the dead letters.
    #[arg(long, default_value = "5", value_name = "N")]
    pub max_deliveries: NonZeroU32,
    /// An API this worker's tasks may ask (repeat for several; HOST:* for
    /// any port); any other is the task's error, without a request
    /// [default: the public service, https://api.vatcomply.com, only].
    #[arg(long = "allow-api", value_name = "URL")]
    pub allow_api: Vec<String>,
    /// The longest a task's request may take (connecting included), whatever
    /// the task asks; at most 60s. A task is ended 10s after it.
    #[arg(long, value_parser = parse::timeout, default_value = "10s", value_name = "T")]
    pub timeout: Duration,
    /// The queue's shared key (16 bytes or more, the same on callers and
    /// workers) from the first line of this file; without it,
    /// RATES_QUEUE_KEY. Tasks without its signature go to the dead letters
    /// unrun; a broker not on this host is refused without one.
    #[arg(long, value_name = "PATH", value_parser = crate::queue::key_file)]
    pub queue_key_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub trace: flags::TraceFlag,
}

/// The longest `--timeout` of a worker.
const MAX_WORKER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a task may run past its request's timeout before it is ended.
const TASK_MARGIN: Duration = Duration::from_secs(10);

pub(crate) fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let url = crate::queue_url::of_queue(&args.queue)?;
    if args.timeout > MAX_WORKER_TIMEOUT {
        return Err(Usage(format!("--timeout: at most {MAX_WORKER_TIMEOUT:?} for a worker")).into());
    }
    let allow = if args.allow_api.is_empty() {
        vec![rates_core::PUBLIC_API.to_owned()]
    } else {
        args.allow_api
            .iter()
            .map(|a| {
                // `http://HOST:*`: that host on any port.
                let (base, any_port) = a.strip_suffix(":*").map_or((a.as_str(), ""), |b| (b, ":*"));
                rates_core::parse_api_url(base).map(|b| format!("{b}{any_port}")).map_err(|_| {
                    Usage(format!("--allow-api: invalid URL '{a}': expected http(s)://HOST[:PORT] or http(s)://HOST:*"))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let key = crate::queue::key()?;
    // Each task on the track of the thread that ran it, named after this
    // host and process, so that the traces of a host's workers line up.
    let me = format!("worker {} pid {}", host(), std::process::id());
    let trace = args.trace.open(&me)?;
    if let Some(t) = &trace {
        t.set_thread_prefix(format!("{me} thread"));
        rates_core::models::FetchOnce::trace_to(t.clone());
    }
    eprintln!("rates worker: tasks may ask {} (--allow-api), each request within {:?}", allow.join(", "), args.timeout);
    rates_core::models::FetchOnce::serve_with(
        allow,
        rates_core::ClientConfig { connect_timeout: args.timeout, timeout: args.timeout },
    );
    let stop = CancelToken::new();
    let signals = exit::on_signals("rates worker", {
        let stop = stop.clone();
        move |signal| {
            eprintln!("rates worker: {}: draining", signal.signal());
            stop.cancel();
        }
    })?;
    let options = WorkerOptions::new()
        .concurrency(args.concurrency)
        .claim_after(args.claim_after)
        .max_deliveries(args.max_deliveries)
        .task_limit(args.timeout + TASK_MARGIN)
        .stop_on(stop);
    let options = match key {
        Some(key) => options.key(key),
        None => options,
    };
    let served = concur_redis::serve_queue(&url, crate::worker_registry(), options);
    // Ends the signal watch, whether or not a signal came.
    drop(signals);
    trace.as_ref().map(rates_core::Trace::finish).transpose()?;
    match served {
        Err(concur_redis::QueueError::KeyRequired(host)) => Err(crate::queue::key_required(&host)),
        other => other.map(|_| exit::code(exit::SUCCESS)).map_err(Into::into),
    }
}

/// This host's name, as a trace names the worker.
fn host() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}
