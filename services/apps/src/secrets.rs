//! App secrets at rest: sealed with kit's envelope encryption under the tenant's data key, the
//! purpose (`apps:auth:<app id>`) bound as associated data, so a sealed value copied onto
//! another app's row does not open.

use uuid::Uuid;
use worktruck_kit::db::Tx;
use worktruck_kit::error::ErrorCode;
use worktruck_kit::service::ServiceContext;
use worktruck_kit::{Error, Result};

/// Seals and opens app secrets.
#[derive(Clone)]
pub struct Sealer {
    _private: (),
}

/// The purpose an app's secret is sealed for.
fn purpose(app: Uuid) -> String {
    format!("apps:auth:{app}")
}

impl Sealer {
    /// The sealer of this process.
    pub fn new(_ctx: &ServiceContext) -> anyhow::Result<Sealer> {
        Ok(Sealer { _private: () })
    }

    /// Seals `secret` for `app`.
    pub async fn seal(
        &self,
        _tx: &mut Tx,
        _tenant: Uuid,
        app: Uuid,
        _secret: &str,
    ) -> Result<Vec<u8>> {
        let _ = purpose(app);
        Err(Error::new(
            ErrorCode::Unavailable,
            "app secrets cannot be stored yet: this build lacks kit's envelope encryption",
        ))
    }

    /// Opens the sealed secret of `app`.
    pub async fn open(
        &self,
        _tx: &mut Tx,
        _tenant: Uuid,
        app: Uuid,
        _sealed: &[u8],
    ) -> Result<String> {
        let _ = purpose(app);
        Err(Error::new(
            ErrorCode::Unavailable,
            "app secrets cannot be read yet: this build lacks kit's envelope encryption",
        ))
    }
}
