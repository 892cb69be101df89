//! The bucket's state under the limiter's lock: the rate, the tokens, the
//! waiters' slots and what the server stated, with the bucket arithmetic.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cancel::CancelToken;

/// Everything that changes, under one lock.
#[derive(Debug)]
pub(super) struct State {
    pub(super) rate: f64,
    pub(super) burst: u32,
    /// Tokens as of `last` (negative: reservations not yet due).
    pub(super) tokens: f64,
    /// When `tokens` was counted; in the future while a hold lasts.
    pub(super) last: Duration,
    /// Tokens accrue from here on: after a burst's first grant, a margin
    /// later (see [`RateConfig::margin`]); tokens at hand stay usable.
    pub(super) accrue_from: Duration,
    /// The reservations that wait, by `seq`, until their waiter wakes or
    /// gives up.
    pub(super) waiting: BTreeMap<u64, Waiting>,
    pub(super) next_seq: u64,
    /// The server's stated rate, and the numbers it came from.
    pub(super) policy: Option<Policy>,
    /// Whether a 429 was ever met (the probe is slow from then on).
    pub(super) met_limit: bool,
    /// The rate the server delivered up to the last 429: where the rate
    /// returns to after a cut, and stays for a plateau.
    pub(super) ceiling: f64,
    /// When the current increase interval began, and the grants and
    /// successes in it.
    pub(super) interval_start: Duration,
    pub(super) granted_in_interval: u64,
    pub(super) succeeded_in_interval: u64,
    /// The successes of the previous interval, and its length.
    pub(super) recent: (u64, Duration),
    /// The last cut, if any.
    pub(super) last_cut: Option<Duration>,
    /// Successes since `delivered_since` (the last cut, or the start).
    pub(super) delivered: u64,
    pub(super) delivered_since: Duration,
    pub(super) limited: u64,
}

/// What a server stated of its limit: `limit` per `window`, and its bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Stated {
    pub(super) limit: u32,
    pub(super) window: Duration,
    pub(super) burst: Option<u32>,
}

/// A server's stated policy, and the rate it gives.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub(super) rate: f64,
    pub(super) stated: Stated,
}

/// The largest burst taken from a server's word: its headers are
/// untrusted, and a bucket of millions would let a run flood it.
pub(super) const MAX_STATED_BURST: u32 = 10_000;

#[derive(Debug, Clone)]
pub(super) struct Waiting {
    pub(super) due: Duration,
    pub(super) revoked: bool,
    /// Wakes its waiter when the slot is revoked: a slot of a slower rate
    /// may be seconds away, and the waiter must not sleep through the
    /// faster schedule that replaced it (with a waiter per worker all
    /// asleep on the first rate's slots, a run would keep that rate for
    /// good).
    pub(super) wake: CancelToken,
}

/// Seconds as a duration, rounded up to the nanosecond (so that a wait
/// never ends just before its token), saturating on huge values.
pub(super) fn secs(s: f64) -> Duration {
    let nanos = (s.max(0.0) * 1e9).ceil();
    if nanos >= u64::MAX as f64 { Duration::MAX } else { Duration::from_nanos(nanos as u64) }
}

/// Rounding slack in token counts: a token due by the clock is there,
/// whatever the float arithmetic of its accrual.
pub(super) const EPS: f64 = 1e-9;

impl State {
    /// Adds the tokens accrued up to `now` (nothing during a hold).
    pub(super) fn refill(&mut self, now: Duration) {
        if now > self.last {
            let accrued = now.saturating_sub(self.last.max(self.accrue_from)).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + accrued).min(f64::from(self.burst));
            self.last = now;
        }
    }

    /// Takes a token, in debt if need be: the new `seq` and when it is due.
    /// The first token of a full bucket delays the accrual by `margin`
    /// token intervals (see [`RateConfig::margin`]).
    pub(super) fn reserve(&mut self, now: Duration, margin: f64) -> (u64, Duration) {
        self.refill(now);
        let was_full = self.tokens >= f64::from(self.burst) - EPS;
        self.tokens -= 1.0;
        if was_full && margin > 0.0 && self.last <= now {
            self.accrue_from = now.saturating_add(secs(margin / self.rate));
        }
        let base = now.max(self.last);
        let due = if self.tokens >= -EPS {
            base
        } else {
            base.max(self.accrue_from).saturating_add(secs(-self.tokens / self.rate))
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.granted_in_interval += 1;
        if due > now {
            self.waiting.insert(seq, Waiting { due, revoked: false, wake: CancelToken::new() });
        }
        (seq, due)
    }

    /// Revokes every slot not yet due: its token goes back, its waiter
    /// reserves again when it wakes. Called before the rate or a hold
    /// changes, so that no slot of the old schedule crowds the new one.
    pub(super) fn revoke(&mut self, now: Duration) {
        self.refill(now);
        for w in self.waiting.values_mut() {
            if !w.revoked && w.due > now {
                w.revoked = true;
                w.wake.cancel();
                self.tokens += 1.0;
            }
        }
        self.tokens = self.tokens.min(f64::from(self.burst));
    }

    /// Holds grants until `until`: the server has no tokens now, and
    /// gains them meanwhile at the current rate, up to the burst. A hold
    /// already longer stands, with no more tokens than that implies.
    pub(super) fn hold(&mut self, now: Duration, until: Duration) {
        self.revoke(now);
        // The server's bucket is known from here on: no margin is left to keep.
        self.accrue_from = self.accrue_from.min(now);
        let base = self.last.max(now);
        let from_empty = (base - now).as_secs_f64() * self.rate;
        self.tokens = self.tokens.min(from_empty);
        if until > base {
            let accrued = (until - base).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + accrued).min(f64::from(self.burst));
            self.last = until;
        }
    }

    /// The waiter `seq` woke at `now`: whether its slot stands (else it
    /// must reserve again).
    pub(super) fn wake(&mut self, seq: u64) -> bool {
        self.waiting.remove(&seq).is_none_or(|w| !w.revoked)
    }

    /// The waiter `seq` gave up at `now`: its slot goes back.
    pub(super) fn give_back(&mut self, seq: u64, now: Duration) {
        let Some(w) = self.waiting.remove(&seq) else { return };
        if w.revoked || w.due <= now {
            return; // already back in the bucket, or its time has passed
        }
        if seq + 1 == self.next_seq {
            // The latest reservation: undo it, exactly (the balance was in
            // debt since, so no refill was capped).
            self.tokens += 1.0;
        } else {
            // Later waiters sleep until their slots: a token put back would
            // let a newcomer in beside them. Everyone queues again instead.
            self.revoke(now);
            self.tokens = (self.tokens + 1.0).min(f64::from(self.burst));
        }
    }
}
