//! Contacts end to end over REST: the whole system on SQLite and on PostgreSQL + NATS.

mod common;

use common::{Stack, error_code, moment, ts};
use reqwest::{Method, StatusCode};
use serde_json::json;
use worktruck_kit::testing::backends;

#[tokio::test]
async fn create_read_update_delete_with_the_reference_shapes() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let c = s.person("Ada").await;
        assert_eq!(c["kind"], "person", "{backend:?}");
        assert_eq!(c["display_name"], "Ada");
        assert_eq!(c["metadata"], json!({}));
        assert_eq!(c["version"], 1);
        for k in ["id", "tenant_id", "created_at", "updated_at"] {
            assert!(c[k].is_string(), "{k} in {c}");
        }
        assert!(c.get("_temporal").is_none(), "no _temporal on current reads");
        let id = c["id"].as_str().unwrap();

        let (st, got) = s.call(Method::GET, &format!("/api/v1/contacts/{id}"), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(got["display_name"], "Ada");

        let (st, upd) = s
            .call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(json!({
                "family_name": "Lovelace", "metadata": {"born": 1815, "tags": ["math"]}, "timezone": "Europe/London"
            })))
            .await;
        assert_eq!(st, StatusCode::OK, "{upd}");
        assert_eq!(upd["family_name"], "Lovelace");
        assert_eq!(upd["metadata"]["born"], json!(1815), "integers stay integers: {upd}");
        assert_eq!(upd["version"], 2);

        let (st, list) = s.call(Method::GET, "/api/v1/contacts?kind=person&q=lovelace", None).await;
        assert_eq!(st, StatusCode::OK, "{list}");
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["has_more"], false);
        assert!(list.get("next_cursor").is_some());
        let (_, orgs) = s.call(Method::GET, "/api/v1/contacts?kind=organization", None).await;
        assert!(orgs["data"].as_array().unwrap().is_empty());

        let (st, del) = s.call(Method::DELETE, &format!("/api/v1/contacts/{id}"), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(del, json!({"id": id, "deleted": true}));
        let (st, gone) = s.call(Method::GET, &format!("/api/v1/contacts/{id}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&gone), "not_found");
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/contacts/{id}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        s.stop().await;
    }
}

#[tokio::test]
async fn a_contact_renamed_twice_reads_back_through_time() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let c = s.person("Ada").await;
        let id = c["id"].as_str().unwrap().to_owned();
        let t1 = moment().await;
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(json!({"display_name": "Ada Byron"}))).await;
        assert_eq!(st, StatusCode::OK);
        let t2 = moment().await;
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(json!({"display_name": "Ada Lovelace"}))).await;
        assert_eq!(st, StatusCode::OK);

        // as_of between the edits: the middle version, with its _temporal block.
        let (st, mid) = s.call(Method::GET, &format!("/api/v1/contacts/{id}?as_of={}", ts(t2)), None).await;
        assert_eq!(st, StatusCode::OK, "{mid}");
        assert_eq!(mid["display_name"], "Ada Byron", "{backend:?}");
        assert_eq!(mid["version"], 2);
        let t = &mid["_temporal"];
        for k in ["as_of", "valid_at", "sys_from", "sys_to", "valid_from", "captured_by", "capture_reason"] {
            assert!(!t[k].is_null(), "_temporal.{k} in {mid}");
        }
        assert_eq!(t["capture_reason"], "update");

        // History: three versions, newest first.
        let (st, h) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/history"), None).await;
        assert_eq!(st, StatusCode::OK, "{h}");
        let versions: Vec<i64> = h["data"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
        assert_eq!(versions, [3, 2, 1]);
        assert_eq!(h["data"][2]["data"]["display_name"], "Ada");
        // Paged history returns each version once.
        let (_, p1) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/history?limit=2"), None).await;
        assert_eq!(p1["has_more"], true);
        let cur = p1["next_cursor"].as_str().unwrap();
        let (_, p2) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/history?limit=2&cursor={cur}"), None).await;
        assert_eq!(p2["data"][0]["version"], 1);

        // Diff names the changed field.
        let (st, d) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/diff?from={}&to={}", ts(t1), ts(chrono::Utc::now())), None).await;
        assert_eq!(st, StatusCode::OK, "{d}");
        assert_eq!(d["changes"].as_array().unwrap().len(), 1, "{d}");
        assert_eq!(d["changes"][0]["field"], "display_name");
        assert_eq!(d["changes"][0]["before"], "Ada");
        assert_eq!(d["changes"][0]["after"], "Ada Lovelace");
        assert_eq!(d["intermediate_versions"], 2);
        assert_eq!(d["created_in_window"], false);

        // Timeline orders the changes.
        let (st, tl) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/timeline?fields=display_name"), None).await;
        assert_eq!(st, StatusCode::OK, "{tl}");
        let afters: Vec<&str> = tl["data"].as_array().unwrap().iter().map(|e| e["after"].as_str().unwrap()).collect();
        assert_eq!(afters, ["Ada", "Ada Byron", "Ada Lovelace"]);
        let (_, two) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/timeline?fields=display_name,kind"), None).await;
        let fields: Vec<&str> = two["data"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["kind", "display_name", "display_name", "display_name"], "{two}");

        // A delete leaves the contact readable as_of before it.
        let before_delete = moment().await;
        s.call(Method::DELETE, &format!("/api/v1/contacts/{id}"), None).await;
        let (st, old) = s.call(Method::GET, &format!("/api/v1/contacts/{id}?as_of={}", ts(before_delete)), None).await;
        assert_eq!(st, StatusCode::OK, "{old}");
        assert_eq!(old["display_name"], "Ada Lovelace");
        let (st, h) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/history"), None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h["data"][0]["deleted"], true);

        // Before the retention window: 410 gone.
        let long_ago = chrono::Utc::now() - chrono::Duration::days(400);
        let (st, e) = s.call(Method::GET, &format!("/api/v1/contacts/{id}?as_of={}", ts(long_ago)), None).await;
        assert_eq!(st, StatusCode::GONE, "{e}");
        assert_eq!(error_code(&e), "gone");
        s.stop().await;
    }
}

#[tokio::test]
async fn a_back_dated_fact_shows_under_later_valid_times_only() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (st, c) = s
            .call(Method::POST, "/api/v1/contacts", Some(json!({
                "kind": "organization", "display_name": "Initech", "valid_from": "2020-01-01T00:00:00Z"
            })))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{c}");
        let id = c["id"].as_str().unwrap().to_owned();
        let (st, _) = s
            .call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(json!({
                "display_name": "Initech Global", "valid_from": "2024-01-01T00:00:00Z"
            })))
            .await;
        assert_eq!(st, StatusCode::OK);
        let (_, later) = s.call(Method::GET, &format!("/api/v1/contacts/{id}?valid_at=2025-01-01T00:00:00Z"), None).await;
        assert_eq!(later["display_name"], "Initech Global", "{backend:?}: {later}");
        let (_, earlier) = s.call(Method::GET, &format!("/api/v1/contacts/{id}?valid_at=2022-01-01T00:00:00Z"), None).await;
        assert_eq!(earlier["display_name"], "Initech", "{earlier}");
        assert_eq!(earlier["_temporal"]["valid_to"], "2024-01-01T00:00:00Z");
        let (st, before) = s.call(Method::GET, &format!("/api/v1/contacts/{id}?valid_at=2019-01-01T00:00:00Z"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{before}");
        let (_, list) = s.call(Method::GET, "/api/v1/contacts?valid_at=2022-06-01T00:00:00Z", None).await;
        assert_eq!(list["data"][0]["display_name"], "Initech", "{list}");
        let (st, e) = s.call(Method::GET, "/api/v1/contacts?q=initech&as_of=2026-01-01T00:00:00Z", None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        let (st, e) = s
            .call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(json!({"display_name": "x", "valid_from": "2999-01-01T00:00:00Z"})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&e), "validation_failed");
        s.stop().await;
    }
}

#[tokio::test]
async fn paging_returns_every_contact_exactly_once_and_a_tampered_cursor_is_a_400() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let mut ids = Vec::new();
        for i in 0..57 {
            ids.push(s.person(&format!("p{i}")).await["id"].as_str().unwrap().to_owned());
        }
        let mut seen = Vec::new();
        let mut path = "/api/v1/contacts?limit=20".to_owned();
        let mut last_cursor = String::new();
        loop {
            let (st, page) = s.call(Method::GET, &path, None).await;
            assert_eq!(st, StatusCode::OK, "{page}");
            seen.extend(page["data"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()));
            if page["has_more"] != true {
                break;
            }
            last_cursor = page["next_cursor"].as_str().unwrap().to_owned();
            path = format!("/api/v1/contacts?limit=20&cursor={last_cursor}");
        }
        assert_eq!(seen.len(), 57, "{backend:?}");
        seen.sort();
        ids.sort();
        assert_eq!(seen, ids);

        let mut tampered = last_cursor.clone().into_bytes();
        tampered[4] = if tampered[4] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        for bad in [tampered.as_str(), "garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            let (st, e) = s.call(Method::GET, &format!("/api/v1/contacts?limit=20&cursor={bad}"), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {e}");
            assert_eq!(error_code(&e), "invalid_argument");
        }
        // A cursor from one query is refused by another.
        let (st, _) = s.call(Method::GET, &format!("/api/v1/contacts?limit=20&kind=group&cursor={last_cursor}"), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        for bad_limit in ["0", "201", "-1", "x"] {
            let (st, e) = s.call(Method::GET, &format!("/api/v1/contacts?limit={bad_limit}"), None).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "limit={bad_limit}: {e}");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn a_restart_on_the_same_data_loses_nothing() {
    for backend in backends() {
        let mut s = Stack::start(backend).await;
        let c = s.person("Persistent Pat").await;
        let id = c["id"].as_str().unwrap().to_owned();
        s.call(Method::PATCH, &format!("/api/v1/contacts/{id}"), Some(json!({"nickname": "Pat"}))).await;
        let other_key = s.new_tenant("second").await;
        s.restart().await;
        let (st, got) = s.call(Method::GET, &format!("/api/v1/contacts/{id}"), None).await;
        assert_eq!(st, StatusCode::OK, "{backend:?}: {got}");
        assert_eq!(got["nickname"], "Pat");
        assert_eq!(got["version"], 2);
        let (_, h) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/history"), None).await;
        assert_eq!(h["data"].as_array().unwrap().len(), 2);
        let (st, _) = s.call_as(&other_key, Method::GET, "/api/v1/tenant", None).await;
        assert_eq!(st, StatusCode::OK, "keys survive a restart");
        s.stop().await;
    }
}

#[tokio::test]
async fn fields_trims_every_get_and_list_and_an_unknown_field_is_a_400() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (st, c) = s
            .call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Ada"})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{c}");
        let id = c["id"].as_str().unwrap();
        let (st, ch) = s
            .call(Method::POST, &format!("/api/v1/contacts/{id}/channels"), Some(json!({"type": "email", "value": "ada@example.com", "label": "work"})))
            .await;
        assert!(st.is_success(), "{ch}");
        let (st, got) = s.call(Method::GET, &format!("/api/v1/contacts/{id}?fields=id,display_name,channels.value"), None).await;
        assert_eq!(st, StatusCode::OK, "{backend:?}: {got}");
        assert_eq!(got, json!({"id": id, "display_name": "Ada", "channels": [{"value": "ada@example.com"}]}));
        // Repeated parameters add up; a list trims each item and keeps its paging.
        let (st, list) = s.call(Method::GET, "/api/v1/contacts?fields=id&fields=kind&limit=1", None).await;
        assert_eq!(st, StatusCode::OK, "{list}");
        assert_eq!(list["data"][0], json!({"id": id, "kind": "person"}), "{list}");
        assert!(list.get("has_more").is_some(), "{list}");
        // Other domains have it with no code of their own.
        let (st, deal) = s.call(Method::POST, "/api/v1/deals", Some(json!({"name": "Big one"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{deal}");
        let (_, d) = s.call(Method::GET, &format!("/api/v1/deals/{}?fields=name", deal["id"].as_str().unwrap()), None).await;
        assert_eq!(d, json!({"name": "Big one"}));
        for bad in ["bogus", "display_name.first", "channels.nope"] {
            let (st, e) = s.call(Method::GET, &format!("/api/v1/contacts/{id}?fields={bad}"), None).await;
            assert_eq!((st, error_code(&e)), (StatusCode::BAD_REQUEST, "invalid_argument".into()), "{bad}: {e}");
        }
        // A timeline's own `fields` stays its own.
        let (st, tl) = s.call(Method::GET, &format!("/api/v1/contacts/{id}/timeline?fields=display_name"), None).await;
        assert_eq!(st, StatusCode::OK, "{tl}");
        assert!(tl["data"].as_array().unwrap().iter().all(|e| e["field"] == "display_name"), "{tl}");
        s.stop().await;
    }
}
