//! The providers of integration keys, in one table: what each needs beside the key, and how a
//! key is verified against the provider's real API (one `GET` that needs the key and changes
//! nothing). The operator's base URLs come from `[settings.agents]`; netdata's is the tenant's
//! own (`metadata.base_url`), reached only through kit's SSRF guard.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use worktruck_kit::config::OutboundConfig;
use worktruck_kit::http::{Guard, Timeouts};

use crate::settings::Settings;

/// Where a provider's API is.
#[derive(Clone, Copy)]
enum Base {
    /// The operator's setting.
    Setting(fn(&Settings) -> &str),
    /// The tenant's `metadata.base_url` (a server the tenant names: guarded).
    Tenant,
}

/// How the key is sent.
#[derive(Clone, Copy)]
enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `<header>: <key>`.
    Header(&'static str),
}

/// One provider.
pub(crate) struct Provider {
    /// Its name (`provider` in the API).
    pub name: &'static str,
    /// The metadata fields it needs, each a non-empty string.
    pub required: &'static [&'static str],
    base: Base,
    /// The verify call's path after the base URL.
    path: &'static str,
    auth: Auth,
    accept: &'static str,
    /// Statuses that mean the key is refused.
    refused: &'static [u16],
    /// For a provider whose 2xx answer still has to say the key is good: that check.
    accepts: Option<fn(&Value) -> bool>,
    /// The agents' read tool of the provider's API, if it has one.
    pub tool: Option<ApiTool>,
}

/// An agent tool that reads a provider's API with the tenant's key (`GET` only).
pub(crate) struct ApiTool {
    /// The tool's name.
    pub name: &'static str,
    /// The API's path under the base URL.
    pub prefix: &'static str,
    /// What the model is told of it.
    pub description: &'static str,
}

/// Cloudflare's token verify answers 200 for any token it knows, with the token's status.
fn cloudflare_active(v: &Value) -> bool {
    v["success"] == Value::Bool(true) && v["result"]["status"] == "active"
}

/// Every provider.
pub(crate) static PROVIDERS: &[Provider] = &[
    Provider {
        name: "cloudflare",
        required: &["account_id"],
        base: Base::Setting(|s| &s.cloudflare_base_url),
        path: "/client/v4/user/tokens/verify",
        auth: Auth::Bearer,
        accept: "application/json",
        refused: &[400, 401, 403],
        accepts: Some(cloudflare_active),
        tool: Some(ApiTool {
            name: "cloudflare_api_get",
            prefix: "/client/v4",
            description: "Reads the Cloudflare API (v4) with the tenant's Cloudflare token: GET `path` \
                (under /client/v4, e.g. /zones, /zones/{zone_id}/dns_records, \
                /accounts/{account_id}/workers/scripts) with optional `query` parameters. The key's \
                account id is in the answer of /accounts. Answers {status, body}. Read-only.",
        }),
    },
    Provider {
        name: "github",
        required: &[],
        base: Base::Setting(|s| &s.github_base_url),
        path: "/user",
        auth: Auth::Bearer,
        accept: "application/vnd.github+json",
        refused: &[401, 403],
        accepts: None,
        tool: None,
    },
    Provider {
        name: "netdata",
        required: &["base_url"],
        base: Base::Tenant,
        path: "/api/v1/info",
        auth: Auth::Bearer,
        accept: "application/json",
        refused: &[401, 403],
        accepts: None,
        tool: Some(ApiTool {
            name: "netdata_api_get",
            prefix: "",
            description: "Reads the tenant's Netdata server with its Netdata token: GET `path` (e.g. \
                /api/v1/info, /api/v1/alarms with query all=false for the raised alarms, /api/v1/data \
                with query chart=system.cpu, after=-600, points=10) with optional `query` parameters. \
                Answers {status, body}. Read-only.",
        }),
    },
    Provider {
        name: "postmark",
        required: &[],
        base: Base::Setting(|s| &s.postmark_base_url),
        path: "/server",
        auth: Auth::Header("x-postmark-server-token"),
        accept: "application/json",
        refused: &[401, 403],
        accepts: None,
        tool: None,
    },
    Provider {
        name: "outstand",
        required: &[],
        base: Base::Setting(|s| &s.outstand_base_url),
        path: "/v1/social-accounts?limit=1",
        auth: Auth::Bearer,
        accept: "application/json",
        refused: &[401, 403],
        accepts: None,
        tool: None,
    },
];

/// The provider called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name == name)
}

/// The providers' names, for error messages.
pub(crate) fn names() -> String {
    PROVIDERS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the provider said of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It accepted the key.
    Valid,
    /// It refused the key (the detail, for the log: never the key).
    Refused(String),
    /// No usable answer: unreachable, timed out, 5xx, rate limited, or an answer not understood.
    Unavailable(String),
}

/// The largest verify answer read.
const MAX_ANSWER: usize = 1024 * 1024;
/// The largest answer an agent's API read hands the model.
pub(crate) const MAX_TOOL_ANSWER: usize = 256 * 1024;

/// Verifies keys against their providers, through kit's outbound clients.
#[derive(Clone)]
pub(crate) struct Verifier {
    settings: Arc<Settings>,
    /// For the operator's base URLs.
    outbound: reqwest::Client,
    /// For tenants' base URLs, behind `guard`.
    guarded: reqwest::Client,
    guard: Guard,
}

impl Verifier {
    /// The verifier of `settings`' providers, with `outbound`'s TLS and `guard` for the servers
    /// tenants name.
    pub(crate) fn new(
        settings: Arc<Settings>,
        outbound: &OutboundConfig,
        guard: Guard,
    ) -> anyhow::Result<Verifier> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(settings.verify_timeout_seconds.min(10)),
            total: Duration::from_secs(settings.verify_timeout_seconds),
        };
        Ok(Verifier {
            outbound: worktruck_kit::http::outbound(outbound, timeouts)?,
            guarded: worktruck_kit::http::guarded(outbound, guard.clone(), timeouts)?,
            guard,
            settings,
        })
    }

    /// The SSRF guard for tenants' base URLs (a key's metadata is checked with it when stored).
    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    /// A `GET` of `path` (after the base URL) of `p`'s API with `key`; the verdict when it
    /// cannot be sent.
    fn request(
        &self,
        p: &Provider,
        key: &SecretString,
        metadata: &Value,
        path: &str,
        query: &[(String, String)],
    ) -> Result<reqwest::RequestBuilder, Verdict> {
        let (base, client) = match p.base {
            Base::Setting(f) => (f(&self.settings).to_owned(), &self.outbound),
            Base::Tenant => match metadata["base_url"].as_str() {
                Some(b) => (b.to_owned(), &self.guarded),
                None => return Err(Verdict::Unavailable("the key has no metadata.base_url".into())),
            },
        };
        let url = format!("{}{}", base.trim_end_matches('/'), path);
        if matches!(p.base, Base::Tenant)
            && let Err(r) = self.guard.check_url(&url)
        {
            return Err(Verdict::Unavailable(format!("the base_url is refused now: {r}")));
        }
        let mut url = reqwest::Url::parse(&url)
            .map_err(|e| Verdict::Unavailable(format!("not a URL: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let req = client.get(url).header(reqwest::header::ACCEPT, p.accept);
        Ok(match p.auth {
            Auth::Bearer => req.bearer_auth(key.expose_secret()),
            Auth::Header(name) => {
                let Ok(mut value) = reqwest::header::HeaderValue::from_str(key.expose_secret())
                else {
                    return Err(Verdict::Refused("the key cannot be sent as a header".into()));
                };
                value.set_sensitive(true);
                req.header(name, value)
            }
        })
    }

    /// An agent's read of `p`'s API: `GET <base><api prefix><path>?<query>` with `key`,
    /// answered as `{status, body}` (the body as JSON when it is JSON, else as text), at most
    /// [`MAX_TOOL_ANSWER`] bytes of it. `path` and `query` are checked by the caller.
    pub(crate) async fn api_get(
        &self,
        p: &Provider,
        key: &SecretString,
        metadata: &Value,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Value, String> {
        let prefix = p.tool.as_ref().map(|t| t.prefix).ok_or_else(|| format!("{} has no API tool", p.name))?;
        let req = match self.request(p, key, metadata, &format!("{prefix}{path}"), query) {
            Ok(req) => req,
            Err(Verdict::Refused(why) | Verdict::Unavailable(why)) => return Err(why),
            Err(Verdict::Valid) => return Err("unreachable".into()),
        };
        let resp = req.send().await.map_err(|e| {
            let why = worktruck_kit::http::refusal_in(&e)
                .map(|r| r.0)
                .unwrap_or_else(|| worktruck_kit::http::root_cause(&e));
            format!("{} did not answer: {why}", p.name)
        })?;
        let status = resp.status().as_u16();
        let body = worktruck_kit::http::read_capped(resp, MAX_TOOL_ANSWER)
            .await
            .map_err(|e| format!("{}'s answer could not be read ({e}); ask for less (a page size, a shorter window)", p.name))?;
        let body = serde_json::from_slice::<Value>(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok(serde_json::json!({"status": status, "body": body}))
    }

    /// Asks `p` whether `key` (with its `metadata`) is good.
    pub(crate) async fn verify(
        &self,
        p: &Provider,
        key: &SecretString,
        metadata: &Value,
    ) -> Verdict {
        let req = match self.request(p, key, metadata, p.path, &[]) {
            Ok(req) => req,
            Err(v) => return v,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let why = worktruck_kit::http::refusal_in(&e)
                    .map(|r| r.0)
                    .unwrap_or_else(|| worktruck_kit::http::root_cause(&e));
                return Verdict::Unavailable(format!("no answer: {why}"));
            }
        };
        let status = resp.status().as_u16();
        if p.refused.contains(&status) {
            return Verdict::Refused(format!("the provider answered {status}"));
        }
        if !resp.status().is_success() {
            return Verdict::Unavailable(format!("the provider answered {status}"));
        }
        let Some(accepts) = p.accepts else {
            return Verdict::Valid;
        };
        let body = match worktruck_kit::http::read_capped(resp, MAX_ANSWER).await {
            Ok(b) => b,
            Err(e) => return Verdict::Unavailable(format!("the answer could not be read: {e}")),
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if accepts(&v) => Verdict::Valid,
            Ok(_) => Verdict::Refused("the provider answered that the key is not active".into()),
            Err(_) => Verdict::Unavailable(format!("the provider answered {status} with no JSON")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_is_listed_once_and_cloudflare_checks_the_token_status() {
        let names: Vec<_> = PROVIDERS.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["cloudflare", "github", "netdata", "postmark", "outstand"]
        );
        assert!(find("gitlab").is_none());
        assert_eq!(find("cloudflare").unwrap().required, ["account_id"]);
        assert_eq!(find("netdata").unwrap().required, ["base_url"]);
        assert!(cloudflare_active(
            &serde_json::json!({"success": true, "result": {"status": "active"}})
        ));
        assert!(!cloudflare_active(
            &serde_json::json!({"success": true, "result": {"status": "disabled"}})
        ));
        assert!(!cloudflare_active(&serde_json::json!({"success": false})));
    }
}
