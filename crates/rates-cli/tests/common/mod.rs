//! What the end-to-end tests of the `rates` binary share. Each test file
//! that needs it says `mod common;`; not every file uses every item.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use assert_cmd::Command;

/// Every model, in the chapter's order. Written out, not
/// taken from `rates_core::Model::ALL`, so a model lost there fails the tests.
pub const MODELS: [&str; 8] = [
    "sync",
    "thread-per-item",
    "thread-pool",
    "two-way-queues",
    "process-pool",
    "dummy-pool",
    "async",
    "async-executor",
];

/// The `rates` binary, ignoring any `RATES_API` of the environment, with a
/// store of answers of its own (see [`fresh_cache`]), killed if it runs
/// past a bound so a bug fails the test instead of hanging it.
pub fn rates() -> Command {
    let mut c = Command::cargo_bin("rates").unwrap();
    c.env_remove("RATES_API").env("RATES_CACHE", fresh_cache()).timeout(Duration::from_secs(120));
    c
}

/// A folder for a store of answers that no other command uses, under the
/// build's temporary folder: a test never touches the user's store, and
/// never finds answers another test stored. (`--cache` overrides it.)
pub fn fresh_cache() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("store-{}-{n}", std::process::id()))
}

/// Runs `rates args` and gives its exit code (-1 if killed), stdout and stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = rates().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// Starts `rates args`, sends each signal of `signals` after its delay (in
/// turn, the first counted from when the process catches signals, each
/// other from the previous signal), and returns (exit
/// code, stdout, stderr); fails if it does not end within `bound` of the
/// last signal. `None` as the code: killed by a signal.
pub fn signalled(
    args: &[&str],
    signals: &[(Duration, nix::sys::signal::Signal)],
    bound: Duration,
) -> (Option<i32>, String, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rates"))
        .args(args)
        .env_remove("RATES_API")
        .env("RATES_CACHE", fresh_cache())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained on threads, so a full pipe cannot stall the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    await_signal_handlers(child.id());
    for &(after, signal) in signals {
        std::thread::sleep(after);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
    let deadline = std::time::Instant::now() + bound;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rates {args:?} did not stop within {bound:?} of its last signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

/// Waits until process `pid` catches SIGINT and SIGTERM (its handlers are
/// installed), as the kernel reports in `/proc/PID/status`: a signal sent
/// before would kill it outright, whatever the machine's load made its
/// start-up take. Fails after 20 s.
pub fn await_signal_handlers(pid: u32) {
    // Bit n-1 of the SigCgt mask is signal n: SIGINT is 2, SIGTERM 15.
    const WANTED: u64 = (1 << 1) | (1 << 14);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if caught & WANTED == WANTED {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "process {pid} never caught SIGINT and SIGTERM: {status}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A `rates serve` a test started: its address, read from the first line
/// it prints, and the rest of its stderr. Killed if dropped before
/// [`Served::stop`], so a failing test leaves no server behind.
pub struct Served {
    child: Option<std::process::Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    stderr: Option<std::io::BufReader<std::process::ChildStderr>>,
}

impl Served {
    /// Starts `cmd`, a `rates ... serve --addr 127.0.0.1:0 ...` with its
    /// stderr piped, and reads the address it announces.
    pub fn start(mut cmd: std::process::Command) -> Served {
        use std::io::BufRead;
        let mut child = cmd.env_remove("RATES_API").stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let served = |line: &str| line.split_whitespace().find_map(|w| w.strip_prefix("http://")).map(str::to_string);
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let addr = served(&line);
        let mut s = Served { child: Some(child), addr: String::new(), stderr: Some(stderr) };
        s.addr = addr.unwrap_or_else(|| panic!("no address in {line:?}"));
        s
    }

    /// The server's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(std::process::Child::id).unwrap()
    }

    /// Closes the reading end of the server's stderr, as a closed terminal
    /// would: its log lines can no longer be written.
    pub fn close_stderr(&mut self) {
        self.stderr = None;
    }

    /// Sends `signal`, waits for the server to exit (failing if it has not
    /// within 10 s), and gives its exit status, the rest of its stderr and
    /// its stdout (if piped).
    pub fn stop(mut self, signal: nix::sys::signal::Signal) -> Stopped {
        use std::io::Read;
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                // Exited: its pipes are at their ends, the reads cannot block.
                let mut stopped = Stopped { status, stderr: String::new(), stdout: String::new() };
                if let Some(err) = self.stderr.as_mut() {
                    let _ = err.read_to_string(&mut stopped.stderr);
                }
                if let Some(mut out) = child.stdout.take() {
                    let _ = out.read_to_string(&mut stopped.stdout);
                }
                return stopped;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("rates serve did not stop within 10 s of {signal:?}");
    }
}

/// How a [`Served`] server ended.
pub struct Stopped {
    pub status: std::process::ExitStatus,
    pub stderr: String,
    pub stdout: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Serves `app` (the rates router with a test's own middleware, say) on an
/// ephemeral loopback port, on a runtime of `threads` workers that serves
/// until it is dropped. Gives the base URL and the runtime.
pub fn serve_app(app: axum::Router, threads: usize) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await
    });
    (url, rt)
}

/// An answer to [`get`].
pub struct Answer {
    /// `HTTP/1.1 200 OK`.
    pub status: String,
    /// `name: value` lines, as sent.
    pub headers: Vec<String>,
    pub body: String,
}

/// `GET path` on a new connection that asks to be closed after the answer.
pub fn get(addr: &str, path: &str) -> Answer {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(sock, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).expect("an answer within 30 s");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{out:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_string();
    Answer { status, headers: lines.map(str::to_owned).collect(), body: body.to_string() }
}

/// The value of metric line `name` in `text` (a `/metrics` page).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A server of the project's routes over the embedded data whose
/// `/currencies` may answer something else, counting the requests it saw
/// on each route. Serves until dropped.
pub struct Stub {
    /// Its base URL.
    pub url: String,
    rates: std::sync::Arc<std::sync::atomic::AtomicU64>,
    currencies: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

impl Stub {
    /// A server whose `/currencies` answers `status` with `body` (JSON, or
    /// whatever it is); `None` keeps the server's own answer.
    pub fn new(currencies: Option<(u16, &'static str)>) -> Stub {
        use axum::response::IntoResponse;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let shared =
            rates_server::Shared::new(rates_core::Dataset::embedded(), rates_server::ServerOptions::default()).unwrap();
        let (rates, asked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (seen_rates, seen_currencies) = (Arc::clone(&rates), Arc::clone(&asked));
        let app = rates_server::router(shared).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let (seen_rates, seen_currencies) = (Arc::clone(&seen_rates), Arc::clone(&seen_currencies));
                async move {
                    match req.uri().path() {
                        "/currencies" => {
                            seen_currencies.fetch_add(1, Ordering::SeqCst);
                            if let Some((status, body)) = currencies {
                                let status = axum::http::StatusCode::from_u16(status).unwrap();
                                let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
                                return (status, json, body).into_response();
                            }
                        }
                        "/rates" => {
                            seen_rates.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                    next.run(req).await
                }
            },
        ));
        let (url, rt) = serve_app(app, 1);
        Stub { url, rates, currencies: asked, _rt: rt }
    }

    /// Requests for `/rates` so far.
    pub fn rates_asked(&self) -> u64 {
        self.rates.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests for `/currencies` so far.
    pub fn currencies_asked(&self) -> u64 {
        self.currencies.load(std::sync::atomic::Ordering::SeqCst)
    }
}
