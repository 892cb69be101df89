//! The pool across hosts (`RedisPool`, `serve_queue`), tested against a
//! real `redis-server` that each test starts on its own port and
//! directory, with real worker processes: every `Pool` method, a worker
//! SIGKILLed while it holds a task, a poison task sent to the dead
//! letters, two workers finishing the same task, the broker SIGKILLed and
//! restarted mid-job, the tasks of a vanished caller skipped, and a job
//! given up by its caller resumed by another.
//!
//! Workers re-execute this test binary (`--exact <this test>`) with
//! [`WORKER_ROLE`] set: [`enter`], first in every test, then serves the
//! queue and exits.
//!
//! `cargo test -p concur-redis --test queue`

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use concur::{CancelToken, Pool, Registry, Task, TaskError};
use concur_redis::QueueKey;
use concur_redis::{QueueError, RedisPool, WorkerOptions};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

mod resume;
mod support;
mod untrusted;

use support::{RedisServer, Workers, pending, queued, signal, wait_for_file, wait_until};

/// How long a test waits for something that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(30);
/// How long the whole run may take before a watchdog aborts it.
const SUITE_LIMIT: Duration = Duration::from_secs(240);
/// Set in a worker process: `url;claim_after_ms;max_deliveries[;key[;task_limit_ms]]`
/// (an empty key: none).
const WORKER_ROLE: &str = "CONCUR_TEST_QUEUE_WORKER";
/// Set in a caller process: `url;log;marker`. It queues five `Counted`
/// tasks on a job that lives 1 s past its caller, writes the job id to
/// `marker`, and waits to be killed.
const CALLER_ROLE: &str = "CONCUR_TEST_QUEUE_CALLER";
/// Set in a caller process: `url;log;gate;marker`. It starts the
/// resumable job of [`resume::give_up_half_way`], waits for its five free tasks,
/// writes the job id to `marker`, and waits to be killed.
const RESUMABLE_CALLER_ROLE: &str = "CONCUR_TEST_QUEUE_RESUMABLE_CALLER";
/// Claims come quickly in tests; it is an option, not a wait.
const CLAIM_AFTER: Duration = Duration::from_millis(300);

#[derive(Serialize, Deserialize)]
struct Square(u64);

impl Task for Square {
    type Output = u64;
    const NAME: &'static str = "square";
    fn run(self) -> u64 {
        self.0 * self.0
    }
}

/// Appends a line to `log` each time it runs. The first run (no `log`
/// yet) writes the worker's pid to `marker` and then sleeps `first_ms`
/// (long enough to be killed or stopped in); later runs return at once.
#[derive(Serialize, Deserialize)]
struct SlowFirstTime {
    marker: PathBuf,
    log: PathBuf,
    first_ms: u64,
    value: u64,
}

impl Task for SlowFirstTime {
    type Output = u64;
    const NAME: &'static str = "slow-first-time";
    fn run(self) -> u64 {
        use std::io::Write;
        let first = !self.log.exists();
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log opens");
        writeln!(log, "{}", std::process::id()).expect("log written");
        if first {
            std::fs::write(&self.marker, std::process::id().to_string()).expect("marker written");
            std::thread::sleep(Duration::from_millis(self.first_ms));
        }
        self.value
    }
}

/// Kills the worker that runs it, every time.
#[derive(Serialize, Deserialize)]
struct Poison;

impl Task for Poison {
    type Output = ();
    const NAME: &'static str = "poison";
    fn run(self) {
        std::process::abort();
    }
}

/// Counts its runs in a file, then returns.
#[derive(Serialize, Deserialize)]
struct Counted(PathBuf);

impl Task for Counted {
    type Output = ();
    const NAME: &'static str = "counted";
    fn run(self) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.0).expect("opens");
        writeln!(f, "ran").expect("written");
    }
}

/// Appends its value to `log` as a line each time it runs, after waiting
/// (bounded) for the file `gate` if it has one: a worker holding it holds
/// it until the test opens the gate.
#[derive(Serialize, Deserialize)]
struct Logged {
    log: PathBuf,
    gate: Option<PathBuf>,
    value: u64,
}

impl Task for Logged {
    type Output = u64;
    const NAME: &'static str = "logged";
    fn run(self) -> u64 {
        use std::io::Write;
        if let Some(gate) = &self.gate {
            wait_until("the test opens the gate", || gate.exists());
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("opens");
        // One write per line: the worker's two runner threads append at once.
        f.write_all(format!("{}\n", self.value).as_bytes()).expect("written");
        self.value
    }
}

/// Sleeps for its milliseconds: a task that overstays any time limit.
#[derive(Serialize, Deserialize)]
struct Sleeps(u64);

impl Task for Sleeps {
    type Output = ();
    const NAME: &'static str = "sleeps";
    fn run(self) {
        std::thread::sleep(Duration::from_millis(self.0));
    }
}

fn registry() -> Registry {
    Registry::new()
        .register::<Sleeps>()
        .register::<Square>()
        .register::<SlowFirstTime>()
        .register::<Poison>()
        .register::<Counted>()
        .register::<Logged>()
}

/// First thing in every test: in a worker process, serves the queue and
/// exits; in the test run, starts the watchdog once.
fn enter() {
    if let Ok(role) = std::env::var(WORKER_ROLE) {
        let parts: Vec<&str> = role.split(';').collect();
        let (url, claim_ms, max) = match parts[..] {
            [url, claim_ms, max, ..] => (url, claim_ms, max),
            _ => panic!("bad worker role {role:?}"),
        };
        let mut options = WorkerOptions::new()
            .concurrency(std::num::NonZeroUsize::new(2).expect("not zero"))
            .claim_after(Duration::from_millis(claim_ms.parse().expect("ms")))
            .max_deliveries(max.parse().expect("a count above zero"));
        if let Some(key) = parts.get(3).filter(|k| !k.is_empty()) {
            options = options.key(QueueKey::new(key.as_bytes()).expect("a test key"));
        }
        if let Some(ms) = parts.get(4) {
            options = options.task_limit(Duration::from_millis(ms.parse().expect("ms")));
        }
        let code = match concur_redis::serve_queue(url, registry(), options) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("test worker: {e}");
                3
            }
        };
        std::process::exit(code);
    }
    if let Ok(role) = std::env::var(CALLER_ROLE) {
        let parts: Vec<&str> = role.split(';').collect();
        let [url, log, marker] = parts[..] else { panic!("bad caller role {role:?}") };
        let pool = RedisPool::builder(url).job_ttl(Duration::from_secs(1)).build().expect("pool connects");
        let _handles: Vec<_> = (0..5).map(|_| pool.apply_async(Counted(PathBuf::from(log)))).collect();
        support::write_file(Path::new(marker), pool.job());
        std::thread::sleep(SUITE_LIMIT);
        std::process::exit(0);
    }
    if let Ok(role) = std::env::var(RESUMABLE_CALLER_ROLE) {
        let parts: Vec<&str> = role.split(';').collect();
        let [url, log, gate, marker] = parts[..] else { panic!("bad caller role {role:?}") };
        let pool = RedisPool::builder(url).describe("twenty logged").build().expect("pool connects");
        let handles: Vec<_> = gated(Path::new(log), Path::new(gate))
            .into_iter()
            .enumerate()
            .map(|(id, task)| pool.apply_with_id(id as u64, task))
            .collect();
        for (value, h) in handles.into_iter().take(5).enumerate() {
            assert_eq!(h.wait(), Ok(value as u64));
        }
        support::write_file(Path::new(marker), pool.job());
        std::thread::sleep(SUITE_LIMIT);
        std::process::exit(0);
    }
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(SUITE_LIMIT);
            eprintln!("queue tests overstayed {SUITE_LIMIT:?}: aborting");
            std::process::abort();
        });
    });
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn every_pool_method_works_across_processes() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(2, &redis.url(), CLAIM_AFTER, 5);
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    let expected: Vec<Result<u64, TaskError>> = (0..200u64).map(|x| Ok(x * x)).collect();
    assert_eq!(pool.map((0..200).map(Square)), expected);
    assert_eq!(pool.imap((0..10).map(Square)).collect::<Vec<_>>(), expected[..10]);
    let mut seen: Vec<usize> = pool
        .imap_unordered((0..50).map(Square))
        .map(|(i, r)| {
            assert_eq!(r, Ok((i * i) as u64));
            i
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    assert_eq!(pool.apply_async(Square(12)).wait(), Ok(144));
    pool.close();
    assert_eq!(pool.apply_async(Square(1)).wait(), Err(TaskError::Closed));
    assert_eq!(pool.map([Square(1)]), [Err(TaskError::Closed)]);
    pool.join();
    assert_eq!(pool.waiting(), 0);
}

#[test]
fn a_task_no_worker_knows_is_that_tasks_error() {
    enter();
    #[derive(Serialize, Deserialize)]
    struct Unknown;
    impl Task for Unknown {
        type Output = ();
        const NAME: &'static str = "unknown";
        fn run(self) {}
    }
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    let got = pool.apply_async(Unknown).wait();
    assert!(matches!(&got, Err(TaskError::Failed(m)) if m.contains("\"unknown\"")), "{got:?}");
}

#[test]
fn terminate_cancels_what_waits_and_workers_skip_the_abandoned_job() {
    enter();
    let redis = RedisServer::start();
    let log = redis.path("skipped");
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    // No worker yet: the tasks wait in the stream.
    let handles: Vec<_> = (0..5).map(|_| pool.apply_async(Counted(log.clone()))).collect();
    pool.terminate();
    for h in handles {
        assert_eq!(h.wait(), Err(TaskError::Cancelled));
    }
    a_worker_runs_none_of_the_queued_tasks(&redis, &log, "no task of an abandoned job runs");
}

/// Starts a worker, waits until it has dealt with every queued task, and
/// checks that none ran (their job is gone) and none is left pending.
fn a_worker_runs_none_of_the_queued_tasks(redis: &RedisServer, log: &Path, why: &str) {
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let mut con = redis.con();
    wait_until("the worker has dealt with the queued tasks", || queued(&mut con) == 0);
    assert_eq!(lines(log), 0, "{why}");
    assert_eq!(pending(&mut con), 0);
}

#[test]
fn the_job_of_a_killed_caller_expires_and_its_tasks_never_run() {
    enter();
    let redis = RedisServer::start();
    let (log, marker) = (redis.path("log"), redis.path("job"));
    let current = std::thread::current();
    let test = current.name().expect("tests run on threads named after them");
    let mut caller = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--quiet"])
        .env(CALLER_ROLE, format!("{};{};{}", redis.url(), log.display(), marker.display()))
        .spawn()
        .expect("the caller starts");
    let job = wait_for_file(&marker);
    caller.kill().expect("the caller can be killed");
    caller.wait().expect("reaped");
    let mut con = redis.con();
    // Nobody renews it now: the broker lets it expire.
    wait_until("the dead caller's job expires", || {
        redis::cmd("EXISTS").arg(format!("concur:job:{job}:alive")).query::<i64>(&mut con).expect("EXISTS") == 0
    });
    a_worker_runs_none_of_the_queued_tasks(&redis, &log, "no task of an expired job runs");
}

#[test]
fn a_worker_killed_holding_a_task_loses_nothing() {
    enter();
    let redis = RedisServer::start();
    let workers = Workers::start(2, &redis.url(), CLAIM_AFTER, 5);
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    let (marker, log) = (redis.path("marker"), redis.path("log"));
    let slow = SlowFirstTime { marker: marker.clone(), log: log.clone(), first_ms: 60_000, value: 7 };
    let held = pool.apply_async(slow);
    let others: Vec<_> = (0..20).map(|x| pool.apply_async(Square(x))).collect();
    let pid: u32 = wait_for_file(&marker).trim().parse().expect("a pid");
    assert!(workers.pids().contains(&pid));
    signal(pid, Signal::SIGKILL);
    assert_eq!(held.wait(), Ok(7), "another worker claimed and ran it");
    for (x, h) in others.into_iter().enumerate() {
        assert_eq!(h.wait(), Ok((x * x) as u64));
    }
    assert_eq!(lines(&log), 2, "the task ran again after its worker died");
    let mut con = redis.con();
    assert_eq!(pending(&mut con), 0, "nothing is left pending");
}

#[test]
fn a_poison_task_ends_in_the_dead_letters_as_its_error() {
    enter();
    let redis = RedisServer::start();
    // Two deliveries allowed: two workers die of it, the third sends it to
    // the dead letters.
    let _workers = Workers::start(3, &redis.url(), CLAIM_AFTER, 2);
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    let got = pool.apply_async(Poison).wait();
    assert!(
        matches!(&got, Err(TaskError::Failed(m)) if m.starts_with("dead letter:") && m.contains("\"poison\"")),
        "{got:?}"
    );
    let mut con = redis.con();
    assert_eq!(redis::cmd("XLEN").arg("concur:dead").query::<i64>(&mut con).expect("XLEN"), 1);
    // The surviving worker goes on serving.
    assert_eq!(pool.map((0..10).map(Square)), (0..10u64).map(|x| Ok(x * x)).collect::<Vec<_>>());
    assert_eq!(pending(&mut con), 0);
    let status = concur_redis::queue_status(&redis.url(), "concur").expect("status");
    assert_eq!(status.dead_letters, 1);
    assert_eq!(status.queued, 0);
}

#[test]
fn two_workers_finishing_one_task_give_one_result() {
    enter();
    let redis = RedisServer::start();
    let workers = Workers::start(2, &redis.url(), CLAIM_AFTER, 5);
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    let (marker, log) = (redis.path("marker"), redis.path("log"));
    let slow = SlowFirstTime { marker: marker.clone(), log: log.clone(), first_ms: 1000, value: 9 };
    let first = pool.apply_async(slow);
    let pid: u32 = wait_for_file(&marker).trim().parse().expect("a pid");
    // Stalled, it renews nothing: the other worker claims and finishes it.
    signal(pid, Signal::SIGSTOP);
    assert!(workers.pids().contains(&pid));
    assert_eq!(first.wait(), Ok(9));
    signal(pid, Signal::SIGCONT);
    // The stalled worker finishes too and writes a second answer.
    let mut con = redis.con();
    let results = format!("concur:job:{}:results", pool.job());
    wait_until("the stalled worker's duplicate answer arrives", || {
        redis::cmd("XLEN").arg(&results).query::<i64>(&mut con).expect("XLEN") >= 2
    });
    assert_eq!(lines(&log), 2, "both workers ran it");
    assert_eq!(pool.waiting(), 0);
    // The duplicate was dropped, not handed to the next task.
    assert_eq!(pool.apply_async(Square(5)).wait(), Ok(25));
    assert_eq!(pending(&mut con), 0);
}

#[test]
fn a_broker_killed_and_restarted_mid_job_loses_nothing() {
    enter();
    let mut redis = RedisServer::start();
    let _workers = Workers::start(2, &redis.url(), CLAIM_AFTER, 5);
    let pool = RedisPool::builder(redis.url()).broker_timeout(PROMPTLY).build().expect("pool connects");
    let (log, unused) = (redis.path("log"), redis.path("unused"));
    let n = 300;
    let mut results = pool.imap_unordered((0..n).map(|x| SlowFirstTime {
        marker: unused.clone(),
        log: log.with_extension(x.to_string()),
        first_ms: 5,
        value: x,
    }));
    let mut seen = vec![0; n as usize];
    for (i, r) in results.by_ref().take(20) {
        assert_eq!(r, Ok(i as u64));
        seen[i] += 1;
    }
    redis.restart();
    for (i, r) in results {
        assert_eq!(r, Ok(i as u64));
        seen[i] += 1;
    }
    assert!(seen.iter().all(|&s| s == 1), "every item exactly once: {seen:?}");
    let mut con = redis.con();
    wait_until("the group's pending list empties", || pending(&mut con) == 0);
}

#[test]
fn the_shared_throttle_is_exact_under_contention() {
    enter();
    let redis = RedisServer::start();
    let (rate, burst) = (200.0, 3u32);
    let quota = concur::throttle::Quota::new(rate, burst).expect("a quota");
    // Four callers, each with its own connection, as four hosts would be.
    let slots: Vec<u64> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let throttle =
                        concur_redis::RedisThrottle::new(&redis.url(), "test:limit", quota).expect("connects");
                    (0..25).map(|_| throttle.reserve().expect("a grant").1).collect::<Vec<u64>>()
                })
            })
            .collect();
        callers.into_iter().flat_map(|c| c.join().expect("no panic")).collect()
    });
    let mut slots = slots;
    slots.sort_unstable();
    assert_eq!(slots.len(), 100);
    // In any window [slots[i], slots[j]] of w µs, at most burst + rate·w grants.
    for i in 0..slots.len() {
        for j in i..slots.len() {
            let w = (slots[j] - slots[i]) as f64 / 1e6;
            let grants = (j - i + 1) as f64;
            assert!(grants <= f64::from(burst) + rate * w + 1e-9, "{grants} grants in {w}s");
        }
    }
    // And it does limit: 100 grants at 200/s in bursts of 3 span ~0.485 s.
    let span = (slots[99] - slots[0]) as f64 / 1e6;
    assert!(span >= (100.0 - f64::from(burst)) / rate - 1e-3, "{span}s");
    let cancel = concur::CancelToken::new();
    cancel.cancel();
    let throttle = concur_redis::RedisThrottle::new(&redis.url(), "test:limit", quota).expect("connects");
    assert_eq!(throttle.acquire_cancellable(&cancel), Err(concur::Cancelled));
}

#[test]
fn a_cancelled_caller_stops_waiting_for_workers_that_never_come() {
    enter();
    let redis = RedisServer::start();
    let cancel = concur::CancelToken::new();
    let pool = RedisPool::builder(redis.url()).cancel_on(cancel.clone()).build().expect("pool connects");
    // No worker: without the token these would wait for the broker's loss.
    let handles: Vec<_> = (0..3).map(|x| pool.apply_async(Square(x))).collect();
    cancel.cancel();
    for h in handles {
        let got = h.wait_timeout(PROMPTLY).expect("answered promptly once cancelled");
        assert_eq!(got, Err(TaskError::Cancelled));
    }
    assert_eq!(pool.apply_async(Square(1)).wait(), Err(TaskError::Closed));
}

/// Twenty `Logged` tasks, the first five free to run and the others held
/// at `gate`.
fn gated(log: &Path, gate: &Path) -> Vec<Logged> {
    (0..20)
        .map(|value| Logged { log: log.to_path_buf(), gate: (value >= 5).then(|| gate.to_path_buf()), value })
        .collect()
}

/// How many times each value was logged, by value.
fn runs(log: &Path) -> Vec<usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut runs = vec![0; 20];
    for line in text.lines() {
        let value: usize = line.parse().expect("a logged value");
        assert!(value < 20, "{value} logged in {}:\n{text}", log.display());
        runs[value] += 1;
    }
    runs
}
