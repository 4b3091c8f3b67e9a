//! The B2B access-token cache (spec §2.1). A token is fetched on demand,
//! reused until `expiresIn − margin`, and refreshed when a call answers
//! `401xx01`/`401xx03`. Concurrent callers share ONE fetch: the fetch runs
//! under a `tokio::sync::Mutex`, and whoever waited re-checks the cache
//! before fetching again. Every token carries a generation number, so a
//! caller reporting a rejected token only invalidates the token it used —
//! twenty calls rejected with the same stale token cause one refresh.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// A token handed to a caller. `Debug` hides the value.
#[derive(Clone)]
pub struct AccessToken {
    pub value: String,
    pub generation: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// What a fetch returns: the token and its lifetime.
#[derive(Clone)]
pub struct FetchedToken {
    pub value: String,
    pub expires_in: Duration,
}

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

pub struct TokenCache {
    state: Mutex<(Option<Cached>, u64)>,
    margin: Duration,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    /// `margin`: refresh this long before the token expires (a lifetime
    /// shorter than twice the margin is refreshed at half its life).
    pub fn new(margin: Duration) -> Self {
        TokenCache {
            state: Mutex::new((None, 0)),
            margin,
        }
    }

    /// The cached token, or a fresh one from `fetch` (called by one caller
    /// at a time; the others wait and take its result).
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<AccessToken, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FetchedToken, E>>,
    {
        let mut state = self.state.lock().await;
        if let Some(cached) = &state.0 {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        let fetched = fetch().await?;
        let lifetime = fetched.expires_in;
        // Nothing here may panic, whatever the lifetime and the margin: a
        // panic would be every command task's (saturating, checked).
        let usable = if lifetime > self.margin.saturating_mul(2) {
            lifetime - self.margin
        } else {
            lifetime / 2
        };
        let now = Instant::now();
        state.1 += 1;
        let token = AccessToken {
            value: fetched.value,
            generation: state.1,
        };
        state.0 = Some(Cached {
            token: token.clone(),
            // A lifetime past the clock's range is not believed: the token
            // serves this caller, and the next one fetches another.
            refresh_at: now.checked_add(usable).unwrap_or(now),
        });
        Ok(token)
    }

    /// The provider rejected `token`: drop it unless a newer one is cached
    /// already (then the next [`get`](Self::get) returns the newer one).
    pub async fn invalidate(&self, token: &AccessToken) {
        let mut state = self.state.lock().await;
        if state
            .0
            .as_ref()
            .is_some_and(|cached| cached.token.generation == token.generation)
        {
            state.0 = None;
        }
    }

    /// Tokens fetched so far.
    pub async fn generation(&self) -> u64 {
        self.state.lock().await.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    async fn fetch(counter: Arc<AtomicUsize>, ttl: Duration) -> Result<FetchedToken, ()> {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(FetchedToken {
            value: format!("token-{n}"),
            expires_in: ttl,
        })
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(60)));
        let counter = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let cache = cache.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| fetch(counter, Duration::from_secs(900)))
                    .await
                    .unwrap()
                    .value
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "token-0");
        }
        assert_eq!(counter.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_rejected_token_is_refreshed_once_for_all_its_users() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let counter = Arc::new(AtomicUsize::new(0));
        let ttl = Duration::from_secs(900);
        let first = cache.get(|| fetch(counter.clone(), ttl)).await.unwrap();
        // Two callers saw 401 with the same token.
        cache.invalidate(&first).await;
        let second = cache.get(|| fetch(counter.clone(), ttl)).await.unwrap();
        cache.invalidate(&first).await;
        let third = cache.get(|| fetch(counter.clone(), ttl)).await.unwrap();
        assert_eq!(second.value, "token-1");
        assert_eq!(third.value, "token-1");
        assert_eq!(counter.load(Ordering::SeqCst), 2);
    }

    /// A lifetime or a margin too long to add to the clock is not a panic
    /// (it was one in every command task): the token is handed out.
    #[tokio::test]
    async fn a_lifetime_past_the_clock_s_range_does_not_panic() {
        for (margin, ttl) in [
            (Duration::from_secs(60), Duration::MAX),
            (Duration::from_secs(60), Duration::from_secs(u64::MAX)),
            (Duration::MAX, Duration::from_secs(900)),
            (Duration::MAX, Duration::MAX),
        ] {
            let cache = TokenCache::new(margin);
            let counter = Arc::new(AtomicUsize::new(0));
            let token = cache.get(|| fetch(counter.clone(), ttl)).await.unwrap();
            assert_eq!(token.value, "token-0", "{margin:?} {ttl:?}");
        }
    }

    #[tokio::test]
    async fn refreshes_before_expiry() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let counter = Arc::new(AtomicUsize::new(0));
        // 100 ms lifetime: refreshed at half its life.
        let ttl = Duration::from_millis(100);
        cache.get(|| fetch(counter.clone(), ttl)).await.unwrap();
        cache.get(|| fetch(counter.clone(), ttl)).await.unwrap();
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let token = cache.get(|| fetch(counter.clone(), ttl)).await.unwrap();
        assert_eq!(token.value, "token-1");
    }
}
