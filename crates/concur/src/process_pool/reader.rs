//! The pool's reader of a worker's answers: buffered frames, each read by
//! a deadline when the task has a time limit. Without a deadline it is a
//! plain blocking reader, so tasks without a limit pay nothing for it.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ChildStdout;
use std::time::Instant;

use super::{sys, wire};

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
    inner: ChildStdout,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    pub(super) fn new(inner: ChildStdout) -> Self {
        FrameReader { inner, buf: vec![0; 1 << 16], start: 0, end: 0 }
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

    /// Whether a whole frame is buffered, so [`frame`](Self::frame) will
    /// not wait.
    pub(super) fn has_frame(&self) -> bool {
        matches!(wire::body_len(self.buffered()), Ok(Some(len)) if self.end - self.start >= 4 + len)
    }

    /// The body of the next frame.
    pub(super) fn frame(&mut self, deadline: Option<Instant>) -> Result<&[u8], ReadError> {
        loop {
            if let Some(len) = wire::body_len(self.buffered()).map_err(ReadError::Malformed)? {
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
}

impl AsFd for FrameReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}
