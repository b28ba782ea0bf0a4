//! Integration keys: the tenant's keys of third-party services (the providers of
//! [`providers::PROVIDERS`]) that its agents use, and the unified view of every credential the
//! tenant gave (integration keys and the configs' own Anthropic keys).
//!
//! A key is sealed with kit's envelope encryption (purpose `agents.integration.<provider>`, so a
//! sealed key copied to another provider's row does not open) in the transaction that stores
//! it; a tenant has at most one live (`active` or `invalid`) key per provider, a new one revokes
//! the old in the same transaction, and revoking wipes the ciphertext. Neither a key nor a
//! request that carried it is logged or returned: answers carry `envelope::hint` only. No call
//! to a provider happens inside a database transaction.
//!
//! Like the BYOK key, key changes announce no event (nothing consumes one yet, and an event
//! would be one more place a key's metadata travels).

pub(crate) mod providers;
mod store;

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use uuid::Uuid;
use worktruck_kit::check::{check_metadata, check_name, check_url};
use worktruck_kit::config::OutboundConfig;
use worktruck_kit::db::{Db, Scope, Tx, now};
use worktruck_kit::envelope::Envelope;
use worktruck_kit::http::Guard;
use worktruck_kit::pbjson::{from_struct, timestamp, to_struct, uuid};
use worktruck_kit::{Error, ErrorCode, Result};
use worktruck_proto::agents::v1 as pb;
use worktruck_proto::text::quote;

use self::providers::{Provider, Verdict, Verifier};
use self::store::KeyRow;
use crate::settings::Settings;

/// The envelope purpose of a provider's keys.
pub(crate) fn purpose(provider: &str) -> String {
    format!("agents.integration.{provider}")
}

/// The unified view's kinds.
const KIND_KEY: &str = "integration_key";
const KIND_BYOK: &str = "agent_config_byok";

/// The integration keys' part of the agents service.
#[derive(Clone)]
pub(crate) struct Integrations {
    db: Db,
    envelope: Envelope,
    verifier: Verifier,
}

/// A provider named in a path: unknown is a 404 (there is no such key).
fn provider_of_path(name: &str) -> Result<&'static Provider> {
    providers::find(name).ok_or_else(|| {
        Error::not_found(format!(
            "no provider {}; the providers are {}",
            quote(name),
            providers::names()
        ))
    })
}

fn no_live_key(p: &Provider) -> Error {
    Error::not_found(format!(
        "the tenant has no active or invalid {} key",
        p.name
    ))
}

fn render(k: &KeyRow) -> pb::IntegrationKey {
    pb::IntegrationKey {
        id: k.id.to_string(),
        provider: k.provider.clone(),
        status: k.status.clone(),
        key_hint: k.key_hint.clone(),
        label: k.label.clone(),
        metadata: Some(to_struct(&k.metadata)),
        last_verified_at: k.last_verified_at.map(timestamp),
        created_at: Some(timestamp(k.created_at)),
        updated_at: Some(timestamp(k.updated_at)),
        revoked_at: k.revoked_at.map(timestamp),
    }
}

impl Integrations {
    /// The integration keys on `db`, sealed with `envelope`, verified through kit's outbound
    /// clients (`outbound`, and its SSRF guard for tenants' base URLs).
    pub(crate) fn new(
        db: Db,
        envelope: Envelope,
        settings: Arc<Settings>,
        outbound: &OutboundConfig,
    ) -> anyhow::Result<Integrations> {
        let guard = Guard::from_config(outbound)?;
        Ok(Integrations {
            db,
            envelope,
            verifier: Verifier::new(settings, outbound, guard)?,
        })
    }

    /// Validates a key's metadata for `p`: an object, with the fields `p` needs; netdata's
    /// `base_url` must pass the SSRF guard (as an app's `mcp_server_url` does: its name is
    /// resolved now, and every connection checks again).
    async fn check_metadata(&self, p: &Provider, m: Option<&prost_types::Struct>) -> Result<Value> {
        let mut v = m
            .map(from_struct)
            .unwrap_or_else(|| Value::Object(Default::default()));
        check_metadata(&v)?;
        for field in p.required {
            let ok = v[*field]
                .as_str()
                .is_some_and(|s| !s.trim().is_empty() && s.len() <= 2048);
            if !ok {
                return Err(Error::validation(format!(
                    "{} keys need metadata.{field} (a non-empty string)",
                    p.name
                )));
            }
        }
        if p.required.contains(&"base_url") {
            let field = "metadata.base_url";
            let url = check_url(field, v["base_url"].as_str().unwrap_or_default())?
                .ok_or_else(|| Error::validation(format!("{field} is empty")))?;
            self.verifier
                .guard()
                .check(&url)
                .await
                .map_err(|e| Error::validation(format!("{field}: {e}")))?;
            v["base_url"] = Value::String(url);
        }
        Ok(v)
    }

    /// `StoreIntegrationKey`.
    pub(crate) async fn store(
        &self,
        tenant: Uuid,
        r: pb::StoreIntegrationKeyRequest,
    ) -> Result<pb::IntegrationKey> {
        let p = providers::find(&r.provider).ok_or_else(|| {
            Error::validation(format!(
                "provider {} is not one of {}",
                quote(&r.provider),
                providers::names()
            ))
        })?;
        let key: SecretString = crate::service::check_secret("key", &r.key)?;
        let label = match r.label.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(l) => Some(check_name("label", l, 200)?),
        };
        let metadata = self.check_metadata(p, r.metadata.as_ref()).await?;
        drop(r);
        let hint = worktruck_kit::envelope::hint(key.expose_secret());
        let t = now();
        let id = Uuid::now_v7();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        store::lock(&mut tx, tenant, p.name).await?;
        let replaced = store::revoke_live(&mut tx, tenant, p.name, t).await?;
        let sealed = self
            .envelope
            .seal(
                &mut tx,
                tenant,
                &purpose(p.name),
                key.expose_secret().as_bytes(),
            )
            .await?;
        let new = store::NewKey {
            id,
            provider: p.name,
            sealed: &sealed,
            key_hint: &hint,
            label: label.as_deref(),
            metadata: &metadata,
        };
        let row = store::insert(&mut tx, tenant, &new, t).await?;
        tx.commit().await?;
        tracing::info!(
            provider = p.name,
            key.id = %id,
            replaced = ?replaced,
            "an integration key was stored"
        );
        Ok(render(&row))
    }

    /// `ListIntegrationKeys`.
    pub(crate) async fn list(&self, tenant: Uuid) -> Result<pb::ListIntegrationKeysResponse> {
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let data = store::list(&mut tx, tenant)
            .await?
            .iter()
            .map(render)
            .collect();
        Ok(pb::ListIntegrationKeysResponse {
            data,
            next_cursor: String::new(),
            has_more: false,
        })
    }

    /// `GetIntegrationKey`.
    pub(crate) async fn get(&self, tenant: Uuid, provider: &str) -> Result<pb::IntegrationKey> {
        let p = provider_of_path(provider)?;
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let row = store::live(&mut tx, tenant, p.name)
            .await?
            .ok_or_else(|| no_live_key(p))?;
        Ok(render(&row))
    }

    /// `VerifyIntegrationKey`: opens the live key, asks the provider (outside any transaction),
    /// then records the answer, unless the provider gave none.
    pub(crate) async fn verify(
        &self,
        tenant: Uuid,
        provider: &str,
    ) -> Result<pb::VerifyIntegrationKeyResponse> {
        let p = provider_of_path(provider)?;
        let (row, key) = {
            let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
            let row = store::live(&mut tx, tenant, p.name)
                .await?
                .ok_or_else(|| no_live_key(p))?;
            let key = self
                .open(&mut tx, tenant, &row)
                .await?
                .ok_or_else(|| no_live_key(p))?;
            (row, key)
        };
        let verdict = self.verifier.verify(p, &key, &row.metadata).await;
        drop(key);
        let status = match &verdict {
            Verdict::Valid => "active",
            Verdict::Refused(_) => "invalid",
            Verdict::Unavailable(why) => {
                tracing::info!(provider = p.name, key.id = %row.id, why, "an integration key could not be verified");
                return Ok(pb::VerifyIntegrationKeyResponse {
                    valid: false,
                    last_verified_at: None,
                    reason: Some("provider_unavailable".into()),
                });
            }
        };
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let updated = store::verified(&mut tx, tenant, row.id, status, t).await?;
        tx.commit().await?;
        if updated.is_none() {
            // Revoked (or replaced) while the provider was asked: nothing is recorded.
            return Err(no_live_key(p));
        }
        let reason = match &verdict {
            Verdict::Refused(why) => {
                tracing::info!(provider = p.name, key.id = %row.id, why, "an integration key was refused by its provider");
                Some("auth_failed".to_owned())
            }
            _ => None,
        };
        Ok(pb::VerifyIntegrationKeyResponse {
            valid: reason.is_none(),
            last_verified_at: Some(timestamp(t)),
            reason,
        })
    }

    /// `RevokeIntegrationKey`.
    pub(crate) async fn revoke(
        &self,
        tenant: Uuid,
        provider: &str,
    ) -> Result<pb::RevokeIntegrationKeyResponse> {
        let p = provider_of_path(provider)?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        store::lock(&mut tx, tenant, p.name).await?;
        let id = store::revoke_live(&mut tx, tenant, p.name, t)
            .await?
            .ok_or_else(|| no_live_key(p))?;
        tx.commit().await?;
        tracing::info!(provider = p.name, key.id = %id, "an integration key was revoked");
        Ok(pb::RevokeIntegrationKeyResponse {
            id: id.to_string(),
            message: "Key revoked".into(),
        })
    }

    /// `ListMyIntegrations`: integration keys and BYOK keys, newest first.
    pub(crate) async fn list_mine(&self, tenant: Uuid) -> Result<pb::ListMyIntegrationsResponse> {
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let keys = store::list(&mut tx, tenant).await?;
        let byok = crate::store::byok_keys(&mut tx, tenant).await?;
        let mut all: Vec<(chrono::DateTime<chrono::Utc>, pb::Integration)> = keys
            .into_iter()
            .map(|k| {
                let item = pb::Integration {
                    id: k.id.to_string(),
                    kind: KIND_KEY.into(),
                    display_name: k.label.clone().unwrap_or_else(|| k.provider.clone()),
                    provider: k.provider,
                    status: k.status,
                    created_at: Some(timestamp(k.created_at)),
                };
                (k.created_at, item)
            })
            .collect();
        all.extend(byok.into_iter().map(|(id, blueprint, status, created_at)| {
            let item = pb::Integration {
                id: id.to_string(),
                kind: KIND_BYOK.into(),
                provider: "anthropic".into(),
                display_name: blueprint,
                status,
                created_at: Some(timestamp(created_at)),
            };
            (created_at, item)
        }));
        all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.id.cmp(&a.1.id)));
        Ok(pb::ListMyIntegrationsResponse {
            data: all.into_iter().map(|(_, i)| i).collect(),
            next_cursor: String::new(),
            has_more: false,
        })
    }

    /// `RevokeMyIntegration`.
    pub(crate) async fn revoke_mine(
        &self,
        tenant: Uuid,
        r: &pb::RevokeMyIntegrationRequest,
    ) -> Result<pb::RevokeMyIntegrationResponse> {
        if r.kind != KIND_KEY && r.kind != KIND_BYOK {
            return Err(Error::validation(format!(
                "kind {} is not {KIND_KEY} or {KIND_BYOK}",
                quote(&r.kind)
            )));
        }
        let id = uuid(&r.id, "id")?;
        let t = now();
        let mut tx = self.db.begin(Scope::Tenant(tenant), true).await?;
        let done = if r.kind == KIND_KEY {
            store::revoke_id(&mut tx, tenant, id, t).await?
        } else {
            crate::store::byok_revoke(&mut tx, tenant, id, t).await?
        };
        if !done {
            return Err(Error::not_found(format!("no {} {id} to revoke", r.kind)));
        }
        tx.commit().await?;
        tracing::info!(kind = %r.kind, id = %id, "an integration was revoked");
        Ok(pb::RevokeMyIntegrationResponse {
            id: id.to_string(),
            kind: r.kind.clone(),
            status: "revoked".into(),
        })
    }

    /// Opens the sealed key of the live key `row`.
    async fn open(&self, tx: &mut Tx, tenant: Uuid, row: &KeyRow) -> Result<Option<SecretString>> {
        let Some(sealed) = store::sealed(tx, tenant, row.id).await? else {
            return Ok(None);
        };
        let plain = self
            .envelope
            .open(tx, tenant, &purpose(&row.provider), &sealed)
            .await?;
        let text = std::str::from_utf8(&plain)
            .map_err(|_| Error::internal("an integration key is not UTF-8"))?;
        Ok(Some(SecretString::from(text.to_owned())))
    }

    /// The tenant's `active` key of `provider` and its metadata, opened, for an agent run's
    /// tools (`site_health` reads cloudflare and netdata with them). `None` when the tenant has
    /// none, or only an `invalid` or revoked one.
    pub(crate) async fn active_key(
        &self,
        tenant: Uuid,
        provider: &str,
    ) -> Result<Option<(SecretString, Value)>> {
        let mut tx = self.db.begin(Scope::Tenant(tenant), false).await?;
        let Some(row) = store::live(&mut tx, tenant, provider).await? else {
            return Ok(None);
        };
        if row.status != "active" {
            return Ok(None);
        }
        Ok(self
            .open(&mut tx, tenant, &row)
            .await?
            .map(|k| (k, row.metadata)))
    }
}

/// The provider whose API tool is `name`, if it is one.
pub(crate) fn api_tool(name: &str) -> Option<&'static Provider> {
    providers::PROVIDERS
        .iter()
        .find(|p| p.tool.as_ref().is_some_and(|t| t.name == name))
}

/// The Messages API definition of the API tool `name`.
pub(crate) fn api_tool_definition(name: &str) -> Option<Value> {
    let tool = api_tool(name)?.tool.as_ref()?;
    Some(serde_json::json!({
        "name": tool.name,
        "description": tool.description,
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "The path to GET, starting with /"},
                "query": {"type": "object", "additionalProperties": {"type": "string"},
                          "description": "Query parameters"},
            },
            "required": ["path"],
            "additionalProperties": false,
        },
    }))
}

/// `arguments` of an API tool as a path and query: a path of `/`-separated segments of URL-safe
/// characters (no `..`, no `?` or `#`: the query goes in `query`), at most 1,024 bytes; at
/// most 50 query parameters, each a string.
fn api_request(arguments: &Value) -> Result<(String, Vec<(String, String)>)> {
    let path = arguments["path"].as_str().unwrap_or_default();
    let safe = |c: char| c.is_ascii_alphanumeric() || "/-._~:@,=+".contains(c);
    if !path.starts_with('/')
        || path.len() > 1024
        || !path.chars().all(safe)
        || path.split('/').any(|s| s == ".." || s == ".")
        || path.contains("//")
    {
        return Err(Error::invalid(
            "path must start with / and hold only URL-safe characters, without . or .. segments (put the query in query)",
        ));
    }
    let mut query = Vec::new();
    match &arguments["query"] {
        Value::Null => {}
        Value::Object(o) if o.len() <= 50 => {
            for (k, v) in o {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(Error::invalid(format!("query.{k} must be a string"))),
                };
                if k.len() > 256 || v.len() > 2048 {
                    return Err(Error::invalid(format!("query.{k} is too long")));
                }
                query.push((k.clone(), v));
            }
        }
        _ => return Err(Error::invalid("query must be an object of at most 50 strings")),
    }
    if arguments.as_object().is_some_and(|o| o.keys().any(|k| k != "path" && k != "query")) {
        return Err(Error::invalid("an API read takes only path and query"));
    }
    Ok((path.to_owned(), query))
}

impl Integrations {
    /// Runs the API tool `name` for `tenant` with `arguments`: a `GET` of the provider's API with
    /// the tenant's active key; `{status, body}` whatever the status (the model reads a 404),
    /// an error when the tenant has no active key or the provider cannot be reached.
    pub(crate) async fn api_get(&self, tenant: Uuid, name: &str, arguments: &Value) -> Result<Value> {
        let p = api_tool(name).ok_or_else(|| Error::invalid(format!("{} is not an API tool", quote(name))))?;
        let (path, query) = api_request(arguments)?;
        let Some((key, metadata)) = self.active_key(tenant, p.name).await? else {
            return Err(Error::new(ErrorCode::NotFound, format!(
                "the tenant has no active {} key: store one with POST /api/v1/integration-keys (and verify it)",
                p.name
            )));
        };
        self.verifier
            .api_get(p, &key, &metadata, &path, &query)
            .await
            .map_err(|why| Error::new(ErrorCode::Unavailable, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worktruck_kit::config::Config;
    use worktruck_kit::testing::{TestData, backends, test_secrets};

    fn request(provider: &str, key: &str, metadata: Value) -> pb::StoreIntegrationKeyRequest {
        pb::StoreIntegrationKeyRequest {
            provider: provider.into(),
            key: key.into(),
            label: None,
            metadata: Some(to_struct(&metadata)),
        }
    }

    #[tokio::test]
    async fn the_active_key_opens_for_its_tenant_and_provider_only() {
        for backend in backends() {
            let data = TestData::new(backend).await;
            let (pg, sqlite) = crate::migrators();
            let db = Db::connect_and_migrate(&data.db_options("agents"), pg, sqlite)
                .await
                .unwrap();
            let envelope = Envelope::new(&Config::default(), Some(&test_secrets())).unwrap();
            let settings = Arc::new(Settings::default());
            let keys =
                Integrations::new(db, envelope, settings, &OutboundConfig::default()).unwrap();
            let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
            assert!(keys.active_key(a, "github").await.unwrap().is_none());
            let meta = serde_json::json!({"account_id": "acc-1"});
            keys.store(a, request("cloudflare", "cf-first-key-0001", meta.clone()))
                .await
                .unwrap();
            keys.store(a, request("cloudflare", "cf-second-key-0002", meta.clone()))
                .await
                .unwrap();
            let (key, m) = keys.active_key(a, "cloudflare").await.unwrap().unwrap();
            assert_eq!(
                key.expose_secret(),
                "cf-second-key-0002",
                "{backend:?}: the replacement"
            );
            assert_eq!(m, meta);
            assert!(
                keys.active_key(b, "cloudflare").await.unwrap().is_none(),
                "another tenant's"
            );
            assert!(
                keys.active_key(a, "github").await.unwrap().is_none(),
                "another provider's"
            );
            keys.revoke(a, "cloudflare").await.unwrap();
            assert!(
                keys.active_key(a, "cloudflare").await.unwrap().is_none(),
                "revoked"
            );
            let listed = keys.list(a).await.unwrap().data;
            assert_eq!(listed.len(), 2);
            assert!(listed.iter().all(|k| k.status == "revoked"), "{listed:?}");
        }
    }
}
