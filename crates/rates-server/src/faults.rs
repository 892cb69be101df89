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
/// Buckets that have filled up again are forgotten once there are many, so
/// a stream of distinct clients cannot grow the map without bound.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: Option<RateLimit>,
    buckets: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    by_ip: HashMap<IpAddr, Arc<Throttle>>,
    /// Prune when the map reaches this size: twice the survivors of the
    /// last pruning, so pruning costs O(1) per new client, amortised.
    prune_at: usize,
}

/// The fewest buckets worth pruning.
const PRUNE_MIN: usize = 1024;

impl Limiter {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        Limiter { limit, buckets: Mutex::new(Buckets { by_ip: HashMap::new(), prune_at: PRUNE_MIN }) }
    }

    /// Buckets held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).by_ip.len()
    }

    /// `Ok` to serve the request, or how long the client should wait.
    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let bucket = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            match buckets.by_ip.get(&ip) {
                Some(b) => Arc::clone(b),
                None => {
                    // Validated when the server was built.
                    let Ok(t) = Throttle::new(limit.rate, limit.burst) else {
                        return Ok(());
                    };
                    if buckets.by_ip.len() >= buckets.prune_at {
                        // A full bucket is the same as a new one.
                        buckets.by_ip.retain(|_, b| !b.is_full());
                        buckets.prune_at = (2 * buckets.by_ip.len()).max(PRUNE_MIN);
                    }
                    Arc::clone(buckets.by_ip.entry(ip).or_insert(Arc::new(t)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_of_gone_clients_are_forgotten() {
        let limiter = Limiter::new(Some(RateLimit { rate: 10.0, burst: 1 }));
        for n in 0..3000 {
            assert_eq!(limiter.check(ip(n)), Ok(()));
        }
        // Still draining: none may be forgotten, or a client could reset
        // its limit by waiting for others to arrive.
        assert_eq!(limiter.len(), 3000);
        assert!(limiter.check(ip(0)).is_err());
        // A tenth of a second later every bucket is full again: the new
        // client that brings the map to 4096 (twice 2048, the size at the
        // last pruning) prunes them all.
        tokio::time::advance(Duration::from_millis(100)).await;
        for n in 3000..4200 {
            assert_eq!(limiter.check(ip(n)), Ok(()));
        }
        // Only the clients since the advance are left.
        assert_eq!(limiter.len(), 1200);
        // An active client keeps its state across a pruning.
        assert!(limiter.check(ip(3000)).is_err());
    }
}
