//! The queue attacked, end to end: the real `rates` binary (callers,
//! workers, `rates queue status`) on a real `redis-server` of each test's
//! own, with in-test API servers that count what they are asked. The
//! broker is not trusted, so each test does what anyone who can write to
//! it, or break it, could do:
//!
//! - a task written straight into the work stream, untagged or tagged
//!   with another key, is not run and lands in the dead letters with why;
//! - a result written into a live job's results stream is neither printed
//!   nor stored;
//! - a task (signed by a real caller) naming an API the worker does not
//!   allow fails without a request to it;
//! - `FLUSHALL` mid-run ends the run, every day written or named, never a
//!   hang;
//! - Ctrl-C while the broker is stopped or gone ends the run promptly;
//! - no password and no key is ever shown, on any path.
#![allow(clippy::unwrap_used)]

mod common;
mod queue_support;

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concur_redis::Keys;
use nix::sys::signal::Signal;
use queue_support::*;

/// A key that is not the workers' (16+ bytes).
const OTHER_KEY: &str = "another key, not the workers'";

/// A `rates` run in the background, its output drained on threads so a
/// full pipe cannot stall it.
struct Run {
    child: Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
}

impl Run {
    /// `rates args` with `env` (and a store of its own unless `env` names
    /// one), no `RATES_API` or `RATES_QUEUE_KEY` from the test's
    /// environment.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rates"));
        cmd.env_remove("RATES_API").env_remove(KEY_ENV).env_remove("RATES_QUEUE");
        cmd.env("RATES_CACHE", common::fresh_cache());
        let mut child =
            cmd.args(args).envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let drain = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = Some(drain(Box::new(child.stdout.take().unwrap())));
        let err = Some(drain(Box::new(child.stderr.take().unwrap())));
        Run { child, out, err }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the run, failing the test if it takes longer than
    /// `bound`: exit code (-1 if killed), stdout, stderr.
    fn finish_within(mut self, bound: Duration) -> (i32, String, String) {
        let deadline = Instant::now() + bound;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("rates did not end within {bound:?}: {}", self.err.take().unwrap().join().unwrap());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let (out, err) = (self.out.take().unwrap().join().unwrap(), self.err.take().unwrap().join().unwrap());
        (status.code().unwrap_or(-1), out, err)
    }

    fn finish(self) -> (i32, String, String) {
        self.finish_within(PROMPTLY)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `history` arguments of the tests: `base` in `symbols` from FROM to
/// `to`, four requests in flight, no retries, CSV.
fn history_args<'a>(api: &'a str, base: &'a str, symbols: &'a str, to: &'a str) -> Vec<&'a str> {
    vec![
        "history",
        "--api",
        api,
        "--base",
        base,
        "--symbols",
        symbols,
        "--from",
        FROM,
        "--to",
        to,
        "--workers",
        "4",
        "--retries",
        "0",
        "--format",
        "csv",
    ]
}

/// A stream entry's fields, as they came.
type Fields = Vec<(String, Vec<u8>)>;

/// The entries of `stream`, oldest first: id and fields.
fn entries(con: &mut redis::Connection, stream: &str) -> Vec<(String, Fields)> {
    let reply: redis::Value = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(con).unwrap();
    let bytes = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => b.clone(),
        other => panic!("not a string: {other:?}"),
    };
    let redis::Value::Array(items) = reply else { return vec![] };
    items
        .iter()
        .map(|item| {
            let redis::Value::Array(parts) = item else { panic!("{item:?}") };
            let id = String::from_utf8(bytes(&parts[0])).unwrap();
            let redis::Value::Array(kv) = &parts[1] else { panic!("{item:?}") };
            let fields = kv.chunks(2).map(|p| (String::from_utf8(bytes(&p[0])).unwrap(), bytes(&p[1]))).collect();
            (id, fields)
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
}

fn xlen(redis: &Redis, stream: &str) -> i64 {
    redis::cmd("XLEN").arg(stream).query(&mut redis.con()).unwrap_or(0)
}

/// The reasons the dead letters give.
fn dead_reasons(redis: &Redis) -> Vec<String> {
    entries(&mut redis.con(), &Keys::default().dead())
        .iter()
        .map(|(_, f)| String::from_utf8_lossy(field(f, "reason").unwrap_or_default()).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Forged tasks
// ---------------------------------------------------------------------------

#[test]
fn a_forged_task_is_not_run_and_lands_in_the_dead_letters_with_why() {
    let redis = Redis::start();
    // The API the forged tasks name: the workers allow it (any port on
    // this host), so only the tag stands between them and a request.
    let target = common::Stub::new(None);
    // A real task, as a caller with another key writes it (so its tag is
    // one made with another key): queued with no worker, then taken.
    let capture = Run::start(
        &history_args(&target.url, "EUR", "USD", FROM),
        &[("RATES_QUEUE", &redis.url()), (KEY_ENV, OTHER_KEY)],
    );
    wait_until("a task is queued", || xlen(&redis, &Keys::default().tasks()) > 0);
    signal(capture.pid(), Signal::SIGINT);
    let (code, _, err) = capture.finish();
    assert_eq!(code, 130, "{err}");
    let mut con = redis.con();
    let (_, task) = entries(&mut con, &Keys::default().tasks()).into_iter().next().unwrap();
    assert!(field(&task, "tag").is_some(), "a keyed caller tags its tasks: {task:?}");
    let job = String::from_utf8(field(&task, "job").unwrap().to_vec()).unwrap();
    // Only the test's own entries in the stream, and their job alive (as
    // anyone who can write to the broker can make it), so a worker that
    // did not check tags would run them.
    let _: () = redis::cmd("DEL").arg(Keys::default().tasks()).query(&mut con).unwrap();
    let _: () = redis::cmd("SET").arg(Keys::default().alive(&job)).arg(1).arg("EX").arg(600).query(&mut con).unwrap();
    let add = |fields: &[(String, Vec<u8>)]| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(Keys::default().tasks()).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v.as_slice());
        }
        let _: String = cmd.query(&mut redis.con()).unwrap();
    };
    let untagged: Vec<_> = task.iter().filter(|(k, _)| k != "tag").cloned().collect();
    add(&untagged);
    add(&task);

    let _workers = Workers::start(1, &redis, &[]);
    wait_until("both entries are dealt with", || redis.dead_letters() >= 2 || target.rates_asked() > 0);
    assert_eq!(target.rates_asked(), 0, "a forged task made a request");
    let mut reasons = dead_reasons(&redis);
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("a wrong tag: not written by a holder of the queue's key"), "{reasons:?}");
    assert!(reasons[1].starts_with("no tag: not written by a holder of the queue's key"), "{reasons:?}");
    let (code, status, err) = run_keyed(&["queue", "status", "--queue", &redis.url()]);
    assert_eq!(code, 0, "{err}");
    assert!(status.contains("queued: 0\n") && status.contains("dead letters: 2\n"), "{status}");
    // The worker is not refusing everything: a caller with the key is served.
    let api = Api::start(Duration::from_millis(1));
    let (code, out, err) = History::start(&api, &redis.url(), "2024-01-03").finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-03"));
    assert_eq!(target.rates_asked(), 0);
}

// ---------------------------------------------------------------------------
// 2. A forged result
// ---------------------------------------------------------------------------

/// The body a worker writes for a `rates_core::models::FetchOnce` that fetched
/// `base` → `symbol` = `rate` on `date` (ISO): the answer's frame kind,
/// then the task's output as the pool serialises it (`Ok(Reply { rates,
/// limit: None })`, strings and the map length-prefixed, the rate as 8
/// little-endian bytes).
fn answer_body(date: &str, base: &str, symbol: &str, rate: f64) -> Vec<u8> {
    let mut body = vec![b'O', 0];
    for text in [date, base] {
        body.push(text.len() as u8);
        body.extend_from_slice(text.as_bytes());
    }
    body.extend_from_slice(&[1, symbol.len() as u8]);
    body.extend_from_slice(symbol.as_bytes());
    body.extend_from_slice(&rate.to_le_bytes());
    body.push(0);
    body
}

#[test]
fn a_forged_result_is_neither_printed_nor_stored() {
    let redis = Redis::start();
    // Slow, and one task at a time: tasks wait in the stream a while, so
    // a forged answer for one of them comes long before the real one.
    let api = Api::start(Duration::from_millis(700));
    let _workers = Workers::start(1, &redis, &[]);
    let store = common::fresh_cache();
    let store = store.to_str().unwrap();
    let to = "2024-01-09";
    let env = [("RATES_QUEUE", redis.url()), (KEY_ENV, KEY.to_owned()), ("RATES_CACHE", store.to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = Run::start(&history_args(&api.url, "USD", "EUR", to), &env);
    // The last task queued: still waiting for a worker.
    let mut con = redis.con();
    let mut target = None;
    wait_until("four tasks are queued", || {
        let queued = entries(&mut con, &Keys::default().tasks());
        if queued.len() >= 4 {
            target = queued.last().map(|(_, f)| f.clone());
        }
        target.is_some()
    });
    let task = target.unwrap();
    let (job, id) = (field(&task, "job").unwrap(), field(&task, "id").unwrap());
    let payload = String::from_utf8_lossy(field(&task, "payload").unwrap()).into_owned();
    let date = &payload[payload.find("2024-").unwrap()..][..10];
    let results = Keys::default().results(&String::from_utf8_lossy(job));
    let body = answer_body(date, "USD", "EUR", 123.456);
    for tag in [None, Some([7u8; 32])] {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&results).arg("*").arg("id").arg(id).arg("answer").arg(&body).arg("worker").arg("forger");
        if let Some(tag) = tag {
            cmd.arg("tag").arg(&tag[..]);
        }
        let _: String = cmd.query(&mut con).unwrap();
    }
    assert!(!api.dates.lock().unwrap().iter().any(|d| d == date), "{date} was fetched before its forged answer came");
    let (code, out, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("123.45"), "the forged rate was printed:\n{out}");
    assert_eq!(dates_written(&out), days(to), "{err}");
    assert!(out.lines().any(|l| l.starts_with(date)), "{out}");
    // The store holds the real answers only.
    let mut offline = history_args(&api.url, "USD", "EUR", to);
    offline.push("--offline");
    let (code, stored, err) = Run::start(&offline, &[("RATES_CACHE", store)]).finish();
    assert_eq!(code, 0, "{err}");
    assert!(!stored.contains("123.45"), "the forged rate was stored:\n{stored}");
    assert_eq!(stored, out, "the store holds what was printed");
}

// ---------------------------------------------------------------------------
// 3. An API the worker does not allow
// ---------------------------------------------------------------------------

#[test]
fn a_signed_task_naming_an_api_the_worker_does_not_allow_fails_without_a_request() {
    let redis = Redis::start();
    let allowed = Api::start(Duration::from_millis(1));
    let other = common::Stub::new(None);
    let url = redis.url();
    let _workers =
        Workers::start_exact(1, &redis, &["--queue", &url, "--allow-api", &allowed.url], &[(KEY_ENV, KEY)], None);
    // A real caller, with the key: its tasks are signed, and name OTHER.
    let env = [("RATES_QUEUE", url.as_str()), (KEY_ENV, KEY)];
    let (code, out, err) = Run::start(&history_args(&other.url, "EUR", "USD", "2024-01-04"), &env).finish();
    assert_eq!(code, 1, "{err}");
    assert_eq!(dates_written(&out), Vec::<String>::new(), "{out}");
    for day in days("2024-01-04") {
        assert!(err.lines().any(|l| l.contains(&day) && l.contains("is not allowed on this worker")), "{day}: {err}");
    }
    assert_eq!(other.rates_asked(), 0, "a request went to an API the worker does not allow");
    // The same worker serves the API it allows.
    let (code, out, err) = Run::start(&history_args(&allowed.url, "EUR", "USD", "2024-01-04"), &env).finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&out), days("2024-01-04"));
    assert_eq!(allowed.requests(), days("2024-01-04").len());
}

// ---------------------------------------------------------------------------
// 4. FLUSHALL mid-run
// ---------------------------------------------------------------------------

#[test]
fn flushall_mid_history_ends_with_every_day_written_or_named() {
    let redis = Redis::start();
    let api = Api::start(Duration::from_millis(150));
    let _workers = Workers::start(2, &redis, &[]);
    let to = "2024-02-26";
    let all = days(to);
    assert_eq!(all.len(), 40);
    let env = [("RATES_QUEUE", redis.url()), (KEY_ENV, KEY.to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = Run::start(&history_args(&api.url, "EUR", "USD", to), &env);
    wait_until("the run is under way", || api.requests() >= 6);
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.con()).unwrap();
    let flushed = Instant::now();
    let (code, out, err) = run.finish_within(Duration::from_secs(60));
    let took = flushed.elapsed();
    eprintln!("FLUSHALL mid-history: the run ended {took:?} after it, exit {code}");
    assert!(code == 0 || code == 1, "{err}");
    assert!(took < Duration::from_secs(60));
    let written = dates_written(&out);
    for day in &all {
        assert!(
            written.contains(day) || err.lines().any(|l| l.contains(day.as_str())),
            "{day} neither written nor named: {err}"
        );
    }
    assert_eq!(code == 0, written.len() == all.len(), "exit 0 exactly when every day is written: {err}");
}

// ---------------------------------------------------------------------------
// 5. Ctrl-C on a broken broker
// ---------------------------------------------------------------------------

/// Starts a `history` on `redis`, breaks the broker with `break_it` once
/// the run is under way, waits a second (the run now waits on the broker),
/// sends SIGINT, and gives how long the run took to exit after it, with
/// its exit code and stderr.
fn ctrl_c_on_a_broken_broker(redis: &mut Redis, break_it: impl FnOnce(&mut Redis)) -> (Duration, i32, String) {
    let api = Api::start(Duration::from_millis(200));
    let _workers = Workers::start(1, redis, &[]);
    let env = [("RATES_QUEUE", redis.url()), (KEY_ENV, KEY.to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = Run::start(&history_args(&api.url, "EUR", "USD", "2024-02-26"), &env);
    wait_until("the run is under way", || api.requests() >= 3);
    break_it(redis);
    std::thread::sleep(Duration::from_secs(1));
    signal(run.pid(), Signal::SIGINT);
    let sent = Instant::now();
    let (code, _, err) = run.finish_within(Duration::from_secs(60));
    (sent.elapsed(), code, err)
}

#[test]
fn ctrl_c_while_the_broker_is_stopped_exits_130_promptly() {
    let mut redis = Redis::start();
    let pid = redis.child.as_ref().unwrap().id();
    let (took, code, err) = ctrl_c_on_a_broken_broker(&mut redis, |_| signal(pid, Signal::SIGSTOP));
    signal(pid, Signal::SIGCONT);
    eprintln!("Ctrl-C with the broker stopped (SIGSTOP): exit {code} after {took:?}");
    assert_eq!(code, 130, "{err}");
    // The job's last try at its keys waits 400 ms for a connection and
    // 400 ms for its command: under a second, twice that on a loaded
    // machine.
    assert!(took <= Duration::from_secs(2), "{took:?}: {err}");
}

#[test]
fn ctrl_c_while_the_broker_is_gone_exits_130_promptly() {
    let mut redis = Redis::start();
    let (took, code, err) = ctrl_c_on_a_broken_broker(&mut redis, Redis::kill);
    eprintln!("Ctrl-C with the broker killed: exit {code} after {took:?}");
    assert_eq!(code, 130, "{err}");
    assert!(took <= Duration::from_secs(3), "{took:?}: {err}");
}

// ---------------------------------------------------------------------------
// 6. No secret in any output
// ---------------------------------------------------------------------------

#[test]
fn no_password_and_no_key_appears_in_any_output() {
    let password = format!("pw{:016x}", rand::random::<u64>());
    let key = format!("key{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
    let (wrong_password, wrong_key) =
        (format!("wrongpw{:016x}", rand::random::<u64>()), format!("wrongkey{:016x}", rand::random::<u64>()));
    let short_key = format!("sk{:08x}", rand::random::<u32>());
    let secrets = [&password, &key, &wrong_password, &wrong_key, &short_key];
    let acl = format!(">{password}");
    let mut redis = Redis::start_with(
        &["--user", "rates", "on", &acl, "~*", "&*", "+@all", "--user", "default", "off"],
        Some(("rates", &password)),
    );
    let url = redis.url();
    let wrong_url = url.replace(&password, &wrong_password);
    let nowhere = format!("redis://rates:{password}@127.0.0.1:{}/0", free_port());
    let log = std::env::temp_dir().join(format!("rates-queue-secrets-{}-{}.log", std::process::id(), free_port()));
    let api = Api::start(Duration::from_millis(1));
    let mut outputs: Vec<(String, String)> = Vec::new();
    let queue = |u: &str| ("RATES_QUEUE", u.to_owned());
    let env = |pairs: &[(&'static str, String)]| pairs.to_vec();
    let run = |label: &str, args: &[&str], env: Vec<(&'static str, String)>, outputs: &mut Vec<(String, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, out, err) = Run::start(args, &env).finish();
        outputs.push((format!("{label}: stdout"), out));
        outputs.push((format!("{label}: stderr"), err.clone()));
        (code, err)
    };

    let workers = Workers::start_exact(
        1,
        &redis,
        &["-vv", "--allow-api", "http://127.0.0.1:*"],
        &[("RATES_QUEUE", &url), (KEY_ENV, &key)],
        Some(&log),
    );
    let mut history = history_args(&api.url, "EUR", "USD", "2024-01-05");
    history.push("-vv");
    let good = env(&[queue(&url), (KEY_ENV, key.clone())]);
    let (code, err) = run("history", &history, good.clone(), &mut outputs);
    assert_eq!(code, 0, "{err}");
    assert_eq!(dates_written(&outputs[outputs.len() - 2].1), days("2024-01-05"));
    let (code, err) = run("queue status", &["queue", "status", "-vv"], good.clone(), &mut outputs);
    assert_eq!(code, 0, "{err}");
    assert!(outputs[outputs.len() - 2].1.contains("workers seen: 1"), "{outputs:?}");

    // Error paths: a wrong password, a broker not there, a bad URL, a wrong,
    // a short and an unreadable key.
    for (label, u) in [("wrong password", &wrong_url), ("no broker", &nowhere)] {
        for args in [&history[..], &["queue", "status"], &["worker", "--allow-api", "http://127.0.0.1:*"]] {
            let (code, err) =
                run(&format!("{label}: {}", args[0]), args, env(&[queue(u), (KEY_ENV, key.clone())]), &mut outputs);
            assert_ne!(code, 0, "{label}: {args:?}: {err}");
        }
    }
    let bad_url = format!("redis://rates:{password}@127.0.0.1:99999/0");
    let (code, err) = run("bad URL", &["queue", "status"], env(&[queue(&bad_url)]), &mut outputs);
    assert_eq!(code, 2, "{err}");
    let (code, err) = run("short key", &history, env(&[queue(&url), (KEY_ENV, short_key.clone())]), &mut outputs);
    assert_eq!(code, 2, "{err}");
    let key_file = log.with_extension("key");
    std::fs::write(&key_file, format!("{short_key}\n")).unwrap();
    let with_file = [&history[..], &["--queue-key-file", key_file.to_str().unwrap()]].concat();
    let (code, err) = run("short key file", &with_file, env(&[queue(&url)]), &mut outputs);
    assert_eq!(code, 2, "{err}");
    // A caller with another key: the worker refuses its tasks, and the
    // caller fails them once they are lost three times (about 15 s).
    let one_day = history_args(&api.url, "EUR", "USD", FROM);
    let (code, err) = run("wrong key", &one_day, env(&[queue(&url), (KEY_ENV, wrong_key.clone())]), &mut outputs);
    assert_eq!(code, 1, "{err}");
    // The worker losing its broker, then stopped.
    redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let mut workers = workers;
    signal(workers.pid(0), Signal::SIGTERM);
    workers.wait(0);
    let worker_log = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&key_file);
    outputs.push(("worker log".into(), worker_log.clone()));

    for (label, text) in &outputs {
        for secret in secrets {
            assert!(!text.contains(secret.as_str()), "{label} shows a secret:\n{text}");
        }
    }
    // What was searched holds what each path says.
    assert!(worker_log.contains("rates:***@"), "the worker said where it serves: {worker_log}");
    assert!(worker_log.contains("refused"), "the worker refused the wrong key's task: {worker_log}");
    assert!(worker_log.contains("lost the broker"), "{worker_log}");
}

// ---------------------------------------------------------------------------
// 7. Tasks that each name a client of their own

/// A process's open descriptors and resident memory (KiB), from /proc.
fn descriptors_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    (fds, rss)
}

#[test]
fn tasks_naming_thousands_of_clients_keep_the_workers_descriptors_flat() {
    // Each task asks for its own timeouts, so each would get a client of
    // its own, with its own idle connection: one open file per task
    // without a bound. Signed as a caller's, they are all run; the worker
    // keeps its 16 most recent clients.
    let redis = Redis::start();
    let api = Api::start(Duration::ZERO);
    let workers =
        Workers::start_exact(1, &redis, &["--queue", &redis.url(), "--allow-api", &api.url], &[(KEY_ENV, KEY)], None);
    let pid = workers.pid(0);
    let key = concur_redis::QueueKey::new(KEY.as_bytes()).unwrap();
    let pool = concur_redis::RedisPool::builder(redis.url()).key(key).build().unwrap();
    let request: rates_core::RateRequest = rates_core::RateRequest {
        base: "USD".parse().unwrap(),
        symbols: vec![],
        date: rates_core::parse_date("2024-01-02").ok(),
    };
    let task = |i: u64| rates_core::models::FetchOnce {
        api: api.url.clone(),
        config: rates_core::ClientConfig {
            connect_timeout: Duration::from_secs(5) + Duration::from_micros(i),
            timeout: Duration::from_secs(10),
        },
        request: request.clone(),
    };
    use concur::Pool as _;
    let ok = |out: Vec<Result<Result<rates_core::Reply, rates_core::FetchError>, concur::TaskError>>| {
        out.iter().filter(|o| matches!(o, Ok(Ok(_)))).count()
    };
    // One client, warm.
    assert_eq!(ok(pool.map((0..200).map(|_| task(0)))), 200);
    let (fds_before, rss_before) = descriptors_and_rss(pid);
    assert_eq!(ok(pool.map((1..=3000).map(task))), 3000);
    let (fds_after, rss_after) = descriptors_and_rss(pid);
    eprintln!(
        "worker after 3,000 clients: {fds_before} -> {fds_after} open files, {rss_before} -> {rss_after} KiB resident"
    );
    assert!(
        fds_after <= fds_before + rates_core::models::FetchOnce::CLIENT_CACHE,
        "{fds_before} -> {fds_after} open files"
    );
    assert_eq!(api.requests(), 3200);
}
