//! Retries with exponential backoff and full jitter, honouring `Retry-After`
//! (and jittering after it too, so that workers do not retry in lockstep).
//!
//! Every model fetches through [`RetryPolicy`], so `--retries` means the same
//! thing whichever model runs: up to K more attempts on 5xx, 429, timeouts
//! and connection errors; never on other 4xx answers, which would fail again.
//! Each retry is logged at info level (`rates -v`) with its reason and wait.
//!
//! A 429 with a `Retry-After` is not a failure but "not yet": the server
//! says when to come back, and a rate-limited public API (vatcomply: 2/s,
//! burst 4) answers it routinely to any client that starts faster than
//! its limit. Such an answer spends none of the retries; the item waits
//! as told and asks again, within a [`patience`](RetryPolicy::patience)
//! (the waits the server asked for, added up), after which it fails as
//! any other 429 would.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::FetchError;

/// How often and how patiently to retry a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub retries: u32,
    /// The backoff ceiling of the first retry; it doubles with each retry.
    pub base_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
    /// The most one item waits, in all, on 429s that said when to come
    /// back ("not yet"): their `Retry-After`s added up, each at least a
    /// second (so that `Retry-After: 0` for ever ends too). Within it they
    /// cost no retry; past it a 429 is an ordinary retryable failure.
    #[serde(default = "default_patience")]
    pub patience: Duration,
}

/// The least patience one "not yet" uses, whatever wait it asked for.
const MIN_NOT_YET_CHARGE: Duration = Duration::from_secs(1);

fn default_patience() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            patience: default_patience(),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    /// Wait this long and try again, spending a retry.
    Retry(Duration),
    /// The server said "not yet": wait this long and ask again, spending
    /// no retry.
    NotYet(Duration),
    /// The error is final.
    Fail,
}

/// A request that failed for good: the last error, and how many attempts
/// were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{error} (after {attempts} attempt{s})", s = if *attempts == 1 { "" } else { "s" })]
pub struct Failure {
    /// The last attempt's error.
    pub error: FetchError,
    /// Attempts made, the first included (0 when the run was cancelled first).
    pub attempts: u32,
}

impl RetryPolicy {
    /// No retries: the first error is final.
    pub fn none() -> Self {
        RetryPolicy { retries: 0, ..RetryPolicy::default() }
    }

    /// The wait before retry number `retry` (1 for the first retry) after
    /// `error`: a uniformly random duration up to the ceiling
    /// `min(max_delay, base_delay · 2^(retry-1))` ("full jitter", so many
    /// clients failing together do not retry together).
    ///
    /// After a server's `Retry-After`, the wait is that long plus a random
    /// part, uniform up to `after / 4` (kept between the ceiling and
    /// `max_delay`). Every worker that got the same answer must wait at
    /// least `after`; waiting exactly that would bring them all back at
    /// the same instant, and the burst that earned the 429 would repeat.
    /// `Retry-After` comes in whole seconds, so the ceiling alone (100 ms
    /// at first) would still pack them into a tenth of the window; a
    /// quarter of the wait spreads them while adding at most 25% (and never
    /// more than `max_delay`) to what the server asked.
    pub fn backoff(&self, retry: u32, error: &FetchError, rng: &mut impl Rng) -> Duration {
        let ceiling = self.base_delay.saturating_mul(1u32 << (retry.saturating_sub(1)).min(20)).min(self.max_delay);
        match error.retry_after() {
            Some(after) => {
                let window = (after / 4).min(self.max_delay).max(ceiling);
                after.saturating_add(window.mul_f64(rng.random::<f64>()))
            }
            None => ceiling.mul_f64(rng.random::<f64>()),
        }
    }

    /// Runs `attempt` until it succeeds, fails with a final error, or the
    /// retries are used up, calling `sleep` with each backoff.
    pub fn run<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, FetchError>,
        mut sleep: impl FnMut(Duration),
    ) -> Result<T, Failure> {
        let mut rng = rand::rng();
        let mut tally = Tally::default();
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(error) => match self.next(&mut tally, &error, &mut rng) {
                    Next::Retry(wait) | Next::NotYet(wait) => sleep(wait),
                    Next::Fail => return Err(tally.failure(error)),
                },
            }
        }
    }

    /// After `error`: retry (and after how long), ask again (a "not yet"),
    /// or fail; counts the attempt in `tally` and logs the decision.
    fn next(&self, tally: &mut Tally, error: &FetchError, rng: &mut impl Rng) -> Next {
        // A cancelled run makes no further attempt; this one never happened.
        if *error == FetchError::Cancelled {
            return Next::Fail;
        }
        tally.attempts += 1;
        // Each "not yet" is charged at least a second of patience: a server
        // that says `Retry-After: 0` for ever must still run it out.
        if let Some(after) = error.not_yet()
            && let charged = after.max(MIN_NOT_YET_CHARGE)
            && tally.waited.saturating_add(charged) <= self.patience
        {
            tally.attempts -= 1;
            tally.waited += charged;
            tracing::info!(
                target: "rates::retry",
                "429 Too Many Requests, not yet: asking again in {after:.2?} (Retry-After {}s)",
                after.as_secs()
            );
            return Next::NotYet(after);
        }
        if error.is_retryable() && tally.attempts <= self.retries {
            let wait = self.backoff(tally.attempts, error, rng);
            self.log_retry(tally.attempts, error, wait);
            return Next::Retry(wait);
        }
        Next::Fail
    }

    /// [`RetryPolicy::run`] for async code: `attempt` makes one request and
    /// backoffs sleep on tokio's timer (so paused-clock tests are exact).
    pub async fn run_async<T, Fut>(&self, mut attempt: impl FnMut() -> Fut) -> Result<T, Failure>
    where
        Fut: std::future::Future<Output = Result<T, FetchError>>,
    {
        let mut tally = Tally::default();
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(error) => {
                    // Decided first: the thread's generator is not held across the sleep.
                    let next = self.next(&mut tally, &error, &mut rand::rng());
                    match next {
                        Next::Retry(wait) | Next::NotYet(wait) => tokio::time::sleep(wait).await,
                        Next::Fail => return Err(tally.failure(error)),
                    }
                }
            }
        }
    }
}

/// One item's attempts so far, and its waits on "not yet".
#[derive(Debug, Default)]
struct Tally {
    /// Attempts that count (not the "not yet"s).
    attempts: u32,
    waited: Duration,
}

impl Tally {
    fn failure(&self, error: FetchError) -> Failure {
        Failure { error, attempts: self.attempts }
    }
}

impl RetryPolicy {
    /// One line per retry, at info level: which retry, the wait, and why
    /// (a 429 with the `Retry-After` the server asked for).
    fn log_retry(&self, attempt: u32, error: &FetchError, wait: Duration) {
        let retries = self.retries;
        match error {
            FetchError::Status { status: 429, retry_after, .. } => {
                let asked = retry_after.map_or_else(|| "none".to_string(), |d| format!("{}s", d.as_secs()));
                tracing::info!(
                    target: "rates::retry",
                    "retry {attempt}/{retries} in {wait:.2?} after 429 Too Many Requests (Retry-After {asked})"
                );
            }
            _ => tracing::info!(target: "rates::retry", "retry {attempt}/{retries} in {wait:.2?} after {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16, retry_after: Option<Duration>) -> FetchError {
        FetchError::Status { status: s, detail: String::new(), retry_after, limit: None }
    }

    #[test]
    fn retries_retryable_errors_up_to_the_limit() {
        let policy = RetryPolicy { retries: 3, ..RetryPolicy::default() };
        let mut calls = 0;
        let mut sleeps = Vec::new();
        let r: Result<(), _> = policy.run(
            || {
                calls += 1;
                Err(status(503, None))
            },
            |d| sleeps.push(d),
        );
        assert_eq!(calls, 4);
        assert_eq!(r, Err(Failure { error: status(503, None), attempts: 4 }));
        assert_eq!(sleeps.len(), 3);
        for (i, d) in sleeps.iter().enumerate() {
            assert!(*d <= policy.base_delay * (1 << i), "retry {i} waited {d:?}");
        }
    }

    #[test]
    fn not_yet_spends_no_retry() {
        // vatcomply's answer to a client past its limit, four times, then rates.
        let policy = RetryPolicy { retries: 1, ..RetryPolicy::default() };
        let mut calls = 0;
        let mut sleeps = Vec::new();
        let r = policy.run(
            || {
                calls += 1;
                if calls <= 4 { Err(status(429, Some(Duration::from_secs(1)))) } else { Ok(calls) }
            },
            |d| sleeps.push(d),
        );
        assert_eq!(r, Ok(5), "four 429s with Retry-After, one retry allowed: still a success");
        assert_eq!(sleeps, vec![Duration::from_secs(1); 4], "each waits exactly as the server asked");
        // A failure after not-yets counts only the real attempts.
        let mut calls = 0;
        let r: Result<(), _> = policy.run(
            || {
                calls += 1;
                if calls <= 3 { Err(status(429, Some(Duration::from_secs(1)))) } else { Err(status(500, None)) }
            },
            |_| {},
        );
        assert_eq!(r.map_err(|f| f.attempts), Err(2), "two 500s: the first attempt and its one retry");
    }

    #[test]
    fn not_yet_is_bounded_by_patience() {
        // A server that says "not yet" for ever: the waits add up to the
        // patience, then the 429s spend the retries, then the item fails.
        let policy = RetryPolicy { retries: 2, patience: Duration::from_secs(10), ..RetryPolicy::default() };
        let mut calls = 0;
        let mut asked = Duration::ZERO;
        let r: Result<(), _> = policy.run(
            || {
                calls += 1;
                Err(status(429, Some(Duration::from_secs(3))))
            },
            |d| asked += d,
        );
        assert_eq!(r.map_err(|f| f.attempts), Err(3));
        assert_eq!(calls, 3 + 3, "three not-yets (9 s of 10), then three attempts that count");
        assert!(asked >= Duration::from_secs(9 + 2 * 3), "{asked:?}");
        // A 429 without Retry-After is an ordinary retry.
        let mut calls = 0;
        let r: Result<(), _> = RetryPolicy { retries: 1, ..RetryPolicy::default() }.run(
            || {
                calls += 1;
                Err(status(429, None))
            },
            |_| {},
        );
        assert_eq!((calls, r.map_err(|f| f.attempts)), (2, Err(2)));
    }

    #[test]
    fn a_server_that_says_not_yet_now_for_ever_runs_out_the_patience() {
        // `Retry-After: 0` on every answer: each costs a second of patience.
        let policy = RetryPolicy { retries: 1, patience: Duration::from_secs(5), ..RetryPolicy::default() };
        let mut calls = 0;
        let r: Result<(), _> = policy.run(
            || {
                calls += 1;
                Err(status(429, Some(Duration::ZERO)))
            },
            |_| {},
        );
        assert_eq!(r.map_err(|f| f.attempts), Err(2));
        assert_eq!(calls, 5 + 2, "five not-yets, then the attempt and its one retry");
    }

    #[tokio::test(start_paused = true)]
    async fn not_yet_waits_on_the_async_path_too() {
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let r = RetryPolicy::none()
            .run_async(|| {
                calls += 1;
                let answer = if calls <= 2 { Err(status(429, Some(Duration::from_secs(2)))) } else { Ok(calls) };
                async move { answer }
            })
            .await;
        assert_eq!(r, Ok(3));
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }

    #[test]
    fn never_retries_client_errors() {
        let mut calls = 0;
        let r: Result<(), _> = RetryPolicy::default().run(
            || {
                calls += 1;
                Err(status(404, None))
            },
            |_| panic!("must not sleep"),
        );
        assert_eq!((calls, r.map_err(|f| f.attempts)), (1, Err(1)));
    }

    #[test]
    fn succeeds_after_transient_failures() {
        let mut calls = 0;
        let r = RetryPolicy::default().run(
            || {
                calls += 1;
                if calls < 3 { Err(FetchError::Timeout("t".into())) } else { Ok(calls) }
            },
            |_| {},
        );
        assert_eq!(r, Ok(3));
    }

    #[test]
    fn retries_after_retry_after_are_spread_not_in_lockstep() {
        use rand::SeedableRng;
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        for (after_secs, window) in
            [(1, Duration::from_millis(250)), (2, Duration::from_millis(500)), (60, policy.max_delay)]
        {
            let after = Duration::from_secs(after_secs);
            let mut waits: Vec<Duration> =
                (0..64).map(|_| policy.backoff(1, &status(429, Some(after)), &mut rng)).collect();
            waits.sort();
            let (first, last) = (waits[0], waits[waits.len() - 1]);
            assert!(first >= after, "{first:?} is before Retry-After {after:?}");
            assert!(last <= after + window, "{last:?} is beyond {after:?} + {window:?}");
            waits.dedup();
            assert!(waits.len() > 60, "only {} distinct waits of 64", waits.len());
            assert!(last - first > window / 2, "64 waits within {:?} of {window:?}", last - first);
        }
        // Retry-After 0: the ordinary backoff's window still applies.
        let zero = policy.backoff(3, &status(429, Some(Duration::ZERO)), &mut rng);
        assert!(zero <= policy.base_delay * 4, "{zero:?}");
    }

    #[test]
    fn honours_retry_after_and_caps_backoff() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rng();
        let after = Duration::from_secs(2);
        for retry in 1..30 {
            assert!(policy.backoff(retry, &status(429, Some(after)), &mut rng) >= after);
            assert!(policy.backoff(retry, &status(500, None), &mut rng) <= policy.max_delay);
        }
    }
}
