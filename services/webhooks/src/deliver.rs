//! The delivery loop: every `poll_ms` (or at once when the consumer made deliveries), the due
//! deliveries of every tenant are claimed under a lease — so two replicas never send one at
//! once, and a replica that dies mid-attempt leaves it due again — and attempted, up to
//! `concurrency` at a time; once an hour, deliveries that ended more than `keep_days` ago are
//! deleted. Only the earliest pending delivery of each (webhook, entity) is
//! ever due, so one entity's deliveries go out in order.

use std::time::Duration;

use uuid::Uuid;
use worktruck_kit::db::{Scope, now};
use worktruck_kit::service::Shutdown;

use crate::queries;
use crate::service::Webhooks;

/// Runs until shutdown.
pub async fn run(svc: Webhooks, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let poll = Duration::from_millis(svc.settings().poll_ms);
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    loop {
        if futures::FutureExt::now_or_never(prune.tick()).is_some()
            && let Err(e) = prune_ended(&svc).await
        {
            tracing::debug!(error = %e, "cannot prune ended webhook deliveries");
        }
        match round(&svc).await {
            // A full round: more may be due now (the next of an entity just became eligible).
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "webhooks delivery round failed"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = svc.wake().notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// One round: claims what is due and attempts it; returns how many were attempted.
async fn round(svc: &Webhooks) -> worktruck_kit::Result<usize> {
    let limit = svc.settings().concurrency as i64;
    let token = Uuid::now_v7();
    let due = {
        let t = now();
        let mut tx = svc.db().begin(Scope::System, true).await?;
        let due = queries::claim_due(&mut tx, t, svc.lease_until(t), token, limit).await?;
        tx.commit().await?;
        due
    };
    let n = due.len();
    let mut set = tokio::task::JoinSet::new();
    for (tenant, id) in due {
        let svc = svc.clone();
        set.spawn(async move {
            if let Err(e) = svc.attempt(tenant, id, token).await {
                tracing::warn!(delivery.id = %id, error = %e, "webhook delivery attempt failed to record");
            }
        });
    }
    while set.join_next().await.is_some() {}
    Ok(n)
}

/// Deletes ended deliveries older than `keep_days`.
async fn prune_ended(svc: &Webhooks) -> worktruck_kit::Result<()> {
    let cutoff = now() - chrono::Duration::days(svc.settings().keep_days as i64);
    let mut tx = svc.db().begin(Scope::System, true).await?;
    queries::prune(&mut tx, cutoff).await?;
    tx.commit().await
}
