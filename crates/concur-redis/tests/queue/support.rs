//! A real `redis-server` per test, and worker processes of this test
//! binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::PROMPTLY;

/// A `redis-server` of this test alone: a free loopback port, a temporary
/// directory, `appendonly yes` with every write synced (so a SIGKILL loses
/// nothing), killed and removed when dropped. A machine without
/// `redis-server` fails the test: it is never skipped.
pub(crate) struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        let dir = std::env::temp_dir().join(unique_name("redis"));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut server = RedisServer { child: None, dir, port: 0 };
        // A port found free can be taken before redis-server binds it (by
        // another test's server or a client's ephemeral port): then try
        // another rather than talk to a server that is not ours.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().is_ok() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts redis-server and waits until it answers; `Err` when it
    /// exited (its port was taken).
    fn spawn(&mut self) -> Result<(), ()> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests (apt-get install redis-server)");
        let deadline = Instant::now() + PROMPTLY;
        let client = redis::Client::open(self.url()).expect("a valid URL");
        loop {
            if child.try_wait().expect("redis-server's status").is_some() {
                return Err(());
            }
            if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1))
                && serves_from(&mut con, &self.dir)
            {
                self.child = Some(child);
                return Ok(());
            }
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A connection for the test's own looks at the queue.
    pub(crate) fn con(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        client.get_connection_with_timeout(PROMPTLY).expect("the test's redis-server answers")
    }

    /// A fresh path in this server's directory, for a test's files: they
    /// go when the server does.
    pub(crate) fn path(&self, what: &str) -> PathBuf {
        self.dir.join(unique_name(what))
    }

    /// SIGKILL, as a crash.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let started = self.spawn();
        assert!(started.is_ok(), "redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}

fn unique_name(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("concur-queue-test-{}-{what}-{n}", std::process::id())
}

/// Worker processes of this test binary serving a queue; killed when
/// dropped.
pub(crate) struct Workers(pub(crate) Vec<Child>);

impl Workers {
    /// `n` workers of the current test on `url`, claiming after
    /// `claim_after`, dead letters after `max_deliveries`.
    pub(crate) fn start(n: usize, url: &str, claim_after: Duration, max_deliveries: u32) -> Self {
        Self::start_with(n, url, claim_after, max_deliveries, "", None)
    }

    /// As [`start`](Self::start), with the queue's key (`""`: none) and
    /// the workers' task limit in milliseconds.
    pub(crate) fn start_with(
        n: usize,
        url: &str,
        claim_after: Duration,
        max_deliveries: u32,
        key: &str,
        task_limit_ms: Option<u64>,
    ) -> Self {
        let current = thread::current();
        let test = current.name().expect("tests run on threads named after them");
        let mut role = format!("{url};{};{max_deliveries};{key}", claim_after.as_millis());
        if let Some(ms) = task_limit_ms {
            role.push_str(&format!(";{ms}"));
        }
        Workers(
            (0..n)
                .map(|_| {
                    Command::new(std::env::current_exe().expect("the test binary"))
                        .args(["--exact", test, "--nocapture", "--quiet"])
                        .env(crate::WORKER_ROLE, &role)
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("a worker starts")
                })
                .collect(),
        )
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn signal(pid: u32, signal: Signal) {
    let pid = i32::try_from(pid).expect("pids fit in i32");
    kill(Pid::from_raw(pid), signal).expect("the worker can be signalled");
}

/// Waits (bounded) until `path` exists and gives its text.
pub(crate) fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until `done` holds.
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PROMPTLY;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Entries of the group's pending list.
/// Tasks waiting in the work stream (read or not).
pub(crate) fn queued(con: &mut redis::Connection) -> i64 {
    redis::cmd("XLEN").arg("concur:tasks").query(con).expect("XLEN")
}

pub(crate) fn pending(con: &mut redis::Connection) -> i64 {
    let summary: redis::Value =
        redis::cmd("XPENDING").arg("concur:tasks").arg("workers").query(con).expect("the group exists");
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

/// Writes `text` to `path` all at once (a reader never sees half of it).
pub(crate) fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("temp file written");
    std::fs::rename(&tmp, path).expect("temp file renamed");
}

/// Whether the server on `con` is the one started in `dir`, not another
/// test's that took the port first.
fn serves_from(con: &mut redis::Connection, dir: &std::path::Path) -> bool {
    let answer: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG").arg("GET").arg("dir").query(con);
    // Redis reports the directory it changed into: compare real paths.
    let ours = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    answer.is_ok_and(|kv| kv.get(1).is_some_and(|d| std::path::Path::new(d) == ours))
}
