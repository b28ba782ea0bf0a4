//! iCalendar import over REST, on SQLite and on PostgreSQL + NATS: files as Google Calendar,
//! Apple Calendar and Outlook write them (fixtures written by hand from their documented
//! formats: Google's X-WR-TIMEZONE and folded ATTENDEE lines, Apple's VTIMEZONE and AUDIO
//! alarms, Outlook's Windows zone names and cancelled occurrences) import with the right
//! instances and zones; a second import of the same file changes nothing; a newer SEQUENCE
//! updates; an exported calendar imports back to the same instances.

mod common;

use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

const GOOGLE: &str = include_str!("fixtures/ics/google.ics");
const APPLE: &str = include_str!("fixtures/ics/apple.ics");
const OUTLOOK: &str = include_str!("fixtures/ics/outlook.ics");

async fn calendar(s: &Stack, name: &str) -> String {
    let (st, v) = s.call(Method::POST, "/api/v1/calendars", Some(json!({"name": name, "timezone": "UTC"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn import(s: &Stack, cal: &str, ics: &str) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/api/v1/calendars/{cal}/import", s.base))
        .bearer_auth(&s.key)
        .header("content-type", "text/calendar")
        .body(ics.to_owned())
        .send()
        .await
        .unwrap();
    let st = resp.status();
    (st, resp.json().await.unwrap())
}

/// The calendar's instances in the window: (start, title), a timed one by its instant, an
/// all-day one by its first day.
async fn instances(s: &Stack, cal: &str, from: &str, to: &str) -> Vec<(String, String)> {
    let path = format!("/api/v1/events?calendar_id={cal}&from={from}&to={to}&expand=true");
    let (st, list) = s.call(Method::GET, &path, None).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let start = e["start_at"].as_str().map(str::to_owned).unwrap_or_else(|| format!("day {}", e["start_date"].as_str().unwrap()));
            (start, e["title"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

fn count(report: &Value, field: &str) -> usize {
    report[field].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn google_apple_and_outlook_files_import_with_their_instances_and_zones() {
    for backend in backends() {
        let s = Stack::start(backend).await;

        // Google: a weekly series across the US DST change, an EXDATE, a moved occurrence, an
        // all-day event; attendees and an alarm.
        let g = calendar(&s, "Google").await;
        let (st, report) = import(&s, &g, GOOGLE).await;
        assert_eq!(st, StatusCode::OK, "{backend:?} {report}");
        assert_eq!((report["total"].as_i64(), count(&report, "created"), count(&report, "skipped")), (Some(3), 3, 0), "{report}");
        let want = pairs(&[
            ("2025-03-03T14:00:00Z", "Standup"),
            ("2025-03-10T14:00:00Z", "Standup (moved)"),
            ("day 2025-03-14", "Offsite"),
            ("2025-03-24T13:00:00Z", "Standup"),
        ]);
        assert_eq!(instances(&s, &g, "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z").await, want, "{backend:?}");
        let (_, masters) = s.call(Method::GET, &format!("/api/v1/events?calendar_id={g}"), None).await;
        let standup = masters["data"].as_array().unwrap().iter().find(|e| e["title"] == "Standup").unwrap().clone();
        assert_eq!(standup["timezone"], "America/New_York");
        assert_eq!(standup["ical_uid"], "5ktg0b3n4v1sd8q1bqk6u0eh6a@google.com");
        assert_eq!(standup["description"], "Daily sync, weekly.\nAgenda in the doc.");
        assert_eq!(standup["reminders"], json!([{"minutes_before": 10, "method": "popup"}]));
        assert_eq!(standup["organizer_email"], "ada@example.com");
        let offsite = masters["data"].as_array().unwrap().iter().find(|e| e["title"] == "Offsite").unwrap().clone();
        assert_eq!((offsite["is_all_day"].as_bool(), offsite["availability"].as_str()), (Some(true), Some("free")), "{offsite}");
        let (_, att) = s.call(Method::GET, &format!("/api/v1/events/{}/attendees", standup["id"].as_str().unwrap()), None).await;
        let mut got: Vec<(String, String, String)> = att["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["email"].as_str().unwrap().into(), a["display_name"].as_str().unwrap_or("").into(), a["response_status"].as_str().unwrap().into()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("ada@example.com".into(), "Ada Lovelace".into(), "accepted".into()),
                ("grace@example.com".into(), "grace@example.com".into(), "needs_action".into())
            ],
            "unfolded lines, CN and PARTSTAT"
        );

        // The same file again: nothing is newer, nothing changes.
        let (st, again) = import(&s, &g, GOOGLE).await;
        assert_eq!(st, StatusCode::OK, "{again}");
        assert_eq!((count(&again, "created"), count(&again, "updated"), count(&again, "skipped")), (0, 0, 3), "{again}");
        assert!(again["skipped"][0]["reason"].as_str().unwrap().contains("not newer"), "{again}");
        assert_eq!(instances(&s, &g, "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z").await, want);

        // A newer SEQUENCE of the series updates it in place (same id) and replaces its exceptions.
        let newer = GOOGLE.replacen("SEQUENCE:0", "SEQUENCE:3", 1).replacen("SUMMARY:Standup\r\n", "SUMMARY:Standup v2\r\n", 1);
        let (st, upd) = import(&s, &g, &newer).await;
        assert_eq!(st, StatusCode::OK, "{upd}");
        assert_eq!(upd["updated"], json!([standup["id"]]), "{upd}");
        let got = instances(&s, &g, "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z").await;
        assert_eq!(got[0], ("2025-03-03T14:00:00Z".to_owned(), "Standup v2".to_owned()));
        assert_eq!(got[1], ("2025-03-10T14:00:00Z".to_owned(), "Standup (moved)".to_owned()));
        assert_eq!(got.len(), 4, "{got:?}");

        // Apple: the 31st of months that lack it is skipped; the Berlin zone across its DST change.
        let a = calendar(&s, "Apple").await;
        let (st, report) = import(&s, &a, APPLE).await;
        assert_eq!((st, count(&report, "created")), (StatusCode::OK, 2), "{report}");
        assert_eq!(
            instances(&s, &a, "2025-01-01T00:00:00Z", "2025-09-01T00:00:00Z").await,
            pairs(&[
                ("2025-01-31T17:00:00Z", "Pay rent"),
                ("2025-03-31T16:00:00Z", "Pay rent"),
                ("day 2025-04-18", "Easter holidays"),
                ("2025-05-31T16:00:00Z", "Pay rent"),
                ("2025-07-31T16:00:00Z", "Pay rent"),
            ]),
            "{backend:?}"
        );

        // Outlook: a Windows zone name, UNTIL in UTC, a cancelled occurrence that becomes an EXDATE.
        let o = calendar(&s, "Outlook").await;
        let (st, report) = import(&s, &o, OUTLOOK).await;
        assert_eq!((st, count(&report, "created"), count(&report, "skipped")), (StatusCode::OK, 1, 0), "{report}");
        assert_eq!(
            instances(&s, &o, "2025-10-15T00:00:00Z", "2025-12-01T00:00:00Z").await,
            pairs(&[("2025-10-28T19:00:00Z", "Planning"), ("2025-11-04T20:00:00Z", "Planning"), ("2025-11-18T20:00:00Z", "Planning")]),
            "{backend:?}"
        );
        let (_, list) = s.call(Method::GET, &format!("/api/v1/events?calendar_id={o}"), None).await;
        let planning = &list["data"][0];
        assert_eq!((planning["timezone"].as_str(), planning["visibility"].as_str()), (Some("America/New_York"), Some("public")), "{planning}");
        assert_eq!(planning["exdates"], json!(["2025-11-11T20:00:00Z"]), "{planning}");

        // Round trip: the Google calendar exported, then imported into a fresh calendar.
        let resp = s.http.get(format!("{}/api/v1/calendars/{g}/export.ics", s.base)).bearer_auth(&s.key).send().await.unwrap();
        let exported = resp.text().await.unwrap();
        let copy = calendar(&s, "Copy").await;
        let (st, report) = import(&s, &copy, &exported).await;
        assert_eq!((st, count(&report, "skipped")), (StatusCode::OK, 0), "{report}");
        assert_eq!(
            instances(&s, &copy, "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z").await,
            instances(&s, &g, "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z").await
        );
    }
}

#[tokio::test]
async fn what_cannot_be_imported_is_skipped_with_its_reason_or_refused() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let cal = calendar(&s, "Mixed").await;
        let (st, e) = import(&s, &cal, "hello, this is not a calendar").await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(error_code(&e), "validation_failed");
        assert!(e["error"]["message"].as_str().unwrap().contains("not iCalendar"), "{e}");

        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
            BEGIN:VEVENT\r\nUID:no-start\r\nSUMMARY:No start\r\nEND:VEVENT\r\n\
            BEGIN:VEVENT\r\nUID:mars\r\nSUMMARY:Mars\r\nDTSTART;TZID=Mars/Olympus_Mons:20250101T100000\r\nEND:VEVENT\r\n\
            BEGIN:VEVENT\r\nUID:backwards\r\nSUMMARY:Backwards\r\nDTSTART:20250101T100000Z\r\nDTEND:20250101T090000Z\r\nEND:VEVENT\r\n\
            BEGIN:VEVENT\r\nUID:orphan\r\nRECURRENCE-ID:20250101T100000Z\r\nDTSTART:20250101T110000Z\r\nSUMMARY:Orphan\r\nEND:VEVENT\r\n\
            BEGIN:VEVENT\r\nUID:fine\r\nSUMMARY:Fine\r\nDTSTART:20250102T100000\r\nDURATION:PT45M\r\nEND:VEVENT\r\n\
            END:VCALENDAR\r\n";
        let (st, report) = import(&s, &cal, ics).await;
        assert_eq!(st, StatusCode::OK, "{report}");
        assert_eq!(count(&report, "created"), 1, "{report}");
        let reasons: Vec<(String, String)> = report["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["uid"].as_str().unwrap().to_owned(), k["reason"].as_str().unwrap().to_owned()))
            .collect();
        let reason = |uid: &str| reasons.iter().find(|(u, _)| u == uid).map(|(_, r)| r.clone()).unwrap_or_default();
        assert!(reason("no-start").contains("no DTSTART"), "{reasons:?}");
        assert!(reason("mars").contains("Mars/Olympus_Mons"), "{reasons:?}");
        assert!(reason("backwards").contains("end"), "{reasons:?}");
        assert!(reason("orphan").contains("neither in the file nor in the calendar"), "{reasons:?}");
        assert_eq!(report["skipped"][3]["recurrence_id"], "2025-01-01T10:00:00Z", "{report}");
        // A floating time is in the calendar's zone (UTC here); DURATION gives the end.
        assert_eq!(
            instances(&s, &cal, "2025-01-01T00:00:00Z", "2025-01-03T00:00:00Z").await,
            pairs(&[("2025-01-02T10:00:00Z", "Fine")])
        );
        let (_, list) = s.call(Method::GET, &format!("/api/v1/events?calendar_id={cal}"), None).await;
        assert_eq!(list["data"][0]["end_at"], "2025-01-02T10:45:00Z");

        // Another tenant's calendar is not found; a JSON body works too.
        let (st, e) = s.call(Method::POST, &format!("/api/v1/calendars/{}/import", uuid::Uuid::now_v7()), Some(json!({"ics": ics.replace("\r\n", "\n")}))).await;
        assert_eq!((st, error_code(&e)), (StatusCode::NOT_FOUND, "not_found".to_owned()), "{e}");
    }
}
