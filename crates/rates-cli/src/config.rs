//! The validated configuration of a run, built once from the raw
//! [`crate::flags`] before any work: every value a run uses has been checked
//! here, with a one-line [`Usage`] error naming the flag and the bad value.
//! The subcommands take a [`RunConfig`] and never look at a flag again.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use concur::Throttle;
use concur::throttle::Quota;
use rates_core::{ClientConfig, RetryPolicy};
use rates_server::{ConnLimits, PUBLIC_LIMIT, ServerOptions, Timer};

use crate::Usage;
use crate::flags::{ClientFlags, ConnFlags, FaultFlags, SimFlags};
use crate::parse::{RateArg, WorkersArg};

/// `rate` per second in bursts of `burst`; `flag` names the option in the
/// error.
pub(crate) fn quota(flag: &str, rate: f64, burst: NonZeroU32) -> Result<Quota, Usage> {
    Quota::new(rate, burst.get()).map_err(|e| Usage(format!("{flag}: {e}")))
}

/// A throttle of `quota`, shared by every worker of a run. A token
/// interval of margin after each burst: the server's clock, not only ours,
/// then sees the limit kept (see `Throttle::with_margin`).
pub(crate) fn throttle(quota: Quota) -> Arc<Throttle> {
    Arc::new(Throttle::of(quota).with_margin(quota.interval()))
}

/// Where a run's requests go.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// An API at this (checked) base URL.
    Remote(String),
    /// The embedded server, with these simulated faults.
    Embedded(ServerOptions),
}

/// What differs between the subcommands that share the client flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    /// Retries when `--retries` is not given.
    pub retries: u32,
    /// The embedded server's latency when `--sim-latency` is not given.
    pub sim_latency: Duration,
    /// Whether the command can run its requests on a queue (`--queue`).
    pub queue: bool,
}

impl Defaults {
    /// `fetch` and `history`: a realistic network, and retries.
    pub const FETCH: Defaults = Defaults { retries: 3, sim_latency: Duration::from_millis(100), queue: true };
    /// `bench`: every attempt counted, a short latency.
    pub const BENCH: Defaults = Defaults { retries: 0, sim_latency: Duration::from_millis(20), queue: true };
}

/// Everything a run of requests is made with, checked.
#[derive(Debug, Clone)]
pub(crate) struct RunConfig {
    pub target: Target,
    pub client: ClientConfig,
    pub retry: RetryPolicy,
    pub throttle: Option<Quota>,
    /// `--rate auto`: the rate is learnt from the answers, starting from
    /// `--burst` at once.
    pub auto_rate: Option<NonZeroU32>,
    /// The queue whose workers run the requests, if any.
    pub queue: Option<String>,
    /// The requests in flight at once (`--workers`).
    pub workers: WorkersArg,
}

impl RunConfig {
    /// Checks the client and simulation flags and `--workers` together.
    pub fn new(client: &ClientFlags, sim: &SimFlags, workers: WorkersArg, defaults: Defaults) -> Result<Self, Usage> {
        let target = match &client.api {
            Some(api) => Target::Remote(rates_core::parse_api_url(api).map_err(|e| Usage(e.to_string()))?),
            None => Target::Embedded(sim_options(sim, defaults)?),
        };
        let queue = crate::queue_url::of_client(client)?;
        let (throttle, auto_rate) = match client.rate {
            Some(RateArg::Fixed(r)) => (Some(quota("--rate", r, client.burst)?), None),
            Some(RateArg::Auto) if queue.is_some() => {
                return Err(Usage(
                    "--rate auto: not with --queue, whose limit is kept on the broker; give a rate".into(),
                ));
            }
            Some(RateArg::Auto) => (None, Some(client.burst)),
            None => (None, None),
        };
        if queue.is_some() && !defaults.queue {
            return Err(Usage("--queue: this command does not run on a queue yet".into()));
        }
        // `auto` learns a bound from the answers' latency in this process,
        // which a queue's workers on other hosts cannot share.
        if workers == WorkersArg::Auto && queue.is_some() {
            return Err(Usage("--workers auto: not with --queue; give the requests in flight as a number".into()));
        }
        Ok(RunConfig {
            target,
            client: ClientConfig { timeout: client.timeout, ..ClientConfig::default() },
            retry: RetryPolicy { retries: client.retries.unwrap_or(defaults.retries), ..RetryPolicy::default() },
            throttle,
            auto_rate,
            queue,
            workers,
        })
    }

    /// The embedded server's options, if the run uses it.
    pub fn embedded(&self) -> Option<&ServerOptions> {
        match &self.target {
            Target::Embedded(o) => Some(o),
            Target::Remote(_) => None,
        }
    }
}

/// The embedded server's options from the `--sim-*` flags.
fn sim_options(sim: &SimFlags, defaults: Defaults) -> Result<ServerOptions, Usage> {
    let rate_limit = if sim.sim_public {
        Some(PUBLIC_LIMIT)
    } else {
        sim.sim_rate_limit.map(|r| quota("--sim-rate-limit", r, sim.sim_burst)).transpose()?
    };
    checked(ServerOptions {
        latency: sim.sim_latency.unwrap_or(defaults.sim_latency),
        jitter: sim.sim_jitter,
        fail_rate: sim.sim_fail_rate,
        rate_limit,
        rate_limit_headers: sim.sim_rate_limit_headers,
        capacity: sim.sim_capacity,
        // Only this process's own client connects, and "unlimited" workers
        // must mean every request in flight at once, not the cap's worth.
        limits: ConnLimits { max_connections: EMBEDDED_MAX_CONNECTIONS, ..ConnLimits::default() },
        timer: Timer::Precise,
    })
}

/// The embedded server's connection cap: the most the server allows.
const EMBEDDED_MAX_CONNECTIONS: usize = 1 << 20;

/// `rates serve`'s options from its fault flags.
pub(crate) fn serve_options(faults: &FaultFlags, conn: &ConnFlags) -> Result<ServerOptions, Usage> {
    let rate_limit = if faults.public {
        Some(PUBLIC_LIMIT)
    } else {
        faults.rate_limit.map(|r| quota("--rate-limit", r, faults.burst)).transpose()?
    };
    checked(ServerOptions {
        latency: faults.latency,
        jitter: faults.jitter,
        fail_rate: faults.fail_rate,
        rate_limit,
        rate_limit_headers: faults.rate_limit_headers,
        capacity: faults.capacity,
        limits: ConnLimits {
            header_timeout: conn.header_timeout,
            idle_timeout: conn.idle_timeout,
            max_connections: conn.max_connections,
        },
        timer: Timer::Precise,
    })
}

fn checked(options: ServerOptions) -> Result<ServerOptions, Usage> {
    options.validate().map_err(|e| Usage(e.to_string()))?;
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The run configuration of `rates fetch ARGS`.
    fn fetch(args: &[&str]) -> Result<RunConfig, Usage> {
        let cli = crate::Cli::try_parse_from([&["rates", "fetch"], args].concat()).expect("valid syntax");
        match cli.command {
            crate::Command::Fetch(f) => RunConfig::new(&f.client, &f.sim, f.workers, Defaults::FETCH),
            other => panic!("not fetch: {other:?}"),
        }
    }

    #[test]
    fn defaults_differ_by_command_only_where_said() {
        let c = fetch(&[]).expect("valid");
        assert_eq!(c.retry.retries, 3);
        assert_eq!(c.embedded().map(|o| o.latency), Some(Duration::from_millis(100)));
        assert!(c.throttle.is_none());
        let c = fetch(&["--retries", "0", "--sim-latency", "5ms", "--rate", "2", "--burst", "4"]).expect("valid");
        assert_eq!(c.retry.retries, 0);
        assert_eq!(c.embedded().map(|o| o.latency), Some(Duration::from_millis(5)));
        assert_eq!(c.throttle.map(|q| (q.rate(), q.burst())), Some((2.0, 4)));
    }

    #[test]
    fn auto_settings_are_refused_on_a_queue_only() {
        let c = fetch(&["--rate", "auto", "--burst", "3"]).expect("valid");
        assert_eq!(c.auto_rate.map(NonZeroU32::get), Some(3));
        assert!(c.throttle.is_none());
        assert_eq!(fetch(&["--workers", "auto"]).expect("valid").workers, WorkersArg::Auto);
        let e = fetch(&["--rate", "auto", "--queue", "redis://127.0.0.1:6379/0"]).expect_err("auto on a queue");
        assert!(e.0.starts_with("--rate auto:"), "{e}");
        let c = fetch(&["--queue", "redis://127.0.0.1:6379/0", "--workers", "3"]).expect("valid");
        assert_eq!(c.workers, WorkersArg::Fixed(rates_core::Workers::bounded(3).expect("not zero")));
        let e = fetch(&["--queue", "redis://127.0.0.1:6379/0", "--workers", "auto"]).expect_err("auto on a queue");
        assert!(e.0.starts_with("--workers auto:"), "{e}");
    }

    #[test]
    fn a_remote_api_is_checked_and_has_no_embedded_server() {
        let c = fetch(&["--api", "http://127.0.0.1:8080/"]).expect("valid");
        assert!(matches!(&c.target, Target::Remote(u) if u == "http://127.0.0.1:8080"));
        let e = fetch(&["--api", "http://127.0.0.1:99999"]).expect_err("bad port");
        assert!(e.0.contains("'http://127.0.0.1:99999'"), "{e}");
    }

    #[test]
    fn a_queue_url_is_checked() {
        let c = fetch(&["--queue", "redis://127.0.0.1:6379/0"]).expect("valid");
        assert_eq!(c.queue.as_deref(), Some("redis://127.0.0.1:6379/0"));
        assert!(fetch(&[]).expect("valid").queue.is_none());
        for bad in ["127.0.0.1:6379", "http://x", "redis://", "redis:///0"] {
            let e = fetch(&["--queue", bad]).expect_err("bad URL");
            assert!(e.0.starts_with("--queue: invalid URL"), "{e}");
        }
    }

    #[test]
    fn quotas_cannot_hold_a_bad_rate() {
        let one = NonZeroU32::MIN;
        assert!(quota("--rate", 2.0, one).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300] {
            let e = quota("--rate", bad, one).expect_err("bad rate");
            assert!(e.0.starts_with("--rate: invalid rate"), "{e}");
        }
    }

    #[test]
    fn capacities_are_numbers_once_parsed() {
        let c = fetch(&["--sim-capacity", "8"]).expect("valid");
        assert_eq!(c.embedded().and_then(|o| o.capacity), Some(8));
    }
}
