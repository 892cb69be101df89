//! The options of a queue worker ([`serve_queue`](super::serve_queue)).

#![allow(clippy::wildcard_imports)]

use super::*;

/// Options of [`serve_queue`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub(super) concurrency: usize,
    pub(super) prefetch: usize,
    pub(super) namespace: String,
    pub(super) claim_after: Duration,
    pub(super) max_deliveries: u32,
    pub(super) broker_timeout: Duration,
    pub(super) name: Option<String>,
    pub(super) stop: CancelToken,
    pub(super) key: Option<QueueKey>,
    pub(super) task_limit: Duration,
}

/// The longest [`WorkerOptions::task_limit`] (a day): a deadline always fits
/// the clock.
const LONGEST_TASK_LIMIT: Duration = Duration::from_secs(24 * 3600);

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 1,
            prefetch: 0,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            claim_after: Duration::from_secs(30),
            max_deliveries: 5,
            broker_timeout: Duration::from_secs(60),
            name: None,
            stop: CancelToken::new(),
            key: None,
            task_limit: Duration::from_secs(600),
        }
    }
}

impl WorkerOptions {
    /// One task at a time and none read ahead, namespace `concur`, claims
    /// after 30 s, dead letters after 5 deliveries, tasks ended after 10
    /// minutes, no key (a broker on this host only).
    pub fn new() -> Self {
        Self::default()
    }

    /// Tasks run at once (threads): a count of zero cannot be built, as
    /// the pools refuse zero workers.
    #[must_use]
    pub fn concurrency(mut self, n: std::num::NonZeroUsize) -> Self {
        self.concurrency = n.get();
        self
    }

    /// Tasks read ahead of the runners (default 0: only as many as can
    /// start at once). Many short tasks want more, to be read in fewer
    /// round trips; long ones want none, since a task read ahead waits here
    /// while another worker may be idle.
    #[must_use]
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// The namespace of the queue's keys (the pool's).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a task held by another worker must be idle before this one
    /// takes it over. Live workers renew their tasks every third of it, so
    /// it only has to be longer than a stall, not than a task.
    #[must_use]
    pub fn claim_after(mut self, d: Duration) -> Self {
        self.claim_after = d.max(Duration::from_millis(30));
        self
    }

    /// A task delivered more than this many times goes to the dead letters
    /// instead of running again.
    #[must_use]
    pub fn max_deliveries(mut self, n: std::num::NonZeroU32) -> Self {
        self.max_deliveries = n.get();
        self
    }

    /// How long to keep trying to reach a broker that went away while
    /// results wait to be written (the worker then exits with an error;
    /// its unacknowledged tasks go to other workers).
    #[must_use]
    pub fn broker_timeout(mut self, d: Duration) -> Self {
        self.broker_timeout = d;
        self
    }

    /// The consumer name (default `HOST-PID`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Stops serving when `stop` is cancelled: no new task is read, those
    /// held are finished and acknowledged, then [`serve_queue`] returns.
    #[must_use]
    pub fn stop_on(mut self, stop: CancelToken) -> Self {
        self.stop = stop;
        self
    }

    /// The queue's key: tasks without its tag go to the dead letters
    /// unrun, and results carry it. Without a key, only a broker on this
    /// host (loopback or a Unix socket) is served.
    #[must_use]
    pub fn key(mut self, key: QueueKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The longest any task may run (default 10 minutes, at most a day); a
    /// task asking for less gets less. A task past its limit is answered
    /// with an error, acknowledged and its slot given to the next task; its
    /// thread is left to finish, and what it returns is dropped.
    #[must_use]
    pub fn task_limit(mut self, limit: Duration) -> Self {
        self.task_limit = limit.clamp(Duration::from_millis(1), LONGEST_TASK_LIMIT);
        self
    }
}
