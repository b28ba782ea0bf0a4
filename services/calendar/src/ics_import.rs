//! iCalendar (RFC 5545) import: the `calcard` crate reads the file; this module turns each VEVENT
//! into the create request the API takes (so an imported event is validated exactly as a created
//! one), with its attendees, and leaves what cannot be read as a skip with its reason.
//!
//! Time zones: a TZID is resolved through the file's own VTIMEZONEs and calcard's table, which
//! knows IANA names, the Windows names Outlook writes ("Eastern Standard Time"),
//! `X-LIC-LOCATION` and `X-MICROSOFT-CDO-TZID`; a UTC time (`Z`) stays in UTC; a floating time
//! is read in the calendar's zone (or the file's `X-WR-TIMEZONE`, as Google writes it).

use calcard::common::PartialDateTime;
use calcard::common::timezone::Tz;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarEntry, ICalendarParameterName,
    ICalendarProperty, ICalendarValue,
};
use calcard::{Entry, Parser};
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use prost_types::Timestamp;
use worktruck_kit::{Error, Result};
use worktruck_proto::calendar::v1 as pb;

/// Most VEVENTs one import reads.
pub const MAX_IMPORT_EVENTS: usize = 10_000;

/// One VEVENT, read.
pub struct Read {
    /// UID.
    pub uid: String,
    /// RECURRENCE-ID, for an occurrence of a series.
    pub recurrence_id: Option<DateTime<Utc>>,
    /// SEQUENCE (0 when absent).
    pub sequence: i32,
    /// STATUS:CANCELLED.
    pub cancelled: bool,
    /// The event as the create RPC takes it.
    pub event: pb::CreateEventRequest,
    /// ATTENDEEs.
    pub attendees: Vec<Attendee>,
}

/// An ATTENDEE line.
pub struct Attendee {
    /// The address (without `mailto:`).
    pub email: String,
    /// CN.
    pub name: Option<String>,
    /// individual, group, resource, room.
    pub participant_type: &'static str,
    /// chair, required, optional, non_participant.
    pub role: &'static str,
    /// needs_action, accepted, declined, tentative, delegated.
    pub response_status: &'static str,
}

/// A VEVENT that could not be read.
pub struct Unread {
    /// Its UID, when it had one.
    pub uid: String,
    /// Its RECURRENCE-ID, when it could be read.
    pub recurrence_id: Option<DateTime<Utc>>,
    /// Why.
    pub reason: String,
}

/// Reads every VEVENT of every VCALENDAR in `text`; a floating time is in `zone`. An error only
/// for a file that is not iCalendar at all or holds too many events.
pub fn read(text: &str, zone: chrono_tz::Tz) -> Result<(Vec<Read>, Vec<Unread>)> {
    let mut parser = Parser::new(text);
    let (mut read, mut unread) = (Vec::new(), Vec::new());
    let mut calendars = 0;
    loop {
        match parser.entry() {
            Entry::ICalendar(ical) => {
                calendars += 1;
                read_calendar(&ical, zone, &mut read, &mut unread)?;
            }
            Entry::Eof => break,
            Entry::VCard(_) => return Err(Error::validation("the file holds a vCard, not iCalendar")),
            Entry::InvalidLine(line) if calendars == 0 => {
                return Err(Error::validation(format!(
                    "the file is not iCalendar: it must begin with BEGIN:VCALENDAR, found {}",
                    worktruck_kit::error::quote(&line)
                )));
            }
            Entry::InvalidLine(_) => continue,
            other => return Err(Error::validation(format!("the file is not well-formed iCalendar: {}", describe(&other)))),
        }
    }
    if calendars == 0 {
        return Err(Error::validation("the file holds no VCALENDAR"));
    }
    Ok((read, unread))
}

fn describe(e: &Entry) -> String {
    match e {
        Entry::UnexpectedComponentEnd { expected, found } => {
            format!("END:{} where END:{} was expected", found.as_str(), expected.as_str())
        }
        Entry::UnterminatedComponent(c) => format!("BEGIN:{c} is never ended"),
        Entry::TooManyComponents => "too many components".into(),
        _ => "unexpected content".into(),
    }
}

fn read_calendar(ical: &ICalendar, zone: chrono_tz::Tz, read: &mut Vec<Read>, unread: &mut Vec<Unread>) -> Result<()> {
    let resolver = ical.build_owned_tz_resolver();
    // Google writes the calendar's zone as X-WR-TIMEZONE; floating times are in it.
    let zone = ical
        .components
        .iter()
        .find(|c| c.component_type == ICalendarComponentType::VCalendar)
        .and_then(|c| {
            c.entries.iter().find_map(|e| match &e.name {
                ICalendarProperty::Other(n) if n.eq_ignore_ascii_case("X-WR-TIMEZONE") => {
                    e.values.first().and_then(|v| v.as_text()).and_then(|z| z.parse::<chrono_tz::Tz>().ok())
                }
                _ => None,
            })
        })
        .unwrap_or(zone);
    let zones = Zones { resolve: &|name: &str| resolver.resolve(name), floating: zone };
    for (index, comp) in ical.components.iter().enumerate() {
        if comp.component_type != ICalendarComponentType::VEvent {
            continue;
        }
        if read.len() + unread.len() >= MAX_IMPORT_EVENTS {
            return Err(Error::validation(format!("an import reads at most {MAX_IMPORT_EVENTS} VEVENTs")));
        }
        let uid = comp.uid().unwrap_or_default().trim().to_owned();
        match vevent(ical, index as u32, comp, &uid, &zones) {
            Ok(r) => read.push(r),
            Err((recurrence_id, reason)) => unread.push(Unread { uid, recurrence_id, reason }),
        }
    }
    Ok(())
}

struct Zones<'a> {
    resolve: &'a dyn Fn(&str) -> Option<Tz>,
    floating: chrono_tz::Tz,
}

/// A DATE or DATE-TIME value as read.
enum When {
    Date(NaiveDate),
    Time { at: DateTime<Utc>, zone: Option<chrono_tz::Tz> },
}

impl Zones<'_> {
    /// The zone a TZID names, as an IANA zone when it is one (a fixed offset is not).
    fn tzid(&self, e: &ICalendarEntry) -> std::result::Result<Option<Tz>, String> {
        match e.tz_id() {
            None => Ok(None),
            Some(id) => (self.resolve)(id).map(Some).ok_or_else(|| format!("the time zone {id:?} is not known")),
        }
    }

    fn when(&self, e: &ICalendarEntry, v: &PartialDateTime) -> std::result::Result<When, String> {
        let bad = || format!("{} has an invalid date or time", e.name.as_str());
        let dt = v.to_date_time().ok_or_else(bad)?;
        if !v.has_time() {
            return Ok(When::Date(dt.date_time.date()));
        }
        if let Some(offset) = dt.offset {
            let at = offset.from_local_datetime(&dt.date_time).single().ok_or_else(bad)?.with_timezone(&Utc);
            return Ok(When::Time { at, zone: (offset.local_minus_utc() == 0).then_some(chrono_tz::UTC) });
        }
        match self.tzid(e)? {
            Some(Tz::Tz(z)) => Ok(When::Time { at: local(z, dt.date_time).ok_or_else(bad)?, zone: Some(z) }),
            Some(Tz::Fixed(offset)) => {
                let at = offset.from_local_datetime(&dt.date_time).single().ok_or_else(bad)?.with_timezone(&Utc);
                Ok(When::Time { at, zone: None })
            }
            Some(Tz::Floating) | None => {
                Ok(When::Time { at: local(self.floating, dt.date_time).ok_or_else(bad)?, zone: None })
            }
        }
    }
}

/// A local time in `z`: the earlier of an ambiguous one, and for one a spring-forward gap
/// skips, the moment an hour later (as RFC 5545 §3.3.5 reads it).
fn local(z: chrono_tz::Tz, t: NaiveDateTime) -> Option<DateTime<Utc>> {
    z.from_local_datetime(&t)
        .earliest()
        .or_else(|| z.from_local_datetime(&(t + Duration::hours(1))).earliest())
        .map(|d| d.with_timezone(&Utc))
}

fn ts(t: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

fn text(e: &ICalendarEntry) -> Option<String> {
    e.values.first().and_then(|v| v.as_text()).map(str::to_owned).filter(|s| !s.trim().is_empty())
}

fn param<'a>(e: &'a ICalendarEntry, name: &ICalendarParameterName) -> Option<&'a str> {
    e.parameters(name).find_map(|v| v.as_text())
}

fn vevent(
    ical: &ICalendar,
    index: u32,
    comp: &ICalendarComponent,
    uid: &str,
    zones: &Zones,
) -> std::result::Result<Read, (Option<DateTime<Utc>>, String)> {
    // The RECURRENCE-ID first, so every later skip can name the occurrence.
    let rid = match comp.property(&ICalendarProperty::RecurrenceId) {
        Some(e) => {
            let v = e.values.first().and_then(|v| v.as_partial_date_time()).ok_or((None, "RECURRENCE-ID has no date".to_owned()))?;
            Some(match zones.when(e, v).map_err(|r| (None, r))? {
                When::Date(d) => midnight(d),
                When::Time { at, .. } => at,
            })
        }
        None => None,
    };
    let fail = |reason: String| (rid, reason);
    if uid.is_empty() {
        return Err(fail("the VEVENT has no UID".into()));
    }
    let mut ev = pb::CreateEventRequest { ical_uid: Some(uid.to_owned()), ..Default::default() };
    let mut sequence = 0;
    let mut cancelled = false;
    let (mut start, mut end, mut duration) = (None, None, None);
    let mut attendees = Vec::new();
    for e in &comp.entries {
        match &e.name {
            ICalendarProperty::Summary => ev.title = text(e).unwrap_or_default(),
            ICalendarProperty::Description => ev.description = text(e),
            ICalendarProperty::Location => ev.location = text(e),
            ICalendarProperty::Url => ev.conference_url = text(e).filter(|u| u.starts_with("https://") || u.starts_with("http://")),
            ICalendarProperty::Sequence => {
                sequence = e.values.first().and_then(|v| v.as_integer()).unwrap_or(0).clamp(0, i32::MAX as i64) as i32;
            }
            ICalendarProperty::Status => match text(e).unwrap_or_default().to_ascii_uppercase().as_str() {
                "TENTATIVE" => ev.status = pb::EventStatus::Tentative as i32,
                "CANCELLED" => {
                    cancelled = true;
                    ev.status = pb::EventStatus::Cancelled as i32;
                }
                _ => ev.status = pb::EventStatus::Confirmed as i32,
            },
            ICalendarProperty::Transp => {
                let free = text(e).is_some_and(|t| t.eq_ignore_ascii_case("TRANSPARENT"));
                ev.availability = if free { pb::Availability::Free } else { pb::Availability::Busy } as i32;
            }
            ICalendarProperty::Class => {
                ev.visibility = match text(e).unwrap_or_default().to_ascii_uppercase().as_str() {
                    "PUBLIC" => pb::Visibility::Public,
                    "PRIVATE" | "CONFIDENTIAL" => pb::Visibility::Private,
                    _ => pb::Visibility::Default,
                } as i32;
            }
            ICalendarProperty::Geo => {
                let nums: Vec<f64> = match e.values.as_slice() {
                    [ICalendarValue::Float(a), ICalendarValue::Float(b)] => vec![*a, *b],
                    _ => text(e).map(|t| t.split([';', ',']).filter_map(|p| p.trim().parse().ok()).collect()).unwrap_or_default(),
                };
                if let [lat, lng] = nums[..] {
                    ev.location_lat = Some(lat);
                    ev.location_lng = Some(lng);
                }
            }
            ICalendarProperty::Dtstart => {
                let v = e.values.first().and_then(|v| v.as_partial_date_time()).ok_or_else(|| fail("DTSTART has no date".into()))?;
                start = Some(zones.when(e, v).map_err(fail)?);
            }
            ICalendarProperty::Dtend => {
                let v = e.values.first().and_then(|v| v.as_partial_date_time()).ok_or_else(|| fail("DTEND has no date".into()))?;
                end = Some(zones.when(e, v).map_err(fail)?);
            }
            ICalendarProperty::Duration => {
                if let Some(ICalendarValue::Duration(d)) = e.values.first() {
                    duration = Some(Duration::seconds(d.as_seconds()));
                }
            }
            ICalendarProperty::Rrule => {
                if ev.rrule.is_some() {
                    return Err(fail("a VEVENT with more than one RRULE is not supported".into()));
                }
                match e.values.first() {
                    Some(ICalendarValue::RecurrenceRule(r)) => ev.rrule = Some(r.to_string()),
                    _ => return Err(fail("RRULE could not be read".into())),
                }
            }
            ICalendarProperty::Exdate | ICalendarProperty::Rdate => {
                let mut list = Vec::new();
                for v in &e.values {
                    match v {
                        ICalendarValue::PartialDateTime(p) => list.push(match zones.when(e, p).map_err(fail)? {
                            When::Date(d) => midnight(d),
                            When::Time { at, .. } => at,
                        }),
                        // RDATE;VALUE=PERIOD is not kept (an occurrence's length is the series').
                        ICalendarValue::Period(_) => {}
                        _ => return Err(fail(format!("{} has a value that is not a date", e.name.as_str()))),
                    }
                }
                let into = if e.name == ICalendarProperty::Exdate { &mut ev.exdates } else { &mut ev.rdates };
                into.extend(list.into_iter().map(ts));
            }
            ICalendarProperty::Organizer => {
                ev.organizer_email = text(e).map(|a| calcard::icalendar::utils::strip_mailto_scheme(&a).to_owned()).filter(|a| a.contains('@'));
            }
            ICalendarProperty::Attendee => {
                if let Some(a) = attendee(e) {
                    attendees.push(a);
                }
            }
            _ => {}
        }
    }
    if ev.title.trim().is_empty() {
        ev.title = "(no title)".into();
    }
    match start {
        None => return Err(fail("the VEVENT has no DTSTART".into())),
        Some(When::Date(s)) => {
            let e = match (end, duration) {
                (Some(When::Date(e)), _) => e,
                (Some(When::Time { .. }), _) => return Err(fail("DTSTART is a DATE but DTEND a DATE-TIME".into())),
                (None, Some(d)) => s + Duration::days(d.num_days().max(1)),
                (None, None) => s + Duration::days(1),
            };
            ev.is_all_day = true;
            ev.start_date = Some(s.format("%Y-%m-%d").to_string());
            ev.end_date = Some(e.format("%Y-%m-%d").to_string());
        }
        Some(When::Time { at, zone }) => {
            let e = match (end, duration) {
                (Some(When::Time { at, .. }), _) => at,
                (Some(When::Date(_)), _) => return Err(fail("DTSTART is a DATE-TIME but DTEND a DATE".into())),
                (None, Some(d)) => at + d,
                (None, None) => at,
            };
            ev.start_at = Some(ts(at));
            ev.end_at = Some(ts(e));
            ev.timezone = zone.map(|z| z.name().to_owned());
        }
    }
    ev.reminders = alarms(ical, index);
    Ok(Read { uid: uid.to_owned(), recurrence_id: rid, sequence, cancelled, event: ev, attendees })
}

fn attendee(e: &ICalendarEntry) -> Option<Attendee> {
    let email = calcard::icalendar::utils::strip_mailto_scheme(e.values.first()?.as_text()?).trim().to_lowercase();
    if !email.contains('@') {
        return None;
    }
    let upper = |n: ICalendarParameterName| param(e, &n).map(str::to_ascii_uppercase).unwrap_or_default();
    Some(Attendee {
        email,
        name: param(e, &ICalendarParameterName::Cn).map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned),
        participant_type: match upper(ICalendarParameterName::Cutype).as_str() {
            "GROUP" => "group",
            "RESOURCE" => "resource",
            "ROOM" => "room",
            _ => "individual",
        },
        role: match upper(ICalendarParameterName::Role).as_str() {
            "CHAIR" => "chair",
            "OPT-PARTICIPANT" => "optional",
            "NON-PARTICIPANT" => "non_participant",
            _ => "required",
        },
        response_status: match upper(ICalendarParameterName::Partstat).as_str() {
            "ACCEPTED" => "accepted",
            "DECLINED" => "declined",
            "TENTATIVE" => "tentative",
            "DELEGATED" => "delegated",
            _ => "needs_action",
        },
    })
}

/// The VALARMs of the VEVENT at `index` that fire a relative time before its start, as
/// reminders (the first five; others, after the start or at a fixed time, are not kept).
fn alarms(ical: &ICalendar, index: u32) -> Vec<pb::Reminder> {
    let mut out = Vec::new();
    for alarm in ical.alarms_for_id(index) {
        let Some(trigger) = alarm.property(&ICalendarProperty::Trigger) else { continue };
        let related_end = param(trigger, &ICalendarParameterName::Related).is_some_and(|r| r.eq_ignore_ascii_case("END"));
        let Some(ICalendarValue::Duration(d)) = trigger.values.first() else { continue };
        let before = -d.as_seconds();
        if related_end || !(0..=40_320 * 60).contains(&before) {
            continue;
        }
        let email = alarm
            .property(&ICalendarProperty::Action)
            .and_then(text)
            .is_some_and(|a| a.eq_ignore_ascii_case("EMAIL"));
        out.push(pb::Reminder {
            minutes_before: (before / 60) as i32,
            method: if email { pb::ReminderMethod::Email } else { pb::ReminderMethod::Popup } as i32,
        });
        if out.len() == 5 {
            break;
        }
    }
    out
}

