//! Limits that tune themselves from what the server's answers say: a
//! request rate ([`AdaptiveRate`]) learnt from 429s, `Retry-After` and
//! rate-limit headers, and a limit on requests in flight
//! ([`AdaptiveConcurrency`]) learnt from latency and timeouts. The two are
//! independent: use either alone, or both (a permit, then a token).

mod concurrency;
#[cfg(test)]
mod proptests;
mod rate;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use concurrency::{AdaptiveConcurrency, ConcurrencyConfig, LimitChange, Permit};
pub use rate::{AdaptiveRate, RateChange, RateConfig, RateSignal};
