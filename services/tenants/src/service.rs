//! The `worktruck.tenants.v1.TenantsService` gRPC implementation.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::{Ctx, Verifier, validate_scope};
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, now};
use worktruck_kit::outbox::{self, Relay};
use worktruck_kit::pbjson::{opt_datetime, timestamp, uuid};
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::tenants::v1 as pb;
use worktruck_proto::tenants::v1::tenants_service_server::TenantsService;

use crate::keys::{self, Env};
use crate::store::{self, InsertKey, KeyRow, TenantRow};

/// Keys are marked used at most this often (a write per request would serialise SQLite).
const TOUCH_EVERY_SECS: i64 = 60;
/// The most usage deltas one `SyncUsage` call may carry.
pub const MAX_USAGE_DELTAS: usize = 10_000;

/// The tenants service.
#[derive(Clone)]
pub struct Tenants {
    db: Db,
    verifier: Verifier,
    pepper: [u8; 32],
    default_retention_days: i32,
    relay: Relay,
}

impl Tenants {
    /// A service over a migrated database.
    pub fn new(db: Db, verifier: Verifier, pepper: [u8; 32], default_retention_days: i32, relay: Relay) -> Self {
        Self { db, verifier, pepper, default_retention_days, relay }
    }

    fn ctx<T>(&self, req: &Request<T>) -> Result<Ctx> {
        self.verifier.verify(req.metadata())
    }

    /// Resolves a presented key to its tenant. Unknown, forged, revoked and expired keys are all
    /// `unauthenticated`; only a key whose secret matched learns why.
    pub async fn authenticate(&self, presented: &str) -> Result<pb::AuthenticateApiKeyResponse> {
        let invalid = || Error::unauthenticated("invalid API key");
        let lookup = keys::lookup_id(presented).ok_or_else(invalid)?;
        let mut tx = self.db.begin(Scope::System, false).await?;
        let row = store::key_by_lookup(&mut tx, lookup).await?.ok_or_else(invalid)?;
        if !keys::verify(presented, &row.secret_hash, &self.pepper) {
            return Err(invalid());
        }
        let t = now();
        if row.revoked_at.is_some() {
            return Err(Error::unauthenticated("API key revoked"));
        }
        if row.expires_at.is_some_and(|e| e <= t) {
            return Err(Error::unauthenticated("API key expired"));
        }
        let tenant = store::tenant(&mut tx, row.tenant_id).await?.ok_or_else(invalid)?;
        drop(tx);
        if row.last_used_at.is_none_or(|u| (t - u).num_seconds() >= TOUCH_EVERY_SECS) {
            // Best effort: a failed touch must not fail the request it authenticates.
            if let Ok(mut tx) = self.db.begin(Scope::System, true).await
                && store::touch(&mut tx, row.id, t).await.is_ok() {
                    let _ = tx.commit().await;
                }
        }
        Ok(pb::AuthenticateApiKeyResponse {
            tenant: Some(tenant_pb(&tenant)),
            key_id: row.id.to_string(),
            scopes: scopes_of(&row),
            environment: env_pb(Env::parse(&row.environment)) as i32,
            expires_at: row.expires_at.map(timestamp),
        })
    }

    /// Maps an OIDC subject or a paying wallet to its tenant, creating one on the free plan the
    /// first time. Concurrent first requests for one principal end on one tenant.
    /// Adds each delta to its tenant's minute and day windows (in one transaction) and returns
    /// the windows' totals, in the deltas' order; windows older than two minutes or two days are
    /// pruned on the way.
    pub async fn sync_usage(&self, deltas: &[pb::UsageDelta]) -> Result<Vec<pb::UsageDelta>> {
        if deltas.len() > MAX_USAGE_DELTAS {
            return Err(Error::invalid(format!("at most {MAX_USAGE_DELTAS} usage deltas per call")));
        }
        let now_s = now().timestamp();
        let (minute_now, day_now) = (now_s.div_euclid(60), now_s.div_euclid(86_400));
        let mut parsed = Vec::with_capacity(deltas.len());
        for d in deltas {
            let tenant = Uuid::parse_str(&d.tenant_id).map_err(|_| Error::invalid("usage delta: tenant_id is not a UUID"))?;
            // A gateway's clock may be off a little; a window far from now is a bug or an attack.
            if (d.minute - minute_now).abs() > 60 || (d.day - day_now).abs() > 1 {
                return Err(Error::invalid("usage delta: window too far from the current time"));
            }
            parsed.push((tenant, d));
        }
        let mut tx = self.db.begin(Scope::System, true).await?;
        let mut totals = Vec::with_capacity(parsed.len());
        for (tenant, d) in parsed {
            let minute_total = store::add_usage(&mut tx, tenant, "m", d.minute, i64::from(d.minute_count)).await?;
            let day_total = store::add_usage(&mut tx, tenant, "d", d.day, i64::from(d.day_count)).await?;
            totals.push(pb::UsageDelta {
                tenant_id: d.tenant_id.clone(),
                minute: d.minute,
                minute_count: u32::try_from(minute_total).unwrap_or(u32::MAX),
                day: d.day,
                day_count: u32::try_from(day_total).unwrap_or(u32::MAX),
            });
        }
        store::prune_usage(&mut tx, minute_now - 2, day_now - 2).await?;
        tx.commit().await?;
        Ok(totals)
    }

    pub async fn resolve_principal(&self, kind: pb::PrincipalKind, issuer: &str, subject: &str) -> Result<pb::ResolvePrincipalResponse> {
        let (kind, issuer, subject) = principal_key(kind, issuer, subject)?;
        for _ in 0..3 {
            let mut tx = self.db.begin(Scope::System, false).await?;
            if let Some((id, tenant_id)) = store::principal(&mut tx, kind, &issuer, &subject).await? {
                let tenant = store::tenant(&mut tx, tenant_id).await?.ok_or_else(|| Error::internal("principal without tenant"))?;
                return Ok(pb::ResolvePrincipalResponse { tenant: Some(tenant_pb(&tenant)), principal_id: id.to_string(), created: false });
            }
            drop(tx);
            let t = now();
            let name = if kind == "wallet" { subject.clone() } else { format!("{subject} ({issuer})") };
            let row = new_tenant_row(&name.chars().take(200).collect::<String>(), pb::Plan::Free, self.default_retention_days, t);
            let principal_id = Uuid::now_v7();
            let mut tx = self.db.begin(Scope::Tenant(row.id), true).await?;
            let tenant = insert_tenant(&mut tx, &row, &format!("{kind}:{subject}")).await?;
            match store::insert_principal(&mut tx, principal_id, kind, &issuer, &subject, row.id, t).await {
                Ok(()) => {
                    tx.commit().await?;
                    self.relay.notify();
                    return Ok(pb::ResolvePrincipalResponse { tenant: Some(tenant), principal_id: principal_id.to_string(), created: true });
                }
                // Another request created it first: read theirs.
                Err(e) if e.code == ErrorCode::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict("principal is being created concurrently; retry"))
    }

    async fn create_key(&self, ctx: &Ctx, r: pb::CreateApiKeyRequest) -> Result<pb::ApiKeySecret> {
        let tenant = ctx.require_tenant()?;
        let t = now();
        let name = r.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Error::validation("name must be 1 to 200 characters"));
        }
        let scopes = check_scopes(&r.scopes)?;
        let expires_at = opt_datetime(r.expires_at.as_ref(), "expires_at")?;
        if expires_at.is_some_and(|e| e <= t) {
            return Err(Error::validation("expires_at must be in the future"));
        }
        let env = match pb::Environment::try_from(r.environment) {
            Ok(pb::Environment::Test) => Env::Test,
            Ok(_) => Env::Live,
            Err(_) => return Err(Error::invalid("unknown environment")),
        };
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let secret = insert_new_key(&mut tx, &self.pepper, tenant, name, env, &scopes, expires_at, t).await?;
        key_event(&mut tx, tenant, "created", &secret_to_public(&secret), &ctx.actor, t).await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(secret)
    }

    async fn rotate_key(&self, ctx: &Ctx, id: &str) -> Result<pb::ApiKeySecret> {
        let tenant = ctx.require_tenant()?;
        let id = uuid(id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let row = store::key(&mut tx, tenant, id).await?.ok_or_else(|| Error::not_found("API key"))?;
        if row.revoked_at.is_some() {
            return Err(Error::conflict("a revoked API key cannot be rotated"));
        }
        let env = Env::parse(&row.environment);
        let k = keys::generate(env, &self.pepper);
        if store::rotate(&mut tx, tenant, id, &k.lookup_id, &k.hash, &k.hint, t).await? == 0 {
            return Err(Error::conflict("API key changed meanwhile; retry"));
        }
        let mut public = key_pb(&row);
        public.key_hint = k.hint.clone();
        public.rotated_at = Some(timestamp(t));
        key_event(&mut tx, tenant, "rotated", &public, &ctx.actor, t).await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(pb::ApiKeySecret {
            id: row.id.to_string(),
            name: row.name.clone(),
            environment: env_pb(env) as i32,
            key: k.secret,
            key_hint: k.hint,
            scopes: scopes_of(&row),
            created_at: Some(timestamp(row.created_at)),
            expires_at: row.expires_at.map(timestamp),
        })
    }
}

/// Creates a tenant and its first live API key in one transaction. Used by the RPC, by
/// `worktruck admin create-tenant` and by first start.
pub async fn create_tenant(
    db: &Db,
    pepper: &[u8; 32],
    name: &str,
    plan: pb::Plan,
    retention_days: i32,
) -> Result<pb::CreateTenantResponse> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::validation("tenant name must be 1 to 200 characters"));
    }
    let t = now();
    let row = new_tenant_row(name, plan, retention_days, t);
    let mut tx = db.begin(Scope::Tenant(row.id), true).await?;
    let tenant = insert_tenant(&mut tx, &row, "system:tenants").await?;
    let key = insert_new_key(&mut tx, pepper, row.id, "default", Env::Live, &[], None, t).await?;
    tx.commit().await?;
    Ok(pb::CreateTenantResponse { tenant: Some(tenant), api_key: Some(key) })
}

fn new_tenant_row(name: &str, plan: pb::Plan, retention_days: i32, t: DateTime<Utc>) -> TenantRow {
    TenantRow {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        slug: slug(name),
        plan: plan_str(plan).to_owned(),
        retention_days: i64::from(retention_days),
        created_at: t,
    }
}

/// Inserts a tenant and announces it.
async fn insert_tenant(tx: &mut worktruck_kit::db::Tx, row: &TenantRow, actor: &str) -> Result<pb::Tenant> {
    store::insert_tenant(tx, row).await?;
    let tenant = tenant_pb(row);
    outbox::enqueue(
        tx,
        row.id,
        "worktruck.tenants.tenant.created.v1",
        row.id,
        1,
        actor,
        outbox::any("worktruck.tenants.v1.Tenant", &tenant),
        row.created_at,
    )
    .await?;
    Ok(tenant)
}

/// Normalises and checks an external principal: `(kind, issuer, subject)` as stored.
fn principal_key(kind: pb::PrincipalKind, issuer: &str, subject: &str) -> Result<(&'static str, String, String)> {
    let issuer = issuer.trim();
    let subject = subject.trim();
    if subject.is_empty() || subject.len() > 255 || issuer.len() > 255 {
        return Err(Error::invalid("principal subject must be 1 to 255 characters"));
    }
    match kind {
        pb::PrincipalKind::OidcSubject if !issuer.is_empty() => Ok(("oidc", issuer.to_owned(), subject.to_owned())),
        pb::PrincipalKind::Wallet => {
            let addr = subject.to_ascii_lowercase();
            let hex = addr.strip_prefix("0x").unwrap_or_default();
            if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid("wallet must be a 0x-prefixed 20-byte hex address"));
            }
            Ok(("wallet", issuer.to_owned(), addr))
        }
        _ => Err(Error::invalid("principal kind and issuer are required")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert_new_key(
    tx: &mut worktruck_kit::db::Tx,
    pepper: &[u8; 32],
    tenant: Uuid,
    name: &str,
    env: Env,
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
    t: DateTime<Utc>,
) -> Result<pb::ApiKeySecret> {
    let k = keys::generate(env, pepper);
    let id = Uuid::now_v7();
    let scopes_json = Value::from(scopes.to_vec());
    store::insert_key(
        tx,
        InsertKey {
            id,
            tenant_id: tenant,
            name,
            environment: env.as_str(),
            lookup_id: &k.lookup_id,
            secret_hash: &k.hash,
            key_hint: &k.hint,
            scopes: &scopes_json,
            created_at: t,
            expires_at,
        },
    )
    .await?;
    Ok(pb::ApiKeySecret {
        id: id.to_string(),
        name: name.to_owned(),
        environment: env_pb(env) as i32,
        key: k.secret,
        key_hint: k.hint,
        scopes: scopes.to_vec(),
        created_at: Some(timestamp(t)),
        expires_at: expires_at.map(timestamp),
    })
}

async fn key_event(
    tx: &mut worktruck_kit::db::Tx,
    tenant: Uuid,
    action: &str,
    key: &pb::ApiKey,
    actor: &str,
    t: DateTime<Utc>,
) -> Result<()> {
    let id = uuid(&key.id, "id")?;
    outbox::enqueue(
        tx,
        tenant,
        &format!("worktruck.tenants.api_key.{action}.v1"),
        id,
        1,
        actor,
        outbox::any("worktruck.tenants.v1.ApiKey", key),
        t,
    )
    .await?;
    Ok(())
}

fn check_scopes(scopes: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for s in scopes {
        let s = s.trim().to_owned();
        if !validate_scope(&s) {
            return Err(Error::validation(format!(
                "unknown scope {s:?}: use <domain>:read or <domain>:write with a domain of {}",
                worktruck_kit::context::SCOPE_DOMAINS.join(", ")
            )));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// A URL-safe handle: the name's letters and digits, then six random characters.
fn slug(name: &str) -> String {
    use rand::Rng;
    let mut base: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    base.truncate(40);
    let suffix: String = rand::rngs::OsRng
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(6)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    if base.is_empty() { format!("tenant-{suffix}") } else { format!("{base}-{suffix}") }
}

/// The stored name of a plan.
pub fn plan_str(p: pb::Plan) -> &'static str {
    match p {
        pb::Plan::Pro => "pro",
        pb::Plan::Scale => "scale",
        pb::Plan::Enterprise => "enterprise",
        pb::Plan::Free | pb::Plan::Unspecified => "free",
    }
}

/// Parses a plan name (`free`, `pro`, `scale`, `enterprise`).
pub fn parse_plan(s: &str) -> Option<pb::Plan> {
    match s {
        "free" => Some(pb::Plan::Free),
        "pro" => Some(pb::Plan::Pro),
        "scale" => Some(pb::Plan::Scale),
        "enterprise" => Some(pb::Plan::Enterprise),
        _ => None,
    }
}

fn env_pb(e: Env) -> pb::Environment {
    match e {
        Env::Live => pb::Environment::Live,
        Env::Test => pb::Environment::Test,
    }
}

fn tenant_pb(t: &TenantRow) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        name: t.name.clone(),
        slug: t.slug.clone(),
        plan: parse_plan(&t.plan).unwrap_or(pb::Plan::Free) as i32,
        retention_days: i32::try_from(t.retention_days).unwrap_or(i32::MAX),
        created_at: Some(timestamp(t.created_at)),
    }
}

fn scopes_of(k: &KeyRow) -> Vec<String> {
    k.scopes
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn key_pb(k: &KeyRow) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        name: k.name.clone(),
        environment: env_pb(Env::parse(&k.environment)) as i32,
        key_hint: k.key_hint.clone(),
        scopes: scopes_of(k),
        created_at: Some(timestamp(k.created_at)),
        expires_at: k.expires_at.map(timestamp),
        last_used_at: k.last_used_at.map(timestamp),
        revoked_at: k.revoked_at.map(timestamp),
        rotated_at: k.rotated_at.map(timestamp),
    }
}

fn secret_to_public(s: &pb::ApiKeySecret) -> pb::ApiKey {
    pb::ApiKey {
        id: s.id.clone(),
        name: s.name.clone(),
        environment: s.environment,
        key_hint: s.key_hint.clone(),
        scopes: s.scopes.clone(),
        created_at: s.created_at,
        expires_at: s.expires_at,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl TenantsService for Tenants {
    async fn get_tenant(&self, req: Request<pb::GetTenantRequest>) -> Result<Response<pb::Tenant>, Status> {
        let ctx = self.ctx(&req)?;
        let tenant = ctx.require_tenant()?;
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let row = store::tenant(&mut tx, tenant).await?.ok_or_else(|| Error::not_found("tenant"))?;
        Ok(Response::new(tenant_pb(&row)))
    }

    async fn create_api_key(&self, req: Request<pb::CreateApiKeyRequest>) -> Result<Response<pb::ApiKeySecret>, Status> {
        let ctx = self.ctx(&req)?;
        Ok(Response::new(self.create_key(&ctx, req.into_inner()).await?))
    }

    async fn list_api_keys(&self, req: Request<pb::ListApiKeysRequest>) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let ctx = self.ctx(&req)?;
        let tenant = ctx.require_tenant()?;
        let r = req.into_inner();
        let limit = cursor::limit(r.limit)?;
        let after = match cursor::decode_opt(r.cursor.as_deref(), "api-keys")? {
            None => None,
            Some(Cursor::TimeId(t, id)) => Some((t, id)),
            Some(_) => return Err(Error::invalid("invalid cursor").into()),
        };
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let (rows, next) = store::keys(&mut tx, tenant, limit, after).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            data: rows.iter().map(key_pb).collect(),
            has_more: next.is_some(),
            next_cursor: next.map(|c| c.encode("api-keys")).unwrap_or_default(),
        }))
    }

    async fn get_api_key(&self, req: Request<pb::GetApiKeyRequest>) -> Result<Response<pb::ApiKey>, Status> {
        let ctx = self.ctx(&req)?;
        let tenant = ctx.require_tenant()?;
        let id = uuid(&req.get_ref().id, "id")?;
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let row = store::key(&mut tx, tenant, id).await?.ok_or_else(|| Error::not_found("API key"))?;
        Ok(Response::new(key_pb(&row)))
    }

    async fn rotate_api_key(&self, req: Request<pb::RotateApiKeyRequest>) -> Result<Response<pb::ApiKeySecret>, Status> {
        let ctx = self.ctx(&req)?;
        Ok(Response::new(self.rotate_key(&ctx, &req.get_ref().id).await?))
    }

    async fn delete_api_key(&self, req: Request<pb::DeleteApiKeyRequest>) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let ctx = self.ctx(&req)?;
        let tenant = ctx.require_tenant()?;
        let id = uuid(&req.get_ref().id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let row = store::key(&mut tx, tenant, id).await?.ok_or_else(|| Error::not_found("API key"))?;
        if row.revoked_at.is_none() {
            store::revoke(&mut tx, tenant, id, t).await?;
            let mut public = key_pb(&row);
            public.revoked_at = Some(timestamp(t));
            key_event(&mut tx, tenant, "revoked", &public, &ctx.actor, t).await?;
        }
        tx.commit().await.map_err(Status::from)?;
        self.relay.notify();
        Ok(Response::new(pb::DeleteApiKeyResponse { id: id.to_string(), revoked: true }))
    }

    async fn authenticate_api_key(
        &self,
        req: Request<pb::AuthenticateApiKeyRequest>,
    ) -> Result<Response<pb::AuthenticateApiKeyResponse>, Status> {
        self.ctx(&req)?;
        Ok(Response::new(self.authenticate(&req.get_ref().key).await?))
    }

    async fn resolve_principal(
        &self,
        req: Request<pb::ResolvePrincipalRequest>,
    ) -> Result<Response<pb::ResolvePrincipalResponse>, Status> {
        let ctx = self.ctx(&req)?;
        if !ctx.actor.starts_with("system:") {
            return Err(Error::new(ErrorCode::PermissionDenied, "only gateways resolve principals").into());
        }
        let r = req.into_inner();
        let kind = pb::PrincipalKind::try_from(r.kind).map_err(|_| Error::invalid("unknown principal kind"))?;
        Ok(Response::new(Tenants::resolve_principal(self, kind, &r.issuer, &r.subject).await?))
    }

    async fn sync_usage(&self, req: Request<pb::SyncUsageRequest>) -> Result<Response<pb::SyncUsageResponse>, Status> {
        let ctx = self.ctx(&req)?;
        if !ctx.actor.starts_with("system:") {
            return Err(Error::new(ErrorCode::PermissionDenied, "only gateways sync usage").into());
        }
        let totals = Tenants::sync_usage(self, &req.into_inner().deltas).await?;
        Ok(Response::new(pb::SyncUsageResponse { totals }))
    }

    async fn claim_idempotency_key(
        &self,
        req: Request<pb::ClaimIdempotencyKeyRequest>,
    ) -> Result<Response<pb::ClaimIdempotencyKeyResponse>, Status> {
        let ctx = self.ctx(&req)?;
        if !ctx.actor.starts_with("system:") {
            return Err(Error::new(ErrorCode::PermissionDenied, "only gateways claim idempotency keys").into());
        }
        Ok(Response::new(crate::idempotency::claim(&self.db, &req.into_inner()).await?))
    }

    async fn complete_idempotency_key(
        &self,
        req: Request<pb::CompleteIdempotencyKeyRequest>,
    ) -> Result<Response<pb::CompleteIdempotencyKeyResponse>, Status> {
        let ctx = self.ctx(&req)?;
        if !ctx.actor.starts_with("system:") {
            return Err(Error::new(ErrorCode::PermissionDenied, "only gateways complete idempotency keys").into());
        }
        let completed = crate::idempotency::complete(&self.db, &req.into_inner()).await?;
        Ok(Response::new(pb::CompleteIdempotencyKeyResponse { completed }))
    }

    async fn create_tenant(&self, req: Request<pb::CreateTenantRequest>) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let ctx = self.ctx(&req)?;
        if !ctx.actor.starts_with("system:") {
            return Err(Error::new(ErrorCode::PermissionDenied, "only operators may create tenants").into());
        }
        let r = req.into_inner();
        let plan = pb::Plan::try_from(r.plan).map_err(|_| Error::invalid("unknown plan"))?;
        let out = create_tenant(&self.db, &self.pepper, &r.name, plan, self.default_retention_days).await?;
        self.relay.notify();
        Ok(Response::new(out))
    }
}
