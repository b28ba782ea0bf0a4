//! The periodic re-probe: every second, the apps of every tenant whose `next_probe_at` has
//! passed (not disabled) are claimed (so two replicas do not probe one app at once) and
//! probed, a few at once; each probe sets the app's next time to the
//! interval jittered by ±25 %, so apps registered together drift apart. A failure counts
//! towards `unhealthy_after`; a success makes the app active again.

use std::time::Duration;

use worktruck_kit::db::{Scope, now};
use worktruck_kit::service::Shutdown;

use crate::queries;
use crate::service::{Apps, REPROBE_ACTOR};

/// Runs until shutdown.
pub async fn run(apps: Apps, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = round(&apps).await {
            tracing::warn!(error = %e, "apps re-probe round failed");
        }
    }
}

/// One round: the due apps, at most `reprobe_concurrency` at a time.
async fn round(apps: &Apps) -> worktruck_kit::Result<()> {
    let limit = apps.settings().reprobe_concurrency as i64;
    let due = {
        let t = now();
        // Held for twice the deadline: a replica that dies mid-probe leaves the app due again.
        let lease =
            t + chrono::Duration::milliseconds(2 * apps.settings().probe_deadline_ms as i64);
        let mut tx = apps.db().begin(Scope::System, true).await?;
        let due = queries::claim_due(&mut tx, t, lease, limit).await?;
        tx.commit().await?;
        due
    };
    let mut set = tokio::task::JoinSet::new();
    for (tenant, id) in due {
        let apps = apps.clone();
        set.spawn(async move {
            if let Err(e) = apps.probe_and_record(tenant, id, REPROBE_ACTOR).await {
                tracing::warn!(app.id = %id, error = %e, "apps re-probe failed");
            }
        });
    }
    while set.join_next().await.is_some() {}
    Ok(())
}
