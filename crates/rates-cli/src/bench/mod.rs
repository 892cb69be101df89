/*!
`rates bench`: which concurrency model wins on a workload, measured.

This file holds the options and the benchmark's loop; `cpu.rs` the CPU
workload, `child.rs` one measured run in a child process, `stats.rs` the
report's numbers, `render.rs` the table (aligned or Markdown) and the
chart; what is drawn from the runs' traces is in `views.rs`: the merged
trace, the timelines (`timeline.rs`, from the traces read by
`traces.rs`) and the HTML report (`html.rs`).

The chapter's last lesson is "measure it". This runs each selected model on
the same workload, one model at a time, `--repeat` times each, and reports
the median and the spread of: wall time, CPU time (user + system, from the
OS), peak memory, throughput, errors, the requests the server saw, and the
ratio to the model's ideal bound.

# One process per run

CPU time and peak memory are only clean per model if nothing else runs in
the process being measured, so every run is this program started again with
the hidden `bench-run` subcommand: it runs one model once and prints a
`Measured` as JSON (`child.rs`). The parent keeps the embedded server (whose work is
then not charged to the model), resets its counters before each run and
reads them after, so "requests" is what the server saw, retries included.

The child measures itself around the run only (not its start-up):
`getrusage(RUSAGE_SELF)` plus `RUSAGE_CHILDREN`, which covers the process
pool's workers once the pool has reaped them. Peak memory is the child's
peak resident set, plus, for the process pool, each worker's (the pool
size times the largest worker's peak: they all live for the whole run).

# The ideal bound

A model's concurrency `c` is 1 for `sync`, N for `thread-per-item` and
`--workers` otherwise. With I/O, N requests that each take at least
`latency` cannot finish in less than ⌈N/c⌉·latency, nor, throttled to
`rate` with `burst`, in less than (N − burst)/rate + latency. With CPU work,
N items of `t` each on `p = min(c, cores)` cores take at least ⌈N/p⌉·t.
The ratio wall ÷ bound is the model's overhead: 1.0 is perfect.

The embedded server also measures its own service time (the mean time
from a request's head to its answer, `Snapshot::api_time_ns`); the same
bound counted from it (`served_ideal_s`, the table's `ratio served`)
leaves out the server's own lateness, so what remains is the client's.
Not under `--sim-capacity`: the server's times then include uneven waits
for it, whose mean bounds nothing.

# The CPU workload

Each item is `cpu_work` (`cpu.rs`): a fixed number of rounds of a hash, no network.
It runs through each model's own mechanism (a loop, a thread per item, the
thread pool, two-way queues, the process pool, the dummy pool, tasks on
the multi-thread runtime, tasks awaiting the bridge). The process pool can
only run tasks its workers have registered, so [`CpuWork`] is registered
in `crate::worker_registry()`.
*/

mod child;
mod cpu;
mod html;
mod render;
mod stats;
mod timeline;
mod traces;
mod views;

pub(crate) use child::run_one;
pub use cpu::CpuWork;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rates_core::{Model, Workers};
use serde::{Deserialize, Serialize};

use crate::config::{Defaults, RunConfig, Target};
use crate::flags::{ClientFlags, SimFlags};
use crate::{Usage, exit, parse, plot};
use child::{Spec, run_child};
use cpu::seconds_per_round;
use render::{draw, markdown, table};
use stats::{ModelReport, Report, Run, WorkloadInfo, summarise};

/// What each item of a benchmark is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// A `GET /rates` request: waiting on the network (I/O-bound).
    Io,
    /// A fixed amount of pure computation, no network (CPU-bound).
    Cpu,
}

/// Options of `rates bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Models to compare, comma-separated, or "all".
    #[arg(long, default_value = "all")]
    pub models: String,
    /// What each item is: a request (io) or a fixed amount of computation (cpu).
    #[arg(long, value_enum, default_value = "io")]
    pub workload: Workload,
    /// Items per run: requests, or CPU items with --workload cpu.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Runs of each model; the median is reported, with the spread.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Items in flight at once for the pooled and async models ("unlimited": all; auto: learnt from latency).
    #[arg(long, default_value = "8", value_parser = parse::workers)]
    pub workers: parse::WorkersArg,
    /// Also run each model with --workers auto (and --rate auto when a
    /// rate limit is in play: --rate or --sim-rate-limit), as a row
    /// `MODEL auto` beside it: what learning the limits costs or saves.
    #[arg(long)]
    pub auto: bool,
    /// Time limit of one run of one model: past it the run is stopped and
    /// the model reported as failed.
    #[arg(long, value_parser = parse::duration, default_value = "10m")]
    pub run_limit: Duration,
    /// CPU workload: computation per item, in milliseconds on this machine.
    #[arg(long, default_value_t = 10.0, value_name = "MS")]
    pub cpu_ms: f64,
    /// CPU workload: rounds of the hash per item instead of --cpu-ms (the same work on every machine).
    #[arg(long, conflicts_with = "cpu_ms", value_name = "N")]
    pub work: Option<u64>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Print the table as Markdown instead (for documents whose figures are made by a command).
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Also draw the wall times as a bar chart in this SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Also draw each model's last run in this SVG file: a lane per worker, a bar per request, one time axis.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// Also write the whole report as one HTML page that needs nothing else: the table, the charts, the timelines, the command line and the machine.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write every run's trace to this file, merged (Chrome's Trace Event format, for Perfetto): each run a process named "MODEL run K", from 0.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientFlags,
    #[command(flatten)]
    pub sim: SimFlags,
}

/// Options of the hidden `rates bench-run`: one model, once.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run, as the JSON of a `Spec`.
    pub spec: String,
}

fn parse_models(s: &str) -> Result<Vec<Model>, Usage> {
    if s.trim() == "all" {
        return Ok(Model::ALL.to_vec());
    }
    let mut models = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let m: Model = name.parse().map_err(|e: rates_core::models::UnknownModel| Usage(format!("--models: {e}")))?;
        if !models.contains(&m) {
            models.push(m);
        }
    }
    if models.is_empty() {
        return Err(Usage(format!("--models: no model in '{s}'")));
    }
    Ok(models)
}

fn concurrency(model: Model, items: usize, workers: Workers) -> usize {
    match model {
        Model::Sync => 1,
        Model::ThreadPerItem => items.max(1),
        _ => workers.for_items(items),
    }
}

/// A row of the report: a model, with fixed or learnt limits.
struct Row {
    name: String,
    model: Model,
    /// `--workers auto`.
    auto_workers: bool,
    /// `--rate auto`, from this burst.
    auto_rate: Option<u32>,
}

/// `rates bench`.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    // Everything is checked before anything runs.
    let models = parse_models(&args.models)?;
    if args.requests == 0 {
        return Err(Usage("--requests: expected at least 1".into()).into());
    }
    if args.run_limit.is_zero() {
        return Err(Usage("--run-limit: expected more than 0".into()).into());
    }
    if args.repeat == 0 {
        return Err(Usage("--repeat: expected at least 1".into()).into());
    }
    if !(args.cpu_ms.is_finite() && args.cpu_ms > 0.0) {
        return Err(
            Usage(format!("--cpu-ms: expected a positive number of milliseconds, got '{}'", args.cpu_ms)).into()
        );
    }
    let plot_file = args.plot.as_deref().map(|p| plot::svg_file("--plot", p)).transpose()?;
    let mut views = views::Views::new(&args)?;
    let config = RunConfig::new(&args.client, &args.sim, args.workers, Defaults::BENCH)?;
    let io = args.workload == Workload::Io;
    let auto_workers = config.workers == parse::WorkersArg::Auto;
    if !io && (auto_workers || args.auto || config.auto_rate.is_some()) {
        return Err(
            Usage("--workload cpu: the auto limits learn from a server's answers; use --workload io".into()).into()
        );
    }
    if args.auto && config.queue.is_some() {
        return Err(Usage("--auto: not with --queue".into()).into());
    }

    let n = args.requests;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    // The simulated network of the embedded server, when the I/O workload uses it.
    let sim = config.embedded().filter(|_| io);
    let server = match sim {
        // Loaded only for the embedded server: a run's child process counts
        // the memory of the parent it was started from as its own peak.
        Some(sim) => {
            let ds = crate::dataset(args.client.data.as_ref())?;
            Some(rates_server::spawn(ds, sim.clone()).context("cannot start the embedded server")?)
        }
        None => None,
    };
    let api = match (&config.target, &server) {
        (Target::Remote(api), _) => Some(api.clone()),
        (Target::Embedded(_), s) => s.as_ref().map(|s| s.url().to_string()),
    };
    // The latency the bound is counted from: the embedded server's own, or
    // what an API answers in when asked alone (its network and its work).
    let latency = match (sim, &config.target, &api) {
        (Some(sim), _, _) => Some(sim.latency.as_secs_f64()),
        (None, Target::Remote(_), Some(api)) if io => probe_latency(api, config.client),
        _ => None,
    };
    let per_round = if io { 0.0 } else { seconds_per_round() };
    let rounds = match args.work {
        _ if io => 0,
        Some(w) => w.max(1),
        None => (args.cpu_ms / 1e3 / per_round).round().max(1.0) as u64,
    };
    let item_s = per_round * rounds as f64;

    let fixed_workers = match config.workers {
        parse::WorkersArg::Fixed(w) => w,
        parse::WorkersArg::Auto => Workers::Unlimited,
    };
    let workers = match fixed_workers {
        Workers::Bounded(w) => Some(w),
        Workers::Unlimited => None,
    };
    // The rate limit in play (the client's own, or the embedded server's):
    // what `--rate auto` has to learn, and what bounds the ideal time.
    let limit = rate_limit(&config, sim);
    let row = |model: Model, auto: bool| Row {
        name: if auto { format!("{model} auto") } else { model.to_string() },
        model,
        auto_workers: auto || auto_workers,
        auto_rate: config.auto_rate.map(|b| b.get()).or(limit.filter(|_| auto).map(|(_, b)| b)),
    };
    // On a queue there is one row, the queue: it drives `--workers`
    // items at once, as the pooled models do; `--models` is ignored.
    let rows: Vec<Row> = match &config.queue {
        Some(_) => vec![Row { name: "queue".to_owned(), ..row(Model::ThreadPool, false) }],
        // `sync` has one request in flight whatever the limit: no auto row.
        None if args.auto => models
            .iter()
            .flat_map(|m| std::iter::once(row(*m, false)).chain((*m != Model::Sync).then(|| row(*m, true))))
            .collect(),
        None => models.iter().map(|m| row(*m, false)).collect(),
    };
    let progress = ProgressBar::new((rows.len() * args.repeat) as u64);
    progress.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} runs, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let mut reports = Vec::new();
    let mut any_failed = false;
    for Row { name, model, auto_workers, auto_rate } in rows {
        let c = match auto_workers {
            true => concurrency(model, n, Workers::Bounded(rates_core::models::auto_pool_size(model))),
            false => concurrency(model, n, fixed_workers),
        };
        let mut report = ModelReport { model: name.clone(), concurrency: c, skipped: None, summary: None };
        progress.set_message(name.clone());
        let spec = Spec {
            model: model.to_string(),
            queue: config.queue.clone(),
            workload: args.workload,
            items: n,
            workers,
            auto_workers,
            auto_rate,
            api: api.clone().filter(|_| io),
            rate: config.throttle.map(|q| q.rate()).filter(|_| auto_rate.is_none()),
            burst: config.throttle.map_or(1, |q| q.burst()),
            retries: config.retry.retries,
            timeout_s: config.client.timeout.as_secs_f64(),
            rounds,
            trace: None,
        };
        let mut runs = Vec::new();
        for _ in 0..args.repeat {
            if let Some(s) = &server {
                s.metrics().reset();
            }
            let spec = Spec { trace: views.next_run(&name), ..spec.clone() };
            match run_child(&spec, args.run_limit) {
                Ok(measured) => {
                    let seen = server.as_ref().map(|s| s.metrics().snapshot());
                    runs.push(Run {
                        measured,
                        requests: seen.as_ref().map(|m| m.total()),
                        failed_requests: seen.as_ref().map(|m| m.total() - m.count(200)),
                        max_in_flight: seen.as_ref().map(|m| m.max_in_flight),
                        served_latency_s: seen
                            .filter(|m| m.api_answers > 0)
                            .map(|m| m.api_time_ns as f64 / m.api_answers as f64 / 1e9),
                    });
                }
                Err(e) => {
                    progress.suspend(|| eprintln!("rates: bench: {name}: {e}"));
                    views.stopped(&e);
                    report.skipped = Some(e);
                    any_failed = true;
                    break;
                }
            }
            progress.inc(1);
        }
        if report.skipped.is_none() {
            // A server that answers `capacity` at once serves no more.
            let served = sim.and_then(|o| o.capacity).map_or(c, |cap| c.min(cap));
            let ideal = if io { io_bound(limit, latency, n, served) } else { cpu_bound(n, c.min(cores), item_s) };
            // Under a capacity the server's times include the wait for it,
            // unevenly (the first requests wait nothing), and their mean
            // bounds nothing: no served bound then.
            let uncapped = io && sim.and_then(|o| o.capacity).is_none();
            let bound_of = |latency| uncapped.then(|| io_bound(limit, Some(latency), n, served)).flatten();
            report.summary = summarise(runs, n, ideal, bound_of);
        }
        reports.push(report);
    }
    progress.finish_and_clear();
    drop(server);

    let report = Report {
        workload: WorkloadInfo {
            kind: args.workload,
            items: n,
            repeat: args.repeat,
            workers: workers.map(std::num::NonZeroUsize::get),
            cores,
            api: args.client.api.clone(),
            latency_s: latency,
            latency_probed: latency.is_some() && sim.is_none(),
            jitter_s: sim.map(|o| o.jitter.as_secs_f64()),
            fail_rate: sim.map(|o| o.fail_rate),
            rate: config.throttle.map(|q| q.rate()).filter(|_| io),
            burst: config.throttle.map_or(1, |q| q.burst()),
            retries: config.retry.retries,
            rounds: (!io).then_some(rounds),
            item_ms: (!io).then_some(item_s * 1e3),
        },
        models: reports,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else if args.markdown {
        write!(out, "{}", markdown(&report))?;
    } else {
        write!(out, "{}", table(&report))?;
    }
    out.flush()?;
    if let Some(file) = plot_file {
        draw(file, &report)?;
    }
    views.write(&report)?;
    Ok(exit::code(if any_failed { exit::FAILED } else { exit::SUCCESS }))
}

/// The rate limit a run is held to: the lower of `--rate` and the embedded
/// server's own limit, as (rate, burst).
fn rate_limit(config: &RunConfig, sim: Option<&rates_server::ServerOptions>) -> Option<(f64, u32)> {
    let client = config.throttle.map(|q| (q.rate(), q.burst()));
    let server = sim.and_then(|o| o.rate_limit).map(|l| (l.rate(), l.burst()));
    match (client, server) {
        (Some(c), Some(s)) => Some(if s.0 < c.0 { s } else { c }),
        (c, s) => c.or(s),
    }
}

/// The I/O bound: ⌈N/c⌉·latency (the embedded server's, or the one
/// probed from `--api`), and (N − burst)/rate + latency under a rate limit.
fn io_bound(limit: Option<(f64, u32)>, latency: Option<f64>, n: usize, c: usize) -> Option<f64> {
    let latency = latency.unwrap_or(0.0);
    let waves = n.div_ceil(c.max(1)) as f64 * latency;
    let throttled = limit.map(|(rate, burst)| n.saturating_sub(burst as usize) as f64 / rate + latency);
    let bound = waves.max(throttled.unwrap_or(0.0));
    (bound > 0.0).then_some(bound)
}

/// How long one request to `api` takes when nothing else runs: the fastest
/// of a few, one after another on one kept-alive connection, after one to
/// open it. `None` if the API does not answer.
fn probe_latency(api: &str, config: rates_core::ClientConfig) -> Option<f64> {
    const PROBES: usize = 5;
    let client = rates_core::BlockingClient::new(api, config).ok()?;
    let req = rates_core::RateRequest { base: rates_core::Currency::EUR, symbols: vec![], date: None };
    client.fetch(&req).ok()?;
    (0..PROBES)
        .filter_map(|_| {
            let started = std::time::Instant::now();
            client.fetch(&req).ok().map(|_| started.elapsed().as_secs_f64())
        })
        .min_by(f64::total_cmp)
}

/// The CPU bound: ⌈N/p⌉ items of `item_s` each on `p` cores.
fn cpu_bound(n: usize, p: usize, item_s: f64) -> Option<f64> {
    let bound = n.div_ceil(p.max(1)) as f64 * item_s;
    (bound > 0.0).then_some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_parse_all_or_a_list() {
        assert_eq!(parse_models("all").ok(), Some(Model::ALL.to_vec()));
        assert_eq!(parse_models("sync, async,sync").ok(), Some(vec![Model::Sync, Model::Async]));
        assert!(parse_models("sync,threads").is_err_and(|e| e.0.contains("'threads'")));
        assert!(parse_models(",").is_err());
    }

    #[test]
    fn bounds() {
        assert_eq!(cpu_bound(10, 4, 0.5), Some(1.5));
        assert_eq!(concurrency(Model::Sync, 10, Workers::bounded(4).expect("not zero")), 1);
        assert_eq!(concurrency(Model::ThreadPerItem, 10, Workers::bounded(4).expect("not zero")), 10);
        assert_eq!(concurrency(Model::ThreadPool, 3, Workers::bounded(4).expect("not zero")), 3);
        // 10 requests, 2 at once, 50 ms each: 5 waves.
        assert_eq!(io_bound(None, Some(0.05), 10, 2), Some(0.25));
        // At 5/s with 5 at once, the last of 105 leaves 20 s in.
        assert_eq!(io_bound(Some((5.0, 5)), Some(0.05), 105, 100), Some(20.05));
    }
}
