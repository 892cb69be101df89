//! The adaptive rate: a token bucket whose rate is learnt from the answers.
//!
//! # The algorithm
//!
//! AIMD (additive increase, multiplicative decrease, as TCP's congestion
//! control), with two refinements so that a server's fixed limit is met
//! with few 429s and little idle time:
//!
//! - **Increase.** After each `interval` (1 s) in which answers came back,
//!   no 429 did, and the caller used at least half of the rate (an idle
//!   caller proves nothing about the server), the rate rises. Until the
//!   first 429 by `max(increase, growth·rate)`: +1/s per second at low
//!   rates, 25 % a second from 4/s on, so that a 5/s API is found in five
//!   seconds and a 1000/s one in half a minute.
//! - **Decrease.** A 429 (or 503) cuts the rate, at most once per
//!   `interval` (the other requests in flight met the same empty server and
//!   say nothing new), to 95 % of the rate the server was seen to
//!   *deliver* (successes per second), but never by more than the factor
//!   `decrease` (½) nor by less than 5 %. That delivered rate is the
//!   ceiling: since the previous cut (a token bucket server is empty at
//!   each 429, so what it let through in between is what it refilled), or
//!   for the first cut over the last interval or two (not the ramp from
//!   the start). A bare ½, TCP's, would leave the rate far below the limit
//!   for tens of seconds after every 429, which against 5/s costs more
//!   than the 429s.
//! - **After a cut** the rate returns to the ceiling, halving the gap each
//!   interval, and stays there for a `plateau` (10 s) before it probes above
//!   it by `probe` (2 %) a second: the server's limit is known to be near,
//!   and staying just under it is worth more than finding a little more
//!   (CUBIC's plateau around its last loss, BBR's bottleneck estimate from
//!   the delivery rate).
//! - **Retry-After.** No grant before it has elapsed; tokens accrue
//!   meanwhile as the server's do, up to the burst, and every waiter
//!   queues again behind it.
//! - **Policy.** When the server states its limit (`RateLimit-Policy`,
//!   `X-RateLimit-*`), the rate is `limit / window` at once and never
//!   probes above it; the burst is one second's worth (at most `limit`), so
//!   a token bucket server with that policy is never overrun. `remaining`
//!   caps the tokens at hand, and `remaining == 0` holds grants until
//!   `reset`. A 429 still cuts; the rate then climbs back to the policy,
//!   halving the gap each interval.
//!
//! # The bucket
//!
//! As [`Throttle`](crate::Throttle): a waiter reserves the next slot under
//! a lock and sleeps exactly until it, once. Since the rate changes under
//! sleeping waiters, each change (and each hold) revokes the slots not yet
//! due: their tokens go back in the bucket, and their waiters, when they
//! wake, reserve again at the new rate. Every grant thus falls on a slot of
//! one bucket at one rate, and in any window of length `w` within which
//! the rate stays `r`, at most `burst + r·w` are granted.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::cancel::{CancelToken, Cancelled, Watcher};
use crate::sync;
use crate::throttle::{Clock, NotUntil, SystemClock};

mod config;
mod state;

pub use config::{RateChange, RateConfig, RateSignal};
use state::{EPS, MAX_STATED_BURST, Policy, State, Stated, secs};

/// A cut leaves at most this fraction of the rate, and of the delivered rate.
const MARGIN: f64 = 0.95;

/// Half way from `rate` to `target`, or there when within 1 %.
fn approach(rate: f64, target: f64) -> f64 {
    if target - rate <= 0.01 * target { target } else { rate + (target - rate) / 2.0 }
}

type Observer = Box<dyn Fn(&RateChange) + Send + Sync>;

/// A request rate learnt from the server's answers: a token bucket whose
/// rate rises while requests succeed, falls on 429s, waits out
/// `Retry-After`, and takes a stated policy as given (see the module docs
/// for the algorithm).
///
/// Share it as `Arc<AdaptiveRate>`: take a token before each request
/// ([`acquire_cancellable`](Self::acquire_cancellable),
/// [`acquire_async`](Self::acquire_async),
/// [`try_acquire`](Self::try_acquire)) and [`record`](Self::record) what
/// each answer said.
///
/// ```
/// use concur::adaptive::{AdaptiveRate, RateConfig, RateSignal};
/// use concur::throttle::{Clock, FakeClock};
/// use std::time::Duration;
///
/// let clock = FakeClock::new();
/// let rate = AdaptiveRate::with_clock(RateConfig { initial: 4.0, ..RateConfig::default() }, clock.clone());
/// let cancel = concur::CancelToken::new();
/// rate.acquire_cancellable(&cancel)?;
/// rate.record(RateSignal::Limited { retry_after: Some(Duration::from_secs(2)) });
/// assert_eq!(rate.rate(), 2.0); // halved
/// rate.acquire_cancellable(&cancel)?; // not before the Retry-After
/// assert!(clock.now() >= Duration::from_secs(2));
/// # Ok::<(), concur::Cancelled>(())
/// ```
pub struct AdaptiveRate<C: Clock = SystemClock> {
    clock: C,
    config: RateConfig,
    state: Mutex<State>,
    observer: Option<Observer>,
}

impl AdaptiveRate<SystemClock> {
    /// A limiter on the system clock (which follows tokio's paused test
    /// time).
    pub fn new(config: RateConfig) -> Self {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> AdaptiveRate<C> {
    /// A limiter on the given clock. The bucket starts full.
    pub fn with_clock(config: RateConfig, clock: C) -> Self {
        let config = config.sane();
        let now = clock.now();
        let state = State {
            rate: config.initial,
            burst: config.burst,
            tokens: f64::from(config.burst),
            last: now,
            accrue_from: now,
            waiting: BTreeMap::new(),
            next_seq: 0,
            policy: None,
            met_limit: false,
            ceiling: 0.0,
            interval_start: now,
            granted_in_interval: 0,
            succeeded_in_interval: 0,
            recent: (0, Duration::ZERO),
            last_cut: None,
            delivered: 0,
            delivered_since: now,
            limited: 0,
        };
        AdaptiveRate { clock, config, state: Mutex::new(state), observer: None }
    }

    /// Calls `f` on every change of the learnt rate (after the change, on
    /// the thread that recorded the answer, outside the limiter's lock).
    pub fn on_change(mut self, f: impl Fn(&RateChange) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(f));
        self
    }

    /// The limiter's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Takes a token, blocking the thread until it is due, unless `cancel`
    /// is cancelled first: then it returns at once and its slot goes back,
    /// so giving up costs no token. No polling: one sleep per slot (a
    /// waiter whose slot a rate change revoked reserves again once).
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if the token is cancelled before the slot is due.
    pub fn acquire_cancellable(&self, cancel: &CancelToken) -> Result<(), Cancelled> {
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        let mut slot = self.reserve();
        loop {
            let Some(r) = &slot else { return Ok(()) };
            // The slot's sleep ends when it is due, revoked, or the run is
            // cancelled (which the slot's token hears of through `link`).
            let link: Arc<Watcher> = Arc::new({
                let wake = r.wake.clone();
                move || wake.cancel()
            });
            cancel.watch(&link);
            // On `Err` the reservation is dropped, which gives it back.
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            let _revoked_or_due = self.clock.sleep_until_cancellable(r.due, &r.wake);
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            slot = self.wake(slot);
        }
    }

    /// Takes a token, sleeping the task until it is due (with
    /// `tokio::time`, so it needs a tokio runtime with time enabled). A
    /// future dropped before its slot is due gives the slot back.
    #[cfg(feature = "async")]
    pub async fn acquire_async(&self) {
        let mut slot = self.reserve();
        while let Some(r) = &slot {
            let wait = r.due.saturating_sub(self.clock.now());
            if !wait.is_zero() {
                // Until due, or revoked for a new schedule.
                let _revoked_or_due = tokio::time::timeout(wait, r.wake.cancelled()).await;
            }
            slot = self.wake(slot);
        }
    }

    /// Takes a token if one is available now; never blocks.
    ///
    /// # Errors
    ///
    /// [`NotUntil`], saying when a token will be due (if nobody takes it
    /// first, and the rate does not change).
    pub fn try_acquire(&self) -> Result<(), NotUntil> {
        let mut s = self.lock();
        let now = self.clock.now();
        s.refill(now);
        if now >= s.last && s.tokens >= 1.0 - EPS {
            s.reserve(now, self.config.margin);
            return Ok(());
        }
        let at = now.max(s.last).max(s.accrue_from).saturating_add(secs((1.0 - s.tokens) / s.rate));
        Err(NotUntil::new(now, at))
    }

    /// Learns from what an answer said (see [`RateSignal`]).
    pub fn record(&self, signal: RateSignal) {
        let change = {
            let mut s = self.lock();
            let now = self.clock.now();
            match signal {
                RateSignal::Success => self.on_success(&mut s, now),
                RateSignal::Limited { retry_after } => self.on_limited(&mut s, now, retry_after),
                RateSignal::Policy { limit, window, remaining, reset, burst } => {
                    self.on_policy(&mut s, now, Stated { limit, window, burst }, remaining, reset)
                }
            }
        };
        if let (Some(change), Some(observer)) = (change, &self.observer) {
            observer(&change);
        }
    }

    /// The learnt rate, requests per second.
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }

    /// The burst: the configured one, or one the server's policy implies.
    pub fn burst(&self) -> u32 {
        self.lock().burst
    }

    /// How many `Limited` signals were recorded.
    pub fn limited(&self) -> u64 {
        self.lock().limited
    }

    fn on_success(&self, s: &mut State, now: Duration) -> Option<RateChange> {
        s.delivered += 1;
        s.succeeded_in_interval += 1;
        let elapsed = now.saturating_sub(s.interval_start);
        if elapsed < self.config.interval {
            return None;
        }
        // Only a caller that used the rate learns that the server takes it.
        let used = s.granted_in_interval as f64 >= 0.5 * s.rate * elapsed.as_secs_f64();
        s.recent = (s.succeeded_in_interval, elapsed);
        s.interval_start = now;
        s.granted_in_interval = 0;
        s.succeeded_in_interval = 0;
        if !used {
            return None;
        }
        let c = &self.config;
        let r = s.rate;
        let (to, why) = match s.policy {
            Some(Policy { rate: p, .. }) if r < p => (approach(r, p), "recovering to the server's policy"),
            _ if s.met_limit && r < s.ceiling => (approach(r, s.ceiling), "back to the rate the server delivered"),
            _ if s.met_limit => {
                let quiet = s.last_cut.is_none_or(|t| now >= t.saturating_add(c.plateau));
                if !quiet {
                    return None;
                }
                (r + c.probe * r, "no 429 for a while: probing")
            }
            _ => (r + c.increase.max(c.growth * r), "no 429 for an interval"),
        };
        let cap = s.policy.map_or(c.max, |p| p.rate.min(c.max));
        self.set_rate(s, now, to.min(cap), why)
    }

    fn on_limited(&self, s: &mut State, now: Duration, retry_after: Option<Duration>) -> Option<RateChange> {
        s.limited += 1;
        let cut_due = s.last_cut.is_none_or(|t| now >= t.saturating_add(self.config.interval));
        let mut change = None;
        if cut_due {
            // What the server let through: since the last cut (its bucket
            // was empty then and is now), or before the first, over the
            // last interval or two (not the ramp up from the start).
            let (ok, span) = if s.met_limit {
                (s.delivered, now.saturating_sub(s.delivered_since))
            } else {
                (s.recent.0 + s.succeeded_in_interval, s.recent.1 + now.saturating_sub(s.interval_start))
            };
            // Too short a span says nothing: then the plain factor.
            let delivered = if span >= self.config.interval { ok as f64 / span.as_secs_f64() } else { 0.0 };
            let to = (delivered * MARGIN).min(s.rate * MARGIN).max(s.rate * self.config.decrease);
            s.ceiling = if delivered > 0.0 { delivered.min(s.rate) } else { to };
            s.met_limit = true;
            s.last_cut = Some(now);
            s.delivered = 0;
            // The hold counts: the server refills during it what it
            // delivers after.
            s.delivered_since = now;
            s.interval_start = now;
            s.granted_in_interval = 0;
            s.succeeded_in_interval = 0;
            s.recent = (0, Duration::ZERO);
            change = self.set_rate(s, now, to, "429 received");
        }
        s.hold(now, now.saturating_add(retry_after.unwrap_or_default()));
        change
    }

    fn on_policy(
        &self,
        s: &mut State,
        now: Duration,
        stated: Stated,
        remaining: Option<u32>,
        reset: Option<Duration>,
    ) -> Option<RateChange> {
        let Stated { limit, window, burst } = stated;
        let mut change = None;
        if limit > 0 && !window.is_zero() && s.policy.is_none_or(|p| p.stated != stated) {
            let rate = (f64::from(limit) / window.as_secs_f64()).clamp(self.config.min, self.config.max);
            // The bucket the server stated; else one second's worth, at
            // most the whole window's.
            let burst = match burst {
                Some(b) => b.clamp(1, MAX_STATED_BURST),
                None => (rate.ceil() as u32).clamp(1, limit),
            };
            s.policy = Some(Policy { rate, stated });
            if burst != s.burst {
                s.revoke(now);
                s.burst = burst;
                s.tokens = s.tokens.min(f64::from(burst));
            }
            // The 429s of requests sent before the policy was known say
            // nothing new: no cut for an interval, as after a cut.
            s.last_cut = Some(now);
            change = self.set_rate(s, now, rate, "server policy");
        }
        match remaining {
            Some(0) => {
                let until = now.saturating_add(reset.unwrap_or_else(|| secs(1.0 / s.rate)));
                s.hold(now, until);
            }
            Some(left) => {
                // During a hold the tokens are counted at its end: leave them.
                s.refill(now);
                if s.last <= now {
                    s.tokens = s.tokens.min(f64::from(left));
                }
            }
            None => {}
        }
        change
    }

    /// Sets the rate, revoking the slots of the old schedule; the change,
    /// if any.
    fn set_rate(&self, s: &mut State, now: Duration, to: f64, why: &'static str) -> Option<RateChange> {
        let to = to.clamp(self.config.min, self.config.max);
        let from = s.rate;
        if to == from {
            return None;
        }
        s.revoke(now); // refills at the old rate first
        s.rate = to;
        Some(RateChange { from, to, why })
    }

    /// Reserves a slot: `None` for a token granted at once.
    fn reserve(&self) -> Option<Reservation<'_, C>> {
        let mut s = self.lock();
        let now = self.clock.now();
        let (seq, due) = s.reserve(now, self.config.margin);
        let wake = s.waiting.get(&seq).map(|w| w.wake.clone());
        drop(s);
        // Made only when kept: a reservation dropped gives its slot back,
        // which takes the lock.
        wake.filter(|_| due > now).map(|wake| Reservation { limiter: self, seq, due, wake, armed: true })
    }

    /// The waiter of `slot` woke: `None` if its slot stands, else a new one.
    fn wake(&self, slot: Option<Reservation<'_, C>>) -> Option<Reservation<'_, C>> {
        let r = slot?;
        let mut s = self.lock();
        let mut r = r;
        r.armed = false; // its entry is gone: nothing to give back
        if s.wake(r.seq) {
            return None;
        }
        let now = self.clock.now();
        let (seq, due) = s.reserve(now, self.config.margin);
        let wake = s.waiting.get(&seq).map(|w| w.wake.clone());
        drop(s);
        // Made only when kept: a reservation dropped gives its slot back,
        // which takes the lock.
        wake.filter(|_| due > now).map(|wake| Reservation { limiter: self, seq, due, wake, armed: true })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated with plain arithmetic that cannot panic, so
        // a poisoned lock still guards consistent numbers.
        sync::lock(&self.state)
    }
}

/// A slot that waits. Dropped before its waiter wakes (a cancelled or
/// dropped waiter), it gives the slot back.
struct Reservation<'a, C: Clock> {
    limiter: &'a AdaptiveRate<C>,
    seq: u64,
    due: Duration,
    /// Cancelled when the slot is revoked.
    wake: CancelToken,
    /// Whether the slot is still the waiter's to give back.
    armed: bool,
}

impl<C: Clock> Drop for Reservation<'_, C> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut s = self.limiter.lock();
        let now = self.limiter.clock.now();
        s.give_back(self.seq, now);
    }
}

impl<C: Clock> fmt::Debug for AdaptiveRate<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("AdaptiveRate")
            .field("rate", &s.rate)
            .field("burst", &s.burst)
            .field("limited", &s.limited)
            .finish_non_exhaustive()
    }
}
#[cfg(test)]
mod tests;
