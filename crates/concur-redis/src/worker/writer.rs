//! The worker's writer thread: results and their acknowledgements, in
//! batches, each batch one transaction.

#![allow(clippy::wildcard_imports)]

use super::*;

pub(super) struct Writer {
    pub(super) client: redis::Client,
    pub(super) keys: Keys,
    pub(super) seal: Seal,
    pub(super) me: String,
    pub(super) in_flight: Arc<InFlight>,
    pub(super) broker_timeout: Duration,
    /// Cancelled if results can no longer be written: the worker stops
    /// reading, since what it ran would be lost.
    pub(super) stop: CancelToken,
    /// Cancelled once every held task is answered and the worker drains:
    /// runners left past a time limit may never hang up.
    pub(super) finished: CancelToken,
}

impl Writer {
    /// Writes answers as they come, in batches, until the runners are done
    /// (or the worker has drained); gives how many were written.
    pub(super) fn run(&self, done: &Receiver<Done>) -> Result<u64, QueueError> {
        let mut con: Option<redis::Connection> = None;
        let mut written = 0;
        loop {
            let first = match done.recv_timeout(Duration::from_millis(100)) {
                Ok(first) => first,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if self.finished.is_cancelled() => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            let batch: Vec<Done> = std::iter::once(first).chain(done.try_iter().take(WRITE_BATCH - 1)).collect();
            if let Err(e) = self.write(&mut con, &batch) {
                eprintln!("concur worker {}: {e}; stopping (its unacknowledged tasks go to other workers)", self.me);
                self.stop.cancel();
                return Err(e);
            }
            written += batch.len() as u64;
            let mut held = self.in_flight.lock();
            for d in &batch {
                held.remove(&d.entry);
            }
            self.in_flight.freed.notify_all();
        }
        Ok(written)
    }

    /// One transaction: every result, its expiry, the acknowledgements and
    /// the removal of the entries. Retried whole on a lost connection (a
    /// result written twice is dropped by the caller). A transaction the
    /// broker refuses (a results key of the wrong type, say) is split: each
    /// answer is written alone, and one the broker still refuses goes to
    /// the dead letters with the reason.
    pub(super) fn write(&self, con: &mut Option<redis::Connection>, batch: &[Done]) -> Result<(), QueueError> {
        match self.transact(con, batch) {
            Err(Refused(e)) if batch.len() > 1 => {
                eprintln!("concur worker {}: the broker refused a batch of answers ({e}): writing each alone", self.me);
                for d in batch {
                    self.write(con, std::slice::from_ref(d))?;
                }
                Ok(())
            }
            Err(Refused(e)) => {
                let d = &batch[0];
                let why = format!("cannot write its answer: {e}");
                eprintln!("concur worker {}: task {} of job {}: {why}; to the dead letters", self.me, d.id, d.job);
                let entry = Entry {
                    id: d.entry.clone(),
                    fields: vec![
                        ("job".into(), d.job.clone().into_bytes()),
                        ("id".into(), d.id.to_string().into_bytes()),
                    ],
                };
                let c = con.as_mut().ok_or_else(|| QueueError::Invalid("no connection".into()))?;
                match refuse(c, &self.keys, &self.me, &entry, &why) {
                    Ok(()) => Ok(()),
                    Err(e) => Err(QueueError::Redis { what: "cannot write a dead letter".into(), source: e }),
                }
            }
            Ok(result) => result,
        }
    }

    /// The batch in one transaction, retried on a lost connection until
    /// the broker timeout; `Err` if the broker refused it.
    fn transact(&self, con: &mut Option<redis::Connection>, batch: &[Done]) -> Result<Result<(), QueueError>, Refused> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut expiries: HashMap<&str, u64> = HashMap::new();
        for d in batch {
            let add = pipe.cmd("XADD");
            add.arg(self.keys.results(&d.job)).arg("*");
            self.seal.write_result(add, &d.job, d.id, &d.answer, &self.me);
            pipe.ignore();
            expiries.insert(&d.job, d.ttl);
        }
        for (job, ttl) in expiries {
            pipe.cmd("EXPIRE").arg(self.keys.results(job)).arg(ttl).ignore();
        }
        let entries: Vec<&str> = batch.iter().map(|d| d.entry.as_str()).collect();
        pipe.cmd("XACK").arg(self.keys.tasks()).arg(GROUP).arg(&entries).ignore();
        pipe.cmd("XDEL").arg(self.keys.tasks()).arg(&entries).ignore();
        let started = Instant::now();
        loop {
            let result = match con.as_mut() {
                Some(c) => pipe.query::<()>(c),
                None => match connect(&self.client, REPLY_WITHIN) {
                    Ok(c) => pipe.query::<()>(con.insert(c)),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => return Ok(Ok(())),
                Err(e) if !broker_lost(&e) => return Err(Refused(e)),
                Err(e) if started.elapsed() >= self.broker_timeout => {
                    return Ok(Err(QueueError::Redis { what: "cannot write results".into(), source: e }));
                }
                Err(_) => {
                    *con = None;
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

/// The broker's refusal of a write (not a lost connection).
pub(super) struct Refused(redis::RedisError);
