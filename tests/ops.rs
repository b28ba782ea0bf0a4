//! `/health`, `/ready` and `/metrics` of the all-in-one process: `/metrics` on the admin port
//! only, in Prometheus text format with real histograms.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Stack;
use reqwest::Method;
use serde_json::json;
use worktruck_kit::telemetry::families;
use worktruck_kit::testing::backends;

/// One parsed exposition: family → (TYPE, HELP), and every sample as (name, labels, value).
struct Exposition {
    families: BTreeMap<String, (String, String)>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// Parses Prometheus text format strictly enough to catch a broken exposition: every line a
/// comment (`# HELP` / `# TYPE`), or `name{label="value",…} number`.
fn parse(text: &str) -> Exposition {
    let mut families: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("HELP without text: {line}"));
            families.entry(name.to_owned()).or_default().1 = help.to_owned();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("TYPE without kind: {line}"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            families.entry(name.to_owned()).or_default().0 = kind.to_owned();
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = BTreeMap::new();
                // Label values here never hold `",` (routes, methods, codes, plans).
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label {pair:?}: {line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "label name {k:?}: {line}"
                    );
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    Exposition { families, samples }
}

impl Exposition {
    fn kind(&self, family: &str) -> &str {
        let (kind, help) = self
            .families
            .get(family)
            .unwrap_or_else(|| panic!("{family} is not exported"));
        assert!(!help.is_empty(), "{family} has HELP text");
        kind
    }

    fn series(&self, name: &str) -> Vec<&BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l)
            .collect()
    }

    /// A real histogram: buckets up to `+Inf`, cumulative, plus `_sum` and `_count`.
    fn assert_histogram(&self, family: &str) {
        assert_eq!(
            self.kind(family),
            "histogram",
            "{family} is a histogram, not a summary"
        );
        let buckets: Vec<_> = self
            .samples
            .iter()
            .filter(|(n, _, _)| *n == format!("{family}_bucket"))
            .collect();
        assert!(buckets.len() > 2, "{family} has buckets");
        assert!(
            buckets
                .iter()
                .any(|(_, l, _)| l.get("le").map(String::as_str) == Some("+Inf")),
            "{family} has le=+Inf"
        );
        assert!(
            !self.series(&format!("{family}_sum")).is_empty()
                && !self.series(&format!("{family}_count")).is_empty(),
            "{family}"
        );
        // Cumulative within one series.
        let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (_, labels, value) in &buckets {
            let mut key = labels.clone();
            let le = key.remove("le").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            by_series
                .entry(format!("{key:?}"))
                .or_default()
                .push((le, *value));
        }
        for (series, mut points) in by_series {
            points.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            assert!(
                points.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{series}: buckets are cumulative"
            );
        }
    }
}

/// The buckets of every stack here: the recorder is the process's, installed by the first.
const BUCKETS: [f64; 4] = [0.005, 0.05, 0.5, 5.0];

#[tokio::test]
async fn health_and_readiness_answer_without_credentials_on_both_ports() {
    for backend in backends() {
        let s = Stack::start_with(backend, |cfg| cfg.metrics.buckets = BUCKETS.to_vec()).await;
        for base in [&s.base, &s.admin] {
            let health = s.http.get(format!("{base}/health")).send().await.unwrap();
            assert_eq!(health.status(), 200);
            let ready = s.http.get(format!("{base}/ready")).send().await.unwrap();
            assert_eq!(ready.status(), 200);
            let body: serde_json::Value = ready.json().await.unwrap();
            assert_eq!(body["checks"]["tenants.database"], "ok", "{body}");
            assert_eq!(body["checks"]["contacts.database"], "ok", "{body}");
            assert_eq!(body["checks"]["bus"], "ok", "{backend:?}: {body}");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn metrics_are_prometheus_histograms_on_the_admin_port_only() {
    for backend in backends() {
        let s = Stack::start_with(backend, |cfg| cfg.metrics.buckets = BUCKETS.to_vec()).await;
        // Traffic for every family: REST (with a write, so the outbox publishes and services
        // answer gRPC), a refused credential, and MCP.
        s.person("Metered").await;
        let (st, _) = s
            .call(Method::GET, "/api/v1/contacts/not-an-id", None)
            .await;
        assert!(st.is_client_error());
        let (st, _) = s
            .call_as("bsk_live_wrong", Method::GET, "/api/v1/contacts", None)
            .await;
        assert_eq!(st, 401);
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "m", "version": "1"}}});
        let mcp = s
            .http
            .post(format!("{}/mcp/v1", s.mcp))
            .bearer_auth(&s.key)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(mcp.status(), 200);
        // The relay publishes within a moment; its pending gauge is set after each round.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

        // Not on the public ports.
        for public in [&s.base, &s.mcp] {
            // With a key (without one, an unknown path on the REST port is a 401 first).
            let r = s
                .http
                .get(format!("{public}/metrics"))
                .bearer_auth(&s.key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{public}/metrics");
        }
        let r = s
            .http
            .get(format!("{}/metrics", s.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let m = parse(&text);

        for family in [
            families::HTTP_DURATION,
            families::MCP_DURATION,
            families::GRPC_DURATION,
            families::GRPC_CLIENT_DURATION,
            families::DB_ACQUIRE,
            families::OUTBOX_PUBLISH,
        ] {
            m.assert_histogram(family);
        }
        // The gateways' calls by method and code, the pools by service and state.
        assert!(
            m.series(families::GRPC_CLIENT_CALLS)
                .iter()
                .any(|l| l["method"] == "/worktruck.contacts.v1.ContactsService/CreateContact" && l["code"] == "Ok"),
            "{text}"
        );
        assert!(
            m.series(families::DB_CONNECTIONS).iter().any(|l| l["db"] == "contacts" && l["state"] == "in_use"),
            "{text}"
        );
        // The configured buckets, nothing else.
        let les: BTreeSet<&str> = m
            .samples
            .iter()
            .filter(|(n, _, _)| *n == format!("{}_bucket", families::HTTP_DURATION))
            .map(|(_, l, _)| l["le"].as_str())
            .collect();
        assert_eq!(
            les,
            BTreeSet::from(["0.005", "0.05", "0.5", "5", "+Inf"]),
            "{text}"
        );
        for family in [
            families::HTTP_REQUESTS,
            families::MCP_REQUESTS,
            families::GRPC_CALLS,
            families::GRPC_CLIENT_CALLS,
            families::AUTH,
            families::RATE_LIMITED,
            families::CPU,
        ] {
            assert_eq!(m.kind(family), "counter", "{family}");
        }
        for family in [families::OUTBOX_PENDING, families::DB_CONNECTIONS, families::RSS, families::OPEN_FDS] {
            assert_eq!(m.kind(family), "gauge", "{family}");
        }
        assert!(
            m.samples
                .iter()
                .any(|(n, _, v)| n == families::RSS && *v > 0.0),
            "RSS is read"
        );
        assert!(
            m.samples
                .iter()
                .any(|(n, _, v)| n == families::OPEN_FDS && *v > 0.0),
            "open files are counted"
        );

        // Labels: route templates, status and plan; never a tenant id.
        let rest = m.series(families::HTTP_REQUESTS);
        assert!(
            rest.iter().any(|l| l["route"] == "/api/v1/contacts"
                && l["method"] == "POST"
                && l["status"] == "201"
                && l["plan"] == "enterprise"),
            "{text}"
        );
        assert!(
            rest.iter().any(|l| l["route"] == "/api/v1/contacts"
                && l["status"] == "401"
                && l["plan"] == "none"),
            "{text}"
        );
        assert!(
            m.samples
                .iter()
                .all(|(_, l, _)| l.keys().all(|k| !k.contains("tenant"))),
            "no tenant label: {text}"
        );
        assert!(!text.contains("not-an-id"), "routes are templates: {text}");
        let mcp = m.series(families::MCP_REQUESTS);
        assert!(
            mcp.iter().any(|l| l["method"] == "initialize"
                && l["status"] == "200"
                && l["plan"] == "enterprise"),
            "{text}"
        );
        let grpc = m.series(families::GRPC_CALLS);
        assert!(
            grpc.iter().any(|l| l["method"]
                == "/worktruck.contacts.v1.ContactsService/CreateContact"
                && l["code"] == "Ok"),
            "{text}"
        );
        assert!(
            m.series(families::AUTH)
                .iter()
                .any(|l| l["outcome"] == "unauthenticated"),
            "{text}"
        );
        assert!(
            m.series(families::RATE_LIMITED)
                .iter()
                .any(|l| l["plan"] == "free"),
            "{text}"
        );
        assert!(
            m.samples
                .iter()
                .any(|(n, l, v)| n == families::OUTBOX_PENDING
                    && l["service"] == "contacts"
                    && *v == 0.0),
            "{text}"
        );
        s.stop().await;
    }
}
