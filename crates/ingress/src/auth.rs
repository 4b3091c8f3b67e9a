//! Client authentication: the API key in the `x-api-key` metadata entry,
//! hashed with SHA-256 and looked up in `clients.api_key_hash` (disabled
//! clients are refused). Hits are cached in memory for a short TTL so the hot
//! path does not touch the database; misses are never cached, so a key just
//! created with `loketctl` works at once. Every refusal looks the same.
//!
//! A call that outlives the TTL (a watch stream) keeps its [`Credential`] and
//! re-checks it every [`Authenticator::recheck_interval`], so a key disabled
//! (revoked after a leak) stops open streams as soon as it stops new calls.

use loket_runtime::db::BoundedPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::errors::ApiError;
use loket_store::api_key_hash;

pub const API_KEY_HEADER: &str = "x-api-key";

/// The most cached keys before the cache is emptied (bounds memory against
/// a flood of distinct valid keys; there are few clients).
const MAX_CACHED: usize = 10_000;

/// How often a long-lived call re-checks its key when the TTL is shorter
/// than this (a TTL of zero caches nothing, but a stream must not query the
/// database in a loop).
const MIN_RECHECK_INTERVAL: Duration = Duration::from_millis(100);

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId(pub Uuid);

/// The caller of a long-lived call and the key it presented (hashed, never
/// in clear), so the call can re-check the key while it runs
/// ([`Authenticator::recheck`]).
#[derive(Clone, Copy)]
pub struct Credential {
    pub client: ClientId,
    key_hash: [u8; 32],
}

pub struct Authenticator {
    db: BoundedPool,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (ClientId, Instant)>>,
}

impl Authenticator {
    pub fn new(db: BoundedPool, ttl: Duration) -> Self {
        Authenticator {
            db,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<ClientId, ApiError> {
        Ok(self.credential(metadata).await?.client)
    }

    /// [`Self::authenticate`], keeping the key for [`Self::recheck`]: for a
    /// call that outlives the cache TTL.
    pub async fn credential(&self, metadata: &MetadataMap) -> Result<Credential, ApiError> {
        let key = metadata
            .get(API_KEY_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|key| !key.is_empty() && key.len() <= 256)
            .ok_or(ApiError::Unauthenticated)?;
        let key_hash = api_key_hash(key);
        let client = match self.cached(&key_hash) {
            Some(client) => client,
            None => self.look_up(key_hash).await?,
        };
        Ok(Credential { client, key_hash })
    }

    /// Whether `credential`'s key still belongs to its client and that
    /// client is not disabled, read from the database rather than the cache:
    /// a long-lived call checking every [`Self::recheck_interval`] notices a
    /// disabled key within one TTL, as new calls do. `UNAUTHENTICATED` when
    /// not; a database failure is returned as such (the caller cannot tell
    /// whether the key still holds).
    pub async fn recheck(&self, credential: &Credential) -> Result<(), ApiError> {
        if self.look_up(credential.key_hash).await? == credential.client {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated)
        }
    }

    /// How often a long-lived call should [`Self::recheck`] its key: the
    /// cache's TTL, the longest a disabled key keeps working for new calls.
    pub fn recheck_interval(&self) -> Duration {
        self.ttl.max(MIN_RECHECK_INTERVAL)
    }

    /// The enabled client whose key hashes to `key_hash` (remembered for
    /// the TTL), else `UNAUTHENTICATED`.
    async fn look_up(&self, key_hash: [u8; 32]) -> Result<ClientId, ApiError> {
        let found: Option<Uuid> = self
            .db
            .run(async |connection| {
                sqlx::query_scalar(
                    "SELECT id FROM clients WHERE api_key_hash = $1 AND NOT disabled",
                )
                .bind(&key_hash[..])
                .fetch_optional(connection)
                .await
            })
            .await?;
        let client = ClientId(found.ok_or(ApiError::Unauthenticated)?);
        self.remember(key_hash, client);
        Ok(client)
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<ClientId> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .get(hash)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(client, _)| *client)
    }

    fn remember(&self, hash: [u8; 32], client: ClientId) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(hash, (client, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_or_empty_key_is_unauthenticated_without_touching_the_database() {
        // A lazy pool that would fail if used: proves no query is made.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(50))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let auth = Authenticator::new(
            BoundedPool::new(pool, Duration::from_secs(1)),
            Duration::from_secs(10),
        );
        let mut metadata = MetadataMap::new();
        assert!(matches!(
            auth.authenticate(&metadata).await,
            Err(ApiError::Unauthenticated)
        ));
        metadata.insert(API_KEY_HEADER, "   ".parse().unwrap());
        assert!(matches!(
            auth.authenticate(&metadata).await,
            Err(ApiError::Unauthenticated)
        ));
    }

    #[tokio::test]
    async fn cached_hits_expire_after_the_ttl() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let auth = Authenticator::new(
            BoundedPool::new(pool, Duration::from_secs(1)),
            Duration::from_millis(30),
        );
        let client = ClientId(Uuid::now_v7());
        auth.remember(api_key_hash("k"), client);
        assert_eq!(auth.cached(&api_key_hash("k")), Some(client));
        assert_eq!(auth.cached(&api_key_hash("other")), None);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(auth.cached(&api_key_hash("k")), None);
    }
}
