//! The per-client, per-route buckets, vatcomply's refusal and the policy
//! the optional headers advertise, on a fake clock.

use concur::throttle::FakeClock;

use super::*;

fn ip(n: u32) -> IpAddr {
    IpAddr::from(n.to_be_bytes())
}

fn limit(rate: f64, burst: u32) -> Quota {
    Quota::new(rate, burst).expect("a valid quota")
}

#[tokio::test(start_paused = true)]
async fn buckets_of_gone_clients_are_forgotten() {
    let limiter = Limiter::new(Some(Quota::new(10.0, 1).expect("a valid quota")));
    let served = |n| matches!(limiter.check(Route::Rates, ip(n)), Some(Ok(_)));
    for n in 0..3000 {
        assert!(served(n));
    }
    // Still draining: none may be forgotten, or a client could reset
    // its limit by waiting for others to arrive.
    assert_eq!(limiter.len(), 3000);
    assert!(!served(0));
    // A tenth of a second later every bucket is full again: the new
    // client that brings the map to 4096 (twice 2048, the size at the
    // last pruning) prunes them all.
    tokio::time::advance(Duration::from_millis(100)).await;
    for n in 3000..4200 {
        assert!(served(n));
    }
    // Only the clients since the advance are left.
    assert_eq!(limiter.len(), 1200);
    // An active client keeps its state across a pruning.
    assert!(!served(3000));
}

#[test]
fn no_limit_no_verdict() {
    assert_eq!(Limiter::new(None).check(Route::Rates, ip(1)), None);
}

#[test]
fn the_policy_of_a_bucket() {
    for (rate, burst, quota, window) in [
        // Exact: a whole rate within the burst, or a burst of whole seconds.
        (5.0, 5, 5, 1),
        (2.0, 4, 4, 2),
        (3.0, 5, 3, 1),
        (2.5, 5, 5, 2),
        (0.5, 1, 1, 2),
        (1.0 / 86_400.0, 1, 1, 86_400),
        // Below the rate: a window is at least a second, a quota at most the burst.
        (10.0, 1, 1, 1),
        (0.3, 1, 1, 4),
        (7.5, 4, 4, 1),
    ] {
        assert_eq!(Policy::of(limit(rate, burst)), Policy { quota, window }, "{rate}/s, burst {burst}");
    }
}

const RATES: [f64; 14] = [0.01, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 7.3, 100.0];
const BURSTS: [u32; 7] = [1, 2, 3, 4, 5, 10, 50];

/// How many of `n` requests `limiter` refuses from one client that sends
/// `per_step` at once every `step`.
fn refusals(limiter: &Limiter<FakeClock>, clock: &FakeClock, n: usize, per_step: u64, step: Duration) -> usize {
    let mut refused = 0;
    for i in 0..n as u64 {
        if i > 0 && i % per_step == 0 {
            clock.advance(step);
        }
        if let Some(Err(_)) = limiter.check(Route::Rates, ip(1)) {
            refused += 1;
        }
    }
    refused
}

#[test]
fn a_client_that_follows_the_policy_is_never_refused() {
    for rate in RATES {
        for burst in BURSTS {
            let l = limit(rate, burst);
            let p = Policy::of(l);
            assert!(p.quota as f64 / p.window as f64 <= rate, "{p:?} above {rate}/s");
            assert!(p.quota <= u64::from(burst), "{p:?} above burst {burst}");
            let window = Duration::from_secs(p.window);
            // Evenly paced at q/w per second...
            let clock = FakeClock::new();
            let limiter = Limiter::with_clock(Some(l), clock.clone());
            assert_eq!(refusals(&limiter, &clock, 200, 1, window / p.quota as u32), 0, "paced, {rate}/s {burst}");
            // ...or the whole quota at the start of each window.
            let clock = FakeClock::new();
            let limiter = Limiter::with_clock(Some(l), clock.clone());
            assert_eq!(refusals(&limiter, &clock, 200, p.quota, window), 0, "bursts, {rate}/s {burst}");
        }
    }
}

#[test]
fn a_client_above_the_policy_is_refused() {
    // The other side of the test above: one more per window is too many.
    for (rate, burst) in [(5.0, 5), (2.0, 4), (0.5, 1)] {
        let l = limit(rate, burst);
        let p = Policy::of(l);
        let clock = FakeClock::new();
        let limiter = Limiter::with_clock(Some(l), clock.clone());
        let window = Duration::from_secs(p.window);
        assert!(refusals(&limiter, &clock, 200, p.quota + 1, window) > 0, "{rate}/s {burst}");
    }
}

#[test]
fn the_standing_says_what_is_left_and_when_more_comes() {
    let clock = FakeClock::new();
    let limiter = Limiter::with_clock(Some(limit(5.0, 5)), clock.clone());
    let ms = Duration::from_millis;
    let first = limiter.check(Route::Rates, ip(1));
    assert_eq!(first, Some(Ok(Standing { remaining: 4, next: ms(200) })));
    for _ in 0..4 {
        assert!(matches!(limiter.check(Route::Rates, ip(1)), Some(Ok(_))));
    }
    let Some(Err(refused)) = limiter.check(Route::Rates, ip(1)) else { panic!("the sixth at once is refused") };
    assert_eq!(refused.wait, ms(200));
    assert_eq!(refused.standing.remaining, 0);
    // Another client has a bucket of its own, and so has another route.
    assert!(matches!(limiter.check(Route::Rates, ip(2)), Some(Ok(s)) if s.remaining == 4));
    assert!(matches!(limiter.check(Route::Currencies, ip(1)), Some(Ok(s)) if s.remaining == 4));
    // Half a token later: still refused, and the wait is what is left of it.
    clock.advance(ms(100));
    assert!(matches!(limiter.check(Route::Rates, ip(1)), Some(Err(r)) if r.wait == ms(100)));
    clock.advance(ms(100));
    let after = limiter.check(Route::Rates, ip(1));
    assert!(matches!(after, Some(Ok(s)) if s.remaining == 0 && s.next == ms(200)), "{after:?}");
}

fn field(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test]
async fn the_refusal_is_vatcomplys() {
    let r = refusal(limit(2.0, 4), Duration::from_millis(300));
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = r.headers();
    assert_eq!(field(h, "retry-after").as_deref(), Some("1"));
    assert_eq!(field(h, "x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(field(h, "x-ratelimit-burst").as_deref(), Some("4"));
    assert_eq!(field(h, "content-type").as_deref(), Some("application/json"));
    for absent in ["x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit", "ratelimit-policy"] {
        assert_eq!(field(h, absent), None, "{absent}");
    }
    let body = axum::body::to_bytes(r.into_body(), 1024).await.expect("body");
    assert_eq!(&body[..], br#"{"detail":"Rate limit exceeded. Try again in 1 seconds.","retry_after":1}"#);
    // A longer wait rounds up; a fractional rate is given as it was.
    let r = refusal(limit(0.4, 1), Duration::from_millis(2100));
    assert_eq!(field(r.headers(), "retry-after").as_deref(), Some("3"));
    assert_eq!(field(r.headers(), "x-ratelimit-limit").as_deref(), Some("0.4"));
    let body = axum::body::to_bytes(r.into_body(), 1024).await.expect("body");
    assert_eq!(&body[..], br#"{"detail":"Rate limit exceeded. Try again in 3 seconds.","retry_after":3}"#);
}

#[test]
fn only_the_api_routes_are_limited() {
    let req = |method: &str, uri: &str| {
        Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).expect("request")
    };
    assert_eq!(limited_route(&req("GET", "/rates?base=USD")), Some(Route::Rates));
    assert_eq!(limited_route(&req("GET", "/currencies")), Some(Route::Currencies));
    for (method, uri) in [("GET", "/metrics"), ("GET", "/nope"), ("OPTIONS", "/rates"), ("POST", "/rates")] {
        assert_eq!(limited_route(&req(method, uri)), None, "{method} {uri}");
    }
}

#[test]
fn the_optional_headers_of_a_served_and_a_refused_answer() {
    let ad = Advertised::new(limit(2.0, 4));
    let served = Standing { remaining: 3, next: Duration::from_millis(500) };
    let mut h = HeaderMap::new();
    ad.annotate(&mut h, &served, ceil_secs(served.next));
    assert_eq!(field(&h, "ratelimit-policy").as_deref(), Some("\"default\";q=4;w=2"));
    assert_eq!(field(&h, "ratelimit").as_deref(), Some("\"default\";r=3;t=1"));
    assert_eq!(field(&h, "x-ratelimit-limit"), None, "vatcomply's field is the 429's alone");
    let empty = Standing { remaining: 0, next: Duration::from_millis(300) };
    let mut h = HeaderMap::new();
    ad.annotate(&mut h, &empty, 1);
    assert_eq!(field(&h, "ratelimit").as_deref(), Some("\"default\";r=0;t=1"));
    // Never more remaining than the quota: 3 per second out of a burst of 5.
    let ad = Advertised::new(limit(3.0, 5));
    let mut h = HeaderMap::new();
    ad.annotate(&mut h, &Standing { remaining: 4, ..served }, 1);
    assert_eq!(field(&h, "ratelimit").as_deref(), Some("\"default\";r=3;t=1"));
}

#[tokio::test(start_paused = true)]
async fn a_latency_past_the_end_of_the_clock_waits_instead_of_panicking() {
    let options = crate::ServerOptions { latency: Duration::MAX, ..Default::default() };
    let shared = crate::Shared::new(rates_core::Dataset::embedded(), options).expect("options");
    let req = Request::builder().uri("/rates").body(axum::body::Body::empty()).expect("request");
    let answer = inject(&shared, None, req, |_| async { Response::default() });
    assert!(tokio::time::timeout(Duration::from_secs(3600), answer).await.is_err(), "still waiting an hour on");
    assert_eq!(shared.metrics.snapshot().in_flight, 0, "counted out when dropped");
}
