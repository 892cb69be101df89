//! The adaptive concurrency limit.

use std::marker::PhantomData;
use std::time::Duration;

use crate::cancel::{CancelToken, Cancelled};
use crate::throttle::{Clock, SystemClock};

/// A change of the learnt limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitChange {
    /// The limit before.
    pub from: usize,
    /// The limit after.
    pub to: usize,
    /// Why.
    pub why: &'static str,
}

/// How an [`AdaptiveConcurrency`] starts and moves.
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyConfig {
    /// The starting limit.
    pub initial: usize,
    /// The lowest limit.
    pub min: usize,
    /// The highest limit.
    pub max: usize,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig { initial: 4, min: 1, max: 256 }
    }
}

/// A limit on requests in flight, learnt from their latency.
pub struct AdaptiveConcurrency<C: Clock = SystemClock> {
    clock: C,
    config: ConcurrencyConfig,
}

impl AdaptiveConcurrency<SystemClock> {
    /// A limiter on the system clock.
    pub fn new(config: ConcurrencyConfig) -> Self {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> AdaptiveConcurrency<C> {
    /// A limiter on the given clock.
    pub fn with_clock(config: ConcurrencyConfig, clock: C) -> Self {
        AdaptiveConcurrency { clock, config }
    }

    /// Calls `f` on every change of the limit.
    pub fn on_change(self, f: impl Fn(&LimitChange) + Send + Sync + 'static) -> Self {
        let _ = f;
        self
    }

    /// Takes a slot, blocking while the limit is reached.
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if `cancel` is cancelled first.
    pub fn acquire_cancellable(&self, cancel: &CancelToken) -> Result<Permit<'_, C>, Cancelled> {
        let _ = cancel;
        todo!()
    }

    /// Takes a slot, waiting (without blocking the thread) while the limit is reached.
    #[cfg(feature = "async")]
    pub async fn acquire_async(&self) -> Permit<'_, C> {
        todo!()
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.config.initial
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        0
    }
}

/// A slot in flight; measures its own latency.
pub struct Permit<'a, C: Clock> {
    limiter: &'a AdaptiveConcurrency<C>,
    start: Duration,
    _p: PhantomData<()>,
}

impl<C: Clock> Permit<'_, C> {
    /// The request got an answer: samples its latency.
    pub fn success(self) {
        let _ = (self.limiter.clock.now(), self.start);
    }

    /// The request timed out or was refused for overload.
    pub fn overload(self) {}
}
