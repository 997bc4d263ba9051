//! Karpenter's duration formats.

use std::time::Duration;

/// `expireAfter`, `consolidateAfter`: hours/minutes/seconds, or `Never`.
pub const NILLABLE_DURATION_PATTERN: &str = r"^(([0-9]+(s|m|h))+|Never)$";
/// `terminationGracePeriod`: hours/minutes/seconds.
pub const DURATION_PATTERN: &str = r"^([0-9]+(s|m|h))+$";
/// Disruption budget `duration`: hours and/or minutes (Go's `String()` may append `0s`).
pub const BUDGET_DURATION_PATTERN: &str = r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$";

/// Parses a command-line duration: numbers (decimals allowed) with units `ms`, `s`, `m`, `h`,
/// in sequence: `250ms`, `1.5s`, `90s`, `1h30m`.
pub fn parse_flag(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 250ms, 45s, 2m or 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
    }
    Ok(total)
}

/// Parses `([0-9]+(h|m|s))+`, e.g. `720h`, `1h30m`, `90s`, `0s` (Karpenter's duration fields).
pub fn parse_hms(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration; use e.g. 720h, 1h30m or 30s".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        match c {
            '0'..='9' => digits.push(c),
            'h' | 'm' | 's' => {
                if digits.is_empty() {
                    return Err(format!(
                        "{s:?}: unit {c:?} without a number; use e.g. 720h, 1h30m or 30s"
                    ));
                }
                let n: u64 = digits
                    .parse()
                    .map_err(|_| format!("{s:?}: number too large"))?;
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total = n
                    .checked_mul(unit)
                    .and_then(|secs| total.checked_add(secs))
                    .ok_or_else(|| format!("{s:?}: duration too large"))?;
                digits.clear();
            }
            _ => {
                return Err(format!(
                    "{s:?} is not a duration made of hours, minutes and seconds (e.g. 720h, 1h30m, 30s)"
                ));
            }
        }
    }
    if !digits.is_empty() {
        return Err(format!("{s:?}: number without a unit; use h, m or s"));
    }
    Ok(Duration::from_secs(total))
}

/// Checks a budget duration: hours and/or minutes only, as Karpenter's pattern demands.
pub fn parse_budget_duration(s: &str) -> Result<Duration, String> {
    let trimmed = s.strip_suffix("0s").filter(|t| !t.is_empty()).unwrap_or(s);
    let valid_shape = {
        let units: String = trimmed
            .chars()
            .filter(|c| c.is_ascii_alphabetic())
            .collect();
        units == "h" || units == "m" || units == "hm"
    };
    if !valid_shape || trimmed.ends_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "{s:?} must be hours and/or minutes, e.g. 8h, 30m or 1h30m"
        ));
    }
    parse_hms(trimmed)
}

/// Formats a duration the shortest way Karpenter's pattern accepts (`720h`, `1h30m`, `0s`).
pub fn format_hms(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_karpenter_durations() {
        assert_eq!(parse_hms("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse_hms("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_hms("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_hms("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_hms("720h0m0s"), Ok(Duration::from_secs(720 * 3600)));
    }

    #[test]
    fn refuses_other_formats() {
        for bad in ["", "1d", "1.5h", "10", "h", "-1h", "1h 30m", "1ms"] {
            assert!(parse_hms(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn budget_durations_are_hours_and_minutes() {
        assert_eq!(
            parse_budget_duration("8h"),
            Ok(Duration::from_secs(8 * 3600))
        );
        assert_eq!(
            parse_budget_duration("1h30m"),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(parse_budget_duration("10m0s"), Ok(Duration::from_secs(600)));
        assert!(parse_budget_duration("30s").is_err());
        assert!(parse_budget_duration("1h30m10s").is_err());
        assert!(parse_budget_duration("30m1h").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["720h", "1h30m", "30s", "0s", "1h1m1s"] {
            assert_eq!(format_hms(parse_hms(s).unwrap()), s);
        }
    }
}
