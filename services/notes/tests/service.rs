//! The notes service over real gRPC (its table definition on a loopback port), on SQLite and
//! PostgreSQL: notes and frontmatter, tags, notebooks, wikilinks and backlinks through renames,
//! deletes and restores, unlinked mentions, search, time travel and events.

use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_kit::bus::Bus;
use worktruck_kit::pbjson::{from_struct, timestamp, to_struct};
use worktruck_kit::testing::{TestData, TestService, backends};
use worktruck_proto::common::v1::{DiffRequest, Event, HistoryRequest, TimelineRequest};
use worktruck_proto::notes::v1 as pb;
use worktruck_proto::notes::v1::notes_service_client::NotesServiceClient;

struct Svc {
    client: NotesServiceClient<Channel>,
    service: TestService,
    tenant: Uuid,
}

async fn start(data: &TestData, bus: Bus) -> Svc {
    let service = TestService::start(&worktruck_notes::DEFINITION, data, bus).await;
    Svc { client: NotesServiceClient::new(service.channel.clone()), service, tenant: Uuid::now_v7() }
}

impl Svc {
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        self.service.request(self.tenant, msg)
    }

    async fn note(&mut self, title: &str, body: &str) -> pb::Note {
        let r = self.req(pb::CreateNoteRequest { title: title.into(), body: Some(body.into()), ..Default::default() });
        self.client.create_note(r).await.unwrap().into_inner()
    }

    async fn get(&mut self, id: &str) -> pb::Note {
        let r = self.req(pb::GetNoteRequest { id: id.into(), ..Default::default() });
        self.client.get_note(r).await.unwrap().into_inner()
    }

    async fn update(&mut self, u: pb::UpdateNoteRequest) -> pb::Note {
        let r = self.req(u);
        self.client.update_note(r).await.unwrap().into_inner()
    }

    async fn links(&mut self, id: &str) -> Vec<pb::NoteLink> {
        let r = self.req(pb::ListNoteLinksRequest { id: id.into() });
        self.client.list_note_links(r).await.unwrap().into_inner().data
    }

    async fn backlinks(&mut self, id: &str) -> Vec<pb::NoteLink> {
        let r = self.req(pb::ListNoteBacklinksRequest { id: id.into(), ..Default::default() });
        self.client.list_note_backlinks(r).await.unwrap().into_inner().data
    }

    async fn delete(&mut self, id: &str) {
        let r = self.req(pb::DeleteNoteRequest { id: id.into() });
        self.client.delete_note(r).await.unwrap();
    }

    async fn restore(&mut self, id: &str) -> pb::Note {
        let r = self.req(pb::RestoreNoteRequest { id: id.into() });
        self.client.restore_note(r).await.unwrap().into_inner()
    }

    async fn list(&mut self, q: pb::ListNotesRequest) -> Result<pb::ListNotesResponse, tonic::Status> {
        let r = self.req(q);
        self.client.list_notes(r).await.map(|r| r.into_inner())
    }
}

fn status(l: &pb::NoteLink) -> pb::LinkStatus {
    pb::LinkStatus::try_from(l.status).unwrap()
}

#[tokio::test]
async fn notes_keep_frontmatter_tags_and_counts_and_stay_inside_their_tenant() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let r = s.req(pb::CreateNoteRequest {
            title: " Trip plan ".into(),
            body: Some("---\nstatus: draft\npriority: 2\n---\n# Oslo\n\nVisit the *fjords* soon.\n".into()),
            metadata: Some(to_struct(&serde_json::json!({"status": "final"}))),
            tags: vec!["Travel".into(), "#travel".into(), "2026".into()],
            is_pinned: Some(true),
            source_url: Some("https://example.com/trip".into()),
            ..Default::default()
        });
        let n = s.client.create_note(r).await.unwrap().into_inner();
        assert_eq!(n.title, "Trip plan", "{backend:?}");
        assert_eq!(from_struct(n.metadata.as_ref().unwrap()), serde_json::json!({"status": "final", "priority": 2}));
        assert_eq!(n.word_count, 5, "Oslo Visit the fjords soon");
        assert!(n.frontmatter_error.is_none());
        assert!(n.is_pinned && !n.is_archived);
        let names: Vec<_> = n.tags.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["2026", "Travel"], "tags by name, deduplicated case-insensitively");
        assert_eq!(n.version, 1);

        // A frontmatter that does not parse is kept as body and reported.
        let bad = s.note("Broken", "---\ntitle: [unclosed\n---\nStill here.").await;
        assert!(bad.frontmatter_error.as_deref().is_some_and(|e| e.contains("YAML")), "{bad:?}");
        assert!(bad.body.starts_with("---\ntitle: [unclosed"));
        assert_eq!(from_struct(bad.metadata.as_ref().unwrap()), serde_json::json!({}));

        // Bad input is a 400 with a reason.
        for (title, body, url) in [
            ("", "", None),
            ("a [[b]]", "", None),
            ("ok", "x\u{0}y", None),
            ("ok", "", Some("ftp://x")),
        ] {
            let r = s.req(pb::CreateNoteRequest {
                title: title.into(),
                body: Some(body.into()),
                source_url: url.map(Into::into),
                ..Default::default()
            });
            let e = s.client.create_note(r).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{title:?} {body:?}: {e:?}");
        }
        let r = s.req(pb::CreateNoteRequest { title: "t".into(), notebook_id: Some(Uuid::now_v7().to_string()), ..Default::default() });
        assert_eq!(s.client.create_note(r).await.unwrap_err().code(), Code::InvalidArgument, "a missing notebook is a 400");

        // Tags added and removed by name; metadata merged; a no-op records nothing.
        let u = s
            .update(pb::UpdateNoteRequest {
                id: n.id.clone(),
                add_tags: vec!["Work".into()],
                remove_tags: vec!["travel".into()],
                metadata: Some(to_struct(&serde_json::json!({"status": null, "extra": true}))),
                ..Default::default()
            })
            .await;
        let names: Vec<_> = u.tags.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["2026", "Work"]);
        assert_eq!(from_struct(u.metadata.as_ref().unwrap()), serde_json::json!({"status": "draft", "priority": 2, "extra": true}));
        let same = s.update(pb::UpdateNoteRequest { id: n.id.clone(), is_pinned: Some(true), ..Default::default() }).await;
        assert_eq!(same.version, u.version);
        let r = s.req(pb::UpdateNoteRequest { id: n.id.clone(), expected_version: Some(1), title: Some("x".into()), ..Default::default() });
        assert_eq!(s.client.update_note(r).await.unwrap_err().code(), Code::Aborted, "stale expected_version");

        // Another tenant sees nothing.
        let other = Uuid::now_v7();
        let r = s.service.request(other, pb::GetNoteRequest { id: n.id.clone(), ..Default::default() });
        assert_eq!(s.client.get_note(r).await.unwrap_err().code(), Code::NotFound);
        let r = s.service.request(other, pb::ListNoteBacklinksRequest { id: n.id.clone(), ..Default::default() });
        assert_eq!(s.client.list_note_backlinks(r).await.unwrap_err().code(), Code::NotFound);
        let r = s.service.request(other, pb::UpdateNoteRequest { id: n.id.clone(), title: Some("x".into()), ..Default::default() });
        assert_eq!(s.client.update_note(r).await.unwrap_err().code(), Code::NotFound);
        let r = s.service.request(other, pb::ListNotesRequest::default());
        assert!(s.client.list_notes(r).await.unwrap().into_inner().data.is_empty());
        let r = s.service.request(other, pb::ListTagsRequest::default());
        assert!(s.client.list_tags(r).await.unwrap().into_inner().data.is_empty());

        // Tag definitions: unique names, colours checked, a deleted tag leaves its notes.
        let r = s.req(pb::CreateTagRequest { name: "work".into(), ..Default::default() });
        assert_eq!(s.client.create_tag(r).await.unwrap_err().code(), Code::AlreadyExists, "names are unique case-insensitively");
        let r = s.req(pb::ListTagsRequest { prefix: Some("wo".into()) });
        let work = s.client.list_tags(r).await.unwrap().into_inner().data.remove(0);
        let r = s.req(pb::UpdateTagRequest { id: work.id.clone(), color: Some("blue".into()), ..Default::default() });
        assert_eq!(s.client.update_tag(r).await.unwrap_err().code(), Code::InvalidArgument);
        let r = s.req(pb::UpdateTagRequest { id: work.id.clone(), color: Some("#00AAFF".into()), name: Some("Job".into()), ..Default::default() });
        let job = s.client.update_tag(r).await.unwrap().into_inner();
        assert_eq!((job.name.as_str(), job.color.as_deref()), ("Job", Some("#00aaff")));
        assert_eq!(s.get(&n.id).await.tags.iter().map(|t| t.name.clone()).collect::<Vec<_>>(), ["2026", "Job"]);
        let r = s.req(pb::DeleteTagRequest { id: job.id.clone() });
        s.client.delete_tag(r).await.unwrap();
        assert_eq!(s.get(&n.id).await.tags.len(), 1);
        s.service.stop();
    }
}

#[tokio::test]
async fn notebooks_nest_without_cycles_and_count_their_notes() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let mk = async |s: &mut Svc, name: &str, parent: Option<&str>| {
            let r = s.req(pb::CreateNotebookRequest { name: name.into(), parent_id: parent.map(Into::into), ..Default::default() });
            s.client.create_notebook(r).await.unwrap().into_inner()
        };
        let work = mk(&mut s, "Work", None).await;
        let projects = mk(&mut s, "Projects", Some(&work.id)).await;
        let deep = mk(&mut s, "Deep", Some(&projects.id)).await;
        assert_eq!(deep.parent_id.as_deref(), Some(projects.id.as_str()), "{backend:?}");

        // No cycles: a notebook cannot move under itself or a descendant.
        for parent in [&work.id, &deep.id] {
            let r = s.req(pb::UpdateNotebookRequest { id: work.id.clone(), parent_id: Some(parent.clone()), ..Default::default() });
            let e = s.client.update_notebook(r).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        }
        let r = s.req(pb::CreateNotebookRequest { name: "x".into(), parent_id: Some(Uuid::now_v7().to_string()), ..Default::default() });
        assert_eq!(s.client.create_notebook(r).await.unwrap_err().code(), Code::InvalidArgument);

        // Note counts follow creates, moves and deletes.
        let r = s.req(pb::CreateNoteRequest { title: "a".into(), notebook_id: Some(projects.id.clone()), ..Default::default() });
        let a = s.client.create_note(r).await.unwrap().into_inner();
        let r = s.req(pb::CreateNoteRequest { title: "b".into(), notebook_id: Some(projects.id.clone()), ..Default::default() });
        let b = s.client.create_note(r).await.unwrap().into_inner();
        let r = s.req(pb::GetNotebookRequest { id: projects.id.clone() });
        assert_eq!(s.client.get_notebook(r).await.unwrap().into_inner().note_count, 2);
        s.update(pb::UpdateNoteRequest { id: b.id.clone(), notebook_id: Some(String::new()), ..Default::default() }).await;
        let listed = s.list(pb::ListNotesRequest { notebook_id: Some(projects.id.clone()), ..Default::default() }).await.unwrap();
        assert_eq!(listed.data.iter().map(|n| n.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&a.id));

        // A notebook with notes or notebooks inside is not deleted.
        let r = s.req(pb::DeleteNotebookRequest { id: projects.id.clone() });
        assert_eq!(s.client.delete_notebook(r).await.unwrap_err().code(), Code::Aborted);
        s.delete(&a.id).await;
        let r = s.req(pb::GetNotebookRequest { id: projects.id.clone() });
        assert_eq!(s.client.get_notebook(r).await.unwrap().into_inner().note_count, 0);
        let r = s.req(pb::DeleteNotebookRequest { id: deep.id.clone() });
        s.client.delete_notebook(r).await.unwrap();
        let r = s.req(pb::DeleteNotebookRequest { id: projects.id.clone() });
        s.client.delete_notebook(r).await.unwrap();

        let r = s.req(pb::ListNotebooksRequest { top_level: true, ..Default::default() });
        let top = s.client.list_notebooks(r).await.unwrap().into_inner().data;
        assert_eq!(top.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["Work"]);
        s.service.stop();
    }
}

#[tokio::test]
async fn wikilinks_resolve_by_title_and_backlinks_survive_rename_delete_and_restore() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        // A link to a note that does not exist yet waits, unresolved.
        let src = s
            .note(
                "Journal",
                "Met Ana today. Talked about [[Rust Book#Ownership|ownership]] for hours.\n\n\
                 ```\n[[Not A Link]]\n```\n\nSee also [[rust book#^b1]] and `[[Nope]]`.",
            )
            .await;
        assert_eq!(src.outgoing_link_count, 2, "{backend:?}: code holds no links");
        let l = s.links(&src.id).await;
        assert_eq!(l.len(), 2);
        assert!(l.iter().all(|l| status(l) == pb::LinkStatus::Unresolved && l.target_id.is_none()));
        assert_eq!(l[0].heading.as_deref(), Some("Ownership"));
        assert_eq!(l[0].alias.as_deref(), Some("ownership"));
        assert_eq!(l[1].block.as_deref(), Some("b1"));

        // The note appears: both links resolve to it, case-insensitively.
        let book = s.note("Rust Book", "About ownership.").await;
        assert_eq!(book.backlink_count, 1);
        let back = s.backlinks(&book.id).await;
        assert_eq!(back.len(), 2);
        assert!(back.iter().all(|l| l.target_id.as_deref() == Some(book.id.as_str()) && status(l) == pb::LinkStatus::Resolved));
        assert_eq!(back[0].source_title, "Journal");
        assert_eq!(back[0].context, "Talked about [[Rust Book#Ownership|ownership]] for hours.");

        // A second note with the same title: the oldest stays the target, the link says so.
        let twin = s.note("rust book", "Another one.").await;
        let l = s.links(&src.id).await;
        assert!(l.iter().all(|l| l.target_id.as_deref() == Some(book.id.as_str()) && l.ambiguous), "{l:?}");
        let fresh = s.note("Reader", "I read [[RUST BOOK]].").await;
        assert_eq!(s.links(&fresh.id).await[0].target_id.as_deref(), Some(book.id.as_str()), "the oldest wins");
        s.delete(&twin.id).await;

        // A rename keeps the links by id; the source's body still says the old title.
        let renamed = s.update(pb::UpdateNoteRequest { id: book.id.clone(), title: Some("The Book".into()), ..Default::default() }).await;
        assert_eq!(renamed.backlink_count, 2);
        assert!(s.get(&src.id).await.body.contains("[[Rust Book#Ownership|ownership]]"));
        // An edit of the source keeps the link on its target too.
        s.update(pb::UpdateNoteRequest { id: src.id.clone(), body: Some("Now only [[Rust Book]].".into()), ..Default::default() }).await;
        let l = s.links(&src.id).await;
        assert_eq!((l.len(), l[0].target_id.as_deref()), (1, Some(book.id.as_str())));

        // rewrite_links rewrites the linking bodies, keeping heading and alias, as new versions.
        s.update(pb::UpdateNoteRequest { id: src.id.clone(), body: Some("See [[Rust Book#Ch1|one]].".into()), ..Default::default() }).await;
        let r2 = s
            .update(pb::UpdateNoteRequest { id: book.id.clone(), title: Some("Ferris".into()), rewrite_links: true, ..Default::default() })
            .await;
        assert_eq!(r2.backlink_count, 2);
        assert_eq!(s.get(&src.id).await.body, "See [[Ferris#Ch1|one]].");
        assert_eq!(s.get(&fresh.id).await.body, "I read [[Ferris]].");
        assert!(s.links(&fresh.id).await.iter().all(|l| l.target_id.as_deref() == Some(book.id.as_str())));

        // Delete the target: its backlinks dangle; restore it: they are back.
        s.delete(&book.id).await;
        let l = s.links(&src.id).await;
        assert_eq!(status(&l[0]), pb::LinkStatus::Dangling);
        let restored = s.restore(&book.id).await;
        assert_eq!(restored.title, "Ferris");
        assert_eq!(restored.backlink_count, 2);
        assert_eq!(status(&s.links(&src.id).await[0]), pb::LinkStatus::Resolved);
        let r = s.req(pb::RestoreNoteRequest { id: book.id.clone() });
        assert_eq!(s.client.restore_note(r).await.unwrap_err().code(), Code::Aborted, "a live note is not restored");

        // Delete the source: it leaves the backlinks; restore it: it is back.
        s.delete(&src.id).await;
        assert_eq!(s.backlinks(&book.id).await.len(), 1);
        assert_eq!(s.get(&book.id).await.backlink_count, 1);
        s.restore(&src.id).await;
        assert_eq!(s.backlinks(&book.id).await.len(), 2);

        // A link written while its note is deleted waits, and resolves when the note is restored.
        let gone = s.note("Gone Note", "").await;
        s.delete(&gone.id).await;
        let orphan = s.note("Later", "Waiting for [[Gone Note]].").await;
        assert_eq!(status(&s.links(&orphan.id).await[0]), pb::LinkStatus::Unresolved, "a deleted note resolves nothing");
        s.restore(&gone.id).await;
        assert_eq!(s.links(&orphan.id).await[0].target_id.as_deref(), Some(gone.id.as_str()));

        // Unlinked mentions: notes that name the title without linking it.
        let m = s.note("Musings", "Ferris is the crab. ferrisWheel is not. We like [[Other]].").await;
        let r = s.req(pb::ListUnlinkedMentionsRequest { id: book.id.clone(), ..Default::default() });
        let mentions = s.client.list_unlinked_mentions(r).await.unwrap().into_inner().data;
        assert_eq!(mentions.len(), 1, "{mentions:?}");
        assert_eq!(mentions[0].source_id, m.id);
        assert_eq!(mentions[0].context, "Ferris is the crab.");
        s.service.stop();
    }
}

#[tokio::test]
async fn search_is_ranked_filtered_and_refused_in_the_past() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let filler = "lorem ipsum dolor sit amet ".repeat(30);
        let weak = s.note("Groceries", &format!("{filler} buy a kayak paddle {filler}")).await;
        let strong = s.note("Kayak trip", "Kayak, kayak, kayak: the kayak route along the coast.").await;
        let r = s.req(pb::CreateNoteRequest { title: "Archived kayak".into(), is_archived: Some(true), tags: vec!["Sea".into()], ..Default::default() });
        let archived = s.client.create_note(r).await.unwrap().into_inner();

        let hits = s.list(pb::ListNotesRequest { q: Some("kayak".into()), ..Default::default() }).await.unwrap().data;
        assert_eq!(hits.len(), 3, "{backend:?}");
        assert_eq!(hits[0].id, strong.id, "the densest match ranks first");
        let w = hits.iter().find(|h| h.id == weak.id).unwrap();
        let snippet = w.snippet.as_deref().unwrap();
        assert!(snippet.contains("kayak paddle") && snippet.starts_with('…') && snippet.ends_with('…'), "{snippet}");

        let only = s.list(pb::ListNotesRequest { q: Some("kayak".into()), archived: Some(false), ..Default::default() }).await.unwrap();
        assert_eq!(only.data.len(), 2);
        let tagged = s.list(pb::ListNotesRequest { tag: Some("sea".into()), ..Default::default() }).await.unwrap();
        assert_eq!(tagged.data.iter().map(|n| n.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&archived.id));
        let none = s.list(pb::ListNotesRequest { tag: Some("nosuchtag".into()), ..Default::default() }).await.unwrap();
        assert!(none.data.is_empty());

        // Pages of a ranked search follow each other without repeats.
        let p1 = s.list(pb::ListNotesRequest { q: Some("kayak".into()), limit: Some(2), ..Default::default() }).await.unwrap();
        assert!(p1.has_more);
        let p2 = s
            .list(pb::ListNotesRequest { q: Some("kayak".into()), limit: Some(2), cursor: Some(p1.next_cursor.clone()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(p2.data.len(), 1);
        assert!(!p1.data.iter().any(|n| n.id == p2.data[0].id));
        let e = s.list(pb::ListNotesRequest { q: Some("other".into()), cursor: Some(p1.next_cursor.clone()), ..Default::default() }).await;
        assert_eq!(e.unwrap_err().code(), Code::InvalidArgument, "a cursor is bound to its query");

        // `q` and `tag` with as_of are 400s; a past listing works without them.
        let past = Some(timestamp(chrono::Utc::now()));
        for q in [
            pb::ListNotesRequest { q: Some("kayak".into()), as_of: past, ..Default::default() },
            pb::ListNotesRequest { tag: Some("sea".into()), as_of: past, ..Default::default() },
        ] {
            assert_eq!(s.list(q).await.unwrap_err().code(), Code::InvalidArgument);
        }
        let then = s.list(pb::ListNotesRequest { as_of: past, ..Default::default() }).await.unwrap();
        assert_eq!(then.data.len(), 3);
        assert!(then.data[0].temporal.is_some());
        let e = s.list(pb::ListNotesRequest { q: Some("--".into()), ..Default::default() }).await;
        assert_eq!(e.unwrap_err().code(), Code::InvalidArgument);
        s.service.stop();
    }
}

#[tokio::test]
async fn a_note_reads_back_through_time_and_every_change_is_an_event() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let bus = Bus::memory();
        let mut events = Box::pin(bus.subscribe_memory().unwrap());
        let mut s = start(&data, bus).await;
        tokio::spawn(s.service.relay.clone().run(std::future::pending()));
        let n = s.note("Draft", "one").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let between = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.update(pb::UpdateNoteRequest { id: n.id.clone(), title: Some("Final".into()), body: Some("one two".into()), ..Default::default() }).await;
        s.delete(&n.id).await;
        s.restore(&n.id).await;

        let r = s.req(pb::GetNoteRequest { id: n.id.clone(), as_of: Some(timestamp(between)), ..Default::default() });
        let old = s.client.get_note(r).await.unwrap().into_inner();
        assert_eq!((old.title.as_str(), old.version), ("Draft", 1), "{backend:?}");
        assert_eq!(old.temporal.unwrap().capture_reason, "create");

        let r = s.req(HistoryRequest { id: n.id.clone(), ..Default::default() });
        let h = s.client.get_note_history(r).await.unwrap().into_inner().data;
        let reasons: Vec<_> = h.iter().map(|v| v.temporal.as_ref().unwrap().capture_reason.clone()).collect();
        assert_eq!(reasons, ["restore", "delete", "update", "create"]);
        let doc = from_struct(h[2].data.as_ref().unwrap());
        assert_eq!(doc["title"], "Final");
        assert!(doc.get("title_key").is_none(), "internal fields stay out of history: {doc}");

        let r = s.req(DiffRequest { id: n.id.clone(), from: Some(timestamp(between)), ..Default::default() });
        let d = s.client.diff_note(r).await.unwrap().into_inner();
        let mut fields: Vec<_> = d.changes.iter().map(|c| c.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, ["body", "title", "word_count"]);
        let r = s.req(TimelineRequest { id: n.id.clone(), fields: vec!["title".into()], ..Default::default() });
        assert_eq!(s.client.get_note_timeline(r).await.unwrap().into_inner().data.len(), 2);

        let mut subjects = Vec::new();
        while subjects.len() < 4 {
            let m = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event in time").unwrap();
            // A delete and a restore also tell other services about the note's inbound links.
            if m.subject.contains(".link.") {
                continue;
            }
            let e = Event::decode(m.payload).unwrap();
            assert_eq!(e.tenant_id, s.tenant.to_string());
            assert_eq!(e.entity_id, n.id);
            pb::Note::decode(e.data.unwrap().value.as_slice()).unwrap();
            subjects.push(m.subject);
        }
        assert_eq!(
            subjects,
            [
                "worktruck.notes.note.created.v1",
                "worktruck.notes.note.updated.v1",
                "worktruck.notes.note.deleted.v1",
                "worktruck.notes.note.restored.v1"
            ]
        );
        s.service.stop();
    }
}
