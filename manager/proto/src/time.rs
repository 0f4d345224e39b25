//! Instants on the manager's clock.
//!
//! The manager's core is driven by the caller's clock: the server passes the
//! wall clock (milliseconds since the Unix epoch, advanced monotonically
//! from start), the simulator its own simulated time. A [`Timestamp`] is a
//! point on that clock; a span between two of them is a
//! [`std::time::Duration`]. Keeping the two apart lets the compiler refuse
//! `now + now` or a timeout passed where a deadline is expected, which a
//! bare `u64` of milliseconds did not.
//!
//! A `Timestamp` serializes as its number of milliseconds, so the files and
//! JSON it appears in read as before.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time, in whole milliseconds on the caller's clock (since the
/// Unix epoch in production, since an arbitrary origin in simulation).
///
/// Arithmetic saturates: adding a very long [`Duration`] gives
/// [`Timestamp::MAX`] ("never"), and the span from a later instant to an
/// earlier one is zero, as with [`std::time::Instant`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The end of time: a deadline that never comes.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The instant as UTC in ISO 8601, `2026-11-24T21:38:00.000Z`
    /// (milliseconds since the Unix epoch read as a civil date).
    pub fn iso8601(self) -> String {
        let ms = self.0;
        let secs = ms / 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Civil date from days since 1970-01-01 (Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms % 1000
        )
    }

    /// Seconds since the origin, as Mesos reports times on the wire.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// The wall clock now, in milliseconds since the Unix epoch (the origin
    /// if the system clock reads before 1970).
    pub fn now() -> Timestamp {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| Timestamp::ZERO + d)
            .unwrap_or(Timestamp::ZERO)
    }

    /// The span from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// Whole milliseconds of a duration, saturating at `u64::MAX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(millis(d)))
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis(d)))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    /// The span between two instants, zero if `earlier` is the later one.
    fn sub(self, earlier: Timestamp) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::from_millis(1_000);
        assert_eq!(
            t + Duration::from_millis(500),
            Timestamp::from_millis(1_500)
        );
        assert_eq!(t - Duration::from_secs(5), Timestamp::ZERO);
        assert_eq!(t + Duration::MAX, Timestamp::MAX);
        assert_eq!(Timestamp::MAX + Duration::from_millis(1), Timestamp::MAX);
        assert_eq!(t - Timestamp::from_millis(400), Duration::from_millis(600));
        assert_eq!(Timestamp::from_millis(400) - t, Duration::ZERO);
    }

    #[test]
    fn serializes_as_milliseconds() {
        let t = Timestamp::from_millis(1_764_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "1764000000123");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert_eq!(t.as_secs_f64(), 1_764_000_000.123);
    }

    #[test]
    fn now_reads_the_wall_clock() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let now = Timestamp::now();
        assert!(now.as_millis() >= millis(before));
    }
}
