//! Internal gRPC over mutual TLS (`[grpc.tls]`): service roles serve only callers presenting a
//! certificate of the pods' CA, and a gateway configured the same way serves the API through
//! them; a caller in clear text, without a certificate or with another CA's is refused.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use worktruck::Role;
use worktruck_kit::config::Config;
use worktruck_kit::testing::tls::mtls;
use worktruck_kit::testing::{Backend, TestData};

/// Whether the server at `channel` answers a gRPC health check.
async fn check(channel: Channel) -> bool {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let call = client.check(tonic_health::pb::HealthCheckRequest { service: String::new() });
    matches!(tokio::time::timeout(Duration::from_secs(5), call).await, Ok(Ok(_)))
}

#[tokio::test]
async fn services_serve_only_callers_with_a_pod_certificate() {
    let data = TestData::new(Backend::Sqlite).await;
    let certs = tempfile::tempdir().unwrap();
    let mut cfg = Config { data_dir: data.path(), ..Config::default() };
    cfg.secret_key = Some("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYnk=".to_owned().into());
    cfg.grpc.addr = "127.0.0.1:0".parse().unwrap();
    cfg.admin.addr = "127.0.0.1:0".parse().unwrap();
    cfg.rest.addr = "127.0.0.1:0".parse().unwrap();
    cfg.grpc.tls = mtls::config(certs.path());
    let mut roles = Vec::new();
    let mut gateway_cfg = cfg.clone();
    for def in worktruck::services::TABLE {
        // Each service is given the addresses of those started before it (the CRM calls contacts).
        let r = worktruck::start_role(gateway_cfg.clone(), Role::Service(def)).await.unwrap();
        gateway_cfg.services.insert(def.name.into(), format!("https://localhost:{}", r.grpc_addr.unwrap().port()));
        roles.push(r);
    }
    let tenants_port = gateway_cfg.services["tenants"].rsplit(':').next().unwrap().to_owned();

    // Plain-text service URLs are refused at start when grpc.tls is set.
    let mut plain = gateway_cfg.clone();
    plain.services.insert("tenants".into(), format!("http://127.0.0.1:{tenants_port}"));
    assert!(worktruck::start_role(plain, Role::Gateway).await.is_err());

    let gateway = worktruck::start_role(gateway_cfg.clone(), Role::Gateway).await.unwrap();
    let key = worktruck::admin::create_tenant(&gateway_cfg, "tls", "pro").await.unwrap()["api_key"].as_str().unwrap().to_owned();
    let base = format!("http://{}", gateway.rest_addr.unwrap());
    let http = worktruck_kit::http::client();
    let r = http
        .post(format!("{base}/api/v1/contacts"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"kind": "person", "display_name": "Over TLS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the API works through mutual TLS");

    let endpoint = || Channel::from_shared(format!("https://localhost:{tenants_port}")).unwrap().connect_timeout(Duration::from_secs(2));
    let ca = Certificate::from_pem(mtls::CA_PEM);
    let pod = ClientTlsConfig::new().ca_certificate(ca.clone()).identity(Identity::from_pem(mtls::CERT_PEM, mtls::KEY_PEM));
    assert!(check(endpoint().tls_config(pod).unwrap().connect_lazy()).await, "a pod certificate gets in");
    let anonymous = ClientTlsConfig::new().ca_certificate(ca.clone());
    assert!(!check(endpoint().tls_config(anonymous).unwrap().connect_lazy()).await, "no client certificate: refused");
    let rogue = ClientTlsConfig::new().ca_certificate(ca).identity(Identity::from_pem(mtls::ROGUE_CERT_PEM, mtls::ROGUE_KEY_PEM));
    assert!(!check(endpoint().tls_config(rogue).unwrap().connect_lazy()).await, "another CA's certificate: refused");
    let clear = Channel::from_shared(format!("http://127.0.0.1:{tenants_port}")).unwrap().connect_timeout(Duration::from_secs(2)).connect_lazy();
    assert!(!check(clear).await, "clear text: refused");

    gateway.stop().await;
    for r in roles {
        r.stop().await;
    }
}
