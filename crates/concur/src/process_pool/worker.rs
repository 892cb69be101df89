//! The worker's side: [`worker_main`], which recognises a process the
//! pool started and serves its tasks.
//!
//! A worker is recognised by a handshake that an unrelated environment
//! cannot carry: the pool opens a pipe, writes a random nonce into it, and
//! starts the worker with that pipe's read end open under a known number.
//! The [`WORKER_ENV`] variable names the pool's pid, that descriptor, the
//! pipe's inode and the nonce. The worker takes the role only if the
//! descriptor is that very pipe and holds that nonce. A variable inherited
//! without the pipe (a program a task starts, a shell that exported it) is
//! ignored with a one-line warning, and the program runs as usual. After
//! the nonce, the pipe names the descriptor of the worker's answer ring
//! (see `ring.rs`), inherited the same way.

use std::ffi::OsStr;
use std::io::{self, BufReader, Write};
use std::os::fd::RawFd;

use super::ring::{self, Room, Wake};
use super::sys;
use crate::codec::Registry;
use crate::codec::frames;

/// Set in a worker's environment: `pid:fd:inode:nonce` (see the module
/// docs).
pub(super) const WORKER_ENV: &str = "CONCUR_WORKER";

/// Bytes of randomness in a nonce (sent as twice as many hex digits).
pub(super) const NONCE_BYTES: usize = 16;

/// What the pool tells a worker, through its environment.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Handshake {
    pub(super) pool: u32,
    pub(super) fd: RawFd,
    pub(super) inode: u64,
    pub(super) nonce: String,
}

impl Handshake {
    /// The variable's value.
    pub(super) fn to_env(&self) -> String {
        format!("{}:{}:{}:{}", self.pool, self.fd, self.inode, self.nonce)
    }

    fn parse(value: &OsStr) -> Option<Self> {
        let mut parts = value.to_str()?.split(':');
        let handshake = Handshake {
            pool: parts.next()?.parse().ok()?,
            fd: parts.next()?.parse().ok()?,
            inode: parts.next()?.parse().ok()?,
            nonce: parts.next()?.to_owned(),
        };
        let well_formed = parts.next().is_none()
            && handshake.nonce.len() == 2 * NONCE_BYTES
            && handshake.nonce.bytes().all(|b| b.is_ascii_hexdigit());
        well_formed.then_some(handshake)
    }
}

/// A fresh random nonce, in hex.
pub(super) fn new_nonce() -> io::Result<String> {
    let mut bytes = [0; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness for a nonce: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Enters worker mode if this process was started as a
/// [`ProcessPool`](super::ProcessPool) worker, and otherwise returns at
/// once. Call it first thing in `main`, before anything is printed or any
/// thread is started, with every task type the program sends to a process
/// pool:
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
/// A worker is recognised by a handshake on a pipe that only the pool
/// opens for it, not by its environment alone: a program that inherits
/// the pool's variable without that pipe (one started by a task, say)
/// prints a one-line warning on stderr and runs as a normal program.
pub fn worker_main(registry: Registry) {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    let Some(handshake) = Handshake::parse(&value) else {
        warn_ignored("it is not a worker handshake");
        return;
    };
    let mut pipe = [0; 2 * NONCE_BYTES + 24];
    let ring = match sys::take_handshake(handshake.fd, handshake.inode, &mut pipe) {
        Some(n) => match ring_of(&pipe[..n], &handshake.nonce) {
            Some(ring) => ring,
            None => {
                warn_ignored("the handshake pipe holds another nonce");
                return;
            }
        },
        None => {
            warn_ignored("no handshake pipe was passed to this process");
            return;
        }
    };
    let code = match serve(&registry, handshake.pool, ring) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("concur worker {}: {e}", std::process::id());
            3
        }
    };
    std::process::exit(code);
}

/// What the handshake pipe holds: `nonce:ring`, with the descriptor of the
/// answer ring.
pub(super) fn pipe_message(nonce: &str, ring: RawFd) -> String {
    format!("{nonce}:{ring}")
}

/// The ring's descriptor in a [`pipe_message`]; `None` unless it holds
/// `nonce`.
fn ring_of(message: &[u8], nonce: &str) -> Option<RawFd> {
    let message = std::str::from_utf8(message).ok()?;
    let (got, ring) = message.split_once(':')?;
    if got != nonce {
        return None;
    }
    ring.parse().ok()
}

fn warn_ignored(why: &str) {
    eprintln!("warning: ignoring {WORKER_ENV} in the environment ({why}); running as a normal program");
}

/// A worker's life: map the answer ring, take the protocol pipes, greet,
/// then answer frames until the pool closes stdin.
fn serve(registry: &Registry, pool: u32, ring: RawFd) -> io::Result<()> {
    sys::die_with_parent(pool)?;
    let mut ring = ring::Writer::attach(ring)?;
    let (input, mut output) = sys::take_protocol_pipes()?;
    let mut input = BufReader::with_capacity(1 << 16, input);
    output.write_all(&frames::hello_frame())?;
    // Every answer is built in this one buffer.
    let mut answer = Vec::new();
    while let Some(frame) = frames::read_frame(&mut input)? {
        match frames::Request::parse(&frame)? {
            frames::Request::Init { name, payload } => {
                let reply = registry.run(name, payload);
                if frames::is_error(&reply) {
                    output.write_all(&reply)?;
                    return Err(io::Error::other(format!("initializer {name:?} failed")));
                }
                output.write_all(&frames::ready_frame())?;
            }
            frames::Request::Run { name, tasks } => {
                // Before running anything: a worker that dies before this
                // is committed ran none of the chunk, so the chunk is given
                // to another worker instead of failed. It wakes the pool
                // only when the pool asked for it (a time limit runs).
                let mut answers = Answers { ring: &mut ring, input: &mut input, wake: &mut output };
                answers.send(&frames::ACK_FRAME, Wake::Any)?;
                let run = registry.runner(name);
                for payload in tasks {
                    let payload = payload?;
                    answer.clear();
                    match run {
                        Some(run) => run(payload, &mut answer),
                        None => answer = registry.unknown(name),
                    }
                    // Committed as soon as it is ready: the pool learns
                    // exactly which tasks are done, and an answer committed
                    // survives the worker's death.
                    answers.send(&answer, Wake::Answer)?;
                }
            }
            // Every space frame owed is read when owed; one more is
            // harmless.
            frames::Request::Space => {}
        }
    }
    Ok(())
}

/// Where a worker's answers go: the ring, with its pipe to wake the pool
/// and its stdin to wait for room on.
struct Answers<'a, R, W> {
    ring: &'a mut ring::Writer,
    input: &'a mut R,
    wake: &'a mut W,
}

impl<R: io::Read, W: Write> Answers<'_, R, W> {
    /// Commits the frame `bytes` to the ring, waiting for room as often as
    /// it takes (a frame larger than the ring goes in pieces), and wakes
    /// the pool if it waits for `what`.
    fn send(&mut self, bytes: &[u8], what: Wake) -> io::Result<()> {
        let mut rest = bytes;
        loop {
            let n = self.ring.write(rest)?;
            rest = &rest[n..];
            // A piece of a frame is urgent: the pool must take it to make
            // room for the rest.
            let what = if rest.is_empty() { what } else { Wake::Answer };
            if n > 0 && self.ring.commit(what) {
                self.wake.write_all(&[frames::WAKE])?;
            }
            if rest.is_empty() {
                return Ok(());
            }
            if self.ring.await_room()? == Room::AwaitSpace {
                self.await_space()?;
            }
        }
    }

    /// Blocks until the pool says there is room in the ring.
    fn await_space(&mut self) -> io::Result<()> {
        match frames::read_frame(self.input)? {
            Some(frame) => match frames::Request::parse(&frame)? {
                frames::Request::Space => Ok(()),
                _ => Err(io::Error::other("a request came while an answer waited for room")),
            },
            None => Err(io::Error::other("the pool closed the pipe while an answer waited for room")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    use super::super::reader::{FrameReader, ReadError, RingFrames};
    use super::*;

    /// Frames of these body sizes, each filled with a pattern of its own.
    fn frames(sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for (k, &size) in sizes.iter().enumerate() {
            let mut frame = u32::try_from(size).expect("small").to_le_bytes().to_vec();
            frame.extend((0..size).map(|i| (i * 31 + k) as u8));
            frames.push(frame);
        }
        frames
    }

    /// Sends `frames` the way a worker does (on a thread of its own) and
    /// reads them the way the pool does, each waited for by `deadline` if
    /// `limit` is given: what the pool got.
    fn through_the_ring(frames: &[Vec<u8>], limit: Option<Duration>) -> Vec<Vec<u8>> {
        let (reader, fd) = ring::Reader::create().expect("a ring");
        let mut writer = ring::Writer::on(fd.as_fd()).expect("mapped again");
        let (pipe, mut wake) = io::pipe().expect("the worker's pipe");
        let (mut input, mut stdin) = io::pipe().expect("the worker's stdin");
        let mut pipe = FrameReader::new(pipe);
        let mut answers = RingFrames::new(reader);
        let wake_for = if limit.is_some() { Wake::Any } else { Wake::Answer };
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut worker = Answers { ring: &mut writer, input: &mut input, wake: &mut wake };
                for frame in frames {
                    worker.send(frame, Wake::Answer).expect("sent");
                }
                // The worker's end of the pipe closes: as if it exited.
            });
            let mut got = Vec::new();
            loop {
                let deadline = limit.map(|limit| Instant::now() + limit);
                match answers.frame(&mut pipe, &mut stdin, deadline, wake_for) {
                    Ok(body) => got.push(body.to_vec()),
                    Err(ReadError::Closed) => break,
                    Err(ReadError::TimedOut) => panic!("no frame within {limit:?}"),
                    Err(ReadError::Malformed(e)) => panic!("malformed: {e}"),
                }
            }
            got
        })
    }

    #[test]
    fn answers_larger_than_the_ring_and_many_small_ones_cross_in_order() {
        let mut sizes = vec![1, 3 * ring::CAPACITY + 5, 0, ring::CAPACITY - 4, ring::CAPACITY, 100];
        sizes.extend((0..10_000).map(|k| k % 7));
        sizes.push(2 * ring::CAPACITY);
        let frames = frames(&sizes);
        for limit in [None, Some(Duration::from_secs(60))] {
            let got = through_the_ring(&frames, limit);
            assert_eq!(got.len(), frames.len(), "{limit:?}");
            for (k, (got, sent)) in got.iter().zip(&frames).enumerate() {
                assert!(got[..] == sent[4..], "frame {k} of {} bytes changed in transit ({limit:?})", sizes[k]);
            }
        }
    }

    #[test]
    fn handshakes_round_trip_and_junk_is_refused() {
        let handshake = Handshake { pool: 42, fd: 7, inode: 99, nonce: "0f".repeat(NONCE_BYTES) };
        assert_eq!(Handshake::parse(OsStr::new(&handshake.to_env())), Some(handshake));
        for junk in ["", "1234", "1:2:3", "1:2:3:xyz", "1:2:3:00", &format!("1:2:3:{}:4", "0".repeat(32))] {
            assert_eq!(Handshake::parse(OsStr::new(junk)), None, "{junk:?}");
        }
    }

    #[test]
    fn the_handshake_pipe_names_the_ring_after_the_nonce() {
        let nonce = "0f".repeat(NONCE_BYTES);
        assert_eq!(ring_of(pipe_message(&nonce, 12).as_bytes(), &nonce), Some(12));
        assert_eq!(ring_of(pipe_message(&nonce, 12).as_bytes(), &"1f".repeat(NONCE_BYTES)), None);
        for junk in [nonce.clone(), format!("{nonce}:"), format!("{nonce}:x"), format!(":{nonce}:3")] {
            assert_eq!(ring_of(junk.as_bytes(), &nonce), None, "{junk:?}");
        }
    }
}
