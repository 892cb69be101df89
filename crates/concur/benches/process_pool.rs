//! What crossing a process boundary costs, for the chapter's "process
//! pools" and "multiprocessing.dummy" listings (15, 16).
//!
//! - `round_trip`: 1,000 trivial tasks through a `ProcessPool` of 2 workers
//!   with `chunksize` 1 and 100, and through a `ThreadPool` for comparison.
//!   Criterion's time is per batch; divide by 1,000 (or read the
//!   throughput) for the time per task. Beside them, the physical floor:
//!   `pipe_ping_pong_2_processes`, 1,000 rounds of an 8-byte message sent
//!   down a pipe to a child process (this bench binary, re-executed in a
//!   mode of its own) and echoed back up another, one round at a time: a
//!   `write`, a `read` and a process wake-up each way, which is what a
//!   chunk of one task needs at least. Its figure moves between two modes
//!   from run to run: the scheduler runs both ends on one CPU (the
//!   fastest) or on two (a cross-CPU wake-up each way, far slower on a
//!   virtual machine). `pipe_ping_pong_one_cpu` and `..._two_cpus` pin
//!   both ends to make each mode certain; compare against the faster,
//!   one CPU. Targets: with chunksize
//!   1 within 2× of the ping-pong's time per round; with chunksize 100 at
//!   most 0.3 µs per task, and no more than CPython's
//!   `multiprocessing.Pool(2).map` on the same machine, which
//!   `process_pool_round_trip.py` beside this file measures (run it in the
//!   same session, as the machine's load moves both):
//!   `python3 crates/concur/benches/process_pool_round_trip.py`.
//! - `cpu_bound`: 100 tasks of about 10 ms of pure computation on 1 and 2
//!   workers, threads and processes. Target: 2 workers at least 1.8× as
//!   fast as 1 (on a machine with 2 free cores).
//!
//! The pool's workers and the ping-pong's echoing child run this bench
//! binary again, so `main` is written by hand: it enters either role
//! before criterion looks at the arguments.
//!
//! `cargo bench -p concur --bench process_pool`

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use concur::{Pool, ProcessPool, Registry, Task, ThreadPool};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Tasks per measured batch in `round_trip`.
const BATCH: u64 = 1_000;
/// Tasks per measured batch in `cpu_bound`.
const CPU_TASKS: u64 = 100;

/// Set in the ping-pong's child: it echoes what it reads until end of file.
const ECHO_ENV: &str = "CONCUR_BENCH_ECHO";
/// The size of one ping-pong message: about what a trivial task's answer
/// takes.
const PING: usize = 8;

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

/// Pure computation: `self.0` rounds of a mixing function.
#[derive(Serialize, Deserialize)]
struct Spin(u64);

impl Task for Spin {
    type Output = u64;
    const NAME: &'static str = "spin";
    fn run(self) -> u64 {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..black_box(self.0) {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
            x ^= x >> 29;
        }
        x
    }
}

/// Rounds of [`Spin`] that take about `target` here.
fn calibrate(target: Duration) -> u64 {
    let probe = 2_000_000;
    let start = Instant::now();
    black_box(Spin(probe).run());
    let per_round = start.elapsed().as_secs_f64() / probe as f64;
    (target.as_secs_f64() / per_round) as u64
}

/// Keeps `pid` (0: this thread) on CPU `cpu` alone.
fn pin(pid: Pid, cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("a CPU number within the set");
    sched_setaffinity(pid, &set).expect("pinned");
}

fn process_pool(workers: usize, chunksize: usize) -> ProcessPool {
    ProcessPool::builder().size(workers).chunksize(chunksize).build().expect("process pool starts")
}

/// The echoing child's side of the ping-pong: reads a message and writes
/// it back, unbuffered (one `read` and one `write` a round), until end of
/// file.
fn echo() -> io::Result<()> {
    let mut input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let mut message = [0; PING];
    loop {
        match input.read_exact(&mut message) {
            Ok(()) => output.write_all(&message)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A child process that echoes each message it is sent: this binary in
/// its echo role.
struct Echo {
    child: Child,
    to: ChildStdin,
    from: ChildStdout,
}

impl Echo {
    fn start() -> Echo {
        let mut child = Command::new(std::env::current_exe().expect("the bench binary"))
            .env(ECHO_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the echo child starts");
        let to = child.stdin.take().expect("piped stdin");
        let from = child.stdout.take().expect("piped stdout");
        Echo { child, to, from }
    }

    /// One round: a message there and back.
    fn round(&mut self, n: u64) {
        let mut message = n.to_le_bytes();
        self.to.write_all(&message).expect("the echo child reads");
        self.from.read_exact(&mut message).expect("the echo child answers");
        black_box(message);
    }

    /// Closes its stdin, so it exits, and reaps it.
    fn stop(self) {
        let Echo { mut child, to, from } = self;
        drop(to);
        drop(from);
        child.wait().expect("the echo child exits");
    }
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(BATCH));
    let mut echo = Echo::start();
    group.bench_function("pipe_ping_pong_2_processes", |b| {
        b.iter(|| (0..BATCH).for_each(|n| echo.round(n)));
    });
    echo.stop();
    let cpus = sched_getaffinity(Pid::from_raw(0)).expect("this thread's CPUs");
    let allowed: Vec<usize> = (0..CpuSet::count()).filter(|&c| cpus.is_set(c).unwrap_or(false)).collect();
    for (name, child_cpu) in [("pipe_ping_pong_one_cpu", allowed.first()), ("pipe_ping_pong_two_cpus", allowed.get(1))]
    {
        let (Some(&here), Some(&there)) = (allowed.first(), child_cpu) else {
            println!("{name}: not measured, this process may run on {} CPU(s)", allowed.len());
            continue;
        };
        let mut echo = Echo::start();
        pin(Pid::from_raw(0), here);
        pin(Pid::from_raw(echo.child.id() as i32), there);
        group.bench_function(name, |b| {
            b.iter(|| (0..BATCH).for_each(|n| echo.round(n)));
        });
        echo.stop();
        sched_setaffinity(Pid::from_raw(0), &cpus).expect("this thread's CPUs back");
    }
    for chunksize in [1, 100] {
        let pool = process_pool(2, chunksize);
        group.bench_function(BenchmarkId::new("process_pool_2_workers/chunksize", chunksize), |b| {
            b.iter(|| pool.map((0..BATCH).map(Trivial)));
        });
    }
    let pool = ThreadPool::new(2).expect("thread pool starts");
    group.bench_function("thread_pool_2_workers", |b| {
        b.iter(|| Pool::map(&pool, (0..BATCH).map(Trivial)));
    });
    group.finish();
}

fn cpu_bound(c: &mut Criterion) {
    let rounds = calibrate(Duration::from_millis(10));
    let mut group = c.benchmark_group("cpu_bound_100x10ms");
    // One batch takes a second or more: one batch per sample, ten samples.
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CPU_TASKS));
    for workers in [1, 2] {
        let pool = ThreadPool::new(workers).expect("thread pool starts");
        group.bench_function(BenchmarkId::new("thread_pool", workers), |b| {
            b.iter(|| Pool::map(&pool, (0..CPU_TASKS).map(|_| Spin(rounds))));
        });
        let pool = process_pool(workers, 1);
        group.bench_function(BenchmarkId::new("process_pool", workers), |b| {
            b.iter(|| pool.map((0..CPU_TASKS).map(|_| Spin(rounds))));
        });
    }
    group.finish();
}

fn main() {
    if std::env::var_os(ECHO_ENV).is_some() {
        if let Err(e) = echo() {
            eprintln!("echo child: {e}");
            std::process::exit(1);
        }
        return;
    }
    concur::worker_main(Registry::new().register::<Trivial>().register::<Spin>());
    let mut c = Criterion::default().configure_from_args();
    round_trip(&mut c);
    cpu_bound(&mut c);
    c.final_summary();
}
