//! Token lifetimes (PROTOCOL.md §5.2): a number of milliseconds or a timespan string.

use serde_json::Value;

/// A parsed `expiresIn`: milliseconds, or infinite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    Millis(u64),
    Infinite,
}

/// Parses a timespan such as `"2s"`, `"1.5 hours"`, `"3600000"`; `None` when it does not parse.
/// No unit means milliseconds; `y` is 365.25 days.
pub fn parse_timespan(text: &str) -> Option<f64> {
    if text.len() > 100 {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let number_end = lower
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && c == '-')))
        .map_or(lower.len(), |(i, _)| i);
    let (number, unit) = lower.split_at(number_end);
    let unit = unit.trim_start_matches(' ');
    // The grammar is `-?\d*\.?\d+`: at most one dot, and digits after it.
    let digits = number.strip_prefix('-').unwrap_or(number);
    if digits.is_empty() || digits.ends_with('.') || digits.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    const SECOND: f64 = 1000.0;
    let factor = match unit {
        "" | "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => SECOND,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0 * SECOND,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0 * SECOND,
        "d" | "day" | "days" => 86400.0 * SECOND,
        "w" | "week" | "weeks" => 7.0 * 86400.0 * SECOND,
        "y" | "yr" | "yrs" | "year" | "years" => 365.25 * 86400.0 * SECOND,
        _ => return None,
    };
    Some(value * factor)
}

/// Reads an `expiresIn` value; `None` for 0, unparsable values and negatives other than -1.
pub fn parse_lifetime(value: &Value) -> Option<Lifetime> {
    let millis = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => parse_timespan(s)?,
        _ => return None,
    };
    let millis = millis.floor();
    if millis == -1.0 {
        Some(Lifetime::Infinite)
    } else if millis >= 1.0 && millis < u64::MAX as f64 {
        Some(Lifetime::Millis(millis as u64))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_units_and_numbers() {
        assert_eq!(
            parse_lifetime(&json!("1h")),
            Some(Lifetime::Millis(3_600_000))
        );
        assert_eq!(parse_lifetime(&json!("2s")), Some(Lifetime::Millis(2000)));
        assert_eq!(
            parse_lifetime(&json!("1.5 Hours")),
            Some(Lifetime::Millis(5_400_000))
        );
        assert_eq!(
            parse_lifetime(&json!("3600000")),
            Some(Lifetime::Millis(3_600_000))
        );
        assert_eq!(parse_lifetime(&json!(".5s")), Some(Lifetime::Millis(500)));
        assert_eq!(
            parse_lifetime(&json!("1y")),
            Some(Lifetime::Millis(31_557_600_000))
        );
        assert_eq!(parse_lifetime(&json!(1500.9)), Some(Lifetime::Millis(1500)));
        assert_eq!(parse_lifetime(&json!(-1)), Some(Lifetime::Infinite));
        assert_eq!(parse_lifetime(&json!("-1")), Some(Lifetime::Infinite));
    }

    #[test]
    fn refuses_zero_negatives_and_garbage() {
        for bad in [
            json!(0),
            json!("0"),
            json!(-5),
            json!("-2h"),
            json!("soon"),
            json!("1.h"),
            json!("1..2s"),
            json!(true),
            json!("1 fortnight"),
        ] {
            assert_eq!(parse_lifetime(&bad), None, "{bad}");
        }
        assert_eq!(parse_timespan(&"1".repeat(101)), None);
    }
}
