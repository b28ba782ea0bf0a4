//! Calendars and events as domain code sees them: validated documents (the bitemporal
//! documents kit's store keeps) and their mapping to the wire types.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worktruck_kit::error::quote;
use worktruck_kit::pbjson::{timestamp, to_struct};
use worktruck_kit::store::Record;
use worktruck_kit::{Error, Result};
use worktruck_proto::calendar::v1 as pb;

use crate::expand::{self, Series};
pub use worktruck_kit::check::{check_name, check_text, check_date, check_color, check_id, check_metadata, merge, check_url};

/// Most reminders on one event.
const MAX_REMINDERS: usize = 5;
/// Most EXDATEs or RDATEs on one series.
const MAX_DATES: usize = 1000;
/// Stands for "no end" in `span_end`.
pub const FOREVER: &str = "9999-12-31T23:59:59.999999Z";

/// A moment as stored in documents: fixed width, so text order is time order on both backends.
pub fn fmt_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A stored moment back.
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(Error::internal)
}

fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(Error::internal)
}

/// Validates an email address (loosely: one `@`, no spaces); `None` for an empty string.
pub fn check_email(field: &str, v: &str) -> Result<Option<String>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let ok = v.len() <= 320
        && v.split('@').count() == 2
        && v.split('@').all(|p| !p.is_empty())
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(Error::validation(format!("{field} {} is not an email address", quote(v))));
    }
    Ok(Some(v.to_lowercase()))
}

/// Enum names as stored.
pub fn event_type_name(v: i32) -> Result<&'static str> {
    Ok(match pb::EventType::try_from(v) {
        Ok(pb::EventType::Unspecified | pb::EventType::Event) => "event",
        Ok(pb::EventType::FocusTime) => "focus_time",
        Ok(pb::EventType::OutOfOffice) => "out_of_office",
        Ok(pb::EventType::WorkingLocation) => "working_location",
        Ok(pb::EventType::Reminder) => "reminder",
        Err(_) => return Err(Error::validation("event_type must be event, focus_time, out_of_office, working_location or reminder")),
    })
}

fn event_type_pb(s: &str) -> pb::EventType {
    match s {
        "focus_time" => pb::EventType::FocusTime,
        "out_of_office" => pb::EventType::OutOfOffice,
        "working_location" => pb::EventType::WorkingLocation,
        "reminder" => pb::EventType::Reminder,
        _ => pb::EventType::Event,
    }
}

/// Status as stored.
pub fn status_name(v: i32) -> Result<&'static str> {
    Ok(match pb::EventStatus::try_from(v) {
        Ok(pb::EventStatus::Unspecified | pb::EventStatus::Confirmed) => "confirmed",
        Ok(pb::EventStatus::Tentative) => "tentative",
        Ok(pb::EventStatus::Cancelled) => "cancelled",
        Err(_) => return Err(Error::validation("status must be confirmed, tentative or cancelled")),
    })
}

fn status_pb(s: &str) -> pb::EventStatus {
    match s {
        "tentative" => pb::EventStatus::Tentative,
        "cancelled" => pb::EventStatus::Cancelled,
        _ => pb::EventStatus::Confirmed,
    }
}

/// Availability as stored.
pub fn availability_name(v: i32) -> Result<&'static str> {
    Ok(match pb::Availability::try_from(v) {
        Ok(pb::Availability::Unspecified | pb::Availability::Busy) => "busy",
        Ok(pb::Availability::Free) => "free",
        Err(_) => return Err(Error::validation("availability must be busy or free")),
    })
}

/// Visibility as stored.
pub fn visibility_name(v: i32) -> Result<&'static str> {
    Ok(match pb::Visibility::try_from(v) {
        Ok(pb::Visibility::Unspecified | pb::Visibility::Default) => "default",
        Ok(pb::Visibility::Public) => "public",
        Ok(pb::Visibility::Private) => "private",
        Err(_) => return Err(Error::validation("visibility must be default, public or private")),
    })
}

fn visibility_pb(s: &str) -> pb::Visibility {
    match s {
        "public" => pb::Visibility::Public,
        "private" => pb::Visibility::Private,
        _ => pb::Visibility::Default,
    }
}

/// The stored fields of a calendar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CalendarDoc {
    /// Name.
    pub name: String,
    /// Colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// IANA time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The tenant's primary calendar.
    pub is_primary: bool,
    /// Shown by default.
    pub is_visible: bool,
    /// Free JSON.
    pub metadata: Value,
}

impl CalendarDoc {
    /// The text full-text search covers.
    pub fn search_text(&self) -> String {
        match &self.description {
            Some(d) => format!("{}\n{d}", self.name),
            None => self.name.clone(),
        }
    }

    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a calendar serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<CalendarDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// The wire calendar.
pub fn calendar_pb(tenant: &str, r: &Record, d: &CalendarDoc) -> pb::Calendar {
    pb::Calendar {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        name: d.name.clone(),
        color: d.color.clone(),
        description: d.description.clone(),
        timezone: d.timezone.clone(),
        is_primary: d.is_primary,
        is_visible: d.is_visible,
        metadata: Some(to_struct(&d.metadata)),
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        deleted_at: r.deleted_at.map(timestamp),
    }
}

/// A reminder as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReminderDoc {
    /// Minutes before the start.
    pub minutes_before: i32,
    /// popup or email.
    pub method: String,
}

/// Validates reminders.
pub fn check_reminders(r: &[pb::Reminder]) -> Result<Vec<ReminderDoc>> {
    if r.len() > MAX_REMINDERS {
        return Err(Error::validation(format!("an event has at most {MAX_REMINDERS} reminders")));
    }
    r.iter()
        .map(|x| {
            if !(0..=40_320).contains(&x.minutes_before) {
                return Err(Error::validation("reminders.minutes_before must be 0 to 40320"));
            }
            let method = match pb::ReminderMethod::try_from(x.method) {
                Ok(pb::ReminderMethod::Email) => "email",
                Ok(_) => "popup",
                Err(_) => return Err(Error::validation("reminders.method must be popup or email")),
            };
            Ok(ReminderDoc { minutes_before: x.minutes_before, method: method.into() })
        })
        .collect()
}

/// The stored fields of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EventDoc {
    /// Calendar.
    pub calendar_id: String,
    /// Title.
    pub title: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// event, focus_time, out_of_office, working_location, reminder.
    pub event_type: String,
    /// confirmed, tentative, cancelled.
    pub status: String,
    /// busy, free.
    pub availability: String,
    /// default, public, private.
    pub visibility: String,
    /// All-day.
    pub is_all_day: bool,
    /// Start of a timed event ([`fmt_ts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// End of a timed event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
    /// First day of an all-day event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// Exclusive end day of an all-day event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    /// Where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_lat: Option<f64>,
    /// Longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_lng: Option<f64>,
    /// Video call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference_url: Option<String>,
    /// Colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Reminders.
    #[serde(default)]
    pub reminders: Vec<ReminderDoc>,
    /// RRULE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rrule: Option<String>,
    /// EXDATEs ([`fmt_ts`]).
    #[serde(default)]
    pub exdates: Vec<String>,
    /// RDATEs ([`fmt_ts`]).
    #[serde(default)]
    pub rdates: Vec<String>,
    /// The original start of the occurrence an exception stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_id: Option<String>,
    /// An exception's series master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_id: Option<String>,
    /// The first occurrence after the last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_occurrence: Option<String>,
    /// iCalendar UID.
    pub ical_uid: String,
    /// iCalendar SEQUENCE.
    pub sequence: i32,
    /// Organizer contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer_id: Option<String>,
    /// Organizer email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer_email: Option<String>,
    /// Free JSON.
    pub metadata: Value,
    /// Where the event (or the whole series) starts, as a moment: window reads.
    #[serde(default)]
    pub span_start: String,
    /// Where the event (or the whole series) ends, as a moment ([`FOREVER`] for a series
    /// without end).
    #[serde(default)]
    pub span_end: String,
}

/// Fields kept for the service's own use, hidden from history entries.
pub const EVENT_HIDDEN: &[&str] = &["span_start", "span_end"];

/// One occurrence of an event: its start and end as moments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Times {
    /// Start (for an all-day event, midnight UTC of the first day: the recurrence's clock).
    pub key: DateTime<Utc>,
    /// Start as a moment in the event's zone.
    pub start: DateTime<Utc>,
    /// End as a moment in the event's zone.
    pub end: DateTime<Utc>,
}

/// Midnight of `d` in `tz` as a moment (the first moment of the day when midnight is skipped).
pub fn day_start(d: NaiveDate, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let local = |h| tz.from_local_datetime(&d.and_hms_opt(h, 0, 0).expect("an hour")).earliest();
    local(0).or_else(|| local(1)).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

impl EventDoc {
    /// The event's zone.
    pub fn tz(&self) -> Result<chrono_tz::Tz> {
        expand::check_time_zone(&self.timezone)
    }

    /// A series master: an event with a rule or added dates that is not an exception.
    pub fn is_series(&self) -> bool {
        self.series_id.is_none() && (self.rrule.is_some() || !self.rdates.is_empty())
    }

    /// The event's own start and end.
    pub fn times(&self) -> Result<Times> {
        if self.is_all_day {
            let tz = self.tz()?;
            let s = parse_date(self.start_date.as_deref().ok_or_else(|| Error::internal("all-day without a date"))?)?;
            let e = parse_date(self.end_date.as_deref().ok_or_else(|| Error::internal("all-day without an end"))?)?;
            Ok(Times {
                key: s.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
                start: day_start(s, tz),
                end: day_start(e, tz),
            })
        } else {
            let s = parse_ts(self.start_at.as_deref().ok_or_else(|| Error::internal("timed without a start"))?)?;
            let e = parse_ts(self.end_at.as_deref().ok_or_else(|| Error::internal("timed without an end"))?)?;
            Ok(Times { key: s, start: s, end: e })
        }
    }

    /// The length of one occurrence: a duration for a timed event, days for an all-day one.
    pub fn length(&self) -> Result<Duration> {
        if self.is_all_day {
            let s = parse_date(self.start_date.as_deref().unwrap_or_default())?;
            let e = parse_date(self.end_date.as_deref().unwrap_or_default())?;
            Ok(e - s)
        } else {
            let t = self.times()?;
            Ok(t.end - t.start)
        }
    }

    /// The occurrence starting at `key` (the recurrence's clock), as moments.
    pub fn occurrence(&self, key: DateTime<Utc>) -> Result<Times> {
        let len = self.length()?;
        if self.is_all_day {
            let tz = self.tz()?;
            let d = key.date_naive();
            Ok(Times { key, start: day_start(d, tz), end: day_start(d + len, tz) })
        } else {
            Ok(Times { key, start: key, end: key + len })
        }
    }

    /// Moves the event's own times to the occurrence at `key` (same length).
    pub fn move_to(&mut self, key: DateTime<Utc>) -> Result<()> {
        let len = self.length()?;
        if self.is_all_day {
            let d = key.date_naive();
            self.start_date = Some(d.format("%Y-%m-%d").to_string());
            self.end_date = Some((d + len).format("%Y-%m-%d").to_string());
        } else {
            self.start_at = Some(fmt_ts(key));
            self.end_at = Some(fmt_ts(key + len));
        }
        Ok(())
    }

    /// Stored moments of a list field.
    pub fn moments(list: &[String]) -> Result<Vec<DateTime<Utc>>> {
        list.iter().map(|s| parse_ts(s)).collect()
    }

    /// Runs `f` on the event's recurrence (the rule reckoned in the event's zone, or on dates
    /// in UTC for an all-day event).
    pub fn with_series<T>(&self, f: impl FnOnce(&Series) -> Result<T>) -> Result<T> {
        let ex = Self::moments(&self.exdates)?;
        let rd = Self::moments(&self.rdates)?;
        let tz = if self.is_all_day { chrono_tz::Tz::UTC } else { self.tz()? };
        let s = Series { rule: self.rrule.as_deref(), tz, start: self.times()?.key, exdates: &ex, rdates: &rd };
        f(&s)
    }

    /// Checks the times and recurrence together and computes the derived fields (`span_start`,
    /// `span_end`, `next_occurrence`) at `now`.
    pub fn finish(&mut self, now: DateTime<Utc>) -> Result<()> {
        self.tz()?;
        if self.is_all_day {
            if self.start_at.is_some() || self.end_at.is_some() {
                return Err(Error::validation(
                    "an all-day event has start_date and end_date, not start_at or end_at",
                ));
            }
            let s = self.start_date.as_deref().ok_or_else(|| Error::validation("an all-day event needs start_date"))?;
            let s = parse_date(s)?;
            let e = match &self.end_date {
                Some(e) => parse_date(e)?,
                None => s + Duration::days(1),
            };
            if e <= s {
                return Err(Error::validation("end_date must be after start_date (it is exclusive, as in RFC 5545)"));
            }
            self.end_date = Some(e.format("%Y-%m-%d").to_string());
        } else {
            if self.start_date.is_some() || self.end_date.is_some() {
                return Err(Error::validation("a timed event has start_at and end_at; set is_all_day for dates"));
            }
            let s = parse_ts(self.start_at.as_deref().ok_or_else(|| Error::validation("a timed event needs start_at"))?)?;
            let e = match &self.end_at {
                Some(e) => parse_ts(e)?,
                None => s + Duration::hours(1),
            };
            if e < s {
                return Err(Error::validation("end_at must not be before start_at"));
            }
            self.end_at = Some(fmt_ts(e));
        }
        match (self.location_lat, self.location_lng) {
            (None, None) => {}
            (Some(lat), Some(lng)) => {
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lng) {
                    return Err(Error::validation("location_lat must be -90 to 90 and location_lng -180 to 180"));
                }
            }
            _ => return Err(Error::validation("give location_lat and location_lng together")),
        }
        if self.exdates.len() > MAX_DATES || self.rdates.len() > MAX_DATES {
            return Err(Error::validation(format!("a series has at most {MAX_DATES} exdates and {MAX_DATES} rdates")));
        }
        if self.series_id.is_some() && (self.rrule.is_some() || !self.rdates.is_empty() || !self.exdates.is_empty()) {
            return Err(Error::validation("an exception of a series has no rrule, exdates or rdates of its own"));
        }
        if self.is_all_day {
            // Dates of an all-day series are midnights UTC.
            for d in self.exdates.iter_mut().chain(self.rdates.iter_mut()) {
                let t = parse_ts(d)?;
                *d = fmt_ts(t.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc());
            }
        }
        self.exdates.sort();
        self.exdates.dedup();
        self.rdates.sort();
        self.rdates.dedup();
        let own = self.times()?;
        self.span_start = fmt_ts(own.start);
        if self.is_series() {
            self.with_series(expand::check_fits)?;
            let last = self.with_series(expand::last)?;
            self.span_end = match last {
                Some(k) => fmt_ts(self.occurrence(k)?.end.max(own.end)),
                None => FOREVER.to_owned(),
            };
            self.next_occurrence = self.with_series(|s| expand::next_after(s, now))?.map(|k| {
                self.occurrence(k).map(|t| fmt_ts(t.start)).unwrap_or_else(|_| fmt_ts(k))
            });
        } else {
            self.span_end = fmt_ts(own.end);
            self.next_occurrence = None;
        }
        Ok(())
    }

    /// Whether `new` differs from `self` in what RFC 5545 counts as significant (times,
    /// recurrence, status) or the location.
    pub fn significant_change(&self, new: &EventDoc) -> bool {
        self.start_at != new.start_at
            || self.end_at != new.end_at
            || self.start_date != new.start_date
            || self.end_date != new.end_date
            || self.is_all_day != new.is_all_day
            || self.timezone != new.timezone
            || self.rrule != new.rrule
            || self.exdates != new.exdates
            || self.rdates != new.rdates
            || self.status != new.status
            || self.location != new.location
    }

    /// The text full-text search covers.
    pub fn search_text(&self) -> String {
        let mut s = self.title.clone();
        for part in [&self.description, &self.location].into_iter().flatten() {
            s.push('\n');
            s.push_str(part);
        }
        s
    }

    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an event serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<EventDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

fn opt_ts(s: &Option<String>) -> Option<prost_types::Timestamp> {
    s.as_deref().and_then(|s| parse_ts(s).ok()).map(timestamp)
}

/// The wire event.
pub fn event_pb(tenant: &str, r: &Record, d: &EventDoc) -> pb::Event {
    pb::Event {
        id: r.id.to_string(),
        tenant_id: tenant.to_owned(),
        calendar_id: d.calendar_id.clone(),
        title: d.title.clone(),
        description: d.description.clone(),
        event_type: event_type_pb(&d.event_type) as i32,
        status: status_pb(&d.status) as i32,
        availability: if d.availability == "free" { pb::Availability::Free } else { pb::Availability::Busy } as i32,
        visibility: visibility_pb(&d.visibility) as i32,
        is_all_day: d.is_all_day,
        start_at: opt_ts(&d.start_at),
        end_at: opt_ts(&d.end_at),
        start_date: d.start_date.clone(),
        end_date: d.end_date.clone(),
        timezone: d.timezone.clone(),
        location: d.location.clone(),
        location_lat: d.location_lat,
        location_lng: d.location_lng,
        conference_url: d.conference_url.clone(),
        color: d.color.clone(),
        reminders: d
            .reminders
            .iter()
            .map(|x| pb::Reminder {
                minutes_before: x.minutes_before,
                method: if x.method == "email" { pb::ReminderMethod::Email } else { pb::ReminderMethod::Popup } as i32,
            })
            .collect(),
        rrule: d.rrule.clone(),
        exdates: d.exdates.iter().filter_map(|s| parse_ts(s).ok()).map(timestamp).collect(),
        rdates: d.rdates.iter().filter_map(|s| parse_ts(s).ok()).map(timestamp).collect(),
        recurrence_id: opt_ts(&d.recurrence_id),
        series_id: d.series_id.clone(),
        next_occurrence: opt_ts(&d.next_occurrence),
        ical_uid: d.ical_uid.clone(),
        sequence: d.sequence,
        organizer_id: d.organizer_id.clone(),
        organizer_email: d.organizer_email.clone(),
        metadata: Some(to_struct(&d.metadata)),
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        deleted_at: r.deleted_at.map(timestamp),
        temporal: r.temporal.as_ref().map(worktruck_kit::pbjson::temporal),
    }
}

/// The stored fields of an attendee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AttendeeDoc {
    /// The event.
    pub event_id: String,
    /// Email (lower-cased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// Name shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// individual, group, resource, room.
    pub participant_type: String,
    /// chair, required, optional, non_participant.
    pub role: String,
    /// needs_action, accepted, declined, tentative, delegated.
    pub response_status: String,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl AttendeeDoc {
    /// The stored JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an attendee serialises")
    }

    /// Reads a stored document.
    pub fn from_value(v: &Value) -> Result<AttendeeDoc> {
        serde_json::from_value(v.clone()).map_err(Error::internal)
    }
}

/// Participant type as stored.
pub fn participant_name(v: i32) -> Result<&'static str> {
    Ok(match pb::ParticipantType::try_from(v) {
        Ok(pb::ParticipantType::Unspecified | pb::ParticipantType::Individual) => "individual",
        Ok(pb::ParticipantType::Group) => "group",
        Ok(pb::ParticipantType::Resource) => "resource",
        Ok(pb::ParticipantType::Room) => "room",
        Err(_) => return Err(Error::validation("participant_type must be individual, group, resource or room")),
    })
}

/// Role as stored.
pub fn role_name(v: i32) -> Result<&'static str> {
    Ok(match pb::AttendeeRole::try_from(v) {
        Ok(pb::AttendeeRole::Unspecified | pb::AttendeeRole::Required) => "required",
        Ok(pb::AttendeeRole::Chair) => "chair",
        Ok(pb::AttendeeRole::Optional) => "optional",
        Ok(pb::AttendeeRole::NonParticipant) => "non_participant",
        Err(_) => return Err(Error::validation("role must be chair, required, optional or non_participant")),
    })
}

/// Response status as stored.
pub fn response_name(v: i32) -> Result<&'static str> {
    Ok(match pb::ResponseStatus::try_from(v) {
        Ok(pb::ResponseStatus::Unspecified | pb::ResponseStatus::NeedsAction) => "needs_action",
        Ok(pb::ResponseStatus::Accepted) => "accepted",
        Ok(pb::ResponseStatus::Declined) => "declined",
        Ok(pb::ResponseStatus::Tentative) => "tentative",
        Ok(pb::ResponseStatus::Delegated) => "delegated",
        Err(_) => {
            return Err(Error::validation(
                "response_status must be needs_action, accepted, declined, tentative or delegated",
            ));
        }
    })
}

/// The wire attendee.
pub fn attendee_pb(r: &Record, d: &AttendeeDoc) -> pb::Attendee {
    pb::Attendee {
        id: r.id.to_string(),
        event_id: d.event_id.clone(),
        email: d.email.clone(),
        contact_id: d.contact_id.clone(),
        display_name: d.display_name.clone(),
        participant_type: match d.participant_type.as_str() {
            "group" => pb::ParticipantType::Group,
            "resource" => pb::ParticipantType::Resource,
            "room" => pb::ParticipantType::Room,
            _ => pb::ParticipantType::Individual,
        } as i32,
        role: match d.role.as_str() {
            "chair" => pb::AttendeeRole::Chair,
            "optional" => pb::AttendeeRole::Optional,
            "non_participant" => pb::AttendeeRole::NonParticipant,
            _ => pb::AttendeeRole::Required,
        } as i32,
        response_status: match d.response_status.as_str() {
            "accepted" => pb::ResponseStatus::Accepted,
            "declined" => pb::ResponseStatus::Declined,
            "tentative" => pb::ResponseStatus::Tentative,
            "delegated" => pb::ResponseStatus::Delegated,
            _ => pb::ResponseStatus::NeedsAction,
        } as i32,
        comment: d.comment.clone(),
        version: r.version,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}
