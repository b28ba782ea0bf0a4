//! The `worktruck.webhooks.v1.WebhooksService` gRPC implementation, and the one attempt of a
//! delivery that the delivery loop, `TestWebhook` and `RedeliverWebhookDelivery` share. An
//! attempt is a network call, so it never runs inside a transaction: the delivery and the
//! webhook's secrets are read in one, the POST is made, and the result written in another,
//! only while the attempt's lease still holds.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::Verifier;
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::envelope::Envelope;
use worktruck_kit::http::Guard;
use worktruck_kit::outbox::Relay;
use worktruck_kit::pbjson::{from_struct, uuid};
use worktruck_kit::rpc::Caller;
use worktruck_kit::{Error, Result};
use worktruck_proto::webhooks::v1 as pb;
use worktruck_proto::webhooks::v1::webhooks_service_server::WebhooksService;
use zeroize::Zeroizing;

use crate::Settings;
use crate::domain::{
    check_metadata, check_patterns, check_text, check_url_length, cut, delivery_status_name,
    delivery_to_pb, merge, metadata, patterns_of, webhook_to_pb,
};
use crate::queries::{self, DeliveryRow, WebhookRow};
use crate::sign;

/// Who the delivery loop acts as in events.
pub const SYSTEM_ACTOR: &str = "system:webhooks";
/// The longest rotation overlap.
const MAX_OVERLAP_SECONDS: i64 = 7 * 86_400;
/// The default rotation overlap.
const DEFAULT_OVERLAP_SECONDS: i64 = 86_400;
/// The most of a receiver's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest `last_error` kept.
const MAX_ERROR_CHARS: usize = 500;
/// The event type of `TestWebhook`'s deliveries.
pub const TEST_EVENT: &str = "webhooks.test";

/// The webhooks service.
#[derive(Clone)]
pub struct Webhooks {
    db: Db,
    verifier: Verifier,
    relay: Relay,
    guard: Guard,
    client: reqwest::Client,
    envelope: Envelope,
    settings: Settings,
    /// Wakes the delivery loop when the consumer made deliveries.
    wake: Arc<Notify>,
}

/// A webhook's signing secrets, opened: the current one and, during an overlap, the previous.
struct Secrets {
    current: Zeroizing<String>,
    previous: Option<Zeroizing<String>>,
}

fn purpose(webhook: Uuid) -> String {
    format!("webhooks.secret:{webhook}")
}

impl Webhooks {
    /// The service over its database, with its guard, guarded client and sealer.
    pub fn new(
        db: Db,
        verifier: Verifier,
        relay: Relay,
        guard: Guard,
        client: reqwest::Client,
        envelope: Envelope,
        settings: Settings,
    ) -> Webhooks {
        Webhooks {
            db,
            verifier,
            relay,
            guard,
            client,
            envelope,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }

    pub(crate) async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify();
        Ok(())
    }

    async fn seal(&self, tx: &mut Tx, tenant: Uuid, id: Uuid, secret: &str) -> Result<Vec<u8>> {
        self.envelope
            .seal(tx, tenant, &purpose(id), secret.as_bytes())
            .await
    }

    async fn open(
        &self,
        tx: &mut Tx,
        tenant: Uuid,
        id: Uuid,
        sealed: &[u8],
    ) -> Result<Zeroizing<String>> {
        let plain = self.envelope.open(tx, tenant, &purpose(id), sealed).await?;
        let text = std::str::from_utf8(&plain)
            .map_err(|_| Error::internal("a webhook secret is not UTF-8"))?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    async fn secrets(&self, tx: &mut Tx, w: &WebhookRow, t: DateTime<Utc>) -> Result<Secrets> {
        let current = self.open(tx, w.tenant_id, w.id, &w.secret_sealed).await?;
        let previous = match (&w.previous_sealed, w.previous_expires_at) {
            (Some(sealed), Some(until)) if until > t => {
                Some(self.open(tx, w.tenant_id, w.id, sealed).await?)
            }
            _ => None,
        };
        Ok(Secrets { current, previous })
    }

    /// The SSRF guard's verdict on a URL, with its name resolved now (every attempt checks
    /// again, and so does the connection).
    async fn check_url(&self, url: &str) -> Result<String> {
        let url = check_url_length(url)?;
        self.guard
            .check(&url)
            .await
            .map_err(|e| Error::validation(format!("url: {e}")))?;
        Ok(url)
    }

    pub(crate) async fn emit(
        &self,
        tx: &mut Tx,
        actor: &str,
        action: &str,
        w: &pb::Webhook,
        t: DateTime<Utc>,
    ) -> Result<()> {
        let tenant = Uuid::parse_str(&w.tenant_id).map_err(Error::internal)?;
        let id = Uuid::parse_str(&w.id).map_err(Error::internal)?;
        let data = worktruck_kit::outbox::any(
            "worktruck.webhooks.v1.WebhookChanged",
            &pb::WebhookChanged {
                webhook: Some(w.clone()),
            },
        );
        worktruck_kit::outbox::enqueue(
            tx,
            tenant,
            &format!("worktruck.webhooks.webhook.{action}.v1"),
            id,
            w.version,
            actor,
            data,
            t,
        )
        .await?;
        Ok(())
    }

    async fn by_id(&self, tx: &mut Tx, tenant: Uuid, id: &str, lock: bool) -> Result<WebhookRow> {
        let id = uuid(id, "id").map_err(|_| Error::not_found("no such webhook"))?;
        queries::webhook(tx, tenant, id, lock)
            .await?
            .ok_or_else(|| Error::not_found("no such webhook"))
    }

    /// The delay before retry number `attempts` (1 after the first failure): the base doubled
    /// per attempt, capped, jittered by ±20 %.
    pub(crate) fn backoff(&self, attempts: i32) -> Duration {
        let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
        let ms = (self.settings.retry_base_ms as f64 * 2f64.powi(exp as i32))
            .min(self.settings.retry_max_ms as f64);
        let jittered = ms * rand::thread_rng().gen_range(0.8..1.2);
        Duration::milliseconds(jittered.max(1.0) as i64)
    }

    fn lease(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        // An attempt takes at most its timeout; a replica that dies mid-attempt leaves the
        // delivery due again after this.
        t + Duration::milliseconds(self.settings.attempt_timeout_ms as i64 * 2 + 5_000)
    }

    pub(crate) fn lease_until(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.lease(t)
    }

    /// Makes one attempt of a delivery this caller holds the lease of (`token`), and records
    /// it. Returns the delivery as recorded (`None` when it or its webhook is gone, or the
    /// lease was lost meanwhile).
    pub(crate) async fn attempt(
        &self,
        tenant: Uuid,
        id: Uuid,
        token: Uuid,
    ) -> Result<Option<DeliveryRow>> {
        let t0 = now();
        let (d, w, secrets) = {
            let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
            let Some(d) = queries::delivery_by_id(&mut tx, tenant, id).await? else {
                return Ok(None);
            };
            if d.lease_token != Some(token) || d.status != "pending" {
                return Ok(None);
            }
            let Some(w) = queries::webhook(&mut tx, tenant, d.webhook_id, false).await? else {
                return Ok(None);
            };
            let secrets = self.secrets(&mut tx, &w, t0).await?;
            (d, w, secrets)
        };
        let outcome = self.send(&w.url, &d, &secrets).await;
        drop(secrets);
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let Some(mut w) = queries::webhook(&mut tx, tenant, d.webhook_id, true).await? else {
            return Ok(None);
        };
        let mut d = d;
        d.attempts = d.attempts.saturating_add(1);
        d.last_attempt_at = Some(t);
        let mut disabled = false;
        match outcome {
            Ok(code) => {
                d.status = "delivered".into();
                d.delivered_at = Some(t);
                d.last_error = None;
                d.last_status_code = Some(code);
                w.consecutive_failures = 0;
                w.failing_since = None;
                w.last_success_at = Some(t);
            }
            Err((code, why)) => {
                d.last_error = Some(cut(&why, MAX_ERROR_CHARS));
                d.last_status_code = code;
                let next = t + self.backoff(d.attempts);
                if next > d.retry_until {
                    d.status = "failed".into();
                } else {
                    d.next_attempt_at = next;
                }
                w.consecutive_failures = w.consecutive_failures.saturating_add(1);
                let since = *w.failing_since.get_or_insert(t);
                if w.status == "active"
                    && w.consecutive_failures >= self.settings.disable_after_failures
                    && (t - since).num_seconds() >= self.settings.disable_after_seconds as i64
                {
                    w.status = "disabled".into();
                    w.disabled_reason = Some(format!(
                        "disabled after {} failed attempts in a row since {}: {}",
                        w.consecutive_failures,
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        cut(&why, 200)
                    ));
                    w.version += 1;
                    w.updated_at = t;
                    disabled = true;
                }
            }
        }
        if !queries::record_delivery(&mut tx, &d, token).await? {
            return Ok(None);
        }
        queries::update_webhook(&mut tx, &w).await?;
        if disabled {
            tracing::warn!(webhook.id = %w.id, failures = w.consecutive_failures, "webhook disabled after repeated failure");
            let wire = webhook_to_pb(&w, t);
            self.emit(&mut tx, SYSTEM_ACTOR, "disabled", &wire, t)
                .await?;
        }
        self.commit(tx).await?;
        d.lease_token = None;
        d.lease_until = None;
        Ok(Some(d))
    }

    /// POSTs a delivery: its status code on a 2xx, else the code (if any) and why.
    async fn send(
        &self,
        url: &str,
        d: &DeliveryRow,
        secrets: &Secrets,
    ) -> std::result::Result<i32, (Option<i32>, String)> {
        // A URL whose host is an address is connected to without resolution: check it here.
        self.guard
            .check_url(url)
            .map_err(|r| (None, format!("refused: {r}")))?;
        let body = serde_json::to_vec(&d.payload)
            .map_err(|e| (None, format!("cannot encode the body: {e}")))?;
        let t = now().timestamp();
        let mut keys: Vec<&str> = vec![secrets.current.as_str()];
        if let Some(p) = &secrets.previous {
            keys.push(p.as_str());
        }
        let signature = sign::signature_header(&keys, t, &body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "Worktruck-Webhooks/1")
            .header("worktruck-delivery-id", d.id.to_string())
            .header("worktruck-event", &d.event_type)
            .header("worktruck-signature", signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let why = match worktruck_kit::http::refusal_in(&e) {
                    Some(r) => format!("refused: {r}"),
                    None if e.is_timeout() => {
                        format!("no answer within {} ms", self.settings.attempt_timeout_ms)
                    }
                    None => format!(
                        "cannot reach the receiver: {}",
                        worktruck_kit::http::root_cause(&e)
                    ),
                };
                return Err((None, why));
            }
        };
        let code = response.status().as_u16() as i32;
        let ok = response.status().is_success();
        let answer = worktruck_kit::http::read_capped(response, MAX_ANSWER_BYTES).await;
        if ok {
            return Ok(code);
        }
        let text = match answer {
            Ok(b) => String::from_utf8_lossy(&b)
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>(),
            Err(e) => e.0,
        };
        Err((
            Some(code),
            format!("HTTP {code}: {}", cut(text.trim(), 300)),
        ))
    }

    /// Leases a delivery just made or reset by a request, attempts it, and answers it.
    async fn attempt_now(
        &self,
        tenant: Uuid,
        id: Uuid,
        token: Uuid,
    ) -> Result<pb::WebhookDelivery> {
        if let Some(d) = self.attempt(tenant, id, token).await? {
            return Ok(delivery_to_pb(&d));
        }
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let d = queries::delivery_by_id(&mut tx, tenant, id)
            .await?
            .ok_or_else(|| Error::not_found("no such delivery"))?;
        Ok(delivery_to_pb(&d))
    }
}

#[tonic::async_trait]
impl WebhooksService for Webhooks {
    async fn create_webhook(
        &self,
        req: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let patterns = check_patterns(&r.event_types)?;
        let description = check_text(
            "description",
            r.description.as_deref().unwrap_or_default(),
            1_000,
        )?;
        let meta = metadata(r.metadata.as_ref())?;
        let url = self.check_url(&r.url).await?;
        let secret = sign::new_secret();
        let t = now();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let sealed = self.seal(&mut tx, c.tenant, id, &secret).await?;
        let w = WebhookRow {
            tenant_id: c.tenant,
            id,
            url,
            event_types: serde_json::json!(patterns),
            description,
            metadata: meta,
            status: "active".into(),
            disabled_reason: None,
            secret_sealed: sealed,
            secret_hint: worktruck_kit::envelope::hint(&secret),
            previous_sealed: None,
            previous_expires_at: None,
            consecutive_failures: 0,
            failing_since: None,
            last_success_at: None,
            version: 1,
            created_at: t,
            updated_at: t,
        };
        queries::insert_webhook(&mut tx, &w).await?;
        let wire = webhook_to_pb(&w, t);
        self.emit(&mut tx, c.actor(), "created", &wire, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(wire),
            secret: secret.to_string(),
        }))
    }

    async fn list_webhooks(
        &self,
        req: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let scope = "webhooks:list";
        let limit = cursor::limit(r.limit)?;
        let after = cursor::decode_opt(r.cursor.as_deref(), scope)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut rows = queries::list_webhooks(&mut tx, c.tenant, limit + 1, after).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = has_more
            .then(|| {
                rows.last()
                    .map(|w| Cursor::TimeId(w.created_at, w.id).encode(scope))
            })
            .flatten();
        let t = now();
        Ok(Response::new(pb::ListWebhooksResponse {
            data: rows.iter().map(|w| webhook_to_pb(w, t)).collect(),
            next_cursor,
            has_more,
        }))
    }

    async fn get_webhook(
        &self,
        req: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let c = self.caller(&req)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let w = self
            .by_id(&mut tx, c.tenant, &req.get_ref().id, false)
            .await?;
        Ok(Response::new(webhook_to_pb(&w, now())))
    }

    async fn update_webhook(
        &self,
        req: Request<pb::UpdateWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let url = match &r.url {
            Some(u) => Some(self.check_url(u).await?),
            None => None,
        };
        let patterns = r.event_types.as_ref().map(patterns_of).transpose()?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let mut w = self.by_id(&mut tx, c.tenant, &r.id, true).await?;
        if let Some(expected) = r.expected_version
            && expected != w.version
        {
            return Err(Error::stale_version("webhook", w.version, expected).into());
        }
        if let Some(u) = url {
            w.url = u;
        }
        if let Some(p) = patterns {
            w.event_types = serde_json::json!(p);
        }
        if let Some(d) = &r.description {
            w.description = check_text("description", d, 1_000)?;
        }
        if let Some(m) = &r.metadata {
            let merged = merge(&w.metadata, &from_struct(m));
            check_metadata(&merged)?;
            w.metadata = merged;
        }
        if let Some(s) = r.status {
            match pb::WebhookStatus::try_from(s).unwrap_or(pb::WebhookStatus::Unspecified) {
                pb::WebhookStatus::Active => {
                    if w.status != "active" {
                        // Back on with a clean slate: pending deliveries resume.
                        w.status = "active".into();
                        w.disabled_reason = None;
                        w.consecutive_failures = 0;
                        w.failing_since = None;
                    }
                }
                pb::WebhookStatus::Disabled => {
                    if w.status != "disabled" {
                        w.status = "disabled".into();
                        w.disabled_reason = Some("disabled by the tenant".into());
                    }
                }
                pb::WebhookStatus::Unspecified => {
                    return Err(Error::validation("status must be active or disabled").into());
                }
            }
        }
        w.version += 1;
        w.updated_at = t;
        queries::update_webhook(&mut tx, &w).await?;
        let wire = webhook_to_pb(&w, t);
        self.emit(&mut tx, c.actor(), "updated", &wire, t).await?;
        self.commit(tx).await?;
        self.wake.notify_one();
        Ok(Response::new(wire))
    }

    async fn delete_webhook(
        &self,
        req: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let c = self.caller(&req)?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let mut w = self
            .by_id(&mut tx, c.tenant, &req.get_ref().id, true)
            .await?;
        queries::delete_webhook(&mut tx, c.tenant, w.id).await?;
        w.version += 1;
        w.updated_at = t;
        let wire = webhook_to_pb(&w, t);
        self.emit(&mut tx, c.actor(), "deleted", &wire, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteWebhookResponse {
            id: w.id.to_string(),
            deleted: true,
        }))
    }

    async fn rotate_webhook_secret(
        &self,
        req: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let overlap = r.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
        if !(0..=MAX_OVERLAP_SECONDS).contains(&overlap) {
            return Err(Error::validation(format!(
                "overlap_seconds must be 0 to {MAX_OVERLAP_SECONDS}"
            ))
            .into());
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let mut w = self.by_id(&mut tx, c.tenant, &r.id, true).await?;
        let secret = sign::new_secret();
        let sealed = self.seal(&mut tx, c.tenant, w.id, &secret).await?;
        let old = std::mem::replace(&mut w.secret_sealed, sealed);
        if overlap > 0 {
            w.previous_sealed = Some(old);
            w.previous_expires_at = Some(t + Duration::seconds(overlap));
        } else {
            w.previous_sealed = None;
            w.previous_expires_at = None;
        }
        w.secret_hint = worktruck_kit::envelope::hint(&secret);
        w.version += 1;
        w.updated_at = t;
        queries::update_webhook(&mut tx, &w).await?;
        let wire = webhook_to_pb(&w, t);
        self.emit(&mut tx, c.actor(), "updated", &wire, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            webhook: Some(wire),
            secret: secret.to_string(),
        }))
    }

    async fn test_webhook(
        &self,
        req: Request<pb::TestWebhookRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        let c = self.caller(&req)?;
        let t = now();
        let token = Uuid::now_v7();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let w = self
            .by_id(&mut tx, c.tenant, &req.get_ref().id, false)
            .await?;
        let payload = serde_json::json!({
            "id": id.to_string(),
            "type": TEST_EVENT,
            "created_at": t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "tenant_id": c.tenant.to_string(),
            "data": {"webhook_id": w.id.to_string(), "message": "a test delivery from Worktruck"},
        });
        let d = DeliveryRow {
            tenant_id: c.tenant,
            id,
            webhook_id: w.id,
            event_id: Uuid::now_v7(),
            event_type: TEST_EVENT.into(),
            entity_key: format!("webhooks:test:{id}"),
            payload,
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: t,
            retry_until: t + Duration::seconds(self.settings.retry_window_seconds as i64),
            lease_until: Some(self.lease(t)),
            lease_token: Some(token),
            last_error: None,
            last_status_code: None,
            last_attempt_at: None,
            created_at: t,
            delivered_at: None,
        };
        queries::insert_delivery(&mut tx, &d).await?;
        tx.commit().await?;
        Ok(Response::new(self.attempt_now(c.tenant, id, token).await?))
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let status = match r.status {
            None => None,
            Some(s) => Some(
                delivery_status_name(
                    pb::DeliveryStatus::try_from(s).unwrap_or(pb::DeliveryStatus::Unspecified),
                )
                .ok_or_else(|| Error::validation("status must be pending, delivered or failed"))?,
            ),
        };
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let w = self.by_id(&mut tx, c.tenant, &r.id, false).await?;
        let scope = format!("webhooks:deliveries:{}:{}", w.id, status.unwrap_or(""));
        let limit = cursor::limit(r.limit)?;
        let after = cursor::decode_opt(r.cursor.as_deref(), &scope)?;
        let mut rows =
            queries::list_deliveries(&mut tx, c.tenant, w.id, status, limit + 1, after).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = has_more
            .then(|| {
                rows.last()
                    .map(|d| Cursor::TimeId(d.created_at, d.id).encode(&scope))
            })
            .flatten();
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            data: rows.iter().map(delivery_to_pb).collect(),
            next_cursor,
            has_more,
        }))
    }

    async fn redeliver_webhook_delivery(
        &self,
        req: Request<pb::RedeliverWebhookDeliveryRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let token = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let w = self.by_id(&mut tx, c.tenant, &r.id, false).await?;
        let did = uuid(&r.delivery_id, "delivery_id")
            .map_err(|_| Error::not_found("no such delivery"))?;
        queries::delivery(&mut tx, c.tenant, w.id, did)
            .await?
            .ok_or_else(|| Error::not_found("no such delivery"))?;
        let until = t + Duration::seconds(self.settings.retry_window_seconds as i64);
        if !queries::redeliver(&mut tx, c.tenant, did, t, until, self.lease(t), token).await? {
            return Err(
                Error::conflict("the delivery is pending already: it is being retried").into(),
            );
        }
        tx.commit().await?;
        Ok(Response::new(self.attempt_now(c.tenant, did, token).await?))
    }
}
