//! `rates worker`, `rates queue status` and `--queue` end to end, on a real
//! `redis-server` each test starts on a free loopback port in a temporary
//! directory (`appendonly yes`), with real `rates worker` processes and an
//! in-test API server that records every request it answers: a worker
//! SIGKILLed while it holds a task, a task delivered too often named as a
//! dead letter, two workers finishing one task, a worker drained by
//! SIGTERM, the broker restarted mid-job, a run stopped by Ctrl-C and
//! resumed by its job's id, and the default path with no Redis at all.
#![allow(clippy::unwrap_used)]

mod common;
mod queue_support;

use std::time::Duration;

use concur_redis::Keys;
use nix::sys::signal::Signal;
use queue_support::*;

#[test]
fn a_worker_killed_holding_a_task_loses_nothing() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(300));
    let workers = Workers::start(2, &redis, &["--claim-after", "500ms"]);
    let history = History::start(&api, &redis.url(), "2024-01-12");
    let victim = workers.pid(0);
    let mut fetching = None;
    wait_until("the first worker holds a task the server is answering", || {
        let asked = api.dates.lock().unwrap().clone();
        fetching = redis.held_dates(victim).into_iter().find(|d| asked.contains(d));
        fetching.is_some()
    });
    signal(victim, Signal::SIGKILL);
    let (code, out, err) = history.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-12"), "every day exactly once");
    let fetching = fetching.unwrap();
    let asked = api.dates.lock().unwrap().iter().filter(|d| **d == fetching).count();
    assert_eq!(asked, 2, "the killed worker's task ({fetching}) was fetched again");
    assert!(redis.pending().iter().all(|(_, n)| *n == 0), "{:?}", redis.pending());
}

#[test]
fn a_task_delivered_too_often_is_a_dead_letter_named_by_history() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(300));
    // One delivery allowed: the task the killed worker held is not run again.
    let workers = Workers::start(2, &redis, &["--claim-after", "500ms", "--max-deliveries", "1"]);
    let history = History::start(&api, &redis.url(), "2024-01-12");
    let victim = workers.pid(0);
    wait_until("the first worker holds a task", || redis.holds(victim));
    signal(victim, Signal::SIGKILL);
    let (code, out, err) = history.finish();
    assert_eq!(code, 1, "{err}");
    let dead = redis.dead_letters();
    assert!(dead >= 1, "{err}");
    assert_eq!(err.matches("dead letter").count() as i64, dead, "each dead letter named once: {err}");
    assert_eq!(dates_written(&out).len() as i64 + dead, days("2024-01-12").len() as i64, "the others are written");
}

#[test]
fn two_workers_finishing_one_task_write_it_once() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(200));
    let workers = Workers::start(2, &redis, &["--claim-after", "500ms"]);
    let history = History::start(&api, &redis.url(), "2024-01-31");
    let slow = workers.pid(0);
    let mut fetching = None;
    wait_until("the first worker holds a task the server is answering", || {
        let asked = api.dates.lock().unwrap().clone();
        fetching = redis.held_dates(slow).into_iter().find(|d| asked.contains(d));
        fetching.is_some()
    });
    // Stalled, it renews nothing: the other worker claims its tasks...
    signal(slow, Signal::SIGSTOP);
    wait_until("the other worker took them over", || !redis.holds(slow));
    // ...and the stalled one, resumed, finishes them too.
    signal(slow, Signal::SIGCONT);
    let (code, out, err) = history.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-31"), "every day exactly once");
    let fetching = fetching.unwrap();
    let asked = api.dates.lock().unwrap().iter().filter(|d| **d == fetching).count();
    assert_eq!(asked, 2, "both workers fetched {fetching}");
}

#[test]
fn a_worker_drains_on_sigterm_and_exits_0() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(300));
    let mut workers = Workers::start(2, &redis, &[]);
    let history = History::start(&api, &redis.url(), "2024-01-12");
    let leaving = workers.pid(0);
    wait_until("the first worker holds a task", || redis.holds(leaving));
    let (code, status, err) = common::run(&["queue", "status", "--queue", &redis.url()]);
    assert_eq!(code, 0, "{err}");
    assert!(status.contains(&format!("-{leaving}: ")) && status.contains("workers seen: 2"), "{status}");
    signal(leaving, Signal::SIGTERM);
    assert_eq!(workers.wait(0), Some(0), "a drained worker exits 0");
    let (code, out, err) = history.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-12"));
    // What it held was finished and acknowledged, not left for a claim.
    assert_eq!(api.requests(), days("2024-01-12").len(), "no task ran twice");
}

#[test]
fn the_broker_restarted_mid_job_loses_nothing() {
    let mut redis = Redis::start();
    let api = Api::start(Duration::from_millis(100));
    let _workers = Workers::start(2, &redis, &[]);
    let history = History::start(&api, &redis.url(), "2024-01-31");
    wait_until("the job is under way", || api.requests() >= 4);
    redis.restart();
    let (code, out, err) = history.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-31"), "every day exactly once");
}

#[test]
fn one_rate_limit_holds_across_callers_and_workers() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(5));
    let _workers = Workers::start(3, &redis, &[]);
    let (rate, burst) = (20.0, 2.0);
    let limit = ["--rate", "20", "--burst", "2"];
    // Two callers at once: each alone keeping 20/s would make 40/s.
    let runs = [
        History::start_with(&api, &redis.url(), "2024-01-19", &limit),
        History::start_with(&api, &redis.url(), "2024-01-19", &limit),
    ];
    for run in runs {
        let (code, out, err) = run.finish();
        assert_eq!(code, 0, "{err}");
        assert_eq!(dates_written(&out), days("2024-01-19"));
    }
    let mut times = api.times.lock().unwrap().clone();
    times.sort();
    assert_eq!(times.len(), 2 * days("2024-01-19").len());
    // Grants are exact on the broker's clock; a request then crosses the
    // queue, a worker's wake-up and a connection, which can bunch arrivals
    // on a loaded machine: one grant interval of that is allowed for (one
    // request more in a window), far below the double rate that two
    // callers each keeping their own limit would show.
    let hop = 1.0 / rate;
    for i in 0..times.len() {
        for j in i..times.len() {
            let w = (times[j] - times[i]).as_secs_f64();
            let n = (j - i + 1) as f64;
            assert!(n <= burst + rate * (w + hop), "{n} requests within {w:.3}s");
        }
    }
}

#[test]
fn ctrl_c_stops_a_run_that_no_worker_serves() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(1));
    let run = History::start(&api, &redis.url(), "2024-01-05");
    // Its first tasks are queued: the run is under way, its signal handlers in place.
    wait_until("tasks are queued", || {
        redis::cmd("XLEN").arg(Keys::default().tasks()).query::<i64>(&mut redis.con()).unwrap_or(0) > 0
    });
    signal(run.0.id(), Signal::SIGINT);
    let (code, out, err) = run.finish();
    assert_eq!(code, 130, "{err}");
    assert!(err.contains("no worker serves"), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(dates_written(&out), Vec::<String>::new());
    assert_eq!(api.requests(), 0);
}

#[test]
fn bench_runs_the_workload_on_the_queue_as_one_row() {
    let redis = Redis::start();
    let _workers = Workers::start(2, &redis, &[]);
    for workload in ["io", "cpu"] {
        let args = ["bench", "--queue", &redis.url(), "--workload", workload, "--requests", "12"];
        let (code, out, err) = run_keyed(&[&args[..], &["--repeat", "1", "--cpu-ms", "1", "--json"]].concat());
        assert_eq!(code, 0, "{workload}: {err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = report["models"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{out}");
        assert_eq!(rows[0]["model"], "queue");
        assert_eq!((rows[0]["ok"].as_u64(), rows[0]["errors"].as_u64()), (Some(12), Some(0)), "{out}");
        if workload == "io" {
            assert_eq!(rows[0]["requests"].as_u64(), Some(12), "the server saw every request");
        }
    }
}

#[test]
fn a_bad_queue_url_is_refused_and_an_absent_broker_named() {
    for args in [
        &["worker", "--queue", "localhost:6379"][..],
        &["queue", "status", "--queue", "http://x"],
        &["history", "--queue", "redis://", "--base", "EUR", "--symbols", "USD", "--from", FROM, "--to", FROM],
    ] {
        let (code, _, err) = common::run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("--queue: invalid URL"), "{err}");
    }
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    for args in [&["worker", "--queue", &nowhere][..], &["queue", "status", "--queue", &nowhere]] {
        let (code, _, err) = common::run(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(&format!("cannot reach {nowhere}")), "{err}");
    }
}

#[test]
fn the_default_path_needs_no_redis() {
    // No redis-server on the PATH, and a queue URL nothing listens on is
    // only touched when asked for.
    let empty = std::env::temp_dir().join(format!("rates-no-redis-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let fetch = ["fetch", "--bases", "EUR,USD", "--sim-latency", "1ms"];
    let out = common::rates().args(fetch).env("PATH", &empty).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let out = common::rates().args(fetch).args(["--queue", &nowhere]).env("PATH", &empty).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot use the queue"));
    let _ = std::fs::remove_dir(&empty);
}

/// The job id a `history` on a queue says on stderr when it starts.
fn job_of(err: &str) -> String {
    let line = err.lines().find(|l| l.starts_with("rates: job ")).unwrap_or_else(|| panic!("no job id said: {err}"));
    line["rates: job ".len()..].split(' ').next().unwrap().to_owned()
}

#[test]
fn a_run_stopped_by_ctrl_c_resumes_by_job_id_fetching_only_the_missing_days() {
    let redis = Redis::start();
    // Slow enough that the run is far from done when it is stopped.
    let api = Api::start(Duration::from_millis(200));
    let _workers = Workers::start(2, &redis, &[]);
    let to = "2024-02-29";
    // No store: the queue's job alone remembers what was fetched.
    let first = History::start_with(&api, &redis.url(), to, &["--no-cache"]);
    wait_until("some days were fetched", || api.requests() >= 6);
    signal(first.0.id(), Signal::SIGINT);
    let (code, out, err) = first.finish();
    assert_eq!(code, 130, "{err}");
    let job = job_of(&err);
    assert!(err.contains(&format!("rates: job {job} (resume with --resume {job})")), "said at the start: {err}");
    assert!(err.contains(&format!("job {job} stopped: resume it within 60 s with --resume {job}")), "{err}");
    assert!(err.contains("not fetched: "), "{err}");
    assert!(!err.contains("cancelled before it ran"), "a day in flight is not fetched, not failed: {err}");
    let written_first = dates_written(&out);
    assert!(written_first.len() < days(to).len(), "the run was stopped half-way: {written_first:?}");

    let resumed = History::start_with(&api, &redis.url(), to, &["--no-cache", "--resume", &job]);
    let (code, out, err) = resumed.finish();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("rates: job {job} ")), "the same job: {err}");
    assert_eq!(dates_written(&out), days(to), "every day exactly once");
    // The days fetched before the stop, and those in flight then (which
    // the workers finished, or the resumed run waited for), were not
    // fetched again: each day was asked once over both runs.
    let mut asked = api.dates.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, days(to), "each day fetched once");
}

#[test]
fn a_resume_of_an_unknown_job_or_of_another_range_is_refused() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(1));
    // No worker: the run's first tasks stay queued until it is stopped.
    let run = History::start_with(&api, &redis.url(), "2024-01-12", &["--no-cache"]);
    wait_until("tasks are queued", || {
        redis::cmd("XLEN").arg(Keys::default().tasks()).query::<i64>(&mut redis.con()).unwrap_or(0) > 0
    });
    signal(run.0.id(), Signal::SIGINT);
    let (code, _, err) = run.finish();
    assert_eq!(code, 130, "{err}");
    let job = job_of(&err);
    let history = |job: &str, to: &str| {
        let args = ["history", "--api", &api.url, "--queue", &redis.url(), "--resume", job, "--no-cache"];
        common::run(&[&args[..], &["--base", "EUR", "--symbols", "USD", "--from", FROM, "--to", to]].concat())
    };
    let (code, out, err) = history(&job, "2024-01-19");
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("--resume {job}: that job is ")) && err.contains("2024-01-12"), "{err}");
    assert_eq!(out, "");
    let (code, out, err) = history("0123abcd", "2024-01-12");
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("--resume 0123abcd: no such job") && err.contains("expired"), "{err}");
    assert_eq!(out, "");
    assert_eq!(api.requests(), 0);
    // Only with a queue.
    let (code, _, err) = common::run(&["history", "--resume", &job, "--base", "EUR", "--symbols", "USD"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--queue"), "{err}");
}
