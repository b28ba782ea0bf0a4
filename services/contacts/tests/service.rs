//! The contacts service over real gRPC (a tonic server on port 0), on SQLite and PostgreSQL, with
//! events through the outbox to the in-process bus and to NATS JetStream.

use std::time::Duration;

use futures::StreamExt;
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;
use worktruck_kit::bus::Bus;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_kit::db::Db;
use worktruck_kit::outbox::Relay;
use worktruck_kit::testing::nats::{OwnNats, nats_server_binary};
use worktruck_kit::testing::{TestData, TestService, backends, nats_url};
use worktruck_proto::common::v1::{Event, HistoryRequest};
use worktruck_proto::contacts::v1 as pb;
use worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient;

struct Svc {
    client: ContactsServiceClient<Channel>,
    channel: Channel,
    signer: Signer,
    relay: Relay,
    db: Db,
    service: TestService,
}

/// The service as the binary builds it (its table definition), on a loopback port.
async fn start(data: &TestData, bus: Bus) -> Svc {
    let service = TestService::start(&worktruck_contacts::DEFINITION, data, bus).await;
    Svc {
        client: ContactsServiceClient::new(service.channel.clone()),
        channel: service.channel.clone(),
        signer: service.signer.clone(),
        relay: service.relay.clone(),
        db: service.db.clone(),
        service,
    }
}

fn req<T>(svc: &Svc, tenant: Uuid, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    svc.signer.attach(&Ctx::tenant(tenant, "key:test", 30), r.metadata_mut());
    r
}

fn create(name: &str) -> pb::CreateContactRequest {
    pb::CreateContactRequest { kind: pb::ContactKind::Person as i32, display_name: name.into(), ..Default::default() }
}

#[tokio::test]
async fn crud_isolation_retention_and_forged_contexts() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut svc = start(&data, Bus::memory()).await;
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let c = svc.client.create_contact(req(&svc, a, create("Ada"))).await.unwrap().into_inner();
        assert_eq!(c.version, 1);
        assert_eq!(c.tenant_id, a.to_string());

        // Another tenant sees nothing, on every RPC.
        let get_b = svc.client.get_contact(req(&svc, b, pb::GetContactRequest { id: c.id.clone(), ..Default::default() })).await;
        assert_eq!(get_b.unwrap_err().code(), Code::NotFound, "{backend:?}");
        let upd_b = svc
            .client
            .update_contact(req(&svc, b, pb::UpdateContactRequest { id: c.id.clone(), nickname: Some("x".into()), ..Default::default() }))
            .await;
        assert_eq!(upd_b.unwrap_err().code(), Code::NotFound);
        let del_b = svc.client.delete_contact(req(&svc, b, pb::DeleteContactRequest { id: c.id.clone() })).await;
        assert_eq!(del_b.unwrap_err().code(), Code::NotFound);
        let hist_b = svc.client.get_contact_history(req(&svc, b, HistoryRequest { id: c.id.clone(), ..Default::default() })).await;
        assert_eq!(hist_b.unwrap_err().code(), Code::NotFound);
        let list_b = svc.client.list_contacts(req(&svc, b, pb::ListContactsRequest::default())).await.unwrap().into_inner();
        assert!(list_b.data.is_empty());

        // No context, or one signed by another key, is refused.
        let bare = svc.client.get_contact(pb::GetContactRequest { id: c.id.clone(), ..Default::default() }).await;
        assert_eq!(bare.unwrap_err().code(), Code::Unauthenticated);
        let mut forged = Request::new(pb::GetContactRequest { id: c.id.clone(), ..Default::default() });
        Signer::from_seed([1; 32]).attach(&Ctx::tenant(a, "key:evil", 30), forged.metadata_mut());
        assert_eq!(svc.client.get_contact(forged).await.unwrap_err().code(), Code::Unauthenticated);

        // Bad ids and a past beyond retention.
        let bad = svc.client.get_contact(req(&svc, a, pb::GetContactRequest { id: "nope".into(), ..Default::default() })).await;
        assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
        let old = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 40 * 86_400, nanos: 0 };
        let gone = svc
            .client
            .get_contact(req(&svc, a, pb::GetContactRequest { id: c.id.clone(), as_of: Some(old), ..Default::default() }))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::FailedPrecondition);
        assert_eq!(worktruck_kit::Error::from_status(&gone).code, worktruck_kit::ErrorCode::Gone);
        // The same `from` is gone for every read of the past, not only for diff (issue 8 item 10).
        let window = || HistoryRequest { id: c.id.clone(), from: Some(old), ..Default::default() };
        let reads = [
            svc.client.get_contact_history(req(&svc, a, window())).await.map(drop),
            svc.client.diff_contact(req(&svc, a, worktruck_proto::common::v1::DiffRequest { id: c.id.clone(), from: Some(old), ..Default::default() })).await.map(drop),
            svc.client.get_contact_timeline(req(&svc, a, worktruck_proto::common::v1::TimelineRequest { id: c.id.clone(), from: Some(old), ..Default::default() })).await.map(drop),
        ];
        for (name, r) in ["history", "diff", "timeline"].into_iter().zip(reads) {
            let e = r.expect_err(name);
            assert_eq!(worktruck_kit::Error::from_status(&e).code, worktruck_kit::ErrorCode::Gone, "{backend:?} {name}");
        }

        // Optimistic concurrency and no-op updates.
        let stale = svc
            .client
            .update_contact(req(&svc, a, pb::UpdateContactRequest { id: c.id.clone(), nickname: Some("A".into()), expected_version: Some(7), ..Default::default() }))
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::Aborted);
        let same = svc
            .client
            .update_contact(req(&svc, a, pb::UpdateContactRequest { id: c.id.clone(), display_name: Some("Ada".into()), ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(same.version, 1, "an update that changes nothing records nothing");
        svc.service.stop();
        svc.db.close().await;
    }
}

#[tokio::test]
async fn every_change_leaves_an_event_through_the_outbox() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let bus = Bus::memory();
        let mut events = Box::pin(bus.subscribe_memory().unwrap());
        let mut svc = start(&data, bus).await;
        tokio::spawn(svc.relay.clone().run(std::future::pending()));
        let t = Uuid::now_v7();
        let c = svc.client.create_contact(req(&svc, t, create("Grace"))).await.unwrap().into_inner();
        svc.client
            .update_contact(req(&svc, t, pb::UpdateContactRequest { id: c.id.clone(), family_name: Some("Hopper".into()), ..Default::default() }))
            .await
            .unwrap();
        svc.client.delete_contact(req(&svc, t, pb::DeleteContactRequest { id: c.id.clone() })).await.unwrap();
        let mut subjects = Vec::new();
        for _ in 0..3 {
            let m = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event in time").unwrap();
            let e = Event::decode(m.payload).unwrap();
            assert_eq!(e.tenant_id, t.to_string());
            assert_eq!(e.entity_id, c.id);
            let contact = pb::Contact::decode(e.data.unwrap().value.as_slice()).unwrap();
            assert_eq!(contact.display_name, "Grace");
            subjects.push(m.subject);
        }
        assert_eq!(
            subjects,
            [
                "worktruck.contacts.contact.created.v1",
                "worktruck.contacts.contact.updated.v1",
                "worktruck.contacts.contact.deleted.v1"
            ],
            "{backend:?}"
        );
        // The relay marks a row sent just after publishing it.
        let mut pending = 1;
        for _ in 0..100 {
            pending = svc.relay.pending().await.unwrap();
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pending, 0);
        svc.service.stop();
    }
}

#[tokio::test]
async fn events_reach_a_nats_subscriber() {
    let Some(url) = nats_url() else { return };
    for backend in backends() {
        let data = TestData::new(backend).await;
        let nc = async_nats::connect(&url).await.expect("connect to NATS_URL");
        let mut sub = nc.subscribe("worktruck.contacts.contact.>").await.unwrap();
        nc.flush().await.unwrap();
        let bus = Bus::nats(&url).await.unwrap();
        bus.ensure_stream().await.unwrap();
        let svc = start(&data, bus).await;
        tokio::spawn(svc.relay.clone().run(std::future::pending()));
        let t = Uuid::now_v7();
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut svc_client = svc.client.clone();
            ids.push(svc_client.create_contact(req(&svc, t, create(&format!("n{i}")))).await.unwrap().into_inner().id);
        }
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("event in time").unwrap();
            let e = Event::decode(m.payload).unwrap();
            if e.tenant_id == t.to_string() {
                assert_eq!(m.headers.unwrap().get("Nats-Msg-Id").unwrap().as_str(), e.id);
                seen.push(e.entity_id);
            }
        }
        seen.sort();
        ids.sort();
        assert_eq!(seen, ids, "{backend:?}");
    }
}

#[tokio::test]
async fn writes_succeed_while_nats_is_down_and_their_events_follow_when_it_returns() {
    // Runs wherever NATS is required (CI) or a nats-server binary exists.
    if nats_url().is_none() && nats_server_binary().is_none() {
        return;
    }
    for backend in backends() {
        let data = TestData::new(backend).await;
        let store = data.path().join("nats");
        let mut nats = OwnNats::start(&store).await;
        let bus = Bus::nats(&nats.url()).await.unwrap();
        bus.ensure_stream().await.unwrap();
        let mut svc = start(&data, bus).await;
        tokio::spawn(svc.relay.clone().run(std::future::pending()));
        let t = Uuid::now_v7();
        let mut ids = Vec::new();
        ids.push(svc.client.create_contact(req(&svc, t, create("before"))).await.unwrap().into_inner().id);

        // Wait until the first event is out, then take NATS away.
        for _ in 0..100 {
            if svc.relay.pending().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nats.stop();
        for i in 0..4 {
            let c = svc.client.create_contact(req(&svc, t, create(&format!("during {i}")))).await;
            ids.push(c.expect("writes succeed while NATS is down").into_inner().id);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(svc.relay.pending().await.unwrap(), 4, "events wait in the outbox");

        // NATS returns (same port, same store): the backlog goes out.
        nats.restart().await;
        let mut drained = false;
        for _ in 0..200 {
            if svc.relay.pending().await.unwrap() == 0 {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(drained, "{backend:?}: outbox drained after NATS returned");

        let nc = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(nc);
        let mut stream = js.get_stream(worktruck_kit::bus::STREAM).await.unwrap();
        let count = stream.info().await.unwrap().state.messages;
        let mut got = Vec::new();
        for seq in 1..=count {
            let m = stream.get_raw_message(seq).await.unwrap();
            let e = Event::decode(m.payload).unwrap();
            got.push(e.entity_id);
        }
        got.sort();
        ids.sort();
        assert_eq!(got, ids, "{backend:?}: every event exactly once, in the stream");
        svc.service.stop();
    }
}

#[tokio::test]
async fn the_grpc_server_answers_health_checks_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let data = TestData::new(worktruck_kit::testing::Backend::Sqlite).await;
    let svc = start(&data, Bus::memory()).await;
    let mut health = HealthClient::new(svc.channel.clone());
    let r = health
        .check(HealthCheckRequest { service: worktruck_contacts::GRPC_NAME.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, ServingStatus::Serving as i32);

    let mut refl = ServerReflectionClient::new(svc.channel.clone());
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream = refl.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let resp = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("list services") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == worktruck_contacts::GRPC_NAME), "{names:?}");
}

#[tokio::test]
async fn a_context_signed_for_a_read_only_credential_cannot_write() {
    // What a context captured from a `contacts:read` request and replayed straight to the
    // service within its lifetime can do: read, and nothing else.
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut svc = start(&data, Bus::memory()).await;
        let tenant = Uuid::now_v7();
        let c = svc.client.create_contact(req(&svc, tenant, create("Ada"))).await.unwrap().into_inner();
        let mut read_only = Ctx::tenant(tenant, "key:reader", 365);
        read_only.scopes = vec!["contacts:read".into()];
        let get = svc.service.request_as(&read_only, pb::GetContactRequest { id: c.id.clone(), ..Default::default() });
        assert!(svc.client.get_contact(get).await.is_ok(), "{backend:?}: reads are allowed");
        let update = svc.service.request_as(
            &read_only,
            pb::UpdateContactRequest { id: c.id.clone(), nickname: Some("x".into()), ..Default::default() },
        );
        let e = svc.client.update_contact(update).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{backend:?}");
        assert_eq!(worktruck_kit::Error::from_status(&e).code, worktruck_kit::ErrorCode::InsufficientScope);
        let create_req = svc.service.request_as(&read_only, create("Eve"));
        assert_eq!(svc.client.create_contact(create_req).await.unwrap_err().code(), Code::PermissionDenied);
        let delete = svc.service.request_as(&read_only, pb::DeleteContactRequest { id: c.id.clone() });
        assert_eq!(svc.client.delete_contact(delete).await.unwrap_err().code(), Code::PermissionDenied);
        // Another domain's write scope does not help either.
        let mut other = Ctx::tenant(tenant, "key:crm", 365);
        other.scopes = vec!["crm:write".into()];
        let get = svc.service.request_as(&other, pb::GetContactRequest { id: c.id.clone(), ..Default::default() });
        assert_eq!(svc.client.get_contact(get).await.unwrap_err().code(), Code::PermissionDenied);
        let after = svc.client.get_contact(req(&svc, tenant, pb::GetContactRequest { id: c.id.clone(), ..Default::default() })).await.unwrap().into_inner();
        assert_eq!(after.version, 1, "nothing was written");
    }
}

#[tokio::test]
async fn concurrent_plain_patches_of_one_contact_all_succeed_and_stale_versions_still_conflict() {
    // Issue 8 item 5, through the service: 16 clients patching one contact without
    // `expected_version` got 75 % `conflict` on PostgreSQL.
    for backend in backends() {
        let data = TestData::new(backend).await;
        let svc = start(&data, Bus::memory()).await;
        let t = Uuid::now_v7();
        let c = svc.client.clone().create_contact(req(&svc, t, create("hot"))).await.unwrap().into_inner();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let mut client = svc.client.clone();
            let r = req(&svc, t, pb::UpdateContactRequest { id: c.id.clone(), nickname: Some(format!("n{i}")), ..Default::default() });
            tasks.push(tokio::spawn(async move { client.update_contact(r).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap_or_else(|e| panic!("{backend:?}: a plain patch failed: {e}"));
        }
        let get = req(&svc, t, pb::GetContactRequest { id: c.id.clone(), ..Default::default() });
        assert_eq!(svc.client.clone().get_contact(get).await.unwrap().into_inner().version, 17, "{backend:?}");
        let stale = req(&svc, t, pb::UpdateContactRequest { id: c.id.clone(), nickname: Some("x".into()), expected_version: Some(1), ..Default::default() });
        assert_eq!(svc.client.clone().update_contact(stale).await.unwrap_err().code(), Code::Aborted, "{backend:?}");
        svc.service.stop();
    }
}

#[tokio::test]
async fn child_changes_tags_groups_and_merges_are_events_too() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let bus = Bus::memory();
        let mut events = Box::pin(bus.subscribe_memory().unwrap());
        let mut svc = start(&data, bus).await;
        tokio::spawn(svc.relay.clone().run(std::future::pending()));
        let t = Uuid::now_v7();
        let a = svc.client.create_contact(req(&svc, t, create("Ada"))).await.unwrap().into_inner();
        let b = svc.client.create_contact(req(&svc, t, create("Ada L"))).await.unwrap().into_inner();
        let ch = svc
            .client
            .add_channel(req(&svc, t, pb::AddChannelRequest { contact_id: a.id.clone(), r#type: pb::ChannelType::Email as i32, value: "Ada@X.org".into(), ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ch.canonical_value, "ada@x.org");
        // A refused change leaves no event (the outbox row is in the refused transaction).
        let bad = svc
            .client
            .add_channel(req(&svc, t, pb::AddChannelRequest { contact_id: a.id.clone(), r#type: pb::ChannelType::Phone as i32, value: "12".into(), ..Default::default() }))
            .await;
        assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
        svc.client.tag_contact(req(&svc, t, pb::TagContactRequest { contact_id: a.id.clone(), name: Some("math".into()), ..Default::default() })).await.unwrap();
        let g = svc.client.create_group(req(&svc, t, pb::CreateGroupRequest { name: "Salon".into(), ..Default::default() })).await.unwrap().into_inner();
        svc.client.add_group_members(req(&svc, t, pb::GroupMembersRequest { id: g.id.clone(), contact_ids: vec![b.id.clone()] })).await.unwrap();
        let m = svc
            .client
            .merge_contacts(req(&svc, t, pb::MergeContactsRequest { survivor_id: a.id.clone(), merged_ids: vec![b.id.clone()], ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        svc.client.undo_merge(req(&svc, t, pb::UndoMergeRequest { id: m.merge_id.clone() })).await.unwrap();
        let want = [
            "contact.created",
            "contact.created",
            "contact.updated",
            "channel.added",
            "tag.created",
            "contact.updated",
            "tag.attached",
            "group.created",
            "contact.updated",
            "group.members_added",
            "contact.updated",
            "contact.deleted",
            // The merged contact's inbound links dangle (kit::links), and revive on undo.
            "link.dangling",
            "contact.merged",
            "contact.updated",
            "contact.restored",
            "link.revived",
            "contact.merge_undone",
        ];
        let mut subjects = Vec::new();
        for _ in 0..want.len() {
            let m = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event in time").unwrap();
            let e = Event::decode(m.payload).unwrap();
            assert_eq!(e.tenant_id, t.to_string());
            subjects.push(m.subject.trim_start_matches("worktruck.contacts.").trim_end_matches(".v1").to_owned());
        }
        assert_eq!(subjects, want, "{backend:?}");
        svc.service.stop();
    }
}
