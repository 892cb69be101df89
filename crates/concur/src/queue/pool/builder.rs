//! How a [`RedisPool`](super::RedisPool) is made: its broker, namespace,
//! job lifetime and cancellation.

#![allow(clippy::wildcard_imports)]

use super::*;

/// Options of a [`RedisPool`].
#[derive(Debug, Clone)]
pub struct RedisPoolBuilder {
    pub(super) url: String,
    pub(super) namespace: String,
    pub(super) job_ttl: Duration,
    pub(super) broker_timeout: Duration,
    pub(super) cancel: Option<CancelToken>,
}

impl RedisPoolBuilder {
    /// Gives up on the job when `cancel` is cancelled: every task still
    /// waiting gives [`TaskError::Cancelled`] within a second, and workers
    /// skip the job's tasks they have not started, as with
    /// [`RedisPool::terminate`]. Without it, a caller whose tasks no worker
    /// takes waits until the broker is lost.
    #[must_use]
    pub fn cancel_on(mut self, cancel: CancelToken) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// The namespace of the queue's keys (default `concur`); workers must
    /// serve the same one.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long the job outlives its caller (default 60 s): the caller
    /// renews it while it lives; once it expires, workers skip the job's
    /// remaining tasks and its results expire.
    #[must_use]
    pub fn job_ttl(mut self, ttl: Duration) -> Self {
        self.job_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long the pool keeps trying to reach a broker that went away
    /// (default 60 s) before it fails every task still waiting.
    #[must_use]
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.broker_timeout = timeout;
        self
    }

    /// Connects, makes the stream and the group if needed, and starts the
    /// job.
    ///
    /// # Errors
    ///
    /// A bad URL, or a broker that cannot be reached.
    pub fn build(self) -> Result<RedisPool, QueueError> {
        let client = redis::Client::open(self.url.as_str()).map_err(QueueError::redis("bad queue URL"))?;
        let mut con =
            connect(&client, REPLY_WITHIN).map_err(QueueError::redis(format!("cannot reach {}", self.url)))?;
        let keys = Keys::new(&self.namespace);
        ensure_group(&mut con, &keys).map_err(QueueError::redis("cannot create the consumer group"))?;
        let job = random_id();
        redis::cmd("SET")
            .arg(keys.alive(&job))
            .arg(1)
            .arg("EX")
            .arg(secs(self.job_ttl))
            .query::<()>(&mut con)
            .map_err(QueueError::redis("cannot start the job"))?;
        let shared = Arc::new(Shared {
            keys,
            job,
            client,
            job_ttl: self.job_ttl,
            broker_timeout: self.broker_timeout,
            cancel: self.cancel,
            state: Mutex::new(State { waiting: HashMap::new(), stopping: false }),
            changed: Condvar::new(),
            next_id: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            submit: Mutex::new(Some(con)),
        });
        let collector = std::thread::Builder::new()
            .name("concur-queue-results".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || collect(&shared)
            })
            .map_err(|e| QueueError::Invalid(format!("cannot start the results thread: {e}")))?;
        Ok(RedisPool { shared, collector: Mutex::new(Some(collector)) })
    }
}
