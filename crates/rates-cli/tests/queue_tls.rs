//! The queue across hosts as it should be set up: a `redis-server` that
//! speaks TLS only (`port 0`, `tls-port`), on a certificate of a CA the
//! test makes, with the default user off and an ACL user with a password.
//! A `rates worker` (URL from `--queue-file`, CA from `--queue-ca`) and a
//! `rates history` (URL and CA from `RATES_QUEUE` and `RATES_QUEUE_CA`)
//! run a job over `rediss://` to the end; then everything every process of
//! the run wrote (the broker's log included), and their command lines as
//! `ps` shows them, are searched for the password: it must not appear.
#![allow(clippy::unwrap_used)]

mod common;
mod queue_support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use queue_support::{Api, FROM, PROMPTLY, dates_written, days, free_port, signal, wait_until};

const USER: &str = "alice";
const TO: &str = "2024-01-12";

/// A CA, and a certificate it signed for 127.0.0.1 and localhost, in PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "rates queue test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pki { ca: ca_cert.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

/// A redis-server on TLS only, with `USER` and a password; killed and its
/// folder removed when dropped.
struct TlsBroker {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    /// The password's distinctive part: no output may hold it.
    secret: String,
    /// The password as typed in the broker's ACL.
    password: String,
    /// The queue's key (`RATES_QUEUE_KEY`) of the run's callers and
    /// workers: no output may hold it either.
    key: String,
}

impl TlsBroker {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("rates-queue-tls-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = pki();
        for (name, pem) in [("ca.pem", &pki.ca), ("server.pem", &pki.cert), ("server.key", &pki.key)] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        let secret = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        // An '@' too: the URL must carry it percent-encoded.
        let password = format!("pw@{secret}");
        let key = format!("key-{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        let mut broker = TlsBroker { child: None, dir, port: 0, secret, password, key };
        // A port found free can be taken before redis-server binds it: then
        // another.
        for _ in 0..5 {
            broker.port = free_port();
            if broker.spawn() {
                return broker;
            }
        }
        panic!("redis-server did not start with TLS on any of 5 free ports: {}", broker.log());
    }

    /// Starts redis-server and waits until it accepts connections; `false`
    /// when it exited (its port was taken).
    fn spawn(&mut self) -> bool {
        let d = self.dir.display();
        // In a file, not the command line: the broker's own arguments are
        // not the test's subject.
        let conf = format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\ndaemonize no\nsave \"\"\nappendonly no\ndir {d}\n\
             tls-cert-file {d}/server.pem\ntls-key-file {d}/server.key\ntls-ca-cert-file {d}/ca.pem\n\
             tls-auth-clients no\nuser default off\nuser {USER} on >{password} ~* &* +@all\n",
            port = self.port,
            password = self.password,
        );
        std::fs::write(self.dir.join("redis.conf"), conf).unwrap();
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let mut child = Command::new("redis-server")
            .arg(self.dir.join("redis.conf"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("redis-server must be installed for these tests (apt-get install redis-server)");
        let mut exited = false;
        wait_until("redis-server accepts TLS connections", || {
            exited = child.try_wait().unwrap().is_some();
            exited || self.log().contains("Ready to accept connections")
        });
        if exited {
            return false;
        }
        self.child = Some(child);
        true
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The queue's URL, with `password` percent-encoded.
    fn url_with(&self, password: &str) -> String {
        format!("rediss://{USER}:{}@127.0.0.1:{}/0", password.replace('@', "%40"), self.port)
    }

    fn url(&self) -> String {
        self.url_with(&self.password)
    }

    /// The URL as it may be shown.
    fn shown(&self) -> String {
        format!("rediss://{USER}:***@127.0.0.1:{}/0", self.port)
    }

    /// A file holding the URL on its first line, readable by its owner only.
    fn url_file(&self) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.dir.join("queue-url");
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).unwrap();
        writeln!(f, "{}", self.url()).unwrap();
        path
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `rates` with no queue, CA, key, API or store of the environment, its
/// output to files in `dir` named after `name`.
fn rates(dir: &Path, name: &str) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("rates"));
    c.env_remove("RATES_API")
        .env_remove("RATES_QUEUE")
        .env_remove("RATES_QUEUE_CA")
        .env_remove("RATES_QUEUE_KEY")
        .env("RATES_CACHE", common::fresh_cache())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap());
    c
}

/// What `ps` shows of process `pid`: its arguments.
fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " ")).unwrap()
}

/// Waits (bounded) for `child`, whose output is `dir`'s `name`.out and
/// .err; its exit code.
fn finish(child: &mut Child, dir: &Path, name: &str) -> Option<i32> {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let others: Vec<String> = ["history", "worker"]
                .iter()
                .map(|n| format!("{n}: {}", std::fs::read_to_string(dir.join(format!("{n}.err"))).unwrap_or_default()))
                .collect();
            panic!("{name} did not finish: {}\n{}", read(dir, &format!("{name}.err")), others.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `command` to its end: exit code, stdout, stderr (from their files).
fn run(mut command: Command, dir: &Path, name: &str) -> (Option<i32>, String, String) {
    let code = finish(&mut command.spawn().unwrap(), dir, name);
    (code, read(dir, &format!("{name}.out")), read(dir, &format!("{name}.err")))
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Asserts that no output of the run (every `.out`, `.err` and `.log`
/// file in `dir`) nor any command line in `lines` holds the password or
/// the queue's key.
fn assert_secret_kept(broker: &TlsBroker, lines: &[String]) {
    let mut searched = 0;
    for entry in std::fs::read_dir(&broker.dir).unwrap() {
        let path = entry.unwrap().path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("out" | "err" | "log")) {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains(&broker.secret), "{} shows the password:\n{text}", path.display());
            assert!(!text.contains(&broker.key), "{} shows the queue's key:\n{text}", path.display());
            searched += 1;
        }
    }
    assert!(searched >= 3, "the run's outputs were not all found ({searched})");
    for line in lines {
        assert!(!line.contains(&broker.secret), "a command line shows the password: {line}");
        assert!(!line.contains(&broker.key), "a command line shows the queue's key: {line}");
    }
}

#[test]
fn a_history_over_tls_with_a_password_completes_and_never_shows_it() {
    let broker = TlsBroker::start();
    let dir = broker.dir.clone();
    let api = Api::start(Duration::from_millis(20));
    let mut command_lines = Vec::new();

    // The caller first, from the environment: no worker serves the queue
    // yet, and it says so, naming the queue.
    let mut history = rates(&dir, "history");
    history
        .env("RATES_QUEUE", broker.url())
        .env("RATES_QUEUE_CA", broker.ca())
        .env("RATES_QUEUE_KEY", &broker.key)
        .args(["history", "--api", &api.url, "--base", "EUR", "--symbols", "USD", "--from", FROM, "--to", TO])
        .args(["--workers", "4", "--retries", "0", "--format", "csv"]);
    let mut history = history.spawn().unwrap();
    command_lines.push(command_line(history.id()));
    wait_until("history says no worker serves the queue", || {
        read(&dir, "history.err").contains("no worker serves")
            || history.try_wait().unwrap().is_some_and(|s| panic!("history ended ({s}): {}", read(&dir, "history.err")))
    });

    // The worker, from a file and a CA file.
    let mut worker = rates(&dir, "worker");
    worker.arg("worker").arg("--queue-file").arg(broker.url_file()).arg("--queue-ca").arg(broker.ca());
    // The test's API is on this host, on a port of its own.
    worker.args(["--allow-api", "http://127.0.0.1:*"]).env("RATES_QUEUE_KEY", &broker.key);
    let mut worker = worker.args(["--concurrency", "2"]).spawn().unwrap();
    command_lines.push(command_line(worker.id()));

    assert_eq!(finish(&mut history, &dir, "history"), Some(0), "{}", read(&dir, "history.err"));
    assert_eq!(dates_written(&read(&dir, "history.out")), days(TO), "every day, over TLS");
    let said = read(&dir, "history.err");
    assert!(said.contains(&format!("no worker serves {}", broker.shown())), "{said}");

    // The status, with the URL on the command line this time: what it
    // prints still hides the password.
    let mut status = rates(&dir, "status");
    status.args(["queue", "status", "--queue", &broker.url(), "--queue-ca"]).arg(broker.ca());
    let (code, out, err) = run(status, &dir, "status");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("workers seen: 1"), "{out}");

    // A wrong password: refused by the broker, and said without it.
    let wrong = format!("pw@{:016x}", rand::random::<u64>());
    let mut refused = rates(&dir, "refused");
    refused.env("RATES_QUEUE", broker.url_with(&wrong)).env("RATES_QUEUE_CA", broker.ca()).args(["queue", "status"]);
    let (code, _, err) = run(refused, &dir, "refused");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("cannot reach {}", broker.shown())), "{err}");
    assert!(!err.contains(&wrong[3..]), "the wrong password is shown: {err}");

    // The worker drains on SIGTERM; its start line named the queue, hidden.
    signal(worker.id(), Signal::SIGTERM);
    assert_eq!(finish(&mut worker, &dir, "worker"), Some(0), "{}", read(&dir, "worker.err"));
    let said = read(&dir, "worker.err");
    assert!(said.contains(&format!("on {}", broker.shown())), "{said}");
    assert!(said.contains("ssl_ca_certs="), "the CA file is part of the URL the worker uses: {said}");

    assert_secret_kept(&broker, &command_lines);
}

#[test]
fn a_broker_whose_certificate_no_known_ca_signed_is_refused() {
    let broker = TlsBroker::start();
    let dir = broker.dir.clone();
    // Without --queue-ca, the Web PKI roots: the test's CA is not one.
    let mut status = rates(&dir, "untrusted");
    status.env("RATES_QUEUE", broker.url()).args(["queue", "status"]);
    let (code, out, err) = run(status, &dir, "untrusted");
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains(&format!("cannot reach {}", broker.shown())), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "the reason is the certificate: {err}");
    // With it, the same broker answers.
    let mut status = rates(&dir, "trusted");
    status.env("RATES_QUEUE", broker.url()).env("RATES_QUEUE_CA", broker.ca()).args(["queue", "status"]);
    let (code, out, err) = run(status, &dir, "trusted");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("workers seen: 0"), "{out}");
    assert_secret_kept(&broker, &[]);
}

#[test]
fn a_queue_is_needed_and_its_sources_are_checked() {
    let dir = std::env::temp_dir().join(format!("rates-queue-tls-args-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["worker"], "no queue: give --queue URL, --queue-file PATH or RATES_QUEUE"),
        (
            &["queue", "status", "--queue-file", "/nonexistent/queue-url"],
            "--queue-file: cannot read /nonexistent/queue-url",
        ),
        (
            &["queue", "status", "--queue", "rediss://alice:s3cret@h/0", "--queue-ca", "/nonexistent/ca.pem"],
            "--queue-ca: cannot read",
        ),
        (
            &["queue", "status", "--queue", "redis://alice:s3cret@h/zero"],
            "--queue: invalid URL 'redis://alice:***@h/zero'",
        ),
    ];
    for (i, (args, says)) in cases.iter().enumerate() {
        let mut c = rates(&dir, &format!("case{i}"));
        c.args(*args);
        let (code, _, err) = run(c, &dir, &format!("case{i}"));
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("s3cret"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
