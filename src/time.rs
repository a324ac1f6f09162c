//! Calendar arithmetic for the few timestamps mailroot writes (Received headers, the banner, W3C logs,
//! file names) without a date-time dependency. All times are UTC: mailroot does not read time zones,
//! so RFC 5322 dates carry `+0000`, which is exact and what the W3C log requires anyway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    /// 0..=23
    pub hour: u32,
    /// 0..=59
    pub minute: u32,
    /// 0..=59
    pub second: u32,
    /// 0..=999_999
    pub micros: u32,
    /// 0 = Sunday .. 6 = Saturday
    pub weekday: u32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

impl Utc {
    /// The current time.
    pub fn now() -> Utc {
        Utc::from_system(SystemTime::now())
    }

    /// Converts a `SystemTime`; times before 1970 clamp to the epoch.
    pub fn from_system(t: SystemTime) -> Utc {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Utc::from_unix(d.as_secs() as i64, d.subsec_micros())
    }

    /// Converts seconds since the Unix epoch (Howard Hinnant's civil-from-days algorithm).
    pub fn from_unix(secs: i64, micros: u32) -> Utc {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            micros,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// RFC 5322 date as IIS writes it: `Sun, 2 Dec 2009 21:56:01 +0000` (day not zero-padded).
    pub fn rfc5322(&self) -> String {
        format!(
            "{}, {} {} {} {:02}:{:02}:{:02} +0000",
            DAYS[self.weekday as usize],
            self.day,
            MONTHS[(self.month - 1) as usize],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// `YYYY-MM-DD` as in W3C logs.
    pub fn w3c_date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `HH:MM:SS` as in W3C logs.
    pub fn w3c_time(&self) -> String {
        format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }
}

/// Microseconds since the Unix epoch, for sortable identifiers.
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        let e = Utc::from_unix(0, 0);
        assert_eq!((e.year, e.month, e.day, e.weekday), (1970, 1, 1, 4));
        // 2009-12-02 21:56:01 UTC was a Wednesday.
        let t = Utc::from_unix(1_259_790_961, 0);
        assert_eq!(t.rfc5322(), "Wed, 2 Dec 2009 21:56:01 +0000");
        // Leap day.
        let l = Utc::from_unix(1_709_164_800, 0);
        assert_eq!((l.year, l.month, l.day), (2024, 2, 29));
        assert_eq!(l.w3c_date(), "2024-02-29");
        assert_eq!(Utc::from_unix(86_399, 0).w3c_time(), "23:59:59");
    }
}
