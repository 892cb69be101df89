//! What the pool does: results in order and complete, chunking,
//! recycling, payloads, serialisation failures, initializers, shutdown,
//! and the same results as threads.

use std::collections::HashSet;

use concur::{Pool, TaskError, ThreadPool};

use crate::builder;
use crate::support::*;
use crate::tasks::*;

#[test]
fn map_keeps_input_order() {
    crate::enter();
    for chunksize in [1, 2] {
        let pool = pool(3, chunksize);
        // Earlier items take longer, so they finish later.
        let got = pool.map((0..12).map(|i| Slow { value: i, ms: 2 * (12 - i) }));
        assert_eq!(got, (0..12).map(Ok).collect::<Vec<_>>(), "chunksize {chunksize}");
    }
}

#[test]
fn imap_keeps_input_order() {
    crate::enter();
    for chunksize in [1, 5] {
        let pool = pool(2, chunksize);
        let got: Vec<_> = pool.imap((0..50).map(Square)).collect();
        assert_eq!(got, (0..50).map(|i| Ok(i * i)).collect::<Vec<_>>(), "chunksize {chunksize}");
    }
}

#[test]
fn imap_unordered_gives_every_index_once() {
    crate::enter();
    for chunksize in [1, 7] {
        let pool = pool(2, chunksize);
        let got = sorted(pool.imap_unordered((0..200).map(Square)), 200);
        assert_eq!(got, (0..200).map(|i| Ok(i * i)).collect::<Vec<_>>(), "chunksize {chunksize}");
    }
}

#[test]
fn apply_async_and_empty_input() {
    crate::enter();
    let pool = pool(2, 3);
    let handles: Vec<_> = (0..20).map(|i| pool.apply_async(Square(i))).collect();
    let got: Vec<_> = handles.into_iter().map(concur::AsyncResult::wait).collect();
    assert_eq!(got, (0..20).map(|i| Ok(i * i)).collect::<Vec<_>>());
    assert!(pool.map(Vec::<Square>::new()).is_empty());
    assert_eq!(pool.imap_unordered(Vec::<Square>::new()).count(), 0);
}

#[test]
fn a_panic_is_that_tasks_error_and_kills_no_worker() {
    crate::enter();
    let pool = pool(2, 3);
    let tasks = (0..16).map(|i| Crash { value: i, how: if i % 4 == 0 { How::Panic } else { How::Fine } });
    let got = pool.map(tasks);
    for (i, r) in (0..).zip(&got) {
        if i % 4 == 0 {
            assert_eq!(*r, Err(TaskError::Panicked(format!("task {i} panics on purpose"))));
        } else {
            assert_eq!(*r, Ok(i));
        }
    }
    assert_eq!(pool.spawned_pids().len(), 2, "a panic kills no worker");
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    crate::enter();
    for chunksize in [1, 2] {
        let pool = builder().size(1).chunksize(chunksize).max_tasks_per_child(3).build().expect("pool starts");
        let pids: Vec<u32> =
            pool.map(std::iter::repeat_with(|| WhoAmI).take(9)).into_iter().map(|r| r.expect("a pid")).collect();
        // One worker at a time, each serving exactly three tasks in a row.
        let distinct: Vec<u32> = pids.chunks(3).map(|c| c[0]).collect();
        for chunk in pids.chunks(3) {
            assert!(chunk.iter().all(|&p| p == chunk[0]), "{pids:?}");
        }
        assert_eq!(distinct.iter().collect::<HashSet<_>>().len(), 3, "{pids:?}");
        assert_eq!(pool.spawned_pids(), distinct, "chunksize {chunksize}");
    }
}

#[test]
fn large_payloads_cross_intact() {
    crate::enter();
    const MIB: usize = 1 << 20;
    let pool = pool(2, 1);
    let payloads: Vec<Vec<u8>> = (0..3_u32)
        .map(|seed| {
            // A cheap pseudo-random fill, different per payload.
            let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
            (0..4 * MIB + seed as usize)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x.to_le_bytes()[0]
                })
                .collect()
        })
        .collect();
    let got = pool.map(payloads.iter().cloned().map(Reverse));
    for (sent, back) in payloads.iter().zip(got) {
        let mut back = back.expect("a payload comes back");
        back.reverse();
        assert!(back == *sent, "payload of {} bytes changed in transit", sent.len());
    }
}

#[test]
fn an_unserialisable_output_is_that_tasks_error() {
    crate::enter();
    let pool = pool(1, 3);
    let got = pool.map([1, 13, 2].map(Echo));
    assert_eq!(got[0], Ok(Picky(1)));
    assert_eq!(got[2], Ok(Picky(2)));
    match &got[1] {
        Err(TaskError::Serialize(message)) => {
            assert!(message.contains("13 refuses to be serialised"), "{message}");
            assert!(message.contains("\"echo\""), "{message}");
        }
        other => panic!("expected a serialisation error, got {other:?}"),
    }
    assert_eq!(pool.spawned_pids().len(), 1, "the worker lives on");
}

#[test]
fn an_unserialisable_task_is_that_tasks_error() {
    crate::enter();
    let pool = pool(2, 2);
    let got = pool.map([1, 13, 2].map(Picky));
    assert_eq!(got[0], Ok(1));
    assert_eq!(got[2], Ok(2));
    assert!(matches!(&got[1], Err(TaskError::Serialize(m)) if m.contains("13 refuses")), "{:?}", got[1]);
    assert!(matches!(pool.apply_async(Picky(13)).wait(), Err(TaskError::Serialize(_))));
}

#[test]
fn an_unregistered_task_is_that_tasks_error() {
    crate::enter();
    let pool = pool(1, 1);
    match pool.apply_async(Unregistered).wait() {
        Err(TaskError::Failed(message)) => assert!(message.contains("\"unregistered\""), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(pool.map([Square(5)]), [Ok(25)]);
}

#[test]
fn a_tasks_printing_does_not_corrupt_the_protocol() {
    crate::enter();
    let pool = pool(2, 2);
    let got = pool.map((0..6).map(Noisy));
    assert_eq!(got, (0..6).map(Ok).collect::<Vec<_>>());
    assert_eq!(pool.spawned_pids().len(), 2);
}

#[test]
fn the_initializer_runs_once_per_worker() {
    crate::enter();
    let pool = builder().size(2).initializer(Init("hello".to_owned())).build().expect("pool starts");
    let got = pool.map(std::iter::repeat_with(|| Greet).take(10));
    assert_eq!(got, vec![Ok((Some("hello".to_owned()), 1)); 10]);
}

#[test]
fn a_failing_initializer_fails_tasks_not_the_caller() {
    crate::enter();
    let pool = builder().size(2).initializer(InitPanics).build().expect("pool starts");
    for r in pool.map((0..4).map(Square)) {
        match r {
            Err(TaskError::Failed(m)) => {
                assert!(m.contains("initializer \"init_panics\" failed"), "{m}");
                assert!(m.contains("no configuration"), "{m}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}

#[test]
fn close_refuses_new_work() {
    crate::enter();
    let pool = pool(2, 2);
    let queued: Vec<_> = (0..6).map(|i| pool.apply_async(Slow { value: i, ms: 5 })).collect();
    pool.close();
    assert!(pool.is_closed());
    assert_eq!(pool.apply_async(Square(1)).wait(), Err(TaskError::Closed));
    assert_eq!(pool.map((0..3).map(Square)), vec![Err(TaskError::Closed); 3]);
    pool.join();
    // Queued work still ran.
    let got: Vec<_> = queued.into_iter().map(concur::AsyncResult::wait).collect();
    assert_eq!(got, (0..6).map(Ok).collect::<Vec<_>>());
    assert!(pool.worker_pids().is_empty());
}

#[test]
fn terminate_cancels_queued_work_and_kills_workers() {
    crate::enter();
    let pool = pool(1, 1);
    let pid_file = temp_path("terminate");
    let running = pool.apply_async(Crash { value: 0, how: How::ReportAndHang(pid_file.clone()) });
    let queued: Vec<_> = (0..5).map(|i| pool.apply_async(Square(i))).collect();
    let pid = wait_for_pid(&pid_file);
    pool.terminate();
    pool.join();
    assert_eq!(running.wait(), Err(died("killed by signal 9 (SIGKILL): the pool was terminated")));
    let got: Vec<_> = queued.into_iter().map(concur::AsyncResult::wait).collect();
    assert_eq!(got, vec![Err(TaskError::Cancelled); 5]);
    assert!(!is_our_child(pid));
    assert_eq!(pool.apply_async(Square(1)).wait(), Err(TaskError::Closed));
}

#[test]
fn threads_and_processes_give_equal_results() {
    crate::enter();
    /// Written once against the trait; the pool is picked by the caller.
    type Results = Vec<Result<u64, TaskError>>;

    fn run_all(pool: &impl Pool) -> (Results, Results, Result<u64, TaskError>) {
        let crashes = || (0..30).map(|i| Crash { value: i, how: if i % 7 == 3 { How::Panic } else { How::Fine } });
        let mapped = pool.map(crashes());
        let mut unordered: Vec<_> = pool.imap_unordered(crashes()).collect();
        unordered.sort_by_key(|(i, _)| *i);
        let one = pool.apply_async(Square(12)).wait();
        (mapped, unordered.into_iter().map(|(_, r)| r).collect(), one)
    }
    let threads = run_all(&ThreadPool::new(3).expect("thread pool starts"));
    let processes = run_all(&builder().size(3).chunksize(4).build().expect("process pool starts"));
    assert_eq!(threads, processes);
    assert_eq!(threads.0, threads.1);
    assert_eq!(threads.0.iter().filter(|r| r.is_err()).count(), 4);
}

#[test]
fn a_per_call_chunksize_sends_that_many_tasks_to_one_worker() {
    crate::enter();
    // The pool's own chunksize is 1; through the view, one chunk of 8 goes
    // to one worker, which runs all eight.
    let pool = pool(2, 1);
    let pids: Vec<u32> = pool
        .with_chunksize(8)
        .map(std::iter::repeat_with(|| WhoAmI).take(8))
        .into_iter()
        .map(|r| r.expect("a pid"))
        .collect();
    assert!(pids.iter().all(|&p| p == pids[0]), "{pids:?}");
    // Chunks of 4: two chunks, in order, each on one worker.
    let pids: Vec<u32> = pool
        .with_chunksize(4)
        .map(std::iter::repeat_with(|| WhoAmI).take(8))
        .into_iter()
        .map(|r| r.expect("a pid"))
        .collect();
    for chunk in pids.chunks(4) {
        assert!(chunk.iter().all(|&p| p == chunk[0]), "{pids:?}");
    }
}
