//! x402 v2 pay-per-request (brief §12, protocols digest §4): a request with no credentials is
//! answered 402 with payment requirements; one carrying `PAYMENT-SIGNATURE` is verified with the
//! configured facilitator, served as the paying wallet's own tenant, and settled. Writes settle
//! *before* they run, so a failed settlement writes nothing; reads settle after and withhold the
//! body when settlement fails. A payment (network, asset, payer, nonce) is accepted once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use worktruck_kit::config::{OutboundConfig, X402Config};
use worktruck_kit::http::{ClientError, Timeouts, read_capped, root_cause};
use worktruck_kit::{Error, ErrorCode};

use crate::error::ApiError;

/// The v2 request header.
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// The 402 header.
pub const PAYMENT_REQUIRED: &str = "payment-required";
/// The settlement header.
pub const PAYMENT_RESPONSE: &str = "payment-response";
/// Largest accepted payment header.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The largest verify or settle answer read from the facilitator.
const MAX_FACILITATOR_ANSWER: usize = 64 * 1024;
/// Connect and total timeouts of calls to the facilitator (settlement waits for a chain).
const TIMEOUTS: Timeouts = Timeouts { connect: Duration::from_secs(3), total: Duration::from_secs(15) };

/// The payment a request carries: `PAYMENT-SIGNATURE`, or v1's `X-PAYMENT` (whose payloads are
/// then refused by version). A value that is not visible ASCII reads as empty, so it is refused
/// as malformed rather than ignored.
pub fn payment_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(PAYMENT_SIGNATURE)
        .or_else(|| headers.get("x-payment"))
        .map(|v| v.to_str().unwrap_or_default())
}

/// What an operation costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceClass {
    /// One record.
    Read,
    /// A list or search.
    List,
    /// A change.
    Write,
    /// A composite operation.
    Composite,
}

impl PriceClass {
    /// Writes settle before they run.
    pub fn is_write(self) -> bool {
        matches!(self, PriceClass::Write | PriceClass::Composite)
    }
}

impl PriceClass {
    /// Every class, cheapest first.
    pub const ALL: [PriceClass; 4] = [PriceClass::Read, PriceClass::List, PriceClass::Write, PriceClass::Composite];

    /// The class of an RPC: a read (`reads`) of a collection (`List…`/`Search…`) is a list,
    /// other reads are reads, everything else writes. REST and MCP price alike through this.
    pub fn of(rpc_name: &str, reads: bool) -> PriceClass {
        match reads {
            true if rpc_name.starts_with("List") || rpc_name.starts_with("Search") => PriceClass::List,
            true => PriceClass::Read,
            false => PriceClass::Write,
        }
    }
}

/// Why a payment was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// The payment is malformed (`malformed`: REST answers 400) or not acceptable (402), for
    /// `reason`.
    Payment {
        /// Why, in x402's words where it has them (`invalid_x402_version`, the facilitator's
        /// `invalidReason`, …).
        reason: String,
        /// The payment could not be read at all.
        malformed: bool,
    },
    /// The facilitator could not be asked.
    Failed(Error),
}

impl Refusal {
    fn malformed(reason: &str) -> Refusal {
        Refusal::Payment { reason: reason.to_owned(), malformed: true }
    }
}

/// One accepted way to pay (a v2 `accepts[]` element).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    /// Always `exact`.
    pub scheme: String,
    /// CAIP-2 network.
    pub network: String,
    /// Atomic units, decimal string.
    pub amount: String,
    /// Token contract.
    pub asset: String,
    /// Payee.
    pub pay_to: String,
    /// Authorization lifetime.
    pub max_timeout_seconds: u64,
    /// EIP-712 domain of the token.
    pub extra: Value,
}

/// A verified payment, reserved until settled (or released).
#[derive(Debug, Clone)]
pub struct Verified {
    /// The paying wallet.
    pub payer: String,
    /// The network (the principal's issuer).
    pub network: String,
    payload: Value,
    requirement: Requirement,
    key: String,
}

/// The facilitator client and the replay guard.
pub struct X402 {
    cfg: X402Config,
    http: reqwest::Client,
    /// Payments seen: key → unix time until which it stays refused.
    seen: Mutex<HashMap<String, i64>>,
}

impl X402 {
    /// A client for the configured facilitator, trusting what `outbound` says; `None` when x402
    /// is off. A facilitator URL that is neither https nor loopback http is refused.
    pub fn from_config(cfg: &X402Config, outbound: &OutboundConfig) -> Result<Option<X402>, ClientError> {
        if cfg.facilitator_url.is_empty() {
            return Ok(None);
        }
        worktruck_kit::http::require_secure(&cfg.facilitator_url)?;
        let http = worktruck_kit::http::outbound(outbound, TIMEOUTS)?;
        Ok(Some(X402 { cfg: cfg.clone(), http, seen: Mutex::new(HashMap::new()) }))
    }

    /// The price of a class, in atomic units.
    pub fn price(&self, class: PriceClass) -> u64 {
        let p = &self.cfg.prices;
        match class {
            PriceClass::Read => p.read,
            PriceClass::List => p.list,
            PriceClass::Write => p.write,
            PriceClass::Composite => p.composite,
        }
    }

    /// The one requirement offered for an operation of `class`; deterministic, so a client's
    /// `accepted` copy compares equal.
    pub fn requirement(&self, class: PriceClass) -> Requirement {
        Requirement {
            scheme: "exact".into(),
            network: self.cfg.network.clone(),
            amount: self.price(class).to_string(),
            asset: self.cfg.asset.clone(),
            pay_to: self.cfg.pay_to.clone(),
            max_timeout_seconds: self.cfg.max_timeout_seconds,
            extra: token_domain(&self.cfg.network),
        }
    }

    /// The `PaymentRequired` object (v2) offering the requirements of `classes` for `resource`.
    pub fn payment_required_value(&self, resource: &str, classes: &[PriceClass], reason: &str) -> Value {
        let mut accepts: Vec<Requirement> = Vec::new();
        for class in classes {
            let req = self.requirement(*class);
            if !accepts.contains(&req) {
                accepts.push(req);
            }
        }
        json!({
            "x402Version": 2,
            "error": reason,
            "resource": {"url": resource, "description": "Worktruck PIM API access", "mimeType": "application/json"},
            "accepts": accepts,
            "extensions": {},
        })
    }

    /// The `PAYMENT-REQUIRED` header (base64 of [`X402::payment_required_value`]) and the CORS
    /// exposure browsers need to read it.
    pub fn payment_required_headers(&self, resource: &str, classes: &[PriceClass], reason: &str) -> HeaderMap {
        let required = self.payment_required_value(resource, classes, reason);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&B64.encode(required.to_string())) {
            headers.insert(PAYMENT_REQUIRED, v);
        }
        headers.insert("access-control-expose-headers", HeaderValue::from_static("PAYMENT-REQUIRED, PAYMENT-RESPONSE"));
        headers
    }

    /// The 402 answer: the envelope, `payment_options` in the body, `PAYMENT-REQUIRED` header.
    pub fn payment_required(&self, resource: &str, class: PriceClass, reason: &str, status_400: bool) -> ApiError {
        let req = self.requirement(class);
        let headers = self.payment_required_headers(resource, &[class], reason);
        let options = json!({
            "x402": {
                "scheme": "exact",
                "network": req.network,
                "token": "USDC",
                "asset": req.asset,
                "amount": req.amount,
                "pay_to": req.pay_to,
                "description": "Worktruck PIM API access",
            },
            "api_key": {"header": "Authorization: Bearer bsk_live_…"},
        });
        let (code, message) = if status_400 {
            (ErrorCode::InvalidArgument, format!("invalid payment: {reason}"))
        } else {
            (ErrorCode::PaymentRequired, format!("Authentication required. Provide a Bearer API key or x402 payment. {reason}"))
        };
        ApiError::new(code, message.trim().to_owned()).with_headers(headers).with_body_field("payment_options", options)
    }

    /// Decodes, matches, reserves and verifies a `PAYMENT-SIGNATURE` header.
    pub async fn verify(&self, header: &str, resource: &str, class: PriceClass) -> Result<Verified, ApiError> {
        let verified = match Self::decode(header) {
            Ok(payload) => self.verify_payload(payload, &[class]).await,
            Err(refusal) => Err(refusal),
        };
        verified.map_err(|refusal| match refusal {
            Refusal::Payment { reason, malformed } => self.payment_required(resource, class, &reason, malformed),
            Refusal::Failed(e) => e.into(),
        })
    }

    /// The `PaymentPayload` a `PAYMENT-SIGNATURE` (or v1 `X-PAYMENT`) header carries.
    pub fn decode(header: &str) -> Result<Value, Refusal> {
        if header.len() > MAX_HEADER_BYTES {
            return Err(Refusal::malformed("payment header too large"));
        }
        let bytes = B64.decode(header.trim()).map_err(|_| Refusal::malformed("PAYMENT-SIGNATURE is not base64"))?;
        serde_json::from_slice(&bytes).map_err(|_| Refusal::malformed("PAYMENT-SIGNATURE is not JSON"))
    }

    /// Matches a `PaymentPayload` against the requirement of one of `classes`, reserves it (a
    /// payment is accepted once) and has the facilitator verify it.
    pub async fn verify_payload(&self, payload: Value, classes: &[PriceClass]) -> Result<Verified, Refusal> {
        let refuse = |why: &str| Refusal::Payment { reason: why.to_owned(), malformed: false };
        if !payload.is_object() {
            return Err(Refusal::malformed("the payment must be a PaymentPayload object"));
        }
        if serde_json::to_vec(&payload).map_or(usize::MAX, |b| b.len()) > MAX_HEADER_BYTES {
            return Err(Refusal::malformed("payment too large"));
        }
        if payload.get("x402Version").and_then(Value::as_u64) != Some(2) {
            return Err(refuse("invalid_x402_version"));
        }
        let accepted = payload.get("accepted").ok_or_else(|| Refusal::malformed("payload has no accepted requirement"))?;
        let Some(requirement) = classes
            .iter()
            .map(|c| self.requirement(*c))
            .find(|r| *accepted == serde_json::to_value(r).expect("serialises"))
        else {
            return Err(refuse("No matching payment requirements"));
        };
        let auth = payload.pointer("/payload/authorization").ok_or_else(|| Refusal::malformed("payload has no authorization"))?;
        let field = |k: &str| auth.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(from), Some(to), Some(value), Some(nonce)) = (field("from"), field("to"), field("value"), field("nonce")) else {
            return Err(Refusal::malformed("authorization needs from, to, value and nonce"));
        };
        if !to.eq_ignore_ascii_case(&requirement.pay_to) || value != requirement.amount {
            return Err(refuse("authorization does not pay this resource"));
        }
        let valid_before: i64 = field("validBefore").and_then(|v| v.parse().ok()).unwrap_or(0);
        let key = format!("{}|{}|{}|{}", requirement.network, requirement.asset.to_lowercase(), from.to_lowercase(), nonce.to_lowercase());
        self.reserve(&key, valid_before).map_err(|_| refuse("payment already used"))?;
        let verdict = match self.post("verify", &payload, &requirement).await {
            Ok(v) => v,
            Err(e) => {
                self.release(&key);
                return Err(Refusal::Failed(e));
            }
        };
        if verdict.get("isValid").and_then(Value::as_bool) != Some(true) {
            self.release(&key);
            let reason = verdict.get("invalidReason").and_then(Value::as_str).unwrap_or("invalid payment");
            return Err(refuse(reason));
        }
        // The identity is the wallet that signed the authorization. A facilitator naming another
        // payer is wrong or lying; acting on its word would hand the caller another tenant.
        if let Some(named) = verdict.get("payer").and_then(Value::as_str)
            && !named.eq_ignore_ascii_case(&from)
        {
            self.release(&key);
            tracing::warn!(signed = %from, named, "x402 facilitator named a payer other than the signer");
            return Err(refuse("the facilitator's payer does not match the authorization"));
        }
        Ok(Verified { payer: from, network: requirement.network.clone(), payload, requirement, key })
    }

    /// Settles a verified payment; the `PAYMENT-RESPONSE` header value on success, a 402 with it
    /// (`success: false`) on failure. The payment stays used either way.
    pub async fn settle(&self, v: &Verified, resource: &str, class: PriceClass) -> Result<HeaderValue, ApiError> {
        let header = |receipt: &Value| HeaderValue::from_str(&B64.encode(receipt.to_string())).unwrap_or(HeaderValue::from_static(""));
        match self.settle_receipt(v).await? {
            Ok(receipt) => Ok(header(&receipt)),
            Err(receipt) => {
                let reason = receipt.get("errorReason").and_then(Value::as_str).unwrap_or("settlement failed");
                let mut headers = HeaderMap::new();
                headers.insert(PAYMENT_RESPONSE, header(&receipt));
                Err(self.payment_required(resource, class, &format!("settlement failed: {reason}"), false).with_headers(headers))
            }
        }
    }

    /// Settles a verified payment: the facilitator's `SettleResponse`, `Ok` when it succeeded
    /// and `Err` when it did not; an error when the facilitator could not be asked. The payment
    /// stays used either way.
    pub async fn settle_receipt(&self, v: &Verified) -> Result<Result<Value, Value>, Error> {
        let verdict = self.post("settle", &v.payload, &v.requirement).await?;
        if verdict.get("success").and_then(Value::as_bool) == Some(true) {
            Ok(Ok(verdict))
        } else {
            Ok(Err(verdict))
        }
    }

    /// Frees a reservation for a payment that was never used (the operation failed first).
    pub fn release_unused(&self, v: &Verified) {
        self.release(&v.key);
    }

    fn reserve(&self, key: &str, valid_before: i64) -> Result<(), ()> {
        let now = chrono::Utc::now().timestamp();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, until| *until > now);
        if seen.contains_key(key) {
            return Err(());
        }
        // Keep it at least a day: an authorization without a sane validBefore stays refused.
        seen.insert(key.to_owned(), valid_before.max(now + 86_400));
        Ok(())
    }

    fn release(&self, key: &str) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    async fn post(&self, endpoint: &str, payload: &Value, requirement: &Requirement) -> Result<Value, Error> {
        let url = format!("{}/{endpoint}", self.cfg.facilitator_url.trim_end_matches('/'));
        let body = json!({"x402Version": 2, "paymentPayload": payload, "paymentRequirements": requirement});
        let unavailable = |e: String| {
            tracing::warn!(endpoint, error = %e, "x402 facilitator failed");
            Error::new(ErrorCode::Unavailable, "the payment facilitator is unavailable; retry later")
        };
        let resp = self.http.post(url).json(&body).send().await.map_err(|e| unavailable(root_cause(&e)))?;
        let status = resp.status();
        let bytes = read_capped(resp, MAX_FACILITATOR_ANSWER).await.map_err(|e| unavailable(e.0))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| unavailable(format!("non-JSON answer ({status})")))?;
        // A non-2xx that still carries a verdict is a verdict; anything else is a failure.
        if status.is_success() || v.get("isValid").is_some() || v.get("success").is_some() {
            Ok(v)
        } else {
            Err(unavailable(format!("status {status}")))
        }
    }
}

/// The EIP-712 domain of USDC on known networks (a wrong one invalidates every signature).
fn token_domain(network: &str) -> Value {
    match network {
        "eip155:84532" => json!({"name": "USDC", "version": "2"}),
        _ => json!({"name": "USD Coin", "version": "2"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x() -> X402 {
        let cfg = X402Config {
            facilitator_url: "http://127.0.0.1:9".into(),
            pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
            ..X402Config::default()
        };
        X402::from_config(&cfg, &OutboundConfig::default()).unwrap().unwrap()
    }

    #[test]
    fn the_402_carries_a_decodable_payment_required_header() {
        let e = x().payment_required("/api/v1/contacts", PriceClass::Write, "", false);
        assert_eq!(e.status().as_u16(), 402);
        let body = e.to_json();
        assert_eq!(body["error"]["code"], "payment_required");
        assert_eq!(body["payment_options"]["x402"]["amount"], "3000");
        let resp = axum::response::IntoResponse::into_response(e);
        let h = resp.headers()[PAYMENT_REQUIRED].to_str().unwrap();
        let v: Value = serde_json::from_slice(&B64.decode(h).unwrap()).unwrap();
        assert_eq!(v["x402Version"], 2);
        assert_eq!(v["accepts"][0]["scheme"], "exact");
        assert_eq!(v["accepts"][0]["network"], "eip155:8453");
        assert_eq!(v["accepts"][0]["amount"], "3000");
        assert_eq!(v["accepts"][0]["maxTimeoutSeconds"], 60);
        assert!(v["accepts"][0]["extra"]["name"].is_string());
    }

    #[test]
    fn writes_cost_more_than_reads_and_a_payment_is_reserved_once() {
        let x = x();
        assert!(x.price(PriceClass::Write) > x.price(PriceClass::Read));
        assert!(x.reserve("k", 0).is_ok());
        assert!(x.reserve("k", 0).is_err());
        x.release("k");
        assert!(x.reserve("k", 0).is_ok());
    }
}
