//! Fault injection (`docs/API.md`, "What the project's server adds"): a
//! per-client rate limit that refuses as the public service refuses, a
//! capacity that queues requests beyond it, latency with jitter, and random
//! failures — the misbehaviour of a real remote service, reproduced on
//! loopback.
//!
//! # The rate limit
//!
//! A token bucket (rate `R`/s, burst `B`) per client IP and per route:
//! `/rates` and `/currencies` each have their own, as on vatcomply, and
//! nothing else is limited. Past it, vatcomply's answer exactly:
//!
//! ```text
//! HTTP/1.1 429 Too Many Requests
//! retry-after: 1
//! x-ratelimit-limit: 2
//! x-ratelimit-burst: 4
//! content-type: application/json
//!
//! {"detail":"Rate limit exceeded. Try again in 1 seconds.","retry_after":1}
//! ```
//!
//! `retry-after` is the wait for one token in whole seconds, rounded up, at
//! least 1; `x-ratelimit-limit` is `R` as given (requests per second),
//! `x-ratelimit-burst` is `B`. A served answer says nothing of the limit.
//!
//! # The standard headers, on request
//!
//! With [`crate::ServerOptions::rate_limit_headers`] every answer of a
//! limited route (429s included) also carries the fields of the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers-10` (September 2025: a policy item
//! is a quoted string, `t` is the time until more quota is available),
//! which vatcomply does not send:
//!
//! ```text
//! RateLimit-Policy: "default";q=4;w=2
//! RateLimit: "default";r=3;t=1
//! ```
//!
//! The bucket has no window; [`Policy::of`] maps it to the largest quota
//! `q` per whole-second window `w` with `q ≤ B` and `q ≤ R·w`. So a client
//! that sends at `q/w` per second never exceeds `R`, and one that sends `q`
//! at once at the start of each window never finds the bucket empty either
//! (it holds `B ≥ q`, and refills `R·w ≥ q` per window). The policy is exact
//! when `R` is a whole number not above `B` (`--rate-limit 5 --burst 5`: 5
//! per 1 s) or `B/R` is (`2/s`, burst 4: 4 per 2 s); otherwise it is below
//! `R` (burst 1 at 10/s: 1 per 1 s, since a window is at least a second).
//!
//! `r` is the whole requests left in the bucket (at most `q`); `t` is the
//! seconds, rounded up, until one more is (on a 429 the same as
//! `Retry-After`). `RateLimit-Policy` never changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use concur::sync;
use concur::throttle::{Clock, Quota, SystemClock};
use rand::Rng;

use crate::Shared;
use crate::metrics::Route;

/// The public service's rate limit: 2 requests per second, 4 at once,
/// per client and route.
pub const PUBLIC_LIMIT: Quota = match Quota::new(2.0, 4) {
    Ok(q) => q,
    Err(_) => panic!("2 per second in bursts of 4 is a quota"),
};

/// A rate limit as the headers advertise it: `quota` requests per `window`
/// seconds (see the module docs for the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Requests per window (`q`, `X-RateLimit-Limit`).
    pub quota: u64,
    /// The window in whole seconds (`w`).
    pub window: u64,
}

/// The largest integer structured fields allow (RFC 9651).
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// The most windows [`Policy::of`] tries below the one that holds a whole
/// burst: it runs once per server, and a limit slower than this many
/// seconds per request is a test's, not a service's.
const POLICY_SEARCH: u64 = 100_000;

/// Slack in token counts, so that a client that paces itself exactly is not
/// refused for a rounding error of the floating-point refill.
const EPS: f64 = 1e-9;

impl Policy {
    /// The policy of `limit`: the largest `q/w` over whole seconds `w` with
    /// `q ≤ burst` and `q ≤ rate·w`, the longer window on a tie (it shows
    /// more of the burst).
    pub fn of(limit: Quota) -> Policy {
        let burst = u64::from(limit.burst());
        // Long enough to refill a whole burst: `burst` per it is within the rate.
        let fill = (f64::from(limit.burst()) / limit.rate()).ceil().clamp(1.0, SF_INTEGER_MAX as f64) as u64;
        let mut best = Policy { quota: burst, window: fill };
        for window in 1..fill.min(POLICY_SEARCH) {
            let quota = ((limit.rate() * window as f64 + EPS).floor() as u64).min(burst);
            // quota/window > best.quota/best.window, without rounding.
            if quota >= 1 && u128::from(quota) * u128::from(best.window) > u128::from(best.quota) * u128::from(window) {
                best = Policy { quota, window };
            }
        }
        best
    }
}

/// One client's bucket after a request, as the headers report it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Standing {
    /// Whole requests left in the bucket.
    pub remaining: u64,
    /// Until one more request is allowed (zero when the bucket is full).
    pub next: Duration,
}

/// A request refused by the rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Refused {
    /// How long the client should wait.
    pub wait: Duration,
    /// The bucket, which the refusal did not change.
    pub standing: Standing,
}

/// Seconds as a duration, saturating instead of panicking on huge values.
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// A duration in whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A token bucket's contents at an instant.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

impl Bucket {
    /// The tokens at `now`, refilled since the last look.
    fn refill(&mut self, now: Duration, limit: Quota) -> f64 {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.rate()).min(f64::from(limit.burst()));
        self.at = now;
        self.tokens
    }

    fn standing(&self, limit: Quota) -> Standing {
        let whole = (self.tokens + EPS).floor().max(0.0);
        let next = if whole >= f64::from(limit.burst()) {
            Duration::ZERO
        } else {
            secs((whole + 1.0 - self.tokens) / limit.rate())
        };
        Standing { remaining: whole as u64, next }
    }

    /// Takes a token at `now` if there is one.
    fn take(&mut self, now: Duration, limit: Quota) -> Result<Standing, Refused> {
        let tokens = self.refill(now, limit);
        if tokens + EPS >= 1.0 {
            self.tokens = (tokens - 1.0).max(0.0);
            Ok(self.standing(limit))
        } else {
            Err(Refused { wait: secs((1.0 - tokens) / limit.rate()), standing: self.standing(limit) })
        }
    }
}

/// A token bucket per client IP and route, created on its first request.
/// Buckets that have filled up again are forgotten once there are many, so
/// a stream of distinct clients cannot grow the map without bound.
///
/// Its own small bucket rather than `concur::Throttle`, which answers only
/// "yes" or "not until": the headers need what is left.
#[derive(Debug)]
pub(crate) struct Limiter<C = SystemClock> {
    limit: Option<Quota>,
    clock: C,
    buckets: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    by_ip: HashMap<(Route, IpAddr), Bucket>,
    /// Prune when the map reaches this size: twice the survivors of the
    /// last pruning, so pruning costs O(1) per new client, amortised.
    prune_at: usize,
}

/// The fewest buckets worth pruning.
const PRUNE_MIN: usize = 1024;

impl Limiter {
    pub(crate) fn new(limit: Option<Quota>) -> Self {
        Limiter::with_clock(limit, SystemClock::new())
    }
}

impl<C: Clock> Limiter<C> {
    pub(crate) fn with_clock(limit: Option<Quota>, clock: C) -> Self {
        Limiter { limit, clock, buckets: Mutex::new(Buckets { by_ip: HashMap::new(), prune_at: PRUNE_MIN }) }
    }

    /// Buckets held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        sync::lock(&self.buckets).by_ip.len()
    }

    /// `None` without a rate limit; else whether to serve the request from
    /// `ip` on `route`, and the client's bucket of that route after it.
    pub(crate) fn check(&self, route: Route, ip: IpAddr) -> Option<Result<Standing, Refused>> {
        let limit = self.limit?;
        let now = self.clock.now();
        let key = (route, ip);
        let mut buckets = sync::lock(&self.buckets);
        if !buckets.by_ip.contains_key(&key) && buckets.by_ip.len() >= buckets.prune_at {
            // A full bucket is the same as a new one.
            let burst = f64::from(limit.burst());
            buckets.by_ip.retain(|_, b| b.refill(now, limit) + EPS < burst);
            buckets.prune_at = (2 * buckets.by_ip.len()).max(PRUNE_MIN);
        }
        let bucket = buckets.by_ip.entry(key).or_insert(Bucket { tokens: f64::from(limit.burst()), at: now });
        Some(bucket.take(now, limit))
    }
}

/// The IETF headers, on request (see the module docs): the fixed field,
/// made once.
#[derive(Debug, Clone)]
pub(crate) struct Advertised {
    policy: Policy,
    policy_field: HeaderValue,
}

impl Advertised {
    pub(crate) fn new(limit: Quota) -> Self {
        let policy = Policy::of(limit);
        let text = format!("\"default\";q={};w={}", policy.quota, policy.window);
        // Digits and ASCII punctuation only: always a valid value.
        let policy_field = HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""));
        Advertised { policy, policy_field }
    }

    /// Adds the fields for a client whose bucket is `s`; `t` is the seconds
    /// until the next request is allowed.
    fn annotate(&self, headers: &mut HeaderMap, s: &Standing, t: u64) {
        let remaining = s.remaining.min(self.policy.quota);
        headers.insert(HeaderName::from_static("ratelimit-policy"), self.policy_field.clone());
        if let Ok(v) = HeaderValue::try_from(format!("\"default\";r={remaining};t={t}")) {
            headers.insert(HeaderName::from_static("ratelimit"), v);
        }
    }
}

/// vatcomply's refusal: 429, `Retry-After` in whole seconds (at least 1),
/// the limit in `X-RateLimit-Limit` (per second, as given) and
/// `X-RateLimit-Burst`, and the same wait in the JSON body.
fn refusal(limit: Quota, wait: Duration) -> Response {
    let secs = ceil_secs(wait).max(1);
    let body = serde_json::json!({
        "detail": format!("Rate limit exceeded. Try again in {secs} seconds."),
        "retry_after": secs,
    });
    let mut r = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    // `2` for 2.0, `0.5` for a half: what the rate was given as.
    if let Ok(v) = HeaderValue::try_from(limit.rate().to_string()) {
        h.insert(HeaderName::from_static("x-ratelimit-limit"), v);
    }
    h.insert(HeaderName::from_static("x-ratelimit-burst"), HeaderValue::from(limit.burst()));
    r
}

/// The route whose bucket a request draws on, if it is limited: a `GET`
/// (or `HEAD`) of `/rates` or `/currencies`, the routes vatcomply limits.
fn limited_route(req: &Request) -> Option<Route> {
    let method = req.method();
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return None;
    }
    match Route::of(req.uri().path()) {
        r @ (Route::Rates | Route::Currencies) => Some(r),
        Route::Metrics | Route::Other => None,
    }
}

/// Counts the request, refuses it over the rate limit (by `peer`'s
/// address and the route), waits for capacity, delays it, fails it at the
/// configured rate, and otherwise answers it with `next`.
pub(crate) async fn inject<F, Fut>(shared: &Shared, peer: Option<IpAddr>, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    // Nothing holds a request back without a rate limit or a capacity: it
    // is in service from its arrival, one count instead of two.
    let unheld = shared.options.rate_limit.is_none() && shared.capacity.is_none();
    let _in_flight = if unheld { shared.metrics.start_serving() } else { shared.metrics.start() };
    let verdict = match (peer, limited_route(&req)) {
        (Some(ip), Some(route)) => shared.limiter.check(route, ip),
        _ => None,
    };
    let mut response = match (verdict, shared.options.rate_limit) {
        (Some(Err(refused)), Some(limit)) => {
            shared.metrics.rate_limited();
            let mut r = refusal(limit, refused.wait);
            if let Some(ad) = &shared.advertised {
                ad.annotate(r.headers_mut(), &refused.standing, ceil_secs(refused.wait).max(1));
            }
            r
        }
        _ => serve(shared, req, next, unheld).await,
    };
    if let (Some(Ok(standing)), Some(ad)) = (verdict, &shared.advertised) {
        ad.annotate(response.headers_mut(), &standing, ceil_secs(standing.next));
    }
    response
}

/// A request the rate limit let through: its turn at the capacity, the
/// latency, the failure rate, the handler. `in_service` if it was counted
/// in service already.
async fn serve<F, Fut>(shared: &Shared, req: Request, next: F, in_service: bool) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    // FIFO (tokio's semaphore is fair); held until the answer is made. The
    // wait is bounded by the connections open: one request each.
    let _turn = match &shared.capacity {
        Some(capacity) => {
            let _waiting = shared.metrics.waiting();
            // Never closed; were it, the request would go ahead unqueued.
            capacity.acquire().await.ok()
        }
        None => None,
    };
    let _serving = (!in_service).then(|| shared.metrics.serving());
    let opts = &shared.options;
    // The thread's generator only when something is random.
    let (delay, fail) = if opts.jitter.is_zero() && opts.fail_rate <= 0.0 {
        (opts.latency, false)
    } else {
        let mut rng = rand::rng();
        let jitter = if opts.jitter.is_zero() { Duration::ZERO } else { opts.jitter.mul_f64(rng.random()) };
        (opts.latency.saturating_add(jitter), opts.fail_rate > 0.0 && rng.random::<f64>() < opts.fail_rate)
    };
    if delay.is_zero() {
        return if fail { injected_failure() } else { next(req).await };
    }
    // None past the end of the clock: tokio's sleep takes that as forever.
    let due = std::time::Instant::now().checked_add(delay);
    // A timer, not a blocked thread: other requests go on meanwhile.
    match (&shared.timer, due) {
        (Some(timer), Some(due)) => timer.sleep_until(due).await,
        _ => tokio::time::sleep(delay).await,
    }
    let answer = if fail { injected_failure() } else { next(req).await };
    if let Some(due) = due {
        // On a paused test clock the answer is early: no overshoot.
        let late = std::time::Instant::now().saturating_duration_since(due);
        shared.metrics.overshot(late.as_secs_f64());
    }
    answer
}

fn injected_failure() -> Response {
    crate::app::detail(StatusCode::INTERNAL_SERVER_ERROR, "Injected failure.")
}

#[cfg(test)]
mod tests;
