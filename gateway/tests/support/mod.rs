//! Test fixtures of the gateway: in-memory fakes of `ContactsService` and `TenantsService` on a
//! real tonic server (127.0.0.1:0), and the gateway router in front of them.
//!
//! The fakes do what the gateway relies on and nothing more; the real services have their own
//! tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use http::{Request, Response};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;
use uuid::Uuid;
use worktruck_gateway::{GatewayConfig, Upstreams};
use worktruck_kit::Error;
use worktruck_kit::context::{Ctx, Signer, Verifier};
use worktruck_proto::common::v1 as common;
use worktruck_proto::contacts::v1::contacts_service_server::{
    ContactsService, ContactsServiceServer,
};
use worktruck_proto::contacts::v1::*;
use worktruck_proto::registry::Registry;
use worktruck_proto::tenants::v1::tenants_service_server::{TenantsService, TenantsServiceServer};
use worktruck_proto::tenants::v1::*;

/// The one API key the fake tenants service accepts.
pub const GOOD_KEY: &str = "bsk_test_0123456789abcdef";
/// Its key id.
pub const KEY_ID: &str = "0190aaaa-0000-7000-8000-000000000001";
/// The body limit the test router is built with.
pub const BODY_LIMIT: usize = 16 * 1024;

pub const CONTACTS: &str = "worktruck.contacts.v1.ContactsService";
pub const TENANTS: &str = "worktruck.tenants.v1.TenantsService";
/// Not faked: no gateway test calls it, but the router needs an upstream for every service.
pub const NOTES: &str = "worktruck.notes.v1.NotesService";
pub const CRM: &str = "worktruck.crm.v1.CrmService";
/// The tasks service (routed, never called by these tests).
pub const TASKS: &str = "worktruck.tasks.v1.TasksService";
/// The calendar service.
pub const CALENDAR: &str = "worktruck.calendar.v1.CalendarService";
/// The agents service (routed, never called by these tests).
pub const AGENTS: &str = "worktruck.agents.v1.AgentsService";
/// The apps service (routed, never called by these tests).
pub const APPS: &str = "worktruck.apps.v1.AppsService";
/// The webhooks service (routed, never called by these tests).
pub const WEBHOOKS: &str = "worktruck.webhooks.v1.WebhooksService";

/// A running fake backend and a gateway router in front of it.
pub struct Stack {
    pub router: axum::Router,
    pub tenant_id: Uuid,
    pub contacts: Arc<FakeContacts>,
    pub tenants: Arc<FakeTenants>,
    pub addr: SocketAddr,
    pub signer: Signer,
}

/// Starts the fakes and builds the router with every service on them.
pub async fn spawn() -> Stack {
    spawn_with(|upstreams, _| upstreams).await
}

/// Like [`spawn`], letting the test rewire the upstreams before the router is built.
pub async fn spawn_with(rewire: impl FnOnce(Upstreams, Channel) -> Upstreams) -> Stack {
    let signer = Signer::from_seed([42; 32]);
    let tenant_id = Uuid::now_v7();
    let contacts = Arc::new(FakeContacts {
        verifier: Some(signer.verifier()),
        ..Default::default()
    });
    let tenants = Arc::new(FakeTenants {
        verifier: Some(signer.verifier()),
        tenant_id,
        seen: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .add_service(ContactsServiceServer::from_arc(contacts.clone()))
        .add_service(TenantsServiceServer::from_arc(tenants.clone()));
    tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let upstreams = Upstreams::new()
        .with(CONTACTS, channel.clone())
        .with(TENANTS, channel.clone())
        .with(NOTES, channel.clone())
        .with(CRM, channel.clone())
        .with(TASKS, channel.clone())
        .with(CALENDAR, channel.clone())
        .with(AGENTS, channel.clone())
        .with(APPS, channel.clone())
        .with(WEBHOOKS, channel.clone());
    let upstreams = rewire(upstreams, channel);
    let registry = Arc::new(Registry::embedded().unwrap());
    let cfg = GatewayConfig {
        body_limit_bytes: BODY_LIMIT,
        ..Default::default()
    };
    let router = worktruck_gateway::router(registry, upstreams, signer.clone(), cfg)
        .await
        .unwrap();
    Stack {
        router,
        tenant_id,
        contacts,
        tenants,
        addr,
        signer,
    }
}

/// A channel to a port nothing listens on.
pub async fn dead_channel() -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// A response with its body parsed as JSON.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub json: serde_json::Value,
}

impl Stack {
    /// Sends a request through the router (no network between test and gateway).
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response: Response<Body> = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer {
            status,
            headers,
            json,
        }
    }

    /// An authenticated JSON request.
    pub async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> Answer {
        self.send(request(method, uri, Some(GOOD_KEY), body)).await
    }
}

/// Builds a request with an optional bearer key and JSON body.
pub fn request(method: &str, uri: &str, key: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Contacts kept in a map; every call must carry a context the gateway signed.
#[derive(Default)]
pub struct FakeContacts {
    verifier: Option<Verifier>,
    store: Mutex<BTreeMap<String, Contact>>,
    /// The verified context of every call, in order.
    pub seen: Mutex<Vec<Ctx>>,
    /// The `x-request-id` of every call, in order (it travels beside the signed context).
    pub request_ids: Mutex<Vec<String>>,
}

impl FakeContacts {
    fn context<T>(&self, request: &GrpcRequest<T>) -> Result<Ctx, Status> {
        let verifier = self.verifier.as_ref().expect("fixture has a verifier");
        let ctx = verifier.verify(request.metadata()).map_err(Status::from)?;
        ctx.require_tenant().map_err(Status::from)?;
        self.seen.lock().unwrap().push(ctx.clone());
        let id = request.metadata().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        self.request_ids.lock().unwrap().push(id.to_owned());
        Ok(ctx)
    }
}

fn unimplemented<T>() -> Result<GrpcResponse<T>, Status> {
    Err(Status::unimplemented("not in the fixture"))
}

#[tonic::async_trait]
impl ContactsService for FakeContacts {
    async fn restore_contact(
        &self,
        _: GrpcRequest<worktruck_proto::contacts::v1::RestoreContactRequest>,
    ) -> Result<GrpcResponse<Contact>, Status> {
        unimplemented()
    }

    async fn list_contact_links(
        &self,
        _: GrpcRequest<common::ListLinksRequest>,
    ) -> Result<GrpcResponse<common::ListLinksResponse>, Status> {
        unimplemented()
    }

    async fn create_contact(
        &self,
        request: GrpcRequest<CreateContactRequest>,
    ) -> Result<GrpcResponse<Contact>, Status> {
        let ctx = self.context(&request)?;
        let r = request.into_inner();
        if r.display_name.is_empty() {
            return Err(Error::validation("display_name is required").to_status());
        }
        let contact = Contact {
            id: Uuid::now_v7().to_string(),
            tenant_id: ctx.tenant_id.unwrap().to_string(),
            kind: r.kind,
            display_name: r.display_name,
            given_name: r.given_name,
            metadata: r.metadata,
            version: 1,
            created_at: Some(now()),
            updated_at: Some(now()),
            ..Default::default()
        };
        self.store
            .lock()
            .unwrap()
            .insert(contact.id.clone(), contact.clone());
        Ok(GrpcResponse::new(contact))
    }

    async fn get_contact(
        &self,
        request: GrpcRequest<GetContactRequest>,
    ) -> Result<GrpcResponse<Contact>, Status> {
        self.context(&request)?;
        let r = request.into_inner();
        let mut contact = self
            .store
            .lock()
            .unwrap()
            .get(&r.id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("contact {}", r.id)).to_status())?;
        if let Some(as_of) = r.as_of {
            contact.temporal = Some(common::Temporal {
                as_of: Some(as_of),
                sys_from: contact.created_at,
                captured_by: "key:test".into(),
                capture_reason: "create".into(),
                ..Default::default()
            });
        }
        Ok(GrpcResponse::new(contact))
    }

    async fn update_contact(
        &self,
        _: GrpcRequest<UpdateContactRequest>,
    ) -> Result<GrpcResponse<Contact>, Status> {
        unimplemented()
    }

    async fn delete_contact(
        &self,
        request: GrpcRequest<DeleteContactRequest>,
    ) -> Result<GrpcResponse<DeleteContactResponse>, Status> {
        self.context(&request)?;
        let id = request.into_inner().id;
        let removed = self.store.lock().unwrap().remove(&id);
        removed.ok_or_else(|| Error::not_found(format!("contact {id}")).to_status())?;
        Ok(GrpcResponse::new(DeleteContactResponse {
            id,
            deleted: true,
        }))
    }

    async fn list_contacts(
        &self,
        request: GrpcRequest<ListContactsRequest>,
    ) -> Result<GrpcResponse<ListContactsResponse>, Status> {
        self.context(&request)?;
        let r = request.into_inner();
        let data: Vec<Contact> = self
            .store
            .lock()
            .unwrap()
            .values()
            .filter(|c| r.kind.is_none_or(|k| c.kind == k))
            .cloned()
            .collect();
        Ok(GrpcResponse::new(ListContactsResponse {
            data,
            next_cursor: String::new(),
            has_more: false,
        }))
    }

    async fn get_contact_history(
        &self,
        _: GrpcRequest<common::HistoryRequest>,
    ) -> Result<GrpcResponse<common::HistoryResponse>, Status> {
        unimplemented()
    }

    async fn diff_contact(
        &self,
        _: GrpcRequest<common::DiffRequest>,
    ) -> Result<GrpcResponse<common::DiffResponse>, Status> {
        unimplemented()
    }

    async fn get_contact_timeline(
        &self,
        _: GrpcRequest<common::TimelineRequest>,
    ) -> Result<GrpcResponse<common::TimelineResponse>, Status> {
        unimplemented()
    }

    // The rest of the contacts service is not in the fixture.
    async fn find_contact_by_channel(&self, _: GrpcRequest<worktruck_proto::contacts::v1::FindContactByChannelRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Contact>, Status> {
        unimplemented()
    }
    async fn list_upcoming_dates(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListUpcomingDatesRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListUpcomingDatesResponse>, Status> {
        unimplemented()
    }
    async fn list_due_for_contact(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListDueForContactRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListDueForContactResponse>, Status> {
        unimplemented()
    }
    async fn get_contact_settings(&self, _: GrpcRequest<worktruck_proto::contacts::v1::GetContactSettingsRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ContactSettings>, Status> {
        unimplemented()
    }
    async fn update_contact_settings(&self, _: GrpcRequest<worktruck_proto::contacts::v1::UpdateContactSettingsRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ContactSettings>, Status> {
        unimplemented()
    }
    async fn add_channel(&self, _: GrpcRequest<worktruck_proto::contacts::v1::AddChannelRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Channel>, Status> {
        unimplemented()
    }
    async fn list_channels(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListChildrenRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListChannelsResponse>, Status> {
        unimplemented()
    }
    async fn get_channel(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Channel>, Status> {
        unimplemented()
    }
    async fn update_channel(&self, _: GrpcRequest<worktruck_proto::contacts::v1::UpdateChannelRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Channel>, Status> {
        unimplemented()
    }
    async fn delete_channel(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn add_address(&self, _: GrpcRequest<worktruck_proto::contacts::v1::AddressInput>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Address>, Status> {
        unimplemented()
    }
    async fn list_addresses(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListChildrenRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListAddressesResponse>, Status> {
        unimplemented()
    }
    async fn get_address(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Address>, Status> {
        unimplemented()
    }
    async fn update_address(&self, _: GrpcRequest<worktruck_proto::contacts::v1::AddressInput>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Address>, Status> {
        unimplemented()
    }
    async fn delete_address(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn add_date(&self, _: GrpcRequest<worktruck_proto::contacts::v1::DateInput>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ContactDate>, Status> {
        unimplemented()
    }
    async fn list_dates(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListChildrenRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListDatesResponse>, Status> {
        unimplemented()
    }
    async fn get_date(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ContactDate>, Status> {
        unimplemented()
    }
    async fn update_date(&self, _: GrpcRequest<worktruck_proto::contacts::v1::DateInput>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ContactDate>, Status> {
        unimplemented()
    }
    async fn delete_date(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn add_affiliation(&self, _: GrpcRequest<worktruck_proto::contacts::v1::AffiliationInput>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Affiliation>, Status> {
        unimplemented()
    }
    async fn list_affiliations(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListChildrenRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListAffiliationsResponse>, Status> {
        unimplemented()
    }
    async fn get_affiliation(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Affiliation>, Status> {
        unimplemented()
    }
    async fn update_affiliation(&self, _: GrpcRequest<worktruck_proto::contacts::v1::AffiliationInput>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Affiliation>, Status> {
        unimplemented()
    }
    async fn delete_affiliation(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn list_organization_members(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListChildrenRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListOrganizationMembersResponse>, Status> {
        unimplemented()
    }
    async fn create_relationship(&self, _: GrpcRequest<worktruck_proto::contacts::v1::CreateRelationshipRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Relationship>, Status> {
        unimplemented()
    }
    async fn list_relationships(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListChildrenRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListRelationshipsResponse>, Status> {
        unimplemented()
    }
    async fn get_relationship(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Relationship>, Status> {
        unimplemented()
    }
    async fn update_relationship(&self, _: GrpcRequest<worktruck_proto::contacts::v1::UpdateRelationshipRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Relationship>, Status> {
        unimplemented()
    }
    async fn delete_relationship(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn create_relationship_type(&self, _: GrpcRequest<worktruck_proto::contacts::v1::CreateRelationshipTypeRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::RelationshipType>, Status> {
        unimplemented()
    }
    async fn list_relationship_types(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListRelationshipTypesRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListRelationshipTypesResponse>, Status> {
        unimplemented()
    }
    async fn delete_relationship_type(&self, _: GrpcRequest<worktruck_proto::contacts::v1::DeleteRelationshipTypeRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn log_interaction(&self, _: GrpcRequest<worktruck_proto::contacts::v1::LogInteractionRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Interaction>, Status> {
        unimplemented()
    }
    async fn list_interactions(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListChildrenRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListInteractionsResponse>, Status> {
        unimplemented()
    }
    async fn get_interaction(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Interaction>, Status> {
        unimplemented()
    }
    async fn update_interaction(&self, _: GrpcRequest<worktruck_proto::contacts::v1::UpdateInteractionRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Interaction>, Status> {
        unimplemented()
    }
    async fn delete_interaction(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn create_tag(&self, _: GrpcRequest<worktruck_proto::contacts::v1::CreateTagRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Tag>, Status> {
        unimplemented()
    }
    async fn list_tags(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListTagsRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListTagsResponse>, Status> {
        unimplemented()
    }
    async fn get_tag(&self, _: GrpcRequest<worktruck_proto::contacts::v1::GetTagRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Tag>, Status> {
        unimplemented()
    }
    async fn update_tag(&self, _: GrpcRequest<worktruck_proto::contacts::v1::UpdateTagRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Tag>, Status> {
        unimplemented()
    }
    async fn delete_tag(&self, _: GrpcRequest<worktruck_proto::contacts::v1::GetTagRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn tag_contact(&self, _: GrpcRequest<worktruck_proto::contacts::v1::TagContactRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Tag>, Status> {
        unimplemented()
    }
    async fn list_contact_tags(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListChildrenRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListTagsResponse>, Status> {
        unimplemented()
    }
    async fn untag_contact(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ChildRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn create_group(&self, _: GrpcRequest<worktruck_proto::contacts::v1::CreateGroupRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Group>, Status> {
        unimplemented()
    }
    async fn list_groups(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListGroupsRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListGroupsResponse>, Status> {
        unimplemented()
    }
    async fn get_group(&self, _: GrpcRequest<worktruck_proto::contacts::v1::GetGroupRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Group>, Status> {
        unimplemented()
    }
    async fn update_group(&self, _: GrpcRequest<worktruck_proto::contacts::v1::UpdateGroupRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::Group>, Status> {
        unimplemented()
    }
    async fn delete_group(&self, _: GrpcRequest<worktruck_proto::contacts::v1::GetGroupRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::DeleteChildResponse>, Status> {
        unimplemented()
    }
    async fn add_group_members(&self, _: GrpcRequest<worktruck_proto::contacts::v1::GroupMembersRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::GroupMembersResponse>, Status> {
        unimplemented()
    }
    async fn remove_group_members(&self, _: GrpcRequest<worktruck_proto::contacts::v1::GroupMembersRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::GroupMembersResponse>, Status> {
        unimplemented()
    }
    async fn import_contacts(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ImportContactsRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ImportJob>, Status> {
        unimplemented()
    }
    async fn list_duplicates(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ListDuplicatesRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ListDuplicatesResponse>, Status> {
        unimplemented()
    }
    async fn preview_merge(&self, _: GrpcRequest<worktruck_proto::contacts::v1::MergeContactsRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::MergePreview>, Status> {
        unimplemented()
    }
    async fn merge_contacts(&self, _: GrpcRequest<worktruck_proto::contacts::v1::MergeContactsRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::MergeResult>, Status> {
        unimplemented()
    }
    async fn undo_merge(&self, _: GrpcRequest<worktruck_proto::contacts::v1::UndoMergeRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::UndoMergeResponse>, Status> {
        unimplemented()
    }
    async fn get_import_job(&self, _: GrpcRequest<worktruck_proto::contacts::v1::GetImportJobRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::ImportJob>, Status> {
        unimplemented()
    }
    async fn export_contact_vcard(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ExportContactVcardRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::VcardData>, Status> {
        unimplemented()
    }
    async fn export_contacts(&self, _: GrpcRequest<worktruck_proto::contacts::v1::ExportContactsRequest>) -> Result<GrpcResponse<worktruck_proto::contacts::v1::VcardData>, Status> {
        unimplemented()
    }
}

/// Accepts [`GOOD_KEY`] only, and only from a caller with a valid system context.
pub struct FakeTenants {
    verifier: Option<Verifier>,
    tenant_id: Uuid,
    /// The verified context of every call.
    pub seen: Mutex<Vec<Ctx>>,
}

#[tonic::async_trait]
impl TenantsService for FakeTenants {
    async fn get_tenant(
        &self,
        _: GrpcRequest<GetTenantRequest>,
    ) -> Result<GrpcResponse<Tenant>, Status> {
        unimplemented()
    }

    async fn create_api_key(
        &self,
        _: GrpcRequest<CreateApiKeyRequest>,
    ) -> Result<GrpcResponse<ApiKeySecret>, Status> {
        unimplemented()
    }

    async fn list_api_keys(
        &self,
        _: GrpcRequest<ListApiKeysRequest>,
    ) -> Result<GrpcResponse<ListApiKeysResponse>, Status> {
        unimplemented()
    }

    async fn get_api_key(
        &self,
        _: GrpcRequest<GetApiKeyRequest>,
    ) -> Result<GrpcResponse<ApiKey>, Status> {
        unimplemented()
    }

    async fn rotate_api_key(
        &self,
        _: GrpcRequest<RotateApiKeyRequest>,
    ) -> Result<GrpcResponse<ApiKeySecret>, Status> {
        unimplemented()
    }

    async fn delete_api_key(
        &self,
        _: GrpcRequest<DeleteApiKeyRequest>,
    ) -> Result<GrpcResponse<DeleteApiKeyResponse>, Status> {
        unimplemented()
    }

    async fn authenticate_api_key(
        &self,
        request: GrpcRequest<AuthenticateApiKeyRequest>,
    ) -> Result<GrpcResponse<AuthenticateApiKeyResponse>, Status> {
        let verifier = self.verifier.as_ref().expect("fixture has a verifier");
        let ctx = verifier.verify(request.metadata()).map_err(Status::from)?;
        self.seen.lock().unwrap().push(ctx);
        if request.get_ref().key != GOOD_KEY {
            return Err(Error::unauthenticated("unknown key").to_status());
        }
        Ok(GrpcResponse::new(AuthenticateApiKeyResponse {
            tenant: Some(Tenant {
                id: self.tenant_id.to_string(),
                name: "Test".into(),
                slug: "test".into(),
                plan: Plan::Pro as i32,
                retention_days: 30,
                created_at: Some(now()),
            }),
            key_id: KEY_ID.into(),
            scopes: vec!["contacts:read".into(), "contacts:write".into()],
            environment: Environment::Test as i32,
            expires_at: None,
        }))
    }

    async fn claim_idempotency_key(
        &self,
        _: GrpcRequest<ClaimIdempotencyKeyRequest>,
    ) -> Result<GrpcResponse<ClaimIdempotencyKeyResponse>, Status> {
        unimplemented()
    }

    async fn complete_idempotency_key(
        &self,
        _: GrpcRequest<CompleteIdempotencyKeyRequest>,
    ) -> Result<GrpcResponse<CompleteIdempotencyKeyResponse>, Status> {
        unimplemented()
    }

    async fn create_tenant(
        &self,
        _: GrpcRequest<CreateTenantRequest>,
    ) -> Result<GrpcResponse<CreateTenantResponse>, Status> {
        unimplemented()
    }

    async fn resolve_principal(
        &self,
        _: GrpcRequest<worktruck_proto::tenants::v1::ResolvePrincipalRequest>,
    ) -> Result<GrpcResponse<worktruck_proto::tenants::v1::ResolvePrincipalResponse>, Status> {
        unimplemented()
    }

    async fn sync_usage(
        &self,
        _: GrpcRequest<worktruck_proto::tenants::v1::SyncUsageRequest>,
    ) -> Result<GrpcResponse<worktruck_proto::tenants::v1::SyncUsageResponse>, Status> {
        unimplemented()
    }
}
