//! The readiness rule for discovery: a gateway is not ready until every configured
//! discovery source has listed its backends at least once.
//!
//! A gateway whose discovery never listed has no discovered backends and cannot know
//! whether it should have some, so its `/readyz` (hence a container HEALTHCHECK)
//! answers 503 naming the source and its last error. Once a source has listed, losing
//! its connection does not make the gateway unready: it keeps serving the last known
//! backends while it reconnects. Each source registers its status channel here; the
//! rule needs nothing from a source but its [`DiscoveryStatus`].

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::DiscoveryStatus;

/// The discovery sources `/readyz` waits for. Cloning shares the list.
#[derive(Clone, Debug, Default)]
pub struct ListedGate {
    /// Read by `/readyz` and written once per source at start: never on the
    /// request path.
    sources: Arc<Mutex<Vec<Source>>>,
}

#[derive(Debug)]
struct Source {
    name: &'static str,
    status: watch::Receiver<DiscoveryStatus>,
}

impl ListedGate {
    /// Makes readiness wait for the first list of the source `name` (`docker`, …).
    pub fn watch(&self, name: &'static str, status: watch::Receiver<DiscoveryStatus>) {
        if let Ok(mut sources) = self.sources.lock() {
            sources.push(Source { name, status });
        }
    }

    /// Why the gateway is not ready yet: the first source that has never listed,
    /// with its last error. `None` once every source has listed at least once.
    pub fn unlisted(&self) -> Option<String> {
        let sources = self.sources.lock().ok()?;
        sources.iter().find_map(|s| {
            let status = s.status.borrow();
            (status.lists == 0).then(|| match &status.last_error {
                Some(error) => format!("{} discovery has never listed: {error}", s.name),
                None => format!("{} discovery has not listed yet", s.name),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_source_listed_and_after_losing_one() {
        let gate = ListedGate::default();
        assert_eq!(gate.unlisted(), None, "no source: nothing to wait for");
        let (docker, rx) = watch::channel(DiscoveryStatus::default());
        gate.watch("docker", rx);
        let (other, rx) = watch::channel(DiscoveryStatus::default());
        gate.watch("swarm", rx);
        assert_eq!(
            gate.unlisted().as_deref(),
            Some("docker discovery has not listed yet")
        );
        docker.send_modify(|s| s.last_error = Some("permission denied".into()));
        assert_eq!(
            gate.unlisted().as_deref(),
            Some("docker discovery has never listed: permission denied")
        );
        docker.send_modify(|s| {
            s.connected = true;
            s.lists = 1;
            s.last_error = None;
        });
        assert_eq!(
            gate.unlisted().as_deref(),
            Some("swarm discovery has not listed yet")
        );
        other.send_modify(|s| s.lists = 1);
        assert_eq!(gate.unlisted(), None);
        docker.send_modify(|s| {
            s.connected = false;
            s.last_error = Some("the Docker event stream ended".into());
        });
        assert_eq!(gate.unlisted(), None, "a lost connection keeps readiness");
    }
}
