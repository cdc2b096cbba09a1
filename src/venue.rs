//! The trading day: the venue's time zone, its schedule, and which day it is.
//!
//! `[venue]` in the configuration names an IANA time zone and four local times: the start
//! of system hours, the start of market hours, the end of market hours and the end of
//! system hours. Every OUCH and ITCH timestamp counts nanoseconds from midnight in that
//! zone ([`VenueClock`]). The gateway turns the schedule into sequenced commands
//! ([`VenueCommand::SystemEvent`](crate::book::VenueCommand)) when each time comes, so the
//! day is in the journal and replay reproduces it.
//!
//! A trading day is named by its local date. It is the current date until the end of its
//! system hours, the next date after: an engine started (or restarted) after the end of
//! system hours starts the next day. Each day has its own journal directory under
//! `[journal] dir` (named `YYYY-MM-DD`) and its own SoupBinTCP and MoldUDP64 session name
//! ([`session_name`]); order and match numbers, session sequence numbers and the feed's
//! sequence numbers start at 1 each day.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

use crate::book::DayEvent;
use crate::types::Timestamp;

/// A parsed, validated `[venue]` section.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The venue's time zone.
    pub tz: TimeZone,
    /// Its IANA name, as configured.
    pub tz_name: String,
    /// Start of system hours, start and end of market hours, end of system hours.
    pub times: [Time; 4],
}

/// Parses a local time of day: `HH:MM`, `HH:MM:SS` or `HH:MM:SS.fff`.
pub fn parse_time(text: &str) -> Result<Time, String> {
    text.parse::<Time>()
        .map_err(|e| format!("{text:?} is not a time of day like \"09:30\": {e}"))
}

impl Schedule {
    /// A schedule from the time zone's name and the four local times, in the order of the
    /// day. `Err((key, message))` names the setting at fault.
    pub fn new(tz_name: &str, times: [(&str, &str); 4]) -> Result<Schedule, (String, String)> {
        let tz = TimeZone::get(tz_name).map_err(|e| {
            (
                "venue.timezone".to_string(),
                format!("{tz_name:?} is not an IANA time zone name: {e}"),
            )
        })?;
        // `Etc/Unknown` names the zone of no rules (UTC under another name): taken, the
        // venue's day would silently run on UTC.
        if tz.is_unknown() {
            return Err((
                "venue.timezone".to_string(),
                format!(
                    "{tz_name:?} is the unknown time zone, not a place's: name one, e.g. \"America/New_York\" (or \"UTC\")"
                ),
            ));
        }
        let mut parsed = [Time::midnight(); 4];
        for (i, (key, text)) in times.iter().enumerate() {
            parsed[i] = parse_time(text).map_err(|m| (format!("venue.{key}"), m))?;
            if i > 0 && parsed[i] < parsed[i - 1] {
                return Err((
                    format!("venue.{key}"),
                    format!(
                        "{text:?} is before venue.{} ({:?}): the day's times must not go back",
                        times[i - 1].0,
                        times[i - 1].1
                    ),
                ));
            }
        }
        Ok(Schedule {
            tz,
            tz_name: tz_name.to_string(),
            times: parsed,
        })
    }

    /// The trading day at `now`: today's local date until the end of system hours, the
    /// next date from then on.
    pub fn trading_day(&self, now: jiff::Timestamp) -> Date {
        let local = now.to_zoned_datetime(self.tz.clone());
        if local.time() < self.times[3] {
            local.date()
        } else {
            local
                .date()
                .tomorrow()
                .expect("not the last day of the calendar")
        }
    }

    /// When each transition of `day` happens, in nanoseconds since the Unix epoch, in the
    /// order of [`DayEvent::ALL`]: start of messages at the day's local midnight (or as soon
    /// as the engine runs, if later), end of messages right after the end of system hours.
    /// A local time the clock skips (the spring-forward hour) happens when the clock jumps
    /// past it, so the day's transitions keep their order (a time read with the offset
    /// before the jump would land an hour later, possibly after a later transition); a
    /// time the clock passes twice (the fall-back hour) happens the first time.
    pub fn transitions(&self, day: Date) -> [(i64, DayEvent); 6] {
        let at = |time: Time| -> i64 {
            let ambiguous = self.tz.to_ambiguous_timestamp(day.to_datetime(time));
            let instant = match ambiguous.offset() {
                jiff::tz::AmbiguousOffset::Gap { .. } => ambiguous
                    .earlier()
                    .ok()
                    .and_then(|before| self.tz.following(before).next())
                    .map(|jump| jump.timestamp()),
                _ => ambiguous.compatible().ok(),
            };
            instant.map_or(i64::MAX, |t| t.as_nanosecond() as i64)
        };
        let [s, q, m, e] = self.times.map(at);
        let midnight = at(Time::midnight());
        [
            (midnight, DayEvent::StartOfMessages),
            (s, DayEvent::StartOfSystemHours),
            (q, DayEvent::StartOfMarketHours),
            (m, DayEvent::EndOfMarketHours),
            (e, DayEvent::EndOfSystemHours),
            (e, DayEvent::EndOfMessages),
        ]
    }
}

/// The day's SoupBinTCP and MoldUDP64 session name: the configured name's first two
/// characters, then the day's date as `YYYYMMDD` (10 characters, e.g. `IR20261203`).
pub fn session_name(configured: &str, day: Date) -> String {
    let prefix: String = configured.chars().take(2).collect();
    format!(
        "{prefix}{:04}{:02}{:02}",
        day.year(),
        day.month(),
        day.day()
    )
}

/// The directory name of a day's journal: `YYYY-MM-DD`.
pub fn day_dir_name(day: Date) -> String {
    format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day())
}

/// Nanoseconds since the Unix epoch now.
pub fn epoch_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Stamps times as the protocols want them: nanoseconds since midnight in the venue's
/// time zone (UTC without a `[venue]`). Keeps the current local midnight, so a stamp is a
/// clock read and a subtraction; the zone is consulted once a day (which also covers
/// daylight-saving days of 23 or 25 hours).
#[derive(Clone, Debug)]
pub struct VenueClock {
    tz: TimeZone,
    midnight: i64,
    next_midnight: i64,
}

impl VenueClock {
    /// A clock for `tz`.
    pub fn new(tz: TimeZone) -> VenueClock {
        VenueClock {
            tz,
            midnight: 0,
            next_midnight: i64::MIN,
        }
    }

    /// A clock counting from UTC midnight.
    pub fn utc() -> VenueClock {
        VenueClock::new(TimeZone::UTC)
    }

    /// Now, as nanoseconds since local midnight.
    pub fn now(&mut self) -> Timestamp {
        self.at(epoch_ns())
    }

    /// `epoch_ns` (nanoseconds since the Unix epoch) as nanoseconds since local midnight.
    pub fn at(&mut self, epoch_ns: i64) -> Timestamp {
        if epoch_ns >= self.next_midnight || epoch_ns < self.midnight {
            let local = jiff::Timestamp::from_nanosecond(i128::from(epoch_ns))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                .to_zoned_datetime(self.tz.clone());
            let start = local.start_of_day().ok();
            let next = local.tomorrow().ok().and_then(|t| t.start_of_day().ok());
            match (start, next) {
                (Some(start), Some(next)) => {
                    self.midnight = start.timestamp().as_nanosecond() as i64;
                    self.next_midnight = next.timestamp().as_nanosecond() as i64;
                }
                _ => return Timestamp(0),
            }
        }
        Timestamp((epoch_ns - self.midnight) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nasdaq() -> Schedule {
        Schedule::new(
            "America/New_York",
            [
                ("system_start", "04:00"),
                ("market_open", "09:30"),
                ("market_close", "16:00"),
                ("system_end", "20:00"),
            ],
        )
        .unwrap()
    }

    fn instant(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn timestamps_count_from_local_midnight_across_daylight_saving() {
        let mut clock = VenueClock::new(TimeZone::get("America/New_York").unwrap());
        // 09:30 in New York on a winter day is 14:30 UTC.
        let at = |c: &mut VenueClock, t: &str| c.at(instant(t).as_nanosecond() as i64).0;
        let half_past_nine = (9 * 3600 + 1800) * 1_000_000_000;
        assert_eq!(at(&mut clock, "2026-12-03T14:30:00Z"), half_past_nine);
        // In summer (EDT, UTC-4) it is 13:30 UTC.
        assert_eq!(at(&mut clock, "2026-07-01T13:30:00Z"), half_past_nine);
        // On the day clocks go forward (2026-03-08), 09:30 local is still 9.5 h of wall
        // clock after midnight, but only 8.5 h of elapsed time: stamps count elapsed time.
        assert_eq!(
            at(&mut clock, "2026-03-08T13:30:00Z"),
            half_past_nine - 3600 * 1_000_000_000
        );
        // Back to an ordinary day, and the next midnight resets the count.
        assert_eq!(at(&mut clock, "2026-12-04T05:00:00.000000001Z"), 1);
    }

    #[test]
    fn the_day_is_todays_date_until_the_end_of_system_hours() {
        let s = nasdaq();
        let date = |t: &str| s.trading_day(instant(t)).to_string();
        // 19:59 New York on 3 December: still that day; 20:00: the next one.
        assert_eq!(date("2026-12-04T00:59:00Z"), "2026-12-03");
        assert_eq!(date("2026-12-04T01:00:00Z"), "2026-12-04");
        assert_eq!(date("2026-12-03T05:00:00Z"), "2026-12-03");
    }

    #[test]
    fn transitions_are_local_times_of_the_day() {
        let s = nasdaq();
        let day: Date = "2026-12-03".parse().unwrap();
        let t = s.transitions(day);
        let utc = |t: &str| instant(t).as_nanosecond() as i64;
        assert_eq!(
            t[0],
            (utc("2026-12-03T05:00:00Z"), DayEvent::StartOfMessages)
        );
        assert_eq!(
            t[1],
            (utc("2026-12-03T09:00:00Z"), DayEvent::StartOfSystemHours)
        );
        assert_eq!(
            t[2],
            (utc("2026-12-03T14:30:00Z"), DayEvent::StartOfMarketHours)
        );
        assert_eq!(
            t[3],
            (utc("2026-12-03T21:00:00Z"), DayEvent::EndOfMarketHours)
        );
        assert_eq!(
            t[4],
            (utc("2026-12-04T01:00:00Z"), DayEvent::EndOfSystemHours)
        );
        assert_eq!(t[5].1, DayEvent::EndOfMessages);
        assert_eq!(session_name("IRONMATCH", day), "IR20261203");
        assert_eq!(day_dir_name(day), "2026-12-03");
    }

    /// On the day clocks go forward (New York, 2026-03-08: 02:00 EST becomes 03:00 EDT,
    /// 07:00 UTC), a time in the skipped hour happens at the jump, so a system start at
    /// 02:30 still comes before a market open at 03:00; on the day they go back
    /// (2026-11-01: 01:00-02:00 twice), a time in the repeated hour happens the first time.
    #[test]
    fn times_the_clock_skips_happen_at_the_jump_and_repeated_ones_the_first_time() {
        let times = |s: &'static str, q: &'static str, m: &'static str, e: &'static str| {
            Schedule::new(
                "America/New_York",
                [
                    ("system_start", s),
                    ("market_open", q),
                    ("market_close", m),
                    ("system_end", e),
                ],
            )
            .unwrap()
        };
        let utc = |t: &str| instant(t).as_nanosecond() as i64;
        let spring =
            times("02:30", "03:00", "16:00", "20:00").transitions("2026-03-08".parse().unwrap());
        assert_eq!(spring[1].0, utc("2026-03-08T07:00:00Z"), "at the jump");
        assert_eq!(spring[2].0, utc("2026-03-08T07:00:00Z"), "03:00 EDT");
        assert!(spring.windows(2).all(|w| w[0].0 <= w[1].0), "{spring:?}");
        let fall =
            times("01:30", "09:30", "16:00", "20:00").transitions("2026-11-01".parse().unwrap());
        assert_eq!(
            fall[1].0,
            utc("2026-11-01T05:30:00Z"),
            "01:30 EDT, the first"
        );
        assert_eq!(fall[2].0, utc("2026-11-01T14:30:00Z"), "09:30 EST");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let err = Schedule::new("Mars/Olympus", [("a", "04:00"); 4]).unwrap_err();
        assert_eq!(err.0, "venue.timezone");
        // The unknown zone resolves without an error and has no rules: refused by name.
        let err = Schedule::new("Etc/Unknown", [("a", "04:00"); 4]).unwrap_err();
        assert_eq!(err.0, "venue.timezone");
        assert!(err.1.contains("unknown time zone"), "{}", err.1);
        let err = Schedule::new(
            "UTC",
            [
                ("system_start", "04:00"),
                ("market_open", "03:00"),
                ("market_close", "16:00"),
                ("system_end", "20:00"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.0, "venue.market_open");
        let err = Schedule::new("UTC", [("system_start", "25:00"); 4]).unwrap_err();
        assert_eq!(err.0, "venue.system_start");
    }
}
