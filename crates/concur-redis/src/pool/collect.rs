//! The caller's threads besides its own: the results thread, which reads
//! the job's results and keeps the job alive, looking for tasks the broker
//! lost; and the watch on a cancel token.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use concur::CancelToken;
use concur::pool::TaskError;

use super::{BLOCK, LOOK_EVERY, READ_BATCH, REPLY_WITHIN, REQUEUES, Requeue, Shared, WATCH_EVERY, lock};
use crate::redis_value::{self, Entry};
use crate::{broker_lost, connect};

/// The results thread: reads the job's results stream after entry `from`,
/// hands each task its first answer, and keeps the job alive until it is
/// given up. Reconnects to a broker that went away; after
/// `broker_timeout` without one, fails what is waiting.
pub(super) fn collect(shared: &Shared, from: String) {
    let results = shared.keys.results(&shared.job);
    let renew_every = shared.job_ttl / 3;
    let mut last = from;
    let mut con: Option<redis::Connection> = None;
    let mut renewed: Option<Instant> = None;
    let mut looked = Instant::now();
    let mut lost_since: Option<Instant> = None;
    let mut refused: Option<String> = None;
    while !shared.stopping() {
        let abandoned = shared.cancelled();
        if abandoned {
            shared.abandon();
        }
        let read = (|| -> redis::RedisResult<Vec<Entry>> {
            let c = match con.as_mut() {
                Some(c) => c,
                None => con.insert(connect(&shared.client, REPLY_WITHIN)?),
            };
            // A job given up is no longer renewed: it ends (or, resumable,
            // waits to be resumed) when its time to live runs out.
            if !abandoned && renewed.is_none_or(|t| t.elapsed() >= renew_every) {
                shared.renew(c)?;
                renewed = Some(Instant::now());
            }
            if !abandoned && looked.elapsed() >= LOOK_EVERY {
                looked = Instant::now();
                shared.look_for_lost(c)?;
            }
            let reply: redis::Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&results)
                .arg(&last)
                .query(c)?;
            Ok(redis_value::read_reply(&reply))
        })();
        match read {
            Ok(entries) => {
                lost_since = None;
                refused = None;
                for entry in entries {
                    last.clone_from(&entry.id);
                    match shared.seal.read_result(&shared.job, &entry) {
                        Ok(Some((id, answer))) => shared.arrived(id, answer),
                        Ok(None) => {}
                        Err(why) => shared.forged(&entry, &why),
                    }
                }
            }
            Err(e) if !broker_lost(&e) => {
                // The broker answers, with an error (the results stream is
                // not a stream, say): asking again gives the same. What
                // waits fails now, saying why, once per error.
                let why = format!("the queue's broker refused to give the job's results: {e}");
                if refused.as_deref() != Some(why.as_str()) {
                    tracing::warn!(target: "concur::queue", "job {}: {why}", shared.job);
                    refused = Some(why.clone());
                }
                shared.fail_all(&why);
                shared.pause(Duration::from_secs(1));
            }
            Err(e) => {
                con = None;
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= shared.broker_timeout {
                    shared.fail_all(&format!("lost the queue's broker for {:?}: {e}", shared.broker_timeout));
                    lost_since = None;
                }
                shared.pause(Duration::from_millis(200));
            }
        }
    }
}

/// Gives up the job as soon as `cancel` is cancelled, without waiting for
/// the results thread (which may be waiting for a broker that stopped
/// answering); ends with the pool.
pub(super) fn watch(shared: &Shared, cancel: &CancelToken) {
    while !shared.stopping() {
        if cancel.sleep(WATCH_EVERY) {
            shared.abandon();
            return;
        }
    }
}

impl Shared {
    /// Finds the tasks the broker lost (flushed, or restarted without its
    /// data): queued a while ago, and neither in the work stream (queued or
    /// held by a worker) nor answered at two looks in a row. Each is queued
    /// again, up to [`REQUEUES`] times, then fails; both are said. A job
    /// whose key is gone has it set again first, or workers would skip its
    /// tasks.
    fn look_for_lost(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let probe: Vec<(u64, String)> = lock(&self.state)
            .waiting
            .iter()
            .filter_map(|(id, w)| {
                w.entry.as_ref().filter(|(_, at)| at.elapsed() >= LOOK_EVERY).map(|(e, _)| (*id, e.clone()))
            })
            .collect();
        if probe.is_empty() {
            return Ok(());
        }
        let alive: bool = redis::cmd("EXISTS").arg(self.keys.alive(&self.job)).query(con)?;
        if !alive {
            tracing::warn!(
                target: "concur::queue",
                "job {}: its key was gone from the broker (flushed, or restarted without its data): set again",
                self.job
            );
            self.renew(con)?;
        }
        let tasks = self.keys.tasks();
        let mut gone = Vec::new();
        for chunk in probe.chunks(1000) {
            let mut pipe = redis::pipe();
            for (_, entry) in chunk {
                pipe.cmd("XRANGE").arg(&tasks).arg(entry).arg(entry);
            }
            let found: Vec<redis::Value> = pipe.query(con)?;
            gone.extend(
                chunk.iter().zip(found).filter(|(_, f)| redis_value::items(f).is_empty()).map(|((id, _), _)| *id),
            );
        }
        let (mut again, mut failed): (Vec<Requeue>, Vec<u64>) = (Vec::new(), Vec::new());
        {
            let gone: HashSet<u64> = gone.into_iter().collect();
            let mut state = lock(&self.state);
            for (id, w) in &mut state.waiting {
                if w.entry.is_none() {
                    continue;
                }
                if !gone.contains(id) {
                    w.missing = 0;
                    continue;
                }
                w.missing += 1;
                if w.missing < 2 {
                    continue;
                }
                w.missing = 0;
                match w.task.take() {
                    Some((name, payload)) if w.requeued < REQUEUES => {
                        w.requeued += 1;
                        w.entry = None;
                        again.push((*id, name, payload));
                    }
                    _ => failed.push(*id),
                }
            }
        }
        if !again.is_empty() {
            tracing::warn!(
                target: "concur::queue",
                "job {}: {} task(s) lost by the broker (neither queued, held nor answered): queued again",
                self.job,
                again.len()
            );
            eprintln!(
                "concur: job {}: {} task(s) lost by the queue's broker (flushed, or restarted without its data): \
                 queued again",
                self.job,
                again.len()
            );
        }
        for (id, name, payload) in again {
            self.send(name, vec![(id, payload)]);
        }
        if !failed.is_empty() {
            eprintln!(
                "concur: job {}: {} task(s) lost by the queue's broker {} times: failed",
                self.job,
                failed.len(),
                REQUEUES + 1
            );
        }
        for id in failed {
            let why = format!(
                "task {id} was lost by the queue's broker (neither queued, held by a worker nor answered) {} times",
                REQUEUES + 1
            );
            self.finish(id, Err(TaskError::Failed(why)));
        }
        Ok(())
    }
}
