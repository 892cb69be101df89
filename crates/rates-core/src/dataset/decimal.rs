//! The ECB's printed values as exact decimals packed in a word, and the
//! cross rate of two of them computed as the public service computes it.

/// An ECB value as printed: `mantissa · 10^-scale`, packed as
/// `mantissa << 5 | scale` (a mantissa below 10^17, a scale up to 31), so a
/// row of the table stays a row of words.
pub(super) type Dec = u64;

/// No value (`N/A`): a printed value is never zero.
pub(super) const NONE: Dec = 0;

/// 1, the euro's value per euro.
pub(super) const ONE: Dec = 1 << SCALE_BITS;

/// The low bits of a [`Dec`] that hold its scale.
pub(super) const SCALE_BITS: u32 = 5;

/// Up to this many significant digits, a printed decimal survives the trip
/// through a binary float and back unchanged: it is then exactly the value
/// the public service holds (`str(float(text))` in Python).
pub(super) const EXACT_DIGITS: u32 = 15;

/// The most significant digits a packed value has: a float's shortest
/// representation needs at most 17.
pub(super) const MAX_DIGITS: u32 = 17;

/// The largest scale a packed value has (its low [`SCALE_BITS`] bits).
pub(super) const MAX_SCALE: usize = 31;

/// `10^n`, saturating past 10^38 (the most a `u128` holds).
pub(super) const fn pow10(n: u32) -> u128 {
    match 10u128.checked_pow(n) {
        Some(p) => p,
        None => u128::MAX,
    }
}

/// Parses a printed rate into the decimal the public service computes
/// with: the text itself when it is `DIGITS[.DIGITS]` with at most
/// [`EXACT_DIGITS`] significant digits (the ECB's have 7), otherwise the
/// shortest decimal of the float it reads as, as Python's `str(float(text))`
/// gives. `None` if it is no positive number, or needs more than
/// [`MAX_DIGITS`] digits or [`MAX_SCALE`] places.
pub(super) fn parse_dec(text: &str) -> Option<Dec> {
    match plain_dec(text) {
        Some((d, digits)) if digits <= EXACT_DIGITS => Some(d),
        _ => {
            let x: f64 = text.parse().ok().filter(|x: &f64| x.is_finite() && *x > 0.0)?;
            // Display gives the shortest digits that read back as `x`, as repr does.
            plain_dec(&x.to_string()).map(|(d, _)| d)
        }
    }
}

/// `DIGITS[.DIGITS]` exactly, with its count of significant digits.
pub(super) fn plain_dec(text: &str) -> Option<(Dec, u32)> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits_only(int) || !digits_only(frac) || text.ends_with('.') || frac.len() > MAX_SCALE {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut count = 0;
    for b in int.bytes().chain(frac.bytes()).skip_while(|&b| b == b'0') {
        count += 1;
        if count > MAX_DIGITS {
            return None;
        }
        mantissa = mantissa * 10 + u64::from(b - b'0');
    }
    // Below 10^17 and at most 31: both fit their bits.
    (mantissa > 0).then_some((mantissa << SCALE_BITS | frac.len() as u64, count))
}

/// The mantissa and scale of a packed value.
pub(super) fn unpack(d: Dec) -> (u128, u32) {
    (u128::from(d >> SCALE_BITS), (d & ((1 << SCALE_BITS) - 1)) as u32)
}

/// The value as a float: the double nearest the decimal, as Python's
/// `float(text)` gives (both operands exact, the division correctly rounded).
pub(super) fn to_f64(d: Dec) -> f64 {
    let (m, s) = unpack(d);
    if m < 1 << 53 {
        m as f64 / pow10(s) as f64
    } else {
        // A 16- or 17-digit mantissa is not exact as a float: read the text.
        format!("{m}e-{s}").parse().unwrap_or(f64::NAN)
    }
}

/// Significant digits of Python's default decimal context.
pub(super) const PRECISION: u32 = 28;

/// `round(Decimal(a) / Decimal(b), 6)` as Python computes it, as a float:
/// the exact quotient is first rounded to [`PRECISION`] significant digits
/// half-to-even (the division), then that half-to-even to 6 places (the
/// `round`), in integers. The two roundings differ from one when the first
/// lands exactly on a half of the sixth place.
pub(super) fn cross(a: Dec, b: Dec) -> f64 {
    let ((am, as_), (bm, bs)) = (unpack(a), unpack(b));
    // a/b · 10^6 = (am · 10^(bs+6)) / (bm · 10^as). Kept below 10^37, so
    // that twice a remainder fits too; beyond (values of 17 digits or 20
    // places, never the ECB's) the binary path, close enough there.
    let scaled = |m: u128, s: u32| m.checked_mul(pow10(s)).filter(|&x| x < pow10(37));
    let (Some(num), Some(den)) = (scaled(am, bs + 6), scaled(bm, as_)) else {
        return round6(to_f64(a) / to_f64(b));
    };
    let (q, r) = (num / den, num % den);
    let rounded = if r == 0 {
        q
    } else {
        // Digits the division keeps past the sixth place.
        let kept = if q == 0 {
            // The significant digits start after the leading zeros of r/den.
            let mut zeros = 0;
            while r * pow10(zeros + 1) < den {
                zeros += 1;
            }
            PRECISION + zeros
        } else {
            match PRECISION.checked_sub(q.ilog10() + 1) {
                Some(k) => k,
                // A quotient of 10^22 or more, which 15-digit rates cannot
                // make in practice: the binary path, close enough there.
                None => return round6(to_f64(a) / to_f64(b)),
            }
        };
        let above_half = (2 * r).cmp(&den);
        let off = (2 * r).abs_diff(den);
        // Whether the division's rounding leaves exactly half a unit of the
        // sixth place: the fraction is within half a kept digit of 1/2, or
        // exactly that far and 1/2 is the even neighbour (5·10^(kept-1) is
        // even from two kept digits on).
        // (Past 10^38 the product overflows, and is then far above `den`.)
        let tie = off == 0
            || (kept > 0 && off.checked_mul(pow10(kept.min(38))).is_some_and(|x| x < den || (x == den && kept >= 2)));
        match (tie, above_half) {
            (true, _) => q + (q & 1),
            (false, std::cmp::Ordering::Greater) => q + 1,
            (false, _) => q,
        }
    };
    if rounded < 1 << 53 {
        // Both exact: one correctly rounded division, as float(Decimal) is.
        rounded as f64 / 1e6
    } else {
        format!("{}.{:06}", rounded / 1_000_000, rounded % 1_000_000).parse().unwrap_or(f64::NAN)
    }
}

/// Rounds to 6 decimal places exactly as Python's `round(x, 6)` does
/// (correctly rounded from the binary value), which is what the API serves.
pub fn round6(x: f64) -> f64 {
    // Fast path: `x·10⁶` carries a relative error of one ulp, far below the
    // distance to a tie unless the fraction is close to one half, and an
    // exact integer divided by 10⁶ is the double nearest that decimal.
    let scaled = x * 1e6;
    if scaled.is_finite() && scaled.abs() < 1e12 && (scaled.fract().abs() - 0.5).abs() > 1e-3 {
        return scaled.round() / 1e6;
    }
    // Near a tie: decide on the exact decimal expansion.
    let mut buf = String::with_capacity(24);
    use std::fmt::Write;
    let _ = write!(buf, "{x:.6}");
    buf.parse().unwrap_or(x)
}
