//! The calendar end to end over REST, on SQLite and on PostgreSQL + NATS: routes and enum
//! names from the proto, the error envelope for refused events, an expanded list through
//! query parameters, occurrence edits through `PUT` with `update_scope`.

mod common;

use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

async fn post(s: &Stack, path: &str, body: Value) -> Value {
    let (st, v) = s.call(Method::POST, path, Some(body)).await;
    assert!(st == StatusCode::CREATED || st == StatusCode::OK, "{path}: {st} {v}");
    v
}

#[tokio::test]
async fn calendars_events_and_expansion_over_rest() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let cal = post(&s, "/api/v1/calendars", json!({"name": "Work", "timezone": "Europe/Oslo"})).await;
        assert_eq!(cal["is_primary"], true, "{backend:?} {cal}");

        for bad in [
            json!({"title": "x", "start_at": "2025-01-01T10:00:00Z", "end_at": "2025-01-01T09:00:00Z"}),
            json!({"title": "x", "start_at": "2025-01-01T10:00:00Z", "timezone": "Oslo"}),
            json!({"title": "x", "is_all_day": true, "start_date": "2025-01-01", "end_at": "2025-01-01T09:00:00Z"}),
        ] {
            let (st, e) = s.call(Method::POST, "/api/v1/events", Some(bad.clone())).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {e}");
            assert_eq!(error_code(&e), "validation_failed");
        }

        // Weekly on Mondays 09:00 Oslo time; Oslo moves to summer time on 30 March 2025.
        let ev = post(
            &s,
            "/api/v1/events",
            json!({
                "title": "Weekly review",
                "start_at": "2025-03-17T08:00:00Z",
                "end_at": "2025-03-17T09:00:00Z",
                "rrule": "FREQ=WEEKLY;BYDAY=MO",
                "event_type": "focus_time",
                "availability": "busy"
            }),
        )
        .await;
        assert_eq!((ev["timezone"].as_str(), ev["event_type"].as_str()), (Some("Europe/Oslo"), Some("focus_time")));
        let path = "/api/v1/events?from=2025-03-16T00:00:00Z&to=2025-04-08T00:00:00Z&expand=true";
        let (st, list) = s.call(Method::GET, path, None).await;
        assert_eq!(st, StatusCode::OK, "{list}");
        let starts: Vec<&str> = list["data"].as_array().unwrap().iter().map(|e| e["start_at"].as_str().unwrap()).collect();
        assert_eq!(starts, ["2025-03-17T08:00:00Z", "2025-03-24T08:00:00Z", "2025-03-31T07:00:00Z", "2025-04-07T07:00:00Z"]);
        assert_eq!(list["data"][2]["series_id"], ev["id"]);

        // One occurrence renamed through PUT with a scope.
        let (st, ex) = s
            .call(
                Method::PUT,
                &format!("/api/v1/events/{}", ev["id"].as_str().unwrap()),
                Some(json!({"update_scope": "this", "recurrence_id": "2025-03-31T07:00:00Z", "title": "Review (short)"})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{ex}");
        let (_, list) = s.call(Method::GET, path, None).await;
        assert_eq!(list["data"][2]["title"], "Review (short)");
        assert_eq!(list["data"][2]["id"], ex["id"]);

        // The window cap is a 400 in the envelope.
        let (st, e) =
            s.call(Method::GET, "/api/v1/events?from=2025-01-01T00:00:00Z&to=2026-06-01T00:00:00Z&expand=true", None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(error_code(&e), "invalid_argument");

        let (st, found) = s.call(Method::GET, "/api/v1/events/search?q=review", None).await;
        assert_eq!(st, StatusCode::OK, "{found}");
        assert_eq!(found["data"].as_array().unwrap().len(), 2, "the series and its exception");

        // Availability over REST: the weekly review is busy (its renamed occurrence too),
        // free slots only within Monday's working hours, Oslo time (summer time from 30 March).
        let body = json!({
            "from": "2025-03-24T00:00:00Z",
            "to": "2025-04-01T00:00:00Z",
            "slot_minutes": 30,
            "working_hours": {"timezone": "Europe/Oslo", "days": [{"weekday": "monday", "start": "08:00", "end": "12:00"}]}
        });
        let (st, av) = s.call(Method::POST, "/api/v1/availability", Some(body)).await;
        assert_eq!(st, StatusCode::OK, "{av}");
        assert_eq!(
            av["busy"],
            json!([
                {"start": "2025-03-24T08:00:00Z", "end": "2025-03-24T09:00:00Z"},
                {"start": "2025-03-31T07:00:00Z", "end": "2025-03-31T08:00:00Z"}
            ]),
            "{backend:?}"
        );
        assert_eq!(
            av["free"],
            json!([
                {"start": "2025-03-24T07:00:00Z", "end": "2025-03-24T08:00:00Z"},
                {"start": "2025-03-24T09:00:00Z", "end": "2025-03-24T11:00:00Z"},
                {"start": "2025-03-31T06:00:00Z", "end": "2025-03-31T07:00:00Z"},
                {"start": "2025-03-31T08:00:00Z", "end": "2025-03-31T10:00:00Z"}
            ]),
            "{backend:?}"
        );
        // The calendar as text/calendar, read back by calcard: the series, its exception.
        let resp = s
            .http
            .get(format!("{}/api/v1/calendars/{}/export.ics", s.base, cal["id"].as_str().unwrap()))
            .bearer_auth(&s.key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(ct.starts_with("text/calendar"), "{ct}");
        let ics = resp.text().await.unwrap();
        let calcard::Entry::ICalendar(parsed) = calcard::Parser::new(&ics).entry() else { panic!("{ics}") };
        let events = parsed.components.iter().filter(|c| c.component_type == calcard::icalendar::ICalendarComponentType::VEvent);
        assert_eq!(events.count(), 2, "{ics}");
        assert!(ics.contains("RECURRENCE-ID;TZID=Europe/Oslo:20250331T090000") && ics.contains("TZID:Europe/Oslo"), "{ics}");

        let body = json!({"from": "2025-03-24T00:00:00Z", "to": "2025-04-01T00:00:00Z", "working_hours": {"timezone": "Oslo"}});
        let (st, e) = s.call(Method::POST, "/api/v1/availability", Some(body)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(error_code(&e), "validation_failed");
    }
}
