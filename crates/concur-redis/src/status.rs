//! What a queue holds right now: [`queue_status`].

use super::redis_value;
use super::{GROUP, Keys, QueueError};

/// A queue's state, as the broker sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStatus {
    /// Tasks queued and not yet delivered to any worker.
    pub queued: u64,
    /// Tasks delivered and not yet acknowledged, per worker (consumer).
    pub in_flight: Vec<(String, u64)>,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Workers that recorded a sign of life, most recent first.
    pub workers: Vec<WorkerSeen>,
}

/// A worker that has served the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSeen {
    /// Its consumer name (`HOST-PID` by default).
    pub name: String,
    /// Unix time of its last sign of life.
    pub last_seen: u64,
}

/// Reads the state of the queue at `url` under `namespace`.
///
/// # Errors
///
/// A bad URL or a broker that cannot be reached.
pub fn queue_status(url: &str, namespace: &str) -> Result<QueueStatus, QueueError> {
    let client = super::url::open(url)?;
    let mut con = super::url::reach(&client, url, std::time::Duration::from_secs(5))?;
    let keys = Keys::new(namespace);
    let mut status = QueueStatus::default();
    // No stream yet means an empty queue, not an error.
    let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO").arg("GROUPS").arg(keys.tasks()).query(&mut con);
    if let Ok(groups) = groups {
        for group in redis_value::items(&groups) {
            let fields = redis_value::pairs(group);
            let field = |name: &str| {
                fields.iter().find(|(k, _)| redis_value::text(k).as_deref() == Some(name)).map(|(_, v)| *v)
            };
            if field("name").and_then(redis_value::text).as_deref() == Some(GROUP) {
                status.queued = field("lag").and_then(redis_value::int).unwrap_or(0).max(0) as u64;
            }
        }
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(keys.tasks())
            .arg(GROUP)
            .query(&mut con)
            .map_err(QueueError::redis("cannot read the pending list"))?;
        if let Some(per_worker) = redis_value::items(&pending).get(3) {
            for pair in redis_value::items(per_worker) {
                if let [name, count] = redis_value::items(pair) {
                    status.in_flight.push((
                        redis_value::text(name).unwrap_or_default(),
                        redis_value::int(count).unwrap_or(0).max(0) as u64,
                    ));
                }
            }
        }
    }
    status.dead_letters = redis::cmd("XLEN")
        .arg(keys.dead())
        .query(&mut con)
        .map_err(QueueError::redis("cannot read the dead letters"))?;
    let seen: redis::Value = redis::cmd("HGETALL")
        .arg(keys.workers())
        .query(&mut con)
        .map_err(QueueError::redis("cannot read the workers seen"))?;
    status.workers = redis_value::pairs(&seen)
        .into_iter()
        .filter_map(|(k, v)| {
            Some(WorkerSeen { name: redis_value::text(k)?, last_seen: redis_value::int(v)?.max(0) as u64 })
        })
        .collect();
    status.workers.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.name.cmp(&b.name)));
    Ok(status)
}
