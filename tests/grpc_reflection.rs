//! gRPC discovery as grpcurl and other clients do it: server reflection in both versions (v1,
//! and v1alpha for grpcurl up to 1.8), over a service role's TCP port, listing exactly what
//! that port serves and resolving every file a listed service needs, health and the
//! `google.rpc` error details included; and a call without the internal context names the header.

#[path = "common/dev.rs"]
mod dev;

use std::collections::{BTreeSet, HashMap};

use prost::Message as _;
use prost_types::FileDescriptorProto;
use tonic::transport::Channel;
use worktruck_kit::bus::Bus;
use worktruck_kit::service::ServiceDef;
use worktruck_kit::testing::{TestData, TestService, backends};

/// One reflection request: what both versions can ask.
enum Ask {
    List,
    Symbol(String),
    File(String),
}

/// What a reflection answer holds: service names, or encoded file descriptors.
enum Answer {
    Services(Vec<String>),
    Files(Vec<Vec<u8>>),
    Error(i32, String),
}

/// A reflection client of either version.
#[derive(Clone, Copy, Debug)]
enum Version {
    V1,
    V1Alpha,
}

async fn ask(channel: &Channel, version: Version, ask: Ask) -> Answer {
    match version {
        Version::V1 => {
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
            let message_request = match ask {
                Ask::List => MessageRequest::ListServices(String::new()),
                Ask::Symbol(s) => MessageRequest::FileContainingSymbol(s),
                Ask::File(f) => MessageRequest::FileByFilename(f),
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message_request),
            };
            let mut client = ServerReflectionClient::new(channel.clone());
            let mut answers = client
                .server_reflection_info(futures::stream::iter([request]))
                .await
                .expect("v1 reflection")
                .into_inner();
            let answer = match answers.message().await {
                Ok(answer) => answer.expect("one answer"),
                // tonic-reflection ends the stream with the status rather than an ErrorResponse.
                Err(status) => {
                    return Answer::Error(status.code() as i32, status.message().to_owned());
                }
            };
            match answer.message_response.expect("a response") {
                MessageResponse::ListServicesResponse(l) => {
                    Answer::Services(l.service.into_iter().map(|s| s.name).collect())
                }
                MessageResponse::FileDescriptorResponse(f) => {
                    Answer::Files(f.file_descriptor_proto)
                }
                MessageResponse::ErrorResponse(e) => Answer::Error(e.error_code, e.error_message),
                other => panic!("unexpected answer {other:?}"),
            }
        }
        Version::V1Alpha => {
            use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
            use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
            let message_request = match ask {
                Ask::List => MessageRequest::ListServices(String::new()),
                Ask::Symbol(s) => MessageRequest::FileContainingSymbol(s),
                Ask::File(f) => MessageRequest::FileByFilename(f),
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message_request),
            };
            let mut client = ServerReflectionClient::new(channel.clone());
            let mut answers = client
                .server_reflection_info(futures::stream::iter([request]))
                .await
                .expect("v1alpha reflection")
                .into_inner();
            let answer = match answers.message().await {
                Ok(answer) => answer.expect("one answer"),
                // tonic-reflection ends the stream with the status rather than an ErrorResponse.
                Err(status) => {
                    return Answer::Error(status.code() as i32, status.message().to_owned());
                }
            };
            match answer.message_response.expect("a response") {
                MessageResponse::ListServicesResponse(l) => {
                    Answer::Services(l.service.into_iter().map(|s| s.name).collect())
                }
                MessageResponse::FileDescriptorResponse(f) => {
                    Answer::Files(f.file_descriptor_proto)
                }
                MessageResponse::ErrorResponse(e) => Answer::Error(e.error_code, e.error_message),
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
}

/// The file defining `symbol` and, transitively, every file it imports, by name, as a client
/// resolving a type must fetch them; panics naming whatever does not resolve.
async fn resolve(
    channel: &Channel,
    version: Version,
    symbol: &str,
) -> HashMap<String, FileDescriptorProto> {
    let mut files = HashMap::new();
    let mut pending: Vec<Vec<u8>> =
        match ask(channel, version, Ask::Symbol(symbol.to_owned())).await {
            Answer::Files(f) => f,
            Answer::Error(code, message) => {
                panic!("{version:?}: {symbol} does not resolve: {code} {message}")
            }
            Answer::Services(_) => panic!("{version:?}: a list for a symbol"),
        };
    while let Some(raw) = pending.pop() {
        let file = FileDescriptorProto::decode(raw.as_slice()).expect("a file descriptor");
        let name = file.name().to_owned();
        if files.contains_key(&name) {
            continue;
        }
        for dependency in &file.dependency {
            if !files.contains_key(dependency) {
                match ask(channel, version, Ask::File(dependency.clone())).await {
                    Answer::Files(f) => pending.extend(f),
                    Answer::Error(code, message) => {
                        panic!(
                            "{version:?}: {dependency} (imported by {name}, for {symbol}) does not resolve: {code} {message}"
                        )
                    }
                    Answer::Services(_) => panic!("a list for a file"),
                }
            }
        }
        files.insert(name, file);
    }
    files
}

/// Whether `files` define the fully-qualified message or service `name`.
fn defines(files: &HashMap<String, FileDescriptorProto>, name: &str) -> bool {
    files.values().any(|f| {
        let prefix = format!("{}.", f.package());
        name.strip_prefix(&prefix).is_some_and(|local| {
            f.message_type.iter().any(|m| m.name() == local)
                || f.service.iter().any(|s| s.name() == local)
        })
    })
}

fn expected(def: &ServiceDef) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = def.grpc_services.iter().map(|s| s.to_string()).collect();
    if !def.link_targets.is_empty() {
        names.insert("worktruck.common.v1.LinkTargets".into());
    }
    names.insert("grpc.health.v1.Health".into());
    names.insert("grpc.reflection.v1.ServerReflection".into());
    names.insert("grpc.reflection.v1alpha.ServerReflection".into());
    names
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_what_the_port_serves_and_resolve_it() {
    let backend = backends()[0];
    // One service others link to (it serves LinkTargets too) and one nothing links to.
    for def in [
        &worktruck_contacts::DEFINITION,
        &worktruck_tenants::DEFINITION,
    ] {
        let data = TestData::new(backend).await;
        let service = TestService::start(def, &data, Bus::memory()).await;
        for version in [Version::V1, Version::V1Alpha] {
            let listed: BTreeSet<String> = match ask(&service.channel, version, Ask::List).await {
                Answer::Services(s) => s.into_iter().collect(),
                _ => panic!("{version:?}: no service list"),
            };
            assert_eq!(
                listed,
                expected(def),
                "{version:?} on the {} port",
                def.name
            );
            for other in worktruck::services::TABLE
                .iter()
                .filter(|d| d.name != def.name)
            {
                for name in other.grpc_services {
                    assert!(
                        !listed.contains(*name),
                        "{version:?}: the {} port lists {name}",
                        def.name
                    );
                }
            }
            for name in &listed {
                let files = resolve(&service.channel, version, name).await;
                assert!(
                    defines(&files, name),
                    "{version:?}: {name}'s file defines it"
                );
            }
            // What errors carry and health answers are types a client can decode.
            for symbol in [
                "google.rpc.ErrorInfo",
                "google.rpc.BadRequest",
                "grpc.health.v1.HealthCheckResponse",
            ] {
                let files = resolve(&service.channel, version, symbol).await;
                assert!(defines(&files, symbol), "{version:?}: {symbol}");
            }
            match ask(
                &service.channel,
                version,
                Ask::Symbol("worktruck.nosuch.v1.Nothing".into()),
            )
            .await
            {
                Answer::Error(code, _) => assert_eq!(code, tonic::Code::NotFound as i32),
                _ => panic!("{version:?}: an unknown symbol resolved"),
            }
        }
        service.stop();
    }
}

#[tokio::test]
async fn a_call_without_the_internal_context_names_the_header() {
    let data = TestData::new(backends()[0]).await;
    let service = TestService::start(&worktruck_contacts::DEFINITION, &data, Bus::memory()).await;
    let mut client =
        worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient::new(
            service.channel.clone(),
        );
    let e = client
        .get_contact(worktruck_proto::contacts::v1::GetContactRequest {
            id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(
        e.message().contains("x-worktruck-context"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("context.signing_key"),
        "{}",
        e.message()
    );
    service.stop();
}

#[tokio::test]
async fn dev_serves_each_service_s_grpc_on_tcp_when_asked_and_prints_where() {
    let data = tempfile::tempdir().unwrap();
    let (dev, _, banner) = dev::Dev::start_with(data.path(), Vec::new(), &["--grpc-addr", "127.0.0.1:0"]).await;
    // `    contacts   127.0.0.1:40123`, one line per service.
    let addrs: HashMap<String, String> = banner
        .iter()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, addr) = (parts.next()?, parts.next()?);
            (l.starts_with("    ") && addr.parse::<std::net::SocketAddr>().is_ok()).then(|| (name.to_owned(), addr.to_owned()))
        })
        .collect();
    for service in ["tenants", "contacts", "notes", "crm", "tasks", "calendar", "agents", "apps"] {
        assert!(addrs.contains_key(service), "{service} not in the banner: {banner:?}");
    }
    let channel = Channel::from_shared(format!("http://{}", addrs["contacts"])).unwrap().connect().await.unwrap();
    let Answer::Services(listed) = ask(&channel, Version::V1, Ask::List).await else { panic!("no list") };
    assert!(listed.iter().any(|s| s == "worktruck.contacts.v1.ContactsService"), "{listed:?}");
    assert!(!listed.iter().any(|s| s.starts_with("worktruck.tenants.")), "each port serves its own service: {listed:?}");
    // A call still needs the internal context, and says which header.
    let mut client = worktruck_proto::contacts::v1::contacts_service_client::ContactsServiceClient::new(channel);
    let refused = client.list_contacts(worktruck_proto::contacts::v1::ListContactsRequest::default()).await.unwrap_err();
    assert!(refused.message().contains("x-worktruck-context"), "{refused:?}");
    dev.kill();
}
