//! The worker's writer thread: results and their acknowledgements, in
//! batches, each batch one transaction.

#![allow(clippy::wildcard_imports)]

use super::*;

pub(super) struct Writer {
    pub(super) client: redis::Client,
    pub(super) keys: Keys,
    pub(super) me: String,
    pub(super) in_flight: Arc<InFlight>,
    pub(super) broker_timeout: Duration,
    /// Cancelled if results can no longer be written: the worker stops
    /// reading, since what it ran would be lost.
    pub(super) stop: CancelToken,
}

impl Writer {
    /// Writes answers as they come, in batches, until the runners are done;
    /// gives how many were written.
    pub(super) fn run(&self, done: &Receiver<Done>) -> Result<u64, QueueError> {
        let mut con: Option<redis::Connection> = None;
        let mut written = 0;
        while let Ok(first) = done.recv() {
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
    /// result written twice is dropped by the caller).
    pub(super) fn write(&self, con: &mut Option<redis::Connection>, batch: &[Done]) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut expiries: HashMap<&str, u64> = HashMap::new();
        for d in batch {
            pipe.cmd("XADD")
                .arg(self.keys.results(&d.job))
                .arg("*")
                .arg("id")
                .arg(d.id)
                .arg("answer")
                .arg(d.answer.as_slice())
                .arg("worker")
                .arg(&self.me)
                .ignore();
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
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() >= self.broker_timeout => {
                    return Err(QueueError::Redis { what: "cannot write results".into(), source: e });
                }
                Err(_) => {
                    *con = None;
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}
