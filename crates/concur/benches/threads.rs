//! The thread pool and the throttle against the crates of the field, in one
//! run: `concur::ThreadPool` beside rayon and the `threadpool` crate on
//! 100,000 empty tasks, and `Throttle::try_acquire` beside governor's
//! `check`, uncontended and with two threads contending, and the blocking
//! `Throttle::acquire` when no wait is due; and one task's round trip
//! through `submit` and `wait`.
//!
//! `cargo bench -p concur --bench threads`

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TASKS: u32 = 100_000;
const WORKERS: usize = 2;

fn pools(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_100k_empty_tasks");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(TASKS as u64));

    let ours = concur::ThreadPool::new(WORKERS).expect("pool");
    g.bench_function("concur::ThreadPool::map", |b| {
        b.iter(|| {
            let out = ours.map_fn(|x: u32| x, 0..TASKS);
            assert_eq!(out.len(), TASKS as usize);
        })
    });

    let tp = threadpool::ThreadPool::new(WORKERS);
    g.bench_function("threadpool::execute+channel", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::unbounded();
            for i in 0..TASKS {
                let tx = tx.clone();
                tp.execute(move || {
                    let _ = tx.send(i);
                });
            }
            drop(tx);
            assert_eq!(rx.iter().count(), TASKS as usize);
        })
    });

    let rayon = rayon::ThreadPoolBuilder::new().num_threads(WORKERS).build().expect("rayon");
    g.bench_function("rayon::spawn+channel", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::unbounded();
            for i in 0..TASKS {
                let tx = tx.clone();
                rayon.spawn(move || {
                    let _ = tx.send(i);
                });
            }
            drop(tx);
            assert_eq!(rx.iter().count(), TASKS as usize);
        })
    });
    g.bench_function("rayon::par_iter (chunked, for reference)", |b| {
        use rayon::prelude::*;
        b.iter(|| {
            let out: Vec<u32> = rayon.install(|| (0..TASKS).into_par_iter().map(|x| x).collect());
            assert_eq!(out.len(), TASKS as usize);
        })
    });
    g.finish();
}

/// Runs `f` `iters` times on each of `threads` threads at once; the time
/// until all are done.
fn contended(threads: usize, iters: u64, f: impl Fn() + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters {
                    f();
                }
            });
        }
    });
    start.elapsed()
}

/// One task's round trip through `submit` and `wait`: from one caller, and
/// from 16 callers at once on 2 workers, as the dispatcher threads of
/// `rates`' pool models wait.
fn round_trips(c: &mut Criterion) {
    let mut g = c.benchmark_group("submit_and_wait");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let pool = concur::ThreadPool::new(WORKERS).expect("pool");
    g.bench_function("1_caller", |b| b.iter(|| pool.submit(|| 1u32).wait()));
    g.bench_function("16_callers", |b| {
        b.iter_custom(|iters| {
            contended(16, iters.div_ceil(16), || {
                let _ = std::hint::black_box(pool.submit(|| 1u32).wait());
            })
        })
    });
    g.finish();
}

fn throttles(c: &mut Criterion) {
    // A rate no benchmark can exhaust, so every call takes the grant path.
    let rate = 1_000_000_000u32;
    let burst = 1_000_000u32;
    let ours = Arc::new(concur::Throttle::new(rate as f64, burst).expect("throttle"));
    let quota = governor::Quota::per_second(NonZeroU32::new(rate).expect("nonzero"))
        .allow_burst(NonZeroU32::new(burst).expect("nonzero"));
    let theirs = governor::RateLimiter::direct(quota);

    let mut g = c.benchmark_group("throttle_try_acquire");
    g.bench_function("concur::Throttle/uncontended", |b| b.iter(|| std::hint::black_box(ours.try_acquire().is_ok())));
    g.bench_function("governor/uncontended", |b| b.iter(|| std::hint::black_box(theirs.check().is_ok())));
    g.bench_function("concur::Throttle/2_threads", |b| {
        b.iter_custom(|iters| contended(2, iters, || assert!(std::hint::black_box(ours.try_acquire()).is_ok())))
    });
    g.bench_function("governor/2_threads", |b| {
        // governor refuses some calls here (its clock's granularity under
        // contention), so its result is not asserted.
        b.iter_custom(|iters| {
            contended(2, iters, || {
                std::hint::black_box(theirs.check().is_ok());
            })
        })
    });
    g.finish();

    // The blocking acquire on its grant path: what reserving a slot (and
    // the bookkeeping that lets a cancelled waiter give it back) costs when
    // nobody has to wait.
    let mut g = c.benchmark_group("throttle_acquire");
    g.bench_function("concur::Throttle/uncontended", |b| b.iter(|| ours.acquire()));
    g.finish();
}

criterion_group!(benches, pools, round_trips, throttles);
criterion_main!(benches);
