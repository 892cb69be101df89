//! The counters behind `GET /metrics`. Two views of the same server:
//!
//! - [`Snapshot`]: plain numbers read in-process (tests and `rates bench`
//!   prove a model's concurrency bound from them): the API's requests by
//!   status, in flight now, the most ever in flight at once, those refused
//!   with 429, those waiting for capacity and being served (the most at
//!   once too); connections open now, those closed by the server's own limits
//!   (timeouts, the cap), and accept errors.
//! - [`Metrics::render`]: the Prometheus text exposition, through
//!   `prometheus-client`: the same counters, every request (`/metrics`
//!   included) by `code` and `route` with a duration histogram in seconds,
//!   and the standard `process_*` metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::process::ProcessCollector;

mod requests;

pub(crate) use requests::Route;
use requests::{Histogram, OVERSHOOT_BUCKETS, Requests};

/// The server's counters, shared by every request task: lock-free atomics
/// for the in-process [`Snapshot`] and for the requests by code and route,
/// encoded by `prometheus-client`.
#[derive(Debug)]
pub struct Metrics {
    counters: Arc<Counters>,
    requests: Arc<Requests>,
    registry: Registry,
}

/// Lock-free request and connection counters.
#[derive(Debug)]
struct Counters {
    /// Changed by every request: on a cache line of its own.
    live: Live,
    /// Read by every request, written when a maximum grows.
    max_in_flight: AtomicU64,
    max_in_service: AtomicU64,
    rate_limited: AtomicU64,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    shed: AtomicU64,
    cap_full: AtomicU64,
    accept_errors: AtomicU64,
    /// How late after their due time delayed answers were made.
    overshoot: Histogram<{ OVERSHOOT_BUCKETS.len() }>,
}

/// The requests in flight (the low 32 bits) and in service (the high 32)
/// in one word, so that a request that goes straight into service (no rate
/// limit, no capacity) counts itself in and out with one atomic addition
/// each; and those waiting for capacity.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Live {
    flight_and_service: AtomicU64,
    waiting: AtomicU64,
}

/// What one request adds to [`Live::flight_and_service`] for each.
const IN_FLIGHT: u64 = 1;
const IN_SERVICE: u64 = 1 << 32;

/// The requests in flight and in service in a [`Live`] word.
fn split(word: u64) -> (u64, u64) {
    (word & (IN_SERVICE - 1), word >> 32)
}

/// Why the server closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// A request head did not arrive in time.
    HeaderTimeout,
    /// A keep-alive connection stayed idle too long.
    IdleTimeout,
    /// Closed while waiting for a request, to make room for a new connection
    /// at the cap or to free a descriptor after an accept error.
    Shed,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// `(status, count)` for every status answered at least once, ascending.
    pub by_status: Vec<(u16, u64)>,
    /// Requests being handled now.
    pub in_flight: u64,
    /// The most requests handled at once since start (or the last reset).
    pub max_in_flight: u64,
    /// Requests refused by the rate limiter.
    pub rate_limited: u64,
    /// Requests waiting for the server's capacity now.
    pub waiting: u64,
    /// Requests being served now: past the rate limit and the capacity's
    /// queue, in the injected latency or the handler.
    pub in_service: u64,
    /// The most requests served at once since start (or the last reset):
    /// never above the capacity.
    pub max_in_service: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted.
    pub connections_total: u64,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeouts: u64,
    /// Keep-alive connections closed after idling too long.
    pub idle_timeouts: u64,
    /// Connections closed while waiting for a request, to make room at the
    /// connection cap or to free a descriptor after an accept error.
    pub shed: u64,
    /// Times a connection had to wait for a slot: at the cap with every open
    /// connection busy answering, so accepting paused.
    pub cap_full: u64,
    /// Failed accepts (out of descriptors, or a client gone before accept).
    pub accept_errors: u64,
    /// Answers of the API's routes (`/rates`, `/currencies`), any status.
    pub api_answers: u64,
    /// Their summed time from request head to answer, in nanoseconds: the
    /// service time a client could not have beaten.
    pub api_time_ns: u64,
    /// Answers made after an injected latency.
    pub delayed: u64,
    /// Their summed lateness past the due time (arrival plus latency), in
    /// nanoseconds.
    pub overshoot_ns: u64,
}

impl Snapshot {
    /// All requests answered.
    pub fn total(&self) -> u64 {
        self.by_status.iter().map(|(_, n)| n).sum()
    }

    /// Requests answered with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.by_status.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            live: Live::default(),
            max_in_flight: AtomicU64::new(0),
            max_in_service: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            cap_full: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            overshoot: Histogram::new(&OVERSHOOT_BUCKETS),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let counters = Arc::new(Counters::default());
        let requests = Arc::new(Requests::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(&requests)));
        registry.register_collector(Box::new(Arc::clone(&counters)));
        registry.register_collector(Box::new(ProcessCollector));
        Metrics { counters, requests, registry }
    }
}

/// Counts a request in flight, in service or both (what it added) until
/// dropped, so a request whose client disconnects mid-way is still counted
/// out.
pub(crate) struct Counted<'a> {
    counters: &'a Counters,
    added: u64,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.counters.live.flight_and_service.fetch_sub(self.added, Relaxed);
    }
}

/// Marks one request waiting for capacity until dropped.
pub(crate) struct Waiting<'a>(&'a Counters);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.live.waiting.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        let c = &*self.counters;
        c.live.waiting.fetch_add(1, Relaxed);
        Waiting(c)
    }

    /// Counts a request in flight (from its arrival to its answer).
    pub(crate) fn start(&self) -> Counted<'_> {
        self.count(IN_FLIGHT)
    }

    /// Counts a request in service (past the rate limit and the capacity's
    /// queue, until its answer).
    pub(crate) fn serving(&self) -> Counted<'_> {
        self.count(IN_SERVICE)
    }

    /// Both at once, for a request nothing can hold back.
    pub(crate) fn start_serving(&self) -> Counted<'_> {
        self.count(IN_FLIGHT + IN_SERVICE)
    }

    fn count(&self, added: u64) -> Counted<'_> {
        let c = &*self.counters;
        let (in_flight, in_service) = split(c.live.flight_and_service.fetch_add(added, Relaxed) + added);
        // Read first: the maxima rarely change, and a read leaves their
        // cache line shared between the threads where a write would not.
        for (now, max) in [(in_flight, &c.max_in_flight), (in_service, &c.max_in_service)] {
            if now > max.load(Relaxed) {
                max.fetch_max(now, Relaxed);
            }
        }
        Counted { counters: c, added }
    }

    pub(crate) fn rate_limited(&self) {
        let c = &*self.counters;
        c.rate_limited.fetch_add(1, Relaxed);
    }

    pub(crate) fn opened(&self) {
        let c = &*self.counters;
        c.connections_open.fetch_add(1, Relaxed);
        c.connections_total.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed_conn(&self) {
        let c = &*self.counters;
        c.connections_open.fetch_sub(1, Relaxed);
    }

    pub(crate) fn closed(&self, why: Closed) {
        let c = &*self.counters;
        let c = match why {
            Closed::HeaderTimeout => &c.header_timeouts,
            Closed::IdleTimeout => &c.idle_timeouts,
            Closed::Shed => &c.shed,
        };
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn cap_full(&self) {
        let c = &*self.counters;
        c.cap_full.fetch_add(1, Relaxed);
    }

    pub(crate) fn accept_error(&self) {
        let c = &*self.counters;
        c.accept_errors.fetch_add(1, Relaxed);
    }

    /// Resets every counter but the requests in flight and connections open
    /// now (the maximum restarts from them), so one server can measure
    /// several runs. The requests by code and route and their durations
    /// start again too.
    pub fn reset(&self) {
        let c = &*self.counters;
        for c in [
            &c.rate_limited,
            &c.connections_total,
            &c.header_timeouts,
            &c.idle_timeouts,
            &c.shed,
            &c.cap_full,
            &c.accept_errors,
        ] {
            c.store(0, Relaxed);
        }
        let (in_flight, in_service) = split(c.live.flight_and_service.load(Relaxed));
        c.max_in_flight.store(in_flight, Relaxed);
        c.max_in_service.store(in_service, Relaxed);
        c.overshoot.reset();
        self.requests.reset();
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let c = &*self.counters;
        let totals = self.requests.totals();
        let mut by_status: Vec<(u16, u64)> = Vec::new();
        for (_, code, t) in totals.iter().filter(|(route, ..)| *route != Route::Metrics) {
            match by_status.iter_mut().find(|(s, _)| s == code) {
                Some((_, n)) => *n += t.count,
                None => by_status.push((*code, t.count)),
            }
        }
        by_status.sort_unstable();
        let api = || totals.iter().filter(|(route, ..)| matches!(route, Route::Rates | Route::Currencies));
        let (in_flight, in_service) = split(c.live.flight_and_service.load(Relaxed));
        Snapshot {
            by_status,
            in_flight,
            max_in_flight: c.max_in_flight.load(Relaxed),
            rate_limited: c.rate_limited.load(Relaxed),
            waiting: c.live.waiting.load(Relaxed),
            in_service,
            max_in_service: c.max_in_service.load(Relaxed),
            connections_open: c.connections_open.load(Relaxed),
            connections_total: c.connections_total.load(Relaxed),
            header_timeouts: c.header_timeouts.load(Relaxed),
            idle_timeouts: c.idle_timeouts.load(Relaxed),
            shed: c.shed.load(Relaxed),
            cap_full: c.cap_full.load(Relaxed),
            accept_errors: c.accept_errors.load(Relaxed),
            api_answers: api().map(|(.., t)| t.count).sum(),
            api_time_ns: api().map(|(.., t)| t.sum_ns).sum(),
            delayed: c.overshoot.count.load(Relaxed),
            overshoot_ns: c.overshoot.sum_ns.load(Relaxed),
        }
    }

    /// Counts one delayed answer made `seconds` after it was due.
    pub(crate) fn overshot(&self, seconds: f64) {
        self.counters.overshoot.observe(seconds);
    }

    /// Counts one request answered (any route, `/metrics` included) and
    /// how long it took.
    pub(crate) fn observe(&self, route: Route, code: u16, seconds: f64) {
        self.requests.observe(route, code, seconds);
    }

    /// The counters in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, nor can our collectors.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The in-process counters, encoded afresh at each scrape.
impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = |c: &AtomicU64| c.load(Relaxed);
        let (in_flight, in_service) = split(load(&self.live.flight_and_service));
        for (name, help, v) in [
            ("rates_requests_in_flight", "Requests being handled now.", in_flight),
            ("rates_requests_in_flight_max", "Most requests handled at once.", load(&self.max_in_flight)),
            ("rates_requests_waiting", "Requests waiting for the server's capacity now.", load(&self.live.waiting)),
            ("rates_requests_in_service", "Requests being served now (past the capacity's queue).", in_service),
            ("rates_requests_in_service_max", "Most requests served at once.", load(&self.max_in_service)),
            ("rates_connections_open", "Connections open now.", load(&self.connections_open)),
        ] {
            let gauge = ConstGauge::new(v as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        for (name, help, v) in [
            ("rates_rate_limited", "Requests refused with 429.", load(&self.rate_limited)),
            ("rates_connections", "Connections accepted.", load(&self.connections_total)),
            (
                "rates_connections_cap_waits",
                "Connections that waited for a slot: at the cap with every connection busy, accepting paused.",
                load(&self.cap_full),
            ),
            ("rates_accept_errors", "Failed accepts (e.g. out of file descriptors).", load(&self.accept_errors)),
        ] {
            let counter = ConstCounter::new(v);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let kind = ConstCounter::new(0u64).metric_type();
        let mut closed = encoder.encode_descriptor(
            "rates_connections_closed",
            "Connections the server closed itself, by reason: header_timeout (no request head in time), \
             idle_timeout (keep-alive idle too long), shed (closed while waiting for a request, to make room \
             at the cap or free a descriptor).",
            None,
            kind,
        )?;
        for (reason, c) in
            [("header_timeout", &self.header_timeouts), ("idle_timeout", &self.idle_timeouts), ("shed", &self.shed)]
        {
            ConstCounter::new(load(c)).encode(closed.encode_family(&[("reason", reason)])?)?;
        }
        let overshoot = encoder.encode_descriptor(
            "rates_latency_overshoot_seconds",
            "How long after it was due (its arrival plus the injected latency) each delayed answer was made.",
            None,
            MetricType::Histogram,
        )?;
        self.overshoot.encode(overshoot)
    }
}

#[cfg(test)]
mod tests;
