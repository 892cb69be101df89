//! The worker's side: [`serve_queue`], which takes tasks from the work
//! stream as a member of the consumer group, runs them with a
//! [`Registry`], and writes each result and its acknowledgement together.
//!
//! Threads: this one reads (one connection of its own, since a blocking
//! `XREADGROUP` must not share a connection with anything that expects a
//! prompt reply), `concurrency` threads run tasks, and one writer sends
//! results and acknowledgements in batches, each batch one transaction.
//! Every `claim_after / 3` the reader also renews its claim on the tasks it
//! holds, records that the worker is alive, and claims the tasks other
//! workers left idle for `claim_after` (they died), sending those
//! delivered more than `max_deliveries` times to the dead letters.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::redis_value::{self, Entry};
use super::{DEFAULT_NAMESPACE, GROUP, Keys, QueueError, connect, ensure_group};
use crate::CancelToken;
use crate::process_pool::registry::Registry;
use crate::process_pool::wire;

pub use options::WorkerOptions;
use writer::Writer;

mod options;
mod writer;

/// How long any one reply may take before the connection is taken for dead.
const REPLY_WITHIN: Duration = Duration::from_secs(5);
/// How long a blocking read waits before the reader looks around (for a
/// stop, renewals and claims).
const BLOCK: Duration = Duration::from_millis(500);
/// Results written in one transaction, at most.
const WRITE_BATCH: usize = 256;

/// A task read from the stream, to run.
struct Held {
    entry: String,
    job: String,
    id: u64,
    name: String,
    payload: Vec<u8>,
    ttl: u64,
}

/// A task's answer, to write.
struct Done {
    entry: String,
    job: String,
    id: u64,
    answer: Vec<u8>,
    ttl: u64,
}

/// What the reader and the writer share: the entries read and not yet
/// acknowledged.
struct InFlight {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves the queue at `url` with the tasks of `registry` until
/// `options`' stop token is cancelled, then drains: stops reading,
/// finishes and acknowledges what it holds, leaves the group, and returns
/// how many tasks it answered. Logs what it does on stderr.
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Square(u64);
/// # impl concur::Task for Square {
/// #     type Output = u64;
/// #     const NAME: &'static str = "square";
/// #     fn run(self) -> u64 { self.0 * self.0 }
/// # }
/// let registry = concur::Registry::new().register::<Square>();
/// let options = concur::WorkerOptions::new().concurrency(8);
/// concur::serve_queue("redis://127.0.0.1:6379/0", registry, options)?;
/// # Ok::<(), concur::QueueError>(())
/// ```
///
/// # Errors
///
/// A bad URL, a broker that cannot be reached at the start, or one lost
/// for longer than the broker timeout.
pub fn serve_queue(url: &str, registry: Registry, options: WorkerOptions) -> Result<u64, QueueError> {
    let client = super::url::open(url)?;
    let keys = Keys::new(&options.namespace);
    let mut reader = super::url::reach(&client, url, REPLY_WITHIN + BLOCK)?;
    ensure_group(&mut reader, &keys).map_err(QueueError::redis("cannot create the consumer group"))?;
    let me = options.name.clone().unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let log = |what: &str| eprintln!("concur worker {me}: {what}");
    log(&format!("serving {} on {}, {} at once", keys.tasks(), super::redact_url(url), options.concurrency));

    let registry = Arc::new(registry);
    let in_flight = Arc::new(InFlight { held: Mutex::new(HashSet::new()), freed: Condvar::new() });
    // Unbounded: the reader already holds at most `concurrency + prefetch`,
    // and a hand-over that blocked would stop it renewing its claims.
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<Held>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let runners: Vec<_> = (0..options.concurrency)
        .map(|i| {
            let (registry, work_rx, done_tx) = (Arc::clone(&registry), work_rx.clone(), done_tx.clone());
            thread::Builder::new()
                .name(format!("concur-queue-run-{i}"))
                .spawn(move || run_tasks(&registry, &work_rx, &done_tx))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| QueueError::Invalid(format!("cannot start a worker thread: {e}")))?;
    drop(done_tx);
    let writer = {
        let ctx = Writer {
            client: client.clone(),
            keys: keys.clone(),
            me: me.clone(),
            in_flight: Arc::clone(&in_flight),
            broker_timeout: options.broker_timeout,
            stop: options.stop.clone(),
        };
        thread::Builder::new()
            .name("concur-queue-write".into())
            .spawn(move || ctx.run(&done_rx))
            .map_err(|e| QueueError::Invalid(format!("cannot start the writer thread: {e}")))?
    };

    let mut ctx = Reader {
        client,
        keys,
        me: me.clone(),
        options: options.clone(),
        in_flight: Arc::clone(&in_flight),
        work: work_tx,
        claim_cursor: "0-0".to_owned(),
    };
    let read = ctx.run(reader);
    let Reader { work, client, keys, .. } = ctx;
    drop(work);
    log(&format!("draining: finishing {} held task(s)", in_flight.lock().len()));
    for runner in runners {
        let _ = runner.join();
    }
    let written = writer.join().unwrap_or_else(|_| Err(QueueError::Invalid("the writer thread panicked".into())));
    // Leaves the group only with nothing pending, so nothing is orphaned.
    if let Ok(mut con) = connect(&client, REPLY_WITHIN) {
        let pending: redis::RedisResult<redis::Value> =
            redis::cmd("XPENDING").arg(keys.tasks()).arg(GROUP).arg("-").arg("+").arg(1).arg(&me).query(&mut con);
        if pending.is_ok_and(|p| redis_value::items(&p).is_empty()) {
            let _: redis::RedisResult<()> =
                redis::cmd("XGROUP").arg("DELCONSUMER").arg(keys.tasks()).arg(GROUP).arg(&me).query(&mut con);
        }
        let _: redis::RedisResult<()> = redis::cmd("HDEL").arg(keys.workers()).arg(&me).query(&mut con);
    }
    read?;
    let written = written?;
    log(&format!("stopped after {written} task(s)"));
    Ok(written)
}

/// A runner thread: runs tasks until the reader stops and the queue of
/// read tasks is empty.
fn run_tasks(registry: &Registry, work: &Receiver<Held>, done: &Sender<Done>) {
    for held in work {
        let frame = registry.run(&held.name, &held.payload);
        // The answer body, without the frame's length prefix.
        let answer = frame.get(4..).unwrap_or_default().to_vec();
        let _ = done.send(Done { entry: held.entry, job: held.job, id: held.id, answer, ttl: held.ttl });
    }
}

/// Whether a command failed only because a signal interrupted its read: a
/// socket with a read timeout gives `EINTR` even under `SA_RESTART`. The
/// client keeps the I/O error only as text.
fn interrupted(e: &redis::RedisError) -> bool {
    e.is_io_error() && e.to_string().contains("(os error 4)")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned())
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

struct Reader {
    client: redis::Client,
    keys: Keys,
    me: String,
    options: WorkerOptions,
    in_flight: Arc<InFlight>,
    work: Sender<Held>,
    claim_cursor: String,
}

impl Reader {
    fn log(&self, what: &str) {
        eprintln!("concur worker {}: {what}", self.me);
    }

    /// Reads and dispatches until stopped. Reconnects to a broker that went
    /// away; gives up after the broker timeout.
    fn run(&mut self, first: redis::Connection) -> Result<(), QueueError> {
        let cap = self.options.concurrency + self.options.prefetch;
        let mut last_upkeep: Option<Instant> = None;
        let mut lost_since: Option<Instant> = None;
        // `None` after any error: a connection whose reply may still be on
        // its way is never used again.
        let mut con = Some(first);
        while !self.options.stop.is_cancelled() {
            let step = (|| -> redis::RedisResult<()> {
                let con = match con.as_mut() {
                    Some(c) => c,
                    None => {
                        let mut c = connect(&self.client, REPLY_WITHIN + BLOCK)?;
                        // A broker that lost its data has no group any more.
                        ensure_group(&mut c, &self.keys)?;
                        con.insert(c)
                    }
                };
                if last_upkeep.is_none_or(|t| t.elapsed() >= self.options.claim_after / 3) {
                    self.upkeep(con, cap)?;
                    last_upkeep = Some(Instant::now());
                }
                let room = {
                    let held = self.in_flight.lock();
                    let held = if held.len() >= cap {
                        // Wait for a slot, but not past the next upkeep.
                        let wait = (self.options.claim_after / 3).min(BLOCK);
                        self.in_flight.freed.wait_timeout(held, wait).unwrap_or_else(|p| p.into_inner()).0
                    } else {
                        held
                    };
                    cap.saturating_sub(held.len())
                };
                if room == 0 {
                    return Ok(());
                }
                let reply: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.me)
                    .arg("COUNT")
                    .arg(room)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(self.keys.tasks())
                    .arg(">")
                    .query(con)?;
                self.dispatch(con, redis_value::read_reply(&reply))
            })();
            match step {
                Ok(()) => {
                    if lost_since.take().is_some() {
                        self.log("the broker is back");
                    }
                }
                Err(e) if interrupted(&e) => {
                    // A signal (the one that stops this worker, say) cut a
                    // read short: the connection is replaced, quietly.
                    con = None;
                }
                Err(e) => {
                    con = None;
                    let since = *lost_since.get_or_insert_with(|| {
                        self.log(&format!("lost the broker ({e}); reconnecting"));
                        Instant::now()
                    });
                    if since.elapsed() >= self.options.broker_timeout {
                        return Err(QueueError::Redis { what: "lost the broker".into(), source: e });
                    }
                    self.options.stop.sleep(Duration::from_millis(200));
                }
            }
        }
        self.log("stop requested: reading no more tasks");
        Ok(())
    }

    /// Renews this worker's claim on what it holds, records it alive, and
    /// claims what dead workers left.
    fn upkeep(&mut self, con: &mut redis::Connection, cap: usize) -> redis::RedisResult<()> {
        let tasks = self.keys.tasks();
        redis::cmd("HSET").arg(self.keys.workers()).arg(&self.me).arg(now_unix()).query::<()>(con)?;
        let held: Vec<String> = self.in_flight.lock().iter().cloned().collect();
        if !held.is_empty() {
            // Only entries still ours: one another worker took over while
            // this one stalled is left to it.
            let mine: redis::Value = redis::cmd("XPENDING")
                .arg(&tasks)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(held.len())
                .arg(&self.me)
                .query(con)?;
            let mine: Vec<String> = redis_value::items(&mine)
                .iter()
                .filter_map(|p| redis_value::items(p).first().and_then(redis_value::text))
                .collect();
            let renew: Vec<&String> = held.iter().filter(|id| mine.contains(id)).collect();
            if !renew.is_empty() {
                redis::cmd("XCLAIM")
                    .arg(&tasks)
                    .arg(GROUP)
                    .arg(&self.me)
                    .arg(0)
                    .arg(&renew)
                    .arg("JUSTID")
                    .query::<redis::Value>(con)?;
            }
        }
        let room = cap.saturating_sub(held.len());
        if room == 0 {
            return Ok(());
        }
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(&tasks)
            .arg(GROUP)
            .arg(&self.me)
            .arg(self.options.claim_after.as_millis() as u64)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(room)
            .query(con)?;
        let parts = redis_value::items(&reply);
        if let Some(next) = parts.first().and_then(redis_value::text) {
            self.claim_cursor = next;
        }
        let claimed = parts.get(1).map(redis_value::entries).unwrap_or_default();
        if claimed.is_empty() {
            return Ok(());
        }
        // How often each was delivered, this claim included.
        let mut pipe = redis::pipe();
        for e in &claimed {
            pipe.cmd("XPENDING").arg(&tasks).arg(GROUP).arg(&e.id).arg(&e.id).arg(1);
        }
        let counts: Vec<redis::Value> = pipe.query(con)?;
        let mut run = Vec::new();
        for (entry, count) in claimed.into_iter().zip(counts) {
            let deliveries = redis_value::items(&count)
                .first()
                .and_then(|p| redis_value::items(p).get(3))
                .and_then(redis_value::int)
                .unwrap_or(0);
            if deliveries > i64::from(self.options.max_deliveries) {
                self.dead_letter(con, &entry, deliveries)?;
            } else {
                run.push(entry);
            }
        }
        if !run.is_empty() {
            self.log(&format!("claimed {} task(s) that a stopped worker held", run.len()));
        }
        self.dispatch(con, run)
    }

    /// Moves a task delivered too often to the dead letters, and answers
    /// its caller with an error saying so.
    fn dead_letter(&self, con: &mut redis::Connection, entry: &Entry, deliveries: i64) -> redis::RedisResult<()> {
        let (job, id, name) =
            (entry.text("job").unwrap_or(""), entry.text("id").unwrap_or(""), entry.text("name").unwrap_or(""));
        let why = format!(
            "dead letter: task {name:?} was delivered {deliveries} times (more than {}) and never finished: \
             the workers that took it stopped",
            self.options.max_deliveries
        );
        self.log(&format!("task {id} of job {job} ({name}) -> dead letters after {deliveries} deliveries"));
        let answer = wire::error_frame(wire::FAILED, &why);
        let results = self.keys.results(job);
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(self.keys.dead())
            .arg("*")
            .arg("job")
            .arg(job)
            .arg("id")
            .arg(id)
            .arg("name")
            .arg(name)
            .arg("deliveries")
            .arg(deliveries)
            .arg("worker")
            .arg(&self.me)
            .ignore()
            .cmd("XADD")
            .arg(&results)
            .arg("*")
            .arg("id")
            .arg(id)
            .arg("answer")
            .arg(answer.get(4..).unwrap_or_default())
            .arg("worker")
            .arg(&self.me)
            .ignore()
            .cmd("EXPIRE")
            .arg(&results)
            .arg(entry.number::<u64>("ttl").unwrap_or(60))
            .ignore()
            .cmd("XACK")
            .arg(self.keys.tasks())
            .arg(GROUP)
            .arg(&entry.id)
            .ignore()
            .cmd("XDEL")
            .arg(self.keys.tasks())
            .arg(&entry.id)
            .ignore()
            .query(con)
    }

    /// Hands read entries to the runners, skipping (acknowledging unrun)
    /// the tasks of jobs whose caller is gone.
    fn dispatch(&self, con: &mut redis::Connection, entries: Vec<Entry>) -> redis::RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let jobs: Vec<String> = {
            let mut jobs: Vec<String> = entries.iter().filter_map(|e| e.text("job").map(str::to_owned)).collect();
            jobs.sort();
            jobs.dedup();
            jobs
        };
        let mut pipe = redis::pipe();
        for job in &jobs {
            pipe.cmd("EXISTS").arg(self.keys.alive(job));
        }
        let exists: Vec<i64> = pipe.query(con)?;
        let alive: HashMap<&str, bool> = jobs.iter().map(String::as_str).zip(exists.iter().map(|n| *n > 0)).collect();
        let mut skipped = Vec::new();
        for entry in entries {
            let task = (|| {
                let job = entry.text("job")?;
                alive.get(job).copied().filter(|a| *a)?;
                Some(Held {
                    entry: entry.id.clone(),
                    job: job.to_owned(),
                    id: entry.number("id")?,
                    name: entry.text("name")?.to_owned(),
                    payload: entry.get("payload")?.to_vec(),
                    ttl: entry.number("ttl").unwrap_or(60),
                })
            })();
            match task {
                Some(held) => {
                    self.in_flight.lock().insert(held.entry.clone());
                    if self.work.send(held).is_err() {
                        break;
                    }
                }
                None => skipped.push(entry.id),
            }
        }
        if !skipped.is_empty() {
            self.log(&format!("skipped {} task(s) of jobs whose caller is gone (or malformed)", skipped.len()));
            redis::pipe()
                .cmd("XACK")
                .arg(self.keys.tasks())
                .arg(GROUP)
                .arg(&skipped)
                .ignore()
                .cmd("XDEL")
                .arg(self.keys.tasks())
                .arg(&skipped)
                .ignore()
                .query::<()>(con)?;
        }
        Ok(())
    }
}
