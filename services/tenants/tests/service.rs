//! The tenants service over real gRPC on SQLite and PostgreSQL: tenants, API keys, rotation,
//! revocation, expiry and authentication.

use tonic::transport::Channel;
use tonic::{Code, Request};
use worktruck_kit::bus::Bus;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_kit::db::Db;
use worktruck_kit::testing::{TestData, TestService, backends, test_secrets};
use worktruck_proto::tenants::v1 as pb;
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;
use worktruck_tenants::create_tenant;

/// The pepper the service derives from the test master secret.
fn pepper() -> [u8; 32] {
    test_secrets().derive(worktruck_tenants::PEPPER_PURPOSE)
}

struct Svc {
    client: TenantsServiceClient<Channel>,
    signer: Signer,
    db: Db,
    _service: TestService,
}

/// The service as the binary builds it (its table definition), on a loopback port.
async fn start(data: &TestData) -> Svc {
    let service = TestService::start(&worktruck_tenants::DEFINITION, data, Bus::memory()).await;
    Svc {
        client: TenantsServiceClient::new(service.channel.clone()),
        signer: service.signer.clone(),
        db: service.db.clone(),
        _service: service,
    }
}

fn as_tenant<T>(svc: &Svc, tenant: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    svc.signer.attach(&Ctx::tenant(tenant.parse().unwrap(), "key:test", 365), r.metadata_mut());
    r
}

fn as_gateway<T>(svc: &Svc, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    svc.signer.attach(&Ctx::system("gateway"), r.metadata_mut());
    r
}

async fn auth(svc: &mut Svc, key: &str) -> Result<pb::AuthenticateApiKeyResponse, Code> {
    let r = as_gateway(svc, pb::AuthenticateApiKeyRequest { key: key.into() });
    svc.client.authenticate_api_key(r).await.map(|r| r.into_inner()).map_err(|s| s.code())
}

#[tokio::test]
async fn keys_authenticate_rotate_and_revoke() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut svc = start(&data).await;
        let first = create_tenant(&svc.db, &pepper(), "Acme Inc.", pb::Plan::Pro, 365).await.unwrap();
        let tenant = first.tenant.unwrap();
        assert!(tenant.slug.starts_with("acme-inc-"), "{}", tenant.slug);
        let key = first.api_key.unwrap().key;
        assert!(key.starts_with("bsk_live_") && key.len() == 52);

        let who = auth(&mut svc, &key).await.unwrap();
        assert_eq!(who.tenant.unwrap().id, tenant.id, "{backend:?}");
        assert!(who.scopes.is_empty());

        // Forged keys: right shape, wrong secret; wrong shape; empty.
        let mut forged = key.clone();
        forged.replace_range(50.., if key.ends_with("xy") { "zz" } else { "xy" });
        assert_eq!(auth(&mut svc, &forged).await.unwrap_err(), Code::Unauthenticated);
        assert_eq!(auth(&mut svc, "bsk_live_nope").await.unwrap_err(), Code::Unauthenticated);
        assert_eq!(auth(&mut svc, "").await.unwrap_err(), Code::Unauthenticated);

        // A scoped key.
        let scoped = svc
            .client
            .create_api_key(as_tenant(&svc, &tenant.id, pb::CreateApiKeyRequest {
                name: "reader".into(),
                scopes: vec!["contacts:read".into()],
                environment: pb::Environment::Test as i32,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(scoped.key.starts_with("bsk_test_"));
        assert_eq!(auth(&mut svc, &scoped.key).await.unwrap().scopes, ["contacts:read"]);
        let bad_scope = svc
            .client
            .create_api_key(as_tenant(&svc, &tenant.id, pb::CreateApiKeyRequest {
                name: "x".into(),
                scopes: vec!["everything".into()],
                ..Default::default()
            }))
            .await;
        assert_eq!(bad_scope.unwrap_err().code(), Code::InvalidArgument);

        // Rotation: the old secret dies at once, the new one works, the id stays.
        let rotated = svc
            .client
            .rotate_api_key(as_tenant(&svc, &tenant.id, pb::RotateApiKeyRequest { id: scoped.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rotated.id, scoped.id);
        assert_eq!(auth(&mut svc, &scoped.key).await.unwrap_err(), Code::Unauthenticated);
        assert_eq!(auth(&mut svc, &rotated.key).await.unwrap().key_id, scoped.id);

        // Revocation.
        let del = svc
            .client
            .delete_api_key(as_tenant(&svc, &tenant.id, pb::DeleteApiKeyRequest { id: scoped.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(del.revoked);
        assert_eq!(auth(&mut svc, &rotated.key).await.unwrap_err(), Code::Unauthenticated);
        let got = svc
            .client
            .get_api_key(as_tenant(&svc, &tenant.id, pb::GetApiKeyRequest { id: scoped.id.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(got.revoked_at.is_some());
        let again = svc
            .client
            .rotate_api_key(as_tenant(&svc, &tenant.id, pb::RotateApiKeyRequest { id: scoped.id.clone() }))
            .await;
        assert_eq!(again.unwrap_err().code(), Code::Aborted);

        // Another tenant cannot see or touch the keys.
        let other = create_tenant(&svc.db, &pepper(), "Other", pb::Plan::Free, 365).await.unwrap().tenant.unwrap();
        let peek = svc.client.get_api_key(as_tenant(&svc, &other.id, pb::GetApiKeyRequest { id: scoped.id.clone() })).await;
        assert_eq!(peek.unwrap_err().code(), Code::NotFound);
        let list = svc
            .client
            .list_api_keys(as_tenant(&svc, &other.id, pb::ListApiKeysRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.data.len(), 1, "only its own default key");

        // Only operators create tenants over gRPC.
        let denied = svc
            .client
            .create_tenant(as_tenant(&svc, &tenant.id, pb::CreateTenantRequest { name: "x".into(), plan: 0 }))
            .await;
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
        let t = svc.client.get_tenant(as_tenant(&svc, &tenant.id, pb::GetTenantRequest {})).await.unwrap().into_inner();
        assert_eq!(t.plan, pb::Plan::Pro as i32);
        assert_eq!(t.retention_days, 365);
    }
}

#[tokio::test]
async fn expired_keys_are_refused_and_listing_pages_every_key_once() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let mut svc = start(&data).await;
        let tenant = create_tenant(&svc.db, &pepper(), "Pager", pb::Plan::Free, 365).await.unwrap().tenant.unwrap();
        let soon = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() + 1, nanos: 500_000_000 };
        let k = svc
            .client
            .create_api_key(as_tenant(&svc, &tenant.id, pb::CreateApiKeyRequest {
                name: "short".into(),
                expires_at: Some(soon),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(auth(&mut svc, &k.key).await.is_ok());
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(auth(&mut svc, &k.key).await.unwrap_err(), Code::Unauthenticated, "{backend:?}");
        let past = prost_types::Timestamp { seconds: 1, nanos: 0 };
        let r = svc
            .client
            .create_api_key(as_tenant(&svc, &tenant.id, pb::CreateApiKeyRequest {
                name: "past".into(),
                expires_at: Some(past),
                ..Default::default()
            }))
            .await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);

        for i in 0..7 {
            svc.client
                .create_api_key(as_tenant(&svc, &tenant.id, pb::CreateApiKeyRequest { name: format!("k{i}"), ..Default::default() }))
                .await
                .unwrap();
        }
        let mut ids = Vec::new();
        let mut cursor = None;
        loop {
            let page = svc
                .client
                .list_api_keys(as_tenant(&svc, &tenant.id, pb::ListApiKeysRequest { limit: Some(3), cursor: cursor.clone() }))
                .await
                .unwrap()
                .into_inner();
            ids.extend(page.data.into_iter().map(|k| k.id));
            if !page.has_more {
                break;
            }
            cursor = Some(page.next_cursor);
        }
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((total, ids.len()), (9, 9), "{backend:?}");
        let tampered = svc
            .client
            .list_api_keys(as_tenant(&svc, &tenant.id, pb::ListApiKeysRequest { limit: Some(3), cursor: Some("AAAA".into()) }))
            .await;
        assert_eq!(tampered.unwrap_err().code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn external_principals_map_to_one_tenant_each_even_when_first_seen_concurrently() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let svc = start(&data).await;
        let wallet = "0xAbCdEf0123456789abcdef0123456789ABCDEF01";
        let mut calls = Vec::new();
        for _ in 0..5 {
            let mut client = svc.client.clone();
            let r = as_gateway(&svc, pb::ResolvePrincipalRequest {
                kind: pb::PrincipalKind::Wallet as i32,
                subject: wallet.into(),
                issuer: "eip155:8453".into(),
            });
            calls.push(tokio::spawn(async move { client.resolve_principal(r).await.map(|r| r.into_inner()) }));
        }
        let mut tenants = Vec::new();
        let mut created = 0;
        for c in calls {
            let r = c.await.unwrap().unwrap();
            created += usize::from(r.created);
            tenants.push(r.tenant.unwrap().id);
        }
        tenants.dedup();
        assert_eq!(tenants.len(), 1, "{backend:?}: one tenant per wallet");
        assert_eq!(created, 1);

        let mut client = svc.client.clone();
        let lower = client
            .resolve_principal(as_gateway(&svc, pb::ResolvePrincipalRequest {
                kind: pb::PrincipalKind::Wallet as i32,
                subject: wallet.to_lowercase(),
                issuer: "eip155:8453".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(lower.tenant.as_ref().unwrap().id, tenants[0], "addresses are case-insensitive");
        assert_eq!(lower.tenant.unwrap().plan, pb::Plan::Free as i32);

        let sub = |s: &str| pb::ResolvePrincipalRequest {
            kind: pb::PrincipalKind::OidcSubject as i32,
            subject: s.into(),
            issuer: "https://issuer.example/realms/w".into(),
        };
        let a = client.resolve_principal(as_gateway(&svc, sub("alice"))).await.unwrap().into_inner();
        let b = client.resolve_principal(as_gateway(&svc, sub("bob"))).await.unwrap().into_inner();
        assert_ne!(a.tenant.unwrap().id, b.tenant.unwrap().id);

        let bad = client
            .resolve_principal(as_gateway(&svc, pb::ResolvePrincipalRequest {
                kind: pb::PrincipalKind::Wallet as i32,
                subject: "not-a-wallet".into(),
                issuer: "eip155:8453".into(),
            }))
            .await;
        assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
        let tenant_ctx = as_tenant(&svc, &tenants[0], sub("mallory"));
        assert_eq!(client.resolve_principal(tenant_ctx).await.unwrap_err().code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn usage_windows_sum_every_gateway_and_refuse_strangers() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let svc = start(&data).await;
        let client = svc.client.clone();
        let now = chrono::Utc::now().timestamp();
        let (minute, day) = (now.div_euclid(60), now.div_euclid(86_400));
        let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
        let delta = |tenant: &str, minute: i64, n: u32| pb::UsageDelta {
            tenant_id: tenant.into(),
            minute,
            minute_count: n,
            day,
            day_count: n,
        };
        let sync = |deltas: Vec<pb::UsageDelta>| {
            let r = as_gateway(&svc, pb::SyncUsageRequest { deltas });
            let mut client = client.clone();
            async move { client.sync_usage(r).await.map(|r| r.into_inner().totals) }
        };

        // Two gateways' counts add up; totals come back in the request's order.
        let first = sync(vec![delta(&a, minute, 20), delta(&b, minute, 1)]).await.unwrap();
        assert_eq!((first[0].minute_count, first[0].day_count), (20, 20), "{backend:?}");
        assert_eq!(first[1].tenant_id, b);
        let second = sync(vec![delta(&b, minute, 0), delta(&a, minute, 7)]).await.unwrap();
        assert_eq!(second[0].minute_count, 1, "a zero delta only reads");
        assert_eq!((second[1].minute_count, second[1].day_count), (27, 27));

        // A minute three minutes back is counted, then pruned: it never accumulates.
        let old = sync(vec![delta(&a, minute - 3, 5)]).await.unwrap();
        assert_eq!(old[0].minute_count, 5);
        assert_eq!(old[0].day_count, 32, "the day window goes on");
        let old = sync(vec![delta(&a, minute - 3, 5)]).await.unwrap();
        assert_eq!(old[0].minute_count, 5, "pruned in between");

        // Only gateways sync; malformed batches are refused whole and change nothing.
        let as_a = as_tenant(&svc, &a, pb::SyncUsageRequest { deltas: vec![delta(&a, minute, 1000)] });
        assert_eq!(client.clone().sync_usage(as_a).await.unwrap_err().code(), Code::PermissionDenied);
        for bad in [
            vec![delta(&a, minute, 1), delta("not-a-uuid", minute, 1)],
            vec![delta(&a, minute, 1), delta(&b, minute + 1_000, 1)],
            (0..10_001).map(|_| delta(&a, minute, 1)).collect(),
        ] {
            assert_eq!(sync(bad).await.unwrap_err().code(), Code::InvalidArgument, "{backend:?}");
        }
        let after = sync(vec![delta(&a, minute, 0)]).await.unwrap();
        assert_eq!(after[0].minute_count, 27, "{backend:?}: a refused batch wrote nothing");
    }
}

#[tokio::test]
async fn idempotency_keys_are_claimed_once_kept_and_replayed() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let svc = start(&data).await;
        let tenant = uuid::Uuid::new_v4().to_string();
        let claim = |key: &str, fingerprint: u8, lease_seconds: u32| {
            let r = as_gateway(&svc, pb::ClaimIdempotencyKeyRequest {
                tenant_id: tenant.clone(),
                key: key.into(),
                fingerprint: vec![fingerprint; 32],
                lease_seconds,
            });
            let mut client = svc.client.clone();
            async move { client.claim_idempotency_key(r).await.map(|r| r.into_inner()).map_err(|s| s.code()) }
        };
        let complete = |key: &str, claim_id: &str, answer: Option<pb::KeptAnswer>| {
            let r = as_gateway(&svc, pb::CompleteIdempotencyKeyRequest {
                tenant_id: tenant.clone(),
                key: key.into(),
                claim_id: claim_id.into(),
                answer,
            });
            let mut client = svc.client.clone();
            async move { client.complete_idempotency_key(r).await.map(|r| r.into_inner().completed).map_err(|s| s.code()) }
        };
        let outcome = |r: &pb::ClaimIdempotencyKeyResponse| pb::IdempotencyOutcome::try_from(r.outcome).unwrap();

        // Twenty gateways claim one key at once: exactly one runs the write.
        let all = futures::future::join_all((0..20).map(|_| claim("k1", 1, 60))).await;
        let outcomes: Vec<_> = all.iter().map(|r| outcome(r.as_ref().unwrap())).collect();
        assert_eq!(outcomes.iter().filter(|o| **o == pb::IdempotencyOutcome::Claimed).count(), 1, "{backend:?}: {outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(o, pb::IdempotencyOutcome::Claimed | pb::IdempotencyOutcome::InProgress)));
        let claim_id = all.iter().map(|r| r.as_ref().unwrap()).find(|r| outcome(r) == pb::IdempotencyOutcome::Claimed).unwrap().claim_id.clone();
        // Another request under the key is refused, running or done.
        assert_eq!(outcome(&claim("k1", 2, 60).await.unwrap()), pb::IdempotencyOutcome::Mismatch);
        let kept = pb::KeptAnswer {
            status: 201,
            headers: [("location".to_owned(), "/api/v1/contacts/x".to_owned())].into(),
            body: b"{\"id\":\"x\"}".to_vec(),
        };
        assert_eq!(complete("k1", &claim_id, Some(kept.clone())).await, Ok(true));
        let again = claim("k1", 1, 60).await.unwrap();
        assert_eq!(outcome(&again), pb::IdempotencyOutcome::Replay);
        assert_eq!(again.answer.unwrap(), kept);
        assert_eq!(outcome(&claim("k1", 2, 60).await.unwrap()), pb::IdempotencyOutcome::Mismatch);
        assert_eq!(complete("k1", &claim_id, None).await, Ok(false), "a done key is not released");

        // A released claim lets the next request run; a lapsed lease is taken over, and the
        // first claimant can no longer complete it.
        let first = claim("k2", 1, 60).await.unwrap();
        assert_eq!(complete("k2", &first.claim_id, None).await, Ok(true));
        let second = claim("k2", 1, 1).await.unwrap();
        assert_eq!(outcome(&second), pb::IdempotencyOutcome::Claimed);
        assert_eq!(outcome(&claim("k2", 1, 1).await.unwrap()), pb::IdempotencyOutcome::InProgress);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let third = claim("k2", 1, 60).await.unwrap();
        assert_eq!(outcome(&third), pb::IdempotencyOutcome::Claimed, "the lease ran out");
        assert_eq!(complete("k2", &second.claim_id, Some(kept.clone())).await, Ok(false));
        assert_eq!(complete("k2", &third.claim_id, Some(kept.clone())).await, Ok(true));

        // Keys are per tenant; only gateways claim; bad requests are refused.
        let other = as_gateway(&svc, pb::ClaimIdempotencyKeyRequest {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            key: "k1".into(),
            fingerprint: vec![2; 32],
            lease_seconds: 60,
        });
        let r = svc.client.clone().claim_idempotency_key(other).await.unwrap().into_inner();
        assert_eq!(outcome(&r), pb::IdempotencyOutcome::Claimed, "another tenant's k1 is another key");
        let as_a = as_tenant(&svc, &tenant, pb::ClaimIdempotencyKeyRequest { tenant_id: tenant.clone(), key: "k3".into(), fingerprint: vec![1; 32], lease_seconds: 60 });
        assert_eq!(svc.client.clone().claim_idempotency_key(as_a).await.unwrap_err().code(), Code::PermissionDenied);
        for (key, fingerprint, lease) in [("", 1, 60), ("a b", 1, 60), ("k", 1, 0), ("k", 1, 3601)] {
            assert_eq!(claim(key, fingerprint, lease).await.unwrap_err(), Code::InvalidArgument, "{key:?} {lease}");
        }
        let short = as_gateway(&svc, pb::ClaimIdempotencyKeyRequest { tenant_id: tenant.clone(), key: "k".into(), fingerprint: vec![1; 3], lease_seconds: 60 });
        assert_eq!(svc.client.clone().claim_idempotency_key(short).await.unwrap_err().code(), Code::InvalidArgument);
    }
}
