//! The exchange-rates domain of the chapter's application: currencies, the
//! ECB dataset, the API types, the clients, the retry policy, the fetch
//! models and the presentation of results.
//!
//! ```
//! use rates_core::{Currency, Dataset};
//!
//! let ds = Dataset::embedded();
//! let usd: Currency = "USD".parse().unwrap();
//! let pln: Currency = "pln".parse().unwrap();
//! let day = rates_core::parse_date("2018-10-12").unwrap();
//! let r = ds.rates(usd, &[pln], Some(day)).unwrap();
//! assert_eq!(r.rates[&pln], 3.709694);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod client;
mod currency;
mod dataset;
pub mod models;
mod names;
pub mod present;
mod retry;
pub mod store;
mod supported;
#[cfg(test)]
mod test_server;
pub mod trace;

pub use api::{DateError, RateRequest, Rates, parse_date};
pub use client::{
    AsyncClient, AsyncClientError, BadUrl, BlockingClient, ClientConfig, FetchError, PUBLIC_API, RateLimitInfo, Reply,
    parse_api_url,
};
pub use currency::{Currency, InvalidCurrency};
pub use dataset::{Dataset, DatasetError, RatesError, round6};
pub use models::{Fetcher, Model, Outcome, Progress, Workers};
pub use retry::{Failure, RetryPolicy};
pub use store::{Store, StoreError};
pub use supported::{CURRENCIES_JSON, SUPPORTED, is_supported, supported_code};
pub use trace::Trace;

/// The chapter's five currencies, used as bases and as symbols by default.
pub const CHAPTER_CURRENCIES: &str = "USD,EUR,PLN,NOK,CZK";
