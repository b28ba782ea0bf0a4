//! The `worktruck.calendar.v1.CalendarService` gRPC implementation over kit's bitemporal store
//! (entities `calendar`, `event`) and the window reads of `queries`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::Verifier;
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::links::{Links, Source};
use worktruck_kit::outbox::Relay;
use worktruck_kit::pbjson::{from_struct, opt_datetime, timestamp, uuid};
use worktruck_kit::rpc::{self, Caller};
use worktruck_kit::store::{ListQuery, Record, Store, Write, search_query};
use worktruck_kit::context::METADATA_KEY;
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::contacts::v1 as contacts_pb;
use worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient;
use worktruck_proto::calendar::v1 as pb;
use worktruck_proto::calendar::v1::calendar_service_server::CalendarService;
use worktruck_proto::common::v1 as common;

use crate::domain::{
    AttendeeDoc, attendee_pb, participant_name, response_name, role_name,
    CalendarDoc, EVENT_HIDDEN, EventDoc, availability_name, day_start, calendar_pb, check_color, check_date, check_email,
    check_id, check_metadata, check_name, check_reminders, check_text, check_url, event_pb, event_type_name, fmt_ts,
    merge, parse_ts, status_name, visibility_name,
};
use crate::availability;
use crate::ics;
use crate::ics_import;
use crate::expand::{self, Stop};
use crate::queries::{self, Window};

/// Events in kit's store.
pub const EVENTS: Store = Store::new("event");
/// Calendars in kit's store.
pub const CALENDARS: Store = Store::new("calendar");
/// Attendees in kit's store.
pub const ATTENDEES: Store = Store::new("attendee");
/// Most attendees on one event.
const MAX_ATTENDEES: usize = 500;

/// Most occurrences one expanded list answers.
pub const MAX_INSTANCES: usize = 2500;
/// Longest window of an expanded list, in days.
pub const MAX_WINDOW_DAYS: i64 = 366;
/// Most calendars one availability check names.
const MAX_AVAILABILITY_CALENDARS: usize = 50;
/// Most events one iCalendar export writes.
const MAX_EXPORT_EVENTS: usize = 10_000;
/// Most events a read of the past walks.
const MAX_PAST_EVENTS: usize = 10_000;

/// The calendar service.
#[derive(Clone)]
pub struct Calendar {
    db: Db,
    verifier: Verifier,
    relay: Relay,
    links: Links,
    contacts: ContactsServiceClient<Channel>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

fn offset_of(cursor: Option<&str>, scope: &str) -> Result<i64> {
    Ok(match cursor::decode_opt(cursor, scope)? {
        None => 0,
        Some(Cursor::Number(n)) if n >= 0 => n,
        Some(_) => return Err(Error::invalid("invalid cursor for this listing")),
    })
}

/// `[s, e)` meets `[from, to)` (a zero-length event at `from` counts).
fn overlaps(s: DateTime<Utc>, e: DateTime<Utc>, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    s < to && (e > from || (s == e && s >= from))
}

fn scope_of(v: i32) -> Result<pb::UpdateScope> {
    match pb::UpdateScope::try_from(v) {
        Ok(pb::UpdateScope::Unspecified) => Ok(pb::UpdateScope::All),
        Ok(s) => Ok(s),
        Err(_) => Err(Error::validation("update_scope must be this, this_and_following or all")),
    }
}

fn render(c: &Caller, r: &Record) -> Result<pb::Event> {
    Ok(event_pb(&c.tenant.to_string(), r, &EventDoc::from_value(&r.doc)?))
}

fn render_calendar(c: &Caller, r: &Record) -> Result<pb::Calendar> {
    Ok(calendar_pb(&c.tenant.to_string(), r, &CalendarDoc::from_value(&r.doc)?))
}

/// The occurrence of the series `doc` whose original start is `rid` (400 when it has none).
fn check_occurrence(doc: &EventDoc, rid: DateTime<Utc>) -> Result<()> {
    let found = doc.with_series(|s| expand::occurrences(s, rid, rid + Duration::microseconds(1), 1))?;
    match found {
        Ok(v) if v.contains(&rid) => Ok(()),
        _ => Err(Error::validation(format!("recurrence_id {} is not an occurrence of the series", fmt_ts(rid)))),
    }
}

/// The occurrences (and events) of `recs` in `[from, to)`, by start: series expanded in their
/// zones, exceptions in place of the occurrences they stand for, cancelled exceptions left out.
fn expand_window(
    c: &Caller,
    recs: &[Record],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<pb::Event>> {
    let docs: Vec<(&Record, EventDoc)> =
        recs.iter().map(|r| EventDoc::from_value(&r.doc).map(|d| (r, d))).collect::<Result<_>>()?;
    let mut replaced: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (_, d) in &docs {
        if let (Some(s), Some(rid)) = (&d.series_id, &d.recurrence_id) {
            replaced.entry(s.as_str()).or_default().insert(rid.as_str());
        }
    }
    let tenant = c.tenant.to_string();
    let too_many = || {
        Error::invalid(format!(
            "the window holds more than {MAX_INSTANCES} occurrences: ask for a shorter window or one calendar"
        ))
    };
    let mut out: Vec<(DateTime<Utc>, pb::Event)> = Vec::new();
    for (r, d) in &docs {
        if d.is_series() {
            let len = d.length()?;
            let (kf, kt) = if d.is_all_day {
                (from - len - Duration::days(2), to + Duration::days(2))
            } else {
                (from - len, to)
            };
            let keys = match d.with_series(|s| expand::occurrences(s, kf, kt, MAX_INSTANCES * 2))? {
                Ok(k) => k,
                Err(Stop::TooMany) => return Err(too_many()),
            };
            let id = r.id.to_string();
            let skip = replaced.get(id.as_str());
            let base = event_pb(&tenant, r, d);
            for key in keys {
                let stamp = fmt_ts(key);
                if skip.is_some_and(|s| s.contains(stamp.as_str())) {
                    continue;
                }
                let t = d.occurrence(key)?;
                if !overlaps(t.start, t.end, from, to) {
                    continue;
                }
                let mut inst = base.clone();
                let mut moved = d.clone();
                moved.move_to(key)?;
                inst.start_at = moved.start_at.as_deref().map(parse_ts).transpose()?.map(worktruck_kit::pbjson::timestamp);
                inst.end_at = moved.end_at.as_deref().map(parse_ts).transpose()?.map(worktruck_kit::pbjson::timestamp);
                inst.start_date = moved.start_date.clone();
                inst.end_date = moved.end_date.clone();
                inst.recurrence_id = Some(worktruck_kit::pbjson::timestamp(key));
                inst.series_id = Some(id.clone());
                inst.rrule = None;
                inst.exdates.clear();
                inst.rdates.clear();
                inst.next_occurrence = None;
                out.push((t.start, inst));
                if out.len() > MAX_INSTANCES {
                    return Err(too_many());
                }
            }
        } else {
            if d.series_id.is_some() && d.status == "cancelled" {
                continue;
            }
            let t = d.times()?;
            if overlaps(t.start, t.end, from, to) {
                out.push((t.start, event_pb(&tenant, r, d)));
            }
        }
    }
    if out.len() > MAX_INSTANCES {
        return Err(too_many());
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

/// The live events of `calendar` (or every calendar) that meet `[from, to)`, with every
/// exception of the series among them.
async fn window_records(
    tx: &mut Tx,
    c: &Caller,
    calendar: Option<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Record>> {
    let w = Window { calendar, from: Some(fmt_ts(from)), to: Some(fmt_ts(to)), search: None };
    let mut recs = queries::events(tx, c.tenant, &w, 0, None).await?;
    let series: Vec<Uuid> = recs
        .iter()
        .filter(|r| EventDoc::from_value(&r.doc).map(|d| d.is_series()).unwrap_or(false))
        .map(|r| r.id)
        .collect();
    let seen: HashSet<Uuid> = recs.iter().map(|r| r.id).collect();
    let extra = queries::exceptions(tx, c.tenant, &series).await?;
    recs.extend(extra.into_iter().filter(|r| !seen.contains(&r.id)));
    Ok(recs)
}

/// An expanded occurrence's start and end as moments (an all-day one from midnight of its
/// first day to midnight after its last, in the event's zone).
fn instance_span(e: &pb::Event) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    if e.is_all_day {
        let tz = expand::check_time_zone(&e.timezone)?;
        let date = |v: &Option<String>| -> Result<chrono::NaiveDate> {
            chrono::NaiveDate::parse_from_str(v.as_deref().unwrap_or_default(), "%Y-%m-%d").map_err(Error::internal)
        };
        Ok((day_start(date(&e.start_date)?, tz), day_start(date(&e.end_date)?, tz)))
    } else {
        let at = |t: &Option<prost_types::Timestamp>, f: &str| -> Result<DateTime<Utc>> {
            worktruck_kit::pbjson::datetime(t.as_ref().ok_or_else(|| Error::internal("timed without times"))?, f)
        };
        Ok((at(&e.start_at, "start_at")?, at(&e.end_at, "end_at")?))
    }
}

/// Applies the changes of `r` to `doc` (not the derived fields: [`EventDoc::finish`] does).
fn edit(doc: &mut EventDoc, r: &pb::UpdateEventRequest) -> Result<()> {
    if let Some(t) = &r.title {
        doc.title = check_name("title", t, 500)?;
    }
    if let Some(d) = &r.description {
        doc.description = check_text("description", d, 100_000)?;
    }
    if r.event_type != 0 {
        doc.event_type = event_type_name(r.event_type)?.into();
    }
    if r.status != 0 {
        doc.status = status_name(r.status)?.into();
    }
    if r.availability != 0 {
        doc.availability = availability_name(r.availability)?.into();
    }
    if r.visibility != 0 {
        doc.visibility = visibility_name(r.visibility)?.into();
    }
    if let Some(all) = r.is_all_day
        && all != doc.is_all_day
    {
        doc.is_all_day = all;
        if all {
            doc.start_at = None;
            doc.end_at = None;
        } else {
            doc.start_date = None;
            doc.end_date = None;
        }
    }
    if let Some(s) = opt_datetime(r.start_at.as_ref(), "start_at")? {
        // A new start without a new end keeps the length.
        if r.end_at.is_none()
            && let (Some(os), Some(oe)) = (&doc.start_at, &doc.end_at)
        {
            doc.end_at = Some(fmt_ts(s + (parse_ts(oe)? - parse_ts(os)?)));
        }
        doc.start_at = Some(fmt_ts(s));
    }
    if let Some(e) = opt_datetime(r.end_at.as_ref(), "end_at")? {
        doc.end_at = Some(fmt_ts(e));
    }
    if let Some(sd) = &r.start_date {
        let new = check_date("start_date", sd)?;
        if r.end_date.is_none()
            && let (Some(os), Some(oe), Some(ns)) = (&doc.start_date, &doc.end_date, &new)
        {
            let p = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(Error::internal);
            doc.end_date = Some((p(ns)? + (p(oe)? - p(os)?)).format("%Y-%m-%d").to_string());
        }
        doc.start_date = new;
    }
    if let Some(ed) = &r.end_date {
        doc.end_date = check_date("end_date", ed)?;
    }
    if let Some(z) = &r.timezone {
        doc.timezone = expand::check_time_zone(z)?.name().to_owned();
    }
    if let Some(l) = &r.location {
        doc.location = check_text("location", l, 1000)?;
    }
    if r.location_lat.is_some() || r.location_lng.is_some() {
        doc.location_lat = r.location_lat;
        doc.location_lng = r.location_lng;
    }
    if let Some(u) = &r.conference_url {
        doc.conference_url = check_url("conference_url", u)?;
    }
    if let Some(col) = &r.color {
        doc.color = check_color(col)?;
    }
    if r.clear_reminders {
        doc.reminders.clear();
    } else if !r.reminders.is_empty() {
        doc.reminders = check_reminders(&r.reminders)?;
    }
    if let Some(rule) = &r.rrule {
        doc.rrule = expand::check_rule(rule)?;
    }
    if !r.exdates.is_empty() {
        doc.exdates = moments(&r.exdates, "exdates")?;
    }
    if !r.rdates.is_empty() {
        doc.rdates = moments(&r.rdates, "rdates")?;
    }
    if let Some(m) = &r.metadata {
        doc.metadata = merge(&doc.metadata, &from_struct(m));
        check_metadata(&doc.metadata)?;
    }
    Ok(())
}

fn moments(list: &[prost_types::Timestamp], field: &str) -> Result<Vec<String>> {
    list.iter().map(|t| worktruck_kit::pbjson::datetime(t, field).map(fmt_ts)).collect()
}

/// A new event's document from a create request, validated (calendar and time zone still to be
/// set: the zone the request names, if any, is returned). Create and import share it.
pub(crate) fn new_event(r: &pb::CreateEventRequest, id: Uuid) -> Result<(EventDoc, Option<String>)> {
    let doc = EventDoc {
        title: check_name("title", &r.title, 500)?,
        description: r.description.as_deref().map(|d| check_text("description", d, 100_000)).transpose()?.flatten(),
        event_type: event_type_name(r.event_type)?.into(),
        status: status_name(r.status)?.into(),
        availability: availability_name(r.availability)?.into(),
        visibility: visibility_name(r.visibility)?.into(),
        is_all_day: r.is_all_day,
        start_at: opt_datetime(r.start_at.as_ref(), "start_at")?.map(fmt_ts),
        end_at: opt_datetime(r.end_at.as_ref(), "end_at")?.map(fmt_ts),
        start_date: r.start_date.as_deref().map(|d| check_date("start_date", d)).transpose()?.flatten(),
        end_date: r.end_date.as_deref().map(|d| check_date("end_date", d)).transpose()?.flatten(),
        location: r.location.as_deref().map(|l| check_text("location", l, 1000)).transpose()?.flatten(),
        location_lat: r.location_lat,
        location_lng: r.location_lng,
        conference_url: r.conference_url.as_deref().map(|u| check_url("conference_url", u)).transpose()?.flatten(),
        color: r.color.as_deref().map(check_color).transpose()?.flatten(),
        reminders: check_reminders(&r.reminders)?,
        rrule: r.rrule.as_deref().map(expand::check_rule).transpose()?.flatten(),
        exdates: moments(&r.exdates, "exdates")?,
        rdates: moments(&r.rdates, "rdates")?,
        ical_uid: match r.ical_uid.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(u) => check_name("ical_uid", u, 255)?,
            None => format!("{id}@worktruck"),
        },
        organizer_id: r
            .organizer_id
            .as_deref()
            .map(|o| check_id("organizer_id", o))
            .transpose()?
            .flatten()
            .map(|u| u.to_string()),
        organizer_email: r.organizer_email.as_deref().map(|e| check_email("organizer_email", e)).transpose()?.flatten(),
        metadata: r.metadata.as_ref().map(from_struct).unwrap_or_else(empty_object),
        ..Default::default()
    };
    check_metadata(&doc.metadata)?;
    let zone = r
        .timezone
        .as_deref()
        .filter(|z| !z.trim().is_empty())
        .map(expand::check_time_zone)
        .transpose()?
        .map(|z| z.name().to_owned());
    Ok((doc, zone))
}

impl Calendar {
    /// A service over a migrated database.
    pub fn new(db: Db, verifier: Verifier, relay: Relay, links: Links, contacts: ContactsServiceClient<Channel>) -> Self {
        Self { db, verifier, relay, links, contacts }
    }

    /// The contact `id` as the caller sees it through the contacts service (with the caller's
    /// own signed context): a missing one, or one of another tenant, is a 400. Answers its
    /// name. Called before any transaction begins.
    async fn check_contact(&self, md: &MetadataMap, id: Uuid) -> Result<String> {
        let mut req = Request::new(contacts_pb::GetContactRequest { id: id.to_string(), ..Default::default() });
        for key in [METADATA_KEY, "x-request-id", "traceparent", "tracestate"] {
            if let Some(v) = md.get(key) {
                req.metadata_mut().insert(key, v.clone());
            }
        }
        match self.contacts.clone().get_contact(req).await {
            Ok(r) => Ok(r.into_inner().display_name),
            Err(s) if s.code() == Code::NotFound => Err(Error::validation(format!("contact_id: no contact {id}"))),
            Err(s) => {
                let e = Error::from_status(&s);
                if e.code == ErrorCode::InsufficientScope || e.code == ErrorCode::PermissionDenied {
                    return Err(Error::new(e.code, "checking contact_id needs the contacts:read scope"));
                }
                Err(e)
            }
        }
    }

    async fn emit_attendee(&self, tx: &mut Tx, c: &Caller, action: &str, a: &pb::Attendee, t: DateTime<Utc>) -> Result<()> {
        let id = uuid(&a.id, "id")?;
        rpc::emit(tx, c, &format!("worktruck.calendar.attendee.{action}.v1"), id, a.version, a, t).await
    }

    /// The attendee `raw` of event `event` for a change (404 when it is another event's).
    async fn attendee_for_update(&self, tx: &mut Tx, c: &Caller, event: Uuid, raw: &str) -> Result<(Record, AttendeeDoc)> {
        let id = uuid(raw, "attendee_id")?;
        let head = ATTENDEES.head_for_update(tx, c.tenant, id, None).await?;
        let d = AttendeeDoc::from_value(&head.doc)?;
        if d.event_id != event.to_string() {
            return Err(Error::not_found("attendee"));
        }
        Ok((head, d))
    }

    /// `recs` (series, their exceptions, single events) as one VCALENDAR.
    async fn ics(&self, tx: &mut Tx, c: &Caller, name: Option<&str>, recs: Vec<Record>) -> Result<pb::IcsData> {
        let docs: Vec<EventDoc> = recs.iter().map(|r| EventDoc::from_value(&r.doc)).collect::<Result<_>>()?;
        let ids: Vec<Uuid> = recs.iter().map(|r| r.id).collect();
        let attendees: Vec<AttendeeDoc> = queries::attendees_of(tx, c.tenant, &ids)
            .await?
            .iter()
            .map(|a| AttendeeDoc::from_value(&a.doc))
            .collect::<Result<_>>()?;
        let uid_of: HashMap<String, &str> =
            recs.iter().zip(&docs).map(|(r, d)| (r.id.to_string(), d.ical_uid.as_str())).collect();
        let mut items = Vec::new();
        for (r, d) in recs.iter().zip(&docs) {
            let id = r.id.to_string();
            items.push(ics::Item {
                doc: d,
                updated_at: r.updated_at,
                attendees: attendees.iter().filter(|a| a.event_id == id).collect(),
                series_uid: d.series_id.as_ref().and_then(|s| uid_of.get(s).copied()),
            });
        }
        // Series first, so every RECURRENCE-ID follows its series.
        items.sort_by_key(|i| i.doc.series_id.is_some());
        Ok(pb::IcsData { ics: ics::calendar(name, &items)?, count: items.len() as i32 })
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }

    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify();
        Ok(())
    }

    async fn emit_event(&self, tx: &mut Tx, c: &Caller, action: &str, e: &pb::Event, t: DateTime<Utc>) -> Result<()> {
        let id = uuid(&e.id, "id")?;
        rpc::emit(tx, c, &format!("worktruck.calendar.event.{action}.v1"), id, e.version, e, t).await
    }

    async fn emit_calendar(
        &self,
        tx: &mut Tx,
        c: &Caller,
        action: &str,
        e: &pb::Calendar,
        t: DateTime<Utc>,
    ) -> Result<()> {
        let id = uuid(&e.id, "id")?;
        rpc::emit(tx, c, &format!("worktruck.calendar.calendar.{action}.v1"), id, e.version, e, t).await
    }

    /// Takes the primary mark from every calendar but `except`.
    async fn unset_primary(&self, tx: &mut Tx, c: &Caller, except: Uuid, t: DateTime<Utc>) -> Result<()> {
        for r in queries::calendars(tx, c.tenant).await? {
            let d = CalendarDoc::from_value(&r.doc)?;
            if r.id == except || !d.is_primary {
                continue;
            }
            let head = CALENDARS.head_for_update(tx, c.tenant, r.id, None).await?;
            let mut d = CalendarDoc::from_value(&head.doc)?;
            d.is_primary = false;
            let w = Write { search_text: d.search_text(), doc: d.to_value(), valid_from: None, actor: c.actor().to_owned() };
            let rec = CALENDARS.update_head(tx, c.tenant, &head, w, t).await?;
            let out = render_calendar(c, &rec)?;
            self.emit_calendar(tx, c, "updated", &out, t).await?;
        }
        Ok(())
    }

    /// Writes a new event and announces it.
    async fn create_doc(
        &self,
        tx: &mut Tx,
        c: &Caller,
        id: Uuid,
        doc: &EventDoc,
        valid_from: Option<DateTime<Utc>>,
        t: DateTime<Utc>,
    ) -> Result<pb::Event> {
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = EVENTS.create(tx, c.tenant, id, w, t).await?;
        let out = render(c, &rec)?;
        self.emit_event(tx, c, "created", &out, t).await?;
        Ok(out)
    }

    /// Writes a changed event (nothing when unchanged; `sequence` bumped on a significant
    /// change), announces it and returns it.
    #[allow(clippy::too_many_arguments)]
    async fn save(
        &self,
        tx: &mut Tx,
        c: &Caller,
        head: &Record,
        old: &EventDoc,
        mut doc: EventDoc,
        valid_from: Option<DateTime<Utc>>,
        t: DateTime<Utc>,
    ) -> Result<pb::Event> {
        doc.finish(t)?;
        if old.significant_change(&doc) {
            doc.sequence = old.sequence + 1;
        }
        self.write_head(tx, c, head, old, doc, valid_from, t).await
    }

    /// Writes `doc` (finished, its sequence as given) over `head` (nothing when unchanged),
    /// retitles its links, announces it and returns it.
    #[allow(clippy::too_many_arguments)]
    async fn write_head(
        &self,
        tx: &mut Tx,
        c: &Caller,
        head: &Record,
        old: &EventDoc,
        doc: EventDoc,
        valid_from: Option<DateTime<Utc>>,
        t: DateTime<Utc>,
    ) -> Result<pb::Event> {
        if doc == *old && valid_from.is_none() {
            return render(c, head);
        }
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = EVENTS.update_head(tx, c.tenant, head, w, t).await?;
        if doc.title != old.title {
            let title = self.links.title_of(EVENTS.entity(), &rec.doc);
            self.links.retitle(tx, c, &Source { entity: EVENTS.entity(), id: rec.id, title: &title }, t).await?;
        }
        let out = render(c, &rec)?;
        self.emit_event(tx, c, "updated", &out, t).await?;
        Ok(out)
    }

    /// Deletes an event and announces it.
    async fn remove(&self, tx: &mut Tx, c: &Caller, id: Uuid, t: DateTime<Utc>) -> Result<()> {
        self.remove_attendees(tx, c, id, t).await?;
        let rec = EVENTS.delete(tx, c.tenant, id, c.actor(), t).await?;
        let out = render(c, &rec)?;
        self.emit_event(tx, c, "deleted", &out, t).await?;
        self.links.source_deleted(tx, c, EVENTS.entity(), id, t).await?;
        self.links.target_changed(tx, c, EVENTS.entity(), id, true, rec.version, t).await?;
        Ok(())
    }

    /// Deletes an event's attendees and announces each.
    async fn remove_attendees(&self, tx: &mut Tx, c: &Caller, event: Uuid, t: DateTime<Utc>) -> Result<()> {
        for a in queries::attendees(tx, c.tenant, event).await? {
            let arec = ATTENDEES.delete(tx, c.tenant, a.id, c.actor(), t).await?;
            let out = attendee_pb(&arec, &AttendeeDoc::from_value(&arec.doc)?);
            self.emit_attendee(tx, c, "removed", &out, t).await?;
        }
        Ok(())
    }

    /// Adds an imported event's attendees (one per address, at most [`MAX_ATTENDEES`]).
    async fn add_imported_attendees(
        &self,
        tx: &mut Tx,
        c: &Caller,
        event: Uuid,
        list: &[ics_import::Attendee],
        t: DateTime<Utc>,
    ) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for a in list.iter().filter(|a| seen.insert(a.email.clone())).take(MAX_ATTENDEES) {
            let Ok(Some(email)) = check_email("email", &a.email) else { continue };
            let doc = AttendeeDoc {
                event_id: event.to_string(),
                email: Some(email),
                contact_id: None,
                display_name: a.name.as_deref().and_then(|n| check_name("display_name", n, 200).ok()),
                participant_type: a.participant_type.into(),
                role: a.role.into(),
                response_status: a.response_status.into(),
                comment: None,
            };
            let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
            let rec = ATTENDEES.create(tx, c.tenant, Uuid::now_v7(), w, t).await?;
            self.emit_attendee(tx, c, "added", &attendee_pb(&rec, &doc), t).await?;
        }
        Ok(())
    }

    /// An imported VEVENT's document: validated as a created one, in `calendar`, with the
    /// file's SEQUENCE.
    fn imported_doc(read: &ics_import::Read, id: Uuid, calendar: Uuid, cal: &CalendarDoc, t: DateTime<Utc>) -> Result<EventDoc> {
        let (mut doc, zone) = new_event(&read.event, id)?;
        doc.calendar_id = calendar.to_string();
        doc.timezone = zone.or(cal.timezone.clone()).unwrap_or_else(|| "UTC".into());
        doc.sequence = read.sequence;
        doc.finish(t)?;
        Ok(doc)
    }

    /// Deletes the exceptions of `series` from `rid` on (all of them with `None`).
    async fn remove_exceptions(
        &self,
        tx: &mut Tx,
        c: &Caller,
        series: Uuid,
        from: Option<DateTime<Utc>>,
        t: DateTime<Utc>,
    ) -> Result<()> {
        for r in queries::exceptions(tx, c.tenant, &[series]).await? {
            let d = EventDoc::from_value(&r.doc)?;
            let at = d.recurrence_id.as_deref().map(parse_ts).transpose()?;
            if from.is_none() || at.zip(from).is_some_and(|(a, f)| a >= f) {
                self.remove(tx, c, r.id, t).await?;
            }
        }
        Ok(())
    }

    /// After a split at `from`: each exception of `series` from `from` on becomes an exception
    /// of the new series `next` (its overrides kept) when `next` still has its occurrence, and
    /// is deleted when it has not (a split that moved the times leaves nothing for it to stand
    /// for).
    async fn move_exceptions(
        &self,
        tx: &mut Tx,
        c: &Caller,
        series: Uuid,
        (next_id, next): (Uuid, &EventDoc),
        from: DateTime<Utc>,
        t: DateTime<Utc>,
    ) -> Result<()> {
        for r in queries::exceptions(tx, c.tenant, &[series]).await? {
            let d = EventDoc::from_value(&r.doc)?;
            let Some(at) = d.recurrence_id.as_deref().map(parse_ts).transpose()? else { continue };
            if at < from {
                continue;
            }
            if check_occurrence(next, at).is_ok() {
                let head = EVENTS.head_for_update(tx, c.tenant, r.id, None).await?;
                let mut moved = d.clone();
                moved.series_id = Some(next_id.to_string());
                moved.ical_uid = next.ical_uid.clone();
                self.save(tx, c, &head, &d, moved, None, t).await?;
            } else {
                self.remove(tx, c, r.id, t).await?;
            }
        }
        Ok(())
    }

    /// The calendar an event names, or the primary one (400 when there is none).
    async fn calendar_for(&self, tx: &mut Tx, c: &Caller, raw: Option<&str>) -> Result<(Uuid, CalendarDoc)> {
        match raw.map(|v| check_id("calendar_id", v)).transpose()?.flatten() {
            Some(id) => {
                let rec = CALENDARS
                    .head(tx, c.tenant, id)
                    .await
                    .map_err(|_| Error::validation(format!("calendar_id: no calendar {id}")))?;
                Ok((id, CalendarDoc::from_value(&rec.doc)?))
            }
            None => {
                for r in queries::calendars(tx, c.tenant).await? {
                    let d = CalendarDoc::from_value(&r.doc)?;
                    if d.is_primary {
                        return Ok((r.id, d));
                    }
                }
                Err(Error::validation("calendar_id: the tenant has no primary calendar; name one or create one first"))
            }
        }
    }

    /// Every event as known at `(as_of, valid_at)`, optionally of one calendar.
    async fn events_at(
        &self,
        tx: &mut Tx,
        c: &Caller,
        at: (DateTime<Utc>, DateTime<Utc>),
        calendar: Option<&str>,
        t: DateTime<Utc>,
    ) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let q = ListQuery {
                equals: calendar.map(|c| vec![("calendar_id", c.to_owned())]).unwrap_or_default(),
                search: None,
                updated_since: None,
                limit: 200,
                cursor: next,
                at: Some(at),
            };
            let page = EVENTS.list(tx, c.tenant, c.retention(t), &q).await?;
            out.extend(page.rows);
            if out.len() > MAX_PAST_EVENTS {
                return Err(Error::invalid(format!(
                    "a read of the past walks at most {MAX_PAST_EVENTS} events: name one calendar"
                )));
            }
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl CalendarService for Calendar {
    async fn create_calendar(&self, req: Request<pb::CreateCalendarRequest>) -> Result<Response<pb::Calendar>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut doc = CalendarDoc {
            name: check_name("name", &r.name, 200)?,
            color: r.color.as_deref().map(check_color).transpose()?.flatten(),
            description: r.description.as_deref().map(|d| check_text("description", d, 10_000)).transpose()?.flatten(),
            timezone: r
                .timezone
                .as_deref()
                .filter(|z| !z.trim().is_empty())
                .map(expand::check_time_zone)
                .transpose()?
                .map(|z| z.name().to_owned()),
            is_primary: false,
            is_visible: r.is_visible.unwrap_or(true),
            metadata: r.metadata.as_ref().map(from_struct).unwrap_or_else(empty_object),
        };
        check_metadata(&doc.metadata)?;
        let t = now();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let first = queries::calendars(&mut tx, c.tenant).await?.is_empty();
        doc.is_primary = r.is_primary.unwrap_or(first);
        if doc.is_primary {
            self.unset_primary(&mut tx, &c, id, t).await?;
        }
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = CALENDARS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = render_calendar(&c, &rec)?;
        self.emit_calendar(&mut tx, &c, "created", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_calendar(&self, req: Request<pb::GetCalendarRequest>) -> Result<Response<pb::Calendar>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let rec = CALENDARS.head(&mut tx, c.tenant, id).await?;
        Ok(Response::new(render_calendar(&c, &rec)?))
    }

    async fn update_calendar(&self, req: Request<pb::UpdateCalendarRequest>) -> Result<Response<pb::Calendar>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = CALENDARS.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let old = CalendarDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        if let Some(n) = &r.name {
            doc.name = check_name("name", n, 200)?;
        }
        if let Some(v) = &r.color {
            doc.color = check_color(v)?;
        }
        if let Some(v) = &r.description {
            doc.description = check_text("description", v, 10_000)?;
        }
        if let Some(z) = &r.timezone {
            doc.timezone = if z.trim().is_empty() { None } else { Some(expand::check_time_zone(z)?.name().to_owned()) };
        }
        if let Some(v) = r.is_visible {
            doc.is_visible = v;
        }
        if let Some(m) = &r.metadata {
            doc.metadata = merge(&doc.metadata, &from_struct(m));
            check_metadata(&doc.metadata)?;
        }
        match r.is_primary {
            Some(true) if !old.is_primary => {
                self.unset_primary(&mut tx, &c, id, t).await?;
                doc.is_primary = true;
            }
            Some(false) if old.is_primary => {
                return Err(Error::conflict(
                    "the primary calendar stays primary until another calendar is made primary",
                )
                .into());
            }
            _ => {}
        }
        if doc == old {
            return Ok(Response::new(render_calendar(&c, &head)?));
        }
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = CALENDARS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        if doc.name != old.name {
            let title = self.links.title_of(CALENDARS.entity(), &rec.doc);
            self.links.retitle(&mut tx, &c, &Source { entity: CALENDARS.entity(), id, title: &title }, t).await?;
        }
        let out = render_calendar(&c, &rec)?;
        self.emit_calendar(&mut tx, &c, "updated", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_calendar(
        &self,
        req: Request<pb::DeleteCalendarRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        CALENDARS.head_for_update(&mut tx, c.tenant, id, None).await?;
        if queries::has_events(&mut tx, c.tenant, id).await? {
            return Err(Error::conflict("the calendar holds events: delete or move them first").into());
        }
        let rec = CALENDARS.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = render_calendar(&c, &rec)?;
        self.emit_calendar(&mut tx, &c, "deleted", &out, t).await?;
        self.links.source_deleted(&mut tx, &c, CALENDARS.entity(), id, t).await?;
        self.links.target_changed(&mut tx, &c, CALENDARS.entity(), id, true, rec.version, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_calendars(
        &self,
        req: Request<pb::ListCalendarsRequest>,
    ) -> Result<Response<pb::ListCalendarsResponse>, Status> {
        let c = self.caller(&req)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut data = queries::calendars(&mut tx, c.tenant)
            .await?
            .iter()
            .map(|r| render_calendar(&c, r))
            .collect::<Result<Vec<_>>>()?;
        data.sort_by(|a, b| b.is_primary.cmp(&a.is_primary).then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase())));
        Ok(Response::new(pb::ListCalendarsResponse { data }))
    }

    async fn create_event(&self, req: Request<pb::CreateEventRequest>) -> Result<Response<pb::Event>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = Uuid::now_v7();
        let (mut doc, zone) = new_event(&r, id)?;
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (cal, cd) = self.calendar_for(&mut tx, &c, r.calendar_id.as_deref()).await?;
        doc.calendar_id = cal.to_string();
        doc.timezone = zone.or(cd.timezone).unwrap_or_else(|| "UTC".into());
        doc.finish(t)?;
        let out = self.create_doc(&mut tx, &c, id, &doc, valid_from, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_event(&self, req: Request<pb::GetEventRequest>) -> Result<Response<pb::Event>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let at = c.moment(opt_datetime(r.as_of.as_ref(), "as_of")?, opt_datetime(r.valid_at.as_ref(), "valid_at")?, t);
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let rec = match at {
            None => EVENTS.head(&mut tx, c.tenant, id).await?,
            Some((as_of, valid_at)) => EVENTS.at(&mut tx, c.tenant, c.retention(t), id, as_of, valid_at).await?,
        };
        Ok(Response::new(render(&c, &rec)?))
    }

    async fn update_event(&self, req: Request<pb::UpdateEventRequest>) -> Result<Response<pb::Event>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let scope = scope_of(r.update_scope)?;
        let rid = opt_datetime(r.recurrence_id.as_ref(), "recurrence_id")?;
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = EVENTS.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let old = EventDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        if let Some(cal) = &r.calendar_id {
            doc.calendar_id = self.calendar_for(&mut tx, &c, Some(cal)).await?.0.to_string();
        }
        let partial = matches!(scope, pb::UpdateScope::This | pb::UpdateScope::ThisAndFollowing);
        if partial && !old.is_series() {
            return Err(Error::validation("update_scope this and this_and_following apply to a recurring series").into());
        }
        let out = match (scope, rid) {
            (pb::UpdateScope::This | pb::UpdateScope::ThisAndFollowing, None) => {
                return Err(Error::validation("update_scope this and this_and_following need recurrence_id").into());
            }
            (pb::UpdateScope::This, Some(rid)) => {
                check_occurrence(&old, rid)?;
                let stamp = fmt_ts(rid);
                let existing = queries::exceptions(&mut tx, c.tenant, &[id])
                    .await?
                    .into_iter()
                    .find(|e| e.doc.get("recurrence_id").and_then(|v| v.as_str()) == Some(stamp.as_str()));
                match existing {
                    Some(e) => {
                        let ehead = EVENTS.head_for_update(&mut tx, c.tenant, e.id, None).await?;
                        let eold = EventDoc::from_value(&ehead.doc)?;
                        let mut edoc = eold.clone();
                        edit(&mut edoc, &r)?;
                        self.save(&mut tx, &c, &ehead, &eold, edoc, valid_from, t).await?
                    }
                    None => {
                        let mut ex = doc.clone();
                        ex.move_to(rid)?;
                        ex.rrule = None;
                        ex.exdates.clear();
                        ex.rdates.clear();
                        ex.series_id = Some(id.to_string());
                        ex.recurrence_id = Some(stamp);
                        if r.rrule.as_deref().is_some_and(|s| !s.trim().is_empty()) {
                            return Err(Error::validation("an occurrence has no rrule of its own").into());
                        }
                        edit(&mut ex, &r)?;
                        ex.finish(t)?;
                        self.create_doc(&mut tx, &c, Uuid::now_v7(), &ex, valid_from, t).await?
                    }
                }
            }
            (pb::UpdateScope::ThisAndFollowing, Some(rid)) if rid > old.times()?.key => {
                check_occurrence(&old, rid)?;
                // The old series ends before `rid`; a new one starts there with the changes.
                let mut ended = doc.clone();
                let count = ended.rrule.as_deref().and_then(|s| s.parse::<rrule::RRule<rrule::Unvalidated>>().ok()).and_then(|p| p.get_count());
                let before = old.with_series(|s| expand::count_before(s, rid))?;
                if let Some(rule) = &old.rrule {
                    ended.rrule = Some(expand::with_end(rule, Some(rid - Duration::seconds(1)), None));
                }
                let cut = fmt_ts(rid);
                ended.rdates.retain(|d| *d < cut);
                ended.exdates.retain(|d| *d < cut);
                let new_id = Uuid::now_v7();
                let mut next = doc.clone();
                next.move_to(rid)?;
                next.rdates.retain(|d| *d >= cut);
                next.exdates.retain(|d| *d >= cut);
                if let (Some(rule), Some(n)) = (&old.rrule, count) {
                    next.rrule = Some(expand::with_end(rule, None, Some((n as usize).saturating_sub(before).max(1))));
                }
                next.ical_uid = format!("{new_id}@worktruck");
                next.sequence = 0;
                edit(&mut next, &r)?;
                next.finish(t)?;
                self.save(&mut tx, &c, &head, &old, ended, None, t).await?;
                let out = self.create_doc(&mut tx, &c, new_id, &next, valid_from, t).await?;
                self.move_exceptions(&mut tx, &c, id, (new_id, &next), rid, t).await?;
                out
            }
            _ => {
                if old.series_id.is_some() && r.rrule.as_deref().is_some_and(|s| !s.trim().is_empty()) {
                    return Err(Error::validation("an occurrence has no rrule of its own").into());
                }
                edit(&mut doc, &r)?;
                self.save(&mut tx, &c, &head, &old, doc, valid_from, t).await?
            }
        };
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_event(&self, req: Request<pb::DeleteEventRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let scope = scope_of(r.update_scope)?;
        let rid = opt_datetime(r.recurrence_id.as_ref(), "recurrence_id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = EVENTS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let old = EventDoc::from_value(&head.doc)?;
        if let Some(series) = &old.series_id {
            // An exception: its occurrence is cancelled in the series.
            self.remove(&mut tx, &c, id, t).await?;
            let sid = uuid(series, "series_id")?;
            if let (Ok(mhead), Some(at)) = (EVENTS.head_for_update(&mut tx, c.tenant, sid, None).await, &old.recurrence_id) {
                let mold = EventDoc::from_value(&mhead.doc)?;
                let mut m = mold.clone();
                m.exdates.push(at.clone());
                self.save(&mut tx, &c, &mhead, &mold, m, None, t).await?;
            }
            self.commit(tx).await?;
            return Ok(Response::new(pb::DeleteResponse { id: id.to_string(), deleted: true }));
        }
        let partial = matches!(scope, pb::UpdateScope::This | pb::UpdateScope::ThisAndFollowing);
        if partial && !old.is_series() {
            return Err(Error::validation("update_scope this and this_and_following apply to a recurring series").into());
        }
        match (scope, rid) {
            (pb::UpdateScope::This | pb::UpdateScope::ThisAndFollowing, None) => {
                return Err(Error::validation("update_scope this and this_and_following need recurrence_id").into());
            }
            (pb::UpdateScope::This, Some(rid)) => {
                check_occurrence(&old, rid)?;
                let stamp = fmt_ts(rid);
                for e in queries::exceptions(&mut tx, c.tenant, &[id]).await? {
                    if e.doc.get("recurrence_id").and_then(|v| v.as_str()) == Some(stamp.as_str()) {
                        self.remove(&mut tx, &c, e.id, t).await?;
                    }
                }
                let mut m = old.clone();
                m.exdates.push(stamp);
                self.save(&mut tx, &c, &head, &old, m, None, t).await?;
            }
            (pb::UpdateScope::ThisAndFollowing, Some(rid)) if rid > old.times()?.key => {
                check_occurrence(&old, rid)?;
                let mut m = old.clone();
                if let Some(rule) = &old.rrule {
                    m.rrule = Some(expand::with_end(rule, Some(rid - Duration::seconds(1)), None));
                }
                let cut = fmt_ts(rid);
                m.rdates.retain(|d| *d < cut);
                m.exdates.retain(|d| *d < cut);
                self.remove_exceptions(&mut tx, &c, id, Some(rid), t).await?;
                self.save(&mut tx, &c, &head, &old, m, None, t).await?;
            }
            _ => {
                self.remove_exceptions(&mut tx, &c, id, None, t).await?;
                self.remove(&mut tx, &c, id, t).await?;
            }
        }
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_events(&self, req: Request<pb::ListEventsRequest>) -> Result<Response<pb::ListEventsResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let at = c.moment(opt_datetime(r.as_of.as_ref(), "as_of")?, opt_datetime(r.valid_at.as_ref(), "valid_at")?, t);
        let calendar = match r.calendar_id.as_deref() {
            Some(v) => Some(
                check_id("calendar_id", v)?.ok_or_else(|| Error::invalid("calendar_id must not be empty"))?.to_string(),
            ),
            None => None,
        };
        let from = opt_datetime(r.from.as_ref(), "from")?;
        let to = opt_datetime(r.to.as_ref(), "to")?;
        let window = match (from, to) {
            (Some(f), Some(t)) => {
                if t <= f {
                    return Err(Error::invalid("to must be after from").into());
                }
                Some((f, t))
            }
            (None, None) => None,
            _ => return Err(Error::invalid("give from and to together").into()),
        };
        let mut key = r.clone();
        key.cursor = None;
        key.limit = None;
        let scope = format!("events:{key:?}");
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        if r.expand {
            let Some((from, to)) = window else {
                return Err(Error::invalid("expand needs from and to").into());
            };
            if to - from > Duration::days(MAX_WINDOW_DAYS) {
                return Err(Error::invalid(format!("an expanded window spans at most {MAX_WINDOW_DAYS} days")).into());
            }
            if r.limit.is_some() || r.cursor.is_some() {
                return Err(Error::invalid("an expanded list is one page: limit and cursor do not apply").into());
            }
            let recs = match at {
                Some(at) => self.events_at(&mut tx, &c, at, calendar.as_deref(), t).await?,
                None => window_records(&mut tx, &c, calendar.clone(), from, to).await?,
            };
            let data = expand_window(&c, &recs, from, to)?;
            return Ok(Response::new(pb::ListEventsResponse { data, next_cursor: String::new(), has_more: false }));
        }
        let limit = cursor::limit(r.limit)?;
        let offset = offset_of(r.cursor.as_deref(), &scope)?;
        let mut rows = match at {
            None => {
                let w = Window {
                    calendar,
                    from: window.map(|w| fmt_ts(w.0)),
                    to: window.map(|w| fmt_ts(w.1)),
                    search: None,
                };
                queries::events(&mut tx, c.tenant, &w, offset, Some(limit)).await?
            }
            Some(at) => {
                let mut all: Vec<(String, Record)> = Vec::new();
                for rec in self.events_at(&mut tx, &c, at, calendar.as_deref(), t).await? {
                    let d = EventDoc::from_value(&rec.doc)?;
                    if let Some((f, to)) = window
                        && !(d.span_start < fmt_ts(to) && d.span_end > fmt_ts(f))
                    {
                        continue;
                    }
                    all.push((d.span_start.clone(), rec));
                }
                all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
                all.into_iter().skip(offset as usize).take(limit as usize + 1).map(|(_, r)| r).collect()
            }
        };
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let data = rows.iter().map(|rec| render(&c, rec)).collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListEventsResponse {
            data,
            has_more: more,
            next_cursor: if more { Cursor::Number(offset + limit).encode(&scope) } else { String::new() },
        }))
    }

    async fn search_events(
        &self,
        req: Request<pb::SearchEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut key = r.clone();
        key.cursor = None;
        key.limit = None;
        let scope = format!("events:search:{key:?}");
        if r.q.chars().count() > 500 {
            return Err(Error::invalid("q must be at most 500 characters").into());
        }
        let calendar = r.calendar_id.as_deref().map(|v| check_id("calendar_id", v)).transpose()?.flatten();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let q = search_query(tx.dialect(), r.q.trim()).ok_or_else(|| Error::invalid("q has no searchable words"))?;
        let limit = cursor::limit(r.limit)?;
        let offset = offset_of(r.cursor.as_deref(), &scope)?;
        let w = Window { calendar: calendar.map(|u| u.to_string()), from: None, to: None, search: Some(q) };
        let mut rows = queries::events(&mut tx, c.tenant, &w, offset, Some(limit)).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let data = rows.iter().map(|rec| render(&c, rec)).collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListEventsResponse {
            data,
            has_more: more,
            next_cursor: if more { Cursor::Number(offset + limit).encode(&scope) } else { String::new() },
        }))
    }

    async fn check_availability(
        &self,
        req: Request<pb::CheckAvailabilityRequest>,
    ) -> Result<Response<pb::CheckAvailabilityResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let from = opt_datetime(r.from.as_ref(), "from")?.ok_or_else(|| Error::invalid("from is required"))?;
        let to = opt_datetime(r.to.as_ref(), "to")?.ok_or_else(|| Error::invalid("to is required"))?;
        if to <= from {
            return Err(Error::invalid("to must be after from").into());
        }
        if to - from > Duration::days(MAX_WINDOW_DAYS) {
            return Err(Error::invalid(format!("an availability window spans at most {MAX_WINDOW_DAYS} days")).into());
        }
        let min = match r.slot_minutes {
            None => Duration::zero(),
            Some(m) if (1..=1440).contains(&m) => Duration::minutes(i64::from(m)),
            Some(_) => return Err(Error::validation("slot_minutes must be between 1 and 1440").into()),
        };
        let hours = r.working_hours.as_ref().map(availability::check_hours).transpose()?;
        if r.calendar_ids.len() > MAX_AVAILABILITY_CALENDARS {
            return Err(Error::validation(format!("calendar_ids has at most {MAX_AVAILABILITY_CALENDARS} calendars")).into());
        }
        let mut named = Vec::new();
        for raw in &r.calendar_ids {
            let id = check_id("calendar_ids", raw)?.ok_or_else(|| Error::validation("calendar_ids must not hold an empty id"))?;
            if !named.contains(&id) {
                named.push(id);
            }
        }
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let calendars: Vec<Uuid> = if named.is_empty() {
            let mut v = Vec::new();
            for rec in queries::calendars(&mut tx, c.tenant).await? {
                if CalendarDoc::from_value(&rec.doc)?.is_visible {
                    v.push(rec.id);
                }
            }
            v
        } else {
            for id in &named {
                CALENDARS
                    .head(&mut tx, c.tenant, *id)
                    .await
                    .map_err(|_| Error::validation(format!("calendar_ids: no calendar {id}")))?;
            }
            named
        };
        let mut recs: Vec<Record> = Vec::new();
        let mut seen = HashSet::new();
        for cal in &calendars {
            for rec in window_records(&mut tx, &c, Some(cal.to_string()), from, to).await? {
                if seen.insert(rec.id) {
                    recs.push(rec);
                }
            }
        }
        // The organizer's answer per event, from its attendees (the attendee with the
        // organizer's email or contact).
        let mut owners: HashMap<Uuid, (Option<String>, Option<String>)> = HashMap::new();
        for rec in &recs {
            let d = EventDoc::from_value(&rec.doc)?;
            let email = d.organizer_email.map(|e| e.to_lowercase());
            if email.is_some() || d.organizer_id.is_some() {
                owners.insert(rec.id, (email, d.organizer_id));
            }
        }
        let ids: Vec<Uuid> = owners.keys().copied().collect();
        let mut answer: HashMap<String, String> = HashMap::new();
        for a in queries::attendees_of(&mut tx, c.tenant, &ids).await? {
            let d = AttendeeDoc::from_value(&a.doc)?;
            let Some((email, contact)) = d.event_id.parse::<Uuid>().ok().and_then(|u| owners.get(&u)) else { continue };
            let is_organizer = (email.is_some() && d.email.as_ref().map(|e| e.to_lowercase()) == *email)
                || (contact.is_some() && d.contact_id == *contact);
            if is_organizer {
                answer.insert(d.event_id.clone(), d.response_status.clone());
            }
        }
        let mut busy = Vec::new();
        for e in expand_window(&c, &recs, from, to)? {
            if e.status == pb::EventStatus::Cancelled as i32 || e.availability == pb::Availability::Free as i32 {
                continue;
            }
            // An exception without an answer of its own follows its series'.
            let said = answer.get(&e.id).or_else(|| e.series_id.as_ref().and_then(|s| answer.get(s)));
            if said.is_some_and(|a| a == "declined") {
                continue;
            }
            let (s, t) = instance_span(&e)?;
            busy.push((s.max(from), t.min(to)));
        }
        let busy = availability::merge(busy);
        let free = availability::free(&availability::windows(hours.as_ref(), from, to), &busy, min);
        let span = |(s, e): (DateTime<Utc>, DateTime<Utc>)| pb::TimeInterval {
            start: Some(worktruck_kit::pbjson::timestamp(s)),
            end: Some(worktruck_kit::pbjson::timestamp(e)),
        };
        Ok(Response::new(pb::CheckAvailabilityResponse {
            calendar_ids: calendars.iter().map(Uuid::to_string).collect(),
            busy: busy.into_iter().map(span).collect(),
            free: free.into_iter().map(span).collect(),
        }))
    }

    async fn export_event_ics(&self, req: Request<pb::ExportEventIcsRequest>) -> Result<Response<pb::IcsData>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let head = EVENTS.head(&mut tx, c.tenant, id).await?;
        let mut recs = vec![head];
        if EventDoc::from_value(&recs[0].doc)?.is_series() {
            recs.extend(queries::exceptions(&mut tx, c.tenant, &[id]).await?);
        }
        Ok(Response::new(self.ics(&mut tx, &c, None, recs).await?))
    }

    async fn export_calendar_ics(
        &self,
        req: Request<pb::ExportCalendarIcsRequest>,
    ) -> Result<Response<pb::IcsData>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let cal = CalendarDoc::from_value(&CALENDARS.head(&mut tx, c.tenant, id).await?.doc)?;
        let w = Window { calendar: Some(id.to_string()), ..Default::default() };
        let recs = queries::events(&mut tx, c.tenant, &w, 0, Some(MAX_EXPORT_EVENTS as i64)).await?;
        if recs.len() > MAX_EXPORT_EVENTS {
            return Err(Error::invalid(format!("an export writes at most {MAX_EXPORT_EVENTS} events")).into());
        }
        Ok(Response::new(self.ics(&mut tx, &c, Some(&cal.name), recs).await?))
    }

    async fn import_calendar_ics(
        &self,
        req: Request<pb::ImportCalendarIcsRequest>,
    ) -> Result<Response<pb::ImportIcsReport>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let calendar = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let cal = CalendarDoc::from_value(&CALENDARS.head(&mut tx, c.tenant, calendar).await?.doc)?;
        let zone = cal.timezone.as_deref().and_then(|z| z.parse::<chrono_tz::Tz>().ok()).unwrap_or(chrono_tz::UTC);
        let (reads, unread) = ics_import::read(&r.ics, zone)?;
        let mut report = pb::ImportIcsReport { total: (reads.len() + unread.len()) as i32, ..Default::default() };
        let skip = |report: &mut pb::ImportIcsReport, uid: &str, rid: Option<DateTime<Utc>>, reason: String| {
            report.skipped.push(pb::SkippedIcsEvent { uid: uid.to_owned(), recurrence_id: rid.map(timestamp), reason });
        };
        for u in unread {
            skip(&mut report, &u.uid, u.recurrence_id, u.reason);
        }
        // The calendar's series and single events by UID (exceptions share their series' UID).
        let w = Window { calendar: Some(calendar.to_string()), ..Default::default() };
        let mut existing: HashMap<String, Record> = HashMap::new();
        for rec in queries::events(&mut tx, c.tenant, &w, 0, None).await? {
            let d = EventDoc::from_value(&rec.doc)?;
            if d.series_id.is_none() {
                existing.insert(d.ical_uid.clone(), rec);
            }
        }
        // Each UID's series: its id, document, and whether this import wrote it.
        let mut series: HashMap<String, (Uuid, EventDoc, bool)> = HashMap::new();
        let (masters, occurrences): (Vec<_>, Vec<_>) = reads.into_iter().partition(|x| x.recurrence_id.is_none());
        for m in &masters {
            if series.get(&m.uid).is_some_and(|s| s.2) {
                skip(&mut report, &m.uid, None, "the UID appears twice in the file; the first was imported".into());
                continue;
            }
            let id = existing.get(&m.uid).map(|r| r.id).unwrap_or_else(Uuid::now_v7);
            let doc = match Self::imported_doc(m, id, calendar, &cal, t) {
                Ok(d) => d,
                Err(e) => {
                    skip(&mut report, &m.uid, None, e.message);
                    continue;
                }
            };
            match existing.get(&m.uid) {
                None => {
                    self.create_doc(&mut tx, &c, id, &doc, None, t).await?;
                    self.add_imported_attendees(&mut tx, &c, id, &m.attendees, t).await?;
                    report.created.push(id.to_string());
                    series.insert(m.uid.clone(), (id, doc, true));
                }
                Some(rec) => {
                    let old = EventDoc::from_value(&rec.doc)?;
                    if m.sequence <= old.sequence {
                        let why = format!("SEQUENCE {} is not newer than the calendar's {}", m.sequence, old.sequence);
                        skip(&mut report, &m.uid, None, why);
                        series.insert(m.uid.clone(), (id, old, false));
                        continue;
                    }
                    let head = EVENTS.head_for_update(&mut tx, c.tenant, id, None).await?;
                    let mut doc = doc;
                    // What the file does not carry stays as it was.
                    doc.color = doc.color.or(old.color.clone());
                    doc.metadata = old.metadata.clone();
                    doc.organizer_id = old.organizer_id.clone();
                    doc.event_type = old.event_type.clone();
                    self.remove_exceptions(&mut tx, &c, id, None, t).await?;
                    self.remove_attendees(&mut tx, &c, id, t).await?;
                    self.write_head(&mut tx, &c, &head, &old, doc.clone(), None, t).await?;
                    self.add_imported_attendees(&mut tx, &c, id, &m.attendees, t).await?;
                    report.updated.push(id.to_string());
                    series.insert(m.uid.clone(), (id, doc, true));
                }
            }
        }
        // Occurrences: exceptions of their series (a cancelled one an EXDATE of it).
        let mut exdates: HashMap<Uuid, Vec<String>> = HashMap::new();
        let mut stored_exceptions: HashMap<Uuid, Vec<Record>> = HashMap::new();
        for o in &occurrences {
            let rid = o.recurrence_id.expect("partitioned on it");
            let Some((sid, sdoc, written)) = series.get(&o.uid) else {
                skip(&mut report, &o.uid, Some(rid), "an occurrence (RECURRENCE-ID) of a series neither in the file nor in the calendar".into());
                continue;
            };
            if !sdoc.is_series() {
                skip(&mut report, &o.uid, Some(rid), "its UID names an event that does not recur".into());
                continue;
            }
            if let Err(e) = check_occurrence(sdoc, rid) {
                skip(&mut report, &o.uid, Some(rid), e.message);
                continue;
            }
            // An exception already stored for this occurrence (only when the series was kept).
            let stamp = fmt_ts(rid);
            let prior = if *written {
                None
            } else {
                if !stored_exceptions.contains_key(sid) {
                    stored_exceptions.insert(*sid, queries::exceptions(&mut tx, c.tenant, &[*sid]).await?);
                }
                stored_exceptions[sid]
                    .iter()
                    .find(|e| e.doc.get("recurrence_id").and_then(|v| v.as_str()) == Some(stamp.as_str()))
                    .cloned()
            };
            if o.cancelled {
                if sdoc.exdates.contains(&stamp) {
                    skip(&mut report, &o.uid, Some(rid), "the occurrence is already cancelled".into());
                } else {
                    exdates.entry(*sid).or_default().push(stamp);
                }
                continue;
            }
            let id = prior.as_ref().map(|p| p.id).unwrap_or_else(Uuid::now_v7);
            let mut doc = match Self::imported_doc(o, id, calendar, &cal, t) {
                Ok(d) => d,
                Err(e) => {
                    skip(&mut report, &o.uid, Some(rid), e.message);
                    continue;
                }
            };
            doc.rrule = None;
            doc.exdates.clear();
            doc.rdates.clear();
            doc.series_id = Some(sid.to_string());
            doc.recurrence_id = Some(stamp);
            doc.ical_uid = sdoc.ical_uid.clone();
            if let Err(e) = doc.finish(t) {
                skip(&mut report, &o.uid, Some(rid), e.message);
                continue;
            }
            match prior {
                None => {
                    self.create_doc(&mut tx, &c, id, &doc, None, t).await?;
                    self.add_imported_attendees(&mut tx, &c, id, &o.attendees, t).await?;
                    report.created.push(id.to_string());
                }
                Some(p) => {
                    let old = EventDoc::from_value(&p.doc)?;
                    if o.sequence <= old.sequence {
                        let why = format!("SEQUENCE {} is not newer than the calendar's {}", o.sequence, old.sequence);
                        skip(&mut report, &o.uid, Some(rid), why);
                        continue;
                    }
                    let head = EVENTS.head_for_update(&mut tx, c.tenant, id, None).await?;
                    self.remove_attendees(&mut tx, &c, id, t).await?;
                    self.write_head(&mut tx, &c, &head, &old, doc, None, t).await?;
                    self.add_imported_attendees(&mut tx, &c, id, &o.attendees, t).await?;
                    report.updated.push(id.to_string());
                }
            }
        }
        for (sid, add) in exdates {
            let head = EVENTS.head_for_update(&mut tx, c.tenant, sid, None).await?;
            let old = EventDoc::from_value(&head.doc)?;
            let mut doc = old.clone();
            doc.exdates.extend(add);
            doc.exdates.sort();
            doc.exdates.dedup();
            doc.finish(t)?;
            self.write_head(&mut tx, &c, &head, &old, doc, None, t).await?;
            let id = sid.to_string();
            if !report.created.contains(&id) && !report.updated.contains(&id) {
                report.updated.push(id);
            }
        }
        self.commit(tx).await?;
        Ok(Response::new(report))
    }

    async fn add_attendee(&self, req: Request<pb::AddAttendeeRequest>) -> Result<Response<pb::Attendee>, Status> {
        let c = self.caller(&req)?;
        let md = req.metadata().clone();
        let r = req.into_inner();
        let event = uuid(&r.event_id, "event_id")?;
        let mut doc = AttendeeDoc {
            event_id: event.to_string(),
            email: r.email.as_deref().map(|e| check_email("email", e)).transpose()?.flatten(),
            contact_id: None,
            display_name: r.display_name.as_deref().map(|n| check_name("display_name", n, 200)).transpose()?,
            participant_type: participant_name(r.participant_type)?.into(),
            role: role_name(r.role)?.into(),
            response_status: response_name(r.response_status)?.into(),
            comment: r.comment.as_deref().map(|x| check_text("comment", x, 2000)).transpose()?.flatten(),
        };
        if let Some(contact) = r.contact_id.as_deref().map(|v| check_id("contact_id", v)).transpose()?.flatten() {
            let name = self.check_contact(&md, contact).await?;
            doc.contact_id = Some(contact.to_string());
            if doc.display_name.is_none() && !name.is_empty() {
                doc.display_name = Some(name);
            }
        }
        if doc.email.is_none() && doc.contact_id.is_none() {
            return Err(Error::validation("an attendee needs an email or a contact_id").into());
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        EVENTS.head_for_update(&mut tx, c.tenant, event, None).await?;
        let existing = queries::attendees(&mut tx, c.tenant, event).await?;
        if existing.len() >= MAX_ATTENDEES {
            return Err(Error::validation(format!("an event has at most {MAX_ATTENDEES} attendees")).into());
        }
        for a in &existing {
            let d = AttendeeDoc::from_value(&a.doc)?;
            if (doc.email.is_some() && d.email == doc.email) || (doc.contact_id.is_some() && d.contact_id == doc.contact_id) {
                return Err(Error::new(ErrorCode::AlreadyExists, "the event already has this attendee").into());
            }
        }
        let id = Uuid::now_v7();
        let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = ATTENDEES.create(&mut tx, c.tenant, id, w, t).await?;
        let out = attendee_pb(&rec, &doc);
        self.emit_attendee(&mut tx, &c, "added", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn list_attendees(
        &self,
        req: Request<pb::ListAttendeesRequest>,
    ) -> Result<Response<pb::ListAttendeesResponse>, Status> {
        let c = self.caller(&req)?;
        let event = uuid(&req.get_ref().event_id, "event_id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        EVENTS.head(&mut tx, c.tenant, event).await?;
        let data = queries::attendees(&mut tx, c.tenant, event)
            .await?
            .iter()
            .map(|r| AttendeeDoc::from_value(&r.doc).map(|d| attendee_pb(r, &d)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListAttendeesResponse { data }))
    }

    async fn remove_attendee(
        &self,
        req: Request<pb::RemoveAttendeeRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let event = uuid(&r.event_id, "event_id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, _) = self.attendee_for_update(&mut tx, &c, event, &r.attendee_id).await?;
        let rec = ATTENDEES.delete(&mut tx, c.tenant, head.id, c.actor(), t).await?;
        let out = attendee_pb(&rec, &AttendeeDoc::from_value(&rec.doc)?);
        self.emit_attendee(&mut tx, &c, "removed", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteResponse { id: head.id.to_string(), deleted: true }))
    }

    async fn respond_to_event(&self, req: Request<pb::RespondRequest>) -> Result<Response<pb::Attendee>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let event = uuid(&r.event_id, "event_id")?;
        let status = response_name(r.response_status)?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (head, old) = self.attendee_for_update(&mut tx, &c, event, &r.attendee_id).await?;
        let mut doc = old.clone();
        doc.response_status = status.into();
        if let Some(x) = &r.comment {
            doc.comment = check_text("comment", x, 2000)?;
        }
        if doc == old {
            return Ok(Response::new(attendee_pb(&head, &old)));
        }
        let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = ATTENDEES.update_head(&mut tx, c.tenant, &head, w, t).await?;
        let out = attendee_pb(&rec, &doc);
        self.emit_attendee(&mut tx, &c, "updated", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn create_event_link(&self, req: Request<common::CreateLinkRequest>) -> Result<Response<common::Link>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.create_explicit(&c, EVENTS, req.get_ref()).await?))
    }

    async fn delete_event_link(
        &self,
        req: Request<common::DeleteLinkRequest>,
    ) -> Result<Response<common::DeleteLinkResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.delete_explicit(&c, EVENTS, req.get_ref()).await?))
    }

    async fn list_event_links(
        &self,
        req: Request<common::ListLinksRequest>,
    ) -> Result<Response<common::ListLinksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            EVENTS.head(&mut tx, c.tenant, id).await?;
        }
        Ok(Response::new(self.links.list(&c, EVENTS.entity(), id, &r).await?))
    }

    async fn get_event_history(
        &self,
        req: Request<common::HistoryRequest>,
    ) -> Result<Response<common::HistoryResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::history(&EVENTS, &self.db, &c, req.into_inner(), EVENT_HIDDEN).await?))
    }

    async fn diff_event(&self, req: Request<common::DiffRequest>) -> Result<Response<common::DiffResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::diff(&EVENTS, &self.db, &c, req.into_inner(), EVENT_HIDDEN).await?))
    }

    async fn get_event_timeline(
        &self,
        req: Request<common::TimelineRequest>,
    ) -> Result<Response<common::TimelineResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::timeline(&EVENTS, &self.db, &c, req.into_inner(), EVENT_HIDDEN).await?))
    }
}
