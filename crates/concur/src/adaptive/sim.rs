//! Simulated servers for the adaptive limiters' tests: pure, on the fake
//! clock, one event at a time, so every run is the same.
//!
//! - [`rate_run`]: clients behind an [`AdaptiveRate`] against a server
//!   with a token bucket limit (429 with `Retry-After` in whole seconds,
//!   optionally its policy in headers).
//! - [`concurrency_run`]: clients behind an [`AdaptiveConcurrency`]
//!   against a server that serves `capacity` requests at once, in a fixed
//!   time each, and queues the rest in order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use super::{AdaptiveConcurrency, AdaptiveRate, ConcurrencyConfig, Permit, RateConfig, RateSignal};
use crate::throttle::{Clock, FakeClock};

/// A rate-limited server and its clients.
/// More events than any run here needs: a stuck simulation fails.
const STEPS: usize = 1_000_000;

#[derive(Debug, Clone, Copy)]
pub(super) struct RateServer {
    /// Requests per second the server allows.
    pub limit: f64,
    /// Its burst.
    pub burst: u32,
    /// Whether its answers state its policy.
    pub headers: bool,
    /// From a request's grant to its answer (the server decides half way).
    pub latency: Duration,
    /// Clients, each with one request in flight at most.
    pub workers: usize,
    /// Successful answers wanted.
    pub requests: usize,
}

/// What a [`rate_run`] saw.
#[derive(Debug)]
pub(super) struct RateRun {
    /// When the last wanted answer came.
    pub finish: Duration,
    /// Requests sent, 429s included.
    pub sent: usize,
    /// Requests answered 429.
    pub limited: usize,
    /// When each request was granted.
    pub grants: Vec<Duration>,
    /// The learnt rate after each change: (when, rate).
    pub rates: Vec<(Duration, f64)>,
    /// The learnt rate at the end.
    pub rate: f64,
    /// The learnt burst at the end.
    pub burst: u32,
}

impl RateRun {
    /// The fewest seconds the server allows for the run: its burst at
    /// once, then its rate.
    pub fn ideal(server: &RateServer) -> f64 {
        (server.requests as f64 - f64::from(server.burst)).max(0.0) / server.limit
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RateEvent {
    /// A client asks for a token.
    Ready,
    /// The answer to a request: whether the server took it, and its
    /// state then (tokens left, time to the next token).
    Answer { ok: bool, remaining: u32, next: Duration },
}

/// Runs clients behind `rate` (on `clock`) against `server`.
pub(super) fn rate_run(server: RateServer, config: RateConfig) -> RateRun {
    let clock = FakeClock::new();
    let rates = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let limiter = AdaptiveRate::with_clock(config, clock.clone()).on_change({
        let rates = rates.clone();
        let clock = clock.clone();
        move |c| rates.lock().expect("not poisoned").push((clock.now(), c.to))
    });
    // The server's bucket, as of `last`.
    let (mut tokens, mut last) = (f64::from(server.burst), Duration::ZERO);
    let mut events = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |events: &mut BinaryHeap<_>, at: Duration, e: RateEvent| {
        seq += 1;
        events.push(Reverse((at, seq, e)));
    };
    for _ in 0..server.workers {
        push(&mut events, Duration::ZERO, RateEvent::Ready);
    }
    let (mut ok, mut sent, mut limited, mut in_flight) = (0, 0, 0, 0);
    let mut grants = Vec::new();
    let mut finish = Duration::ZERO;
    let mut steps = 0;
    while let Some(Reverse((at, _, event))) = events.pop() {
        steps += 1;
        assert!(steps < STEPS, "the simulation is stuck at {at:?}");
        clock.advance(at.saturating_sub(clock.now()));
        match event {
            RateEvent::Ready => {
                if ok + in_flight >= server.requests {
                    continue; // nothing left for this client
                }
                match limiter.try_acquire() {
                    Err(not_until) => push(&mut events, not_until.earliest(), RateEvent::Ready),
                    Ok(()) => {
                        grants.push(at);
                        sent += 1;
                        in_flight += 1;
                        // The server decides half way.
                        let arrive = at + server.latency / 2;
                        tokens = (tokens + (arrive - last).as_secs_f64() * server.limit).min(f64::from(server.burst));
                        last = arrive;
                        let took = tokens >= 1.0;
                        if took {
                            tokens -= 1.0;
                        }
                        let next = Duration::from_secs_f64(((1.0 - tokens) / server.limit).max(0.0));
                        let answer = RateEvent::Answer { ok: took, remaining: tokens.floor() as u32, next };
                        push(&mut events, at + server.latency, answer);
                    }
                }
            }
            RateEvent::Answer { ok: took, remaining, next } => {
                in_flight -= 1;
                // Whole seconds, rounded up, as the headers carry them.
                let whole = Duration::from_secs(next.as_secs_f64().ceil().max(1.0) as u64);
                if server.headers {
                    limiter.record(RateSignal::Policy {
                        limit: server.limit.round() as u32,
                        window: Duration::from_secs(1),
                        remaining: Some(remaining),
                        reset: Some(whole),
                        burst: None,
                    });
                }
                if took {
                    ok += 1;
                    finish = at;
                    limiter.record(RateSignal::Success);
                } else {
                    limited += 1;
                    limiter.record(RateSignal::Limited { retry_after: Some(whole) });
                }
                push(&mut events, at, RateEvent::Ready);
            }
        }
    }
    let rates = rates.lock().expect("not poisoned").clone();
    RateRun { finish, sent, limited, grants, rates, rate: limiter.rate(), burst: limiter.burst() }
}

/// A server with a capacity and its clients.
#[derive(Debug, Clone, Copy)]
pub(super) struct CapacityServer {
    /// Requests served at once; the rest queue (`usize::MAX`: no limit).
    pub capacity: usize,
    /// The time to serve one.
    pub latency: Duration,
    /// Clients, each with one request in flight at most.
    pub workers: usize,
    /// Requests to make.
    pub requests: usize,
}

/// What a [`concurrency_run`] saw.
#[derive(Debug)]
pub(super) struct ConcurrencyRun {
    /// When the last answer came.
    pub finish: Duration,
    /// Each request's latency, in order of the answers.
    pub latencies: Vec<Duration>,
    /// The limit after each change: (when, limit).
    pub limits: Vec<(Duration, usize)>,
    /// The limit at the end.
    pub limit: usize,
}

impl ConcurrencyRun {
    /// The median latency.
    pub fn median(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }

    /// The lowest and highest limit from `from` on.
    pub fn band(&self, from: Duration) -> (usize, usize) {
        let before = self.limits.iter().rev().find(|(at, _)| *at < from).map(|(_, l)| *l);
        let after = self.limits.iter().filter(|(at, _)| *at >= from).map(|(_, l)| *l);
        let all: Vec<_> = before.into_iter().chain(after).collect();
        (all.iter().copied().min().unwrap_or(self.limit), all.iter().copied().max().unwrap_or(self.limit))
    }
}

/// Runs clients behind an [`AdaptiveConcurrency`] (`config`) against
/// `server`, or a fixed number of clients if `config` is `None`.
pub(super) fn concurrency_run(server: CapacityServer, config: Option<ConcurrencyConfig>) -> ConcurrencyRun {
    let clock = FakeClock::new();
    let limits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let fixed =
        ConcurrencyConfig { initial: server.workers, min: server.workers, max: server.workers, ..Default::default() };
    let limiter = AdaptiveConcurrency::with_clock(config.unwrap_or(fixed), clock.clone()).on_change({
        let limits = limits.clone();
        let clock = clock.clone();
        move |c| limits.lock().expect("not poisoned").push((clock.now(), c.to))
    });
    // When each of the server's places is free next.
    let places = server.capacity.min(server.workers.max(1));
    let mut free_at: BinaryHeap<Reverse<Duration>> = (0..places).map(|_| Reverse(Duration::ZERO)).collect();
    let mut answers: BinaryHeap<Reverse<(Duration, u64)>> = BinaryHeap::new();
    let mut permits: HashMap<u64, Permit<'_, FakeClock>> = HashMap::new();
    let (mut started, mut seq) = (0usize, 0u64);
    let mut latencies = Vec::with_capacity(server.requests);
    let mut finish = Duration::ZERO;
    let mut steps = 0;
    loop {
        // Start what the limit and the clients allow, now.
        while started < server.requests && permits.len() < server.workers {
            let Some(permit) = limiter.try_acquire() else { break };
            let now = clock.now();
            let Reverse(free) = free_at.pop().expect("a place");
            let done = free.max(now) + server.latency;
            free_at.push(Reverse(done));
            seq += 1;
            answers.push(Reverse((done, seq)));
            permits.insert(seq, permit);
            started += 1;
        }
        // Bounded: each answer ends one of `requests` permits.
        steps += 1;
        assert!(steps < STEPS, "the simulation is stuck");
        let Some(Reverse((at, id))) = answers.pop() else { break };
        clock.advance(at.saturating_sub(clock.now()));
        let permit = permits.remove(&id).expect("its permit");
        latencies.push(at - permit_start(&permit));
        permit.success();
        finish = at;
    }
    let limits = limits.lock().expect("not poisoned").clone();
    ConcurrencyRun { finish, latencies, limits, limit: limiter.limit() }
}

fn permit_start(permit: &Permit<'_, FakeClock>) -> Duration {
    permit.start
}
