//! Kubernetes resource quantities (`100m`, `2Gi`, `1.5`, `1e3`) as exact integers.
//!
//! Every quantity is held in **milli-units** (`i64`): `1` CPU is `1000`, `1Gi` of memory is
//! `1_073_741_824_000`. That covers 9 PB of memory without loss and lets the solver do integer
//! arithmetic only. Values that would need finer precision than a milli-unit are rounded up, as
//! Kubernetes does when it compares requests.

use std::fmt;

/// A quantity string that is not a valid Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("{0:?} is not a number followed by an optional suffix (e.g. 100m, 2Gi, 1.5)")]
    Malformed(String),
    #[error("{0:?} has an unknown suffix; use one of m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei")]
    UnknownSuffix(String),
    #[error("{0:?} is too large")]
    Overflow(String),
    #[error("{0:?} is negative")]
    Negative(String),
}

/// Parses a Kubernetes quantity into milli-units, rounding up any finer fraction.
/// Negative quantities are refused: no resource Berth handles can be negative.
pub fn parse_milli(input: &str) -> Result<i64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(QuantityError::Malformed(input.to_owned()));
    }
    // Scale as (base, exponent): value = number * base^exponent.
    let (base, exponent): (u32, i32) = match suffix {
        "" => (10, 0),
        "m" => (10, -3),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        "Ki" => (2, 10),
        "Mi" => (2, 20),
        "Gi" => (2, 30),
        "Ti" => (2, 40),
        "Pi" => (2, 50),
        "Ei" => (2, 60),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..]
                .parse()
                .map_err(|_| QuantityError::Malformed(input.to_owned()))?;
            (10, exp)
        }
        _ => return Err(QuantityError::UnknownSuffix(input.to_owned())),
    };
    if negative && number.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        return Err(QuantityError::Negative(input.to_owned()));
    }
    let overflow = || QuantityError::Overflow(input.to_owned());
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // Exact rational arithmetic: numerator / 10^frac_len, times base^exponent, times 1000.
    let digits = format!("{int_part}{frac_part}");
    let mut numerator: i128 = 0;
    for b in digits.bytes() {
        numerator = numerator
            .checked_mul(10)
            .and_then(|n| n.checked_add(i128::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    let mut denominator: i128 = 10i128
        .checked_pow(u32::try_from(frac_part.len()).map_err(|_| overflow())?)
        .ok_or_else(overflow)?;
    numerator = numerator.checked_mul(1000).ok_or_else(overflow)?;
    let scale = i128::from(base)
        .checked_pow(exponent.unsigned_abs())
        .ok_or_else(overflow)?;
    if exponent >= 0 {
        numerator = numerator.checked_mul(scale).ok_or_else(overflow)?;
    } else {
        denominator = denominator.checked_mul(scale).ok_or_else(overflow)?;
    }
    let milli = (numerator + denominator - 1) / denominator;
    i64::try_from(milli).map_err(|_| overflow())
}

/// Formats milli-units as the shortest exact Kubernetes quantity: `1500m`, `2`, `4Gi`.
pub fn format_milli(milli: i64) -> String {
    Milli(milli).to_string()
}

/// Display adapter for a milli-unit value, see [`format_milli`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Milli(pub i64);

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let milli = self.0;
        if milli % 1000 != 0 {
            return write!(f, "{milli}m");
        }
        let units = milli / 1000;
        if units != 0 {
            for (suffix, shift) in [
                ("Ei", 60),
                ("Pi", 50),
                ("Ti", 40),
                ("Gi", 30),
                ("Mi", 20),
                ("Ki", 10),
            ] {
                let step = 1i64 << shift;
                if units % step == 0 {
                    return write!(f, "{}{suffix}", units / step);
                }
            }
        }
        write!(f, "{units}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("0.1"), Ok(100));
        assert_eq!(parse_milli("2Gi"), Ok(2 * (1 << 30) * 1000));
        assert_eq!(parse_milli("320Gi"), Ok(320 * (1 << 30) * 1000));
        assert_eq!(parse_milli("1k"), Ok(1_000_000));
        assert_eq!(parse_milli("1e3"), Ok(1_000_000));
        assert_eq!(parse_milli("1E3"), Ok(1_000_000));
        assert_eq!(parse_milli("100Mi"), Ok(100 * (1 << 20) * 1000));
        assert_eq!(parse_milli("0"), Ok(0));
        assert_eq!(parse_milli("-0"), Ok(0));
        assert_eq!(parse_milli("+5"), Ok(5000));
        assert_eq!(parse_milli(".5"), Ok(500));
    }

    #[test]
    fn rounds_sub_milli_up() {
        assert_eq!(parse_milli("0.0001"), Ok(1));
        assert_eq!(
            parse_milli("1u"),
            Err(QuantityError::UnknownSuffix("1u".into()))
        );
        assert_eq!(parse_milli("1e-4"), Ok(1));
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(parse_milli(""), Err(QuantityError::Empty));
        assert!(matches!(
            parse_milli("abc"),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            parse_milli("1.2.3"),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            parse_milli("1Qi"),
            Err(QuantityError::UnknownSuffix(_))
        ));
        assert!(matches!(parse_milli("-1"), Err(QuantityError::Negative(_))));
        assert!(matches!(
            parse_milli("100Ei"),
            Err(QuantityError::Overflow(_))
        ));
    }

    #[test]
    fn formats_shortest() {
        assert_eq!(format_milli(1500), "1500m");
        assert_eq!(format_milli(2000), "2");
        assert_eq!(format_milli(4 * (1 << 30) * 1000), "4Gi");
        assert_eq!(format_milli(0), "0");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(milli in 0i64..=i64::MAX / 2) {
            prop_assert_eq!(parse_milli(&format_milli(milli)), Ok(milli));
        }
    }
}
