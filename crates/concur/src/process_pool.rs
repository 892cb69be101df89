//! A pool of worker processes: the [`Pool`] interface over child processes.
//!
//! Implements the chapter's "process pools" listing (15) and the process
//! half of "multiprocessing.dummy" (16): Python's `multiprocessing.Pool`.
//! Workers are child processes running *the same executable* as the pool,
//! re-executed rather than forked (Python's `spawn` start method): forking a
//! process that has threads copies their locks but not the threads, so it is
//! never done here. A re-executed child learns it is a worker from an
//! environment variable and, as the first thing in `main`, calls
//! [`worker_main`] with the [`Registry`] of the tasks it can run.
//!
//! # The protocol
//!
//! Tasks and results are [`postcard`] values in length-prefixed frames over
//! the child's stdin and stdout. The worker moves those pipes to private
//! descriptors and points its own stdout at stderr and its stdin at
//! `/dev/null`, so a task's `println!` lands on the terminal instead of in
//! the protocol. Frames (`len` is a little-endian `u32` counting the bytes
//! after it):
//!
//! | from   | frame                                                       |
//! |--------|-------------------------------------------------------------|
//! | worker | `len 'H' "concur/1"`: ready for work (the handshake)        |
//! | pool   | `len 'I' name payload`: run this initializer once           |
//! | worker | `len 'r'`: the initializer ran, or an `'E'` frame           |
//! | pool   | `len 'R' name count (len payload)*`: run a chunk of tasks   |
//! | worker | `len 'O' output` or `len 'E' kind message`, one per task    |
//!
//! A worker answers every task of a chunk with its own frame, written as
//! soon as that task finishes, so the pool always knows which tasks of a
//! chunk are done.
//!
//! # When a worker dies
//!
//! Python's pool hangs when a worker dies mid-task. Here, each worker
//! process has a manager thread in the pool that holds its pipes and takes
//! chunks from the shared work queue. When the worker's stdout closes, the
//! manager reaps it and:
//!
//! - the task it was running (the first of its chunk without an answer)
//!   gets [`TaskError::WorkerDied`] with the exit status or signal, e.g.
//!   `killed by signal 9 (SIGKILL)`;
//! - the tasks of the chunk that it had not started are run again on a
//!   replacement worker (they did not run, so they run once);
//! - if the worker died before it had read the whole chunk (it was killed
//!   while idle), nothing is blamed and the chunk is retried; after three
//!   such deaths in a row its first task is blamed, so that nothing loops
//!   forever.
//!
//! A panic is no death: the worker catches it per task and reports
//! [`TaskError::Panicked`]. Only an abort, an exit or a signal kills it.
//!
//! # No orphans
//!
//! Every child is waited for by its manager. Closing the pool closes the
//! workers' stdin, so they exit once idle, and any that does not within a
//! grace period is killed. If the pool's process dies instead, the workers
//! read end-of-file on stdin and exit; on Linux they also ask the kernel to
//! kill them when their parent goes (`PR_SET_PDEATHSIG`).

use std::any::TypeId;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::pool::{AsyncResult, ImapUnordered, Pool, PoolError, Task, TaskError, panic_message};

/// Set in a worker's environment to the pool process's pid: how a
/// re-executed program knows it is a worker, and who its parent must be.
const WORKER_ENV: &str = "CONCUR_WORKER";

/// How long a worker whose stdin was closed may take to exit before it is
/// killed.
const GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// The worker side
// ---------------------------------------------------------------------------

/// Runs one serialised task and gives the complete reply frame.
type RunFn = fn(&[u8]) -> Vec<u8>;

/// The tasks a worker process can run, by [`Task::NAME`].
///
/// A process cannot be sent a function, only data; a worker finds the code
/// for a task it receives by the task's name in its registry. Register
/// every task type the program submits to a [`ProcessPool`], in the call to
/// [`worker_main`] at the top of `main`.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Square(u64);
/// # impl concur::Task for Square {
/// #     type Output = u64;
/// #     const NAME: &'static str = "square";
/// #     fn run(self) -> u64 { self.0 * self.0 }
/// # }
/// let registry = concur::Registry::new().register::<Square>();
/// assert_eq!(registry.names().collect::<Vec<_>>(), ["square"]);
/// ```
#[derive(Default)]
pub struct Registry {
    tasks: HashMap<&'static str, (TypeId, RunFn)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds task type `T` under [`T::NAME`](Task::NAME). Registering the
    /// same type twice is harmless.
    ///
    /// # Panics
    ///
    /// If another type is already registered under the same name: the
    /// worker could not tell them apart.
    #[must_use]
    pub fn register<T: Task>(mut self) -> Self {
        let entry = (TypeId::of::<T>(), run_task::<T> as RunFn);
        if let Some((other, _)) = self.tasks.insert(T::NAME, entry) {
            assert!(other == entry.0, "two task types are registered as {:?}: task names must be unique", T::NAME);
        }
        self
    }

    /// The registered task names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.keys().copied()
    }

    /// Runs the task called `name` on `payload` and gives the reply frame.
    fn run(&self, name: &str, payload: &[u8]) -> Vec<u8> {
        match self.tasks.get(name) {
            Some((_, run)) => run(payload),
            None => {
                let mut known: Vec<_> = self.names().collect();
                known.sort_unstable();
                wire::error_frame(
                    wire::FAILED,
                    &format!(
                        "no task named {name:?} is registered in the worker \
                         (registered: {known:?}); register it in the call to \
                         concur::worker_main"
                    ),
                )
            }
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.names().collect();
        names.sort_unstable();
        f.debug_struct("Registry").field("tasks", &names).finish()
    }
}

/// Enters worker mode if this process was started as a [`ProcessPool`]
/// worker, and otherwise returns at once. Call it first thing in `main`,
/// before anything is printed or any thread is started, with every task
/// type the program sends to a process pool:
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Square(u64);
/// # impl concur::Task for Square {
/// #     type Output = u64;
/// #     const NAME: &'static str = "square";
/// #     fn run(self) -> u64 { self.0 * self.0 }
/// # }
/// fn main() {
///     concur::worker_main(concur::Registry::new().register::<Square>());
///     // Only the pool's own process gets here.
/// }
/// ```
///
/// A worker serves tasks until the pool closes its stdin and then exits the
/// process: in a worker, this function never returns.
///
/// A worker is recognised by a variable the pool sets in its environment,
/// naming the pool's process, which must be the worker's parent. A program
/// that a task starts inherits the variable but not that parent, so it is
/// not taken for a worker.
pub fn worker_main(registry: Registry) {
    let Some(pool) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    let pool: libc::pid_t = match pool.to_str().and_then(|pid| pid.parse().ok()) {
        Some(pid) => pid,
        None => return,
    };
    // SAFETY: getppid cannot fail and has no preconditions.
    if unsafe { libc::getppid() } != pool {
        if process_exists(pool) {
            // Not started by the pool: a program run by one of its workers'
            // tasks, which inherited the variable. It is not a worker.
            return;
        }
        // Started by the pool, which died before we got here.
        std::process::exit(3);
    }
    let code = match serve(&registry, pool) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("concur worker {}: {e}", std::process::id());
            3
        }
    };
    std::process::exit(code);
}

/// A worker's life: take the protocol pipes, greet, then answer frames
/// until the pool closes stdin.
fn serve(registry: &Registry, pool: libc::pid_t) -> io::Result<()> {
    die_with_parent(pool)?;
    let (mut input, mut output) = take_protocol_pipes()?;
    output.write_all(&wire::hello_frame())?;
    while let Some(frame) = wire::read_frame(&mut input)? {
        match wire::Request::parse(&frame)? {
            wire::Request::Init { name, payload } => {
                let reply = registry.run(name, payload);
                if wire::is_error(&reply) {
                    output.write_all(&reply)?;
                    return Err(io::Error::other(format!("initializer {name:?} failed")));
                }
                output.write_all(&wire::ready_frame())?;
            }
            wire::Request::Run { name, tasks } => {
                for payload in tasks {
                    // One write per answer, as soon as it is ready: the
                    // pool learns exactly which tasks are done.
                    output.write_all(&registry.run(name, payload?))?;
                }
            }
        }
    }
    Ok(())
}

fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 checks that the process exists and sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Makes sure this worker does not outlive the pool's process: the kernel
/// kills it when the pool's thread that started it ends.
#[cfg(target_os = "linux")]
fn die_with_parent(pool: libc::pid_t) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes one integer argument and touches no
    // memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // The pool may have died before the request: then we were adopted.
    // SAFETY: getppid cannot fail and has no preconditions.
    if unsafe { libc::getppid() } != pool {
        return Err(io::Error::other("the pool's process is gone"));
    }
    Ok(())
}

/// Elsewhere, end-of-file on stdin (the pool's process is gone) is what
/// makes a worker exit.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_pool: libc::pid_t) -> io::Result<()> {
    Ok(())
}

/// Moves the protocol pipes (fd 0 and 1) to private descriptors and
/// points fd 1 at stderr and fd 0 at `/dev/null`, so that nothing a task
/// prints or reads can touch the protocol.
fn take_protocol_pipes() -> io::Result<(BufReader<File>, File)> {
    io::stdout().flush()?;
    let input = dup_private(0)?;
    let output = dup_private(1)?;
    let null = File::open("/dev/null")?;
    // SAFETY: dup2 only replaces descriptors 0 and 1, whose previous files
    // are now also open on `input` and `output`; std's `Stdout` and `Stdin`
    // keep using fd 1 and 0, which now lead to stderr and `/dev/null`.
    unsafe {
        cvt(libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO))?;
        cvt(libc::dup2(null.as_raw_fd(), libc::STDIN_FILENO))?;
    }
    Ok((BufReader::with_capacity(1 << 16, File::from(input)), File::from(output)))
}

/// A close-on-exec duplicate of `fd`, numbered 3 or above, owned by us.
fn dup_private(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor and touches no memory.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `new` was just created and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// The worker's handling of one task of type `T`: decode, run with panics
/// caught, encode the output. Every failure is an error frame for this
/// task only.
fn run_task<T: Task>(payload: &[u8]) -> Vec<u8> {
    let task: T = match postcard::from_bytes(payload) {
        Ok(task) => task,
        Err(e) => {
            return wire::error_frame(wire::SERIALIZE, &format!("cannot deserialise task {:?}: {e}", T::NAME));
        }
    };
    match catch_unwind(AssertUnwindSafe(|| task.run())) {
        Ok(output) => wire::output_frame(&output, T::NAME),
        Err(payload) => wire::error_frame(wire::PANICKED, &panic_message(&*payload)),
    }
}

/// Serialises `value` with postcard, turning a failure into a message.
/// `what` names the value in messages; it is only built on failure.
fn encode<V: Serialize>(value: &V, what: impl FnOnce() -> String) -> Result<Vec<u8>, TaskError> {
    match catch_unwind(AssertUnwindSafe(|| postcard::to_allocvec(value))) {
        Ok(Ok(bytes)) if bytes.len() <= wire::MAX_FRAME - 64 => Ok(bytes),
        Ok(Ok(bytes)) => {
            Err(TaskError::Serialize(format!("{} is {} bytes, over the 4 GiB limit of a frame", what(), bytes.len())))
        }
        Ok(Err(e)) => {
            Err(TaskError::Serialize(format!("cannot serialise {}: {}", what(), serialize_error_message(value, e))))
        }
        Err(payload) => {
            Err(TaskError::Panicked(format!("serialising {} panicked: {}", what(), panic_message(&*payload))))
        }
    }
}

/// Postcard drops the message of a `Serialize` impl's own error (it says
/// only "Serde Serialization Error"); serde_json keeps it, so the value is
/// replayed through serde_json to recover it. Only done on failure.
fn serialize_error_message<V: Serialize>(value: &V, postcard_error: postcard::Error) -> String {
    if postcard_error == postcard::Error::SerdeSerCustom
        && let Ok(Err(e)) = catch_unwind(AssertUnwindSafe(|| serde_json::to_writer(io::sink(), value)))
    {
        return e.to_string();
    }
    postcard_error.to_string()
}

/// Deserialises a task's output in the pool's process.
fn decode<R: DeserializeOwned>(bytes: &[u8], task: &str) -> Result<R, TaskError> {
    postcard::from_bytes(bytes)
        .map_err(|e| TaskError::Serialize(format!("cannot deserialise the output of task {task:?}: {e}")))
}

/// The frames of the protocol (see the module docs).
mod wire {
    use std::io::{self, Read};

    use crate::pool::TaskError;

    /// Bytes after the length of a frame, at most.
    pub(super) const MAX_FRAME: usize = u32::MAX as usize;

    const HELLO: &[u8] = b"Hconcur/1";
    pub(super) const HELLO_FRAME_LEN: usize = 4 + HELLO.len();
    const INIT: u8 = b'I';
    const RUN: u8 = b'R';
    const READY: u8 = b'r';
    const OUTPUT: u8 = b'O';
    const ERROR: u8 = b'E';

    pub(super) const PANICKED: u8 = 0;
    pub(super) const FAILED: u8 = 1;
    pub(super) const SERIALIZE: u8 = 2;

    /// A frame under construction: room for the length, then `tag`.
    fn start(tag: u8, capacity: usize) -> Vec<u8> {
        let mut frame = Vec::with_capacity(5 + capacity);
        frame.extend_from_slice(&[0, 0, 0, 0, tag]);
        frame
    }

    /// Writes the length into a frame made by [`start`].
    fn finish(mut frame: Vec<u8>) -> Vec<u8> {
        // Callers keep bodies under MAX_FRAME; saturate rather than panic.
        let len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
        frame[..4].copy_from_slice(&len.to_le_bytes());
        frame
    }

    fn put_bytes(frame: &mut Vec<u8>, bytes: &[u8]) {
        put_u32(frame, bytes.len());
        frame.extend_from_slice(bytes);
    }

    fn put_u32(frame: &mut Vec<u8>, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        frame.extend_from_slice(&n.to_le_bytes());
    }

    pub(super) fn hello_frame() -> Vec<u8> {
        let mut frame = start(HELLO[0], HELLO.len());
        frame.extend_from_slice(&HELLO[1..]);
        finish(frame)
    }

    pub(super) fn is_hello(frame: &[u8]) -> bool {
        frame.len() == HELLO_FRAME_LEN && frame[4..] == *HELLO && frame[..4] == [9, 0, 0, 0]
    }

    pub(super) fn init_frame(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut frame = start(INIT, 4 + name.len() + payload.len());
        put_bytes(&mut frame, name.as_bytes());
        frame.extend_from_slice(payload);
        finish(frame)
    }

    pub(super) fn run_frame(name: &str, tasks: &[Vec<u8>]) -> Vec<u8> {
        let size = 8 + name.len() + tasks.iter().map(|t| 4 + t.len()).sum::<usize>();
        let mut frame = start(RUN, size);
        put_bytes(&mut frame, name.as_bytes());
        put_u32(&mut frame, tasks.len());
        for task in tasks {
            put_bytes(&mut frame, task);
        }
        finish(frame)
    }

    pub(super) fn ready_frame() -> Vec<u8> {
        finish(start(READY, 0))
    }

    pub(super) fn error_frame(kind: u8, message: &str) -> Vec<u8> {
        let mut frame = start(ERROR, 1 + message.len());
        frame.push(kind);
        frame.extend_from_slice(message.as_bytes());
        finish(frame)
    }

    /// The answer for a task that gave `output`: the output, or the error
    /// that serialising it gave.
    pub(super) fn output_frame<O: serde::Serialize>(output: &O, task: &str) -> Vec<u8> {
        match super::encode(output, || format!("the output of task {task:?}")) {
            Ok(bytes) => {
                let mut frame = start(OUTPUT, bytes.len());
                frame.extend_from_slice(&bytes);
                finish(frame)
            }
            Err(TaskError::Panicked(message)) => error_frame(PANICKED, &message),
            Err(other) => error_frame(SERIALIZE, &other.to_string()),
        }
    }

    pub(super) fn is_error(frame: &[u8]) -> bool {
        frame.get(4) == Some(&ERROR)
    }

    /// Reads one frame's body (without its length); `None` at end of file
    /// between frames.
    pub(super) fn read_frame(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0; 4];
        let mut got = 0;
        while got < 4 {
            match r.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        Ok(Some(body))
    }

    fn malformed(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("malformed frame: {what}"))
    }

    /// What the pool asks of a worker.
    pub(super) enum Request<'a> {
        Init { name: &'a str, payload: &'a [u8] },
        Run { name: &'a str, tasks: Tasks<'a> },
    }

    impl<'a> Request<'a> {
        pub(super) fn parse(body: &'a [u8]) -> io::Result<Self> {
            let (&tag, rest) = body.split_first().ok_or_else(|| malformed("empty"))?;
            let mut cursor = Cursor(rest);
            let name = std::str::from_utf8(cursor.bytes()?).map_err(|_| malformed("name"))?;
            match tag {
                INIT => Ok(Request::Init { name, payload: cursor.0 }),
                RUN => {
                    let left = cursor.u32()?;
                    Ok(Request::Run { name, tasks: Tasks { cursor, left } })
                }
                _ => Err(malformed("unknown request")),
            }
        }
    }

    /// The payloads of a run request, parsed as they are taken.
    pub(super) struct Tasks<'a> {
        cursor: Cursor<'a>,
        left: usize,
    }

    impl<'a> Iterator for Tasks<'a> {
        type Item = io::Result<&'a [u8]>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.left == 0 {
                return None;
            }
            self.left -= 1;
            Some(self.cursor.bytes())
        }
    }

    struct Cursor<'a>(&'a [u8]);

    impl<'a> Cursor<'a> {
        fn u32(&mut self) -> io::Result<usize> {
            let (n, rest) = self.0.split_first_chunk::<4>().ok_or_else(|| malformed("short"))?;
            self.0 = rest;
            Ok(u32::from_le_bytes(*n) as usize)
        }

        fn bytes(&mut self) -> io::Result<&'a [u8]> {
            let len = self.u32()?;
            if len > self.0.len() {
                return Err(malformed("short"));
            }
            let (bytes, rest) = self.0.split_at(len);
            self.0 = rest;
            Ok(bytes)
        }
    }

    /// What a worker answered: a task's serialised output or the pool's
    /// error for it. `Err` for a frame that is no answer.
    pub(super) fn answer(body: &[u8]) -> io::Result<Result<&[u8], TaskError>> {
        match body.split_first() {
            Some((&OUTPUT, output)) => Ok(Ok(output)),
            Some((&ERROR, rest)) => {
                let (&kind, message) = rest.split_first().ok_or_else(|| malformed("error"))?;
                let message = String::from_utf8_lossy(message).into_owned();
                Ok(Err(match kind {
                    PANICKED => TaskError::Panicked(message),
                    SERIALIZE => TaskError::Serialize(message),
                    _ => TaskError::Failed(message),
                }))
            }
            _ => Err(malformed("not an answer")),
        }
    }

    /// Whether the answer to an initializer says it ran.
    pub(super) fn is_ready(body: &[u8]) -> bool {
        body == [READY]
    }
}

// ---------------------------------------------------------------------------
// The pool side
// ---------------------------------------------------------------------------

/// Tasks of one type sent to a worker in one message, and where their
/// results go. Dropping a chunk with tasks unanswered is how their callers
/// learn those were cancelled.
struct Chunk {
    name: &'static str,
    tasks: Vec<Vec<u8>>,
    deliver: Deliver,
}

/// Takes the answer for the task at an index of a chunk: its serialised
/// output, or why there is none. Called once per task.
type Deliver = Box<dyn FnMut(usize, Result<&[u8], TaskError>) + Send>;

impl Chunk {
    /// Answers every task with `error`.
    fn refuse(mut self, error: &TaskError) {
        for k in 0..self.tasks.len() {
            (self.deliver)(k, Err(error.clone()));
        }
    }
}

/// A pool of worker processes running registered [`Task`]s: Python's
/// `multiprocessing.Pool`.
///
/// Workers re-execute the current program, which must call
/// [`worker_main`] first thing in `main`. Use it through the [`Pool`]
/// trait, like a [`ThreadPool`](crate::ThreadPool):
///
/// ```no_run
/// use concur::{Pool, ProcessPool, Registry, Task};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Square(u64);
///
/// impl Task for Square {
///     type Output = u64;
///     const NAME: &'static str = "square";
///     fn run(self) -> u64 {
///         self.0 * self.0
///     }
/// }
///
/// fn main() -> Result<(), concur::PoolError> {
///     concur::worker_main(Registry::new().register::<Square>());
///
///     let pool = ProcessPool::builder().size(4).build()?;
///     let squares = pool.map((0..10).map(Square));
///     assert_eq!(squares[3], Ok(9));
///     Ok(())
/// }
/// ```
///
/// # Failures
///
/// Each task gives its output or a [`TaskError`]; nothing takes the pool
/// down. A panic is [`TaskError::Panicked`] and the worker carries on. A
/// worker that dies (abort, exit, a signal) fails only the task it was
/// running, with [`TaskError::WorkerDied`]; it is replaced and the rest of
/// its chunk runs on the replacement. A task or output that cannot be
/// serialised is [`TaskError::Serialize`]; a task the worker has not
/// registered is [`TaskError::Failed`].
///
/// # Shutdown
///
/// Like [`ThreadPool`](crate::ThreadPool): [`close`](Self::close) refuses
/// new work, [`join`](Self::join) closes and waits for queued work and for
/// every worker to exit, and dropping the pool joins it.
/// [`terminate`](Self::terminate) also cancels queued work and kills the
/// workers, failing the tasks they were running. Every worker process is
/// reaped: none is left behind as a zombie or an orphan.
pub struct ProcessPool {
    /// The sending side of the work queue; `None` once closed.
    queue: Mutex<Option<Sender<Chunk>>>,
    /// Kept so that `terminate` can take queued chunks off the queue.
    backlog: Receiver<Chunk>,
    managers: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
    chunksize: usize,
}

/// What the pool and its manager threads share.
struct Shared {
    config: Config,
    /// The live worker of each manager, if any. The manager reaps it; the
    /// pool may only kill it, which is safe while it is here (not reaped,
    /// so its pid cannot have been reused).
    slots: Vec<Mutex<Option<Child>>>,
    /// Every worker ever started, in order.
    spawned: Mutex<Vec<u32>>,
    terminated: AtomicBool,
}

struct Config {
    program: PathBuf,
    initializer: Option<(&'static str, Vec<u8>)>,
    max_tasks_per_child: Option<usize>,
    start_timeout: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks, so poison carries no
    // broken invariant.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProcessPool {
    /// A pool of `workers` processes running this program, with the
    /// defaults of [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// [`PoolError::NoWorkers`] for 0, [`PoolError::Spawn`] if a worker
    /// process cannot be started.
    pub fn new(workers: usize) -> Result<Self, PoolError> {
        Self::builder().size(workers).build()
    }

    /// A builder for the size, chunk size, worker recycling, initializer
    /// and program.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            size: None,
            chunksize: 1,
            max_tasks_per_child: None,
            program: None,
            initializer: None,
            start_timeout: Duration::from_secs(30),
        }
    }

    /// The number of worker processes.
    pub fn size(&self) -> usize {
        self.shared.slots.len()
    }

    /// Tasks sent to a worker per message.
    pub fn chunksize(&self) -> usize {
        self.chunksize
    }

    /// The pids of the worker processes alive now. A worker that died or
    /// was recycled is replaced when its manager next has work.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.slots.iter().filter_map(|slot| lock(slot).as_ref().map(Child::id)).collect()
    }

    /// The pids of every worker process this pool has started, in order,
    /// including those since reaped.
    pub fn spawned_pids(&self) -> Vec<u32> {
        lock(&self.shared.spawned).clone()
    }

    /// Whether the pool has stopped accepting work.
    pub fn is_closed(&self) -> bool {
        lock(&self.queue).is_none()
    }

    /// Stops accepting work; queued tasks still run. Idempotent.
    pub fn close(&self) {
        lock(&self.queue).take();
    }

    /// Closes the pool, cancels every queued task that no worker has
    /// started ([`TaskError::Cancelled`]) and kills the workers: the tasks
    /// they were running fail with [`TaskError::WorkerDied`]. Returns
    /// without waiting; [`join`](Self::join) waits for the workers to be
    /// reaped.
    pub fn terminate(&self) {
        // Set before the kills: a manager starting a worker checks it under
        // the slot's lock, so no new worker escapes.
        self.shared.terminated.store(true, Ordering::SeqCst);
        self.close();
        for chunk in self.backlog.try_iter() {
            drop(chunk);
        }
        for slot in &self.shared.slots {
            if let Some(child) = lock(slot).as_mut() {
                // Fails only if it has exited already.
                let _ = child.kill();
            }
        }
    }

    /// Closes the pool and waits until every queued task has run and every
    /// worker has exited and been reaped.
    pub fn join(&self) {
        self.close();
        let managers = std::mem::take(&mut *lock(&self.managers));
        for manager in managers {
            // Managers do not panic; there is nothing to report if one did.
            let _ = manager.join();
        }
    }

    /// Queues chunks all together, or hands them back if the pool is closed.
    fn execute(&self, chunks: Vec<Chunk>) -> Result<(), Vec<Chunk>> {
        let queue = lock(&self.queue);
        match queue.as_ref() {
            Some(sender) => {
                for chunk in chunks {
                    // Cannot fail: `self.backlog` keeps the queue connected.
                    let _ = sender.send(chunk);
                }
                Ok(())
            }
            None => Err(chunks),
        }
    }
}

impl Pool for ProcessPool {
    /// Serialises every task now, sends them to the workers `chunksize` at
    /// a time, and yields `(index, result)` as answers arrive.
    fn imap_unordered<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> impl Iterator<Item = (usize, Result<T::Output, TaskError>)> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut n = 0;
        let mut chunks = Vec::new();
        let mut indices = Vec::new();
        let mut tasks = Vec::new();
        for (i, task) in items.into_iter().enumerate() {
            n = i + 1;
            match encode(&task, || format!("task {:?}", T::NAME)) {
                Ok(bytes) => {
                    indices.push(i);
                    tasks.push(bytes);
                    if tasks.len() == self.chunksize {
                        let (indices, tasks) = (std::mem::take(&mut indices), std::mem::take(&mut tasks));
                        chunks.push(chunk_of::<T>(indices, tasks, tx.clone()));
                    }
                }
                // Cannot fail: `rx` is alive in this frame.
                Err(e) => drop(tx.send((i, Err(e)))),
            }
        }
        if !tasks.is_empty() {
            chunks.push(chunk_of::<T>(indices, tasks, tx.clone()));
        }
        if let Err(chunks) = self.execute(chunks) {
            for chunk in chunks {
                chunk.refuse(&TaskError::Closed);
            }
        }
        ImapUnordered::new(rx, n)
    }

    fn apply_async<T: Task>(&self, task: T) -> AsyncResult<T::Output> {
        let bytes = match encode(&task, || format!("task {:?}", T::NAME)) {
            Ok(bytes) => bytes,
            Err(e) => return AsyncResult::ready(Err(e)),
        };
        let (tx, handle) = AsyncResult::channel();
        let chunk = Chunk {
            name: T::NAME,
            tasks: vec![bytes],
            deliver: Box::new(move |_, result| {
                // The caller may have dropped the handle.
                let _ = tx.send(result.and_then(|bytes| decode(bytes, T::NAME)));
            }),
        };
        match self.execute(vec![chunk]) {
            Ok(()) => handle,
            Err(_) => AsyncResult::ready(Err(TaskError::Closed)),
        }
    }
}

/// A chunk whose answers go to `tx` under the tasks' input indices.
fn chunk_of<T: Task>(
    indices: Vec<usize>,
    tasks: Vec<Vec<u8>>,
    tx: Sender<(usize, Result<T::Output, TaskError>)>,
) -> Chunk {
    Chunk {
        name: T::NAME,
        tasks,
        deliver: Box::new(move |k, result| {
            if let Some(&i) = indices.get(k) {
                // The caller may have dropped the iterator.
                let _ = tx.send((i, result.and_then(|bytes| decode(bytes, T::NAME))));
            }
        }),
    }
}

impl Drop for ProcessPool {
    /// Closes the pool, lets queued work finish, and reaps every worker,
    /// like [`join`](ProcessPool::join).
    fn drop(&mut self) {
        self.join();
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("size", &self.size())
            .field("chunksize", &self.chunksize)
            .field("workers", &self.worker_pids())
            .field("queued", &self.backlog.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Builds a [`ProcessPool`]:
/// `ProcessPool::builder().size(4).chunksize(10).build()`.
#[derive(Clone)]
pub struct ProcessPoolBuilder {
    size: Option<usize>,
    chunksize: usize,
    max_tasks_per_child: Option<usize>,
    program: Option<PathBuf>,
    initializer: Option<Result<(&'static str, Vec<u8>), TaskError>>,
    start_timeout: Duration,
}

impl ProcessPoolBuilder {
    /// The number of worker processes; by default the machine's available
    /// parallelism (1 if unknown), like Python's `Pool()`.
    pub fn size(mut self, workers: usize) -> Self {
        self.size = Some(workers);
        self
    }

    /// How many tasks go to a worker in one message (default 1). Larger
    /// chunks pay the cost of a round trip once per chunk instead of once
    /// per task, but a chunk is served by one worker, so load evens out
    /// less well. 0 is taken as 1.
    pub fn chunksize(mut self, tasks: usize) -> Self {
        self.chunksize = tasks.max(1);
        self
    }

    /// Replaces a worker after it has run this many tasks (Python's
    /// `maxtasksperchild`), e.g. to bound the memory a leaky task can
    /// accumulate. Unlike Python, which counts chunks, this counts tasks: a
    /// chunk is split where a worker's allowance ends. 0 is taken as 1.
    pub fn max_tasks_per_child(mut self, tasks: usize) -> Self {
        self.max_tasks_per_child = Some(tasks.max(1));
        self
    }

    /// Runs `task` in every worker when it starts, before any other task
    /// (Python's `initializer` and `initargs`); its output is discarded.
    /// `T` must be registered with the workers. If it fails, the worker is
    /// not used: the tasks given to it fail with [`TaskError::Failed`]
    /// naming the initializer, or [`TaskError::WorkerDied`] if it killed
    /// the worker.
    pub fn initializer<T: Task>(mut self, task: T) -> Self {
        let encoded = encode(&task, || format!("initializer {:?}", T::NAME));
        self.initializer = Some(encoded.map(|bytes| (T::NAME, bytes)));
        self
    }

    /// The program workers run; by default this one
    /// ([`std::env::current_exe`]). It must call [`worker_main`] first
    /// thing in `main`.
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// How long a new worker may take to start and greet the pool (default
    /// 30 s). A program that never calls [`worker_main`] fails the tasks
    /// given to it after this long instead of hanging the pool.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the worker processes. It does not wait for them to be ready:
    /// a worker that cannot start properly fails the tasks given to it.
    ///
    /// # Errors
    ///
    /// [`PoolError::NoWorkers`] for a size of 0; [`PoolError::Spawn`] if
    /// the program cannot be found or started, or the initializer cannot
    /// be serialised.
    pub fn build(self) -> Result<ProcessPool, PoolError> {
        let size = match self.size {
            Some(0) => return Err(PoolError::NoWorkers),
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, usize::from),
        };
        let program = match self.program {
            Some(program) => program,
            None => std::env::current_exe().map_err(PoolError::Spawn)?,
        };
        let initializer = self
            .initializer
            .transpose()
            .map_err(|e| PoolError::Spawn(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let shared = Arc::new(Shared {
            config: Config {
                program,
                initializer,
                max_tasks_per_child: self.max_tasks_per_child,
                start_timeout: self.start_timeout,
            },
            slots: (0..size).map(|_| Mutex::new(None)).collect(),
            spawned: Mutex::new(Vec::with_capacity(size)),
            terminated: AtomicBool::new(false),
        });
        let (tx, rx) = crossbeam_channel::unbounded::<Chunk>();
        let pool = ProcessPool {
            queue: Mutex::new(Some(tx)),
            backlog: rx.clone(),
            managers: Mutex::new(Vec::with_capacity(size)),
            shared: Arc::clone(&shared),
            chunksize: self.chunksize,
        };
        for slot in 0..size {
            // Each manager spawns its own worker: on Linux a worker is
            // killed when the *thread* that spawned it ends, so that must
            // be the thread that lives as long as the worker.
            let (started_tx, started_rx) = crossbeam_channel::bounded(1);
            let manager = Manager { slot, shared: Arc::clone(&shared) };
            let chunks = rx.clone();
            let spawned = thread::Builder::new()
                .name(format!("concur-process-{slot}"))
                .spawn(move || manager.run(&chunks, &started_tx))
                .map_err(PoolError::Spawn)?;
            lock(&pool.managers).push(spawned);
            match started_rx.recv() {
                Ok(Ok(())) => {}
                // Dropping `pool` closes and joins the managers started so far.
                Ok(Err(e)) => return Err(PoolError::Spawn(e)),
                Err(_) => return Err(PoolError::Spawn(io::Error::other("manager thread died"))),
            }
        }
        Ok(pool)
    }
}

impl std::fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("size", &self.size)
            .field("chunksize", &self.chunksize)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("program", &self.program)
            .field("initializer", &self.initializer.as_ref().map(|i| i.as_ref().map(|(name, _)| name)))
            .field("start_timeout", &self.start_timeout)
            .finish()
    }
}

/// The thread that owns one worker process: it feeds the worker chunks
/// from the work queue, replaces it when it dies or has done its share, and
/// reaps it.
struct Manager {
    slot: usize,
    shared: Arc<Shared>,
}

/// The pool's end of a worker process's pipes.
struct Worker {
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Tasks answered so far, for `max_tasks_per_child`.
    done: usize,
}

/// How a chunk sent to a worker went wrong.
enum Lost {
    /// The worker's pipes closed: it died. `taken` says whether it had read
    /// the chunk (so the first unanswered task was running).
    Died { answered: usize, taken: bool },
    /// The worker sent something that is not an answer.
    Garbled { answered: usize, error: io::Error },
}

impl Manager {
    fn run(self, chunks: &Receiver<Chunk>, started: &Sender<io::Result<()>>) {
        block_sigpipe();
        let mut worker = match self.spawn() {
            Ok(worker) => {
                let _ = started.send(Ok(()));
                worker
            }
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        // Greet it now, so the pool is warm when work comes; if it cannot
        // start, the next chunk tries again and reports why.
        let mut worker = match self.ready(&mut worker) {
            Ok(()) => Some(worker),
            Err(_) => {
                self.kill();
                self.reap(worker);
                None
            }
        };
        for chunk in chunks.iter() {
            self.run_chunk(chunk, &mut worker);
        }
        if let Some(worker) = worker {
            self.reap(worker);
        }
    }

    /// Runs every task of `chunk`, on `worker` or on replacements, until
    /// each is answered or the pool is terminated.
    fn run_chunk(&self, mut chunk: Chunk, worker: &mut Option<Worker>) {
        let total = chunk.tasks.len();
        let mut next = 0;
        // Deaths in a row of workers that had not taken the chunk: the
        // first task is blamed after a few, so a chunk that kills every
        // worker before it starts cannot loop forever.
        let mut untaken = 0;
        while next < total {
            if self.shared.terminated.load(Ordering::SeqCst) {
                return; // dropping the chunk cancels what is left
            }
            let current = match worker {
                Some(current) => current,
                None => match self.start() {
                    Ok(started) => worker.insert(started),
                    // Terminated meanwhile: dropping the chunk cancels the rest.
                    Err(_) if self.shared.terminated.load(Ordering::SeqCst) => return,
                    Err(e) => {
                        for k in next..total {
                            (chunk.deliver)(k, Err(e.clone()));
                        }
                        return;
                    }
                },
            };
            let end = match self.shared.config.max_tasks_per_child {
                Some(max) => total.min(next + max.saturating_sub(current.done).max(1)),
                None => total,
            };
            let deliver = &mut chunk.deliver;
            let sent = current.run(chunk.name, &chunk.tasks[next..end], |k, answer| {
                deliver(next + k, answer);
            });
            match sent {
                Ok(()) => {
                    current.done += end - next;
                    next = end;
                    untaken = 0;
                    let max = self.shared.config.max_tasks_per_child;
                    if max.is_some_and(|max| current.done >= max)
                        && let Some(old) = worker.take()
                    {
                        self.reap(old);
                    }
                }
                Err(Lost::Died { answered, taken }) => {
                    next += answered;
                    let status = worker.take().and_then(|dead| self.reap(dead));
                    if taken || answered > 0 || untaken >= 2 {
                        let error = TaskError::WorkerDied(self.describe(status));
                        (chunk.deliver)(next, Err(error));
                        next += 1;
                        untaken = 0;
                    } else {
                        untaken += 1;
                    }
                }
                Err(Lost::Garbled { answered, error }) => {
                    next += answered;
                    if let Some(garbled) = worker.take() {
                        self.kill();
                        self.reap(garbled);
                    }
                    let error = TaskError::Failed(format!("the worker broke the protocol and was killed: {error}"));
                    (chunk.deliver)(next, Err(error));
                    next += 1;
                }
            }
        }
    }

    /// Starts a worker and waits until it is ready for tasks.
    fn start(&self) -> Result<Worker, TaskError> {
        let mut worker = self.spawn().map_err(|e| TaskError::Failed(format!("cannot start a worker: {e}")))?;
        match self.ready(&mut worker) {
            Ok(()) => Ok(worker),
            Err(e) => {
                self.kill();
                let status = self.reap(worker);
                Err(e.unwrap_or_else(|| {
                    TaskError::WorkerDied(format!(
                        "{} while starting: does {} call concur::worker_main first thing in main?",
                        self.describe(status),
                        self.shared.config.program.display()
                    ))
                }))
            }
        }
    }

    /// Starts a worker process (without waiting for it) and puts it in this
    /// manager's slot.
    fn spawn(&self) -> io::Result<Worker> {
        let config = &self.shared.config;
        let mut slot = lock(&self.shared.slots[self.slot]);
        if self.shared.terminated.load(Ordering::SeqCst) {
            return Err(io::Error::other("the pool was terminated"));
        }
        let mut child = Command::new(&config.program)
            .env(WORKER_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            // Cannot happen: both were asked for as pipes.
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("worker started without pipes"));
        };
        lock(&self.shared.spawned).push(pid);
        *slot = Some(child);
        Ok(Worker { pid, stdin, stdout: BufReader::with_capacity(1 << 16, stdout), done: 0 })
    }

    /// Waits for a new worker's greeting, then runs the initializer. `None`
    /// means the worker died; the caller reaps it and says so.
    fn ready(&self, worker: &mut Worker) -> Result<(), Option<TaskError>> {
        let config = &self.shared.config;
        let program = config.program.display();
        let deadline = Instant::now() + config.start_timeout;
        let mut hello = [0; wire::HELLO_FRAME_LEN];
        let mut got = 0;
        while got < hello.len() {
            // A program that is no worker may never write at all: wait
            // only so long. The buffer of `stdout` is still empty here.
            let left = deadline.saturating_duration_since(Instant::now());
            if !readable_within(worker.stdout.get_ref().as_raw_fd(), left).map_err(|_| None)? {
                return Err(Some(TaskError::Failed(format!(
                    "worker {} did not start within {:?}: does {program} call \
                     concur::worker_main first thing in main?",
                    worker.pid, config.start_timeout
                ))));
            }
            match worker.stdout.get_mut().read(&mut hello[got..]) {
                Ok(0) => return Err(None),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(None),
            }
            if hello[..got] != wire::hello_frame()[..got] {
                return Err(Some(TaskError::Failed(format!(
                    "{program} is not a concur worker: it wrote {:?} to stdout \
                     instead of the handshake; does it call concur::worker_main \
                     first thing in main?",
                    String::from_utf8_lossy(&hello[..got])
                ))));
            }
        }
        debug_assert!(wire::is_hello(&hello));
        let Some((name, payload)) = &config.initializer else {
            return Ok(());
        };
        let frame = wire::init_frame(name, payload);
        worker.stdin.write_all(&frame).map_err(|_| None)?;
        let body = wire::read_frame(&mut worker.stdout).map_err(|_| None)?.ok_or(None)?;
        if wire::is_ready(&body) {
            return Ok(());
        }
        Err(Some(match wire::answer(&body) {
            Ok(Err(e)) => TaskError::Failed(format!("initializer {name:?} failed: {e}")),
            _ => TaskError::Failed(format!("initializer {name:?} gave no answer")),
        }))
    }

    /// Kills this manager's worker (it is still in the slot, so its pid is
    /// still its own).
    fn kill(&self) {
        if let Some(child) = lock(&self.shared.slots[self.slot]).as_mut() {
            let _ = child.kill();
        }
    }

    /// Closes the worker's stdin, gives it [`GRACE`] to exit, kills it if
    /// it has not, and waits for it. Gives its exit status.
    fn reap(&self, worker: Worker) -> Option<ExitStatus> {
        drop(worker);
        let mut child = lock(&self.shared.slots[self.slot]).take()?;
        let deadline = Instant::now() + GRACE;
        let mut pause = Duration::from_micros(100);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }

    /// What a worker's exit status says about its death.
    fn describe(&self, status: Option<ExitStatus>) -> String {
        let mut text = status.map_or_else(|| "vanished".to_owned(), describe_exit);
        if self.shared.terminated.load(Ordering::SeqCst) {
            text.push_str(": the pool was terminated");
        }
        text
    }
}

impl Worker {
    /// Sends `tasks` as one chunk and passes each answer to `deliver` with
    /// the task's index in `tasks`, as it arrives.
    fn run(
        &mut self,
        name: &str,
        tasks: &[Vec<u8>],
        mut deliver: impl FnMut(usize, Result<&[u8], TaskError>),
    ) -> Result<(), Lost> {
        let frame = wire::run_frame(name, tasks);
        if self.stdin.write_all(&frame).is_err() {
            // It never read the whole chunk, so it ran none of it.
            return Err(Lost::Died { answered: 0, taken: false });
        }
        drop(frame);
        for k in 0..tasks.len() {
            let body = match wire::read_frame(&mut self.stdout) {
                Ok(Some(body)) => body,
                Ok(None) | Err(_) => {
                    let taken = k > 0 || self.unread_input() == 0;
                    return Err(Lost::Died { answered: k, taken });
                }
            };
            match wire::answer(&body) {
                Ok(answer) => deliver(k, answer),
                Err(error) => return Err(Lost::Garbled { answered: k, error }),
            }
        }
        Ok(())
    }

    /// Bytes written to the worker's stdin that it has not read. Only the
    /// current chunk can be there, and a worker reads a whole chunk before
    /// running any of it: if bytes are left, it ran nothing.
    #[cfg(target_os = "linux")]
    fn unread_input(&self) -> usize {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD stores one c_int through the pointer, which
        // points at a live c_int. On Linux it works on either end of a pipe.
        let rc = unsafe { libc::ioctl(self.stdin.as_raw_fd(), libc::FIONREAD, &mut unread) };
        if rc == 0 { usize::try_from(unread).unwrap_or(0) } else { 0 }
    }

    /// Without a way to tell, assume the worker took the chunk.
    #[cfg(not(target_os = "linux"))]
    fn unread_input(&self) -> usize {
        0
    }
}

/// Makes writing to a dead worker's stdin an `EPIPE` error on this thread,
/// even in a program that does not ignore `SIGPIPE` (Rust programs do by
/// default), instead of a signal that would kill the whole process. Child
/// processes start with an empty signal mask whatever this thread's is.
fn block_sigpipe() {
    // SAFETY: `set` is initialised by sigemptyset before use, and
    // pthread_sigmask only changes this thread's mask.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until `fd` is readable (or at end of file), at most `timeout`.
fn readable_within(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut pollfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, and the count says one.
        let rc = unsafe { libc::poll(&mut pollfd, 1, ms) };
        match rc {
            0 => return Ok(false),
            1.. => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// `exited with status 3`, `killed by signal 9 (SIGKILL)`.
fn describe_exit(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        match signal_name(signal) {
            Some(name) => format!("killed by signal {signal} ({name})"),
            None => format!("killed by signal {signal}"),
        }
    } else if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else {
        status.to_string()
    }
}

fn signal_name(signal: libc::c_int) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    //! The protocol and the bookkeeping, in-process. Pools of real worker
    //! processes are tested in `tests/process_pool.rs`, whose `main` can
    //! enter worker mode (this test binary's cannot).

    use super::*;
    use serde::Deserialize;

    #[test]
    fn frames_round_trip() {
        let tasks = vec![vec![1, 2, 3], vec![], vec![9; 1000]];
        let frame = wire::run_frame("square", &tasks);
        let body = wire::read_frame(&mut &frame[..]).expect("reads").expect("a frame");
        let wire::Request::Run { name, tasks: got } = wire::Request::parse(&body).expect("parses") else {
            panic!("not a run request");
        };
        assert_eq!(name, "square");
        let got: Vec<&[u8]> = got.map(|t| t.expect("whole")).collect();
        assert_eq!(got, [&[1, 2, 3][..], &[], &[9; 1000]]);

        let frame = wire::init_frame("setup", b"xyz");
        let body = wire::read_frame(&mut &frame[..]).expect("reads").expect("a frame");
        let wire::Request::Init { name, payload } = wire::Request::parse(&body).expect("parses") else {
            panic!("not an init request");
        };
        assert_eq!((name, payload), ("setup", &b"xyz"[..]));
        assert!(wire::is_hello(&wire::hello_frame()));
    }

    #[test]
    fn end_of_file_between_frames_is_none_and_inside_one_an_error() {
        assert!(matches!(wire::read_frame(&mut &[][..]), Ok(None)));
        assert!(wire::read_frame(&mut &[5, 0][..]).is_err());
        assert!(wire::read_frame(&mut &[5, 0, 0, 0, 1][..]).is_err());
        let body = [b'R', 200, 0, 0, 0];
        assert!(wire::Request::parse(&body).is_err());
    }

    #[test]
    fn answers_decode_to_outputs_and_errors() {
        let frame = wire::output_frame(&(7_u32, "seven"), "t");
        let body = wire::read_frame(&mut &frame[..]).expect("reads").expect("a frame");
        let bytes = wire::answer(&body).expect("an answer").expect("an output");
        assert_eq!(decode::<(u32, String)>(bytes, "t"), Ok((7, "seven".to_owned())));

        for (kind, want) in [
            (wire::PANICKED, TaskError::Panicked("m".into())),
            (wire::FAILED, TaskError::Failed("m".into())),
            (wire::SERIALIZE, TaskError::Serialize("m".into())),
        ] {
            let frame = wire::error_frame(kind, "m");
            let body = wire::read_frame(&mut &frame[..]).expect("reads").expect("a frame");
            assert_eq!(wire::answer(&body).expect("an answer"), Err(want));
        }
        assert!(wire::answer(b"?").is_err());
    }

    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to be serialised"))
        }
    }

    #[test]
    fn a_serialize_error_keeps_its_message() {
        assert_eq!(
            encode(&Refuses, || "the thing".to_owned()),
            Err(TaskError::Serialize("cannot serialise the thing: refuses to be serialised".into()))
        );
        let frame = wire::output_frame(&Refuses, "t");
        let body = wire::read_frame(&mut &frame[..]).expect("reads").expect("a frame");
        assert!(matches!(
            wire::answer(&body),
            Ok(Err(TaskError::Serialize(m))) if m.contains("refuses to be serialised")
        ));
    }

    #[derive(Serialize, Deserialize)]
    struct Double(i32);

    impl Task for Double {
        type Output = i32;
        const NAME: &'static str = "double";
        fn run(self) -> i32 {
            assert!(self.0 >= 0, "negative");
            self.0 * 2
        }
    }

    #[test]
    fn the_registry_runs_tasks_by_name() {
        let registry = Registry::new().register::<Double>().register::<Double>();
        let answer = |frame: Vec<u8>| -> Result<i32, TaskError> {
            let body = wire::read_frame(&mut &frame[..]).expect("reads").expect("a frame");
            wire::answer(&body).expect("an answer").and_then(|b| decode(b, "double"))
        };
        let payload = postcard::to_allocvec(&Double(21)).expect("encodes");
        assert_eq!(answer(registry.run("double", &payload)), Ok(42));
        let payload = postcard::to_allocvec(&Double(-1)).expect("encodes");
        assert_eq!(answer(registry.run("double", &payload)), Err(TaskError::Panicked("negative".into())));
        assert!(matches!(
            answer(registry.run("triple", &payload)),
            Err(TaskError::Failed(m)) if m.contains("\"triple\"") && m.contains("\"double\"")
        ));
        assert!(matches!(answer(registry.run("double", &[])), Err(TaskError::Serialize(_))));
    }

    #[test]
    #[should_panic(expected = "two task types are registered as \"double\"")]
    fn two_types_under_one_name_are_refused() {
        #[derive(Serialize, Deserialize)]
        struct Other;
        impl Task for Other {
            type Output = ();
            const NAME: &'static str = "double";
            fn run(self) {}
        }
        let _ = Registry::new().register::<Double>().register::<Other>();
    }

    #[test]
    fn exit_statuses_are_described() {
        assert_eq!(describe_exit(ExitStatus::from_raw(libc::SIGKILL)), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe_exit(ExitStatus::from_raw(libc::SIGABRT)), "killed by signal 6 (SIGABRT)");
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exited with status 3");
    }

    #[test]
    fn results_cancel_what_never_comes() {
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send((2, Ok(20))).expect("receiver alive");
        drop(tx);
        let results = ImapUnordered::new(rx, 3);
        let got: Vec<_> = results.collect();
        assert_eq!(got, [(2, Ok(20)), (0, Err(TaskError::Cancelled)), (1, Err(TaskError::Cancelled))]);
    }
}
