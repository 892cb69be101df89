//! What a server says about its rate limit in an answer's headers, read
//! into a [`RateLimitInfo`]: the IETF fields of
//! `draft-ietf-httpapi-ratelimit-headers-10` (`RateLimit-Policy`,
//! `RateLimit`), else the common `X-RateLimit-Limit/Remaining/Reset`.
//! Anything malformed is ignored, never a panic: a server's headers are
//! hints, and a client without them probes as it would anyway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What a server said about its rate limit in one answer's headers.
///
/// A client that sends `limit` requests per `window` stays within the
/// limit the server advertised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimitInfo {
    /// Requests allowed per window (at least 1).
    pub limit: u32,
    /// The window (at least a second for the `X-RateLimit-*` fields; see
    /// [`RateLimitInfo::from_headers`]).
    pub window: Duration,
    /// Requests left now, if the server said.
    pub remaining: Option<u32>,
    /// Until more requests are allowed (`RateLimit`'s `t`) or the quota is
    /// whole again (`X-RateLimit-Reset`), if the server said.
    pub reset: Option<Duration>,
    /// The bucket's size (`X-RateLimit-Burst`, as vatcomply sends on its
    /// 429s beside `X-RateLimit-Limit`, its requests per second), if the
    /// server said.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// The integer values structured fields allow (RFC 9651): at most 15 digits.
const SF_INTEGER_DIGITS: usize = 15;

/// `X-RateLimit-Reset` values above this are Unix timestamps (GitHub's
/// style): a billion seconds is 31 years, no window's length.
const TIMESTAMP_ABOVE: f64 = 1e9;

impl RateLimitInfo {
    /// From headers looked up by lower-case name; IETF fields preferred,
    /// `X-RateLimit-*` otherwise; `None` if absent or malformed (never a
    /// panic).
    ///
    /// - IETF: `RateLimit-Policy: "default";q=5;w=1` gives the limit `q`
    ///   per `w` seconds (a name may be a string or a token; of several
    ///   policies, the one with the lowest `q/w`); `RateLimit:
    ///   "default";r=4;t=1`, the item of the same name (or the only one),
    ///   gives `remaining` from `r` and `reset` from `t`. A policy without
    ///   `w` takes its window from `t`, else one second. A policy with
    ///   `q=0` or `w=0` is malformed (a client could not pace by it).
    /// - Otherwise `X-RateLimit-Limit` (its leading integer; a `w=`
    ///   parameter, as some servers add, is the window), with
    ///   `X-RateLimit-Remaining` and `X-RateLimit-Reset`: seconds, or above
    ///   10⁹ a Unix timestamp. Without a `w=`, the window is the reset if
    ///   there is one and it is at least a second, else one second: a
    ///   fixed-window quota is whole again by then, so `limit` per `reset`
    ///   is the rate that spends what is left of it no faster than the
    ///   window allows when the window has just begun.
    ///
    /// Values that do not fit (`u32` counts, seconds as a [`Duration`])
    /// are malformed.
    ///
    /// ```
    /// use rates_core::RateLimitInfo;
    ///
    /// let headers = [("ratelimit-policy", "\"default\";q=5;w=1"), ("ratelimit", "\"default\";r=4;t=1")];
    /// let info = RateLimitInfo::from_headers(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v));
    /// // 5 requests a second; 4 left, one more in a second.
    /// assert_eq!(info.map(|i| (i.limit, i.window.as_secs(), i.remaining)), Some((5, 1, Some(4))));
    /// ```
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        Self::from_headers_at(get, SystemTime::now())
    }

    /// [`from_headers`](Self::from_headers) with the time now, for the Unix
    /// timestamps of `X-RateLimit-Reset`.
    fn from_headers_at<'a>(get: impl Fn(&str) -> Option<&'a str>, now: SystemTime) -> Option<Self> {
        let mut info = match get("ratelimit-policy").and_then(|policy| ietf(policy, get("ratelimit"))) {
            Some(info) => info,
            None => {
                let mut info =
                    legacy(get("x-ratelimit-limit")?, get("x-ratelimit-remaining"), get("x-ratelimit-reset"), now)?;
                info.burst = get("x-ratelimit-burst")
                    .and_then(|b| integer(b.trim()))
                    .and_then(|b| u32::try_from(b).ok())
                    .filter(|&b| b > 0);
                info
            }
        };
        // A reset is a wait the server asks for: no longer than a
        // `Retry-After` is taken at, whatever it says.
        info.reset = info.reset.map(|r| r.min(super::MAX_RETRY_AFTER));
        Some(info)
    }
}

/// The IETF fields: the most restrictive policy, and its current state.
fn ietf(policy: &str, state: Option<&str>) -> Option<RateLimitInfo> {
    let policies = members(policy)?;
    // A malformed `RateLimit` is ignored on its own (the draft's rule).
    let states = state.and_then(members).unwrap_or_default();
    let state_of = |name: &str| {
        states.iter().find(|s| s.name == name).or(match (policies.len(), states.len()) {
            (1, 1) => states.first(),
            _ => None,
        })
    };
    let mut best: Option<RateLimitInfo> = None;
    for p in &policies {
        let limit = u32::try_from(p.param("q")?).ok().filter(|&q| q > 0)?;
        let s = state_of(p.name);
        let reset = s.and_then(|s| s.param("t")).map(Duration::from_secs);
        let window = match p.param_raw("w") {
            Some(w) => Duration::from_secs(integer(w).filter(|&w| w > 0)?),
            None => reset.filter(|t| *t >= Duration::from_secs(1)).unwrap_or(Duration::from_secs(1)),
        };
        let remaining = s.and_then(|s| s.param("r")).and_then(|r| u32::try_from(r).ok());
        let info = RateLimitInfo { limit, window, remaining, reset, burst: None };
        // limit/window below the best's, without rounding.
        let slower = |b: &RateLimitInfo| {
            u128::from(info.limit) * b.window.as_nanos() < u128::from(b.limit) * info.window.as_nanos()
        };
        if best.as_ref().is_none_or(slower) {
            best = Some(info);
        }
    }
    best
}

/// The `X-RateLimit-*` fields.
fn legacy(limit: &str, remaining: Option<&str>, reset: Option<&str>, now: SystemTime) -> Option<RateLimitInfo> {
    let mut elements = limit.split(',');
    let first = elements.next()?;
    let count = first.split(';').next()?;
    let limit = u32::try_from(integer(count.trim())?).ok().filter(|&l| l > 0)?;
    // `20;w=60`, or `20, 20;w=60`: a window given with the limit.
    let window = std::iter::once(first)
        .chain(elements)
        .flat_map(|e| e.split(';').skip(1))
        .find_map(|p| p.trim().strip_prefix("w="))
        .and_then(integer)
        .filter(|&w| w > 0)
        .map(Duration::from_secs);
    let remaining = remaining.and_then(|r| integer(r.trim())).and_then(|r| u32::try_from(r).ok());
    let reset = reset.and_then(|r| reset_after(r.trim(), now));
    let window = window.or(reset.filter(|r| *r >= Duration::from_secs(1))).unwrap_or(Duration::from_secs(1));
    Some(RateLimitInfo { limit, window, remaining, reset, burst: None })
}

/// `X-RateLimit-Reset`: seconds from now, or a Unix timestamp (a reset in
/// the past is now).
fn reset_after(value: &str, now: SystemTime) -> Option<Duration> {
    // Digits and at most one point: no sign, exponent, `inf` or `NaN`.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = value.parse().ok()?;
    if secs > TIMESTAMP_ABOVE {
        let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        Duration::try_from_secs_f64((secs - now).max(0.0)).ok()
    } else {
        Duration::try_from_secs_f64(secs).ok()
    }
}

/// A non-negative structured-field integer: 1 to 15 digits.
fn integer(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > SF_INTEGER_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One member of a structured-field list: `"name";k=v;k2=v2` (or `name;...`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Member<'a> {
    name: &'a str,
    params: &'a str,
}

impl<'a> Member<'a> {
    /// The raw value of parameter `key`.
    fn param_raw(&self, key: &str) -> Option<&'a str> {
        self.params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim() == key).then(|| v.trim())
        })
    }

    /// Parameter `key` as a non-negative integer; `None` if absent or not one.
    fn param(&self, key: &str) -> Option<u64> {
        integer(self.param_raw(key)?)
    }
}

/// The members of a structured-field list, or `None` if one is malformed
/// (an unterminated string, an empty member).
fn members(field: &str) -> Option<Vec<Member<'_>>> {
    let mut out = Vec::new();
    let mut rest = field.trim_start();
    while !rest.is_empty() {
        let (name, after) = match rest.strip_prefix('"') {
            Some(quoted) => {
                let end = closing_quote(quoted)?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => {
                let end = rest.find([';', ',']).unwrap_or(rest.len());
                (rest[..end].trim_end(), &rest[end..])
            }
        };
        if name.is_empty() && !rest.starts_with('"') {
            return None;
        }
        // Parameters run to the next comma (values here are integers and
        // tokens, which hold none).
        let end = after.find(',').unwrap_or(after.len());
        let params = &after[..end];
        if !(params.trim().is_empty() || params.trim_start().starts_with(';')) {
            return None;
        }
        out.push(Member { name, params });
        rest = after[end..].strip_prefix(',').unwrap_or("").trim_start();
    }
    (!out.is_empty()).then_some(out)
}

/// Where the string that `s` is the inside of ends: the first `"` not
/// escaped by a backslash.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A fixed time now, for the Unix timestamps.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn parse(headers: &[(&str, &str)]) -> Option<RateLimitInfo> {
        let map: HashMap<&str, &str> = headers.iter().copied().collect();
        RateLimitInfo::from_headers_at(|name| map.get(name).copied(), now())
    }

    fn info(limit: u32, window: u64, remaining: Option<u32>, reset: Option<u64>) -> RateLimitInfo {
        RateLimitInfo {
            limit,
            window: Duration::from_secs(window),
            remaining,
            reset: reset.map(Duration::from_secs),
            burst: None,
        }
    }

    #[test]
    fn ietf_fields() {
        // As the project's server sends them.
        let ours = [("ratelimit-policy", "\"default\";q=5;w=1"), ("ratelimit", "\"default\";r=4;t=1")];
        assert_eq!(parse(&ours), Some(info(5, 1, Some(4), Some(1))));
        // Tokens as names (earlier drafts), spaces after commas and around.
        let tokens = [("ratelimit-policy", " burst;q=100;w=60 , daily;q=1000;w=86400"), ("ratelimit", "daily;r=10")];
        // The daily policy is the slower: 1000/86400 s < 100/60 s.
        assert_eq!(parse(&tokens), Some(info(1000, 86_400, Some(10), None)));
        // A state of another name is not the policy's...
        let other = [("ratelimit-policy", "\"a\";q=10;w=2, \"b\";q=100;w=1"), ("ratelimit", "\"b\";r=1;t=1")];
        assert_eq!(parse(&other), Some(info(10, 2, None, None)));
        // ...unless both fields name one policy each.
        let renamed = [("ratelimit-policy", "\"a\";q=10;w=2"), ("ratelimit", "\"b\";r=3;t=1")];
        assert_eq!(parse(&renamed), Some(info(10, 2, Some(3), Some(1))));
        // No window: the reset's, else a second. Extra parameters are comments.
        let no_w = [("ratelimit-policy", "\"default\";q=10;qu=\"request\""), ("ratelimit", "\"default\";r=2;t=5")];
        assert_eq!(parse(&no_w), Some(info(10, 5, Some(2), Some(5))));
        assert_eq!(parse(&[("ratelimit-policy", "\"default\";q=10")]), Some(info(10, 1, None, None)));
        // A name with an escaped quote and a comma.
        let odd = [("ratelimit-policy", r#""a\",b";q=3;w=3"#), ("ratelimit", r#""a\",b";r=0;t=2"#)];
        assert_eq!(parse(&odd), Some(info(3, 3, Some(0), Some(2))));
    }

    #[test]
    fn ietf_preferred_to_x_fields() {
        let both =
            [("ratelimit-policy", "\"default\";q=4;w=2"), ("x-ratelimit-limit", "99"), ("x-ratelimit-remaining", "98")];
        assert_eq!(parse(&both), Some(info(4, 2, None, None)));
        // A malformed policy falls back to them.
        let bad_policy = [("ratelimit-policy", "\"default\";q=x"), ("x-ratelimit-limit", "99")];
        assert_eq!(parse(&bad_policy), Some(info(99, 1, None, None)));
    }

    #[test]
    fn vatcomply_429_fields() {
        // Its 429: requests per second and the bucket's size, nothing else.
        let vatcomply = [("x-ratelimit-limit", "2"), ("x-ratelimit-burst", "4"), ("retry-after", "1")];
        assert_eq!(parse(&vatcomply), Some(RateLimitInfo { burst: Some(4), ..info(2, 1, None, None) }));
        for bad in ["0", "-4", "x", "99999999999", ""] {
            let got = parse(&[("x-ratelimit-limit", "2"), ("x-ratelimit-burst", bad)]);
            assert_eq!(got, Some(info(2, 1, None, None)), "burst {bad:?} is ignored");
        }
        assert_eq!(parse(&[("x-ratelimit-burst", "4")]), None, "a burst without a limit");
    }

    #[test]
    fn x_fields() {
        let x = [("x-ratelimit-limit", "60"), ("x-ratelimit-remaining", "59"), ("x-ratelimit-reset", "30")];
        assert_eq!(parse(&x), Some(info(60, 30, Some(59), Some(30))));
        // No reset: a one-second window; a short reset: still a second.
        assert_eq!(parse(&[("x-ratelimit-limit", "5")]), Some(info(5, 1, None, None)));
        let short = [("x-ratelimit-limit", "5"), ("x-ratelimit-reset", "0.5")];
        let got = parse(&short).expect("valid");
        assert_eq!((got.window, got.reset), (Duration::from_secs(1), Some(Duration::from_millis(500))));
        // GitHub's Unix timestamp: 40 minutes from now.
        let github =
            [("x-ratelimit-limit", "5000"), ("x-ratelimit-remaining", "4999"), ("x-ratelimit-reset", "1700002400")];
        assert_eq!(parse(&github), Some(info(5000, 2400, Some(4999), Some(2400))));
        // A timestamp in the past: reset now.
        let past = [("x-ratelimit-limit", "10"), ("x-ratelimit-reset", "1600000000")];
        assert_eq!(parse(&past), Some(info(10, 1, None, Some(0))));
        // A window given with the limit.
        assert_eq!(parse(&[("x-ratelimit-limit", "20, 20;w=60")]), Some(info(20, 60, None, None)));
        assert_eq!(parse(&[("x-ratelimit-limit", "20;w=60")]), Some(info(20, 60, None, None)));
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[("ratelimit", "\"default\";r=4;t=1")]), None, "a state without a policy");
        assert_eq!(parse(&[("x-ratelimit-remaining", "4")]), None, "no limit");
        for policy in [
            "",
            "\"default\"",
            "\"default\";w=1",
            "\"default;q=5;w=1",
            "\"default\";q=0;w=1",
            "\"default\";q=5;w=0",
            "\"default\";q=-5;w=1",
            "\"default\";q=5;w=-1",
            "\"default\";q=5.5;w=1",
            "\"default\" junk;q=5",
            ",",
            ";q=5",
        ] {
            assert_eq!(parse(&[("ratelimit-policy", policy)]), None, "{policy:?}");
        }
        for limit in ["", "0", "-1", "x", "1e3", "5.0", " ", ";w=1"] {
            assert_eq!(parse(&[("x-ratelimit-limit", limit)]), None, "{limit:?}");
        }
        // A bad companion field is ignored on its own.
        let bad_state = [("ratelimit-policy", "\"default\";q=5;w=1"), ("ratelimit", "\"default;r=1")];
        assert_eq!(parse(&bad_state), Some(info(5, 1, None, None)));
        let bad_rest = [("x-ratelimit-limit", "5"), ("x-ratelimit-remaining", "-1"), ("x-ratelimit-reset", "-3")];
        assert_eq!(parse(&bad_rest), Some(info(5, 1, None, None)));
        for reset in ["inf", "NaN", "1e5", "", "1.2.3", "+3"] {
            let got = parse(&[("x-ratelimit-limit", "5"), ("x-ratelimit-reset", reset)]);
            assert_eq!(got, Some(info(5, 1, None, None)), "{reset:?}");
        }
    }

    #[test]
    fn huge_numbers() {
        // Beyond u32: malformed, not wrapped or saturated.
        assert_eq!(parse(&[("ratelimit-policy", "\"d\";q=4294967296;w=1")]), None);
        assert_eq!(parse(&[("ratelimit-policy", "\"d\";q=4294967295;w=1")]), Some(info(u32::MAX, 1, None, None)));
        // Beyond the 15 digits of a structured-field integer.
        assert_eq!(parse(&[("ratelimit-policy", "\"d\";q=5;w=1000000000000000")]), None);
        let w = 999_999_999_999_999;
        assert_eq!(parse(&[("ratelimit-policy", &format!("\"d\";q=5;w={w}"))]), Some(info(5, w, None, None)));
        assert_eq!(parse(&[("x-ratelimit-limit", "99999999999999999999")]), None);
        // A reset of 31 years (or a timestamp 3,000 years away) is capped at an hour.
        for far in ["999999999", "99999999999"] {
            let got = parse(&[("x-ratelimit-limit", "5"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", far)]);
            assert_eq!(got.and_then(|i| i.reset), Some(Duration::from_secs(3600)), "{far}");
        }
        let ietf = [("ratelimit-policy", "\"default\";q=5;w=1"), ("ratelimit", "\"default\";r=0;t=999999999")];
        assert_eq!(parse(&ietf).and_then(|i| i.reset), Some(Duration::from_secs(3600)));
        let big_reset = [("x-ratelimit-limit", "5"), ("x-ratelimit-reset", &"9".repeat(400))];
        assert_eq!(parse(&big_reset), Some(info(5, 1, None, None)), "too far to be a duration");
        let big_remaining = [("x-ratelimit-limit", "5"), ("x-ratelimit-remaining", "4294967296")];
        assert_eq!(parse(&big_remaining), Some(info(5, 1, None, None)));
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(
            policy in proptest::option::of(".{0,40}"),
            state in proptest::option::of("[\"a-z0-9;=,. \\\\-]{0,40}"),
            limit in proptest::option::of(".{0,20}"),
            remaining in proptest::option::of("[0-9.e-]{0,25}"),
            reset in proptest::option::of("[0-9.eE+-]{0,400}"),
        ) {
            let mut headers = Vec::new();
            for (name, value) in [
                ("ratelimit-policy", &policy),
                ("ratelimit", &state),
                ("x-ratelimit-limit", &limit),
                ("x-ratelimit-remaining", &remaining),
                ("x-ratelimit-reset", &reset),
            ] {
                if let Some(v) = value {
                    headers.push((name, v.as_str()));
                }
            }
            if let Some(i) = parse(&headers) {
                prop_assert!(i.limit > 0 && i.window > Duration::ZERO);
            }
        }

        #[test]
        fn well_formed_policies_read_back(q in 1u32.., w in 1u64..=999_999_999_999_999, r in any::<u32>(), t in 0u64..1_000_000) {
            let policy = format!("\"default\";q={q};w={w}");
            let state = format!("\"default\";r={r};t={t}");
            let got = parse(&[("ratelimit-policy", &policy), ("ratelimit", &state)]);
            prop_assert_eq!(got, Some(info(q, w, Some(r), Some(t.min(3600)))));
        }
    }
}
