//! The writing of events' text: microseconds with three decimals, and the
//! numbers of the events every request writes, without `fmt`'s machinery.

use std::fmt::{self, Display};
use std::io::Write as _;

/// Nanoseconds written as microseconds, to the nanosecond.
pub(super) struct Micros(pub(super) u64);

/// An event being appended to a buffer, for the events every request
/// writes: numbers go through `itoa` rather than `fmt`'s machinery, which
/// was most of their cost.
pub(super) struct Event<'a>(pub(super) &'a mut Vec<u8>);

impl Event<'_> {
    pub(super) fn raw(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    pub(super) fn int(&mut self, n: impl itoa::Integer) -> &mut Self {
        self.0.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self
    }

    /// Nanoseconds as microseconds with three decimals, as [`Micros`].
    pub(super) fn micros(&mut self, ns: u64) -> &mut Self {
        self.int(ns / 1000);
        let f = (ns % 1000) as u16;
        let digits = [b'.', b'0' + (f / 100) as u8, b'0' + (f / 10 % 10) as u8, b'0' + (f % 10) as u8];
        self.0.extend_from_slice(&digits);
        self
    }

    /// Appends `d`, and gives where it went, to be written [`again`](Self::again).
    pub(super) fn display(&mut self, d: &dyn Display) -> std::ops::Range<usize> {
        let from = self.0.len();
        // Writing to memory cannot fail.
        let _ = write!(self.0, "{d}");
        from..self.0.len()
    }

    pub(super) fn again(&mut self, written: std::ops::Range<usize>) -> &mut Self {
        self.0.extend_from_within(written);
        self
    }
}

impl Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}
