//! The multiprocessing models: `process-pool` (the chapter's process pools
//! listing) and `dummy-pool` (`multiprocessing.dummy`: the same code over a
//! thread pool with the identical interface). Both are one generic function
//! over `concur::Pool`; only the line that builds the pool differs.
//!
//! Every attempt is a [`FetchOnce`] task run on the pool, while the throttle
//! and the retry policy stay in this process: `workers` dispatcher threads
//! each drive one item at a time through them, so `--rate` holds across all
//! worker processes and retries are throttled like first attempts.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use concur::{Pool, ProcessPool, Task, ThreadPool};
use serde::{Deserialize, Serialize};

use super::{Fetcher, Outcome, threads::two_way_queues, worker_failure};
use crate::{BlockingClient, ClientConfig, FetchError, RateRequest, Rates};

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
    type Output = Result<Rates, FetchError>;
    const NAME: &'static str = "rates::FetchOnce";

    fn run(self) -> Self::Output {
        client(&self.api, self.config)?.fetch(&self.request)
    }
}

/// One blocking client per API and configuration in each process, so a
/// worker reuses its connections from task to task.
fn client(api: &str, config: ClientConfig) -> Result<BlockingClient, FetchError> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, BlockingClient>>> = OnceLock::new();
    let key = format!("{api} {config:?}");
    let mut clients = CLIENTS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let c = BlockingClient::new(api, config).map_err(|e| FetchError::Transport(e.to_string()))?;
    clients.insert(key, c.clone());
    Ok(c)
}

/// The tasks a `rates` worker process can run; pass to `concur::worker_main`
/// at the top of `main` (add your own tasks with `.register`).
pub fn registry() -> concur::Registry {
    concur::Registry::new().register::<FetchOnce>()
}

/// `process-pool`: `workers` worker processes.
pub(super) fn process_pool(fetcher: &Fetcher, requests: &[RateRequest], workers: usize) -> Vec<Outcome> {
    let mut builder = ProcessPool::builder().size(workers);
    if let Some(program) = fetcher.worker_program() {
        builder = builder.program(program);
    }
    match builder.build() {
        Ok(pool) => on_pool(&pool, fetcher, requests, workers),
        Err(e) => requests.iter().map(|_| Err(worker_failure(format!("cannot start worker processes: {e}")))).collect(),
    }
}

/// `dummy-pool`: the same code over `workers` threads.
pub(super) fn dummy_pool(fetcher: &Fetcher, requests: &[RateRequest], workers: usize) -> Vec<Outcome> {
    match ThreadPool::new(workers) {
        Ok(pool) => on_pool(&pool, fetcher, requests, workers),
        Err(e) => requests.iter().map(|_| Err(worker_failure(e.to_string()))).collect(),
    }
}

/// Fetches every request on `pool`: one generic function for threads and
/// processes alike.
fn on_pool(pool: &(impl Pool + Sync), fetcher: &Fetcher, requests: &[RateRequest], workers: usize) -> Vec<Outcome> {
    let (api, config) = (fetcher.api().to_string(), fetcher.config());
    two_way_queues(requests, workers, |req| {
        fetcher.fetch_with(|| {
            let task = FetchOnce { api: api.clone(), config, request: req.clone() };
            pool.apply_async(task).wait().unwrap_or_else(|e| Err(FetchError::Worker(e.to_string())))
        })
    })
}

#[cfg(test)]
mod tests {
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
    fn the_registry_knows_the_fetch_task() {
        assert!(registry().names().any(|n| n == FetchOnce::NAME));
    }
}
