//! One attempt as a pool task, for the multiprocessing models and the
//! queue's workers: [`FetchOnce`], what a process that serves others' tasks
//! lets them ask, and the clients each process keeps.

use std::sync::{Mutex, OnceLock};

use concur::Task;
use serde::{Deserialize, Serialize};

use super::traced::{Item, Stamp, record};
use crate::trace::{self, Trace};
use crate::{BlockingClient, ClientConfig, FetchError, RateRequest, Reply};

/// One attempt at `GET /rates`, as a task a pool worker runs: what crosses
/// to a worker process (serialised) and back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchOnce {
    /// The API's base URL.
    pub api: String,
    /// The client's timeouts.
    pub config: ClientConfig,
    /// What to fetch.
    pub request: RateRequest,
}

impl Task for FetchOnce {
    /// The answer with its rate-limit headers, which the caller's adaptive
    /// rate learns from.
    type Output = Result<Reply, FetchError>;
    const NAME: &'static str = "rates::FetchOnce";

    /// In a process that serves tasks from others (see [`FetchPolicy`]),
    /// an API not allowed is this task's error, without a request, and the
    /// timeouts are capped at the policy's.
    ///
    /// In a process that writes a trace (see [`FetchOnce::trace_to`]),
    /// the attempt is a span on the track of the thread that made it.
    fn run(self) -> Self::Output {
        let Some(trace) = TRACE.get() else { return self.attempt() };
        trace.in_flight(1);
        let start = trace::now();
        let answer = self.attempt();
        // The caller counts the attempts: here it is attempt 0, unknown.
        record(trace, trace.thread_track(), start, trace::now(), Item(Some(&self.request)), 0, &answer);
        trace.in_flight(-1);
        trace.flush_local();
        answer
    }
}

impl FetchOnce {
    fn attempt(&self) -> Result<Reply, FetchError> {
        let config = match POLICY.get() {
            Some(policy) => policy.admit(&self.api, self.config)?,
            None => self.config,
        };
        client(&self.api, config)?.fetch_reply(&self.request)
    }

    /// Writes every task this process runs from now on to `trace` (a
    /// `rates worker`'s). Once per process: `false` if a trace was set
    /// already (which stays).
    pub fn trace_to(trace: Trace) -> bool {
        TRACE.set(trace).is_ok()
    }
}

static TRACE: OnceLock<Trace> = OnceLock::new();

/// [`FetchOnce`] in a process-pool worker of a traced run: the answer comes
/// back with the worker's pid and when the attempt ran, so the parent draws
/// it on that worker's track.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchStamped(pub FetchOnce);

impl Task for FetchStamped {
    type Output = (Result<Reply, FetchError>, Stamp);
    const NAME: &'static str = "rates::FetchStamped";

    fn run(self) -> Self::Output {
        let start = trace::now();
        let answer = self.0.run();
        (answer, Stamp { pid: std::process::id(), start, end: trace::now() })
    }
}

/// What a process that runs [`FetchOnce`] tasks for others (a `rates
/// worker` on a queue) lets them do: which APIs they may ask, and the
/// longest timeouts, whatever a task carries. Set once per process with
/// [`FetchOnce::serve_with`]; a process without one (a process pool's
/// worker, whose tasks come from its own parent) runs tasks as they are.
#[derive(Debug, Clone, PartialEq)]
struct FetchPolicy {
    /// The APIs tasks may ask (base URLs, compared without a trailing `/`).
    allow: Vec<String>,
    /// The longest connect and request timeouts.
    max: ClientConfig,
}

impl FetchPolicy {
    /// The configuration a task may use on `api`: its own timeouts within
    /// the policy's; an API not allowed is an error.
    fn admit(&self, api: &str, asked: ClientConfig) -> Result<ClientConfig, FetchError> {
        let api = api.trim_end_matches('/');
        if !self.allow.iter().any(|a| allows(a.trim_end_matches('/'), api)) {
            return Err(FetchError::Worker(format!(
                "the API {api:?} is not allowed on this worker (its --allow-api): nothing was requested"
            )));
        }
        Ok(ClientConfig {
            connect_timeout: asked.connect_timeout.min(self.max.connect_timeout),
            timeout: asked.timeout.min(self.max.timeout),
        })
    }
}

/// Whether the allowed API `allowed` covers `api`: the same URL, or, for
/// an entry ending in `:*` (`http://127.0.0.1:*`), the same scheme and host
/// on any port.
fn allows(allowed: &str, api: &str) -> bool {
    match allowed.strip_suffix(":*") {
        Some(base) => api
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())),
        None => allowed == api,
    }
}

static POLICY: OnceLock<FetchPolicy> = OnceLock::new();

impl FetchOnce {
    /// Clients a process keeps, at most (the most recently used).
    pub const CLIENT_CACHE: usize = CLIENT_CACHE;

    /// Bounds the tasks this process runs from now on, before it serves
    /// tasks from others (`rates worker`): only the APIs of `allow` are
    /// asked (any other is the task's error, without a request), and a
    /// task's timeouts are capped at `max`'s. Once per process: `false` if
    /// a policy was set already (which stays).
    pub fn serve_with(allow: Vec<String>, max: ClientConfig) -> bool {
        POLICY.set(FetchPolicy { allow, max }).is_ok()
    }

    /// How many clients this process keeps now (at most
    /// [`CLIENT_CACHE`](Self::CLIENT_CACHE)).
    pub fn cached_clients() -> usize {
        CACHED.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Clients kept per process, at most.
const CLIENT_CACHE: usize = 16;

/// One blocking client per API and configuration in each process, so a
/// worker reuses its connections from task to task; at most
/// [`CLIENT_CACHE`] of them, the least recently used dropped (with its
/// connections), so whatever APIs and timeouts tasks name, descriptors and
/// memory stay bounded.
fn client(api: &str, config: ClientConfig) -> Result<BlockingClient, FetchError> {
    static CLIENTS: OnceLock<Mutex<std::collections::VecDeque<(String, BlockingClient)>>> = OnceLock::new();
    let key = format!("{api} {config:?}");
    let mut clients = concur::sync::lock(CLIENTS.get_or_init(Default::default));
    if let Some(at) = clients.iter().position(|(k, _)| *k == key) {
        let hit = clients.remove(at).map(|(_, c)| c);
        if let Some(c) = hit {
            clients.push_front((key, c.clone()));
            return Ok(c);
        }
    }
    let c = BlockingClient::new(api, config).map_err(|e| FetchError::Transport(e.to_string()))?;
    clients.push_front((key, c.clone()));
    clients.truncate(CLIENT_CACHE);
    CACHED.store(clients.len(), std::sync::atomic::Ordering::Relaxed);
    Ok(c)
}

/// Clients in the cache now (for tests and logs).
static CACHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The tasks a `rates` worker process can run; pass to `concur::worker_main`
/// at the top of `main` (add your own tasks with `.register`).
pub fn registry() -> concur::Registry {
    concur::Registry::new().register::<FetchOnce>().register::<FetchStamped>()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    #[test]
    fn a_bad_api_is_an_error_not_a_panic() {
        let task = FetchOnce {
            api: "nonsense".into(),
            config: ClientConfig::default(),
            request: RateRequest { base: crate::Currency::EUR, symbols: vec![], date: None },
        };
        assert!(matches!(task.run(), Err(FetchError::Transport(_))));
    }
    #[test]
    fn the_client_cache_stays_at_its_bound() {
        for i in 0..(3 * CLIENT_CACHE as u64) {
            let config = ClientConfig { timeout: Duration::from_millis(1000 + i), ..ClientConfig::default() };
            client("http://127.0.0.1:9", config).expect("a client");
            assert!(FetchOnce::cached_clients() <= CLIENT_CACHE);
        }
        assert_eq!(FetchOnce::cached_clients(), CLIENT_CACHE);
    }
    #[test]
    fn a_policy_allows_its_apis_only_and_caps_timeouts() {
        let policy = FetchPolicy { allow: vec!["http://a.test/".into()], max: ClientConfig::default() };
        let huge = ClientConfig { connect_timeout: Duration::MAX, timeout: Duration::from_secs(u64::MAX) };
        assert_eq!(policy.admit("http://a.test", huge), Ok(ClientConfig::default()));
        assert!(matches!(policy.admit("http://b.test", huge), Err(FetchError::Worker(m)) if m.contains("not allowed")));
        let any_port = FetchPolicy { allow: vec!["http://127.0.0.1:*".into()], max: ClientConfig::default() };
        assert!(any_port.admit("http://127.0.0.1:8080", huge).is_ok());
        for other in ["http://127.0.0.1", "http://127.0.0.10:80", "http://127.0.0.1:80/x", "http://127.0.0.1:80@evil"] {
            assert!(any_port.admit(other, huge).is_err(), "{other}");
        }
    }
    #[test]
    fn the_registry_knows_the_fetch_task() {
        assert!(registry().names().any(|n| n == FetchOnce::NAME));
        assert!(registry().names().any(|n| n == FetchStamped::NAME));
    }
}
