/*!
`rates bench`: which concurrency model wins on a workload, measured.

The chapter's last lesson is "measure it". This runs each selected model on
the same workload, one model at a time, `--repeat` times each, and reports
the median and the spread of: wall time, CPU time (user + system, from the
OS), peak memory, throughput, errors, the requests the server saw, and the
ratio to the model's ideal bound.

# One process per run

CPU time and peak memory are only clean per model if nothing else runs in
the process being measured, so every run is this program started again with
the hidden `bench-run` subcommand: it runs one model once and prints a
[`Measured`] as JSON. The parent keeps the embedded server (whose work is
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

# The CPU workload

Each item is [`cpu_work`]: a fixed number of rounds of a hash, no network.
It runs through each model's own mechanism (a loop, a thread per item, the
thread pool, two-way queues, the process pool, the dummy pool, tasks on
the multi-thread runtime, tasks awaiting the bridge). The process pool can
only run tasks its workers have registered, so [`CpuWork`] is registered
in `crate::worker_registry()`.
*/

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use concur::{Pool, Task};
use indicatif::{ProgressBar, ProgressStyle};
use rates::{ClientConfig, Currency, Fetcher, Model, RateRequest, RetryPolicy, Workers};
use rates_server::ServerOptions;
use serde::{Deserialize, Serialize};

use crate::{Usage, cli, plot};

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
    /// Items in flight at once for the pooled and async models (0 or "unlimited": all).
    #[arg(long, default_value = "8", value_parser = cli::workers)]
    pub workers: Workers,
    /// Embedded server: latency of every answer.
    #[arg(long, value_parser = cli::duration, default_value = "20ms")]
    pub latency: Duration,
    /// Embedded server: random extra latency up to this much.
    #[arg(long, value_parser = cli::duration, default_value = "0")]
    pub jitter: Duration,
    /// Embedded server: fraction of requests that fail with 500.
    #[arg(long, value_parser = cli::fraction, default_value = "0")]
    pub fail_rate: f64,
    /// Client throttle: at most this many requests per second.
    #[arg(long, value_parser = cli::rate, value_name = "R")]
    pub rate: Option<f64>,
    /// With --rate: requests allowed at once after a quiet spell.
    #[arg(long, default_value_t = 1, requires = "rate", value_name = "B")]
    pub burst: u32,
    /// Retries per request on 5xx, 429, timeouts and connection errors.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Time limit of one request.
    #[arg(long, value_parser = cli::duration, default_value = "10s")]
    pub timeout: Duration,
    /// Time limit of one run of one model: past it the run is stopped and
    /// the model reported as failed.
    #[arg(long, value_parser = cli::duration, default_value = "10m")]
    pub run_limit: Duration,
    /// Benchmark this API instead of the embedded server (mind its rate limit).
    #[arg(long, conflicts_with_all = ["latency", "jitter", "fail_rate"])]
    pub api: Option<String>,
    /// CPU workload: computation per item, in milliseconds on this machine.
    #[arg(long, default_value_t = 10.0, value_name = "MS")]
    pub cpu_ms: f64,
    /// CPU workload: rounds of the hash per item instead of --cpu-ms (the same work on every machine).
    #[arg(long, conflicts_with = "cpu_ms", value_name = "N")]
    pub work: Option<u64>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also draw the wall times as a bar chart in this SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// Options of the hidden `rates bench-run`: one model, once.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run, as the JSON of a `Spec`.
    pub spec: String,
}

// ---------------------------------------------------------------------------
// The CPU workload
// ---------------------------------------------------------------------------

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
fn seconds_per_round() -> f64 {
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

/// The CPU workload on `model`: one result per item, in order.
fn run_cpu(model: Model, items: usize, workers: usize, rounds: u64) -> Vec<Result<u64, String>> {
    let work = move |i: usize| cpu_work(rounds, i as u64);
    let failed = |why: String| (0..items).map(|_| Err(why.clone())).collect();
    let tasks = || (0..items).map(|i| CpuWork { rounds, seed: i as u64 });
    match model {
        Model::Sync => (0..items).map(|i| Ok(work(i))).collect(),
        Model::ThreadPerItem => std::thread::scope(|s| {
            let handles: Vec<_> = (0..items).map(|i| s.spawn(move || work(i))).collect();
            handles.into_iter().map(|h| h.join().map_err(|p| concur::panic_message(&*p))).collect()
        }),
        Model::ThreadPool => match concur::ThreadPool::new(workers) {
            Ok(pool) => pool.map(work, 0..items).into_iter().map(|r| r.map_err(|e| e.to_string())).collect(),
            Err(e) => failed(e.to_string()),
        },
        Model::TwoWayQueues => two_way_queues(items, workers, work),
        Model::ProcessPool => match concur::ProcessPool::new(workers) {
            Ok(pool) => Pool::map(&pool, tasks()).into_iter().map(|r| r.map_err(|e| e.to_string())).collect(),
            Err(e) => failed(format!("cannot start worker processes: {e}")),
        },
        Model::DummyPool => match concur::ThreadPool::new(workers) {
            Ok(pool) => Pool::map(&pool, tasks()).into_iter().map(|r| r.map_err(|e| e.to_string())).collect(),
            Err(e) => failed(e.to_string()),
        },
        Model::Async | Model::AsyncExecutor => {
            let rt = match tokio::runtime::Builder::new_multi_thread().build() {
                Ok(rt) => rt,
                Err(e) => return failed(format!("cannot start a runtime: {e}")),
            };
            if model == Model::Async {
                rt.block_on(async_tasks(items, workers, work))
            } else {
                rt.block_on(async_executor(items, workers, work))
            }
        }
        // `Model` is non-exhaustive: a model added later needs its CPU version here.
        other => failed(format!("{other} has no CPU version")),
    }
}

/// Work queue in, results queue out, `workers` threads in between.
fn two_way_queues(items: usize, workers: usize, work: impl Fn(usize) -> u64 + Sync) -> Vec<Result<u64, String>> {
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<usize>();
    let (result_tx, result_rx) = crossbeam_channel::unbounded::<(usize, u64)>();
    for i in 0..items {
        // Cannot fail: the receiver is alive.
        let _ = work_tx.send(i);
    }
    drop(work_tx);
    let mut slots = vec![None; items];
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (work_rx, result_tx, work) = (work_rx.clone(), result_tx.clone(), &work);
            s.spawn(move || {
                for i in work_rx {
                    if result_tx.send((i, work(i))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(result_tx);
        for (i, v) in result_rx {
            slots[i] = Some(v);
        }
    });
    slots.into_iter().map(|s| s.ok_or_else(|| "the worker handling this item panicked".to_string())).collect()
}

/// A task per item computing inline, at most `workers` at once: the work
/// occupies the runtime's threads (one per core) while it runs.
async fn async_tasks(
    items: usize,
    workers: usize,
    work: impl Fn(usize) -> u64 + Copy + Send + 'static,
) -> Vec<Result<u64, String>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(workers.max(1)));
    let handles: Vec<_> = (0..items)
        .map(|i| {
            let limit = Arc::clone(&limit);
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                work(i)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(items);
    for h in handles {
        out.push(h.await.map_err(|e| e.to_string()));
    }
    out
}

/// A task per item awaiting the work run on a bridge of `workers` threads.
async fn async_executor(
    items: usize,
    workers: usize,
    work: impl Fn(usize) -> u64 + Copy + Send + 'static,
) -> Vec<Result<u64, String>> {
    let bridge = match concur::Bridge::new(workers) {
        Ok(b) => b,
        Err(e) => return (0..items).map(|_| Err(e.to_string())).collect(),
    };
    let jobs: Vec<_> = (0..items).map(|i| bridge.run(move || work(i))).collect();
    let mut out = Vec::with_capacity(items);
    for job in jobs {
        out.push(job.await.map_err(|e| e.to_string()));
    }
    out
}

// ---------------------------------------------------------------------------
// One run, in a child process
// ---------------------------------------------------------------------------

/// What the parent asks a `bench-run` child to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spec {
    model: String,
    workload: Workload,
    items: usize,
    /// `None`: as many as there are items.
    workers: Option<usize>,
    api: Option<String>,
    rate: Option<f64>,
    burst: u32,
    retries: u32,
    timeout_s: f64,
    rounds: u64,
}

/// What a child measured of its one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Seconds from the start of the run to its end.
    pub wall_s: f64,
    /// CPU seconds in user mode, the process pool's workers included.
    pub cpu_user_s: f64,
    /// CPU seconds in the kernel, the process pool's workers included.
    pub cpu_sys_s: f64,
    /// Peak resident memory, the process pool's workers included.
    pub peak_rss_bytes: u64,
    /// Items that succeeded.
    pub ok: usize,
    /// Items that failed for good (after retries).
    pub errors: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// CPU time and peak memory of this process and its reaped children.
struct Rusage {
    user: f64,
    sys: f64,
    self_max_rss: u64,
    children_max_rss: u64,
}

fn rusage() -> anyhow::Result<Rusage> {
    use nix::sys::resource::{UsageWho, getrusage};
    let me = getrusage(UsageWho::RUSAGE_SELF)?;
    let kids = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    // Linux counts ru_maxrss in KiB, macOS in bytes.
    let unit = if cfg!(target_os = "macos") { 1 } else { 1024 };
    let bytes = |kib: std::ffi::c_long| u64::try_from(kib).unwrap_or(0) * unit;
    Ok(Rusage {
        user: secs(me.user_time()) + secs(kids.user_time()),
        sys: secs(me.system_time()) + secs(kids.system_time()),
        self_max_rss: bytes(me.max_rss()),
        children_max_rss: bytes(kids.max_rss()),
    })
}

/// The requests of the I/O workload: the chapter's bases in turn, with the
/// chapter's symbols, for the latest day.
fn io_requests(items: usize) -> Vec<RateRequest> {
    let bases = Currency::parse_list(rates::CHAPTER_CURRENCIES).unwrap_or_default();
    (0..items).map(|i| RateRequest { base: bases[i % bases.len()], symbols: bases.clone(), date: None }).collect()
}

/// `rates bench-run SPEC`: runs one model once and prints what it measured.
pub(crate) fn run_one(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec: Spec = serde_json::from_str(&args.spec).map_err(|e| Usage(format!("bad bench-run spec: {e}")))?;
    let model: Model = spec.model.parse().map_err(|e: rates::models::UnknownModel| Usage(e.to_string()))?;
    let workers = spec.workers.map_or(Workers::Unlimited, Workers::Bounded);
    let pool_size = workers.for_items(spec.items);

    // Set up outside the measurement: the fetcher, its clients, the requests.
    let prepared = match spec.workload {
        Workload::Io => {
            let api = spec.api.as_deref().context("bench-run: no API for the I/O workload")?;
            let throttle = spec.rate.map(|r| concur::Throttle::new(r, spec.burst)).transpose()?.map(Arc::new);
            let config = ClientConfig { timeout: Duration::from_secs_f64(spec.timeout_s), ..ClientConfig::default() };
            let retry = RetryPolicy { retries: spec.retries, ..RetryPolicy::default() };
            let fetcher = Fetcher::new(api, config)?.with_retry(retry).with_throttle(throttle);
            Some((Arc::new(fetcher), io_requests(spec.items)))
        }
        Workload::Cpu => None,
    };

    let before = rusage()?;
    let started = Instant::now();
    let results: Vec<Result<(), String>> = match &prepared {
        Some((fetcher, requests)) => rates::models::run(model, fetcher, requests, workers)
            .into_iter()
            .zip(requests)
            .map(|(o, req)| o.map(drop).map_err(|f| format!("{req}: {f}")))
            .collect(),
        None => run_cpu(model, spec.items, pool_size, spec.rounds).into_iter().map(|r| r.map(drop)).collect(),
    };
    let wall = started.elapsed();
    let after = rusage()?;

    let workers_alive = if model == Model::ProcessPool { pool_size as u64 } else { 0 };
    let measured = Measured {
        wall_s: wall.as_secs_f64(),
        cpu_user_s: (after.user - before.user).max(0.0),
        cpu_sys_s: (after.sys - before.sys).max(0.0),
        peak_rss_bytes: after.self_max_rss + workers_alive * after.children_max_rss,
        ok: results.iter().filter(|r| r.is_ok()).count(),
        errors: results.iter().filter(|r| r.is_err()).count(),
        first_error: results.iter().find_map(|r| r.as_ref().err().cloned()),
    };
    println!("{}", serde_json::to_string(&measured)?);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

/// One run as the parent saw it: the child's measurement and the server's
/// counters (absent with `--api` and for CPU work).
#[derive(Debug, Clone, Serialize)]
struct Run {
    #[serde(flatten)]
    measured: Measured,
    /// Requests the server answered during the run, retries included.
    requests: Option<u64>,
    /// Of those, answers other than 200.
    failed_requests: Option<u64>,
    /// The most requests the server handled at once.
    max_in_flight: Option<u64>,
}

/// The medians of a model's runs.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    wall_s: f64,
    wall_min_s: f64,
    wall_max_s: f64,
    cpu_s: f64,
    cpu_user_s: f64,
    cpu_sys_s: f64,
    peak_rss_bytes: u64,
    items: usize,
    ok: usize,
    errors: usize,
    /// Items per second (requests per second for I/O).
    items_per_s: f64,
    requests: Option<u64>,
    failed_requests: Option<u64>,
    max_in_flight: Option<u64>,
    /// The model's lower bound on wall time (see the module docs).
    ideal_s: Option<f64>,
    /// wall ÷ ideal.
    ratio: Option<f64>,
    first_error: Option<String>,
    runs: Vec<Run>,
}

/// One model's line of the report.
#[derive(Debug, Clone, Serialize)]
struct ModelReport {
    model: String,
    /// Items it may have in flight (or computing) at once.
    concurrency: usize,
    /// Why it has no measurement, if it has none.
    skipped: Option<String>,
    #[serde(flatten)]
    summary: Option<Summary>,
}

/// The workload, as run.
#[derive(Debug, Clone, Serialize)]
struct WorkloadInfo {
    kind: Workload,
    items: usize,
    repeat: usize,
    /// `None`: unlimited.
    workers: Option<usize>,
    cores: usize,
    api: Option<String>,
    latency_s: Option<f64>,
    jitter_s: Option<f64>,
    fail_rate: Option<f64>,
    rate: Option<f64>,
    burst: u32,
    retries: u32,
    /// CPU workload: rounds of the hash per item, and what one item takes.
    rounds: Option<u64>,
    item_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    workload: WorkloadInfo,
    models: Vec<ModelReport>,
}

fn parse_models(s: &str) -> Result<Vec<Model>, Usage> {
    if s.trim() == "all" {
        return Ok(Model::ALL.to_vec());
    }
    let mut models = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let m: Model = name.parse().map_err(|e: rates::models::UnknownModel| Usage(format!("--models: {e}")))?;
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

/// The median of `values` (the lower middle one for an even count).
fn median<T: Copy + PartialOrd>(values: impl IntoIterator<Item = T>) -> Option<T> {
    let mut v: Vec<T> = values.into_iter().collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len().saturating_sub(1) / 2).copied()
}

fn summarise(runs: Vec<Run>, items: usize, ideal_s: Option<f64>) -> Option<Summary> {
    let wall_s = median(runs.iter().map(|r| r.measured.wall_s))?;
    let opt = |f: fn(&Run) -> Option<u64>| median(runs.iter().filter_map(f));
    let cpu_user_s = median(runs.iter().map(|r| r.measured.cpu_user_s))?;
    let cpu_sys_s = median(runs.iter().map(|r| r.measured.cpu_sys_s))?;
    Some(Summary {
        wall_s,
        wall_min_s: runs.iter().map(|r| r.measured.wall_s).fold(f64::INFINITY, f64::min),
        wall_max_s: runs.iter().map(|r| r.measured.wall_s).fold(0.0, f64::max),
        cpu_s: median(runs.iter().map(|r| r.measured.cpu_user_s + r.measured.cpu_sys_s))?,
        cpu_user_s,
        cpu_sys_s,
        peak_rss_bytes: median(runs.iter().map(|r| r.measured.peak_rss_bytes))?,
        items,
        ok: median(runs.iter().map(|r| r.measured.ok))?,
        errors: median(runs.iter().map(|r| r.measured.errors))?,
        items_per_s: if wall_s > 0.0 { items as f64 / wall_s } else { 0.0 },
        requests: opt(|r| r.requests),
        failed_requests: opt(|r| r.failed_requests),
        max_in_flight: opt(|r| r.max_in_flight),
        ideal_s,
        ratio: ideal_s.filter(|i| *i > 0.0).map(|i| wall_s / i),
        first_error: runs.iter().find_map(|r| r.measured.first_error.clone()),
        runs,
    })
}

/// Runs `spec` in a child process of this program, killing it if it runs
/// longer than `limit` (its pool workers, if any, die with it).
fn run_child(spec: &Spec, limit: Duration) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("bench-run")
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start a run: {e}"))?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).map_err(|e| e.to_string())?);
    // The watchdog sleeps until the limit or until the run ends, whichever
    // comes first: dropping `done` wakes it.
    let (done, ended) = crossbeam_channel::bounded::<()>(0);
    let watchdog = std::thread::spawn(move || {
        let overran = ended.recv_timeout(limit) == Err(crossbeam_channel::RecvTimeoutError::Timeout);
        if overran {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        overran
    });
    let out = child.wait_with_output();
    drop(done);
    if watchdog.join().unwrap_or(false) {
        return Err(format!("the run took longer than --run-limit {limit:?} and was stopped"));
    }
    let out = out.map_err(|e| format!("cannot read the run's output: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("the run failed ({}): {}", out.status, err.trim().lines().last().unwrap_or("")));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the run printed no measurement: {e}"))
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
    if let Some(p) = &args.plot {
        plot::check_svg_path("--plot", p)?;
    }
    if let Some(api) = &args.api {
        rates::parse_api_url(api).map_err(|e| Usage(e.to_string()))?;
    }
    if let Some(r) = args.rate {
        concur::Throttle::new(r, args.burst).map_err(|e| Usage(format!("--rate/--burst: {e}")))?;
    }
    let sim = ServerOptions {
        latency: args.latency,
        jitter: args.jitter,
        fail_rate: args.fail_rate,
        rate_limit: None,
        ..Default::default()
    };
    sim.validate().map_err(|e| Usage(e.to_string()))?;

    let io = args.workload == Workload::Io;
    let n = args.requests;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let embedded = io && args.api.is_none();
    let server = if embedded {
        Some(rates_server::spawn(rates::Dataset::embedded(), sim).context("cannot start the embedded server")?)
    } else {
        None
    };
    let api = args.api.clone().or_else(|| server.as_ref().map(|s| s.url().to_string()));
    let per_round = if io { 0.0 } else { seconds_per_round() };
    let rounds = match args.work {
        _ if io => 0,
        Some(w) => w.max(1),
        None => (args.cpu_ms / 1e3 / per_round).round().max(1.0) as u64,
    };
    let item_s = per_round * rounds as f64;

    let workers = match args.workers {
        Workers::Bounded(w) => Some(w.max(1)),
        Workers::Unlimited => None,
    };
    let progress = ProgressBar::new((models.len() * args.repeat) as u64);
    progress.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} runs, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let mut reports = Vec::new();
    let mut any_failed = false;
    for &model in &models {
        let c = concurrency(model, n, args.workers);
        let mut report = ModelReport { model: model.to_string(), concurrency: c, skipped: None, summary: None };
        progress.set_message(model.to_string());
        let spec = Spec {
            model: model.to_string(),
            workload: args.workload,
            items: n,
            workers,
            api: api.clone().filter(|_| io),
            rate: args.rate,
            burst: args.burst,
            retries: args.retries,
            timeout_s: args.timeout.as_secs_f64(),
            rounds,
        };
        let mut runs = Vec::new();
        for _ in 0..args.repeat {
            if let Some(s) = &server {
                s.metrics().reset();
            }
            match run_child(&spec, args.run_limit) {
                Ok(measured) => {
                    let seen = server.as_ref().map(|s| s.metrics().snapshot());
                    runs.push(Run {
                        measured,
                        requests: seen.as_ref().map(|m| m.total()),
                        failed_requests: seen.as_ref().map(|m| m.total() - m.count(200)),
                        max_in_flight: seen.as_ref().map(|m| m.max_in_flight),
                    });
                }
                Err(e) => {
                    progress.suspend(|| eprintln!("rates: bench: {model}: {e}"));
                    report.skipped = Some(e);
                    any_failed = true;
                    break;
                }
            }
            progress.inc(1);
        }
        if report.skipped.is_none() {
            let ideal = if io { io_bound(&args, embedded, n, c) } else { cpu_bound(n, c.min(cores), item_s) };
            report.summary = summarise(runs, n, ideal);
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
            workers,
            cores,
            api: args.api.clone(),
            latency_s: embedded.then_some(args.latency.as_secs_f64()),
            jitter_s: embedded.then_some(args.jitter.as_secs_f64()),
            fail_rate: embedded.then_some(args.fail_rate),
            rate: args.rate.filter(|_| io),
            burst: args.burst,
            retries: args.retries,
            rounds: (!io).then_some(rounds),
            item_ms: (!io).then_some(item_s * 1e3),
        },
        models: reports,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", table(&report))?;
    }
    out.flush()?;
    if let Some(path) = &args.plot {
        draw(path, &report)?;
    }
    Ok(if any_failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The I/O bound: ⌈N/c⌉·latency on the embedded server (latency unknown
/// with `--api`), and (N − burst)/rate + latency when throttled.
fn io_bound(args: &BenchArgs, embedded: bool, n: usize, c: usize) -> Option<f64> {
    let latency = if embedded { args.latency.as_secs_f64() } else { 0.0 };
    let waves = n.div_ceil(c.max(1)) as f64 * latency;
    let throttled = args.rate.map(|r| n.saturating_sub(args.burst as usize) as f64 / r + latency);
    let bound = waves.max(throttled.unwrap_or(0.0));
    (bound > 0.0).then_some(bound)
}

/// The CPU bound: ⌈N/p⌉ items of `item_s` each on `p` cores.
fn cpu_bound(n: usize, p: usize, item_s: f64) -> Option<f64> {
    let bound = n.div_ceil(p.max(1)) as f64 * item_s;
    (bound > 0.0).then_some(bound)
}

// ---------------------------------------------------------------------------
// Presentation
// ---------------------------------------------------------------------------

/// A duration in seconds, to three significant digits or so.
fn secs(s: f64) -> String {
    if s < 1.0 { format!("{:.0}ms", s * 1e3) } else { format!("{s:.2}s") }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One line describing the workload, the title of the table and the chart.
fn describe(w: &WorkloadInfo) -> String {
    let workers = w.workers.map_or("unlimited".to_string(), |n| n.to_string());
    let mut s = match w.kind {
        Workload::Io => format!("I/O-bound: {} requests, {workers} workers", w.items),
        Workload::Cpu => {
            format!(
                "CPU-bound: {} items of {:.1} ms, {workers} workers, {} cores",
                w.items,
                w.item_ms.unwrap_or(0.0),
                w.cores
            )
        }
    };
    if let Some(l) = w.latency_s {
        let _ = write!(s, ", latency {}", secs(l));
    }
    if let Some(j) = w.jitter_s.filter(|j| *j > 0.0) {
        let _ = write!(s, " + jitter {}", secs(j));
    }
    if let Some(f) = w.fail_rate.filter(|f| *f > 0.0) {
        let _ = write!(s, ", fail rate {f}");
    }
    if let Some(r) = w.rate {
        let _ = write!(s, ", throttled to {r}/s (burst {})", w.burst);
    }
    if let Some(api) = &w.api {
        let _ = write!(s, ", against {api}");
    }
    let _ = write!(s, "; median of {} run{}", w.repeat, if w.repeat == 1 { "" } else { "s" });
    s
}

/// The aligned table of `rates bench`.
fn table(report: &Report) -> String {
    let io = report.workload.kind == Workload::Io;
    let header = [
        "model",
        "wall",
        "spread",
        "cpu",
        "peak mem",
        if io { "req/s" } else { "items/s" },
        "errors",
        "requests",
        "in flight",
        "ideal",
        "ratio",
    ];
    let dash = || "-".to_string();
    // A row of cells, or a model that was not run: its name and why.
    let mut rows: Vec<Result<Vec<String>, (String, String)>> = vec![Ok(header.iter().map(|h| h.to_string()).collect())];
    for m in &report.models {
        let Some(s) = &m.summary else {
            rows.push(Err((m.model.clone(), m.skipped.clone().unwrap_or_else(|| "not run".into()))));
            continue;
        };
        let spread = if s.wall_s > 0.0 { (s.wall_max_s - s.wall_min_s) / s.wall_s * 100.0 } else { 0.0 };
        rows.push(Ok(vec![
            m.model.clone(),
            secs(s.wall_s),
            format!("{spread:.1}%"),
            secs(s.cpu_s),
            mib(s.peak_rss_bytes),
            format!("{:.1}", s.items_per_s),
            s.errors.to_string(),
            s.requests.map_or_else(dash, |r| r.to_string()),
            s.max_in_flight.map_or_else(dash, |r| r.to_string()),
            s.ideal_s.map_or_else(dash, secs),
            s.ratio.map_or_else(dash, |r| format!("{r:.2}")),
        ]));
    }
    let width = |c: usize| {
        let cells = rows.iter().filter_map(|r| r.as_ref().ok()).map(|r| r[c].chars().count());
        let names = rows.iter().filter_map(|r| r.as_ref().err()).map(|(m, _)| if c == 0 { m.len() } else { 0 });
        cells.chain(names).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let mut out = format!("{}\n", describe(&report.workload));
    for row in &rows {
        let line = match row {
            Ok(cells) => {
                let cells: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(c, (cell, &w))| if c == 0 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
                    .collect();
                cells.join("  ")
            }
            Err((model, why)) => format!("{model:<w$}  n/a: {why}", w = widths[0]),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn draw(path: &std::path::Path, report: &Report) -> anyhow::Result<()> {
    let bars: Vec<plot::Bar> = report
        .models
        .iter()
        .map(|m| match &m.summary {
            Some(s) => {
                let mut note = format!("{} · cpu {} · {}", secs(s.wall_s), secs(s.cpu_s), mib(s.peak_rss_bytes));
                if let Some(r) = s.ratio {
                    let _ = write!(note, " · {r:.2}× ideal");
                }
                if s.errors > 0 {
                    let _ = write!(note, " · {} errors", s.errors);
                }
                plot::Bar { label: m.model.clone(), value: Some(s.wall_s), note }
            }
            None => plot::Bar {
                label: m.model.clone(),
                value: None,
                note: format!("n/a: {}", m.skipped.as_deref().unwrap_or("not run")),
            },
        })
        .collect();
    let title = format!("rates bench — {}", describe(&report.workload));
    plot::bars(path, &title, "wall time, seconds (shorter is faster; green: fastest)", &bars)
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
    fn medians_and_bounds() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4, 1, 3, 2]), Some(2));
        assert_eq!(median(Vec::<u64>::new()), None);
        assert_eq!(cpu_bound(10, 4, 0.5), Some(1.5));
        assert_eq!(concurrency(Model::Sync, 10, Workers::Bounded(4)), 1);
        assert_eq!(concurrency(Model::ThreadPerItem, 10, Workers::Bounded(4)), 10);
        assert_eq!(concurrency(Model::ThreadPool, 3, Workers::Bounded(4)), 3);
    }

    #[test]
    fn every_cpu_model_computes_the_same_values() {
        let want: Vec<Result<u64, String>> = (0..7).map(|i| Ok(cpu_work(1000, i))).collect();
        for &model in Model::ALL {
            if model == Model::ProcessPool {
                // Needs the `rates` binary as its worker: tests/bench.rs.
                continue;
            }
            assert_eq!(run_cpu(model, 7, 3, 1000), want, "{model}");
        }
    }
}
