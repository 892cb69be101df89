//! The fetch job's gates and what it learns: the rate a run paces itself
//! by, what each answer tells the adaptive limits, and whether an attempt
//! must go through the gates again.

use concur::adaptive::{AdaptiveRate, Permit, RateSignal};
use concur::throttle::SystemClock;

use super::Fetcher;
use crate::{FetchError, Reply};

impl Fetcher {
    /// The rate the run paces itself by: `--rate auto`'s, else the one
    /// learnt from the server's 429s, if any yet.
    pub(super) fn rate_limit(&self) -> Option<&AdaptiveRate> {
        self.adaptive_rate.as_deref().or_else(|| self.learnt_rate.get())
    }

    /// Whether a 429 came while this attempt waited at its gates: the run
    /// is paused, or a rate was learnt that the attempt (which had none,
    /// `had_rate` false) did not wait for. Then it goes through the gates
    /// again rather than join the burst that earned the 429 (a run of 8
    /// in flight, waiting on permits, drew 61 answers of 429 that way).
    pub(super) fn limited_since(&self, had_rate: bool) -> bool {
        self.pause.is_on() || (!had_rate && self.rate_limit().is_some())
    }

    /// The rate and burst learnt from the server's 429s in a run without
    /// `--rate auto`, if it met any: what `--rate`/`--burst` would reuse.
    pub fn learnt_limit(&self) -> Option<(f64, u32)> {
        self.learnt_rate.get().map(|r| (r.rate(), r.burst()))
    }

    /// Tells the adaptive limits what an attempt's answer said.
    pub(super) fn learn(&self, permit: Option<Permit<'_, SystemClock>>, answer: &Result<Reply, FetchError>) {
        match answer {
            Ok(reply) => {
                if let Some(p) = permit {
                    p.success();
                }
                if let Some(r) = self.rate_limit() {
                    if let Some(l) = reply.limit {
                        r.record(policy(l));
                    }
                    r.record(RateSignal::Success);
                }
            }
            Err(e) if is_overload(e) => {
                if let Some(p) = permit {
                    p.overload();
                }
                if let FetchError::Status { status, retry_after, limit, .. } = e {
                    // Not before the server said: no worker of the run.
                    if let Some(after) = retry_after {
                        self.pause.hold(*after);
                    }
                    // A 429 is the server's limit: a run that had none
                    // learns it now, and paces by it from here on.
                    let rate = match (self.rate_limit(), status) {
                        (Some(r), _) => Some(r),
                        (None, 429) => Some(self.learnt_rate.get_or_init(learnt_rate)),
                        (None, _) => None,
                    };
                    if let Some(r) = rate {
                        if let Some(l) = limit {
                            r.record(policy(*l));
                        }
                        r.record(RateSignal::Limited { retry_after: *retry_after });
                    }
                }
            }
            // Cancelled, or an answer that says nothing of the server's
            // load (a 404, a 500 of its own, a malformed body): the permit
            // is given back without a sample.
            Err(_) => drop(permit),
        }
    }

    /// Writes the rate and the bound on requests in flight to the trace,
    /// when they changed.
    pub(super) fn trace_limits(&self) {
        let Some(trace) = &self.trace else { return };
        if let Some(r) = self.rate_limit() {
            trace.rate(r.rate(), r.burst());
        }
        if let Some(c) = &self.concurrency {
            trace.concurrency_limit(c.limit());
        }
    }
}

/// What an answer's rate-limit headers said, as the adaptive rate reads it;
/// a wait it implies (nothing left until a reset) is announced.
fn policy(l: crate::RateLimitInfo) -> RateSignal {
    if let (Some(0), Some(reset)) = (l.remaining, l.reset) {
        super::super::pause::announce_wait(reset, "the server said no request is left until its limit resets");
    }
    RateSignal::Policy { limit: l.limit, window: l.window, remaining: l.remaining, reset: l.reset, burst: l.burst }
}

/// The rate a run without `--rate auto` paces itself by once the server
/// refused it: `--rate auto`'s, started from the first 429 (whose headers,
/// if it has them, set it at once), with the margin that keeps the
/// server's clock, not only ours, within the limit.
fn learnt_rate() -> AdaptiveRate {
    AdaptiveRate::new(super::super::auto::server_rate()).on_change(super::super::auto::log_rate_change)
}

/// Whether a failed attempt says the server is overloaded or limiting us:
/// a 429 or 503, a timeout, a connection refused or cut.
fn is_overload(e: &FetchError) -> bool {
    match e {
        FetchError::Status { status, .. } => matches!(status, 429 | 503),
        FetchError::Timeout(_) | FetchError::Connect(_) | FetchError::Transport(_) => true,
        _ => false,
    }
}
