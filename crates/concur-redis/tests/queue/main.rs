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

mod support;

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
/// resumable job of [`give_up_half_way`], waits for its five free tasks,
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
            .concurrency(2)
            .claim_after(Duration::from_millis(claim_ms.parse().expect("ms")))
            .max_deliveries(max.parse().expect("a count"));
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
    // Four callers, each with its own connection, as four hosts would be.
    let slots: Vec<u64> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let throttle =
                        concur_redis::RedisThrottle::new(&redis.url(), "test:limit", rate, burst).expect("connects");
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
    let throttle = concur_redis::RedisThrottle::new(&redis.url(), "test:limit", rate, burst).expect("connects");
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

/// Starts a resumable job of [`gated`] tasks under ids 0..20, waits for
/// the five free ones, then gives it up (cancels its caller): the others
/// are held by the worker or still queued. The pool, given up.
fn give_up_half_way(url: &str, about: &str, log: &Path, gate: &Path) -> RedisPool {
    let cancel = CancelToken::new();
    let pool = RedisPool::builder(url).describe(about).cancel_on(cancel.clone()).build().expect("pool connects");
    let mut handles: Vec<_> =
        gated(log, gate).into_iter().enumerate().map(|(id, task)| pool.apply_with_id(id as u64, task)).collect();
    let held = handles.split_off(5);
    for (value, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait(), Ok(value as u64));
    }
    cancel.cancel();
    for h in held {
        let got = h.wait_timeout(PROMPTLY).expect("answered promptly once cancelled");
        assert_eq!(got, Err(TaskError::Cancelled));
    }
    pool
}

#[test]
fn a_job_given_up_and_resumed_runs_each_task_once_waiting_for_those_still_queued() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let (log, gate) = (redis.path("log"), redis.path("gate"));
    let given_up = give_up_half_way(&redis.url(), "twenty logged", &log, &gate);
    let job = given_up.job().to_owned();
    drop(given_up);

    let pool = RedisPool::builder(redis.url()).describe("twenty logged").resume(&job).build().expect("resumes");
    assert_eq!(pool.job(), job);
    assert_eq!(pool.answered(), (0..5).collect::<Vec<u64>>(), "what the first caller got");
    // Two held by the worker (its concurrency), the rest queued: none lost
    // when the first caller left, none skipped.
    assert_eq!(pool.still_queued(), (5..20).collect::<Vec<u64>>());
    assert_eq!(pool.answer::<Logged>(3), Some(Ok(3)));
    let handles: Vec<_> =
        gated(&log, &gate).into_iter().enumerate().map(|(id, task)| pool.apply_with_id(id as u64, task)).collect();
    assert!(pool.still_queued().is_empty(), "every task asked for");
    support::write_file(&gate, "open");
    for (value, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait(), Ok(value as u64), "task {value}");
    }
    let mut con = redis.con();
    assert_eq!(queued(&mut con), 0, "nothing queued twice");
    assert_eq!(pending(&mut con), 0);
    assert_eq!(runs(&log), vec![1; 20], "each task ran exactly once");
}

#[test]
fn a_resumed_job_gives_what_workers_finished_after_its_caller_left_without_running_it_again() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let (log, gate) = (redis.path("log"), redis.path("gate"));
    let given_up = give_up_half_way(&redis.url(), "twenty logged", &log, &gate);
    let job = given_up.job().to_owned();
    // The job lives on though its caller gave it up: the worker goes on
    // with its tasks rather than skip them.
    support::write_file(&gate, "open");
    let mut con = redis.con();
    wait_until("the worker has run the job's tasks", || queued(&mut con) == 0 && pending(&mut con) == 0);
    assert_eq!(runs(&log), vec![1; 20], "every task ran once, none skipped");
    drop(given_up);

    let pool = RedisPool::builder(redis.url()).describe("twenty logged").resume(&job).build().expect("resumes");
    assert_eq!(pool.answered(), (0..20).collect::<Vec<u64>>());
    assert!(pool.still_queued().is_empty());
    for (id, task) in gated(&log, &gate).into_iter().enumerate() {
        assert_eq!(pool.apply_with_id(id as u64, task).wait(), Ok(id as u64));
    }
    // A new task (a new id) runs as in any pool.
    let more = Logged { log: log.clone(), gate: None, value: 7 };
    assert_eq!(pool.apply_with_id(20, more).wait(), Ok(7));
    let mut expected = vec![1; 20];
    expected[7] = 2;
    assert_eq!(runs(&log), expected, "only the new task ran");
}

#[test]
fn resuming_an_unknown_a_finished_an_expired_or_another_job_is_refused() {
    enter();
    let redis = RedisServer::start();
    let url = redis.url();
    let resume = |job: &str, about: &str| RedisPool::builder(&url).describe(about).resume(job).build();
    assert!(matches!(resume("nosuchjob", "a"), Err(QueueError::UnknownJob(j)) if j == "nosuchjob"));

    // A job that ended well is gone.
    let finished = RedisPool::builder(&url).describe("a").build().expect("pool connects");
    let job = finished.job().to_owned();
    drop(finished);
    assert!(matches!(resume(&job, "a"), Err(QueueError::UnknownJob(j)) if j == job));

    // A job given up: resumable for its time to live, for the same work only.
    let cancel = CancelToken::new();
    let pool = RedisPool::builder(&url)
        .describe("squares")
        .job_ttl(Duration::from_secs(3))
        .cancel_on(cancel.clone())
        .build()
        .expect("pool connects");
    let job = pool.job().to_owned();
    let waiting = pool.apply_with_id(0, Square(3));
    cancel.cancel();
    assert_eq!(waiting.wait_timeout(PROMPTLY).expect("cancelled promptly"), Err(TaskError::Cancelled));
    drop(pool);
    let got = resume(&job, "cubes");
    assert!(
        matches!(&got, Err(QueueError::NotTheSameJob { job: j, was, asked }) if *j == job && was == "squares" && asked == "cubes"),
        "{got:?}"
    );
    let mut con = redis.con();
    wait_until("the given-up job expires", || {
        redis::cmd("EXISTS").arg(format!("concur:job:{job}:alive")).query::<i64>(&mut con).expect("EXISTS") == 0
    });
    assert!(matches!(resume(&job, "squares"), Err(QueueError::UnknownJob(j)) if j == job));
    // Ids from 2^63 are the pool's own.
    let pool = RedisPool::connect(&url).expect("pool connects");
    assert!(matches!(pool.apply_with_id(1 << 63, Square(1)).wait(), Err(TaskError::Failed(_))));
}

#[test]
fn the_job_of_a_killed_caller_is_resumed_by_another_and_each_task_runs_once() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let (log, gate, marker) = (redis.path("log"), redis.path("gate"), redis.path("job"));
    let current = std::thread::current();
    let test = current.name().expect("tests run on threads named after them");
    let role = format!("{};{};{};{}", redis.url(), log.display(), gate.display(), marker.display());
    let mut caller = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--quiet"])
        .env(RESUMABLE_CALLER_ROLE, role)
        .spawn()
        .expect("the caller starts");
    let job = wait_for_file(&marker);
    // As a host gone: nothing is cleaned up.
    caller.kill().expect("the caller can be killed");
    caller.wait().expect("reaped");

    let pool = RedisPool::builder(redis.url()).describe("twenty logged").resume(&job).build().expect("resumes");
    assert_eq!(pool.answered(), (0..5).collect::<Vec<u64>>());
    assert_eq!(pool.still_queued(), (5..20).collect::<Vec<u64>>());
    let handles: Vec<_> =
        gated(&log, &gate).into_iter().enumerate().map(|(id, task)| pool.apply_with_id(id as u64, task)).collect();
    support::write_file(&gate, "open");
    for (value, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait(), Ok(value as u64), "task {value}");
    }
    assert_eq!(runs(&log), vec![1; 20], "each task ran exactly once");
    assert_eq!(pending(&mut redis.con()), 0);
}

#[test]
fn a_job_cancelled_after_its_last_answer_can_still_be_resumed() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start(1, &redis.url(), CLAIM_AFTER, 5);
    let cancel = CancelToken::new();
    let pool = RedisPool::builder(redis.url()).describe("squares").cancel_on(cancel.clone()).build().expect("connects");
    assert_eq!(pool.apply_with_id(0, Square(3)).wait(), Ok(9));
    // Cancelled with nothing waiting (the caller had items left unasked),
    // and dropped before the results thread looks at the token.
    cancel.cancel();
    let job = pool.job().to_owned();
    drop(pool);
    let pool = RedisPool::builder(redis.url()).describe("squares").resume(&job).build().expect("resumes");
    assert_eq!(pool.answered(), [0]);
    assert_eq!(pool.apply_with_id(0, Square(3)).wait(), Ok(9));
    assert_eq!(pool.apply_with_id(1, Square(4)).wait(), Ok(16));
}

/// The key of the tests' keyed workers and callers.
const KEY: &str = "the tests' key, sixteen bytes+";

fn key(secret: &str) -> QueueKey {
    QueueKey::new(secret.as_bytes()).expect("a test key")
}

/// The reasons of the dead letters so far.
fn dead_reasons(con: &mut redis::Connection) -> Vec<String> {
    let reply: redis::Value = redis::cmd("XRANGE").arg("concur:dead").arg("-").arg("+").query(con).expect("XRANGE");
    format!("{reply:?}").split("reason").skip(1).map(|rest| rest.chars().take(120).collect()).collect()
}

#[test]
fn a_task_without_the_keys_tag_is_a_dead_letter_and_never_runs() {
    enter();
    let redis = RedisServer::start();
    let log = redis.path("forged");
    let _workers = Workers::start_with(1, &redis.url(), CLAIM_AFTER, 5, KEY, None);
    let mut con = redis.con();
    // An attacker without the key (on a loopback broker a caller may go
    // without one; the worker still checks).
    let unkeyed = RedisPool::connect(&redis.url()).expect("pool connects");
    let _forged = unkeyed.apply_async(Counted(log.clone()));
    wait_until("the untagged task is a dead letter", || dead_reasons(&mut con).len() == 1);
    let wrong = RedisPool::builder(redis.url()).key(key("another key, sixteen+")).build().expect("connects");
    let _forged = wrong.apply_async(Counted(log.clone()));
    wait_until("the wrongly tagged task is a dead letter", || dead_reasons(&mut con).len() == 2);
    let reasons = dead_reasons(&mut con);
    assert!(reasons[0].contains("no tag") && reasons[1].contains("wrong tag"), "{reasons:?}");
    assert_eq!(lines(&log), 0, "no forged task ran");
    assert_eq!(pending(&mut con), 0, "both acknowledged");
    // The worker serves the queue's own tasks still.
    let keyed = RedisPool::builder(redis.url()).key(key(KEY)).build().expect("connects");
    assert_eq!(keyed.apply_async(Square(7)).wait(), Ok(49));
    unkeyed.terminate();
    wrong.terminate();
}

#[test]
fn a_result_without_the_keys_tag_is_dropped() {
    enter();
    let redis = RedisServer::start();
    // A worker without the key answers untagged, as a forger would.
    let _workers = Workers::start_with(1, &redis.url(), CLAIM_AFTER, 5, "", None);
    let pool = RedisPool::builder(redis.url()).key(key(KEY)).build().expect("connects");
    let handle = pool.apply_async(Square(3));
    let mut con = redis.con();
    wait_until("the worker answered", || queued(&mut con) == 0 && pending(&mut con) == 0);
    let handle = match handle.wait_timeout(Duration::from_secs(2)) {
        Ok(got) => panic!("an untagged answer was taken: {got:?}"),
        Err(handle) => handle,
    };
    pool.terminate();
    assert_eq!(handle.wait(), Err(TaskError::Cancelled));
}

#[test]
fn a_task_past_its_time_limit_is_ended_and_its_slot_serves_the_next() {
    enter();
    let redis = RedisServer::start();
    // Two slots, tasks ended after half a second.
    let _workers = Workers::start_with(1, &redis.url(), CLAIM_AFTER, 5, "", Some(500));
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    let stuck: Vec<_> = (0..2).map(|_| pool.apply_async(Sleeps(3_600_000))).collect();
    let next = pool.apply_async(Square(4));
    for h in stuck {
        let got = h.wait();
        assert!(matches!(&got, Err(TaskError::Failed(m)) if m.contains("time limit")), "{got:?}");
    }
    assert_eq!(next.wait(), Ok(16), "a freed slot ran the next task");
    let mut con = redis.con();
    wait_until("nothing is left pending", || pending(&mut con) == 0);
}

#[test]
fn a_bad_ttl_and_a_results_key_of_the_wrong_type_fail_one_entry_each() {
    enter();
    let redis = RedisServer::start();
    let _workers = Workers::start_with(1, &redis.url(), CLAIM_AFTER, 5, "", None);
    let mut con = redis.con();
    // A task whose time to live would make EXPIRE fail (2^63 s).
    let pool = RedisPool::connect(&redis.url()).expect("pool connects");
    redis::cmd("XADD")
        .arg("concur:tasks")
        .arg("*")
        .arg("job")
        .arg(pool.job())
        .arg("id")
        .arg(1)
        .arg("name")
        .arg("square")
        .arg("ttl")
        .arg("9223372036854775808")
        .arg("payload")
        .arg(&b"\x02"[..])
        .query::<String>(&mut con)
        .expect("XADD");
    wait_until("the bad ttl is a dead letter", || dead_reasons(&mut con).len() == 1);
    assert!(dead_reasons(&mut con)[0].contains("out of range"), "{:?}", dead_reasons(&mut con));
    // A job whose results key is a string: its answer cannot be written.
    let broken = RedisPool::connect(&redis.url()).expect("pool connects");
    let results = format!("concur:job:{}:results", broken.job());
    redis::cmd("SET").arg(&results).arg("not a stream").query::<()>(&mut con).expect("SET");
    let got = broken.apply_async(Square(2)).wait();
    assert!(matches!(&got, Err(TaskError::Failed(m)) if m.contains("WRONGTYPE")), "{got:?}");
    wait_until("the unwritable answer is a dead letter", || dead_reasons(&mut con).len() == 2);
    assert!(dead_reasons(&mut con)[1].contains("cannot write its answer"), "{:?}", dead_reasons(&mut con));
    // The worker goes on with the next task.
    assert_eq!(pool.apply_async(Square(5)).wait(), Ok(25));
    wait_until("nothing is left pending", || pending(&mut con) == 0);
}
