//! Cross-domain links, built once for every service (brief §9).
//!
//! A link goes from a source entity to a target entity, each named by an [`EntityRef`]
//! (`<domain>:<entity>:<id>`, the domain being the owning service's name). The **source's**
//! service owns it: it checks the target over gRPC when the link is made (the target service's
//! [`LinkTargets`] server, which kit serves for every service with link targets), stores it in
//! its `links` table and announces it in the same transaction
//! (`worktruck.<source domain>.link.{created,updated,removed}.v1`). The **target's** service
//! keeps `links_inbound`, a projection of those events, so `GET /api/v1/<entity>/{id}/links`
//! answers "everything linked to this" from its own database. When a target is deleted or
//! restored, its service announces `worktruck.<target domain>.link.{dangling,revived}.v1`,
//! and every service marks its links to it.
//!
//! Consumers are a durable JetStream consumer per service (shared by its replicas, named after
//! its database's identity, so it resumes after an outage where it stopped) or, embedded, the
//! in-process bus. Each event is handled once (its id is recorded in `consumed_events` in the
//! handling transaction), and a link's `seq` and a target's version keep a redelivered older
//! event from undoing a newer one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use prost::Message as _;
use sqlx::{AssertSqlSafe, FromRow};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_proto::common::v1 as pb;
use worktruck_proto::common::v1::link_targets_client::LinkTargetsClient;
use worktruck_proto::common::v1::link_targets_server::{LinkTargets, LinkTargetsServer};

use crate::bus::{Bus, Delivered, Message};
use crate::context::{METADATA_KEY, Verifier};
use crate::cursor::{self, Cursor};
use crate::db::{Db, Scope, Tx, now};
use crate::error::{Error, ErrorCode, Result};
use crate::outbox::{self, Relay};
use crate::pbjson::timestamp;
use crate::rpc::Caller;
use crate::service::Shutdown;
use crate::store::Store;
use crate::{exec, on_tx};

/// The gRPC service every service with link targets serves.
pub const GRPC_NAME: &str = "worktruck.common.v1.LinkTargets";
/// What every links consumer listens to.
pub const SUBJECTS: &str = "worktruck.*.link.>";
/// Largest context a link keeps, in characters.
pub const MAX_CONTEXT: usize = 2_000;
/// Most references one `ResolveTargets` call resolves.
pub const MAX_RESOLVE: usize = 100;
/// How long a handled event's id is kept: longer than the stream keeps events.
const DEDUPE_DAYS: i64 = 8;

/// The origin of links made through a `…/links` route (as opposed to those a service derives
/// from its entities, such as a note body's or a deal's contacts).
pub const API: &str = "api";

/// An entity kind of a service that others may link to.
#[derive(Debug, Clone, Copy)]
pub struct LinkTarget {
    /// The stored entity kind (kit store name): `contact`, `note`.
    pub entity: &'static str,
    /// The document fields that give its title, the first non-empty one wins.
    pub title: &'static [&'static str],
    /// A document field that names it as well as its id (a task's `identifier` such as
    /// `API-42`), matched exactly.
    pub key: Option<&'static str>,
}

/// Another service, as links reach it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// A channel to it.
    pub channel: Channel,
    /// Its link targets.
    pub targets: &'static [LinkTarget],
}

/// `<domain>:<entity>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityRef {
    /// The owning service.
    pub domain: String,
    /// Its entity kind.
    pub entity: String,
    /// The id (or a key the service knows, before resolution).
    pub id: String,
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.domain, self.entity, self.id)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl EntityRef {
    /// Parses the full form only.
    pub fn parse(s: &str) -> Result<EntityRef> {
        let bad = || Error::validation(format!("{:?} is not an entity reference `<domain>:<entity>:<id>`", crate::error::quote(s)));
        let mut parts = s.splitn(3, ':');
        let (Some(d), Some(e), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if !is_token(d) || !is_token(e) || !is_id(id) {
            return Err(bad());
        }
        Ok(EntityRef { domain: d.to_owned(), entity: e.to_owned(), id: id.to_owned() })
    }

    /// The id as a UUID, when it is one.
    pub fn uuid(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.id).ok()
    }
}

/// A link type: lower-case letters, digits and `_`, default `related`.
pub fn link_type(t: Option<&str>) -> Result<String> {
    match t.map(str::trim) {
        None | Some("") => Ok("related".into()),
        Some(t) if is_token(t) => Ok(t.to_owned()),
        Some(t) => Err(Error::validation(format!(
            "type {:?} must be lower-case letters, digits and _ (at most 40), such as mentions, about or related",
            crate::error::quote(t)
        ))),
    }
}

/// A link's context: at most [`MAX_CONTEXT`] characters.
pub fn context(c: Option<&str>) -> Result<String> {
    let c = c.unwrap_or_default().trim();
    if c.chars().count() > MAX_CONTEXT {
        return Err(Error::validation(format!("context must be at most {MAX_CONTEXT} characters")));
    }
    Ok(c.to_owned())
}

/// The entity a link starts from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Its entity kind in this service.
    pub entity: &'static str,
    /// Its id.
    pub id: Uuid,
    /// Its title now.
    pub title: &'a str,
}

/// A link about to be written: its target checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLink {
    /// The target, canonical.
    pub target: EntityRef,
    /// Its title.
    pub target_title: String,
    /// Link type.
    pub link_type: String,
    /// Context.
    pub context: String,
}

/// The links of one service. Cheap to clone.
#[derive(Clone)]
pub struct Links(Arc<Inner>);

struct Inner {
    domain: &'static str,
    targets: &'static [LinkTarget],
    db: Db,
    relay: Relay,
    verifier: Verifier,
    peers: BTreeMap<&'static str, Peer>,
    /// Entity kind → domain, for the short form `<entity>:<id>`.
    kinds: BTreeMap<&'static str, &'static str>,
}

#[derive(Debug, FromRow)]
struct OutRow {
    id: Uuid,
    source_entity: String,
    source_id: Uuid,
    source_title: String,
    target: String,
    target_title: String,
    link_type: String,
    context: String,
    origin: String,
    dangling: bool,
    seq: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, FromRow)]
struct InRow {
    id: Uuid,
    source: String,
    source_title: String,
    target_entity: String,
    target_id: Uuid,
    target_title: String,
    link_type: String,
    context: String,
    dangling: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const OUT_COLUMNS: &str = "id, source_entity, source_id, source_title, target, target_title, link_type, context, \
     origin, dangling, seq, created_at, updated_at";

impl Links {
    /// The links of service `domain`, whose own targets are `targets`, reaching `peers`.
    pub fn new(
        domain: &'static str,
        targets: &'static [LinkTarget],
        db: Db,
        relay: Relay,
        verifier: Verifier,
        peers: BTreeMap<&'static str, Peer>,
    ) -> Links {
        let mut kinds = BTreeMap::new();
        for t in targets {
            kinds.insert(t.entity, domain);
        }
        for (d, p) in &peers {
            for t in p.targets {
                kinds.insert(t.entity, *d);
            }
        }
        Links(Arc::new(Inner { domain, targets, db, relay, verifier, peers, kinds }))
    }

    /// This service's name.
    pub fn domain(&self) -> &'static str {
        self.0.domain
    }

    /// Parses `<domain>:<entity>:<id>` or the short form `<entity>:<id>` (the entity kind
    /// names its domain).
    pub fn parse_ref(&self, s: &str) -> Result<EntityRef> {
        let s = s.trim();
        if s.matches(':').count() >= 2 {
            return EntityRef::parse(s);
        }
        let Some((entity, id)) = s.split_once(':') else {
            return Err(Error::validation(format!(
                "{:?} is not an entity reference: use `<domain>:<entity>:<id>` or `<entity>:<id>` (such as contact:<id>)",
                crate::error::quote(s)
            )));
        };
        let Some(domain) = self.0.kinds.get(entity) else {
            let known = self.0.kinds.keys().copied().collect::<Vec<_>>().join(", ");
            return Err(Error::validation(format!(
                "{:?} is not an entity kind that can be linked here; the kinds are {known}",
                crate::error::quote(entity)
            )));
        };
        EntityRef::parse(&format!("{domain}:{entity}:{id}"))
    }

    /// The kit server of this service's link targets, for its gRPC routes.
    pub fn server(&self) -> LinkTargetsServer<Links> {
        LinkTargetsServer::new(self.clone())
    }

    /// Resolves references for the caller's tenant: this service's from its database, the
    /// others' by asking their services with the caller's own context (so the caller needs
    /// read access to what it links to).
    pub async fn resolve(&self, c: &Caller, refs: &[EntityRef]) -> Result<Vec<pb::ResolvedTarget>> {
        let mut by_domain: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in refs.iter().enumerate() {
            by_domain.entry(r.domain.as_str()).or_default().push(i);
        }
        let mut out: Vec<Option<pb::ResolvedTarget>> = vec![None; refs.len()];
        for (domain, idx) in by_domain {
            let asked: Vec<EntityRef> = idx.iter().map(|i| refs[*i].clone()).collect();
            let answers = if domain == self.0.domain {
                let mut tx = self.0.db.begin(Scope::Tenant(c.tenant), false).await?;
                resolve_local(&mut tx, c.tenant, self.0.domain, self.0.targets, &asked).await?
            } else {
                let Some(peer) = self.0.peers.get(domain) else {
                    return Err(Error::validation(format!("there is no {domain} service here to link to")));
                };
                let mut answers = Vec::new();
                for chunk in asked.chunks(MAX_RESOLVE) {
                    let mut req =
                        Request::new(pb::ResolveTargetsRequest { refs: chunk.iter().map(ToString::to_string).collect() });
                    attach(c, &mut req)?;
                    let resp = LinkTargetsClient::new(peer.channel.clone()).resolve_targets(req).await.map_err(|s| {
                        let e = Error::from_status(&s);
                        if e.code == ErrorCode::Unavailable || s.code() == tonic::Code::Unavailable {
                            Error::new(ErrorCode::Unavailable, format!("the {domain} service does not answer; try again"))
                        } else {
                            e
                        }
                    })?;
                    answers.extend(resp.into_inner().targets);
                }
                if answers.len() != asked.len() {
                    return Err(Error::internal(format!("the {domain} service answered {} of {} targets", answers.len(), asked.len())));
                }
                answers
            };
            for (i, a) in idx.into_iter().zip(answers) {
                out[i] = Some(a);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Checks targets for new links: each must exist for the caller's tenant and not be
    /// deleted, else a 400 naming it. Answers them canonical, with their titles.
    pub async fn prepare(&self, c: &Caller, wanted: Vec<(EntityRef, String, String)>) -> Result<Vec<NewLink>> {
        let refs: Vec<EntityRef> = wanted.iter().map(|w| w.0.clone()).collect();
        let resolved = self.resolve(c, &refs).await?;
        let mut out = Vec::with_capacity(wanted.len());
        for ((r, link_type, context), a) in wanted.into_iter().zip(resolved) {
            if !a.found || a.deleted {
                return Err(Error::validation(format!("link target {r} does not exist")));
            }
            out.push(NewLink { target: EntityRef::parse(&a.canonical)?, target_title: a.title, link_type, context });
        }
        Ok(out)
    }

    /// One explicit link from `source`, checked: the target (full or short reference), the
    /// type and context.
    pub async fn prepare_one(&self, c: &Caller, target: &str, link_type: Option<&str>, ctx: Option<&str>) -> Result<NewLink> {
        let r = self.parse_ref(target)?;
        let t = self::link_type(link_type)?;
        let ctx = context(ctx)?;
        Ok(self.prepare(c, vec![(r, t, ctx)]).await?.remove(0))
    }

    /// The title of this service's entity `entity` from its document: the first non-empty of
    /// its link target's title fields.
    pub fn title_of(&self, entity: &str, doc: &serde_json::Value) -> String {
        self.0
            .targets
            .iter()
            .find(|t| t.entity == entity)
            .and_then(|t| t.title.iter().find_map(|f| doc.get(*f).and_then(|v| v.as_str()).filter(|s| !s.is_empty())))
            .unwrap_or_default()
            .to_owned()
    }

    /// `POST /api/v1/<collection>/{id}/links`, for any entity of this service kept in `store`:
    /// checks the source (404 when missing or deleted) and the target (with its service, as
    /// the caller), writes the link (origin [`API`]) and its event in one transaction.
    pub async fn create_explicit(&self, c: &Caller, store: Store, r: &pb::CreateLinkRequest) -> Result<pb::Link> {
        let id = crate::pbjson::uuid(&r.id, "id")?;
        {
            let mut tx = self.0.db.begin(Scope::Tenant(c.tenant), false).await?;
            store.head(&mut tx, c.tenant, id).await?;
        }
        let new = self.prepare_one(c, &r.target, r.r#type.as_deref(), r.context.as_deref()).await?;
        let t = now();
        let mut tx = self.0.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = store.head_for_update(&mut tx, c.tenant, id, None).await?;
        let title = self.title_of(store.entity(), &head.doc);
        let source = Source { entity: store.entity(), id, title: &title };
        let link = self.insert(&mut tx, c, &source, API, &new, t).await?;
        tx.commit().await?;
        self.0.relay.notify();
        Ok(link)
    }

    /// `DELETE /api/v1/<collection>/{id}/links/{link_id}`: removes a link made by
    /// [`Links::create_explicit`]; one the service derives (a note body's) is a 409.
    pub async fn delete_explicit(&self, c: &Caller, store: Store, r: &pb::DeleteLinkRequest) -> Result<pb::DeleteLinkResponse> {
        let id = crate::pbjson::uuid(&r.id, "id")?;
        let link_id = crate::pbjson::uuid(&r.link_id, "link_id")?;
        let t = now();
        let mut tx = self.0.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = store.head_for_update(&mut tx, c.tenant, id, None).await?;
        let title = self.title_of(store.entity(), &head.doc);
        let source = Source { entity: store.entity(), id, title: &title };
        self.remove(&mut tx, c, &source, API, link_id, t).await?;
        tx.commit().await?;
        self.0.relay.notify();
        Ok(pb::DeleteLinkResponse { id: link_id.to_string() })
    }

    /// Writes a new explicit link (`origin`, e.g. `api`) inside the caller's transaction and
    /// announces it. The same target and type from the same source and origin is a 409.
    pub async fn insert(&self, tx: &mut Tx, c: &Caller, source: &Source<'_>, origin: &str, new: &NewLink, now: DateTime<Utc>) -> Result<pb::Link> {
        let target = new.target.to_string();
        let dup: Option<Uuid> = on_tx!(tx, x => sqlx::query_scalar(
            "SELECT id FROM links WHERE tenant_id = $1 AND source_entity = $2 AND source_id = $3 AND origin = $4 \
             AND target = $5 AND link_type = $6")
            .bind(c.tenant).bind(source.entity).bind(source.id).bind(origin).bind(&target).bind(&new.link_type)
            .fetch_optional(x).await)?;
        if let Some(id) = dup {
            return Err(Error::new(ErrorCode::AlreadyExists, format!("this {} already links to {target} as {} (link {id})", source.entity, new.link_type)));
        }
        let row = self.insert_row(tx, c, source, origin, new, now).await?;
        Ok(self.out_pb(&row))
    }

    async fn insert_row(&self, tx: &mut Tx, c: &Caller, source: &Source<'_>, origin: &str, new: &NewLink, now: DateTime<Utc>) -> Result<OutRow> {
        let row = OutRow {
            id: Uuid::now_v7(),
            source_entity: source.entity.to_owned(),
            source_id: source.id,
            source_title: source.title.to_owned(),
            target: new.target.to_string(),
            target_title: new.target_title.clone(),
            link_type: new.link_type.clone(),
            context: new.context.clone(),
            origin: origin.to_owned(),
            dangling: false,
            seq: 1,
            created_at: now,
            updated_at: now,
        };
        exec!(tx, sqlx::query(
            "INSERT INTO links (tenant_id, id, source_entity, source_id, source_title, target, target_title, link_type, \
             context, origin, dangling, target_version, suspended, seq, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $14, $14)")
            .bind(c.tenant).bind(row.id).bind(&row.source_entity).bind(row.source_id).bind(&row.source_title)
            .bind(&row.target).bind(&row.target_title).bind(&row.link_type).bind(&row.context).bind(&row.origin)
            .bind(false).bind(false).bind(row.seq).bind(now))?;
        self.announce(tx, c, &row, "created", false, now).await?;
        Ok(row)
    }

    /// Removes a link of `source` made with `origin`; `not_found` unless it has it, 409 when
    /// it has it from another origin (a note body's link goes when the body drops it).
    pub async fn remove(&self, tx: &mut Tx, c: &Caller, source: &Source<'_>, origin: &str, link_id: Uuid, now: DateTime<Utc>) -> Result<()> {
        let row: Option<OutRow> = on_tx!(tx, x => sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {OUT_COLUMNS} FROM links WHERE tenant_id = $1 AND id = $2 AND source_entity = $3 AND source_id = $4")))
            .bind(c.tenant).bind(link_id).bind(source.entity).bind(source.id).fetch_optional(x).await)?;
        let Some(mut row) = row else {
            return Err(Error::not_found("link"));
        };
        if row.origin != origin {
            return Err(Error::conflict(format!("this link comes from the {}'s {}; change that to remove it", source.entity, row.origin)));
        }
        exec!(tx, sqlx::query("DELETE FROM links WHERE tenant_id = $1 AND id = $2").bind(c.tenant).bind(link_id))?;
        row.seq += 1;
        self.announce(tx, c, &row, "removed", true, now).await
    }

    /// Makes `source`'s links of `origin` (those a service derives, such as a note body's
    /// `[[contact:…]]`) exactly `desired`, inside the caller's transaction: new ones created,
    /// missing ones removed, changed context or titles updated, each announced. The source's
    /// links of every origin take its current title.
    pub async fn replace(&self, tx: &mut Tx, c: &Caller, source: &Source<'_>, origin: &str, desired: &[NewLink], now: DateTime<Utc>) -> Result<()> {
        let existing = self.source_rows(tx, c.tenant, source.entity, source.id).await?;
        let mut wanted: Vec<&NewLink> = Vec::new();
        for d in desired {
            if !wanted.iter().any(|w| w.target == d.target && w.link_type == d.link_type) {
                wanted.push(d);
            }
        }
        let mut kept: Vec<Uuid> = Vec::new();
        for mut row in existing {
            let want = (row.origin == origin)
                .then(|| wanted.iter().find(|w| w.target.to_string() == row.target && w.link_type == row.link_type))
                .flatten();
            if row.origin == origin && want.is_none() {
                exec!(tx, sqlx::query("DELETE FROM links WHERE tenant_id = $1 AND id = $2").bind(c.tenant).bind(row.id))?;
                row.seq += 1;
                self.announce(tx, c, &row, "removed", true, now).await?;
                continue;
            }
            let (context, target_title) = match want {
                Some(w) => {
                    kept.push(row.id);
                    (w.context.clone(), w.target_title.clone())
                }
                None => (row.context.clone(), row.target_title.clone()),
            };
            if row.source_title != source.title || row.context != context || row.target_title != target_title {
                row.source_title = source.title.to_owned();
                row.context = context;
                row.target_title = target_title;
                row.seq += 1;
                row.updated_at = now;
                exec!(tx, sqlx::query(
                    "UPDATE links SET source_title = $3, context = $4, target_title = $5, seq = $6, updated_at = $7 \
                     WHERE tenant_id = $1 AND id = $2")
                    .bind(c.tenant).bind(row.id).bind(&row.source_title).bind(&row.context).bind(&row.target_title)
                    .bind(row.seq).bind(now))?;
                self.announce(tx, c, &row, "updated", false, now).await?;
            }
            if want.is_some() {
                wanted.retain(|w| !(w.target.to_string() == row.target && w.link_type == row.link_type));
            }
        }
        for w in wanted {
            self.insert_row(tx, c, source, origin, w, now).await?;
        }
        Ok(())
    }

    /// The source was renamed: its links carry the new title.
    pub async fn retitle(&self, tx: &mut Tx, c: &Caller, source: &Source<'_>, now: DateTime<Utc>) -> Result<()> {
        for mut row in self.source_rows(tx, c.tenant, source.entity, source.id).await? {
            if row.source_title != source.title {
                row.source_title = source.title.to_owned();
                row.seq += 1;
                row.updated_at = now;
                exec!(tx, sqlx::query("UPDATE links SET source_title = $3, seq = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2")
                    .bind(c.tenant).bind(row.id).bind(&row.source_title).bind(row.seq).bind(now))?;
                self.announce(tx, c, &row, "updated", false, now).await?;
            }
        }
        Ok(())
    }

    /// The source was deleted: its links are withdrawn (announced as removed) and kept, to
    /// come back with it ([`Links::source_restored`]).
    pub async fn source_deleted(&self, tx: &mut Tx, c: &Caller, entity: &'static str, id: Uuid, now: DateTime<Utc>) -> Result<()> {
        self.suspend(tx, c, entity, id, true, now).await
    }

    /// The source was restored: its withdrawn links are announced again.
    pub async fn source_restored(&self, tx: &mut Tx, c: &Caller, entity: &'static str, id: Uuid, now: DateTime<Utc>) -> Result<()> {
        self.suspend(tx, c, entity, id, false, now).await
    }

    async fn suspend(&self, tx: &mut Tx, c: &Caller, entity: &'static str, id: Uuid, suspend: bool, now: DateTime<Utc>) -> Result<()> {
        let rows: Vec<OutRow> = on_tx!(tx, x => sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {OUT_COLUMNS} FROM links WHERE tenant_id = $1 AND source_entity = $2 AND source_id = $3 AND suspended = $4")))
            .bind(c.tenant).bind(entity).bind(id).bind(!suspend).fetch_all(x).await)?;
        for mut row in rows {
            row.seq += 1;
            row.updated_at = now;
            exec!(tx, sqlx::query("UPDATE links SET suspended = $3, seq = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2")
                .bind(c.tenant).bind(row.id).bind(suspend).bind(row.seq).bind(now))?;
            self.announce(tx, c, &row, if suspend { "removed" } else { "created" }, suspend, now).await?;
        }
        Ok(())
    }

    /// A target of this service was deleted (`deleted`) or restored, its head now at
    /// `version`: its inbound links here turn dangling (or back), and every service is told,
    /// so the sources' copies follow. Call inside the deleting or restoring transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn target_changed(&self, tx: &mut Tx, c: &Caller, entity: &'static str, id: Uuid, deleted: bool, version: i64, now: DateTime<Utc>) -> Result<()> {
        exec!(tx, sqlx::query(
            "UPDATE links_inbound SET dangling = $4, updated_at = $5 WHERE tenant_id = $1 AND target_entity = $2 AND target_id = $3")
            .bind(c.tenant).bind(entity).bind(id).bind(deleted).bind(now))?;
        let target = EntityRef { domain: self.0.domain.into(), entity: entity.into(), id: id.to_string() };
        announce_target(tx, c.tenant, c.actor(), self.0.domain, &target, deleted, version, now).await?;
        self.0.relay.notify();
        Ok(())
    }

    async fn announce(&self, tx: &mut Tx, c: &Caller, row: &OutRow, action: &str, removed: bool, now: DateTime<Utc>) -> Result<()> {
        let msg = pb::LinkChanged { link: Some(self.out_pb(row)), seq: row.seq, removed };
        outbox::enqueue(
            tx,
            c.tenant,
            &format!("worktruck.{}.link.{action}.v1", self.0.domain),
            row.id,
            row.seq,
            c.actor(),
            outbox::any("worktruck.common.v1.LinkChanged", &msg),
            now,
        )
        .await?;
        Ok(())
    }

    /// The source's live (not suspended) links, oldest first.
    async fn source_rows(&self, tx: &mut Tx, tenant: Uuid, entity: &str, id: Uuid) -> Result<Vec<OutRow>> {
        let sql = format!(
            "SELECT {OUT_COLUMNS} FROM links WHERE tenant_id = $1 AND source_entity = $2 AND source_id = $3 \
             AND suspended = $4 ORDER BY created_at, id"
        );
        Ok(on_tx!(tx, x => sqlx::query_as(AssertSqlSafe(sql)).bind(tenant).bind(entity).bind(id).bind(false).fetch_all(x).await)?)
    }

    /// The links `source` makes, live ones, oldest first (for a service's own views).
    pub async fn outbound(&self, tx: &mut Tx, tenant: Uuid, entity: &'static str, id: Uuid) -> Result<Vec<pb::Link>> {
        Ok(self.source_rows(tx, tenant, entity, id).await?.iter().map(|r| self.out_pb(r)).collect())
    }

    fn out_pb(&self, r: &OutRow) -> pb::Link {
        pb::Link {
            id: r.id.to_string(),
            source: format!("{}:{}:{}", self.0.domain, r.source_entity, r.source_id),
            source_title: r.source_title.clone(),
            target: r.target.clone(),
            target_title: r.target_title.clone(),
            r#type: r.link_type.clone(),
            context: r.context.clone(),
            dangling: r.dangling,
            direction: "outbound".into(),
            created_at: Some(timestamp(r.created_at)),
            updated_at: Some(timestamp(r.updated_at)),
        }
    }

    fn in_pb(&self, r: &InRow) -> pb::Link {
        pb::Link {
            id: r.id.to_string(),
            source: r.source.clone(),
            source_title: r.source_title.clone(),
            target: format!("{}:{}:{}", self.0.domain, r.target_entity, r.target_id),
            target_title: r.target_title.clone(),
            r#type: r.link_type.clone(),
            context: r.context.clone(),
            dangling: r.dangling,
            direction: "inbound".into(),
            created_at: Some(timestamp(r.created_at)),
            updated_at: Some(timestamp(r.updated_at)),
        }
    }

    /// `GET /api/v1/<entity>/{id}/links`: everything `entity` `id` links to and everything
    /// linked to it, newest first, cursor-paginated. The caller checks that the entity exists.
    pub async fn list(&self, c: &Caller, entity: &'static str, id: Uuid, r: &pb::ListLinksRequest) -> Result<pb::ListLinksResponse> {
        let direction = match r.direction.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d @ ("inbound" | "outbound")) => Some(d.to_owned()),
            Some(d) => return Err(Error::invalid(format!("direction must be inbound or outbound, not {:?}", crate::error::quote(d)))),
        };
        let ty = match r.r#type.as_deref() {
            None | Some("") => None,
            Some(t) => Some(link_type(Some(t))?),
        };
        let limit = cursor::limit(r.limit)?;
        let scope = format!("links:{}:{entity}:{id}:{direction:?}:{ty:?}", self.0.domain);
        let after = match cursor::decode_opt(r.cursor.as_deref(), &scope)? {
            None => None,
            Some(Cursor::TimeId(t, i)) => Some((t, i)),
            Some(_) => return Err(Error::invalid("invalid cursor")),
        };
        let (t0, i0) = after.unwrap_or((end_of_time(), Uuid::max()));
        let mut tx = self.0.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut all: Vec<(DateTime<Utc>, Uuid, pb::Link)> = Vec::new();
        if direction.as_deref() != Some("inbound") {
            let rows: Vec<OutRow> = on_tx!(&mut tx, x => sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {OUT_COLUMNS} FROM links WHERE tenant_id = $1 AND source_entity = $2 AND source_id = $3 \
                 AND suspended = $4 AND ($5 IS NULL OR link_type = $5) \
                 AND (created_at < $6 OR (created_at = $6 AND id < $7)) ORDER BY created_at DESC, id DESC LIMIT $8")))
                .bind(c.tenant).bind(entity).bind(id).bind(false).bind(&ty).bind(t0).bind(i0).bind(limit + 1)
                .fetch_all(x).await)?;
            all.extend(rows.iter().map(|r| (r.created_at, r.id, self.out_pb(r))));
        }
        if direction.as_deref() != Some("outbound") {
            let rows: Vec<InRow> = on_tx!(&mut tx, x => sqlx::query_as(
                "SELECT id, source, source_title, target_entity, target_id, target_title, link_type, context, dangling, \
                 created_at, updated_at FROM links_inbound WHERE tenant_id = $1 AND target_entity = $2 AND target_id = $3 \
                 AND removed = $4 AND ($5 IS NULL OR link_type = $5) \
                 AND (created_at < $6 OR (created_at = $6 AND id < $7)) ORDER BY created_at DESC, id DESC LIMIT $8")
                .bind(c.tenant).bind(entity).bind(id).bind(false).bind(&ty).bind(t0).bind(i0).bind(limit + 1)
                .fetch_all(x).await)?;
            all.extend(rows.iter().map(|r| (r.created_at, r.id, self.in_pb(r))));
        }
        all.sort_by_key(|x| std::cmp::Reverse((x.0, x.1)));
        let has_more = all.len() as i64 > limit;
        all.truncate(limit as usize);
        let next_cursor = has_more.then(|| {
            let (t, i, _) = all.last().expect("a full page");
            Cursor::TimeId(*t, *i).encode(&scope)
        });
        Ok(pb::ListLinksResponse { data: all.into_iter().map(|x| x.2).collect(), has_more, next_cursor })
    }

    /// `links_list`: the links of any entity, by reference; another service's are asked of it.
    pub async fn list_any(&self, c: &Caller, r: pb::ListEntityLinksRequest) -> Result<pb::ListLinksResponse> {
        let target = self.parse_ref(&r.entity)?;
        if target.domain == self.0.domain {
            return self.list_own(c, &target, r).await;
        }
        let Some(peer) = self.0.peers.get(target.domain.as_str()) else {
            return Err(Error::validation(format!("there is no {} service here", target.domain)));
        };
        let mut req = Request::new(pb::ListEntityLinksRequest { entity: target.to_string(), ..r });
        attach(c, &mut req)?;
        let resp = LinkTargetsClient::new(peer.channel.clone()).list_links(req).await.map_err(|s| Error::from_status(&s))?;
        Ok(resp.into_inner())
    }

    async fn list_own(&self, c: &Caller, target: &EntityRef, r: pb::ListEntityLinksRequest) -> Result<pb::ListLinksResponse> {
        let Some(t) = self.0.targets.iter().find(|t| t.entity == target.entity) else {
            return Err(Error::not_found(target.entity.clone()));
        };
        let resolved = {
            let mut tx = self.0.db.begin(Scope::Tenant(c.tenant), false).await?;
            resolve_local(&mut tx, c.tenant, self.0.domain, self.0.targets, std::slice::from_ref(target)).await?.remove(0)
        };
        if !resolved.found || resolved.deleted {
            return Err(Error::not_found(t.entity));
        }
        let id = EntityRef::parse(&resolved.canonical)?.uuid().ok_or_else(|| Error::not_found(t.entity))?;
        let req = pb::ListLinksRequest { id: id.to_string(), direction: r.direction, r#type: r.r#type, limit: r.limit, cursor: r.cursor };
        self.list(c, t.entity, id, &req).await
    }

    /// Runs this service's links consumer until shutdown.
    pub async fn consume(self, bus: Bus, shutdown: Shutdown) {
        let (instance, since) = match instance(&self.0.db).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, service = self.0.domain, "links consumer cannot start: no instance identity");
                return;
            }
        };
        let name = format!("links-{}-{}", self.0.domain, instance.simple());
        let mut events = bus.consume(&name, SUBJECTS, since - chrono::Duration::minutes(1));
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = prune.tick() => {
                    if let Err(e) = self.prune().await {
                        tracing::debug!(error = %e, "cannot prune handled events");
                    }
                }
                d = events.next() => match d {
                    None => return,
                    Some(Delivered::Gap) => tracing::warn!(service = self.0.domain, "links consumer missed events in process"),
                    Some(Delivered::Event(d)) => {
                        let mut tries = 0;
                        loop {
                            let m = &d.message;
                            let applied = self.apply(&name, m);
                            let applied = match crate::telemetry::message_span("process", &m.subject, &m.event_id.to_string(), &m.trace, Some(&name)) {
                                Some(span) => tracing::Instrument::instrument(applied, span).await,
                                None => applied.await,
                            };
                            match applied {
                                Ok(()) => { d.ack().await; break; }
                                Err(e) if e.code == ErrorCode::Unavailable && tries < 20 && !shutdown.is_signalled() => {
                                    tries += 1;
                                    tracing::warn!(error = %e, "links consumer cannot handle an event yet; retrying");
                                    tokio::time::sleep(Duration::from_millis(250 * tries)).await;
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, subject = %d.message.subject, "links consumer cannot handle an event");
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

    async fn prune(&self) -> Result<()> {
        let mut tx = self.0.db.begin(Scope::System, true).await?;
        let cutoff = now() - chrono::Duration::days(DEDUPE_DAYS);
        exec!(&mut tx, sqlx::query("DELETE FROM consumed_events WHERE consumed_at < $1").bind(cutoff))?;
        tx.commit().await
    }

    /// Handles one link event, once.
    async fn apply(&self, consumer: &str, m: &Message) -> Result<()> {
        let parts: Vec<&str> = m.subject.split('.').collect();
        let [_, _, "link", action, _] = parts.as_slice() else { return Ok(()) };
        let Ok(event) = pb::Event::decode(m.payload.as_ref()) else {
            tracing::warn!(subject = %m.subject, "links consumer: an event that does not decode; dropped");
            return Ok(());
        };
        let data = event.data.map(|d| d.value).unwrap_or_default();
        let t = now();
        let mut tx = self.0.db.begin(Scope::Tenant(m.tenant_id), true).await?;
        let fresh = exec!(&mut tx, sqlx::query(
            "INSERT INTO consumed_events (tenant_id, event_id, consumer, consumed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consumer, event_id) DO NOTHING")
            .bind(m.tenant_id).bind(m.event_id).bind(consumer).bind(t))?;
        if fresh == 0 {
            return Ok(());
        }
        match *action {
            "created" | "updated" | "removed" => {
                let Ok(changed) = pb::LinkChanged::decode(data.as_slice()) else { return tx.commit().await };
                let Some(link) = changed.link else { return tx.commit().await };
                self.project(&mut tx, m.tenant_id, &link, changed.seq, changed.removed, t).await?;
            }
            "dangling" | "revived" => {
                let Ok(state) = pb::LinkTargetState::decode(data.as_slice()) else { return tx.commit().await };
                exec!(&mut tx, sqlx::query(
                    "UPDATE links SET dangling = $3, target_version = $4, updated_at = $5 \
                     WHERE tenant_id = $1 AND target = $2 AND target_version < $4")
                    .bind(m.tenant_id).bind(&state.target).bind(state.dangling).bind(state.version).bind(t))?;
            }
            _ => {}
        }
        tx.commit().await?;
        self.0.relay.notify();
        Ok(())
    }

    /// The inbound projection of one link event, when its target is one of ours.
    async fn project(&self, tx: &mut Tx, tenant: Uuid, link: &pb::Link, seq: i64, removed: bool, t: DateTime<Utc>) -> Result<()> {
        let Ok(target) = EntityRef::parse(&link.target) else { return Ok(()) };
        if target.domain != self.0.domain {
            return Ok(());
        }
        let (Some(spec), Some(target_id), Ok(id)) =
            (self.0.targets.iter().find(|x| x.entity == target.entity), target.uuid(), Uuid::parse_str(&link.id))
        else {
            return Ok(());
        };
        let seen: Option<i64> = on_tx!(tx, x => sqlx::query_scalar("SELECT seq FROM links_inbound WHERE tenant_id = $1 AND id = $2")
            .bind(tenant).bind(id).fetch_optional(x).await)?;
        if seen.is_some_and(|s| s >= seq) {
            return Ok(());
        }
        let head: Option<(Option<DateTime<Utc>>, i64)> = on_tx!(tx, x => sqlx::query_as(
            "SELECT deleted_at, version FROM entity_heads WHERE tenant_id = $1 AND entity = $2 AND id = $3")
            .bind(tenant).bind(spec.entity).bind(target_id).fetch_optional(x).await)?;
        // A target this service does not have is none of its business: a link of another
        // deployment sharing the NATS server, or a forged event. Nothing is projected or told.
        let Some(head) = head else { return Ok(()) };
        let dangling = head.0.is_some();
        let created_at = link.created_at.as_ref().and_then(|c| DateTime::from_timestamp(c.seconds, c.nanos.max(0) as u32)).unwrap_or(t);
        exec!(tx, sqlx::query(
            "INSERT INTO links_inbound (tenant_id, id, source, source_title, target_entity, target_id, target_title, link_type, \
             context, dangling, removed, seq, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET source = excluded.source, source_title = excluded.source_title, \
             target_title = excluded.target_title, link_type = excluded.link_type, context = excluded.context, \
             dangling = excluded.dangling, removed = excluded.removed, seq = excluded.seq, updated_at = excluded.updated_at")
            .bind(tenant).bind(id).bind(&link.source).bind(&link.source_title).bind(spec.entity).bind(target_id)
            .bind(&link.target_title).bind(&link.r#type).bind(&link.context).bind(dangling).bind(removed).bind(seq)
            .bind(created_at).bind(t))?;
        // The target went while the link was on its way: its source must learn it too.
        if dangling && !removed {
            announce_target(tx, tenant, "system:links", self.0.domain, &target, true, head.1, t).await?;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn announce_target(tx: &mut Tx, tenant: Uuid, actor: &str, domain: &str, target: &EntityRef, dangling: bool, version: i64, now: DateTime<Utc>) -> Result<()> {
    let msg = pb::LinkTargetState { target: target.to_string(), dangling, version };
    let id = target.uuid().unwrap_or_else(Uuid::nil);
    outbox::enqueue(
        tx,
        tenant,
        &format!("worktruck.{domain}.link.{}.v1", if dangling { "dangling" } else { "revived" }),
        id,
        version,
        actor,
        outbox::any("worktruck.common.v1.LinkTargetState", &msg),
        now,
    )
    .await?;
    Ok(())
}

/// Later than any row: the seek position of a first page.
fn end_of_time() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).expect("valid")
}

/// Puts the caller's own signed context on a request to another service.
fn attach<T>(c: &Caller, req: &mut Request<T>) -> Result<()> {
    let token = c.token().ok_or_else(|| Error::unauthenticated("no context to pass on"))?;
    let v = token.parse().map_err(|_| Error::unauthenticated("the context cannot be passed on"))?;
    req.metadata_mut().insert(METADATA_KEY, v);
    Ok(())
}

/// This database's identity and when it was first asked for, made on first use: what names a
/// service's durable consumers (shared by its replicas) and where they start.
pub async fn instance(db: &Db) -> Result<(Uuid, DateTime<Utc>)> {
    let mut tx = db.begin(Scope::System, true).await?;
    exec!(&mut tx, sqlx::query("INSERT INTO kit_instance (id, instance, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(Uuid::now_v7()).bind(now()))?;
    let row: (Uuid, DateTime<Utc>) =
        on_tx!(&mut tx, c => sqlx::query_as("SELECT instance, created_at FROM kit_instance WHERE id = 1").fetch_one(c).await)?;
    tx.commit().await?;
    Ok(row)
}

/// Resolves references to `domain`'s entities in `tx`.
async fn resolve_local(tx: &mut Tx, tenant: Uuid, domain: &str, targets: &[LinkTarget], refs: &[EntityRef]) -> Result<Vec<pb::ResolvedTarget>> {
    let mut out = Vec::with_capacity(refs.len());
    let mut cache: HashMap<String, pb::ResolvedTarget> = HashMap::new();
    for r in refs {
        let key = r.to_string();
        if let Some(hit) = cache.get(&key) {
            out.push(hit.clone());
            continue;
        }
        let mut answer = pb::ResolvedTarget { r#ref: key.clone(), ..Default::default() };
        if let Some(spec) = targets.iter().find(|t| t.entity == r.entity).filter(|_| r.domain == domain) {
            let row: Option<(Uuid, Option<DateTime<Utc>>, serde_json::Value)> = match (r.uuid(), spec.key) {
                (Some(id), _) => on_tx!(tx, x => sqlx::query_as(
                    "SELECT id, deleted_at, doc FROM entity_heads WHERE tenant_id = $1 AND entity = $2 AND id = $3")
                    .bind(tenant).bind(spec.entity).bind(id).fetch_optional(x).await)?,
                (None, Some(field)) => on_tx!(tx, x => sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT id, deleted_at, doc FROM entity_heads WHERE tenant_id = $1 AND entity = $2 AND doc->>'{field}' = $3 \
                     ORDER BY deleted_at IS NOT NULL, created_at LIMIT 1")))
                    .bind(tenant).bind(spec.entity).bind(&r.id).fetch_optional(x).await)?,
                (None, None) => None,
            };
            if let Some((id, deleted_at, doc)) = row {
                answer.found = true;
                answer.deleted = deleted_at.is_some();
                answer.canonical = format!("{domain}:{}:{id}", spec.entity);
                answer.title = spec
                    .title
                    .iter()
                    .find_map(|f| doc.get(*f).and_then(|v| v.as_str()).filter(|s| !s.is_empty()))
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        cache.insert(key, answer.clone());
        out.push(answer);
    }
    Ok(out)
}

#[tonic::async_trait]
impl LinkTargets for Links {
    async fn resolve_targets(&self, req: Request<pb::ResolveTargetsRequest>) -> std::result::Result<Response<pb::ResolveTargetsResponse>, Status> {
        let c = Caller::verify(&self.0.verifier, &req)?;
        crate::scopes::check(&c.ctx, &format!("{}:read", self.0.domain))?;
        let r = req.into_inner();
        if r.refs.len() > MAX_RESOLVE {
            return Err(Error::invalid(format!("at most {MAX_RESOLVE} references per call")).into());
        }
        let mut refs = Vec::with_capacity(r.refs.len());
        for s in &r.refs {
            refs.push(EntityRef::parse(s).unwrap_or_else(|_| EntityRef { domain: String::new(), entity: String::new(), id: s.clone() }));
        }
        let mut tx = self.0.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut targets = resolve_local(&mut tx, c.tenant, self.0.domain, self.0.targets, &refs).await?;
        for (t, asked) in targets.iter_mut().zip(&r.refs) {
            t.r#ref = asked.clone();
        }
        Ok(Response::new(pb::ResolveTargetsResponse { targets }))
    }

    async fn list_links(&self, req: Request<pb::ListEntityLinksRequest>) -> std::result::Result<Response<pb::ListLinksResponse>, Status> {
        let c = Caller::verify(&self.0.verifier, &req)?;
        crate::scopes::check(&c.ctx, &format!("{}:read", self.0.domain))?;
        let r = req.into_inner();
        let target = EntityRef::parse(&r.entity)?;
        if target.domain != self.0.domain {
            return Err(Error::invalid(format!("{target} is not an entity of the {} service", self.0.domain)).into());
        }
        Ok(Response::new(self.list_own(&c, &target, r).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_in_full_and_refuse_what_is_not_one() {
        let r = EntityRef::parse("contacts:contact:0190a6f2-7c2b-7000-8000-000000000001").unwrap();
        assert_eq!(r.domain, "contacts");
        assert_eq!(r.entity, "contact");
        assert!(r.uuid().is_some());
        assert_eq!(EntityRef::parse("tasks:task:API-42").unwrap().id, "API-42");
        for bad in ["", "contact", "contacts:contact:", "Contacts:contact:x", "a:b:c d", "a:b:c\u{0}", "a::x"] {
            assert!(EntityRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn types_and_contexts_are_checked() {
        assert_eq!(link_type(None).unwrap(), "related");
        assert_eq!(link_type(Some("attendee_of")).unwrap(), "attendee_of");
        assert!(link_type(Some("Not A Type")).is_err());
        assert!(context(Some(&"x".repeat(MAX_CONTEXT + 1))).is_err());
        assert_eq!(context(Some("  said so  ")).unwrap(), "said so");
    }
}
