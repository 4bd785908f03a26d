//! A [`ClusterStore`] in memory, for tests: several gateways (or controller
//! tasks) in one process share one, and a test can make it unreachable, count
//! its writes, or put any value in it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{ClusterStore, StoreError, Stored};

/// A shared in-memory store; clones share the value.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    value: Mutex<Stored>,
    down: AtomicBool,
    writes: AtomicU64,
    /// Writes to refuse with a conflict before accepting again (a race).
    conflicts: AtomicU64,
}

impl Default for Stored {
    fn default() -> Stored {
        Stored {
            version: 1,
            value: None,
        }
    }
}

impl MemoryStore {
    /// An empty store at version 1.
    pub(crate) fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes every read and write fail as unreachable (`true`) or work again.
    pub(crate) fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// Successful writes so far.
    pub(crate) fn writes(&self) -> u64 {
        self.inner.writes.load(Ordering::SeqCst)
    }

    /// Sets the value directly (another writer, an operator, a foreign tool);
    /// returns the new version.
    pub(crate) fn put(&self, value: Option<String>) -> u64 {
        let mut stored = self.lock();
        stored.version += 1;
        stored.value = value;
        stored.version
    }

    /// The value and version now.
    pub(crate) fn get(&self) -> Stored {
        self.lock().clone()
    }

    /// Refuses the next `n` writes with a conflict, as if another replica had
    /// written just before each (the version moves, the value stays).
    pub(crate) fn conflict_next(&self, n: u64) {
        self.inner.conflicts.store(n, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        // A test that panicked while holding it poisoned nothing we cannot read.
        self.inner
            .value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.inner.down.load(Ordering::SeqCst) {
            Err(StoreError::Unreachable("memory store is down".to_owned()))
        } else {
            Ok(())
        }
    }
}

impl ClusterStore for MemoryStore {
    fn read(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
        let result = self.check_up().map(|()| self.get());
        async move { result }.boxed()
    }

    fn write(&self, version: u64, value: String) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let result = self.check_up().and_then(|()| {
            let mut stored = self.lock();
            let raced = self
                .inner
                .conflicts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if raced {
                stored.version += 1;
            }
            if stored.version != version {
                return Err(StoreError::Conflict { expected: version });
            }
            stored.version += 1;
            stored.value = Some(value);
            self.inner.writes.fetch_add(1, Ordering::SeqCst);
            Ok(Some(stored.version))
        });
        async move { result }.boxed()
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
