//! The other replicas, for the replica table of the state: every second each
//! `[cluster].peers` URL is resolved (a name such as `tasks.gateway` gives every
//! task) and each address's `GET /api/v1/cluster/replica` read (ID, node, state
//! version served). Only for showing; nothing depends on it.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::control_plane::config::spec::ManagerUrl;
use crate::control_plane::controller::state_view::ReplicaView;
use crate::control_plane::discovery::swarm::engine::Endpoint;

/// Where a replica says who it is.
pub(crate) const REPLICA_PATH: &str = "/api/v1/cluster/replica";
/// How often the peers are read.
const EVERY: Duration = Duration::from_secs(1);
/// Bound on each read.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Reads `peers` every second into `tx` until `shutdown`.
pub(crate) async fn run(
    peers: Vec<ManagerUrl>,
    token: Option<String>,
    tx: watch::Sender<Vec<ReplicaView>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let read = read_all(&peers, token.as_deref());
        let seen = tokio::select! {
            () = shutdown.cancelled() => return,
            seen = read => seen,
        };
        tx.send_replace(seen);
    }
}

async fn read_all(peers: &[ManagerUrl], token: Option<&str>) -> Vec<ReplicaView> {
    let mut out = Vec::new();
    for url in peers {
        let addrs = match tokio::net::lookup_host((&*url.host, url.port)).await {
            Ok(addrs) => addrs.collect::<Vec<_>>(),
            Err(e) => {
                out.push(failed(url.to_string(), format!("cannot resolve: {e}")));
                continue;
            }
        };
        for addr in addrs {
            let endpoint = Endpoint::Tcp(addr.to_string());
            match endpoint
                .get_json::<ReplicaView>(REPLICA_PATH, token, TIMEOUT)
                .await
            {
                Ok(mut r) => {
                    r.last_seen = Some(crate::control_plane::discovery::swarm::rfc3339(
                        SystemTime::now(),
                    ));
                    r.error = None;
                    out.push(r);
                }
                Err(e) => out.push(failed(addr.to_string(), e.to_string())),
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn failed(id: String, error: String) -> ReplicaView {
    ReplicaView {
        id,
        node: "?".to_owned(),
        last_seen: None,
        serving: None,
        error: Some(error),
    }
}
