//! Counters behind `GET /metrics`: requests by status, in flight now, the
//! most ever in flight at once, and requests refused with 429; connections
//! open now and those closed by the server's own limits (timeouts, the cap),
//! and accept errors. Tests read them to prove a model's concurrency bound
//! from the server's side.

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
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    shed: AtomicU64,
    cap_full: AtomicU64,
    accept_errors: AtomicU64,
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
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            cap_full: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
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

    pub(crate) fn opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed_conn(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub(crate) fn closed(&self, why: Closed) {
        let c = match why {
            Closed::HeaderTimeout => &self.header_timeouts,
            Closed::IdleTimeout => &self.idle_timeouts,
            Closed::Shed => &self.shed,
        };
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn cap_full(&self) {
        self.cap_full.fetch_add(1, Relaxed);
    }

    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }

    /// Resets every counter but the requests in flight and connections open
    /// now (the maximum restarts from them), so one server can measure
    /// several runs.
    pub fn reset(&self) {
        for c in &self.by_status {
            c.store(0, Relaxed);
        }
        for c in [
            &self.rate_limited,
            &self.connections_total,
            &self.header_timeouts,
            &self.idle_timeouts,
            &self.shed,
            &self.cap_full,
            &self.accept_errors,
        ] {
            c.store(0, Relaxed);
        }
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
            connections_open: self.connections_open.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            header_timeouts: self.header_timeouts.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            shed: self.shed.load(Relaxed),
            cap_full: self.cap_full.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
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
        one("rates_connections_open", "gauge", "Connections open now.", s.connections_open);
        one("rates_connections_total", "counter", "Connections accepted.", s.connections_total);
        out.push_str("# HELP rates_connections_closed_total Connections the server closed itself, by reason: header_timeout (no request head in time), idle_timeout (keep-alive idle too long), shed (closed while waiting for a request, to make room at the cap or free a descriptor).\n");
        out.push_str("# TYPE rates_connections_closed_total counter\n");
        for (reason, n) in [("header_timeout", s.header_timeouts), ("idle_timeout", s.idle_timeouts), ("shed", s.shed)]
        {
            let _ = writeln!(out, "rates_connections_closed_total{{reason=\"{reason}\"}} {n}");
        }
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one(
            "rates_connections_cap_waits_total",
            "counter",
            "Connections that waited for a slot: at the cap with every connection busy, accepting paused.",
            s.cap_full,
        );
        one("rates_accept_errors_total", "counter", "Failed accepts (e.g. out of file descriptors).", s.accept_errors);
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
