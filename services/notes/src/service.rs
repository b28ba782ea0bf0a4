//! The `worktruck.notes.v1.NotesService` gRPC implementation over kit's bitemporal store
//! (entities `note`, `notebook`, `tag`) and the wikilink projection (`links`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::Verifier;
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::links::{self as links_kit, Links, NewLink, Source};
use worktruck_kit::outbox::{self, Relay};
use worktruck_kit::pbjson::{from_struct, opt_datetime, uuid};
use worktruck_kit::rpc::{self, Caller};
use worktruck_kit::store::{ListQuery, Record, Retention, Store, Write, search_query};
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::common::v1 as common;
use worktruck_proto::notes::v1 as pb;
use worktruck_proto::notes::v1::notes_service_server::NotesService;

use crate::domain::{
    self, NOTE_HIDDEN, NoteDoc, NotebookDoc, TagDoc, check_color, check_description, check_id, check_metadata,
    check_name, check_tag_names, check_url, merge, note_pb, notebook_pb, struct_or_empty, tag_pb,
};
use crate::markdown::{self, title_key};
use crate::attachments::{ATTACHMENTS, AttachmentDoc, MAX_PER_NOTE, Settings, attachment_pb, blob_key};
use crate::{attachments, links, queries};
use worktruck_kit::blobs::Blobs;

/// Notes in kit's store.
pub const NOTES: Store = Store::new("note");
/// Notebooks in kit's store.
pub const NOTEBOOKS: Store = Store::new("notebook");
/// Tag definitions in kit's store.
pub const TAGS: Store = Store::new("tag");

/// How deep notebooks nest.
const MAX_DEPTH: usize = 32;
/// How many candidate notes an unlinked-mentions read examines.
const MENTION_CANDIDATES: i64 = 500;

/// The notes service.
#[derive(Clone)]
pub struct Notes {
    db: Db,
    verifier: Verifier,
    relay: Relay,
    links: Links,
    blobs: Blobs,
    settings: Settings,
}

/// The origin of the cross-domain links a note's body makes (`[[contact:<id>]]`).
const BODY: &str = "body";
/// The type of a body's cross-domain links.
const MENTIONS: &str = "mentions";

impl Notes {
    /// A service over a migrated database.
    pub fn new(db: Db, verifier: Verifier, relay: Relay, links: Links, blobs: Blobs, settings: Settings) -> Self {
        Self { db, verifier, relay, links, blobs, settings }
    }

    /// Writes an attachment's description (the bytes, if any, are already stored) and its
    /// event; the note must be live and carry fewer than [`MAX_PER_NOTE`].
    async fn attach(&self, c: &Caller, note: Uuid, id: Uuid, doc: &AttachmentDoc) -> Result<pb::NoteAttachment> {
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        NOTES.head_for_update(&mut tx, c.tenant, note, None).await?;
        if self.attachments_of(&mut tx, c, note).await?.len() >= MAX_PER_NOTE {
            return Err(Error::conflict(format!("a note carries at most {MAX_PER_NOTE} attachments")));
        }
        let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = ATTACHMENTS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = attachment_pb(&rec)?;
        rpc::emit(&mut tx, c, "worktruck.notes.attachment.created.v1", id, rec.version, &out, t).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn attachments_of(&self, tx: &mut Tx, c: &Caller, note: Uuid) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let q = ListQuery {
                equals: vec![("note_id", note.to_string())],
                search: None,
                updated_since: None,
                limit: cursor::MAX_LIMIT,
                cursor,
                at: None,
            };
            let page = ATTACHMENTS.list(tx, c.tenant, Retention::UNBOUNDED, &q).await?;
            out.extend(page.rows);
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        out.sort_by_key(|r| (r.created_at, r.id));
        Ok(out)
    }

    async fn attachment(&self, tx: &mut Tx, c: &Caller, note: &str, id: &str) -> Result<(Uuid, Record)> {
        let note = uuid(note, "id")?;
        let id = uuid(id, "attachment_id")?;
        NOTES.head(tx, c.tenant, note).await?;
        let rec = ATTACHMENTS.head(tx, c.tenant, id).await?;
        if AttachmentDoc::from_value(&rec.doc)?.note_id != note.to_string() {
            return Err(Error::not_found("attachment"));
        }
        Ok((note, rec))
    }

    /// Whether a wikilink's text is a reference into another domain (`contact:<id>`), which
    /// kit's links carry, rather than a note title.
    fn is_cross(&self, title: &str) -> bool {
        title.contains(':') && self.links.parse_ref(title).is_ok_and(|r| r.domain != self.links.domain())
    }

    /// The cross-domain links of `body`, their targets checked (a missing one is a 400).
    async fn body_links(&self, c: &Caller, body: &str) -> Result<Vec<NewLink>> {
        let mut wanted = Vec::new();
        for w in markdown::wikilinks(body) {
            if self.is_cross(&w.title) {
                let r = self.links.parse_ref(&w.title)?;
                wanted.push((r, MENTIONS.to_owned(), links_kit::context(Some(&w.context))?));
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.links.prepare(c, wanted).await
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }


    async fn emit_note(&self, tx: &mut Tx, c: &Caller, action: &str, note: &pb::Note, t: DateTime<Utc>) -> Result<()> {
        let id = uuid(&note.id, "id")?;
        let subject = format!("worktruck.notes.note.{action}.v1");
        rpc::emit(tx, c, &subject, id, note.version, note, t).await
    }

    /// Commits and wakes the relay.
    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify();
        Ok(())
    }
}

/// The tenant's live tags, by id, as wire tags.
async fn tag_map(tx: &mut Tx, c: &Caller) -> Result<HashMap<String, pb::Tag>> {
    let tenant = c.tenant.to_string();
    queries::all(tx, c.tenant, "tag")
        .await?
        .iter()
        .map(|r| tag_pb(&tenant, r).map(|t| (t.id.clone(), t)))
        .collect()
}

/// The wire note, its tags resolved against `tags` (a deleted tag drops out).
fn render(c: &Caller, r: &Record, tags: &HashMap<String, pb::Tag>) -> Result<pb::Note> {
    let d = NoteDoc::from_value(&r.doc)?;
    let mut t: Vec<pb::Tag> = d.tags.iter().filter_map(|id| tags.get(id).cloned()).collect();
    t.sort_by_key(|t| t.name.to_lowercase());
    Ok(note_pb(&c.tenant.to_string(), r, &d, t))
}

/// The wire note with its tags and link counts.
async fn render_full(tx: &mut Tx, c: &Caller, r: &Record) -> Result<pb::Note> {
    let tags = tag_map(tx, c).await?;
    let mut n = render(c, r, &tags)?;
    let (back, out) = links::counts(tx, c.tenant, r.id).await?;
    n.backlink_count = i32::try_from(back).unwrap_or(i32::MAX);
    n.outgoing_link_count = i32::try_from(out).unwrap_or(i32::MAX);
    Ok(n)
}

/// `notebook_id` as stored: an existing live notebook of the tenant, else 400.
async fn check_notebook(tx: &mut Tx, c: &Caller, raw: &str) -> Result<Option<String>> {
    let Some(id) = check_id("notebook_id", raw)? else { return Ok(None) };
    NOTEBOOKS
        .head(tx, c.tenant, id)
        .await
        .map_err(|_| Error::validation(format!("notebook_id: no notebook {id}")))?;
    Ok(Some(id.to_string()))
}

/// The ids of the tags named `names`, defining the new ones (announced as created).
async fn ensure_tags(tx: &mut Tx, c: &Caller, names: &[String], t: DateTime<Utc>) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for name in check_tag_names(names)? {
        let key = title_key(&name);
        let id = match queries::tag_by_key(tx, c.tenant, &key).await? {
            Some(id) => id,
            None => {
                let doc = TagDoc::named(&name)?;
                let id = Uuid::now_v7();
                let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
                let rec = TAGS.create(tx, c.tenant, id, w, t).await?;
                let tag = tag_pb(&c.tenant.to_string(), &rec)?;
                rpc::emit(tx, c, "worktruck.notes.tag.created.v1", id, rec.version, &tag, t).await?;
                id
            }
        };
        ids.push(id.to_string());
    }
    Ok(ids)
}

fn limit_offset(limit: Option<i32>, cursor: Option<&str>, scope: &str) -> Result<(i64, i64)> {
    let limit = cursor::limit(limit)?;
    let offset = match cursor::decode_opt(cursor, scope)? {
        None => 0,
        Some(Cursor::Number(n)) if n >= 0 => n,
        Some(_) => return Err(Error::invalid("invalid cursor for this listing")),
    };
    Ok((limit, offset))
}

#[tonic::async_trait]
impl NotesService for Notes {
    async fn create_note(&self, req: Request<pb::CreateNoteRequest>) -> Result<Response<pb::Note>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut doc = NoteDoc::new(r.title.clone(), r.body.clone().unwrap_or_default(), struct_or_empty(r.metadata.as_ref()))?;
        doc.is_pinned = r.is_pinned.unwrap_or(false);
        doc.is_archived = r.is_archived.unwrap_or(false);
        doc.source_url = r.source_url.as_deref().map(|u| check_url("source_url", u)).transpose()?.flatten();
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        let cross = self.body_links(&c, &doc.body).await?;
        let t = now();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        doc.notebook_id = match &r.notebook_id {
            Some(nb) => check_notebook(&mut tx, &c, nb).await?,
            None => None,
        };
        doc.tags = ensure_tags(&mut tx, &c, &r.tags, t).await?;
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = NOTES.create(&mut tx, c.tenant, id, w, t).await?;
        links::sync(&mut tx, c.tenant, id, &doc.body, None, &|t| self.is_cross(t)).await?;
        let source = Source { entity: NOTES.entity(), id, title: &doc.title };
        self.links.replace(&mut tx, &c, &source, BODY, &cross, t).await?;
        links::attach(&mut tx, c.tenant, &doc.title_key, id).await?;
        let out = render_full(&mut tx, &c, &rec).await?;
        self.emit_note(&mut tx, &c, "created", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_note(&self, req: Request<pb::GetNoteRequest>) -> Result<Response<pb::Note>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let at = c.moment(opt_datetime(r.as_of.as_ref(), "as_of")?, opt_datetime(r.valid_at.as_ref(), "valid_at")?, t);
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let out = match at {
            None => {
                let rec = NOTES.head(&mut tx, c.tenant, id).await?;
                render_full(&mut tx, &c, &rec).await?
            }
            Some((as_of, valid_at)) => {
                let rec = NOTES.at(&mut tx, c.tenant, c.retention(t), id, as_of, valid_at).await?;
                render(&c, &rec, &tag_map(&mut tx, &c).await?)?
            }
        };
        Ok(Response::new(out))
    }

    async fn update_note(&self, req: Request<pb::UpdateNoteRequest>) -> Result<Response<pb::Note>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let valid_from = opt_datetime(r.valid_from.as_ref(), "valid_from")?;
        let cross = match &r.body {
            Some(b) => Some(self.body_links(&c, b).await?),
            None => None,
        };
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = NOTES.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let old = NoteDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        if let Some(title) = &r.title {
            doc.set_title(title)?;
        }
        if let Some(body) = &r.body {
            doc.set_body(body.clone())?;
        }
        if let Some(m) = &r.metadata {
            doc.metadata = merge(&doc.metadata, &from_struct(m));
            check_metadata(&doc.metadata)?;
        }
        if let Some(nb) = &r.notebook_id {
            doc.notebook_id = check_notebook(&mut tx, &c, nb).await?;
        }
        if let Some(p) = r.is_pinned {
            doc.is_pinned = p;
        }
        if let Some(a) = r.is_archived {
            doc.is_archived = a;
        }
        if let Some(u) = &r.source_url {
            doc.source_url = check_url("source_url", u)?;
        }
        if !r.remove_tags.is_empty() {
            let mut remove = Vec::new();
            for name in check_tag_names(&r.remove_tags)? {
                if let Some(tid) = queries::tag_by_key(&mut tx, c.tenant, &title_key(&name)).await? {
                    remove.push(tid.to_string());
                }
            }
            doc.tags.retain(|t| !remove.contains(t));
        }
        if !r.add_tags.is_empty() {
            for tid in ensure_tags(&mut tx, &c, &r.add_tags, t).await? {
                if !doc.tags.contains(&tid) {
                    doc.tags.push(tid);
                }
            }
            check_tag_names(&doc.tags)?;
        }
        let renamed = doc.title_key != old.title_key;
        let rewrite = r.rewrite_links && doc.title != old.title;
        if rewrite {
            // The note may link to itself.
            let keys = links::keys_to(&mut tx, c.tenant, id, id).await?;
            if let Some(b) = markdown::rewrite_links(&doc.body, &keys, &doc.title) {
                doc.set_body(b)?;
            }
        }
        // A request that changes nothing records nothing.
        if doc == old && valid_from.is_none() {
            let out = render_full(&mut tx, &c, &head).await?;
            return Ok(Response::new(out));
        }
        let w = Write { search_text: doc.search_text(), doc: doc.to_value(), valid_from, actor: c.actor().to_owned() };
        let rec = NOTES.update_head(&mut tx, c.tenant, &head, w, t).await?;
        if doc.body != old.body {
            let prefer = rewrite.then_some((doc.title_key.as_str(), id));
            links::sync(&mut tx, c.tenant, id, &doc.body, prefer, &|t| self.is_cross(t)).await?;
        }
        let source = Source { entity: NOTES.entity(), id, title: &doc.title };
        match &cross {
            Some(cross) => self.links.replace(&mut tx, &c, &source, BODY, cross, t).await?,
            None if doc.title != old.title => self.links.retitle(&mut tx, &c, &source, t).await?,
            None => {}
        }
        if renamed {
            links::attach(&mut tx, c.tenant, &doc.title_key, id).await?;
        }
        if rewrite {
            let tags = tag_map(&mut tx, &c).await?;
            for source in links::live_sources(&mut tx, c.tenant, id).await? {
                if source == id {
                    continue;
                }
                let shead = NOTES.head_for_update(&mut tx, c.tenant, source, None).await?;
                let mut sdoc = NoteDoc::from_value(&shead.doc)?;
                let keys = links::keys_to(&mut tx, c.tenant, source, id).await?;
                let Some(body) = markdown::rewrite_links(&sdoc.body, &keys, &doc.title) else { continue };
                sdoc.set_body(body)?;
                let w = Write { search_text: sdoc.search_text(), doc: sdoc.to_value(), valid_from: None, actor: c.actor().to_owned() };
                let srec = NOTES.update_head(&mut tx, c.tenant, &shead, w, t).await?;
                links::sync(&mut tx, c.tenant, source, &sdoc.body, Some((&doc.title_key, id)), &|t| self.is_cross(t)).await?;
                let sout = render(&c, &srec, &tags)?;
                self.emit_note(&mut tx, &c, "updated", &sout, t).await?;
            }
        }
        let out = render_full(&mut tx, &c, &rec).await?;
        self.emit_note(&mut tx, &c, "updated", &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_note(&self, req: Request<pb::DeleteNoteRequest>) -> Result<Response<pb::DeleteNoteResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let rec = NOTES.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = render(&c, &rec, &tag_map(&mut tx, &c).await?)?;
        self.emit_note(&mut tx, &c, "deleted", &out, t).await?;
        self.links.source_deleted(&mut tx, &c, NOTES.entity(), id, t).await?;
        self.links.target_changed(&mut tx, &c, NOTES.entity(), id, true, rec.version, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteNoteResponse { id: id.to_string(), deleted: true }))
    }

    async fn restore_note(&self, req: Request<pb::RestoreNoteRequest>) -> Result<Response<pb::Note>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let deleted: Option<Record> = NOTES.head(&mut tx, c.tenant, id).await.ok();
        if deleted.is_some() {
            return Err(Error::conflict("the note is not deleted").into());
        }
        // The search text of the version being restored; `restore` fails with not_found when
        // the note never existed.
        let rec = match NOTES.history(&mut tx, c.tenant, Retention::UNBOUNDED, id, None, None, 1, None).await {
            Ok(page) => {
                let doc = page.rows.first().map(|(_, _, d, _)| NoteDoc::from_value(d)).transpose()?;
                let search = doc.map(|d| d.search_text()).unwrap_or_default();
                NOTES.restore(&mut tx, c.tenant, id, &search, c.actor(), t).await?
            }
            Err(e) => return Err(e.into()),
        };
        let doc = NoteDoc::from_value(&rec.doc)?;
        links::attach(&mut tx, c.tenant, &doc.title_key, id).await?;
        let out = render_full(&mut tx, &c, &rec).await?;
        self.emit_note(&mut tx, &c, "restored", &out, t).await?;
        self.links.source_restored(&mut tx, &c, NOTES.entity(), id, t).await?;
        self.links.target_changed(&mut tx, &c, NOTES.entity(), id, false, rec.version, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn list_notes(&self, req: Request<pb::ListNotesRequest>) -> Result<Response<pb::ListNotesResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let at = c.moment(opt_datetime(r.as_of.as_ref(), "as_of")?, opt_datetime(r.valid_at.as_ref(), "valid_at")?, t);
        let search = r.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned);
        if search.as_ref().is_some_and(|q| q.chars().count() > 500) {
            return Err(Error::invalid("q must be at most 500 characters").into());
        }
        let notebook = r.notebook_id.as_deref().map(|n| check_id("notebook_id", n)).transpose()?.flatten();
        let updated_since = opt_datetime(r.updated_since.as_ref(), "updated_since")?;
        let scope = format!(
            "notes:{search:?}:{notebook:?}:{:?}:{:?}:{:?}:{:?}:{:?}",
            r.tag, r.pinned, r.archived, updated_since, at.map(|(a, v)| (a.timestamp_micros(), v.timestamp_micros()))
        );
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let tags = tag_map(&mut tx, &c).await?;
        if let Some(at) = at {
            for (set, name) in [(search.is_some(), "q"), (r.tag.is_some(), "tag"), (r.pinned.is_some(), "pinned"), (r.archived.is_some(), "archived")] {
                if set {
                    return Err(Error::invalid(format!("{name} cannot be combined with as_of or valid_at")).into());
                }
            }
            let q = ListQuery {
                equals: notebook.map(|n| vec![("notebook_id", n.to_string())]).unwrap_or_default(),
                search: None,
                updated_since,
                limit: cursor::limit(r.limit)?,
                cursor: cursor::decode_opt(r.cursor.as_deref(), &scope)?,
                at: Some(at),
            };
            let page = NOTES.list(&mut tx, c.tenant, c.retention(t), &q).await?;
            let data = page.rows.iter().map(|rec| render(&c, rec, &tags)).collect::<Result<Vec<_>>>()?;
            return Ok(Response::new(pb::ListNotesResponse {
                data,
                has_more: page.next.is_some(),
                next_cursor: page.next.map(|n| n.encode(&scope)).unwrap_or_default(),
            }));
        }
        let mut filter = queries::Filter {
            notebook: notebook.map(|n| n.to_string()),
            tag: None,
            pinned: r.pinned,
            archived: r.archived,
            updated_since,
        };
        if let Some(name) = &r.tag {
            let name = domain::check_tag_name(name)?;
            match queries::tag_by_key(&mut tx, c.tenant, &title_key(&name)).await? {
                Some(id) => filter.tag = Some(id.to_string()),
                // No such tag: no note has it.
                None => return Ok(Response::new(pb::ListNotesResponse::default())),
            }
        }
        let (mut rows, next) = match &search {
            Some(q) => {
                let expr = search_query(tx.dialect(), q).ok_or_else(|| Error::invalid("q has no searchable words"))?;
                let (limit, offset) = limit_offset(r.limit, r.cursor.as_deref(), &scope)?;
                let mut rows = queries::search(&mut tx, c.tenant, &expr, &filter, offset, limit).await?;
                let next = (rows.len() as i64 > limit).then(|| Cursor::Number(offset + limit));
                rows.truncate(limit as usize);
                (rows, next)
            }
            None => {
                let limit = cursor::limit(r.limit)?;
                let after = match cursor::decode_opt(r.cursor.as_deref(), &scope)? {
                    None => None,
                    Some(Cursor::TimeId(t, id)) => Some((t, id)),
                    Some(_) => return Err(Error::invalid("invalid cursor for this listing").into()),
                };
                let mut rows = queries::list(&mut tx, c.tenant, &filter, after, limit).await?;
                let more = rows.len() as i64 > limit;
                rows.truncate(limit as usize);
                let next = more.then(|| rows.last().map(|r| Cursor::TimeId(r.updated_at, r.id))).flatten();
                (rows, next)
            }
        };
        let mut data = Vec::with_capacity(rows.len());
        for rec in rows.drain(..) {
            let mut n = render(&c, &rec, &tags)?;
            if let Some(q) = &search {
                n.snippet = Some(markdown::snippet(&n.body, q));
            }
            data.push(n);
        }
        Ok(Response::new(pb::ListNotesResponse {
            data,
            has_more: next.is_some(),
            next_cursor: next.map(|n| n.encode(&scope)).unwrap_or_default(),
        }))
    }

    async fn get_note_history(&self, req: Request<common::HistoryRequest>) -> Result<Response<common::HistoryResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::history(&NOTES, &self.db, &c, req.into_inner(), NOTE_HIDDEN).await?))
    }

    async fn diff_note(&self, req: Request<common::DiffRequest>) -> Result<Response<common::DiffResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::diff(&NOTES, &self.db, &c, req.into_inner(), NOTE_HIDDEN).await?))
    }

    async fn get_note_timeline(&self, req: Request<common::TimelineRequest>) -> Result<Response<common::TimelineResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(rpc::timeline(&NOTES, &self.db, &c, req.into_inner(), NOTE_HIDDEN).await?))
    }

    async fn list_note_links(&self, req: Request<pb::ListNoteLinksRequest>) -> Result<Response<pb::ListNoteLinksResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let head = NOTES.head(&mut tx, c.tenant, id).await?;
        let mut data = links::outgoing(&mut tx, c.tenant, id).await?;
        let title = head.doc.get("title").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        for (i, l) in self.links.outbound(&mut tx, c.tenant, NOTES.entity(), id).await?.into_iter().enumerate() {
            let target_id = links_kit::EntityRef::parse(&l.target).ok().map(|r| r.id);
            data.push(pb::NoteLink {
                source_id: id.to_string(),
                source_title: title.clone(),
                target_title: l.target_title,
                target_id,
                status: if l.dangling { pb::LinkStatus::Dangling } else { pb::LinkStatus::Resolved } as i32,
                context: l.context,
                position: i32::try_from(data.len() + i).unwrap_or(i32::MAX),
                target: Some(l.target),
                link_id: Some(l.id),
                link_type: Some(l.r#type),
                ..Default::default()
            });
        }
        Ok(Response::new(pb::ListNoteLinksResponse { data }))
    }

    async fn create_note_attachment(&self, req: Request<pb::CreateNoteAttachmentRequest>) -> Result<Response<pb::NoteAttachment>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let note = uuid(&r.id, "id")?;
        let doc = attachments::url_doc(note, &r.url, r.title.as_deref(), r.filename.as_deref())?;
        Ok(Response::new(self.attach(&c, note, Uuid::now_v7(), &doc).await?))
    }

    async fn create_note_attachment_file(&self, req: Request<pb::CreateNoteAttachmentFileRequest>) -> Result<Response<pb::NoteAttachment>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let note = uuid(&r.id, "id")?;
        let file = r.file.unwrap_or_default();
        let (bytes, part_name, declared) = attachments::file_of(&file.content_type, file.data).await?;
        let filename = attachments::clean_filename(r.filename.as_deref().or(part_name.as_deref()));
        let doc = attachments::file_doc(note, &bytes, filename, declared, self.settings.attachment_max_bytes)?;
        {
            // Refuse early, before storing bytes, when the note is not there.
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            NOTES.head(&mut tx, c.tenant, note).await?;
        }
        let id = Uuid::now_v7();
        let key = blob_key(c.tenant, id);
        self.blobs.put(&key, bytes).await?;
        match self.attach(&c, note, id, &doc).await {
            Ok(out) => Ok(Response::new(out)),
            Err(e) => {
                // No row names these bytes: take them back.
                let _ = self.blobs.delete(&key).await;
                Err(e.into())
            }
        }
    }

    async fn list_note_attachments(&self, req: Request<pb::ListNoteAttachmentsRequest>) -> Result<Response<pb::ListNoteAttachmentsResponse>, Status> {
        let c = self.caller(&req)?;
        let note = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        NOTES.head(&mut tx, c.tenant, note).await?;
        let data = self.attachments_of(&mut tx, &c, note).await?.iter().map(attachment_pb).collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListNoteAttachmentsResponse { data }))
    }

    async fn get_note_attachment(&self, req: Request<pb::GetNoteAttachmentRequest>) -> Result<Response<pb::NoteAttachment>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let (_, rec) = self.attachment(&mut tx, &c, &r.id, &r.attachment_id).await?;
        Ok(Response::new(attachment_pb(&rec)?))
    }

    async fn download_note_attachment(&self, req: Request<pb::GetNoteAttachmentRequest>) -> Result<Response<worktruck_proto::google::api::HttpBody>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let rec = {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            self.attachment(&mut tx, &c, &r.id, &r.attachment_id).await?.1
        };
        let doc = AttachmentDoc::from_value(&rec.doc)?;
        if doc.kind != "file" {
            return Err(Error::not_found("file: this attachment is a URL reference").into());
        }
        let data = self.blobs.get(&blob_key(c.tenant, rec.id)).await?;
        let headers = common::BodyHeaders { content_disposition: attachments::disposition(&doc.filename) };
        Ok(Response::new(worktruck_proto::google::api::HttpBody {
            content_type: doc.content_type,
            data: data.to_vec(),
            extensions: vec![outbox::any("worktruck.common.v1.BodyHeaders", &headers)],
        }))
    }

    async fn delete_note_attachment(&self, req: Request<pb::DeleteNoteAttachmentRequest>) -> Result<Response<pb::DeleteNoteAttachmentResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let (_, rec) = self.attachment(&mut tx, &c, &r.id, &r.attachment_id).await?;
        let kind = AttachmentDoc::from_value(&rec.doc)?.kind;
        let gone = ATTACHMENTS.delete(&mut tx, c.tenant, rec.id, c.actor(), t).await?;
        let out = attachment_pb(&gone)?;
        rpc::emit(&mut tx, &c, "worktruck.notes.attachment.deleted.v1", rec.id, gone.version, &out, t).await?;
        self.commit(tx).await?;
        if kind == "file" {
            // After the commit: a failed delete leaves an orphan blob, never a row without bytes.
            if let Err(e) = self.blobs.delete(&blob_key(c.tenant, rec.id)).await {
                tracing::warn!(error = %e.message, "an attachment's bytes stay behind");
            }
        }
        Ok(Response::new(pb::DeleteNoteAttachmentResponse { id: rec.id.to_string(), deleted: true }))
    }

    async fn create_note_link(&self, req: Request<common::CreateLinkRequest>) -> Result<Response<common::Link>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.create_explicit(&c, NOTES, req.get_ref()).await?))
    }

    async fn delete_note_link(&self, req: Request<common::DeleteLinkRequest>) -> Result<Response<common::DeleteLinkResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.delete_explicit(&c, NOTES, req.get_ref()).await?))
    }

    async fn list_links(&self, req: Request<common::ListEntityLinksRequest>) -> Result<Response<common::ListLinksResponse>, Status> {
        let c = self.caller(&req)?;
        Ok(Response::new(self.links.list_any(&c, req.into_inner()).await?))
    }

    async fn list_note_backlinks(
        &self,
        req: Request<pb::ListNoteBacklinksRequest>,
    ) -> Result<Response<pb::ListNoteBacklinksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let scope = format!("notes:backlinks:{id}");
        let (limit, offset) = limit_offset(r.limit, r.cursor.as_deref(), &scope)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        NOTES.head(&mut tx, c.tenant, id).await?;
        let mut data = links::backlinks(&mut tx, c.tenant, id, offset, limit + 1).await?;
        let more = data.len() as i64 > limit;
        data.truncate(limit as usize);
        Ok(Response::new(pb::ListNoteBacklinksResponse {
            data,
            has_more: more,
            next_cursor: if more { Cursor::Number(offset + limit).encode(&scope) } else { String::new() },
        }))
    }

    async fn list_unlinked_mentions(
        &self,
        req: Request<pb::ListUnlinkedMentionsRequest>,
    ) -> Result<Response<pb::ListUnlinkedMentionsResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let limit = cursor::limit(r.limit)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let head = NOTES.head(&mut tx, c.tenant, id).await?;
        let title = NoteDoc::from_value(&head.doc)?.title;
        let Some(expr) = search_query(tx.dialect(), &title) else {
            return Ok(Response::new(pb::ListUnlinkedMentionsResponse::default()));
        };
        let linking = links::live_sources(&mut tx, c.tenant, id).await?;
        let candidates = queries::search(&mut tx, c.tenant, &expr, &queries::Filter::default(), 0, MENTION_CANDIDATES).await?;
        let mut data = Vec::new();
        for rec in candidates {
            if rec.id == id || linking.contains(&rec.id) {
                continue;
            }
            let d = NoteDoc::from_value(&rec.doc)?;
            if let Some(context) = markdown::mentions(&d.body, &title).into_iter().next() {
                data.push(pb::UnlinkedMention { source_id: rec.id.to_string(), source_title: d.title, context });
                if data.len() as i64 >= limit {
                    break;
                }
            }
        }
        Ok(Response::new(pb::ListUnlinkedMentionsResponse { data }))
    }

    async fn create_notebook(&self, req: Request<pb::CreateNotebookRequest>) -> Result<Response<pb::Notebook>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut doc = NotebookDoc {
            name: check_name("name", &r.name, 200)?,
            description: r.description.as_deref().map(check_description).transpose()?.flatten(),
            parent_id: None,
        };
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        if let Some(p) = &r.parent_id {
            doc.parent_id = check_parent(&mut tx, &c, None, p).await?;
        }
        let id = Uuid::now_v7();
        let w = Write { search_text: doc.name.clone(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = NOTEBOOKS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = notebook_pb(&c.tenant.to_string(), &rec, 0)?;
        rpc::emit(&mut tx, &c, "worktruck.notes.notebook.created.v1", id, rec.version, &out, t)
            .await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn get_notebook(&self, req: Request<pb::GetNotebookRequest>) -> Result<Response<pb::Notebook>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let rec = NOTEBOOKS.head(&mut tx, c.tenant, id).await?;
        let n = queries::note_count(&mut tx, c.tenant, id).await?;
        Ok(Response::new(notebook_pb(&c.tenant.to_string(), &rec, n)?))
    }

    async fn update_notebook(&self, req: Request<pb::UpdateNotebookRequest>) -> Result<Response<pb::Notebook>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = NOTEBOOKS.head_for_update(&mut tx, c.tenant, id, r.expected_version).await?;
        let old = NotebookDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        if let Some(n) = &r.name {
            doc.name = check_name("name", n, 200)?;
        }
        if let Some(d) = &r.description {
            doc.description = check_description(d)?;
        }
        if let Some(p) = &r.parent_id {
            doc.parent_id = check_parent(&mut tx, &c, Some(id), p).await?;
        }
        let count = queries::note_count(&mut tx, c.tenant, id).await?;
        if doc == old {
            return Ok(Response::new(notebook_pb(&c.tenant.to_string(), &head, count)?));
        }
        let w = Write { search_text: doc.name.clone(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = NOTEBOOKS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        let out = notebook_pb(&c.tenant.to_string(), &rec, count)?;
        rpc::emit(&mut tx, &c, "worktruck.notes.notebook.updated.v1", id, rec.version, &out, t)
            .await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_notebook(
        &self,
        req: Request<pb::DeleteNotebookRequest>,
    ) -> Result<Response<pb::DeleteNotebookResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        NOTEBOOKS.head(&mut tx, c.tenant, id).await?;
        let notes = queries::note_count(&mut tx, c.tenant, id).await?;
        let children = queries::child_count(&mut tx, c.tenant, id).await?;
        if notes + children > 0 {
            return Err(Error::conflict(format!(
                "the notebook holds {notes} notes and {children} notebooks: move or delete them first"
            ))
            .into());
        }
        let rec = NOTEBOOKS.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = notebook_pb(&c.tenant.to_string(), &rec, 0)?;
        rpc::emit(&mut tx, &c, "worktruck.notes.notebook.deleted.v1", id, rec.version, &out, t)
            .await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteNotebookResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_notebooks(&self, req: Request<pb::ListNotebooksRequest>) -> Result<Response<pb::ListNotebooksResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let parent = r.parent_id.as_deref().map(|p| check_id("parent_id", p)).transpose()?.flatten();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let tenant = c.tenant.to_string();
        let mut data = Vec::new();
        for rec in queries::all(&mut tx, c.tenant, "notebook").await? {
            let d = NotebookDoc::from_value(&rec.doc)?;
            let keep = match (&parent, r.top_level) {
                (Some(p), _) => d.parent_id.as_deref() == Some(p.to_string().as_str()),
                (None, true) => d.parent_id.is_none(),
                (None, false) => true,
            };
            if keep {
                let n = queries::note_count(&mut tx, c.tenant, rec.id).await?;
                data.push(notebook_pb(&tenant, &rec, n)?);
            }
        }
        data.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then(a.id.cmp(&b.id)));
        Ok(Response::new(pb::ListNotebooksResponse { data }))
    }

    async fn create_tag(&self, req: Request<pb::CreateTagRequest>) -> Result<Response<pb::Tag>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut doc = TagDoc::named(&r.name)?;
        doc.color = r.color.as_deref().map(check_color).transpose()?.flatten();
        doc.description = r.description.as_deref().map(check_description).transpose()?.flatten();
        doc.metadata = struct_or_empty(r.metadata.as_ref());
        check_metadata(&doc.metadata)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        if queries::tag_by_key(&mut tx, c.tenant, &doc.key).await?.is_some() {
            return Err(Error::new(ErrorCode::AlreadyExists, format!("a tag named {:?} exists", doc.name)).into());
        }
        let id = Uuid::now_v7();
        let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = TAGS.create(&mut tx, c.tenant, id, w, t).await?;
        let out = tag_pb(&c.tenant.to_string(), &rec)?;
        rpc::emit(&mut tx, &c, "worktruck.notes.tag.created.v1", id, rec.version, &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn update_tag(&self, req: Request<pb::UpdateTagRequest>) -> Result<Response<pb::Tag>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let head = TAGS.head_for_update(&mut tx, c.tenant, id, None).await?;
        let old = TagDoc::from_value(&head.doc)?;
        let mut doc = old.clone();
        if let Some(n) = &r.name {
            let named = TagDoc::named(n)?;
            if named.key != old.key && queries::tag_by_key(&mut tx, c.tenant, &named.key).await?.is_some() {
                return Err(Error::new(ErrorCode::AlreadyExists, format!("a tag named {:?} exists", named.name)).into());
            }
            doc.name = named.name;
            doc.key = named.key;
        }
        if let Some(col) = &r.color {
            doc.color = check_color(col)?;
        }
        if let Some(d) = &r.description {
            doc.description = check_description(d)?;
        }
        if let Some(m) = &r.metadata {
            doc.metadata = merge(&doc.metadata, &from_struct(m));
            check_metadata(&doc.metadata)?;
        }
        if doc == old {
            return Ok(Response::new(tag_pb(&c.tenant.to_string(), &head)?));
        }
        let w = Write { search_text: String::new(), doc: doc.to_value(), valid_from: None, actor: c.actor().to_owned() };
        let rec = TAGS.update_head(&mut tx, c.tenant, &head, w, t).await?;
        let out = tag_pb(&c.tenant.to_string(), &rec)?;
        rpc::emit(&mut tx, &c, "worktruck.notes.tag.updated.v1", id, rec.version, &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(out))
    }

    async fn delete_tag(&self, req: Request<pb::DeleteTagRequest>) -> Result<Response<pb::DeleteTagResponse>, Status> {
        let c = self.caller(&req)?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let rec = TAGS.delete(&mut tx, c.tenant, id, c.actor(), t).await?;
        let out = tag_pb(&c.tenant.to_string(), &rec)?;
        rpc::emit(&mut tx, &c, "worktruck.notes.tag.deleted.v1", id, rec.version, &out, t).await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteTagResponse { id: id.to_string(), deleted: true }))
    }

    async fn list_tags(&self, req: Request<pb::ListTagsRequest>) -> Result<Response<pb::ListTagsResponse>, Status> {
        let c = self.caller(&req)?;
        let prefix = req.get_ref().prefix.as_deref().map(title_key).unwrap_or_default();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut data = Vec::new();
        for rec in queries::all(&mut tx, c.tenant, "tag").await? {
            let d = TagDoc::from_value(&rec.doc)?;
            if d.key.starts_with(prefix.trim_start_matches('#')) {
                data.push((d.key, tag_pb(&c.tenant.to_string(), &rec)?));
            }
        }
        data.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Response::new(pb::ListTagsResponse { data: data.into_iter().map(|(_, t)| t).collect() }))
    }
}

/// `parent_id` as stored: an existing live notebook that is not `moving` nor inside it (no
/// cycles), at most [`MAX_DEPTH`] deep; `None` for an empty string.
async fn check_parent(tx: &mut Tx, c: &Caller, moving: Option<Uuid>, raw: &str) -> Result<Option<String>> {
    let Some(parent) = check_id("parent_id", raw)? else { return Ok(None) };
    let mut at = Some(parent);
    let mut depth = 0;
    while let Some(id) = at {
        if Some(id) == moving {
            return Err(Error::validation("a notebook cannot be moved inside itself or one of its notebooks"));
        }
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(Error::validation(format!("notebooks nest at most {MAX_DEPTH} deep")));
        }
        let rec = NOTEBOOKS
            .head(tx, c.tenant, id)
            .await
            .map_err(|_| Error::validation(format!("parent_id: no notebook {id}")))?;
        at = NotebookDoc::from_value(&rec.doc)?.parent_id.and_then(|p| Uuid::parse_str(&p).ok());
    }
    Ok(Some(parent.to_string()))
}
