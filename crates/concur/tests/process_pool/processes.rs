//! Which processes are workers, and that none is left: programs that are
//! no worker, inherited variables, orphans, a task's own children, and a
//! terminal's Ctrl-C.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use concur::{Pool, PoolError, ProcessPool, TaskError};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, killpg, sigaction};
use nix::unistd::Pid;

use crate::support::*;
use crate::tasks::*;
use crate::{GRANDCHILD, ORPHAN_MAKER, PROMPTLY, SIGINT_PARENT, WORKER_ENV, builder, worker_args};

#[test]
fn a_program_that_is_not_a_worker_fails_tasks_not_the_caller() {
    crate::enter();
    // Exits at once.
    let pool = ProcessPool::builder().size(1).program("/bin/true").build().expect("starts");
    for r in pool.map((0..3).map(Square)) {
        match r {
            Err(TaskError::WorkerDied(m)) => {
                assert!(m.detail.starts_with("exited with status 0 while starting"), "{m}");
                assert_eq!((m.code, m.signal), (Some(0), None));
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

#[test]
fn a_program_started_by_a_task_is_not_a_worker() {
    crate::enter();
    let pool = pool(1, 1);
    match pool.apply_async(SpawnSelf).wait() {
        // After the harness's header.
        Ok(Ok(out)) => assert!(out.lines().any(|l| l.starts_with("grandchild") && l.ends_with("ran main")), "{out:?}"),
        other => panic!("the grandchild did not run its main: {other:?}"),
    }
}

#[test]
fn an_inherited_worker_variable_is_ignored_with_a_warning() {
    crate::enter();
    let program = std::env::current_exe().expect("test binary");
    let handshake_like = format!("{}:9:12345:{}", std::process::id(), "ab".repeat(16));
    // The old form (the parent's pid), a handshake naming a pipe that was
    // never passed, and junk.
    for value in [std::process::id().to_string(), handshake_like, "junk".to_owned()] {
        let out = Command::new(&program)
            .args(worker_args())
            .env(GRANDCHILD, "1")
            .env(WORKER_ENV, &value)
            .stdin(Stdio::null())
            .output()
            .expect("the program runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{value:?}: {}, stderr {stderr:?}", out.status);
        assert!(
            stdout.lines().any(|l| l.starts_with("grandchild") && l.ends_with("ran main")),
            "{value:?}: {stdout:?}"
        );
        let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(WORKER_ENV)).collect();
        assert_eq!(warnings.len(), 1, "{value:?}: one line of warning, got {stderr:?}");
        assert!(warnings[0].starts_with("warning: ignoring CONCUR_WORKER"), "{stderr:?}");
    }
}

#[test]
fn no_worker_outlives_the_pool() {
    crate::enter();
    let pool = builder().size(2).chunksize(2).max_tasks_per_child(4).build().expect("pool starts");
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
pub(crate) fn make_orphans() -> ! {
    let pool = pool(2, 1);
    // Both workers are up once each has answered.
    let _ = pool.map((0..2).map(|i| Slow { value: i, ms: 50 }));
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("pids: {}", pids.join(" "));
    let _ = std::io::stdout().flush();
    std::mem::forget(pool);
    std::process::exit(0);
}

#[test]
fn workers_die_with_their_parent() {
    crate::enter();
    let mut maker = Command::new(std::env::current_exe().expect("test binary"))
        .args(worker_args())
        .env(ORPHAN_MAKER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("orphan maker starts");
    // The harness prints its header first.
    let line = BufReader::new(maker.stdout.take().expect("piped"))
        .lines()
        .map(|line| line.expect("readable"))
        .find_map(|line| line.strip_prefix("pids: ").map(str::to_owned))
        .expect("orphan maker reports its workers");
    let pids: BTreeSet<u32> = line.split_whitespace().map(|p| p.parse().expect("a pid")).collect();
    assert_eq!(pids.len(), 2, "{line:?}");
    assert!(maker.wait().expect("orphan maker exits").success());
    let deadline = Instant::now() + PROMPTLY;
    while pids.iter().any(|&pid| is_running(pid)) {
        assert!(Instant::now() < deadline, "orphaned workers still running: {pids:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_tasks_children_do_not_outlive_its_worker() {
    crate::enter();
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

pub(crate) static GOT_SIGINT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    GOT_SIGINT.store(true, Ordering::SeqCst);
}

/// The parent's part of `a_ctrl_c_for_the_parents_group_does_not_reach_the_workers`:
/// notes SIGINT instead of dying of it (a handler, which a worker does not
/// inherit, unlike an ignored or blocked signal), runs one task and
/// prints how it ended.
pub(crate) fn sigint_parent(dir: &Path) -> ! {
    let action = SigAction::new(SigHandler::Handler(on_sigint), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe { sigaction(Signal::SIGINT, &action) }.expect("a SIGINT handler");
    let pool = pool(1, 1);
    let (pid_file, go) = (dir.join("pid"), dir.join("go"));
    let handle = pool.apply_async(Crash { value: 42, how: How::ReportAndWait { pid: pid_file.clone(), go } });
    println!("task on worker {}", wait_for_pid(&pid_file));
    let _ = std::io::stdout().flush();
    let result = handle.wait();
    println!("ended: {result:?} sigint={}", GOT_SIGINT.load(Ordering::SeqCst));
    let _ = std::io::stdout().flush();
    drop(pool);
    std::process::exit(0);
}

#[test]
fn a_ctrl_c_for_the_parents_group_does_not_reach_the_workers() {
    crate::enter();
    let dir = temp_path("sigint");
    std::fs::create_dir(&dir).expect("a directory");
    // The parent leads its own group, as a shell's foreground job does:
    // the signal goes to that group, never to the test runner's.
    let mut parent = Command::new(std::env::current_exe().expect("test binary"))
        .args(worker_args())
        .env(SIGINT_PARENT, &dir)
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the parent starts");
    // The harness prints its header first.
    let mut lines = BufReader::new(parent.stdout.take().expect("piped")).lines().map(|l| l.expect("readable"));
    let running = lines.find(|l| l.starts_with("task on worker ")).expect("the parent reports its task running");
    assert!(running.len() > "task on worker ".len(), "{running:?}");
    let group = Pid::from_raw(i32::try_from(parent.id()).expect("pids fit in i32"));
    killpg(group, Signal::SIGINT).expect("SIGINT sent to the parent's group");
    // The signal is queued for every member of the group by now; only
    // then may the task finish.
    std::fs::write(dir.join("go"), "").expect("go");
    let ended = lines.find(|l| l.starts_with("ended: ")).expect("the parent reports how the task ended");
    assert_eq!(ended, "ended: Ok(42) sigint=true", "the worker took the parent's SIGINT");
    assert!(parent.wait().expect("the parent exits").success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_program_that_closes_stdout_before_it_exits_keeps_its_own_status() {
    crate::enter();
    // Closing stdout is not exiting (coreutils close it first thing at
    // exit): the pool must not take end-of-file as leave to SIGKILL it.
    let pool = ProcessPool::builder()
        .size(1)
        .program("/bin/sh")
        .args(["-c", "exec >&-; sleep 0.2; exit 5"])
        .build()
        .expect("starts");
    match pool.apply_async(Square(1)).wait() {
        Err(TaskError::WorkerDied(m)) => {
            assert!(m.detail.starts_with("exited with status 5 while starting"), "{m}");
            assert_eq!((m.code, m.signal), (Some(5), None));
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}
