//! The `worktruck.contacts.v1.ContactsService` gRPC implementation over kit's bitemporal store.
//!
//! Entities: `contact` (with its channels, addresses, dates, affiliations, tag and group ids
//! inside its versioned document, so `as_of`, history, diff and timeline cover them),
//! `contact_tag`, `contact_group`, `relationship`, `relationship_type`, `interaction`,
//! `contact_settings` (one per tenant) and `contact_merge`. `contacts_lookup` holds the
//! current-state rows the lookups need, replaced in every write's transaction.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::Verifier;
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::error::quote;
use worktruck_kit::links::Links;
use worktruck_kit::outbox::{self, Relay};
use worktruck_kit::pbjson::{opt_datetime, timestamp, uuid};
use worktruck_kit::rpc::{self, Caller};
use worktruck_kit::store::{ListQuery, Record, Retention, Store, Write, search_query};
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::common::v1 as common;
use worktruck_proto::contacts::v1 as pb;
use worktruck_proto::contacts::v1::contacts_service_server::ContactsService;

use crate::children::{
    AddressDoc, AffiliationDoc, ChannelDoc, DateDoc, canonical, check_addresses, check_channels, check_region, parse_channel_type, text,
    MAX_CHILDREN,
};
use crate::domain::{ContactDoc, Names, contact_pb, parse_kind};
use crate::lookup::{self, contact_keys};

/// Contacts in kit's store.
pub const CONTACTS: Store = Store::new("contact");
/// Contact tags.
pub const TAGS: Store = Store::new("contact_tag");
/// Contact groups.
pub const GROUPS: Store = Store::new("contact_group");
/// Relationships between two contacts.
pub const RELATIONSHIPS: Store = Store::new("relationship");
/// Tenant-defined relationship types.
pub const REL_TYPES: Store = Store::new("relationship_type");
/// Interactions with contacts.
pub const INTERACTIONS: Store = Store::new("interaction");
/// The tenant's contacts settings (one, whose id is the tenant's).
pub const SETTINGS: Store = Store::new("contact_settings");

/// Built-in relationship types and their inverses (symmetric ones are their own).
pub const BUILT_IN_TYPES: &[(&str, &str)] = &[
    ("parent", "child"),
    ("child", "parent"),
    ("manages", "reports_to"),
    ("reports_to", "manages"),
    ("spouse", "spouse"),
    ("partner", "partner"),
    ("sibling", "sibling"),
    ("friend", "friend"),
    ("works_with", "works_with"),
    ("other", "other"),
];

/// Most ids one bulk group change takes.
pub const MAX_BULK: usize = 500;

/// The contacts service.
#[derive(Clone)]
pub struct Contacts {
    pub(crate) db: Db,
    verifier: Verifier,
    pub(crate) relay: Relay,
    pub(crate) links: Links,
}

fn ids(v: &[String], field: &str) -> Result<Vec<Uuid>> {
    v.iter().map(|s| uuid(s, field)).collect()
}

fn tag_key(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn check_color(c: &str) -> Result<Option<String>> {
    let c = c.trim();
    if c.is_empty() {
        return Ok(None);
    }
    if c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|x| x.is_ascii_hexdigit()) {
        Ok(Some(c.to_lowercase()))
    } else {
        Err(Error::validation(format!("color must be #rrggbb, got {}", quote(c))))
    }
}

fn check_type_name(field: &str, v: &str) -> Result<String> {
    let v = v.trim().to_lowercase();
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(Error::validation(format!("{field} must be 1 to 64 lower-case letters, digits or _")));
    }
    Ok(v)
}

fn interaction_type_str(t: i32) -> Result<&'static str> {
    Ok(match pb::InteractionType::try_from(t).unwrap_or(pb::InteractionType::Unspecified) {
        pb::InteractionType::Call => "call",
        pb::InteractionType::Meeting => "meeting",
        pb::InteractionType::Email => "email",
        pb::InteractionType::Message => "message",
        pb::InteractionType::Note => "note",
        pb::InteractionType::Other => "other",
        pb::InteractionType::Unspecified => {
            return Err(Error::validation("type must be call, meeting, email, message, note or other"));
        }
    })
}

fn interaction_type_pb(s: &str) -> pb::InteractionType {
    match s {
        "call" => pb::InteractionType::Call,
        "meeting" => pb::InteractionType::Meeting,
        "email" => pb::InteractionType::Email,
        "message" => pb::InteractionType::Message,
        "note" => pb::InteractionType::Note,
        "other" => pb::InteractionType::Other,
        _ => pb::InteractionType::Unspecified,
    }
}

fn str_of(doc: &Value, f: &str) -> String {
    doc.get(f).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn opt_str(doc: &Value, f: &str) -> Option<String> {
    doc.get(f).and_then(Value::as_str).map(str::to_owned)
}

fn tag_pb(r: &Record) -> pb::Tag {
    pb::Tag {
        id: r.id.to_string(),
        name: str_of(&r.doc, "name"),
        color: opt_str(&r.doc, "color"),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

fn interaction_pb(r: &Record) -> pb::Interaction {
    let d = &r.doc;
    pb::Interaction {
        id: r.id.to_string(),
        r#type: interaction_type_pb(&str_of(d, "type")) as i32,
        occurred_at: d.get("occurred_at").and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok()).map(timestamp),
        summary: opt_str(d, "summary"),
        channel: opt_str(d, "channel"),
        participant_ids: d
            .get("participant_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        metadata: Some(worktruck_kit::pbjson::to_struct(d.get("metadata").unwrap_or(&json!({})))),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

fn occurred_at(r: &Record) -> Option<DateTime<Utc>> {
    r.doc.get("occurred_at").and_then(|v| serde_json::from_value(v.clone()).ok())
}

fn check_not_future(t: DateTime<Utc>, now: DateTime<Utc>, field: &str) -> Result<()> {
    if t > now + chrono::Duration::seconds(5) {
        return Err(Error::validation(format!("{field} may not be in the future")));
    }
    Ok(())
}

async fn settings_of(tx: &mut Tx, c: &Caller) -> Result<Option<Record>> {
    match SETTINGS.head(tx, c.tenant, c.tenant).await {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.code == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The tenant's default region for national phone numbers.
pub(crate) async fn tenant_region_of(tx: &mut Tx, c: &Caller) -> Result<Option<String>> {
    Ok(settings_of(tx, c).await?.and_then(|r| opt_str(&r.doc, "default_region")))
}

impl Contacts {
    /// A service over a migrated database.
    pub fn new(db: Db, verifier: Verifier, relay: Relay, links: Links) -> Self {
        Self { db, verifier, relay, links }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }

    pub(crate) async fn begin(&self, c: &Caller) -> Result<Tx> {
        self.db.begin(Scope::Tenant(c.tenant), true).await
    }

    async fn read(&self, c: &Caller) -> Result<Tx> {
        self.db.begin(Scope::Tenant(c.tenant), false).await
    }

    pub(crate) async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify();
        Ok(())
    }

    /// Enqueues `worktruck.contacts.<what>.v1` with `payload` (named `worktruck.contacts.v1.<type_name>`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn event<M: prost::Message>(
        &self,
        tx: &mut Tx,
        c: &Caller,
        what: &str,
        entity: Uuid,
        version: i64,
        type_name: &str,
        payload: &M,
        t: DateTime<Utc>,
    ) -> Result<()> {
        outbox::enqueue(
            tx,
            c.tenant,
            &format!("worktruck.contacts.{what}.v1"),
            entity,
            version,
            &c.ctx.actor,
            outbox::any(&format!("worktruck.contacts.v1.{type_name}"), payload),
            t,
        )
        .await?;
        Ok(())
    }

    /// The tag and organization names the contacts' wire forms show.
    pub(crate) async fn names(&self, tx: &mut Tx, tenant: Uuid, docs: &[&ContactDoc]) -> Result<Names> {
        let mut names = Names::default();
        if docs.iter().any(|d| !d.tag_ids.is_empty()) {
            for r in lookup::all(tx, tenant, TAGS.entity()).await? {
                names.tags.insert(r.id.to_string(), tag_pb(&r));
            }
        }
        let orgs: BTreeSet<&str> = docs.iter().flat_map(|d| d.affiliations.iter().map(|a| a.organization_id.as_str())).collect();
        for o in orgs {
            if let Ok(id) = Uuid::parse_str(o)
                && let Some(r) = lookup::heads(tx, tenant, CONTACTS.entity(), &[id]).await?.pop()
            {
                names.orgs.insert(o.to_owned(), str_of(&r.doc, "display_name"));
            }
        }
        Ok(names)
    }

    fn search_terms(doc: &ContactDoc, names: &Names) -> Vec<String> {
        let mut v: Vec<String> = doc.tag_ids.iter().filter_map(|t| names.tags.get(t)).map(|t| t.name.clone()).collect();
        v.extend(doc.affiliations.iter().filter_map(|a| names.orgs.get(&a.organization_id)).cloned());
        v
    }

    pub(crate) async fn contact_out(&self, tx: &mut Tx, c: &Caller, rec: &Record) -> Result<pb::Contact> {
        let doc = ContactDoc::from_value(&rec.doc)?;
        let names = self.names(tx, c.tenant, &[&doc]).await?;
        contact_pb(&c.tenant.to_string(), rec, &names)
    }

    pub(crate) async fn contacts_out(&self, tx: &mut Tx, c: &Caller, recs: &[Record]) -> Result<Vec<pb::Contact>> {
        let docs = recs.iter().map(|r| ContactDoc::from_value(&r.doc)).collect::<Result<Vec<_>>>()?;
        let names = self.names(tx, c.tenant, &docs.iter().collect::<Vec<_>>()).await?;
        recs.iter().map(|r| contact_pb(&c.tenant.to_string(), r, &names)).collect()
    }

    /// Creates a contact from a validated document, with its lookup rows and event.
    pub(crate) async fn insert_contact(
        &self,
        tx: &mut Tx,
        c: &Caller,
        doc: &ContactDoc,
        valid_from: Option<DateTime<Utc>>,
        t: DateTime<Utc>,
    ) -> Result<pb::Contact> {
        let id = Uuid::now_v7();
        let names = self.names(tx, c.tenant, &[doc]).await?;
        let w = Write {
            search_text: doc.search_text_with(&Self::search_terms(doc, &names)),
            doc: doc.to_value(),
            valid_from,
            actor: c.ctx.actor.clone(),
        };
        let rec = CONTACTS.create(tx, c.tenant, id, w, t).await?;
        lookup::sync(tx, c.tenant, id, &contact_keys(doc)).await?;
        let out = contact_pb(&c.tenant.to_string(), &rec, &names)?;
        self.event(tx, c, "contact.created", id, out.version, "Contact", &out, t).await?;
        Ok(out)
    }

    /// Writes `doc` as the next version of the contact `head` (read for update in `tx`), keeps
    /// its lookup rows and search text, and enqueues `contact.updated`. A document equal to the
    /// head's records nothing.
    pub(crate) async fn write_contact(
        &self,
        tx: &mut Tx,
        c: &Caller,
        head: &Record,
        doc: &ContactDoc,
        valid_from: Option<DateTime<Utc>>,
        t: DateTime<Utc>,
    ) -> Result<(Record, pb::Contact)> {
        let names = self.names(tx, c.tenant, &[doc]).await?;
        let value = doc.to_value();
        if value == head.doc && valid_from.is_none() {
            let out = contact_pb(&c.tenant.to_string(), head, &names)?;
            return Ok((head.clone(), out));
        }
        let w = Write {
            search_text: doc.search_text_with(&Self::search_terms(doc, &names)),
            doc: value,
            valid_from,
            actor: c.ctx.actor.clone(),
        };
        let rec = CONTACTS.update_head(tx, c.tenant, head, w, t).await?;
        lookup::sync(tx, c.tenant, rec.id, &contact_keys(doc)).await?;
        let out = contact_pb(&c.tenant.to_string(), &rec, &names)?;
        self.event(tx, c, "contact.updated", rec.id, rec.version, "Contact", &out, t).await?;
        Ok((rec, out))
    }

    /// Recomputes the search text of live contacts (after a tag or organization rename): a
    /// current-state index, not a fact, so no version is written.
    async fn refresh_search(&self, tx: &mut Tx, c: &Caller, ids: &[Uuid]) -> Result<()> {
        for r in lookup::heads(tx, c.tenant, CONTACTS.entity(), ids).await? {
            let doc = ContactDoc::from_value(&r.doc)?;
            let names = self.names(tx, c.tenant, &[&doc]).await?;
            let text = doc.search_text_with(&Self::search_terms(&doc, &names));
            worktruck_kit::exec!(tx, sqlx::query(
                "UPDATE entity_heads SET search_text = $4 WHERE tenant_id = $1 AND entity = $2 AND id = $3")
                .bind(c.tenant).bind(CONTACTS.entity()).bind(r.id).bind(text))?;
        }
        Ok(())
    }

    /// The contact, locked for a write, and its document.
    pub(crate) async fn lock(&self, tx: &mut Tx, c: &Caller, id: Uuid) -> Result<(Record, ContactDoc)> {
        let head = CONTACTS.head_for_update(tx, c.tenant, id, None).await?;
        let doc = ContactDoc::from_value(&head.doc)?;
        Ok((head, doc))
    }

    async fn current(&self, c: &Caller, contact_id: &str) -> Result<(Tx, Uuid, ContactDoc)> {
        let id = uuid(contact_id, "contact_id")?;
        let mut tx = self.read(c).await?;
        let head = CONTACTS.head(&mut tx, c.tenant, id).await?;
        let doc = ContactDoc::from_value(&head.doc)?;
        Ok((tx, id, doc))
    }

    async fn settings_doc(&self, tx: &mut Tx, c: &Caller) -> Result<Option<Record>> {
        settings_of(tx, c).await
    }

    async fn tenant_region(&self, tx: &mut Tx, c: &Caller) -> Result<Option<String>> {
        tenant_region_of(tx, c).await
    }

    pub(crate) async fn create_tag_for_import(&self, tx: &mut Tx, c: &Caller, name: &str, t: DateTime<Utc>) -> Result<Record> {
        self.create_tag_in(tx, c, name, None, t).await
    }

    /// The region national phone numbers of `doc` are read in: the contact's `default_region`,
    /// else its primary (or only) address's country, else the tenant's setting.
    async fn region(&self, tx: &mut Tx, c: &Caller, doc: &ContactDoc) -> Result<Option<String>> {
        if let Some(r) = doc.optional.get("default_region").and_then(Value::as_str) {
            return Ok(Some(r.to_owned()));
        }
        let addr = doc.addresses.iter().find(|a| a.is_primary).or(if doc.addresses.len() == 1 { doc.addresses.first() } else { None });
        if let Some(cc) = addr.and_then(|a| a.country_code.clone()) {
            return Ok(Some(cc));
        }
        self.tenant_region(tx, c).await
    }

    /// `validation_failed` unless every id names a live contact of the tenant.
    async fn require_contacts(&self, tx: &mut Tx, c: &Caller, ids: &[Uuid], field: &str) -> Result<Vec<Record>> {
        let found = lookup::heads(tx, c.tenant, CONTACTS.entity(), ids).await?;
        let have: BTreeSet<Uuid> = found.iter().map(|r| r.id).collect();
        let missing: Vec<String> = ids.iter().filter(|i| !have.contains(i)).map(Uuid::to_string).collect();
        if !missing.is_empty() {
            let shown = missing.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
            let more = if missing.len() > 10 { format!(" and {} more", missing.len() - 10) } else { String::new() };
            return Err(Error::validation(format!("{field}: no contact of this tenant has the id {shown}{more}")));
        }
        Ok(found)
    }

    // ---- contacts ----

    async fn create_contact_(&self, c: &Caller, r: pb::CreateContactRequest) -> Result<pb::Contact> {
        let doc = ContactDoc::from_create(&r)?;
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let out = self.insert_contact(&mut tx, c, &doc, valid_from, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn get_contact_(&self, c: &Caller, r: pb::GetContactRequest) -> Result<pb::Contact> {
        let id = uuid(&r.id, "id")?;
        let as_of = opt_datetime(r.as_of.as_ref(), "as_of")?;
        let valid_at = opt_datetime(r.valid_at.as_ref(), "valid_at")?;
        let t = now();
        let mut tx = self.read(c).await?;
        let rec = match c.moment(as_of, valid_at, t) {
            None => CONTACTS.head(&mut tx, c.tenant, id).await?,
            Some((a, v)) => CONTACTS.at(&mut tx, c.tenant, c.retention(t), id, a, v).await?,
        };
        self.contact_out(&mut tx, c, &rec).await
    }

    async fn update_contact_(&self, c: &Caller, r: pb::UpdateContactRequest) -> Result<pb::Contact> {
        let id = uuid(&r.id, "id")?;
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        if let Some(k) = r.kind {
            parse_kind(k)?;
        }
        let t = now();
        let mut tx = self.begin(c).await?;
        // Locked until commit, so concurrent plain updates queue instead of conflicting.
        let head = CONTACTS.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let doc = ContactDoc::from_value(&head.doc)?.apply(&r)?;
        let renamed = doc.display_name != str_of(&head.doc, "display_name");
        let (rec, out) = self.write_contact(&mut tx, c, &head, &doc, valid_from, t).await?;
        if renamed && doc.kind == "organization" {
            let members = lookup::owners(&mut tx, c.tenant, "org", &rec.id.to_string()).await?;
            self.refresh_search(&mut tx, c, &members).await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }

    async fn delete_contact_(&self, c: &Caller, r: pb::DeleteContactRequest) -> Result<pb::DeleteContactResponse> {
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let rec = CONTACTS.delete(&mut tx, c.tenant, id, &c.ctx.actor, t).await?;
        lookup::sync(&mut tx, c.tenant, id, &BTreeSet::new()).await?;
        let out = self.contact_out(&mut tx, c, &rec).await?;
        self.event(&mut tx, c, "contact.deleted", id, out.version, "Contact", &out, t).await?;
        self.links.target_changed(&mut tx, c, CONTACTS.entity(), id, true, rec.version, t).await?;
        self.commit(tx).await?;
        Ok(pb::DeleteContactResponse { id: id.to_string(), deleted: true })
    }

    async fn restore_contact_(&self, c: &Caller, r: pb::RestoreContactRequest) -> Result<pb::Contact> {
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        if CONTACTS.head(&mut tx, c.tenant, id).await.is_ok() {
            return Err(Error::conflict("the contact is not deleted"));
        }
        // The document of the version being restored; not_found when it never existed.
        let page = CONTACTS.history(&mut tx, c.tenant, Retention::UNBOUNDED, id, None, None, 1, None).await?;
        let old = match page.rows.first() {
            Some((_, _, d, _)) => ContactDoc::from_value(d)?,
            None => return Err(Error::not_found("contact")),
        };
        let names = self.names(&mut tx, c.tenant, &[&old]).await?;
        let terms: Vec<String> = old
            .tag_ids
            .iter()
            .filter_map(|t| names.tags.get(t))
            .map(|t| t.name.clone())
            .chain(old.affiliations.iter().filter_map(|a| names.orgs.get(&a.organization_id)).cloned())
            .collect();
        let rec = CONTACTS.restore(&mut tx, c.tenant, id, &old.search_text_with(&terms), &c.ctx.actor, t).await?;
        lookup::sync(&mut tx, c.tenant, id, &contact_keys(&old)).await?;
        let out = self.contact_out(&mut tx, c, &rec).await?;
        self.event(&mut tx, c, "contact.restored", id, rec.version, "Contact", &out, t).await?;
        self.links.target_changed(&mut tx, c, CONTACTS.entity(), id, false, rec.version, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn list_contact_links_(&self, c: &Caller, r: common::ListLinksRequest) -> Result<common::ListLinksResponse> {
        let id = uuid(&r.id, "id")?;
        {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            CONTACTS.head(&mut tx, c.tenant, id).await?;
        }
        self.links.list(c, CONTACTS.entity(), id, &r).await
    }

    async fn list_contacts_(&self, c: &Caller, r: pb::ListContactsRequest) -> Result<pb::ListContactsResponse> {
        let t = now();
        let as_of = opt_datetime(r.as_of.as_ref(), "as_of")?;
        let valid_at = opt_datetime(r.valid_at.as_ref(), "valid_at")?;
        let at = c.moment(as_of, valid_at, t);
        let kind = r.kind.map(parse_kind).transpose()?.map(str::to_owned);
        let search = r.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned);
        if search.as_ref().is_some_and(|q| q.chars().count() > 500) {
            return Err(Error::invalid("q must be at most 500 characters"));
        }
        let nonempty = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let (tag, group, org) = (nonempty(&r.tag), nonempty(&r.group_id), nonempty(&r.organization_id));
        let updated_since = opt_datetime(r.updated_since.as_ref(), "updated_since")?;
        // The cursor is bound to the filters, so a cursor from another query is refused.
        let scope = format!(
            "contacts:{:?}:{:?}:{:?}:{:?}:{:?}:{:?}:{:?}:{:?}",
            kind,
            search,
            r.updated_since,
            as_of.map(|t| t.timestamp_micros()),
            valid_at.map(|t| t.timestamp_micros()),
            tag,
            group,
            org
        );
        let limit = cursor::limit(r.limit)?;
        let cur = cursor::decode_opt(r.cursor.as_deref(), &scope)?;
        let mut tx = self.read(c).await?;
        let (rows, next) = if at.is_some() {
            if tag.is_some() || group.is_some() || org.is_some() {
                return Err(Error::invalid("tag, group_id and organization_id cannot be combined with as_of or valid_at"));
            }
            let q = ListQuery {
                equals: kind.map(|k| vec![("kind", k)]).unwrap_or_default(),
                search,
                updated_since,
                limit,
                cursor: cur,
                at,
            };
            let page = CONTACTS.list(&mut tx, c.tenant, c.retention(t), &q).await?;
            (page.rows, page.next)
        } else {
            let mut has: Vec<(&'static str, String)> = Vec::new();
            if let Some(tag) = tag {
                let id = match Uuid::parse_str(&tag) {
                    Ok(id) => Some(id.to_string()),
                    Err(_) => lookup::by_field(&mut tx, c.tenant, TAGS.entity(), "key", &tag_key(&tag)).await?.map(|r| r.id.to_string()),
                };
                // An unknown tag name matches nothing.
                has.push(("tag", id.unwrap_or_else(|| "-".into())));
            }
            if let Some(g) = group {
                has.push(("group", uuid(&g, "group_id")?.to_string()));
            }
            if let Some(o) = org {
                has.push(("org", uuid(&o, "organization_id")?.to_string()));
            }
            let search = match search {
                Some(s) => Some(search_query(tx.dialect(), &s).ok_or_else(|| Error::invalid("q has no searchable words"))?),
                None => None,
            };
            let after = match cur {
                None => None,
                Some(Cursor::TimeId(t, id)) => Some((t, id)),
                Some(_) => return Err(Error::invalid("invalid cursor for this listing")),
            };
            let f = lookup::Filter { kind, search, has, updated_since };
            let mut rows = lookup::list(&mut tx, c.tenant, &f, after, limit).await?;
            let next = if rows.len() as i64 > limit {
                rows.truncate(limit as usize);
                rows.last().map(|r| Cursor::TimeId(r.updated_at, r.id))
            } else {
                None
            };
            (rows, next)
        };
        let data = self.contacts_out(&mut tx, c, &rows).await?;
        Ok(pb::ListContactsResponse { data, has_more: next.is_some(), next_cursor: next.map(|n| n.encode(&scope)).unwrap_or_default() })
    }

    async fn find_by_channel_(&self, c: &Caller, r: pb::FindContactByChannelRequest) -> Result<pb::Contact> {
        let kind = parse_channel_type(r.r#type)?;
        let mut tx = self.read(c).await?;
        let region = match &r.region {
            Some(x) => Some(check_region(x)?),
            None => self.tenant_region(&mut tx, c).await?,
        };
        let key = canonical(kind, &r.value, region.as_deref())?;
        let owners = lookup::owners(&mut tx, c.tenant, kind, &key).await?;
        let mut found = lookup::heads(&mut tx, c.tenant, CONTACTS.entity(), &owners).await?;
        // The oldest contact wins when several share the value (a duplicate to merge).
        found.sort_by_key(|r| (r.created_at, r.id));
        let rec = found.into_iter().next().ok_or_else(|| Error::not_found(format!("contact with {kind} {}", quote(&key))))?;
        self.contact_out(&mut tx, c, &rec).await
    }

    // ---- settings ----

    async fn get_settings_(&self, c: &Caller, _r: pb::GetContactSettingsRequest) -> Result<pb::ContactSettings> {
        let mut tx = self.read(c).await?;
        let s = self.settings_doc(&mut tx, c).await?;
        Ok(pb::ContactSettings {
            default_region: s.as_ref().and_then(|r| opt_str(&r.doc, "default_region")),
            updated_at: s.map(|r| timestamp(r.updated_at)),
        })
    }

    async fn update_settings_(&self, c: &Caller, r: pb::UpdateContactSettingsRequest) -> Result<pb::ContactSettings> {
        let t = now();
        let mut tx = self.begin(c).await?;
        let region = match r.default_region.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(None),
            Some(x) => Some(Some(check_region(x)?)),
        };
        let rec = match self.settings_doc(&mut tx, c).await? {
            None => {
                let doc = json!({"default_region": region.flatten()});
                let w = Write { doc, search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
                SETTINGS.create(&mut tx, c.tenant, c.tenant, w, t).await?
            }
            Some(_) => {
                let head = SETTINGS.head_for_update(&mut tx, c.tenant, c.tenant, None).await?;
                let mut doc = head.doc.clone();
                if let Some(reg) = region {
                    doc["default_region"] = reg.map(Value::String).unwrap_or(Value::Null);
                }
                let w = Write { doc, search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
                SETTINGS.update_head(&mut tx, c.tenant, &head, w, t).await?
            }
        };
        let out = pb::ContactSettings { default_region: opt_str(&rec.doc, "default_region"), updated_at: Some(timestamp(rec.updated_at)) };
        self.event(&mut tx, c, "settings.updated", c.tenant, rec.version, "ContactSettings", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    // ---- channels ----

    async fn add_channel_(&self, c: &Caller, r: pb::AddChannelRequest) -> Result<pb::Channel> {
        let id = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let (head, mut doc) = self.lock(&mut tx, c, id).await?;
        let region = self.region(&mut tx, c, &doc).await?;
        let ch = ChannelDoc::new(&r, region.as_deref(), t)?;
        doc.channels.push(ch.clone());
        check_channels(&doc.channels)?;
        let (rec, _) = self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
        let out = ch.to_pb(&id.to_string());
        self.event(&mut tx, c, "channel.added", id, rec.version, "Channel", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn list_channels_(&self, c: &Caller, r: pb::ListChildrenRequest) -> Result<pb::ListChannelsResponse> {
        let (_, id, doc) = self.current(c, &r.contact_id).await?;
        let mut data: Vec<pb::Channel> = doc.channels.iter().map(|x| x.to_pb(&id.to_string())).collect();
        data.sort_by_key(|a| (a.r#type, a.preference_order));
        Ok(pb::ListChannelsResponse { data })
    }

    async fn get_channel_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::Channel> {
        let (_, id, doc) = self.current(c, &r.contact_id).await?;
        doc.channels.iter().find(|x| x.id == r.id).map(|x| x.to_pb(&id.to_string())).ok_or_else(|| Error::not_found("channel"))
    }

    async fn update_channel_(&self, c: &Caller, r: pb::UpdateChannelRequest) -> Result<pb::Channel> {
        let id = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let (head, mut doc) = self.lock(&mut tx, c, id).await?;
        let region = self.region(&mut tx, c, &doc).await?;
        let i = doc.channels.iter().position(|x| x.id == r.id).ok_or_else(|| Error::not_found("channel"))?;
        let ch = doc.channels[i].apply(&r, region.as_deref(), t)?;
        doc.channels[i] = ch.clone();
        check_channels(&doc.channels)?;
        let (rec, _) = self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
        let out = ch.to_pb(&id.to_string());
        if rec.version != head.version {
            self.event(&mut tx, c, "channel.updated", id, rec.version, "Channel", &out, t).await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }

    /// Removes the child `child` of `list` from the contact and announces `<what>.removed`.
    async fn remove_child<T: Clone>(
        &self,
        c: &Caller,
        r: &pb::ChildRequest,
        what: &str,
        list: impl Fn(&mut ContactDoc) -> &mut Vec<T>,
        id_of: impl Fn(&T) -> &str,
    ) -> Result<pb::DeleteChildResponse> {
        let id = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let (head, mut doc) = self.lock(&mut tx, c, id).await?;
        let v = list(&mut doc);
        let i = v.iter().position(|x| id_of(x) == r.id).ok_or_else(|| Error::not_found(what))?;
        v.remove(i);
        let (rec, _) = self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
        let out = pb::DeleteChildResponse { id: r.id.clone(), deleted: true };
        self.event(&mut tx, c, &format!("{what}.removed"), id, rec.version, "DeleteChildResponse", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    // ---- addresses ----

    async fn put_address(&self, c: &Caller, r: pb::AddressInput, adding: bool) -> Result<pb::Address> {
        let id = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let (head, mut doc) = self.lock(&mut tx, c, id).await?;
        let a = if adding {
            let a = AddressDoc::default().apply(&r, t)?;
            doc.addresses.push(a.clone());
            a
        } else {
            let i = doc.addresses.iter().position(|x| x.id == r.id).ok_or_else(|| Error::not_found("address"))?;
            let a = doc.addresses[i].apply(&r, t)?;
            doc.addresses[i] = a.clone();
            a
        };
        check_addresses(&doc.addresses)?;
        let (rec, _) = self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
        let out = a.to_pb(&id.to_string());
        if rec.version != head.version {
            let what = if adding { "address.added" } else { "address.updated" };
            self.event(&mut tx, c, what, id, rec.version, "Address", &out, t).await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }

    // ---- dates ----

    async fn put_date(&self, c: &Caller, r: pb::DateInput, adding: bool) -> Result<pb::ContactDate> {
        let id = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let (head, mut doc) = self.lock(&mut tx, c, id).await?;
        let d = if adding {
            let d = DateDoc::new(&r, t)?;
            doc.dates.push(d.clone());
            d
        } else {
            let i = doc.dates.iter().position(|x| x.id == r.id).ok_or_else(|| Error::not_found("date"))?;
            let d = doc.dates[i].apply(&r, t)?;
            doc.dates[i] = d.clone();
            d
        };
        if doc.dates.len() > MAX_CHILDREN {
            return Err(Error::validation(format!("a contact has at most {MAX_CHILDREN} dates")));
        }
        let (rec, _) = self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
        let out = d.to_pb(&id.to_string());
        if rec.version != head.version {
            let what = if adding { "date.added" } else { "date.updated" };
            self.event(&mut tx, c, what, id, rec.version, "ContactDate", &out, t).await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }

    async fn upcoming_dates_(&self, c: &Caller, r: pb::ListUpcomingDatesRequest) -> Result<pb::ListUpcomingDatesResponse> {
        let days = r.days.unwrap_or(30);
        if !(0..=366).contains(&days) {
            return Err(Error::validation("days must be 0 to 366"));
        }
        let today = now().date_naive();
        let mut tx = self.read(c).await?;
        let owners: BTreeSet<Uuid> = lookup::all_of_kind(&mut tx, c.tenant, "date").await?.into_iter().map(|(_, o)| o).collect();
        let heads = lookup::heads(&mut tx, c.tenant, CONTACTS.entity(), &owners.into_iter().collect::<Vec<_>>()).await?;
        let mut data = Vec::new();
        for h in &heads {
            let doc = ContactDoc::from_value(&h.doc)?;
            for d in doc.dates.iter().filter(|d| d.date_type == "birthday" || d.date_type == "anniversary") {
                let Some(next) = d.next_occurrence(today) else { continue };
                let until = (next - today).num_days() as i32;
                if until <= days {
                    data.push(pb::UpcomingDate {
                        contact_id: h.id.to_string(),
                        display_name: doc.display_name.clone(),
                        date: Some(d.to_pb(&h.id.to_string())),
                        next_occurrence: next.to_string(),
                        days_until: until,
                        years: d.date_year.map(|y| chrono::Datelike::year(&next) - y),
                    });
                }
            }
        }
        data.sort_by(|a, b| (a.days_until, &a.display_name, &a.contact_id).cmp(&(b.days_until, &b.display_name, &b.contact_id)));
        Ok(pb::ListUpcomingDatesResponse { data })
    }

    // ---- affiliations ----

    async fn put_affiliation(&self, c: &Caller, r: pb::AffiliationInput, adding: bool) -> Result<pb::Affiliation> {
        let id = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let (head, mut doc) = self.lock(&mut tx, c, id).await?;
        let a = if adding {
            AffiliationDoc::default().apply(&r, t)?
        } else {
            let i = doc.affiliations.iter().position(|x| x.id == r.id).ok_or_else(|| Error::not_found("affiliation"))?;
            doc.affiliations[i].apply(&r, t)?
        };
        let org = Uuid::parse_str(&a.organization_id).map_err(Error::internal)?;
        if org == id {
            return Err(Error::validation("a contact cannot be affiliated with itself"));
        }
        let org_rec = self.require_contacts(&mut tx, c, &[org], "organization_id").await?.remove(0);
        if str_of(&org_rec.doc, "kind") != "organization" {
            return Err(Error::validation("organization_id must name a contact of kind organization"));
        }
        if adding {
            doc.affiliations.push(a.clone());
        } else if let Some(slot) = doc.affiliations.iter_mut().find(|x| x.id == a.id) {
            *slot = a.clone();
        }
        if doc.affiliations.len() > MAX_CHILDREN {
            return Err(Error::validation(format!("a contact has at most {MAX_CHILDREN} affiliations")));
        }
        let (rec, _) = self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
        let out = a.to_pb(&id.to_string(), &str_of(&org_rec.doc, "display_name"));
        if rec.version != head.version {
            let what = if adding { "affiliation.added" } else { "affiliation.updated" };
            self.event(&mut tx, c, what, id, rec.version, "Affiliation", &out, t).await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }

    fn sort_affiliations(v: &mut [pb::Affiliation]) {
        v.sort_by(|a, b| b.is_current.cmp(&a.is_current).then_with(|| b.start_date.cmp(&a.start_date)));
    }

    async fn list_affiliations_(&self, c: &Caller, r: pb::ListChildrenRequest) -> Result<pb::ListAffiliationsResponse> {
        let (mut tx, id, doc) = self.current(c, &r.contact_id).await?;
        let names = self.names(&mut tx, c.tenant, &[&doc]).await?;
        let mut data: Vec<pb::Affiliation> = doc
            .affiliations
            .iter()
            .map(|a| a.to_pb(&id.to_string(), names.orgs.get(&a.organization_id).map(String::as_str).unwrap_or_default()))
            .collect();
        Self::sort_affiliations(&mut data);
        Ok(pb::ListAffiliationsResponse { data })
    }

    async fn get_affiliation_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::Affiliation> {
        let (mut tx, id, doc) = self.current(c, &r.contact_id).await?;
        let names = self.names(&mut tx, c.tenant, &[&doc]).await?;
        doc.affiliations
            .iter()
            .find(|a| a.id == r.id)
            .map(|a| a.to_pb(&id.to_string(), names.orgs.get(&a.organization_id).map(String::as_str).unwrap_or_default()))
            .ok_or_else(|| Error::not_found("affiliation"))
    }

    async fn org_members_(&self, c: &Caller, r: pb::ListChildrenRequest) -> Result<pb::ListOrganizationMembersResponse> {
        let (mut tx, id, _) = self.current(c, &r.contact_id).await?;
        let owners = lookup::owners(&mut tx, c.tenant, "org", &id.to_string()).await?;
        let heads = lookup::heads(&mut tx, c.tenant, CONTACTS.entity(), &owners).await?;
        let contacts = self.contacts_out(&mut tx, c, &heads).await?;
        let mut data = Vec::new();
        for p in contacts {
            for a in p.affiliations.iter().filter(|a| a.organization_id == id.to_string()) {
                data.push(pb::OrganizationMember { contact: Some(p.clone()), affiliation: Some(a.clone()) });
            }
        }
        data.sort_by(|a, b| {
            let (x, y) = (a.affiliation.as_ref().unwrap(), b.affiliation.as_ref().unwrap());
            y.is_current.cmp(&x.is_current).then_with(|| y.start_date.cmp(&x.start_date))
        });
        Ok(pb::ListOrganizationMembersResponse { data })
    }

    // ---- relationships ----

    /// The inverse of every type: built-in ones, then the tenant's.
    async fn inverses(&self, tx: &mut Tx, c: &Caller) -> Result<HashMap<String, String>> {
        let mut m: HashMap<String, String> = BUILT_IN_TYPES.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        for r in lookup::all(tx, c.tenant, REL_TYPES.entity()).await? {
            let (n, i) = (str_of(&r.doc, "name"), str_of(&r.doc, "inverse_name"));
            m.insert(i.clone(), n.clone());
            m.insert(n, i);
        }
        Ok(m)
    }

    /// A relationship as `viewer` sees it.
    fn relationship_pb(r: &Record, viewer: Uuid, inverses: &HashMap<String, String>, other_name: &str) -> pb::Relationship {
        let from = str_of(&r.doc, "from_id");
        let outgoing = from == viewer.to_string();
        let ty = str_of(&r.doc, "type");
        pb::Relationship {
            id: r.id.to_string(),
            contact_id: viewer.to_string(),
            related_contact_id: if outgoing { str_of(&r.doc, "to_id") } else { from },
            related_display_name: other_name.to_owned(),
            r#type: if outgoing { ty } else { inverses.get(&ty).cloned().unwrap_or(ty) },
            notes: opt_str(&r.doc, "notes"),
            outgoing,
            created_at: Some(timestamp(r.created_at)),
            updated_at: Some(timestamp(r.updated_at)),
        }
    }

    async fn relationship_view(&self, tx: &mut Tx, c: &Caller, r: &Record, viewer: Uuid) -> Result<pb::Relationship> {
        let inv = self.inverses(tx, c).await?;
        let from = str_of(&r.doc, "from_id");
        let other = if from == viewer.to_string() { str_of(&r.doc, "to_id") } else { from };
        let other = Uuid::parse_str(&other).map_err(Error::internal)?;
        let name = lookup::heads(tx, c.tenant, CONTACTS.entity(), &[other]).await?.pop().map(|h| str_of(&h.doc, "display_name"));
        Ok(Self::relationship_pb(r, viewer, &inv, &name.unwrap_or_default()))
    }

    /// The relationship `id`, if `viewer` is one of its ends.
    async fn relationship_of(&self, tx: &mut Tx, c: &Caller, viewer: Uuid, id: &str) -> Result<Record> {
        let id = uuid(id, "id")?;
        let r = RELATIONSHIPS.head(tx, c.tenant, id).await?;
        if str_of(&r.doc, "from_id") != viewer.to_string() && str_of(&r.doc, "to_id") != viewer.to_string() {
            return Err(Error::not_found("relationship"));
        }
        Ok(r)
    }

    pub(crate) fn relationship_keys(doc: &Value) -> BTreeSet<lookup::Key> {
        [("rel".to_owned(), str_of(doc, "from_id")), ("rel".to_owned(), str_of(doc, "to_id"))].into_iter().collect()
    }

    async fn create_relationship_(&self, c: &Caller, r: pb::CreateRelationshipRequest) -> Result<pb::Relationship> {
        let a = uuid(&r.contact_id, "contact_id")?;
        let b = uuid(&r.related_contact_id, "related_contact_id")?;
        if a == b {
            return Err(Error::validation("a contact cannot be related to itself"));
        }
        let ty = check_type_name("type", &r.r#type)?;
        let notes = r.notes.as_deref().map(|n| text("notes", n, 2000)).transpose()?.flatten();
        let t = now();
        let mut tx = self.begin(c).await?;
        CONTACTS.head_for_update(&mut tx, c.tenant, a, None).await?;
        self.require_contacts(&mut tx, c, &[b], "related_contact_id").await?;
        let inv = self.inverses(&mut tx, c).await?;
        let Some(inverse) = inv.get(&ty).cloned() else {
            return Err(Error::validation(format!("unknown relationship type {}; define it under /api/v1/relationship-types", quote(&ty))));
        };
        for id in lookup::owners(&mut tx, c.tenant, "rel", &a.to_string()).await? {
            if let Ok(e) = RELATIONSHIPS.head(&mut tx, c.tenant, id).await {
                let same = (str_of(&e.doc, "from_id") == a.to_string() && str_of(&e.doc, "to_id") == b.to_string() && str_of(&e.doc, "type") == ty)
                    || (str_of(&e.doc, "from_id") == b.to_string() && str_of(&e.doc, "to_id") == a.to_string() && str_of(&e.doc, "type") == inverse);
                if same {
                    return Err(Error::new(ErrorCode::AlreadyExists, format!("the contacts are already related as {ty}")));
                }
            }
        }
        let doc = json!({"from_id": a.to_string(), "to_id": b.to_string(), "type": ty, "notes": notes});
        let id = Uuid::now_v7();
        let w = Write { doc: doc.clone(), search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
        let rec = RELATIONSHIPS.create(&mut tx, c.tenant, id, w, t).await?;
        lookup::sync(&mut tx, c.tenant, id, &Self::relationship_keys(&doc)).await?;
        let out = self.relationship_view(&mut tx, c, &rec, a).await?;
        self.event(&mut tx, c, "relationship.created", id, rec.version, "Relationship", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn list_relationships_(&self, c: &Caller, r: pb::ListChildrenRequest) -> Result<pb::ListRelationshipsResponse> {
        let (mut tx, id, _) = self.current(c, &r.contact_id).await?;
        let ids = lookup::owners(&mut tx, c.tenant, "rel", &id.to_string()).await?;
        let mut data = Vec::new();
        for rec in lookup::heads(&mut tx, c.tenant, RELATIONSHIPS.entity(), &ids).await? {
            let v = self.relationship_view(&mut tx, c, &rec, id).await?;
            // A relationship to a deleted contact leaves the listing with it.
            if !v.related_display_name.is_empty() {
                data.push(v);
            }
        }
        data.sort_by(|a, b| (&a.r#type, &a.related_display_name).cmp(&(&b.r#type, &b.related_display_name)));
        Ok(pb::ListRelationshipsResponse { data })
    }

    async fn get_relationship_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::Relationship> {
        let (mut tx, id, _) = self.current(c, &r.contact_id).await?;
        let rec = self.relationship_of(&mut tx, c, id, &r.id).await?;
        self.relationship_view(&mut tx, c, &rec, id).await
    }

    async fn update_relationship_(&self, c: &Caller, r: pb::UpdateRelationshipRequest) -> Result<pb::Relationship> {
        let viewer = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        CONTACTS.head(&mut tx, c.tenant, viewer).await?;
        let rec = self.relationship_of(&mut tx, c, viewer, &r.id).await?;
        let head = RELATIONSHIPS.head_for_update(&mut tx, c.tenant, rec.id, None).await?;
        let mut doc = head.doc.clone();
        if let Some(ty) = &r.r#type {
            let ty = check_type_name("type", ty)?;
            let inv = self.inverses(&mut tx, c).await?;
            let Some(inverse) = inv.get(&ty) else {
                return Err(Error::validation(format!("unknown relationship type {}", quote(&ty))));
            };
            let outgoing = str_of(&doc, "from_id") == viewer.to_string();
            doc["type"] = Value::String(if outgoing { ty.clone() } else { inverse.clone() });
        }
        if let Some(n) = &r.notes {
            doc["notes"] = text("notes", n, 2000)?.map(Value::String).unwrap_or(Value::Null);
        }
        let rec = if doc != head.doc {
            let w = Write { doc, search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
            RELATIONSHIPS.update_head(&mut tx, c.tenant, &head, w, t).await?
        } else {
            head.clone()
        };
        let out = self.relationship_view(&mut tx, c, &rec, viewer).await?;
        if rec.version != head.version {
            self.event(&mut tx, c, "relationship.updated", rec.id, rec.version, "Relationship", &out, t).await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }

    async fn delete_relationship_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::DeleteChildResponse> {
        let viewer = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let rec = self.relationship_of(&mut tx, c, viewer, &r.id).await?;
        let del = RELATIONSHIPS.delete(&mut tx, c.tenant, rec.id, &c.ctx.actor, t).await?;
        lookup::sync(&mut tx, c.tenant, rec.id, &BTreeSet::new()).await?;
        let out = pb::DeleteChildResponse { id: rec.id.to_string(), deleted: true };
        self.event(&mut tx, c, "relationship.deleted", rec.id, del.version, "DeleteChildResponse", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn create_rel_type_(&self, c: &Caller, r: pb::CreateRelationshipTypeRequest) -> Result<pb::RelationshipType> {
        let name = check_type_name("name", &r.name)?;
        let inverse = match &r.inverse_name {
            Some(i) if !i.trim().is_empty() => check_type_name("inverse_name", i)?,
            _ => name.clone(),
        };
        let t = now();
        let mut tx = self.begin(c).await?;
        let known = self.inverses(&mut tx, c).await?;
        for n in [&name, &inverse] {
            if known.contains_key(n.as_str()) {
                return Err(Error::new(ErrorCode::AlreadyExists, format!("relationship type {} already exists", quote(n))));
            }
        }
        let id = Uuid::now_v7();
        let w = Write { doc: json!({"name": name, "inverse_name": inverse}), search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
        let rec = REL_TYPES.create(&mut tx, c.tenant, id, w, t).await?;
        let out = pb::RelationshipType { id: id.to_string(), name, inverse_name: inverse, built_in: false };
        self.event(&mut tx, c, "relationship_type.created", id, rec.version, "RelationshipType", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn list_rel_types_(&self, c: &Caller, _r: pb::ListRelationshipTypesRequest) -> Result<pb::ListRelationshipTypesResponse> {
        let mut tx = self.read(c).await?;
        let mut data: Vec<pb::RelationshipType> = BUILT_IN_TYPES
            .iter()
            .map(|(n, i)| pb::RelationshipType { id: String::new(), name: (*n).into(), inverse_name: (*i).into(), built_in: true })
            .collect();
        let mut custom: Vec<pb::RelationshipType> = lookup::all(&mut tx, c.tenant, REL_TYPES.entity())
            .await?
            .iter()
            .map(|r| pb::RelationshipType { id: r.id.to_string(), name: str_of(&r.doc, "name"), inverse_name: str_of(&r.doc, "inverse_name"), built_in: false })
            .collect();
        custom.sort_by(|a, b| a.name.cmp(&b.name));
        data.extend(custom);
        Ok(pb::ListRelationshipTypesResponse { data })
    }

    async fn delete_rel_type_(&self, c: &Caller, r: pb::DeleteRelationshipTypeRequest) -> Result<pb::DeleteChildResponse> {
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let ty = REL_TYPES.head_for_update(&mut tx, c.tenant, id, None).await?;
        let names = [str_of(&ty.doc, "name"), str_of(&ty.doc, "inverse_name")];
        for rel in lookup::all(&mut tx, c.tenant, RELATIONSHIPS.entity()).await? {
            if names.contains(&str_of(&rel.doc, "type")) {
                return Err(Error::conflict(format!("relationship type {} is in use", quote(&names[0]))));
            }
        }
        let del = REL_TYPES.delete(&mut tx, c.tenant, id, &c.ctx.actor, t).await?;
        let out = pb::DeleteChildResponse { id: id.to_string(), deleted: true };
        self.event(&mut tx, c, "relationship_type.deleted", id, del.version, "DeleteChildResponse", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    // ---- interactions ----

    /// Brings each contact's `last_contacted_at` to its latest live interaction.
    async fn refresh_last_contacted(&self, tx: &mut Tx, c: &Caller, contacts: &BTreeSet<Uuid>, t: DateTime<Utc>) -> Result<()> {
        for id in contacts {
            let ids = lookup::owners(tx, c.tenant, "participant", &id.to_string()).await?;
            let latest = lookup::heads(tx, c.tenant, INTERACTIONS.entity(), &ids).await?.iter().filter_map(occurred_at).max();
            let Ok(head) = CONTACTS.head_for_update(tx, c.tenant, *id, None).await else { continue };
            let mut doc = ContactDoc::from_value(&head.doc)?;
            if doc.last_contacted_at != latest {
                doc.last_contacted_at = latest;
                self.write_contact(tx, c, &head, &doc, None, t).await?;
            }
        }
        Ok(())
    }

    pub(crate) fn interaction_keys(participants: &[String]) -> BTreeSet<lookup::Key> {
        participants.iter().map(|p| ("participant".to_owned(), p.clone())).collect()
    }

    async fn log_interaction_(&self, c: &Caller, r: pb::LogInteractionRequest) -> Result<pb::Interaction> {
        let first = uuid(&r.contact_id, "contact_id")?;
        let ty = interaction_type_str(r.r#type)?;
        let t = now();
        let at = opt_datetime(r.occurred_at.as_ref(), "occurred_at")?.unwrap_or(t);
        check_not_future(at, t, "occurred_at")?;
        if r.participant_ids.len() > 100 {
            return Err(Error::validation("at most 100 participant_ids"));
        }
        let mut people = vec![first];
        for p in ids(&r.participant_ids, "participant_ids")? {
            if !people.contains(&p) {
                people.push(p);
            }
        }
        let summary = r.summary.as_deref().map(|s| text("summary", s, 10_000)).transpose()?.flatten();
        let channel = r.channel.as_deref().map(|s| text("channel", s, 200)).transpose()?.flatten();
        let metadata = r.metadata.as_ref().map(worktruck_kit::pbjson::from_struct).unwrap_or_else(|| json!({}));
        crate::domain::check_metadata(&metadata)?;
        let mut tx = self.begin(c).await?;
        self.require_contacts(&mut tx, c, &people, "participant_ids").await?;
        let participants: Vec<String> = people.iter().map(Uuid::to_string).collect();
        let doc = json!({"type": ty, "occurred_at": at, "summary": summary, "channel": channel, "participant_ids": participants, "metadata": metadata});
        let id = Uuid::now_v7();
        let w = Write { doc, search_text: summary.clone().unwrap_or_default(), valid_from: None, actor: c.ctx.actor.clone() };
        let rec = INTERACTIONS.create(&mut tx, c.tenant, id, w, t).await?;
        lookup::sync(&mut tx, c.tenant, id, &Self::interaction_keys(&participants)).await?;
        self.refresh_last_contacted(&mut tx, c, &people.into_iter().collect(), t).await?;
        let out = interaction_pb(&rec);
        self.event(&mut tx, c, "interaction.logged", id, rec.version, "Interaction", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn interaction_of(&self, tx: &mut Tx, c: &Caller, contact: Uuid, id: &str) -> Result<Record> {
        let id = uuid(id, "id")?;
        let rec = INTERACTIONS.head(tx, c.tenant, id).await?;
        if !interaction_pb(&rec).participant_ids.contains(&contact.to_string()) {
            return Err(Error::not_found("interaction"));
        }
        Ok(rec)
    }

    async fn list_interactions_(&self, c: &Caller, r: pb::ListChildrenRequest) -> Result<pb::ListInteractionsResponse> {
        let (mut tx, id, _) = self.current(c, &r.contact_id).await?;
        let ids = lookup::owners(&mut tx, c.tenant, "participant", &id.to_string()).await?;
        let mut recs = lookup::heads(&mut tx, c.tenant, INTERACTIONS.entity(), &ids).await?;
        recs.sort_by(|a, b| occurred_at(b).cmp(&occurred_at(a)).then_with(|| b.id.cmp(&a.id)));
        Ok(pb::ListInteractionsResponse { data: recs.iter().map(interaction_pb).collect() })
    }

    async fn get_interaction_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::Interaction> {
        let (mut tx, id, _) = self.current(c, &r.contact_id).await?;
        Ok(interaction_pb(&self.interaction_of(&mut tx, c, id, &r.id).await?))
    }

    async fn update_interaction_(&self, c: &Caller, r: pb::UpdateInteractionRequest) -> Result<pb::Interaction> {
        let contact = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let rec = self.interaction_of(&mut tx, c, contact, &r.id).await?;
        let head = INTERACTIONS.head_for_update(&mut tx, c.tenant, rec.id, None).await?;
        let mut doc = head.doc.clone();
        if let Some(ty) = r.r#type {
            doc["type"] = Value::String(interaction_type_str(ty)?.to_owned());
        }
        if let Some(at) = opt_datetime(r.occurred_at.as_ref(), "occurred_at")? {
            check_not_future(at, t, "occurred_at")?;
            doc["occurred_at"] = serde_json::to_value(at).map_err(Error::internal)?;
        }
        if let Some(s) = &r.summary {
            doc["summary"] = text("summary", s, 10_000)?.map(Value::String).unwrap_or(Value::Null);
        }
        if let Some(s) = &r.channel {
            doc["channel"] = text("channel", s, 200)?.map(Value::String).unwrap_or(Value::Null);
        }
        if doc == head.doc {
            return Ok(interaction_pb(&head));
        }
        let search = opt_str(&doc, "summary").unwrap_or_default();
        let w = Write { doc, search_text: search, valid_from: None, actor: c.ctx.actor.clone() };
        let rec = INTERACTIONS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        let out = interaction_pb(&rec);
        let people = ids(&out.participant_ids, "participant_ids")?.into_iter().collect();
        self.refresh_last_contacted(&mut tx, c, &people, t).await?;
        self.event(&mut tx, c, "interaction.updated", rec.id, rec.version, "Interaction", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn delete_interaction_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::DeleteChildResponse> {
        let contact = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let rec = self.interaction_of(&mut tx, c, contact, &r.id).await?;
        let del = INTERACTIONS.delete(&mut tx, c.tenant, rec.id, &c.ctx.actor, t).await?;
        lookup::sync(&mut tx, c.tenant, rec.id, &BTreeSet::new()).await?;
        let people = ids(&interaction_pb(&rec).participant_ids, "participant_ids")?.into_iter().collect();
        self.refresh_last_contacted(&mut tx, c, &people, t).await?;
        let out = pb::DeleteChildResponse { id: rec.id.to_string(), deleted: true };
        self.event(&mut tx, c, "interaction.deleted", rec.id, del.version, "DeleteChildResponse", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn due_for_contact_(&self, c: &Caller, r: pb::ListDueForContactRequest) -> Result<pb::ListDueForContactResponse> {
        let limit = cursor::limit(r.limit)? as usize;
        let t = now();
        let mut tx = self.read(c).await?;
        let owners = lookup::owners(&mut tx, c.tenant, "stay", "").await?;
        let heads = lookup::heads(&mut tx, c.tenant, CONTACTS.entity(), &owners).await?;
        let mut due: Vec<(DateTime<Utc>, Option<DateTime<Utc>>, Record)> = Vec::new();
        for h in heads {
            let doc = ContactDoc::from_value(&h.doc)?;
            let Some(days) = doc.stay_in_touch_days else { continue };
            let due_at = doc.last_contacted_at.map(|l| l + chrono::Duration::days(i64::from(days)));
            let from = due_at.unwrap_or(h.created_at);
            if from <= t {
                due.push((from, due_at, h));
            }
        }
        // Most overdue first: never contacted counts from creation.
        due.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.id.cmp(&b.2.id)));
        due.truncate(limit);
        let recs: Vec<Record> = due.iter().map(|d| d.2.clone()).collect();
        let contacts = self.contacts_out(&mut tx, c, &recs).await?;
        let data = due
            .iter()
            .zip(contacts)
            .map(|((from, due_at, _), contact)| pb::DueContact {
                contact: Some(contact),
                due_at: due_at.map(timestamp),
                days_overdue: (t - *from).num_days() as i32,
            })
            .collect();
        Ok(pb::ListDueForContactResponse { data })
    }

    // ---- tags ----

    async fn tag_by_name(&self, tx: &mut Tx, c: &Caller, name: &str) -> Result<Option<Record>> {
        lookup::by_field(tx, c.tenant, TAGS.entity(), "key", &tag_key(name)).await
    }

    async fn create_tag_in(&self, tx: &mut Tx, c: &Caller, name: &str, color: Option<&str>, t: DateTime<Utc>) -> Result<Record> {
        let name = text("name", name, 100)?.ok_or_else(|| Error::validation("name must not be empty"))?;
        let color = color.map(check_color).transpose()?.flatten();
        if self.tag_by_name(tx, c, &name).await?.is_some() {
            return Err(Error::new(ErrorCode::AlreadyExists, format!("a tag named {} exists", quote(&name))));
        }
        let id = Uuid::now_v7();
        let w = Write { doc: json!({"name": name, "key": tag_key(&name), "color": color}), search_text: name.clone(), valid_from: None, actor: c.ctx.actor.clone() };
        let rec = TAGS.create(tx, c.tenant, id, w, t).await?;
        self.event(tx, c, "tag.created", id, rec.version, "Tag", &tag_pb(&rec), t).await?;
        Ok(rec)
    }

    async fn create_tag_(&self, c: &Caller, r: pb::CreateTagRequest) -> Result<pb::Tag> {
        let t = now();
        let mut tx = self.begin(c).await?;
        let rec = self.create_tag_in(&mut tx, c, &r.name, r.color.as_deref(), t).await?;
        self.commit(tx).await?;
        Ok(tag_pb(&rec))
    }

    async fn list_tags_(&self, c: &Caller, _r: pb::ListTagsRequest) -> Result<pb::ListTagsResponse> {
        let mut tx = self.read(c).await?;
        let mut data: Vec<pb::Tag> = lookup::all(&mut tx, c.tenant, TAGS.entity()).await?.iter().map(tag_pb).collect();
        data.sort_by_key(|t| tag_key(&t.name));
        Ok(pb::ListTagsResponse { data })
    }

    async fn get_tag_(&self, c: &Caller, r: pb::GetTagRequest) -> Result<pb::Tag> {
        let id = uuid(&r.id, "id")?;
        let mut tx = self.read(c).await?;
        Ok(tag_pb(&TAGS.head(&mut tx, c.tenant, id).await?))
    }

    async fn update_tag_(&self, c: &Caller, r: pb::UpdateTagRequest) -> Result<pb::Tag> {
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let head = TAGS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let mut doc = head.doc.clone();
        if let Some(n) = &r.name {
            let name = text("name", n, 100)?.ok_or_else(|| Error::validation("name must not be empty"))?;
            if let Some(other) = self.tag_by_name(&mut tx, c, &name).await?
                && other.id != id
            {
                return Err(Error::new(ErrorCode::AlreadyExists, format!("a tag named {} exists", quote(&name))));
            }
            doc["key"] = Value::String(tag_key(&name));
            doc["name"] = Value::String(name);
        }
        if let Some(col) = &r.color {
            doc["color"] = check_color(col)?.map(Value::String).unwrap_or(Value::Null);
        }
        if doc == head.doc {
            return Ok(tag_pb(&head));
        }
        let w = Write { search_text: str_of(&doc, "name"), doc, valid_from: None, actor: c.ctx.actor.clone() };
        let rec = TAGS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        let tagged = lookup::owners(&mut tx, c.tenant, "tag", &id.to_string()).await?;
        self.refresh_search(&mut tx, c, &tagged).await?;
        let out = tag_pb(&rec);
        self.event(&mut tx, c, "tag.updated", id, rec.version, "Tag", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn delete_tag_(&self, c: &Caller, r: pb::GetTagRequest) -> Result<pb::DeleteChildResponse> {
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        TAGS.head_for_update(&mut tx, c.tenant, id, None).await?;
        for contact in lookup::owners(&mut tx, c.tenant, "tag", &id.to_string()).await? {
            let (head, mut doc) = self.lock(&mut tx, c, contact).await?;
            doc.tag_ids.retain(|x| *x != id.to_string());
            self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
        }
        let del = TAGS.delete(&mut tx, c.tenant, id, &c.ctx.actor, t).await?;
        let out = pb::DeleteChildResponse { id: id.to_string(), deleted: true };
        self.event(&mut tx, c, "tag.deleted", id, del.version, "DeleteChildResponse", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn tag_contact_(&self, c: &Caller, r: pb::TagContactRequest) -> Result<pb::Tag> {
        let id = uuid(&r.contact_id, "contact_id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let (head, mut doc) = self.lock(&mut tx, c, id).await?;
        let tag = match (&r.tag_id, &r.name) {
            (Some(tid), None) => TAGS.head(&mut tx, c.tenant, uuid(tid, "tag_id")?).await.map_err(|_| Error::validation("tag_id names no tag of this tenant"))?,
            (None, Some(name)) => match self.tag_by_name(&mut tx, c, name).await? {
                Some(t) => t,
                None => self.create_tag_in(&mut tx, c, name, None, t).await?,
            },
            _ => return Err(Error::validation("give exactly one of tag_id and name")),
        };
        let out = tag_pb(&tag);
        if !doc.tag_ids.contains(&out.id) {
            if doc.tag_ids.len() >= MAX_CHILDREN {
                return Err(Error::validation(format!("a contact has at most {MAX_CHILDREN} tags")));
            }
            doc.tag_ids.push(out.id.clone());
            let (rec, _) = self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
            self.event(&mut tx, c, "tag.attached", id, rec.version, "Tag", &out, t).await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }

    async fn list_contact_tags_(&self, c: &Caller, r: pb::ListChildrenRequest) -> Result<pb::ListTagsResponse> {
        let (mut tx, _, doc) = self.current(c, &r.contact_id).await?;
        let names = self.names(&mut tx, c.tenant, &[&doc]).await?;
        Ok(pb::ListTagsResponse { data: doc.tag_ids.iter().filter_map(|t| names.tags.get(t).cloned()).collect() })
    }

    async fn untag_contact_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::DeleteChildResponse> {
        self.remove_child(c, &r, "tag", |d| &mut d.tag_ids, |x| x.as_str()).await
    }

    // ---- groups ----

    async fn group_pb(&self, tx: &mut Tx, c: &Caller, r: &Record) -> Result<pb::Group> {
        let n = lookup::owners(tx, c.tenant, "group", &r.id.to_string()).await?.len() as i64;
        Ok(pb::Group {
            id: r.id.to_string(),
            name: str_of(&r.doc, "name"),
            description: opt_str(&r.doc, "description"),
            member_count: n,
            created_at: Some(timestamp(r.created_at)),
            updated_at: Some(timestamp(r.updated_at)),
        })
    }

    async fn create_group_(&self, c: &Caller, r: pb::CreateGroupRequest) -> Result<pb::Group> {
        let name = text("name", &r.name, 200)?.ok_or_else(|| Error::validation("name must not be empty"))?;
        let description = r.description.as_deref().map(|d| text("description", d, 2000)).transpose()?.flatten();
        let t = now();
        let mut tx = self.begin(c).await?;
        let id = Uuid::now_v7();
        let w = Write { doc: json!({"name": name, "description": description}), search_text: name.clone(), valid_from: None, actor: c.ctx.actor.clone() };
        let rec = GROUPS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = self.group_pb(&mut tx, c, &rec).await?;
        self.event(&mut tx, c, "group.created", id, rec.version, "Group", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn list_groups_(&self, c: &Caller, _r: pb::ListGroupsRequest) -> Result<pb::ListGroupsResponse> {
        let mut tx = self.read(c).await?;
        let mut data = Vec::new();
        for r in lookup::all(&mut tx, c.tenant, GROUPS.entity()).await? {
            data.push(self.group_pb(&mut tx, c, &r).await?);
        }
        data.sort_by_key(|a: &pb::Group| a.name.to_lowercase());
        Ok(pb::ListGroupsResponse { data })
    }

    async fn get_group_(&self, c: &Caller, r: pb::GetGroupRequest) -> Result<pb::Group> {
        let id = uuid(&r.id, "id")?;
        let mut tx = self.read(c).await?;
        let rec = GROUPS.head(&mut tx, c.tenant, id).await?;
        self.group_pb(&mut tx, c, &rec).await
    }

    async fn update_group_(&self, c: &Caller, r: pb::UpdateGroupRequest) -> Result<pb::Group> {
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let head = GROUPS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let mut doc = head.doc.clone();
        if let Some(n) = &r.name {
            doc["name"] = Value::String(text("name", n, 200)?.ok_or_else(|| Error::validation("name must not be empty"))?);
        }
        if let Some(d) = &r.description {
            doc["description"] = text("description", d, 2000)?.map(Value::String).unwrap_or(Value::Null);
        }
        let rec = if doc != head.doc {
            let w = Write { search_text: str_of(&doc, "name"), doc, valid_from: None, actor: c.ctx.actor.clone() };
            GROUPS.update_head(&mut tx, c.tenant, &head, w, t).await?
        } else {
            head.clone()
        };
        let out = self.group_pb(&mut tx, c, &rec).await?;
        if rec.version != head.version {
            self.event(&mut tx, c, "group.updated", id, rec.version, "Group", &out, t).await?;
        }
        self.commit(tx).await?;
        Ok(out)
    }

    async fn delete_group_(&self, c: &Caller, r: pb::GetGroupRequest) -> Result<pb::DeleteChildResponse> {
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        GROUPS.head_for_update(&mut tx, c.tenant, id, None).await?;
        for contact in lookup::owners(&mut tx, c.tenant, "group", &id.to_string()).await? {
            let (head, mut doc) = self.lock(&mut tx, c, contact).await?;
            doc.group_ids.retain(|x| *x != id.to_string());
            self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
        }
        let del = GROUPS.delete(&mut tx, c.tenant, id, &c.ctx.actor, t).await?;
        let out = pb::DeleteChildResponse { id: id.to_string(), deleted: true };
        self.event(&mut tx, c, "group.deleted", id, del.version, "DeleteChildResponse", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    /// Adds (`add`) or removes the members, all or nothing.
    async fn group_members(&self, c: &Caller, r: pb::GroupMembersRequest, add: bool) -> Result<pb::GroupMembersResponse> {
        let gid = uuid(&r.id, "id")?;
        if r.contact_ids.is_empty() || r.contact_ids.len() > MAX_BULK {
            return Err(Error::validation(format!("contact_ids must hold 1 to {MAX_BULK} ids")));
        }
        let mut wanted: Vec<Uuid> = Vec::new();
        for id in ids(&r.contact_ids, "contact_ids")? {
            if !wanted.contains(&id) {
                wanted.push(id);
            }
        }
        let t = now();
        let mut tx = self.begin(c).await?;
        let group = GROUPS.head_for_update(&mut tx, c.tenant, gid, None).await?;
        // Every id is checked before anything is written, and the whole change is one
        // transaction: one bad id changes nothing.
        self.require_contacts(&mut tx, c, &wanted, "contact_ids").await?;
        let (mut changed, mut unchanged) = (Vec::new(), Vec::new());
        let g = gid.to_string();
        for id in &wanted {
            let (head, mut doc) = self.lock(&mut tx, c, *id).await?;
            let member = doc.group_ids.contains(&g);
            if member == add {
                unchanged.push(id.to_string());
                continue;
            }
            if add {
                doc.group_ids.push(g.clone());
            } else {
                doc.group_ids.retain(|x| *x != g);
            }
            self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
            changed.push(id.to_string());
        }
        let out = pb::GroupMembersResponse { group: Some(self.group_pb(&mut tx, c, &group).await?), changed, unchanged };
        let what = if add { "group.members_added" } else { "group.members_removed" };
        self.event(&mut tx, c, what, gid, group.version, "GroupMembersResponse", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }
}

/// The trait impl: every RPC verifies the caller and hands the request to its method.
macro_rules! rpcs {
    ($($name:ident($req:ty) -> $resp:ty => $imp:ident $(, $arg:expr)?;)*) => {
        #[tonic::async_trait]
        impl ContactsService for Contacts {
            $(
                async fn $name(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                    let c = self.caller(&req)?;
                    Ok(Response::new(self.$imp(&c, req.into_inner() $(, $arg)?).await?))
                }
            )*
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
    };
}

impl Contacts {
    async fn list_addresses_(&self, c: &Caller, r: pb::ListChildrenRequest) -> Result<pb::ListAddressesResponse> {
        let (_, id, doc) = self.current(c, &r.contact_id).await?;
        Ok(pb::ListAddressesResponse { data: doc.addresses.iter().map(|a| a.to_pb(&id.to_string())).collect() })
    }
    async fn get_address_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::Address> {
        let (_, id, doc) = self.current(c, &r.contact_id).await?;
        doc.addresses.iter().find(|a| a.id == r.id).map(|a| a.to_pb(&id.to_string())).ok_or_else(|| Error::not_found("address"))
    }
    async fn delete_address_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::DeleteChildResponse> {
        self.remove_child(c, &r, "address", |d| &mut d.addresses, |x| x.id.as_str()).await
    }
    async fn list_dates_(&self, c: &Caller, r: pb::ListChildrenRequest) -> Result<pb::ListDatesResponse> {
        let (_, id, doc) = self.current(c, &r.contact_id).await?;
        Ok(pb::ListDatesResponse { data: doc.dates.iter().map(|a| a.to_pb(&id.to_string())).collect() })
    }
    async fn get_date_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::ContactDate> {
        let (_, id, doc) = self.current(c, &r.contact_id).await?;
        doc.dates.iter().find(|a| a.id == r.id).map(|a| a.to_pb(&id.to_string())).ok_or_else(|| Error::not_found("date"))
    }
    async fn delete_date_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::DeleteChildResponse> {
        self.remove_child(c, &r, "date", |d| &mut d.dates, |x| x.id.as_str()).await
    }
    async fn delete_channel_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::DeleteChildResponse> {
        self.remove_child(c, &r, "channel", |d| &mut d.channels, |x| x.id.as_str()).await
    }
    async fn delete_affiliation_(&self, c: &Caller, r: pb::ChildRequest) -> Result<pb::DeleteChildResponse> {
        self.remove_child(c, &r, "affiliation", |d| &mut d.affiliations, |x| x.id.as_str()).await
    }
}

rpcs! {
    create_contact(pb::CreateContactRequest) -> pb::Contact => create_contact_;
    get_contact(pb::GetContactRequest) -> pb::Contact => get_contact_;
    update_contact(pb::UpdateContactRequest) -> pb::Contact => update_contact_;
    delete_contact(pb::DeleteContactRequest) -> pb::DeleteContactResponse => delete_contact_;
    restore_contact(pb::RestoreContactRequest) -> pb::Contact => restore_contact_;
    list_contact_links(common::ListLinksRequest) -> common::ListLinksResponse => list_contact_links_;
    list_contacts(pb::ListContactsRequest) -> pb::ListContactsResponse => list_contacts_;
    find_contact_by_channel(pb::FindContactByChannelRequest) -> pb::Contact => find_by_channel_;
    list_upcoming_dates(pb::ListUpcomingDatesRequest) -> pb::ListUpcomingDatesResponse => upcoming_dates_;
    list_due_for_contact(pb::ListDueForContactRequest) -> pb::ListDueForContactResponse => due_for_contact_;
    get_contact_settings(pb::GetContactSettingsRequest) -> pb::ContactSettings => get_settings_;
    update_contact_settings(pb::UpdateContactSettingsRequest) -> pb::ContactSettings => update_settings_;
    add_channel(pb::AddChannelRequest) -> pb::Channel => add_channel_;
    list_channels(pb::ListChildrenRequest) -> pb::ListChannelsResponse => list_channels_;
    get_channel(pb::ChildRequest) -> pb::Channel => get_channel_;
    update_channel(pb::UpdateChannelRequest) -> pb::Channel => update_channel_;
    delete_channel(pb::ChildRequest) -> pb::DeleteChildResponse => delete_channel_;
    add_address(pb::AddressInput) -> pb::Address => put_address, true;
    list_addresses(pb::ListChildrenRequest) -> pb::ListAddressesResponse => list_addresses_;
    get_address(pb::ChildRequest) -> pb::Address => get_address_;
    update_address(pb::AddressInput) -> pb::Address => put_address, false;
    delete_address(pb::ChildRequest) -> pb::DeleteChildResponse => delete_address_;
    add_date(pb::DateInput) -> pb::ContactDate => put_date, true;
    list_dates(pb::ListChildrenRequest) -> pb::ListDatesResponse => list_dates_;
    get_date(pb::ChildRequest) -> pb::ContactDate => get_date_;
    update_date(pb::DateInput) -> pb::ContactDate => put_date, false;
    delete_date(pb::ChildRequest) -> pb::DeleteChildResponse => delete_date_;
    add_affiliation(pb::AffiliationInput) -> pb::Affiliation => put_affiliation, true;
    list_affiliations(pb::ListChildrenRequest) -> pb::ListAffiliationsResponse => list_affiliations_;
    get_affiliation(pb::ChildRequest) -> pb::Affiliation => get_affiliation_;
    update_affiliation(pb::AffiliationInput) -> pb::Affiliation => put_affiliation, false;
    delete_affiliation(pb::ChildRequest) -> pb::DeleteChildResponse => delete_affiliation_;
    list_organization_members(pb::ListChildrenRequest) -> pb::ListOrganizationMembersResponse => org_members_;
    create_relationship(pb::CreateRelationshipRequest) -> pb::Relationship => create_relationship_;
    list_relationships(pb::ListChildrenRequest) -> pb::ListRelationshipsResponse => list_relationships_;
    get_relationship(pb::ChildRequest) -> pb::Relationship => get_relationship_;
    update_relationship(pb::UpdateRelationshipRequest) -> pb::Relationship => update_relationship_;
    delete_relationship(pb::ChildRequest) -> pb::DeleteChildResponse => delete_relationship_;
    create_relationship_type(pb::CreateRelationshipTypeRequest) -> pb::RelationshipType => create_rel_type_;
    list_relationship_types(pb::ListRelationshipTypesRequest) -> pb::ListRelationshipTypesResponse => list_rel_types_;
    delete_relationship_type(pb::DeleteRelationshipTypeRequest) -> pb::DeleteChildResponse => delete_rel_type_;
    log_interaction(pb::LogInteractionRequest) -> pb::Interaction => log_interaction_;
    list_interactions(pb::ListChildrenRequest) -> pb::ListInteractionsResponse => list_interactions_;
    get_interaction(pb::ChildRequest) -> pb::Interaction => get_interaction_;
    update_interaction(pb::UpdateInteractionRequest) -> pb::Interaction => update_interaction_;
    delete_interaction(pb::ChildRequest) -> pb::DeleteChildResponse => delete_interaction_;
    create_tag(pb::CreateTagRequest) -> pb::Tag => create_tag_;
    list_tags(pb::ListTagsRequest) -> pb::ListTagsResponse => list_tags_;
    get_tag(pb::GetTagRequest) -> pb::Tag => get_tag_;
    update_tag(pb::UpdateTagRequest) -> pb::Tag => update_tag_;
    delete_tag(pb::GetTagRequest) -> pb::DeleteChildResponse => delete_tag_;
    tag_contact(pb::TagContactRequest) -> pb::Tag => tag_contact_;
    list_contact_tags(pb::ListChildrenRequest) -> pb::ListTagsResponse => list_contact_tags_;
    untag_contact(pb::ChildRequest) -> pb::DeleteChildResponse => untag_contact_;
    create_group(pb::CreateGroupRequest) -> pb::Group => create_group_;
    list_groups(pb::ListGroupsRequest) -> pb::ListGroupsResponse => list_groups_;
    get_group(pb::GetGroupRequest) -> pb::Group => get_group_;
    update_group(pb::UpdateGroupRequest) -> pb::Group => update_group_;
    delete_group(pb::GetGroupRequest) -> pb::DeleteChildResponse => delete_group_;
    add_group_members(pb::GroupMembersRequest) -> pb::GroupMembersResponse => group_members, true;
    remove_group_members(pb::GroupMembersRequest) -> pb::GroupMembersResponse => group_members, false;
    import_contacts(pb::ImportContactsRequest) -> pb::ImportJob => import_contacts_;
    list_duplicates(pb::ListDuplicatesRequest) -> pb::ListDuplicatesResponse => list_duplicates_;
    preview_merge(pb::MergeContactsRequest) -> pb::MergePreview => preview_merge_;
    merge_contacts(pb::MergeContactsRequest) -> pb::MergeResult => merge_contacts_;
    undo_merge(pb::UndoMergeRequest) -> pb::UndoMergeResponse => undo_merge_;
    get_import_job(pb::GetImportJobRequest) -> pb::ImportJob => get_import_job_;
    export_contact_vcard(pb::ExportContactVcardRequest) -> pb::VcardData => export_contact_vcard_;
    export_contacts(pb::ExportContactsRequest) -> pb::VcardData => export_contacts_;
}
