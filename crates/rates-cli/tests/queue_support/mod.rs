//! What the queue tests share: a real `redis-server` per test, `rates
//! worker` processes, an API server that records every request, and a
//! `rates history` run on the queue. Every process is stopped when its
//! holder is dropped.
#![allow(dead_code, clippy::unwrap_used)]

use axum::extract::Request;
use axum::middleware::Next;
use concur_redis::Keys;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rates_core::Dataset;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen promptly.
pub const PROMPTLY: Duration = Duration::from_secs(60);

/// The queue's key that callers and workers of the tests share.
pub const KEY: &str = "the tests' queue key, 16+ bytes";
pub const KEY_ENV: &str = "RATES_QUEUE_KEY";

/// `rates ARGS` with the tests' queue key: exit code, stdout, stderr.
pub fn run_keyed(args: &[&str]) -> (i32, String, String) {
    let out = crate::common::rates().args(args).env(KEY_ENV, KEY).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

// ---------------------------------------------------------------------------
// A redis-server of the test's own
// ---------------------------------------------------------------------------

/// Killed and removed when dropped. A machine without `redis-server` fails
/// the test: it is never skipped.
pub struct Redis {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    /// The user and password every connection of the tests gives, if the
    /// server wants one (see [`Redis::start_with`]).
    pub auth: Option<(String, String)>,
    /// Options added to redis-server's command line.
    pub extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(&[], None)
    }

    /// A server started with `extra` options (an ACL user, say), whose
    /// [`url`](Self::url) carries `auth` (user, password) when given.
    pub fn start_with(extra: &[&str], auth: Option<(&str, &str)>) -> Self {
        let dir = std::env::temp_dir().join(format!("rates-queue-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let extra = extra.iter().map(|a| (*a).to_owned()).collect();
        let mut r = Redis { child: None, dir, port: 0, auth, extra };
        // A port found free can be taken before redis-server binds it (by
        // another test's server or a client's ephemeral port): then try
        // another rather than talk to a server that is not ours.
        for _ in 0..5 {
            r.port = free_port();
            if r.spawn().is_ok() {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts redis-server and waits until it answers; `Err` when it
    /// exited (its port was taken).
    pub fn spawn(&mut self) -> Result<(), ()> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests (apt-get install redis-server)");
        let client = redis::Client::open(self.url()).unwrap();
        let mut exited = false;
        wait_until("redis-server answers", || {
            exited = child.try_wait().unwrap().is_some();
            exited
                || client
                    .get_connection_with_timeout(Duration::from_secs(1))
                    .is_ok_and(|mut c| serves_from(&mut c, &self.dir))
        });
        if exited {
            return Err(());
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        match &self.auth {
            Some((user, password)) => format!("redis://{user}:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection_with_timeout(PROMPTLY).unwrap()
    }

    pub fn restart(&mut self) {
        self.kill();
        let started = self.spawn();
        assert!(started.is_ok(), "redis-server did not restart on port {}", self.port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pending entries per consumer.
    pub fn pending(&self) -> Vec<(String, i64)> {
        // No group yet (nothing has started) is nothing pending.
        let reply = redis::cmd("XPENDING").arg(Keys::default().tasks()).arg(concur_redis::GROUP).query(&mut self.con());
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
    pub fn holds(&self, pid: u32) -> bool {
        self.pending().iter().any(|(name, n)| name.ends_with(&format!("-{pid}")) && *n > 0)
    }

    /// The dates asked by the tasks worker process `pid` holds (read from
    /// the tasks' payloads, where a date is its ISO text).
    pub fn held_dates(&self, pid: u32) -> Vec<String> {
        let Some((name, _)) = self.pending().into_iter().find(|(name, _)| name.ends_with(&format!("-{pid}"))) else {
            return vec![];
        };
        let mut con = self.con();
        let held: redis::Value = redis::cmd("XPENDING")
            .arg(Keys::default().tasks())
            .arg(concur_redis::GROUP)
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
                redis::cmd("XRANGE").arg(Keys::default().tasks()).arg(&id).arg(&id).query(&mut con).unwrap();
            let text = format!("{range:?}");
            if let Some(at) = text.find("2024-") {
                dates.push(text[at..at + 10].to_owned());
            }
        }
        dates
    }

    /// The names of the workers that have recorded themselves alive.
    pub fn workers_seen(&self) -> Vec<String> {
        redis::cmd("HKEYS").arg(Keys::default().workers()).query(&mut self.con()).unwrap_or_default()
    }

    pub fn dead_letters(&self) -> i64 {
        redis::cmd("XLEN").arg(Keys::default().dead()).query(&mut self.con()).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PROMPTLY;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn signal(pid: u32, s: Signal) {
    kill(Pid::from_raw(pid as i32), s).unwrap();
}

// ---------------------------------------------------------------------------
// Workers, the API, and a history run
// ---------------------------------------------------------------------------

/// `rates worker` processes; killed when dropped.
pub struct Workers(pub Vec<Child>);

impl Workers {
    /// Starts `n` workers and waits until each has recorded itself on the
    /// broker, which it does just before its first read: a test that then
    /// queues work knows every worker takes part, however slowly a loaded
    /// machine started them.
    pub fn start(n: usize, redis: &Redis, extra: &[&str]) -> Self {
        // The tests' APIs are on this host, on ports of their own.
        let url = redis.url();
        let args = [&["--queue", &url, "--allow-api", "http://127.0.0.1:*"][..], extra].concat();
        Self::start_exact(n, redis, &args, &[(KEY_ENV, KEY)], None)
    }

    /// Starts `n` workers with `args` after `rates worker --concurrency 1`
    /// (the queue and the APIs allowed included: nothing is added) and
    /// `env`, their stdout and stderr appended to `log` (else dropped), and
    /// waits as [`start`](Self::start) does.
    pub fn start_exact(
        n: usize,
        redis: &Redis,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let output = || match log {
            Some(path) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap()),
            None => Stdio::null(),
        };
        let workers = Workers(
            (0..n)
                .map(|_| {
                    Command::new(assert_cmd::cargo::cargo_bin("rates"))
                        .args(["worker", "--concurrency", "1"])
                        .args(args)
                        .envs(env.iter().copied())
                        .stdout(output())
                        .stderr(output())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        );
        wait_until("every worker is reading the queue", || {
            let seen = redis.workers_seen();
            workers.0.iter().all(|w| seen.iter().any(|name| name.ends_with(&format!("-{}", w.id()))))
        });
        workers
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.0[i].id()
    }

    /// Waits (bounded) for worker `i` to exit; its exit code.
    pub fn wait(&mut self, i: usize) -> Option<i32> {
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
pub struct Api {
    pub url: String,
    pub dates: Arc<Mutex<Vec<String>>>,
    /// When each request arrived, on the server's clock.
    pub times: Arc<Mutex<Vec<Instant>>>,
    pub _rt: tokio::runtime::Runtime,
}

impl Api {
    pub fn start(latency: Duration) -> Self {
        let options = rates_server::ServerOptions { latency, ..Default::default() };
        let shared = rates_server::Shared::new(Dataset::embedded(), options).unwrap();
        let dates = Arc::new(Mutex::new(Vec::new()));
        let times = Arc::new(Mutex::new(Vec::new()));
        let (seen, arrived) = (Arc::clone(&dates), Arc::clone(&times));
        let app = rates_server::router(shared).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let (seen, arrived) = (Arc::clone(&seen), Arc::clone(&arrived));
            async move {
                // Only `/rates`: a run also asks `/currencies` for the codes.
                if req.uri().path() == "/rates" {
                    arrived.lock().unwrap().push(Instant::now());
                    let date = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("date=")));
                    seen.lock().unwrap().push(date.unwrap_or("").to_owned());
                }
                next.run(req).await
            }
        }));
        let (url, rt) = crate::common::serve_app(app, 2);
        Api { url, dates, times, _rt: rt }
    }

    pub fn requests(&self) -> usize {
        self.dates.lock().unwrap().len()
    }
}

/// `rates history` of `days` weekdays from 2024-01-01 (no holidays after
/// the 1st) through the queue, started in the background.
pub struct History(pub Child);

pub const FROM: &str = "2024-01-02";

impl History {
    pub fn start(api: &Api, queue: &str, to: &str) -> Self {
        Self::start_with(api, queue, to, &[])
    }

    pub fn start_with(api: &Api, queue: &str, to: &str, extra: &[&str]) -> Self {
        let child = Command::new(assert_cmd::cargo::cargo_bin("rates"))
            // A store of its own: the user's would keep this run's answers
            // under the API's address, and a later test whose API gets the
            // same port would find its days stored and ask for none.
            .env_remove("RATES_API")
            .env("RATES_CACHE", crate::common::fresh_cache())
            .env(KEY_ENV, KEY)
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
    pub fn finish(self) -> (i32, String, String) {
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
pub fn days(to: &str) -> Vec<String> {
    let (from, to) = (rates_core::parse_date(FROM).unwrap(), rates_core::parse_date(to).unwrap());
    Dataset::embedded().days().iter().filter(|d| (from..=to).contains(d)).map(ToString::to_string).collect()
}

/// The dates of the CSV rows, checking none is written twice.
pub fn dates_written(csv: &str) -> Vec<String> {
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

/// Whether the server on `con` is the one started in `dir`, not another
/// test's that took the port first.
fn serves_from(con: &mut redis::Connection, dir: &std::path::Path) -> bool {
    let answer: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG").arg("GET").arg("dir").query(con);
    // Redis reports the directory it changed into: compare real paths.
    let ours = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    answer.is_ok_and(|kv| kv.get(1).is_some_and(|d| std::path::Path::new(d) == ours))
}
