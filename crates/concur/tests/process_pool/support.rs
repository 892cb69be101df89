//! Helpers shared by the tests: pools, paths, and what `/proc` says about
//! a process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use concur::{ProcessPool, TaskError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::PROMPTLY;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

pub(crate) fn pool(size: usize, chunksize: usize) -> ProcessPool {
    crate::builder().size(size).chunksize(chunksize).build().expect("pool starts")
}

/// `imap_unordered`'s results sorted by index, checking each index came
/// exactly once.
pub(crate) fn sorted<R>(
    got: impl Iterator<Item = (usize, Result<R, TaskError>)>,
    n: usize,
) -> Vec<Result<R, TaskError>> {
    let mut got: Vec<_> = got.collect();
    got.sort_by_key(|(i, _)| *i);
    let indices: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..n).collect::<Vec<_>>(), "every index exactly once");
    got.into_iter().map(|(_, r)| r).collect()
}

pub(crate) fn temp_path(what: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("concur-test-{}-{what}-{n}", std::process::id()))
}

pub(crate) fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("temp file written");
    std::fs::rename(&tmp, path).expect("temp file renamed");
}

/// Waits for a `ReportAndHang` task to write its worker's pid.
pub(crate) fn wait_for_pid(path: &Path) -> u32 {
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

pub(crate) fn sigkill(pid: u32) {
    let pid = i32::try_from(pid).expect("pids fit in i32");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("the worker can be killed");
}

/// The state letter and parent pid of a process, if it exists.
pub(crate) fn process_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid ...`; comm may hold spaces, so split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is still a child of this process (alive or a zombie).
pub(crate) fn is_our_child(pid: u32) -> bool {
    process_state(pid).is_some_and(|(_, ppid)| ppid == std::process::id())
}

/// Whether `pid` is still running at all (a zombie is not running).
pub(crate) fn is_running(pid: u32) -> bool {
    process_state(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The error of a worker that died as `how` says, its status as the
/// numbers in the text: "exited with status 7", "killed by signal 9 ...".
pub(crate) fn died(how: &str) -> TaskError {
    let number = |prefix: &str| how.strip_prefix(prefix)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
    TaskError::WorkerDied(concur::pool::WorkerExit {
        code: number("exited with status "),
        signal: number("killed by signal "),
        detail: how.to_owned(),
    })
}

/// Every task but `bad` succeeds; those fail with `error`.
pub(crate) fn check_only(got: &[Result<u64, TaskError>], bad: &[usize], error: &TaskError) {
    for (i, r) in got.iter().enumerate() {
        if bad.contains(&i) {
            assert_eq!(r, &Err(error.clone()), "task {i}");
        } else {
            assert_eq!(r, &Ok(i as u64), "task {i}");
        }
    }
}
