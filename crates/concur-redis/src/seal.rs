//! What crosses the broker, in one place for both sides: the fields of a
//! task entry and of a result entry, how each is written and read back,
//! and the tag that proves a holder of the queue's key wrote it.
//!
//! The broker is not trusted: anyone who can write to it can add entries.
//! With a [`QueueKey`], every task carries an HMAC-SHA256 tag over all that
//! a worker acts on (namespace, job, id, task name, payload, time to live,
//! time limit), and every result one over all that a caller acts on
//! (namespace, job, id, answer). A worker drops a task whose tag is missing
//! or wrong to the dead letters and runs nothing; a caller drops such a
//! result. Tags are compared in constant time.
//!
//! Without a key nothing is tagged nor checked, which is only allowed on a
//! broker on this host (a loopback address or a Unix socket): see
//! [`check_keyless`].
//!
//! What a tag does not stop: an entry copied back (a replay) repeats a task
//! or an answer its caller once sent or got, within the same job and id; a
//! worker's limits still bound it, and a caller takes one answer per id.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::QueueError;
use super::redis_value::Entry;

type HmacSha256 = Hmac<Sha256>;

/// The longest time to live a worker accepts from a task (7 days): a larger
/// one is that task's failure, not a broker error.
pub(crate) const MAX_TTL: u64 = 7 * 24 * 3600;

/// The queue's shared secret: callers tag tasks and check results with it,
/// workers check tasks and tag results. Every caller and worker of a queue
/// must have the same one.
///
/// ```
/// let key = concur_redis::QueueKey::new(b"a secret of sixteen bytes or more")?;
/// # Ok::<(), concur_redis::QueueError>(())
/// ```
#[derive(Clone)]
pub struct QueueKey {
    /// The HMAC state after the key schedule: cloned per message, so the
    /// key is hashed once.
    mac: HmacSha256,
}

impl QueueKey {
    /// The shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// A key from the shared secret's bytes (at least [`MIN_LEN`](Self::MIN_LEN)).
    ///
    /// # Errors
    ///
    /// A secret shorter than [`MIN_LEN`](Self::MIN_LEN) bytes.
    pub fn new(secret: &[u8]) -> Result<Self, QueueError> {
        if secret.len() < Self::MIN_LEN {
            return Err(QueueError::Invalid(format!(
                "the queue's key is {} bytes: it must be at least {}",
                secret.len(),
                Self::MIN_LEN
            )));
        }
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|e| QueueError::Invalid(format!("the queue's key cannot be used: {e}")))?;
        Ok(QueueKey { mac })
    }
}

impl std::fmt::Debug for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueKey(..)")
    }
}

/// Whether `client` talks to a broker on this host: a loopback address
/// (`127.0.0.0/8`, `::1`, `localhost`) or a Unix socket.
pub(crate) fn is_local(client: &redis::Client) -> bool {
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => is_loopback(host),
        redis::ConnectionAddr::Unix(_) => true,
        _ => false,
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses to use a broker on another host without a key: anyone who can
/// write to it could make the workers run anything.
pub(crate) fn check_keyless(client: &redis::Client, key: Option<&QueueKey>) -> Result<(), QueueError> {
    if key.is_some() || is_local(client) {
        return Ok(());
    }
    let host = match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => host.clone(),
        other => other.to_string(),
    };
    Err(QueueError::KeyRequired(host))
}

/// A task as it crosses the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskMsg<'a> {
    pub(crate) job: &'a str,
    pub(crate) id: u64,
    pub(crate) name: &'a str,
    /// Seconds the job's results live.
    pub(crate) ttl: u64,
    /// The most the task may run, in milliseconds; 0 for the worker's own.
    pub(crate) limit_ms: u64,
    pub(crate) payload: &'a [u8],
}

/// Tags and checks messages with the queue's key, if it has one.
#[derive(Clone, Debug)]
pub(crate) struct Seal {
    key: Option<QueueKey>,
    namespace: String,
}

/// Why an entry was refused: said in the dead letters and the logs.
pub(crate) type Refused = String;

const TASK: &[u8] = b"concur-queue-task/1";
const RESULT: &[u8] = b"concur-queue-result/1";

impl Seal {
    pub(crate) fn new(key: Option<QueueKey>, namespace: &str) -> Self {
        Seal { key, namespace: namespace.to_owned() }
    }

    /// The MAC over a message's parts, each length-prefixed, so no two
    /// messages share an input.
    fn mac(&self, kind: &[u8], parts: &[&[u8]]) -> Option<HmacSha256> {
        let mut mac = self.key.as_ref()?.mac.clone();
        mac.update(kind);
        for part in std::iter::once(&self.namespace.as_bytes()).chain(parts) {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        Some(mac)
    }

    fn task_mac(&self, t: &TaskMsg<'_>) -> Option<HmacSha256> {
        let (id, ttl, limit) = (t.id.to_le_bytes(), t.ttl.to_le_bytes(), t.limit_ms.to_le_bytes());
        self.mac(TASK, &[t.job.as_bytes(), &id, t.name.as_bytes(), &ttl, &limit, t.payload])
    }

    fn result_mac(&self, job: &str, id: u64, answer: &[u8]) -> Option<HmacSha256> {
        self.mac(RESULT, &[job.as_bytes(), &id.to_le_bytes(), answer])
    }

    /// Adds `task` to the work stream `stream` in `pipe`, tagged.
    pub(crate) fn write_task(&self, pipe: &mut redis::Pipeline, stream: &str, t: &TaskMsg<'_>) {
        let cmd = pipe.cmd("XADD");
        cmd.arg(stream)
            .arg("*")
            .arg("job")
            .arg(t.job)
            .arg("id")
            .arg(t.id)
            .arg("name")
            .arg(t.name)
            .arg("ttl")
            .arg(t.ttl)
            .arg("limit")
            .arg(t.limit_ms)
            .arg("payload")
            .arg(t.payload);
        if let Some(mac) = self.task_mac(t) {
            cmd.arg("tag").arg(mac.finalize().into_bytes().as_slice());
        }
    }

    /// A task entry read back: refused if a field is missing or malformed,
    /// the time to live out of range, or (with a key) the tag missing or
    /// wrong.
    pub(crate) fn read_task<'a>(&self, entry: &'a Entry) -> Result<TaskMsg<'a>, Refused> {
        let field = |name: &str| entry.get(name).ok_or_else(|| format!("no `{name}` field"));
        let text =
            |name: &str| field(name).and_then(|b| std::str::from_utf8(b).map_err(|_| format!("`{name}` is not text")));
        let number = |name: &str| {
            text(name).and_then(|t| t.parse::<u64>().map_err(|_| format!("`{name}` is not a number: {t:?}")))
        };
        let task = TaskMsg {
            job: text("job")?,
            id: number("id")?,
            name: text("name")?,
            ttl: number("ttl")?,
            // Entries of an older caller have none: the worker's own limit.
            limit_ms: if entry.get("limit").is_some() { number("limit")? } else { 0 },
            payload: field("payload")?,
        };
        if let Some(mac) = self.task_mac(&task) {
            let tag = entry.get("tag").ok_or("no tag: not written by a holder of the queue's key")?;
            mac.verify_slice(tag).map_err(|_| "a wrong tag: not written by a holder of the queue's key".to_owned())?;
        }
        if !(1..=MAX_TTL).contains(&task.ttl) {
            return Err(format!("time to live {} s is out of range (1 to {MAX_TTL})", task.ttl));
        }
        Ok(task)
    }

    /// The fields of a result entry, added to the pipeline's last command
    /// (an `XADD`): `id`, `answer`, `worker`, and the tag.
    pub(crate) fn write_result(&self, cmd: &mut redis::Pipeline, job: &str, id: u64, answer: &[u8], worker: &str) {
        cmd.arg("id").arg(id).arg("answer").arg(answer).arg("worker").arg(worker);
        if let Some(mac) = self.result_mac(job, id, answer) {
            cmd.arg("tag").arg(mac.finalize().into_bytes().as_slice());
        }
    }

    /// A result entry of `job` read back: its task id and answer body;
    /// `Ok(None)` for an entry that answers nothing (a wake-up); refused if
    /// malformed or (with a key) its tag is missing or wrong.
    pub(crate) fn read_result<'a>(&self, job: &str, entry: &'a Entry) -> Result<Option<(u64, &'a [u8])>, Refused> {
        let Some(id) = entry.get("id") else {
            return if entry.get("wake").is_some() { Ok(None) } else { Err("no `id` field".into()) };
        };
        let id = std::str::from_utf8(id)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| format!("`id` is not a number: {:?}", String::from_utf8_lossy(id)))?;
        let answer = entry.get("answer").ok_or("no `answer` field")?;
        if let Some(mac) = self.result_mac(job, id, answer) {
            let tag = entry.get("tag").ok_or("no tag: not written by a holder of the queue's key")?;
            mac.verify_slice(tag).map_err(|_| "a wrong tag: not written by a holder of the queue's key".to_owned())?;
        }
        Ok(Some((id, answer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &[u8])]) -> Entry {
        Entry { id: "1-0".into(), fields: fields.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect() }
    }

    /// The fields the first command of `pipe` sends from its argument
    /// `first_field` on, as an entry.
    fn sent(pipe: &redis::Pipeline, first_field: usize) -> Entry {
        let args: Vec<Vec<u8>> = pipe
            .cmd_iter()
            .next()
            .expect("one command")
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(b) => Some(b.to_vec()),
                _ => None,
            })
            .collect();
        let fields =
            args[first_field..].chunks(2).map(|kv| (String::from_utf8_lossy(&kv[0]).into_owned(), kv[1].clone()));
        Entry { id: "1-0".into(), fields: fields.collect() }
    }

    /// The fields `write_task` would send, as an entry.
    fn written(seal: &Seal, t: &TaskMsg<'_>) -> Entry {
        let mut pipe = redis::pipe();
        seal.write_task(&mut pipe, "s", t);
        // After `XADD s *`.
        sent(&pipe, 3)
    }

    fn key(secret: &[u8]) -> QueueKey {
        QueueKey::new(secret).expect("a long enough key")
    }

    const TASK: TaskMsg<'static> = TaskMsg { job: "j", id: 7, name: "square", ttl: 60, limit_ms: 0, payload: b"\x03" };

    #[test]
    fn a_tagged_task_reads_back_and_any_change_is_refused() {
        let seal = Seal::new(Some(key(b"0123456789abcdef")), "concur");
        let e = written(&seal, &TASK);
        assert_eq!(seal.read_task(&e), Ok(TASK));
        for (field, value) in [
            ("job", &b"k"[..]),
            ("id", b"8"),
            ("name", b"cube"),
            ("ttl", b"61"),
            ("limit", b"1"),
            ("payload", b"\x04"),
            ("tag", &[0; 32]),
        ] {
            let mut forged = e.clone();
            for (k, v) in &mut forged.fields {
                if k == field {
                    *v = value.to_vec();
                }
            }
            assert!(seal.read_task(&forged).is_err(), "{field} changed");
        }
        let untagged = entry(&[("job", b"j"), ("id", b"7"), ("name", b"square"), ("ttl", b"60"), ("payload", b"\x03")]);
        assert!(seal.read_task(&untagged).is_err_and(|why| why.starts_with("no tag")));
        let other = Seal::new(Some(key(b"another key, 16+")), "concur");
        assert!(other.read_task(&e).is_err(), "another key");
        let elsewhere = Seal::new(Some(key(b"0123456789abcdef")), "other");
        assert!(elsewhere.read_task(&e).is_err(), "another namespace");
    }

    #[test]
    fn without_a_key_entries_are_read_unchecked_but_still_bounded() {
        let seal = Seal::new(None, "concur");
        let untagged = entry(&[("job", b"j"), ("id", b"7"), ("name", b"square"), ("ttl", b"60"), ("payload", b"\x03")]);
        assert_eq!(seal.read_task(&untagged), Ok(TASK));
        let huge =
            entry(&[("job", b"j"), ("id", b"7"), ("name", b"n"), ("ttl", b"9223372036854775808"), ("payload", b"")]);
        assert!(seal.read_task(&huge).is_err_and(|why| why.contains("out of range")));
        let no_job = entry(&[("id", b"7"), ("name", b"n"), ("ttl", b"60"), ("payload", b"")]);
        assert_eq!(seal.read_task(&no_job), Err("no `job` field".to_owned()));
    }

    #[test]
    fn results_are_tagged_for_their_job_and_id() {
        let seal = Seal::new(Some(key(b"0123456789abcdef")), "concur");
        let mut pipe = redis::pipe();
        seal.write_result(pipe.cmd("XADD"), "j", 7, b"ok", "w");
        // After the bare `XADD`.
        let e = sent(&pipe, 1);
        assert_eq!(seal.read_result("j", &e), Ok(Some((7, &b"ok"[..]))));
        assert!(seal.read_result("k", &e).is_err(), "another job's answer");
        let forged = entry(&[("id", b"7"), ("answer", b"ok")]);
        assert!(seal.read_result("j", &forged).is_err());
        assert_eq!(seal.read_result("j", &entry(&[("wake", b"1")])), Ok(None));
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        assert!(QueueKey::new(b"short").is_err());
        assert_eq!(format!("{:?}", key(b"0123456789abcdef")), "QueueKey(..)");
    }

    #[test]
    fn loopback_hosts_are_local() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "broker", "localhost.example", "0.0.0.0"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
