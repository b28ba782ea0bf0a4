//! Duplicates, merge preview, merge and its exact undo over REST, on SQLite and on
//! PostgreSQL + NATS.

mod common;

use common::{Stack, error_code};
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

/// Drops the fields every write changes, at any depth.
fn strip(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("updated_at");
                m.remove("version");
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Everything about a contact: its full read, relationships and interactions.
async fn everything(s: &Stack, id: &str) -> Value {
    json!({
        "contact": strip(get(s, &format!("/api/v1/contacts/{id}")).await),
        "relationships": strip(get(s, &format!("/api/v1/contacts/{id}/relationships")).await),
        "interactions": strip(get(s, &format!("/api/v1/contacts/{id}/interactions")).await),
    })
}

#[tokio::test]
async fn duplicates_merge_and_an_undo_that_restores_exactly() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let a = s.person("Ada Lovelace").await["id"].as_str().unwrap().to_owned();
        let b = s.person("Ada Lovelance").await["id"].as_str().unwrap().to_owned();
        let c = s.person("Charles Babbage").await["id"].as_str().unwrap().to_owned();
        let other = s.person("Mary Somerville").await["id"].as_str().unwrap().to_owned();
        post(&s, &format!("/api/v1/contacts/{a}/channels"), json!({"type": "email", "value": "ada@example.org", "is_primary": true})).await;
        post(&s, &format!("/api/v1/contacts/{a}/addresses"), json!({"city": "London", "is_primary": true})).await;
        post(&s, &format!("/api/v1/contacts/{a}/tags"), json!({"name": "math"})).await;
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/contacts/{a}"), Some(json!({"bio": "Countess"}))).await;
        assert_eq!(st, StatusCode::OK);
        post(&s, &format!("/api/v1/contacts/{b}/channels"), json!({"type": "email", "value": " ADA@example.org", "is_primary": true}))
            .await;
        post(&s, &format!("/api/v1/contacts/{b}/channels"), json!({"type": "phone", "value": "+44 20 7946 0958"})).await;
        post(
            &s,
            &format!("/api/v1/contacts/{b}/dates"),
            json!({"date_type": "birthday", "date_day": 10, "date_month": 12, "date_year": 1815}),
        )
        .await;
        post(&s, &format!("/api/v1/contacts/{b}/tags"), json!({"name": "poets"})).await;
        let (st, _) = s
            .call(Method::PATCH, &format!("/api/v1/contacts/{b}"), Some(json!({"bio": "Poetical scientist", "nickname": "Enchantress"})))
            .await;
        assert_eq!(st, StatusCode::OK);
        let g = post(&s, "/api/v1/contact-groups", json!({"name": "Salon"})).await;
        post(&s, &format!("/api/v1/contact-groups/{}/members", g["id"].as_str().unwrap()), json!({"contact_ids": [b]})).await;
        post(&s, &format!("/api/v1/contacts/{c}/relationships"), json!({"related_contact_id": b, "type": "friend"})).await;
        post(&s, &format!("/api/v1/contacts/{a}/relationships"), json!({"related_contact_id": b, "type": "sibling"})).await;
        post(
            &s,
            &format!("/api/v1/contacts/{c}/interactions"),
            json!({"type": "meeting", "participant_ids": [b], "summary": "The engine"}),
        )
        .await;

        // Duplicates: the same email (whatever its case) and similar names, with evidence.
        let d = get(&s, "/api/v1/contacts/duplicates").await;
        let sets = d["data"].as_array().unwrap();
        assert_eq!(sets.len(), 1, "{backend:?} {d}");
        let ids: Vec<&str> = sets[0]["contacts"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [a.as_str(), b.as_str()]);
        let evidence = sets[0]["evidence"].as_array().unwrap();
        assert!(evidence.iter().any(|e| e == "same email ada@example.org"), "{d}");
        assert!(evidence.iter().any(|e| e.as_str().unwrap().starts_with("similar names (0.9")), "{d}");
        assert!(sets[0]["score"].as_f64().unwrap() > 0.9);

        let before: Vec<Value> = futures::future::join_all([&a, &b, &c, &other].map(|id| everything(&s, id))).await;
        let req = json!({"survivor_id": a, "merged_ids": [b], "fields": {"bio": b}});

        // The preview shows the result and writes nothing.
        let p = post(&s, "/api/v1/contacts/merge/preview", req.clone()).await;
        assert_eq!(p["contact"]["bio"], "Poetical scientist");
        assert_eq!(p["contact"]["nickname"], "Enchantress", "the survivor has none, so it takes the other's");
        assert_eq!(p["contact"]["channels"].as_array().unwrap().len(), 2, "one email (shared) and the phone: {p}");
        assert_eq!(p["relationships"], 2);
        assert_eq!(p["interactions"], 1);
        let after_preview: Vec<Value> = futures::future::join_all([&a, &b, &c].map(|id| everything(&s, id))).await;
        assert_eq!(after_preview[..], before[..3]);

        // The merge: one recorded operation.
        let m = post(&s, "/api/v1/contacts/merge", req.clone()).await;
        let merge_id = m["merge_id"].as_str().unwrap().to_owned();
        let survivor = &m["contact"];
        assert_eq!(survivor["bio"], "Poetical scientist");
        let tags: Vec<&str> = survivor["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(tags, ["math", "poets"]);
        assert_eq!(survivor["group_ids"].as_array().unwrap().len(), 1);
        assert_eq!(survivor["dates"][0]["date_year"], 1815);
        let (st, _) = s.call(Method::GET, &format!("/api/v1/contacts/{b}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "the merged contact is deleted");
        let (st, hist) = s.call(Method::GET, &format!("/api/v1/contacts/{b}/history"), None).await;
        assert_eq!(st, StatusCode::OK, "and kept in history: {hist}");
        let c_rels = get(&s, &format!("/api/v1/contacts/{c}/relationships")).await;
        assert_eq!(c_rels["data"][0]["related_contact_id"], a.as_str(), "re-pointed: {c_rels}");
        assert!(
            get(&s, &format!("/api/v1/contacts/{a}/relationships")).await["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["related_contact_id"] != a.as_str()),
            "a sibling of itself is gone"
        );
        let c_int = get(&s, &format!("/api/v1/contacts/{c}/interactions")).await;
        assert!(c_int["data"][0]["participant_ids"].as_array().unwrap().contains(&json!(a)), "{c_int}");
        let found = get(&s, "/api/v1/contacts/find-by-channel?type=phone&value=%2B442079460958").await;
        assert_eq!(found["id"], a.as_str());
        assert!(get(&s, "/api/v1/contacts/duplicates").await["data"].as_array().unwrap().is_empty());

        // Undo: every contact and child exactly as before.
        let u = post(&s, &format!("/api/v1/contacts/merges/{merge_id}/undo"), json!({})).await;
        assert_eq!(u["contacts"].as_array().unwrap().len(), 2, "{u}");
        let after_undo: Vec<Value> = futures::future::join_all([&a, &b, &c, &other].map(|id| everything(&s, id))).await;
        for (x, y) in before.iter().zip(&after_undo) {
            assert_eq!(x, y, "{backend:?}");
        }
        assert_eq!(get(&s, &format!("/api/v1/contact-groups/{}", g["id"].as_str().unwrap())).await["member_count"], 1);
        let (st, again) = s.call(Method::POST, &format!("/api/v1/contacts/merges/{merge_id}/undo"), Some(json!({}))).await;
        assert_eq!(st, StatusCode::CONFLICT, "{again}");

        // An undo after a merged contact changed is refused, and writes nothing.
        let m2 = post(&s, "/api/v1/contacts/merge", req.clone()).await;
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/contacts/{a}"), Some(json!({"nickname": "Ada"}))).await;
        assert_eq!(st, StatusCode::OK);
        let changed = everything(&s, &a).await;
        let (st, refused) =
            s.call(Method::POST, &format!("/api/v1/contacts/merges/{}/undo", m2["merge_id"].as_str().unwrap()), Some(json!({}))).await;
        assert_eq!(st, StatusCode::CONFLICT, "{refused}");
        assert_eq!(error_code(&refused), "conflict");
        assert_eq!(everything(&s, &a).await, changed);
        let (st, _) = s.call(Method::GET, &format!("/api/v1/contacts/{b}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // Bad merges.
        let (st, own) = s.call(Method::POST, "/api/v1/contacts/merge", Some(json!({"survivor_id": a, "merged_ids": [a]}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{own}");
        let (st, gone) = s.call(Method::POST, "/api/v1/contacts/merge", Some(json!({"survivor_id": a, "merged_ids": [b]}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "a deleted contact: {gone}");
        let (st, field) = s
            .call(
                Method::POST,
                "/api/v1/contacts/merge/preview",
                Some(json!({"survivor_id": a, "merged_ids": [c], "fields": {"bio": other}})),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{field}");
        s.stop().await;
    }
}
