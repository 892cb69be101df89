//! Workers that die, hang or stop: the crash matrix, deaths while
//! starting or idle, time limits, and a chaos test of random kills.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use concur::{Pool, ProcessPool, TaskError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::*;
use crate::tasks::*;
use crate::{PROMPTLY, builder, worker_args};

#[test]
fn an_abort_fails_only_its_task() {
    crate::enter();
    for chunksize in [1, 4] {
        let pool = pool(2, chunksize);
        let bad = [3, 6, 7];
        let tasks =
            (0..12).map(|i| Crash { value: i, how: if bad.contains(&(i as usize)) { How::Abort } else { How::Fine } });
        let got = pool.map(tasks);
        check_only(&got, &bad, &died("killed by signal 6 (SIGABRT)"));
        // Each abort took one worker; replacements start when there is work.
        let dead = pool.spawned_pids().len() - pool.worker_pids().len();
        assert_eq!(dead, bad.len(), "chunksize {chunksize}");
        // Still usable.
        assert_eq!(pool.map([Square(3)]), [Ok(9)]);
    }
}

#[test]
fn an_exit_fails_only_its_task() {
    crate::enter();
    let pool = pool(1, 3);
    let tasks = (0..6).map(|i| Crash { value: i, how: if i == 1 { How::Exit(7) } else { How::Fine } });
    check_only(&pool.map(tasks), &[1], &died("exited with status 7"));
}

#[test]
fn a_worker_killed_from_outside_fails_only_its_task() {
    crate::enter();
    for chunksize in [1, 5] {
        let pool = pool(2, chunksize);
        let pid_file = temp_path("victim");
        let victim = 7;
        let tasks = (0..20).map(|i| {
            if i == victim { Crash { value: i, how: How::ReportAndHang(pid_file.clone()) } } else { Crash::fine(i) }
        });
        let results = pool.imap_unordered(tasks);
        let pid = wait_for_pid(&pid_file);
        assert!(pool.worker_pids().contains(&pid), "the victim is one of the workers");
        sigkill(pid);
        let got = sorted(results, 20);
        check_only(&got, &[victim as usize], &died("killed by signal 9 (SIGKILL)"));
        assert!(!is_our_child(pid), "the killed worker was reaped");
        // Usable afterwards, on a replacement.
        assert_eq!(pool.map((0..4).map(Square)), [Ok(0), Ok(1), Ok(4), Ok(9)]);
        let dead = pool.spawned_pids().len() - pool.worker_pids().len();
        assert_eq!(dead, 1, "chunksize {chunksize}");
    }
}

#[test]
fn a_worker_killed_while_idle_is_replaced_without_blame() {
    crate::enter();
    let pool = pool(1, 4);
    assert_eq!(pool.map([Square(2)]), [Ok(4)]);
    let pid = pool.worker_pids()[0];
    sigkill(pid);
    // Wait until it is dead (a zombie until its manager reaps it).
    let deadline = Instant::now() + PROMPTLY;
    while is_running(pid) {
        assert!(Instant::now() < deadline, "SIGKILL did not kill");
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(pool.map((0..8).map(Square)), (0..8).map(|i| Ok(i * i)).collect::<Vec<_>>());
    assert_eq!(pool.spawned_pids().len(), 2);
}

#[test]
fn a_worker_that_dies_while_starting_hands_its_chunk_on() {
    crate::enter();
    let starts = temp_path("starts");
    std::fs::create_dir(&starts).expect("a directory for the count of starts");
    // Counts starts in the directory `$1`; the second start is killed
    // before it can greet the pool, while it holds the chunk of task 1.
    let script = r#"d=$1; shift; n=$(ls "$d" | wc -l); touch "$d/$n"; if [ "$n" -eq 1 ]; then kill -KILL $$; fi; exec "$0" "$@""#;
    let pool = ProcessPool::builder()
        .size(1)
        .max_tasks_per_child(1)
        .program("/bin/sh")
        .args(["-c", script])
        .args([std::env::current_exe().expect("test binary").into_os_string(), starts.clone().into_os_string()])
        .args(worker_args())
        .build()
        .expect("pool starts");
    assert_eq!(pool.map((0..3).map(Square)), [Ok(0), Ok(1), Ok(4)]);
    // The first worker, the one killed while starting, its replacement,
    // and the third task's worker.
    assert_eq!(pool.spawned_pids().len(), 4);
    drop(pool);
    let _ = std::fs::remove_dir_all(&starts);
}

#[test]
fn a_worker_killed_while_idle_is_reaped_at_once() {
    crate::enter();
    let pool = pool(2, 1);
    assert_eq!(pool.map((0..2).map(|i| Slow { value: i, ms: 20 })), [Ok(0), Ok(1)]);
    let pid = pool.worker_pids()[0];
    sigkill(pid);
    // No new work: it must be reaped and unlisted on its own.
    let deadline = Instant::now() + PROMPTLY;
    while is_our_child(pid) || pool.worker_pids().contains(&pid) {
        assert!(Instant::now() < deadline, "a dead idle worker is still a zombie or listed as alive");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.worker_pids().len(), 1);
    assert_eq!(pool.map((0..4).map(Square)), [Ok(0), Ok(1), Ok(4), Ok(9)]);
}

#[test]
fn a_task_over_its_time_limit_fails_alone() {
    crate::enter();
    let limit = Duration::from_millis(300);
    let pool = builder().size(1).chunksize(4).task_timeout(limit).build().expect("pool starts");
    let tasks = (0..8).map(|i| Crash { value: i, how: if i == 2 { How::Hang } else { How::Fine } });
    let got = pool.map(tasks);
    check_only(&got, &[2], &TaskError::TimedOut(limit));
    assert_eq!(pool.spawned_pids().len(), 2, "the hung worker was replaced");
    assert_eq!(pool.worker_pids().len(), 1);
    // A limit is no deadline for tasks that finish in time.
    assert_eq!(pool.map((0..5).map(|i| Slow { value: i, ms: 1 })), (0..5).map(Ok).collect::<Vec<_>>());
}

#[test]
fn a_stopped_task_times_out_and_the_pool_drops() {
    crate::enter();
    let limit = Duration::from_millis(300);
    let pool = builder().size(1).task_timeout(limit).build().expect("pool starts");
    assert_eq!(pool.apply_async(Crash { value: 0, how: How::Stop }).wait(), Err(TaskError::TimedOut(limit)));
    let stopped = pool.spawned_pids()[0];
    assert_eq!(pool.apply_async(Square(4)).wait(), Ok(16));
    // And a task that never returns is no reason for drop to hang.
    let _hung = pool.apply_async(Crash { value: 0, how: How::Hang });
    let spawned = pool.spawned_pids();
    drop(pool);
    assert!(!is_our_child(stopped));
    let left: Vec<_> = spawned.iter().filter(|&&pid| is_our_child(pid)).collect();
    assert!(left.is_empty(), "workers left behind: {left:?}");
}

#[test]
fn a_per_call_time_limit_applies_to_that_call_only() {
    crate::enter();
    let limit = Duration::from_millis(300);
    let pool = pool(2, 1);
    let limited = pool.with_task_timeout(limit);
    assert_eq!(limited.apply_async(Crash { value: 0, how: How::Hang }).wait(), Err(TaskError::TimedOut(limit)));
    let tasks = (0..4).map(|i| Crash { value: i, how: if i == 1 { How::Hang } else { How::Fine } });
    check_only(&limited.map(tasks), &[1], &TaskError::TimedOut(limit));
    // Without the view, no limit.
    assert_eq!(pool.apply_async(Slow { value: 5, ms: 400 }).wait(), Ok(5));
}

/// A tiny seeded generator: the same kills in the same order every run.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_kills_lose_no_task_and_leave_no_process() {
    crate::enter();
    const TASKS: u64 = 3_000;
    for chunksize in [1, 5] {
        let pool = builder().size(4).chunksize(chunksize).build().expect("pool starts");
        let results = pool.imap_unordered((0..TASKS).map(|i| Slow { value: i, ms: i % 3 }));
        let done = AtomicBool::new(false);
        let kills = thread::scope(|scope| {
            let killer = scope.spawn(|| {
                let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ chunksize as u64);
                let mut kills = 0;
                // Bounded: at most this many rounds, whatever happens.
                for _ in 0..2_000 {
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(1 + rng.below(8)));
                    let pids = pool.worker_pids();
                    if let Some(&pid) = pids.get(rng.below(pids.len().max(1) as u64) as usize) {
                        let pid = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));
                        if kill(pid, Signal::SIGKILL).is_ok() {
                            kills += 1;
                        }
                    }
                }
                kills
            });
            let got = sorted(results, TASKS as usize);
            done.store(true, Ordering::SeqCst);
            let kills = killer.join().expect("the killer ends");
            let mut died = 0;
            for (i, r) in (0..).zip(&got) {
                match r {
                    Ok(v) => assert_eq!(*v, i),
                    Err(TaskError::WorkerDied(_)) => died += 1,
                    Err(other) => panic!("task {i}: {other:?}"),
                }
            }
            assert!(died <= kills, "{died} tasks blamed for {kills} kills");
            kills
        });
        assert!(kills > 0, "the chaos killed nothing");
        let spawned = pool.spawned_pids();
        drop(pool);
        let left: Vec<_> = spawned.iter().filter(|&&pid| is_our_child(pid) || is_running(pid)).collect();
        assert!(left.is_empty(), "processes left behind: {left:?}");
    }
}

#[test]
fn answers_of_a_chunk_arrive_while_a_later_task_still_runs() {
    crate::enter();
    // One chunk: two quick tasks, then one that hangs. The quick ones'
    // results must reach the caller before the chunk ends (answers are
    // batched, but never held while the pool waits for the next one).
    let pool = pool(1, 3);
    let pid_file = temp_path("hanger");
    let tasks = [Crash::fine(1), Crash::fine(2), Crash { value: 3, how: How::ReportAndHang(pid_file.clone()) }];
    let (tx, rx) = std::sync::mpsc::channel();
    thread::scope(|scope| {
        let results = pool.imap_unordered(tasks);
        scope.spawn(move || {
            for result in results {
                if tx.send(result).is_err() {
                    break;
                }
            }
        });
        let pid = wait_for_pid(&pid_file);
        let mut early: Vec<_> =
            (0..2).map(|_| rx.recv_timeout(PROMPTLY).expect("a result while task 3 hangs")).collect();
        early.sort_by_key(|(i, _)| *i);
        assert_eq!(early, [(0, Ok(1)), (1, Ok(2))]);
        sigkill(pid);
        let (i, last) = rx.recv_timeout(PROMPTLY).expect("the hung task's result");
        assert_eq!(i, 2);
        assert_eq!(last, Err(died("killed by signal 9 (SIGKILL)")));
    });
}
