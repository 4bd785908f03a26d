//! Docker events → re-list hints and immediate drains.
//!
//! An event never changes the set by itself except for one thing: a stop-like
//! event (`kill` with a terminating signal, `stop`, `die`, `pause`) of a container
//! that is a backend marks it draining in the published set and sends a
//! [`DrainHint`] at once. Everything else only asks the session for a re-list.

use std::sync::Arc;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use tokio::sync::mpsc;

use super::Worker;
use crate::control_plane::discovery::labels::is_candidate;
use crate::control_plane::discovery::DrainHint;

/// Event actions that matter; `health_status` matches `health_status: healthy` etc.
pub(super) const ACTIONS: &[&str] = &[
    "start",
    "restart",
    "die",
    "stop",
    "kill",
    "pause",
    "unpause",
    "destroy",
    "health_status",
    "rename",
    "connect",
    "disconnect",
];
/// `kill` signals that do not end the process (reload, log rotation, …).
const GENTLE_SIGNALS: &[&str] = &["1", "10", "12", "17", "18", "23", "28"];

impl Worker {
    /// Reacts to one event; returns whether it calls for a re-list.
    pub(super) fn on_event(&mut self, event: EventMessage) -> bool {
        let action = event.action.as_deref().unwrap_or("");
        let action = action.split(':').next().unwrap_or("").trim();
        // `docker_events_total{action}`: Docker's own vocabulary keeps the label bounded.
        self.options
            .metrics
            .count_docker_event(if ACTIONS.contains(&action) {
                action
            } else {
                "other"
            });
        let actor = event.actor.unwrap_or_default();
        let id = actor.id.unwrap_or_default();
        let attributes = actor.attributes.unwrap_or_default();
        match event.typ {
            Some(EventMessageTypeEnum::CONTAINER) => {}
            // A container joined or left a network: its usable IP may have changed.
            Some(EventMessageTypeEnum::NETWORK) => return true,
            _ => return false,
        }
        let known = {
            let set = self.sets.borrow();
            set.by_container(&id).is_some() || set.skipped.iter().any(|s| *s.container_id == *id)
        };
        if !known && !is_candidate(&attributes, &self.spec.label_prefix) {
            return false;
        }
        match action {
            "kill" if attributes.get("signal").is_some_and(|s| gentle_signal(s)) => {}
            "kill" | "stop" | "die" | "pause" => self.drain(&id, action),
            "start" | "restart" | "unpause" => {
                self.draining.remove(&id);
            }
            _ => {}
        }
        true
    }

    /// Marks container `id` draining in the published set and sends a hint.
    fn drain(&mut self, id: &str, action: &str) {
        let started = self.started.get(id).cloned().unwrap_or_default();
        self.draining.insert(id.to_owned(), started);
        let mut hint = None;
        self.sets.send_if_modified(|set| {
            let Some(b) = set.pools.iter_mut().find_map(|(pool, bs)| {
                Some((pool, bs.iter_mut().find(|b| &*b.container_id == id)?))
            }) else {
                return false;
            };
            let (pool, backend) = b;
            let first = !backend.draining;
            backend.draining = true;
            hint = first.then(|| DrainHint {
                pool: pool.clone(),
                addr: backend.addr,
                container_id: Arc::clone(&backend.container_id),
                container_name: Arc::clone(&backend.container_name),
                action: Arc::from(action),
            });
            first
        });
        let Some(hint) = hint else { return };
        tracing::info!(container = %hint.container_name, pool = %hint.pool, addr = %hint.addr, action, "docker discovery: draining");
        match self.drains.try_send(hint) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(hint)) => tracing::warn!(
                container = %hint.container_name,
                "docker discovery: drain hint queue full; the set still marks it draining"
            ),
        }
    }
}

/// True for `kill` signals that leave the process running.
fn gentle_signal(signal: &str) -> bool {
    let name = signal.trim_start_matches("SIG");
    GENTLE_SIGNALS.contains(&signal)
        || ["HUP", "USR1", "USR2", "CHLD", "CONT", "URG", "WINCH"].contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_terminating_kill_signals_drain() {
        for s in ["1", "SIGHUP", "HUP", "10", "28"] {
            assert!(gentle_signal(s), "{s}");
        }
        for s in ["15", "9", "SIGTERM", "KILL", "3", "2"] {
            assert!(!gentle_signal(s), "{s}");
        }
    }
}
