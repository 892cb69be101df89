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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::process::ProcessCollector;

/// Upper bounds of the request-duration buckets, in seconds: loopback
/// answers take well under a millisecond, injected latency and a remote
/// client's slow reads up to seconds.
const DURATION_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, f64::INFINITY];

/// Upper bounds of the overshoot buckets, in seconds: how late after its
/// due time a delayed answer was made, from the 0.1 ms the latency is
/// precise to up to tokio's whole-millisecond ticks and an overloaded host.
const OVERSHOOT_BUCKETS: [f64; 9] = [0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, f64::INFINITY];

/// A lock-free histogram over `bounds` (the last is `+Inf`): a few atomic
/// additions per value, where a `prometheus-client` histogram takes a mutex.
#[derive(Debug)]
struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    count: AtomicU64,
    /// The sum of the values in nanoseconds: an addition, where a sum of
    /// `f64` seconds would need a compare-and-swap loop.
    sum_ns: AtomicU64,
    /// How many fell in each bucket (not cumulative).
    buckets: [AtomicU64; N],
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn observe(&self, seconds: f64) {
        // The first bucket whose bound is at least the value, as
        // `prometheus-client` counts; NaN in `+Inf`.
        let bucket = self.bounds.iter().position(|b| *b >= seconds).unwrap_or(N - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add((seconds.max(0.0) * 1e9).round() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn reset(&self) {
        for c in self.buckets.iter().chain([&self.count, &self.sum_ns]) {
            c.store(0, Relaxed);
        }
    }

    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> =
            self.bounds.iter().copied().zip(self.buckets.iter().map(|b| b.load(Relaxed))).collect();
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count.load(Relaxed), &buckets, None)
    }
}

/// The request durations of one code and route.
type Series = Histogram<{ DURATION_BUCKETS.len() }>;

/// The `route` label: the API's routes by name, everything else as one
/// value, so a scan of random paths cannot grow the label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    Rates,
    Currencies,
    Metrics,
    Other,
}

impl Route {
    /// The route a request path falls under.
    pub(crate) fn of(path: &str) -> Route {
        match path {
            "/rates" => Route::Rates,
            "/currencies" => Route::Currencies,
            "/metrics" => Route::Metrics,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Rates => "/rates",
            Route::Currencies => "/currencies",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }
}

/// The labels of every request: the status code and the route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    code: u16,
    route: &'static str,
}

/// Every route, in the order of their index in [`Requests`].
const ROUTES: [Route; 4] = [Route::Rates, Route::Currencies, Route::Metrics, Route::Other];

/// The codes [`Requests`] keeps: every HTTP status code there can be.
const FIRST_CODE: u16 = 100;
const CODES: usize = 900;

/// The requests answered by code and route, each with its duration
/// histogram. Lock-free, so that counting a request is a few atomic
/// additions: a `prometheus-client` family takes a read lock and hashes its
/// labels for each request, and its histogram takes a mutex. Each thread
/// counts into one of a few shards, so that the runtime's threads do not
/// pass the same cache lines back and forth on every request; a scrape
/// adds the shards up.
#[derive(Debug)]
struct Requests {
    shards: Box<[Shard]>,
}

/// One shard: by route, then code; each series made at its first request.
#[derive(Debug)]
struct Shard(Box<[OnceLock<Box<Series>>]>);

/// Shards of [`Requests`]: enough for the runtime's threads on most hosts;
/// more threads share them, which is correct, only slower.
const SHARDS: usize = 8;

thread_local! {
    /// This thread's shard, given out in turn at its first request.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % SHARDS
    };
}

impl Default for Requests {
    fn default() -> Self {
        let shard = || Shard((0..ROUTES.len() * CODES).map(|_| OnceLock::new()).collect());
        Requests { shards: (0..SHARDS).map(|_| shard()).collect() }
    }
}

/// One code and route's requests, added up over the shards.
#[derive(Debug, Default)]
struct Total {
    count: u64,
    sum_ns: u64,
    buckets: [u64; DURATION_BUCKETS.len()],
}

impl Requests {
    fn observe(&self, route: Route, code: u16, seconds: f64) {
        let Some(i) = code.checked_sub(FIRST_CODE).map(usize::from).filter(|&i| i < CODES) else {
            return;
        };
        let Some(shard) = self.shards.get(SHARD.with(|s| *s)) else { return };
        let Some(series) = shard.0.get(route as usize * CODES + i) else { return };
        series.get_or_init(|| Box::new(Histogram::new(&DURATION_BUCKETS))).observe(seconds);
    }

    fn reset(&self) {
        self.shards.iter().flat_map(|s| s.0.iter()).filter_map(OnceLock::get).for_each(|s| s.reset());
    }

    /// Every series with requests, added up over the shards: its route,
    /// its code and its total.
    fn totals(&self) -> Vec<(Route, u16, Total)> {
        // By series index, only the series some shard has made (a handful).
        let mut totals: BTreeMap<usize, Total> = BTreeMap::new();
        for shard in self.shards.iter() {
            for (i, s) in shard.0.iter().enumerate().filter_map(|(i, s)| Some((i, s.get()?))) {
                let t = totals.entry(i).or_default();
                t.count += s.count.load(Relaxed);
                t.sum_ns += s.sum_ns.load(Relaxed);
                for (sum, b) in t.buckets.iter_mut().zip(&s.buckets) {
                    *sum += b.load(Relaxed);
                }
            }
        }
        totals
            .into_iter()
            .filter(|(_, t)| t.count > 0)
            .filter_map(|(i, t)| Some((*ROUTES.get(i / CODES)?, FIRST_CODE + (i % CODES) as u16, t)))
            .collect()
    }
}

/// Encoded as the counter family `rates_requests` and the histogram family
/// `rates_request_duration_seconds`, both by code and route.
impl Collector for Requests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.totals();
        let labels = |route: Route, code| RequestLabels { code, route: route.label() };
        let mut requests = encoder.encode_descriptor(
            "rates_requests",
            "Requests answered, by HTTP status code and route.",
            None,
            MetricType::Counter,
        )?;
        for (route, code, t) in &totals {
            ConstCounter::new(t.count).encode(requests.encode_family(&labels(*route, *code))?)?;
        }
        let mut durations = encoder.encode_descriptor(
            "rates_request_duration_seconds",
            "Time from a request's head to its answer, by HTTP status code and route.",
            None,
            MetricType::Histogram,
        )?;
        for (route, code, t) in &totals {
            let buckets: Vec<(f64, u64)> = DURATION_BUCKETS.iter().copied().zip(t.buckets).collect();
            let labels = labels(*route, *code);
            let mut encoder = durations.encode_family(&labels)?;
            encoder.encode_histogram::<NoLabelSet>(t.sum_ns as f64 / 1e9, t.count, &buckets, None)?;
        }
        Ok(())
    }
}

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
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::default();
        {
            let _a = m.start();
            let _b = m.start();
        }
        let _c = m.start();
        m.rate_limited();
        {
            let _w = m.waiting();
            let _s = m.serving();
            let _t = m.serving();
            assert_eq!((m.snapshot().waiting, m.snapshot().in_service), (1, 2));
        }
        let _u = m.serving();
        m.observe(Route::Rates, 200, 0.003);
        m.observe(Route::Rates, 200, 0.2);
        m.observe(Route::Other, 404, 0.0001);
        // `/metrics` is counted in its own series, not in the snapshot.
        m.observe(Route::Metrics, 200, 0.0001);
        let s = m.snapshot();
        assert_eq!((s.count(200), s.count(404), s.total()), (2, 1, 3));
        assert_eq!((s.in_flight, s.max_in_flight, s.rate_limited), (1, 2, 1));
        assert_eq!((s.waiting, s.in_service, s.max_in_service), (0, 1, 2));
        // The API's routes only: not the 404 of another path.
        assert_eq!((s.api_answers, s.api_time_ns), (2, 203_000_000));
        m.overshot(0.000_07);
        m.overshot(0.003);
        assert_eq!((m.snapshot().delayed, m.snapshot().overshoot_ns), (2, 3_070_000));
        let text = m.render();
        assert!(text.contains("# TYPE rates_latency_overshoot_seconds histogram\n"), "{text}");
        assert!(text.contains("rates_latency_overshoot_seconds_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("rates_latency_overshoot_seconds_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("rates_requests_total{code=\"200\",route=\"/rates\"} 2\n"), "{text}");
        assert!(text.contains("rates_requests_total{code=\"404\",route=\"other\"} 1\n"), "{text}");
        assert!(text.contains("rates_requests_in_flight_max 2\n"));
        assert!(text.contains("rates_requests_waiting 0\n"), "{text}");
        assert!(text.contains("rates_requests_in_service 1\n"), "{text}");
        assert!(text.contains("rates_requests_in_service_max 2\n"), "{text}");
        assert!(text.contains("# TYPE rates_request_duration_seconds histogram\n"), "{text}");
        assert!(
            text.contains("rates_request_duration_seconds_bucket{code=\"200\",route=\"/rates\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("rates_request_duration_seconds_count{code=\"200\",route=\"/rates\"} 2\n"), "{text}");
        // The sum of the durations, kept in nanoseconds.
        assert!(text.contains("rates_request_duration_seconds_sum{code=\"200\",route=\"/rates\"} 0.203\n"), "{text}");
        m.reset();
        assert_eq!(m.snapshot().max_in_flight, 1);
        assert_eq!(m.snapshot().max_in_service, 1);
        assert_eq!(m.snapshot().total(), 0);
        assert_eq!((m.snapshot().api_answers, m.snapshot().delayed), (0, 0));
        assert!(!m.render().contains("rates_requests_total{"), "the requests by route start again");
    }

    #[test]
    fn a_request_counted_in_flight_and_in_service_at_once_counts_out_of_both() {
        let m = Metrics::default();
        let both = m.start_serving();
        let s = m.snapshot();
        assert_eq!((s.in_flight, s.in_service, s.max_in_flight, s.max_in_service), (1, 1, 1, 1));
        drop(both);
        let s = m.snapshot();
        assert_eq!((s.in_flight, s.in_service, s.max_in_flight, s.max_in_service), (0, 0, 1, 1));
    }

    #[test]
    fn requests_counted_on_many_threads_add_up() {
        let m = Metrics::default();
        std::thread::scope(|scope| {
            for _ in 0..2 * SHARDS {
                scope.spawn(|| {
                    for _ in 0..100 {
                        m.observe(Route::Rates, 200, 0.001);
                    }
                });
            }
        });
        let s = m.snapshot();
        assert_eq!((s.count(200), s.api_answers, s.api_time_ns), (1600, 1600, 1_600_000_000));
        assert!(m.render().contains("rates_request_duration_seconds_count{code=\"200\",route=\"/rates\"} 1600\n"));
    }

    #[test]
    fn counts_and_renders_connections() {
        let m = Metrics::default();
        m.opened();
        m.opened();
        m.opened();
        m.closed(Closed::HeaderTimeout);
        m.closed_conn();
        m.closed(Closed::Shed);
        m.closed_conn();
        m.accept_error();
        m.cap_full();
        let s = m.snapshot();
        assert_eq!((s.connections_open, s.connections_total), (1, 3));
        assert_eq!((s.header_timeouts, s.idle_timeouts, s.shed, s.cap_full, s.accept_errors), (1, 0, 1, 1, 1));
        let text = m.render();
        for line in [
            "rates_connections_open 1\n",
            "rates_connections_total 3\n",
            "rates_connections_closed_total{reason=\"header_timeout\"} 1\n",
            "rates_connections_closed_total{reason=\"idle_timeout\"} 0\n",
            "rates_connections_closed_total{reason=\"shed\"} 1\n",
            "rates_connections_cap_waits_total 1\n",
            "rates_accept_errors_total 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.reset();
        let s = m.snapshot();
        assert_eq!((s.connections_open, s.connections_total, s.shed), (1, 0, 0));
    }
}
