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

    /// RFC 5322 date as IIS writes it: `Wed, 2 Dec 2009 21:56:01 +0000` (day not zero-padded).
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

    /// (seconds since the epoch, RFC 5322 form, W3C date, W3C time), read off a calendar, not
    /// computed by this module.
    const KNOWN: [(i64, &str, &str, &str); 12] = [
        (
            0,
            "Thu, 1 Jan 1970 00:00:00 +0000",
            "1970-01-01",
            "00:00:00",
        ),
        (
            86_399,
            "Thu, 1 Jan 1970 23:59:59 +0000",
            "1970-01-01",
            "23:59:59",
        ),
        (
            946_684_799,
            "Fri, 31 Dec 1999 23:59:59 +0000",
            "1999-12-31",
            "23:59:59",
        ),
        // 2000 is a leap year although a century (divisible by 400).
        (
            951_825_600,
            "Tue, 29 Feb 2000 12:00:00 +0000",
            "2000-02-29",
            "12:00:00",
        ),
        (
            951_868_800,
            "Wed, 1 Mar 2000 00:00:00 +0000",
            "2000-03-01",
            "00:00:00",
        ),
        (
            1_000_000_000,
            "Sun, 9 Sep 2001 01:46:40 +0000",
            "2001-09-09",
            "01:46:40",
        ),
        (
            1_259_790_961,
            "Wed, 2 Dec 2009 21:56:01 +0000",
            "2009-12-02",
            "21:56:01",
        ),
        (
            1_709_164_800,
            "Thu, 29 Feb 2024 00:00:00 +0000",
            "2024-02-29",
            "00:00:00",
        ),
        (
            1_735_689_599,
            "Tue, 31 Dec 2024 23:59:59 +0000",
            "2024-12-31",
            "23:59:59",
        ),
        // The last second of a signed 32-bit time_t, and the one after it.
        (
            2_147_483_647,
            "Tue, 19 Jan 2038 03:14:07 +0000",
            "2038-01-19",
            "03:14:07",
        ),
        (
            2_147_483_648,
            "Tue, 19 Jan 2038 03:14:08 +0000",
            "2038-01-19",
            "03:14:08",
        ),
        // 2100 is not a leap year (a century not divisible by 400): 28 February, then 1 March.
        (
            4_107_542_400,
            "Mon, 1 Mar 2100 00:00:00 +0000",
            "2100-03-01",
            "00:00:00",
        ),
    ];

    #[test]
    fn epoch_and_known_dates() {
        for (secs, rfc, date, time) in KNOWN {
            let t = Utc::from_unix(secs, 0);
            assert_eq!(t.rfc5322(), rfc, "{secs}");
            assert_eq!(t.w3c_date(), date, "{secs}");
            assert_eq!(t.w3c_time(), time, "{secs}");
        }
        let feb28 = Utc::from_unix(4_107_456_000, 0);
        assert_eq!(
            (feb28.year, feb28.month, feb28.day, feb28.weekday),
            (2100, 2, 28, 0)
        );
    }

    #[test]
    fn one_week_of_weekdays() {
        // Sunday 4 January 2026 to Saturday 10 January 2026.
        let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        for (n, name) in names.iter().enumerate() {
            let t = Utc::from_unix(1_767_484_800 + n as i64 * 86_400 + 43_200, 0);
            assert_eq!((t.year, t.month, t.day), (2026, 1, 4 + n as u32));
            assert_eq!(t.weekday, n as u32, "{name}");
            assert!(
                t.rfc5322()
                    .starts_with(&format!("{name}, {} Jan 2026 12:00:00", 4 + n))
            );
        }
    }

    #[test]
    fn system_times_and_micros() {
        let t = UNIX_EPOCH + Duration::new(1_259_790_961, 123_456_789);
        let u = Utc::from_system(t);
        assert_eq!(u.rfc5322(), "Wed, 2 Dec 2009 21:56:01 +0000");
        assert_eq!(u.micros, 123_456);
        assert_eq!(unix_micros(t), 1_259_790_961_123_456);
        // Before the epoch clamps to it.
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(Utc::from_system(before), Utc::from_unix(0, 0));
        assert_eq!(unix_micros(before), 0);
    }
}
