//! The calendar service over real gRPC (its table definition on a loopback port), on SQLite and
//! PostgreSQL: calendars and the one primary, event validation, sequence, time travel and
//! events on the bus, expansion of a long series in a far window across a DST change, the
//! window and instance caps, per-occurrence edits and cancellations, series splits, search.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_kit::bus::Bus;
use worktruck_kit::config::Config;
use worktruck_proto::contacts::v1 as cpb;
use worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient;
use worktruck_kit::pbjson::timestamp;
use worktruck_kit::testing::{TestData, TestService, backends};
use worktruck_proto::calendar::v1 as pb;
use worktruck_proto::calendar::v1::calendar_service_client::CalendarServiceClient;
use worktruck_proto::common::v1::HistoryRequest;

struct Svc {
    client: CalendarServiceClient<Channel>,
    contacts: ContactsServiceClient<Channel>,
    service: TestService,
    _contacts_service: TestService,
    tenant: Uuid,
}

async fn start(data: &TestData, bus: Bus) -> Svc {
    let contacts_service = TestService::start(&worktruck_contacts::DEFINITION, data, bus.clone()).await;
    let mut clients = BTreeMap::new();
    clients.insert("contacts", contacts_service.channel.clone());
    let service =
        TestService::start_with(&worktruck_calendar::DEFINITION, data, bus, Config::default(), clients).await;
    Svc {
        client: CalendarServiceClient::new(service.channel.clone()),
        contacts: ContactsServiceClient::new(contacts_service.channel.clone()),
        service,
        _contacts_service: contacts_service,
        tenant: Uuid::now_v7(),
    }
}

fn ts(s: &str) -> Option<prost_types::Timestamp> {
    Some(timestamp(s.parse().unwrap()))
}

fn utc(t: &Option<prost_types::Timestamp>) -> String {
    let t = t.as_ref().expect("a timestamp");
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Svc {
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        self.service.request(self.tenant, msg)
    }

    async fn calendar(&mut self, name: &str, tz: Option<&str>) -> pb::Calendar {
        let r = self.req(pb::CreateCalendarRequest {
            name: name.into(),
            timezone: tz.map(Into::into),
            ..Default::default()
        });
        self.client.create_calendar(r).await.unwrap().into_inner()
    }

    async fn create(&mut self, e: pb::CreateEventRequest) -> Result<pb::Event, tonic::Status> {
        let r = self.req(e);
        self.client.create_event(r).await.map(|r| r.into_inner())
    }

    async fn update(&mut self, u: pb::UpdateEventRequest) -> Result<pb::Event, tonic::Status> {
        let r = self.req(u);
        self.client.update_event(r).await.map(|r| r.into_inner())
    }

    async fn get(&mut self, id: &str) -> pb::Event {
        let r = self.req(pb::GetEventRequest { id: id.into(), ..Default::default() });
        self.client.get_event(r).await.unwrap().into_inner()
    }

    async fn list(&mut self, q: pb::ListEventsRequest) -> Result<Vec<pb::Event>, tonic::Status> {
        let r = self.req(q);
        self.client.list_events(r).await.map(|r| r.into_inner().data)
    }

    async fn expand(&mut self, from: &str, to: &str) -> Vec<pb::Event> {
        self.list(pb::ListEventsRequest { from: ts(from), to: ts(to), expand: true, ..Default::default() }).await.unwrap()
    }
}

#[tokio::test]
async fn calendars_keep_one_primary_and_events_are_validated() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        // No calendar yet: an event has nowhere to go.
        let e = s
            .create(pb::CreateEventRequest { title: "x".into(), start_at: ts("2025-01-01T09:00:00Z"), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{backend:?}");

        let work = s.calendar("Work", Some("America/New_York")).await;
        assert!(work.is_primary && work.is_visible, "the first calendar is primary");
        let r = s.req(pb::CreateCalendarRequest { name: "Home".into(), is_primary: Some(true), ..Default::default() });
        let home = s.client.create_calendar(r).await.unwrap().into_inner();
        assert!(home.is_primary);
        let r = s.req(pb::GetCalendarRequest { id: work.id.clone() });
        assert!(!s.client.get_calendar(r).await.unwrap().into_inner().is_primary, "the former primary lost the mark");
        let r = s.req(pb::UpdateCalendarRequest { id: home.id.clone(), is_primary: Some(false), ..Default::default() });
        assert_eq!(s.client.update_calendar(r).await.unwrap_err().code(), Code::Aborted);
        let r = s.req(pb::CreateCalendarRequest { name: "Bad".into(), timezone: Some("Mars/Olympus".into()), ..Default::default() });
        assert_eq!(s.client.create_calendar(r).await.unwrap_err().code(), Code::InvalidArgument);
        let r = s.req(pb::ListCalendarsRequest {});
        let names: Vec<_> = s.client.list_calendars(r).await.unwrap().into_inner().data.into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["Home", "Work"]);

        // 400s: end before start, a zone that is not IANA, an all-day event with times.
        let bad = [
            pb::CreateEventRequest {
                title: "Backwards".into(),
                start_at: ts("2025-01-01T10:00:00Z"),
                end_at: ts("2025-01-01T09:00:00Z"),
                ..Default::default()
            },
            pb::CreateEventRequest {
                title: "Nowhere".into(),
                start_at: ts("2025-01-01T10:00:00Z"),
                timezone: Some("EST5".into()),
                ..Default::default()
            },
            pb::CreateEventRequest {
                title: "All day with times".into(),
                is_all_day: true,
                start_date: Some("2025-01-01".into()),
                start_at: ts("2025-01-01T10:00:00Z"),
                ..Default::default()
            },
            pb::CreateEventRequest {
                title: "All day backwards".into(),
                is_all_day: true,
                start_date: Some("2025-01-02".into()),
                end_date: Some("2025-01-02".into()),
                ..Default::default()
            },
            pb::CreateEventRequest {
                title: "Bad rule".into(),
                start_at: ts("2025-01-01T10:00:00Z"),
                rrule: Some("FREQ=SOMETIMES".into()),
                ..Default::default()
            },
        ];
        for b in bad {
            let title = b.title.clone();
            let e = s.create(b).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{title}: {e:?}");
        }

        // A timed event in Work takes Work's zone; an all-day one defaults to one day.
        let ev = s
            .create(pb::CreateEventRequest {
                calendar_id: Some(work.id.clone()),
                title: "Dentist".into(),
                location: Some("Main Street clinic".into()),
                start_at: ts("2025-02-03T14:00:00Z"),
                event_type: pb::EventType::Event as i32,
                reminders: vec![pb::Reminder { minutes_before: 30, method: pb::ReminderMethod::Email as i32 }],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ev.timezone, "America/New_York");
        assert_eq!(utc(&ev.end_at), "2025-02-03T15:00:00Z", "an hour by default");
        assert!(ev.ical_uid.ends_with("@worktruck") && ev.sequence == 0, "{ev:?}");
        let day = s
            .create(pb::CreateEventRequest {
                title: "Holiday".into(),
                is_all_day: true,
                start_date: Some("2025-02-10".into()),
                event_type: pb::EventType::OutOfOffice as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!((day.calendar_id.as_str(), day.end_date.as_deref()), (home.id.as_str(), Some("2025-02-11")));

        // A title change is not significant; a move is, and keeps the length.
        let between = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let u = s.update(pb::UpdateEventRequest { id: ev.id.clone(), title: Some("Dentist (Dr. Lee)".into()), ..Default::default() }).await.unwrap();
        assert_eq!(u.sequence, 0);
        let u = s.update(pb::UpdateEventRequest { id: ev.id.clone(), start_at: ts("2025-02-04T15:00:00Z"), ..Default::default() }).await.unwrap();
        assert_eq!((u.sequence, utc(&u.end_at).as_str()), (1, "2025-02-04T16:00:00Z"));
        let e = s
            .update(pb::UpdateEventRequest { id: ev.id.clone(), end_at: ts("2025-02-04T14:00:00Z"), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = s
            .update(pb::UpdateEventRequest { id: day.id.clone(), start_at: ts("2025-02-04T14:00:00Z"), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "an all-day event takes no times");

        // Time travel and history.
        let r = s.req(pb::GetEventRequest { id: ev.id.clone(), as_of: Some(timestamp(between)), ..Default::default() });
        let old = s.client.get_event(r).await.unwrap().into_inner();
        assert_eq!((old.title.as_str(), utc(&old.start_at).as_str()), ("Dentist", "2025-02-03T14:00:00Z"));
        let r = s.req(HistoryRequest { id: ev.id.clone(), ..Default::default() });
        assert_eq!(s.client.get_event_history(r).await.unwrap().into_inner().data.len(), 3);

        // Search over title, description and location.
        let r = s.req(pb::SearchEventsRequest { q: "clinic".into(), ..Default::default() });
        let found = s.client.search_events(r).await.unwrap().into_inner().data;
        assert_eq!(found.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [ev.id.as_str()], "{backend:?}");

        // A window list without expand: the events that overlap it, by start.
        let got = s
            .list(pb::ListEventsRequest { from: ts("2025-02-01T00:00:00Z"), to: ts("2025-02-28T00:00:00Z"), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(got.iter().map(|e| e.title.as_str()).collect::<Vec<_>>(), ["Dentist (Dr. Lee)", "Holiday"]);

        // A calendar with events cannot go.
        let r = s.req(pb::DeleteCalendarRequest { id: work.id.clone() });
        assert_eq!(s.client.delete_calendar(r).await.unwrap_err().code(), Code::Aborted);
    }
}

#[tokio::test]
async fn a_series_from_2015_expands_in_2030_across_dst_with_edits_and_cancellations() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let bus = Bus::memory();
        let mut events = Box::pin(bus.subscribe_memory().unwrap());
        let mut s = start(&data, bus).await;
        tokio::spawn(s.service.relay.clone().run(std::future::pending()));
        s.calendar("Work", Some("America/New_York")).await;
        // Daily at 09:00 New York time since 5 January 2015, 30 minutes long.
        let series = s
            .create(pb::CreateEventRequest {
                title: "Standup".into(),
                start_at: ts("2015-01-05T14:00:00Z"),
                end_at: ts("2015-01-05T14:30:00Z"),
                rrule: Some("FREQ=DAILY".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(series.next_occurrence.is_some());
        // 2030's spring change is on 10 March: 09:00 EST is 14:00Z before, 09:00 EDT 13:00Z after.
        let started = std::time::Instant::now();
        let inst = s.expand("2030-03-08T00:00:00Z", "2030-03-13T00:00:00Z").await;
        assert!(started.elapsed() < Duration::from_secs(2), "no walk from 2015");
        let starts: Vec<_> = inst.iter().map(|e| utc(&e.start_at)).collect();
        assert_eq!(
            starts,
            ["2030-03-08T14:00:00Z", "2030-03-09T14:00:00Z", "2030-03-10T13:00:00Z", "2030-03-11T13:00:00Z", "2030-03-12T13:00:00Z"],
            "{backend:?}"
        );
        assert!(inst.iter().all(|e| e.series_id.as_deref() == Some(series.id.as_str()) && e.rrule.is_none()));
        assert_eq!(utc(&inst[2].recurrence_id), "2030-03-10T13:00:00Z");

        // One occurrence edited, one cancelled.
        let ex = s
            .update(pb::UpdateEventRequest {
                id: series.id.clone(),
                update_scope: pb::UpdateScope::This as i32,
                recurrence_id: ts("2030-03-11T13:00:00Z"),
                title: Some("Standup (moved)".into()),
                start_at: ts("2030-03-11T17:00:00Z"),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!((ex.series_id.as_deref(), utc(&ex.recurrence_id).as_str()), (Some(series.id.as_str()), "2030-03-11T13:00:00Z"));
        assert_eq!(utc(&ex.end_at), "2030-03-11T17:30:00Z");
        let r = s.req(pb::DeleteEventRequest {
            id: series.id.clone(),
            update_scope: pb::UpdateScope::This as i32,
            recurrence_id: ts("2030-03-12T13:00:00Z"),
        });
        s.client.delete_event(r).await.unwrap();
        let r = s.req(pb::DeleteEventRequest {
            id: series.id.clone(),
            update_scope: pb::UpdateScope::This as i32,
            recurrence_id: ts("2030-03-12T14:00:00Z"),
        });
        assert_eq!(s.client.delete_event(r).await.unwrap_err().code(), Code::InvalidArgument, "not an occurrence");
        let inst = s.expand("2030-03-08T00:00:00Z", "2030-03-13T00:00:00Z").await;
        let got: Vec<_> = inst.iter().map(|e| (utc(&e.start_at), e.title.clone())).collect();
        assert_eq!(
            got,
            [
                ("2030-03-08T14:00:00Z".to_owned(), "Standup".to_owned()),
                ("2030-03-09T14:00:00Z".to_owned(), "Standup".to_owned()),
                ("2030-03-10T13:00:00Z".to_owned(), "Standup".to_owned()),
                ("2030-03-11T17:00:00Z".to_owned(), "Standup (moved)".to_owned()),
            ]
        );
        assert_eq!(s.get(&series.id).await.exdates.len(), 1);

        // An exception after the coming split point, whose occurrence the split moves away.
        s.update(pb::UpdateEventRequest {
            id: series.id.clone(),
            update_scope: pb::UpdateScope::This as i32,
            recurrence_id: ts("2030-03-21T13:00:00Z"),
            title: Some("Standup (late)".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        // This and following: from 20 March the series is "Planning" at 10:00 local.
        let next = s
            .update(pb::UpdateEventRequest {
                id: series.id.clone(),
                update_scope: pb::UpdateScope::ThisAndFollowing as i32,
                recurrence_id: ts("2030-03-20T13:00:00Z"),
                title: Some("Planning".into()),
                start_at: ts("2030-03-20T14:00:00Z"),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_ne!(next.id, series.id);
        assert_ne!(next.ical_uid, series.ical_uid);
        let old = s.get(&series.id).await;
        assert!(old.rrule.as_deref().unwrap().contains("UNTIL=20300320T125959Z"), "{:?}", old.rrule);
        assert_eq!(old.sequence, series.sequence + 2, "an EXDATE and an UNTIL are significant");
        let inst = s.expand("2030-03-18T00:00:00Z", "2030-03-23T00:00:00Z").await;
        let got: Vec<_> = inst.iter().map(|e| (utc(&e.start_at), e.title.clone())).collect();
        assert_eq!(
            got,
            [
                ("2030-03-18T13:00:00Z".to_owned(), "Standup".to_owned()),
                ("2030-03-19T13:00:00Z".to_owned(), "Standup".to_owned()),
                ("2030-03-20T14:00:00Z".to_owned(), "Planning".to_owned()),
                ("2030-03-21T14:00:00Z".to_owned(), "Planning".to_owned()),
                ("2030-03-22T14:00:00Z".to_owned(), "Planning".to_owned()),
            ],
            "{backend:?}"
        );
        // The earlier occurrences are as they were.
        let early = s.expand("2030-03-08T00:00:00Z", "2030-03-13T00:00:00Z").await;
        assert_eq!(early.len(), 4);

        // A split that keeps the times takes the exceptions after it along, overrides and all.
        let offsite = s
            .update(pb::UpdateEventRequest {
                id: next.id.clone(),
                update_scope: pb::UpdateScope::This as i32,
                recurrence_id: ts("2030-03-27T14:00:00Z"),
                title: Some("Planning (offsite)".into()),
                location: Some("Harbor".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let review = s
            .update(pb::UpdateEventRequest {
                id: next.id.clone(),
                update_scope: pb::UpdateScope::ThisAndFollowing as i32,
                recurrence_id: ts("2030-03-25T14:00:00Z"),
                title: Some("Review".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let inst = s.expand("2030-03-24T00:00:00Z", "2030-03-29T00:00:00Z").await;
        let got: Vec<_> = inst.iter().map(|e| (utc(&e.start_at), e.title.clone(), e.series_id.clone().unwrap_or_default())).collect();
        assert_eq!(
            got,
            [
                ("2030-03-24T14:00:00Z".to_owned(), "Planning".to_owned(), next.id.clone()),
                ("2030-03-25T14:00:00Z".to_owned(), "Review".to_owned(), review.id.clone()),
                ("2030-03-26T14:00:00Z".to_owned(), "Review".to_owned(), review.id.clone()),
                ("2030-03-27T14:00:00Z".to_owned(), "Planning (offsite)".to_owned(), review.id.clone()),
                ("2030-03-28T14:00:00Z".to_owned(), "Review".to_owned(), review.id.clone()),
            ],
            "{backend:?}"
        );
        let moved = s.get(&offsite.id).await;
        assert_eq!(
            (moved.series_id.as_deref(), moved.ical_uid.as_str(), moved.location.as_deref()),
            (Some(review.id.as_str()), review.ical_uid.as_str(), Some("Harbor")),
            "the exception belongs to the new series now"
        );

        // The caps: a window beyond 366 days, more than 2,500 occurrences.
        let e = s
            .list(pb::ListEventsRequest { from: ts("2030-01-01T00:00:00Z"), to: ts("2031-06-01T00:00:00Z"), expand: true, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        s.create(pb::CreateEventRequest {
            title: "Ping".into(),
            start_at: ts("2030-01-01T00:00:00Z"),
            end_at: ts("2030-01-01T00:00:00Z"),
            rrule: Some("FREQ=MINUTELY".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let e = s
            .list(pb::ListEventsRequest { from: ts("2030-01-01T00:00:00Z"), to: ts("2030-01-03T00:00:00Z"), expand: true, ..Default::default() })
            .await
            .unwrap_err();
        assert!(e.code() == Code::InvalidArgument && e.message().contains("2500"), "{e:?}");

        // Deleting the whole series takes its exceptions along.
        let r = s.req(pb::DeleteEventRequest { id: series.id.clone(), ..Default::default() });
        s.client.delete_event(r).await.unwrap();
        let r = s.req(pb::GetEventRequest { id: ex.id.clone(), ..Default::default() });
        assert_eq!(s.client.get_event(r).await.unwrap_err().code(), Code::NotFound);

        let mut subjects = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
            subjects.push(m.subject);
        }
        assert!(subjects.contains(&"worktruck.calendar.event.created.v1".to_owned()), "{subjects:?}");
        assert!(subjects.contains(&"worktruck.calendar.event.updated.v1".to_owned()));
        assert!(subjects.contains(&"worktruck.calendar.event.deleted.v1".to_owned()));
        assert!(subjects.contains(&"worktruck.calendar.calendar.created.v1".to_owned()));
    }
}

#[tokio::test]
async fn attendees_are_checked_against_contacts_and_answer() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        s.calendar("Work", None).await;
        let ev = s
            .create(pb::CreateEventRequest { title: "Kickoff".into(), start_at: ts("2025-05-05T10:00:00Z"), ..Default::default() })
            .await
            .unwrap();
        let r = s.req(cpb::CreateContactRequest {
            kind: cpb::ContactKind::Person as i32,
            display_name: "Grace Hopper".into(),
            ..Default::default()
        });
        let grace = s.contacts.create_contact(r).await.unwrap().into_inner();

        let r = s.req(pb::AddAttendeeRequest {
            event_id: ev.id.clone(),
            contact_id: Some(grace.id.clone()),
            role: pb::AttendeeRole::Chair as i32,
            ..Default::default()
        });
        let a = s.client.add_attendee(r).await.unwrap().into_inner();
        assert_eq!(a.display_name.as_deref(), Some("Grace Hopper"), "{backend:?}");
        assert_eq!(a.response_status, pb::ResponseStatus::NeedsAction as i32);
        // A contact that does not exist (or is another tenant's) is a 400.
        let r = s.req(pb::AddAttendeeRequest { event_id: ev.id.clone(), contact_id: Some(Uuid::now_v7().to_string()), ..Default::default() });
        let e = s.client.add_attendee(r).await.unwrap_err();
        assert!(e.code() == Code::InvalidArgument && e.message().contains("contact_id"), "{e:?}");
        let other = Uuid::now_v7();
        let r = s.service.request(other, cpb::CreateContactRequest { kind: cpb::ContactKind::Person as i32, display_name: "Elsewhere".into(), ..Default::default() });
        let foreign = s.contacts.create_contact(r).await.unwrap().into_inner();
        let r = s.req(pb::AddAttendeeRequest { event_id: ev.id.clone(), contact_id: Some(foreign.id.clone()), ..Default::default() });
        assert_eq!(s.client.add_attendee(r).await.unwrap_err().code(), Code::InvalidArgument);
        // By email, once.
        let r = s.req(pb::AddAttendeeRequest { event_id: ev.id.clone(), email: Some("Ada@Example.org".into()), ..Default::default() });
        let ada = s.client.add_attendee(r).await.unwrap().into_inner();
        assert_eq!(ada.email.as_deref(), Some("ada@example.org"));
        let r = s.req(pb::AddAttendeeRequest { event_id: ev.id.clone(), email: Some("ada@example.org".into()), ..Default::default() });
        assert_eq!(s.client.add_attendee(r).await.unwrap_err().code(), Code::AlreadyExists);
        let r = s.req(pb::AddAttendeeRequest { event_id: ev.id.clone(), ..Default::default() });
        assert_eq!(s.client.add_attendee(r).await.unwrap_err().code(), Code::InvalidArgument);

        // RSVP, list, remove.
        let r = s.req(pb::RespondRequest {
            event_id: ev.id.clone(),
            attendee_id: ada.id.clone(),
            response_status: pb::ResponseStatus::Declined as i32,
            comment: Some("Travelling".into()),
        });
        let d = s.client.respond_to_event(r).await.unwrap().into_inner();
        assert_eq!((d.response_status, d.comment.as_deref(), d.version), (pb::ResponseStatus::Declined as i32, Some("Travelling"), 2));
        let r = s.req(pb::ListAttendeesRequest { event_id: ev.id.clone() });
        let list = s.client.list_attendees(r).await.unwrap().into_inner().data;
        assert_eq!(list.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [a.id.as_str(), ada.id.as_str()]);
        let r = s.req(pb::RemoveAttendeeRequest { event_id: ev.id.clone(), attendee_id: a.id.clone() });
        s.client.remove_attendee(r).await.unwrap();
        let r = s.req(pb::RemoveAttendeeRequest { event_id: ev.id.clone(), attendee_id: a.id.clone() });
        assert_eq!(s.client.remove_attendee(r).await.unwrap_err().code(), Code::NotFound);
        // Deleting the event removes its attendees.
        let r = s.req(pb::DeleteEventRequest { id: ev.id.clone(), ..Default::default() });
        s.client.delete_event(r).await.unwrap();
        let r = s.req(pb::ListAttendeesRequest { event_id: ev.id.clone() });
        assert_eq!(s.client.list_attendees(r).await.unwrap_err().code(), Code::NotFound);
    }
}

fn spans(v: &[pb::TimeInterval]) -> Vec<(String, String)> {
    v.iter().map(|i| (utc(&i.start), utc(&i.end))).collect()
}

fn span(s: &str, e: &str) -> (String, String) {
    (s.to_owned(), e.to_owned())
}

#[tokio::test]
async fn availability_merges_busy_time_across_calendars_and_finds_free_slots() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let work = s.calendar("Work", Some("Europe/Oslo")).await;
        let home = s.calendar("Home", Some("Europe/Oslo")).await;
        let r = s.req(pb::CreateCalendarRequest { name: "Hidden".into(), is_visible: Some(false), ..Default::default() });
        let hidden = s.client.create_calendar(r).await.unwrap().into_inner();
        let event = |cal: &pb::Calendar, title: &str, start: &str, end: &str| pb::CreateEventRequest {
            calendar_id: Some(cal.id.clone()),
            title: title.into(),
            start_at: ts(start),
            end_at: ts(end),
            ..Default::default()
        };

        // Stand-up on weekdays at 09:00 Oslo time (08:00Z in March); Wednesday's is moved to
        // 10:00, Thursday's is cancelled.
        let standup = s
            .create(pb::CreateEventRequest {
                rrule: Some("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR".into()),
                ..event(&work, "Stand-up", "2025-03-03T08:00:00Z", "2025-03-03T08:30:00Z")
            })
            .await
            .unwrap();
        s.update(pb::UpdateEventRequest {
            id: standup.id.clone(),
            update_scope: pb::UpdateScope::This as i32,
            recurrence_id: ts("2025-03-05T08:00:00Z"),
            start_at: ts("2025-03-05T09:00:00Z"),
            ..Default::default()
        })
        .await
        .unwrap();
        let r = s.req(pb::DeleteEventRequest {
            id: standup.id.clone(),
            update_scope: pb::UpdateScope::This as i32,
            recurrence_id: ts("2025-03-06T08:00:00Z"),
        });
        s.client.delete_event(r).await.unwrap();
        // Overlaps Monday's stand-up: merged into one busy interval.
        s.create(event(&work, "Planning", "2025-03-03T08:15:00Z", "2025-03-03T09:00:00Z")).await.unwrap();
        // Free time and a cancelled event do not count.
        s.create(pb::CreateEventRequest {
            availability: pb::Availability::Free as i32,
            ..event(&work, "Lunch", "2025-03-03T11:00:00Z", "2025-03-03T13:00:00Z")
        })
        .await
        .unwrap();
        s.create(pb::CreateEventRequest {
            status: pb::EventStatus::Cancelled as i32,
            ..event(&home, "Dentist", "2025-03-04T14:00:00Z", "2025-03-04T15:00:00Z")
        })
        .await
        .unwrap();
        // Declined by its organizer: not busy. Declined only by someone else: busy.
        let pitch = s
            .create(pb::CreateEventRequest {
                organizer_email: Some("me@example.org".into()),
                ..event(&work, "Vendor pitch", "2025-03-04T12:00:00Z", "2025-03-04T13:00:00Z")
            })
            .await
            .unwrap();
        let review = s
            .create(pb::CreateEventRequest {
                organizer_email: Some("me@example.org".into()),
                ..event(&home, "Design review", "2025-03-05T13:00:00Z", "2025-03-05T14:00:00Z")
            })
            .await
            .unwrap();
        for (ev, email) in [(&pitch, "Me@Example.org"), (&review, "someone@example.org")] {
            let r = s.req(pb::AddAttendeeRequest {
                event_id: ev.id.clone(),
                email: Some(email.into()),
                response_status: pb::ResponseStatus::Declined as i32,
                ..Default::default()
            });
            s.client.add_attendee(r).await.unwrap();
        }
        // Out of office all Friday, Oslo time.
        s.create(pb::CreateEventRequest {
            calendar_id: Some(home.id.clone()),
            title: "Out of office".into(),
            event_type: pb::EventType::OutOfOffice as i32,
            is_all_day: true,
            start_date: Some("2025-03-07".into()),
            end_date: Some("2025-03-08".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        // A hidden calendar counts only when named.
        s.create(event(&hidden, "Private", "2025-03-04T10:00:00Z", "2025-03-04T11:00:00Z")).await.unwrap();

        let weekdays = ["monday", "tuesday", "wednesday", "thursday", "friday"];
        let hours = pb::WorkingHours {
            timezone: "Europe/Oslo".into(),
            days: weekdays
                .iter()
                .map(|d| pb::WorkingDay { weekday: (*d).into(), start: "09:00".into(), end: "17:00".into() })
                .collect(),
        };
        let ask = |calendar_ids: Vec<String>, slot: Option<i32>, hours: Option<pb::WorkingHours>| pb::CheckAvailabilityRequest {
            calendar_ids,
            from: ts("2025-03-03T00:00:00Z"),
            to: ts("2025-03-08T00:00:00Z"),
            slot_minutes: slot,
            working_hours: hours,
        };
        let r = s.req(ask(vec![], Some(60), Some(hours.clone())));
        let got = s.client.check_availability(r).await.unwrap().into_inner();
        assert_eq!(got.calendar_ids, [work.id.clone(), home.id.clone()], "{backend:?}");
        assert_eq!(
            spans(&got.busy),
            [
                span("2025-03-03T08:00:00Z", "2025-03-03T09:00:00Z"),
                span("2025-03-04T08:00:00Z", "2025-03-04T08:30:00Z"),
                span("2025-03-05T09:00:00Z", "2025-03-05T09:30:00Z"),
                span("2025-03-05T13:00:00Z", "2025-03-05T14:00:00Z"),
                span("2025-03-06T23:00:00Z", "2025-03-07T23:00:00Z"),
            ],
            "{backend:?}"
        );
        assert_eq!(
            spans(&got.free),
            [
                span("2025-03-03T09:00:00Z", "2025-03-03T16:00:00Z"),
                span("2025-03-04T08:30:00Z", "2025-03-04T16:00:00Z"),
                span("2025-03-05T08:00:00Z", "2025-03-05T09:00:00Z"),
                span("2025-03-05T09:30:00Z", "2025-03-05T13:00:00Z"),
                span("2025-03-05T14:00:00Z", "2025-03-05T16:00:00Z"),
                span("2025-03-06T08:00:00Z", "2025-03-06T16:00:00Z"),
            ],
            "{backend:?}"
        );
        // Longer slots only: the hour before Wednesday's stand-up and after the review go.
        let r = s.req(ask(vec![], Some(180), Some(hours.clone())));
        let got = s.client.check_availability(r).await.unwrap().into_inner();
        assert_eq!(
            spans(&got.free),
            [
                span("2025-03-03T09:00:00Z", "2025-03-03T16:00:00Z"),
                span("2025-03-04T08:30:00Z", "2025-03-04T16:00:00Z"),
                span("2025-03-05T09:30:00Z", "2025-03-05T13:00:00Z"),
                span("2025-03-06T08:00:00Z", "2025-03-06T16:00:00Z"),
            ],
            "{backend:?}"
        );
        // Named calendars (the hidden one included), no working hours: the whole window.
        let r = s.req(ask(vec![work.id.clone(), hidden.id.clone()], None, None));
        let got = s.client.check_availability(r).await.unwrap().into_inner();
        assert_eq!(
            spans(&got.busy),
            [
                span("2025-03-03T08:00:00Z", "2025-03-03T09:00:00Z"),
                span("2025-03-04T08:00:00Z", "2025-03-04T08:30:00Z"),
                span("2025-03-04T10:00:00Z", "2025-03-04T11:00:00Z"),
                span("2025-03-05T09:00:00Z", "2025-03-05T09:30:00Z"),
                span("2025-03-07T08:00:00Z", "2025-03-07T08:30:00Z"),
            ],
            "{backend:?}"
        );
        assert_eq!(spans(&got.free).first(), Some(&span("2025-03-03T00:00:00Z", "2025-03-03T08:00:00Z")));
        assert_eq!(spans(&got.free).last(), Some(&span("2025-03-07T08:30:00Z", "2025-03-08T00:00:00Z")));
        assert_eq!(got.free.len(), 6);

        // Bad requests are 400s.
        let mut bad = vec![
            ask(vec![Uuid::now_v7().to_string()], None, None),
            ask(vec!["nope".into()], None, None),
            ask(vec![], Some(0), None),
            ask(vec![], None, Some(pb::WorkingHours { timezone: "Oslo".into(), days: vec![] })),
            ask(vec![], None, Some(pb::WorkingHours {
                timezone: "Europe/Oslo".into(),
                days: vec![pb::WorkingDay { weekday: "monday".into(), start: "17:00".into(), end: "09:00".into() }],
            })),
        ];
        let mut long = ask(vec![], None, None);
        long.to = ts("2026-06-01T00:00:00Z");
        bad.push(long);
        let mut backwards = ask(vec![], None, None);
        backwards.to = backwards.from;
        bad.push(backwards);
        for b in bad {
            let r = s.req(b.clone());
            let e = s.client.check_availability(r).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{b:?}: {e:?}");
        }
    }
}

/// Every instance of an iCalendar document in `[from, to)`, as calcard expands it (floating
/// dates in Oslo time): (start, end).
fn ics_instances(ics: &str, from: &str, to: &str) -> Vec<(String, String)> {
    let calcard::Entry::ICalendar(cal) = calcard::Parser::new(ics).entry() else { panic!("not an iCalendar: {ics}") };
    let expanded = cal.expand_dates(chrono_tz::Europe::Oslo, 10_000);
    assert!(expanded.errors.is_empty(), "{:?}\n{ics}", expanded.errors);
    let (from, to): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = (from.parse().unwrap(), to.parse().unwrap());
    let f = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut out: Vec<(String, String)> = expanded
        .events
        .iter()
        .filter_map(|e| {
            let s = e.start.with_timezone(&chrono::Utc);
            let end = match &e.end {
                calcard::icalendar::dates::TimeOrDelta::Time(t) => t.with_timezone(&chrono::Utc),
                calcard::icalendar::dates::TimeOrDelta::Delta(d) => s + *d,
            };
            (s < to && end > from).then(|| (f(s), f(end)))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_calendar_exports_as_icalendar_that_reads_back_with_the_same_instances() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let cal = s.calendar("Team; Work", Some("America/New_York")).await;
        // Weekly on Tuesday and Thursday at 09:00 New York time across the March DST change,
        // one occurrence moved, one cancelled, one added.
        let series = s
            .create(pb::CreateEventRequest {
                title: "Sync, weekly".into(),
                description: Some("Line one\nline two; with, punctuation".into()),
                start_at: ts("2025-03-04T14:00:00Z"),
                end_at: ts("2025-03-04T14:30:00Z"),
                rrule: Some("FREQ=WEEKLY;BYDAY=TU,TH;COUNT=12".into()),
                exdates: vec![ts("2025-03-13T13:00:00Z").unwrap()],
                rdates: vec![ts("2025-03-15T14:00:00Z").unwrap()],
                organizer_email: Some("lead@example.org".into()),
                reminders: vec![pb::Reminder { minutes_before: 10, method: pb::ReminderMethod::Popup as i32 }],
                ..Default::default()
            })
            .await
            .unwrap();
        s.update(pb::UpdateEventRequest {
            id: series.id.clone(),
            update_scope: pb::UpdateScope::This as i32,
            recurrence_id: ts("2025-03-18T13:00:00Z"),
            start_at: ts("2025-03-18T15:00:00Z"),
            title: Some("Sync (moved)".into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let r = s.req(pb::AddAttendeeRequest {
            event_id: series.id.clone(),
            email: Some("ada@example.org".into()),
            display_name: Some("Ada, L.".into()),
            response_status: pb::ResponseStatus::Accepted as i32,
            ..Default::default()
        });
        s.client.add_attendee(r).await.unwrap();
        s.create(pb::CreateEventRequest {
            title: "Offsite".into(),
            is_all_day: true,
            start_date: Some("2025-03-20".into()),
            end_date: Some("2025-03-22".into()),
            timezone: Some("Europe/Oslo".into()),
            ..Default::default()
        })
        .await
        .unwrap();

        let (from, to) = ("2025-03-01T00:00:00Z", "2025-04-15T00:00:00Z");
        let expected: Vec<(String, String)> = {
            let mut v: Vec<_> = s.expand(from, to).await.iter().map(|e| {
                if e.is_all_day {
                    // Oslo midnight to midnight.
                    let d = |x: &Option<String>| {
                        let n = chrono::NaiveDate::parse_from_str(x.as_deref().unwrap(), "%Y-%m-%d").unwrap();
                        let t = chrono::TimeZone::from_local_datetime(&chrono_tz::Europe::Oslo, &n.and_hms_opt(0, 0, 0).unwrap()).unwrap();
                        t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string()
                    };
                    (d(&e.start_date), d(&e.end_date))
                } else {
                    (utc(&e.start_at), utc(&e.end_at))
                }
            }).collect();
            v.sort();
            v
        };
        assert_eq!(expected.len(), 13, "{backend:?} {expected:?}");

        let r = s.req(pb::ExportCalendarIcsRequest { id: cal.id.clone() });
        let out = s.client.export_calendar_ics(r).await.unwrap().into_inner();
        assert_eq!(out.count, 3, "{backend:?}");
        let ics = out.ics;
        for needle in [
            "BEGIN:VTIMEZONE",
            "TZID:America/New_York",
            "DTSTART;TZID=America/New_York:20250304T090000",
            "RRULE:FREQ=WEEKLY",
            "EXDATE;TZID=America/New_York:20250313T090000",
            "RDATE;TZID=America/New_York:20250315T100000",
            "RECURRENCE-ID;TZID=America/New_York:20250318T090000",
            "DTSTART;VALUE=DATE:20250320",
            "BEGIN:VALARM",
            "TRIGGER:-PT10M",
            "PARTSTAT=ACCEPTED",
            "mailto:ada@example.org",
            "X-WR-CALNAME:Team\\; Work",
        ] {
            assert!(ics.replace("\r\n ", "").contains(needle), "{backend:?}: {needle} missing in\n{ics}");
        }
        assert_eq!(ics_instances(&ics, from, to), expected, "{backend:?}\n{ics}");

        // One event: the series with its exception.
        let r = s.req(pb::ExportEventIcsRequest { id: series.id.clone() });
        let one = s.client.export_event_ics(r).await.unwrap().into_inner();
        assert_eq!(one.count, 2);
        assert_eq!(ics_instances(&one.ics, from, to).len(), expected.len() - 1, "the offsite aside: {}", one.ics);
        let r = s.req(pb::ExportEventIcsRequest { id: Uuid::now_v7().to_string() });
        assert_eq!(s.client.export_event_ics(r).await.unwrap_err().code(), Code::NotFound);
    }
}
