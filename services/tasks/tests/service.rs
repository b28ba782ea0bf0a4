//! The tasks service over real gRPC (its table definition on a loopback port), on SQLite and
//! PostgreSQL: projects and workflows, identifiers under concurrency, moves, completion,
//! subtasks, dependency cycles, recurrence across a DST change, lists, bulk updates, time
//! travel and events.

use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_kit::bus::Bus;
use worktruck_kit::pbjson::{from_struct, timestamp};
use worktruck_kit::testing::{TestData, TestService, backends};
use worktruck_proto::common::v1::{DiffRequest, Event, HistoryRequest, TimelineRequest};
use worktruck_proto::tasks::v1 as pb;
use worktruck_proto::tasks::v1::tasks_service_client::TasksServiceClient;

struct Svc {
    client: TasksServiceClient<Channel>,
    service: TestService,
    tenant: Uuid,
}

async fn start(data: &TestData, bus: Bus) -> Svc {
    let service = TestService::start(&worktruck_tasks::DEFINITION, data, bus).await;
    Svc { client: TasksServiceClient::new(service.channel.clone()), service, tenant: Uuid::now_v7() }
}

fn ts(s: &str) -> Option<prost_types::Timestamp> {
    Some(timestamp(s.parse().unwrap()))
}

fn utc(t: &Option<prost_types::Timestamp>) -> String {
    let t = t.as_ref().expect("a timestamp");
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap().to_rfc3339()
}

impl Svc {
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        self.service.request(self.tenant, msg)
    }

    async fn project(&mut self, name: &str, prefix: &str) -> pb::Project {
        let r =
            self.req(pb::CreateProjectRequest { name: name.into(), identifier: prefix.into(), ..Default::default() });
        self.client.create_project(r).await.unwrap().into_inner()
    }

    async fn get_project(&mut self, id: &str) -> pb::Project {
        let r = self.req(pb::GetProjectRequest { id: id.into() });
        self.client.get_project(r).await.unwrap().into_inner()
    }

    async fn create(&mut self, t: pb::CreateTaskRequest) -> Result<pb::Task, tonic::Status> {
        let r = self.req(t);
        self.client.create_task(r).await.map(|r| r.into_inner())
    }

    async fn task(&mut self, title: &str, project: Option<&pb::Project>) -> pb::Task {
        self.create(pb::CreateTaskRequest {
            title: title.into(),
            project_id: project.map(|p| p.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
    }

    async fn get(&mut self, id: &str) -> pb::Task {
        let r = self.req(pb::GetTaskRequest { id: id.into(), ..Default::default() });
        self.client.get_task(r).await.unwrap().into_inner()
    }

    async fn update(&mut self, u: pb::UpdateTaskRequest) -> Result<pb::Task, tonic::Status> {
        let r = self.req(u);
        self.client.update_task(r).await.map(|r| r.into_inner())
    }

    async fn complete(&mut self, id: &str) -> pb::Task {
        let r = self.req(pb::CompleteTaskRequest { id: id.into(), ..Default::default() });
        self.client.complete_task(r).await.unwrap().into_inner()
    }

    async fn depend(&mut self, a: &str, b: &str, ty: pb::DependencyType) -> Result<pb::Dependency, tonic::Status> {
        let r = self.req(pb::AddDependencyRequest { task_id: a.into(), depends_on_id: b.into(), r#type: ty as i32 });
        self.client.add_dependency(r).await.map(|r| r.into_inner())
    }

    async fn list(&mut self, q: pb::ListTasksRequest) -> Result<pb::ListTasksResponse, tonic::Status> {
        let r = self.req(q);
        self.client.list_tasks(r).await.map(|r| r.into_inner())
    }
}

fn category(t: &pb::Task) -> pb::StatusCategory {
    pb::StatusCategory::try_from(t.status_category).unwrap()
}

#[tokio::test]
async fn projects_have_workflows_sections_milestones_and_unique_prefixes() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let p = s.project("Platform API", "API").await;
        let names: Vec<_> = p.statuses.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Backlog", "Todo", "In Progress", "Done", "Canceled"], "{backend:?}");
        let default: Vec<_> = p.statuses.iter().filter(|s| s.is_default).map(|s| s.name.as_str()).collect();
        assert_eq!(default, ["Todo"]);
        assert_eq!(p.next_task_number, 1);

        // Bad and taken prefixes.
        for bad in ["api-x", "", "TOOLONGPREFIX", "Api"] {
            let r = s.req(pb::CreateProjectRequest { name: "x".into(), identifier: bad.into(), ..Default::default() });
            let e = s.client.create_project(r).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        }
        let r =
            s.req(pb::CreateProjectRequest { name: "Again".into(), identifier: "API".into(), ..Default::default() });
        assert_eq!(s.client.create_project(r).await.unwrap_err().code(), Code::AlreadyExists);

        // A new status in place, made the default; reordering.
        let r = s.req(pb::CreateStatusRequest {
            project_id: p.id.clone(),
            name: "In Review".into(),
            category: pb::StatusCategory::Started as i32,
            position: Some(3),
            is_default: true,
            ..Default::default()
        });
        let review = s.client.create_status(r).await.unwrap().into_inner();
        assert_eq!((review.position, review.is_default), (3, true));
        let mut ids: Vec<String> = s.get_project(&p.id).await.statuses.iter().map(|s| s.id.clone()).collect();
        ids.reverse();
        let r = s.req(pb::ReorderRequest { project_id: p.id.clone(), ids: ids.clone() });
        let p2 = s.client.reorder_statuses(r).await.unwrap().into_inner();
        assert_eq!(p2.statuses.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), ids);
        let r = s.req(pb::ReorderRequest { project_id: p.id.clone(), ids: ids[1..].to_vec() });
        assert_eq!(s.client.reorder_statuses(r).await.unwrap_err().code(), Code::InvalidArgument, "every id is needed");
        let r = s.req(pb::DeleteStatusRequest { project_id: p.id.clone(), id: review.id.clone() });
        assert_eq!(s.client.delete_status(r).await.unwrap_err().code(), Code::Aborted, "the default stays");

        // Sections in order; a milestone's progress counts its completed tasks.
        for name in ["Design", "Build"] {
            let r = s.req(pb::CreateSectionRequest { project_id: p.id.clone(), name: name.into() });
            s.client.create_section(r).await.unwrap();
        }
        let r = s.req(pb::CreateMilestoneRequest {
            project_id: p.id.clone(),
            name: "v1".into(),
            target_date: Some("2026-06-30".into()),
            ..Default::default()
        });
        let m = s.client.create_milestone(r).await.unwrap().into_inner();
        let mut in_m = Vec::new();
        for i in 0..4 {
            let t = s
                .create(pb::CreateTaskRequest {
                    title: format!("m{i}"),
                    project_id: Some(p.id.clone()),
                    milestone_id: Some(m.id.clone()),
                    ..Default::default()
                })
                .await
                .unwrap();
            in_m.push(t);
        }
        s.complete(&in_m[0].id).await;
        let got = s.get_project(&p.id).await;
        assert_eq!(got.sections.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["Design", "Build"]);
        let gm = &got.milestones[0];
        assert_eq!((gm.task_count, gm.completed_count, gm.progress), (4, 1, 0.25));
        assert_eq!(got.next_task_number, 5);

        // Members with roles.
        let r = s.req(pb::SetProjectMemberRequest {
            project_id: p.id.clone(),
            member_id: "contact-1".into(),
            role: pb::MemberRole::Admin as i32,
        });
        let with = s.client.set_project_member(r).await.unwrap().into_inner();
        assert_eq!(with.members.len(), 1);
        assert_eq!(with.members[0].role, pb::MemberRole::Admin as i32);

        // A project holding tasks is not deleted; another tenant sees nothing.
        let r = s.req(pb::DeleteProjectRequest { id: p.id.clone() });
        assert_eq!(s.client.delete_project(r).await.unwrap_err().code(), Code::Aborted);
        // An empty project is deleted, and its prefix stays taken.
        let tmp = s.project("Temporary", "TMP").await;
        let r = s.req(pb::DeleteProjectRequest { id: tmp.id.clone() });
        s.client.delete_project(r).await.unwrap();
        let r =
            s.req(pb::CreateProjectRequest { name: "Again".into(), identifier: "TMP".into(), ..Default::default() });
        assert_eq!(s.client.create_project(r).await.unwrap_err().code(), Code::AlreadyExists);
        let r = s.req(pb::CreateTaskRequest {
            title: "late".into(),
            project_id: Some(tmp.id.clone()),
            ..Default::default()
        });
        assert_eq!(s.client.create_task(r).await.unwrap_err().code(), Code::InvalidArgument);
        let r = s.service.request(Uuid::now_v7(), pb::GetProjectRequest { id: p.id.clone() });
        assert_eq!(s.client.get_project(r).await.unwrap_err().code(), Code::NotFound);
        s.service.stop();
    }
}

#[tokio::test]
async fn fifty_concurrent_creates_get_identifiers_one_to_fifty_exactly_once() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let p = s.project("Load", "LOAD").await;
        let mut joins = Vec::new();
        for i in 0..50 {
            let mut client = s.client.clone();
            let msg =
                pb::CreateTaskRequest { title: format!("t{i}"), project_id: Some(p.id.clone()), ..Default::default() };
            // A create refused as `unavailable` (no pooled connection within the acquire timeout
            // on a busy machine) wrote nothing and took no number; it is tried again, as a
            // client would.
            let tries: Vec<_> = (0..5).map(|_| s.req(msg.clone())).collect();
            joins.push(tokio::spawn(async move {
                let mut last = None;
                for r in tries {
                    match client.create_task(r).await {
                        Ok(t) => return Ok(t.into_inner()),
                        Err(e) if e.code() == Code::Unavailable => last = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(last.expect("five tries"))
            }));
        }
        let mut numbers = Vec::new();
        for j in joins {
            let t = j.await.unwrap().unwrap_or_else(|e| panic!("{backend:?}: {e:?}"));
            let ident = t.identifier.unwrap();
            numbers.push(ident.strip_prefix("LOAD-").unwrap().parse::<i32>().unwrap());
        }
        numbers.sort();
        assert_eq!(numbers, (1..=50).collect::<Vec<_>>(), "{backend:?}");
        assert_eq!(s.get_project(&p.id).await.next_task_number, 51);
        s.service.stop();
    }
}

#[tokio::test]
async fn moves_statuses_completion_and_bad_input() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let api = s.project("API", "API").await;
        let web = s.project("Web", "WEB").await;
        let t = s
            .create(pb::CreateTaskRequest {
                title: "Ship it".into(),
                project_id: Some(api.id.clone()),
                priority_name: Some("high".into()),
                due_date: Some("2030-01-15".into()),
                labels: vec!["Backend".into(), "backend".into()],
                url_links: vec![pb::UrlLink { url: "https://example.com/spec".into(), title: Some("Spec".into()) }],
                estimation_minutes: Some(90),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(t.identifier.as_deref(), Some("API-1"), "{backend:?}");
        assert_eq!((t.priority, t.priority_name.as_str()), (3, "high"));
        assert_eq!(t.status_id.as_deref(), Some(api.default_status_id.as_str()));
        assert_eq!(category(&t), pb::StatusCategory::Unstarted);
        assert_eq!(t.labels.len(), 1, "labels deduplicated case-insensitively");
        assert_eq!(t.url_links[0].title.as_deref(), Some("Spec"));

        // A status of category completed sets completed_at; canceled sets canceled_at.
        let done = api.statuses.iter().find(|s| s.name == "Done").unwrap().id.clone();
        let canceled = api.statuses.iter().find(|s| s.name == "Canceled").unwrap().id.clone();
        let u = s
            .update(pb::UpdateTaskRequest { id: t.id.clone(), status_id: Some(done.clone()), ..Default::default() })
            .await
            .unwrap();
        assert!(u.completed_at.is_some() && u.canceled_at.is_none());
        let u = s
            .update(pb::UpdateTaskRequest { id: t.id.clone(), status_id: Some(canceled), ..Default::default() })
            .await
            .unwrap();
        assert!(u.completed_at.is_none() && u.canceled_at.is_some());
        let r = s.req(pb::ReopenTaskRequest { id: t.id.clone() });
        let u = s.client.reopen_task(r).await.unwrap().into_inner();
        assert_eq!(category(&u), pb::StatusCategory::Unstarted);
        assert!(u.canceled_at.is_none());
        let u = s.complete(&t.id).await;
        assert_eq!(u.status_id.as_deref(), Some(done.as_str()));
        assert!(u.completed_at.is_some());

        // Moving gives a new identifier in the new project; the old one still resolves.
        s.task("Other", Some(&web)).await;
        let moved = s
            .update(pb::UpdateTaskRequest { id: t.id.clone(), project_id: Some(web.id.clone()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(moved.identifier.as_deref(), Some("WEB-2"));
        assert_eq!(moved.previous_identifiers, ["API-1"]);
        assert_eq!(moved.status_id.as_deref(), Some(web.default_status_id.as_str()));
        for ident in ["API-1", "web-2"] {
            let r = s.req(pb::GetTaskByIdentifierRequest { identifier: ident.into() });
            assert_eq!(s.client.get_task_by_identifier(r).await.unwrap().into_inner().id, t.id, "{ident}");
        }
        let r = s.req(pb::GetTaskByIdentifierRequest { identifier: "API-99".into() });
        assert_eq!(s.client.get_task_by_identifier(r).await.unwrap_err().code(), Code::NotFound);
        let next = s.task("Next", Some(&api)).await;
        assert_eq!(next.identifier.as_deref(), Some("API-2"), "a number is never given twice");

        // Bad input, each a 400 with a reason, nothing written.
        let bad = [
            pb::CreateTaskRequest {
                title: "x".into(),
                project_id: Some(web.id.clone()),
                status_id: Some(done.clone()),
                ..Default::default()
            },
            pb::CreateTaskRequest {
                title: "x".into(),
                rrule: Some("FREQ=SOMETIMES".into()),
                due_date: Some("2030-01-01".into()),
                ..Default::default()
            },
            pb::CreateTaskRequest { title: "x".into(), priority: Some(7), ..Default::default() },
            pb::CreateTaskRequest { title: "x".into(), due_date: Some("2025-02-30".into()), ..Default::default() },
            pb::CreateTaskRequest { title: "x".into(), rrule: Some("FREQ=DAILY".into()), ..Default::default() },
            pb::CreateTaskRequest { title: " ".into(), ..Default::default() },
            pb::CreateTaskRequest { title: "x".into(), time_zone: Some("Mars/Olympus".into()), ..Default::default() },
        ];
        for b in bad {
            let e = s.create(b.clone()).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{b:?}: {e:?}");
        }
        let e = s
            .create(pb::CreateTaskRequest {
                title: "x".into(),
                project_id: Some(web.id.clone()),
                status_id: Some(done.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(e.message().contains("WEB"), "{e:?}");
        assert_eq!(s.get_project(&web.id).await.next_task_number, 3, "a refused create takes no number");
        s.service.stop();
    }
}

#[tokio::test]
async fn subtasks_form_a_tree_and_parent_loops_are_refused() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let p = s.project("Tree", "TR").await;
        let root = s.task("root", Some(&p)).await;
        let mid = s
            .create(pb::CreateTaskRequest {
                title: "mid".into(),
                project_id: Some(p.id.clone()),
                parent_id: Some(root.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let leaf = s
            .create(pb::CreateTaskRequest {
                title: "leaf".into(),
                project_id: Some(p.id.clone()),
                parent_id: Some(mid.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let side = s
            .create(pb::CreateTaskRequest {
                title: "side".into(),
                parent_id: Some(root.id.clone()),
                position: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        s.complete(&side.id).await;

        let r = s.req(pb::ListSubtasksRequest { id: root.id.clone() });
        let subs = s.client.list_subtasks(r).await.unwrap().into_inner().data;
        assert_eq!(subs.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(), ["mid", "side"], "{backend:?}");
        let got = s.get(&root.id).await;
        assert_eq!((got.subtask_count, got.done_subtask_count), (2, 1));
        let r = s.req(pb::GetTaskTreeRequest { id: root.id.clone() });
        let tree = s.client.get_task_tree(r).await.unwrap().into_inner();
        assert_eq!(
            (tree.open_children, tree.done_children, tree.open_descendants, tree.done_descendants),
            (1, 1, 2, 1)
        );
        assert_eq!(tree.children[0].children[0].task.as_ref().unwrap().id, leaf.id);

        // root under leaf would be a loop: refused, naming the chain.
        let e = s
            .update(pb::UpdateTaskRequest {
                id: root.id.clone(),
                parent_id: Some(leaf.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{e:?}");
        assert!(e.message().contains("TR-1 → TR-2 → TR-3 → TR-1"), "{e:?}");
        let e = s
            .update(pb::UpdateTaskRequest {
                id: root.id.clone(),
                parent_id: Some(root.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted);
        // A legal move works, an empty parent makes it top-level.
        let u = s
            .update(pb::UpdateTaskRequest {
                id: leaf.id.clone(),
                parent_id: Some(root.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(u.parent_id.as_deref(), Some(root.id.as_str()));
        let u = s
            .update(pb::UpdateTaskRequest { id: leaf.id.clone(), parent_id: Some(String::new()), ..Default::default() })
            .await
            .unwrap();
        assert!(u.parent_id.is_none());
        s.service.stop();
    }
}

#[tokio::test]
async fn dependency_cycles_are_refused_naming_the_cycle_and_blockers_block() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let p = s.project("Deps", "DEP").await;
        let a = s.task("A", Some(&p)).await;
        let b = s.task("B", Some(&p)).await;
        let c = s.task("C", Some(&p)).await;
        s.depend(&a.id, &b.id, pb::DependencyType::Blocks).await.unwrap();
        // "C blocked_by B" is B blocks C.
        let d = s.depend(&c.id, &b.id, pb::DependencyType::BlockedBy).await.unwrap();
        assert_eq!(d.r#type, pb::DependencyType::BlockedBy as i32);
        assert_eq!(d.depends_on_identifier.as_deref(), Some("DEP-2"));
        let e = s.depend(&c.id, &a.id, pb::DependencyType::Blocks).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "{backend:?}: {e:?}");
        assert!(e.message().contains("DEP-3 blocks DEP-1 blocks DEP-2 blocks DEP-3"), "{e:?}");
        let e = s.depend(&a.id, &c.id, pb::DependencyType::BlockedBy).await.unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "the same cycle from the other side");
        // Related and duplicate edges are not blocking, so they close no cycle.
        s.depend(&c.id, &a.id, pb::DependencyType::Related).await.unwrap();
        assert_eq!(s.depend(&a.id, &a.id, pb::DependencyType::Blocks).await.unwrap_err().code(), Code::InvalidArgument);

        assert!(s.get(&b.id).await.is_blocked && s.get(&c.id).await.is_blocked && !s.get(&a.id).await.is_blocked);
        let blocked = s.list(pb::ListTasksRequest { is_blocked: Some(true), ..Default::default() }).await.unwrap().data;
        let mut ids: Vec<_> = blocked.iter().map(|t| t.id.clone()).collect();
        ids.sort();
        let mut want = vec![b.id.clone(), c.id.clone()];
        want.sort();
        assert_eq!(ids, want);
        s.complete(&a.id).await;
        assert!(!s.get(&b.id).await.is_blocked, "a done blocker no longer blocks");
        let r = s.req(pb::ListDependenciesRequest { task_id: c.id.clone() });
        let deps = s.client.list_dependencies(r).await.unwrap().into_inner().data;
        let kinds: Vec<_> = deps.iter().map(|d| (d.depends_on_title.clone(), d.r#type)).collect();
        assert_eq!(
            kinds,
            [
                ("B".to_string(), pb::DependencyType::BlockedBy as i32),
                ("A".to_string(), pb::DependencyType::Related as i32)
            ]
        );
        let r = s.req(pb::RemoveDependencyRequest { task_id: b.id.clone(), depends_on_id: c.id.clone() });
        s.client.remove_dependency(r).await.unwrap();
        s.depend(&c.id, &a.id, pb::DependencyType::Blocks).await.unwrap();
        s.service.stop();
    }
}

#[tokio::test]
async fn recurrence_walks_across_dst_skips_one_and_count_ends_for_good() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        // 09:00 Oslo (CET) on 2025-03-28; Oslo moves to CEST on 2025-03-30.
        let t = s
            .create(pb::CreateTaskRequest {
                title: "Standup".into(),
                due_at: ts("2025-03-28T08:00:00Z"),
                rrule: Some("RRULE:FREQ=DAILY".into()),
                time_zone: Some("Europe/Oslo".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(utc(&t.next_occurrence), "2025-03-29T08:00:00+00:00", "{backend:?}");
        let mut dues = Vec::new();
        for _ in 0..3 {
            let u = s.complete(&t.id).await;
            assert_eq!(category(&u), pb::StatusCategory::Unstarted, "a recurring task stays open");
            dues.push(utc(&u.due_at));
        }
        assert_eq!(dues, ["2025-03-29T08:00:00+00:00", "2025-03-30T07:00:00+00:00", "2025-03-31T07:00:00+00:00"]);
        let r = s.req(pb::SkipOccurrenceRequest { id: t.id.clone() });
        let u = s.client.skip_occurrence(r).await.unwrap().into_inner();
        assert_eq!(utc(&u.due_at), "2025-04-01T07:00:00+00:00", "skip moves exactly one occurrence");
        assert_eq!(u.completions.len(), 4);
        assert_eq!(u.completions.iter().filter(|c| c.skipped).count(), 1);
        assert_eq!(utc(&u.completions[0].due_at), "2025-03-28T08:00:00+00:00");

        // COUNT=3 on dates: two completions move on, the third completes for good.
        let p = s.project("Chores", "CH").await;
        let c3 = s
            .create(pb::CreateTaskRequest {
                title: "Water plants".into(),
                project_id: Some(p.id.clone()),
                due_date: Some("2025-01-06".into()),
                rrule: Some("FREQ=WEEKLY;COUNT=3".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let u = s.complete(&c3.id).await;
        assert_eq!((u.due_date.as_deref(), category(&u)), (Some("2025-01-13"), pb::StatusCategory::Unstarted));
        let u = s.complete(&c3.id).await;
        assert_eq!(u.due_date.as_deref(), Some("2025-01-20"));
        assert!(u.next_occurrence.is_none(), "the last occurrence has none after it");
        let u = s.complete(&c3.id).await;
        assert_eq!(category(&u), pb::StatusCategory::Completed);
        assert!(u.completed_at.is_some());
        assert_eq!(u.completions.len(), 3);
        let again = s.complete(&c3.id).await;
        assert_eq!(again.version, u.version, "completing a done task changes nothing");
        let plain = s.task("plain", None).await;
        let r = s.req(pb::SkipOccurrenceRequest { id: plain.id });
        assert_eq!(s.client.skip_occurrence(r).await.unwrap_err().code(), Code::Aborted);
        s.service.stop();
    }
}

#[tokio::test]
async fn lists_filter_sort_overdue_by_tenant_zone_and_bulk_is_all_or_nothing() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut s = start(&data, Bus::memory()).await;
        let api = s.project("API", "API").await;
        let web = s.project("Web", "WEB").await;
        // Kiribati's date is always at least a day ahead of UTC-12's.
        let east = chrono::Utc::now().with_timezone(&chrono_tz::Pacific::Kiritimati).date_naive();
        let yesterday_east = (east - chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
        let mk = |title: &str,
                  pr: i32,
                  due_date: Option<String>,
                  due_at: Option<prost_types::Timestamp>,
                  project: &pb::Project| pb::CreateTaskRequest {
            title: title.into(),
            priority: Some(pr),
            due_date,
            due_at,
            project_id: Some(project.id.clone()),
            labels: if pr > 2 { vec!["Hot".into()] } else { vec![] },
            ..Default::default()
        };
        let dated = s.create(mk("dated", 1, Some(yesterday_east.clone()), None, &api)).await.unwrap();
        let late = s.create(mk("late", 4, None, ts("2020-01-01T00:00:00Z"), &api)).await.unwrap();
        let future = s.create(mk("future kayak", 3, None, ts("2099-01-01T00:00:00Z"), &web)).await.unwrap();
        let none = s.create(mk("undated kayak", 2, None, None, &web)).await.unwrap();

        let r = s.req(pb::TaskSettings { time_zone: "Pacific/Kiritimati".into() });
        s.client.update_task_settings(r).await.unwrap();
        let r = s.req(pb::ListOverdueTasksRequest::default());
        let over: Vec<_> =
            s.client.list_overdue_tasks(r).await.unwrap().into_inner().data.into_iter().map(|t| t.title).collect();
        assert_eq!(over, ["late", "dated"], "{backend:?}: most overdue first, the date is past in Kiritimati");
        let r = s.req(pb::TaskSettings { time_zone: "Etc/GMT+12".into() });
        s.client.update_task_settings(r).await.unwrap();
        let r = s.req(pb::ListOverdueTasksRequest::default());
        let over: Vec<_> =
            s.client.list_overdue_tasks(r).await.unwrap().into_inner().data.into_iter().map(|t| t.title).collect();
        assert_eq!(over, ["late"], "in UTC-12 that date is today or later");

        let titles = |r: pb::ListTasksResponse| r.data.into_iter().map(|t| t.title).collect::<Vec<_>>();
        let by_pr =
            s.list(pb::ListTasksRequest { sort: pb::TaskSort::Priority as i32, ..Default::default() }).await.unwrap();
        assert_eq!(titles(by_pr), ["late", "future kayak", "undated kayak", "dated"]);
        let by_due =
            s.list(pb::ListTasksRequest { sort: pb::TaskSort::Due as i32, ..Default::default() }).await.unwrap();
        assert_eq!(titles(by_due).last().map(String::as_str), Some("undated kayak"), "undated last");
        let in_web = s
            .list(pb::ListTasksRequest {
                project_id: Some(web.id.clone()),
                q: Some("kayak".into()),
                label: Some("hot".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(titles(in_web), ["future kayak"]);
        let pr2 = s.list(pb::ListTasksRequest { priority: Some(2), ..Default::default() }).await.unwrap();
        assert_eq!(titles(pr2), ["undated kayak"]);
        let before = s
            .list(pb::ListTasksRequest {
                due_before: ts("2030-01-01T00:00:00Z"),
                sort: pb::TaskSort::Due as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(titles(before), ["late", "dated"]);
        let p1 = s.list(pb::ListTasksRequest { limit: Some(3), ..Default::default() }).await.unwrap();
        assert!(p1.has_more);
        let p2 = s
            .list(pb::ListTasksRequest { limit: Some(3), cursor: Some(p1.next_cursor.clone()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(p2.data.len(), 1);
        let e = s
            .list(pb::ListTasksRequest {
                q: Some("kayak".into()),
                as_of: ts("2025-01-01T00:00:00Z"),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "q with as_of");
        let r = s.req(pb::SearchTasksRequest { q: "API-2".into(), ..Default::default() });
        let hits = s.client.search_tasks(r).await.unwrap().into_inner().data;
        assert_eq!(
            hits.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            std::slice::from_ref(&late.id),
            "identifiers are searchable"
        );

        // Bulk: one bad id, or one status from another project, changes nothing.
        let all = vec![dated.id.clone(), late.id.clone(), future.id.clone(), none.id.clone()];
        let done_api = api.statuses.iter().find(|s| s.name == "Done").unwrap().id.clone();
        let mut with_missing = all[..2].to_vec();
        with_missing.push(Uuid::now_v7().to_string());
        let r = s.req(pb::BulkUpdateTasksRequest { ids: with_missing, priority: Some(0), ..Default::default() });
        assert_eq!(s.client.bulk_update_tasks(r).await.unwrap_err().code(), Code::NotFound);
        let r = s.req(pb::BulkUpdateTasksRequest {
            ids: all.clone(),
            status_id: Some(done_api.clone()),
            priority: Some(0),
            ..Default::default()
        });
        let e = s.client.bulk_update_tasks(r).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("no task was changed"), "{e:?}");
        for id in &all {
            let t = s.get(id).await;
            assert_eq!((t.version, category(&t)), (1, pb::StatusCategory::Unstarted), "{}", t.title);
        }
        let assignee = Uuid::now_v7().to_string();
        let r = s.req(pb::BulkUpdateTasksRequest {
            ids: all[..2].to_vec(),
            status_id: Some(done_api),
            assignee_id: Some(assignee.clone()),
            add_labels: vec!["Q3".into()],
            ..Default::default()
        });
        let out = s.client.bulk_update_tasks(r).await.unwrap().into_inner().data;
        assert_eq!(out.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), all[..2].to_vec());
        assert!(out.iter().all(|t| t.completed_at.is_some() && t.assignee_id.as_deref() == Some(assignee.as_str())));
        assert!(out.iter().all(|t| t.labels.iter().any(|l| l.name == "Q3")));
        let r = s.req(pb::BulkUpdateTasksRequest {
            ids: (0..101).map(|_| Uuid::now_v7().to_string()).collect(),
            priority: Some(1),
            ..Default::default()
        });
        assert_eq!(s.client.bulk_update_tasks(r).await.unwrap_err().code(), Code::InvalidArgument);
        let open = s
            .list(pb::ListTasksRequest { include_done: Some(false), assignee_id: Some(assignee), ..Default::default() })
            .await
            .unwrap();
        assert!(open.data.is_empty());
        s.service.stop();
    }
}

#[tokio::test]
async fn a_task_reads_back_through_time_and_every_change_is_an_event() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let bus = Bus::memory();
        let mut events = Box::pin(bus.subscribe_memory().unwrap());
        let mut s = start(&data, bus).await;
        tokio::spawn(s.service.relay.clone().run(std::future::pending()));
        let t = s.task("Draft", None).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let between = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.update(pb::UpdateTaskRequest {
            id: t.id.clone(),
            title: Some("Final".into()),
            priority: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
        s.complete(&t.id).await;
        let r = s.req(pb::AddCommentRequest { task_id: t.id.clone(), body: "Looks **good**\nto me".into() });
        let cm = s.client.add_comment(r).await.unwrap().into_inner();
        let r = s.req(pb::UpdateCommentRequest { task_id: t.id.clone(), id: cm.id.clone(), body: "Edited".into() });
        let cm2 = s.client.update_comment(r).await.unwrap().into_inner();
        assert!(cm2.edited_at.is_some() && cm.edited_at.is_none());
        assert_eq!(s.get(&t.id).await.comment_count, 1);
        let r = s.req(pb::DeleteTaskRequest { id: t.id.clone() });
        s.client.delete_task(r).await.unwrap();

        let r = s.req(pb::GetTaskRequest { id: t.id.clone(), as_of: Some(timestamp(between)), ..Default::default() });
        let old = s.client.get_task(r).await.unwrap().into_inner();
        assert_eq!((old.title.as_str(), old.version), ("Draft", 1), "{backend:?}");
        assert_eq!(old.temporal.unwrap().capture_reason, "create");
        let r = s.req(HistoryRequest { id: t.id.clone(), ..Default::default() });
        let h = s.client.get_task_history(r).await.unwrap().into_inner().data;
        let reasons: Vec<_> = h.iter().map(|v| v.temporal.as_ref().unwrap().capture_reason.clone()).collect();
        assert_eq!(reasons, ["delete", "update", "update", "create"]);
        assert_eq!(from_struct(h[1].data.as_ref().unwrap())["status_category"], "completed");
        let r = s.req(DiffRequest {
            id: t.id.clone(),
            from: Some(timestamp(between)),
            to: h[1].temporal.as_ref().unwrap().sys_from,
        });
        let d = s.client.diff_task(r).await.unwrap().into_inner();
        let mut fields: Vec<_> = d.changes.iter().map(|c| c.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, ["completed_at", "priority", "status_category", "title"]);
        let r = s.req(TimelineRequest { id: t.id.clone(), fields: vec!["title".into()], ..Default::default() });
        assert_eq!(s.client.get_task_timeline(r).await.unwrap().into_inner().data.len(), 2);

        let mut subjects = Vec::new();
        for _ in 0..6 {
            let m = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event in time").unwrap();
            let e = Event::decode(m.payload).unwrap();
            assert_eq!(e.tenant_id, s.tenant.to_string());
            subjects.push(m.subject);
        }
        assert_eq!(
            subjects,
            [
                "worktruck.tasks.task.created.v1",
                "worktruck.tasks.task.updated.v1",
                "worktruck.tasks.task.completed.v1",
                "worktruck.tasks.comment.created.v1",
                "worktruck.tasks.comment.updated.v1",
                "worktruck.tasks.task.deleted.v1",
            ]
        );

        // Projects, labels and dependencies are announced too.
        let p = s.project("Events", "EV").await;
        let a = s
            .create(pb::CreateTaskRequest {
                title: "a".into(),
                project_id: Some(p.id.clone()),
                labels: vec!["New".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let b = s.task("b", Some(&p)).await;
        s.depend(&a.id, &b.id, pb::DependencyType::Blocks).await.unwrap();
        let mut subjects = Vec::new();
        while subjects.len() < 5 {
            let m = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event in time").unwrap();
            // A delete also tells other services about the task's inbound links (kit::links).
            if !m.subject.contains(".link.") {
                subjects.push(m.subject);
            }
        }
        assert_eq!(
            subjects,
            [
                "worktruck.tasks.project.created.v1",
                "worktruck.tasks.label.created.v1",
                "worktruck.tasks.task.created.v1",
                "worktruck.tasks.task.created.v1",
                "worktruck.tasks.dependency.created.v1",
            ]
        );

        // Valid time: a back-dated change is a correction, and the world before it reads back.
        let before = chrono::Utc::now() - chrono::Duration::hours(2);
        let r = s.req(pb::UpdateTaskRequest {
            id: b.id.clone(),
            priority: Some(4),
            valid_from: Some(timestamp(chrono::Utc::now() - chrono::Duration::hours(1))),
            ..Default::default()
        });
        s.client.update_task(r).await.unwrap();
        let r = s.req(HistoryRequest { id: b.id.clone(), limit: Some(1), ..Default::default() });
        let h = s.client.get_task_history(r).await.unwrap().into_inner().data;
        assert_eq!(h[0].temporal.as_ref().unwrap().capture_reason, "correction");
        let r = s.req(pb::GetTaskRequest {
            id: b.id.clone(),
            valid_at: Some(timestamp(chrono::Utc::now())),
            ..Default::default()
        });
        assert_eq!(s.client.get_task(r).await.unwrap().into_inner().priority, 4);
        let r = s.req(pb::GetTaskRequest {
            id: b.id.clone(),
            as_of: Some(timestamp(chrono::Utc::now())),
            valid_at: Some(timestamp(before)),
        });
        assert_eq!(s.client.get_task(r).await.unwrap_err().code(), Code::NotFound, "the task was not yet true then");
        s.service.stop();
    }
}
