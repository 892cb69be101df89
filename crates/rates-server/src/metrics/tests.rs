//! The counters and their Prometheus encoding.

use super::requests::SHARDS;
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
