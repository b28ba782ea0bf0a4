//! The Anthropic Messages API client (`POST {base}/v1/messages`): one LLM turn, with retries on
//! what a retry may fix (409, 429 but a spend limit, 5xx, 529, no answer) and a failure
//! category for what it cannot (a bad or revoked key, missing permission, exhausted quota, a
//! refused request). Content blocks are kept as raw JSON, so unknown block types pass back to
//! the API unchanged. The key is sent in `x-api-key` and never logged.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::settings::{Settings, Usage};

/// The largest answer read.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// A client of one Anthropic endpoint.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    version: String,
    max_retries: u32,
    backoff: Duration,
    backoff_max: Duration,
}

/// One assistant turn.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The assistant's content blocks, unchanged.
    pub content: Vec<Value>,
    /// Why it stopped (`end_turn`, `tool_use`, `max_tokens`, …).
    pub stop_reason: String,
    /// Its tokens.
    pub usage: Usage,
}

/// Why a turn could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The run's `failure_category`.
    pub category: &'static str,
    /// A short explanation (never the key).
    pub detail: String,
}

impl Client {
    /// A client for `settings`' endpoint, through kit's outbound HTTP client.
    pub fn new(
        settings: &Settings,
        outbound: &worktruck_kit::config::OutboundConfig,
    ) -> anyhow::Result<Self> {
        let timeouts = worktruck_kit::http::Timeouts {
            connect: Duration::from_secs(10),
            total: Duration::from_secs(settings.request_timeout_seconds),
        };
        let http = worktruck_kit::http::outbound(outbound, timeouts)?;
        Ok(Self {
            http,
            base: settings.anthropic_base_url.trim_end_matches('/').to_owned(),
            version: settings.anthropic_version.clone(),
            max_retries: settings.max_retries,
            backoff: Duration::from_millis(settings.backoff_ms),
            backoff_max: Duration::from_millis(settings.backoff_max_ms),
        })
    }

    /// One turn for `body` (a Messages request), retried with backoff while a retry may help
    /// and `deadline` allows; `Err` with the category of what ended it.
    pub async fn turn(
        &self,
        key: &SecretString,
        body: &Value,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Turn, Failure> {
        if key.expose_secret().is_empty() {
            return Err(Failure {
                category: "no_api_key",
                detail: "no Anthropic key: the tenant has none and settings.agents.anthropic_api_key is empty".into(),
            });
        }
        let mut attempt = 0u32;
        loop {
            let (failure, retry_after) = match self.once(key, body).await {
                Attempt::Done(turn) => return Ok(turn),
                Attempt::Fatal(f) => return Err(f),
                Attempt::Retry(f, after) => (f, after),
            };
            if attempt >= self.max_retries {
                return Err(Failure {
                    category: failure.category,
                    detail: format!("{} (after {} attempts)", failure.detail, attempt + 1),
                });
            }
            let exp = self
                .backoff
                .saturating_mul(1u32 << attempt.min(16))
                .min(self.backoff_max);
            let jitter = exp.mul_f64(rand::random::<f64>() * 0.25);
            let wait = retry_after.unwrap_or_default().max(exp + jitter);
            if let Some(d) = deadline
                && Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default() > d
            {
                return Err(Failure {
                    category: "deadline_exceeded",
                    detail: format!("the deadline passed while retrying: {}", failure.detail),
                });
            }
            tracing::warn!(
                attempt,
                category = failure.category,
                wait_ms = wait.as_millis() as u64,
                "anthropic call failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn once(&self, key: &SecretString, body: &Value) -> Attempt {
        let request = self
            .http
            .post(format!("{}/v1/messages", self.base))
            .header("x-api-key", key.expose_secret())
            .header("anthropic-version", &self.version)
            .json(body);
        match self.exchange(request).await {
            Err(f) => Attempt::Retry(f, None),
            Ok((200, json, _)) => match parse_turn(&json) {
                Some(turn) => Attempt::Done(turn),
                None => Attempt::Retry(
                    Failure {
                        category: "provider_unavailable",
                        detail: "Anthropic answered 200 without a message".into(),
                    },
                    None,
                ),
            },
            Ok((status, json, retry_after)) => classify(status, &json, retry_after),
        }
    }

    /// Probes `key` once, without spending tokens (`GET /v1/models?limit=1`): `Ok` when
    /// Anthropic accepts it, else the category of the refusal (transient ones too).
    pub async fn probe(&self, key: &SecretString) -> Result<(), Failure> {
        let request = self
            .http
            .get(format!("{}/v1/models?limit=1", self.base))
            .header("x-api-key", key.expose_secret())
            .header("anthropic-version", &self.version);
        match self.exchange(request).await {
            Err(f) => Err(f),
            Ok((200, _, _)) => Ok(()),
            Ok((status, json, retry_after)) => match classify(status, &json, retry_after) {
                Attempt::Fatal(f) | Attempt::Retry(f, _) => Err(f),
                Attempt::Done(_) => unreachable!("a refusal is never a turn"),
            },
        }
    }

    /// Sends `request`: the status, the JSON answer (null when none) and `retry-after`, or a
    /// transport failure.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Value, Option<Duration>), Failure> {
        let response = request.send().await.map_err(|e| Failure {
            category: "provider_unavailable",
            detail: format!(
                "Anthropic did not answer: {}",
                worktruck_kit::http::root_cause(&e)
            ),
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(600.0)));
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = worktruck_kit::http::read_capped(response, MAX_ANSWER)
            .await
            .map_err(|e| Failure {
                category: "provider_unavailable",
                detail: format!("Anthropic's answer: {e}"),
            })?;
        let mut json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status != 200 {
            tracing::info!(status, request_id, "anthropic refused a call");
            if let Some(o) = json.as_object_mut() {
                o.insert("request_id".into(), Value::String(request_id));
            }
        }
        Ok((status, json, retry_after))
    }
}

/// What an answer other than 200 means: a failure to retry, or one that ends the run.
fn classify(status: u16, json: &Value, retry_after: Option<Duration>) -> Attempt {
    let error_type = json
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message: String = json
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    let request_id = json
        .get("request_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let detail =
        format!("Anthropic answered {status} {error_type}: {message} (request-id {request_id})");
    let spend_limit = json
        .pointer("/error/details/error_code")
        .and_then(Value::as_str)
        == Some("enforced_spend_limit_reached");
    let lower = message.to_ascii_lowercase();
    let revoked = ["revoked", "expired", "disabled"]
        .iter()
        .any(|w| lower.contains(w));
    let fatal = |category| {
        Attempt::Fatal(Failure {
            category,
            detail: detail.clone(),
        })
    };
    match status {
        401 if revoked => fatal("revoked_or_expired"),
        401 => fatal("invalid_key"),
        403 => fatal("insufficient_permissions"),
        402 => fatal("quota_exhausted"),
        429 if spend_limit => fatal("quota_exhausted"),
        429 => Attempt::Retry(
            Failure {
                category: "rate_limited",
                detail,
            },
            retry_after,
        ),
        409 | 500..=599 => Attempt::Retry(
            Failure {
                category: "provider_unavailable",
                detail,
            },
            retry_after,
        ),
        _ if error_type == "billing_error" => fatal("quota_exhausted"),
        _ => fatal("provider_rejected"),
    }
}

enum Attempt {
    Done(Turn),
    Fatal(Failure),
    Retry(Failure, Option<Duration>),
}

fn parse_turn(json: &Value) -> Option<Turn> {
    let content = json.get("content")?.as_array()?.clone();
    let stop_reason = json
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn")
        .to_owned();
    let n = |k: &str| {
        json.pointer(&format!("/usage/{k}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0)
    };
    let usage = Usage {
        input: n("input_tokens"),
        output: n("output_tokens"),
        cache_read: n("cache_read_input_tokens"),
        cache_write: n("cache_creation_input_tokens"),
    };
    Some(Turn {
        content,
        stop_reason,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_reads_content_stop_reason_and_usage_with_absent_fields_zero() {
        let t = parse_turn(&serde_json::json!({
            "content": [{"type": "text", "text": "hi"}, {"type": "mystery", "x": 1}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": null}
        }))
        .unwrap();
        assert_eq!(t.content.len(), 2);
        assert_eq!(
            t.usage,
            Usage {
                input: 10,
                output: 5,
                cache_read: 0,
                cache_write: 0
            }
        );
        assert!(parse_turn(&serde_json::json!({"type": "error"})).is_none());
    }
}
