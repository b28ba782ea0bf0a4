//! Blob storage, for what is not a row (uploaded files): through `object_store`, the local
//! filesystem under the data dir by default (`<data_dir>/blobs/<service>/`), any
//! S3-compatible store when `[blobs] store = "s3"`, or memory (tests only: nothing survives
//! the process). Rows name blobs by key; a service writes the blob before the row that names
//! it, so a crash leaves at worst an orphan blob, never a row without its bytes.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};

/// Which store (`[blobs] store`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Files under `<data_dir>/blobs/<service>/`.
    #[default]
    Local,
    /// An S3-compatible bucket (`[blobs.s3]`).
    S3,
    /// In memory, per process (tests).
    Memory,
}

/// `[blobs]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobsConfig {
    /// `local` (default), `s3` or `memory`.
    pub store: StoreKind,
    /// The bucket, for `s3`.
    pub s3: S3Config,
}

/// `[blobs.s3]`: an S3-compatible bucket. Keys are `<service>/<key>` inside it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The endpoint of a store that is not AWS (MinIO, Garage, …); empty for AWS.
    pub endpoint: String,
    /// The region (`us-east-1` when empty).
    pub region: String,
    /// Access key id; empty to take credentials from the environment (`AWS_…`).
    pub access_key_id: String,
    /// Secret access key.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<SecretString>,
    /// Allow an `http://` endpoint (a store on the cluster's own network).
    pub allow_http: bool,
}

/// One service's blobs.
#[derive(Debug, Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %e, "blob store");
    Error::new(ErrorCode::Unavailable, "the file store is unavailable; retry later")
}

impl Blobs {
    /// The blobs of `service`, as `cfg` says.
    pub fn from_config(cfg: &crate::config::Config, service: &str) -> anyhow::Result<Blobs> {
        let blobs = &cfg.blobs;
        Ok(match blobs.store {
            StoreKind::Local => {
                let dir = cfg.data_dir.join("blobs").join(service);
                std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("blobs: cannot create {}: {e}", dir.display()))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| anyhow::anyhow!("blobs: {}: {e}", dir.display()))?;
                Blobs { store: Arc::new(store), prefix: String::new() }
            }
            StoreKind::S3 => {
                let s3 = &blobs.s3;
                anyhow::ensure!(!s3.bucket.is_empty(), "blobs.s3.bucket must be set when blobs.store is s3");
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(if s3.region.is_empty() { "us-east-1" } else { s3.region.as_str() })
                    .with_allow_http(s3.allow_http);
                if !s3.endpoint.is_empty() {
                    b = b.with_endpoint(&s3.endpoint);
                }
                if !s3.access_key_id.is_empty() {
                    b = b.with_access_key_id(&s3.access_key_id);
                }
                if let Some(secret) = &s3.secret_access_key {
                    b = b.with_secret_access_key(secret.expose_secret());
                }
                let store = b.build().map_err(|e| anyhow::anyhow!("blobs.s3: {e}"))?;
                Blobs { store: Arc::new(store), prefix: format!("{service}/") }
            }
            StoreKind::Memory => Blobs::memory(),
        })
    }

    /// A store in memory.
    pub fn memory() -> Blobs {
        Blobs { store: Arc::new(object_store::memory::InMemory::new()), prefix: String::new() }
    }

    fn path(&self, key: &str) -> Result<Path> {
        Path::parse(format!("{}{key}", self.prefix)).map_err(|e| Error::internal(format!("blob key {key:?}: {e}")))
    }

    /// Stores `bytes` under `key` (replacing what was there).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.store.put(&self.path(key)?, PutPayload::from_bytes(bytes)).await.map_err(unavailable)?;
        Ok(())
    }

    /// The bytes under `key`; `not_found` when there are none.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        match self.store.get(&self.path(key)?).await {
            Ok(r) => r.bytes().await.map_err(unavailable),
            Err(object_store::Error::NotFound { .. }) => Err(Error::not_found("file")),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Removes `key` (nothing there is fine).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn round_trip(b: &Blobs) {
        b.put("t/a", Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(b.get("t/a").await.unwrap(), Bytes::from_static(b"hello"));
        b.delete("t/a").await.unwrap();
        assert_eq!(b.get("t/a").await.unwrap_err().code, ErrorCode::NotFound);
        b.delete("t/a").await.unwrap();
    }

    #[tokio::test]
    async fn local_and_memory_stores_behave_alike() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        round_trip(&Blobs::from_config(&cfg, "notes").unwrap()).await;
        assert!(dir.path().join("blobs/notes").is_dir());
        round_trip(&Blobs::memory()).await;
    }
}
