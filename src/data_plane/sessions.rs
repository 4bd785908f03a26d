//! Learned sessions: the pool (version) where the agent created a session.
//!
//! A route with `sticky = { learn_header = "mcp-session-id" }` sends a request
//! that carries the header to the pool its value pins it to: a deterministic
//! function of the value and the split (`split::pin`), the same on every replica,
//! so replicas agree without sharing anything. This table is only a cache for one
//! case that function cannot know: a session the *agent* named in its answer to a
//! request that carried none (MCP's `initialize`) was created on the pool that
//! answered, which the function may not pick. The replica that saw the answer
//! remembers it and keeps the session there while that pool has weight; other
//! replicas cannot know it (docs/cluster.md says so, and that clients choosing
//! their own session id, or a sticky cookie, agree everywhere).
//!
//! The [`SessionTable`] is shared state on the request path, so it is the one
//! place that takes a lock there — and only for routes that configure
//! `learn_header`; every other route never touches it. The lock is one of 64
//! shard mutexes (by the id's hash), held for a hash-map lookup or insert, never
//! across an `.await`. Ids are hashed with the fixed hash the pinning function uses
//! (the table stores the 64-bit hash, not the id); the shard is chosen from that
//! hash mixed with a per-table random salt, so a client cannot aim its ids at one
//! shard. It is bounded by `max_sessions`: a full shard first drops sessions idle
//! longer than `idle`, then the least recently seen eighth of itself.
//!
//! Tables outlive snapshots: the controller keeps one per route and reuses it while
//! the route's `learn_header` settings stay the same.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::control_plane::config::spec::{LearnSpec, PoolName};
use crate::data_plane::split::pin::{mix, stable_hash};

/// Number of shards (a power of two).
const SHARDS: usize = 64;

/// A session id, hashed with the fixed hash every replica uses (`split::pin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey(pub(crate) u64);

/// Sessions of one route and the pools they are pinned to.
#[derive(Debug)]
pub struct SessionTable {
    settings: LearnSpec,
    /// Mixed into the shard index (see the module doc).
    salt: u64,
    born: Instant,
    /// Entries per shard before eviction.
    shard_cap: usize,
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<SessionKey, Entry>,
}

#[derive(Debug)]
struct Entry {
    pool: PoolName,
    /// Milliseconds since the table was created, when the session was last seen.
    seen: u64,
}

impl SessionTable {
    /// An empty table for `settings`.
    pub fn new(settings: &LearnSpec) -> Self {
        SessionTable {
            settings: settings.clone(),
            salt: RandomState::new().hash_one(0u8),
            born: Instant::now(),
            shard_cap: settings.max_sessions.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The settings the table was made for (the controller reuses a table only
    /// while they stay the same).
    pub fn settings(&self) -> &LearnSpec {
        &self.settings
    }

    /// The key of the session a request or response names in the learned header.
    #[inline]
    pub fn key_of(&self, headers: &HeaderMap) -> Option<SessionKey> {
        let value = self.value_of(headers)?;
        Some(SessionKey(stable_hash(value.as_bytes())))
    }

    /// The learned header's value in `headers`, if any.
    #[inline]
    pub fn value_of<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        headers.get(&self.settings.header)
    }

    /// The pool `key` is pinned to, if it is known and was seen within `idle`
    /// (this counts as seeing it again).
    pub fn lookup(&self, key: SessionKey) -> Option<PoolName> {
        let now = self.now_ms();
        let idle = self.idle_ms();
        let mut shard = self.shard(key);
        let entry = shard.map.get_mut(&key)?;
        if now.saturating_sub(entry.seen) > idle {
            shard.map.remove(&key);
            return None;
        }
        entry.seen = now;
        Some(entry.pool.clone())
    }

    /// Pins `key` to `pool` (replacing any earlier pin).
    pub fn remember(&self, key: SessionKey, pool: &PoolName) {
        let now = self.now_ms();
        let mut shard = self.shard(key);
        if shard.map.len() >= self.shard_cap && !shard.map.contains_key(&key) {
            self.make_room(&mut shard, now);
        }
        shard.map.insert(
            key,
            Entry {
                pool: pool.clone(),
                seen: now,
            },
        );
    }

    /// Forgets `key` (its pool lost its weight; the key decides from now on).
    pub fn forget(&self, key: SessionKey) {
        self.shard(key).map.remove(&key);
    }

    /// Sessions remembered now (idle ones not yet evicted included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops idle sessions; if none were, the least recently seen eighth.
    fn make_room(&self, shard: &mut Shard, now: u64) {
        let idle = self.idle_ms();
        shard.map.retain(|_, e| now.saturating_sub(e.seen) <= idle);
        if shard.map.len() < self.shard_cap {
            return;
        }
        let mut seen: Vec<u64> = shard.map.values().map(|e| e.seen).collect();
        let cut = (seen.len() / 8).max(1);
        let (_, oldest_kept, _) = seen.select_nth_unstable(cut - 1);
        let cutoff = *oldest_kept;
        let mut budget = cut;
        shard.map.retain(|_, e| {
            if budget > 0 && e.seen <= cutoff {
                budget -= 1;
                false
            } else {
                true
            }
        });
    }

    fn shard(&self, key: SessionKey) -> MutexGuard<'_, Shard> {
        // The top bits pick the shard; the map hashes the whole key again.
        let i = (mix(key.0 ^ self.salt) >> (64 - SHARDS.trailing_zeros())) as usize;
        lock(&self.shards[i % SHARDS])
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn idle_ms(&self) -> u64 {
        u64::try_from(self.settings.idle.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A shard's lock; a panic while it was held cannot leave a map half-updated in a
/// way that matters (the worst is a lost pin), so poisoning is ignored.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Default `sticky.idle`.
pub(crate) const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
/// Default `sticky.max_sessions`.
pub(crate) const DEFAULT_MAX_SESSIONS: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use std::sync::Arc;

    fn table(idle: Duration, max: usize) -> SessionTable {
        SessionTable::new(&LearnSpec {
            header: HeaderName::from_static("mcp-session-id"),
            idle,
            max_sessions: max,
            prefix: false,
        })
    }

    fn key(t: &SessionTable, id: &str) -> SessionKey {
        let mut h = HeaderMap::new();
        h.insert("mcp-session-id", HeaderValue::from_str(id).unwrap());
        t.key_of(&h).unwrap()
    }

    fn pool(name: &str) -> PoolName {
        PoolName(Arc::from(name))
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_stays_pinned_until_it_is_idle_too_long() {
        let t = table(Duration::from_secs(60), 100);
        assert_eq!(t.key_of(&HeaderMap::new()), None);
        let a = key(&t, "a");
        assert_eq!(t.lookup(a), None);
        t.remember(a, &pool("green"));
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(t.lookup(a), Some(pool("green")));
        // Seen again at 50 s: still known at 100 s.
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(t.lookup(a), Some(pool("green")));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.lookup(a), None);
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_evicts_the_least_recently_seen_and_stays_bounded() {
        let max = 6_400;
        let t = table(Duration::from_secs(3600), max);
        let first = key(&t, "session-0");
        t.remember(first, &pool("blue"));
        tokio::time::advance(Duration::from_millis(1)).await;
        for i in 1..(3 * max) {
            if i % 1000 == 0 {
                tokio::time::advance(Duration::from_millis(1)).await;
            }
            t.remember(key(&t, &format!("session-{i}")), &pool("blue"));
        }
        assert!(t.len() <= max, "{} sessions kept, max {max}", t.len());
        assert!(t.len() >= max / 2, "evicted too much: {}", t.len());
        assert_eq!(t.lookup(first), None, "the oldest session went first");
        let last = key(&t, &format!("session-{}", 3 * max - 1));
        assert_eq!(t.lookup(last), Some(pool("blue")));
    }

    #[test]
    fn ids_hash_the_same_in_every_table_but_shard_by_a_salt() {
        let (a, b) = (
            table(DEFAULT_IDLE, DEFAULT_MAX_SESSIONS),
            table(DEFAULT_IDLE, 10),
        );
        assert_eq!(key(&a, "x"), key(&b, "x"), "replicas must agree on keys");
        assert_ne!(key(&a, "x"), key(&a, "y"));
        // Different salts (equal ones are a 2^-64 event).
        assert_ne!(a.salt, b.salt);
    }
}
