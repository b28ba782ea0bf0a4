//! The bus consumer: every Worktruck event (`worktruck.>`; on NATS a durable JetStream consumer
//! named after this schema's identity, shared by the service's replicas, starting at the
//! schema's first start) is matched against its tenant's active webhooks, and one delivery row
//! per match is inserted — unique per (webhook, event), so a message the bus delivers again
//! makes none twice — before the message is acknowledged. Events are handled one at a time, in
//! the order the bus gives them, and a failure is retried in place rather than skipped, so one
//! entity's deliveries are made in its events' order.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};
use uuid::Uuid;
use worktruck_kit::bus::{Bus, Delivered, Message};
use worktruck_kit::db::{Scope, now};
use worktruck_kit::service::Shutdown;
use worktruck_kit::{ErrorCode, Result};
use worktruck_proto::common::v1::Event;

use crate::domain::{event_type, matches};
use crate::queries::{self, DeliveryRow};
use crate::service::Webhooks;

/// Every event.
const SUBJECTS: &str = "worktruck.>";

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(worktruck_proto::DESCRIPTOR_SET)
            .expect("the embedded descriptor set decodes")
    })
}

/// The JSON of an event's `data` (its domain message, with the API's JSON conventions), or
/// null when it cannot be read.
fn data_json(event: &Event) -> Value {
    let Some(any) = &event.data else {
        return Value::Null;
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let Some(desc) = pool().get_message_by_name(name) else {
        return Value::Null;
    };
    match DynamicMessage::decode(desc, any.value.as_slice()) {
        Ok(m) => worktruck_proto::json::to_value(&m).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Runs until shutdown.
pub async fn run(svc: Webhooks, bus: Bus, shutdown: Shutdown) {
    let (instance, since) = match worktruck_kit::links::instance(svc.db()).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "webhooks consumer cannot start: no instance identity");
            return;
        }
    };
    let name = format!("webhooks-{}", instance.simple());
    let mut events = bus.consume(&name, SUBJECTS, since - chrono::Duration::minutes(1));
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            d = events.next() => match d {
                None => return,
                Some(Delivered::Gap) => tracing::warn!("webhooks consumer missed events in process"),
                Some(Delivered::Event(d)) => {
                    let mut tries: u64 = 0;
                    loop {
                        let m = &d.message;
                        let handled = handle(&svc, m);
                        let handled = match worktruck_kit::telemetry::message_span("process", &m.subject, &m.event_id.to_string(), &m.trace, Some(&name)) {
                            Some(span) => tracing::Instrument::instrument(handled, span).await,
                            None => handled.await,
                        };
                        match handled {
                            Ok(made) => {
                                d.ack().await;
                                if made {
                                    svc.wake().notify_one();
                                }
                                break;
                            }
                            Err(e) if !shutdown.is_signalled() && (e.code == ErrorCode::Unavailable || tries < 5) => {
                                // In place, not redelivered later: a later event of the same
                                // entity must not be recorded before this one.
                                tries += 1;
                                tracing::warn!(error = %e, subject = %d.message.subject, "webhooks consumer cannot handle an event yet; retrying");
                                tokio::time::sleep(Duration::from_millis((250 * tries).min(5_000))).await;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, subject = %d.message.subject, "webhooks consumer cannot handle an event");
                                d.retry(Duration::from_secs(5)).await;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Records the deliveries of one event; true when any was made.
async fn handle(svc: &Webhooks, m: &Message) -> Result<bool> {
    let Some(kind) = event_type(&m.subject) else {
        return Ok(false);
    };
    let mut tx = svc.db().begin(Scope::Tenant(m.tenant_id), true).await?;
    let hooks: Vec<_> = queries::active_webhooks(&mut tx, m.tenant_id)
        .await?
        .into_iter()
        .filter(|w| w.patterns().iter().any(|p| matches(p, kind)))
        .collect();
    if hooks.is_empty() {
        return Ok(false);
    }
    let Ok(event) = Event::decode(m.payload.as_ref()) else {
        tracing::warn!(subject = %m.subject, "webhooks consumer: an event that does not decode; dropped");
        return Ok(false);
    };
    let domain = kind.split('.').next().unwrap_or_default();
    let entity_key = format!("{domain}:{}", event.entity_id);
    let created_at = event
        .occurred_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_else(now);
    let data = data_json(&event);
    let t = now();
    let until = t + chrono::Duration::seconds(svc.settings().retry_window_seconds as i64);
    let mut made = false;
    for w in hooks {
        let id = Uuid::now_v7();
        let d = DeliveryRow {
            tenant_id: m.tenant_id,
            id,
            webhook_id: w.id,
            event_id: m.event_id,
            event_type: kind.to_owned(),
            entity_key: entity_key.clone(),
            payload: json!({
                "id": id.to_string(),
                "type": kind,
                "created_at": created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "tenant_id": m.tenant_id.to_string(),
                "data": data,
            }),
            status: "pending".into(),
            attempts: 0,
            next_attempt_at: t,
            retry_until: until,
            lease_until: None,
            lease_token: None,
            last_error: None,
            last_status_code: None,
            last_attempt_at: None,
            created_at: t,
            delivered_at: None,
        };
        made |= queries::insert_delivery(&mut tx, &d).await?;
    }
    tx.commit().await?;
    Ok(made)
}
