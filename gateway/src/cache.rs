//! Verified principals, kept for a bounded time so that a request does not cost a round trip to
//! the tenants service (and its database read, signature and verification) every time.
//!
//! Entries are keyed by a SHA-256 of what identified the caller (the presented API key, or an
//! OIDC issuer and subject), never by the secret itself. An entry lives at most `ttl` (config
//! `auth.principal_cache_seconds`) and never past the key's own expiry. Every change the
//! tenants service makes to a tenant (a key rotated or revoked, a plan changed) is an event on
//! the bus; [`PrincipalCache::follow`] drops that tenant's entries when it arrives, so every
//! replica sees a revocation within the bus's latency. When the bus may have lost events (its
//! connection dropped, an in-process receiver lagged) every entry is dropped once it is back;
//! while it is down, entries still expire after `ttl`. So the worst-case delay of a revocation
//! is the bus's latency with the bus up and `ttl` with it down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use worktruck_kit::bus::{Bus, Watched};

use crate::auth::Principal;

/// The most entries kept; when full, expired ones go, and if none has, all do.
const CAPACITY: usize = 100_000;

/// The subjects whose events change who a credential is: every tenants-service event.
pub const TENANT_EVENTS: &str = "worktruck.tenants.>";

#[derive(Clone)]
struct Entry {
    principal: Principal,
    tenant: Option<Uuid>,
    until: Instant,
    expires_at: Option<DateTime<Utc>>,
}

/// Verified principals by a hash of what identified them. Cheap to clone (one shared map).
#[derive(Clone)]
pub struct PrincipalCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<[u8; 32], Entry>>>,
}

impl PrincipalCache {
    /// A cache whose entries live at most `ttl`; a zero `ttl` keeps nothing.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Arc::default() }
    }

    /// The cache key for `parts` (e.g. `["api_key", key]` or `["oidc", issuer, subject]`).
    pub fn key(parts: &[&str]) -> [u8; 32] {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        h.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal kept under `key`, if it is still good.
    pub fn get(&self, key: &[u8; 32]) -> Option<Principal> {
        let entries = self.lock();
        let e = entries.get(key)?;
        let fresh = e.until > Instant::now() && e.expires_at.is_none_or(|x| x > Utc::now());
        fresh.then(|| e.principal.clone())
    }

    /// Keeps `principal` under `key` until `ttl` has passed or `expires_at`, whichever is first.
    pub fn insert(&self, key: [u8; 32], principal: &Principal, expires_at: Option<DateTime<Utc>>) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let entry = Entry { tenant: principal.ctx.tenant_id, principal: principal.clone(), until: now + self.ttl, expires_at };
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, entry);
    }

    /// Drops every entry of `tenant`.
    pub fn forget_tenant(&self, tenant: Uuid) {
        self.lock().retain(|_, e| e.tenant != Some(tenant));
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many entries are kept (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows the tenants service's events on `bus` until `shutdown`: each drops its tenant's
    /// entries; a gap (events possibly missed) drops them all.
    pub async fn follow(self, bus: Bus, shutdown: impl std::future::Future<Output = ()>) {
        let watched = bus.watch(TENANT_EVENTS);
        tokio::pin!(watched);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                next = watched.next() => match next {
                    Some(Watched::Event(m)) => self.forget_tenant(m.tenant_id),
                    Some(Watched::Gap) => {
                        tracing::info!("the bus may have missed events: dropping cached principals");
                        self.clear();
                    }
                    None => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worktruck_kit::context::Ctx;

    fn principal(tenant: Uuid) -> Principal {
        Principal { ctx: Ctx::tenant(tenant, "key:1", 365) }
    }

    #[test]
    fn entries_expire_and_are_dropped_per_tenant() {
        let cache = PrincipalCache::new(Duration::from_secs(60));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (ka, kb) = (PrincipalCache::key(&["api_key", "a"]), PrincipalCache::key(&["api_key", "b"]));
        cache.insert(ka, &principal(a), None);
        cache.insert(kb, &principal(b), None);
        assert_eq!(cache.get(&ka).unwrap().ctx.tenant_id, Some(a));
        cache.forget_tenant(a);
        assert!(cache.get(&ka).is_none());
        assert!(cache.get(&kb).is_some(), "another tenant's entry stays");
        // A key that has expired is never served, whatever the cache's own bound.
        let kc = PrincipalCache::key(&["api_key", "c"]);
        cache.insert(kc, &principal(b), Some(Utc::now() - chrono::Duration::seconds(1)));
        assert!(cache.get(&kc).is_none());
        // The parts are length-prefixed: ("ab","c") and ("a","bc") differ.
        assert_ne!(PrincipalCache::key(&["ab", "c"]), PrincipalCache::key(&["a", "bc"]));
        let none = PrincipalCache::new(Duration::ZERO);
        none.insert(ka, &principal(a), None);
        assert!(none.is_empty(), "a zero bound keeps nothing");
    }

    #[tokio::test]
    async fn bus_events_drop_their_tenant_and_a_lag_drops_all() {
        let bus = Bus::memory();
        let cache = PrincipalCache::new(Duration::from_secs(60));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(cache.clone().follow(bus.clone(), async move {
            let _ = stop_rx.await;
        }));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let (ka, kb) = (PrincipalCache::key(&["k", "a"]), PrincipalCache::key(&["k", "b"]));
        cache.insert(ka, &principal(a), None);
        cache.insert(kb, &principal(b), None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let event = |tenant: Uuid, subject: &str| worktruck_kit::bus::Message {
            event_id: Uuid::now_v7(),
            tenant_id: tenant,
            subject: subject.into(),
            payload: bytes::Bytes::new(),
            trace: Vec::new(),
        };
        bus.publish(&event(a, "worktruck.contacts.contact.created.v1")).await.unwrap();
        bus.publish(&event(a, "worktruck.tenants.api_key.revoked.v1")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.get(&ka).is_some() {
            assert!(Instant::now() < deadline, "the revocation reaches the cache");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cache.get(&kb).is_some());
        let _ = stop_tx.send(());
        task.await.unwrap();
    }
}
