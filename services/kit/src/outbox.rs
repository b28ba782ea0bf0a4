//! The transactional outbox: a service writes its event in the same transaction as the state
//! change, and the relay publishes committed rows to the bus (at least once) and marks them sent.
//! A bus outage therefore delays events but never loses them or fails a write.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::Message as _;
use sqlx::FromRow;
use tokio::sync::Notify;
use uuid::Uuid;
use worktruck_proto::common::v1::Event;

use crate::bus::{Bus, Message};
use crate::db::{Db, Dialect, Scope, Tx};
use crate::error::Result;
use crate::{exec, on_tx};

const INSERT: &str = "INSERT INTO outbox (event_id, tenant_id, subject, payload, created_at, trace_context) \
     VALUES ($1, $2, $3, $4, $5, $6)";
const CLAIM_PG: &str = "SELECT id, event_id, tenant_id, subject, payload, trace_context FROM outbox \
     WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";
const PENDING_SQLITE: &str = "SELECT id, event_id, tenant_id, subject, payload, trace_context FROM outbox \
     WHERE sent_at IS NULL ORDER BY id LIMIT $1";
const MARK_SENT: &str = "UPDATE outbox SET sent_at = $2 WHERE id = $1";
const COUNT_PENDING: &str = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL";

#[derive(Debug, FromRow)]
struct Row {
    id: i64,
    event_id: Uuid,
    tenant_id: Uuid,
    subject: String,
    payload: Vec<u8>,
    trace_context: Option<String>,
}

/// Writes an event into the outbox inside the caller's transaction, with the current trace
/// context, so the event continues the trace of the request that caused it.
#[allow(clippy::too_many_arguments)]
pub async fn enqueue(
    tx: &mut Tx,
    tenant: Uuid,
    subject: &str,
    entity_id: Uuid,
    version: i64,
    actor: &str,
    data: prost_types::Any,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    let event_id = Uuid::now_v7();
    let event = Event {
        id: event_id.to_string(),
        tenant_id: tenant.to_string(),
        subject: subject.to_owned(),
        entity_id: entity_id.to_string(),
        version,
        occurred_at: Some(crate::pbjson::timestamp(now)),
        actor: actor.to_owned(),
        data: Some(data),
    };
    let trace = crate::telemetry::trace_fields();
    let trace = (!trace.is_empty())
        .then(|| serde_json::Value::Object(trace.into_iter().map(|(k, v)| (k, v.into())).collect()).to_string());
    exec!(tx, sqlx::query(INSERT)
        .bind(event_id).bind(tenant).bind(subject).bind(event.encode_to_vec()).bind(now).bind(trace))?;
    Ok(event_id)
}

/// Packs a message as `google.protobuf.Any` with its full proto name.
pub fn any<M: prost::Message>(full_name: &str, m: &M) -> prost_types::Any {
    prost_types::Any { type_url: format!("type.googleapis.com/{full_name}"), value: m.encode_to_vec() }
}

/// Publishes committed outbox rows. One per service process.
#[derive(Clone)]
pub struct Relay {
    db: Db,
    bus: Bus,
    wake: Arc<Notify>,
    /// The `service` label of its metrics.
    service: Arc<str>,
}

impl Relay {
    /// A relay from a service's database to the bus.
    pub fn new(db: Db, bus: Bus) -> Self {
        Self { db, bus, wake: Arc::new(Notify::new()), service: "".into() }
    }

    /// The same relay, its metrics labelled with `service`.
    pub fn for_service(mut self, service: &str) -> Self {
        self.service = service.into();
        self
    }

    /// Publishes one row, timing it and counting failures.
    async fn publish(&self, row: &Row) -> Result<()> {
        use crate::telemetry::families::{OUTBOX_FAILURES, OUTBOX_PUBLISH};
        let started = std::time::Instant::now();
        let published = self.bus.publish(&message(row)).await;
        match &published {
            Ok(_) => metrics::histogram!(OUTBOX_PUBLISH, "service" => self.service.to_string()).record(started.elapsed().as_secs_f64()),
            Err(_) => metrics::counter!(OUTBOX_FAILURES, "service" => self.service.to_string()).increment(1),
        }
        published.map(|_| ())
    }

    /// Call after committing a transaction that enqueued events, so they go out at once.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Runs until `shutdown` resolves: publishes on every notification, and every 500 ms anyway
    /// (for rows left by a bus outage or another process), backing off while the bus is down.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(500);
        let mut counted: Option<std::time::Instant> = None;
        loop {
            match self.drain().await {
                Ok(_) => backoff = Duration::from_millis(500),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay cannot publish; will retry");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            // At most once a second: a busy service wakes the relay after every write.
            if counted.is_none_or(|c| c.elapsed() >= Duration::from_secs(1))
                && let Ok(pending) = self.pending().await
            {
                counted = Some(std::time::Instant::now());
                metrics::gauge!(crate::telemetry::families::OUTBOX_PENDING, "service" => self.service.to_string()).set(pending as f64);
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Publishes every pending row, in order, stopping at the first failure. Returns how many
    /// rows were published.
    pub async fn drain(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.batch(100).await?;
            total += n;
            if n < 100 {
                return Ok(total);
            }
        }
    }

    async fn batch(&self, limit: i64) -> Result<usize> {
        match self.db.dialect() {
            Dialect::Postgres => {
                let mut tx = self.db.begin(Scope::System, true).await?;
                let rows: Vec<Row> =
                    on_tx!(&mut tx, c => sqlx::query_as(CLAIM_PG).bind(limit).fetch_all(c).await)?;
                let mut sent = 0;
                let mut failure = None;
                for r in &rows {
                    if let Err(e) = self.publish(r).await {
                        failure = Some(e);
                        break;
                    }
                    exec!(&mut tx, sqlx::query(MARK_SENT).bind(r.id).bind(crate::db::now()))?;
                    sent += 1;
                }
                tx.commit().await?;
                failure.map_or(Ok(sent), Err)
            }
            Dialect::Sqlite => {
                let rows: Vec<Row> = {
                    let mut tx = self.db.begin(Scope::System, false).await?;
                    on_tx!(&mut tx, c => sqlx::query_as(PENDING_SQLITE).bind(limit).fetch_all(c).await)?
                };
                let mut sent = 0;
                for r in &rows {
                    self.publish(r).await?;
                    let mut tx = self.db.begin(Scope::System, true).await?;
                    exec!(&mut tx, sqlx::query(MARK_SENT).bind(r.id).bind(crate::db::now()))?;
                    tx.commit().await?;
                    sent += 1;
                }
                Ok(sent)
            }
        }
    }

    /// Rows not yet published.
    pub async fn pending(&self) -> Result<i64> {
        let mut tx = self.db.begin(Scope::System, false).await?;
        Ok(on_tx!(&mut tx, c => sqlx::query_scalar(COUNT_PENDING).fetch_one(c).await)?)
    }
}

fn message(r: &Row) -> Message {
    Message {
        event_id: r.event_id,
        tenant_id: r.tenant_id,
        subject: r.subject.clone(),
        payload: Bytes::from(r.payload.clone()),
        trace: r
            .trace_context
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(t).ok())
            .map(|m| m.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_owned()))).collect())
            .unwrap_or_default(),
    }
}
