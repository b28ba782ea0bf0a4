//! `worktruck admin …`: operator commands that work on the data directly.

use worktruck_kit::config::Config;

use crate::app::{open_service_db, open_tenants_for_admin};
use crate::services;

/// Creates a tenant with its first API key; the key works at once against a server running on
/// the same data. Returns `{"tenant": {...}, "api_key": "bsk_live_..."}`.
pub async fn create_tenant(cfg: &Config, name: &str, plan: &str) -> anyhow::Result<serde_json::Value> {
    let plan = worktruck_tenants::parse_plan(plan)
        .ok_or_else(|| anyhow::anyhow!("unknown plan {plan:?}: use free, pro, scale or enterprise"))?;
    let (db, pepper) = open_tenants_for_admin(cfg).await?;
    let out = worktruck_tenants::create_tenant(&db, &pepper, name, plan, cfg.tenants.default_retention_days).await;
    db.close().await;
    let out = out?;
    let t = out.tenant.unwrap_or_default();
    let created_at = t
        .created_at
        .and_then(|ts| chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32))
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    Ok(serde_json::json!({
        "tenant": {
            "id": t.id,
            "name": t.name,
            "slug": t.slug,
            "plan": worktruck_tenants::plan_str(worktruck_proto::tenants::v1::Plan::try_from(t.plan).unwrap_or_default()),
            "retention_days": t.retention_days,
            "created_at": created_at,
        },
        "api_key": out.api_key.map(|k| k.key).unwrap_or_default(),
    }))
}

/// Re-wraps every tenant's data keys, in every service's database, under the active master key
/// (`encryption.active_key`); sealed secrets are not touched. Each database is one transaction;
/// run it again after a failure. Returns one line per service.
pub async fn rotate_master_key(cfg: &Config) -> anyhow::Result<Vec<String>> {
    services::check_config(cfg)?;
    let secrets = cfg.master_secret_if_present()?;
    let envelope = worktruck_kit::envelope::Envelope::new(cfg, secrets.as_ref())?;
    let mut lines = Vec::new();
    for def in services::TABLE {
        let db = open_service_db(cfg, def).await?;
        let done = envelope.rotate(&db).await;
        db.close().await;
        let done = done.map_err(|e| anyhow::anyhow!("{}: {e}", def.name))?;
        lines.push(format!(
            "{}: {} data keys re-wrapped under {:?}, {} already were",
            def.name,
            done.rewrapped,
            envelope.active_key(),
            done.current
        ));
    }
    Ok(lines)
}
