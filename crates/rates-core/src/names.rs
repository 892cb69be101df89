//! English names of the currencies the ECB has published, for `/currencies`.

use crate::Currency;

const NAMES: &[(&str, &str)] = &[
    ("AUD", "Australian Dollar"),
    ("BGN", "Bulgarian Lev"),
    ("BRL", "Brazilian Real"),
    ("CAD", "Canadian Dollar"),
    ("CHF", "Swiss Franc"),
    ("CNY", "Chinese Yuan"),
    ("CYP", "Cypriot Pound"),
    ("CZK", "Czech Koruna"),
    ("DKK", "Danish Krone"),
    ("EEK", "Estonian Kroon"),
    ("EUR", "Euro"),
    ("GBP", "British Pound"),
    ("HKD", "Hong Kong Dollar"),
    ("HRK", "Croatian Kuna"),
    ("HUF", "Hungarian Forint"),
    ("IDR", "Indonesian Rupiah"),
    ("ILS", "Israeli New Shekel"),
    ("INR", "Indian Rupee"),
    ("ISK", "Icelandic Krona"),
    ("JPY", "Japanese Yen"),
    ("KRW", "South Korean Won"),
    ("LTL", "Lithuanian Litas"),
    ("LVL", "Latvian Lats"),
    ("MTL", "Maltese Lira"),
    ("MXN", "Mexican Peso"),
    ("MYR", "Malaysian Ringgit"),
    ("NOK", "Norwegian Krone"),
    ("NZD", "New Zealand Dollar"),
    ("PHP", "Philippine Peso"),
    ("PLN", "Polish Zloty"),
    ("ROL", "Romanian Leu (1952-2006)"),
    ("RON", "Romanian Leu"),
    ("RUB", "Russian Ruble"),
    ("SEK", "Swedish Krona"),
    ("SGD", "Singapore Dollar"),
    ("SIT", "Slovenian Tolar"),
    ("SKK", "Slovak Koruna"),
    ("THB", "Thai Baht"),
    ("TRL", "Turkish Lira (1922-2005)"),
    ("TRY", "Turkish Lira"),
    ("USD", "US Dollar"),
    ("ZAR", "South African Rand"),
];

/// The English name of `c`; `None` for a code the table lacks (a newer
/// dataset may add currencies).
pub fn name(c: Currency) -> Option<&'static str> {
    NAMES.binary_search_by(|(code, _)| (*code).cmp(c.as_str())).ok().map(|i| NAMES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_covers_the_dataset() {
        assert!(NAMES.windows(2).all(|w| w[0].0 < w[1].0));
        for c in crate::Dataset::embedded().currencies() {
            assert!(name(c).is_some(), "{c} has no name");
        }
    }
}
