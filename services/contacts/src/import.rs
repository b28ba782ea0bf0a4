//! vCard import (a job with progress and a per-card report) and export.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Tx, now};
use worktruck_kit::pbjson::{timestamp, uuid};
use worktruck_kit::rpc::Caller;
use worktruck_kit::store::{Record, Store, Write};
use worktruck_kit::{Error, Result};
use worktruck_proto::contacts::v1 as pb;

use crate::children::{AddressDoc, AffiliationDoc, ChannelDoc, DateDoc, canonical, check_region};
use crate::domain::ContactDoc;
use crate::lookup;
use crate::service::{CONTACTS, Contacts, TAGS};
use crate::vcard::{Card, parse_file, to_vcard};

/// Import jobs.
pub const IMPORTS: Store = Store::new("contact_import");

/// Files up to this many cards are imported before the answer.
const SYNC_CARDS: usize = 1000;
/// Cards per transaction (and per progress update).
const CHUNK: usize = 200;

enum Outcome {
    Created(String),
    Updated(String),
    Skipped(String),
}

fn job_pb(r: &Record) -> pb::ImportJob {
    let d = &r.doc;
    let strs = |f: &str| {
        d.get(f).and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
    };
    pb::ImportJob {
        id: r.id.to_string(),
        status: d["status"].as_str().unwrap_or_default().to_owned(),
        total: d["total"].as_i64().unwrap_or_default() as i32,
        processed: d["processed"].as_i64().unwrap_or_default() as i32,
        created: strs("created"),
        updated: strs("updated"),
        skipped: d
            .get("skipped")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|s| pb::SkippedCard {
                        index: s["index"].as_i64().unwrap_or_default() as i32,
                        uid: s["uid"].as_str().map(str::to_owned),
                        reason: s["reason"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        error: d["error"].as_str().map(str::to_owned),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

impl Contacts {
    /// The contact a card stands for: by UID, then by canonical email or phone.
    async fn match_card(&self, tx: &mut Tx, c: &Caller, card: &Card, region: Option<&str>) -> Result<Option<Uuid>> {
        if let Some(uid) = &card.uid
            && let Some(r) = lookup::by_field(tx, c.tenant, CONTACTS.entity(), "vcard_uid", uid).await?
        {
            return Ok(Some(r.id));
        }
        // An organization's card is the organization of that name, if one exists.
        if card.kind == "organization"
            && let Some(r) = lookup::by_field(tx, c.tenant, CONTACTS.entity(), "display_name", &card.display_name).await?
            && r.doc["kind"] == "organization"
        {
            return Ok(Some(r.id));
        }
        for (kind, value, ..) in card.channels.iter().filter(|x| x.0 == "email" || x.0 == "phone") {
            let Ok(key) = canonical(kind, value, region) else { continue };
            let owners = lookup::owners(tx, c.tenant, kind, &key).await?;
            if let Some(r) = lookup::heads(tx, c.tenant, CONTACTS.entity(), &owners).await?.into_iter().min_by_key(|r| (r.created_at, r.id))
            {
                return Ok(Some(r.id));
            }
        }
        Ok(None)
    }

    /// Applies one card; organizations it names that did not exist are created and pushed
    /// to `also_created`.
    async fn apply_card(
        &self,
        tx: &mut Tx,
        c: &Caller,
        card: &Card,
        region: Option<&str>,
        t: DateTime<Utc>,
        also_created: &mut Vec<String>,
    ) -> Result<Outcome> {
        let existing = self.match_card(tx, c, card, region).await?;
        let field = |f: &str| card.fields.iter().find(|x| x.0 == f).map(|x| x.1.clone());
        let (head, mut doc) = match existing {
            Some(id) => {
                let (head, doc) = self.lock(tx, c, id).await?;
                let upd = pb::UpdateContactRequest {
                    display_name: Some(card.display_name.clone()),
                    given_name: field("given_name"),
                    middle_name: field("middle_name"),
                    family_name: field("family_name"),
                    prefix: field("prefix"),
                    suffix: field("suffix"),
                    nickname: field("nickname"),
                    bio: field("bio"),
                    avatar_url: field("avatar_url"),
                    vcard_uid: card.uid.clone(),
                    ..Default::default()
                };
                match doc.apply(&upd) {
                    Ok(d) => (Some(head), d),
                    Err(e) => return Ok(Outcome::Skipped(e.message)),
                }
            }
            None => {
                let kind = if card.kind == "organization" { pb::ContactKind::Organization } else { pb::ContactKind::Person };
                let create = pb::CreateContactRequest {
                    kind: kind as i32,
                    display_name: card.display_name.clone(),
                    given_name: field("given_name"),
                    middle_name: field("middle_name"),
                    family_name: field("family_name"),
                    prefix: field("prefix"),
                    suffix: field("suffix"),
                    nickname: field("nickname"),
                    bio: field("bio"),
                    avatar_url: field("avatar_url"),
                    vcard_uid: card.uid.clone(),
                    ..Default::default()
                };
                match ContactDoc::from_create(&create) {
                    Ok(d) => (None, d),
                    Err(e) => return Ok(Outcome::Skipped(e.message)),
                }
            }
        };
        for (kind, value, label, pref) in &card.channels {
            let (kind, value, label) = match canonical(kind, value, region) {
                Ok(_) => (*kind, value.clone(), label.clone()),
                // A value that cannot be canonicalised is kept, as a custom channel named by its type.
                Err(_) if !value.trim().is_empty() => {
                    ("custom", value.clone(), Some(label.clone().map_or((*kind).to_owned(), |l| format!("{kind},{l}"))))
                }
                Err(_) => continue,
            };
            let Ok(key) = canonical(kind, &value, region) else { continue };
            if doc.channels.iter().any(|x| x.kind == kind && x.canonical_value == key) {
                continue;
            }
            let primary = *pref && !doc.channels.iter().any(|x| x.kind == kind && x.is_primary);
            let r = pb::AddChannelRequest {
                r#type: match kind {
                    "email" => pb::ChannelType::Email,
                    "phone" => pb::ChannelType::Phone,
                    "url" => pb::ChannelType::Url,
                    "twitter" => pb::ChannelType::Twitter,
                    "linkedin" => pb::ChannelType::Linkedin,
                    "im" => pb::ChannelType::Im,
                    _ => pb::ChannelType::Custom,
                } as i32,
                value,
                label,
                is_primary: Some(primary),
                ..Default::default()
            };
            if let Ok(ch) = ChannelDoc::new(&r, region, t) {
                doc.channels.push(ch);
            }
        }
        for a in &card.addresses {
            let Ok(mut new) = AddressDoc::default().apply(a, t) else { continue };
            let same = |x: &AddressDoc| {
                (&x.street, &x.city, &x.postal_code, &x.country) == (&new.street, &new.city, &new.postal_code, &new.country)
            };
            if doc.addresses.iter().any(same) {
                continue;
            }
            new.is_primary = new.is_primary && !doc.addresses.iter().any(|x| x.is_primary);
            doc.addresses.push(new);
        }
        for (ty, day, month, year, label) in &card.dates {
            let input = pb::DateInput {
                date_type: Some(ty.clone()),
                date_day: Some(*day),
                date_month: Some(*month),
                date_year: *year,
                date_label: label.clone(),
                ..Default::default()
            };
            let Ok(d) = DateDoc::new(&input, t) else { continue };
            if !doc
                .dates
                .iter()
                .any(|x| (&x.date_type, x.date_day, x.date_month, x.date_year) == (&d.date_type, d.date_day, d.date_month, d.date_year))
            {
                doc.dates.push(d);
            }
        }
        if let Some((org, unit, title, role)) = card.org.as_ref().filter(|o| !o.0.is_empty()) {
            let found =
                lookup::by_field(tx, c.tenant, CONTACTS.entity(), "display_name", org).await?.filter(|r| r.doc["kind"] == "organization");
            let org_id = match found {
                Some(r) => r.id.to_string(),
                None => {
                    let od = ContactDoc::from_create(&pb::CreateContactRequest {
                        kind: pb::ContactKind::Organization as i32,
                        display_name: org.clone(),
                        ..Default::default()
                    });
                    match od {
                        Ok(od) => {
                            let id = self.insert_contact(tx, c, &od, None, t).await?.id;
                            also_created.push(id.clone());
                            id
                        }
                        Err(e) => return Ok(Outcome::Skipped(e.message)),
                    }
                }
            };
            if !doc.affiliations.iter().any(|a| a.organization_id == org_id) {
                let input = pb::AffiliationInput {
                    organization_id: Some(org_id),
                    title: title.clone(),
                    role: role.clone(),
                    department: unit.clone(),
                    ..Default::default()
                };
                if let Ok(a) = AffiliationDoc::default().apply(&input, t) {
                    doc.affiliations.push(a);
                }
            }
        }
        for name in &card.categories {
            let tag = match lookup::by_field(
                tx,
                c.tenant,
                TAGS.entity(),
                "key",
                &name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase(),
            )
            .await?
            {
                Some(t) => t.id.to_string(),
                None => match self.create_tag_for_import(tx, c, name, t).await {
                    Ok(r) => r.id.to_string(),
                    Err(_) => continue,
                },
            };
            if !doc.tag_ids.contains(&tag) {
                doc.tag_ids.push(tag);
            }
        }
        Ok(match head {
            None => Outcome::Created(self.insert_contact(tx, c, &doc, None, t).await?.id),
            Some(head) => {
                let (rec, _) = self.write_contact(tx, c, &head, &doc, None, t).await?;
                if rec.version == head.version {
                    Outcome::Skipped("unchanged: the contact already holds the card".into())
                } else {
                    Outcome::Updated(rec.id.to_string())
                }
            }
        })
    }

    async fn run_import(
        &self,
        c: Caller,
        job: Uuid,
        cards: Vec<std::result::Result<calcard::vcard::VCard, String>>,
        region: Option<String>,
    ) -> Result<Record> {
        let total = cards.len();
        let mut done = 0;
        let mut last = None;
        for chunk in cards.chunks(CHUNK) {
            let t = now();
            let mut tx = self.begin(&c).await?;
            let head = IMPORTS.head_for_update(&mut tx, c.tenant, job, None).await?;
            let mut doc = head.doc.clone();
            for (i, card) in chunk.iter().enumerate() {
                let index = done + i;
                let parsed = card.as_ref().map_err(Clone::clone).and_then(Card::from_vcard);
                let uid = parsed.as_ref().ok().and_then(|p| p.uid.clone());
                let mut orgs = Vec::new();
                let outcome = match parsed {
                    Err(reason) => Outcome::Skipped(reason),
                    Ok(card) => self.apply_card(&mut tx, &c, &card, region.as_deref(), t, &mut orgs).await?,
                };
                doc["created"].as_array_mut().expect("array").extend(orgs.into_iter().map(Value::String));
                match outcome {
                    Outcome::Created(id) => doc["created"].as_array_mut().expect("array").push(Value::String(id)),
                    Outcome::Updated(id) => doc["updated"].as_array_mut().expect("array").push(Value::String(id)),
                    Outcome::Skipped(reason) => {
                        doc["skipped"].as_array_mut().expect("array").push(json!({"index": index, "uid": uid, "reason": reason}))
                    }
                }
            }
            done += chunk.len();
            doc["processed"] = json!(done);
            if done == total {
                doc["status"] = json!("completed");
            }
            let w = Write { doc, search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
            let rec = IMPORTS.update_head(&mut tx, c.tenant, &head, w, t).await?;
            if done == total {
                self.event(&mut tx, &c, "import.completed", job, rec.version, "ImportJob", &job_pb(&rec), t).await?;
            }
            self.commit(tx).await?;
            last = Some(rec);
        }
        last.ok_or_else(|| Error::internal("an import without cards"))
    }

    pub(crate) async fn import_contacts_(&self, c: &Caller, r: pb::ImportContactsRequest) -> Result<pb::ImportJob> {
        let region = r.region.as_deref().map(check_region).transpose()?;
        // Nothing is written for a file that is not vCard.
        let cards = parse_file(&r.vcard)?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let region = match region {
            Some(r) => Some(r),
            None => crate::service::tenant_region_of(&mut tx, c).await?,
        };
        let id = Uuid::now_v7();
        let doc = json!({"status": "running", "total": cards.len(), "processed": 0, "created": [], "updated": [], "skipped": []});
        let w = Write { doc, search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
        let rec = IMPORTS.create(&mut tx, c.tenant, id, w, t).await?;
        self.commit(tx).await?;
        if cards.len() <= SYNC_CARDS {
            return Ok(job_pb(&self.run_import(c.clone(), id, cards, region).await?));
        }
        let (svc, caller) = (self.clone(), c.clone());
        tokio::spawn(async move {
            if let Err(e) = svc.run_import(caller.clone(), id, cards, region).await {
                tracing::warn!(job = %id, error = %e.message, "vCard import failed");
                svc.fail_import(&caller, id, &e.message).await;
            }
        });
        Ok(job_pb(&rec))
    }

    async fn fail_import(&self, c: &Caller, id: Uuid, why: &str) {
        let attempt = async {
            let mut tx = self.begin(c).await?;
            let head = IMPORTS.head_for_update(&mut tx, c.tenant, id, None).await?;
            let mut doc = head.doc.clone();
            doc["status"] = json!("failed");
            doc["error"] = json!(why);
            let w = Write { doc, search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
            IMPORTS.update_head(&mut tx, c.tenant, &head, w, now()).await?;
            self.commit(tx).await
        };
        if let Err(e) = attempt.await {
            tracing::warn!(job = %id, error = %e.message, "cannot record a failed import");
        }
    }

    pub(crate) async fn get_import_job_(&self, c: &Caller, r: pb::GetImportJobRequest) -> Result<pb::ImportJob> {
        let id = uuid(&r.id, "id")?;
        let mut tx = self.db.begin(worktruck_kit::db::Scope::Tenant(c.tenant), false).await?;
        Ok(job_pb(&IMPORTS.head(&mut tx, c.tenant, id).await?))
    }

    pub(crate) async fn export_contact_vcard_(&self, c: &Caller, r: pb::ExportContactVcardRequest) -> Result<pb::VcardData> {
        let id = uuid(&r.id, "id")?;
        let mut tx = self.db.begin(worktruck_kit::db::Scope::Tenant(c.tenant), false).await?;
        let rec = CONTACTS.head(&mut tx, c.tenant, id).await?;
        let contact = self.contact_out(&mut tx, c, &rec).await?;
        Ok(pb::VcardData { vcard: to_vcard(&contact), next_cursor: String::new(), count: 1 })
    }

    pub(crate) async fn export_contacts_(&self, c: &Caller, r: pb::ExportContactsRequest) -> Result<pb::VcardData> {
        let scope = "contacts:export";
        let limit = cursor::limit(r.limit)?;
        let after = match cursor::decode_opt(r.cursor.as_deref(), scope)? {
            None => None,
            Some(Cursor::TimeId(t, id)) => Some((t, id)),
            Some(_) => return Err(Error::invalid("invalid cursor for this listing")),
        };
        let mut tx = self.db.begin(worktruck_kit::db::Scope::Tenant(c.tenant), false).await?;
        let mut rows = lookup::list(&mut tx, c.tenant, &lookup::Filter::default(), after, limit).await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| Cursor::TimeId(r.updated_at, r.id).encode(scope))
        } else {
            None
        };
        let contacts = self.contacts_out(&mut tx, c, &rows).await?;
        Ok(pb::VcardData {
            vcard: contacts.iter().map(to_vcard).collect(),
            next_cursor: next.unwrap_or_default(),
            count: contacts.len() as i32,
        })
    }
}
