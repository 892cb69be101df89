//! `rates bench` end to end: every model measured on a tiny workload
//! against the embedded server, the JSON's fields and their sanity, errors
//! counted when the server fails requests, the CPU workload, the table (as
//! text and as Markdown) and the chart.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use common::{MODELS, run};
use serde_json::Value;

mod common;

/// The fields of a measured model.
const FIELDS: [&str; 25] = [
    "model",
    "concurrency",
    "wall_s",
    "wall_min_s",
    "wall_max_s",
    "cpu_s",
    "cpu_user_s",
    "cpu_sys_s",
    "peak_rss_bytes",
    "items",
    "ok",
    "errors",
    "items_per_s",
    "requests",
    "failed_requests",
    "max_in_flight",
    "ideal_s",
    "ratio",
    "cpu_per_item_us",
    "served_latency_s",
    "served_ideal_s",
    "served_ratio",
    "first_error",
    "runs",
    "skipped",
];

fn bench_json(args: &[&str]) -> Value {
    let mut all = vec!["bench", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn temp_file(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rates-bench-test-{}-{name}", std::process::id()))
}

fn f(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or_else(|| panic!("{field} of {v}"))
}

fn u(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} of {v}"))
}

#[test]
fn every_model_is_measured_with_sane_values() {
    let svg = temp_file("io.svg");
    let v = bench_json(&[
        "--requests",
        "6",
        "--latency",
        "5ms",
        "--workers",
        "2",
        "--repeat",
        "2",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let w = &v["workload"];
    assert_eq!((w["kind"].as_str(), u(w, "items"), u(w, "repeat"), u(w, "workers")), (Some("io"), 6, 2, 2));
    assert_eq!(f(w, "latency_s"), 0.005);

    let models = v["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(names, MODELS);
    for m in models {
        let name = m["model"].as_str().unwrap();
        for field in FIELDS {
            assert!(m.get(field).is_some(), "{name} lacks {field}: {m}");
        }
        assert!(m["skipped"].is_null(), "{name}: {m}");
        // Every item succeeded, and the server saw exactly one request each.
        assert_eq!((u(m, "items"), u(m, "ok"), u(m, "errors")), (6, 6, 0), "{name}");
        assert_eq!((u(m, "requests"), u(m, "failed_requests")), (6, 0), "{name}");
        let c = u(m, "concurrency");
        let want_c = match name {
            "sync" => 1,
            "thread-per-item" => 6,
            _ => 2,
        };
        assert_eq!(c, want_c, "{name}");
        assert!((1..=c).contains(&u(m, "max_in_flight")), "{name}: {m}");

        let (wall, lo, hi) = (f(m, "wall_s"), f(m, "wall_min_s"), f(m, "wall_max_s"));
        assert!(0.0 < lo && lo <= wall && wall <= hi && hi < 60.0, "{name}: {m}");
        assert!((f(m, "items_per_s") - 6.0 / wall).abs() < 1e-6 * f(m, "items_per_s"), "{name}");
        let (cpu, user, sys) = (f(m, "cpu_s"), f(m, "cpu_user_s"), f(m, "cpu_sys_s"));
        assert!(cpu > 0.0 && user >= 0.0 && sys >= 0.0 && cpu < 60.0, "{name}: {m}");
        let rss = u(m, "peak_rss_bytes");
        assert!((1 << 20..1 << 34).contains(&rss), "{name}: {rss}");

        // ⌈6/c⌉ waits of 5 ms at least: nothing beats the bound.
        let ideal = f(m, "ideal_s");
        assert!((ideal - 6u64.div_ceil(c) as f64 * 0.005).abs() < 1e-9, "{name}: {ideal}");
        assert!(f(m, "ratio") >= 0.98, "{name}: {m}");
        assert!((f(m, "ratio") - wall / ideal).abs() < 1e-9, "{name}");
        assert!((f(m, "cpu_per_item_us") - cpu / 6.0 * 1e6).abs() < 1e-6, "{name}: {m}");
        // The same bound from the server's own measured service time,
        // which is never under the latency it injects.
        let served = f(m, "served_latency_s");
        assert!(served >= 0.005, "{name}: {m}");
        let served_ideal = f(m, "served_ideal_s");
        assert!((served_ideal - 6u64.div_ceil(c) as f64 * served).abs() < 1e-9, "{name}: {m}");
        assert!((f(m, "served_ratio") - wall / served_ideal).abs() < 1e-9, "{name}");

        let runs = m["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{name}");
        assert!(runs.iter().all(|r| u(r, "requests") == 6 && u(r, "ok") == 6), "{name}: {runs:?}");
    }
    // The process pool's workers are counted in its memory.
    let rss = |name: &str| u(models.iter().find(|m| m["model"] == name).unwrap(), "peak_rss_bytes");
    assert!(rss("process-pool") > rss("sync"), "{} <= {}", rss("process-pool"), rss("sync"));

    let text = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let labels: Vec<&str> = doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).collect();
    for model in MODELS {
        assert!(labels.iter().any(|l| l.trim() == model), "{model} not in the chart: {labels:?}");
    }
}

#[test]
fn requests_the_server_fails_are_counted_as_errors() {
    let v = bench_json(&[
        "--models",
        "sync,thread-pool,process-pool,async",
        "--requests",
        "5",
        "--latency",
        "0",
        "--fail-rate",
        "1",
        "--retries",
        "1",
        "--repeat",
        "1",
    ]);
    for m in v["models"].as_array().unwrap() {
        let name = m["model"].as_str().unwrap();
        assert_eq!((u(m, "ok"), u(m, "errors")), (0, 5), "{name}");
        // A first attempt and one retry per item, all failed.
        assert_eq!((u(m, "requests"), u(m, "failed_requests")), (10, 10), "{name}");
        assert!(m["first_error"].as_str().unwrap().contains("HTTP 500"), "{name}: {m}");
        // No latency: no bound to compare with.
        assert!(m["ideal_s"].is_null() && m["ratio"].is_null(), "{name}: {m}");
    }
}

#[test]
fn the_cpu_workload_runs_on_every_model() {
    let v = bench_json(&["--workload", "cpu", "--requests", "6", "--work", "20000", "--workers", "2", "--repeat", "1"]);
    let w = &v["workload"];
    assert_eq!((w["kind"].as_str(), u(w, "rounds")), (Some("cpu"), 20000));
    assert!(f(w, "item_ms") > 0.0 && w["latency_s"].is_null());
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), MODELS.len());
    for m in models {
        let name = m["model"].as_str().unwrap();
        // Every model runs it, the process pool's workers included.
        assert!(m["skipped"].is_null(), "{name}: {m}");
        assert_eq!((u(m, "ok"), u(m, "errors")), (6, 0), "{name}");
        assert!(m["requests"].is_null() && m["max_in_flight"].is_null(), "{name}: {m}");
        assert!(f(m, "wall_s") > 0.0 && f(m, "cpu_s") > 0.0 && f(m, "ideal_s") > 0.0, "{name}: {m}");
    }
}

#[test]
fn the_table_has_a_row_per_model() {
    let (code, out, err) =
        run(&["bench", "--workload", "cpu", "--requests", "3", "--work", "1000", "--repeat", "1", "--workers", "2"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("CPU-bound: 3 items"), "{out}");
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header[..3], ["model", "wall", "spread"], "{out}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), MODELS.len(), "{out}");
    for (row, model) in rows.iter().zip(MODELS) {
        assert_eq!(row.split_whitespace().next(), Some(model), "{out}");
    }
}

#[test]
fn the_markdown_table_has_a_row_per_model() {
    let args = ["bench", "--workload", "cpu", "--requests", "3", "--work", "1000", "--repeat", "1", "--markdown"];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CPU-bound: 3 items") && lines[1].is_empty(), "{out}");
    let cells = |line: &str| -> Vec<String> {
        let inner = line.strip_prefix("| ").and_then(|l| l.strip_suffix(" |")).unwrap_or_else(|| panic!("{line}"));
        inner.split(" | ").map(str::to_owned).collect()
    };
    let header = cells(lines[2]);
    assert_eq!(header[..3], ["model", "wall", "spread"], "{out}");
    let rule = cells(lines[3]);
    assert_eq!(rule.len(), header.len());
    assert!(rule[0] == "---" && rule[1..].iter().all(|r| r == "---:"), "numbers align right: {out}");
    let rows = &lines[4..];
    assert_eq!(rows.len(), MODELS.len(), "{out}");
    for (row, model) in rows.iter().zip(MODELS) {
        let row = cells(row);
        assert_eq!((row[0].as_str(), row.len()), (model, header.len()), "{out}");
    }
}

#[test]
fn bad_options_are_refused_before_any_run() {
    for (args, names) in [
        (&["--models", "sync,threads"][..], "'threads'"),
        (&["--plot", "chart.png"][..], "chart.png"),
        (&["--timeline", "timeline.png"][..], "timeline.png"),
        (&["--markdown", "--json"][..], "--markdown"),
        (&["--workload", "cpu", "--timeline", "t.svg"][..], "--timeline"),
        (&["--workload", "cpu", "--trace", "t.json"][..], "--trace"),
        (&["--requests", "0"][..], "--requests"),
        (&["--api", "nonsense"][..], "nonsense"),
    ] {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        let (code, out, err) = run(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
        assert_eq!(out, "");
    }
}

#[test]
fn a_run_over_its_limit_is_stopped_and_reported() {
    // Two requests of 5 s each cannot finish within 200 ms.
    let args = ["bench", "--json", "--models", "sync", "--requests", "2", "--latency", "5s", "--repeat", "1"];
    let (code, out, err) = run(&[&args[..], &["--run-limit", "200ms"]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sync: the run took longer than --run-limit 200ms"), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let m = &v["models"][0];
    assert!(m["skipped"].as_str().unwrap().contains("--run-limit"), "{m}");
    assert!(m.get("wall_s").is_none(), "{m}");
}

#[test]
fn bench_honours_rates_api_and_spells_the_simulation_as_fetch_does() {
    let server = rates_server::spawn(rates_core::Dataset::embedded(), rates_server::ServerOptions::default()).unwrap();
    let out = common::rates()
        .args(["bench", "--json", "--models", "sync", "--requests", "4", "--repeat", "1"])
        .env("RATES_API", server.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["workload"]["api"], server.url());
    // Four measured, and six that probed the API's latency first.
    assert_eq!(server.metrics().snapshot().count(200), 4 + 6, "the requests went to RATES_API");

    let v = bench_json(&["--models", "sync", "--requests", "2", "--repeat", "1", "--sim-latency", "7ms"]);
    assert_eq!(v["workload"]["latency_s"], 0.007);
    let (code, _, err) = run(&["bench", "--api", server.url(), "--sim-latency", "7ms"]);
    assert_eq!(code, 2, "the simulation needs the embedded server: {err}");
}

#[test]
fn bench_against_an_api_probes_its_latency_for_the_bound() {
    let options = rates_server::ServerOptions { latency: std::time::Duration::from_millis(50), ..Default::default() };
    let server = rates_server::spawn(rates_core::Dataset::embedded(), options).unwrap();
    let v = bench_json(&["--api", server.url(), "--models", "sync", "--requests", "3", "--repeat", "1"]);
    let w = &v["workload"];
    assert_eq!(w["latency_probed"], true, "{w}");
    // The server holds every answer 50 ms: the probe cannot see less.
    assert!(w["latency_s"].as_f64().unwrap() >= 0.05, "{w}");
    let sync = &v["models"][0];
    assert!(sync["ideal_s"].as_f64().unwrap() >= 0.15, "three requests one after another: {sync}");
    assert!(sync["ratio"].as_f64().is_some(), "{sync}");
}

#[test]
fn under_a_capacity_there_is_no_bound_from_the_servers_times() {
    let v = bench_json(&[
        "--models",
        "thread-pool",
        "--requests",
        "4",
        "--latency",
        "5ms",
        "--sim-capacity",
        "1",
        "--workers",
        "2",
        "--repeat",
        "1",
    ]);
    let m = &v["models"][0];
    // The nominal bound counts the capacity: 4 requests one at a time.
    assert!((f(m, "ideal_s") - 0.02).abs() < 1e-9, "{m}");
    // The server's times include uneven waits for its capacity.
    assert!(m["served_latency_s"].as_f64().is_some_and(|s| s >= 0.005), "{m}");
    assert!(m["served_ideal_s"].is_null() && m["served_ratio"].is_null(), "{m}");
}
