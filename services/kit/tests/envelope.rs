//! Envelope encryption (kit::envelope) on SQLite and PostgreSQL: a sealed secret opens for its
//! tenant and purpose only, the database holds no plaintext, and rotating the master key
//! re-wraps the data keys without touching what they sealed.

use base64::Engine;
use sqlx::migrate::Migrator;
use uuid::Uuid;
use worktruck_kit::config::{Config, Secrets};
use worktruck_kit::db::{Db, Scope};
use worktruck_kit::envelope::{DEFAULT_KEY_ID, Envelope};
use worktruck_kit::on_tx;
use worktruck_kit::testing::{TestData, backends};

const PLAINTEXT: &[u8] = b"sk-ant-api03-the-tenants-own-key-0123456789";

async fn open_db(data: &TestData) -> Db {
    Db::connect_and_migrate(&data.db_options("kit_envelope"), Migrator::with_migrations(vec![]), Migrator::with_migrations(vec![]))
        .await
        .unwrap()
}

fn with_keys(keys: &[(&str, [u8; 32])], active: &str) -> Config {
    let mut cfg = Config::default();
    for (id, key) in keys {
        cfg.encryption
            .master_keys
            .insert((*id).to_owned(), base64::engine::general_purpose::STANDARD.encode(key).into());
    }
    cfg.encryption.active_key = active.to_owned();
    cfg.validate().unwrap();
    cfg
}

async fn seal(env: &Envelope, db: &Db, tenant: Uuid, purpose: &str) -> Vec<u8> {
    let mut tx = db.begin(Scope::Tenant(tenant), true).await.unwrap();
    let sealed = env.seal(&mut tx, tenant, purpose, PLAINTEXT).await.unwrap();
    tx.commit().await.unwrap();
    sealed
}

async fn open(env: &Envelope, db: &Db, tenant: Uuid, purpose: &str, sealed: &[u8]) -> worktruck_kit::Result<Vec<u8>> {
    let mut tx = db.begin(Scope::Tenant(tenant), false).await.unwrap();
    env.open(&mut tx, tenant, purpose, sealed).await.map(|p| p.to_vec())
}

/// Every byte of the data key table, as one buffer to search.
async fn data_key_bytes(db: &Db) -> Vec<u8> {
    let mut tx = db.begin(Scope::System, false).await.unwrap();
    let rows: Vec<(String, Vec<u8>)> =
        on_tx!(&mut tx, x => sqlx::query_as("SELECT master_key_id, wrapped FROM data_keys").fetch_all(x).await).unwrap();
    rows.into_iter().flat_map(|(id, w)| [id.into_bytes(), w].concat()).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_sealed_secret_opens_for_its_tenant_and_purpose_only() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let db = open_db(&data).await;
        let secrets = Secrets::from_bytes(vec![9; 32]);
        let env = Envelope::new(&Config::default(), Some(&secrets)).unwrap();
        assert_eq!(env.active_key(), DEFAULT_KEY_ID);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());

        let sealed = seal(&env, &db, a, "agents.byok").await;
        assert!(!contains(&sealed, PLAINTEXT), "{backend:?}: the sealed value holds the plaintext");
        assert_eq!(open(&env, &db, a, "agents.byok", &sealed).await.unwrap(), PLAINTEXT, "{backend:?}");
        // Two seals of one secret differ (fresh nonces) and both open.
        let again = seal(&env, &db, a, "agents.byok").await;
        assert_ne!(sealed, again);
        assert_eq!(open(&env, &db, a, "agents.byok", &again).await.unwrap(), PLAINTEXT);

        // Another purpose, another tenant, a flipped bit: none opens, and none echoes the secret.
        let wrong_purpose = open(&env, &db, a, "apps.credential", &sealed).await.unwrap_err();
        assert!(!wrong_purpose.message.contains("sk-ant"), "{wrong_purpose:?}");
        seal(&env, &db, b, "agents.byok").await;
        assert!(open(&env, &db, b, "agents.byok", &sealed).await.is_err(), "{backend:?}: tenant b opened tenant a's secret");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(open(&env, &db, a, "agents.byok", &altered).await.is_err());
        assert!(open(&env, &db, a, "agents.byok", &sealed[..10]).await.is_err(), "a truncated value is refused");

        // A process with another master secret cannot open it.
        let other = Envelope::new(&Config::default(), Some(&Secrets::from_bytes(vec![8; 32]))).unwrap();
        assert!(open(&other, &db, a, "agents.byok", &sealed).await.is_err());

        // The table holds one wrapped key per tenant, and no plaintext.
        let table = data_key_bytes(&db).await;
        assert!(!contains(&table, PLAINTEXT));
        let mut tx = db.begin(Scope::System, false).await.unwrap();
        let n: i64 = on_tx!(&mut tx, x => sqlx::query_scalar("SELECT count(*) FROM data_keys").fetch_one(x).await).unwrap();
        assert_eq!(n, 2, "{backend:?}");
    }
}

#[tokio::test]
async fn rotating_the_master_key_rewraps_data_keys_and_leaves_sealed_values_alone() {
    for backend in backends() {
        let data = TestData::new(backend).await;
        let db = open_db(&data).await;
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let first = Envelope::new(&with_keys(&[("k1", k1)], "k1"), None).unwrap();
        let tenants = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        let mut sealed = Vec::new();
        for t in tenants {
            sealed.push(seal(&first, &db, t, "apps.credential").await);
        }

        // The new key is active, the old one still configured: rotate.
        let both = Envelope::new(&with_keys(&[("k1", k1), ("k2", k2)], "k2"), None).unwrap();
        let done = both.rotate(&db).await.unwrap();
        assert_eq!((done.rewrapped, done.current), (3, 0), "{backend:?}");
        assert_eq!(both.rotate(&db).await.unwrap().current, 3, "a second rotation has nothing to do");

        // Only the new key is needed now, and every old sealed value still opens.
        let second = Envelope::new(&with_keys(&[("k2", k2)], "k2"), None).unwrap();
        for (t, s) in tenants.iter().zip(&sealed) {
            assert_eq!(open(&second, &db, *t, "apps.credential", s).await.unwrap(), PLAINTEXT, "{backend:?}");
        }
        // And the old key alone no longer does; the caller learns nothing more than that.
        let old = Envelope::new(&with_keys(&[("k1", k1)], "k1"), None).unwrap();
        let err = open(&old, &db, tenants[0], "apps.credential", &sealed[0]).await.unwrap_err();
        assert_eq!(err.code, worktruck_kit::ErrorCode::Internal, "{err:?}");

        // The operator's rotation names what is wrong: a key missing, a key with other bytes.
        let wrong = Envelope::new(&with_keys(&[("k2", [3u8; 32]), ("k4", [4u8; 32])], "k4"), None).unwrap();
        let err = wrong.rotate(&db).await.unwrap_err().to_string();
        assert!(err.contains("does not open under master key \"k2\""), "{err}");
        let partial = Envelope::new(&with_keys(&[("k3", [4u8; 32])], "k3"), None).unwrap();
        let err = partial.rotate(&db).await.unwrap_err().to_string();
        assert!(err.contains("\"k2\", which this process was not given"), "{err}");
        // A failed rotation changed nothing (one transaction).
        assert_eq!(open(&second, &db, tenants[2], "apps.credential", &sealed[2]).await.unwrap(), PLAINTEXT);
    }
}

#[test]
fn configuration_is_checked() {
    let mut cfg = Config::default();
    cfg.encryption.master_keys.insert("Bad Id".into(), "x".to_owned().into());
    assert!(cfg.validate().unwrap_err().0.contains("must match"));
    let mut cfg = Config::default();
    cfg.encryption.master_keys.insert("k1".into(), "bm90IDMyIGJ5dGVz".to_owned().into());
    assert!(cfg.validate().unwrap_err().0.contains("32 bytes"));
    let mut cfg = Config::default();
    cfg.encryption.active_key = "nope".into();
    assert!(cfg.validate().unwrap_err().0.contains("not among"));
}
