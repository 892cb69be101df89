//! The adaptive rate.

use std::time::Duration;

use crate::cancel::{CancelToken, Cancelled};
use crate::throttle::{Clock, NotUntil, SystemClock};

/// What an answer said about the rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateSignal {
    /// A request succeeded (not rate-limited).
    Success,
    /// 429 or 503: cut multiplicatively; no grant before `retry_after`.
    Limited {
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The server stated its policy: `limit` requests per `window`.
    Policy {
        /// Requests per window.
        limit: u32,
        /// The window.
        window: Duration,
        /// Requests left in the current window.
        remaining: Option<u32>,
        /// When the current window resets.
        reset: Option<Duration>,
    },
}

/// A change of the learnt rate.
#[derive(Debug, Clone, PartialEq)]
pub struct RateChange {
    /// The rate before, requests per second.
    pub from: f64,
    /// The rate after.
    pub to: f64,
    /// Why.
    pub why: &'static str,
}

/// How an [`AdaptiveRate`] starts and moves.
#[derive(Debug, Clone, Copy)]
pub struct RateConfig {
    /// The starting rate, requests per second.
    pub initial: f64,
    /// The lowest rate.
    pub min: f64,
    /// The highest rate.
    pub max: f64,
    /// The bucket's burst.
    pub burst: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig { initial: 1.0, min: 0.1, max: 1000.0, burst: 1 }
    }
}

/// A rate limit learnt from the answers.
pub struct AdaptiveRate<C: Clock = SystemClock> {
    clock: C,
    config: RateConfig,
}

impl AdaptiveRate<SystemClock> {
    /// A limiter on the system clock.
    pub fn new(config: RateConfig) -> Self {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> AdaptiveRate<C> {
    /// A limiter on the given clock.
    pub fn with_clock(config: RateConfig, clock: C) -> Self {
        AdaptiveRate { clock, config }
    }

    /// Calls `f` on every change of the learnt rate.
    pub fn on_change(self, f: impl Fn(&RateChange) + Send + Sync + 'static) -> Self {
        let _ = f;
        self
    }

    /// Takes a token, blocking until it is due, unless `cancel` is cancelled.
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if the token is cancelled first.
    pub fn acquire_cancellable(&self, cancel: &CancelToken) -> Result<(), Cancelled> {
        let _ = cancel;
        todo!()
    }

    /// Takes a token, sleeping the task until it is due.
    #[cfg(feature = "async")]
    pub async fn acquire_async(&self) {
        todo!()
    }

    /// Takes a token if one is available now.
    ///
    /// # Errors
    ///
    /// [`NotUntil`], saying when one will be.
    pub fn try_acquire(&self) -> Result<(), NotUntil> {
        todo!()
    }

    /// Learns from an answer.
    pub fn record(&self, signal: RateSignal) {
        let _ = signal;
        todo!()
    }

    /// The learnt rate, requests per second.
    pub fn rate(&self) -> f64 {
        self.config.initial
    }

    /// The bucket's burst.
    pub fn burst(&self) -> u32 {
        self.config.burst
    }

    /// How many `Limited` signals were recorded.
    pub fn limited(&self) -> u64 {
        let _ = self.clock.now();
        0
    }
}
