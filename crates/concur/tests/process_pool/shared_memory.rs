//! Answers through the shared-memory ring: what a worker committed
//! outlives it, answers larger than the ring cross in pieces, a chunk of
//! thousands of tasks wraps the ring many times, and garbage a worker
//! leaves in the ring fails that worker, not the pool.

use std::time::Duration;

use concur::{Pool, Task, TaskError};
use serde::{Deserialize, Serialize};

use crate::support::*;
use crate::tasks::*;

/// Gives `value`, or kills its own worker with SIGKILL if `kill`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Tiny {
    value: u64,
    kill: bool,
}

impl Task for Tiny {
    type Output = u64;
    const NAME: &'static str = "tiny";
    fn run(self) -> u64 {
        if self.kill {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
        self.value
    }
}

#[test]
fn a_worker_killed_mid_chunk_keeps_the_answers_it_committed() {
    crate::enter();
    const TASKS: u64 = 3_000;
    const VICTIM: u64 = 2_500;
    let pool = pool(1, TASKS as usize);
    // Without a time limit, and with one (the pool then waits differently).
    for limit in [None, Some(crate::TEST_LIMIT)] {
        let tasks = (0..TASKS).map(|value| Tiny { value, kill: value == VICTIM });
        let got = match limit {
            None => pool.map(tasks),
            Some(limit) => pool.with_task_timeout(limit).map(tasks),
        };
        // One chunk: those before the victim were answered by the worker
        // that died, so they are not run again (the victim would be run
        // again too, and kill again, if they were not).
        check_only(&got, &[VICTIM as usize], &died("killed by signal 9 (SIGKILL)"));
    }
    assert_eq!(pool.spawned_pids().len(), 3, "one worker, and one replacement per death");
}

#[test]
fn answers_larger_than_the_ring_cross_intact() {
    crate::enter();
    const KIB: usize = 1 << 10;
    // The ring holds 64 KiB: around it, far over it, and tiny ones between.
    let sizes = [300 * KIB, 1, 64 * KIB, 0, 64 * KIB - 5, 1024 * KIB + 3, 7, 200 * KIB];
    let payloads: Vec<Vec<u8>> =
        sizes.iter().enumerate().map(|(k, &n)| (0..n).map(|i| (i * 13 + k) as u8).collect()).collect();
    let pool = pool(2, 4);
    for limit in [None, Some(crate::TEST_LIMIT)] {
        let tasks = payloads.iter().cloned().map(Reverse);
        let got = match limit {
            None => pool.map(tasks),
            Some(limit) => pool.with_task_timeout(limit).map(tasks),
        };
        for (sent, back) in payloads.iter().zip(got) {
            let mut back = back.expect("a payload comes back");
            back.reverse();
            assert!(back == *sent, "payload of {} bytes changed in transit ({limit:?})", sent.len());
        }
    }
}

#[test]
fn a_chunk_of_ten_thousand_tiny_tasks_is_answered_in_full() {
    crate::enter();
    const TASKS: u64 = 10_000;
    let pool = pool(2, TASKS as usize);
    let got = pool.map((0..TASKS).map(Square));
    assert!(got.iter().zip(0..).all(|(r, i)| r == &Ok(i * i)), "every square, in order");
    let got = sorted(pool.with_chunksize(5_000).imap_unordered((0..TASKS).map(Square)), TASKS as usize);
    assert!(got.iter().zip(0..).all(|(r, i)| r == &Ok(i * i)), "every square, each once");
}

/// What a [`Scribble`] task leaves in its worker's ring.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Garbage {
    /// A count of bytes written far ahead of what the ring holds.
    Count,
    /// A frame whose length is over the frame limit.
    Length,
}

/// Writes garbage into its own worker's answer ring, as a broken worker
/// would, then hangs until its time limit. Gives an error message if it
/// finds no ring. Linux only: it finds the ring in `/proc/self/maps` and
/// writes through `/proc/self/mem`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Scribble(pub(crate) Garbage);

/// The layout `ring.rs` gives the ring: the count of bytes committed at
/// the start, the bytes after the first page, 64 KiB of them.
const DATA: u64 = 4096;
const CAPACITY: u64 = 64 * 1024;

impl Task for Scribble {
    type Output = String;
    const NAME: &'static str = "scribble";
    fn run(self) -> String {
        use std::os::unix::fs::FileExt;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let Some(line) = maps.lines().find(|l| l.contains("concur-answers")) else {
            return "no answer ring in this worker".to_owned();
        };
        let Some(start) = line.split('-').next().and_then(|a| u64::from_str_radix(a, 16).ok()) else {
            return format!("cannot read {line:?}");
        };
        let Ok(mem) = std::fs::OpenOptions::new().read(true).write(true).open("/proc/self/mem") else {
            return "cannot open /proc/self/mem".to_owned();
        };
        let mut count = [0; 8];
        if mem.read_exact_at(&mut count, start).is_err() {
            return "cannot read the ring".to_owned();
        }
        let committed = u64::from_le_bytes(count);
        let written = match self.0 {
            Garbage::Count => mem.write_all_at(&(committed + 10 * CAPACITY).to_le_bytes(), start),
            Garbage::Length => (0..4)
                .try_for_each(|i| mem.write_all_at(&[0xff], start + DATA + (committed + i) % CAPACITY))
                .and_then(|()| mem.write_all_at(&(committed + 4).to_le_bytes(), start)),
        };
        if let Err(e) = written {
            return format!("cannot write the ring: {e}");
        }
        std::thread::sleep(crate::TEST_LIMIT);
        "not killed".to_owned()
    }
}

#[test]
#[cfg(target_os = "linux")]
fn garbage_in_the_ring_fails_its_worker_not_the_pool() {
    crate::enter();
    let pool = pool(1, 1);
    for garbage in [Garbage::Count, Garbage::Length] {
        // The limit only ends the hang: the pool looks at the ring then.
        let got = pool.with_task_timeout(Duration::from_millis(300)).map([Scribble(garbage)]);
        match &got[..] {
            [Err(TaskError::Failed(message))] => assert!(message.contains("broke the protocol"), "{message}"),
            other => panic!("not a broken worker: {other:?}"),
        }
        assert_eq!(pool.map((0..3).map(Square)), [Ok(0), Ok(1), Ok(4)], "the pool serves on");
    }
}
