//! `rates worker`, `rates queue status` and `--queue` end to end, on a real
//! `redis-server` each test starts on a free loopback port in a temporary
//! directory (`appendonly yes`), with real `rates worker` processes and an
//! in-test API server that records every request it answers: a worker
//! SIGKILLed while it holds a task, a task delivered too often named as a
//! dead letter, two workers finishing one task, a worker drained by
//! SIGTERM, the broker restarted mid-job, and the default path with no
//! Redis at all.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rates::Dataset;

mod common;

/// How long a test waits for something that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// A redis-server of the test's own
// ---------------------------------------------------------------------------

/// Killed and removed when dropped. A machine without `redis-server` fails
/// the test: it is never skipped.
struct Redis {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("rates-queue-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis { child: None, dir, port: free_port() };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests (apt-get install redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        wait_until("redis-server answers", || {
            client
                .get_connection_with_timeout(Duration::from_secs(1))
                .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
        });
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn con(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection_with_timeout(PROMPTLY).unwrap()
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pending entries per consumer.
    fn pending(&self) -> Vec<(String, i64)> {
        // No group yet (nothing has started) is nothing pending.
        let reply = redis::cmd("XPENDING").arg("concur:tasks").arg("workers").query(&mut self.con());
        let Ok(redis::Value::Array(parts)) = reply else { return vec![] };
        let Some(redis::Value::Array(per)) = parts.get(3) else { return vec![] };
        per.iter()
            .filter_map(|p| match p {
                redis::Value::Array(kv) => match &kv[..] {
                    [redis::Value::BulkString(name), redis::Value::BulkString(n)] => {
                        Some((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(n).parse().ok()?))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Whether worker process `pid` holds a task.
    fn holds(&self, pid: u32) -> bool {
        self.pending().iter().any(|(name, n)| name.ends_with(&format!("-{pid}")) && *n > 0)
    }

    /// The dates asked by the tasks worker process `pid` holds (read from
    /// the tasks' payloads, where a date is its ISO text).
    fn held_dates(&self, pid: u32) -> Vec<String> {
        let Some((name, _)) = self.pending().into_iter().find(|(name, _)| name.ends_with(&format!("-{pid}"))) else {
            return vec![];
        };
        let mut con = self.con();
        let held: redis::Value = redis::cmd("XPENDING")
            .arg("concur:tasks")
            .arg("workers")
            .arg("-")
            .arg("+")
            .arg(10)
            .arg(&name)
            .query(&mut con)
            .unwrap();
        let redis::Value::Array(held) = held else { return vec![] };
        let mut dates = Vec::new();
        for entry in held {
            let redis::Value::Array(fields) = entry else { continue };
            let Some(redis::Value::BulkString(id)) = fields.first() else { continue };
            let id = String::from_utf8_lossy(id).into_owned();
            let range: redis::Value =
                redis::cmd("XRANGE").arg("concur:tasks").arg(&id).arg(&id).query(&mut con).unwrap();
            let text = format!("{range:?}");
            if let Some(at) = text.find("2024-") {
                dates.push(text[at..at + 10].to_owned());
            }
        }
        dates
    }

    fn dead_letters(&self) -> i64 {
        redis::cmd("XLEN").arg("concur:dead").query(&mut self.con()).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PROMPTLY;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, s: Signal) {
    kill(Pid::from_raw(pid as i32), s).unwrap();
}

// ---------------------------------------------------------------------------
// Workers, the API, and a history run
// ---------------------------------------------------------------------------

/// `rates worker` processes; killed when dropped.
struct Workers(Vec<Child>);

impl Workers {
    fn start(n: usize, url: &str, extra: &[&str]) -> Self {
        Workers(
            (0..n)
                .map(|_| {
                    Command::new(assert_cmd::cargo::cargo_bin("rates"))
                        .args(["worker", "--queue", url, "--concurrency", "1"])
                        .args(extra)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }

    fn pid(&self, i: usize) -> u32 {
        self.0[i].id()
    }

    /// Waits (bounded) for worker `i` to exit; its exit code.
    fn wait(&mut self, i: usize) -> Option<i32> {
        let deadline = Instant::now() + PROMPTLY;
        loop {
            if let Some(status) = self.0[i].try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "worker {i} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The API, recording the date asked by every request it answers.
struct Api {
    url: String,
    dates: Arc<Mutex<Vec<String>>>,
    /// When each request arrived, on the server's clock.
    times: Arc<Mutex<Vec<Instant>>>,
    _rt: tokio::runtime::Runtime,
}

impl Api {
    fn start(latency: Duration) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let options = rates_server::ServerOptions { latency, ..Default::default() };
        let shared = rates_server::Shared::new(Dataset::embedded(), options).unwrap();
        let dates = Arc::new(Mutex::new(Vec::new()));
        let times = Arc::new(Mutex::new(Vec::new()));
        let (seen, arrived) = (Arc::clone(&dates), Arc::clone(&times));
        let app = rates_server::router(shared).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let (seen, arrived) = (Arc::clone(&seen), Arc::clone(&arrived));
            async move {
                arrived.lock().unwrap().push(Instant::now());
                let date = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("date=")));
                seen.lock().unwrap().push(date.unwrap_or("").to_owned());
                next.run(req).await
            }
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
        });
        Api { url, dates, times, _rt: rt }
    }

    fn requests(&self) -> usize {
        self.dates.lock().unwrap().len()
    }
}

/// `rates history` of `days` weekdays from 2024-01-01 (no holidays after
/// the 1st) through the queue, started in the background.
struct History(Child);

const FROM: &str = "2024-01-02";

impl History {
    fn start(api: &Api, queue: &str, to: &str) -> Self {
        Self::start_with(api, queue, to, &[])
    }

    fn start_with(api: &Api, queue: &str, to: &str, extra: &[&str]) -> Self {
        let child = Command::new(assert_cmd::cargo::cargo_bin("rates"))
            .args(["history", "--api", &api.url, "--queue", queue, "--base", "EUR", "--symbols", "USD"])
            .args(extra)
            .args(["--from", FROM, "--to", to, "--workers", "4", "--retries", "0", "--format", "csv"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        History(child)
    }

    /// Waits (bounded) for the run: exit code, stdout, stderr.
    fn finish(self) -> (i32, String, String) {
        let mut child = self.0;
        let deadline = Instant::now() + PROMPTLY;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("history did not finish");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

/// The business days from FROM to `to` (2024: no holidays in January).
fn days(to: &str) -> Vec<String> {
    let (from, to) = (rates::parse_date(FROM).unwrap(), rates::parse_date(to).unwrap());
    Dataset::embedded().days().iter().filter(|d| (from..=to).contains(d)).map(ToString::to_string).collect()
}

/// The dates of the CSV rows, checking none is written twice.
fn dates_written(csv: &str) -> Vec<String> {
    let mut dates: Vec<String> =
        csv.lines().filter(|l| l.starts_with("20")).map(|l| l.split(',').next().unwrap().to_owned()).collect();
    let n = dates.len();
    dates.sort();
    dates.dedup();
    assert_eq!(dates.len(), n, "a date written twice:\n{csv}");
    dates
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn a_worker_killed_holding_a_task_loses_nothing() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(300));
    let workers = Workers::start(2, &redis.url(), &["--claim-after", "500ms"]);
    let history = History::start(&api, &redis.url(), "2024-01-12");
    let victim = workers.pid(0);
    let mut fetching = None;
    wait_until("the first worker holds a task the server is answering", || {
        let asked = api.dates.lock().unwrap().clone();
        fetching = redis.held_dates(victim).into_iter().find(|d| asked.contains(d));
        fetching.is_some()
    });
    signal(victim, Signal::SIGKILL);
    let (code, out, err) = history.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-12"), "every day exactly once");
    let fetching = fetching.unwrap();
    let asked = api.dates.lock().unwrap().iter().filter(|d| **d == fetching).count();
    assert_eq!(asked, 2, "the killed worker's task ({fetching}) was fetched again");
    assert!(redis.pending().iter().all(|(_, n)| *n == 0), "{:?}", redis.pending());
}

#[test]
fn a_task_delivered_too_often_is_a_dead_letter_named_by_history() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(300));
    // One delivery allowed: the task the killed worker held is not run again.
    let workers = Workers::start(2, &redis.url(), &["--claim-after", "500ms", "--max-deliveries", "1"]);
    let history = History::start(&api, &redis.url(), "2024-01-12");
    let victim = workers.pid(0);
    wait_until("the first worker holds a task", || redis.holds(victim));
    signal(victim, Signal::SIGKILL);
    let (code, out, err) = history.finish();
    assert_eq!(code, 1, "{err}");
    let dead = redis.dead_letters();
    assert!(dead >= 1, "{err}");
    assert_eq!(err.matches("dead letter").count() as i64, dead, "each dead letter named once: {err}");
    assert_eq!(dates_written(&out).len() as i64 + dead, days("2024-01-12").len() as i64, "the others are written");
}

#[test]
fn two_workers_finishing_one_task_write_it_once() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(200));
    let workers = Workers::start(2, &redis.url(), &["--claim-after", "500ms"]);
    let history = History::start(&api, &redis.url(), "2024-01-31");
    let slow = workers.pid(0);
    let mut fetching = None;
    wait_until("the first worker holds a task the server is answering", || {
        let asked = api.dates.lock().unwrap().clone();
        fetching = redis.held_dates(slow).into_iter().find(|d| asked.contains(d));
        fetching.is_some()
    });
    // Stalled, it renews nothing: the other worker claims its tasks...
    signal(slow, Signal::SIGSTOP);
    wait_until("the other worker took them over", || !redis.holds(slow));
    // ...and the stalled one, resumed, finishes them too.
    signal(slow, Signal::SIGCONT);
    let (code, out, err) = history.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-31"), "every day exactly once");
    let fetching = fetching.unwrap();
    let asked = api.dates.lock().unwrap().iter().filter(|d| **d == fetching).count();
    assert_eq!(asked, 2, "both workers fetched {fetching}");
}

#[test]
fn a_worker_drains_on_sigterm_and_exits_0() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(300));
    let mut workers = Workers::start(2, &redis.url(), &[]);
    let history = History::start(&api, &redis.url(), "2024-01-12");
    let leaving = workers.pid(0);
    wait_until("the first worker holds a task", || redis.holds(leaving));
    let (code, status, err) = common::run(&["queue", "status", "--queue", &redis.url()]);
    assert_eq!(code, 0, "{err}");
    assert!(status.contains(&format!("-{leaving}: ")) && status.contains("workers seen: 2"), "{status}");
    signal(leaving, Signal::SIGTERM);
    assert_eq!(workers.wait(0), Some(0), "a drained worker exits 0");
    let (code, out, err) = history.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-12"));
    // What it held was finished and acknowledged, not left for a claim.
    assert_eq!(api.requests(), days("2024-01-12").len(), "no task ran twice");
}

#[test]
fn the_broker_restarted_mid_job_loses_nothing() {
    let mut redis = Redis::start();
    let api = Api::start(Duration::from_millis(100));
    let _workers = Workers::start(2, &redis.url(), &[]);
    let history = History::start(&api, &redis.url(), "2024-01-31");
    wait_until("the job is under way", || api.requests() >= 4);
    redis.restart();
    let (code, out, err) = history.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-31"), "every day exactly once");
}

#[test]
fn one_rate_limit_holds_across_callers_and_workers() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(5));
    let _workers = Workers::start(3, &redis.url(), &[]);
    let (rate, burst) = (20.0, 2.0);
    let limit = ["--rate", "20", "--burst", "2"];
    // Two callers at once: each alone keeping 20/s would make 40/s.
    let runs = [
        History::start_with(&api, &redis.url(), "2024-01-19", &limit),
        History::start_with(&api, &redis.url(), "2024-01-19", &limit),
    ];
    for run in runs {
        let (code, out, err) = run.finish();
        assert_eq!(code, 0, "{err}");
        assert_eq!(dates_written(&out), days("2024-01-19"));
    }
    let mut times = api.times.lock().unwrap().clone();
    times.sort();
    assert_eq!(times.len(), 2 * days("2024-01-19").len());
    // Grants are exact on the broker's clock; a request then crosses the
    // queue, a worker's wake-up and a connection, which can bunch arrivals
    // on a loaded machine: one grant interval of that is allowed for (one
    // request more in a window), far below the double rate that two
    // callers each keeping their own limit would show.
    let hop = 1.0 / rate;
    for i in 0..times.len() {
        for j in i..times.len() {
            let w = (times[j] - times[i]).as_secs_f64();
            let n = (j - i + 1) as f64;
            assert!(n <= burst + rate * (w + hop), "{n} requests within {w:.3}s");
        }
    }
}

#[test]
fn ctrl_c_stops_a_run_that_no_worker_serves() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(1));
    let run = History::start(&api, &redis.url(), "2024-01-05");
    // Its first tasks are queued: the run is under way, its signal handlers in place.
    wait_until("tasks are queued", || {
        redis::cmd("XLEN").arg("concur:tasks").query::<i64>(&mut redis.con()).unwrap_or(0) > 0
    });
    signal(run.0.id(), Signal::SIGINT);
    let (code, out, err) = run.finish();
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("no worker serves"), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(dates_written(&out), Vec::<String>::new());
    assert_eq!(api.requests(), 0);
}

#[test]
fn bench_runs_the_workload_on_the_queue_as_one_row() {
    let redis = Redis::start();
    let _workers = Workers::start(2, &redis.url(), &[]);
    for workload in ["io", "cpu"] {
        let args = ["bench", "--queue", &redis.url(), "--workload", workload, "--requests", "12"];
        let (code, out, err) = common::run(&[&args[..], &["--repeat", "1", "--cpu-ms", "1", "--json"]].concat());
        assert_eq!(code, 0, "{workload}: {err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = report["models"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0]["model"], "queue");
        assert_eq!((rows[0]["ok"].as_u64(), rows[0]["errors"].as_u64()), (Some(12), Some(0)), "{out}");
        if workload == "io" {
            assert_eq!(rows[0]["requests"].as_u64(), Some(12), "the server saw every request");
        }
    }
}

#[test]
fn a_bad_queue_url_is_refused_and_an_absent_broker_named() {
    for args in [
        &["worker", "--queue", "localhost:6379"][..],
        &["queue", "status", "--queue", "http://x"],
        &["history", "--queue", "redis://", "--base", "EUR", "--symbols", "USD", "--from", FROM, "--to", FROM],
    ] {
        let (code, _, err) = common::run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--queue: invalid URL"), "{err}");
    }
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    for args in [&["worker", "--queue", &nowhere][..], &["queue", "status", "--queue", &nowhere]] {
        let (code, _, err) = common::run(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(&format!("cannot reach {nowhere}")), "{err}");
    }
}

#[test]
fn the_default_path_needs_no_redis() {
    // No redis-server on the PATH, and a queue URL nothing listens on is
    // only touched when asked for.
    let empty = std::env::temp_dir().join(format!("rates-no-redis-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let fetch = ["fetch", "--bases", "EUR,USD", "--sim-latency", "1ms"];
    let out = common::rates().args(fetch).env("PATH", &empty).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let out = common::rates().args(fetch).args(["--queue", &nowhere]).env("PATH", &empty).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot use the queue"));
    let _ = std::fs::remove_dir(&empty);
}
