//! Fault injection (`API.md`, "What the project's server adds"): a per-client
//! rate limit, latency with jitter, and random failures — the misbehaviour of
//! a real remote service, reproduced on loopback.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use concur::Throttle;
use rand::Rng;

use crate::app::detail;
use crate::{OptionError, Shared};

/// A token bucket per client IP: `rate` requests per second, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second.
    pub rate: f64,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    pub(crate) fn validate(&self) -> Result<(), OptionError> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(OptionError {
                name: "rate limit",
                value: self.rate.to_string(),
                expected: "a positive number of requests per second",
            });
        }
        if self.burst == 0 {
            return Err(OptionError { name: "burst", value: "0".into(), expected: "at least 1" });
        }
        Ok(())
    }
}

/// One `concur::Throttle` per client IP, created on its first request.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<IpAddr, Arc<Throttle>>>,
}

impl Limiter {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        Limiter { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// `Ok` to serve the request, or how long the client should wait.
    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let bucket = {
            let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&ip) {
                Some(b) => Arc::clone(b),
                None => {
                    // Validated when the server was built.
                    let Ok(t) = Throttle::new(limit.rate, limit.burst) else {
                        return Ok(());
                    };
                    Arc::clone(map.entry(ip).or_insert(Arc::new(t)))
                }
            }
        };
        bucket.try_acquire().map_err(|not_until| not_until.wait_time())
    }
}

/// The middleware: count the request, refuse it over the rate limit, delay
/// it, and fail it at the configured rate.
pub(crate) async fn inject(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let _in_flight = shared.metrics.start();
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let response = async {
        if let Some(ip) = peer
            && let Err(wait) = shared.limiter.check(ip)
        {
            shared.metrics.rate_limited();
            let mut r = detail(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.");
            // Whole seconds, rounded up, as the header requires.
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
        let opts = &shared.options;
        let (delay, fail) = {
            let mut rng = rand::rng();
            let jitter = if opts.jitter.is_zero() { Duration::ZERO } else { opts.jitter.mul_f64(rng.random()) };
            (opts.latency + jitter, opts.fail_rate > 0.0 && rng.random::<f64>() < opts.fail_rate)
        };
        if !delay.is_zero() {
            // A timer, not a blocked thread: other requests go on meanwhile.
            tokio::time::sleep(delay).await;
        }
        if fail {
            return detail(StatusCode::INTERNAL_SERVER_ERROR, "Injected failure.");
        }
        next.run(req).await
    }
    .await;
    shared.metrics.finish(response.status().as_u16());
    response
}
