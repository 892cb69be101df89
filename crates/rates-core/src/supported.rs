//! The currencies the API serves (`docs/API.md`): the 33 codes vatcomply
//! supports, in its order, and its `/currencies` answer (ISO 4217 and CLDR
//! reference data), embedded as it was measured. The ECB file has nine more,
//! retired codes (CYP, EEK, ...) that the API refuses; the dataset keeps
//! them for whoever reads it directly.

use crate::Currency;

/// The 33 codes `/rates` accepts as a base or a symbol, in the order
/// vatcomply lists them. Codes are case-sensitive on the wire.
pub const SUPPORTED: [Currency; 33] = {
    const CODES: [&[u8; 3]; 33] = [
        b"EUR", b"USD", b"JPY", b"BGN", b"CZK", b"DKK", b"GBP", b"HUF", b"PLN", b"RON", b"SEK", b"CHF", b"ISK", b"NOK",
        b"HRK", b"RUB", b"TRY", b"AUD", b"BRL", b"CAD", b"CNY", b"HKD", b"IDR", b"ILS", b"INR", b"KRW", b"MXN", b"MYR",
        b"NZD", b"PHP", b"SGD", b"THB", b"ZAR",
    ];
    let mut out = [Currency::EUR; 33];
    let mut i = 0;
    while i < CODES.len() {
        out[i] = Currency::from_upper(*CODES[i]);
        i += 1;
    }
    out
};

/// Whether the API serves `c`.
pub fn is_supported(c: Currency) -> bool {
    SUPPORTED.contains(&c)
}

/// The code `raw` names exactly as the API reads it: one of [`SUPPORTED`],
/// upper-case, nothing around it (`usd` and ` GBP` are not).
pub fn supported_code(raw: &str) -> Option<Currency> {
    SUPPORTED.iter().copied().find(|c| c.as_str() == raw)
}

/// vatcomply's whole `/currencies` answer: a JSON object of the supported
/// codes, each with `name`, `symbol`, `numeric_code`, `currency_symbol`,
/// `currency_symbol_narrow`, `decimal_places`, `rounding` and `countries`.
pub const CURRENCIES_JSON: &str = include_str!("../../../data/vatcomply-currencies.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_answer_lists_the_supported_codes_in_order() {
        let table: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(CURRENCIES_JSON).expect("the embedded /currencies answer is JSON");
        let codes: Vec<&str> = table.keys().map(String::as_str).collect();
        let supported: Vec<&str> = SUPPORTED.iter().map(Currency::as_str).collect();
        // serde_json's map keeps keys sorted unless told otherwise; compare as sets, then count.
        let mut a = codes.clone();
        let mut b = supported.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        assert_eq!(CURRENCIES_JSON.find("\"EUR\""), CURRENCIES_JSON.find('"'), "EUR comes first");
    }

    #[test]
    fn codes_are_case_sensitive_and_untrimmed() {
        assert_eq!(supported_code("USD").map(|c| c.to_string()).as_deref(), Some("USD"));
        for bad in ["usd", " GBP", "GBP ", "CYP", "XYZ", ""] {
            assert_eq!(supported_code(bad), None, "{bad:?}");
        }
        assert!(!is_supported("EEK".parse().expect("three letters")));
    }
}
