//! The single writer of the routing snapshot.
//!
//! The [`Controller`] owns the backend registry (runtime state per pool and address)
//! and is the only code that stores into the shared `ArcSwap<Snapshot>`. Every change
//! of routing goes through [`Controller::apply`], which builds a complete new snapshot
//! off the request path and swaps it in atomically; requests already running keep the
//! snapshot (and backends) they started with.
//!
//! A backend that leaves the config *retires*: requests and streams still using it
//! run on, and only when `[listen].stream_close_delay` has passed are whatever
//! streams remain closed (and counted) by [`Controller::close_retired`]. If the same
//! (pool, address) comes back before that, it gets its old state back.
//!
//! Being one owned value with `&mut self` methods is what makes it the single writer.
//! It is driven by the controller task ([`task`]), which receives every change (file
//! reload, admin API, TTL expiry) on one channel.

pub mod task;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::backend::BackendState;
use crate::config::spec::{PoolName, Spec};
use crate::snapshot::Snapshot;

/// Shared handle to the current snapshot: requests `load()` it, the controller stores.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Builds and publishes snapshots; keeps backend state across them.
#[derive(Debug)]
pub struct Controller {
    shared: SharedSnapshot,
    registry: Registry,
    retiring: HashMap<Key, Retiring>,
    /// Streams closed because their backend was removed (ever).
    streams_closed: u64,
    /// Snapshots published so far (the first one is 1).
    generation: u64,
}

/// A removed backend whose remaining streams close at `at`.
#[derive(Debug)]
struct Retiring {
    state: Arc<BackendState>,
    at: Instant,
}

impl Controller {
    /// Builds the first snapshot from `spec`.
    pub fn new(spec: Spec) -> Controller {
        let (snapshot, registry) = rebuild(&mut HashMap::new(), &mut HashMap::new(), spec);
        Controller {
            shared: Arc::new(ArcSwap::from_pointee(snapshot)),
            registry,
            retiring: HashMap::new(),
            streams_closed: 0,
            generation: 1,
        }
    }

    /// The handle the data plane reads.
    pub fn shared(&self) -> SharedSnapshot {
        Arc::clone(&self.shared)
    }

    /// Publishes a snapshot for `spec`. Backends present before keep their state
    /// (in-flight counts, latency, health, pooled connections); removed ones retire
    /// (see the module doc) and live on in requests still using them.
    pub fn apply(&mut self, spec: Spec) {
        let delay = spec.listen.stream_close_delay;
        let mut old = std::mem::take(&mut self.registry);
        let (snapshot, registry) = rebuild(&mut old, &mut self.retiring, spec);
        self.registry = registry;
        let at = Instant::now() + delay;
        for (key, state) in old {
            state.conns().clear_idle();
            if state.inflight() > 0 {
                tracing::info!(
                    pool = %key.0, backend = %key.1, inflight = state.inflight(), ?delay,
                    "backend removed: its remaining streams close after stream_close_delay"
                );
            }
            self.retiring.insert(key, Retiring { state, at });
        }
        self.generation += 1;
        self.shared.store(Arc::new(snapshot));
    }

    /// Runtime state of a backend in the current snapshot.
    pub fn backend_state(&self, pool: &PoolName, addr: SocketAddr) -> Option<&Arc<BackendState>> {
        self.registry.get(&(pool.clone(), addr))
    }

    /// When the next retired backend's streams are due to close.
    pub fn next_retirement(&self) -> Option<Instant> {
        self.retiring.values().map(|r| r.at).min()
    }

    /// Closes the streams of retired backends whose delay ran out by `now`;
    /// returns how many streams that closed.
    pub fn close_retired(&mut self, now: Instant) -> u64 {
        let mut closed = 0;
        self.retiring.retain(|(pool, addr), r| {
            if r.at > now {
                return true;
            }
            let n = u64::from(r.state.inflight());
            if n > 0 {
                tracing::warn!(%pool, backend = %addr, streams = n, "closing streams of a removed backend: stream_close_delay ran out");
            }
            r.state.close_streams();
            closed += n;
            false
        });
        self.streams_closed += closed;
        closed
    }

    /// Streams closed because their backend was removed, since start.
    pub fn streams_closed(&self) -> u64 {
        self.streams_closed
    }

    /// How many snapshots were published (1 after [`new`](Self::new)).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

type Key = (PoolName, SocketAddr);
type Registry = HashMap<Key, Arc<BackendState>>;

/// Builds a snapshot reusing state from `old` (taking it out) or from `retiring`
/// (bringing it back) where (pool, address) matches, and returns the registry of
/// exactly the backends the new snapshot holds. What stays in `old` was removed.
/// Each backend's `draining` flag is set from the spec.
fn rebuild(
    old: &mut Registry,
    retiring: &mut HashMap<Key, Retiring>,
    spec: Spec,
) -> (Snapshot, Registry) {
    let mut next = Registry::with_capacity(old.len());
    let snapshot = Snapshot::build(Arc::new(spec), |pool, b| {
        let key = (pool.clone(), b.addr);
        let state = old
            .remove(&key)
            .or_else(|| retiring.remove(&key).map(|r| r.state))
            .unwrap_or_else(|| Arc::new(BackendState::new(b.addr)));
        state.set_draining(b.draining);
        next.insert(key, Arc::clone(&state));
        state
    });
    (snapshot, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_POOLS: &str = r#"
[listen]
http = "127.0.0.1:0"
[[pools]]
name = "a"
backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002" }]
[[pools]]
name = "b"
backends = [{ addr = "127.0.0.1:9003" }]
[[routes]]
name = "r"
split = [{ pool = "a", weight = 1 }, { pool = "b", weight = 0 }]
"#;

    fn state_of(c: &Controller, pool: &str, addr: &str) -> Arc<BackendState> {
        let snap = c.shared().load_full();
        let p = snap
            .pools()
            .iter()
            .find(|p| p.name.as_str() == pool)
            .unwrap();
        let b = p.backends().find(|b| b.addr.to_string() == addr).unwrap();
        Arc::clone(&b.state)
    }

    #[test]
    fn backend_state_survives_a_rebuild() {
        let mut c = Controller::new(crate::config::parse(TWO_POOLS).unwrap());
        let before = state_of(&c, "a", "127.0.0.1:9001");
        let _inflight = before.start_request();
        let changed = TWO_POOLS.replace("weight = 0", "weight = 5");
        c.apply(crate::config::parse(&changed).unwrap());
        let after = state_of(&c, "a", "127.0.0.1:9001");
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!(after.inflight(), 1);
        let snap = c.shared().load_full();
        assert_eq!(snap.routes()[0].split.entries()[1].weight, 5);
    }

    #[test]
    fn removed_backend_retires_and_comes_back_with_its_state() {
        let mut c = Controller::new(crate::config::parse(TWO_POOLS).unwrap());
        let before = state_of(&c, "a", "127.0.0.1:9002");
        let fewer = TWO_POOLS.replace(", { addr = \"127.0.0.1:9002\" }", "");
        c.apply(crate::config::parse(&fewer).unwrap());
        assert_eq!(c.registry.len(), 2);
        assert!(c.next_retirement().is_some());
        c.apply(crate::config::parse(TWO_POOLS).unwrap());
        assert!(Arc::ptr_eq(&before, &state_of(&c, "a", "127.0.0.1:9002")));
        assert_eq!(c.next_retirement(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_of_a_removed_backend_close_after_the_delay() {
        let text = TWO_POOLS.replace("[listen]\n", "[listen]\nstream_close_delay = \"5m\"\n");
        let mut c = Controller::new(crate::config::parse(&text).unwrap());
        let state = state_of(&c, "b", "127.0.0.1:9003");
        let _stream = state.start_request();
        let no_b = text
            .replace(
                "[[pools]]\nname = \"b\"\nbackends = [{ addr = \"127.0.0.1:9003\" }]\n",
                "",
            )
            .replace(", { pool = \"b\", weight = 0 }", "");
        c.apply(crate::config::parse(&no_b).unwrap());
        // A later reload does not touch it either.
        c.apply(crate::config::parse(&no_b).unwrap());
        let due = c.next_retirement().expect("retiring");
        assert_eq!(c.close_retired(due - std::time::Duration::from_secs(1)), 0);
        assert!(!state.closed().is_cancelled());
        tokio::time::advance(std::time::Duration::from_secs(300)).await;
        assert_eq!(c.close_retired(Instant::now()), 1);
        assert!(state.closed().is_cancelled());
        assert_eq!(c.streams_closed(), 1);
        assert_eq!(c.next_retirement(), None);
    }

    #[test]
    fn draining_flag_follows_the_spec() {
        let mut c = Controller::new(crate::config::parse(TWO_POOLS).unwrap());
        let mut spec = crate::config::parse(TWO_POOLS).unwrap();
        spec.pools[0].backends[0].draining = true;
        c.apply(spec);
        let s = state_of(&c, "a", "127.0.0.1:9001");
        assert!(s.is_draining() && !s.is_eligible());
        c.apply(crate::config::parse(TWO_POOLS).unwrap());
        assert!(!s.is_draining());
    }
}
