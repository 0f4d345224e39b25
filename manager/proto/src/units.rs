//! Sizes and durations as people type them on command lines and in
//! configuration files: `512`, `4g`, `1.5GiB`; `500ms`, `15s`, `5m`, `1h`,
//! `7d`. Both parsers fit clap's `value_parser`.

use std::time::Duration;

/// A size or duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?} (use {hint})")]
pub struct UnitError {
    /// `size` or `duration`.
    pub what: &'static str,
    /// The text given.
    pub text: String,
    /// What would have been understood.
    pub hint: &'static str,
}

/// A duration: `500ms`, `15s`, `5m`, `1h`, `7d`, or plain seconds; never
/// negative.
pub fn duration(text: &str) -> Result<Duration, UnitError> {
    let err = || UnitError {
        what: "duration",
        text: text.to_owned(),
        hint: "e.g. 500ms, 15s, 5m, 1h, 7d; at least 0",
    };
    let t = text.trim();
    let (num, mult_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1_000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86_400_000.0)
    } else {
        (t, 1_000.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| err())?;
    if !v.is_finite() || v < 0.0 {
        return Err(err());
    }
    Ok(Duration::from_millis((v * mult_ms) as u64))
}

/// A duration as [`duration`] reads it, in the largest whole unit:
/// `15s`, `15m`, `7d`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A size in MiB (`512`, `4g`, `1.5GiB`), at least 0.
pub fn mib(text: &str) -> Result<f64, UnitError> {
    crate::resources::parse_mib(text)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| UnitError {
            what: "size",
            text: text.to_owned(),
            hint: "MiB like 512, or units like 4g",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_as_they_parse() {
        for text in ["15s", "15m", "7d", "250ms", "1h", "90s", "0ms"] {
            let d = duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            duration("soon").unwrap_err().to_string(),
            "invalid duration \"soon\" (use e.g. 500ms, 15s, 5m, 1h, 7d; at least 0)"
        );
        assert!(duration("-1s").is_err());
        assert_eq!(mib("4g").unwrap(), 4096.0);
        assert_eq!(mib("64").unwrap(), 64.0);
        assert!(mib("lots").is_err());
        assert!(mib("-1").is_err());
    }
}
