//! The live event stream's hub: typed events of what changed, numbered, with a
//! bounded history.
//!
//! The controller task is the only producer of routing events (it diffs what it
//! published, see [`diff`]), and forwards health transitions and discovery's
//! connection state; nothing on the request path emits. Each event gets the next
//! sequence number, goes into a ring of the last [`HISTORY`] events and onto a
//! `broadcast` channel of [`BUFFER`] events per subscriber. A subscriber that falls
//! more than that behind gets a final `dropped` event and its stream ends (see
//! [`Subscription`]): a slow reader never holds up the producer.
//! `GET /api/v1/events` serves this as Server-Sent Events.

pub(crate) mod diff;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events kept for resuming with `Last-Event-ID`.
pub(crate) const HISTORY: usize = 1024;
/// Events a subscriber may fall behind before it is dropped.
pub(crate) const BUFFER: usize = 256;

/// One numbered event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// 1, 2, 3, … in the order the events happened (the SSE `id:`).
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Who made a routing change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    /// A reload of the config file.
    File,
    /// An admin API write.
    Api,
    /// The rollout manager.
    Rollout,
    /// Docker discovery.
    Discovery,
    /// A registered backend's TTL ran out.
    Ttl,
}

/// What happened; `type` in the JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A route's effective split changed.
    SplitChanged {
        route: String,
        split: Vec<PoolWeight>,
        by: By,
    },
    BackendAdded {
        pool: String,
        addr: SocketAddr,
        by: By,
    },
    BackendRemoved {
        pool: String,
        addr: SocketAddr,
        by: By,
    },
    /// Drained (`draining: true`) or put back.
    BackendDraining {
        pool: String,
        addr: SocketAddr,
        draining: bool,
        by: By,
    },
    /// The active probe moved the backend between statuses.
    BackendHealth {
        pool: String,
        addr: SocketAddr,
        from: &'static str,
        to: &'static str,
    },
    /// Outlier detection ejected the backend (the `level`-th time in a row).
    BackendEjected {
        pool: String,
        addr: SocketAddr,
        level: u32,
    },
    /// An ejected backend served a request on probation: back in rotation.
    BackendRecovered { pool: String, addr: SocketAddr },
    /// A valid config file was applied.
    ReloadApplied { generation: u64 },
    /// The config file changed but was invalid: nothing changed.
    ReloadRefused { errors: String },
    /// A rollout put a new step in force.
    RolloutStepStarted {
        rollout: String,
        route: String,
        step: usize,
        weight: u32,
    },
    /// A step's gate passed.
    RolloutStepPassed(StepFigures),
    /// A step's gate failed.
    RolloutStepFailed(StepFigures),
    /// A rollout ended or paused (`phase`: paused, succeeded, rolled_back, aborted).
    RolloutPhase {
        rollout: String,
        route: String,
        phase: &'static str,
    },
    /// Docker discovery lost its connection.
    DiscoveryLost { error: Option<String> },
    /// Docker discovery listed containers again.
    DiscoveryRegained,
}

/// A pool's share in a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolWeight {
    pub pool: String,
    pub weight: u32,
}

/// A judged rollout step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepFigures {
    pub rollout: String,
    pub route: String,
    pub step: usize,
    pub weight: u32,
    pub requests: u64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
    pub note: Option<String>,
}

/// The sending side and history; cheap to clone.
#[derive(Clone, Debug)]
pub struct EventHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Held while an event is numbered, stored and sent, and while a subscriber
    /// takes the history and its receiver, so the two never miss or repeat one.
    history: Mutex<History>,
    tx: broadcast::Sender<Arc<Event>>,
}

#[derive(Debug, Default)]
struct History {
    last_seq: u64,
    ring: VecDeque<Arc<Event>>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    /// An empty hub.
    pub fn new() -> EventHub {
        let (tx, _) = broadcast::channel(BUFFER);
        EventHub {
            inner: Arc::new(Inner {
                history: Mutex::new(History::default()),
                tx,
            }),
        }
    }

    /// Numbers `kind`, keeps it and sends it to every subscriber.
    pub fn emit(&self, kind: EventKind) {
        let mut history = lock(&self.inner.history);
        history.last_seq += 1;
        let event = Arc::new(Event {
            seq: history.last_seq,
            at_ms: now_ms(),
            kind,
        });
        if history.ring.len() == HISTORY {
            history.ring.pop_front();
        }
        history.ring.push_back(Arc::clone(&event));
        // No subscriber is not an error.
        let _ = self.inner.tx.send(event);
    }

    /// The sequence number of the last event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        lock(&self.inner.history).last_seq
    }

    /// A subscription from now on, or resuming after `after` (a `Last-Event-ID`):
    /// the kept events after it come first. Resuming from before the history
    /// yields a `dropped` event at once, then the stream as usual.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let history = lock(&self.inner.history);
        let rx = self.inner.tx.subscribe();
        let mut backlog = VecDeque::new();
        let mut gap = None;
        if let Some(after) = after.filter(|&a| a < history.last_seq) {
            let oldest = history.ring.front().map_or(history.last_seq + 1, |e| e.seq);
            if after + 1 < oldest {
                gap = Some(oldest - after - 1);
            }
            backlog.extend(history.ring.iter().filter(|e| e.seq > after).cloned());
        }
        Subscription {
            backlog,
            gap,
            rx,
            done: false,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock(m: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    // A panic while holding it cannot leave the ring inconsistent (push and pop only).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One subscriber's events.
#[derive(Debug)]
pub struct Subscription {
    backlog: VecDeque<Arc<Event>>,
    /// Events missed before the backlog (resumed from before the history).
    gap: Option<u64>,
    rx: broadcast::Receiver<Arc<Event>>,
    done: bool,
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    Event(Arc<Event>),
    /// Resumed from before the history: this many were missed; the stream goes on.
    Gap(u64),
    /// Fell behind by this many: the stream ends after this.
    Dropped(u64),
}

impl Subscription {
    /// The next event; `None` once dropped or when the hub is gone.
    pub async fn next(&mut self) -> Option<Next> {
        if self.done {
            return None;
        }
        if let Some(missed) = self.gap.take() {
            return Some(Next::Gap(missed));
        }
        let last_backlog = self.backlog.back().map(|e| e.seq);
        if let Some(event) = self.backlog.pop_front() {
            return Some(Next::Event(event));
        }
        loop {
            match self.rx.recv().await {
                // Already sent from the backlog.
                Ok(event) if last_backlog.is_some_and(|s| event.seq <= s) => continue,
                Ok(event) => return Some(Next::Event(event)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.done = true;
                    return Some(Next::Dropped(missed));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

/// An event as a Server-Sent Events message (`id:`, `event:` and `data:` lines).
pub(crate) fn sse_message(event: &Event) -> String {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    let kind = serde_json::to_value(&event.kind)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    format!("id: {}\nevent: {kind}\ndata: {data}\n\n", event.seq)
}

/// Sent first to a subscriber that resumed from before the history: `missed`
/// events are gone (read the state again); the stream goes on.
pub(crate) fn sse_gap(missed: u64) -> String {
    let data = serde_json::json!({ "type": "gap", "missed": missed, "at_ms": now_ms() });
    format!("event: gap\ndata: {data}\n\n")
}

/// The final message of a dropped subscriber (no `id:`: it is not in the history).
pub(crate) fn sse_dropped(missed: u64) -> String {
    let data = serde_json::json!({
        "type": "dropped",
        "missed": missed,
        "at_ms": now_ms(),
    });
    format!("event: dropped\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests;
