//! The `worktruck.apps.v1.AppsService` gRPC implementation. A probe is a network call, so it
//! never runs inside a transaction: the app is read (and its secret opened) in one, probed,
//! and the result written in another that locks the row again.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use worktruck_kit::context::Verifier;
use worktruck_kit::cursor::{self, Cursor};
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::error::quote;
use worktruck_kit::outbox::Relay;
use worktruck_kit::pbjson::{from_struct, timestamp};
use worktruck_kit::rpc::Caller;
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::apps::v1 as pb;
use worktruck_proto::apps::v1::apps_service_server::AppsService;

use crate::Settings;
use crate::catalog;
use crate::domain::{
    app_to_pb, check_auth, check_name, check_slug, check_text, check_tool_names, check_url_length,
    hint, merge, metadata,
};
use crate::probe::{Credentials, Outcome, Prober};
use crate::queries::{self, AppRow};
use crate::secrets::Sealer;

/// The problems of `instance` against `schema` (compiled without any remote reference: the
/// schema is the server's, untrusted), at most five, each with its path under `root`; `Err`
/// when the schema does not compile.
fn problems(
    schema: &serde_json::Value,
    instance: &serde_json::Value,
    root: &str,
) -> std::result::Result<Vec<String>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    Ok(validator
        .iter_errors(instance)
        .take(5)
        .map(|e| format!("{root}{}: {e}", e.instance_path()))
        .collect())
}

/// Checks a call's arguments against the tool's mirrored input schema.
fn check_arguments(
    schema: &serde_json::Value,
    arguments: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let instance = serde_json::Value::Object(arguments.clone());
    let found = problems(schema, &instance, "arguments").map_err(|e| {
        Error::validation(format!(
            "the tool's input schema is not a usable JSON Schema: {e}"
        ))
    })?;
    if !found.is_empty() {
        return Err(Error::validation(format!(
            "the arguments do not match the tool's input schema: {}",
            found.join("; ")
        )));
    }
    Ok(())
}

/// Who the periodic re-probe acts as in events.
pub const REPROBE_ACTOR: &str = "system:apps-reprobe";

/// The apps service.
#[derive(Clone)]
pub struct Apps {
    db: Db,
    verifier: Verifier,
    relay: Relay,
    prober: Prober,
    sealer: Sealer,
    settings: Settings,
}

impl Apps {
    /// The service over its database, with its prober and sealer.
    pub fn new(
        db: Db,
        verifier: Verifier,
        relay: Relay,
        prober: Prober,
        sealer: Sealer,
        settings: Settings,
    ) -> Apps {
        Apps {
            db,
            verifier,
            relay,
            prober,
            sealer,
            settings,
        }
    }

    /// The database (for the re-probe queue).
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller> {
        Caller::verify(&self.verifier, req)
    }

    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify();
        Ok(())
    }

    /// When to probe next: the interval, jittered by ±25 % so that apps registered together
    /// spread out.
    fn next_probe(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let ms = self.settings.reprobe_interval_seconds as f64 * 1000.0;
        let jittered = ms * rand::thread_rng().gen_range(0.75..1.25);
        t + Duration::milliseconds(jittered as i64)
    }

    async fn render(&self, tx: &mut Tx, a: &AppRow) -> Result<pb::App> {
        let tools = queries::tools(tx, a.tenant_id, a.id).await?;
        Ok(app_to_pb(a, &tools))
    }

    async fn emit(
        &self,
        tx: &mut Tx,
        actor: &str,
        action: &str,
        app: &pb::App,
        probe: Option<&pb::ProbeResult>,
        t: DateTime<Utc>,
    ) -> Result<()> {
        let tenant = Uuid::parse_str(&app.tenant_id).map_err(Error::internal)?;
        let id = Uuid::parse_str(&app.id).map_err(Error::internal)?;
        let subject = format!("worktruck.apps.app.{action}.v1");
        let data = match probe {
            Some(p) => worktruck_kit::outbox::any(
                "worktruck.apps.v1.AppProbed",
                &pb::AppProbed {
                    app: Some(app.clone()),
                    probe: Some(p.clone()),
                },
            ),
            None => worktruck_kit::outbox::any(
                "worktruck.apps.v1.AppChanged",
                &pb::AppChanged {
                    app: Some(app.clone()),
                },
            ),
        };
        worktruck_kit::outbox::enqueue(tx, tenant, &subject, id, app.version, actor, data, t)
            .await?;
        Ok(())
    }

    async fn by_slug(&self, tx: &mut Tx, tenant: Uuid, slug: &str, lock: bool) -> Result<AppRow> {
        queries::app_by_slug(tx, tenant, slug, lock)
            .await?
            .ok_or_else(|| Error::not_found(format!("no app {slug:?}")))
    }

    /// The credentials of a stored app, its secret opened.
    async fn credentials(&self, tx: &mut Tx, a: &AppRow) -> Result<Credentials> {
        let secret = match &a.auth_sealed {
            Some(sealed) => Some(self.sealer.open(tx, a.tenant_id, a.id, sealed).await?),
            None => None,
        };
        Ok(Credentials {
            kind: a.auth_type.clone(),
            header_name: a.auth_header_name.clone(),
            secret,
        })
    }

    /// Probes a stored app and records the result: its health, its mirror, and an
    /// `app.probed` event when either changed. `None` when the app is gone meanwhile.
    pub(crate) async fn probe_and_record(
        &self,
        tenant: Uuid,
        id: Uuid,
        actor: &str,
    ) -> Result<Option<(pb::App, pb::ProbeResult)>> {
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let Some(a) = queries::app_by_id(&mut tx, tenant, id, false).await? else {
            return Ok(None);
        };
        let creds = self.credentials(&mut tx, &a).await?;
        drop(tx);
        let outcome = self.prober.probe(&a.mcp_server_url, creds).await;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let Some(mut a) = queries::app_by_id(&mut tx, tenant, id, true).await? else {
            return Ok(None);
        };
        let before = (a.status.clone(), a.status_reason.clone());
        let (result, mirror_changed) = self.record(&mut tx, &mut a, &outcome, t).await?;
        let changed = mirror_changed || before != (a.status.clone(), a.status_reason.clone());
        if changed {
            a.version += 1;
            a.updated_at = t;
        }
        queries::update_app(&mut tx, &a).await?;
        let app = self.render(&mut tx, &a).await?;
        if changed {
            self.emit(&mut tx, actor, "probed", &app, Some(&result), t)
                .await?;
        }
        self.commit(tx).await?;
        Ok(Some((app, result)))
    }

    /// Applies `outcome` to `a` (not yet written) and its mirror (written). Returns the probe
    /// result and whether the mirror changed.
    async fn record(
        &self,
        tx: &mut Tx,
        a: &mut AppRow,
        outcome: &Outcome,
        t: DateTime<Utc>,
    ) -> Result<(pb::ProbeResult, bool)> {
        a.last_probed_at = Some(t);
        a.next_probe_at = self.next_probe(t);
        match outcome {
            Outcome::Listed(cat) => {
                let first_success = a.last_healthy_at.is_none();
                let rows = queries::tools(tx, a.tenant_id, a.id).await?;
                let (rows, enabled, counts) =
                    catalog::apply(rows, &cat.tools, &a.enabled(), first_success, t);
                for r in &rows {
                    queries::upsert_tool(tx, a.tenant_id, a.id, r).await?;
                }
                a.enabled_tools = serde_json::json!(enabled);
                a.consecutive_probe_failures = 0;
                a.last_healthy_at = Some(t);
                a.protocol_version = Some(cat.protocol_version.clone());
                if a.status != "disabled" {
                    a.status = "active".into();
                }
                a.status_reason = None;
                let result = pb::ProbeResult {
                    last_probed_at: Some(timestamp(t)),
                    reachable: true,
                    tools_discovered: cat.tools.len() as i32,
                    tools_added: counts.added,
                    tools_removed: counts.removed,
                    tools_changed: counts.changed,
                    reason: None,
                    protocol_version: Some(cat.protocol_version.clone()),
                };
                Ok((result, counts.any() || first_success))
            }
            Outcome::Failed { reason, .. } => {
                a.consecutive_probe_failures = a.consecutive_probe_failures.saturating_add(1);
                a.status_reason = Some(reason.clone());
                // Never healthy, or failing N times in a row: unhealthy. A disabled app stays so.
                if a.status != "disabled"
                    && (a.last_healthy_at.is_none()
                        || a.consecutive_probe_failures >= self.settings.unhealthy_after)
                {
                    a.status = "unhealthy".into();
                }
                let result = pb::ProbeResult {
                    last_probed_at: Some(timestamp(t)),
                    reachable: false,
                    tools_discovered: 0,
                    tools_added: 0,
                    tools_removed: 0,
                    tools_changed: 0,
                    reason: Some(reason.clone()),
                    protocol_version: None,
                };
                Ok((result, false))
            }
        }
    }
}

#[tonic::async_trait]
impl AppsService for Apps {
    async fn create_app(
        &self,
        req: Request<pb::CreateAppRequest>,
    ) -> Result<Response<pb::CreateAppResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let slug = check_slug(&r.slug)?;
        let display_name = check_name("display_name", &r.display_name, 200)?;
        let description = check_text(
            "description",
            r.description.as_deref().unwrap_or_default(),
            10_000,
        )?;
        let url = check_url_length(&r.mcp_server_url)?;
        let auth = check_auth(r.auth.as_ref())?;
        let meta = metadata(r.metadata.as_ref())?;
        // The SSRF guard, with the name resolved now (the connection checks again).
        self.prober
            .guard()
            .check(&url)
            .await
            .map_err(|e| Error::validation(format!("mcp_server_url: {e}")))?;
        {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            if queries::app_by_slug(&mut tx, c.tenant, &slug, false)
                .await?
                .is_some()
            {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("the tenant already has an app {slug:?}"),
                )
                .into());
            }
        }
        let creds = Credentials {
            kind: auth.kind.into(),
            header_name: auth.header_name.clone(),
            secret: auth.secret.clone(),
        };
        let outcome = self.prober.probe(&url, creds).await;
        if let Outcome::Failed {
            reason,
            refused: true,
        } = &outcome
        {
            // Refused by the guard (a redirect to a private address, a name that now
            // resolves to one): the URL is refused, nothing is stored.
            return Err(Error::validation(format!("mcp_server_url: {reason}")).into());
        }
        let t = now();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let sealed = match &auth.secret {
            Some(s) => Some(self.sealer.seal(&mut tx, c.tenant, id, s).await?),
            None => None,
        };
        let mut a = AppRow {
            tenant_id: c.tenant,
            id,
            slug: slug.clone(),
            display_name,
            description,
            mcp_server_url: url,
            auth_type: auth.kind.into(),
            auth_header_name: auth.header_name.clone(),
            auth_hint: auth.secret.as_deref().and_then(|s| hint(s)),
            auth_sealed: sealed,
            status: "active".into(),
            status_reason: None,
            consecutive_probe_failures: 0,
            last_probed_at: None,
            last_healthy_at: None,
            next_probe_at: t,
            protocol_version: None,
            enabled_tools: serde_json::json!([]),
            metadata: meta,
            version: 1,
            created_at: t,
            updated_at: t,
        };
        if !queries::insert_app(&mut tx, &a).await? {
            return Err(Error::new(
                ErrorCode::AlreadyExists,
                format!("the tenant already has an app {slug:?}"),
            )
            .into());
        }
        let (probe, _) = self.record(&mut tx, &mut a, &outcome, t).await?;
        queries::update_app(&mut tx, &a).await?;
        let app = self.render(&mut tx, &a).await?;
        self.emit(&mut tx, c.actor(), "created", &app, None, t)
            .await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::CreateAppResponse {
            app: Some(app),
            probe: Some(probe),
        }))
    }

    async fn list_apps(
        &self,
        req: Request<pb::ListAppsRequest>,
    ) -> Result<Response<pb::ListAppsResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let scope = "apps:list";
        let limit = cursor::limit(r.limit)?;
        let after = cursor::decode_opt(r.cursor.as_deref(), scope)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let mut rows = queries::list_apps(&mut tx, c.tenant, limit + 1, after).await?;
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = has_more
            .then(|| {
                rows.last()
                    .map(|a| Cursor::TimeId(a.created_at, a.id).encode(scope))
            })
            .flatten();
        let mut data = Vec::with_capacity(rows.len());
        for a in &rows {
            data.push(self.render(&mut tx, a).await?);
        }
        Ok(Response::new(pb::ListAppsResponse {
            data,
            next_cursor,
            has_more,
        }))
    }

    async fn get_app(&self, req: Request<pb::GetAppRequest>) -> Result<Response<pb::App>, Status> {
        let c = self.caller(&req)?;
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let a = self
            .by_slug(&mut tx, c.tenant, &req.get_ref().slug, false)
            .await?;
        Ok(Response::new(self.render(&mut tx, &a).await?))
    }

    async fn update_app(
        &self,
        req: Request<pb::UpdateAppRequest>,
    ) -> Result<Response<pb::App>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let mut a = self.by_slug(&mut tx, c.tenant, &r.slug, true).await?;
        if let Some(expected) = r.expected_version
            && expected != a.version
        {
            return Err(Error::stale_version("app", a.version, expected).into());
        }
        if let Some(n) = &r.display_name {
            a.display_name = check_name("display_name", n, 200)?;
        }
        if let Some(d) = &r.description {
            a.description = check_text("description", d, 10_000)?;
        }
        if let Some(m) = &r.metadata {
            let merged = merge(&a.metadata, &from_struct(m));
            crate::domain::check_metadata(&merged)?;
            a.metadata = merged;
        }
        if let Some(s) = r.status {
            match pb::AppStatus::try_from(s).unwrap_or(pb::AppStatus::Unspecified) {
                pb::AppStatus::Disabled => a.status = "disabled".into(),
                pb::AppStatus::Active => {
                    if a.status == "disabled" {
                        // Back on: healthy as far as its failures go; probed soon.
                        let failing = a.last_healthy_at.is_none()
                            || a.consecutive_probe_failures >= self.settings.unhealthy_after;
                        a.status = if failing { "unhealthy" } else { "active" }.into();
                        a.next_probe_at = t;
                    }
                }
                _ => return Err(Error::validation("status must be active or disabled").into()),
            }
        }
        if let Some(list) = &r.enabled_tools {
            let wanted = check_tool_names(list)?;
            let mut rows = queries::tools(&mut tx, c.tenant, a.id).await?;
            catalog::enable(&mut rows, &wanted)
                .map_err(|e| Error::validation(format!("enabled_tools: {e}")))?;
            for row in &rows {
                queries::upsert_tool(&mut tx, c.tenant, a.id, row).await?;
            }
            a.enabled_tools = serde_json::json!(wanted);
        }
        a.version += 1;
        a.updated_at = t;
        queries::update_app(&mut tx, &a).await?;
        let app = self.render(&mut tx, &a).await?;
        self.emit(&mut tx, c.actor(), "updated", &app, None, t)
            .await?;
        self.commit(tx).await?;
        Ok(Response::new(app))
    }

    async fn delete_app(
        &self,
        req: Request<pb::DeleteAppRequest>,
    ) -> Result<Response<pb::DeleteAppResponse>, Status> {
        let c = self.caller(&req)?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), true).await?;
        let mut a = self
            .by_slug(&mut tx, c.tenant, &req.get_ref().slug, true)
            .await?;
        let mut app = self.render(&mut tx, &a).await?;
        queries::delete_app(&mut tx, c.tenant, a.id).await?;
        a.version += 1;
        app.version = a.version;
        app.updated_at = Some(timestamp(t));
        self.emit(&mut tx, c.actor(), "deleted", &app, None, t)
            .await?;
        self.commit(tx).await?;
        Ok(Response::new(pb::DeleteAppResponse {
            id: a.id.to_string(),
            deleted: true,
        }))
    }

    async fn probe_app(
        &self,
        req: Request<pb::ProbeAppRequest>,
    ) -> Result<Response<pb::ProbeAppResponse>, Status> {
        let c = self.caller(&req)?;
        let id = {
            let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
            self.by_slug(&mut tx, c.tenant, &req.get_ref().slug, false)
                .await?
                .id
        };
        let (app, probe) = self
            .probe_and_record(c.tenant, id, c.actor())
            .await?
            .ok_or_else(|| Error::not_found(format!("no app {:?}", req.get_ref().slug)))?;
        Ok(Response::new(pb::ProbeAppResponse {
            app: Some(app),
            probe: Some(probe),
        }))
    }

    async fn call_app_tool(
        &self,
        req: Request<pb::CallAppToolRequest>,
    ) -> Result<Response<pb::CallAppToolResponse>, Status> {
        let c = self.caller(&req)?;
        let r = req.into_inner();
        let arguments = match r.arguments.as_ref().map(from_struct) {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let size = serde_json::to_vec(&arguments)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > self.settings.max_argument_bytes {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "arguments must be at most {} bytes as JSON",
                    self.settings.max_argument_bytes
                ),
            )
            .into());
        }
        let mut tx = self.db.begin(Scope::Tenant(c.tenant), false).await?;
        let a = self.by_slug(&mut tx, c.tenant, &r.slug, false).await?;
        if a.status == "disabled" {
            return Err(Error::conflict(format!("the app {:?} is disabled", a.slug)).into());
        }
        let tools = queries::tools(&mut tx, c.tenant, a.id).await?;
        let tool = tools
            .iter()
            .find(|t| t.name == r.tool)
            .filter(|t| a.enabled().contains(&t.name) && !t.stale && t.changed_at.is_none())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "the tool {} is not an enabled tool of the app {:?}",
                        quote(&r.tool),
                        a.slug
                    ),
                )
            })?;
        check_arguments(&tool.input_schema, &arguments)?;
        let creds = self.credentials(&mut tx, &a).await?;
        drop(tx);
        let answer = self
            .prober
            .call(&a.mcp_server_url, creds, &tool.name, arguments)
            .await
            .map_err(|e| {
                let code = if e.refused {
                    ErrorCode::PermissionDenied
                } else {
                    ErrorCode::Unavailable
                };
                Error::new(code, format!("the app {:?}: {}", a.slug, e.reason))
            })?;
        // A structured answer must match the output schema the tool declared.
        if let (Some(schema), Some(structured)) =
            (&tool.output_schema, answer.get("structuredContent"))
        {
            let found =
                problems(schema, structured, "structured_content").unwrap_or_else(|e| vec![e]);
            if !found.is_empty() {
                return Err(Error::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the app {:?} answered outside the tool's output schema: {}",
                        a.slug,
                        found.join("; ")
                    ),
                )
                .into());
            }
        }
        let content = answer
            .get("content")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        Ok(Response::new(pb::CallAppToolResponse {
            is_error: answer
                .get("isError")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            content: Some(prost_types::ListValue {
                values: content
                    .iter()
                    .map(worktruck_kit::pbjson::to_value)
                    .collect(),
            }),
            structured_content: answer
                .get("structuredContent")
                .filter(|v| v.is_object())
                .map(worktruck_kit::pbjson::to_struct),
        }))
    }
}
