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
//!
//! Nothing read from the broker is trusted: an entry that is malformed,
//! out of range, or (with a key) not tagged by a holder of the key goes to
//! the dead letters with the reason, unrun. A task that overstays its time
//! limit is answered with an error and its slot given to the next task. A
//! broker that answers a command with an error (a key of the wrong type, a
//! value out of range) fails the entries concerned, not the worker.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::redis_value::{self, Entry};
use super::seal::{QueueKey, Seal, check_keyless};
use super::{DEFAULT_NAMESPACE, GROUP, Keys, QueueError, broker_lost, connect, ensure_group};
use concur::CancelToken;
use concur::codec::{self, Registry};

pub use options::WorkerOptions;
use reader::{Reader, refuse};
use writer::Writer;

mod options;
mod reader;
mod writer;

/// How long any one reply may take before the connection is taken for dead.
const REPLY_WITHIN: Duration = Duration::from_secs(5);
/// How long a blocking read waits before the reader looks around (for a
/// stop, renewals, claims and tasks past their time limit).
const BLOCK: Duration = Duration::from_millis(500);
/// Results written in one transaction, at most.
const WRITE_BATCH: usize = 256;
/// How long the reader waits before asking again a broker that answered
/// its read with an error (not a lost connection).
const AFTER_AN_ERROR: Duration = Duration::from_secs(1);

/// A task read from the stream, to run.
struct Held {
    entry: String,
    job: String,
    id: u64,
    name: String,
    payload: Vec<u8>,
    ttl: u64,
    /// The most it may run: the task's own limit within the worker's.
    limit: Duration,
}

/// A task's answer, to write.
struct Done {
    entry: String,
    job: String,
    id: u64,
    answer: Vec<u8>,
    ttl: u64,
}

/// A task running, and when its time is up.
struct Running {
    deadline: Instant,
    job: String,
    id: u64,
    ttl: u64,
    limit: Duration,
}

/// What the reader, the runners and the writer share: the entries read
/// and not yet acknowledged, and the tasks running.
struct InFlight {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
    clock: Mutex<Clock>,
    /// Runner threads alive (those left running past a time limit
    /// included).
    runners: AtomicUsize,
}

/// The tasks running by entry, and those answered already because they
/// overstayed their limit (whatever their runner returns is dropped).
#[derive(Default)]
struct Clock {
    running: HashMap<String, Running>,
    overdue: HashSet<String>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        concur::sync::lock(&self.held)
    }

    fn clock(&self) -> MutexGuard<'_, Clock> {
        concur::sync::lock(&self.clock)
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
/// let options = concur_redis::WorkerOptions::new().concurrency(std::num::NonZeroUsize::new(8).expect("not zero"));
/// concur_redis::serve_queue("redis://127.0.0.1:6379/0", registry, options)?;
/// # Ok::<(), concur_redis::QueueError>(())
/// ```
///
/// # Errors
///
/// A bad URL, a broker on another host without a key
/// ([`QueueError::KeyRequired`]), a broker that cannot be reached at the
/// start, or one lost for longer than the broker timeout.
pub fn serve_queue(url: &str, registry: Registry, options: WorkerOptions) -> Result<u64, QueueError> {
    let client = super::url::open(url)?;
    check_keyless(&client, options.key.as_ref())?;
    let keys = Keys::new(&options.namespace);
    let mut reader = super::url::reach(&client, url, REPLY_WITHIN + BLOCK)?;
    ensure_group(&mut reader, &keys).map_err(QueueError::redis("cannot create the consumer group"))?;
    let me = options.name.clone().unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let log = |what: &str| eprintln!("concur worker {me}: {what}");
    log(&format!("serving {} on {}, {} at once", keys.tasks(), super::redact_url(url), options.concurrency));
    if options.key.is_none() {
        log("no key: tasks are not checked (a broker on this host only)");
    }
    let seal = Seal::new(options.key.clone(), &options.namespace);

    let registry = Arc::new(registry);
    let in_flight = Arc::new(InFlight {
        held: Mutex::new(HashSet::new()),
        freed: Condvar::new(),
        clock: Mutex::new(Clock::default()),
        runners: AtomicUsize::new(0),
    });
    // Unbounded: the reader already holds at most `concurrency + prefetch`,
    // and a hand-over that blocked would stop it renewing its claims.
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<Held>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let runners = Runners {
        registry,
        work: work_rx,
        done: done_tx.clone(),
        in_flight: Arc::clone(&in_flight),
        concurrency: options.concurrency,
        me: me.clone(),
    };
    for _ in 0..options.concurrency {
        runners.spawn().map_err(|e| QueueError::Invalid(format!("cannot start a worker thread: {e}")))?;
    }
    let finished = CancelToken::new();
    let writer = {
        let ctx = Writer {
            client: client.clone(),
            keys: keys.clone(),
            seal: seal.clone(),
            me: me.clone(),
            in_flight: Arc::clone(&in_flight),
            broker_timeout: options.broker_timeout,
            stop: options.stop.clone(),
            finished: finished.clone(),
        };
        thread::Builder::new()
            .name("concur-queue-write".into())
            .spawn(move || ctx.run(&done_rx))
            .map_err(|e| QueueError::Invalid(format!("cannot start the writer thread: {e}")))?
    };

    let mut ctx = Reader {
        client,
        keys,
        seal,
        me: me.clone(),
        options: options.clone(),
        in_flight: Arc::clone(&in_flight),
        work: work_tx,
        runners,
        claim_cursor: "0-0".to_owned(),
        said: HashSet::new(),
    };
    let read = ctx.run(reader);
    let Reader { work, client, keys, runners, .. } = ctx;
    drop(work);
    log(&format!("draining: finishing {} held task(s)", in_flight.lock().len()));
    // Until every held task is answered: by its runner, or by its time
    // limit, or the writer gave up.
    loop {
        runners.end_overdue();
        let held = in_flight.lock();
        if held.is_empty() || writer.is_finished() {
            break;
        }
        let _ = in_flight.freed.wait_timeout(held, Duration::from_millis(100));
    }
    drop(runners);
    drop(done_tx);
    finished.cancel();
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

/// Starts runner threads, and ends tasks past their time limit.
struct Runners {
    registry: Arc<Registry>,
    work: Receiver<Held>,
    done: Sender<Done>,
    in_flight: Arc<InFlight>,
    concurrency: usize,
    me: String,
}

impl Runners {
    fn spawn(&self) -> std::io::Result<()> {
        let (registry, work, done, in_flight) =
            (Arc::clone(&self.registry), self.work.clone(), self.done.clone(), Arc::clone(&self.in_flight));
        let concurrency = self.concurrency;
        let n = in_flight.runners.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new()
            .name(format!("concur-queue-run-{n}"))
            .spawn(move || run_tasks(&registry, &work, &done, &in_flight, concurrency));
        if spawned.is_err() {
            self.in_flight.runners.fetch_sub(1, Ordering::SeqCst);
        }
        spawned.map(drop)
    }

    /// Answers every task past its deadline with an error, so its entry is
    /// acknowledged and its slot freed, and starts a runner in place of
    /// each one left running (up to twice `concurrency` threads in all: a
    /// worker whose tasks never end runs fewer at once, not unboundedly
    /// many threads).
    fn end_overdue(&self) {
        let now = Instant::now();
        let overdue: Vec<(String, Running)> = {
            let mut clock = self.in_flight.clock();
            let late: Vec<String> =
                clock.running.iter().filter(|(_, r)| r.deadline <= now).map(|(e, _)| e.clone()).collect();
            late.into_iter()
                .filter_map(|e| {
                    let r = clock.running.remove(&e)?;
                    clock.overdue.insert(e.clone());
                    Some((e, r))
                })
                .collect()
        };
        for (entry, r) in overdue {
            let why = format!("the task ran past its time limit of {:?}: ended, its slot given to the next", r.limit);
            eprintln!("concur worker {}: task {} of job {}: {why}", self.me, r.id, r.job);
            let answer = codec::failed_answer(&why);
            let _ = self.done.send(Done { entry, job: r.job, id: r.id, answer, ttl: r.ttl });
            if self.in_flight.runners.load(Ordering::SeqCst) < 2 * self.concurrency {
                if let Err(e) = self.spawn() {
                    eprintln!("concur worker {}: cannot start a runner in place of a late one: {e}", self.me);
                }
            } else {
                eprintln!("concur worker {}: too many tasks run past their limit: fewer run at once", self.me);
            }
        }
    }
}

/// A runner thread: runs tasks until the reader stops and the queue of
/// read tasks is empty, or it is one too many (it ran a task past its
/// limit and another runner took its place).
fn run_tasks(registry: &Registry, work: &Receiver<Held>, done: &Sender<Done>, in_flight: &InFlight, n: usize) {
    for held in work {
        let deadline = Instant::now().checked_add(held.limit).unwrap_or_else(|| Instant::now() + BLOCK);
        in_flight.clock().running.insert(
            held.entry.clone(),
            Running { deadline, job: held.job.clone(), id: held.id, ttl: held.ttl, limit: held.limit },
        );
        let answer = registry.answer(&held.name, &held.payload);
        let on_time = {
            let mut clock = in_flight.clock();
            clock.running.remove(&held.entry).is_some() || !clock.overdue.remove(&held.entry)
        };
        if on_time {
            let _ = done.send(Done { entry: held.entry, job: held.job, id: held.id, answer, ttl: held.ttl });
        } else if in_flight.runners.load(Ordering::SeqCst) > n {
            // Answered already; another runner took this one's place.
            break;
        }
    }
    in_flight.runners.fetch_sub(1, Ordering::SeqCst);
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned())
}
impl std::fmt::Debug for Runners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runners").field("concurrency", &self.concurrency).finish_non_exhaustive()
    }
}
