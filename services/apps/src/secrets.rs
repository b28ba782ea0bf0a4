//! App secrets at rest: sealed with kit's envelope encryption under the tenant's data key, the
//! purpose `apps.auth:<app id>` bound as associated data, so a sealed value copied onto another
//! app's row (or another tenant's) does not open.

use uuid::Uuid;
use worktruck_kit::db::Tx;
use worktruck_kit::envelope::Envelope;
use worktruck_kit::service::ServiceContext;
use worktruck_kit::{Error, Result};
use zeroize::Zeroizing;

/// Seals and opens app secrets.
#[derive(Clone)]
pub struct Sealer {
    envelope: Envelope,
}

/// The purpose an app's secret is sealed for.
fn purpose(app: Uuid) -> String {
    format!("apps.auth:{app}")
}

impl Sealer {
    /// The sealer of this process (its master keys from `[encryption]` or the master secret).
    pub fn new(ctx: &ServiceContext) -> anyhow::Result<Sealer> {
        Ok(Sealer {
            envelope: ctx.envelope()?,
        })
    }

    /// Seals `secret` for `app`.
    pub async fn seal(
        &self,
        tx: &mut Tx,
        tenant: Uuid,
        app: Uuid,
        secret: &str,
    ) -> Result<Vec<u8>> {
        self.envelope
            .seal(tx, tenant, &purpose(app), secret.as_bytes())
            .await
    }

    /// Opens the sealed secret of `app`.
    pub async fn open(
        &self,
        tx: &mut Tx,
        tenant: Uuid,
        app: Uuid,
        sealed: &[u8],
    ) -> Result<Zeroizing<String>> {
        let plain = self
            .envelope
            .open(tx, tenant, &purpose(app), sealed)
            .await?;
        let text = std::str::from_utf8(&plain)
            .map_err(|_| Error::internal("an app secret is not UTF-8"))?;
        Ok(Zeroizing::new(text.to_owned()))
    }
}
