//! One run of one model, in a child process: the parent's [`run_child`]
//! starts this program again with the hidden `bench-run` subcommand and a
//! [`Spec`]; the child's [`run_one`] runs the model once, measures itself
//! with `getrusage` around the run only, and prints a [`Measured`].

use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rates_core::{ClientConfig, Currency, Fetcher, Model, RateRequest, RetryPolicy, Workers};
use serde::{Deserialize, Serialize};

use super::cpu::CpuJob;
use super::{RunArgs, Workload};
use crate::Usage;

/// What the parent asks a `bench-run` child to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Spec {
    pub(super) model: String,
    /// Run on this queue's workers instead of with `model`.
    pub(super) queue: Option<String>,
    pub(super) workload: Workload,
    pub(super) items: usize,
    /// `None`: as many as there are items.
    pub(super) workers: Option<std::num::NonZeroUsize>,
    /// `--workers auto`: `workers` is ignored, the model's pool is the
    /// most the limit may learn.
    pub(super) auto_workers: bool,
    /// `--rate auto`, starting from this burst; `rate` is then `None`.
    pub(super) auto_rate: Option<u32>,
    pub(super) api: Option<String>,
    pub(super) rate: Option<f64>,
    pub(super) burst: u32,
    pub(super) retries: u32,
    pub(super) timeout_s: f64,
    pub(super) rounds: u64,
    /// Write the run's trace here (the I/O workload), under a process
    /// named after the model (see `rates_core::trace`).
    #[serde(default)]
    pub(super) trace: Option<std::path::PathBuf>,
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
    /// What `--rate auto` and `--workers auto` ended the run with, as the
    /// options that reuse it.
    #[serde(default)]
    pub learnt: Option<String>,
    /// The I/O workload: the median and 99th percentile of the answered
    /// requests' latency, as the caller saw it.
    #[serde(default)]
    pub latency_p50_s: Option<f64>,
    #[serde(default)]
    pub latency_p99_s: Option<f64>,
}

/// CPU time and peak memory of this process and its reaped children.
pub(super) struct Rusage {
    pub(super) user: f64,
    pub(super) sys: f64,
    pub(super) self_max_rss: u64,
    pub(super) children_max_rss: u64,
}

pub(super) fn rusage() -> anyhow::Result<Rusage> {
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
        self_max_rss: own_peak_rss().unwrap_or_else(|| bytes(me.max_rss())),
        children_max_rss: bytes(kids.max_rss()),
    })
}

/// This program's own peak resident set, from `VmHWM` in
/// `/proc/self/status` (Linux). `ru_maxrss` is no good for it: Linux keeps
/// it across `exec`, so a child started from a big parent reports the
/// parent's size as its own peak.
fn own_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    peak_from_status(&status)
}

/// The `VmHWM:   1234 kB` line of a `/proc/PID/status`, in bytes.
fn peak_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The requests of the I/O workload: the chapter's bases in turn, with the
/// chapter's symbols, for the latest day.
pub(super) fn io_requests(items: usize) -> Vec<RateRequest> {
    let bases = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).unwrap_or_default();
    (0..items).map(|i| RateRequest { base: bases[i % bases.len()], symbols: bases.clone(), date: None }).collect()
}

/// What runs the items: a model here, or a queue's workers.
enum On {
    Model(Model),
    Queue(String),
}

/// `rates bench-run SPEC`: runs one model once and prints what it measured.
pub(crate) fn run_one(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec: Spec = serde_json::from_str(&args.spec).map_err(|e| Usage(format!("bad bench-run spec: {e}")))?;
    let on = match &spec.queue {
        // The parent passes the URL itself in the environment (see
        // `run_child`).
        Some(_) => On::Queue(std::env::var(crate::queue_url::ENV).map_err(|_| {
            Usage(format!("bench-run: a queue run needs the queue's URL in {}", crate::queue_url::ENV))
        })?),
        None => On::Model(spec.model.parse().map_err(|e: rates_core::models::UnknownModel| Usage(e.to_string()))?),
    };
    let workers = match (&on, spec.auto_workers) {
        (On::Model(model), true) => Workers::Bounded(rates_core::models::auto_pool_size(*model)),
        _ => spec.workers.map_or(Workers::Unlimited, Workers::Bounded),
    };
    let pool_size = workers.for_items(spec.items);
    let auto = rates_core::models::AutoLimits::new(spec.auto_rate, spec.auto_workers.then_some(pool_size));

    // Set up outside the measurement: the trace, the fetcher, its clients,
    // the requests.
    let trace = match (&spec.trace, spec.workload) {
        (Some(path), Workload::Io) => Some(
            rates_core::Trace::create(path, &spec.model)
                .map_err(|e| Usage(format!("--trace {}: {e}", path.display())))?,
        ),
        _ => None,
    };
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(spec.items)));
    let prepared = match spec.workload {
        Workload::Io => {
            let api = spec.api.as_deref().context("bench-run: no API for the I/O workload")?;
            // Paced as `fetch` paces (see `config::throttle`): the same margin after a burst.
            let throttle = spec
                .rate
                .map(|r| concur::Throttle::new(r, spec.burst).map(|t| t.with_margin(Duration::from_secs_f64(1.0 / r))))
                .transpose()?
                .map(Arc::new);
            let config = ClientConfig { timeout: Duration::from_secs_f64(spec.timeout_s), ..ClientConfig::default() };
            let retry = RetryPolicy { retries: spec.retries, ..RetryPolicy::default() };
            let sink = Arc::clone(&latencies);
            let fetcher =
                Fetcher::new(api, config)?.with_retry(retry).with_throttle(throttle).with_trace(trace.clone());
            let fetcher = auto
                .apply(fetcher)
                .with_latency_sink(Arc::new(move |d: Duration| concur::sync::lock(&sink).push(d.as_secs_f64())));
            Some((Arc::new(fetcher), io_requests(spec.items)))
        }
        Workload::Cpu => None,
    };

    let before = rusage()?;
    let started = Instant::now();
    let results: Vec<Result<(), String>> = match &prepared {
        Some((fetcher, requests)) => match &on {
            On::Queue(url) => crate::queue::run(url, &**fetcher, requests, workers)?,
            On::Model(model) => rates_core::models::run(*model, fetcher, requests, workers),
        }
        .into_iter()
        .zip(requests)
        .map(|(o, req)| o.map(drop).map_err(|f| format!("{req}: {f}")))
        .collect(),
        None => {
            let seeds: Vec<u64> = (0..spec.items as u64).collect();
            let job = Arc::new(CpuJob { rounds: spec.rounds });
            match &on {
                On::Queue(url) => crate::queue::run(url, &*job, &seeds, workers)?,
                On::Model(model) => rates_core::models::run(*model, &job, &seeds, workers),
            }
            .into_iter()
            .map(|r| r.map(drop))
            .collect()
        }
    };
    let wall = started.elapsed();
    let after = rusage()?;
    drop(prepared);
    if let Some(t) = &trace {
        t.finish().with_context(|| format!("bench-run: the trace {}", t.path().display()))?;
    }

    let workers_alive = if matches!(on, On::Model(Model::ProcessPool)) { pool_size as u64 } else { 0 };
    let measured = Measured {
        wall_s: wall.as_secs_f64(),
        cpu_user_s: (after.user - before.user).max(0.0),
        cpu_sys_s: (after.sys - before.sys).max(0.0),
        peak_rss_bytes: after.self_max_rss + workers_alive * after.children_max_rss,
        ok: results.iter().filter(|r| r.is_ok()).count(),
        errors: results.iter().filter(|r| r.is_err()).count(),
        first_error: results.iter().find_map(|r| r.as_ref().err().cloned()),
        learnt: auto.learnt().map(|l| l.to_string()),
        latency_p50_s: percentile(&latencies, 0.5),
        latency_p99_s: percentile(&latencies, 0.99),
    };
    println!("{}", serde_json::to_string(&measured)?);
    Ok(ExitCode::SUCCESS)
}

/// The `q` quantile (nearest rank) of the latencies recorded.
fn percentile(latencies: &std::sync::Mutex<Vec<f64>>, q: f64) -> Option<f64> {
    let mut v = concur::sync::lock(latencies).clone();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied()
}

/// Runs `spec` in a child process of this program, killing it if it runs
/// longer than `limit` (its pool workers, if any, die with it).
pub(super) fn run_child(spec: &Spec, limit: Duration) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // The queue's URL holds the broker's password: it goes in the
    // environment, and the command line (which `ps` shows) has it redacted.
    let mut shown = spec.clone();
    shown.queue = spec.queue.as_deref().map(crate::queue_url::shown);
    let json = serde_json::to_string(&shown).map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    match &spec.queue {
        Some(url) => command.env(crate::queue_url::ENV, url),
        None => command.env_remove(crate::queue_url::ENV),
    };
    let child = command
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_ranks() {
        let l = |v: Vec<f64>| std::sync::Mutex::new(v);
        assert_eq!(percentile(&l(vec![]), 0.5), None);
        assert_eq!(percentile(&l(vec![0.3, 0.1, 0.2]), 0.5), Some(0.2));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&l(hundred.clone()), 0.5), Some(50.0));
        assert_eq!(percentile(&l(hundred), 0.99), Some(99.0));
    }

    #[test]
    fn the_peak_is_read_from_the_status_file() {
        let status = "Name:\trates\nVmPeak:\t  20000 kB\nVmHWM:\t    5632 kB\nVmRSS:\t 5000 kB\n";
        assert_eq!(peak_from_status(status), Some(5632 * 1024));
        assert_eq!(peak_from_status("VmRSS: 1 kB"), None);
        assert_eq!(peak_from_status("VmHWM: lots"), None);
    }
}
