//! The pool's side of each worker: a manager thread that starts the
//! worker, feeds it chunks from the work queue, enforces time limits,
//! replaces it when it dies or has done its share, and reaps it. Deaths
//! and respawns are logged at info level (`tracing`, target
//! `concur::process_pool`).

use std::io::{self, PipeReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::reader::{FrameReader, ReadError, RingFrames};
use super::ring::{self, Wake};
use super::slot::Slot;
use super::worker::{Handshake, WORKER_ENV, new_nonce, pipe_message};
use super::{Chunk, Deliver, Shared, lock, sys};
use crate::codec::frames;
use crate::pool::TaskError;

/// How long a worker whose stdin was closed may take to exit before it is
/// killed.
const GRACE: Duration = Duration::from_secs(2);

/// How many deaths in a row of workers that had not taken a chunk (while
/// starting, or before acknowledging it) a chunk survives before it fails.
const UNTAKEN_DEATHS: usize = 3;

/// How much a program may print on stdout before its greeting (a test
/// harness's header, say) before it is taken for no worker.
const MAX_PREAMBLE: usize = 64 * 1024;

/// The target of the pool's log lines.
const LOG: &str = "concur::process_pool";

/// The thread that owns one worker process.
pub(super) struct Manager {
    slot: usize,
    shared: Arc<Shared>,
    wake: PipeReader,
}

/// The pool's end of a worker process's pipes and answer ring.
struct Worker {
    pid: u32,
    stdin: ChildStdin,
    stdout: FrameReader,
    answers: RingFrames,
    /// Tasks answered so far, for `max_tasks_per_child`.
    done: usize,
}

/// How a chunk sent to a worker went wrong, after `answered` of its tasks
/// were answered; `taken` says whether the worker had acknowledged it
/// (so the first unanswered task was running).
struct Lost {
    answered: usize,
    taken: bool,
    how: How,
}

enum How {
    /// The worker's stdout closed: it died.
    Died,
    /// A task overstayed this limit (or, not `taken`, the worker did not
    /// even take the chunk in that time).
    TimedOut(Duration),
    /// The worker sent something that is not an answer.
    Garbled(io::Error),
}

/// Why a new worker is not ready.
enum NotReady {
    /// Its stdout closed before it greeted, after it wrote `wrote`.
    Died { wrote: Vec<u8> },
    /// It cannot work: not a worker, or its initializer failed.
    Failed(TaskError),
}

/// Why a worker could not be started.
enum Start {
    /// It died while starting: worth another try.
    Died(TaskError),
    /// It cannot work (not a worker, an initializer failed, ...).
    Failed(TaskError),
}

impl Manager {
    pub(super) fn new(slot: usize, shared: Arc<Shared>, wake: PipeReader) -> Self {
        Manager { slot, shared, wake }
    }

    fn slot(&self) -> &Slot {
        &self.shared.slots[self.slot]
    }

    fn terminated(&self) -> bool {
        self.shared.terminated.load(Ordering::SeqCst)
    }

    pub(super) fn run(self, chunks: &Receiver<Chunk>, started: &Sender<io::Result<()>>) {
        if let Err(e) = sys::block_sigpipe() {
            let _ = started.send(Err(e));
            return;
        }
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
                self.slot().kill();
                self.reap(worker);
                None
            }
        };
        loop {
            let chunk = match chunks.try_recv() {
                Ok(chunk) => chunk,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match self.idle(chunks, &mut worker) {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            self.run_chunk(chunk, &mut worker);
        }
        if let Some(worker) = worker {
            self.reap(worker);
        }
    }

    /// Waits for work, watching the idle worker meanwhile: one that dies
    /// is reaped at once, not when work next comes. `None` once the queue
    /// is closed and empty.
    fn idle(&self, chunks: &Receiver<Chunk>, worker: &mut Option<Worker>) -> Option<Chunk> {
        let slot = self.slot();
        loop {
            // Announce first, then look: a chunk queued after the look
            // finds the flag set and wakes us.
            slot.idle.store(true, Ordering::SeqCst);
            match chunks.try_recv() {
                Ok(chunk) => {
                    slot.idle.store(false, Ordering::SeqCst);
                    return Some(chunk);
                }
                Err(TryRecvError::Disconnected) => {
                    slot.idle.store(false, Ordering::SeqCst);
                    return None;
                }
                Err(TryRecvError::Empty) => {}
            }
            let watched = worker.as_ref().map(|w| w.stdout.as_fd());
            let woken = match sys::wait_idle(self.wake.as_fd(), watched) {
                Ok(woken) => woken,
                Err(_) => {
                    // Cannot watch: wait for work alone.
                    slot.idle.store(false, Ordering::SeqCst);
                    return chunks.recv().ok();
                }
            };
            slot.idle.store(false, Ordering::SeqCst);
            if woken.wake {
                // Readable, so this does not block; stale bytes are harmless.
                let _ = (&self.wake).read(&mut [0; 64]);
            }
            if woken.worker && worker.as_mut().is_some_and(|w| !w.stdout.only_wakes()) {
                // An idle worker says nothing (but perhaps a late wake-up
                // byte): it died, or broke the protocol and is let go.
                if let Some(gone) = worker.take() {
                    let status = self.reap(gone);
                    tracing::info!(target: LOG, slot = self.slot, "idle worker {}", self.describe(status));
                }
            }
        }
    }

    /// Runs every task of `chunk`, on `worker` or on replacements, until
    /// each is answered or the pool is terminated.
    fn run_chunk(&self, mut chunk: Chunk, worker: &mut Option<Worker>) {
        let total = chunk.tasks.len();
        let mut next = 0;
        // Deaths in a row of workers that had not taken the chunk: counted
        // so that a chunk no worker survives cannot loop forever.
        let mut untaken = 0;
        while next < total {
            // Whatever comes next may wait (a worker to start, a chunk to
            // run): answers taken so far go to the caller first.
            chunk.deliver.flush();
            if self.terminated() {
                return; // dropping the chunk cancels what is left
            }
            let current = match worker {
                Some(current) => current,
                None => match self.start() {
                    Ok(started) => worker.insert(started),
                    // Terminated meanwhile: dropping the chunk cancels the rest.
                    Err(_) if self.terminated() => return,
                    Err(Start::Died(_)) if untaken + 1 < UNTAKEN_DEATHS => {
                        untaken += 1;
                        continue;
                    }
                    Err(Start::Died(e) | Start::Failed(e)) => {
                        chunk.fail_from(next, &e);
                        return;
                    }
                },
            };
            let mut end = total;
            if let Some(max) = self.shared.config.max_tasks_per_child {
                end = end.min(next + max.saturating_sub(current.done).max(1));
            }
            end = next + frames::tasks_that_fit(chunk.name, &chunk.tasks, next, end);
            let sent = current.run(chunk.name, &chunk.tasks, next..end, chunk.timeout, &mut *chunk.deliver);
            let lost = match sent {
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
                    continue;
                }
                Err(lost) => lost,
            };
            next += lost.answered;
            if !matches!(lost.how, How::Died) {
                self.slot().kill();
            }
            let status = worker.take().and_then(|gone| self.reap(gone));
            let error = match lost.how {
                _ if !lost.taken && untaken + 1 < UNTAKEN_DEATHS => {
                    // It never took the chunk, so it ran none of it.
                    untaken += 1;
                    continue;
                }
                How::Died => Self::died(status, self.describe(status)),
                How::TimedOut(limit) if lost.taken => TaskError::TimedOut(limit),
                How::TimedOut(limit) => {
                    Self::died(status, format!("did not take its task within {limit:?}, and was killed"))
                }
                How::Garbled(error) => {
                    TaskError::Failed(format!("the worker broke the protocol and was killed: {error}"))
                }
            };
            tracing::info!(target: LOG, slot = self.slot, "worker lost: {error}");
            chunk.deliver.answer(next, Err(error));
            next += 1;
            untaken = 0;
        }
    }

    /// Starts a worker and waits until it is ready for tasks.
    fn start(&self) -> Result<Worker, Start> {
        let mut worker =
            self.spawn().map_err(|e| Start::Failed(TaskError::Failed(format!("cannot start a worker: {e}"))))?;
        let error = match self.ready(&mut worker) {
            Ok(()) => {
                tracing::info!(target: LOG, slot = self.slot, pid = worker.pid, "worker respawned");
                return Ok(worker);
            }
            Err(error) => error,
        };
        if matches!(error, NotReady::Failed(_)) {
            // Alive and of no use: no need to give it time to exit.
            self.slot().kill();
        }
        let status = self.reap(worker);
        Err(match error {
            NotReady::Failed(e) => Start::Failed(e),
            // It printed and exited by itself: a program, but no worker.
            NotReady::Died { wrote } if !wrote.is_empty() && status.is_some_and(sys::exited) => {
                Start::Failed(self.not_a_worker(&wrote))
            }
            NotReady::Died { .. } => Start::Died(Self::died(
                status,
                format!(
                    "{} while starting: does {} call concur::worker_main first thing in main?",
                    self.describe(status),
                    self.shared.config.program.display()
                ),
            )),
        })
    }

    fn not_a_worker(&self, wrote: &[u8]) -> TaskError {
        let wrote = &wrote[..wrote.len().min(200)];
        TaskError::Failed(format!(
            "{} is not a concur worker: it wrote {:?} to stdout instead of the \
             handshake; does it call concur::worker_main first thing in main?",
            self.shared.config.program.display(),
            String::from_utf8_lossy(wrote)
        ))
    }

    /// Starts a worker process (without waiting for it) in its own process
    /// group, and puts it in this manager's slot.
    fn spawn(&self) -> io::Result<Worker> {
        let config = &self.shared.config;
        let mut slot = lock(&self.slot().child);
        if self.terminated() {
            return Err(io::Error::other("the pool was terminated"));
        }
        // The ring its answers come through, inherited like the pipe below.
        let (ring, ring_file) = ring::Reader::create()?;
        // The handshake: a pipe only this child gets, holding a nonce that
        // its environment names, and the ring's descriptor (see
        // `worker.rs`).
        let (handshake_pipe, mut writer) = io::pipe()?;
        let nonce = new_nonce()?;
        writer.write_all(pipe_message(&nonce, ring_file.as_raw_fd()).as_bytes())?;
        drop(writer);
        let handshake = Handshake {
            pool: std::process::id(),
            fd: handshake_pipe.as_raw_fd(),
            inode: sys::inode(handshake_pipe.as_fd())?,
            nonce,
        };
        let mut command = Command::new(&config.program);
        command
            .args(&config.args)
            .env(WORKER_ENV, handshake.to_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own group: a terminal's Ctrl-C does not reach it, and
            // killing the group ends what its tasks started.
            .process_group(0);
        sys::inherit_fd(&mut command, handshake.fd);
        sys::inherit_fd(&mut command, ring_file.as_raw_fd());
        let mut child = command.spawn()?;
        drop(handshake_pipe);
        drop(ring_file);
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            // Cannot happen: both were asked for as pipes.
            sys::kill_group(pid);
            let _ = child.wait();
            return Err(io::Error::other("worker started without pipes"));
        };
        lock(&self.shared.spawned).push(pid);
        *slot = Some(child);
        Ok(Worker { pid, stdin, stdout: FrameReader::new(stdout), answers: RingFrames::new(ring), done: 0 })
    }

    /// Waits for a new worker's greeting, then runs the initializer.
    fn ready(&self, worker: &mut Worker) -> Result<(), NotReady> {
        let config = &self.shared.config;
        let program = config.program.display();
        let deadline = Instant::now() + config.start_timeout;
        let hello = frames::hello_frame();
        loop {
            let got = worker.stdout.buffered();
            if let Some(at) = got.windows(hello.len()).position(|w| w == hello) {
                // Whatever came first the program printed before it called
                // worker_main (a test harness's header, say): not ours.
                worker.stdout.consume(at + hello.len());
                break;
            }
            if got.len() > MAX_PREAMBLE {
                return Err(NotReady::Failed(self.not_a_worker(got)));
            }
            // A program that is no worker may never write at all: wait
            // only so long.
            match worker.stdout.fill(Some(deadline)) {
                Ok(()) => {}
                Err(ReadError::TimedOut) if !worker.stdout.buffered().is_empty() => {
                    return Err(NotReady::Failed(self.not_a_worker(worker.stdout.buffered())));
                }
                Err(ReadError::TimedOut) => {
                    return Err(NotReady::Failed(TaskError::Failed(format!(
                        "worker {} did not start within {:?}: does {program} call \
                         concur::worker_main first thing in main?",
                        worker.pid, config.start_timeout
                    ))));
                }
                Err(_) => return Err(NotReady::Died { wrote: worker.stdout.buffered().to_vec() }),
            }
        }
        let Some((name, payload)) = &config.initializer else {
            return Ok(());
        };
        let died = || NotReady::Died { wrote: Vec::new() };
        worker.stdin.write_all(&frames::init_frame(name, payload)).map_err(|_| died())?;
        let body = worker.stdout.frame(None).map_err(|_| died())?;
        if frames::is_ready(body) {
            return Ok(());
        }
        Err(NotReady::Failed(match frames::answer(body) {
            Ok(frames::Answer::Task(Err(e))) => TaskError::Failed(format!("initializer {name:?} failed: {e}")),
            _ => TaskError::Failed(format!("initializer {name:?} gave no answer")),
        }))
    }

    /// Closes the worker's stdin, gives it [`GRACE`] to exit, kills its
    /// process group (itself if it has not exited, and whatever its tasks
    /// left there), and waits for it. Gives its exit status.
    fn reap(&self, worker: Worker) -> Option<ExitStatus> {
        let Worker { stdin, mut stdout, .. } = worker;
        drop(stdin);
        // Its stdout closes when it exits: no polling of its status.
        let deadline = Instant::now() + GRACE;
        let closed = stdout.wait_closed(deadline);
        drop(stdout);
        let mut child = lock(&self.slot().child).take()?;
        if closed {
            // A program may close stdout a moment before it exits: let it
            // finish, so its status is its own and not our SIGKILL.
            sys::await_exit(child.id(), deadline);
        }
        // Not reaped yet, so the group's id is still this group's.
        sys::kill_group(child.id());
        child.wait().ok()
    }

    /// What a worker's exit status says about its death.
    fn describe(&self, status: Option<ExitStatus>) -> String {
        let mut text = status.map_or_else(|| "vanished".to_owned(), sys::describe_exit);
        if self.terminated() {
            text.push_str(": the pool was terminated");
        }
        text
    }

    /// A worker's death, its status kept as numbers beside `detail`.
    fn died(status: Option<ExitStatus>, detail: String) -> TaskError {
        use std::os::unix::process::ExitStatusExt;
        TaskError::WorkerDied(crate::pool::WorkerExit {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            detail,
        })
    }
}

impl Worker {
    /// Sends tasks `range` as one chunk and passes each answer to
    /// `deliver` with the task's index, as it arrives in the ring, flushing
    /// it before every wait. Each task may take `limit`, counted from the
    /// worker's acknowledgement or the answer before.
    fn run(
        &mut self,
        name: &str,
        tasks: &frames::Payloads,
        range: std::ops::Range<usize>,
        limit: Option<Duration>,
        deliver: &mut dyn Deliver,
    ) -> Result<(), Lost> {
        let frame = frames::run_frame(name, tasks, range.start, range.end);
        if self.stdin.write_all(&frame).is_err() {
            // It never read the whole chunk, so it ran none of it.
            return Err(Lost { answered: 0, taken: false, how: How::Died });
        }
        drop(frame);
        let (mut answered, mut taken) = (0, false);
        // Without a limit, the acknowledgement need not wake this thread.
        let wake = if limit.is_some() { Wake::Any } else { Wake::Answer };
        while answered < range.len() {
            let lost = |how| Lost { answered, taken, how };
            if !self.answers.has_frame() {
                if let Err(ReadError::Malformed(e)) = self.answers.take(&mut self.stdin) {
                    return Err(lost(How::Garbled(e)));
                }
                if !self.answers.has_frame() {
                    deliver.flush();
                }
            }
            let deadline = limit.map(|limit| Instant::now() + limit);
            let body = match self.answers.frame(&mut self.stdout, &mut self.stdin, deadline, wake) {
                Ok(body) => body,
                Err(ReadError::Closed) => return Err(lost(How::Died)),
                Err(ReadError::TimedOut) => return Err(lost(How::TimedOut(limit.unwrap_or_default()))),
                Err(ReadError::Malformed(e)) => return Err(lost(How::Garbled(e))),
            };
            match frames::answer(body) {
                Ok(frames::Answer::Ack) if !taken => taken = true,
                Ok(frames::Answer::Task(answer)) if taken => {
                    deliver.answer(range.start + answered, answer);
                    answered += 1;
                }
                Ok(_) => return Err(lost(How::Garbled(io::Error::other("an answer out of turn")))),
                Err(e) => return Err(lost(How::Garbled(e))),
            }
        }
        Ok(())
    }
}
