//! Duplicates (shared canonical emails and phones, similar names by Jaro-Winkler, shared
//! organizations), merge preview, merge as one recorded operation, and its exact undo.
//!
//! A merge records, in a `contact_merge` entity, every document it replaced (the contacts, the
//! relationships and interactions it re-pointed, the people whose affiliations it re-pointed)
//! and the version it left each at. Undo checks that each is still at that version (else 409)
//! and writes the recorded documents back, restoring what it deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};
use uuid::Uuid;
use worktruck_kit::cursor;
use worktruck_kit::db::{Scope, Tx, now};
use worktruck_kit::pbjson::uuid;
use worktruck_kit::rpc::Caller;
use worktruck_kit::store::{Record, Store, Write};
use worktruck_kit::{Error, Result};
use worktruck_proto::contacts::v1 as pb;

use crate::children::{check_addresses, check_channels};
use crate::domain::{ContactDoc, OPTIONAL_FIELDS, contact_pb};
use crate::lookup::{self, contact_keys};
use crate::service::{CONTACTS, Contacts, INTERACTIONS, RELATIONSHIPS};

/// Merges and what they replaced.
pub const MERGES: Store = Store::new("contact_merge");

/// Most contacts merged into one at a time.
const MAX_MERGED: usize = 10;

fn norm_name(s: &str) -> String {
    s.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

fn parse_doc(v: &Value) -> Result<ContactDoc> {
    ContactDoc::from_value(v)
}

/// The survivor's document after taking `fields` from the others and the union of their children.
fn merged_doc(survivor: (Uuid, &ContactDoc), others: &[(Uuid, ContactDoc)], fields: &HashMap<String, String>) -> Result<ContactDoc> {
    let (sid, s) = survivor;
    let all: Vec<(Uuid, &ContactDoc)> = std::iter::once((sid, s)).chain(others.iter().map(|(i, d)| (*i, d))).collect();
    let by_id = |id: &str| -> Result<&ContactDoc> {
        let id = uuid(id, "fields")?;
        all.iter()
            .find(|(i, _)| *i == id)
            .map(|(_, d)| *d)
            .ok_or_else(|| Error::validation(format!("fields names {id}, which is not in the merge")))
    };
    for f in fields.keys() {
        if f != "display_name" && f != "stay_in_touch_days" && !OPTIONAL_FIELDS.iter().any(|(n, _)| n == f) {
            return Err(Error::validation(format!("fields: {f} is not a field a merge chooses")));
        }
    }
    let mut m = s.clone();
    if let Some(id) = fields.get("display_name") {
        m.display_name = by_id(id)?.display_name.clone();
    }
    for (f, _) in OPTIONAL_FIELDS {
        let chosen = match fields.get(*f) {
            Some(id) => by_id(id)?.optional.get(*f).cloned(),
            None => s.optional.get(*f).cloned().or_else(|| others.iter().find_map(|(_, d)| d.optional.get(*f).cloned())),
        };
        match chosen {
            Some(v) => m.optional.insert((*f).to_owned(), v),
            None => m.optional.remove(*f),
        };
    }
    m.stay_in_touch_days = match fields.get("stay_in_touch_days") {
        Some(id) => by_id(id)?.stay_in_touch_days,
        None => s.stay_in_touch_days.or_else(|| others.iter().filter_map(|(_, d)| d.stay_in_touch_days).min()),
    };
    let other_ids: BTreeSet<String> = others.iter().map(|(i, _)| i.to_string()).collect();
    for (_, d) in others {
        for c in &d.channels {
            if !m.channels.iter().any(|x| x.kind == c.kind && x.canonical_value == c.canonical_value) {
                let mut c = c.clone();
                c.is_primary = c.is_primary && !m.channels.iter().any(|x| x.kind == c.kind && x.is_primary);
                m.channels.push(c);
            }
        }
        for a in &d.addresses {
            if !m
                .addresses
                .iter()
                .any(|x| (&x.street, &x.city, &x.postal_code, &x.country) == (&a.street, &a.city, &a.postal_code, &a.country))
            {
                let mut a = a.clone();
                a.is_primary = a.is_primary && !m.addresses.iter().any(|x| x.is_primary);
                m.addresses.push(a);
            }
        }
        for x in &d.dates {
            if !m
                .dates
                .iter()
                .any(|y| (&y.date_type, y.date_day, y.date_month, y.date_year) == (&x.date_type, x.date_day, x.date_month, x.date_year))
            {
                m.dates.push(x.clone());
            }
        }
        for a in &d.affiliations {
            let org = if other_ids.contains(&a.organization_id) { sid.to_string() } else { a.organization_id.clone() };
            if org != sid.to_string() && !m.affiliations.iter().any(|y| y.organization_id == org && y.title == a.title) {
                m.affiliations.push(a.clone());
            }
        }
        for t in &d.tag_ids {
            if !m.tag_ids.contains(t) {
                m.tag_ids.push(t.clone());
            }
        }
        for g in &d.group_ids {
            if !m.group_ids.contains(g) {
                m.group_ids.push(g.clone());
            }
        }
        m.last_contacted_at = m.last_contacted_at.max(d.last_contacted_at);
        let mut meta: Map<String, Value> = d.metadata.as_object().cloned().unwrap_or_default();
        meta.extend(m.metadata.as_object().cloned().unwrap_or_default());
        m.metadata = Value::Object(meta);
    }
    check_channels(&m.channels)?;
    check_addresses(&m.addresses)?;
    Ok(m)
}

/// What a merge changes besides the contacts: (relationships, interactions, affiliated people).
struct Plan {
    survivor: Record,
    others: Vec<(Record, ContactDoc)>,
    doc: ContactDoc,
    relationships: Vec<Record>,
    interactions: Vec<Record>,
    affiliated: Vec<Record>,
}

impl Contacts {
    async fn read_head(tx: &mut Tx, c: &Caller, id: Uuid, lock: bool) -> Result<Record> {
        if lock { CONTACTS.head_for_update(tx, c.tenant, id, None).await } else { CONTACTS.head(tx, c.tenant, id).await }
    }

    async fn plan(&self, tx: &mut Tx, c: &Caller, r: &pb::MergeContactsRequest, lock: bool) -> Result<Plan> {
        let sid = uuid(&r.survivor_id, "survivor_id")?;
        let mut ids: Vec<Uuid> = Vec::new();
        for m in &r.merged_ids {
            let id = uuid(m, "merged_ids")?;
            if id == sid {
                return Err(Error::validation("merged_ids must not hold the survivor"));
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() || ids.len() > MAX_MERGED {
            return Err(Error::validation(format!("merged_ids must hold 1 to {MAX_MERGED} ids")));
        }
        let survivor = Self::read_head(tx, c, sid, lock).await?;
        let mut others = Vec::new();
        for id in &ids {
            let rec = Self::read_head(tx, c, *id, lock)
                .await
                .map_err(|_| Error::validation(format!("merged_ids: no contact of this tenant has the id {id}")))?;
            let doc = parse_doc(&rec.doc)?;
            others.push((rec, doc));
        }
        let sdoc = parse_doc(&survivor.doc)?;
        let pairs: Vec<(Uuid, ContactDoc)> = others.iter().map(|(r, d)| (r.id, d.clone())).collect();
        let fields: HashMap<String, String> = r.fields.clone().into_iter().collect();
        let doc = merged_doc((sid, &sdoc), &pairs, &fields)?;
        let mut rel_ids = BTreeSet::new();
        let mut int_ids = BTreeSet::new();
        let mut aff_ids = BTreeSet::new();
        for id in &ids {
            rel_ids.extend(lookup::owners(tx, c.tenant, "rel", &id.to_string()).await?);
            int_ids.extend(lookup::owners(tx, c.tenant, "participant", &id.to_string()).await?);
            aff_ids.extend(lookup::owners(tx, c.tenant, "org", &id.to_string()).await?);
        }
        aff_ids.remove(&sid);
        for id in &ids {
            aff_ids.remove(id);
        }
        let relationships = lookup::heads(tx, c.tenant, RELATIONSHIPS.entity(), &rel_ids.into_iter().collect::<Vec<_>>()).await?;
        let interactions = lookup::heads(tx, c.tenant, INTERACTIONS.entity(), &int_ids.into_iter().collect::<Vec<_>>()).await?;
        let affiliated = lookup::heads(tx, c.tenant, CONTACTS.entity(), &aff_ids.into_iter().collect::<Vec<_>>()).await?;
        Ok(Plan { survivor, others, doc, relationships, interactions, affiliated })
    }

    pub(crate) async fn preview_merge_(&self, c: &Caller, r: pb::MergeContactsRequest) -> Result<pb::MergePreview> {
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let p = self.plan(&mut tx, c, &r, false).await?;
        let names = self.names(&mut tx, c.tenant, &[&p.doc]).await?;
        let rec = Record { doc: p.doc.to_value(), ..p.survivor.clone() };
        Ok(pb::MergePreview {
            contact: Some(contact_pb(&c.tenant.to_string(), &rec, &names)?),
            relationships: p.relationships.len() as i32,
            interactions: p.interactions.len() as i32,
            affiliations: p.affiliated.len() as i32,
        })
    }

    pub(crate) async fn merge_contacts_(&self, c: &Caller, r: pb::MergeContactsRequest) -> Result<pb::MergeResult> {
        let t = now();
        let mut tx = self.begin(c).await?;
        let p = self.plan(&mut tx, c, &r, true).await?;
        let sid = p.survivor.id;
        let merged: BTreeSet<String> = p.others.iter().map(|(r, _)| r.id.to_string()).collect();
        let mut before = json!({"contacts": {}, "relationships": {}, "interactions": {}});
        let mut after: BTreeMap<String, i64> = BTreeMap::new();
        before["contacts"][sid.to_string()] = p.survivor.doc.clone();
        let (srec, out) = self.write_contact(&mut tx, c, &p.survivor, &p.doc, None, t).await?;
        after.insert(sid.to_string(), srec.version);
        // People affiliated with a merged organization are affiliated with the survivor.
        for rec in &p.affiliated {
            let (head, mut doc) = self.lock(&mut tx, c, rec.id).await?;
            before["contacts"][rec.id.to_string()] = head.doc.clone();
            for a in doc.affiliations.iter_mut().filter(|a| merged.contains(&a.organization_id)) {
                a.organization_id = sid.to_string();
            }
            let (r2, _) = self.write_contact(&mut tx, c, &head, &doc, None, t).await?;
            after.insert(rec.id.to_string(), r2.version);
        }
        // Relationships move to the survivor; one that would relate it to itself, or repeat one
        // it has, goes.
        let mut kept: Vec<(String, String, String)> = Vec::new();
        for id in lookup::owners(&mut tx, c.tenant, "rel", &sid.to_string()).await? {
            if let Ok(rel) = RELATIONSHIPS.head(&mut tx, c.tenant, id).await {
                let g = |f: &str| rel.doc[f].as_str().unwrap_or_default().to_owned();
                kept.push((g("from_id"), g("to_id"), g("type")));
            }
        }
        for rel in &p.relationships {
            let head = RELATIONSHIPS.head_for_update(&mut tx, c.tenant, rel.id, None).await?;
            before["relationships"][rel.id.to_string()] = head.doc.clone();
            let mut doc = head.doc.clone();
            for f in ["from_id", "to_id"] {
                if doc[f].as_str().is_some_and(|v| merged.contains(v)) {
                    doc[f] = json!(sid.to_string());
                }
            }
            let key = (
                doc["from_id"].as_str().unwrap_or_default().to_owned(),
                doc["to_id"].as_str().unwrap_or_default().to_owned(),
                doc["type"].as_str().unwrap_or_default().to_owned(),
            );
            let rec = if key.0 == key.1 || kept.contains(&key) {
                let d = RELATIONSHIPS.delete(&mut tx, c.tenant, rel.id, &c.ctx.actor, t).await?;
                lookup::sync(&mut tx, c.tenant, rel.id, &BTreeSet::new()).await?;
                d
            } else {
                kept.push(key);
                let w = Write { doc: doc.clone(), search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
                let d = RELATIONSHIPS.update_head(&mut tx, c.tenant, &head, w, t).await?;
                lookup::sync(&mut tx, c.tenant, rel.id, &Self::relationship_keys(&doc)).await?;
                d
            };
            after.insert(rel.id.to_string(), rec.version);
        }
        for int in &p.interactions {
            let head = INTERACTIONS.head_for_update(&mut tx, c.tenant, int.id, None).await?;
            before["interactions"][int.id.to_string()] = head.doc.clone();
            let mut doc = head.doc.clone();
            let mut people: Vec<String> = Vec::new();
            for p in doc["participant_ids"].as_array().cloned().unwrap_or_default().iter().filter_map(Value::as_str) {
                let p = if merged.contains(p) { sid.to_string() } else { p.to_owned() };
                if !people.contains(&p) {
                    people.push(p);
                }
            }
            doc["participant_ids"] = json!(people);
            let w = Write {
                doc,
                search_text: head.doc["summary"].as_str().unwrap_or_default().to_owned(),
                valid_from: None,
                actor: c.ctx.actor.clone(),
            };
            let rec = INTERACTIONS.update_head(&mut tx, c.tenant, &head, w, t).await?;
            lookup::sync(&mut tx, c.tenant, int.id, &Self::interaction_keys(&people)).await?;
            after.insert(int.id.to_string(), rec.version);
        }
        for (rec, _) in &p.others {
            before["contacts"][rec.id.to_string()] = rec.doc.clone();
            let d = CONTACTS.delete(&mut tx, c.tenant, rec.id, &c.ctx.actor, t).await?;
            lookup::sync(&mut tx, c.tenant, rec.id, &BTreeSet::new()).await?;
            let gone = self.contact_out(&mut tx, c, &d).await?;
            self.event(&mut tx, c, "contact.deleted", rec.id, d.version, "Contact", &gone, t).await?;
            // Links to a merged contact dangle (an undo revives them); they are not re-pointed.
            self.links.target_changed(&mut tx, c, CONTACTS.entity(), rec.id, true, d.version, t).await?;
            after.insert(rec.id.to_string(), d.version);
        }
        let merge_id = Uuid::now_v7();
        let merged_ids: Vec<String> = p.others.iter().map(|(r, _)| r.id.to_string()).collect();
        let doc = json!({"status": "applied", "survivor_id": sid.to_string(), "merged_ids": merged_ids, "before": before, "after": after});
        let w = Write { doc, search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
        let mrec = MERGES.create(&mut tx, c.tenant, merge_id, w, t).await?;
        let result = pb::MergeResult { merge_id: merge_id.to_string(), contact: Some(out), merged_ids };
        self.event(&mut tx, c, "contact.merged", sid, mrec.version, "MergeResult", &result, t).await?;
        self.commit(tx).await?;
        Ok(result)
    }

    pub(crate) async fn undo_merge_(&self, c: &Caller, r: pb::UndoMergeRequest) -> Result<pb::UndoMergeResponse> {
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.begin(c).await?;
        let head = MERGES.head_for_update(&mut tx, c.tenant, id, None).await?;
        if head.doc["status"] != "applied" {
            return Err(Error::conflict("the merge was already undone"));
        }
        let after: BTreeMap<String, i64> = serde_json::from_value(head.doc["after"].clone()).map_err(Error::internal)?;
        let before = head.doc["before"].clone();
        let entity_of = |k: &str, key: &str| -> Option<Store> {
            before[k].get(key).map(|_| match k {
                "contacts" => CONTACTS,
                "relationships" => RELATIONSHIPS,
                _ => INTERACTIONS,
            })
        };
        // Refused, with nothing written, when anything the merge touched moved on since.
        for (key, version) in &after {
            let store = ["contacts", "relationships", "interactions"]
                .iter()
                .find_map(|k| entity_of(k, key))
                .ok_or_else(|| Error::internal("merge record"))?;
            let eid = uuid(key, "id")?;
            let now_at = lookup::head_any(&mut tx, c.tenant, store.entity(), eid).await?.map(|h| h.0);
            if now_at != Some(*version) {
                return Err(Error::conflict(format!("{} {eid} changed since the merge; it cannot be undone", store.entity())));
            }
        }
        let mut restored = Vec::new();
        let survivor = uuid(head.doc["survivor_id"].as_str().unwrap_or_default(), "survivor_id")?;
        for (key, doc) in before["contacts"].as_object().cloned().unwrap_or_default() {
            let cid = uuid(&key, "id")?;
            let old = parse_doc(&doc)?;
            let (_, deleted, _) =
                lookup::head_any(&mut tx, c.tenant, CONTACTS.entity(), cid).await?.ok_or_else(|| Error::internal("merge record"))?;
            let rec = if deleted {
                let names = self.names(&mut tx, c.tenant, &[&old]).await?;
                let terms: Vec<String> = old
                    .tag_ids
                    .iter()
                    .filter_map(|t| names.tags.get(t))
                    .map(|t| t.name.clone())
                    .chain(old.affiliations.iter().filter_map(|a| names.orgs.get(&a.organization_id)).cloned())
                    .collect();
                let rec = CONTACTS.restore(&mut tx, c.tenant, cid, &old.search_text_with(&terms), &c.ctx.actor, t).await?;
                lookup::sync(&mut tx, c.tenant, cid, &contact_keys(&old)).await?;
                let out = self.contact_out(&mut tx, c, &rec).await?;
                self.event(&mut tx, c, "contact.restored", cid, rec.version, "Contact", &out, t).await?;
                self.links.target_changed(&mut tx, c, CONTACTS.entity(), cid, false, rec.version, t).await?;
                rec
            } else {
                let (h, _) = self.lock(&mut tx, c, cid).await?;
                self.write_contact(&mut tx, c, &h, &old, None, t).await?.0
            };
            if cid == survivor || head.doc["merged_ids"].as_array().is_some_and(|a| a.iter().any(|x| x == &json!(key))) {
                restored.push(rec);
            }
        }
        for (k, store) in [("relationships", RELATIONSHIPS), ("interactions", INTERACTIONS)] {
            for (key, doc) in before[k].as_object().cloned().unwrap_or_default() {
                let eid = uuid(&key, "id")?;
                let (_, deleted, _) =
                    lookup::head_any(&mut tx, c.tenant, store.entity(), eid).await?.ok_or_else(|| Error::internal("merge record"))?;
                let search = doc["summary"].as_str().unwrap_or_default().to_owned();
                if deleted {
                    store.restore(&mut tx, c.tenant, eid, &search, &c.ctx.actor, t).await?;
                } else {
                    let h = store.head_for_update(&mut tx, c.tenant, eid, None).await?;
                    let w = Write { doc: doc.clone(), search_text: search, valid_from: None, actor: c.ctx.actor.clone() };
                    store.update_head(&mut tx, c.tenant, &h, w, t).await?;
                }
                let keys = if k == "relationships" {
                    Self::relationship_keys(&doc)
                } else {
                    let people: Vec<String> = doc["participant_ids"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                    Self::interaction_keys(&people)
                };
                lookup::sync(&mut tx, c.tenant, eid, &keys).await?;
            }
        }
        let mut doc = head.doc.clone();
        doc["status"] = json!("undone");
        let w = Write { doc, search_text: String::new(), valid_from: None, actor: c.ctx.actor.clone() };
        let mrec = MERGES.update_head(&mut tx, c.tenant, &head, w, t).await?;
        restored.sort_by_key(|r| r.id != survivor);
        let contacts = self.contacts_out(&mut tx, c, &restored).await?;
        let out = pb::UndoMergeResponse { merge_id: id.to_string(), contacts };
        self.event(&mut tx, c, "contact.merge_undone", survivor, mrec.version, "UndoMergeResponse", &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    pub(crate) async fn list_duplicates_(&self, c: &Caller, r: pb::ListDuplicatesRequest) -> Result<pb::ListDuplicatesResponse> {
        let min = r.min_score.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&min) {
            return Err(Error::validation("min_score must be between 0 and 1"));
        }
        let limit = cursor::limit(r.limit)? as usize;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut pairs: BTreeMap<(Uuid, Uuid), (f64, BTreeSet<String>)> = BTreeMap::new();
        let mut add = |a: Uuid, b: Uuid, score: f64, why: String| {
            let k = if a < b { (a, b) } else { (b, a) };
            let e = pairs.entry(k).or_insert((0.0, BTreeSet::new()));
            e.0 = (e.0 + score).min(1.0);
            e.1.insert(why);
        };
        for (kind, key, owners) in lookup::shared_keys(&mut tx, c.tenant, &["email", "phone"]).await? {
            for (i, a) in owners.iter().enumerate() {
                for b in &owners[i + 1..] {
                    add(*a, *b, if kind == "email" { 0.6 } else { 0.5 }, format!("same {kind} {key}"));
                }
            }
        }
        // Names: compared within blocks of contacts sharing a name word, so the work grows
        // with the blocks, not with the square of the tenant's contacts.
        let all = lookup::list(&mut tx, c.tenant, &lookup::Filter::default(), None, 20_000).await?;
        let docs: HashMap<Uuid, ContactDoc> = all.iter().map(|r| Ok((r.id, parse_doc(&r.doc)?))).collect::<Result<_>>()?;
        let mut blocks: HashMap<String, Vec<Uuid>> = HashMap::new();
        for (id, d) in &docs {
            for w in norm_name(&d.display_name).split(' ').filter(|w| w.len() > 1) {
                blocks.entry(w.to_owned()).or_default().push(*id);
            }
        }
        let mut compared = BTreeSet::new();
        for ids in blocks.values().filter(|b| b.len() > 1 && b.len() <= 200) {
            for (i, a) in ids.iter().enumerate() {
                for b in &ids[i + 1..] {
                    let k = if a < b { (*a, *b) } else { (*b, *a) };
                    if !compared.insert(k) {
                        continue;
                    }
                    let (da, db) = (&docs[a], &docs[b]);
                    if da.kind != db.kind {
                        continue;
                    }
                    let sim = strsim::jaro_winkler(&norm_name(&da.display_name), &norm_name(&db.display_name));
                    if sim >= 0.85 {
                        add(k.0, k.1, (sim - 0.5).max(0.0), format!("similar names ({sim:.2})"));
                        let orgs = |d: &ContactDoc| d.affiliations.iter().map(|x| x.organization_id.clone()).collect::<BTreeSet<_>>();
                        if let Some(o) = orgs(da).intersection(&orgs(db)).next() {
                            add(k.0, k.1, 0.15, format!("same organization {o}"));
                        }
                    }
                }
            }
        }
        // Pairs into sets (union-find), each set scored by its best pair.
        let mut parent: HashMap<Uuid, Uuid> = HashMap::new();
        fn root(p: &mut HashMap<Uuid, Uuid>, x: Uuid) -> Uuid {
            let up = *p.get(&x).unwrap_or(&x);
            if up == x {
                return x;
            }
            let r = root(p, up);
            p.insert(x, r);
            r
        }
        let strong: Vec<_> = pairs.into_iter().filter(|(_, (s, _))| *s >= min).collect();
        for ((a, b), _) in &strong {
            let (ra, rb) = (root(&mut parent, *a), root(&mut parent, *b));
            if ra != rb {
                parent.insert(ra.max(rb), ra.min(rb));
            }
        }
        let mut sets: BTreeMap<Uuid, (BTreeSet<Uuid>, f64, BTreeSet<String>)> = BTreeMap::new();
        for ((a, b), (s, why)) in strong {
            let r = root(&mut parent, a);
            let e = sets.entry(r).or_insert((BTreeSet::new(), 0.0, BTreeSet::new()));
            e.0.insert(a);
            e.0.insert(b);
            e.1 = e.1.max(s);
            e.2.extend(why);
        }
        let mut sets: Vec<_> = sets.into_values().collect();
        sets.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sets.truncate(limit);
        let mut data = Vec::new();
        for (ids, score, evidence) in sets {
            let mut recs = lookup::heads(&mut tx, c.tenant, CONTACTS.entity(), &ids.into_iter().collect::<Vec<_>>()).await?;
            recs.sort_by_key(|r| (r.created_at, r.id));
            data.push(pb::DuplicateSet {
                contacts: self.contacts_out(&mut tx, c, &recs).await?,
                score: (score * 100.0).round() / 100.0,
                evidence: evidence.into_iter().collect(),
            });
        }
        Ok(pb::ListDuplicatesResponse { data })
    }
}
