//! A contact's children end to end over REST, on SQLite and on PostgreSQL + NATS: channels with
//! canonical values, addresses, partial dates, relationships read from both sides,
//! affiliations, interactions, tags and groups; reads of the past, lookups, filters and the
//! bad-input list.

mod common;

use common::{Stack, error_code, moment, ts};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

async fn post(s: &Stack, path: &str, body: Value) -> Value {
    let (st, v) = s.call(Method::POST, path, Some(body)).await;
    assert!(st.is_success(), "POST {path}: {st} {v}");
    v
}

async fn get(s: &Stack, path: &str) -> Value {
    let (st, v) = s.call(Method::GET, path, None).await;
    assert_eq!(st, StatusCode::OK, "GET {path}: {v}");
    v
}

fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

#[tokio::test]
async fn channels_are_canonical_found_by_any_format_and_read_as_they_were() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let ada = s.person("Ada").await;
        let id = ada["id"].as_str().unwrap().to_owned();
        let base = format!("/api/v1/contacts/{id}");

        let e = post(
            &s,
            &format!("{base}/channels"),
            json!({"type": "email", "value": "  Ada.Lovelace@Example.ORG ", "is_primary": true, "label": "work"}),
        )
        .await;
        assert_eq!(e["canonical_value"], "ada.lovelace@example.org", "{backend:?} {e}");
        assert_eq!(e["value"], "Ada.Lovelace@Example.ORG");
        assert_eq!(e["type"], "email");
        assert_eq!(e["contact_id"], id.as_str());
        let t_one = moment().await;

        // International numbers need no region; national ones take the contact's.
        let p = post(&s, &format!("{base}/channels"), json!({"type": "phone", "value": "+1 (415) 555-0100"})).await;
        assert_eq!(p["canonical_value"], "+14155550100");
        let (st, bad) = s.call(Method::POST, &format!("{base}/channels"), Some(json!({"type": "phone", "value": "020 7946 0958"}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&bad), "validation_failed");
        assert!(bad["error"]["message"].as_str().unwrap().contains("region"), "{bad}");
        let (st, _) = s.call(Method::PATCH, &base, Some(json!({"default_region": "gb"}))).await;
        assert_eq!(st, StatusCode::OK);
        let uk = post(&s, &format!("{base}/channels"), json!({"type": "phone", "value": "020 7946 0958"})).await;
        assert_eq!(uk["canonical_value"], "+442079460958");
        // The tenant's default region reads another contact's national numbers.
        let (st, _) = s.call(Method::PATCH, "/api/v1/contacts/settings", Some(json!({"default_region": "NO"}))).await;
        assert_eq!(st, StatusCode::OK);
        let ola = s.person("Ola").await;
        let ola_id = ola["id"].as_str().unwrap();
        let no = post(&s, &format!("/api/v1/contacts/{ola_id}/channels"), json!({"type": "phone", "value": "22 12 34 56"})).await;
        assert_eq!(no["canonical_value"], "+4722123456");
        let (st, unparseable) =
            s.call(Method::POST, &format!("{base}/channels"), Some(json!({"type": "phone", "value": "call me maybe"}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{unparseable}");
        assert_eq!(error_code(&unparseable), "validation_failed");

        // A second primary email is refused, and nothing was written.
        let before = get(&s, &base).await;
        let (st, second) = s
            .call(
                Method::POST,
                &format!("{base}/channels"),
                Some(json!({"type": "email", "value": "ada@home.example", "is_primary": true})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{second}");
        assert!(second["error"]["message"].as_str().unwrap().contains("primary"), "{second}");
        assert_eq!(get(&s, &base).await["version"], before["version"]);

        // find-by-channel matches on the canonical value, whatever the format asked with.
        for (ty, q) in [
            ("phone", "%2B1%20415-555-0100"),
            ("phone", "%2B14155550100"),
            ("email", "ADA.lovelace%40example.org%20"),
            ("phone", "%2B44%2020%207946%200958"),
        ] {
            let (st, found) = s.call(Method::GET, &format!("/api/v1/contacts/find-by-channel?type={ty}&value={q}"), None).await;
            assert_eq!(st, StatusCode::OK, "{q}: {found}");
            assert_eq!(found["id"], id.as_str(), "{q}");
        }
        let (st, none) = s.call(Method::GET, "/api/v1/contacts/find-by-channel?type=email&value=nobody%40example.org", None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{none}");

        // Update and delete of a channel; the list's q finds channel values.
        let pid = p["id"].as_str().unwrap();
        let (st, upd) =
            s.call(Method::PATCH, &format!("{base}/channels/{pid}"), Some(json!({"label": "mobile", "value": "+1 415 555 0101"}))).await;
        assert_eq!(st, StatusCode::OK, "{upd}");
        assert_eq!(upd["canonical_value"], "+14155550101");
        let one = get(&s, &format!("{base}/channels/{pid}")).await;
        assert_eq!(one["label"], "mobile");
        for q in ["lovelace", "example.org", "ada.lovelace", "14155550101"] {
            assert_eq!(arr(&get(&s, &format!("/api/v1/contacts?q={q}")).await["data"]).len(), 1, "{q}");
        }
        let listed = get(&s, "/api/v1/contacts?q=lovelace").await;
        assert_eq!(arr(&listed["data"]).len(), 1, "{listed}");
        let (st, _) = s.call(Method::DELETE, &format!("{base}/channels/{pid}"), None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = s.call(Method::GET, &format!("{base}/channels/{pid}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // The contact's read carries its channels; as_of returns them as they were then.
        let now = get(&s, &base).await;
        assert_eq!(arr(&now["channels"]).len(), 2, "{now}");
        let then = get(&s, &format!("{base}?as_of={}", ts(t_one))).await;
        let chans = arr(&then["channels"]);
        assert_eq!(chans.len(), 1, "{then}");
        assert_eq!(chans[0]["canonical_value"], "ada.lovelace@example.org");
        assert!(then["_temporal"].is_object());

        // Each child change is a version: history, diff and timeline show it.
        let h = get(&s, &format!("{base}/history")).await;
        let versions = arr(&h["data"]).len();
        assert_eq!(versions, 7, "create, email, phone, region, UK phone, phone update, phone delete: {h}");
        let d = get(&s, &format!("{base}/diff?from={}", ts(t_one))).await;
        let fields: Vec<&str> = arr(&d["changes"]).iter().map(|c| c["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&"channels") && fields.contains(&"default_region"), "{d}");
        let tl = get(&s, &format!("{base}/timeline?fields=channels")).await;
        let sizes: Vec<usize> = arr(&tl["data"]).iter().map(|e| e["after"].as_array().map_or(0, Vec::len)).collect();
        assert_eq!(sizes, [1, 2, 3, 3, 2], "{tl}");
        s.stop().await;
    }
}

#[tokio::test]
async fn relationships_read_from_both_sides_and_bad_input_writes_nothing() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let a = s.person("Ada").await["id"].as_str().unwrap().to_owned();
        let b = s.person("Byron").await["id"].as_str().unwrap().to_owned();
        let m = s.person("Mary").await["id"].as_str().unwrap().to_owned();

        // A says B is its parent; B reads A as its child.
        let r = post(&s, &format!("/api/v1/contacts/{a}/relationships"), json!({"related_contact_id": b, "type": "parent"})).await;
        assert_eq!(r["type"], "parent", "{backend:?} {r}");
        assert_eq!(r["related_display_name"], "Byron");
        assert_eq!(r["outgoing"], true);
        let from_b = get(&s, &format!("/api/v1/contacts/{b}/relationships")).await;
        let rels = arr(&from_b["data"]);
        assert_eq!(rels.len(), 1, "{from_b}");
        assert_eq!(rels[0]["type"], "child");
        assert_eq!(rels[0]["related_contact_id"], a.as_str());
        assert_eq!(rels[0]["outgoing"], false);
        let rid = r["id"].as_str().unwrap();
        // Changing the type from B's side stores its inverse for A.
        let (st, upd) =
            s.call(Method::PATCH, &format!("/api/v1/contacts/{b}/relationships/{rid}"), Some(json!({"type": "reports_to"}))).await;
        assert_eq!(st, StatusCode::OK, "{upd}");
        assert_eq!(upd["type"], "reports_to");
        assert_eq!(get(&s, &format!("/api/v1/contacts/{a}/relationships/{rid}")).await["type"], "manages");
        // Symmetric and custom types.
        post(&s, &format!("/api/v1/contacts/{a}/relationships"), json!({"related_contact_id": m, "type": "friend"})).await;
        assert_eq!(arr(&get(&s, &format!("/api/v1/contacts/{m}/relationships")).await["data"])[0]["type"], "friend");
        let (st, unknown) = s
            .call(Method::POST, &format!("/api/v1/contacts/{b}/relationships"), Some(json!({"related_contact_id": m, "type": "mentor"})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{unknown}");
        post(&s, "/api/v1/relationship-types", json!({"name": "mentor", "inverse_name": "mentee"})).await;
        post(&s, &format!("/api/v1/contacts/{b}/relationships"), json!({"related_contact_id": m, "type": "mentor"})).await;
        let m_rels = get(&s, &format!("/api/v1/contacts/{m}/relationships")).await;
        let types: Vec<&str> = arr(&m_rels["data"]).iter().map(|r| r["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["friend", "mentee"], "{m_rels}");
        let types = get(&s, "/api/v1/relationship-types").await;
        assert!(arr(&types["data"]).iter().any(|t| t["name"] == "mentor" && t["built_in"] == false), "{types}");
        let (st, dup) = s
            .call(Method::POST, &format!("/api/v1/contacts/{m}/relationships"), Some(json!({"related_contact_id": b, "type": "mentee"})))
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "the same relationship from the other side: {dup}");

        // Bad input: the contact itself, another tenant's contact.
        let (st, own) = s
            .call(Method::POST, &format!("/api/v1/contacts/{a}/relationships"), Some(json!({"related_contact_id": a, "type": "friend"})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{own}");
        assert_eq!(error_code(&own), "validation_failed");
        let other_key = s.new_tenant("other").await;
        let (st, theirs) =
            s.call_as(&other_key, Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Eve"}))).await;
        assert_eq!(st, StatusCode::CREATED);
        let eve = theirs["id"].as_str().unwrap();
        let (st, cross) = s
            .call(Method::POST, &format!("/api/v1/contacts/{a}/relationships"), Some(json!({"related_contact_id": eve, "type": "friend"})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{cross}");
        assert_eq!(error_code(&cross), "validation_failed");
        let (st, _) = s.call_as(&other_key, Method::GET, &format!("/api/v1/contacts/{a}/relationships"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(arr(&get(&s, &format!("/api/v1/contacts/{a}/relationships")).await["data"]).len(), 2);

        // A deleted relationship leaves both sides.
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/contacts/{b}/relationships/{rid}"), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(arr(&get(&s, &format!("/api/v1/contacts/{a}/relationships")).await["data"]).len(), 1);

        // Dates: partial, validated; 31 April is refused and nothing is written.
        let v0 = get(&s, &format!("/api/v1/contacts/{a}")).await["version"].clone();
        let (st, april) = s
            .call(
                Method::POST,
                &format!("/api/v1/contacts/{a}/dates"),
                Some(json!({"date_type": "birthday", "date_day": 31, "date_month": 4})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{april}");
        assert!(april["error"]["message"].as_str().unwrap().contains("April has 30 days"), "{april}");
        assert_eq!(get(&s, &format!("/api/v1/contacts/{a}")).await["version"], v0);
        let leap =
            post(&s, &format!("/api/v1/contacts/{a}/dates"), json!({"date_type": "birthday", "date_day": 29, "date_month": 2})).await;
        assert!(leap["date_year"].is_null(), "{leap}");
        let (st, _) = s
            .call(
                Method::POST,
                &format!("/api/v1/contacts/{a}/dates"),
                Some(json!({"date_type": "anniversary", "date_day": 29, "date_month": 2, "date_year": 2023})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let lid = leap["id"].as_str().unwrap();
        let (st, put) = s
            .call(Method::PUT, &format!("/api/v1/contacts/{a}/dates/{lid}"), Some(json!({"date_label": "leap day", "date_year": 1996})))
            .await;
        assert_eq!(st, StatusCode::OK, "{put}");
        assert_eq!(put["date_year"], 1996);

        // Upcoming dates: the next N days from today, across the new year.
        let today = chrono::Utc::now().date_naive();
        let soon = today + chrono::Duration::days(3);
        let later = today + chrono::Duration::days(40);
        use chrono::Datelike;
        post(
            &s,
            &format!("/api/v1/contacts/{b}/dates"),
            json!({"date_type": "birthday", "date_day": soon.day(), "date_month": soon.month(), "date_year": 1980}),
        )
        .await;
        post(
            &s,
            &format!("/api/v1/contacts/{m}/dates"),
            json!({"date_type": "anniversary", "date_day": later.day(), "date_month": later.month()}),
        )
        .await;
        post(
            &s,
            &format!("/api/v1/contacts/{m}/dates"),
            json!({"date_type": "custom", "date_day": soon.day(), "date_month": soon.month()}),
        )
        .await;
        let up = get(&s, "/api/v1/contacts/upcoming-dates?days=10").await;
        let names: Vec<&str> = arr(&up["data"]).iter().map(|u| u["display_name"].as_str().unwrap()).collect();
        assert!(names.contains(&"Byron") && !names.contains(&"Mary"), "{up}");
        let byron = arr(&up["data"]).iter().find(|u| u["display_name"] == "Byron").unwrap();
        assert_eq!(byron["days_until"], 3);
        assert_eq!(byron["next_occurrence"], soon.to_string());
        assert_eq!(byron["years"], soon.year() - 1980);
        let wide = get(&s, "/api/v1/contacts/upcoming-dates?days=45").await;
        assert!(arr(&wide["data"]).iter().any(|u| u["display_name"] == "Mary" && u["days_until"] == 40), "{wide}");
        let (st, _) = s.call(Method::GET, "/api/v1/contacts/upcoming-dates?days=400", None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);

        // Addresses: ranges checked, one primary.
        let (st, lat) =
            s.call(Method::POST, &format!("/api/v1/contacts/{a}/addresses"), Some(json!({"city": "London", "latitude": 91.0}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{lat}");
        let (st, cc) =
            s.call(Method::POST, &format!("/api/v1/contacts/{a}/addresses"), Some(json!({"city": "London", "country_code": "XX"}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{cc}");
        let home = post(&s, &format!("/api/v1/contacts/{a}/addresses"), json!({"street": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "United Kingdom", "country_code": "gb", "latitude": 51.5074, "longitude": -0.1340, "is_primary": true, "label": "home"})).await;
        assert_eq!(home["country_code"], "GB");
        let (st, _) =
            s.call(Method::POST, &format!("/api/v1/contacts/{a}/addresses"), Some(json!({"city": "Paris", "is_primary": true}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let hid = home["id"].as_str().unwrap();
        let (st, moved) = s
            .call(Method::PATCH, &format!("/api/v1/contacts/{a}/addresses/{hid}"), Some(json!({"street": "", "city": "Marylebone"})))
            .await;
        assert_eq!(st, StatusCode::OK, "{moved}");
        assert!(moved.get("street").is_none_or(Value::is_null), "{moved}");
        assert_eq!(arr(&get(&s, &format!("/api/v1/contacts/{a}/addresses")).await["data"]).len(), 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn tags_groups_affiliations_and_interactions_filter_and_search() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let a = s.person("Ada").await["id"].as_str().unwrap().to_owned();
        let b = s.person("Byron").await["id"].as_str().unwrap().to_owned();
        let (st, org) =
            s.call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "organization", "display_name": "Analytical Engines Ltd"}))).await;
        assert_eq!(st, StatusCode::CREATED);
        let org = org["id"].as_str().unwrap().to_owned();

        // Tags are unique by name, case-insensitively; tagging by name creates the tag once.
        let t = post(&s, "/api/v1/contact-tags", json!({"name": "Mathematics", "color": "#AA00ff"})).await;
        assert_eq!(t["color"], "#aa00ff");
        let (st, dup) = s.call(Method::POST, "/api/v1/contact-tags", Some(json!({"name": "  mathematics "}))).await;
        assert_eq!(st, StatusCode::CONFLICT, "{backend:?} {dup}");
        let by_name = post(&s, &format!("/api/v1/contacts/{a}/tags"), json!({"name": "MATHEMATICS"})).await;
        assert_eq!(by_name["id"], t["id"]);
        post(&s, &format!("/api/v1/contacts/{a}/tags"), json!({"name": "poets"})).await;
        assert_eq!(arr(&get(&s, "/api/v1/contact-tags").await["data"]).len(), 2);
        let tags = get(&s, &format!("/api/v1/contacts/{a}")).await;
        let names: Vec<&str> = arr(&tags["tags"]).iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Mathematics", "poets"]);

        // Affiliations: a person's employment; the organization's members.
        let (st, not_org) =
            s.call(Method::POST, &format!("/api/v1/contacts/{a}/affiliations"), Some(json!({"organization_id": b, "title": "x"}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{not_org}");
        let job = post(
            &s,
            &format!("/api/v1/contacts/{a}/affiliations"),
            json!({"organization_id": org, "title": "Analyst", "start_date": "1842-01-01"}),
        )
        .await;
        assert_eq!(job["is_current"], true);
        assert_eq!(job["organization_name"], "Analytical Engines Ltd");
        post(
            &s,
            &format!("/api/v1/contacts/{b}/affiliations"),
            json!({"organization_id": org, "title": "Patron", "start_date": "1830-01-01", "end_date": "1835-12-31"}),
        )
        .await;
        let (st, back) = s
            .call(
                Method::POST,
                &format!("/api/v1/contacts/{b}/affiliations"),
                Some(json!({"organization_id": org, "start_date": "1840-01-01", "end_date": "1835-12-31"})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{back}");
        let members = get(&s, &format!("/api/v1/contacts/{org}/members")).await;
        let who: Vec<(&str, bool)> = arr(&members["data"])
            .iter()
            .map(|m| (m["contact"]["display_name"].as_str().unwrap(), m["affiliation"]["is_current"].as_bool().unwrap()))
            .collect();
        assert_eq!(who, [("Ada", true), ("Byron", false)], "{members}");

        // Groups: bulk add all or nothing.
        let g = post(&s, "/api/v1/contact-groups", json!({"name": "Salon", "description": "Thursday evenings"})).await;
        let gid = g["id"].as_str().unwrap().to_owned();
        let missing = uuid::Uuid::now_v7().to_string();
        let (st, bad) =
            s.call(Method::POST, &format!("/api/v1/contact-groups/{gid}/members"), Some(json!({"contact_ids": [a, b, missing]}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert!(bad["error"]["message"].as_str().unwrap().contains(&missing), "{bad}");
        assert_eq!(get(&s, &format!("/api/v1/contact-groups/{gid}")).await["member_count"], 0);
        assert!(arr(&get(&s, &format!("/api/v1/contacts/{a}")).await["group_ids"]).is_empty());
        let added = post(&s, &format!("/api/v1/contact-groups/{gid}/members"), json!({"contact_ids": [a, b]})).await;
        assert_eq!(arr(&added["changed"]).len(), 2, "{added}");
        assert_eq!(added["group"]["member_count"], 2);
        let again = post(&s, &format!("/api/v1/contact-groups/{gid}/members"), json!({"contact_ids": [a]})).await;
        assert_eq!(arr(&again["unchanged"]).len(), 1);
        let (st, too_many) = s
            .call(Method::POST, &format!("/api/v1/contact-groups/{gid}/members"), Some(json!({"contact_ids": vec![a.clone(); 501]})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{too_many}");
        let removed = post(&s, &format!("/api/v1/contact-groups/{gid}/members:remove"), json!({"contact_ids": [b]})).await;
        assert_eq!(removed["group"]["member_count"], 1, "{removed}");

        // List filters and q over tags, organization names and channels.
        post(&s, &format!("/api/v1/contacts/{b}/channels"), json!({"type": "email", "value": "byron@newstead.example"})).await;
        let ids = |v: &Value| -> Vec<String> { arr(&v["data"]).iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect() };
        assert_eq!(ids(&get(&s, "/api/v1/contacts?tag=mathematics").await), [a.as_str()]);
        assert_eq!(ids(&get(&s, &format!("/api/v1/contacts?tag={}", t["id"].as_str().unwrap())).await), [a.as_str()]);
        assert!(ids(&get(&s, "/api/v1/contacts?tag=nonesuch").await).is_empty());
        assert_eq!(ids(&get(&s, &format!("/api/v1/contacts?group_id={gid}")).await), [a.as_str()]);
        let mut both = ids(&get(&s, &format!("/api/v1/contacts?organization_id={org}")).await);
        both.sort();
        let mut expect = vec![a.clone(), b.clone()];
        expect.sort();
        assert_eq!(both, expect);
        assert_eq!(ids(&get(&s, &format!("/api/v1/contacts?organization_id={org}&kind=person&tag=poets")).await), [a.as_str()]);
        assert_eq!(ids(&get(&s, "/api/v1/contacts?q=poets").await), [a.as_str()]);
        assert_eq!(ids(&get(&s, "/api/v1/contacts?q=newstead").await), [b.as_str()]);
        let analytical = ids(&get(&s, "/api/v1/contacts?q=analytical&kind=person").await);
        assert_eq!(analytical.len(), 2, "organization names are searched: {analytical:?}");
        let (st, _) = s.call(Method::GET, &format!("/api/v1/contacts?tag=poets&as_of={}", ts(chrono::Utc::now())), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        // A renamed tag is searched by its new name.
        let tid = t["id"].as_str().unwrap();
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/contact-tags/{tid}"), Some(json!({"name": "Maths"}))).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(ids(&get(&s, "/api/v1/contacts?q=maths").await), [a.as_str()]);
        assert_eq!(get(&s, &format!("/api/v1/contacts/{a}")).await["tags"][0]["name"], "Maths");
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/contacts/{a}/tags/{tid}"), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(arr(&get(&s, &format!("/api/v1/contacts/{a}/tags")).await["data"]).len(), 1);

        // Interactions keep last_contacted_at; due-for-contact lists the overdue, most overdue first.
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/contacts/{a}"), Some(json!({"stay_in_touch_days": 30}))).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/contacts/{b}"), Some(json!({"stay_in_touch_days": 7}))).await;
        assert_eq!(st, StatusCode::OK);
        let long_ago = (chrono::Utc::now() - chrono::Duration::days(60)).to_rfc3339();
        let recent = (chrono::Utc::now() - chrono::Duration::days(10)).to_rfc3339();
        let call = post(
            &s,
            &format!("/api/v1/contacts/{a}/interactions"),
            json!({"type": "call", "occurred_at": long_ago, "summary": "The engine", "participant_ids": [b]}),
        )
        .await;
        assert_eq!(arr(&call["participant_ids"]).len(), 2, "{call}");
        post(&s, &format!("/api/v1/contacts/{b}/interactions"), json!({"type": "meeting", "occurred_at": recent})).await;
        let a_now = get(&s, &format!("/api/v1/contacts/{a}")).await;
        let b_now = get(&s, &format!("/api/v1/contacts/{b}")).await;
        assert!(a_now["last_contacted_at"].as_str().unwrap().starts_with(&long_ago[..10]), "{a_now}");
        assert!(b_now["last_contacted_at"].as_str().unwrap().starts_with(&recent[..10]), "{b_now}");
        let due = get(&s, "/api/v1/contacts/due-for-contact").await;
        let order: Vec<&str> = arr(&due["data"]).iter().map(|d| d["contact"]["display_name"].as_str().unwrap()).collect();
        assert_eq!(order, ["Ada", "Byron"], "{due}");
        assert_eq!(arr(&due["data"])[0]["days_overdue"], 30);
        let listed = get(&s, &format!("/api/v1/contacts/{b}/interactions")).await;
        assert_eq!(arr(&listed["data"]).len(), 2);
        assert_eq!(arr(&listed["data"])[0]["type"], "meeting", "latest first: {listed}");
        // A newer interaction takes Ada off the list; deleting it puts her back.
        let fresh = post(&s, &format!("/api/v1/contacts/{a}/interactions"), json!({"type": "email"})).await;
        let due = get(&s, "/api/v1/contacts/due-for-contact").await;
        assert_eq!(arr(&due["data"]).len(), 1, "{due}");
        let fid = fresh["id"].as_str().unwrap();
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/contacts/{a}/interactions/{fid}"), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(arr(&get(&s, "/api/v1/contacts/due-for-contact").await["data"]).len(), 2);
        let (st, future) = s
            .call(
                Method::POST,
                &format!("/api/v1/contacts/{a}/interactions"),
                Some(json!({"type": "call", "occurred_at": "2999-01-01T00:00:00Z"})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{future}");
        let ghost = uuid::Uuid::now_v7().to_string();
        let (st, _) = s
            .call(Method::POST, &format!("/api/v1/contacts/{a}/interactions"), Some(json!({"type": "call", "participant_ids": [ghost]})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        s.stop().await;
    }
}
