//! `rates worker --trace FILE` end to end: two workers on a real
//! `redis-server` serve a `rates fetch --queue` run, are drained by
//! SIGTERM, and each leaves a finished trace of its own process whose
//! request spans, together, are the requests the API answered.
#![allow(clippy::unwrap_used)]

mod common;
mod queue_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use nix::sys::signal::Signal;
use queue_support::*;
use serde_json::Value;

/// Twelve bases: more items than the two workers, so both take several.
const BASES: &str = "USD,EUR,PLN,NOK,CZK,GBP,JPY,CHF,SEK,DKK,HUF,AUD";

/// The API, recording the base of each `/rates` request it answers: a
/// trace names a request of the latest day by its base. (The queue
/// support's API records only dates.)
struct Api {
    url: String,
    asked: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl Api {
    fn start(latency: Duration) -> Self {
        let options = rates_server::ServerOptions { latency, ..Default::default() };
        let shared = rates_server::Shared::new(rates_core::Dataset::embedded(), options).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&asked);
        let app = rates_server::router(shared).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            let seen = Arc::clone(&seen);
            async move {
                // Only `/rates`: the caller also asks `/currencies` itself.
                if req.uri().path() == "/rates" {
                    let base = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("base=")));
                    seen.lock().unwrap().push(base.unwrap_or("").to_owned());
                }
                next.run(req).await
            }
        }));
        let (url, rt) = common::serve_app(app, 2);
        Api { url, asked, _rt: rt }
    }
}

/// The events of a worker's finished trace, checked to be valid JSON as a
/// whole and to read the same with `read_events`.
fn finished(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let whole: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON: {e}\n{text}"));
    let events = rates_core::trace::read_events(&text).unwrap();
    assert_eq!(whole, events);
    events
}

fn requests(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["ph"] == "X" && e["cat"] == "request").collect()
}

fn track(e: &Value) -> (u64, u64) {
    (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap())
}

#[test]
fn each_worker_traces_the_requests_it_made_on_its_own_tracks() {
    let redis = Redis::start();
    // Slow enough that a worker is busy while the other reads the next task.
    let api = Api::start(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("w1.json"), dir.path().join("w2.json")];
    // One `Workers` each: every worker needs a trace file of its own.
    let mut workers: Vec<Workers> =
        paths.iter().map(|p| Workers::start(1, &redis, &["--trace", p.to_str().unwrap()])).collect();

    let out = common::rates()
        .args(["fetch", "--api", &api.url, "--queue", &redis.url(), "--bases", BASES])
        .env(KEY_ENV, KEY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");

    // Drained, a worker finishes its trace before it exits.
    for w in &mut workers {
        signal(w.pid(0), Signal::SIGTERM);
        assert_eq!(w.wait(0), Some(0), "a drained worker exits 0");
    }

    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let mut items = Vec::new();
    let mut spans: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for (w, path) in workers.iter().zip(&paths) {
        let pid = u64::from(w.pid(0));
        let events = finished(path);
        // The first event names the process: this worker, on this host.
        let me = format!("worker {host} pid {pid}");
        assert_eq!(events[0]["ph"], "M");
        assert_eq!(events[0]["name"], "process_name");
        assert_eq!(events[0]["pid"], pid);
        assert_eq!(events[0]["args"]["name"], me.as_str());
        let mine = requests(&events);
        // Each took part (more items than workers): a worker that wrote no
        // spans fails here rather than pass unseen.
        assert!(!mine.is_empty(), "{me} traced no request");
        let names: BTreeMap<u64, &str> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == pid)
            .map(|e| (e["tid"].as_u64().unwrap(), e["args"]["name"].as_str().unwrap()))
            .collect();
        for e in mine {
            let a = &e["args"];
            assert!(
                a["item"].is_string() && a["attempt"].is_u64() && a["status"].is_u64() && a["bytes"].is_u64(),
                "a request span without its args: {e}"
            );
            assert_eq!(a["status"], 200, "{e}");
            assert!(a["bytes"].as_u64() > Some(0), "{e}");
            // On this worker's own process, on a track named after it.
            let (span_pid, tid) = track(e);
            assert_eq!(span_pid, pid, "{e}");
            assert!(names.get(&tid).is_some_and(|n| n.starts_with(&format!("{me} thread"))), "{names:?}: {e}");
            items.push(a["item"].as_str().unwrap().to_owned());
        }
        for e in events.iter().filter(|e| e["ph"] == "X") {
            let ts = e["ts"].as_f64().unwrap();
            spans.entry(track(e)).or_default().push((ts, ts + e["dur"].as_f64().unwrap()));
        }
    }

    // The spans of both traces are the requests the server answered: each
    // once, none missing, none drawn that was not made.
    let mut asked = api.asked.lock().unwrap().clone();
    asked.sort();
    items.sort();
    assert_eq!(items, asked, "the spans against the requests the API saw");
    let every: BTreeSet<String> = BASES.split(',').map(str::to_owned).collect();
    assert_eq!(asked.len(), every.len(), "each base asked once: {asked:?}");
    assert_eq!(asked.into_iter().collect::<BTreeSet<_>>(), every);

    // A track is one thread of one worker: its spans follow one another.
    for (track, mut spans) in spans {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "spans overlap on {track:?}: {pair:?}");
        }
    }
}
