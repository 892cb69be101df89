//! What an answer says about the rate ([`RateSignal`]), what changed
//! ([`RateChange`]), and how an [`AdaptiveRate`](crate::AdaptiveRate)
//! starts and moves ([`RateConfig`]).

use std::time::Duration;

/// What an answer said about the rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateSignal {
    /// A request succeeded (not rate-limited).
    Success,
    /// 429 or 503: cut multiplicatively; wait out `retry_after` (no grant
    /// before now + `retry_after`).
    Limited {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The server stated its policy (`RateLimit-Policy`, `RateLimit`,
    /// `X-RateLimit-*`): `limit` requests per `window`; optionally
    /// `remaining` in the current window, which resets in `reset`.
    Policy {
        /// Requests per window.
        limit: u32,
        /// The window.
        window: Duration,
        /// Requests left in the current window.
        remaining: Option<u32>,
        /// Time until the current window resets.
        reset: Option<Duration>,
        /// The bucket's size, if the server said (vatcomply's
        /// `X-RateLimit-Burst`); else one second's worth is assumed.
        burst: Option<u32>,
    },
}

/// A change of the learnt rate, for an observer ([`AdaptiveRate::on_change`](crate::AdaptiveRate::on_change)).
#[derive(Debug, Clone, PartialEq)]
pub struct RateChange {
    /// The rate before, requests per second.
    pub from: f64,
    /// The rate after, requests per second.
    pub to: f64,
    /// Why it changed, in a few words.
    pub why: &'static str,
}

/// How an [`AdaptiveRate`](crate::AdaptiveRate) starts and moves. Values out of range are
/// brought into it (see each field).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// The starting rate, requests per second (within `min..=max`).
    pub initial: f64,
    /// The lowest rate a 429 can cut to (above 0).
    pub min: f64,
    /// The highest rate (at least `min`).
    pub max: f64,
    /// The burst until the server states its own (at least 1).
    pub burst: u32,
    /// The additive step before the first 429, requests per second added
    /// per interval.
    pub increase: f64,
    /// The same as a fraction of the rate, when larger than `increase`.
    pub growth: f64,
    /// After a 429, the fraction of the rate added per interval.
    pub probe: f64,
    /// The deepest cut: a 429 leaves at least `decrease · rate` (in `0..1`).
    pub decrease: f64,
    /// How often the rate may rise, and how soon after a cut it may be cut
    /// again.
    pub interval: Duration,
    /// After a 429, how long the rate stays at what the server delivered
    /// before it probes above it.
    pub plateau: Duration,
    /// When a grant takes the first token of a full bucket, tokens start
    /// to accrue again only this many token intervals (`1/rate`) later.
    /// A server's bucket starts refilling when the burst's first request
    /// *arrives*, which may be later than it was sent (a new connection's
    /// handshake), while a later request on a warm connection arrives
    /// sooner: paced on the client's clock alone, it can reach the server
    /// a few milliseconds before its token. One interval (`1.0`) covers
    /// any such spread up to the interval itself, at the cost of one
    /// interval after each burst. 0 (the default) paces exactly.
    pub margin: f64,
}

impl Default for RateConfig {
    /// A safe start: 1 request per second, no burst, which no public API
    /// refuses (vatcomply's is 2/s with a burst of 4); at most 1000/s, and
    /// no lower than one request per 10 s. The other values are explained
    /// in the module docs.
    fn default() -> Self {
        RateConfig {
            initial: 1.0,
            min: 0.1,
            max: 1000.0,
            burst: 1,
            increase: 1.0,
            growth: 0.25,
            probe: 0.02,
            decrease: 0.5,
            interval: Duration::from_secs(1),
            plateau: Duration::from_secs(10),
            margin: 0.0,
        }
    }
}

impl RateConfig {
    /// The same, each field brought into its range.
    pub(super) fn sane(self) -> Self {
        let finite = |x: f64, or: f64| if x.is_finite() { x } else { or };
        let min = finite(self.min, 0.1).max(1e-3);
        let max = finite(self.max, 1000.0).max(min);
        RateConfig {
            initial: finite(self.initial, min).clamp(min, max),
            min,
            max,
            burst: self.burst.max(1),
            increase: finite(self.increase, 1.0).max(0.0),
            growth: finite(self.growth, 0.1).max(0.0),
            probe: finite(self.probe, 0.02).max(0.0),
            decrease: finite(self.decrease, 0.5).clamp(0.01, 0.95),
            interval: self.interval.max(Duration::from_millis(1)),
            plateau: self.plateau,
            margin: finite(self.margin, 0.0).clamp(0.0, 10.0),
        }
    }
}
