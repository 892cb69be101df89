//! `--rate auto` and `--workers auto`: the adaptive limits of `concur`
//! (`concur::adaptive`) around every attempt of a run, and what they
//! learnt, as the options that would reuse it.

use std::sync::Arc;

use concur::adaptive::{AdaptiveConcurrency, AdaptiveRate, ConcurrencyConfig, LimitChange, RateChange, RateConfig};

use super::{Fetcher, Model};

/// The values the adaptive limits ended the run with, as the options that
/// would reuse them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learnt {
    /// `--rate auto`: the rate and burst.
    pub rate: Option<(f64, u32)>,
    /// `--workers auto`: the bound on requests in flight.
    pub workers: Option<usize>,
}

impl std::fmt::Display for Learnt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("learnt:")?;
        if let Some((rate, burst)) = self.rate {
            write!(f, " --rate {} --burst {burst}", round_rate(rate))?;
        }
        if let Some(w) = self.workers {
            write!(f, " --workers {w}")?;
        }
        Ok(())
    }
}

/// A rate with three significant digits: what a user would type.
fn round_rate(rate: f64) -> f64 {
    if rate <= 0.0 || !rate.is_finite() {
        return rate;
    }
    let scale = 10f64.powi(2 - rate.log10().floor() as i32);
    (rate * scale).round() / scale
}

/// The adaptive limits of a run: `--rate auto` and `--workers auto`, each
/// shared by every worker, the process pool's included (they are kept in
/// this process, around each attempt, as the throttle is).
pub struct AutoLimits {
    rate: Option<Arc<AdaptiveRate>>,
    workers: Option<Arc<AdaptiveConcurrency>>,
}

impl AutoLimits {
    /// A learnt rate starting from `burst` at once, if given; a learnt
    /// bound on requests in flight, up to `max_workers`, if given.
    pub fn new(burst: Option<u32>, max_workers: Option<usize>) -> Self {
        AutoLimits {
            rate: burst.map(|burst| {
                let config = RateConfig { burst, ..server_rate() };
                Arc::new(AdaptiveRate::new(config).on_change(log_rate_change))
            }),
            workers: max_workers.map(|max| {
                let defaults = ConcurrencyConfig::default();
                let config = ConcurrencyConfig { max, initial: defaults.initial.min(max), ..defaults };
                Arc::new(AdaptiveConcurrency::new(config).on_change(log_limit_change))
            }),
        }
    }

    /// `fetcher`, taking from these limits around every attempt.
    pub fn apply(&self, mut fetcher: Fetcher) -> Fetcher {
        if let Some(r) = &self.rate {
            fetcher = fetcher.with_adaptive_rate(Arc::clone(r));
        }
        if let Some(w) = &self.workers {
            fetcher = fetcher.with_adaptive_concurrency(Arc::clone(w));
        }
        fetcher
    }

    /// What the limits have learnt so far; `None` without any.
    pub fn learnt(&self) -> Option<Learnt> {
        (self.rate.is_some() || self.workers.is_some()).then(|| Learnt {
            rate: self.rate.as_ref().map(|r| (r.rate(), r.burst())),
            workers: self.workers.as_ref().map(|w| w.limit()),
        })
    }
}

/// How a learnt rate paces requests to a server: [`RateConfig`]'s
/// defaults, with a token interval of margin after each burst, so that the
/// server's clock, not only ours, sees its limit kept.
pub fn server_rate() -> RateConfig {
    RateConfig { margin: 1.0, ..RateConfig::default() }
}

/// The most requests in flight `--workers auto` may learn: the size of
/// the pool the model starts. Threads are cheap; every worker process is
/// a whole program with its own connections.
pub const fn auto_pool_size(model: Model) -> std::num::NonZeroUsize {
    match model {
        Model::ProcessPool => std::num::NonZeroUsize::new(32),
        _ => std::num::NonZeroUsize::new(256),
    }
    .expect("a pool size above zero")
}

pub(super) fn log_rate_change(c: &RateChange) {
    tracing::info!(target: "rates::adaptive", "rate {:.3}/s -> {:.3}/s: {}", c.from, c.to, c.why);
}

fn log_limit_change(c: &LimitChange) {
    tracing::info!(target: "rates::adaptive", "requests in flight {} -> {}: {}", c.from, c.to, c.why);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learnt_values_read_as_the_options_that_reuse_them() {
        let both = Learnt { rate: Some((4.98765, 5)), workers: Some(12) };
        assert_eq!(both.to_string(), "learnt: --rate 4.99 --burst 5 --workers 12");
        let rate = Learnt { rate: Some((0.012345, 1)), workers: None };
        assert_eq!(rate.to_string(), "learnt: --rate 0.0123 --burst 1");
        assert_eq!(Learnt { rate: None, workers: Some(3) }.to_string(), "learnt: --workers 3");
    }

    #[test]
    fn auto_limits_report_only_what_was_asked() {
        assert_eq!(AutoLimits::new(None, None).learnt(), None);
        let workers = AutoLimits::new(None, Some(2)).learnt().expect("asked");
        assert!(workers.rate.is_none() && workers.workers.is_some_and(|w| (1..=2).contains(&w)));
        let rate = AutoLimits::new(Some(3), None).learnt().expect("asked");
        assert!(rate.workers.is_none() && rate.rate.is_some_and(|(r, _)| r > 0.0));
    }
}
