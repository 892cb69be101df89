//! The tasks the tests send to workers.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use concur::Task;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::support::*;
use crate::{GRANDCHILD, PROMPTLY, TEST_LIMIT};

// ---------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
pub(crate) struct Square(pub(crate) u64);

impl Task for Square {
    type Output = u64;
    const NAME: &'static str = "square";
    fn run(self) -> u64 {
        self.0 * self.0
    }
}

/// Gives `value` after `ms` milliseconds.
#[derive(Serialize, Deserialize)]
pub(crate) struct Slow {
    pub(crate) value: u64,
    pub(crate) ms: u64,
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
pub(crate) struct WhoAmI;

impl Task for WhoAmI {
    type Output = u32;
    const NAME: &'static str = "who_am_i";
    fn run(self) -> u32 {
        std::process::id()
    }
}

/// Gives `value`, or fails in the way asked.
#[derive(Serialize, Deserialize)]
pub(crate) struct Crash {
    pub(crate) value: u64,
    pub(crate) how: How,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum How {
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
    pub(crate) fn fine(value: u64) -> Self {
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
pub(crate) struct Reverse(pub(crate) Vec<u8>);

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
pub(crate) struct Picky(pub(crate) u64);

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
pub(crate) struct Echo(pub(crate) u64);

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
pub(crate) struct Noisy(pub(crate) u64);

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
pub(crate) struct Unregistered;

impl Task for Unregistered {
    type Output = ();
    const NAME: &'static str = "unregistered";
    fn run(self) {}
}

pub(crate) static GREETING: OnceLock<String> = OnceLock::new();
pub(crate) static INIT_RUNS: AtomicUsize = AtomicUsize::new(0);

/// An initializer: sets the worker's greeting.
#[derive(Serialize, Deserialize)]
pub(crate) struct Init(pub(crate) String);

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
pub(crate) struct Greet;

impl Task for Greet {
    type Output = (Option<String>, usize);
    const NAME: &'static str = "greet";
    fn run(self) -> Self::Output {
        (GREETING.get().cloned(), INIT_RUNS.load(Ordering::SeqCst))
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct InitPanics;

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
pub(crate) struct SpawnSelf;

impl Task for SpawnSelf {
    type Output = Result<String, String>;
    const NAME: &'static str = "spawn_self";
    fn run(self) -> Self::Output {
        let program = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Command::new(program)
            .args(crate::worker_args())
            .env(GRANDCHILD, "1")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("{}", out.status));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Starts `sleep 60` and leaves it running; gives its pid.
#[derive(Serialize, Deserialize)]
pub(crate) struct LeaveChild;

impl Task for LeaveChild {
    type Output = Result<u32, String>;
    const NAME: &'static str = "leave_child";
    fn run(self) -> Self::Output {
        let child = Command::new("sleep").arg("60").stdin(Stdio::null()).spawn().map_err(|e| e.to_string())?;
        Ok(child.id())
    }
}
