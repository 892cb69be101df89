//! `/metrics` read as Prometheus reads it: parsed by a Prometheus text
//! parser, with the request-duration histogram by `code` and `route`, the
//! connection gauges and the standard process metrics.

mod support;

use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use rates_server::ServerOptions;
use support::{agent, get, server};

/// Parses a scrape, failing the test on any line the parser rejects.
fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("/metrics parses as Prometheus text")
}

/// The sample of `metric` whose labels include every pair of `labels`.
fn sample<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?} in {:#?}", scrape.samples))
}

/// The count in the bucket `le` of a histogram sample.
fn bucket(s: &Sample, le: f64) -> f64 {
    let Value::Histogram(buckets) = &s.value else { panic!("{} is not a histogram: {:?}", s.metric, s.value) };
    buckets.iter().find(|b| b.less_than == le).unwrap_or_else(|| panic!("no bucket {le} in {buckets:?}")).count
}

#[test]
fn metrics_parse_with_the_duration_histogram_by_code_and_route() {
    // Every answer takes at least 300 ms, so none of them can land in the
    // 0.25 s bucket (a lower bound only: no wall-clock ceiling).
    let s = server(ServerOptions { latency: Duration::from_millis(300), ..Default::default() });
    let a = agent();
    assert_eq!(get(&a, &s, "/rates?base=USD").0, 200);
    assert_eq!(get(&a, &s, "/rates?base=USD").0, 200);
    assert_eq!(get(&a, &s, "/rates?base=XYZ").0, 400);
    assert_eq!(get(&a, &s, "/currencies").0, 200);
    assert_eq!(get(&a, &s, "/no/such/path").0, 404);
    assert_eq!(get(&a, &s, "/metrics").0, 200);
    let (status, _, text) = get(&a, &s, "/metrics");
    assert_eq!(status, 200);
    let scrape = parse(&text);

    let h = sample(&scrape, "rates_request_duration_seconds", &[("code", "200"), ("route", "/rates")]);
    assert_eq!((bucket(h, 0.25), bucket(h, f64::INFINITY)), (0.0, 2.0), "{h:?}");
    let h = sample(&scrape, "rates_request_duration_seconds", &[("code", "400"), ("route", "/rates")]);
    assert_eq!(bucket(h, f64::INFINITY), 1.0);
    let h = sample(&scrape, "rates_request_duration_seconds", &[("code", "200"), ("route", "/currencies")]);
    assert_eq!(bucket(h, f64::INFINITY), 1.0);
    // Unknown paths share one label value, so a scan cannot grow the series.
    let h = sample(&scrape, "rates_request_duration_seconds", &[("code", "404"), ("route", "other")]);
    assert_eq!(bucket(h, f64::INFINITY), 1.0);
    // `/metrics` skips the injected faults but is counted, under its own route.
    let h = sample(&scrape, "rates_request_duration_seconds", &[("code", "200"), ("route", "/metrics")]);
    assert_eq!(bucket(h, f64::INFINITY), 1.0);
    assert_eq!(bucket(h, 0.25), 1.0, "no injected latency on /metrics");
    assert!(
        matches!(sample(&scrape, "rates_requests_total", &[("code", "200"), ("route", "/rates")]).value, Value::Counter(n) if n == 2.0)
    );

    // Every delayed answer says how late it was made (no upper bound here:
    // the figure is the benchmark's): the five above, not `/metrics`.
    let h = sample(&scrape, "rates_latency_overshoot_seconds", &[]);
    assert_eq!(bucket(h, f64::INFINITY), 5.0, "{h:?}");

    // The connection answering this scrape is open.
    assert!(matches!(sample(&scrape, "rates_connections_open", &[]).value, Value::Gauge(n) if n >= 1.0));
    assert!(matches!(sample(&scrape, "rates_requests_in_flight_max", &[]).value, Value::Gauge(n) if n == 1.0));
    assert!(scrape.docs.contains_key("rates_request_duration_seconds"), "{:?}", scrape.docs);
}

#[cfg(target_os = "linux")]
#[test]
fn metrics_include_the_standard_process_metrics() {
    let s = server(ServerOptions::default());
    let (_, _, text) = get(&agent(), &s, "/metrics");
    let scrape = parse(&text);
    assert!(matches!(sample(&scrape, "process_cpu_seconds_total", &[]).value, Value::Counter(v) if v >= 0.0));
    assert!(matches!(sample(&scrape, "process_resident_memory_bytes", &[]).value, Value::Gauge(v) if v > 0.0));
    // stdin, stdout, stderr, the listener and the connection at least.
    assert!(matches!(sample(&scrape, "process_open_fds", &[]).value, Value::Gauge(v) if v >= 5.0));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
    let start = match sample(&scrape, "process_start_time_seconds", &[]).value {
        Value::Gauge(v) => v,
        ref v => panic!("{v:?}"),
    };
    // This test process started before now, and within a day of it.
    assert!(start <= now + 1.0 && start > now - 86400.0, "start {start}, now {now}");
}
