//! vCard import and export over REST, on SQLite and on PostgreSQL + NATS: hand-written fixtures
//! in the styles Apple Contacts, Google Contacts and Thunderbird export (3.0 and 4.0), matching
//! on re-import, a file that is not vCard, a round trip parsed back by the library, and a large
//! import polled through its job.

mod common;

use common::{Stack, error_code};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use worktruck_contacts::vcard::{Card, parse_file};
use worktruck_kit::testing::backends;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/vcard/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn import(s: &Stack, key: &str, text: &str) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/api/v1/contacts/import", s.base))
        .bearer_auth(key)
        .header("content-type", "text/vcard; charset=utf-8")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    let st = resp.status();
    (st, resp.json().await.unwrap())
}

async fn raw_get(s: &Stack, key: &str, path: &str) -> (StatusCode, String, String) {
    let resp = s.http.get(format!("{}{path}", s.base)).bearer_auth(key).send().await.unwrap();
    let st = resp.status();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (st, ct, resp.text().await.unwrap())
}

async fn get(s: &Stack, path: &str) -> Value {
    let (st, v) = s.call(Method::GET, path, None).await;
    assert_eq!(st, StatusCode::OK, "{path}: {v}");
    v
}

async fn find(s: &Stack, email: &str) -> Value {
    get(s, &format!("/api/v1/contacts/find-by-channel?type=email&value={}", email.replace('@', "%40"))).await
}

fn strs(v: &Value, f: &str) -> Vec<String> {
    v[f].as_array().unwrap().iter().map(|x| x.as_str().or_else(|| x["name"].as_str()).unwrap().to_owned()).collect()
}

fn canon(v: &Value) -> Vec<String> {
    let mut c: Vec<String> = v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c["type"].as_str().unwrap(), c["canonical_value"].as_str().unwrap()))
        .collect();
    c.sort();
    c
}

#[tokio::test]
async fn files_from_apple_google_and_thunderbird_import_with_the_right_fields() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let key = s.key.clone();
        let (st, set) = s.call(Method::PATCH, "/api/v1/contacts/settings", Some(json!({"default_region": "US"}))).await;
        assert_eq!(st, StatusCode::OK, "{set}");

        // Apple Contacts, 3.0: grouped labels, X-ABADR country, a birthday without a year.
        let (st, job) = import(&s, &key, &fixture("apple-3.0.vcf")).await;
        assert_eq!(st, StatusCode::OK, "{backend:?} {job}");
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!((job["total"].as_i64(), job["processed"].as_i64()), (Some(2), Some(2)));
        assert_eq!(job["created"].as_array().unwrap().len(), 2, "Ada and her organization: {job}");
        assert_eq!(job["updated"].as_array().unwrap().len(), 1, "the company card is that organization: {job}");
        let ada = find(&s, "ada.lovelace@example.org").await;
        assert_eq!(ada["display_name"], "Ada Lovelace");
        assert_eq!(
            (ada["given_name"].as_str(), ada["family_name"].as_str(), ada["middle_name"].as_str(), ada["prefix"].as_str()),
            (Some("Ada"), Some("Lovelace"), Some("Augusta"), Some("Lady"))
        );
        assert_eq!(ada["nickname"], "Enchantress of Numbers");
        assert_eq!(ada["bio"], "Wrote the first program.\nTranslated Menabrea.");
        assert_eq!(ada["vcard_uid"], "7C3E1F2A-0B4D-4E5F-9A8B-1C2D3E4F5A6B");
        assert_eq!(
            canon(&ada),
            ["email:ada.lovelace@example.org", "email:ada@home.example", "phone:+14155550100", "phone:+442079460958", "url:ada.example"]
        );
        let primary: Vec<&str> = ada["channels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["is_primary"] == true)
            .map(|c| c["canonical_value"].as_str().unwrap())
            .collect();
        assert_eq!(primary, ["ada.lovelace@example.org", "+442079460958", "ada.example"]);
        let adr = &ada["addresses"][0];
        assert_eq!(
            (adr["street"].as_str(), adr["city"].as_str(), adr["postal_code"].as_str(), adr["country_code"].as_str()),
            (Some("12 St James's Square"), Some("London"), Some("SW1Y 4JH"), Some("GB"))
        );
        let dates: Vec<(String, i64, i64, Option<i64>)> = ada["dates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["date_type"].as_str().unwrap().to_owned(),
                    d["date_day"].as_i64().unwrap(),
                    d["date_month"].as_i64().unwrap(),
                    d["date_year"].as_i64(),
                )
            })
            .collect();
        assert_eq!(dates, [("birthday".into(), 10, 12, None), ("anniversary".into(), 8, 7, Some(1835))]);
        assert_eq!(strs(&ada, "tags"), ["Mathematics", "Poets"]);
        let aff = &ada["affiliations"][0];
        assert_eq!(
            (aff["organization_name"].as_str(), aff["title"].as_str(), aff["department"].as_str()),
            (Some("Analytical Engines Ltd"), Some("Analyst"), Some("Research"))
        );

        // Google Contacts, 3.0; Thunderbird, 4.0; the RFC 6350 example.
        let (_, g) = import(&s, &key, &fixture("google-3.0.vcf")).await;
        assert_eq!(g["created"].as_array().unwrap().len(), 3, "two people and an organization: {g}");
        let charles = find(&s, "charles@difference.example").await;
        assert_eq!(charles["dates"][0]["date_year"], 1791);
        assert_eq!(canon(&charles), ["email:charles@difference.example", "phone:+14155550199", "url:babbage.example"]);
        assert_eq!(charles["affiliations"][0]["organization_name"], "Difference Engines");
        let mary = find(&s, "mary@somerville.example").await;
        assert!(mary["dates"][0]["date_year"].is_null(), "--12-26 has no year: {mary}");
        let (_, t) = import(&s, &key, &fixture("thunderbird-4.0.vcf")).await;
        assert_eq!(t["status"], "completed", "{t}");
        let grace = find(&s, "GRACE@home.example").await;
        assert_eq!(grace["display_name"], "Grace Hopper");
        assert_eq!(grace["prefix"], "Rear Admiral");
        assert_eq!(
            canon(&grace),
            ["email:grace@home.example", "email:grace@navy.example", "phone:+12025550143", "phone:+12025550186", "url:hopper.example"]
        );
        assert_eq!(grace["channels"][0]["is_primary"], true);
        let gd: Vec<(i64, i64, Option<i64>)> = grace["dates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["date_day"].as_i64().unwrap(), d["date_month"].as_i64().unwrap(), d["date_year"].as_i64()))
            .collect();
        assert_eq!(gd, [(9, 12, Some(1906)), (15, 6, None)]);
        assert_eq!(grace["addresses"][0]["extended"], "Building 1");
        let (_, r) = import(&s, &key, &fixture("rfc6350-4.0.vcf")).await;
        assert_eq!(r["created"].as_array().unwrap().len(), 2, "{r}");
        let simon = find(&s, "simon.perreault@viagenie.ca").await;
        assert!(canon(&simon).contains(&"phone:+14182626501".to_owned()), "{simon}");

        // Re-importing matches by UID (then by email or phone) and changes nothing.
        let before = get(&s, &format!("/api/v1/contacts/{}", ada["id"].as_str().unwrap())).await;
        let (_, again) = import(&s, &key, &fixture("apple-3.0.vcf")).await;
        assert!(again["created"].as_array().unwrap().is_empty(), "{again}");
        assert_eq!(again["skipped"].as_array().unwrap().len(), 2, "{again}");
        assert!(again["updated"].as_array().unwrap().is_empty(), "{again}");
        assert!(again["skipped"][0]["reason"].as_str().unwrap().contains("unchanged"), "{again}");
        assert_eq!(get(&s, &format!("/api/v1/contacts/{}", ada["id"].as_str().unwrap())).await["version"], before["version"]);
        let edited = fixture("google-3.0.vcf").replace("TITLE:Inventor", "TITLE:Inventor\r\nNICKNAME:Charlie");
        let (_, upd) = import(&s, &key, &edited).await;
        assert_eq!(upd["updated"].as_array().unwrap(), &vec![charles["id"].clone()], "matched by email: {upd}");
        assert_eq!(find(&s, "charles@difference.example").await["nickname"], "Charlie");

        // A file that is not vCard is refused and writes nothing.
        let count = get(&s, "/api/v1/contacts?limit=200").await["data"].as_array().unwrap().len();
        let (st, bad) = import(&s, &key, "name,email\nAda,ada@example.org\n").await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&bad), "validation_failed");
        let (st, bad) =
            s.call(Method::POST, "/api/v1/contacts/import", Some(json!({"vcard": "BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR\n"}))).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
        let resp = s
            .http
            .post(format!("{}/api/v1/contacts/import", s.base))
            .bearer_auth(&key)
            .header("content-type", "image/png")
            .body(vec![0x89, b'P', b'N', b'G'])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(get(&s, "/api/v1/contacts?limit=200").await["data"].as_array().unwrap().len(), count);
        s.stop().await;
    }
}

#[tokio::test]
async fn an_export_parses_back_without_loss_and_a_large_import_reports_progress() {
    for backend in backends() {
        let s = Stack::start(backend).await;
        let key = s.key.clone();
        let (st, _) = s.call(Method::PATCH, "/api/v1/contacts/settings", Some(json!({"default_region": "US"}))).await;
        assert_eq!(st, StatusCode::OK);
        let (_, job) = import(&s, &key, &fixture("apple-3.0.vcf")).await;
        assert_eq!(job["status"], "completed", "{backend:?} {job}");
        let ada = find(&s, "ada.lovelace@example.org").await;
        let id = ada["id"].as_str().unwrap();

        // One contact as text/vcard, read back by the library.
        let (st, ct, text) = raw_get(&s, &key, &format!("/api/v1/contacts/{id}/vcard")).await;
        assert_eq!(st, StatusCode::OK, "{text}");
        assert!(ct.starts_with("text/vcard"), "{ct}");
        let cards = parse_file(&text).unwrap();
        assert_eq!(cards.len(), 1);
        let card = Card::from_vcard(cards[0].as_ref().unwrap()).unwrap();
        assert_eq!(card.uid.as_deref(), Some("7C3E1F2A-0B4D-4E5F-9A8B-1C2D3E4F5A6B"));
        assert_eq!(card.display_name, "Ada Lovelace");
        let f = |n: &str| card.fields.iter().find(|x| x.0 == n).map(|x| x.1.as_str());
        assert_eq!(
            (f("given_name"), f("family_name"), f("nickname"), f("bio")),
            (Some("Ada"), Some("Lovelace"), Some("Enchantress of Numbers"), Some("Wrote the first program.\nTranslated Menabrea."))
        );
        assert_eq!(card.channels.len(), 5, "{text}");
        assert_eq!(card.dates, [("birthday".into(), 10, 12, None, None), ("anniversary".into(), 8, 7, Some(1835), None)]);
        assert_eq!(card.org.as_ref().map(|o| (o.0.as_str(), o.2.as_deref())), Some(("Analytical Engines Ltd", Some("Analyst"))));
        assert_eq!(card.categories, ["Mathematics", "Poets"]);
        assert_eq!(card.addresses[0].street.as_deref(), Some("12 St James's Square"));
        let (_, _, as_json) = {
            let resp = s
                .http
                .get(format!("{}/api/v1/contacts/{id}/vcard", s.base))
                .bearer_auth(&key)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            (resp.status(), String::new(), resp.json::<Value>().await.unwrap())
        };
        assert!(as_json["vcard"].as_str().unwrap().starts_with("BEGIN:VCARD"), "{as_json}");

        // The round trip: the export imported into another tenant reads the same.
        let other = s.new_tenant("other").await;
        let (st, _, all) = raw_get(&s, &key, "/api/v1/contacts/export.vcf").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(all.matches("BEGIN:VCARD").count(), 2, "{all}");
        let (st, copied) = import(&s, &other, &all).await;
        assert_eq!(st, StatusCode::OK, "{copied}");
        let (_, theirs) =
            s.call_as(&other, Method::GET, "/api/v1/contacts/find-by-channel?type=email&value=ada.lovelace%40example.org", None).await;
        for f in ["display_name", "given_name", "middle_name", "family_name", "prefix", "nickname", "bio", "vcard_uid", "kind"] {
            assert_eq!(theirs[f], ada[f], "{f}");
        }
        assert_eq!(canon(&theirs), canon(&ada));
        assert_eq!(strs(&theirs, "tags"), strs(&ada, "tags"));
        let pick = |v: &Value, k: &str, fs: &[&str]| -> Vec<Value> {
            v[k].as_array().unwrap().iter().map(|x| fs.iter().map(|f| x[*f].clone()).collect()).collect()
        };
        let date_f = ["date_type", "date_day", "date_month", "date_year"];
        assert_eq!(pick(&theirs, "dates", &date_f), pick(&ada, "dates", &date_f));
        let adr_f = ["street", "city", "postal_code", "country", "country_code", "is_primary", "label"];
        assert_eq!(pick(&theirs, "addresses", &adr_f), pick(&ada, "addresses", &adr_f));
        let aff_f = ["organization_name", "title", "department"];
        assert_eq!(pick(&theirs, "affiliations", &aff_f), pick(&ada, "affiliations", &aff_f));

        // 1,500 cards: the answer comes at once, the job is polled to the end.
        let mut big = String::new();
        for i in 0..1500 {
            big.push_str(&format!("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Person {i}\r\nEMAIL:p{i}@bulk.example\r\nEND:VCARD\r\n"));
        }
        let (st, started) = import(&s, &key, &big).await;
        assert_eq!(st, StatusCode::OK, "{started}");
        assert_eq!(started["total"], 1500);
        let jid = started["id"].as_str().unwrap().to_owned();
        let mut seen = Vec::new();
        let done = loop {
            let j = get(&s, &format!("/api/v1/contacts/imports/{jid}")).await;
            seen.push(j["processed"].as_i64().unwrap());
            if j["status"] != "running" {
                break j;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["processed"], 1500);
        assert_eq!(done["created"].as_array().unwrap().len(), 1500);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen:?}");
        let (_, _, all) = raw_get(&s, &key, "/api/v1/contacts/export.vcf").await;
        assert_eq!(all.matches("BEGIN:VCARD").count(), 1502, "every contact, over many pages");
        s.stop().await;
    }
}
