//! Cross-domain links (kit::links) end to end: a note links to a contact by markdown and by the
//! explicit endpoint; the contact's `/links` lists the note (its inbound projection, fed by the
//! bus); deleting and restoring either side turns the links dangling and back; bad targets are
//! 400s. On the embedded default (both backends) and as separate role processes on PostgreSQL
//! and a NATS server of the test's own, stopped while the contact is deleted.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::split::Split;
use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_kit::testing::nats::OwnNats;
use worktruck_kit::testing::{Backend, backends};

/// Polls `probe` until it answers `Some`, for at most 20 s (events cross the bus meanwhile).
async fn eventually<F, Fut>(what: &str, mut probe: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Value, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => panic!("{what}: never happened; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// The cross-domain entries of a note's `/links`.
fn cross(links: &Value) -> Vec<Value> {
    links["data"].as_array().unwrap().iter().filter(|l| l["link_id"].is_string()).cloned().collect()
}

#[tokio::test]
async fn a_note_links_to_a_contact_and_the_contact_sees_it() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let ada = s.person("Ada Lovelace").await;
        let cid = id(&ada);
        let body = format!("Met [[contact:{cid}]] at the conference.\n\n```\n[[contact:{cid}]]\n```\n");
        let (st, note) = s.call(Method::POST, "/api/v1/notes", Some(json!({"title": "Conference", "body": body}))).await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {note}");
        let nid = id(&note);

        // The note's own view: one link (the one in the code block is not a link), to the
        // contact, resolved, with its name; no note-title link was made of it.
        let (_, links) = s.call(Method::GET, &format!("/api/v1/notes/{nid}/links"), None).await;
        assert_eq!(links["data"].as_array().unwrap().len(), 1, "{links}");
        let l = &links["data"][0];
        assert_eq!(l["target"], format!("contacts:contact:{cid}"));
        assert_eq!(l["target_title"], "Ada Lovelace");
        assert_eq!(l["status"], "resolved");
        assert_eq!(l["link_type"], "mentions");

        // The contact's view, through its inbound projection.
        let path = format!("/api/v1/contacts/{cid}/links");
        let inbound = eventually("the contact sees the note's link", || async {
            let (_, v) = s.call(Method::GET, &path, None).await;
            if v["data"].as_array().is_some_and(|d| d.len() == 1) { Ok(v) } else { Err(v.to_string()) }
        })
        .await;
        let l = &inbound["data"][0];
        assert_eq!(l["direction"], "inbound", "{backend:?}: {inbound}");
        assert_eq!(l["source"], format!("notes:note:{nid}"));
        assert_eq!(l["source_title"], "Conference");
        assert_eq!(l["type"], "mentions");
        assert_eq!(l["context"], format!("Met [[contact:{cid}]] at the conference."));
        assert_eq!(l["dangling"], false);

        // An explicit link too; bad targets are 400s and write nothing.
        let (st, made) = s
            .call(Method::POST, &format!("/api/v1/notes/{nid}/links"), Some(json!({"target": format!("contacts:contact:{cid}"), "type": "about", "context": "The speaker"})))
            .await;
        assert!(st.is_success(), "{made}");
        assert_eq!(made["type"], "about");
        assert_eq!(made["target_title"], "Ada Lovelace");
        let (st, again) = s
            .call(Method::POST, &format!("/api/v1/notes/{nid}/links"), Some(json!({"target": format!("contact:{cid}"), "type": "about"})))
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "the same link twice: {again}");
        let other_key = s.new_tenant("other").await;
        let (st, theirs) = s
            .call_as(&other_key, Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Not yours"})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{theirs}");
        for (target, why) in [
            (format!("contact:{}", id(&theirs)), "another tenant's contact"),
            (format!("contact:{}", uuid::Uuid::now_v7()), "a contact that does not exist"),
            ("contact:not-a-uuid".to_owned(), "an id that is not one"),
            ("spaceship:1".to_owned(), "a kind nothing serves"),
            ("nonsense".to_owned(), "not a reference"),
        ] {
            let (st, e) = s.call(Method::POST, &format!("/api/v1/notes/{nid}/links"), Some(json!({"target": target}))).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{why}: {e}");
            assert_eq!(error_code(&e), "validation_failed", "{why}: {e}");
        }
        let (st, e) = s
            .call(Method::POST, &format!("/api/v1/notes/{nid}/links"), Some(json!({"target": format!("contact:{cid}"), "type": "Not A Type"})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        let (st, e) = s
            .call(Method::POST, "/api/v1/notes", Some(json!({"title": "Broken", "body": format!("See [[contact:{}]].", uuid::Uuid::now_v7())})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "a body linking to no contact: {e}");

        // `GET /api/v1/links` (the links_list tool) for any entity, by short reference.
        let both = eventually("both links reach the contact", || async {
            let (_, v) = s.call(Method::GET, &format!("/api/v1/links?entity=contact:{cid}"), None).await;
            if v["data"].as_array().is_some_and(|d| d.len() == 2) { Ok(v) } else { Err(v.to_string()) }
        })
        .await;
        assert_eq!(both["data"][0]["type"], "about", "newest first: {both}");
        let (_, only) = s.call(Method::GET, &format!("/api/v1/contacts/{cid}/links?type=about"), None).await;
        assert_eq!(only["data"].as_array().unwrap().len(), 1, "{only}");
        let (_, page) = s.call(Method::GET, &format!("/api/v1/contacts/{cid}/links?limit=1"), None).await;
        assert_eq!(page["has_more"], true, "{page}");
        let next = page["next_cursor"].as_str().unwrap();
        let (_, rest) = s.call(Method::GET, &format!("/api/v1/contacts/{cid}/links?limit=1&cursor={next}"), None).await;
        assert_eq!(rest["data"][0]["type"], "mentions", "{rest}");
        let (st, _) = s.call(Method::GET, &format!("/api/v1/contacts/{cid}/links?limit=1&cursor={next}&type=about"), None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "a cursor of another filter");

        // A renamed note: the contact's view follows.
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/notes/{nid}"), Some(json!({"title": "RustConf notes"}))).await;
        assert_eq!(st, StatusCode::OK);
        eventually("the contact sees the new title", || async {
            let (_, v) = s.call(Method::GET, &path, None).await;
            let titles: Vec<&str> = v["data"].as_array().unwrap().iter().filter_map(|l| l["source_title"].as_str()).collect();
            if titles == ["RustConf notes", "RustConf notes"] { Ok(v) } else { Err(v.to_string()) }
        })
        .await;

        // The contact deleted: the note's links to it are dangling; restored: resolved again.
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/contacts/{cid}"), None).await;
        assert_eq!(st, StatusCode::OK);
        let note_links = format!("/api/v1/notes/{nid}/links");
        eventually("the note's links turn dangling", || async {
            let (_, v) = s.call(Method::GET, &note_links, None).await;
            let c = cross(&v);
            if c.len() == 2 && c.iter().all(|l| l["status"] == "dangling") { Ok(v) } else { Err(v.to_string()) }
        })
        .await;
        let (st, _) = s.call(Method::GET, &format!("/api/v1/links?entity=contact:{cid}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "a deleted contact has no links to list");
        let (st, back) = s.call(Method::POST, &format!("/api/v1/contacts/{cid}/restore"), Some(json!({}))).await;
        assert_eq!(st, StatusCode::OK, "{back}");
        eventually("the note's links resolve again", || async {
            let (_, v) = s.call(Method::GET, &note_links, None).await;
            let c = cross(&v);
            if c.len() == 2 && c.iter().all(|l| l["status"] == "resolved") { Ok(v) } else { Err(v.to_string()) }
        })
        .await;

        // The note deleted: the contact no longer lists it; restored, it does again.
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/notes/{nid}"), None).await;
        assert_eq!(st, StatusCode::OK);
        eventually("the contact's links go with the note", || async {
            let (_, v) = s.call(Method::GET, &path, None).await;
            if v["data"].as_array().is_some_and(|d| d.is_empty()) { Ok(v) } else { Err(v.to_string()) }
        })
        .await;
        let (st, _) = s.call(Method::POST, &format!("/api/v1/notes/{nid}/restore"), Some(json!({}))).await;
        assert_eq!(st, StatusCode::OK);
        eventually("and come back with it", || async {
            let (_, v) = s.call(Method::GET, &path, None).await;
            if v["data"].as_array().is_some_and(|d| d.len() == 2) { Ok(v) } else { Err(v.to_string()) }
        })
        .await;

        // A body's link is the body's to remove.
        let (_, v) = s.call(Method::GET, &note_links, None).await;
        let body_link = cross(&v).into_iter().find(|l| l["link_type"] == "mentions").unwrap();
        let (st, e) = s.call(Method::DELETE, &format!("/api/v1/notes/{nid}/links/{}", body_link["link_id"].as_str().unwrap()), None).await;
        assert_eq!(st, StatusCode::CONFLICT, "{e}");
        // An explicit link removed; a body that drops its reference removes that one.
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/notes/{nid}/links/{}", id(&made)), None).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/notes/{nid}"), Some(json!({"body": "Nobody in particular."}))).await;
        assert_eq!(st, StatusCode::OK);
        eventually("no links are left", || async {
            let (_, v) = s.call(Method::GET, &path, None).await;
            if v["data"].as_array().is_some_and(|d| d.is_empty()) { Ok(v) } else { Err(v.to_string()) }
        })
        .await;
        let (_, v) = s.call(Method::GET, &note_links, None).await;
        assert!(cross(&v).is_empty(), "{v}");
        s.stop().await;
    }
}

async fn call(http: &reqwest::Client, key: &str, method: Method, url: String, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = http.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn links_cross_processes_over_nats_and_catch_up_after_an_outage() {
    // PostgreSQL + NATS, as deployed: every role its own process.
    let Some(backend) = backends().into_iter().find(|b| *b == Backend::Postgres) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = OwnNats::start(dir.path()).await;
    let split = Split::start_with_nats(backend, &[], false, Some(nats.url())).await;
    // `eventually` polls ten times a second, past the free plan's 30 requests a minute.
    let key = split.create_tenant_on("links", "enterprise");
    let http = worktruck_kit::http::client();
    let base = split.base.clone();

    let (st, c) = call(&http, &key, Method::POST, format!("{base}/api/v1/contacts"), Some(json!({"kind": "person", "display_name": "Grace Hopper"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{c}\n{}", split.logs());
    let cid = id(&c);
    let (st, n) = call(&http, &key, Method::POST, format!("{base}/api/v1/notes"), Some(json!({"title": "Navy", "body": format!("Ask [[contact:{cid}]] about COBOL.")}))).await;
    assert_eq!(st, StatusCode::CREATED, "the notes process checks the contact over gRPC: {n}\n{}", split.logs());
    let nid = id(&n);
    let contact_links = format!("{base}/api/v1/contacts/{cid}/links");
    eventually("the contacts process learns of the link over NATS", || async {
        let (_, v) = call(&http, &key, Method::GET, contact_links.clone(), None).await;
        if v["data"].as_array().is_some_and(|d| d.len() == 1) { Ok(v) } else { Err(format!("{v}\n{}", split.logs())) }
    })
    .await;

    // NATS down: the delete still succeeds (its events wait in the outbox) ...
    nats.stop();
    let (st, e) = call(&http, &key, Method::DELETE, format!("{base}/api/v1/contacts/{cid}"), None).await;
    assert_eq!(st, StatusCode::OK, "{e}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let note_links = format!("{base}/api/v1/notes/{nid}/links");
    let (_, v) = call(&http, &key, Method::GET, note_links.clone(), None).await;
    assert_eq!(cross(&v)[0]["status"], "resolved", "nothing can have told the notes process yet: {v}");
    // ... and once it is back, the link turns dangling.
    nats.restart().await;
    eventually("the note's link turns dangling after the outage", || async {
        let (_, v) = call(&http, &key, Method::GET, note_links.clone(), None).await;
        if cross(&v).first().is_some_and(|l| l["status"] == "dangling") { Ok(v) } else { Err(format!("{v}\n{}", split.logs())) }
    })
    .await;
}

#[tokio::test]
async fn a_note_links_to_a_deal_and_the_deal_sees_it() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (st, deal) = s.call(Method::POST, "/api/v1/deals", Some(json!({"name": "Big one", "amount": "1000.00", "currency": "EUR"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{deal}");
        let did = id(&deal);
        let (st, note) = s.call(Method::POST, "/api/v1/notes", Some(json!({"title": "Call notes", "body": format!("Pricing for [[deal:{did}]].")}))).await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {note}");
        let path = format!("/api/v1/deals/{did}/links");
        let v = eventually("the deal sees the note", || async {
            let (_, v) = s.call(Method::GET, &path, None).await;
            if v["data"].as_array().is_some_and(|d| d.len() == 1) { Ok(v) } else { Err(v.to_string()) }
        })
        .await;
        assert_eq!(v["data"][0]["source"], format!("notes:note:{}", id(&note)));
        assert_eq!(v["data"][0]["target_title"], "Big one");
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/deals/{did}"), None).await;
        assert_eq!(st, StatusCode::OK);
        let note_links = format!("/api/v1/notes/{}/links", id(&note));
        eventually("the note's link to the deal turns dangling", || async {
            let (_, v) = s.call(Method::GET, &note_links, None).await;
            if cross(&v).first().is_some_and(|l| l["status"] == "dangling") { Ok(v) } else { Err(v.to_string()) }
        })
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_note_links_to_a_task_by_its_identifier() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let (st, p) = s.call(Method::POST, "/api/v1/projects", Some(json!({"name": "Api", "identifier": "API"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{p}");
        let (st, task) = s.call(Method::POST, "/api/v1/tasks", Some(json!({"title": "Ship it", "project_id": p["id"]}))).await;
        assert_eq!(st, StatusCode::CREATED, "{task}");
        let (st, note) = s.call(Method::POST, "/api/v1/notes", Some(json!({"title": "Standup", "body": "Blocked on [[task:API-1]]."}))).await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {note}");
        let (_, links) = s.call(Method::GET, &format!("/api/v1/notes/{}/links", id(&note)), None).await;
        assert_eq!(cross(&links)[0]["target"], format!("tasks:task:{}", id(&task)), "the identifier resolves to the task's id: {links}");
        let path = format!("/api/v1/tasks/{}/links", id(&task));
        eventually("the task sees the note", || async {
            let (_, v) = s.call(Method::GET, &path, None).await;
            if v["data"].as_array().is_some_and(|d| d.len() == 1) { Ok(v) } else { Err(v.to_string()) }
        })
        .await;
        s.stop().await;
    }
}

/// The inbound links of `contact` that come from `source`.
async fn links_from(s: &Stack, contact: &str, source: &str) -> Vec<Value> {
    let (_, v) = s.call(Method::GET, &format!("/api/v1/contacts/{contact}/links"), None).await;
    v["data"].as_array().unwrap().iter().filter(|l| l["source"] == source).cloned().collect()
}

#[tokio::test]
async fn a_contact_lists_the_deals_and_tasks_that_name_it() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let ada = id(&s.person("Ada Lovelace").await);
        let bob = id(&s.person("Bob Noyce").await);
        let (st, acme) = s.call(Method::POST, "/api/v1/contacts", Some(json!({"kind": "organization", "display_name": "Acme"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{acme}");
        let acme = id(&acme);
        let (st, deal) = s
            .call(Method::POST, "/api/v1/deals", Some(json!({"name": "Big one", "contact_id": ada, "organization_id": acme})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {deal}");
        let did = id(&deal);
        let src = format!("crm:deal:{did}");

        // The deal's contact and organization see it, typed, with its name.
        let l = eventually("the contact sees the deal", || async {
            let l = links_from(&s, &ada, &src).await;
            if l.len() == 1 { Ok(l[0].clone()) } else { Err(format!("{l:?}")) }
        })
        .await;
        assert_eq!((l["type"].as_str(), l["source_title"].as_str(), l["direction"].as_str()), (Some("contact"), Some("Big one"), Some("inbound")), "{l}");
        eventually("the organization sees the deal", || async {
            let l = links_from(&s, &acme, &src).await;
            if l.len() == 1 && l[0]["type"] == "organization" { Ok(Value::Null) } else { Err(format!("{l:?}")) }
        })
        .await;
        // The deal's own view has them as outbound links, and they are the deal's to keep: a
        // DELETE through the links route is a 409.
        let (_, out) = s.call(Method::GET, &format!("/api/v1/deals/{did}/links?direction=outbound"), None).await;
        assert_eq!(out["data"].as_array().unwrap().len(), 2, "{out}");
        let derived = out["data"][0]["id"].as_str().unwrap().to_owned();
        let (st, e) = s.call(Method::DELETE, &format!("/api/v1/deals/{did}/links/{derived}"), None).await;
        assert_eq!((st, error_code(&e)), (StatusCode::CONFLICT, "conflict".into()), "{e}");

        // A deal contact is a participant, its role the context; removing it withdraws the link.
        let (st, dc) = s.call(Method::POST, &format!("/api/v1/deals/{did}/contacts"), Some(json!({"contact_id": bob, "role": "champion"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{dc}");
        let l = eventually("the participant sees the deal", || async {
            let l = links_from(&s, &bob, &src).await;
            if l.len() == 1 { Ok(l[0].clone()) } else { Err(format!("{l:?}")) }
        })
        .await;
        assert_eq!((l["type"].as_str(), l["context"].as_str()), (Some("participant"), Some("champion")), "{l}");
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/deals/{did}/contacts/{bob}"), None).await;
        assert_eq!(st, StatusCode::OK);
        eventually("the removed participant no longer sees the deal", || async {
            let l = links_from(&s, &bob, &src).await;
            if l.is_empty() { Ok(Value::Null) } else { Err(format!("{l:?}")) }
        })
        .await;

        // Renaming the deal renames its links; changing its contact moves the link.
        let (st, _) = s.call(Method::PATCH, &format!("/api/v1/deals/{did}"), Some(json!({"name": "Bigger one", "contact_id": bob}))).await;
        assert_eq!(st, StatusCode::OK);
        eventually("the new contact sees the renamed deal", || async {
            let l = links_from(&s, &bob, &src).await;
            if l.len() == 1 && l[0]["source_title"] == "Bigger one" { Ok(Value::Null) } else { Err(format!("{l:?}")) }
        })
        .await;
        eventually("the old contact no longer does", || async {
            let l = links_from(&s, &ada, &src).await;
            if l.is_empty() { Ok(Value::Null) } else { Err(format!("{l:?}")) }
        })
        .await;

        // A task links to a contact explicitly; the contact sees it; removing it withdraws it.
        let (st, task) = s.call(Method::POST, "/api/v1/tasks", Some(json!({"title": "Send the contract"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{task}");
        let tid = id(&task);
        let (st, e) = s.call(Method::POST, &format!("/api/v1/tasks/{tid}/links"), Some(json!({"target": "contact:00000000-0000-7000-8000-000000000000"}))).await;
        assert_eq!((st, error_code(&e)), (StatusCode::BAD_REQUEST, "validation_failed".into()), "a missing target: {e}");
        let (st, link) = s.call(Method::POST, &format!("/api/v1/tasks/{tid}/links"), Some(json!({"target": format!("contact:{ada}"), "type": "about"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{link}");
        assert_eq!(link["target_title"], "Ada Lovelace", "{link}");
        let tsrc = format!("tasks:task:{tid}");
        eventually("the contact sees the task", || async {
            let l = links_from(&s, &ada, &tsrc).await;
            if l.len() == 1 && l[0]["type"] == "about" { Ok(Value::Null) } else { Err(format!("{l:?}")) }
        })
        .await;
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/tasks/{tid}/links/{}", id(&link)), None).await;
        assert_eq!(st, StatusCode::OK);
        eventually("the contact no longer sees the task", || async {
            let l = links_from(&s, &ada, &tsrc).await;
            if l.is_empty() { Ok(Value::Null) } else { Err(format!("{l:?}")) }
        })
        .await;

        // Deleting the deal withdraws its links.
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/deals/{did}"), None).await;
        assert_eq!(st, StatusCode::OK);
        for who in [&bob, &acme] {
            eventually("a deleted deal's links are withdrawn", || async {
                let l = links_from(&s, who, &src).await;
                if l.is_empty() { Ok(Value::Null) } else { Err(format!("{l:?}")) }
            })
            .await;
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn an_event_links_to_a_contact_a_task_a_note_and_a_deal_and_each_sees_it() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let ada = id(&s.person("Ada Lovelace").await);
        let (_, p) = s.call(Method::POST, "/api/v1/projects", Some(json!({"name": "Launch", "identifier": "LCH"}))).await;
        let (_, task) = s.call(Method::POST, "/api/v1/tasks", Some(json!({"title": "Book the room", "project_id": p["id"]}))).await;
        let (_, deal) = s.call(Method::POST, "/api/v1/deals", Some(json!({"name": "Launch deal", "amount": "10.00", "currency": "EUR"}))).await;
        let (_, note) = s.call(Method::POST, "/api/v1/notes", Some(json!({"title": "Launch plan", "body": "Plan."}))).await;
        let (st, cal) = s.call(Method::POST, "/api/v1/calendars", Some(json!({"name": "Work"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{cal}");
        let (st, ev) = s
            .call(Method::POST, "/api/v1/events", Some(json!({"title": "Launch review", "start_at": "2027-01-04T10:00:00Z", "end_at": "2027-01-04T11:00:00Z"})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?} {ev}");
        let eid = id(&ev);

        // The event links to one entity of each domain, by the short forms.
        let targets = [
            (format!("contact:{ada}"), format!("/api/v1/contacts/{ada}/links"), format!("contacts:contact:{ada}")),
            (format!("task:{}", id(&task)), format!("/api/v1/tasks/{}/links", id(&task)), format!("tasks:task:{}", id(&task))),
            (format!("deal:{}", id(&deal)), format!("/api/v1/deals/{}/links", id(&deal)), format!("crm:deal:{}", id(&deal))),
            // A note's own `/links` lists its body's wikilinks; what links to it is in `/links?entity=`.
            (format!("note:{}", id(&note)), format!("/api/v1/links?entity=note:{}", id(&note)), format!("notes:note:{}", id(&note))),
        ];
        for (target, _, full) in &targets {
            let (st, l) = s.call(Method::POST, &format!("/api/v1/events/{eid}/links"), Some(json!({"target": target, "type": "agenda"}))).await;
            assert_eq!(st, StatusCode::CREATED, "{backend:?} {target}: {l}");
            assert_eq!(l["target"], *full, "{l}");
        }
        let (_, own) = s.call(Method::GET, &format!("/api/v1/events/{eid}/links"), None).await;
        assert_eq!(own["data"].as_array().unwrap().len(), 4, "{own}");
        let source = format!("calendar:event:{eid}");
        for (_, path, _) in &targets {
            let v = eventually(&format!("{path} lists the event"), || async {
                let (_, v) = s.call(Method::GET, path, None).await;
                let found = v["data"].as_array().and_then(|d| d.iter().find(|l| l["source"] == source).cloned());
                found.ok_or_else(|| v.to_string())
            })
            .await;
            assert_eq!((v["source_title"].as_str(), v["type"].as_str()), (Some("Launch review"), Some("agenda")), "{path}: {v}");
        }

        // A note names the event in its body; the event sees the note.
        let body = format!("Agenda for [[event:{eid}]].");
        let (st, agenda) = s.call(Method::POST, "/api/v1/notes", Some(json!({"title": "Agenda", "body": body}))).await;
        assert_eq!(st, StatusCode::CREATED, "{agenda}");
        let from_note = format!("notes:note:{}", id(&agenda));
        eventually("the event sees the note that names it", || async {
            let (_, v) = s.call(Method::GET, &format!("/api/v1/events/{eid}/links"), None).await;
            let found = v["data"].as_array().and_then(|d| d.iter().find(|l| l["source"] == from_note).cloned());
            found.ok_or_else(|| v.to_string())
        })
        .await;

        // Renaming the event retitles its links where the targets list them.
        let (st, _) = s.call(Method::PUT, &format!("/api/v1/events/{eid}"), Some(json!({"title": "Launch review (final)"}))).await;
        assert!(st.is_success(), "{st}");
        let contact_links = format!("/api/v1/contacts/{ada}/links");
        eventually("the contact sees the new title", || async {
            let (_, v) = s.call(Method::GET, &contact_links, None).await;
            let ok = v["data"].as_array().is_some_and(|d| d.iter().any(|l| l["source"] == source && l["source_title"] == "Launch review (final)"));
            if ok { Ok(v) } else { Err(v.to_string()) }
        })
        .await;

        // Another tenant's contact is not a target; deleting the event withdraws its links.
        let other = s.new_tenant("Other").await;
        let (_, theirs) = s.call_as(&other, Method::POST, "/api/v1/contacts", Some(json!({"kind": "person", "display_name": "Eve"}))).await;
        let (st, e) = s.call(Method::POST, &format!("/api/v1/events/{eid}/links"), Some(json!({"target": format!("contact:{}", id(&theirs))}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(error_code(&e), "validation_failed", "{e}");
        let (st, _) = s.call(Method::DELETE, &format!("/api/v1/events/{eid}"), None).await;
        assert!(st.is_success(), "{st}");
        for (_, path, _) in &targets {
            eventually(&format!("{path} no longer lists the event"), || async {
                let (_, v) = s.call(Method::GET, path, None).await;
                let gone = v["data"].as_array().is_some_and(|d| !d.iter().any(|l| l["source"] == source));
                if gone { Ok(v) } else { Err(v.to_string()) }
            })
            .await;
        }
        s.stop().await;
    }
}
