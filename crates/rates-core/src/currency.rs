//! `Currency`: a validated three-letter ISO 4217 code, stored inline.
//!
//! Every currency the chapter's program asks about (`USD`, `EUR`, `PLN`, ...)
//! passes through here first, so a typo is refused with the bad value named
//! before any request is made.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A currency code: exactly three ASCII letters, upper-case.
///
/// Parsing accepts lower-case input and upper-cases it (the API does the
/// same). Whether the code is one the dataset knows is a separate question,
/// answered by [`crate::Dataset::knows`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

/// A string that is not a three-letter currency code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid currency code '{0}': expected three letters such as USD")]
pub struct InvalidCurrency(pub String);

impl Currency {
    /// The euro, the ECB's reference currency.
    pub const EUR: Currency = Currency(*b"EUR");

    /// A code from three upper-case ASCII letters, for constants; the
    /// caller vouches for the letters.
    pub(crate) const fn from_upper(code: [u8; 3]) -> Currency {
        Currency(code)
    }

    /// The code as a `&str`.
    pub fn as_str(&self) -> &str {
        // The constructor only admits ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Parses a comma-separated list such as `USD,eur, PLN`, refusing
    /// duplicates and empty entries.
    pub fn parse_list(s: &str) -> Result<Vec<Currency>, InvalidCurrency> {
        let mut out: Vec<Currency> = Vec::new();
        for part in s.split(',') {
            let c: Currency = part.trim().parse()?;
            if out.contains(&c) {
                return Err(InvalidCurrency(format!("{c} (listed twice)")));
            }
            out.push(c);
        }
        Ok(out)
    }
}

impl FromStr for Currency {
    type Err = InvalidCurrency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            [a, b, c] if s.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Ok(Currency([a.to_ascii_uppercase(), b.to_ascii_uppercase(), c.to_ascii_uppercase()]))
            }
            _ => Err(InvalidCurrency(s.to_string())),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_uppercases() {
        assert_eq!("usd".parse::<Currency>().map(|c| c.to_string()), Ok("USD".into()));
        assert_eq!(Currency::EUR.as_str(), "EUR");
    }

    #[test]
    fn refuses_bad_codes() {
        for bad in ["", "US", "USDX", "U$D", "12A", "ÜSD"] {
            assert_eq!(bad.parse::<Currency>(), Err(InvalidCurrency(bad.into())), "{bad}");
        }
    }

    #[test]
    fn parses_lists() {
        let l = Currency::parse_list("USD, eur,PLN").expect("valid list");
        assert_eq!(l.iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["USD", "EUR", "PLN"]);
        assert!(Currency::parse_list("USD,,EUR").is_err());
        assert!(Currency::parse_list("USD,usd").is_err());
    }

    #[test]
    fn serde_round_trip() {
        let c: Currency = serde_json::from_str("\"nok\"").expect("valid json");
        assert_eq!(serde_json::to_string(&c).expect("serialises"), "\"NOK\"");
        assert!(serde_json::from_str::<Currency>("\"NOKK\"").is_err());
    }
}
