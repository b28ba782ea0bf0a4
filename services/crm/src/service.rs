//! The `worktruck.crm.v1.CrmService` gRPC implementation over kit's bitemporal store (entities
//! `pipeline`, `stage`, `deal`), the stage-change log and the deal contacts.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::{METADATA_KEY, Verifier};
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::links::{EntityRef, NewLink, Source};
use worktruck_kit::outbox::Relay;
use worktruck_kit::pbjson::{from_struct, opt_datetime, timestamp, to_struct, uuid};
use worktruck_kit::rpc::{self, Caller};
use worktruck_kit::store::{ListQuery, Record, Store, Write, search_query};
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::common::v1 as common;
use worktruck_proto::contacts::v1 as contacts_pb;
use worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient;
use worktruck_proto::crm::v1 as pb;
use worktruck_proto::crm::v1::crm_service_server::CrmService;

use crate::analytics::{self, DealInfo, StageInfo};
use crate::domain::{
    DealDoc, Kind, PipelineDoc, StageDoc, check_amount, check_currency, check_date, check_id, check_line, check_metadata, check_name,
    check_percent, check_rotting, check_text, deal_pb, merge, pipeline_pb, stage_pb, value_period,
};
use crate::queries::{self, Change, DealContactRow, DealFilter};

/// Pipelines in kit's store.
pub const PIPELINES: Store = Store::new("pipeline");
/// Stages in kit's store.
pub const STAGES: Store = Store::new("stage");
/// Deals in kit's store.
pub const DEALS: Store = Store::new("deal");
/// The origin of the links a deal makes to the contacts it names.
const CONTACT_LINKS: &str = "deal_contacts";

/// The stages a tenant's default pipeline starts with: (name, probability, kind).
const DEFAULT_STAGES: &[(&str, i32, Kind)] = &[
    ("Lead", 10, Kind::Open),
    ("Qualified", 25, Kind::Open),
    ("Proposal", 50, Kind::Open),
    ("Negotiation", 75, Kind::Open),
    ("Won", 100, Kind::Won),
    ("Lost", 0, Kind::Lost),
];
/// Most stages in one pipeline.
const MAX_STAGES: usize = 50;
/// The analytics window when `from` is not given.
const DEFAULT_WINDOW_DAYS: i64 = 90;
/// Deals read per query when analytics read the past.
const ANALYTICS_PAGE: i64 = 5000;

/// `[settings.crm]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A move into a won stage needs a `won_reason` (or `reason`).
    #[serde(default)]
    pub require_won_reason: bool,
    /// A move into a lost stage needs a `lost_reason` (or `reason`).
    #[serde(default)]
    pub require_lost_reason: bool,
}

/// The CRM service.
#[derive(Clone)]
pub struct Crm {
    db: Db,
    verifier: Verifier,
    relay: Relay,
    contacts: ContactsServiceClient<Channel>,
    settings: Arc<Settings>,
    links: worktruck_kit::links::Links,
}

/// A stage read with its document.
type StageRec = (Record, StageDoc);

impl Crm {
    /// A service over a migrated database, checking contacts with `contacts`.
    pub fn new(
        db: Db,
        verifier: Verifier,
        relay: Relay,
        contacts: ContactsServiceClient<Channel>,
        settings: Settings,
        links: worktruck_kit::links::Links,
    ) -> Self {
        Self { db, verifier, relay, contacts, settings: Arc::new(settings), links }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }


    async fn emit_deal(&self, tx: &mut Tx, c: &Caller, action: &str, deal: &pb::Deal, t: DateTime<Utc>) -> Result<()> {
        let id = uuid(&deal.id, "id")?;
        let subject = format!("worktruck.crm.deal.{action}.v1");
        rpc::emit(tx, c, &subject, id, deal.version, deal, t).await
    }

    async fn emit_stage(&self, tx: &mut Tx, c: &Caller, action: &str, stage: &pb::Stage, t: DateTime<Utc>) -> Result<()> {
        let id = uuid(&stage.id, "id")?;
        let subject = format!("worktruck.crm.stage.{action}.v1");
        rpc::emit(tx, c, &subject, id, stage.version, stage, t).await
    }

    async fn emit_pipeline(&self, tx: &mut Tx, c: &Caller, action: &str, p: &pb::Pipeline, t: DateTime<Utc>) -> Result<()> {
        let id = uuid(&p.id, "id")?;
        let subject = format!("worktruck.crm.pipeline.{action}.v1");
        rpc::emit(tx, c, &subject, id, p.version, p, t).await
    }

    /// Commits and wakes the relay.
    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify();
        Ok(())
    }

    /// Announces the contacts a deal names as its links (origin [`CONTACT_LINKS`]), so that a
    /// contact's `/links` lists its deals: the deal's contact (type `contact`), its organization
    /// (`organization`) and each deal contact (`participant`, its role as the context). Called
    /// in every transaction that changes them or the deal's name; `fresh` has the names of the
    /// contacts just checked, the others keep the names their links have.
    async fn sync_contact_links(&self, tx: &mut Tx, c: &Caller, id: Uuid, doc: &DealDoc, fresh: &[(Uuid, String)], t: DateTime<Utc>) -> Result<()> {
        let known = self.links.outbound(tx, c.tenant, DEALS.entity(), id).await?;
        let mut desired = Vec::new();
        let mut want = |contact: Uuid, link_type: &str, context: String| {
            let target = EntityRef { domain: "contacts".into(), entity: "contact".into(), id: contact.to_string() };
            let canonical = target.to_string();
            let target_title = fresh
                .iter()
                .find(|(c, _)| *c == contact)
                .map(|(_, n)| n.clone())
                .or_else(|| known.iter().find(|l| l.target == canonical).map(|l| l.target_title.clone()))
                .unwrap_or_default();
            desired.push(NewLink { target, target_title, link_type: link_type.into(), context });
        };
        for (field, link_type) in [(&doc.contact_id, "contact"), (&doc.organization_id, "organization")] {
            if let Some(contact) = field.as_deref().and_then(|v| Uuid::parse_str(v).ok()) {
                want(contact, link_type, String::new());
            }
        }
        for row in queries::deal_contacts(tx, c.tenant, id).await? {
            want(row.contact_id, "participant", row.role.unwrap_or_default());
        }
        let source = Source { entity: DEALS.entity(), id, title: &doc.name };
        self.links.replace(tx, c, &source, CONTACT_LINKS, &desired, t).await
    }

    /// Checks with the contacts service, as the caller (its own signed context), that `id` is
    /// a live contact of the caller's tenant (an organization when `organization`); a missing
    /// one, or one of another tenant, is a 400 naming `field` and the id. Answers its id and
    /// name (the title of the deal's link to it). Called before any transaction begins.
    async fn check_contact(&self, md: &MetadataMap, field: &str, id: Uuid, organization: bool) -> Result<(Uuid, String)> {
        let mut req = Request::new(contacts_pb::GetContactRequest { id: id.to_string(), ..Default::default() });
        for key in [METADATA_KEY, "x-request-id", "traceparent", "tracestate"] {
            if let Some(v) = md.get(key) {
                req.metadata_mut().insert(key, v.clone());
            }
        }
        match self.contacts.clone().get_contact(req).await {
            Ok(r) => {
                let contact = r.into_inner();
                if organization && contact.kind != contacts_pb::ContactKind::Organization as i32 {
                    return Err(Error::validation(format!("{field}: contact {id} is not an organization")));
                }
                Ok((id, contact.display_name))
            }
            Err(s) if s.code() == Code::NotFound => Err(Error::validation(format!("{field}: no contact {id}"))),
            Err(s) => {
                let e = Error::from_status(&s);
                if e.code == ErrorCode::InsufficientScope || e.code == ErrorCode::PermissionDenied {
                    return Err(Error::new(e.code, format!("checking {field} needs the contacts:read scope")));
                }
                Err(e)
            }
        }
    }

    /// The tenant's default pipeline, made (with the default stages) on first use.
    async fn ensure_default(&self, c: &Caller) -> Result<Uuid> {
        {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            if let Some(p) = default_pipeline(&mut tx, c.tenant).await? {
                return Ok(p.id);
            }
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::lock_tenant(&mut tx, c.tenant).await?;
        if let Some(p) = default_pipeline(&mut tx, c.tenant).await? {
            return Ok(p.id);
        }
        let all = queries::pipelines(&mut tx, c.tenant).await?;
        let id = match all.first() {
            // Pipelines but no default (cannot happen through this service): the oldest becomes it.
            Some(oldest) => {
                let mut doc = PipelineDoc::from_value(&oldest.doc)?;
                doc.is_default = true;
                self.write_pipeline(&mut tx, c, oldest, doc, t).await?;
                oldest.id
            }
            None => {
                let doc = PipelineDoc { name: "Default pipeline".into(), description: None, currency: None, is_default: true };
                let stages = DEFAULT_STAGES.iter().map(|(name, p, kind)| ((*name).to_owned(), *p, *kind, 0)).collect::<Vec<_>>();
                self.create_pipeline_in(&mut tx, c, doc, &stages, t).await?.0
            }
        };
        self.commit(tx).await?;
        Ok(id)
    }

    /// Creates a pipeline with its stages (name, probability, kind, rotting days), announced.
    async fn create_pipeline_in(
        &self,
        tx: &mut Tx,
        c: &Caller,
        doc: PipelineDoc,
        stages: &[(String, i32, Kind, i32)],
        t: DateTime<Utc>,
    ) -> Result<(Uuid, pb::Pipeline)> {
        let tenant = c.tenant.to_string();
        let id = Uuid::now_v7();
        let w = Write { search_text: doc.name.clone(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = PIPELINES.create(tx, c.tenant, id, w, t).await?;
        let mut out_stages = Vec::new();
        for (i, (name, probability, kind, rotting)) in stages.iter().enumerate() {
            let sdoc = StageDoc {
                pipeline_id: id.to_string(),
                name: name.clone(),
                position: i as i32,
                probability: *probability,
                kind: *kind,
                rotting_days: *rotting,
            };
            let sid = Uuid::now_v7();
            let w = Write { search_text: String::new(), doc: sdoc.to_value(), valid_from: None, actor: c.actor().to_owned() };
            let srec = STAGES.create(tx, c.tenant, sid, w, t).await?;
            let s = stage_pb(&tenant, &srec)?;
            self.emit_stage(tx, c, "created", &s, t).await?;
            out_stages.push(s);
        }
        let out = pipeline_pb(&tenant, &rec, out_stages)?;
        self.emit_pipeline(tx, c, "created", &out, t).await?;
        Ok((id, out))
    }

    /// Writes a pipeline's new document, announced as updated.
    async fn write_pipeline(&self, tx: &mut Tx, c: &Caller, head: &Record, doc: PipelineDoc, t: DateTime<Utc>) -> Result<pb::Pipeline> {
        let w = Write { search_text: doc.name.clone(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = PIPELINES.update_head(tx, c.tenant, head, w, t).await?;
        let stages = stages_pb(c, &stages_of(tx, c.tenant, rec.id).await?)?;
        let out = pipeline_pb(&c.tenant.to_string(), &rec, stages)?;
        self.emit_pipeline(tx, c, "updated", &out, t).await?;
        Ok(out)
    }

    /// Writes every stage of `order` whose position is not its index, announced as updated.
    async fn place(&self, tx: &mut Tx, c: &Caller, order: Vec<StageRec>, t: DateTime<Utc>) -> Result<Vec<pb::Stage>> {
        let tenant = c.tenant.to_string();
        let mut out = Vec::new();
        for (i, (rec, mut doc)) in order.into_iter().enumerate() {
            if doc.position == i as i32 {
                out.push(stage_pb(&tenant, &rec)?);
                continue;
            }
            doc.position = i as i32;
            let head = STAGES.head_for_update(tx, c.tenant, rec.id, None).await?;
            let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
            let rec = STAGES.update_head(tx, c.tenant, &head, w, t).await?;
            let s = stage_pb(&tenant, &rec)?;
            self.emit_stage(tx, c, "updated", &s, t).await?;
            out.push(s);
        }
        Ok(out)
    }

    /// Puts a deal into a stage from `at` on: status, `closed_at` and reasons follow the
    /// stage's kind; reopening clears them.
    fn enter(
        &self,
        doc: &mut DealDoc,
        stage: Uuid,
        kind: Kind,
        at: DateTime<Utc>,
        won: Option<String>,
        lost: Option<String>,
    ) -> Result<()> {
        let was = doc.status;
        doc.stage_id = stage.to_string();
        doc.stage_entered_at = at;
        doc.status = kind;
        match kind {
            Kind::Open => {
                doc.closed_at = None;
                doc.won_reason = None;
                doc.lost_reason = None;
            }
            Kind::Won => {
                if was != Kind::Won || doc.closed_at.is_none() {
                    doc.closed_at = Some(at);
                }
                doc.won_reason = won.or(doc.won_reason.take());
                doc.lost_reason = None;
                if self.settings.require_won_reason && doc.won_reason.is_none() {
                    return Err(Error::validation("won_reason is required to move a deal into a won stage"));
                }
            }
            Kind::Lost => {
                if was != Kind::Lost || doc.closed_at.is_none() {
                    doc.closed_at = Some(at);
                }
                doc.lost_reason = lost.or(doc.lost_reason.take());
                doc.won_reason = None;
                if self.settings.require_lost_reason && doc.lost_reason.is_none() {
                    return Err(Error::validation("lost_reason is required to move a deal into a lost stage"));
                }
            }
        }
        Ok(())
    }

    /// Moves one deal (whose head is locked) into `to` and records the stage change, announced.
    #[allow(clippy::too_many_arguments)]
    async fn move_head(
        &self,
        tx: &mut Tx,
        c: &Caller,
        head: &Record,
        to: &StageRec,
        reason: Option<String>,
        won: Option<String>,
        lost: Option<String>,
        valid_from: Option<DateTime<Utc>>,
        t: DateTime<Utc>,
    ) -> Result<(pb::Deal, pb::StageChange)> {
        let at = valid_from.unwrap_or(t);
        if let Some(last) = queries::last_change_at(tx, c.tenant, head.id).await?
            && at < last
        {
            return Err(Error::validation(format!(
                "valid_from {at} is before the deal's last stage change at {last}; record moves in the order they happened"
            )));
        }
        let old = DealDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        let (srec, sdoc) = to;
        self.enter(&mut doc, srec.id, sdoc.kind, at, won.or(reason.clone()), lost.or(reason.clone()))?;
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = DEALS.update_head(tx, c.tenant, head, w, t).await?;
        let ch = Change {
            id: Uuid::now_v7(),
            deal_id: head.id,
            pipeline_id: uuid(&doc.pipeline_id, "pipeline_id")?,
            from_stage_id: Uuid::parse_str(&old.stage_id).ok(),
            to_stage_id: srec.id,
            to_kind: sdoc.kind.as_str().to_owned(),
            amount: doc.amount.clone(),
            currency: doc.currency.clone(),
            reason,
            actor: c.actor().to_owned(),
            changed_at: at,
            recorded_at: rec.updated_at,
        };
        queries::insert_change(tx, c.tenant, &ch).await?;
        let deal = deal_pb(&c.tenant.to_string(), &rec)?;
        let change = change_pb(&ch);
        rpc::emit(tx, c, "worktruck.crm.deal.stage_changed.v1", head.id, rec.version, &change, t).await?;
        match sdoc.kind {
            Kind::Won if old.status != Kind::Won => self.emit_deal(tx, c, "won", &deal, t).await?,
            Kind::Lost if old.status != Kind::Lost => self.emit_deal(tx, c, "lost", &deal, t).await?,
            _ => {}
        }
        Ok((deal, change))
    }

    /// The wire deal with its pipeline and stage names (as known at `at`, or now) and, on
    /// current reads, its contacts.
    async fn render_deal(&self, tx: &mut Tx, c: &Caller, rec: &Record, at: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Result<pb::Deal> {
        let mut d = deal_pb(&c.tenant.to_string(), rec)?;
        let (pid, sid) = (uuid(&d.pipeline_id, "pipeline_id")?, uuid(&d.stage_id, "stage_id")?);
        let read = async |tx: &mut Tx, store: &Store, id: Uuid| -> Option<Record> {
            if let Some((as_of, _)) = at
                && let Ok(r) = store.at(tx, c.tenant, c.retention(now()), id, as_of, as_of).await
            {
                return Some(r);
            }
            store.head(tx, c.tenant, id).await.ok()
        };
        if let Some(p) = read(tx, &PIPELINES, pid).await {
            d.pipeline_name = PipelineDoc::from_value(&p.doc)?.name;
        }
        if let Some(s) = read(tx, &STAGES, sid).await {
            d.stage_name = StageDoc::from_value(&s.doc)?.name;
        }
        if at.is_none() {
            d.contacts = queries::deal_contacts(tx, c.tenant, rec.id).await?.iter().map(|r| dc_pb(c, r)).collect();
        }
        Ok(d)
    }
}

/// The tenant's live default pipeline.
async fn default_pipeline(tx: &mut Tx, tenant: Uuid) -> Result<Option<Record>> {
    for p in queries::pipelines(tx, tenant).await? {
        if PipelineDoc::from_value(&p.doc)?.is_default {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// A pipeline's live stages by position.
async fn stages_of(tx: &mut Tx, tenant: Uuid, pipeline: Uuid) -> Result<Vec<StageRec>> {
    let mut out = Vec::new();
    for r in queries::live_by(tx, tenant, "stage", "pipeline_id", &pipeline.to_string()).await? {
        let d = StageDoc::from_value(&r.doc)?;
        out.push((r, d));
    }
    out.sort_by_key(|(r, d)| (d.position, r.id));
    Ok(out)
}

fn stages_pb(c: &Caller, stages: &[StageRec]) -> Result<Vec<pb::Stage>> {
    let tenant = c.tenant.to_string();
    stages.iter().map(|(r, _)| stage_pb(&tenant, r)).collect()
}

/// A live pipeline of the tenant with its stages.
async fn pipeline_with_stages(tx: &mut Tx, c: &Caller, id: Uuid) -> Result<pb::Pipeline> {
    let rec = PIPELINES.head(tx, c.tenant, id).await?;
    let stages = stages_pb(c, &stages_of(tx, c.tenant, id).await?)?;
    pipeline_pb(&c.tenant.to_string(), &rec, stages)
}

/// The stage `id` of pipeline `pipeline` (404 when it is not one of its live stages).
async fn stage_in(tx: &mut Tx, c: &Caller, pipeline: Uuid, id: Uuid) -> Result<StageRec> {
    let rec = STAGES.head(tx, c.tenant, id).await?;
    let doc = StageDoc::from_value(&rec.doc)?;
    if doc.pipeline_id != pipeline.to_string() {
        return Err(Error::not_found("stage"));
    }
    Ok((rec, doc))
}

/// `stage_id` given with a deal: a live stage of `pipeline`, else a 400 that says which.
async fn deal_stage(tx: &mut Tx, c: &Caller, pipeline: Uuid, raw: &str) -> Result<StageRec> {
    let id = uuid(raw, "stage_id")?;
    let rec = STAGES.head(tx, c.tenant, id).await.map_err(|_| Error::validation(format!("stage_id: no stage {id}")))?;
    let doc = StageDoc::from_value(&rec.doc)?;
    if doc.pipeline_id != pipeline.to_string() {
        return Err(Error::validation(format!("stage_id: stage {id} belongs to another pipeline than {pipeline}")));
    }
    Ok((rec, doc))
}

fn change_pb(ch: &Change) -> pb::StageChange {
    pb::StageChange {
        id: ch.id.to_string(),
        deal_id: ch.deal_id.to_string(),
        pipeline_id: ch.pipeline_id.to_string(),
        from_stage_id: ch.from_stage_id.map(|s| s.to_string()),
        to_stage_id: ch.to_stage_id.to_string(),
        to_kind: Kind::parse(&ch.to_kind).unwrap_or(Kind::Open).to_pb() as i32,
        amount: ch.amount.clone(),
        currency: ch.currency.clone(),
        reason: ch.reason.clone(),
        actor: ch.actor.clone(),
        changed_at: Some(timestamp(ch.changed_at)),
        recorded_at: Some(timestamp(ch.recorded_at)),
    }
}

fn dc_pb(c: &Caller, r: &DealContactRow) -> pb::DealContact {
    pb::DealContact {
        id: r.id.to_string(),
        tenant_id: c.tenant.to_string(),
        deal_id: r.deal_id.to_string(),
        contact_id: r.contact_id.to_string(),
        is_primary: r.is_primary,
        introduced_by: r.introduced_by.map(|i| i.to_string()),
        role: r.role.clone(),
        metadata: Some(to_struct(&r.metadata)),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

/// A valid time given with a write: not in the future (5 s of clock skew allowed), else now.
fn valid_time(v: Option<DateTime<Utc>>, t: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
    match v {
        Some(v) if v > t + chrono::Duration::seconds(5) => Err(Error::validation("valid_from may not be in the future")),
        Some(v) => Ok(Some(v.min(t))),
        None => Ok(None),
    }
}

fn stage_kind_or_open(v: i32) -> Result<Kind> {
    Ok(Kind::from_pb(v)?.unwrap_or(Kind::Open))
}

fn default_probability(kind: Kind) -> i32 {
    if kind == Kind::Won { 100 } else { 0 }
}

/// Amount and currency of a deal together: a currency is needed with an amount.
fn check_money(doc: &DealDoc) -> Result<()> {
    if doc.amount.is_some() && doc.currency.is_none() {
        return Err(Error::validation("currency is required with an amount (the pipeline has no currency of its own)"));
    }
    Ok(())
}

#[tonic::async_trait]
impl CrmService for Crm {
    async fn create_pipeline(&self, req: Request<pb::CreatePipelineRequest>) -> Result<Response<pb::Pipeline>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut doc = PipelineDoc {
            name: check_name("name", &r.name, 200)?,
            description: r.description.as_deref().map(|d| check_text("description", d, 2000)).transpose()?.flatten(),
            currency: r.currency.as_deref().map(|v| check_currency("currency", v)).transpose()?.flatten(),
            is_default: r.is_default,
        };
        if r.stages.len() > MAX_STAGES {
            return Err(Error::validation(format!("a pipeline has at most {MAX_STAGES} stages")).into());
        }
        let mut stages = Vec::new();
        for (i, s) in r.stages.iter().enumerate() {
            let kind = stage_kind_or_open(s.kind)?;
            stages.push((
                check_name(&format!("stages[{i}].name"), &s.name, 200)?,
                check_percent(&format!("stages[{i}].probability"), s.probability.unwrap_or(default_probability(kind)))?,
                kind,
                check_rotting(s.rotting_days.unwrap_or(0))?,
            ));
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::lock_tenant(&mut tx, c.tenant).await?;
        match default_pipeline(&mut tx, c.tenant).await? {
            None => doc.is_default = true,
            Some(old) if doc.is_default => {
                let mut od = PipelineDoc::from_value(&old.doc)?;
                od.is_default = false;
                self.write_pipeline(&mut tx, &c, &old, od, t).await?;
            }
            Some(_) => {}
        }
        let (_, out) = self.create_pipeline_in(&mut tx, &c, doc, &stages, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_pipeline(&self, req: Request<pb::GetPipelineRequest>) -> Result<Response<pb::Pipeline>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        Ok(Response::new(pipeline_with_stages(&mut tx, &c, id).await?))
    }

    async fn update_pipeline(&self, req: Request<pb::UpdatePipelineRequest>) -> Result<Response<pb::Pipeline>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::lock_tenant(&mut tx, c.tenant).await?;
        let head = PIPELINES.head_for_update(&mut tx, c.tenant, id, None).await?;
        let old = PipelineDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        if let Some(n) = &r.name {
            doc.name = check_name("name", n, 200)?;
        }
        if let Some(d) = &r.description {
            doc.description = check_text("description", d, 2000)?;
        }
        if let Some(cur) = &r.currency {
            doc.currency = check_currency("currency", cur)?;
        }
        match r.is_default {
            Some(false) if old.is_default => {
                return Err(Error::validation("is_default: make another pipeline the default instead").into());
            }
            Some(true) if !old.is_default => {
                if let Some(prev) = default_pipeline(&mut tx, c.tenant).await? {
                    let mut pd = PipelineDoc::from_value(&prev.doc)?;
                    pd.is_default = false;
                    let prev = PIPELINES.head_for_update(&mut tx, c.tenant, prev.id, None).await?;
                    self.write_pipeline(&mut tx, &c, &prev, pd, t).await?;
                }
                doc.is_default = true;
            }
            _ => {}
        }
        if doc == old {
            return Ok(Response::new(pipeline_with_stages(&mut tx, &c, id).await?));
        }
        let out = self.write_pipeline(&mut tx, &c, &head, doc, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_pipeline(&self, req: Request<pb::DeletePipelineRequest>) -> Result<Response<pb::DeletePipelineResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::lock_tenant(&mut tx, c.tenant).await?;
        let head = PIPELINES.head_for_update(&mut tx, c.tenant, id, None).await?;
        let n = queries::deal_count(&mut tx, c.tenant, "pipeline_id", id).await?;
        if n > 0 {
            return Err(Error::conflict(format!("the pipeline holds {n} deals: move or delete them first")).into());
        }
        let was_default = PipelineDoc::from_value(&head.doc)?.is_default;
        for (srec, _) in stages_of(&mut tx, c.tenant, id).await? {
            let s = STAGES.delete(&mut tx, c.tenant, srec.id, c.actor(), t).await?;
            let s = stage_pb(&c.tenant.to_string(), &s)?;
            self.emit_stage(&mut tx, &c, "deleted", &s, t).await?;
        }
        let rec = PIPELINES.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = pipeline_pb(&c.tenant.to_string(), &rec, Vec::new())?;
        self.emit_pipeline(&mut tx, &c, "deleted", &out, t).await?;
        if was_default && let Some(next) = queries::pipelines(&mut tx, c.tenant).await?.into_iter().next() {
            let mut nd = PipelineDoc::from_value(&next.doc)?;
            nd.is_default = true;
            let next = PIPELINES.head_for_update(&mut tx, c.tenant, next.id, None).await?;
            self.write_pipeline(&mut tx, &c, &next, nd, t).await?;
        }
        self.commit(tx).await?;
        Ok(Response::new(pb::DeletePipelineResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_pipelines(&self, req: Request<pb::ListPipelinesRequest>) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let c = self.caller(&req)?;
        self.ensure_default(&c).await?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut data = Vec::new();
        for p in queries::pipelines(&mut tx, c.tenant).await? {
            let stages = stages_pb(&c, &stages_of(&mut tx, c.tenant, p.id).await?)?;
            data.push(pipeline_pb(&c.tenant.to_string(), &p, stages)?);
        }
        data.sort_by(|a, b| b.is_default.cmp(&a.is_default).then(a.name.to_lowercase().cmp(&b.name.to_lowercase())));
        Ok(Response::new(pb::ListPipelinesResponse { data }))
    }

    async fn create_stage(&self, req: Request<pb::CreateStageRequest>) -> Result<Response<pb::Stage>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let pipeline = uuid(&r.pipeline_id, "pipeline_id")?;
        let kind = stage_kind_or_open(r.kind)?;
        let name = check_name("name", &r.name, 200)?;
        let probability = check_percent("probability", r.probability.unwrap_or(default_probability(kind)))?;
        let rotting_days = check_rotting(r.rotting_days.unwrap_or(0))?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::lock_tenant(&mut tx, c.tenant).await?;
        PIPELINES.head(&mut tx, c.tenant, pipeline).await?;
        let mut order = stages_of(&mut tx, c.tenant, pipeline).await?;
        if order.len() >= MAX_STAGES {
            return Err(Error::validation(format!("a pipeline has at most {MAX_STAGES} stages")).into());
        }
        let at = match r.position {
            None => order.len(),
            Some(p) if p < 0 => {
                return Err(Error::validation(format!("position must not be negative, got {p}")).into());
            }
            Some(p) => (p as usize).min(order.len()),
        };
        let doc = StageDoc { pipeline_id: pipeline.to_string(), name, position: at as i32, probability, kind, rotting_days };
        let id = Uuid::now_v7();
        let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = STAGES.create(&mut tx, c.tenant, id, w, t).await?;
        let out = stage_pb(&c.tenant.to_string(), &rec)?;
        self.emit_stage(&mut tx, &c, "created", &out, t).await?;
        order.insert(at, (rec, doc));
        self.place(&mut tx, &c, order, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn list_stages(&self, req: Request<pb::ListStagesRequest>) -> Result<Response<pb::ListStagesResponse>, Status> {
        let c = self.caller(&req)?;
        let pipeline = uuid(&req.get_ref().pipeline_id, "pipeline_id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        PIPELINES.head(&mut tx, c.tenant, pipeline).await?;
        let data = stages_pb(&c, &stages_of(&mut tx, c.tenant, pipeline).await?)?;
        Ok(Response::new(pb::ListStagesResponse { data }))
    }

    async fn get_stage(&self, req: Request<pb::GetStageRequest>) -> Result<Response<pb::Stage>, Status> {
        let c = self.caller(&req)?;
        let pipeline = uuid(&req.get_ref().pipeline_id, "pipeline_id")?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let (rec, _) = stage_in(&mut tx, &c, pipeline, id).await?;
        Ok(Response::new(stage_pb(&c.tenant.to_string(), &rec)?))
    }

    async fn update_stage(&self, req: Request<pb::UpdateStageRequest>) -> Result<Response<pb::Stage>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let pipeline = uuid(&r.pipeline_id, "pipeline_id")?;
        let id = uuid(&r.id, "id")?;
        let kind = Kind::from_pb(r.kind)?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::lock_tenant(&mut tx, c.tenant).await?;
        let (_, old) = stage_in(&mut tx, &c, pipeline, id).await?;
        let head = STAGES.head_for_update(&mut tx, c.tenant, id, None).await?;
        let mut doc = old.clone();
        if let Some(n) = &r.name {
            doc.name = check_name("name", n, 200)?;
        }
        if let Some(p) = r.probability {
            doc.probability = check_percent("probability", p)?;
        }
        if let Some(d) = r.rotting_days {
            doc.rotting_days = check_rotting(d)?;
        }
        if let Some(k) = kind
            && k != old.kind
        {
            let n = queries::deal_count(&mut tx, c.tenant, "stage_id", id).await?;
            if n > 0 {
                return Err(Error::conflict(format!("the stage holds {n} deals: its kind cannot change under them")).into());
            }
            doc.kind = k;
        }
        let mut out = stage_pb(&c.tenant.to_string(), &head)?;
        if doc != old {
            let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
            let rec = STAGES.update_head(&mut tx, c.tenant, &head, w, t).await?;
            out = stage_pb(&c.tenant.to_string(), &rec)?;
            self.emit_stage(&mut tx, &c, "updated", &out, t).await?;
        }
        if let Some(p) = r.position {
            if p < 0 {
                return Err(Error::validation(format!("position must not be negative, got {p}")).into());
            }
            let mut order = stages_of(&mut tx, c.tenant, pipeline).await?;
            let i = order.iter().position(|(rec, _)| rec.id == id).ok_or_else(|| Error::not_found("stage"))?;
            let moving = order.remove(i);
            let to = (p as usize).min(order.len());
            order.insert(to, moving);
            let placed = self.place(&mut tx, &c, order, t).await?;
            if let Some(s) = placed.into_iter().find(|s| s.id == id.to_string()) {
                out = s;
            }
        }
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_stage(&self, req: Request<pb::DeleteStageRequest>) -> Result<Response<pb::DeleteStageResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let pipeline = uuid(&r.pipeline_id, "pipeline_id")?;
        let id = uuid(&r.id, "id")?;
        let target = r.move_to_stage_id.as_deref().map(|s| check_id("move_to_stage_id", s)).transpose()?.flatten();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::lock_tenant(&mut tx, c.tenant).await?;
        let (_, doc) = stage_in(&mut tx, &c, pipeline, id).await?;
        // Locking the head first: a concurrent move into this stage either finished (and its
        // deal is moved below) or waits and then finds the stage gone.
        STAGES.head_for_update(&mut tx, c.tenant, id, None).await?;
        let deals = queries::live_by(&mut tx, c.tenant, "deal", "stage_id", &id.to_string()).await?;
        let mut moved = 0;
        if !deals.is_empty() {
            let Some(target) = target else {
                return Err(
                    Error::conflict(format!("the stage holds {} deals: name a move_to_stage_id to move them to", deals.len())).into()
                );
            };
            if target == id {
                return Err(Error::validation("move_to_stage_id must be another stage").into());
            }
            let to = deal_stage(&mut tx, &c, pipeline, &target.to_string())
                .await
                .map_err(|e| Error::validation(e.message.replace("stage_id", "move_to_stage_id")))?;
            let reason = Some(format!("stage {} deleted", doc.name));
            for d in deals {
                let head = DEALS.head_for_update(&mut tx, c.tenant, d.id, None).await?;
                self.move_head(&mut tx, &c, &head, &to, reason.clone(), None, None, None, t).await?;
                moved += 1;
            }
        }
        let rec = STAGES.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = stage_pb(&c.tenant.to_string(), &rec)?;
        self.emit_stage(&mut tx, &c, "deleted", &out, t).await?;
        let order = stages_of(&mut tx, c.tenant, pipeline).await?;
        self.place(&mut tx, &c, order, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteStageResponse { id: id.to_string(), deleted: true, moved_deals: moved }))
    }

    async fn reorder_stages(&self, req: Request<pb::ReorderStagesRequest>) -> Result<Response<pb::ListStagesResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let pipeline = uuid(&r.pipeline_id, "pipeline_id")?;
        let ids = r.stage_ids.iter().enumerate().map(|(i, s)| uuid(s, &format!("stage_ids[{i}]"))).collect::<Result<Vec<_>>>()?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        queries::lock_tenant(&mut tx, c.tenant).await?;
        PIPELINES.head(&mut tx, c.tenant, pipeline).await?;
        let mut current = stages_of(&mut tx, c.tenant, pipeline).await?;
        let known: HashSet<Uuid> = current.iter().map(|(r, _)| r.id).collect();
        let mut seen = HashSet::new();
        for id in &ids {
            if !known.contains(id) {
                return Err(Error::validation(format!("stage_ids: {id} is not a stage of this pipeline")).into());
            }
            if !seen.insert(*id) {
                return Err(Error::validation(format!("stage_ids: {id} is named twice")).into());
            }
        }
        if let Some((missing, _)) = current.iter().find(|(r, _)| !seen.contains(&r.id)) {
            return Err(
                Error::validation(format!("stage_ids must name every stage of the pipeline once: {} is missing", missing.id)).into()
            );
        }
        let mut order = Vec::new();
        for id in ids {
            let i = current.iter().position(|(r, _)| r.id == id).expect("checked above");
            order.push(current.remove(i));
        }
        let data = self.place(&mut tx, &c, order, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::ListStagesResponse { data }))
    }

    async fn get_pipeline_analytics(
        &self,
        req: Request<pb::GetPipelineAnalyticsRequest>,
    ) -> Result<Response<pb::PipelineAnalytics>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let as_of = opt_datetime(r.as_of.as_ref(), "as_of")?;
        let to_given = opt_datetime(r.to.as_ref(), "to")?;
        let sys = as_of.unwrap_or(t).min(t);
        let to = to_given.unwrap_or(sys).min(sys);
        let from = opt_datetime(r.from.as_ref(), "from")?.unwrap_or(to - chrono::Duration::days(DEFAULT_WINDOW_DAYS));
        if from > to {
            return Err(Error::invalid("from must not be after to").into());
        }
        let retention = c.retention(t);
        if as_of.is_some() {
            retention.check("as_of", sys)?;
        }
        let current = as_of.is_none() && to_given.is_none();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        // Pipelines and stages are configuration, read as known (and as they were) at `as_of`;
        // deals as known at `as_of` and as they were at `to`.
        let stage_recs: Vec<Record> = if current {
            PIPELINES.head(&mut tx, c.tenant, id).await?;
            queries::live_by(&mut tx, c.tenant, "stage", "pipeline_id", &id.to_string()).await?
        } else {
            PIPELINES.at(&mut tx, c.tenant, retention, id, sys, sys).await?;
            let q = ListQuery {
                equals: vec![("pipeline_id", id.to_string())],
                limit: MAX_STAGES as i64 * 4,
                at: Some((sys, sys)),
                ..Default::default()
            };
            STAGES.list(&mut tx, c.tenant, retention, &q).await?.rows
        };
        let mut stages = Vec::new();
        for s in &stage_recs {
            let d = StageDoc::from_value(&s.doc)?;
            stages.push(StageInfo {
                id: s.id,
                name: d.name,
                position: d.position,
                kind: d.kind,
                probability: d.probability,
                rotting_days: d.rotting_days,
            });
        }
        let mut deals = Vec::new();
        if current {
            for d in queries::pipeline_deal_figures(&mut tx, c.tenant, id).await? {
                let (Some(stage), Some(status)) =
                    (d.stage_id.as_deref().and_then(|s| Uuid::parse_str(s).ok()), d.status.as_deref().and_then(Kind::parse))
                else {
                    return Err(Error::internal(format!("deal {} has no stage or status", d.id)).into());
                };
                deals.push(DealInfo {
                    id: d.id,
                    name: d.name.unwrap_or_default(),
                    stage_id: stage,
                    status,
                    amount: d.amount.as_deref().and_then(|a| a.parse().ok()),
                    currency: d.currency,
                    confidence: d.confidence.as_deref().and_then(|v| v.parse().ok()),
                    expected_close_date: d.expected_close_date,
                    stage_entered_at: d
                        .stage_entered_at
                        .as_deref()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or(t),
                });
            }
        } else {
            let mut cursor = None;
            loop {
                let q = ListQuery {
                    equals: vec![("pipeline_id", id.to_string())],
                    limit: ANALYTICS_PAGE,
                    cursor,
                    at: Some((sys, to)),
                    ..Default::default()
                };
                let page = DEALS.list(&mut tx, c.tenant, retention, &q).await?;
                for d in &page.rows {
                    let doc = DealDoc::from_value(&d.doc)?;
                    deals.push(DealInfo {
                        id: d.id,
                        name: doc.name.clone(),
                        stage_id: uuid(&doc.stage_id, "stage_id")?,
                        status: doc.status,
                        amount: doc.amount_decimal(),
                        currency: doc.currency.clone(),
                        confidence: doc.confidence,
                        expected_close_date: doc.expected_close_date.clone(),
                        stage_entered_at: doc.stage_entered_at,
                    });
                }
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        let changes = queries::pipeline_changes(&mut tx, c.tenant, id, sys, to).await?;
        Ok(Response::new(analytics::compute(id, &stages, &deals, &changes, from, to, sys)))
    }

    async fn create_deal(&self, req: Request<pb::CreateDealRequest>) -> Result<Response<pb::Deal>, Status> {
        let c = self.caller(&req)?;
        let md = req.metadata().clone();
        let r = req.into_inner();
        let name = check_name("name", &r.name, 500)?;
        let amount = r.amount.as_deref().map(check_amount).transpose()?.flatten();
        let currency = r.currency.as_deref().map(|v| check_currency("currency", v)).transpose()?.flatten();
        let confidence = r.confidence.map(|v| check_percent("confidence", v)).transpose()?;
        let metadata = r.metadata.as_ref().map(from_struct).unwrap_or_else(|| serde_json::json!({}));
        check_metadata(&metadata)?;
        let contact = r.contact_id.as_deref().map(|v| check_id("contact_id", v)).transpose()?.flatten();
        let organization = r.organization_id.as_deref().map(|v| check_id("organization_id", v)).transpose()?.flatten();
        let t = now();
        let valid_from = valid_time(opt_datetime(r.valid_from.as_ref(), "valid_from")?, t)?;
        let mut doc = DealDoc {
            name,
            pipeline_id: String::new(),
            stage_id: String::new(),
            status: Kind::Open,
            amount: amount.map(|a| a.to_string()),
            currency,
            confidence,
            value_period: value_period(r.value_period)?,
            expected_close_date: r.expected_close_date.as_deref().map(|d| check_date("expected_close_date", d)).transpose()?.flatten(),
            closed_at: None,
            won_reason: None,
            lost_reason: None,
            next_step: r.next_step.as_deref().map(|v| check_text("next_step", v, 2000)).transpose()?.flatten(),
            source: r.source.as_deref().map(|v| check_line("source", v, 200)).transpose()?.flatten(),
            description: r.description.as_deref().map(|v| check_text("description", v, 10_000)).transpose()?.flatten(),
            contact_id: contact.map(|u| u.to_string()),
            organization_id: organization.map(|u| u.to_string()),
            metadata,
            stage_entered_at: valid_from.unwrap_or(t),
        };
        let won = r.won_reason.as_deref().map(|v| check_text("won_reason", v, 2000)).transpose()?.flatten();
        let lost = r.lost_reason.as_deref().map(|v| check_text("lost_reason", v, 2000)).transpose()?.flatten();
        let pipeline = match r.pipeline_id.as_deref().map(|p| check_id("pipeline_id", p)).transpose()?.flatten() {
            Some(p) => p,
            None => self.ensure_default(&c).await?,
        };
        let mut fresh = Vec::new();
        if let Some(id) = contact {
            fresh.push(self.check_contact(&md, "contact_id", id, false).await?);
        }
        if let Some(id) = organization {
            fresh.push(self.check_contact(&md, "organization_id", id, true).await?);
        }
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let prec = PIPELINES
            .head(&mut tx, c.tenant, pipeline)
            .await
            .map_err(|_| Error::validation(format!("pipeline_id: no pipeline {pipeline}")))?;
        let pdoc = PipelineDoc::from_value(&prec.doc)?;
        let stage = match r.stage_id.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(s) => deal_stage(&mut tx, &c, pipeline, s).await?,
            None => stages_of(&mut tx, c.tenant, pipeline)
                .await?
                .into_iter()
                .find(|(_, d)| d.kind == Kind::Open)
                .ok_or_else(|| Error::validation(format!("pipeline {pipeline} has no open stage to put the deal in")))?,
        };
        if !queries::share_stage(&mut tx, c.tenant, stage.0.id).await? {
            return Err(Error::validation(format!("stage_id: no stage {}", stage.0.id)).into());
        }
        doc.pipeline_id = pipeline.to_string();
        if doc.currency.is_none() && doc.amount.is_some() {
            doc.currency = pdoc.currency.clone();
        }
        check_money(&doc)?;
        let at = doc.stage_entered_at;
        self.enter(&mut doc, stage.0.id, stage.1.kind, at, won, lost)?;
        let id = Uuid::now_v7();
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = DEALS.create(&mut tx, c.tenant, id, w, t).await?;
        let ch = Change {
            id: Uuid::now_v7(),
            deal_id: id,
            pipeline_id: pipeline,
            from_stage_id: None,
            to_stage_id: stage.0.id,
            to_kind: stage.1.kind.as_str().to_owned(),
            amount: doc.amount.clone(),
            currency: doc.currency.clone(),
            reason: None,
            actor: c.actor().to_owned(),
            changed_at: at,
            recorded_at: t,
        };
        queries::insert_change(&mut tx, c.tenant, &ch).await?;
        self.sync_contact_links(&mut tx, &c, id, &doc, &fresh, t).await?;
        let out = self.render_deal(&mut tx, &c, &rec, None).await?;
        self.emit_deal(&mut tx, &c, "created", &out, t).await?;
        match stage.1.kind {
            Kind::Won => self.emit_deal(&mut tx, &c, "won", &out, t).await?,
            Kind::Lost => self.emit_deal(&mut tx, &c, "lost", &out, t).await?,
            Kind::Open => {}
        }
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_deal(&self, req: Request<pb::GetDealRequest>) -> Result<Response<pb::Deal>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let at = c.moment(opt_datetime(r.as_of.as_ref(), "as_of")?, opt_datetime(r.valid_at.as_ref(), "valid_at")?, t);
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let rec = match at {
            None => DEALS.head(&mut tx, c.tenant, id).await?,
            Some((as_of, valid_at)) => DEALS.at(&mut tx, c.tenant, c.retention(t), id, as_of, valid_at).await?,
        };
        Ok(Response::new(self.render_deal(&mut tx, &c, &rec, at).await?))
    }

    async fn update_deal(&self, req: Request<pb::UpdateDealRequest>) -> Result<Response<pb::Deal>, Status> {
        let c = self.caller(&req)?;
        let md = req.metadata().clone();
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let valid_from = valid_time(opt_datetime(r.valid_from.as_ref(), "valid_from")?, t)?;
        let contact = r.contact_id.as_deref().map(|v| check_id("contact_id", v)).transpose()?;
        let organization = r.organization_id.as_deref().map(|v| check_id("organization_id", v)).transpose()?;
        let amount = r.amount.as_deref().map(check_amount).transpose()?;
        let currency = r.currency.as_deref().map(|v| check_currency("currency", v)).transpose()?;
        let confidence = match r.confidence {
            Some(-1) => Some(None),
            Some(v) => Some(Some(check_percent("confidence", v)?)),
            None => None,
        };
        let period = value_period(r.value_period)?;
        let mut fresh = Vec::new();
        if let Some(Some(id)) = contact {
            fresh.push(self.check_contact(&md, "contact_id", id, false).await?);
        }
        if let Some(Some(id)) = organization {
            fresh.push(self.check_contact(&md, "organization_id", id, true).await?);
        }
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = DEALS.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let old = DealDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        if let Some(n) = &r.name {
            doc.name = check_name("name", n, 500)?;
        }
        if let Some(a) = amount {
            doc.amount = a.map(|a| a.to_string());
        }
        if let Some(cur) = currency {
            doc.currency = cur;
        }
        if let Some(conf) = confidence {
            doc.confidence = conf;
        }
        if period.is_some() {
            doc.value_period = period;
        }
        if let Some(d) = &r.expected_close_date {
            doc.expected_close_date = check_date("expected_close_date", d)?;
        }
        if let Some(v) = &r.won_reason {
            doc.won_reason = check_text("won_reason", v, 2000)?;
        }
        if let Some(v) = &r.lost_reason {
            doc.lost_reason = check_text("lost_reason", v, 2000)?;
        }
        if let Some(v) = &r.next_step {
            doc.next_step = check_text("next_step", v, 2000)?;
        }
        if let Some(v) = &r.source {
            doc.source = check_line("source", v, 200)?;
        }
        if let Some(v) = &r.description {
            doc.description = check_text("description", v, 10_000)?;
        }
        if let Some(v) = contact {
            doc.contact_id = v.map(|u| u.to_string());
        }
        if let Some(v) = organization {
            doc.organization_id = v.map(|u| u.to_string());
        }
        if let Some(m) = &r.metadata {
            doc.metadata = merge(&doc.metadata, &from_struct(m));
            check_metadata(&doc.metadata)?;
        }
        if doc.currency.is_none() && doc.amount.is_some() && r.currency.is_none() {
            let p = PIPELINES.head(&mut tx, c.tenant, uuid(&doc.pipeline_id, "pipeline_id")?).await.ok();
            doc.currency = p.map(|p| PipelineDoc::from_value(&p.doc)).transpose()?.and_then(|p| p.currency);
        }
        check_money(&doc)?;
        if doc == old && valid_from.is_none() {
            return Ok(Response::new(self.render_deal(&mut tx, &c, &head, None).await?));
        }
        if let Some(v) = valid_from
            && let Some(last) = queries::last_change_at(&mut tx, c.tenant, id).await?
            && v < last
        {
            return Err(Error::validation(format!("valid_from {v} is before the deal's last stage change at {last}")).into());
        }
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = DEALS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        if doc.name != old.name || doc.contact_id != old.contact_id || doc.organization_id != old.organization_id {
            self.sync_contact_links(&mut tx, &c, id, &doc, &fresh, t).await?;
        }
        let out = self.render_deal(&mut tx, &c, &rec, None).await?;
        self.emit_deal(&mut tx, &c, "updated", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_deal(&self, req: Request<pb::DeleteDealRequest>) -> Result<Response<pb::DeleteDealResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let rec = DEALS.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = deal_pb(&c.tenant.to_string(), &rec)?;
        self.emit_deal(&mut tx, &c, "deleted", &out, t).await?;
        self.links.source_deleted(&mut tx, &c, DEALS.entity(), id, t).await?;
        self.links.target_changed(&mut tx, &c, DEALS.entity(), id, true, rec.version, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteDealResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_deal_links(&self, req: Request<common::ListLinksRequest>) -> Result<Response<common::ListLinksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            DEALS.head(&mut tx, c.tenant, id).await?;
        }
        Ok(Response::new(self.links.list(&c, DEALS.entity(), id, &r).await?))
    }

    async fn create_deal_link(&self, req: Request<common::CreateLinkRequest>) -> Result<Response<common::Link>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.create_explicit(&c, DEALS, req.get_ref()).await?))
    }

    async fn delete_deal_link(&self, req: Request<common::DeleteLinkRequest>) -> Result<Response<common::DeleteLinkResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.delete_explicit(&c, DEALS, req.get_ref()).await?))
    }

    async fn list_deals(&self, req: Request<pb::ListDealsRequest>) -> Result<Response<pb::ListDealsResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let at = c.moment(opt_datetime(r.as_of.as_ref(), "as_of")?, opt_datetime(r.valid_at.as_ref(), "valid_at")?, t);
        let limit = cursor::limit(r.limit)?;
        let mut equals: Vec<(&'static str, String)> = Vec::new();
        for (field, v) in [
            ("pipeline_id", &r.pipeline_id),
            ("stage_id", &r.stage_id),
            ("contact_id", &r.contact_id),
            ("organization_id", &r.organization_id),
        ] {
            if let Some(id) = v.as_deref().map(|s| check_id(field, s)).transpose()?.flatten() {
                equals.push((field, id.to_string()));
            }
        }
        if let Some(k) = Kind::from_status(r.status)? {
            equals.push(("status", k.as_str().to_owned()));
        }
        let before = r.expected_close_before.as_deref().map(|d| check_date("expected_close_before", d)).transpose()?.flatten();
        let after = r.expected_close_after.as_deref().map(|d| check_date("expected_close_after", d)).transpose()?.flatten();
        let q = r.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned);
        let scope = format!("crm:deals:{equals:?}:{before:?}:{after:?}:{q:?}:{at:?}");
        let cur = cursor::decode_opt(r.cursor.as_deref(), &scope)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let tenant = c.tenant.to_string();
        let (rows, next) = match at {
            Some(_) => {
                if q.is_some() || before.is_some() || after.is_some() {
                    return Err(Error::invalid(
                        "q, expected_close_before and expected_close_after cannot be combined with as_of or valid_at",
                    )
                    .into());
                }
                let lq = ListQuery { equals, limit, cursor: cur, at, ..Default::default() };
                let page = DEALS.list(&mut tx, c.tenant, c.retention(t), &lq).await?;
                (page.rows, page.next)
            }
            None => {
                let search = match &q {
                    Some(q) => Some(search_query(tx.dialect(), q).ok_or_else(|| Error::invalid("q has no searchable words"))?),
                    None => None,
                };
                let after_key = match cur {
                    None => None,
                    Some(Cursor::TimeId(t, id)) => Some((t, id)),
                    Some(_) => return Err(Error::invalid("invalid cursor for this listing").into()),
                };
                let f = DealFilter { equals, close_before: before, close_after: after, search, any_contact: None };
                let mut rows = queries::deals(&mut tx, c.tenant, &f, after_key, limit).await?;
                let next = if rows.len() as i64 > limit {
                    rows.truncate(limit as usize);
                    rows.last().map(|r| Cursor::TimeId(r.updated_at, r.id))
                } else {
                    None
                };
                (rows, next)
            }
        };
        let data = rows.iter().map(|r| deal_pb(&tenant, r)).collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListDealsResponse {
            data,
            has_more: next.is_some(),
            next_cursor: next.map(|n| n.encode(&scope)).unwrap_or_default(),
        }))
    }

    async fn move_deal(&self, req: Request<pb::MoveDealRequest>) -> Result<Response<pb::Deal>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let valid_from = valid_time(opt_datetime(r.valid_from.as_ref(), "valid_from")?, t)?;
        let reason = r.reason.as_deref().map(|v| check_text("reason", v, 2000)).transpose()?.flatten();
        let won = r.won_reason.as_deref().map(|v| check_text("won_reason", v, 2000)).transpose()?.flatten();
        let lost = r.lost_reason.as_deref().map(|v| check_text("lost_reason", v, 2000)).transpose()?.flatten();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = DEALS.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let doc = DealDoc::from_value(&head.doc)?;
        let to = deal_stage(&mut tx, &c, uuid(&doc.pipeline_id, "pipeline_id")?, &r.stage_id).await?;
        if to.0.id.to_string() == doc.stage_id {
            // Already there: nothing moves, nothing is recorded.
            return Ok(Response::new(self.render_deal(&mut tx, &c, &head, None).await?));
        }
        if !queries::share_stage(&mut tx, c.tenant, to.0.id).await? {
            return Err(Error::validation(format!("stage_id: no stage {}", to.0.id)).into());
        }
        self.move_head(&mut tx, &c, &head, &to, reason, won, lost, valid_from, t).await?;
        let rec = DEALS.head(&mut tx, c.tenant, id).await?;
        let out = self.render_deal(&mut tx, &c, &rec, None).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_deal_stage_history(
        &self,
        req: Request<pb::GetDealStageHistoryRequest>,
    ) -> Result<Response<pb::GetDealStageHistoryResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        DEALS.head(&mut tx, c.tenant, id).await?;
        let data = queries::changes_of(&mut tx, c.tenant, id).await?.iter().map(change_pb).collect();
        Ok(Response::new(pb::GetDealStageHistoryResponse { data }))
    }

    async fn get_deal_version_history(&self, req: Request<common::HistoryRequest>) -> Result<Response<common::HistoryResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::history(&DEALS, &self.db, &c, req.into_inner(), &[]).await?))
    }

    async fn diff_deal(&self, req: Request<common::DiffRequest>) -> Result<Response<common::DiffResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::diff(&DEALS, &self.db, &c, req.into_inner(), &[]).await?))
    }

    async fn get_deal_timeline(&self, req: Request<common::TimelineRequest>) -> Result<Response<common::TimelineResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::timeline(&DEALS, &self.db, &c, req.into_inner(), &[]).await?))
    }

    async fn create_deal_contact(&self, req: Request<pb::CreateDealContactRequest>) -> Result<Response<pb::DealContact>, Status> {
        let c = self.caller(&req)?;
        let md = req.metadata().clone();
        let r = req.into_inner();
        let deal = uuid(&r.deal_id, "deal_id")?;
        let contact = uuid(&r.contact_id, "contact_id").map_err(|e| Error::validation(e.message))?;
        let introduced_by = r.introduced_by.as_deref().map(|v| check_id("introduced_by", v)).transpose()?.flatten();
        let role = r.role.as_deref().map(|v| check_line("role", v, 200)).transpose()?.flatten();
        let metadata = r.metadata.as_ref().map(from_struct).unwrap_or_else(|| serde_json::json!({}));
        check_metadata(&metadata)?;
        {
            // A missing deal is a 404 before the contacts service is asked anything.
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            DEALS.head(&mut tx, c.tenant, deal).await?;
        }
        let fresh = [self.check_contact(&md, "contact_id", contact, false).await?];
        if let Some(i) = introduced_by {
            self.check_contact(&md, "introduced_by", i, false).await?;
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        // The deal's head, locked: its contacts change with it.
        let head = DEALS.head_for_update(&mut tx, c.tenant, deal, None).await?;
        let row = DealContactRow {
            id: Uuid::now_v7(),
            deal_id: deal,
            contact_id: contact,
            is_primary: r.is_primary.unwrap_or(false),
            introduced_by,
            role,
            metadata,
            created_at: t,
            updated_at: t,
        };
        let row = queries::upsert_deal_contact(&mut tx, c.tenant, &row).await?;
        self.sync_contact_links(&mut tx, &c, deal, &DealDoc::from_value(&head.doc)?, &fresh, t).await?;
        let out = dc_pb(&c, &row);
        rpc::emit(&mut tx, &c, "worktruck.crm.deal.contact_added.v1", deal, head.version, &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn list_deal_contacts(
        &self,
        req: Request<pb::ListDealContactsRequest>,
    ) -> Result<Response<pb::ListDealContactsResponse>, Status> {
        let c = self.caller(&req)?;
        let deal = uuid(&req.get_ref().deal_id, "deal_id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        DEALS.head(&mut tx, c.tenant, deal).await?;
        let data = queries::deal_contacts(&mut tx, c.tenant, deal).await?.iter().map(|r| dc_pb(&c, r)).collect();
        Ok(Response::new(pb::ListDealContactsResponse { data }))
    }

    async fn remove_deal_contact(
        &self,
        req: Request<pb::RemoveDealContactRequest>,
    ) -> Result<Response<pb::RemoveDealContactResponse>, Status> {
        let c = self.caller(&req)?;
        let deal = uuid(&req.get_ref().deal_id, "deal_id")?;
        let contact = uuid(&req.get_ref().contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = DEALS.head_for_update(&mut tx, c.tenant, deal, None).await?;
        let row = queries::remove_deal_contact(&mut tx, c.tenant, deal, contact).await?.ok_or_else(|| Error::not_found("deal contact"))?;
        self.sync_contact_links(&mut tx, &c, deal, &DealDoc::from_value(&head.doc)?, &[], t).await?;
        let out = dc_pb(&c, &row);
        rpc::emit(&mut tx, &c, "worktruck.crm.deal.contact_removed.v1", deal, head.version, &out, t)
            .await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::RemoveDealContactResponse { deal_id: deal.to_string(), contact_id: contact.to_string(), removed: true }))
    }

    async fn list_contact_deals(&self, req: Request<pb::ListContactDealsRequest>) -> Result<Response<pb::ListDealsResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let contact = uuid(&r.id, "id")?;
        let limit = cursor::limit(r.limit)?;
        let scope = format!("crm:contact-deals:{contact}");
        let after = match cursor::decode_opt(r.cursor.as_deref(), &scope)? {
            None => None,
            Some(Cursor::TimeId(t, id)) => Some((t, id)),
            Some(_) => return Err(Error::invalid("invalid cursor for this listing").into()),
        };
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let f = DealFilter { any_contact: Some(contact), ..Default::default() };
        let mut rows = queries::deals(&mut tx, c.tenant, &f, after, limit).await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| Cursor::TimeId(r.updated_at, r.id))
        } else {
            None
        };
        let tenant = c.tenant.to_string();
        let data = rows.iter().map(|r| deal_pb(&tenant, r)).collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListDealsResponse {
            data,
            has_more: next.is_some(),
            next_cursor: next.map(|n| n.encode(&scope)).unwrap_or_default(),
        }))
    }
}
