//! The iterators of `imap` and `imap_unordered` shared by the pools:
//! results put back in input order ([`InOrder`]), and every index accounted
//! for exactly once ([`Tally`], [`ImapUnordered`]).

use std::collections::BTreeMap;

use crossbeam_channel::Receiver;

use super::TaskError;

/// Turns `(index, result)` pairs arriving in any order into results in index
/// order, buffering the early ones. The input must give each index from 0
/// exactly once (every pool's `imap_unordered` does).
pub(crate) struct InOrder<I, R> {
    inner: I,
    next: usize,
    early: BTreeMap<usize, Result<R, TaskError>>,
}

impl<I, R> InOrder<I, R> {
    pub(crate) fn new(inner: I) -> Self {
        InOrder { inner, next: 0, early: BTreeMap::new() }
    }
}

impl<I, R> Iterator for InOrder<I, R>
where
    I: Iterator<Item = (usize, Result<R, TaskError>)>,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(result) = self.early.remove(&self.next) {
                self.next += 1;
                return Some(result);
            }
            match self.inner.next() {
                Some((i, result)) if i == self.next => {
                    self.next += 1;
                    return Some(result);
                }
                Some((i, result)) => {
                    self.early.insert(i, result);
                }
                // Only reachable if the input broke its contract and skipped
                // an index: give the rest in order rather than drop them.
                None => {
                    let (i, result) = self.early.pop_first()?;
                    self.next = i + 1;
                    return Some(result);
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (lo, hi) = self.inner.size_hint();
        let buffered = self.early.len();
        (lo.saturating_add(buffered), hi.and_then(|h| h.checked_add(buffered)))
    }
}

/// Results of `imap_unordered` (both pools): `(input index, result)` in
/// completion order, each index exactly once; the indices whose senders
/// vanished without an answer come last, as `Cancelled`.
pub struct ImapUnordered<R> {
    results: Receiver<(usize, Result<R, TaskError>)>,
    tally: Tally,
}

impl<R> ImapUnordered<R> {
    /// Results of `n` tasks, each answering `(index, result)` on `results`
    /// (a [`Pool`](super::Pool) implementation's `imap_unordered`).
    pub fn new(results: Receiver<(usize, Result<R, TaskError>)>, n: usize) -> Self {
        ImapUnordered { results, tally: Tally::new(n) }
    }
}

/// Which of `n` input indices have been answered, for the iterators of
/// `imap_unordered`: each index is given once (a repeat is dropped), and
/// once no more answers can come, those never answered are named in
/// order, as cancelled.
#[derive(Debug)]
pub(crate) struct Tally {
    seen: Vec<bool>,
    left: usize,
    /// Once no more answers can come, the indices not seen were
    /// cancelled; this is where the search for them resumes.
    cancelled_from: Option<usize>,
}

impl Tally {
    pub(crate) fn new(n: usize) -> Self {
        Tally { seen: vec![false; n], left: n, cancelled_from: None }
    }

    /// Indices not given yet.
    pub(crate) fn left(&self) -> usize {
        self.left
    }

    /// How many indices there are.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether answers may still come (no index was named cancelled yet).
    pub(crate) fn open(&self) -> bool {
        self.cancelled_from.is_none()
    }

    /// Counts the answer of index `i`: `false` for a repeat or an index
    /// out of range, which is to be dropped.
    pub(crate) fn take(&mut self, i: usize) -> bool {
        match self.seen.get_mut(i) {
            Some(seen @ false) => {
                *seen = true;
                self.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// No more answers can come: the next index never answered, counted
    /// as given (cancelled).
    pub(crate) fn next_cancelled(&mut self) -> Option<usize> {
        let from = self.cancelled_from.unwrap_or(0);
        let i = from + self.seen.get(from..)?.iter().position(|seen| !seen)?;
        self.seen[i] = true;
        self.left -= 1;
        self.cancelled_from = Some(i + 1);
        Some(i)
    }
}

impl<R> Iterator for ImapUnordered<R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.tally.left() == 0 {
            return None;
        }
        if self.tally.open() {
            // Blocks until a job reports, or until every job's sender is
            // gone (all ran or were cancelled): never hangs.
            while let Ok((i, result)) = self.results.recv() {
                if self.tally.take(i) {
                    return Some((i, result));
                }
            }
        }
        self.tally.next_cancelled().map(|i| (i, Err(TaskError::Cancelled)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.tally.left(), Some(self.tally.left()))
    }
}

impl<R> ExactSizeIterator for ImapUnordered<R> {}
impl<R> std::iter::FusedIterator for ImapUnordered<R> {}

impl<R> std::fmt::Debug for ImapUnordered<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapUnordered").field("left", &self.tally.left()).finish()
    }
}
