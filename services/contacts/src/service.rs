//! The `worktruck.contacts.v1.ContactsService` gRPC implementation over kit's bitemporal store.

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::Verifier;
use worktruck_kit::cursor::{self};
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::links::Links;
use worktruck_kit::outbox::{self, Relay};
use worktruck_kit::pbjson::{opt_datetime, uuid};
use worktruck_kit::rpc::{self, Caller};
use worktruck_kit::store::{ListQuery, Record, Retention, Store, Write};
use worktruck_kit::{Error, Result};
use worktruck_proto::common::v1 as common;
use worktruck_proto::contacts::v1 as pb;
use worktruck_proto::contacts::v1::contacts_service_server::ContactsService;

use crate::domain::{ContactDoc, contact_pb, parse_kind};

/// Contacts in kit's store.
pub const CONTACTS: Store = Store::new("contact");

/// The contacts service.
#[derive(Clone)]
pub struct Contacts {
    db: Db,
    verifier: Verifier,
    relay: Relay,
    links: Links,
}

impl Contacts {
    /// A service over a migrated database.
    pub fn new(db: Db, verifier: Verifier, relay: Relay, links: Links) -> Self {
        Self { db, verifier, relay, links }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }

    async fn emit(&self, tx: &mut Tx, c: &Caller, action: &str, contact: &pb::Contact, id: Uuid, t: DateTime<Utc>) -> Result<()> {
        outbox::enqueue(
            tx,
            c.tenant,
            &format!("worktruck.contacts.contact.{action}.v1"),
            id,
            contact.version,
            &c.ctx.actor,
            outbox::any("worktruck.contacts.v1.Contact", contact),
            t,
        )
        .await?;
        Ok(())
    }

    fn pb(&self, c: &Caller, r: &Record) -> Result<pb::Contact> {
        contact_pb(&c.tenant.to_string(), r)
    }
}

#[tonic::async_trait]
impl ContactsService for Contacts {
    async fn create_contact(&self, req: Request<pb::CreateContactRequest>) -> Result<Response<pb::Contact>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let doc = ContactDoc::from_create(&r)?;
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        let t = now();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.ctx.actor.clone() };
        let rec = CONTACTS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = self.pb(&c, &rec)?;
        self.emit(&mut tx, &c, "created", &out, id, t).await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(Response::new(out))
    }

    async fn get_contact(&self, req: Request<pb::GetContactRequest>) -> Result<Response<pb::Contact>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let as_of = opt_datetime(r.as_of.as_ref(), "as_of")?;
        let valid_at = opt_datetime(r.valid_at.as_ref(), "valid_at")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let rec = if as_of.is_none() && valid_at.is_none() {
            CONTACTS.head(&mut tx, c.tenant, id).await?
        } else {
            let as_of = as_of.unwrap_or(t);
            CONTACTS.at(&mut tx, c.tenant, c.ctx.retention(t), id, as_of, valid_at.unwrap_or(as_of)).await?
        };
        Ok(Response::new(self.pb(&c, &rec)?))
    }

    async fn update_contact(&self, req: Request<pb::UpdateContactRequest>) -> Result<Response<pb::Contact>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        if let Some(k) = r.kind {
            parse_kind(k)?;
        }
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        // Locked until commit, so concurrent plain updates queue instead of conflicting.
        let head = CONTACTS.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let doc = ContactDoc::from_value(&head.doc)?.apply(&r)?;
        // A request that changes nothing records nothing.
        if doc.to_value() == head.doc && valid_from.is_none() {
            return Ok(Response::new(self.pb(&c, &head)?));
        }
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.ctx.actor.clone() };
        let rec = CONTACTS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        let out = self.pb(&c, &rec)?;
        self.emit(&mut tx, &c, "updated", &out, id, t).await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(Response::new(out))
    }

    async fn delete_contact(&self, req: Request<pb::DeleteContactRequest>) -> Result<Response<pb::DeleteContactResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let rec = CONTACTS.delete(&mut tx, c.tenant, id, &c.ctx.actor, t).await?;
        let out = self.pb(&c, &rec)?;
        self.emit(&mut tx, &c, "deleted", &out, id, t).await?;
        self.links.target_changed(&mut tx, &c, CONTACTS.entity(), id, true, rec.version, t).await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(Response::new(pb::DeleteContactResponse { id: id.to_string(), deleted: true }))
    }

    async fn restore_contact(&self, req: Request<pb::RestoreContactRequest>) -> Result<Response<pb::Contact>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        if CONTACTS.head(&mut tx, c.tenant, id).await.is_ok() {
            return Err(Error::conflict("the contact is not deleted").into());
        }
        // The search text of the version being restored; not_found when it never existed.
        let page = CONTACTS.history(&mut tx, c.tenant, Retention::UNBOUNDED, id, None, None, 1, None).await?;
        let doc = page.rows.first().map(|(_, _, d, _)| ContactDoc::from_value(d)).transpose()?;
        let search = doc.map(|d| d.search_text()).unwrap_or_default();
        let rec = CONTACTS.restore(&mut tx, c.tenant, id, &search, &c.ctx.actor, t).await?;
        let out = self.pb(&c, &rec)?;
        self.emit(&mut tx, &c, "restored", &out, id, t).await?;
        self.links.target_changed(&mut tx, &c, CONTACTS.entity(), id, false, rec.version, t).await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(Response::new(out))
    }

    async fn list_contact_links(&self, req: Request<common::ListLinksRequest>) -> Result<Response<common::ListLinksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            CONTACTS.head(&mut tx, c.tenant, id).await?;
        }
        Ok(Response::new(self.links.list(&c, CONTACTS.entity(), id, &r).await?))
    }

    async fn list_contacts(&self, req: Request<pb::ListContactsRequest>) -> Result<Response<pb::ListContactsResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let as_of = opt_datetime(r.as_of.as_ref(), "as_of")?;
        let valid_at = opt_datetime(r.valid_at.as_ref(), "valid_at")?;
        let at = match (as_of, valid_at) {
            (None, None) => None,
            (a, v) => {
                let a = a.unwrap_or(t);
                Some((a, v.unwrap_or(a)))
            }
        };
        let mut equals = Vec::new();
        if let Some(k) = r.kind {
            equals.push(("kind", parse_kind(k)?.to_owned()));
        }
        let search = r.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned);
        if search.as_ref().is_some_and(|q| q.chars().count() > 500) {
            return Err(Error::invalid("q must be at most 500 characters").into());
        }
        // The cursor is bound to the filters, so a cursor from another query is refused.
        let scope = format!(
            "contacts:{:?}:{:?}:{:?}:{:?}:{:?}",
            r.kind, search, r.updated_since, as_of.map(|t| t.timestamp_micros()), valid_at.map(|t| t.timestamp_micros())
        );
        let q = ListQuery {
            equals,
            search,
            updated_since: opt_datetime(r.updated_since.as_ref(), "updated_since")?,
            limit: cursor::limit(r.limit)?,
            cursor: cursor::decode_opt(r.cursor.as_deref(), &scope)?,
            at,
        };
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let page = CONTACTS.list(&mut tx, c.tenant, c.ctx.retention(t), &q).await?;
        let data = page.rows.iter().map(|rec| self.pb(&c, rec)).collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListContactsResponse {
            data,
            has_more: page.next.is_some(),
            next_cursor: page.next.map(|n| n.encode(&scope)).unwrap_or_default(),
        }))
    }

    async fn get_contact_history(&self, req: Request<common::HistoryRequest>) -> Result<Response<common::HistoryResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::history(&CONTACTS, &self.db, &c, req.into_inner(), &[]).await?))
    }

    async fn diff_contact(&self, req: Request<common::DiffRequest>) -> Result<Response<common::DiffResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::diff(&CONTACTS, &self.db, &c, req.into_inner(), &[]).await?))
    }

    async fn get_contact_timeline(&self, req: Request<common::TimelineRequest>) -> Result<Response<common::TimelineResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::timeline(&CONTACTS, &self.db, &c, req.into_inner(), &[]).await?))
    }
}
