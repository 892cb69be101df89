//! The worker's reader: takes tasks from the work stream for the runners,
//! renews its claim on what it holds, claims what stopped workers left,
//! and sends what cannot be run to the dead letters.

use super::*;

/// Whether a command failed only because a signal interrupted its read: a
/// socket with a read timeout gives `EINTR` even under `SA_RESTART`. The
/// client keeps the I/O error only as text.
fn interrupted(e: &redis::RedisError) -> bool {
    e.is_io_error() && e.to_string().contains("(os error 4)")
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(super) struct Reader {
    pub(super) client: redis::Client,
    pub(super) keys: Keys,
    pub(super) seal: Seal,
    pub(super) me: String,
    pub(super) options: WorkerOptions,
    pub(super) in_flight: Arc<InFlight>,
    pub(super) work: Sender<Held>,
    pub(super) runners: Runners,
    pub(super) claim_cursor: String,
    /// The broker's errors said already (each is said once).
    pub(super) said: HashSet<String>,
}

impl Reader {
    pub(super) fn log(&self, what: &str) {
        eprintln!("concur worker {}: {what}", self.me);
    }

    /// Reads and dispatches until stopped. Reconnects to a broker that went
    /// away; gives up after the broker timeout. A broker that answers with
    /// an error is said so once and asked again a second later, on the
    /// same connection.
    pub(super) fn run(&mut self, first: redis::Connection) -> Result<(), QueueError> {
        let cap = self.options.concurrency + self.options.prefetch;
        let mut last_upkeep: Option<Instant> = None;
        let mut lost_since: Option<Instant> = None;
        // `None` after a lost connection: one whose reply may still be on
        // its way is never used again.
        let mut con = Some(first);
        while !self.options.stop.is_cancelled() {
            self.runners.end_overdue();
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
                    // Set first: an upkeep the broker refuses is not retried
                    // at once.
                    last_upkeep = Some(Instant::now());
                    self.upkeep(con, cap)?;
                }
                let room = {
                    let held = self.in_flight.lock();
                    let held = if held.len() >= cap {
                        // Wait for a slot, but not past the next upkeep.
                        let wait = (self.options.claim_after / 3).min(BLOCK);
                        concur::sync::wait_timeout(&self.in_flight.freed, held, wait).0
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
                Err(e) if !broker_lost(&e) => {
                    // The broker answered, with an error: reconnecting would
                    // not change its answer.
                    if e.code() == Some("NOGROUP")
                        && let Some(c) = con.as_mut()
                    {
                        self.log("the consumer group is gone (the broker lost its data?): making it again");
                        if let Err(e) = ensure_group(c, &self.keys) {
                            self.say_once(&format!("cannot make the consumer group again: {e}"));
                        }
                        continue;
                    }
                    self.say_once(&format!("the broker refused a read of {}: {e}; asking again", self.keys.tasks()));
                    self.options.stop.sleep(AFTER_AN_ERROR);
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

    pub(super) fn say_once(&mut self, what: &str) {
        if self.said.insert(what.to_owned()) {
            self.log(what);
        }
    }

    /// Renews this worker's claim on what it holds, records it alive, and
    /// claims what dead workers left.
    pub(super) fn upkeep(&mut self, con: &mut redis::Connection, cap: usize) -> redis::RedisResult<()> {
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
    /// its caller with an error saying so (if the task is well-formed and
    /// tagged: a forged one is only refused).
    pub(super) fn dead_letter(
        &self,
        con: &mut redis::Connection,
        entry: &Entry,
        deliveries: i64,
    ) -> redis::RedisResult<()> {
        let task = match self.seal.read_task(entry) {
            Ok(task) => task,
            Err(why) => return self.refuse(con, entry, &why),
        };
        let why = format!(
            "dead letter: task {:?} was delivered {deliveries} times (more than {}) and never finished: \
             the workers that took it stopped",
            task.name, self.options.max_deliveries
        );
        self.log(&format!(
            "task {} of job {} ({}) -> dead letters after {deliveries} deliveries",
            task.id, task.job, task.name
        ));
        let answer = codec::failed_answer(&why);
        let results = self.keys.results(task.job);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(self.keys.dead())
            .arg("*")
            .arg("job")
            .arg(task.job)
            .arg("id")
            .arg(task.id)
            .arg("name")
            .arg(task.name)
            .arg("deliveries")
            .arg(deliveries)
            .arg("worker")
            .arg(&self.me)
            .ignore();
        let add = pipe.cmd("XADD");
        add.arg(&results).arg("*");
        self.seal.write_result(add, task.job, task.id, &answer, &self.me);
        pipe.ignore()
            .cmd("EXPIRE")
            .arg(&results)
            .arg(task.ttl)
            .ignore()
            .cmd("XACK")
            .arg(self.keys.tasks())
            .arg(GROUP)
            .arg(&entry.id)
            .ignore()
            .cmd("XDEL")
            .arg(self.keys.tasks())
            .arg(&entry.id)
            .ignore();
        match pipe.query::<()>(con) {
            Err(e) if !broker_lost(&e) => self.refuse(con, entry, &format!("cannot answer its caller: {e}")),
            other => other,
        }
    }

    /// Sends an entry that cannot be run to the dead letters with `why`,
    /// and acknowledges it; its caller is not answered (it may not be
    /// one).
    pub(super) fn refuse(&self, con: &mut redis::Connection, entry: &Entry, why: &str) -> redis::RedisResult<()> {
        self.log(&format!("task entry {} refused, to the dead letters: {why}", entry.id));
        refuse(con, &self.keys, &self.me, entry, why)
    }

    /// Hands read entries to the runners; refuses those that cannot be run
    /// (malformed, out of range, not tagged with the key); skips
    /// (acknowledges unrun) the tasks of jobs whose caller is gone.
    pub(super) fn dispatch(&self, con: &mut redis::Connection, entries: Vec<Entry>) -> redis::RedisResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tasks = Vec::with_capacity(entries.len());
        for entry in &entries {
            match self.seal.read_task(entry) {
                Ok(task) => tasks.push((entry, task)),
                Err(why) => self.refuse(con, entry, &why)?,
            }
        }
        if tasks.is_empty() {
            return Ok(());
        }
        let jobs: Vec<&str> = {
            let mut jobs: Vec<&str> = tasks.iter().map(|(_, t)| t.job).collect();
            jobs.sort_unstable();
            jobs.dedup();
            jobs
        };
        let mut pipe = redis::pipe();
        for job in &jobs {
            pipe.cmd("EXISTS").arg(self.keys.alive(job));
        }
        let exists: Vec<i64> = pipe.query(con)?;
        let alive: HashMap<&str, bool> = jobs.iter().copied().zip(exists.iter().map(|n| *n > 0)).collect();
        let mut skipped = Vec::new();
        for (entry, task) in tasks {
            if !alive.get(task.job).copied().unwrap_or(false) {
                skipped.push(entry.id.clone());
                continue;
            }
            let limit = match task.limit_ms {
                0 => self.options.task_limit,
                ms => Duration::from_millis(ms).min(self.options.task_limit),
            };
            let held = Held {
                entry: entry.id.clone(),
                job: task.job.to_owned(),
                id: task.id,
                name: task.name.to_owned(),
                payload: task.payload.to_vec(),
                ttl: task.ttl,
                limit,
            };
            self.in_flight.lock().insert(held.entry.clone());
            if self.work.send(held).is_err() {
                break;
            }
        }
        if !skipped.is_empty() {
            self.log(&format!("skipped {} task(s) of jobs whose caller is gone", skipped.len()));
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

/// Sends `entry` to the dead letters with `why` (its fields as they came,
/// for whoever looks), and acknowledges and removes it.
pub(super) fn refuse(
    con: &mut redis::Connection,
    keys: &Keys,
    me: &str,
    entry: &Entry,
    why: &str,
) -> redis::RedisResult<()> {
    let field = |name: &str| entry.get(name).unwrap_or_default();
    redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(keys.dead())
        .arg("*")
        .arg("job")
        .arg(field("job"))
        .arg("id")
        .arg(field("id"))
        .arg("name")
        .arg(field("name"))
        .arg("entry")
        .arg(&entry.id)
        .arg("reason")
        .arg(why)
        .arg("worker")
        .arg(me)
        .ignore()
        .cmd("XACK")
        .arg(keys.tasks())
        .arg(GROUP)
        .arg(&entry.id)
        .ignore()
        .cmd("XDEL")
        .arg(keys.tasks())
        .arg(&entry.id)
        .ignore()
        .query(con)
}
