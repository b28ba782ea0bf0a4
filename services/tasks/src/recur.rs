//! Recurrence: an RFC 5545 RRULE (through the `rrule` crate) expanded in the task's time zone
//! from the task's first due date or time, so that a 09:00 Europe/Oslo task stays at 09:00 local
//! time across a daylight-saving change.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use rrule::{RRule, RRuleSet, Unvalidated};
use worktruck_kit::error::quote;
use worktruck_kit::{Error, Result};

/// How many occurrences one expansion walks at most before it gives up (a rule whose next
/// occurrence lies beyond this many is treated as ended).
const MAX_STEPS: usize = 100_000;

/// When an occurrence (or a task) is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// At a moment.
    At(DateTime<Utc>),
    /// On a date.
    Date(NaiveDate),
}

/// A parsed rule: the text as stored (without a leading `RRULE:`), checked to parse.
pub fn check_rule(raw: &str) -> Result<Option<String>> {
    let s = raw.trim();
    let s = s.strip_prefix("RRULE:").unwrap_or(s).trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > 1000 {
        return Err(Error::validation("rrule must be at most 1000 characters"));
    }
    if s.contains(['\n', '\r']) || s.to_ascii_uppercase().contains("DTSTART") {
        return Err(Error::validation("rrule is one RRULE line (the start is the task's due date)"));
    }
    s.parse::<RRule<Unvalidated>>()
        .map_err(|e| Error::validation(format!("rrule {} does not parse: {e}", quote(s))))?;
    Ok(Some(s.to_owned()))
}

/// Parses an IANA time zone name.
pub fn check_time_zone(raw: &str) -> Result<chrono_tz::Tz> {
    raw.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        Error::validation(format!("time_zone {} is not an IANA time zone such as Europe/Oslo", quote(raw)))
    })
}

/// A date-only occurrence is expanded at noon local time, which no daylight-saving change
/// skips or repeats.
fn noon() -> NaiveTime {
    NaiveTime::from_hms_opt(12, 0, 0).expect("noon")
}

fn set(rule: &str, tz: chrono_tz::Tz, start: Due) -> Result<RRuleSet> {
    let rtz: rrule::Tz = tz.into();
    let dt_start = match start {
        Due::At(t) => t.with_timezone(&rtz),
        Due::Date(d) => rtz
            .from_local_datetime(&d.and_time(noon()))
            .earliest()
            .ok_or_else(|| Error::validation("the due date has no noon in the time zone"))?,
    };
    let parsed: RRule<Unvalidated> =
        rule.parse().map_err(|e| Error::validation(format!("rrule {} does not parse: {e}", quote(rule))))?;
    parsed
        .build(dt_start)
        .map_err(|e| Error::validation(format!("rrule {} does not fit the due date: {e}", quote(rule))))
}

/// Checks that `rule` builds from `start` in `tz` (e.g. an UNTIL of the right kind).
pub fn check_fits(rule: &str, tz: chrono_tz::Tz, start: Due) -> Result<()> {
    set(rule, tz, start).map(|_| ())
}

/// The first `n` occurrences of `rule` (expanded from `start` in `tz`) strictly after `after`.
/// Fewer when the rule ends.
pub fn after(rule: &str, tz: chrono_tz::Tz, start: Due, after: Due, n: usize) -> Result<Vec<Due>> {
    let set = set(rule, tz, start)?;
    let mut out = Vec::new();
    for dt in (&set).into_iter().take(MAX_STEPS) {
        let due = match start {
            Due::At(_) => Due::At(dt.with_timezone(&Utc)),
            Due::Date(_) => Due::Date(dt.date_naive()),
        };
        if due > after {
            out.push(due);
            if out.len() >= n {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_oslo_task_stays_at_nine_local_across_the_spring_change() {
        let tz: chrono_tz::Tz = "Europe/Oslo".parse().unwrap();
        // 09:00 CET on 2025-03-28 is 08:00 UTC; after 2025-03-30 Oslo is on CEST (UTC+2).
        let start = Due::At("2025-03-28T08:00:00Z".parse().unwrap());
        let next = after("FREQ=DAILY", tz, start, start, 3).unwrap();
        let utc: Vec<String> = next
            .iter()
            .map(|d| match d {
                Due::At(t) => t.to_rfc3339(),
                Due::Date(_) => unreachable!(),
            })
            .collect();
        assert_eq!(utc, ["2025-03-29T08:00:00+00:00", "2025-03-30T07:00:00+00:00", "2025-03-31T07:00:00+00:00"]);
    }

    #[test]
    fn dates_count_and_bad_rules() {
        let tz = chrono_tz::Tz::UTC;
        let d = |s: &str| Due::Date(s.parse().unwrap());
        let start = d("2025-01-31");
        assert_eq!(after("FREQ=WEEKLY;COUNT=3", tz, start, start, 5).unwrap(), [d("2025-02-07"), d("2025-02-14")]);
        assert!(check_rule("FREQ=SOMETIMES").is_err());
        assert!(check_rule("DTSTART:20250101T000000Z\nRRULE:FREQ=DAILY").is_err());
        assert_eq!(check_rule("RRULE:FREQ=DAILY").unwrap().as_deref(), Some("FREQ=DAILY"));
        assert_eq!(check_rule(" ").unwrap(), None);
    }
}
