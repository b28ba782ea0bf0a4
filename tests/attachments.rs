//! Note attachments end to end over REST, on both backends: raw and multipart uploads kept in
//! the blob store (the local filesystem under the data dir here), content types sniffed from
//! the bytes, downloads with safe headers, URL references, the size limits of the service and
//! of the gateway, and tenants kept apart.

mod common;

use common::{Stack, error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};
use worktruck_kit::testing::backends;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
/// The first 64 bytes of an x86-64 ELF executable's header.
const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0\x40\x10\x40\0\0\0\0\0\x40\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x40\0\x38\0\x01\0\0\0\0\0\0\0";
const LIMIT: usize = 4096;

async fn upload(s: &Stack, key: &str, note: &str, query: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let r = s
        .http
        .post(format!("{}/api/v1/notes/{note}/attachments/upload{query}", s.base))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Where the test keeps blobs.
#[derive(Clone)]
enum Store {
    /// The default: files under the data dir.
    Local,
    /// An S3-compatible server at this endpoint, bucket `worktruck`.
    S3(String),
}

#[tokio::test]
async fn files_and_urls_attach_to_notes_and_download_safely() {
    for backend in backends() {
        exercise(backend, Store::Local).await;
    }
}

/// moto's S3 server (PyPI `moto[server]`, which `.ci/run` installs), killed on drop.
struct Moto(std::process::Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_same_holds_on_an_s3_compatible_store() {
    let Ok(path) = which("moto_server") else {
        assert!(std::env::var("CI").is_err(), "CI needs moto_server (pip install 'moto[server]')");
        eprintln!("skipped: no moto_server");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(path)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto(child, port);
    let endpoint = format!("http://127.0.0.1:{}", moto.1);
    let http = worktruck_kit::http::client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // moto takes unsigned requests: make the bucket.
        match http.put(format!("{endpoint}/worktruck")).send().await {
            Ok(r) if r.status().is_success() => break,
            _ if std::time::Instant::now() > deadline => panic!("moto_server did not come up on {port}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
    exercise(backends()[0], Store::S3(endpoint)).await;
}

fn which(bin: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(bin)).find(|f| f.is_file()))
        .ok_or(())
}

async fn exercise(backend: worktruck_kit::testing::Backend, store: Store) {
    {
        let s3 = store.clone();
        let s = Stack::start_with(backend, move |cfg| {
            cfg.settings.insert("notes".into(), json!({"attachment_max_bytes": LIMIT}));
            cfg.rest.upload_limit_bytes = 1024 * 1024;
            if let Store::S3(endpoint) = s3 {
                cfg.blobs.store = worktruck_kit::blobs::StoreKind::S3;
                cfg.blobs.s3.bucket = "worktruck".into();
                cfg.blobs.s3.endpoint = endpoint;
                cfg.blobs.s3.allow_http = true;
                cfg.blobs.s3.access_key_id = "test".into();
                cfg.blobs.s3.secret_access_key = Some("test".to_owned().into());
            }
        })
        .await;
        let (st, note) = s.call(reqwest::Method::POST, "/api/v1/notes", Some(json!({"title": "Scans"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{note}");
        let nid = note["id"].as_str().unwrap().to_owned();

        // A raw upload: the type comes from the bytes.
        let (st, png) = upload(&s, &s.key, &nid, "?filename=pixel.png", "image/png", PNG.to_vec()).await;
        assert_eq!(st, StatusCode::CREATED, "{backend:?}: {png}");
        assert_eq!(png["kind"], "file");
        assert_eq!(png["content_type"], "image/png");
        assert_eq!(png["size_bytes"], PNG.len());
        assert_eq!(png["filename"], "pixel.png");
        assert_eq!(png["sha256"].as_str().unwrap().len(), 64);
        let url = format!("{}/api/v1/notes/{nid}/attachments/{}/content", s.base, png["id"].as_str().unwrap());
        let r = s.http.get(&url).bearer_auth(&s.key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"pixel.png\""));
        assert_eq!(r.bytes().await.unwrap().as_ref(), PNG);

        // An executable that claims to be a PNG, in a multipart form: kept as what it is.
        let boundary = "XyZ123";
        let mut form = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../cat.png\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .into_bytes();
        form.extend_from_slice(ELF);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (st, exe) = upload(&s, &s.key, &nid, "", &format!("multipart/form-data; boundary={boundary}"), form).await;
        assert_eq!(st, StatusCode::CREATED, "{exe}");
        assert_eq!(exe["content_type"], "application/x-executable", "{exe}");
        assert_eq!(exe["declared_content_type"], "image/png");
        assert_eq!(exe["filename"], "cat.png", "no path survives");
        let r = s
            .http
            .get(format!("{}/api/v1/notes/{nid}/attachments/{}/content", s.base, exe["id"].as_str().unwrap()))
            .bearer_auth(&s.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "application/x-executable");
        assert_eq!(r.bytes().await.unwrap().as_ref(), ELF);

        // The service's limit exactly, then one byte more; the gateway's limit beyond that.
        let (st, v) = upload(&s, &s.key, &nid, "", "application/octet-stream", vec![7u8; LIMIT]).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let (st, e) = upload(&s, &s.key, &nid, "", "application/octet-stream", vec![7u8; LIMIT + 1]).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
        assert_eq!(error_code(&e), "payload_too_large");
        let (st, e) = upload(&s, &s.key, &nid, "", "application/octet-stream", vec![7u8; 1024 * 1024 + 1]).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
        let (st, e) = upload(&s, &s.key, &nid, "", "multipart/form-data", b"--x\r\n".to_vec()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "multipart without a boundary: {e}");
        let (st, e) = upload(&s, &s.key, &nid, "", "application/octet-stream", Vec::new()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "an empty file: {e}");

        // A URL reference.
        let (st, link) = s
            .call(reqwest::Method::POST, &format!("/api/v1/notes/{nid}/attachments"), Some(json!({"url": "https://example.com/papers/report.pdf?v=2", "title": "The report"})))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{link}");
        assert_eq!(link["kind"], "url");
        assert_eq!(link["filename"], "report.pdf");
        let (st, _) = s
            .call(reqwest::Method::POST, &format!("/api/v1/notes/{nid}/attachments"), Some(json!({"url": "javascript:alert(1)"})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, _) = s.call(reqwest::Method::GET, &format!("/api/v1/notes/{nid}/attachments/{}/content", link["id"].as_str().unwrap()), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "a URL reference has no bytes here");

        let (_, list) = s.call(reqwest::Method::GET, &format!("/api/v1/notes/{nid}/attachments"), None).await;
        let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 4, "{list}");
        assert_eq!(ids[0], png["id"].as_str().unwrap(), "oldest first");

        // Another tenant sees none of it.
        let other = s.new_tenant("other").await;
        let (st, _) = s.call_as(&other, reqwest::Method::GET, &format!("/api/v1/notes/{nid}/attachments"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let r = s.http.get(&url).bearer_auth(&other).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let (st, _) = upload(&s, &other, &nid, "", "image/png", PNG.to_vec()).await;
        assert_eq!(st, StatusCode::NOT_FOUND);

        // Deleted: gone from the list, its bytes with it.
        let (st, _) = s.call(reqwest::Method::DELETE, &format!("/api/v1/notes/{nid}/attachments/{}", png["id"].as_str().unwrap()), None).await;
        assert_eq!(st, StatusCode::OK);
        let r = s.http.get(&url).bearer_auth(&s.key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        match &store {
            Store::Local => {
                let stored = s.data.path().join("blobs/notes");
                let files = walk(&stored);
                assert_eq!(files, 2, "the two files left are on disk under the data dir ({})", stored.display());
            }
            Store::S3(endpoint) => {
                let listing = s.http.get(format!("{endpoint}/worktruck?list-type=2&prefix=notes/")).send().await.unwrap().text().await.unwrap();
                assert_eq!(listing.matches("<Key>notes/").count(), 2, "the two files left are in the bucket: {listing}");
            }
        }
        s.stop().await;
    }
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}
