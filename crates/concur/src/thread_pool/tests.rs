//! The thread pool's tests: every shutdown path, panics, ordering, and
//! that every handle resolves.

use super::*;
use crate::test_support::{LIMIT, within};
use crossbeam_channel::Sender;
use std::collections::HashSet;
use std::time::Duration;

fn pool(n: usize) -> ThreadPool {
    ThreadPool::new(n).expect("pool starts")
}

/// A job that reports it started, then blocks until released (or the
/// test's time limit), so tests can hold a worker busy.
fn gate() -> (impl FnOnce() -> &'static str + Send + 'static, Receiver<()>, Sender<()>) {
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let job = move || {
        let _ = started_tx.send(());
        let _ = release_rx.recv_timeout(LIMIT);
        "gate"
    };
    (job, started_rx, release_tx)
}

#[test]
fn zero_workers_is_an_error() {
    assert!(matches!(ThreadPool::new(0), Err(PoolError::NoWorkers)));
    assert_eq!(
        ThreadPool::new(0).err().map(|e| e.to_string()),
        Some("a pool needs at least one worker, got 0".to_owned())
    );
}

#[test]
fn map_keeps_input_order() {
    let got = within(|| {
        let pool = pool(4);
        // Earlier items take longer, so they finish later.
        pool.map_fn(
            |i: u64| {
                thread::sleep(Duration::from_millis(20 - i));
                i * 10
            },
            0..20,
        )
    });
    let want: Vec<_> = (0..20).map(|i| Ok(i * 10)).collect();
    assert_eq!(got, want);
}

#[test]
fn imap_keeps_input_order() {
    let got: Vec<_> = within(|| pool(3).imap_fn(|i: u32| i + 1, 0..50).collect());
    assert_eq!(got, (1..51).map(Ok).collect::<Vec<_>>());
}

#[test]
fn imap_unordered_gives_every_index_once() {
    let got: Vec<_> = within(|| pool(4).imap_unordered_fn(|i: usize| i * 2, 0..200).collect());
    assert_eq!(got.len(), 200);
    let indices: HashSet<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..200).collect());
    for (i, r) in got {
        assert_eq!(r, Ok(i * 2));
    }
}

#[test]
fn empty_input() {
    let (m, u) = within(|| {
        let pool = pool(2);
        (pool.map_fn(|i: u8| i, []), pool.imap_unordered_fn(|i: u8| i, []).count())
    });
    assert!(m.is_empty());
    assert_eq!(u, 0);
}

#[test]
fn a_panic_is_that_tasks_error_and_the_pool_lives_on() {
    let (got, after) = within(|| {
        // One worker: it must survive every panic to serve the rest.
        let pool = pool(1);
        let got = pool.map_fn(
            |i: u32| {
                assert!(!i.is_multiple_of(3), "bad item {i}");
                i
            },
            0..9,
        );
        (got, pool.submit(|| "still serving").wait())
    });
    for (i, r) in got.into_iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(r, Err(TaskError::Panicked(format!("bad item {i}"))));
        } else {
            assert_eq!(r, Ok(i as u32));
        }
    }
    assert_eq!(after, Ok("still serving"));
}

#[test]
fn four_panics_of_sixteen_give_twelve_results() {
    let got = within(|| {
        pool(3).map_fn(
            |i: u32| {
                if i.is_multiple_of(4) {
                    panic!("no");
                }
                i
            },
            0..16,
        )
    });
    assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 12);
    assert_eq!(got.iter().filter(|r| r.is_err()).count(), 4);
}

#[test]
fn an_erroring_task_returns_its_error_as_output() {
    let got = within(|| pool(2).map_fn(|s: &'static str| s.parse::<u8>().map_err(|e| e.to_string()), ["1", "x", "3"]));
    assert_eq!(got[0], Ok(Ok(1)));
    assert_eq!(got[1], Ok(Err("invalid digit found in string".to_owned())));
    assert_eq!(got[2], Ok(Ok(3)));
}

#[test]
fn submit_after_close_is_an_error_not_a_hang() {
    let (one, many, unordered) = within(|| {
        let pool = pool(2);
        pool.close();
        assert!(pool.is_closed());
        (
            pool.submit(|| 1).wait(),
            pool.map_fn(|i: u8| i, [1, 2]),
            pool.imap_unordered_fn(|i: u8| i, [1, 2]).collect::<Vec<_>>(),
        )
    });
    assert_eq!(one, Err(TaskError::Closed));
    assert_eq!(many, vec![Err(TaskError::Closed), Err(TaskError::Closed)]);
    assert_eq!(unordered.len(), 2);
    assert!(unordered.iter().all(|(_, r)| *r == Err(TaskError::Closed)));
}

#[test]
fn terminate_cancels_queued_work_and_every_handle_resolves() {
    let (first, rest) = within(|| {
        let pool = pool(1);
        let (job, started, release) = gate();
        let first = pool.submit(job);
        started.recv_timeout(LIMIT).expect("gate job started");
        let rest: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
        pool.terminate();
        let _ = release.send(());
        pool.join();
        (first.wait(), rest.into_iter().map(AsyncResult::wait).collect::<Vec<_>>())
    });
    // The running job finishes; the queued ones never start.
    assert_eq!(first, Ok("gate"));
    assert_eq!(rest, vec![Err(TaskError::Cancelled); 10]);
}

#[test]
fn terminate_during_imap_unordered_accounts_for_every_item() {
    let got = within(|| {
        let pool = pool(2);
        let (job, started, release) = gate();
        let gated = pool.submit(job);
        started.recv_timeout(LIMIT).expect("gate job started");
        let results = pool.imap_unordered_fn(|i: usize| i, 0..100);
        pool.terminate();
        let _ = release.send(());
        let got: Vec<_> = results.collect();
        assert_eq!(gated.wait(), Ok("gate"));
        got
    });
    let indices: HashSet<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!((got.len(), indices.len()), (100, 100));
    for (i, r) in got {
        assert!(r == Ok(i) || r == Err(TaskError::Cancelled), "{i}: {r:?}");
    }
}

#[test]
fn join_lets_queued_work_finish() {
    let got = within(|| {
        let pool = pool(1);
        let (job, started, release) = gate();
        let first = pool.submit(job);
        started.recv_timeout(LIMIT).expect("gate job started");
        let rest: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
        let _ = release.send(());
        pool.join();
        assert_eq!(first.wait(), Ok("gate"));
        rest.into_iter().map(AsyncResult::wait).collect::<Vec<_>>()
    });
    assert_eq!(got, (0..10).map(Ok).collect::<Vec<_>>());
}

#[test]
fn drop_finishes_queued_work_and_joins_the_workers() {
    let (live_before, live_after, results) = within(|| {
        let pool = pool(3);
        let live = pool.live_workers();
        let before = live.load(Ordering::SeqCst);
        let handles: Vec<_> = (0..30).map(|i| pool.submit(move || i)).collect();
        drop(pool);
        let after = live.load(Ordering::SeqCst);
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.wait_timeout(Duration::ZERO).expect("resolved before drop returned"))
            .collect();
        (before, after, results)
    });
    assert_eq!(live_before, 3);
    assert_eq!(live_after, 0);
    assert_eq!(results, (0..30).map(Ok).collect::<Vec<_>>());
}

#[test]
fn closures_and_items_are_released() {
    let token = Arc::new(());
    let held = Arc::clone(&token);
    within(move || {
        let pool = pool(2);
        let _ = pool.map_fn(move |i: u8| (Arc::strong_count(&held), i), 0..10);
    });
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn workers_are_named() {
    let name = within(|| {
        let pool = ThreadPool::builder().size(1).name("fetch").build().expect("pool starts");
        pool.submit(|| thread::current().name().map(str::to_owned)).wait()
    });
    assert_eq!(name, Ok(Some("fetch-0".to_owned())));
}

#[test]
fn workers_have_the_stack_asked_for() {
    let asked = 256 * 1024;
    let sizes = within(move || {
        let pool = ThreadPool::builder().size(2).stack_size(asked).build().expect("pool starts");
        pool.map_fn(|_: u8| current_stack_size(), 0..4)
    });
    // The platform adds room for thread-local storage and rounds up to a
    // page; the default is 2 MiB, far above either.
    for size in sizes {
        let size = size.expect("the task ran").expect("Linux gives the size");
        assert!((asked..asked + 64 * 1024).contains(&size), "{size}");
    }
    let default = within(|| pool(1).submit(current_stack_size).wait()).expect("the task ran").expect("a size");
    assert!(default >= 2 * 1024 * 1024, "{default}");
}

#[test]
fn default_size_is_available_parallelism() {
    let pool = within(|| ThreadPool::builder().build().expect("pool starts"));
    assert!(pool.size() >= 1);
    within(move || drop(pool));
}

#[test]
fn workers_run_in_parallel() {
    // Two tasks that each need the other's message: with fewer than two
    // threads running at once, both would time out.
    let got = within(|| {
        let (a_tx, a_rx) = crossbeam_channel::bounded(1);
        let (b_tx, b_rx) = crossbeam_channel::bounded(1);
        let pool = pool(2);
        let a = pool.submit(move || {
            let _ = a_tx.send(());
            b_rx.recv_timeout(LIMIT).is_ok()
        });
        let b = pool.submit(move || {
            let _ = b_tx.send(());
            a_rx.recv_timeout(LIMIT).is_ok()
        });
        (a.wait(), b.wait())
    });
    assert_eq!(got, (Ok(true), Ok(true)));
}

#[test]
fn many_threads_submit_at_once() {
    let total = within(|| {
        let pool = Arc::new(pool(3));
        let submitters: Vec<_> = (0..4)
            .map(|t| {
                let pool = Arc::clone(&pool);
                thread::spawn(move || {
                    (0..100)
                        .map(|i| pool.submit(move || t * 100 + i))
                        .map(AsyncResult::wait)
                        .filter_map(Result::ok)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for s in submitters {
            all.extend(s.join().expect("submitter finished"));
        }
        all.len()
    });
    assert_eq!(total, 400);
}

#[test]
fn dropping_the_pool_inside_its_own_job_does_not_deadlock() {
    let got = within(|| {
        let pool = Arc::new(pool(2));
        let inner = Arc::clone(&pool);
        let handle = pool.submit(move || {
            thread::sleep(Duration::from_millis(10));
            drop(inner); // may be the last reference
            "done"
        });
        drop(pool);
        handle.wait()
    });
    assert_eq!(got, Ok("done"));
}

mod as_pool {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Halve(u32);

    impl Task for Halve {
        type Output = Result<u32, String>;
        const NAME: &'static str = "halve";
        fn run(self) -> Self::Output {
            assert!(self.0 != 13, "unlucky");
            if self.0.is_multiple_of(2) { Ok(self.0 / 2) } else { Err(format!("{} is odd", self.0)) }
        }
    }

    fn halves(pool: &impl Pool) -> Vec<Result<Result<u32, String>, TaskError>> {
        pool.map([4, 5, 13].map(Halve))
    }

    #[test]
    fn the_trait_runs_tasks() {
        let (mapped, ordered, unordered, one) = within(|| {
            let pool = pool(2);
            (
                halves(&pool),
                Pool::imap(&pool, (0..10).map(|i| Halve(i * 2))).collect::<Vec<_>>(),
                Pool::imap_unordered(&pool, (0..10).map(|i| Halve(i * 2))).collect::<Vec<_>>(),
                pool.apply_async(Halve(8)).wait(),
            )
        });
        assert_eq!(
            mapped,
            vec![Ok(Ok(2)), Ok(Err("5 is odd".to_owned())), Err(TaskError::Panicked("unlucky".to_owned()))]
        );
        assert_eq!(ordered, (0..10).map(|i| Ok(Ok(i))).collect::<Vec<_>>());
        let indices: HashSet<usize> = unordered.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, (0..10).collect());
        assert_eq!(one, Ok(Ok(4)));
    }
}

#[test]
fn the_initializer_runs_once_on_every_worker_before_any_job() {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    thread_local!(static READY: Cell<bool> = const { Cell::new(false) });
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let pool = ThreadPool::builder()
        .size(3)
        .initializer(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            READY.set(true);
        })
        .build()
        .expect("pool starts");
    assert_eq!(runs.load(Ordering::SeqCst), 3, "build waits for every worker's initializer");
    let ready = pool.map_fn(|_: u32| READY.get(), 0..50);
    assert!(ready.iter().all(|r| *r == Ok(true)), "{ready:?}");
    drop(pool);
    assert_eq!(runs.load(Ordering::SeqCst), 3, "once per worker");
}

#[test]
fn a_panicking_initializer_fails_build_and_stops_the_workers() {
    let built = within(|| {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        ThreadPool::builder()
            .size(4)
            .initializer(move || {
                // One worker of four fails.
                if calls.fetch_add(1, Ordering::SeqCst) == 2 {
                    panic!("no database");
                }
            })
            .build()
    });
    match built {
        Err(PoolError::Initializer(message)) => assert_eq!(message, "no database"),
        other => panic!("expected an initializer error, got {other:?}"),
    }
}

#[test]
fn the_builder_debug_names_its_settings() {
    let builder = ThreadPool::builder().size(2).name("fetch").stack_size(65536).initializer(|| {});
    assert_eq!(
        format!("{builder:?}"),
        r#"ThreadPoolBuilder { size: Some(2), name: "fetch", stack_size: Some(65536), initializer: true }"#
    );
}
