//! The requests answered, by code and route, with their durations: lock-free
//! histograms in per-thread shards, added up at each scrape.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

/// Upper bounds of the request-duration buckets, in seconds: loopback
/// answers take well under a millisecond, injected latency and a remote
/// client's slow reads up to seconds.
const DURATION_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, f64::INFINITY];

/// Upper bounds of the overshoot buckets, in seconds: how late after its
/// due time a delayed answer was made, from the 0.1 ms the latency is
/// precise to up to tokio's whole-millisecond ticks and an overloaded host.
pub(super) const OVERSHOOT_BUCKETS: [f64; 9] =
    [0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, f64::INFINITY];

/// A lock-free histogram over `bounds` (the last is `+Inf`): a few atomic
/// additions per value, where a `prometheus-client` histogram takes a mutex.
#[derive(Debug)]
pub(super) struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    pub(super) count: AtomicU64,
    /// The sum of the values in nanoseconds: an addition, where a sum of
    /// `f64` seconds would need a compare-and-swap loop.
    pub(super) sum_ns: AtomicU64,
    /// How many fell in each bucket (not cumulative).
    buckets: [AtomicU64; N],
}

impl<const N: usize> Histogram<N> {
    pub(super) fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub(super) fn observe(&self, seconds: f64) {
        // The first bucket whose bound is at least the value, as
        // `prometheus-client` counts; NaN in `+Inf`.
        let bucket = self.bounds.iter().position(|b| *b >= seconds).unwrap_or(N - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add((seconds.max(0.0) * 1e9).round() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub(super) fn reset(&self) {
        for c in self.buckets.iter().chain([&self.count, &self.sum_ns]) {
            c.store(0, Relaxed);
        }
    }

    pub(super) fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
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
pub(super) struct Requests {
    shards: Box<[Shard]>,
}

/// One shard: by route, then code; each series made at its first request.
#[derive(Debug)]
struct Shard(Box<[OnceLock<Box<Series>>]>);

/// Shards of [`Requests`]: enough for the runtime's threads on most hosts;
/// more threads share them, which is correct, only slower.
pub(super) const SHARDS: usize = 8;

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
pub(super) struct Total {
    pub(super) count: u64,
    pub(super) sum_ns: u64,
    buckets: [u64; DURATION_BUCKETS.len()],
}

impl Requests {
    pub(super) fn observe(&self, route: Route, code: u16, seconds: f64) {
        let Some(i) = code.checked_sub(FIRST_CODE).map(usize::from).filter(|&i| i < CODES) else {
            return;
        };
        let Some(shard) = self.shards.get(SHARD.with(|s| *s)) else { return };
        let Some(series) = shard.0.get(route as usize * CODES + i) else { return };
        series.get_or_init(|| Box::new(Histogram::new(&DURATION_BUCKETS))).observe(seconds);
    }

    pub(super) fn reset(&self) {
        self.shards.iter().flat_map(|s| s.0.iter()).filter_map(OnceLock::get).for_each(|s| s.reset());
    }

    /// Every series with requests, added up over the shards: its route,
    /// its code and its total.
    pub(super) fn totals(&self) -> Vec<(Route, u16, Total)> {
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
