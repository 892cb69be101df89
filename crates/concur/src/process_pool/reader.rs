//! The pool's readers of what a worker sends: [`FrameReader`], buffered
//! frames from its pipe (its greeting, an initializer's answer, and the
//! wake-up bytes of the ring), each read by a deadline when one is given;
//! and [`RingFrames`], the answers of a chunk from the shared ring. Without
//! a deadline both block plainly, so tasks without a limit pay nothing
//! for it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use super::ring::{self, Wake};
use super::sys;
use crate::codec::frames;

/// Why no frame could be read.
pub(super) enum ReadError {
    /// The deadline passed first.
    TimedOut,
    /// End of file or a read error: the worker is gone.
    Closed,
    /// A length prefix over the limit.
    Malformed(io::Error),
}

/// Reads frames from a worker's stdout, each by a deadline if one is
/// given. Without a deadline it is a plain buffered blocking reader.
pub(super) struct FrameReader {
    inner: File,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    /// Reads from `inner`: a worker's stdout, or any pipe.
    pub(super) fn new(inner: impl Into<OwnedFd>) -> Self {
        FrameReader { inner: File::from(inner.into()), buf: vec![0; 1 << 16], start: 0, end: 0 }
    }

    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Reads whatever has arrived (at least one byte), waiting at most
    /// until `deadline`. The buffer grows only as bytes arrive.
    pub(super) fn fill(&mut self, deadline: Option<Instant>) -> Result<(), ReadError> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                self.buf.resize(2 * self.buf.len(), 0);
            }
        }
        if deadline.is_some() {
            match sys::readable_by(self.inner.as_fd(), deadline) {
                Ok(true) => {}
                Ok(false) => return Err(ReadError::TimedOut),
                Err(_) => return Err(ReadError::Closed),
            }
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(ReadError::Closed),
            }
        }
    }

    /// The body of the next frame.
    pub(super) fn frame(&mut self, deadline: Option<Instant>) -> Result<&[u8], ReadError> {
        loop {
            if let Some(len) = frames::body_len(self.buffered()).map_err(ReadError::Malformed)? {
                if self.end - self.start >= 4 + len {
                    let body = self.start + 4;
                    self.consume(4 + len);
                    return Ok(&self.buf[body..body + len]);
                }
                if self.buf.len() - self.start < 4 + len && self.start > 0 {
                    // Make room at the end for the rest of this frame.
                    self.buf.copy_within(self.start..self.end, 0);
                    (self.start, self.end) = (0, self.end - self.start);
                }
            }
            self.fill(deadline)?;
        }
    }

    /// Discards what arrives until end of file or `deadline`; says
    /// whether the end came.
    pub(super) fn wait_closed(&mut self, deadline: Instant) -> bool {
        loop {
            (self.start, self.end) = (0, 0);
            match self.fill(Some(deadline)) {
                Ok(()) => {}
                Err(ReadError::Closed) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reads what an idle worker sent: `true` if it was only wake-up bytes
    /// (late ones, for answers already taken), which are dropped; `false`
    /// at end of file or for anything else.
    pub(super) fn only_wakes(&mut self) -> bool {
        match self.fill(Some(Instant::now())) {
            Ok(()) if self.buffered().iter().all(|&b| b == frames::WAKE) => {
                self.consume(self.buffered().len());
                true
            }
            // Nothing to read after all.
            Err(ReadError::TimedOut) => true,
            _ => false,
        }
    }
}

impl AsFd for FrameReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

/// Reads a worker's answers from its ring (see `ring.rs`): frames parsed
/// from a private copy of what the worker committed. The worker's pipe
/// serves only to block on, until the worker writes a wake-up byte or
/// dies, and its stdin only to tell it there is room.
pub(super) struct RingFrames {
    ring: ring::Reader,
    /// Bytes taken from the ring, from `start` on not yet parsed.
    buf: Vec<u8>,
    start: usize,
    /// The worker's pipe is at end of file: what it committed is all there
    /// will be.
    closed: bool,
}

impl RingFrames {
    pub(super) fn new(ring: ring::Reader) -> Self {
        RingFrames { ring, buf: Vec::new(), start: 0, closed: false }
    }

    /// The body of a whole frame at the start of what is held, and the
    /// frame's length.
    fn whole(&self) -> io::Result<Option<(std::ops::Range<usize>, usize)>> {
        let held = &self.buf[self.start..];
        Ok(match frames::body_len(held)? {
            Some(len) if held.len() - 4 >= len => Some((self.start + 4..self.start + 4 + len, 4 + len)),
            _ => None,
        })
    }

    /// Whether a whole frame is held, so [`frame`](Self::frame) will not
    /// wait.
    pub(super) fn has_frame(&self) -> bool {
        matches!(self.whole(), Ok(Some(_)))
    }

    /// Takes what the worker committed, without waiting; tells the worker
    /// there is room if it waits for some. Gives how many bytes came.
    pub(super) fn take(&mut self, stdin: &mut impl Write) -> Result<usize, ReadError> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > 1 << 20 {
                // A large answer passed: let its memory go.
                self.buf.shrink_to(1 << 16);
            }
        } else if self.start > 1 << 16 && self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let took = self.ring.take(&mut self.buf).map_err(ReadError::Malformed)?;
        if took.wake_writer {
            // If it fails, the worker is gone, and its pipe says so.
            let _ = stdin.write_all(&frames::SPACE_FRAME);
        }
        Ok(took.bytes)
    }

    /// The body of the next frame, waiting for it until `deadline` if need
    /// be (woken for `wake`). `Closed` once the worker's pipe is at end of
    /// file and every whole frame it committed was given.
    pub(super) fn frame(
        &mut self,
        pipe: &mut FrameReader,
        stdin: &mut impl Write,
        deadline: Option<Instant>,
        wake: Wake,
    ) -> Result<&[u8], ReadError> {
        loop {
            if let Some((body, len)) = self.whole().map_err(ReadError::Malformed)? {
                self.start += len;
                return Ok(&self.buf[body]);
            }
            if self.take(stdin)? > 0 {
                continue;
            }
            if self.closed {
                return Err(ReadError::Closed);
            }
            if !self.ring.may_block(wake) {
                continue;
            }
            let waited = pipe.fill(deadline);
            self.ring.awake();
            match waited {
                Ok(()) => {
                    // Wake-up bytes, some perhaps for answers already
                    // taken: nothing else may come while a chunk runs.
                    if !pipe.buffered().iter().all(|&b| b == frames::WAKE) {
                        return Err(ReadError::Malformed(io::Error::other(
                            "the worker wrote on its pipe while a chunk ran",
                        )));
                    }
                    pipe.consume(pipe.buffered().len());
                }
                // Dead: what it committed before it died is still taken.
                Err(ReadError::Closed) => self.closed = true,
                Err(ReadError::TimedOut) => {
                    // An answer committed as time ran out still counts.
                    if self.take(stdin)? == 0 || self.whole().map_err(ReadError::Malformed)?.is_none() {
                        return Err(ReadError::TimedOut);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::PipeWriter;
    use std::os::fd::AsFd;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// A worker as the pool sees it (its answers, its pipe) and the
    /// worker's ends: its ring, its pipe, the stdin it reads.
    fn worker() -> (RingFrames, FrameReader, ring::Writer, PipeWriter, PipeWriter) {
        let (reader, fd) = ring::Reader::create().expect("a ring");
        let writer = ring::Writer::on(fd.as_fd()).expect("mapped again");
        let (pipe, wake) = io::pipe().expect("a pipe");
        let (_, stdin) = io::pipe().expect("a pipe");
        (RingFrames::new(reader), FrameReader::new(pipe), writer, wake, stdin)
    }

    #[test]
    fn answers_committed_before_the_workers_death_are_still_given() {
        let (mut answers, mut pipe, mut ring, wake, mut stdin) = worker();
        std::thread::scope(|scope| {
            let manager = scope.spawn(move || {
                let mut got = Vec::new();
                loop {
                    match answers.frame(&mut pipe, &mut stdin, None, Wake::Answer) {
                        Ok(body) => got.push(body.to_vec()),
                        Err(ReadError::Closed) => return got,
                        Err(_) => panic!("neither a frame nor a death"),
                    }
                }
            });
            // Once the manager blocks on the pipe, two answers are
            // committed, and the worker dies before it writes the wake-up
            // byte it owes: only the death wakes the manager.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !ring.reader_waits() {
                assert!(Instant::now() < deadline, "the manager never blocked");
                std::thread::sleep(Duration::from_millis(1));
            }
            ring.write(&[1, 0, 0, 0, b'O', 2, 0, 0, 0, b'O', 7]).expect("room");
            assert!(ring.commit(Wake::Answer), "the manager waits");
            drop(wake);
            let got = manager.join().expect("the manager ends");
            assert_eq!(got, [vec![b'O'], vec![b'O', 7]]);
        });
    }

    #[test]
    fn an_idle_workers_late_wake_up_is_no_sign_of_death() {
        let (_, mut pipe, _, mut wake, _) = worker();
        assert!(pipe.only_wakes(), "nothing to read");
        wake.write_all(b"WW").expect("written");
        assert!(pipe.only_wakes(), "late wake-ups");
        assert!(pipe.buffered().is_empty(), "dropped");
        wake.write_all(b"W?").expect("written");
        assert!(!pipe.only_wakes(), "anything else breaks the protocol");
        let (_, mut pipe, _, wake, _) = worker();
        drop(wake);
        assert!(!pipe.only_wakes(), "end of file: the worker is gone");
    }

    #[test]
    fn garbage_from_a_worker_is_malformed_not_a_panic() {
        // A length over the frame limit, in the ring.
        let (mut answers, mut pipe, mut ring, _wake, mut stdin) = worker();
        ring.write(&u32::MAX.to_le_bytes()).expect("room");
        ring.commit(Wake::Answer);
        assert!(matches!(answers.frame(&mut pipe, &mut stdin, None, Wake::Answer), Err(ReadError::Malformed(_))));
        // Something else than a wake-up byte on the pipe while a chunk runs.
        let (mut answers, mut pipe, _ring, mut wake, mut stdin) = worker();
        wake.write_all(b"W?").expect("written");
        assert!(matches!(answers.frame(&mut pipe, &mut stdin, None, Wake::Answer), Err(ReadError::Malformed(_))));
        // Wake-up bytes alone are not: a frame after them is read.
        let (mut answers, mut pipe, mut ring, mut wake, mut stdin) = worker();
        wake.write_all(b"WW").expect("written");
        let deadline = Some(Instant::now() + Duration::from_millis(10));
        assert!(matches!(answers.frame(&mut pipe, &mut stdin, deadline, Wake::Any), Err(ReadError::TimedOut)));
        ring.write(&[1, 0, 0, 0, b'A']).expect("room");
        ring.commit(Wake::Any);
        assert_eq!(answers.frame(&mut pipe, &mut stdin, None, Wake::Any).ok(), Some(&b"A"[..]));
    }

    proptest! {
        /// Whatever bytes a broken or hostile worker commits before it
        /// dies, the pool reads frames or an error, and never panics.
        #[test]
        fn arbitrary_bytes_in_the_ring_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (mut answers, mut pipe, mut ring, wake, mut stdin) = worker();
            ring.write(&bytes).expect("room");
            ring.commit(Wake::Answer);
            drop(wake);
            let mut read = 0;
            loop {
                match answers.frame(&mut pipe, &mut stdin, None, Wake::Answer) {
                    Ok(body) => read += 4 + body.len(),
                    Err(ReadError::Closed | ReadError::Malformed(_)) => break,
                    Err(ReadError::TimedOut) => panic!("no deadline was given"),
                }
                prop_assert!(read <= bytes.len());
            }
        }
    }
}
