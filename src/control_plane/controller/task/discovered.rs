//! What Docker discovery tells the controller task: whole sets and drain hints.
//!
//! The task keeps the last [`DiscoveredSet`] it received and a *base* spec: the
//! file with the discovered backends merged in ([`crate::control_plane::discovery::merge`]),
//! pools that only labels name created with their default probe. Admin overrides
//! are laid over the base, never over the bare file, so a drain or split set
//! through the API applies to discovered backends too. A new set re-computes the
//! base and publishes; a set equal to the last one changes nothing.
//!
//! A [`DrainHint`] (a container is stopping) takes the backend out of rotation
//! at once by flipping its `draining` atomic, before anything is rebuilt; the set
//! discovery published with the hint already marks it draining, so the publish
//! that follows keeps it drained. The whole-set re-list that follows removes it
//! (and never leaves an address the engine no longer reports).

use tokio::sync::{mpsc, watch};

use super::Task;
use crate::control_plane::config::Spec;
use crate::control_plane::controller::state_view::DockerView;
use crate::control_plane::discovery::{self, DiscoveredSet, DiscoveryStatus, DrainHint};

/// The receiving ends of a running discovery task, handed to the controller task.
#[derive(Debug)]
pub struct DockerFeed {
    /// Whole sets; `changed()` fires only when a set differs from the last.
    pub sets: watch::Receiver<DiscoveredSet>,
    /// "Stop sending to this container now."
    pub drains: mpsc::Receiver<DrainHint>,
    /// Connection state (shown in `GET /api/v1/state`).
    pub status: watch::Receiver<DiscoveryStatus>,
}

/// One piece of news from discovery.
#[derive(Debug)]
pub(super) enum News {
    /// A container is stopping.
    Hint(DrainHint),
    /// A new set was published.
    Set,
    /// The connection state changed (for the event stream).
    Status,
    /// The discovery task ended (only at shutdown): keep the last set.
    Ended,
}

impl DockerFeed {
    /// The next piece of news; hints first, so a drain never waits behind a set.
    pub(super) async fn next(&mut self) -> News {
        tokio::select! {
            biased;
            Some(hint) = self.drains.recv() => News::Hint(hint),
            changed = self.sets.changed() => match changed {
                Ok(()) => News::Set,
                Err(_) => News::Ended,
            },
            Ok(()) = self.status.changed() => News::Status,
        }
    }
}

/// News from `feed`, or never when discovery is off.
pub(super) async fn next_news(feed: Option<&mut DockerFeed>) -> News {
    match feed {
        Some(feed) => feed.next().await,
        None => std::future::pending().await,
    }
}

/// `file` with the backends of `set` merged in, when discovery is on.
pub(super) fn base_of(file: &Spec, set: &DiscoveredSet) -> Spec {
    if !file.discovery.is_on() {
        return file.clone();
    }
    discovery::merge(file, set).spec
}

impl Task {
    /// Connects a running discovery: from now on its sets feed the base spec.
    pub fn attach_docker(&mut self, feed: DockerFeed) {
        self.docker = Some(feed);
    }

    /// Handles one piece of news from discovery.
    pub(super) async fn on_docker(&mut self, news: News) {
        match news {
            News::Hint(hint) => {
                match self.controller.backend_state(&hint.pool, hint.addr) {
                    Some(state) => {
                        state.set_draining(true);
                        tracing::info!(container = %hint.container_name, pool = %hint.pool, backend = %hint.addr, action = %hint.action, "container stopping: backend drained");
                    }
                    None => {
                        tracing::debug!(container = %hint.container_name, pool = %hint.pool, backend = %hint.addr, "drain hint for a backend not (yet) in the snapshot")
                    }
                }
                // The set carrying the draining mark was published before the hint.
                self.take_set().await;
            }
            News::Set => self.take_set().await,
            News::Status => self.status_event(),
            News::Ended => {
                tracing::debug!("docker discovery stopped; keeping the last set");
                self.docker = None;
            }
        }
    }

    /// Tells the event stream when discovery lost or regained the engine.
    fn status_event(&mut self) {
        let Some(feed) = self.docker.as_mut() else {
            return;
        };
        let status = feed.status.borrow_and_update().clone();
        let was = self.discovery_connected.replace(status.connected);
        match (was, status.connected) {
            (Some(true), false) => {
                self.events
                    .emit(crate::control_plane::events::EventKind::DiscoveryLost {
                        error: status.last_error,
                    })
            }
            (Some(false), true) => self
                .events
                .emit(crate::control_plane::events::EventKind::DiscoveryRegained),
            _ => {}
        }
    }

    /// Reads the latest set and publishes if it differs from the one in force.
    async fn take_set(&mut self) {
        let Some(feed) = self.docker.as_mut() else {
            return;
        };
        let set = feed.sets.borrow_and_update().clone();
        if set == self.discovered {
            return;
        }
        self.discovered = set;
        self.base = base_of(&self.file, &self.discovered);
        self.publish(crate::control_plane::events::By::Discovery)
            .await;
    }

    /// The `docker` part of the state view.
    pub(super) fn docker_view(&self) -> Option<DockerView> {
        let feed = self.docker.as_ref()?;
        Some(DockerView::new(&feed.status.borrow(), &self.discovered))
    }
}

#[cfg(test)]
mod tests;
