//! Whether the principal a run or a schedule acts as may still act. A run keeps its enqueuer's
//! context, and a schedule its writer's, without expiry; an API key revoked, expired or deleted
//! since then must not go on acting through them. So before each attempt of a run and before a
//! schedule's tick enqueues, the key is looked up with the tenants service (one unary call).
//! Other principals (OIDC subjects, wallets) have no revocation to look up: their runs stand.

use tonic::transport::Channel;
use worktruck_kit::context::{Ctx, Signer};
use worktruck_kit::upstream::Upstreams;
use worktruck_kit::{Error, ErrorCode};
use worktruck_proto::tenants::v1 as tpb;
use worktruck_proto::tenants::v1::tenants_service_client::TenantsServiceClient;

/// The tenants service, which keeps API keys.
const TENANTS: &str = "worktruck.tenants.v1.TenantsService";

/// Looks principals up with the tenants service.
#[derive(Clone)]
pub(crate) struct Principals {
    tenants: Option<TenantsServiceClient<Channel>>,
    signer: Signer,
}

impl Principals {
    pub(crate) fn new(upstreams: &Upstreams, signer: Signer) -> Self {
        let tenants = upstreams.get(TENANTS).cloned().map(TenantsServiceClient::new);
        if tenants.is_none() {
            tracing::warn!("the tenants service is not reachable: revoked API keys' runs and schedules are not stopped");
        }
        Self { tenants, signer }
    }

    /// Why `ctx`'s principal may no longer act, if it may not; `Err` when that cannot be told
    /// now (the tenants service failed), for the caller to try again later.
    pub(crate) async fn refusal(&self, ctx: &Ctx, request_id: &str) -> Result<Option<String>, Error> {
        let (Some(id), Some(tenant), Some(tenants)) = (ctx.actor.strip_prefix("key:"), ctx.tenant_id, &self.tenants) else {
            return Ok(None);
        };
        let mut request = tonic::Request::new(tpb::GetApiKeyRequest { id: id.to_owned() });
        self.signer.attach(&Ctx::tenant(tenant, "system:agent-worker", 0), request.metadata_mut());
        worktruck_kit::telemetry::inject(request.metadata_mut());
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(request_id) {
            request.metadata_mut().insert("x-request-id", v);
        }
        let key = match tenants.clone().get_api_key(request).await {
            Ok(key) => key.into_inner(),
            Err(status) => {
                let e = Error::from_status(&status);
                return match e.code {
                    ErrorCode::NotFound => Ok(Some(format!("the API key {id} it acts as no longer exists"))),
                    _ => Err(e),
                };
            }
        };
        Ok(refusal_of(&key, id, chrono::Utc::now().timestamp()))
    }
}

/// Why `key` may no longer act at `now` (unix seconds), if it may not.
fn refusal_of(key: &tpb::ApiKey, id: &str, now: i64) -> Option<String> {
    if key.revoked_at.is_some() {
        return Some(format!("the API key {id} it acts as was revoked"));
    }
    match &key.expires_at {
        Some(exp) if exp.seconds <= now => Some(format!("the API key {id} it acts as has expired")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_or_expired_key_may_not_act() {
        let at = |s: i64| Some(prost_types::Timestamp { seconds: s, nanos: 0 });
        let live = tpb::ApiKey { expires_at: at(2_000), ..Default::default() };
        assert_eq!(refusal_of(&live, "k", 1_000), None);
        assert!(refusal_of(&live, "k", 2_000).unwrap().contains("expired"));
        let revoked = tpb::ApiKey { revoked_at: at(500), ..Default::default() };
        assert!(refusal_of(&revoked, "k", 1_000).unwrap().contains("revoked"));
        assert_eq!(refusal_of(&tpb::ApiKey::default(), "k", 1_000), None);
    }
}
