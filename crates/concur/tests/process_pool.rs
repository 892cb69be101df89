//! The process pool of the chapter's "process pools" and
//! "multiprocessing.dummy" listings (15, 16), tested with real worker
//! processes: order and completeness of results, chunking, the crash matrix
//! (a panic, an abort, an exit, `kill -9` from outside, while running a
//! task alone or inside a chunk), recycling, large payloads, serialisation
//! failures, initializers, shutdown, and that no worker outlives its pool
//! or its parent.
//!
//! Workers re-execute this test binary, so it has no libtest harness
//! (`harness = false` in `Cargo.toml`): `main` first enters worker mode,
//! then runs each test on its own thread with a deadline, printing
//! `test NAME ... ok`. A hang fails its test instead of blocking CI, and a
//! watchdog aborts the whole run if it overstays. Arguments that do not
//! start with `-` filter tests by substring:
//! `cargo test -p concur --test process_pool -- recycle`.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use concur::{Pool, PoolError, ProcessPool, Registry, Task, TaskError, ThreadPool};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, killpg, sigaction};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long one test may take before it counts as hung.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// How long the whole run may take.
const SUITE_LIMIT: Duration = Duration::from_secs(120);
/// How long a test waits for something that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(20);
/// Set in a child of the test to make it build a pool and exit without
/// dropping it (see `workers_die_with_their_parent`).
const ORPHAN_MAKER: &str = "CONCUR_TEST_ORPHAN_MAKER";
/// Set in a program a task starts (see `SpawnSelf`): it prints a line and
/// exits.
const GRANDCHILD: &str = "CONCUR_TEST_GRANDCHILD";
/// Set in a child of the test to make it run one task on a pool and
/// report, while the test sends SIGINT to its process group (see
/// `a_ctrl_c_for_the_parents_group_does_not_reach_the_workers`); the value
/// is a directory for its files.
const SIGINT_PARENT: &str = "CONCUR_TEST_SIGINT_PARENT";
/// The variable that marks workers.
const WORKER_ENV: &str = "CONCUR_WORKER";

fn registry() -> Registry {
    Registry::new()
        .register::<Square>()
        .register::<Slow>()
        .register::<WhoAmI>()
        .register::<Crash>()
        .register::<Reverse>()
        .register::<Echo>()
        .register::<Picky>()
        .register::<Noisy>()
        .register::<Init>()
        .register::<Greet>()
        .register::<InitPanics>()
        .register::<SpawnSelf>()
        .register::<LeaveChild>()
}

fn main() {
    concur::worker_main(registry());
    if std::env::var_os(ORPHAN_MAKER).is_some() {
        make_orphans();
    }
    if let Some(dir) = std::env::var_os(SIGINT_PARENT) {
        sigint_parent(Path::new(&dir));
    }
    if std::env::var_os(GRANDCHILD).is_some() {
        println!("grandchild {} ran main", std::process::id());
        return;
    }
    thread::spawn(|| {
        thread::sleep(SUITE_LIMIT);
        eprintln!("process_pool tests overstayed {SUITE_LIMIT:?}: aborting");
        std::process::abort();
    });

    let tests: &[(&str, fn())] = &[
        ("map_keeps_input_order", map_keeps_input_order),
        ("imap_keeps_input_order", imap_keeps_input_order),
        ("imap_unordered_gives_every_index_once", imap_unordered_gives_every_index_once),
        ("apply_async_and_empty_input", apply_async_and_empty_input),
        ("a_panic_is_that_tasks_error_and_kills_no_worker", a_panic_is_that_tasks_error_and_kills_no_worker),
        ("an_abort_fails_only_its_task", an_abort_fails_only_its_task),
        ("an_exit_fails_only_its_task", an_exit_fails_only_its_task),
        ("a_worker_killed_from_outside_fails_only_its_task", a_worker_killed_from_outside_fails_only_its_task),
        ("a_worker_killed_while_idle_is_replaced_without_blame", a_worker_killed_while_idle_is_replaced_without_blame),
        ("max_tasks_per_child_recycles_workers", max_tasks_per_child_recycles_workers),
        ("large_payloads_cross_intact", large_payloads_cross_intact),
        ("an_unserialisable_output_is_that_tasks_error", an_unserialisable_output_is_that_tasks_error),
        ("an_unserialisable_task_is_that_tasks_error", an_unserialisable_task_is_that_tasks_error),
        ("an_unregistered_task_is_that_tasks_error", an_unregistered_task_is_that_tasks_error),
        ("a_tasks_printing_does_not_corrupt_the_protocol", a_tasks_printing_does_not_corrupt_the_protocol),
        ("the_initializer_runs_once_per_worker", the_initializer_runs_once_per_worker),
        ("a_failing_initializer_fails_tasks_not_the_caller", a_failing_initializer_fails_tasks_not_the_caller),
        ("close_refuses_new_work", close_refuses_new_work),
        ("terminate_cancels_queued_work_and_kills_workers", terminate_cancels_queued_work_and_kills_workers),
        (
            "a_program_that_is_not_a_worker_fails_tasks_not_the_caller",
            a_program_that_is_not_a_worker_fails_tasks_not_the_caller,
        ),
        ("a_program_started_by_a_task_is_not_a_worker", a_program_started_by_a_task_is_not_a_worker),
        ("no_worker_outlives_the_pool", no_worker_outlives_the_pool),
        ("workers_die_with_their_parent", workers_die_with_their_parent),
        ("threads_and_processes_give_equal_results", threads_and_processes_give_equal_results),
        (
            "an_inherited_worker_variable_is_ignored_with_a_warning",
            an_inherited_worker_variable_is_ignored_with_a_warning,
        ),
        ("a_worker_that_dies_while_starting_hands_its_chunk_on", a_worker_that_dies_while_starting_hands_its_chunk_on),
        ("a_worker_killed_while_idle_is_reaped_at_once", a_worker_killed_while_idle_is_reaped_at_once),
        ("a_task_over_its_time_limit_fails_alone", a_task_over_its_time_limit_fails_alone),
        ("a_stopped_task_times_out_and_the_pool_drops", a_stopped_task_times_out_and_the_pool_drops),
        ("a_per_call_time_limit_applies_to_that_call_only", a_per_call_time_limit_applies_to_that_call_only),
        ("a_tasks_children_do_not_outlive_its_worker", a_tasks_children_do_not_outlive_its_worker),
        (
            "a_ctrl_c_for_the_parents_group_does_not_reach_the_workers",
            a_ctrl_c_for_the_parents_group_does_not_reach_the_workers,
        ),
        ("random_kills_lose_no_task_and_leave_no_process", random_kills_lose_no_task_and_leave_no_process),
    ];

    let filters: Vec<String> =
        std::env::args().skip(1).filter(|a| !a.starts_with('-') && a.parse::<u64>().is_err()).collect();
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, test) in chosen.iter().copied() {
        print!("test {name} ... ");
        let _ = std::io::stdout().flush();
        match run_within(*test, TEST_LIMIT) {
            Ok(()) => println!("ok"),
            Err(why) => {
                println!("FAILED");
                eprintln!("---- {name} ----\n{why}");
                failed.push(*name);
            }
        }
    }
    let passed = chosen.len() - failed.len();
    if failed.is_empty() {
        println!("\ntest result: ok. {passed} passed; 0 failed; finished in {:.2}s\n", started.elapsed().as_secs_f64());
    } else {
        println!("\nfailures: {failed:?}");
        println!("\ntest result: FAILED. {passed} passed; {} failed\n", failed.len());
        std::process::exit(1);
    }
}

/// Runs a test on its own thread; a panic or a hang is its failure. A hung
/// test ends the run at once: its pool cannot be cleaned up from here (its
/// workers die with this process).
fn run_within(test: fn(), limit: Duration) -> Result<(), String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(test)).map_err(|payload| concur::panic_message(&*payload));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => {
            println!("FAILED (hung for {limit:?})");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Square(u64);

impl Task for Square {
    type Output = u64;
    const NAME: &'static str = "square";
    fn run(self) -> u64 {
        self.0 * self.0
    }
}

/// Gives `value` after `ms` milliseconds.
#[derive(Serialize, Deserialize)]
struct Slow {
    value: u64,
    ms: u64,
}

impl Task for Slow {
    type Output = u64;
    const NAME: &'static str = "slow";
    fn run(self) -> u64 {
        thread::sleep(Duration::from_millis(self.ms));
        self.value
    }
}

/// The pid of the worker that ran it.
#[derive(Serialize, Deserialize)]
struct WhoAmI;

impl Task for WhoAmI {
    type Output = u32;
    const NAME: &'static str = "who_am_i";
    fn run(self) -> u32 {
        std::process::id()
    }
}

/// Gives `value`, or fails in the way asked.
#[derive(Serialize, Deserialize)]
struct Crash {
    value: u64,
    how: How,
}

#[derive(Serialize, Deserialize)]
enum How {
    Fine,
    Panic,
    Abort,
    Exit(i32),
    /// Writes the worker's pid to this file, then waits to be killed.
    ReportAndHang(PathBuf),
    /// Never returns (until the test's time is up).
    Hang,
    /// Stops its own worker with SIGSTOP.
    Stop,
    /// Writes the worker's pid to `pid`, then waits (boundedly) for the
    /// file `go` to exist.
    ReportAndWait {
        pid: PathBuf,
        go: PathBuf,
    },
}

impl Crash {
    fn fine(value: u64) -> Self {
        Crash { value, how: How::Fine }
    }
}

impl Task for Crash {
    type Output = u64;
    const NAME: &'static str = "crash";
    fn run(self) -> u64 {
        match self.how {
            How::Fine => {}
            How::Panic => panic!("task {} panics on purpose", self.value),
            How::Abort => std::process::abort(),
            How::Exit(code) => std::process::exit(code),
            How::ReportAndHang(path) => {
                write_atomically(&path, &std::process::id().to_string());
                thread::sleep(TEST_LIMIT);
            }
            How::Hang => thread::sleep(TEST_LIMIT),
            How::Stop => {
                let _ = nix::sys::signal::raise(Signal::SIGSTOP);
            }
            How::ReportAndWait { pid, go } => {
                write_atomically(&pid, &std::process::id().to_string());
                let deadline = Instant::now() + PROMPTLY;
                while !go.exists() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
        self.value
    }
}

/// Gives its bytes back reversed.
#[derive(Serialize, Deserialize)]
struct Reverse(Vec<u8>);

impl Task for Reverse {
    type Output = Vec<u8>;
    const NAME: &'static str = "reverse";
    fn run(mut self) -> Vec<u8> {
        self.0.reverse();
        self.0
    }
}

/// A value that refuses to be serialised when it is 13.
#[derive(Debug, PartialEq, Deserialize)]
struct Picky(u64);

impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("13 refuses to be serialised"));
        }
        serializer.serialize_newtype_struct("Picky", &self.0)
    }
}

/// A task that is fine but whose output may not be.
#[derive(Serialize, Deserialize)]
struct Echo(u64);

impl Task for Echo {
    type Output = Picky;
    const NAME: &'static str = "echo";
    fn run(self) -> Picky {
        Picky(self.0)
    }
}

/// As a task, `Picky` itself may not serialise.
impl Task for Picky {
    type Output = u64;
    const NAME: &'static str = "picky";
    fn run(self) -> u64 {
        self.0
    }
}

/// Prints to stdout, through std and around it, then gives its value.
#[derive(Serialize, Deserialize)]
struct Noisy(u64);

impl Task for Noisy {
    type Output = u64;
    const NAME: &'static str = "noisy";
    fn run(self) -> u64 {
        println!("noise from task {} on stdout", self.0);
        print!("no newline");
        let raw = b"\x05\x00\x00\x00Oraw bytes on fd 1\n";
        // SAFETY: writes a live buffer of the given length to fd 1.
        unsafe { libc::write(1, raw.as_ptr().cast(), raw.len()) };
        self.0
    }
}

/// Not in the registry.
#[derive(Serialize, Deserialize)]
struct Unregistered;

impl Task for Unregistered {
    type Output = ();
    const NAME: &'static str = "unregistered";
    fn run(self) {}
}

static GREETING: OnceLock<String> = OnceLock::new();
static INIT_RUNS: AtomicUsize = AtomicUsize::new(0);

/// An initializer: sets the worker's greeting.
#[derive(Serialize, Deserialize)]
struct Init(String);

impl Task for Init {
    type Output = ();
    const NAME: &'static str = "init";
    fn run(self) {
        INIT_RUNS.fetch_add(1, Ordering::SeqCst);
        let _ = GREETING.set(self.0);
    }
}

/// The worker's greeting and how often its initializer ran.
#[derive(Serialize, Deserialize)]
struct Greet;

impl Task for Greet {
    type Output = (Option<String>, usize);
    const NAME: &'static str = "greet";
    fn run(self) -> Self::Output {
        (GREETING.get().cloned(), INIT_RUNS.load(Ordering::SeqCst))
    }
}

#[derive(Serialize, Deserialize)]
struct InitPanics;

impl Task for InitPanics {
    type Output = ();
    const NAME: &'static str = "init_panics";
    fn run(self) {
        panic!("no configuration");
    }
}

/// Runs this test binary again from inside a worker, and gives what it
/// printed. It inherits the variable that marks workers.
#[derive(Serialize, Deserialize)]
struct SpawnSelf;

impl Task for SpawnSelf {
    type Output = Result<String, String>;
    const NAME: &'static str = "spawn_self";
    fn run(self) -> Self::Output {
        let program = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Command::new(program).env(GRANDCHILD, "1").output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("{}", out.status));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Starts `sleep 60` and leaves it running; gives its pid.
#[derive(Serialize, Deserialize)]
struct LeaveChild;

impl Task for LeaveChild {
    type Output = Result<u32, String>;
    const NAME: &'static str = "leave_child";
    fn run(self) -> Self::Output {
        let child = Command::new("sleep").arg("60").stdin(Stdio::null()).spawn().map_err(|e| e.to_string())?;
        Ok(child.id())
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn pool(size: usize, chunksize: usize) -> ProcessPool {
    ProcessPool::builder().size(size).chunksize(chunksize).build().expect("pool starts")
}

/// `imap_unordered`'s results sorted by index, checking each index came
/// exactly once.
fn sorted<R>(got: impl Iterator<Item = (usize, Result<R, TaskError>)>, n: usize) -> Vec<Result<R, TaskError>> {
    let mut got: Vec<_> = got.collect();
    got.sort_by_key(|(i, _)| *i);
    let indices: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..n).collect::<Vec<_>>(), "every index exactly once");
    got.into_iter().map(|(_, r)| r).collect()
}

fn temp_path(what: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("concur-test-{}-{what}-{n}", std::process::id()))
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("temp file written");
    std::fs::rename(&tmp, path).expect("temp file renamed");
}

/// Waits for a `ReportAndHang` task to write its worker's pid.
fn wait_for_pid(path: &Path) -> u32 {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let _ = std::fs::remove_file(path);
            return text.trim().parse().expect("a pid");
        }
        assert!(Instant::now() < deadline, "the task never reported its pid");
        thread::sleep(Duration::from_millis(5));
    }
}

fn sigkill(pid: u32) {
    let pid = i32::try_from(pid).expect("pids fit in i32");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("the worker can be killed");
}

/// The state letter and parent pid of a process, if it exists.
fn process_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid ...`; comm may hold spaces, so split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is still a child of this process (alive or a zombie).
fn is_our_child(pid: u32) -> bool {
    process_state(pid).is_some_and(|(_, ppid)| ppid == std::process::id())
}

/// Whether `pid` is still running at all (a zombie is not running).
fn is_running(pid: u32) -> bool {
    process_state(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

fn died(how: &str) -> TaskError {
    TaskError::WorkerDied(how.to_owned())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

fn map_keeps_input_order() {
    for chunksize in [1, 2] {
        let pool = pool(3, chunksize);
        // Earlier items take longer, so they finish later.
        let got = pool.map((0..12).map(|i| Slow { value: i, ms: 2 * (12 - i) }));
        assert_eq!(got, (0..12).map(Ok).collect::<Vec<_>>(), "chunksize {chunksize}");
    }
}

fn imap_keeps_input_order() {
    for chunksize in [1, 5] {
        let pool = pool(2, chunksize);
        let got: Vec<_> = pool.imap((0..50).map(Square)).collect();
        assert_eq!(got, (0..50).map(|i| Ok(i * i)).collect::<Vec<_>>(), "chunksize {chunksize}");
    }
}

fn imap_unordered_gives_every_index_once() {
    for chunksize in [1, 7] {
        let pool = pool(2, chunksize);
        let got = sorted(pool.imap_unordered((0..200).map(Square)), 200);
        assert_eq!(got, (0..200).map(|i| Ok(i * i)).collect::<Vec<_>>(), "chunksize {chunksize}");
    }
}

fn apply_async_and_empty_input() {
    let pool = pool(2, 3);
    let handles: Vec<_> = (0..20).map(|i| pool.apply_async(Square(i))).collect();
    let got: Vec<_> = handles.into_iter().map(concur::AsyncResult::wait).collect();
    assert_eq!(got, (0..20).map(|i| Ok(i * i)).collect::<Vec<_>>());
    assert!(pool.map(Vec::<Square>::new()).is_empty());
    assert_eq!(pool.imap_unordered(Vec::<Square>::new()).count(), 0);
}

fn a_panic_is_that_tasks_error_and_kills_no_worker() {
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

/// Every task but `bad` succeeds; those fail with `error`.
fn check_only(got: &[Result<u64, TaskError>], bad: &[usize], error: &TaskError) {
    for (i, r) in got.iter().enumerate() {
        if bad.contains(&i) {
            assert_eq!(r, &Err(error.clone()), "task {i}");
        } else {
            assert_eq!(r, &Ok(i as u64), "task {i}");
        }
    }
}

fn an_abort_fails_only_its_task() {
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

fn an_exit_fails_only_its_task() {
    let pool = pool(1, 3);
    let tasks = (0..6).map(|i| Crash { value: i, how: if i == 1 { How::Exit(7) } else { How::Fine } });
    check_only(&pool.map(tasks), &[1], &died("exited with status 7"));
}

fn a_worker_killed_from_outside_fails_only_its_task() {
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

fn a_worker_killed_while_idle_is_replaced_without_blame() {
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

fn max_tasks_per_child_recycles_workers() {
    for chunksize in [1, 2] {
        let pool =
            ProcessPool::builder().size(1).chunksize(chunksize).max_tasks_per_child(3).build().expect("pool starts");
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

fn large_payloads_cross_intact() {
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

fn an_unserialisable_output_is_that_tasks_error() {
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

fn an_unserialisable_task_is_that_tasks_error() {
    let pool = pool(2, 2);
    let got = pool.map([1, 13, 2].map(Picky));
    assert_eq!(got[0], Ok(1));
    assert_eq!(got[2], Ok(2));
    assert!(matches!(&got[1], Err(TaskError::Serialize(m)) if m.contains("13 refuses")), "{:?}", got[1]);
    assert!(matches!(pool.apply_async(Picky(13)).wait(), Err(TaskError::Serialize(_))));
}

fn an_unregistered_task_is_that_tasks_error() {
    let pool = pool(1, 1);
    match pool.apply_async(Unregistered).wait() {
        Err(TaskError::Failed(message)) => assert!(message.contains("\"unregistered\""), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(pool.map([Square(5)]), [Ok(25)]);
}

fn a_tasks_printing_does_not_corrupt_the_protocol() {
    let pool = pool(2, 2);
    let got = pool.map((0..6).map(Noisy));
    assert_eq!(got, (0..6).map(Ok).collect::<Vec<_>>());
    assert_eq!(pool.spawned_pids().len(), 2);
}

fn the_initializer_runs_once_per_worker() {
    let pool = ProcessPool::builder().size(2).initializer(Init("hello".to_owned())).build().expect("pool starts");
    let got = pool.map(std::iter::repeat_with(|| Greet).take(10));
    assert_eq!(got, vec![Ok((Some("hello".to_owned()), 1)); 10]);
}

fn a_failing_initializer_fails_tasks_not_the_caller() {
    let pool = ProcessPool::builder().size(2).initializer(InitPanics).build().expect("pool starts");
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

fn close_refuses_new_work() {
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

fn terminate_cancels_queued_work_and_kills_workers() {
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

fn a_program_that_is_not_a_worker_fails_tasks_not_the_caller() {
    // Exits at once.
    let pool = ProcessPool::builder().size(1).program("/bin/true").build().expect("starts");
    for r in pool.map((0..3).map(Square)) {
        match r {
            Err(TaskError::WorkerDied(m)) => {
                assert!(m.starts_with("exited with status 0 while starting"), "{m}");
            }
            other => panic!("expected WorkerDied, got {other:?}"),
        }
    }
    // Says nothing and waits on stdin forever.
    let pool = ProcessPool::builder()
        .size(1)
        .program("/bin/cat")
        .start_timeout(Duration::from_millis(200))
        .build()
        .expect("starts");
    match pool.apply_async(Square(1)).wait() {
        Err(TaskError::Failed(m)) => assert!(m.contains("did not start within"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    // Prints something else.
    let pool = ProcessPool::builder().size(1).program("/bin/pwd").build().expect("starts");
    match pool.apply_async(Square(1)).wait() {
        Err(TaskError::Failed(m)) => assert!(m.contains("is not a concur worker"), "{m}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    // Does not exist.
    let missing = ProcessPool::builder().size(1).program("/nonexistent/program").build();
    assert!(matches!(missing, Err(PoolError::Spawn(_))));
    assert!(matches!(ProcessPool::new(0), Err(PoolError::NoWorkers)));
}

fn a_program_started_by_a_task_is_not_a_worker() {
    let pool = pool(1, 1);
    match pool.apply_async(SpawnSelf).wait() {
        Ok(Ok(out)) => assert!(out.starts_with("grandchild") && out.ends_with("ran main\n"), "{out:?}"),
        other => panic!("the grandchild did not run its main: {other:?}"),
    }
}

fn no_worker_outlives_the_pool() {
    let pool = ProcessPool::builder().size(2).chunksize(2).max_tasks_per_child(4).build().expect("pool starts");
    let tasks = (0..20).map(|i| Crash { value: i, how: if i == 9 { How::Abort } else { How::Fine } });
    let _ = pool.map(tasks);
    let pid_file = temp_path("outlive");
    let hanging = pool.apply_async(Crash { value: 0, how: How::ReportAndHang(pid_file.clone()) });
    sigkill(wait_for_pid(&pid_file));
    assert!(hanging.wait().is_err());
    let _ = pool.map((0..5).map(Square));
    let spawned = pool.spawned_pids();
    assert!(spawned.len() >= 5, "recycled and replaced workers: {spawned:?}");
    drop(pool);
    let left: Vec<_> = spawned.iter().filter(|&&pid| is_our_child(pid)).collect();
    assert!(left.is_empty(), "workers left behind (alive or zombie): {left:?}");
}

/// The orphan maker's part of `workers_die_with_their_parent`: a pool whose
/// process exits without dropping it.
fn make_orphans() -> ! {
    let pool = pool(2, 1);
    // Both workers are up once each has answered.
    let _ = pool.map((0..2).map(|i| Slow { value: i, ms: 50 }));
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("{}", pids.join(" "));
    let _ = std::io::stdout().flush();
    std::mem::forget(pool);
    std::process::exit(0);
}

fn workers_die_with_their_parent() {
    let mut maker = Command::new(std::env::current_exe().expect("test binary"))
        .env(ORPHAN_MAKER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("orphan maker starts");
    let mut line = String::new();
    BufReader::new(maker.stdout.take().expect("piped")).read_line(&mut line).expect("orphan maker reports its workers");
    let pids: BTreeSet<u32> = line.split_whitespace().map(|p| p.parse().expect("a pid")).collect();
    assert_eq!(pids.len(), 2, "{line:?}");
    assert!(maker.wait().expect("orphan maker exits").success());
    let deadline = Instant::now() + PROMPTLY;
    while pids.iter().any(|&pid| is_running(pid)) {
        assert!(Instant::now() < deadline, "orphaned workers still running: {pids:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn threads_and_processes_give_equal_results() {
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
    let processes = run_all(&ProcessPool::builder().size(3).chunksize(4).build().expect("process pool starts"));
    assert_eq!(threads, processes);
    assert_eq!(threads.0, threads.1);
    assert_eq!(threads.0.iter().filter(|r| r.is_err()).count(), 4);
}

fn an_inherited_worker_variable_is_ignored_with_a_warning() {
    let program = std::env::current_exe().expect("test binary");
    let handshake_like = format!("{}:9:12345:{}", std::process::id(), "ab".repeat(16));
    // The old form (the parent's pid), a handshake naming a pipe that was
    // never passed, and junk.
    for value in [std::process::id().to_string(), handshake_like, "junk".to_owned()] {
        let out = Command::new(&program)
            .env(GRANDCHILD, "1")
            .env(WORKER_ENV, &value)
            .stdin(Stdio::null())
            .output()
            .expect("the program runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{value:?}: {}, stderr {stderr:?}", out.status);
        assert!(stdout.starts_with("grandchild") && stdout.ends_with("ran main\n"), "{value:?}: {stdout:?}");
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(WORKER_ENV)).collect();
        assert_eq!(warnings.len(), 1, "{value:?}: one line of warning, got {stderr:?}");
        assert!(warnings[0].starts_with("warning: ignoring CONCUR_WORKER"), "{stderr:?}");
    }
}

fn a_worker_that_dies_while_starting_hands_its_chunk_on() {
    let starts = temp_path("starts");
    std::fs::create_dir(&starts).expect("a directory for the count of starts");
    // Counts starts in `$1`; the second start is killed before it can
    // greet the pool, while it holds the chunk of task 1.
    let script = r#"n=$(ls "$1" | wc -l); touch "$1/$n"; if [ "$n" -eq 1 ]; then kill -KILL $$; fi; exec "$0""#;
    let pool = ProcessPool::builder()
        .size(1)
        .max_tasks_per_child(1)
        .program("/bin/sh")
        .args(["-c", script])
        .args([std::env::current_exe().expect("test binary").into_os_string(), starts.clone().into_os_string()])
        .build()
        .expect("pool starts");
    assert_eq!(pool.map((0..3).map(Square)), [Ok(0), Ok(1), Ok(4)]);
    // The first worker, the one killed while starting, its replacement,
    // and the third task's worker.
    assert_eq!(pool.spawned_pids().len(), 4);
    drop(pool);
    let _ = std::fs::remove_dir_all(&starts);
}

fn a_worker_killed_while_idle_is_reaped_at_once() {
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

fn a_task_over_its_time_limit_fails_alone() {
    let limit = Duration::from_millis(300);
    let pool = ProcessPool::builder().size(1).chunksize(4).task_timeout(limit).build().expect("pool starts");
    let tasks = (0..8).map(|i| Crash { value: i, how: if i == 2 { How::Hang } else { How::Fine } });
    let got = pool.map(tasks);
    check_only(&got, &[2], &TaskError::TimedOut(limit));
    assert_eq!(pool.spawned_pids().len(), 2, "the hung worker was replaced");
    assert_eq!(pool.worker_pids().len(), 1);
    // A limit is no deadline for tasks that finish in time.
    assert_eq!(pool.map((0..5).map(|i| Slow { value: i, ms: 1 })), (0..5).map(Ok).collect::<Vec<_>>());
}

fn a_stopped_task_times_out_and_the_pool_drops() {
    let limit = Duration::from_millis(300);
    let pool = ProcessPool::builder().size(1).task_timeout(limit).build().expect("pool starts");
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

fn a_per_call_time_limit_applies_to_that_call_only() {
    let limit = Duration::from_millis(300);
    let pool = pool(2, 1);
    let limited = pool.with_task_timeout(limit);
    assert_eq!(limited.apply_async(Crash { value: 0, how: How::Hang }).wait(), Err(TaskError::TimedOut(limit)));
    let tasks = (0..4).map(|i| Crash { value: i, how: if i == 1 { How::Hang } else { How::Fine } });
    check_only(&limited.map(tasks), &[1], &TaskError::TimedOut(limit));
    // Without the view, no limit.
    assert_eq!(pool.apply_async(Slow { value: 5, ms: 400 }).wait(), Ok(5));
}

fn a_tasks_children_do_not_outlive_its_worker() {
    for terminate in [false, true] {
        let pool = pool(1, 1);
        let child = pool.apply_async(LeaveChild).wait().expect("runs").expect("sleep starts");
        assert!(is_running(child), "the task's child runs");
        if terminate {
            pool.terminate();
        }
        drop(pool);
        let deadline = Instant::now() + PROMPTLY;
        while is_running(child) {
            assert!(Instant::now() < deadline, "the task's child {child} outlived the pool (terminate: {terminate})");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

static GOT_SIGINT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    GOT_SIGINT.store(true, Ordering::SeqCst);
}

/// The parent's part of `a_ctrl_c_for_the_parents_group_does_not_reach_the_workers`:
/// notes SIGINT instead of dying of it (a handler, which a worker does not
/// inherit, unlike an ignored or blocked signal), runs one task and
/// prints how it ended.
fn sigint_parent(dir: &Path) -> ! {
    let action = SigAction::new(SigHandler::Handler(on_sigint), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe { sigaction(Signal::SIGINT, &action) }.expect("a SIGINT handler");
    let pool = pool(1, 1);
    let (pid_file, go) = (dir.join("pid"), dir.join("go"));
    let handle = pool.apply_async(Crash { value: 42, how: How::ReportAndWait { pid: pid_file.clone(), go } });
    println!("running {}", wait_for_pid(&pid_file));
    let _ = std::io::stdout().flush();
    let result = handle.wait();
    println!("{result:?} sigint={}", GOT_SIGINT.load(Ordering::SeqCst));
    let _ = std::io::stdout().flush();
    drop(pool);
    std::process::exit(0);
}

fn a_ctrl_c_for_the_parents_group_does_not_reach_the_workers() {
    let dir = temp_path("sigint");
    std::fs::create_dir(&dir).expect("a directory");
    // The parent leads its own group, as a shell's foreground job does:
    // the signal goes to that group, never to the test runner's.
    let mut parent = Command::new(std::env::current_exe().expect("test binary"))
        .env(SIGINT_PARENT, &dir)
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the parent starts");
    let mut lines = BufReader::new(parent.stdout.take().expect("piped")).lines();
    let running = lines.next().expect("a line").expect("readable");
    assert!(running.starts_with("running "), "{running:?}");
    let group = Pid::from_raw(i32::try_from(parent.id()).expect("pids fit in i32"));
    killpg(group, Signal::SIGINT).expect("SIGINT sent to the parent's group");
    // The signal is queued for every member of the group by now; only
    // then may the task finish.
    std::fs::write(dir.join("go"), "").expect("go");
    let ended = lines.next().expect("a line").expect("readable");
    assert_eq!(ended, "Ok(42) sigint=true", "the worker took the parent's SIGINT");
    assert!(parent.wait().expect("the parent exits").success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny seeded generator: the same kills in the same order every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn random_kills_lose_no_task_and_leave_no_process() {
    const TASKS: u64 = 3_000;
    for chunksize in [1, 5] {
        let pool = ProcessPool::builder().size(4).chunksize(chunksize).build().expect("pool starts");
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
