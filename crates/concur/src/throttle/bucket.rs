//! The throttle's state: the token balance, and the ledger of the slots
//! that waiters hold, which is what lets a waiter that gives up hand its
//! slot back without ever crowding the grants (see
//! [`Throttle`](super::Throttle)'s "Giving a slot back").

use std::collections::VecDeque;
use std::time::Duration;

/// Tokens in the bucket as of `last`. Negative tokens are reservations not
/// yet due.
#[derive(Debug)]
pub(super) struct Bucket {
    pub(super) tokens: f64,
    /// `None` until the first request, for the chapter's "from the first
    /// request on".
    pub(super) last: Option<Duration>,
    /// The reservations that had to wait, in the order they were made (so
    /// by due time, and by `seq`), until their time has passed.
    waiting: VecDeque<Slot>,
    /// How many of `waiting` were given back and not taken again.
    freed: usize,
    /// The `seq` of the next reservation that has to wait.
    next_seq: u64,
}

/// A reservation that had to wait.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    due: Duration,
    /// Given back by its waiter; free for the next reservation.
    freed: bool,
}

impl Bucket {
    pub(super) fn new(tokens: f64, last: Option<Duration>) -> Self {
        Bucket { tokens, last, waiting: VecDeque::new(), freed: 0, next_seq: 0 }
    }

    /// Forgets the slots whose time has passed: granted, or given back and
    /// not taken in time.
    fn forget_past(&mut self, now: Duration) {
        while let Some(slot) = self.waiting.front()
            && slot.due < now
        {
            if slot.freed {
                self.freed -= 1;
            }
            self.waiting.pop_front();
        }
    }

    /// When the earliest given-back slot not yet past is due, if any.
    // Inline: the throttle is generic, so it is compiled in its user's
    // crate, and this check is on every call's path.
    #[inline]
    pub(super) fn earliest_freed(&mut self, now: Duration) -> Option<Duration> {
        if self.freed == 0 {
            return None;
        }
        self.first_freed(now).map(|slot| slot.due)
    }

    /// Takes the earliest given-back slot not yet past: its `seq` and when
    /// it is due.
    #[inline]
    pub(super) fn take_freed(&mut self, now: Duration) -> Option<(u64, Duration)> {
        if self.freed == 0 {
            return None;
        }
        let slot = self.first_freed(now)?;
        slot.freed = false;
        let taken = (slot.seq, slot.due);
        self.freed -= 1;
        Some(taken)
    }

    fn first_freed(&mut self, now: Duration) -> Option<&mut Slot> {
        self.forget_past(now);
        self.waiting.iter_mut().find(|slot| slot.freed)
    }

    /// Records a reservation, just taken from the balance, that waits until
    /// `due`; gives its `seq`.
    pub(super) fn wait_for(&mut self, due: Duration, now: Duration) -> u64 {
        self.forget_past(now);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.push_back(Slot { seq, due, freed: false });
        seq
    }

    /// Gives back the waiting slot `seq`, unless its time has come.
    pub(super) fn give_back(&mut self, seq: u64, now: Duration) {
        self.forget_past(now);
        let Ok(i) = self.waiting.binary_search_by_key(&seq, |slot| slot.seq) else {
            return; // its time passed: granted
        };
        if self.waiting[i].due <= now {
            return; // due now: granted
        }
        if i + 1 < self.waiting.len() {
            // Later waiters sleep until their slots: keep this one aside.
            self.waiting[i].freed = true;
            self.freed += 1;
            return;
        }
        // The latest reservation, still in debt: undo it, and the
        // given-back slots this leaves at the end, newest first. Refills
        // since then added to a negative balance, so none was capped and
        // the undoing is exact.
        self.waiting.pop_back();
        self.tokens += 1.0;
        while let Some(slot) = self.waiting.back()
            && slot.freed
            && slot.due > now
        {
            self.waiting.pop_back();
            self.freed -= 1;
            self.tokens += 1.0;
        }
    }
}

#[cfg(test)]
impl Bucket {
    /// How many slots are waiting (given back or not).
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}
