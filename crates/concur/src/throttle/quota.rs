//! [`Quota`]: a rate and a burst, checked once, for every limiter of the
//! workspace (a [`Throttle`](super::Throttle), a server's rate limit, a
//! limit kept on a broker).

use std::num::NonZeroU32;
use std::time::Duration;

/// A rate and a burst a limiter can work with: `rate` tokens per second,
/// at most `burst` at once. Checked when made ([`Quota::new`]), so a
/// limiter given one has nothing left to check.
///
/// ```
/// use concur::throttle::{Quota, QuotaError};
///
/// let public = Quota::new(2.0, 4)?;
/// assert_eq!((public.rate(), public.burst()), (2.0, 4));
/// assert_eq!(Quota::new(2.0, 0), Err(QuotaError::Burst(0)));
/// assert!(Quota::new(0.0, 1).is_err());
/// # Ok::<(), QuotaError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    rate: f64,
    burst: NonZeroU32,
}

impl Quota {
    /// The lowest rate: one token a day. Below it the next token would
    /// not be due within a day, which no caller waits for.
    pub const MIN_RATE: f64 = 1.0 / 86_400.0;

    /// `rate` tokens per second in bursts of `burst`.
    ///
    /// # Errors
    ///
    /// [`QuotaError::Rate`] for a rate that is not finite or is below
    /// [`MIN_RATE`](Self::MIN_RATE); [`QuotaError::Burst`] for a burst of 0.
    pub const fn new(rate: f64, burst: u32) -> Result<Quota, QuotaError> {
        if let Err(e) = Self::check_rate(rate) {
            return Err(e);
        }
        match NonZeroU32::new(burst) {
            Some(burst) => Ok(Quota { rate, burst }),
            None => Err(QuotaError::Burst(burst)),
        }
    }

    /// Checks a rate alone, for a rate given before its burst is known
    /// (a command line's `--rate`): the same check as [`Quota::new`]'s.
    ///
    /// # Errors
    ///
    /// [`QuotaError::Rate`], as [`Quota::new`].
    pub const fn check_rate(rate: f64) -> Result<f64, QuotaError> {
        if rate.is_finite() && rate >= Self::MIN_RATE { Ok(rate) } else { Err(QuotaError::Rate(rate)) }
    }

    /// Tokens per second.
    pub const fn rate(self) -> f64 {
        self.rate
    }

    /// Tokens allowed at once after a quiet spell.
    pub const fn burst(self) -> u32 {
        self.burst.get()
    }

    /// The time between two tokens at the rate.
    pub fn interval(self) -> Duration {
        super::secs(1.0 / self.rate)
    }
}

/// A rate or a burst a limiter cannot work with.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The rate is not finite or is below [`Quota::MIN_RATE`].
    #[error("invalid rate {0:?}: {expected}", expected = QuotaError::RATE)]
    Rate(f64),
    /// The burst must be at least one token.
    #[error("invalid burst {0}: {expected}", expected = QuotaError::BURST)]
    Burst(u32),
    /// The chapter's bucket holds at most `rate` tokens, so below 1 it could
    /// never grant a single one.
    #[error("invalid rate {0:?} for the chapter's throttle: expected at least 1 token per second")]
    ChapterRate(f64),
}

impl QuotaError {
    const RATE: &'static str = "expected a number per second, at least one a day (0.0000116)";
    const BURST: &'static str = "expected at least 1";

    /// What is expected instead, for a message that shows the value as
    /// it was given (e.g. `invalid rate '1e-9/s': expected ...`).
    pub fn expected(&self) -> &'static str {
        match self {
            QuotaError::Rate(_) => Self::RATE,
            QuotaError::Burst(_) => Self::BURST,
            QuotaError::ChapterRate(_) => "expected at least 1 token per second",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_holds_only_what_a_limiter_can_work_with() {
        let q = Quota::new(2.0, 4).expect("valid");
        assert_eq!((q.rate(), q.burst(), q.interval()), (2.0, 4, Duration::from_millis(500)));
        assert!(Quota::new(Quota::MIN_RATE, 1).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300, Quota::MIN_RATE * 0.99] {
            let e = Quota::new(bad, 1).expect_err("bad rate");
            assert!(matches!(e, QuotaError::Rate(r) if r.to_bits() == bad.to_bits()), "{e}");
            assert!(matches!(Quota::check_rate(bad), Err(QuotaError::Rate(r)) if r.to_bits() == bad.to_bits()));
        }
        assert_eq!(Quota::new(1.0, 0), Err(QuotaError::Burst(0)));
    }

    #[test]
    fn errors_name_the_value_and_what_is_expected() {
        assert_eq!(
            QuotaError::Rate(-2.5).to_string(),
            "invalid rate -2.5: expected a number per second, at least one a day (0.0000116)"
        );
        // A tiny rate is shown short, not as 300 zeros.
        assert!(QuotaError::Rate(1e-300).to_string().starts_with("invalid rate 1e-300: "));
        assert_eq!(QuotaError::Burst(0).to_string(), "invalid burst 0: expected at least 1");
        assert!(QuotaError::Rate(0.0).to_string().ends_with(QuotaError::Rate(0.0).expected()));
    }
}
