//! What the fetch job writes to a [`Trace`]: each attempt of one item on
//! the track of the thread, task slot or worker process that made it, the
//! waits at the rate limits and between attempts, 429s, retries and
//! cancellations, and the requests in flight.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::trace::{self, Trace, Track};
use crate::{FetchError, RateRequest, Reply};

/// Where and when an attempt ran in a process-pool worker: its pid and
/// `CLOCK_MONOTONIC` times, so the parent draws it on that worker's track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The worker's process id.
    pub pid: u32,
    /// When the attempt started, in nanoseconds of `CLOCK_MONOTONIC`.
    pub start: u64,
    /// When it ended.
    pub end: u64,
}

/// The item of a span: the base, and the day if one was asked for, so a
/// history's days and a dated fetch's bases are told apart alike.
#[derive(Clone, Copy)]
pub(super) struct Item<'a>(pub(super) Option<&'a RateRequest>);

impl fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(RateRequest { date: Some(d), base, .. }) => write!(f, "{base} {d}"),
            Some(r) => write!(f, "{}", r.base),
            None => f.write_str("?"),
        }
    }
}

/// What a trace keeps of one item while its attempts go: the track they
/// are drawn on, the attempt number, and when and why the last one failed.
pub(super) struct Traced<'a> {
    pub(super) trace: &'a Trace,
    /// Named when first drawn on: a process-pool dispatcher's track
    /// only if it waited.
    track: OnceLock<Track>,
    item: Item<'a>,
    attempt: AtomicU32,
    /// When the last failed attempt ended (0: none yet).
    failed_at: AtomicU64,
    /// Why it failed, and whether the server said when to come back.
    why: Mutex<(String, bool)>,
    /// When the attempt in flight was sent (0: none is).
    sent: AtomicU64,
    /// The item has its outcome.
    done: AtomicBool,
}

impl<'a> Traced<'a> {
    /// What the trace keeps of `req`'s attempts, on `track` if given, else
    /// on the calling thread's.
    pub(super) fn new(trace: &'a Trace, track: Option<Track>, req: Option<&'a RateRequest>) -> Self {
        Traced {
            trace,
            track: track.map_or_else(OnceLock::new, OnceLock::from),
            item: Item(req),
            attempt: AtomicU32::new(0),
            failed_at: AtomicU64::new(0),
            why: Mutex::new((String::new(), false)),
            sent: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }

    /// An attempt begins its gates: after a failed one, the wait since it
    /// (a backoff, or the server's `Retry-After`) and a retry instant.
    pub(super) fn next_attempt(&self) {
        let n = self.attempt.fetch_add(1, Ordering::Relaxed) + 1;
        let failed_at = self.failed_at.swap(0, Ordering::Relaxed);
        if n == 1 || failed_at == 0 {
            return;
        }
        let (why, told) = concur::sync::lock(&self.why).clone();
        let why = serde_json::to_string(&why).unwrap_or_default();
        self.trace.instant(
            self.track(),
            failed_at,
            "retry",
            format_args!(r#""item":"{}","attempt":{n},"reason":{why}"#, self.item),
        );
        self.wait(if told { "retry-after" } else { "backoff" }, failed_at, trace::now());
    }

    /// Times `gate`, a wait called `name`.
    pub(super) fn gate<T>(&self, name: &str, gate: impl FnOnce() -> T) -> T {
        let start = trace::now();
        let passed = gate();
        self.wait(name, start, trace::now());
        passed
    }

    /// The track its spans are drawn on.
    fn track(&self) -> Track {
        *self.track.get_or_init(|| self.trace.thread_track())
    }

    /// A wait from `start` to `end`, if long enough to be drawn.
    fn wait(&self, name: &str, start: u64, end: u64) {
        if end.saturating_sub(start) >= trace::MIN_WAIT.as_nanos() as u64 {
            self.trace.wait(self.track(), name, start, end);
        }
    }

    /// The request is sent: one more in flight; the time it is sent.
    pub(super) fn send(&self) -> u64 {
        self.trace.in_flight(1);
        let now = trace::now();
        self.sent.store(now, Ordering::Relaxed);
        now
    }

    /// Its answer came: the span (on a worker's track if `stamp` says it
    /// ran there), a 429's instant, one fewer in flight.
    pub(super) fn answered(&self, sent: u64, answer: &Result<Reply, FetchError>, stamp: Option<Stamp>) {
        let end = trace::now();
        self.sent.store(0, Ordering::Relaxed);
        let attempt = self.attempt.load(Ordering::Relaxed);
        let (track, start, end) = match stamp {
            Some(s) => {
                let (track, first) = self.trace.worker_track(s.pid);
                if first && self.trace.workers_seen() > self.trace.pool_size() {
                    self.trace.instant(track, s.start, "respawn", format_args!(r#""new_pid":{}"#, s.pid));
                }
                (track, s.start, s.end)
            }
            None => (self.track(), sent, end),
        };
        record(self.trace, track, start, end, self.item, attempt, answer);
        self.trace.in_flight(-1);
        if let Err(e) = answer {
            self.failed_at.store(end, Ordering::Relaxed);
            *concur::sync::lock(&self.why) = (reason(e), e.retry_after().is_some());
        }
    }

    /// The item has its outcome: a cancelled one is an instant.
    pub(super) fn finish(&self, outcome: &crate::Outcome) {
        self.done.store(true, Ordering::Relaxed);
        if matches!(outcome, Err(f) if f.error == FetchError::Cancelled) {
            self.cancelled();
        }
        self.trace.flush_local();
    }

    fn cancelled(&self) {
        self.trace.instant(self.track(), trace::now(), "cancelled", format_args!(r#""item":"{}""#, self.item));
    }
}

/// An async task dropped before its outcome (the run was cancelled): its
/// request in flight, if any, ends now, and the item is cancelled.
impl Drop for Traced<'_> {
    fn drop(&mut self) {
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        let sent = self.sent.load(Ordering::Relaxed);
        if sent != 0 {
            let attempt = self.attempt.load(Ordering::Relaxed);
            record(self.trace, self.track(), sent, trace::now(), self.item, attempt, &Err(FetchError::Cancelled));
            self.trace.in_flight(-1);
        }
        self.cancelled();
        self.trace.flush_local();
    }
}

/// `gate()`, timed as a wait called `name` if traced.
pub(super) fn timed<T>(traced: Option<&Traced<'_>>, name: &str, gate: impl FnOnce() -> T) -> T {
    match traced {
        Some(t) => t.gate(name, gate),
        None => gate(),
    }
}

/// `gate`, awaited and timed as a wait called `name` if traced.
pub(super) async fn timed_async<T>(traced: Option<&Traced<'_>>, name: &str, gate: impl Future<Output = T>) -> T {
    let start = traced.map(|_| trace::now());
    let passed = gate.await;
    if let (Some(t), Some(start)) = (traced, start) {
        t.wait(name, start, trace::now());
    }
    passed
}

/// Writes one attempt at `item` and, for a 429, its instant.
pub(super) fn record(
    trace: &Trace,
    track: Track,
    start: u64,
    end: u64,
    item: Item<'_>,
    attempt: u32,
    answer: &Result<Reply, FetchError>,
) {
    match answer {
        Ok(reply) => trace.request(track, start, end, &item, attempt, 200, reply.bytes, None),
        Err(FetchError::Status { status, retry_after, .. }) => {
            trace.request(track, start, end, &item, attempt, *status, 0, None);
            if *status == 429 {
                let after = retry_after.map_or_else(|| "null".to_owned(), |d| d.as_secs_f64().to_string());
                trace.instant(track, end, "429", format_args!(r#""item":"{item}","retry_after":{after}"#));
            }
        }
        Err(e) => trace.request(track, start, end, &item, attempt, 0, 0, Some(&reason(e))),
    }
}

/// A failure in a few words.
fn reason(e: &FetchError) -> String {
    match e {
        FetchError::Status { status, .. } => format!("HTTP {status}"),
        FetchError::Timeout(_) => "timeout".into(),
        FetchError::Connect(_) => "cannot connect".into(),
        FetchError::Cancelled => "cancelled".into(),
        e => {
            let mut s = e.to_string();
            if let Some((at, _)) = s.char_indices().nth(80) {
                s.truncate(at);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_bases_and_days_and_reasons_are_short() {
        let mut req = RateRequest { base: crate::Currency::EUR, symbols: vec![], date: None };
        assert_eq!(Item(Some(&req)).to_string(), "EUR");
        req.date = crate::parse_date("2024-01-02").ok();
        assert_eq!(Item(Some(&req)).to_string(), "EUR 2024-01-02");
        assert_eq!(reason(&FetchError::Timeout("after 10s".into())), "timeout");
        assert_eq!(reason(&FetchError::Transport("x".repeat(500))).chars().count(), 80);
    }

    #[test]
    fn a_worker_process_past_the_pools_size_is_a_respawn() {
        let dir = tempfile::tempdir().expect("a folder");
        let trace = Trace::create(dir.path().join("t.json"), "process-pool").expect("a trace");
        trace.set_model(crate::Model::ProcessPool, 2);
        let failed: Result<Reply, FetchError> = Err(FetchError::Worker("died".into()));
        for pid in [101, 102, 101, 103] {
            let traced = Traced::new(&trace, None, None);
            traced.next_attempt();
            let sent = traced.send();
            traced.answered(sent, &failed, Some(Stamp { pid, start: sent, end: sent + 1000 }));
            traced.finish(&Err(crate::Failure { error: FetchError::Worker("died".into()), attempts: 1 }));
        }
        trace.finish().expect("written");
        let text = std::fs::read_to_string(trace.path()).expect("the trace");
        let events = crate::trace::read_events(&text).expect("a trace");
        let respawns: Vec<_> = events.iter().filter(|e| e["name"] == "respawn").collect();
        assert_eq!(respawns.len(), 1, "{events:?}");
        assert_eq!((respawns[0]["pid"].as_u64(), respawns[0]["args"]["new_pid"].as_u64()), (Some(103), Some(103)));
        // Each attempt on its worker's track, with the reason it failed.
        let spans: Vec<_> = events.iter().filter(|e| e["cat"] == "request").collect();
        assert_eq!(spans.iter().map(|e| e["tid"].as_u64().unwrap_or(0)).collect::<Vec<_>>(), [101, 102, 101, 103]);
        assert!(spans.iter().all(|e| e["args"]["status"] == 0 && e["args"]["error"] == "worker failed: died"));
    }

    #[test]
    fn a_dropped_task_ends_its_request_and_is_cancelled() {
        let dir = tempfile::tempdir().expect("a folder");
        let trace = Trace::create(dir.path().join("t.json"), "async").expect("a trace");
        let slot = trace.slot();
        let req = RateRequest { base: crate::Currency::EUR, symbols: vec![], date: None };
        let traced = Traced::new(&trace, Some(slot.track()), Some(&req));
        traced.next_attempt();
        traced.send();
        drop(traced);
        drop(slot);
        trace.finish().expect("written");
        let text = std::fs::read_to_string(trace.path()).expect("the trace");
        let events = crate::trace::read_events(&text).expect("a trace");
        let span = events.iter().find(|e| e["cat"] == "request").expect("the request");
        assert_eq!((&span["args"]["error"], &span["args"]["item"]), (&"cancelled".into(), &"EUR".into()));
        assert!(events.iter().any(|e| e["name"] == "cancelled"));
        // Nothing left in flight at the end.
        assert_eq!(events.last().map(|e| e["args"]["requests"].clone()), Some(0.into()));
    }
}
