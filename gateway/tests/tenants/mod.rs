//! The real tenants service over gRPC, for gateway tests that need its behaviour (principals,
//! usage windows) rather than a fake's.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use tonic::transport::Channel;
use worktruck_kit::bus::Bus;
use worktruck_kit::context::Signer;
use worktruck_kit::db::Db;
use worktruck_kit::outbox::Relay;
use worktruck_kit::testing::{Backend, TestData, serve_grpc_on_loopback};
use worktruck_proto::tenants::v1::tenants_service_server::TenantsServiceServer;
use worktruck_tenants::{Tenants, migrators};

/// The real tenants service on SQLite; the returned `TestData` must outlive the test.
pub async fn spawn_tenants(signer: &Signer) -> (Channel, TestData) {
    spawn_tenants_on(Backend::Sqlite, signer).await
}

/// The real tenants service on `backend`.
pub async fn spawn_tenants_on(backend: Backend, signer: &Signer) -> (Channel, TestData) {
    let data = TestData::new(backend).await;
    let (pg, sqlite) = migrators();
    let db = Db::connect_and_migrate(&data.db_options("tenants"), pg, sqlite)
        .await
        .unwrap();
    let svc = Tenants::new(
        db.clone(),
        signer.verifier(),
        [5; 32],
        365,
        Relay::new(db, Bus::memory()),
    );
    let channel = serve_grpc_on_loopback(
        tonic::service::Routes::new(TenantsServiceServer::new(svc)),
        &[worktruck_tenants::GRPC_NAME],
        signer.verifier(),
        std::future::pending(),
    )
    .await;
    (channel, data)
}

