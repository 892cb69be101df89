//! One rate limit for every process on every host: [`RedisThrottle`], the
//! [`Throttle`](concur::Throttle)'s contract kept by a GCRA (generic cell
//! rate algorithm) in a Lua script on the broker, on the broker's own
//! clock.
//!
//! The script keeps one number per limit, the theoretical arrival time
//! (TAT) of the next grant, and reserves a slot per call: it reads Redis's
//! `TIME` (so the hosts' clocks do not matter), moves the TAT one interval
//! on, and answers how long the caller must wait for its slot. A script
//! runs atomically, so under any contention no two callers get one slot:
//! in any window `w`, at most `burst + rate·w` slots begin.

use std::time::Duration;

use super::{QueueError, connect};
use concur::throttle::Quota;
use concur::{CancelToken, Cancelled};

/// Reserves the next slot; answers `{wait_µs, slot_µs}` (the slot's start
/// on the broker's clock). `KEYS[1]` the limit's key, `ARGV[1]` the interval
/// between grants and `ARGV[2]` the burst.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local slot = new_tat - burst * interval
if slot < now then slot = now end
-- As an integer string: Lua would write a number this large in e-notation.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', math.ceil((new_tat - now) / 1000) + 1000))
return {slot - now, slot}
";

/// A token bucket shared by every process that names the same key on the
/// same broker: `rate` grants per second in bursts of up to `burst`,
/// counted on the broker's clock.
///
/// Each grant is one round trip to the broker (one script call); a caller
/// then sleeps, without the broker, until its slot. A caller that gives up
/// while waiting (its [`CancelToken`] is cancelled) does not give its slot
/// back: the limit still holds, a little capacity is lost.
pub struct RedisThrottle {
    con: std::sync::Mutex<Option<redis::Connection>>,
    client: redis::Client,
    key: String,
    interval_us: u64,
    burst: u32,
    script: redis::Script,
}

impl RedisThrottle {
    /// A limit of `quota` (a rate per second, in bursts), kept under `key`
    /// on the broker at `url`: every caller that gives the same key shares
    /// it. [`Keys::limit`](crate::Keys::limit) names a queue's limits.
    ///
    /// # Errors
    ///
    /// A bad URL, or a broker that cannot be reached.
    pub fn new(url: &str, key: &str, quota: Quota) -> Result<Self, QueueError> {
        let client = super::url::open(url)?;
        let con = super::url::reach(&client, url, Duration::from_secs(5))?;
        Ok(RedisThrottle {
            con: std::sync::Mutex::new(Some(con)),
            client,
            key: key.to_owned(),
            interval_us: ((1e6 / quota.rate()).round() as u64).max(1),
            burst: quota.burst(),
            script: redis::Script::new(GCRA),
        })
    }

    /// Reserves the next slot: how long to wait for it, and where it
    /// begins on the broker's clock (µs since the epoch).
    ///
    /// # Errors
    ///
    /// The broker cannot be reached (after one reconnection).
    pub fn reserve(&self) -> Result<(Duration, u64), QueueError> {
        let mut con = concur::sync::lock(&self.con);
        let mut last = None;
        for _ in 0..2 {
            let c = match con.as_mut() {
                Some(c) => c,
                None => match connect(&self.client, Duration::from_secs(5)) {
                    Ok(c) => con.insert(c),
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                },
            };
            match self.script.key(&self.key).arg(self.interval_us).arg(self.burst).invoke::<(i64, i64)>(c) {
                Ok((wait, slot)) => {
                    return Ok((Duration::from_micros(wait.max(0) as u64), slot.max(0) as u64));
                }
                Err(e) => {
                    *con = None;
                    last = Some(e);
                }
            }
        }
        Err(QueueError::Redis {
            what: "cannot take a grant".into(),
            source: last.unwrap_or_else(|| redis::RedisError::from(std::io::Error::other("no connection"))),
        })
    }

    /// Blocks until a grant, or until `cancel` is cancelled.
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if the token was cancelled first. A broker that cannot
    /// be reached grants nothing: the call waits an interval and tries
    /// again, until cancelled.
    pub fn acquire_cancellable(&self, cancel: &CancelToken) -> Result<(), Cancelled> {
        loop {
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            match self.reserve() {
                Ok((wait, _)) => {
                    return if wait.is_zero() || !cancel.sleep(wait) { Ok(()) } else { Err(Cancelled) };
                }
                Err(_) => {
                    cancel.sleep(Duration::from_micros(self.interval_us).max(Duration::from_millis(100)));
                }
            }
        }
    }
}

impl std::fmt::Debug for RedisThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisThrottle")
            .field("key", &self.key)
            .field("interval_us", &self.interval_us)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}
