//! How a [`RedisPool`](super::RedisPool) is made: its broker, namespace,
//! job lifetime and cancellation, and whether it starts a job that can be
//! resumed or resumes one.

#![allow(clippy::wildcard_imports)]

use super::*;

/// Options of a [`RedisPool`].
#[derive(Debug, Clone)]
pub struct RedisPoolBuilder {
    pub(super) url: crate::url::QueueUrl,
    pub(super) namespace: String,
    pub(super) job_ttl: Duration,
    pub(super) broker_timeout: Duration,
    pub(super) cancel: Option<CancelToken>,
    pub(super) about: Option<String>,
    pub(super) resume: Option<String>,
    pub(super) key: Option<QueueKey>,
    pub(super) task_limit: Option<Duration>,
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
    /// remaining tasks and its results expire. At most 7 days.
    #[must_use]
    pub fn job_ttl(mut self, ttl: Duration) -> Self {
        // Workers refuse a longer one.
        self.job_ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(super::super::seal::MAX_TTL));
        self
    }

    /// How long the pool keeps trying to reach a broker that went away
    /// (default 60 s) before it fails every task still waiting.
    #[must_use]
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.broker_timeout = timeout;
        self
    }

    /// Makes the job one that can be resumed, and says what it is (e.g. a
    /// digest of its items): a caller resuming it must give the same
    /// description. Given up (cancelled through
    /// [`cancel_on`](Self::cancel_on), or its caller killed), such a job is
    /// not ended but left for `job_ttl`: workers go on with its tasks still
    /// queued, their answers are kept, and [`resume`](Self::resume) takes
    /// it up. ([`RedisPool::terminate`] still ends it.)
    #[must_use]
    pub fn describe(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }

    /// Resumes the job `job` (its [`RedisPool::job`] id), given up by its
    /// caller less than its `job_ttl` ago, instead of starting one: the
    /// pool gives the answers the job already holds
    /// ([`RedisPool::answered`]), waits for its tasks still in the work
    /// stream rather than queueing them again, and takes new tasks as any
    /// pool. Needs the job's [`describe`](Self::describe) description.
    #[must_use]
    pub fn resume(mut self, job: impl Into<String>) -> Self {
        self.resume = Some(job.into());
        self
    }

    /// The queue's key: tasks carry its tag, and results without it are
    /// dropped. Without a key, only a broker on this host (loopback or a
    /// Unix socket) is used.
    #[must_use]
    pub fn key(mut self, key: QueueKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The most each task may run on a worker (within the worker's own
    /// limit, which applies alone without this): past it the task is
    /// answered with an error.
    #[must_use]
    pub fn task_limit(mut self, limit: Duration) -> Self {
        self.task_limit = Some(limit);
        self
    }

    /// Connects, makes the stream and the group if needed, and starts the
    /// job, or resumes it.
    ///
    /// # Errors
    ///
    /// A bad URL, or a broker that cannot be reached; when resuming, a job
    /// the broker does not hold ([`QueueError::UnknownJob`]: never started,
    /// finished, or expired) or one started for other work
    /// ([`QueueError::NotTheSameJob`]).
    pub fn build(self) -> Result<RedisPool, QueueError> {
        let client = crate::url::open(&self.url)?;
        check_keyless(&client, self.key.as_ref())?;
        let seal = Seal::new(self.key.clone(), &self.namespace);
        let mut con = crate::url::reach(&client, &self.url, REPLY_WITHIN)?;
        let keys = Keys::new(&self.namespace);
        ensure_group(&mut con, &keys).map_err(QueueError::redis("cannot create the consumer group"))?;
        let ttl = secs(self.job_ttl);
        let (job, left) = match (&self.resume, &self.about) {
            (Some(job), Some(about)) => (job.clone(), resume::reattach(&mut con, &keys, &seal, job, about, ttl)?),
            (Some(_), None) => return Err(QueueError::Invalid("resuming a job needs its description".into())),
            (None, about) => {
                let job = random_id();
                let mut pipe = redis::pipe();
                pipe.atomic().cmd("SET").arg(keys.alive(&job)).arg(1).arg("EX").arg(ttl).ignore();
                if let Some(about) = about {
                    pipe.cmd("SET").arg(keys.about(&job)).arg(about).arg("EX").arg(ttl).ignore();
                }
                pipe.query::<()>(&mut con).map_err(QueueError::redis("cannot start the job"))?;
                (job, resume::Left::default())
            }
        };
        let shared = Arc::new(Shared {
            keys,
            seal,
            limit_ms: self.task_limit.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
            said_forged: AtomicBool::new(false),
            said_unknown: AtomicBool::new(false),
            job,
            client,
            job_ttl: self.job_ttl,
            broker_timeout: self.broker_timeout,
            cancel: self.cancel,
            about: self.about,
            found: Mutex::new(left.found),
            state: Mutex::new(State { waiting: HashMap::new(), given: HashSet::new(), stopping: false }),
            changed: Condvar::new(),
            next_id: AtomicU64::new(left.next_id),
            closed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            submit: Mutex::new(Some(con)),
        });
        let collector = std::thread::Builder::new()
            .name("concur-queue-results".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || collect(&shared, left.read_to)
            })
            .map_err(|e| QueueError::Invalid(format!("cannot start the results thread: {e}")))?;
        if let Some(cancel) = shared.cancel.clone() {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("concur-queue-cancel".into())
                .spawn(move || watch(&shared, &cancel))
                .map_err(|e| QueueError::Invalid(format!("cannot start the cancel watcher: {e}")))?;
        }
        Ok(RedisPool { shared, collector: Mutex::new(Some(collector)) })
    }
}
