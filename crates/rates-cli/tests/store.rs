//! The local store of answers, end to end with real `rates history`
//! processes and servers whose own counters are read: an interrupted run
//! resumes where it stopped and a repeated one costs no request, `--offline`
//! makes no connection, two processes share one store, the latest day is
//! asked again after `--max-age`, and `rates cache info|clear`. Also the
//! partial chart, whose lines break at the days it lacks and whose title
//! names the range covered.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use chrono::{Datelike, NaiveDate, Weekday};
use rates_core::Dataset;
use rates_server::ServerOptions;

mod common;

/// A server over `ds` that counts the `/rates` requests it sees for each
/// `date=` (a run also asks `/currencies` once per store and day).
struct Server {
    url: String,
    seen: Arc<Mutex<BTreeMap<String, u32>>>,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(ds: Arc<Dataset>, latency: Duration) -> Server {
        let options = ServerOptions { latency, ..ServerOptions::default() };
        let shared = rates_server::Shared::new(ds, options).unwrap();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = Arc::clone(&seen);
        let app = rates_server::router(shared).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            if req.uri().path() == "/rates" {
                let day = req.uri().query().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("date=")));
                *counts.lock().unwrap().entry(day.unwrap_or("").to_string()).or_insert(0) += 1;
            }
            next.run(req)
        }));
        let (url, rt) = common::serve_app(app, 2);
        Server { url, seen, _rt: rt }
    }

    fn total(&self) -> u32 {
        self.seen.lock().unwrap().values().sum()
    }

    fn counts(&self) -> BTreeMap<String, u32> {
        self.seen.lock().unwrap().clone()
    }
}

fn day(s: &str) -> NaiveDate {
    rates_core::parse_date(s).unwrap()
}

fn weekdays(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|d| *d <= to).filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)).collect()
}

/// `history` of USD in EUR and JPY over `from..=to` against `api`, with the
/// store in `cache`, plus `extra`.
fn history<'a>(api: &'a str, cache: &'a Path, from: &'a str, to: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["history", "--api", api, "--cache", cache.to_str().unwrap()];
    args.extend(["--base", "USD", "--symbols", "EUR,JPY", "--from", from, "--to", to]);
    args.extend_from_slice(extra);
    args
}

fn spawn(args: &[&str]) -> Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("rates"))
        .args(args)
        .env_remove("RATES_API")
        .env_remove("RATES_CACHE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`, at most a minute, and gives (code, stdout, stderr).
fn finish(child: Child) -> (Option<i32>, String, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        panic!("rates did not finish within a minute");
    };
    let out = out.unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn an_interrupted_history_resumes_where_it_stopped_and_a_repeat_costs_nothing() {
    let server = Server::start(Dataset::embedded(), Duration::from_millis(10));
    let store = tempfile::tempdir().unwrap();
    let (from, to) = ("2019-01-01", "2019-12-31");
    let all = weekdays(day(from), day(to));
    let workers = 4;
    let run = history(&server.url, store.path(), from, to, &["--model", "async", "--workers", "4"]);

    // Stopped by Ctrl-C once the server has seen about half the days.
    let child = spawn(&run);
    let started = Instant::now();
    while (server.total() as usize) < all.len() / 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "the first run made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    let (code, first, first_err) = finish(child);
    let err = first_err.clone();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("rates: not fetched: "), "{err}");
    let first_rows = first.lines().count() - 1;
    assert!(first_rows > 0 && first_rows < all.len() * 3 / 4, "stopped half-way: {first_rows} rows");

    // Run again on the same store: it asks only for the rest.
    let (code, second, err) = common::run(&run);
    assert_eq!(code, 0, "{err}");
    let counts = server.counts();
    for d in &all {
        assert!(counts.contains_key(&d.to_string()), "{d} never asked");
    }
    // Each weekday once over both runs, but those in flight at the stop.
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= workers && twice.iter().all(|(_, n)| **n == 2),
        "{twice:?}\nthe first run said: {first_err}\nthe second run said: {err}"
    );
    assert!(server.total() as usize <= all.len() + workers, "{} requests", server.total());

    // The same bytes as one uninterrupted run (without a store).
    let fresh = Server::start(Dataset::embedded(), Duration::ZERO);
    let (code, whole, err) = common::run(&history(&fresh.url, store.path(), from, to, &["--no-cache"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fresh.total() as usize, all.len());
    assert_eq!(second, whole);

    // Repeated: every day comes from the store, holidays included.
    let before = server.total();
    let (code, third, err) = common::run(&run);
    assert_eq!((code, server.total()), (0, before), "{err}");
    assert_eq!(third, whole);
}

#[test]
fn offline_after_a_full_run_makes_no_connection_and_says_what_is_missing() {
    let server = rates_server::spawn(Dataset::embedded(), ServerOptions::default()).unwrap();
    let (from, to) = ("2020-03-02", "2020-04-30");
    let csv_store = tempfile::tempdir().unwrap();
    for format in ["csv", "json"] {
        let store = tempfile::tempdir().unwrap();
        let store = if format == "csv" { csv_store.path() } else { store.path() };
        let (code, online, err) = common::run(&history(server.url(), store, from, to, &["--format", format]));
        assert_eq!(code, 0, "{err}");
        let seen = server.metrics().snapshot();
        assert!(seen.connections_total > 0);
        let (code, offline, err) =
            common::run(&history(server.url(), store, from, to, &["--format", format, "--offline"]));
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(offline, online, "{format}");
        let after = server.metrics().snapshot();
        assert_eq!((after.connections_total, after.total()), (seen.connections_total, seen.total()));
    }

    // Days never fetched are named, and the exit code says so.
    let seen = server.metrics().snapshot();
    let wider = history(server.url(), csv_store.path(), "2020-02-24", "2020-05-08", &["--offline"]);
    let (code, out, err) = common::run(&wider);
    assert_eq!(code, 1, "{err}");
    let stored = Dataset::embedded().days().iter().filter(|d| (day(from)..=day(to)).contains(d)).count();
    let missing = "rates: not in the store: 2020-02-24..2020-02-28 (5 days), 2020-05-01..2020-05-08 (6 days)\n";
    assert_eq!(err, format!("{missing}rates: {stored} ok, 11 not in the store\n"));
    assert_eq!(out.lines().count(), 1 + stored);
    assert_eq!(server.metrics().snapshot().connections_total, seen.connections_total);

    // Without an API there is nothing stored to answer from.
    let (code, _, err) =
        common::run(&["history", "--base", "USD", "--symbols", "EUR", "--from", from, "--to", to, "--offline"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--offline") && err.contains("--api"), "{err}");
}

#[test]
fn two_histories_on_one_store_at_once_lose_nothing() {
    let server = Server::start(Dataset::embedded(), Duration::from_millis(2));
    let store = tempfile::tempdir().unwrap();
    // Overlapping years, many workers: both write all along.
    let fast = ["--model", "thread-pool", "--workers", "8"];
    let a = spawn(&history(&server.url, store.path(), "2015-01-01", "2016-12-31", &fast));
    let b = spawn(&history(&server.url, store.path(), "2016-01-01", "2017-12-31", &fast));
    let ((code_a, out_a, err_a), (code_b, out_b, err_b)) = (finish(a), finish(b));
    assert_eq!((code_a, code_b), (Some(0), Some(0)), "{err_a}\n{err_b}");
    assert!(!err_a.contains("locked") && !err_b.contains("locked"), "{err_a}\n{err_b}");

    // Everything both fetched is in the store.
    let asked = server.total();
    let (code, all, err) = common::run(&history(&server.url, store.path(), "2015-01-01", "2017-12-31", &["--offline"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.total(), asked);
    let rows = |csv: &str| csv.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    let (a, b, all) = (rows(&out_a), rows(&out_b), rows(&all));
    let mut union = a.clone();
    union.extend(b.iter().filter(|r| r.as_str() > a.last().unwrap().as_str()).cloned());
    assert_eq!(all, union);
}

#[test]
fn the_latest_days_are_asked_again_after_max_age_and_the_past_never() {
    // A dataset whose last day is today: the answers about the last two
    // days are not final yet.
    let today = chrono::Utc::now().date_naive();
    let days = weekdays(today - chrono::Days::new(9), today);
    let mut csv = String::from("Date,USD,JPY,\n");
    for (i, d) in days.iter().enumerate() {
        csv.push_str(&format!("{d},{},{},\n", 1.1 + i as f64 / 100.0, 160.0 + i as f64));
    }
    let server = Server::start(Arc::new(Dataset::parse_csv(&csv).unwrap()), Duration::ZERO);
    let store = tempfile::tempdir().unwrap();
    let from = days[0].to_string();
    let to = today.to_string();
    let run = |extra: &[&str]| {
        let args = [&history(&server.url, store.path(), &from, &to, &[])[..], extra].concat();
        let args: Vec<&str> = args.into_iter().map(|a| if a == "EUR,JPY" { "JPY" } else { a }).collect();
        let (code, out, err) = common::run(&args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let first = run(&[]);
    assert_eq!(server.total() as usize, days.len());
    assert_eq!(run(&[]), first);
    assert_eq!(server.total() as usize, days.len(), "within --max-age: no request");
    assert_eq!(run(&["--max-age", "0"]), first);
    let now = rates_core::store::unix_now();
    // Today and yesterday, those of them that are weekdays (none on a
    // Sunday, when only the first half of this test can fail).
    let recent = days.iter().filter(|d| !rates_core::store::settled(**d, now)).count();
    assert!(recent <= 2);
    assert_eq!(server.total() as usize, days.len() + recent, "{:?}", server.counts());
}

#[test]
fn cache_info_and_clear() {
    let server = Server::start(Dataset::embedded(), Duration::ZERO);
    let store = tempfile::tempdir().unwrap();
    let dir = store.path().join("nested");
    let cache = dir.to_str().unwrap();
    let (code, out, _) = common::run(&["cache", "info", "--cache", cache]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing stored yet"), "{out}");
    assert!(!dir.exists(), "info makes nothing");

    let (code, _, err) = common::run(&history(&server.url, &dir, "2018-12-20", "2019-01-08", &[]));
    assert_eq!(code, 0, "{err}");
    // RATES_CACHE names it as well as --cache.
    let out = common::rates().args(["cache", "info"]).env("RATES_CACHE", &dir).output().unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.contains(&format!("store: {}", dir.join("rates.sqlite3").display())), "{out}");
    let line = out.lines().find(|l| l.starts_with(&server.url)).unwrap_or_else(|| panic!("{out}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    let business =
        Dataset::embedded().days().iter().filter(|d| (day("2018-12-20")..=day("2019-01-08")).contains(d)).count();
    assert_eq!(cells[1..], ["USD", &business.to_string(), "2018-12-20", "2019-01-08", "EUR,JPY"]);

    let (code, out, _) = common::run(&["cache", "clear", "--cache", cache]);
    assert_eq!(code, 0);
    assert!(out.starts_with("cleared "), "{out}");
    let (_, out, _) = common::run(&["cache", "info", "--cache", cache]);
    assert!(out.contains("no answers stored"), "{out}");
    let before = server.total();
    let (code, _, err) = common::run(&history(&server.url, &dir, "2018-12-20", "2019-01-08", &[]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.total(), before * 2, "everything asked again");
}

#[test]
fn the_embedded_server_and_no_cache_leave_the_store_alone() {
    let store = tempfile::tempdir().unwrap();
    let cache = store.path().to_str().unwrap();
    let range = ["--base", "USD", "--symbols", "EUR", "--from", "2020-01-01", "--to", "2020-01-10"];
    let (code, _, err) = common::run(&[&["history", "--cache", cache, "--sim-latency", "0"][..], &range].concat());
    assert_eq!(code, 0, "{err}");
    let server = Server::start(Dataset::embedded(), Duration::ZERO);
    let (code, _, err) =
        common::run(&[&["history", "--cache", cache, "--api", &server.url, "--no-cache"][..], &range].concat());
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = common::run(&["fetch", "--api", &server.url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 0, "nothing stored");

    // Nor is a full store read with --no-cache: every day is asked again.
    let (code, _, err) = common::run(&[&["history", "--cache", cache, "--api", &server.url][..], &range].concat());
    assert_eq!(code, 0, "{err}");
    let before = server.total();
    let (code, _, err) =
        common::run(&[&["history", "--cache", cache, "--api", &server.url, "--no-cache"][..], &range].concat());
    assert_eq!(code, 0, "{err}");
    let asked = weekdays(day("2020-01-01"), day("2020-01-10")).len();
    assert_eq!(server.total() as usize, before as usize + asked, "{:?}", server.counts());
}

#[test]
fn a_partial_chart_breaks_its_lines_and_titles_the_range_covered() {
    let server = Server::start(Dataset::embedded(), Duration::ZERO);
    let store = tempfile::tempdir().unwrap();
    let svg = store.path().join("chart.svg");
    // Stored: two stretches of a month with a gap between them; offline,
    // the rest is missing.
    for (from, to) in [("2020-03-02", "2020-03-13"), ("2020-03-23", "2020-03-27")] {
        let (code, _, err) = common::run(&history(&server.url, store.path(), from, to, &[]));
        assert_eq!(code, 0, "{err}");
    }
    let plot = ["--offline", "--plot", svg.to_str().unwrap()];
    let (code, _, err) = common::run(&history(&server.url, store.path(), "2020-02-24", "2020-03-31", &plot));
    assert_eq!(code, 1, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let texts: Vec<&str> =
        doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).map(str::trim).collect();
    let title = texts.iter().find(|t| t.starts_with("EUR, JPY per 1 USD")).unwrap_or_else(|| panic!("{texts:?}"));
    assert_eq!(*title, "EUR, JPY per 1 USD, 2020-03-02 to 2020-03-27 (15 business days, 12 days missing)");
    assert!(
        texts.contains(&"EUR per 1 USD") && texts.contains(&"JPY per 1 USD") && texts.contains(&"date"),
        "{texts:?}"
    );
    // One line per stretch in each panel, none across the gap.
    let lines =
        doc.descendants().filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some("#4C72B0")).count();
    assert_eq!(lines, 2 * 2, "{text}");
}

#[test]
fn a_store_that_cannot_be_opened_stops_the_run_before_any_request() {
    let server = Server::start(Dataset::embedded(), Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    // A file where the store's folder should be.
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "").unwrap();
    let (code, out, err) = common::run(&history(&server.url, &file, "2020-01-01", "2020-01-10", &[]));
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.starts_with("rates: store ") && err.lines().count() == 1, "{err}");
    assert_eq!(server.total(), 0);
    // --no-cache is the way around it.
    let (code, _, err) = common::run(&history(&server.url, &file, "2020-01-01", "2020-01-10", &["--no-cache"]));
    assert_eq!(code, 0, "{err}");
}

/// Whether permissions stop this process writing: root writes a file
/// made read-only all the same.
fn permissions_bind() -> bool {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::OpenOptions::new().write(true).open(file.path()).is_err()
}

/// Who runs `rates` where permissions must stop it: this user, else (as
/// root) nobody.
fn unprivileged() -> Option<u32> {
    if permissions_bind() { None } else { Some(65_534) }
}

/// Runs `rates args` as the user `uid` (else this one), and gives (exit
/// code, stdout, stderr).
fn run_as(uid: Option<u32>, args: &[&str]) -> (Option<i32>, String, String) {
    let program = match uid {
        Some(_) => reachable_binary(),
        None => assert_cmd::cargo::cargo_bin("rates"),
    };
    let mut command = std::process::Command::new(program);
    command.args(args).env_remove("RATES_API").env_remove("RATES_CACHE").stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    finish(command.spawn().unwrap())
}

/// A copy of the `rates` binary that another user can run: the build's
/// folder may sit where only its owner can enter (a home folder).
fn reachable_binary() -> std::path::PathBuf {
    static COPY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        // Kept for the test process's life; a few MiB in the temporary folder.
        let dir = tempfile::Builder::new().prefix("rates-bin-").tempdir().unwrap().keep();
        chmod(&dir, 0o755);
        let copy = dir.join("rates");
        std::fs::copy(assert_cmd::cargo::cargo_bin("rates"), &copy).unwrap();
        chmod(&copy, 0o755);
        copy
    })
    .clone()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives the folders back their permissions when a test ends, so that its
/// temporary folder can be removed.
struct Restore(Vec<std::path::PathBuf>);

impl Drop for Restore {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// The store file's bytes and modification time.
fn snapshot(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (std::fs::read(path).unwrap(), std::fs::metadata(path).unwrap().modified().unwrap())
}

#[test]
fn a_store_that_cannot_be_written_is_read_and_left_as_it_was() {
    let server = Server::start(Dataset::embedded(), Duration::ZERO);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let file = dir.join("rates.sqlite3");
    let (from, to) = ("2020-03-02", "2020-03-13");
    let (code, online, err) = common::run(&history(&server.url, &dir, from, to, &[]));
    assert_eq!(code, 0, "{err}");
    // Closed, the store is its file alone; now nobody may write either.
    let _restore = Restore(vec![dir.clone()]);
    chmod(root.path(), 0o755);
    chmod(&dir, 0o555);
    chmod(&file, 0o444);
    let before = snapshot(&file);
    let who = unprivileged();
    let asked = server.total();

    // Offline, or with every day stored: all of it, silently, no request.
    for extra in [&["--offline"][..], &[]] {
        let (code, out, err) = run_as(who, &history(&server.url, &dir, from, to, extra));
        assert_eq!((code, err.as_str()), (Some(0), ""), "{extra:?}");
        assert_eq!(out, online, "{extra:?}");
    }
    assert_eq!(server.total(), asked);
    let (code, out, err) = run_as(who, &["cache", "info", "--cache", dir.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("store: {}", file.display())), "{out}");
    assert!(out.lines().any(|l| l.starts_with(&server.url) && l.contains(" USD ")), "{out}");

    // Days not stored: asked and printed, and said once not to be kept.
    let wider = history(&server.url, &dir, "2020-02-24", to, &[]);
    let fresh = Server::start(Dataset::embedded(), Duration::ZERO);
    let (code, whole, err) = common::run(&history(&fresh.url, &dir, "2020-02-24", to, &["--no-cache"]));
    assert_eq!(code, 0, "{err}");
    for round in 1..=2 {
        let (code, out, err) = run_as(who, &wider);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out, whole.replace(&fresh.url, &server.url));
        assert_eq!(err.lines().count(), 1, "{err}");
        let warning = format!("rates: warning: store {} is read-only (", file.display());
        assert!(err.starts_with(&warning) && err.contains("the 5 days asked now will not be kept"), "{err}");
        // Not kept: the second round asks them again.
        assert_eq!(server.total(), asked + 5 * round, "{:?}", server.counts());
    }

    // Clearing it cannot be done: said in one line, exit code 2.
    let (code, out, err) = run_as(who, &["cache", "clear", "--cache", dir.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert!(err.starts_with(&format!("rates: store {}: read-only (", file.display())), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(snapshot(&file) == before, "the store changed");
}

#[test]
fn an_unusable_store_is_named_with_why_by_every_command_but_fetch_goes_on() {
    let server = Server::start(Dataset::embedded(), Duration::ZERO);
    let root = tempfile::tempdir().unwrap();
    let place = |name: &str| root.path().join(name);
    // A file where the folder should be.
    std::fs::write(place("file"), "").unwrap();
    // A file that is not a database.
    std::fs::create_dir(place("junk")).unwrap();
    std::fs::write(place("junk").join("rates.sqlite3"), "x".repeat(200)).unwrap();
    // A folder that cannot be written, with no store in it.
    std::fs::create_dir(place("empty")).unwrap();
    // A folder that cannot be read, with a store in it.
    let (code, _, err) = common::run(&history(&server.url, &place("locked"), "2020-01-06", "2020-01-07", &[]));
    assert_eq!(code, 0, "{err}");
    let asked = server.total();
    let _restore = Restore(vec![place("empty"), place("locked")]);
    chmod(root.path(), 0o755);
    chmod(&place("empty"), 0o555);
    chmod(&place("locked"), 0o000);
    let who = unprivileged();

    let history_of = |dir: &Path, extra: &'static [&'static str]| {
        let mut args =
            vec!["history", "--api", &server.url, "--cache"].into_iter().map(String::from).collect::<Vec<_>>();
        args.push(dir.to_str().unwrap().to_string());
        args.extend(
            ["--base", "USD", "--symbols", "EUR", "--from", "2020-01-06", "--to", "2020-01-10"].map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let cache = |action: &str, dir: &Path| {
        vec!["cache".to_string(), action.into(), "--cache".into(), dir.to_str().unwrap().into()]
    };
    let cases: Vec<(&str, &str, Vec<String>)> = vec![
        ("file", "is not a folder", history_of(&place("file"), &[])),
        ("file", "is not a folder", history_of(&place("file"), &["--offline"])),
        ("file", "is not a folder", cache("info", &place("file"))),
        ("file", "is not a folder", cache("clear", &place("file"))),
        ("junk", "not a database", history_of(&place("junk"), &[])),
        ("junk", "not a database", history_of(&place("junk"), &["--offline"])),
        ("junk", "not a database", cache("info", &place("junk"))),
        ("junk", "not a database", cache("clear", &place("junk"))),
        ("empty", "cannot make it", history_of(&place("empty"), &[])),
        ("empty", "none can be made", cache("info", &place("empty"))),
        ("locked", "cannot read it", history_of(&place("locked"), &[])),
        ("locked", "cannot read it", history_of(&place("locked"), &["--offline"])),
        ("locked", "cannot read it", cache("info", &place("locked"))),
        ("locked", "cannot read it", cache("clear", &place("locked"))),
    ];
    for (name, why, args) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = run_as(who, &args);
        let said = format!("{name}: {args:?}: {code:?}\n{out}{err}");
        assert_eq!((code, out.as_str()), (Some(2), ""), "{said}");
        let head = format!("rates: store {}: ", place(name).join("rates.sqlite3").display());
        assert!(err.starts_with(&head) && err.contains(why) && err.lines().count() == 1, "{said}");
    }
    assert_eq!(server.total(), asked, "no request");
    assert!(!place("file").is_dir() && std::fs::read_dir(place("junk")).unwrap().count() == 1, "nothing made");

    // fetch keeps only the codes there: it goes on, and says why at -v.
    for name in ["file", "junk", "empty", "locked"] {
        let dir = place(name);
        let (code, out, err) = run_as(who, &["fetch", "-v", "--api", &server.url, "--cache", dir.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert!(out.contains("EUR"), "{name}: {out}");
        let note = format!("rates: store {}: ", dir.join("rates.sqlite3").display());
        assert!(err.lines().any(|l| l.starts_with(&note) && l.ends_with("not kept")), "{name}: {err}");
    }
}
