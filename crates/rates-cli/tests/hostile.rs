//! A hostile API against the client, end to end: every wait a server can
//! ask for is capped, said on stderr without `-v`, and ended at once by a
//! signal; an endless answer is cut at the body cap.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use common::{serve_app, signalled};
use nix::sys::signal::Signal::SIGINT;

mod common;

/// A server whose `/rates` always answers `status` with `headers` and a
/// valid USD body (or the API's 429 body).
fn answering(status: u16, headers: &'static [(&'static str, &'static str)]) -> (String, tokio::runtime::Runtime) {
    let app = axum::Router::new().route(
        "/rates",
        axum::routing::get(move || async move {
            let body = if status == 200 {
                r#"{"date":"2024-01-02","base":"USD","rates":{"EUR":0.9,"USD":1.0}}"#
            } else {
                r#"{"detail":"Rate limit exceeded."}"#
            };
            let mut answer = (StatusCode::from_u16(status).unwrap(), body).into_response();
            for (name, value) in headers {
                answer.headers_mut().insert(HeaderName::from_static(name), HeaderValue::from_static(value));
            }
            answer
        }),
    );
    serve_app(app, 1)
}

/// `rates fetch --bases USD` against `api` with `extra`, stopped by Ctrl-C
/// after `after`: its exit code and stderr, asserting it stopped within
/// two seconds of the signal (the wait it was in is hours long).
fn interrupted(api: &str, extra: &[&str], after: Duration) -> (Option<i32>, String) {
    let args =
        [&["fetch", "--api", api, "--bases", "USD,EUR", "--symbols", "EUR", "--model", "sync"][..], extra].concat();
    let (code, _, err) = signalled(&args, &[(after, SIGINT)], Duration::from_secs(2));
    (code, err)
}

#[test]
fn a_retry_after_of_a_day_is_capped_announced_and_stopped_by_ctrl_c() {
    let (api, _rt) = answering(429, &[("retry-after", "86400")]);
    let (code, err) = interrupted(&api, &[], Duration::from_secs(2));
    assert_eq!(code, Some(130), "{err}");
    let said = err.lines().find(|l| l.contains("waiting")).unwrap_or_else(|| panic!("no announcement: {err}"));
    assert!(said.contains("3600s") && said.contains("Retry-After") && said.contains("Ctrl-C"), "{said}");
}

#[test]
fn a_reset_thousands_of_years_away_is_capped_announced_and_stopped_by_ctrl_c() {
    // Nothing left, until a timestamp 3,000 years away (or 31 years, as a
    // number of seconds): the learnt rate holds until the reset, capped.
    for reset in ["99999999999", "999999999"] {
        let headers: &'static [(&str, &str)] = match reset {
            "99999999999" => {
                &[("x-ratelimit-limit", "5"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "99999999999")]
            }
            _ => &[("ratelimit-policy", "\"default\";q=5;w=1"), ("ratelimit", "\"default\";r=0;t=999999999")],
        };
        let (api, _rt) = answering(200, headers);
        let (code, err) = interrupted(&api, &["--rate", "auto"], Duration::from_secs(2));
        assert_eq!(code, Some(130), "{reset}: {err}");
        let said = err.lines().find(|l| l.contains("waiting")).unwrap_or_else(|| panic!("{reset}: {err}"));
        assert!(said.contains("3600s") && said.contains("resets") && said.contains("Ctrl-C"), "{said}");
    }
}

#[test]
fn a_short_wait_is_not_announced() {
    // Retry-After 1: the ordinary pace of a rate-limited API, said only with -v.
    let (api, _rt) = answering(429, &[("retry-after", "1")]);
    let (code, err) = interrupted(&api, &[], Duration::from_millis(2500));
    assert_eq!(code, Some(130), "{err}");
    assert!(!err.contains("waiting"), "{err}");
}
