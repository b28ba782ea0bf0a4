//! Envelope encryption: the one mechanism for every secret a service keeps (BYOK keys,
//! integration keys, app credentials).
//!
//! Each tenant has a data key per service database (`data_keys`, created on first use, in the
//! transaction of the first seal), kept wrapped under a master key from config
//! (`[encryption]`, see [`crate::config::EncryptionConfig`]). A secret is sealed with
//! AES-256-GCM under its tenant's data key, with the tenant and a caller-chosen `purpose`
//! bound as associated data, so a sealed value copied to another tenant's row or to another
//! field does not open. Rotating the master key re-wraps the data keys only
//! ([`Envelope::rotate`], `worktruck admin rotate-master-key`); no sealed value is touched.
//!
//! Sealed value: `0x01` (format), data-key version (u32, big-endian), 12-byte nonce, then the
//! ciphertext with its 16-byte tag. Wrapped data key: 12-byte nonce, then the sealed key.

use std::collections::BTreeMap;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use secrecy::ExposeSecret;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::{Config, ConfigError, Secrets, decode_key32};
use crate::db::{Db, Scope, Tx};
use crate::error::{Error, Result};
use crate::{exec, on_tx};

/// The id of the master key derived from the master secret, used when `[encryption]` names
/// none.
pub const DEFAULT_KEY_ID: &str = "default";

/// What the master secret derives the default master key for.
const DEFAULT_KEY_PURPOSE: &str = "worktruck/envelope/master-key/v1";

/// The format byte of a sealed value.
const FORMAT: u8 = 1;

/// The data-key version new data keys get.
const DATA_KEY_VERSION: i32 = 1;

const NONCE: usize = 12;
const HEADER: usize = 1 + 4 + NONCE;

/// Seals and opens secrets; cheap to clone.
#[derive(Clone)]
pub struct Envelope {
    keys: Arc<MasterKeys>,
}

struct MasterKeys {
    by_id: BTreeMap<String, Zeroizing<[u8; 32]>>,
    active: String,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope").field("active_key", &self.keys.active).finish_non_exhaustive()
    }
}

/// What [`Envelope::rotate`] did to one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Data keys re-wrapped under the active master key.
    pub rewrapped: u64,
    /// Data keys that already were.
    pub current: u64,
}

impl Envelope {
    /// The master keys of `cfg` (`[encryption]`), plus `default` when `secrets` is given. An
    /// error when the active key is not among them.
    pub fn new(cfg: &Config, secrets: Option<&Secrets>) -> std::result::Result<Envelope, ConfigError> {
        let mut by_id = BTreeMap::new();
        if let Some(s) = secrets {
            by_id.insert(DEFAULT_KEY_ID.to_owned(), Zeroizing::new(s.derive(DEFAULT_KEY_PURPOSE)));
        }
        for (id, key) in &cfg.encryption.master_keys {
            let key = decode_key32(key.expose_secret(), &format!("encryption.master_keys.{id}"))?;
            by_id.insert(id.clone(), Zeroizing::new(key));
        }
        let active = match cfg.encryption.active_key.as_str() {
            "" => DEFAULT_KEY_ID.to_owned(),
            id => id.to_owned(),
        };
        if !by_id.contains_key(&active) {
            return Err(ConfigError(if active == DEFAULT_KEY_ID {
                "sealing secrets needs a master key: set WORKTRUCK_SECRET_KEY (the default key derives from it) or encryption.active_key with encryption.master_keys".to_owned()
            } else {
                format!("encryption.active_key: {active:?} is not among encryption.master_keys")
            }));
        }
        Ok(Envelope { keys: Arc::new(MasterKeys { by_id, active }) })
    }

    /// The id of the master key new data keys are wrapped under.
    pub fn active_key(&self) -> &str {
        &self.keys.active
    }

    /// Seals `plaintext` under `tenant`'s data key (created in `tx` on first use), binding
    /// `purpose` (say `apps.credential`): [`Envelope::open`] must be given the same one.
    pub async fn seal(&self, tx: &mut Tx, tenant: Uuid, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let (version, key) = self.data_key(tx, tenant, true).await?;
        let key = key.expect("created when absent");
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key[..]));
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = value_aad(tenant, purpose);
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: &aad })
            .map_err(|_| Error::internal("sealing a secret failed"))?;
        let mut out = Vec::with_capacity(HEADER + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&(version as u32).to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Envelope::seal`] sealed for `tenant` and `purpose`. A value sealed for
    /// another tenant or purpose, or altered, is an internal error (never its content).
    pub async fn open(&self, tx: &mut Tx, tenant: Uuid, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < HEADER + 16 || sealed[0] != FORMAT {
            return Err(Error::internal("a stored secret is not in the sealed format"));
        }
        let version = u32::from_be_bytes(sealed[1..5].try_into().expect("4 bytes")) as i32;
        let key = self
            .stored_key(tx, tenant, version)
            .await?
            .ok_or_else(|| Error::internal(format!("a stored secret names data key version {version}, which this database lacks")))?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key[..]));
        let aad = value_aad(tenant, purpose);
        cipher
            .decrypt(Nonce::from_slice(&sealed[5..HEADER]), Payload { msg: &sealed[HEADER..], aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| Error::internal("a stored secret does not open under its tenant's data key (altered, or sealed for another row)"))
    }

    /// Re-wraps every data key of `db` that is not under the active master key, in one
    /// transaction: all or none. Sealed values are not touched. The error, for the operator,
    /// names a data key wrapped under a master key this process was not given or that does not
    /// open it.
    pub async fn rotate(&self, db: &Db) -> anyhow::Result<Rotation> {
        let mut tx = db.begin(Scope::System, true).await?;
        let rows: Vec<(Uuid, i32, String, Vec<u8>)> = on_tx!(&mut tx, x => sqlx::query_as(
            "SELECT tenant_id, version, master_key_id, wrapped FROM data_keys ORDER BY tenant_id, version")
            .fetch_all(x).await)?;
        let mut done = Rotation { rewrapped: 0, current: 0 };
        for (tenant, version, master, wrapped) in rows {
            if master == self.keys.active {
                done.current += 1;
                continue;
            }
            let key = self.unwrap(tenant, version, &master, &wrapped).map_err(anyhow::Error::msg)?;
            let rewrapped = self.wrap(tenant, version, &self.keys.active, &key).map_err(anyhow::Error::msg)?;
            exec!(&mut tx, sqlx::query(
                "UPDATE data_keys SET master_key_id = $3, wrapped = $4, rewrapped_at = $5 WHERE tenant_id = $1 AND version = $2")
                .bind(tenant).bind(version).bind(&self.keys.active).bind(rewrapped).bind(crate::db::now()))?;
            done.rewrapped += 1;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// The tenant's current data key: its version and, when it exists (or `create`), the key.
    async fn data_key(&self, tx: &mut Tx, tenant: Uuid, create: bool) -> Result<(i32, Option<Zeroizing<[u8; 32]>>)> {
        if let Some(key) = self.stored_key(tx, tenant, DATA_KEY_VERSION).await? {
            return Ok((DATA_KEY_VERSION, Some(key)));
        }
        if !create {
            return Ok((DATA_KEY_VERSION, None));
        }
        let fresh = Zeroizing::new(<[u8; 32]>::from(Aes256Gcm::generate_key(&mut OsRng)));
        let wrapped = self.wrap(tenant, DATA_KEY_VERSION, &self.keys.active, &fresh).map_err(Error::internal)?;
        exec!(tx, sqlx::query(
            "INSERT INTO data_keys (tenant_id, version, master_key_id, wrapped, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, version) DO NOTHING")
            .bind(tenant).bind(DATA_KEY_VERSION).bind(&self.keys.active).bind(wrapped).bind(crate::db::now()))?;
        // A concurrent first seal may have won: use whichever row is there now.
        let key = self.stored_key(tx, tenant, DATA_KEY_VERSION).await?;
        Ok((DATA_KEY_VERSION, key))
    }

    async fn stored_key(&self, tx: &mut Tx, tenant: Uuid, version: i32) -> Result<Option<Zeroizing<[u8; 32]>>> {
        let row: Option<(String, Vec<u8>)> = on_tx!(tx, x => sqlx::query_as(
            "SELECT master_key_id, wrapped FROM data_keys WHERE tenant_id = $1 AND version = $2")
            .bind(tenant).bind(version).fetch_optional(x).await)?;
        row.map(|(master, wrapped)| self.unwrap(tenant, version, &master, &wrapped).map_err(Error::internal)).transpose()
    }

    /// Wraps a data key; the error is for operators (logs, the rotate command), not callers.
    fn wrap(&self, tenant: Uuid, version: i32, master: &str, key: &[u8; 32]) -> std::result::Result<Vec<u8>, String> {
        let cipher = self.master(master)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = key_aad(tenant, version);
        let sealed =
            cipher.encrypt(&nonce, Payload { msg: key, aad: &aad }).map_err(|_| "wrapping a data key failed".to_owned())?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Unwraps a data key; the error is for operators, as [`Envelope::wrap`]'s.
    fn unwrap(&self, tenant: Uuid, version: i32, master: &str, wrapped: &[u8]) -> std::result::Result<Zeroizing<[u8; 32]>, String> {
        let cipher = self.master(master)?;
        if wrapped.len() != NONCE + 32 + 16 {
            return Err(format!("the data key of tenant {tenant} (version {version}) has the wrong length"));
        }
        let aad = key_aad(tenant, version);
        let plain = Zeroizing::new(
            cipher.decrypt(Nonce::from_slice(&wrapped[..NONCE]), Payload { msg: &wrapped[NONCE..], aad: &aad }).map_err(|_| {
                format!(
                    "the data key of tenant {tenant} does not open under master key {master:?}: the key configured under that id is not the one it was wrapped with"
                )
            })?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain);
        Ok(key)
    }

    fn master(&self, id: &str) -> std::result::Result<Aes256Gcm, String> {
        let key = self.keys.by_id.get(id).ok_or_else(|| {
            format!("a data key is wrapped under master key {id:?}, which this process was not given (encryption.master_keys)")
        })?;
        Ok(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key[..])))
    }
}

fn value_aad(tenant: Uuid, purpose: &str) -> Vec<u8> {
    [b"worktruck/envelope/value/v1\0".as_slice(), tenant.as_bytes(), b"\0", purpose.as_bytes()].concat()
}

fn key_aad(tenant: Uuid, version: i32) -> Vec<u8> {
    [b"worktruck/envelope/data-key/v1\0".as_slice(), tenant.as_bytes(), &version.to_be_bytes()].concat()
}

/// A masked hint of a secret for listings: its last four characters (`…a1b2`), or `…` alone
/// for a secret shorter than 12 characters, where four would give too much away.
pub fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_show_at_most_four_characters() {
        assert_eq!(hint("sk-ant-api03-abcdefgh1234"), "…1234");
        assert_eq!(hint("short"), "…");
        assert_eq!(hint("ééééééééééé€€€€"), "…€€€€", "characters, not bytes");
    }

    #[test]
    fn the_active_key_must_exist() {
        let mut cfg = Config::default();
        assert!(Envelope::new(&cfg, None).is_err(), "no master secret and no keys");
        let s = Secrets::from_bytes(vec![7; 32]);
        assert_eq!(Envelope::new(&cfg, Some(&s)).unwrap().active_key(), DEFAULT_KEY_ID);
        cfg.encryption.active_key = "k2".into();
        assert!(Envelope::new(&cfg, Some(&s)).is_err());
    }
}
