//! Taking up a job that its caller gave up: checking it is the same work,
//! and reading what it left (tasks still queued, answers given).

use super::redis_value;
use super::{AUTO_IDS, Found, Keys, QueueError, Seal};

/// Stream entries read in one round trip.
const PAGE: usize = 1000;

/// What a resumed job left, for the pool that takes it up.
pub(super) struct Left {
    pub(super) found: Found,
    /// The last entry of the results stream read: the results thread goes
    /// on after it.
    pub(super) read_to: String,
    /// The first id the pool may give a task of its own.
    pub(super) next_id: u64,
}

impl Default for Left {
    fn default() -> Self {
        Left { found: Found::default(), read_to: "0-0".to_owned(), next_id: AUTO_IDS }
    }
}

/// Takes up `job`: refuses one the broker does not hold or that was
/// started for other work than `about`, renews its keys (`ttl` seconds),
/// and reads what it left.
///
/// The work stream is read before the results: a task answered between
/// the two reads is then found answered, never lost between them. And
/// once the job's key is renewed no worker skips its tasks, so a task
/// seen in the stream will be answered.
pub(super) fn reattach(
    con: &mut redis::Connection,
    keys: &Keys,
    seal: &Seal,
    job: &str,
    about: &str,
    ttl: u64,
) -> Result<Left, QueueError> {
    let was: Option<String> =
        redis::cmd("GET").arg(keys.about(job)).query(con).map_err(QueueError::redis("cannot read the job"))?;
    match was {
        None => return Err(QueueError::UnknownJob(job.to_owned())),
        Some(was) if was != about => {
            return Err(QueueError::NotTheSameJob { job: job.to_owned(), was, asked: about.to_owned() });
        }
        Some(_) => {}
    }
    // Only if it still lives (`XX`): a job whose key expired may have had
    // tasks skipped by workers, and is refused.
    let renewed: Option<String> = redis::cmd("SET")
        .arg(keys.alive(job))
        .arg(1)
        .arg("XX")
        .arg("EX")
        .arg(ttl)
        .query(con)
        .map_err(QueueError::redis("cannot renew the job"))?;
    if renewed.is_none() {
        return Err(QueueError::UnknownJob(job.to_owned()));
    }
    redis::pipe()
        .cmd("EXPIRE")
        .arg(keys.about(job))
        .arg(ttl)
        .ignore()
        .cmd("EXPIRE")
        .arg(keys.results(job))
        .arg(ttl)
        .ignore()
        .query::<()>(con)
        .map_err(QueueError::redis("cannot renew the job"))?;

    let mut found = Found::default();
    let mut highest = None;
    for entry in read_all(con, &keys.tasks())? {
        if entry.text("job") == Some(job)
            && let Some(id) = entry.number::<u64>("id")
        {
            found.queued.insert(id);
            highest = highest.max(Some(id));
        }
    }
    let mut read_to = "0-0".to_owned();
    for entry in read_all(con, &keys.results(job))? {
        read_to.clone_from(&entry.id);
        // Entries without an id wake a results thread; they answer nothing.
        // One not tagged with the key is not an answer either.
        let (id, body) = match seal.read_result(job, &entry) {
            Ok(Some(answer)) => answer,
            Ok(None) => continue,
            Err(why) => {
                tracing::warn!(target: "concur::queue", "job {job}: dropped result entry {}: {why}", entry.id);
                continue;
            }
        };
        found.queued.remove(&id);
        found.answers.entry(id).or_insert_with(|| body.to_vec());
        highest = highest.max(Some(id));
    }
    // The pool's own ids go on after the first caller's, so an answer to
    // one of its tasks never meets a new task.
    let next_id = highest.filter(|id| *id >= AUTO_IDS).map_or(AUTO_IDS, |id| id.saturating_add(1));
    Ok(Left { found, read_to, next_id })
}

/// Every entry of `stream`, a page at a time.
fn read_all(con: &mut redis::Connection, stream: &str) -> Result<Vec<redis_value::Entry>, QueueError> {
    let mut all = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query(con)
            .map_err(QueueError::redis(format!("cannot read {stream}")))?;
        let page = redis_value::entries(&reply);
        let full = page.len() >= PAGE;
        if let Some(last) = page.last() {
            // Exclusive: the next page starts after this one's last entry.
            start = format!("({}", last.id);
        }
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}
