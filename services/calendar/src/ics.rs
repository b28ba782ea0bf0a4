//! iCalendar (RFC 5545) export: each event a VEVENT (RRULE, EXDATE, RDATE, attendees, VALARMs),
//! each exception a VEVENT with the series' UID and a RECURRENCE-ID, written as text and then
//! read and written again by the `calcard` crate, which adds the VTIMEZONE of every zone used
//! and folds the lines.

use calcard::{Entry, Parser};
use chrono::{DateTime, NaiveDate, Utc};
use worktruck_kit::{Error, Result};

use crate::domain::{AttendeeDoc, EventDoc, parse_ts};

/// One event to export.
pub struct Item<'a> {
    /// The event.
    pub doc: &'a EventDoc,
    /// When it last changed (DTSTAMP).
    pub updated_at: DateTime<Utc>,
    /// Its attendees.
    pub attendees: Vec<&'a AttendeeDoc>,
    /// The UID of its series, for an exception.
    pub series_uid: Option<&'a str>,
}

/// TEXT value escaping (RFC 5545 §3.3.11).
fn text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
        .replace("\r\n", "\\n")
        .replace(['\n', '\r'], "\\n")
}

/// A parameter value, quoted when it holds `:`, `;` or `,`.
fn param(s: &str) -> String {
    let s = s.replace('"', "'");
    if s.contains([':', ';', ',']) {
        format!("\"{s}\"")
    } else {
        s
    }
}

fn date(s: &str) -> Result<String> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(Error::internal)?;
    Ok(d.format("%Y%m%d").to_string())
}

/// `NAME;TZID=zone:local` (or `NAME:…Z` in UTC) for moments of a timed event, `NAME;VALUE=DATE:`
/// for an all-day one (its moments are midnight UTC of the date).
fn moments(out: &mut String, name: &str, doc: &EventDoc, list: &[DateTime<Utc>]) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    if doc.is_all_day {
        let v: Vec<String> = list
            .iter()
            .map(|t| t.format("%Y%m%d").to_string())
            .collect();
        out.push_str(&format!("{name};VALUE=DATE:{}\r\n", v.join(",")));
        return Ok(());
    }
    let tz = doc.tz()?;
    if tz == chrono_tz::Tz::UTC {
        let v: Vec<String> = list
            .iter()
            .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
            .collect();
        out.push_str(&format!("{name}:{}\r\n", v.join(",")));
    } else {
        let v: Vec<String> = list
            .iter()
            .map(|t| t.with_timezone(&tz).format("%Y%m%dT%H%M%S").to_string())
            .collect();
        out.push_str(&format!("{name};TZID={}:{}\r\n", tz.name(), v.join(",")));
    }
    Ok(())
}

/// An all-day rule with its UNTIL as a DATE, as RFC 5545 wants with a DATE DTSTART (a split
/// stores UNTIL as the UTC moment one second before the occurrence's midnight).
fn date_until(rule: &str) -> String {
    rule.split(';')
        .map(|p| match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("UNTIL") && v.len() > 8 => {
                format!("UNTIL={}", &v[..8])
            }
            _ => p.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn vevent(out: &mut String, item: &Item) -> Result<()> {
    let d = item.doc;
    out.push_str("BEGIN:VEVENT\r\n");
    out.push_str(&format!(
        "UID:{}\r\n",
        text(item.series_uid.unwrap_or(&d.ical_uid))
    ));
    out.push_str(&format!(
        "DTSTAMP:{}\r\n",
        item.updated_at.format("%Y%m%dT%H%M%SZ")
    ));
    out.push_str(&format!("SEQUENCE:{}\r\n", d.sequence));
    if d.is_all_day {
        out.push_str(&format!(
            "DTSTART;VALUE=DATE:{}\r\n",
            date(d.start_date.as_deref().unwrap_or_default())?
        ));
        out.push_str(&format!(
            "DTEND;VALUE=DATE:{}\r\n",
            date(d.end_date.as_deref().unwrap_or_default())?
        ));
    } else {
        let t = d.times()?;
        moments(out, "DTSTART", d, &[t.start])?;
        moments(out, "DTEND", d, &[t.end])?;
    }
    if let Some(rid) = &d.recurrence_id {
        moments(out, "RECURRENCE-ID", d, &[parse_ts(rid)?])?;
    }
    out.push_str(&format!("SUMMARY:{}\r\n", text(&d.title)));
    if let Some(v) = &d.description {
        out.push_str(&format!("DESCRIPTION:{}\r\n", text(v)));
    }
    if let Some(v) = &d.location {
        out.push_str(&format!("LOCATION:{}\r\n", text(v)));
    }
    if let (Some(lat), Some(lng)) = (d.location_lat, d.location_lng) {
        out.push_str(&format!("GEO:{lat};{lng}\r\n"));
    }
    if let Some(v) = &d.conference_url {
        out.push_str(&format!("URL:{v}\r\n"));
    }
    out.push_str(&format!("STATUS:{}\r\n", d.status.to_ascii_uppercase()));
    out.push_str(&format!(
        "TRANSP:{}\r\n",
        if d.availability == "free" {
            "TRANSPARENT"
        } else {
            "OPAQUE"
        }
    ));
    match d.visibility.as_str() {
        "public" => out.push_str("CLASS:PUBLIC\r\n"),
        "private" => out.push_str("CLASS:PRIVATE\r\n"),
        _ => {}
    }
    if let Some(rule) = &d.rrule {
        let rule = if d.is_all_day {
            date_until(rule)
        } else {
            rule.clone()
        };
        out.push_str(&format!("RRULE:{rule}\r\n"));
    }
    moments(out, "EXDATE", d, &EventDoc::moments(&d.exdates)?)?;
    moments(out, "RDATE", d, &EventDoc::moments(&d.rdates)?)?;
    if let Some(e) = &d.organizer_email {
        out.push_str(&format!("ORGANIZER:mailto:{e}\r\n"));
    }
    for a in &item.attendees {
        let mut line = String::from("ATTENDEE");
        if let Some(n) = &a.display_name {
            line.push_str(&format!(";CN={}", param(n)));
        }
        let cutype = a.participant_type.to_ascii_uppercase();
        let role = match a.role.as_str() {
            "chair" => "CHAIR",
            "optional" => "OPT-PARTICIPANT",
            "non_participant" => "NON-PARTICIPANT",
            _ => "REQ-PARTICIPANT",
        };
        let partstat = a.response_status.replace('_', "-").to_ascii_uppercase();
        line.push_str(&format!(";CUTYPE={cutype};ROLE={role};PARTSTAT={partstat}"));
        match (&a.email, &a.contact_id) {
            (Some(e), _) => line.push_str(&format!(":mailto:{e}")),
            (None, Some(c)) => line.push_str(&format!(":urn:uuid:{c}")),
            (None, None) => continue,
        }
        out.push_str(&line);
        out.push_str("\r\n");
    }
    for r in &d.reminders {
        let action = if r.method == "email" {
            "EMAIL"
        } else {
            "DISPLAY"
        };
        out.push_str("BEGIN:VALARM\r\n");
        out.push_str(&format!(
            "ACTION:{action}\r\nTRIGGER:-PT{}M\r\n",
            r.minutes_before
        ));
        out.push_str(&format!(
            "SUMMARY:{}\r\nDESCRIPTION:{}\r\n",
            text(&d.title),
            text(&d.title)
        ));
        if action == "EMAIL"
            && let Some(e) = &d.organizer_email
        {
            out.push_str(&format!("ATTENDEE:mailto:{e}\r\n"));
        }
        out.push_str("END:VALARM\r\n");
    }
    out.push_str("END:VEVENT\r\n");
    Ok(())
}

/// A VCALENDAR of `items` (named `name` when given), with the VTIMEZONEs of the zones used.
pub fn calendar(name: Option<&str>, items: &[Item]) -> Result<String> {
    let mut out = String::from(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Worktruck//Calendar//EN\r\nCALSCALE:GREGORIAN\r\n",
    );
    if let Some(n) = name {
        out.push_str(&format!("X-WR-CALNAME:{}\r\n", text(n)));
    }
    for item in items {
        vevent(&mut out, item)?;
    }
    out.push_str("END:VCALENDAR\r\n");
    match Parser::new(&out).entry() {
        Entry::ICalendar(mut ical) => {
            ical.add_missing_timezones();
            Ok(ical.to_string())
        }
        other => Err(Error::internal(format!(
            "the iCalendar written does not read back: {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_all_day_until_is_a_date_and_text_is_escaped() {
        assert_eq!(
            super::date_until("FREQ=DAILY;UNTIL=20250309T235959Z;BYDAY=MO"),
            "FREQ=DAILY;UNTIL=20250309;BYDAY=MO"
        );
        assert_eq!(
            super::date_until("FREQ=DAILY;COUNT=3"),
            "FREQ=DAILY;COUNT=3"
        );
        assert_eq!(super::text("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
    }
}
