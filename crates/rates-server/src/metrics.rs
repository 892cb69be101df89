//! Counters behind `GET /metrics`: requests by status, in flight now, the
//! most ever in flight at once, and requests refused with 429. Tests read
//! them to prove a model's concurrency bound from the server's side.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const FIRST_STATUS: u16 = 100;
const LAST_STATUS: u16 = 599;

/// Lock-free request counters, shared by every request task.
#[derive(Debug)]
pub struct Metrics {
    by_status: Vec<AtomicU64>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    rate_limited: AtomicU64,
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            by_status: (FIRST_STATUS..=LAST_STATUS).map(|_| AtomicU64::new(0)).collect(),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }
}

/// Marks one request in flight until dropped, so a request whose client
/// disconnects mid-way is still counted out.
pub(crate) struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    pub(crate) fn start(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Relaxed);
        InFlight(self)
    }

    pub(crate) fn finish(&self, status: u16) {
        if let Some(c) = status.checked_sub(FIRST_STATUS).and_then(|i| self.by_status.get(i as usize)) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    /// Resets every counter but the requests in flight now (the maximum
    /// restarts from them), so one server can measure several runs.
    pub fn reset(&self) {
        for c in &self.by_status {
            c.store(0, Relaxed);
        }
        self.rate_limited.store(0, Relaxed);
        self.max_in_flight.store(self.in_flight.load(Relaxed), Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            by_status: self
                .by_status
                .iter()
                .zip(FIRST_STATUS..)
                .filter_map(|(c, s)| Some((s, c.load(Relaxed))).filter(|(_, n)| *n > 0))
                .collect(),
            in_flight: self.in_flight.load(Relaxed),
            max_in_flight: self.max_in_flight.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
        }
    }

    /// The counters in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let s = self.snapshot();
        let mut out = String::new();
        out.push_str("# HELP rates_requests_total Requests answered, by HTTP status.\n");
        out.push_str("# TYPE rates_requests_total counter\n");
        for (status, n) in &s.by_status {
            let _ = writeln!(out, "rates_requests_total{{status=\"{status}\"}} {n}");
        }
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one("rates_requests_in_flight", "gauge", "Requests being handled now.", s.in_flight);
        one("rates_requests_in_flight_max", "gauge", "Most requests handled at once.", s.max_in_flight);
        one("rates_rate_limited_total", "counter", "Requests refused with 429.", s.rate_limited);
        out
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
            m.finish(200);
            m.finish(500);
        }
        let _c = m.start();
        m.finish(200);
        m.rate_limited();
        let s = m.snapshot();
        assert_eq!((s.count(200), s.count(500), s.total()), (2, 1, 3));
        assert_eq!((s.in_flight, s.max_in_flight, s.rate_limited), (1, 2, 1));
        let text = m.render();
        assert!(text.contains("rates_requests_total{status=\"200\"} 2\n"));
        assert!(text.contains("rates_requests_in_flight_max 2\n"));
        m.reset();
        assert_eq!(m.snapshot().max_in_flight, 1);
        assert_eq!(m.snapshot().total(), 0);
    }
}
