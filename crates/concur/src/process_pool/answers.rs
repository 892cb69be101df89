//! How answers travel from the managers to the caller of
//! `imap_unordered` (and so `map` and `imap`): in batches, one channel
//! message per batch instead of one per task, so that a chunk of many
//! small tasks wakes the caller a few times rather than once per task.

use std::marker::PhantomData;

use crossbeam_channel::{Receiver, Sender};

use super::{Deliver, decode};
use crate::pool::{Tally, Task, TaskError};

/// Answers in one message: `(input index, result)`. A lone answer (every
/// answer of chunks of one task) travels without a vector, so that it
/// costs no allocation.
pub(super) enum Batch<R> {
    One(usize, Result<R, TaskError>),
    Many(Vec<(usize, Result<R, TaskError>)>),
}

/// The [`Deliver`] of a chunk of `imap_unordered`: decodes each answer,
/// keeps it under its input index, and sends what it holds on
/// [`flush`](Deliver::flush) or when dropped.
pub(super) struct Batches<T: Task> {
    indices: Vec<usize>,
    held: Vec<(usize, Result<T::Output, TaskError>)>,
    tx: Sender<Batch<T::Output>>,
    task: PhantomData<fn(T)>,
}

impl<T: Task> Batches<T> {
    pub(super) fn new(indices: Vec<usize>, tx: Sender<Batch<T::Output>>) -> Self {
        Batches { indices, held: Vec::new(), tx, task: PhantomData }
    }
}

impl<T: Task> Deliver for Batches<T> {
    fn answer(&mut self, k: usize, result: Result<&[u8], TaskError>) {
        if let Some(&i) = self.indices.get(k) {
            if self.held.capacity() == 0 {
                // Room for the rest of the chunk at once: a batch grows
                // by no reallocation per answer.
                self.held.reserve_exact(self.indices.len() - k);
            }
            self.held.push((i, result.and_then(|bytes| decode(bytes, T::NAME))));
        }
    }

    fn flush(&mut self) {
        let batch = match self.held.len() {
            0 => return,
            1 => match self.held.pop() {
                Some((i, result)) => Batch::One(i, result),
                None => return,
            },
            _ => Batch::Many(std::mem::take(&mut self.held)),
        };
        // The caller may have dropped the iterator.
        let _ = self.tx.send(batch);
    }
}

impl<T: Task> Drop for Batches<T> {
    /// Answers taken are passed on before the sender goes, so only the
    /// tasks that got none are taken for cancelled.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Results of the process pool's `imap_unordered`: `(input index, result)`
/// in completion order, each index exactly once; the indices whose chunks
/// were dropped without an answer come last, as `Cancelled` (as
/// [`ImapUnordered`](crate::pool::ImapUnordered) does, one batch at a time).
pub(super) struct Answers<R> {
    batches: Receiver<Batch<R>>,
    batch: std::vec::IntoIter<(usize, Result<R, TaskError>)>,
    tally: Tally,
}

impl<R> Answers<R> {
    /// Results of `n` tasks, answered in batches of `(index, result)`.
    pub(super) fn new(batches: Receiver<Batch<R>>, n: usize) -> Self {
        Answers { batches, batch: Vec::new().into_iter(), tally: Tally::new(n) }
    }
}

impl<R> Iterator for Answers<R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.tally.left() == 0 {
            return None;
        }
        if self.tally.open() {
            loop {
                for (i, result) in self.batch.by_ref() {
                    if self.tally.take(i) {
                        return Some((i, result));
                    }
                }
                // Blocks until a chunk reports, or until every chunk's
                // sender is gone (all ran or were cancelled): never hangs.
                match self.batches.recv() {
                    Ok(Batch::Many(batch)) => self.batch = batch.into_iter(),
                    Ok(Batch::One(i, result)) => {
                        if self.tally.take(i) {
                            return Some((i, result));
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        self.tally.next_cancelled().map(|i| (i, Err(TaskError::Cancelled)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.tally.left(), Some(self.tally.left()))
    }
}

impl<R> Answers<R> {
    /// Every result, in input order: what `map` gives. Each answer goes
    /// straight to its index's place, so nothing is sorted or buffered
    /// in a map as the lazy, in-order `imap` must.
    pub(super) fn in_input_order(self) -> Vec<Result<R, TaskError>> {
        let mut slots: Vec<Option<Result<R, TaskError>>> = (0..self.tally.len()).map(|_| None).collect();
        for (i, result) in self {
            slots[i] = Some(result);
        }
        // Cannot be `None`: every index is given exactly once.
        slots.into_iter().map(|slot| slot.unwrap_or(Err(TaskError::Cancelled))).collect()
    }
}

impl<R> ExactSizeIterator for Answers<R> {}
impl<R> std::iter::FusedIterator for Answers<R> {}

impl<R> std::fmt::Debug for Answers<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers").field("left", &self.tally.left()).finish()
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Echo(u32);

    impl Task for Echo {
        type Output = u32;
        const NAME: &'static str = "echo";
        fn run(self) -> u32 {
            self.0
        }
    }

    fn bytes(n: u32) -> Vec<u8> {
        postcard::to_allocvec(&n).expect("encodes")
    }

    #[test]
    fn batches_cancel_what_never_comes_and_skip_repeats() {
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(Batch::Many(vec![(2, Ok(20)), (2, Ok(21))])).expect("receiver alive");
        tx.send(Batch::One(0, Ok(0))).expect("receiver alive");
        tx.send(Batch::One(0, Ok(1))).expect("receiver alive");
        drop(tx);
        let results = Answers::new(rx, 4);
        assert_eq!(results.len(), 4);
        let got: Vec<_> = results.collect();
        assert_eq!(got, [(2, Ok(20)), (0, Ok(0)), (1, Err(TaskError::Cancelled)), (3, Err(TaskError::Cancelled))]);
    }

    #[test]
    fn in_input_order_places_every_answer_and_cancels_the_rest() {
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(Batch::Many(vec![(3, Ok(30)), (0, Ok(0))])).expect("receiver alive");
        tx.send(Batch::One(2, Err(TaskError::Panicked("p".into())))).expect("receiver alive");
        drop(tx);
        assert_eq!(
            Answers::new(rx, 4).in_input_order(),
            [Ok(0), Err(TaskError::Cancelled), Err(TaskError::Panicked("p".into())), Ok(30)]
        );
    }

    #[test]
    fn answers_wait_for_a_flush_and_a_drop_flushes() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut deliver = Batches::<Echo>::new(vec![10, 11, 12], tx);
        deliver.answer(0, Ok(&bytes(7)));
        deliver.answer(1, Err(TaskError::Panicked("boom".into())));
        assert!(rx.is_empty(), "held until flushed");
        deliver.flush();
        let Ok(Batch::Many(batch)) = rx.try_recv() else { panic!("one batch of two") };
        assert_eq!(batch, [(10, Ok(7)), (11, Err(TaskError::Panicked("boom".into())))]);
        deliver.flush();
        assert!(rx.is_empty(), "an empty batch is not sent");
        // Taken, never flushed, then dropped (the chunk was cancelled):
        // still passed on, so only the unanswered task counts as cancelled.
        deliver.answer(2, Ok(&bytes(9)));
        drop(deliver);
        assert!(matches!(rx.try_recv(), Ok(Batch::One(12, Ok(9)))));
        assert!(rx.try_recv().is_err(), "the sender is gone");
    }
}
