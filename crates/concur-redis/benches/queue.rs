//! What the pool across hosts costs, on this machine: trivial tasks
//! through a `RedisPool` with 1, 2 and 4 worker processes (tasks per
//! second, batched), and the added latency of one task alone (a round trip
//! caller → broker → worker → broker → caller). Target: at least 10,000
//! trivial tasks per second with 2 workers. Then the cost of one grant of
//! the shared `RedisThrottle` against the local `Throttle`.
//!
//! It starts its own `redis-server` (which must be installed) on a free
//! loopback port in a temporary directory, with `appendonly yes` and
//! `appendfsync everysec` (the broker's usual durable setting; `always`
//! costs a sync per write). Workers run this bench binary again, so `main`
//! is written by hand and there is no criterion: the figures are printed.
//!
//! Tasks and results are signed with a key (HMAC-SHA256), as on a broker
//! shared with other hosts; `CONCUR_BENCH_UNSIGNED=1` measures without
//! one (loopback only), to see what signing costs.
//!
//! `cargo bench -p concur-redis --bench queue`

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concur::{Pool, Registry, Task};
use concur_redis::{RedisPool, WorkerOptions};
use serde::{Deserialize, Serialize};

/// Any value: no key, nothing signed.
const UNSIGNED: &str = "CONCUR_BENCH_UNSIGNED";
/// The bench's key, when it signs.
const KEY: &[u8] = b"the queue bench's key, 16+ bytes";

/// The key, unless `UNSIGNED` is set.
fn key() -> Option<concur_redis::QueueKey> {
    if std::env::var_os(UNSIGNED).is_some() {
        return None;
    }
    Some(concur_redis::QueueKey::new(KEY).expect("a long enough key"))
}

/// Set in a worker process: the queue's URL.
const WORKER: &str = "CONCUR_BENCH_QUEUE_WORKER";
/// Tasks per measured batch.
const TASKS: u64 = 50_000;
/// Tasks timed one at a time for the latency.
const ALONE: u32 = 500;
/// Throttle grants timed.
const GRANTS: u32 = 10_000;

/// As little work as a task can do.
#[derive(Serialize, Deserialize)]
struct Trivial(u64);

impl Task for Trivial {
    type Output = u64;
    const NAME: &'static str = "trivial";
    fn run(self) -> u64 {
        self.0 + 1
    }
}

fn main() {
    if let Ok(url) = std::env::var(WORKER) {
        let mut options =
            WorkerOptions::new().concurrency(std::num::NonZeroUsize::new(2).expect("not zero")).prefetch(512);
        if let Some(key) = key() {
            options = options.key(key);
        }
        let code = i32::from(concur_redis::serve_queue(&url, Registry::new().register::<Trivial>(), options).is_err());
        std::process::exit(code);
    }
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let dir = std::env::temp_dir().join(format!("concur-queue-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    let url = format!("redis://127.0.0.1:{port}/0");
    let pool = connect(&url);

    for workers in [1, 2, 4] {
        let mut children: Vec<Child> = (0..workers)
            .map(|_| {
                Command::new(std::env::current_exe().expect("this bench"))
                    .env(WORKER, &url)
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("a worker starts")
            })
            .collect();
        // Warm up: every worker connected and serving.
        let _ = pool.map((0..2_000).map(Trivial));
        let started = Instant::now();
        let done = pool.imap_unordered((0..TASKS).map(Trivial)).filter(|(_, r)| r.is_ok()).count();
        let elapsed = started.elapsed();
        assert_eq!(done as u64, TASKS, "every task answered");
        let per_second = TASKS as f64 / elapsed.as_secs_f64();
        let started = Instant::now();
        for i in 0..ALONE {
            assert_eq!(pool.apply_async(Trivial(u64::from(i))).wait(), Ok(u64::from(i) + 1));
        }
        let alone = started.elapsed() / ALONE;
        println!(
            "queue: {workers} worker(s) x 2: {per_second:>9.0} tasks/s ({TASKS} in {elapsed:.2?}); \
             one task alone: {:.0} µs round trip",
            alone.as_secs_f64() * 1e6
        );
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    drop(pool);

    // The shared throttle's cost per grant, against the local one, with a
    // rate so high that neither ever waits: what is left is the bookkeeping
    // (for the shared one, a script call on the broker).
    let shared = concur_redis::RedisThrottle::new(
        &url,
        "bench:limit",
        concur::throttle::Quota::new(1e9, 1_000_000).expect("a quota"),
    )
    .expect("connects");
    let local = concur::Throttle::new(1e9, 1_000_000).expect("a valid rate");
    let started = Instant::now();
    for _ in 0..GRANTS {
        shared.reserve().expect("a grant");
    }
    let shared_each = started.elapsed() / GRANTS;
    let started = Instant::now();
    for _ in 0..GRANTS {
        let _ = std::hint::black_box(local.try_acquire());
    }
    let local_each = started.elapsed() / GRANTS;
    println!("signed: {}", key().is_some());
    println!("throttle: shared (Redis GCRA) {shared_each:.2?} per grant; local {local_each:.2?} per grant");
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pool, once the freshly started broker answers.
fn connect(url: &str) -> RedisPool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let builder = RedisPool::builder(url);
        let builder = match key() {
            Some(key) => builder.key(key),
            None => builder,
        };
        match builder.build() {
            Ok(pool) => return pool,
            Err(e) if Instant::now() > deadline => panic!("the broker did not start: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
