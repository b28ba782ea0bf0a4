//! Plan limits shared across gateway replicas: several [`Limiter`]s (one per replica) syncing
//! with the real tenants service, on SQLite and on PostgreSQL.

mod tenants;

use std::sync::Arc;

use tenants::spawn_tenants_on;
use tonic::transport::Channel;
use uuid::Uuid;
use worktruck_gateway::Limiter;
use worktruck_kit::ErrorCode;
use worktruck_kit::config::PlanLimits;
use worktruck_kit::context::Signer;
use worktruck_kit::testing::{backends, early_in_a_minute};
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn admitted(limiter: &Limiter, tenant: Uuid, n: u32) -> u32 {
    (0..n).filter(|_| limiter.admit(tenant, "free", now()).is_ok()).count() as u32
}

#[tokio::test]
async fn replicas_share_one_limit_through_the_tenants_service() {
    for backend in backends() {
        let signer = Signer::from_seed([9; 32]);
        let (channel, _data) = spawn_tenants_on(backend, &signer).await;
        let client = TenantsServiceClient::new(channel);
        let (a, b) = (Limiter::new(PlanLimits::default()), Limiter::new(PlanLimits::default()));
        let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
        early_in_a_minute().await;

        // The free plan allows 30 a minute. Replica A admits 20 and shares them.
        assert_eq!(admitted(&a, tenant, 20), 20);
        a.sync(&client, &signer).await.unwrap();
        // Replica B, once it has seen the tenant and synced, has 10 left, not 30.
        assert!(b.admit(tenant, "free", now()).is_ok());
        b.sync(&client, &signer).await.unwrap();
        let quota = b.admit(tenant, "free", now()).unwrap();
        assert_eq!(quota.remaining, 30 - 22, "{backend:?}: the shared count is used");
        assert_eq!(admitted(&b, tenant, 20), 8, "{backend:?}");
        let refused = b.admit(tenant, "free", now()).unwrap_err();
        assert_eq!(refused.error.code, ErrorCode::RateLimited);
        assert!(refused.retry_after >= 1 && refused.retry_after <= 60);

        // A learns B's share at its next sync and refuses too.
        b.sync(&client, &signer).await.unwrap();
        a.sync(&client, &signer).await.unwrap();
        assert!(a.admit(tenant, "free", now()).is_err(), "{backend:?}: A still admits after the limit");

        // Another tenant is not slowed by any of it.
        assert_eq!(admitted(&a, other, 30), 30);

        // A replica started later (or a restarted one) admits until its first sync, then knows.
        let c = Limiter::new(PlanLimits::default());
        assert!(c.admit(tenant, "free", now()).is_ok());
        c.sync(&client, &signer).await.unwrap();
        assert!(c.admit(tenant, "free", now()).is_err(), "{backend:?}: the count survives a restart");
    }
}

#[tokio::test]
async fn an_unreachable_tenants_service_keeps_local_counts_until_it_is_back() {
    let signer = Signer::from_seed([9; 32]);
    let dead = Channel::from_static("http://127.0.0.1:1").connect_lazy();
    let limiter = Limiter::new(PlanLimits::default());
    let tenant = Uuid::new_v4();
    early_in_a_minute().await;
    assert_eq!(admitted(&limiter, tenant, 25), 25);
    let e = limiter.sync(&TenantsServiceClient::new(dead), &signer).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    // Nothing was lost: the local count still limits, and goes out with the next sync.
    assert_eq!(admitted(&limiter, tenant, 10), 5);

    let backend = backends()[0];
    let (channel, _data) = spawn_tenants_on(backend, &signer).await;
    let client = TenantsServiceClient::new(channel);
    limiter.sync(&client, &signer).await.unwrap();
    let fresh = Limiter::new(PlanLimits::default());
    fresh.admit(tenant, "free", now()).ok();
    fresh.sync(&client, &signer).await.unwrap();
    assert!(fresh.admit(tenant, "free", now()).is_err(), "the counts made while offline were shared");
}

#[tokio::test]
async fn the_sync_task_shares_counts_on_its_own_and_once_more_at_shutdown() {
    let signer = Signer::from_seed([9; 32]);
    let (channel, _data) = spawn_tenants_on(backends()[0], &signer).await;
    let client = TenantsServiceClient::new(channel.clone());
    let limiter = Arc::new(Limiter::new(PlanLimits::default()));
    let tenant = Uuid::new_v4();
    early_in_a_minute().await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = limiter.clone().spawn_sync(channel, signer.clone(), async move {
        let _ = stop_rx.await;
    });
    assert_eq!(admitted(&limiter, tenant, 30), 30);
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    let other = Limiter::new(PlanLimits::default());
    other.admit(tenant, "free", now()).ok();
    other.sync(&client, &signer).await.unwrap();
    assert!(other.admit(tenant, "free", now()).is_err(), "the final sync carried the counts");
}
