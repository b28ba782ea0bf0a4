//! What every service's RPC handlers share, so no service copies it from another: the verified
//! caller (context and tenant), the `(as_of, valid_at)` pair of a temporal read, the JSON of a
//! history entry, and the `/history`, `/diff` and `/timeline` RPCs of any entity on kit's store.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use worktruck_proto::common::v1 as pb;

use crate::context::{Ctx, Verifier};
use crate::cursor;
use crate::db::{Db, Scope, now};
use crate::error::{Error, Result};
use crate::pbjson::{self, opt_datetime, uuid};
use crate::store::Store;

/// A caller whose signed context verified and names a tenant.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified context.
    pub ctx: Ctx,
    /// The tenant the call acts on.
    pub tenant: Uuid,
    /// The signed context as it came, to pass on to another service on the caller's behalf.
    token: Option<Token>,
}

/// A signed context token, kept out of logs.
#[derive(Clone)]
struct Token(std::sync::Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Caller {
    /// Verifies `req`'s context; `unauthenticated` without one or without a tenant.
    pub fn verify<T>(verifier: &Verifier, req: &tonic::Request<T>) -> Result<Caller> {
        let ctx = verifier.verify(req.metadata())?;
        let tenant = ctx.require_tenant()?;
        let token = req
            .metadata()
            .get(crate::context::METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(|t| Token(std::sync::Arc::from(t)));
        Ok(Caller { ctx, tenant, token })
    }

    /// The caller's signed context, to call another service on its behalf.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.0.as_ref())
    }

    /// The principal, for `captured_by` and events.
    pub fn actor(&self) -> &str {
        &self.ctx.actor
    }

    /// The moment a read of the past asks for: `None` for a current read, else `(as_of,
    /// valid_at)` with `as_of` defaulting to now and `valid_at` to `as_of`. (The store checks
    /// it against the retention window.)
    pub fn moment(
        &self,
        as_of: Option<DateTime<Utc>>,
        valid_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match (as_of, valid_at) {
            (None, None) => None,
            (a, v) => {
                let a = a.unwrap_or(now);
                Some((a, v.unwrap_or(a)))
            }
        }
    }

    /// The tenant's retention window at `now`, for the store's reads of the past.
    pub fn retention(&self, now: DateTime<Utc>) -> crate::store::Retention {
        self.ctx.retention(now)
    }
}

/// Enqueues the event `subject` about entity `id` at `version` for the caller's tenant, inside
/// `tx`, with `msg` packed under its own proto name: what every service's writes announce.
pub async fn emit<M: prost::Message + prost::Name>(
    tx: &mut crate::db::Tx,
    c: &Caller,
    subject: &str,
    id: Uuid,
    version: i64,
    msg: &M,
    now: DateTime<Utc>,
) -> Result<()> {
    crate::outbox::enqueue(tx, c.tenant, subject, id, version, c.actor(), crate::outbox::any(&M::full_name(), msg), now).await?;
    Ok(())
}

/// The JSON of a history entry: `id` first, then the stored document's fields except
/// `hidden` (fields kept for the service's own queries, not part of the wire type).
pub fn history_doc(id: Uuid, hidden: &'static [&'static str]) -> impl Fn(&Value) -> Value {
    move |doc| {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), Value::String(id.to_string()));
        if let Some(o) = doc.as_object() {
            m.extend(o.iter().filter(|(k, _)| !hidden.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())));
        }
        Value::Object(m)
    }
}

/// `Get…History` for an entity of `store`: arguments parsed, the cursor bound to the entity and
/// window, the retention rule applied; `hidden` fields are left out of each entry.
pub async fn history(
    store: &Store,
    db: &Db,
    c: &Caller,
    r: pb::HistoryRequest,
    hidden: &'static [&'static str],
) -> Result<pb::HistoryResponse> {
    let id = uuid(&r.id, "id")?;
    let from = opt_datetime(r.from.as_ref(), "from")?;
    let to = opt_datetime(r.to.as_ref(), "to")?;
    let scope = format!("{}:history:{id}:{from:?}:{to:?}", store.entity());
    let limit = cursor::limit(r.limit)?;
    let cur = cursor::decode_opt(r.cursor.as_deref(), &scope)?;
    let mut tx = db.begin(Scope::Tenant(c.tenant), false).await?;
    let page = store.history(&mut tx, c.tenant, c.retention(now()), id, from, to, limit, cur).await?;
    Ok(pbjson::history_response(page, &scope, history_doc(id, hidden)))
}

/// `Diff…` for an entity of `store` (`from` required, `to` defaulting to now); changes to
/// `hidden` fields are left out.
pub async fn diff(
    store: &Store,
    db: &Db,
    c: &Caller,
    r: pb::DiffRequest,
    hidden: &'static [&'static str],
) -> Result<pb::DiffResponse> {
    let id = uuid(&r.id, "id")?;
    let t = now();
    let from = opt_datetime(r.from.as_ref(), "from")?.ok_or_else(|| Error::invalid("from is required"))?;
    let to = opt_datetime(r.to.as_ref(), "to")?.unwrap_or(t);
    let mut tx = db.begin(Scope::Tenant(c.tenant), false).await?;
    let mut d = store.diff(&mut tx, c.tenant, c.retention(t), id, from, to).await?;
    d.changes.retain(|ch| !hidden.contains(&ch.field.as_str()));
    Ok(pbjson::diff_response(id, from, to, d))
}

/// `Get…Timeline` for an entity of `store` (at most 50 `fields`); events of `hidden` fields
/// are left out.
pub async fn timeline(
    store: &Store,
    db: &Db,
    c: &Caller,
    r: pb::TimelineRequest,
    hidden: &'static [&'static str],
) -> Result<pb::TimelineResponse> {
    let id = uuid(&r.id, "id")?;
    let from = opt_datetime(r.from.as_ref(), "from")?;
    let to = opt_datetime(r.to.as_ref(), "to")?;
    if r.fields.len() > 50 {
        return Err(Error::invalid("at most 50 fields"));
    }
    let limit = cursor::limit(r.limit)?;
    // The cursor is good for this entity and window only.
    let scope = format!("timeline:{}:{id}:{from:?}:{to:?}:{}", store.entity(), r.fields.join(","));
    let after = cursor::decode_opt(r.cursor.as_deref(), &scope)?;
    let mut tx = db.begin(Scope::Tenant(c.tenant), false).await?;
    let mut page = store.timeline(&mut tx, c.tenant, c.retention(now()), id, from, to, &r.fields, limit, after).await?;
    page.rows.retain(|e| !hidden.contains(&e.field.as_str()));
    let mut out = pbjson::timeline_response(page.rows);
    out.has_more = page.next.is_some();
    out.next_cursor = page.next.map(|n| n.encode(&scope));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_docs_lead_with_the_id_and_hide_internal_fields() {
        let id = Uuid::now_v7();
        let v = history_doc(id, &["key"])(&serde_json::json!({"name": "a", "key": "a"}));
        assert_eq!(v, serde_json::json!({"id": id.to_string(), "name": "a"}));
        assert_eq!(v.as_object().unwrap().keys().next().unwrap(), "id");
    }
}
