//! Availability arithmetic: merging busy intervals, the working-hours windows of a period in a
//! time zone, and the free slots the busy intervals leave in them.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use worktruck_kit::error::quote;
use worktruck_kit::{Error, Result};
use worktruck_proto::calendar::v1 as pb;

use crate::expand;

/// A span of time `[start, end)`.
pub type Span = (DateTime<Utc>, DateTime<Utc>);

/// Most working-day entries a request carries.
const MAX_DAYS: usize = 50;

/// Working hours: per weekday (Monday first), spans of minutes after local midnight.
#[derive(Debug, Clone)]
pub struct Hours {
    tz: chrono_tz::Tz,
    days: [Vec<(u32, u32)>; 7],
}

fn weekday(raw: &str) -> Result<Weekday> {
    let w = raw.trim().to_ascii_lowercase();
    let names = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let i = names
        .iter()
        .position(|n| *n == w || (w.len() == 3 && n.starts_with(&w)));
    match i {
        Some(i) => Ok(Weekday::try_from(i as u8).expect("a weekday")),
        None => Err(Error::validation(format!(
            "working_hours.days.weekday {} must be monday, tuesday, wednesday, thursday, friday, saturday or sunday",
            quote(raw)
        ))),
    }
}

/// `HH:MM` as minutes after midnight; `24:00` only when `end`.
fn clock(field: &str, raw: &str, end: bool) -> Result<u32> {
    let bad = || {
        Error::validation(format!(
            "working_hours.days.{field} {} must be a time HH:MM such as 09:00",
            quote(raw)
        ))
    };
    let (h, m) = raw.trim().split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Checks the request's working hours.
pub fn check_hours(w: &pb::WorkingHours) -> Result<Hours> {
    if w.timezone.trim().is_empty() {
        return Err(Error::validation(
            "working_hours.timezone is required (an IANA time zone such as Europe/Oslo)",
        ));
    }
    let tz = expand::check_time_zone(&w.timezone)?;
    if w.days.len() > MAX_DAYS {
        return Err(Error::validation(format!(
            "working_hours.days has at most {MAX_DAYS} entries"
        )));
    }
    let mut days: [Vec<(u32, u32)>; 7] = Default::default();
    for d in &w.days {
        let day = weekday(&d.weekday)?;
        let (s, e) = (
            clock("start", &d.start, false)?,
            clock("end", &d.end, true)?,
        );
        if e <= s {
            return Err(Error::validation(format!(
                "working_hours.days: {} ends at or before it starts",
                d.weekday.trim()
            )));
        }
        days[day.num_days_from_monday() as usize].push((s, e));
    }
    Ok(Hours { tz, days })
}

/// The moment `minutes` after local midnight of `d` in `tz` (a local time skipped by a DST
/// change is taken an hour later, which is the same moment on the old offset).
fn local(tz: chrono_tz::Tz, d: NaiveDate, minutes: u32) -> DateTime<Utc> {
    let naive = d.and_hms_opt(0, 0, 0).expect("midnight") + Duration::minutes(i64::from(minutes));
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| naive.and_utc())
}

/// Sorted spans with the overlapping and touching ones joined; empty ones dropped.
pub fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.retain(|(s, e)| e > s);
    spans.sort();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The spans of `[from, to)` in which free slots may fall: the working hours when given, else
/// the whole window.
pub fn windows(hours: Option<&Hours>, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Span> {
    let Some(h) = hours else {
        return vec![(from, to)];
    };
    let first = from.with_timezone(&h.tz).date_naive() - Duration::days(1);
    let last = to.with_timezone(&h.tz).date_naive() + Duration::days(1);
    let mut out = Vec::new();
    let mut d = first;
    while d <= last {
        for (s, e) in &h.days[d.weekday().num_days_from_monday() as usize] {
            let (a, b) = (local(h.tz, d, *s).max(from), local(h.tz, d, *e).min(to));
            if b > a {
                out.push((a, b));
            }
        }
        d += Duration::days(1);
    }
    merge(out)
}

/// The gaps `busy` (merged, sorted) leaves in `windows` (merged, sorted) that last at least
/// `min` (any gap when `min` is zero).
pub fn free(windows: &[Span], busy: &[Span], min: Duration) -> Vec<Span> {
    let mut out = Vec::new();
    let mut keep = |a: DateTime<Utc>, b: DateTime<Utc>| {
        if b > a && b - a >= min {
            out.push((a, b));
        }
    };
    for &(ws, we) in windows {
        let mut cursor = ws;
        for &(bs, be) in busy.iter().filter(|(bs, be)| *bs < we && *be > ws) {
            if bs > cursor {
                keep(cursor, bs.min(we));
            }
            cursor = cursor.max(be);
        }
        if cursor < we {
            keep(cursor, we);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn day(weekday: &str, start: &str, end: &str) -> pb::WorkingDay {
        pb::WorkingDay {
            weekday: weekday.into(),
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn merging_joins_overlaps_and_touches() {
        let got = merge(vec![
            (t("2025-01-01T10:00:00Z"), t("2025-01-01T11:00:00Z")),
            (t("2025-01-01T09:00:00Z"), t("2025-01-01T10:00:00Z")),
            (t("2025-01-01T10:30:00Z"), t("2025-01-01T10:45:00Z")),
            (t("2025-01-01T12:00:00Z"), t("2025-01-01T12:00:00Z")),
            (t("2025-01-01T13:00:00Z"), t("2025-01-01T14:00:00Z")),
        ]);
        assert_eq!(
            got,
            [
                (t("2025-01-01T09:00:00Z"), t("2025-01-01T11:00:00Z")),
                (t("2025-01-01T13:00:00Z"), t("2025-01-01T14:00:00Z"))
            ]
        );
    }

    #[test]
    fn working_hours_follow_the_zone_across_dst() {
        // New York moves to summer time on Sunday 9 March 2025.
        let h = check_hours(&pb::WorkingHours {
            timezone: "America/New_York".into(),
            days: vec![
                day("friday", "09:00", "17:00"),
                day("Mon", "09:00", "12:00"),
                day("mon", "13:00", "24:00"),
            ],
        })
        .unwrap();
        let got = windows(
            Some(&h),
            t("2025-03-07T15:00:00Z"),
            t("2025-03-11T00:00:00Z"),
        );
        assert_eq!(
            got,
            [
                (t("2025-03-07T15:00:00Z"), t("2025-03-07T22:00:00Z")),
                (t("2025-03-10T13:00:00Z"), t("2025-03-10T16:00:00Z")),
                (t("2025-03-10T17:00:00Z"), t("2025-03-11T00:00:00Z")),
            ]
        );
        let busy = merge(vec![(t("2025-03-10T12:00:00Z"), t("2025-03-10T14:00:00Z"))]);
        assert_eq!(
            free(&got, &busy, Duration::minutes(180)),
            [
                (t("2025-03-07T15:00:00Z"), t("2025-03-07T22:00:00Z")),
                (t("2025-03-10T17:00:00Z"), t("2025-03-11T00:00:00Z"))
            ]
        );
    }

    #[test]
    fn bad_working_hours_are_refused() {
        for (tz, d) in [
            ("Oslo", day("monday", "09:00", "17:00")),
            ("Europe/Oslo", day("someday", "09:00", "17:00")),
            ("Europe/Oslo", day("monday", "9:00", "17:00")),
            ("Europe/Oslo", day("monday", "17:00", "09:00")),
            ("Europe/Oslo", day("monday", "24:00", "24:00")),
            ("Europe/Oslo", day("monday", "09:00", "17:60")),
        ] {
            let e = check_hours(&pb::WorkingHours {
                timezone: tz.into(),
                days: vec![d.clone()],
            })
            .unwrap_err();
            assert_eq!(
                e.code,
                worktruck_kit::ErrorCode::ValidationFailed,
                "{tz} {d:?}"
            );
        }
    }
}
