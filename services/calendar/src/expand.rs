//! Recurrence: an RFC 5545 RRULE (through the `rrule` crate) plus EXDATEs and RDATEs, expanded
//! in the event's time zone, so a 09:00 New York meeting stays at 09:00 local time across a
//! daylight-saving change. An all-day series is expanded on dates (midnight UTC stands for a
//! date, no zone has a DST change there).
//!
//! Expansion starts near the window: for a rule without COUNT, DTSTART moves forward to the
//! start of the last period (day, week by WKST, month, year — a multiple of INTERVAL periods
//! from the original start) that begins on or before the window, and the parts of the rule
//! that RFC 5545 takes from DTSTART (BYMONTH, BYMONTHDAY, BYDAY, BYHOUR, BYMINUTE, BYSECOND)
//! are written into the rule first, so the moved rule yields the same occurrences. A daily
//! series from 2015 read for a month of 2030 costs what a read of January 2015 costs. DTSTART
//! itself is always the first occurrence (RFC 5545 §3.8.5.3).

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use rrule::{Frequency, RRule, Unvalidated};
use worktruck_kit::error::quote;
use worktruck_kit::{Error, Result};

/// Most occurrences one rule walk produces before it gives up.
const MAX_STEPS: usize = 200_000;
/// Largest COUNT accepted (a COUNT rule is walked from its start).
pub const MAX_COUNT: u32 = 10_000;

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
        return Err(Error::validation("rrule is one RRULE line (the start is the event's start)"));
    }
    let parsed = s
        .parse::<RRule<Unvalidated>>()
        .map_err(|e| Error::validation(format!("rrule {} does not parse: {e}", quote(s))))?;
    if parsed.get_count().is_some_and(|c| c > MAX_COUNT) {
        return Err(Error::validation(format!("rrule COUNT must be at most {MAX_COUNT}")));
    }
    Ok(Some(s.to_owned()))
}

/// Parses an IANA time zone name.
pub fn check_time_zone(raw: &str) -> Result<chrono_tz::Tz> {
    raw.trim().parse::<chrono_tz::Tz>().map_err(|_| {
        Error::validation(format!("timezone {} is not an IANA time zone such as America/New_York", quote(raw)))
    })
}

/// A recurring (or single) event's start and recurrence, as expansion needs it.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    /// The rule, if any.
    pub rule: Option<&'a str>,
    /// The zone the rule is reckoned in (UTC for an all-day series).
    pub tz: chrono_tz::Tz,
    /// The first occurrence (DTSTART).
    pub start: DateTime<Utc>,
    /// Occurrences left out.
    pub exdates: &'a [DateTime<Utc>],
    /// Occurrences added.
    pub rdates: &'a [DateTime<Utc>],
}

/// Why an expansion stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// More than the cap in the window.
    TooMany,
}

/// The keys of a rule's parts (`FREQ`, `BYDAY`, …).
fn keys(rule: &str) -> Vec<String> {
    rule.split(';').filter_map(|p| p.split('=').next()).map(|k| k.trim().to_ascii_uppercase()).collect()
}

fn weekday_code(w: chrono::Weekday) -> &'static str {
    ["MO", "TU", "WE", "TH", "FR", "SA", "SU"][w.num_days_from_monday() as usize]
}

fn build_error(rule: &str, e: impl std::fmt::Display) -> Error {
    Error::validation(format!("rrule {} does not fit the event's start: {e}", quote(rule)))
}

/// The rule with what RFC 5545 takes from DTSTART written out, and the moved DTSTART, for a
/// walk that only needs occurrences from `from` on; the rule and start as they are when it
/// cannot move; `None` when the rule's UNTIL ends it before the moved start (no occurrence
/// from `from` on, and a start after UNTIL would not build).
fn moved(rule: &str, start: DateTime<rrule::Tz>, from: DateTime<rrule::Tz>) -> Result<Option<(String, DateTime<rrule::Tz>)>> {
    let parsed: RRule<Unvalidated> =
        rule.parse().map_err(|e| Error::validation(format!("rrule {} does not parse: {e}", quote(rule))))?;
    let freq = parsed.get_freq();
    let interval = i64::from(parsed.get_interval().max(1));
    let unchanged = Ok(Some((rule.to_owned(), start)));
    if parsed.get_count().is_some()
        || from <= start
        || !matches!(freq, Frequency::Daily | Frequency::Weekly | Frequency::Monthly | Frequency::Yearly)
    {
        return unchanged;
    }
    let k = keys(rule);
    let has = |key: &str| k.iter().any(|x| x == key);
    let mut explicit = rule.to_owned();
    let day_parts = ["BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY"].iter().any(|p| has(p));
    if !day_parts {
        match freq {
            Frequency::Yearly => {
                if !has("BYMONTH") {
                    explicit.push_str(&format!(";BYMONTH={}", start.month()));
                }
                explicit.push_str(&format!(";BYMONTHDAY={}", start.day()));
            }
            Frequency::Monthly => explicit.push_str(&format!(";BYMONTHDAY={}", start.day())),
            Frequency::Weekly => explicit.push_str(&format!(";BYDAY={}", weekday_code(start.weekday()))),
            _ => {}
        }
    }
    if !has("BYHOUR") {
        explicit.push_str(&format!(";BYHOUR={}", start.hour()));
    }
    if !has("BYMINUTE") {
        explicit.push_str(&format!(";BYMINUTE={}", start.minute()));
    }
    if !has("BYSECOND") {
        explicit.push_str(&format!(";BYSECOND={}", start.second()));
    }
    let (s, f) = (start.date_naive(), from.date_naive());
    let period_start: NaiveDate = match freq {
        Frequency::Daily => {
            let n = (f - s).num_days() / interval * interval;
            s + Duration::days(n)
        }
        Frequency::Weekly => {
            let wkst = parsed.get_week_start().num_days_from_monday() as i64;
            let back = (s.weekday().num_days_from_monday() as i64 - wkst).rem_euclid(7);
            let s0 = s - Duration::days(back);
            let weeks = (f - s0).num_days() / 7 / interval * interval;
            s0 + Duration::days(weeks * 7)
        }
        Frequency::Monthly => {
            let months = (i64::from(f.year()) * 12 + i64::from(f.month0()))
                - (i64::from(s.year()) * 12 + i64::from(s.month0()));
            let total = i64::from(s.year()) * 12 + i64::from(s.month0()) + months / interval * interval;
            NaiveDate::from_ymd_opt(total.div_euclid(12) as i32, total.rem_euclid(12) as u32 + 1, 1)
                .ok_or_else(|| Error::internal("month out of range"))?
        }
        _ => {
            let years = i64::from(f.year() - s.year()) / interval * interval;
            NaiveDate::from_ymd_opt(s.year() + years as i32, 1, 1).ok_or_else(|| Error::internal("year out of range"))?
        }
    };
    let tz = start.timezone();
    let local = |h: u32| tz.from_local_datetime(&period_start.and_hms_opt(h, 0, 0).expect("an hour")).earliest();
    let Some(new_start) = local(0).or_else(|| local(1)) else { return unchanged };
    if new_start <= start {
        return unchanged;
    }
    if parsed.get_until().is_some_and(|u| u.with_timezone(&Utc) < new_start.with_timezone(&Utc)) {
        return Ok(None);
    }
    Ok(Some((explicit, new_start)))
}

fn rule_set(rule: &str, start: DateTime<rrule::Tz>) -> Result<rrule::RRuleSet> {
    let parsed: RRule<Unvalidated> =
        rule.parse().map_err(|e| Error::validation(format!("rrule {} does not parse: {e}", quote(rule))))?;
    parsed.build(start).map_err(|e| build_error(rule, e))
}

/// Checks that the series' rule builds from its start (e.g. an UNTIL of the right kind).
pub fn check_fits(s: &Series) -> Result<()> {
    if let Some(rule) = s.rule {
        let rtz: rrule::Tz = s.tz.into();
        rule_set(rule, s.start.with_timezone(&rtz))?;
    }
    Ok(())
}

/// The rule's own occurrences in `[from, to)` (DTSTART, RDATEs and EXDATEs aside), at most
/// `max` of them (`Err(Stop)` beyond).
fn rule_occurrences(
    s: &Series,
    rule: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: usize,
) -> Result<std::result::Result<Vec<DateTime<Utc>>, Stop>> {
    let rtz: rrule::Tz = s.tz.into();
    let Some((rule, start)) = moved(rule, s.start.with_timezone(&rtz), from.with_timezone(&rtz))? else {
        return Ok(Ok(Vec::new()));
    };
    let set = rule_set(&rule, start)?;
    let mut out = Vec::new();
    for dt in (&set).into_iter().take(MAX_STEPS) {
        let u = dt.with_timezone(&Utc);
        if u >= to {
            break;
        }
        if u >= from && u >= s.start {
            out.push(u);
            if out.len() > max {
                return Ok(Err(Stop::TooMany));
            }
        }
    }
    Ok(Ok(out))
}

/// The series' occurrence starts in `[from, to)`, in order: DTSTART, the rule's, the RDATEs,
/// less the EXDATEs; `Err(Stop::TooMany)` when there are more than `max`.
pub fn occurrences(
    s: &Series,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: usize,
) -> Result<std::result::Result<Vec<DateTime<Utc>>, Stop>> {
    let mut out = BTreeSet::new();
    let within = |t: &DateTime<Utc>| *t >= from && *t < to;
    if within(&s.start) {
        out.insert(s.start);
    }
    out.extend(s.rdates.iter().filter(|t| within(t)).copied());
    if let Some(rule) = s.rule {
        match rule_occurrences(s, rule, from, to, max + s.exdates.len())? {
            Ok(v) => out.extend(v),
            Err(stop) => return Ok(Err(stop)),
        }
    }
    for x in s.exdates {
        out.remove(x);
    }
    if out.len() > max {
        return Ok(Err(Stop::TooMany));
    }
    Ok(Ok(out.into_iter().collect()))
}

/// The first occurrence strictly after `after`, if the series has one.
pub fn next_after(s: &Series, after: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
    let mut best: Option<DateTime<Utc>> = None;
    let mut consider = |t: DateTime<Utc>| {
        if t > after && !s.exdates.contains(&t) && best.is_none_or(|b| t < b) {
            best = Some(t);
        }
    };
    consider(s.start);
    for r in s.rdates {
        consider(*r);
    }
    if let Some(rule) = s.rule {
        let rtz: rrule::Tz = s.tz.into();
        let Some((rule, start)) = moved(rule, s.start.with_timezone(&rtz), after.with_timezone(&rtz))? else {
            return Ok(best);
        };
        let set = rule_set(&rule, start)?;
        for dt in (&set).into_iter().take(MAX_STEPS) {
            let u = dt.with_timezone(&Utc);
            if u > after && u >= s.start && !s.exdates.contains(&u) {
                consider(u);
                break;
            }
        }
    }
    Ok(best)
}

/// The last occurrence of a series that ends (a COUNT or UNTIL rule, or none); `None` for a
/// series without end.
pub fn last(s: &Series) -> Result<Option<DateTime<Utc>>> {
    let mut end = s.start;
    for r in s.rdates {
        end = end.max(*r);
    }
    if let Some(rule) = s.rule {
        let parsed: RRule<Unvalidated> =
            rule.parse().map_err(|e| Error::validation(format!("rrule {} does not parse: {e}", quote(rule))))?;
        if parsed.get_count().is_none() && parsed.get_until().is_none() {
            return Ok(None);
        }
        if parsed.get_count().is_none() {
            // Bounded by UNTIL: a bound is enough for the window index.
            if let Some(u) = parsed.get_until() {
                return Ok(Some(end.max(u.with_timezone(&Utc))));
            }
        }
        let rtz: rrule::Tz = s.tz.into();
        let set = rule_set(rule, s.start.with_timezone(&rtz))?;
        for dt in (&set).into_iter().take(MAX_STEPS) {
            end = end.max(dt.with_timezone(&Utc));
        }
    }
    Ok(Some(end))
}

/// How many of the rule's occurrences (DTSTART included) start before `t`.
pub fn count_before(s: &Series, t: DateTime<Utc>) -> Result<usize> {
    let Some(rule) = s.rule else { return Ok(usize::from(s.start < t)) };
    let rtz: rrule::Tz = s.tz.into();
    let set = rule_set(rule, s.start.with_timezone(&rtz))?;
    let mut n = 0;
    let mut saw_start = false;
    for dt in (&set).into_iter().take(MAX_STEPS) {
        let u = dt.with_timezone(&Utc);
        if u >= t {
            break;
        }
        saw_start |= u == s.start;
        n += 1;
    }
    if !saw_start && s.start < t {
        n += 1;
    }
    Ok(n)
}

/// `rule` with its COUNT and UNTIL replaced: UNTIL at `until` (UTC), or COUNT `count`.
pub fn with_end(rule: &str, until: Option<DateTime<Utc>>, count: Option<usize>) -> String {
    let mut parts: Vec<String> = rule
        .split(';')
        .filter(|p| {
            let k = p.split('=').next().unwrap_or("").trim().to_ascii_uppercase();
            k != "COUNT" && k != "UNTIL"
        })
        .map(str::to_owned)
        .collect();
    if let Some(u) = until {
        parts.push(format!("UNTIL={}", u.format("%Y%m%dT%H%M%SZ")));
    }
    if let Some(c) = count {
        parts.push(format!("COUNT={c}"));
    }
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn moving_the_start_keeps_the_phase() {
        // Every rule, read for a late window from the original start and from a moved start,
        // gives the same occurrences.
        let rules = [
            "FREQ=DAILY;INTERVAL=3",
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH",
            "FREQ=WEEKLY;INTERVAL=3;WKST=SU",
            "FREQ=MONTHLY;INTERVAL=5",
            "FREQ=MONTHLY;BYDAY=-1FR",
            "FREQ=MONTHLY;BYMONTHDAY=-1",
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-2",
            "FREQ=YEARLY;INTERVAL=3",
            "FREQ=YEARLY;BYWEEKNO=20;BYDAY=MO",
            "FREQ=DAILY;BYHOUR=9,17",
        ];
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        for rule in rules {
            let s = Series { rule: Some(rule), tz, start: t("2015-03-10T13:30:00Z"), exdates: &[], rdates: &[] };
            let (from, to) = (t("2030-02-01T00:00:00Z"), t("2030-08-01T00:00:00Z"));
            let fast = occurrences(&s, from, to, 2500).unwrap().unwrap();
            let rtz: rrule::Tz = tz.into();
            let slow: Vec<_> = (&rule_set(rule, s.start.with_timezone(&rtz)).unwrap())
                .into_iter()
                .map(|d| d.with_timezone(&Utc))
                .skip_while(|d| *d < from)
                .take_while(|d| *d < to)
                .collect();
            assert!(!slow.is_empty(), "{rule}");
            assert_eq!(fast, slow, "{rule}");
        }
    }

    /// Every case of `tests/fixtures/expansion.json`, computed by python-dateutil (an
    /// independent RFC 5545 implementation, `gen_expansion.py`), expands to the same instants.
    #[test]
    fn expansion_matches_an_independent_implementation() {
        let cases: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/expansion.json")).unwrap();
        let list = |v: &serde_json::Value| -> Vec<DateTime<Utc>> {
            v.as_array().unwrap().iter().map(|s| t(s.as_str().unwrap())).collect()
        };
        let cases = cases.as_array().unwrap();
        assert!(cases.len() >= 15);
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let tz: chrono_tz::Tz = c["zone"].as_str().unwrap().parse().unwrap();
            let (ex, rd) = (list(&c["exdates"]), list(&c["rdates"]));
            let rule = check_rule(c["rule"].as_str().unwrap()).unwrap().unwrap();
            let s = Series { rule: Some(&rule), tz, start: t(c["start"].as_str().unwrap()), exdates: &ex, rdates: &rd };
            let got = occurrences(&s, t(c["from"].as_str().unwrap()), t(c["to"].as_str().unwrap()), 2500).unwrap().unwrap();
            assert_eq!(got, list(&c["expected"]), "{name}");
        }
    }

    #[test]
    fn a_rule_that_ended_before_the_window_has_nothing_in_it() {
        // Weekly until November 2025, read for a window (or a next occurrence) a year later: the
        // moved start would be past UNTIL, which the rrule crate refuses to build.
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let rule = "FREQ=WEEKLY;UNTIL=20251118T200000Z;BYDAY=TU;WKST=SU";
        let s = Series { rule: Some(rule), tz, start: t("2025-10-28T19:00:00Z"), exdates: &[], rdates: &[] };
        assert_eq!(occurrences(&s, t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:00Z"), 2500).unwrap().unwrap(), Vec::<DateTime<Utc>>::new());
        assert_eq!(next_after(&s, t("2026-11-30T00:00:00Z")).unwrap(), None);
        assert_eq!(next_after(&s, t("2025-11-12T00:00:00Z")).unwrap(), Some(t("2025-11-18T20:00:00Z")));
        let got = occurrences(&s, t("2025-11-01T00:00:00Z"), t("2025-12-01T00:00:00Z"), 2500).unwrap().unwrap();
        assert_eq!(got, vec![t("2025-11-04T20:00:00Z"), t("2025-11-11T20:00:00Z"), t("2025-11-18T20:00:00Z")]);
    }

    #[test]
    fn the_cap_is_an_answer_not_a_truncation() {
        let s = Series { rule: Some("FREQ=MINUTELY"), tz: chrono_tz::Tz::UTC, start: t("2025-01-01T00:00:00Z"), exdates: &[], rdates: &[] };
        assert_eq!(occurrences(&s, t("2025-01-01T00:00:00Z"), t("2025-01-03T00:00:00Z"), 2500).unwrap(), Err(Stop::TooMany));
    }

    #[test]
    fn until_count_and_the_end_of_a_rule() {
        assert_eq!(
            with_end("FREQ=DAILY;COUNT=5;BYHOUR=9", Some(t("2025-01-01T00:00:00Z")), None),
            "FREQ=DAILY;BYHOUR=9;UNTIL=20250101T000000Z"
        );
        let tz = chrono_tz::Tz::UTC;
        let s = Series { rule: Some("FREQ=DAILY;COUNT=3"), tz, start: t("2025-01-01T09:00:00Z"), exdates: &[], rdates: &[] };
        assert_eq!(last(&s).unwrap(), Some(t("2025-01-03T09:00:00Z")));
        assert_eq!(count_before(&s, t("2025-01-02T10:00:00Z")).unwrap(), 2);
        assert_eq!(next_after(&s, t("2025-01-02T09:00:00Z")).unwrap(), Some(t("2025-01-03T09:00:00Z")));
        assert_eq!(next_after(&s, t("2025-01-03T09:00:00Z")).unwrap(), None);
        assert!(check_rule("FREQ=SOMETIMES").is_err());
        assert!(check_rule("FREQ=DAILY;COUNT=20000").is_err());
        assert_eq!(check_rule("RRULE:FREQ=DAILY").unwrap().as_deref(), Some("FREQ=DAILY"));
    }
}
