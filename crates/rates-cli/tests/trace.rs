//! `--trace FILE` end to end: the trace of a run against its server, its
//! tracks per model, the waits of a throttle, 429s, and what a stopped or
//! killed run leaves.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{MODELS, rates, run, signalled};
use nix::sys::signal::Signal;
use rates_server::{ServerOptions, spawn};
use serde_json::Value;

mod common;

/// Twelve bases: more items than the pools have workers.
const BASES: &str = "USD,EUR,PLN,NOK,CZK,GBP,JPY,CHF,SEK,DKK,HUF,AUD";

/// The events of a finished trace, which is also valid JSON as a whole.
fn finished(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let whole: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}\n{text}"));
    let events = rates_core::trace::read_events(&text).unwrap();
    assert_eq!(whole, events);
    check_fields(&events);
    events
}

/// Every event has the fields the Trace Event format documents for its `ph`.
fn check_fields(events: &[Value]) {
    for e in events {
        let has = |k: &str| e.get(k).is_some();
        let num = |k: &str| e[k].as_f64().is_some();
        let ok = match e["ph"].as_str().unwrap_or("") {
            "M" => {
                ["process_name", "thread_name"].contains(&e["name"].as_str().unwrap_or(""))
                    && num("pid")
                    && num("tid")
                    && e["args"]["name"].is_string()
            }
            "X" => {
                let common = e["name"].is_string() && num("ts") && num("dur") && num("pid") && num("tid");
                match e["cat"].as_str() {
                    Some("request") => {
                        let a = &e["args"];
                        common
                            && e["name"].as_str().is_some_and(|n| n.starts_with("GET "))
                            && a["item"].is_string()
                            && a["attempt"].is_u64()
                            && a["status"].is_u64()
                            && a["bytes"].is_u64()
                            && (a["status"] != 0 || a["error"].is_string())
                    }
                    Some("wait") => {
                        common
                            && ["throttle", "shared limit", "rate", "concurrency", "retry-after", "backoff"]
                                .contains(&e["name"].as_str().unwrap_or(""))
                    }
                    _ => false,
                }
            }
            "i" => {
                e["s"] == "t"
                    && e["cat"] == "event"
                    && ["429", "retry", "cancelled", "respawn"].contains(&e["name"].as_str().unwrap_or(""))
                    && num("ts")
                    && num("pid")
                    && num("tid")
                    && e["args"].is_object()
            }
            "C" => {
                e["name"].is_string() && num("pid") && num("ts") && e["args"].as_object().is_some_and(|a| !a.is_empty())
            }
            _ => false,
        };
        assert!(ok && has("ph"), "an event without its fields: {e}");
    }
}

fn requests(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["ph"] == "X" && e["cat"] == "request").collect()
}

fn track(e: &Value) -> (u64, u64) {
    (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap())
}

/// The spans (requests and waits) of each track, by start.
fn spans_by_track(events: &[Value]) -> BTreeMap<(u64, u64), Vec<(f64, f64)>> {
    let mut tracks: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let ts = e["ts"].as_f64().unwrap();
        tracks.entry(track(e)).or_default().push((ts, ts + e["dur"].as_f64().unwrap()));
    }
    for spans in tracks.values_mut() {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    tracks
}

/// The names of the tracks (`thread_name`) of process `pid`.
fn track_names(events: &[Value], pid: u64) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == pid)
        .map(|e| e["args"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The pid of the traced process: the first event names it.
fn main_pid(events: &[Value]) -> u64 {
    assert_eq!(events[0]["name"], "process_name");
    events[0]["pid"].as_u64().unwrap()
}

#[test]
fn the_request_spans_are_the_requests_the_server_saw() {
    let server =
        spawn(rates_core::Dataset::embedded(), ServerOptions { fail_rate: 0.3, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let out = rates()
        .args(["fetch", "--model", "thread-pool", "--bases", BASES, "--retries", "5"])
        .args(["--trace", path.to_str().unwrap()])
        .env("RATES_API", server.url())
        .output()
        .unwrap();
    assert!(out.status.code().is_some_and(|c| c <= 1), "{out:?}");
    let events = finished(&path);
    let spans = requests(&events);
    // Besides them, the server answered the one /currencies of the code check.
    let seen = server.metrics().snapshot();
    assert_eq!(spans.len() as u64 + 1, seen.total(), "{seen:?}");
    // Of each status, the /currencies' aside.
    for status in [200, 500] {
        let drawn = spans.iter().filter(|e| e["args"]["status"] == status).count() as u64;
        assert!([drawn, drawn + 1].contains(&seen.count(status)), "{status}: {drawn} drawn, {seen:?}");
    }
    // The failures were retried: the retry instants and their backoff.
    let retries = events.iter().filter(|e| e["name"] == "retry").count() as u64;
    assert_eq!(retries, spans.iter().filter(|e| e["args"]["attempt"].as_u64() > Some(1)).count() as u64);
    assert!(seen.count(500) == 0 || retries > 0);
    assert!(spans.iter().all(|e| e["args"]["status"] != 200 || e["args"]["bytes"].as_u64() > Some(0)));
}

#[test]
fn each_model_draws_its_workers_as_tracks_whose_spans_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let items = BASES.split(',').count();
    for model in MODELS {
        let path = dir.path().join(format!("{model}.json"));
        let (code, _, err) = run(&[
            "fetch",
            "--model",
            model,
            "--workers",
            "4",
            "--bases",
            BASES,
            "--sim-latency",
            "30ms",
            "--trace",
            path.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{model}: {err}");
        let events = finished(&path);
        assert_eq!(requests(&events).len(), items, "{model}");
        for (track, spans) in spans_by_track(&events) {
            for pair in spans.windows(2) {
                assert!(pair[0].1 <= pair[1].0, "{model}: spans overlap on {track:?}: {pair:?}");
            }
        }
        let me = main_pid(&events);
        let with_requests: BTreeSet<(u64, u64)> = requests(&events).into_iter().map(track).collect();
        let names = track_names(&events, me);
        match model {
            "sync" => assert_eq!(names, ["sync"]),
            "thread-per-item" => {
                assert_eq!(with_requests.len(), items);
                assert_eq!(names.len(), items);
                assert!(names.iter().all(|n| n.starts_with("thread ")), "{names:?}");
            }
            "thread-pool" => {
                assert_eq!(with_requests.len(), 4, "{names:?}");
                let mut sorted = names.clone();
                sorted.sort();
                assert_eq!(sorted, (0..4).map(|n| format!("thread-pool worker {n}")).collect::<Vec<_>>());
            }
            "process-pool" => {
                // Each request on the track of the worker process that made it.
                assert!(with_requests.iter().all(|&(pid, tid)| pid != me && tid == pid), "{with_requests:?}");
                let workers: BTreeSet<u64> = with_requests.iter().map(|t| t.0).collect();
                assert!((1..=4).contains(&workers.len()), "{workers:?}");
                for pid in workers {
                    assert_eq!(track_names(&events, pid), [format!("process-pool worker pid {pid}")]);
                }
                // The threads that hand the work over waited for nothing: no track.
                assert!(names.is_empty(), "{names:?}");
            }
            "async" => {
                assert!(with_requests.len() <= 4 && names.iter().all(|n| n.starts_with("async slot ")), "{names:?}")
            }
            _ => assert!(with_requests.len() <= 4 && names.len() <= 4, "{model}: {names:?}"),
        }
        if model != "process-pool" {
            assert!(with_requests.iter().all(|t| t.0 == me), "{model}");
        }
    }
}

#[test]
fn a_throttled_run_shows_its_gaps_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let (rate, burst) = (20.0, 2);
    let (code, _, err) = run(&[
        "fetch",
        "--model",
        "thread-pool",
        "--workers",
        "4",
        "--bases",
        BASES,
        "--sim-latency",
        "0",
        "--rate",
        "20",
        "--burst",
        "2",
        "--trace",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let events = finished(&path);
    let mut starts: Vec<f64> = requests(&events).iter().map(|e| e["ts"].as_f64().unwrap() / 1e6).collect();
    starts.sort_by(f64::total_cmp);
    // In any window w, at most burst + rate·w requests: k starts after the
    // i-th, k past the burst take (k - burst) / rate at least, less the
    // little time between a grant and its request.
    let slack = 0.005;
    for i in 0..starts.len() {
        for j in i + 1..starts.len() {
            let least = (j - i) as f64 - f64::from(burst);
            assert!(starts[j] - starts[i] >= least / rate - slack, "starts {i} and {j}: {starts:?}");
        }
    }
    assert!(events.iter().any(|e| e["cat"] == "wait" && e["name"] == "throttle"));
}

#[test]
fn a_run_without_limits_writes_no_waits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let (code, _, err) = run(&["fetch", "--model", "async", "--sim-latency", "0", "--trace", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let events = finished(&path);
    assert_eq!(requests(&events).len(), 5);
    assert!(!events.iter().any(|e| e["cat"] == "wait"), "{events:?}");
}

#[test]
fn a_429_is_an_instant_and_the_learnt_rate_a_counter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let (code, _, err) = run(&[
        "fetch",
        "--model",
        "thread-pool",
        "--workers",
        "4",
        "--bases",
        BASES,
        "--sim-latency",
        "0",
        "--sim-rate-limit",
        "10",
        "--trace",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let events = finished(&path);
    let refused: Vec<_> = requests(&events).into_iter().filter(|e| e["args"]["status"] == 429).collect();
    let instants: Vec<_> = events.iter().filter(|e| e["ph"] == "i" && e["name"] == "429").collect();
    assert!(!refused.is_empty(), "no 429 met");
    assert_eq!(instants.len(), refused.len());
    assert!(instants.iter().all(|e| e["args"]["item"].is_string() && e["args"].get("retry_after").is_some()));
    // The run learnt the server's limit from its first 429.
    assert!(events.iter().any(|e| e["ph"] == "C" && e["name"] == "rate" && e["args"]["rate"].is_f64()));
}

#[test]
fn auto_writes_its_limits_as_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let (code, _, err) = run(&[
        "fetch",
        "--model",
        "async",
        "--workers",
        "auto",
        "--rate",
        "auto",
        "--sim-latency",
        "0",
        "--trace",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let events = finished(&path);
    for name in ["rate", "concurrency limit", "in flight"] {
        assert!(events.iter().any(|e| e["ph"] == "C" && e["name"] == name), "no {name} counter");
    }
}

/// `history` of a long range at 100 ms a request, one at a time: still
/// going when the signal comes.
fn long_history(path: &Path) -> Vec<String> {
    ["history", "--base", "USD", "--symbols", "PLN", "--from", "2020-01-01", "--to", "2020-12-31"]
        .into_iter()
        .map(str::to_owned)
        .chain(["--model", "sync", "--sim-latency", "100ms", "--trace", path.to_str().unwrap()].map(str::to_owned))
        .collect()
}

#[test]
fn a_run_stopped_by_sigterm_leaves_a_finished_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let args = long_history(&path);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = signalled(&args, &[(Duration::from_millis(1500), Signal::SIGTERM)], Duration::from_secs(20));
    assert_eq!(code, Some(143), "{err}");
    let events = finished(&path);
    let done = requests(&events).len();
    assert!((1..261).contains(&done), "{done}");
}

#[test]
fn a_killed_run_leaves_a_prefix_that_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let args = long_history(&path);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, _) = signalled(&args, &[(Duration::from_millis(1500), Signal::SIGKILL)], Duration::from_secs(20));
    assert_eq!(code, None);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.trim_end().ends_with(']'));
    let events = rates_core::trace::read_events(&text).unwrap();
    check_fields(&events);
    assert!(!requests(&events).is_empty(), "{text}");
}

#[test]
fn a_trace_that_cannot_be_written_is_a_usage_error_before_any_request() {
    for cmd in [
        &["fetch"][..],
        &["history", "--base", "USD", "--symbols", "PLN", "--from", "2024-01-02", "--to", "2024-01-03"],
    ] {
        let (code, out, err) = run(&[cmd, &["--trace", "/nonexistent-folder/t.json"]].concat());
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert_eq!(out, "");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--trace /nonexistent-folder/t.json"), "{err}");
    }
}
