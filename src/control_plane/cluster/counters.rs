//! Pool counters across replicas, for the rollout gate.
//!
//! Every replica answers `GET /api/v1/cluster/counters` with its pools'
//! *cumulative* traffic counters ([`ReplicaCounters`]: requests, errors, the
//! latency histogram of each pool) and a per-process `boot` stamp. The replica
//! driving a rollout reads every peer at a step's start and at its judgement
//! ([`PeerSource`]) and adds each peer's difference to its own figures (see
//! `rollout::peers`). Cumulative counters make a lost or repeated read harmless:
//! the next read still covers the whole window. A changed `boot` (or counters
//! that went down) says the peer restarted after the earlier read, so all of its
//! new counters lie inside the window.
//!
//! Peers are found as for the replica table: every `[cluster].peers` URL
//! resolved (a name such as `tasks.gateway` gives every task); the answer of
//! this replica itself (same ID) is dropped. This module does the reading; it
//! does not decide what a missing peer means for the step.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use serde::{Deserialize, Serialize};

use crate::control_plane::config::spec::ManagerUrl;
use crate::control_plane::discovery::swarm::engine::Endpoint;
use crate::data_plane::pool_stats::Sample;
use crate::data_plane::snapshot::Snapshot;

/// Where a replica answers its pool counters.
pub(crate) const COUNTERS_PATH: &str = "/api/v1/cluster/counters";
/// Bound on each name's resolution and on each peer's read (all peers are
/// read at once).
const TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /api/v1/cluster/counters`: one replica's cumulative pool counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplicaCounters {
    /// The replica's ID (as in its replica view).
    pub(crate) replica: String,
    /// Differs between two runs of the process: counters restart from zero.
    pub(crate) boot: u64,
    /// Each pool's counters since the process started.
    pub(crate) pools: BTreeMap<String, Sample>,
}

impl ReplicaCounters {
    /// `replica`'s counters of every pool of `snapshot`, now.
    pub(crate) fn of(replica: String, snapshot: &Snapshot) -> ReplicaCounters {
        let pools = snapshot
            .pools()
            .iter()
            .map(|p| (p.name.to_string(), p.health().traffic().sample()))
            .collect();
        ReplicaCounters {
            replica,
            boot: boot(),
            pools,
        }
    }
}

/// This process's boot stamp: random, fixed for the life of the process.
pub(crate) fn boot() -> u64 {
    static BOOT: OnceLock<u64> = OnceLock::new();
    *BOOT.get_or_init(|| fastrand::u64(1..))
}

/// One peer's answer (or why there is none), by the address it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerRead {
    pub(crate) addr: String,
    pub(crate) result: Result<ReplicaCounters, String>,
    /// False when `addr` is a `peers` URL whose name resolved to nothing: no
    /// replica is known behind it (a stopped container's name, a DNS failure).
    pub(crate) resolved: bool,
}

/// The other replicas' counters, read all at once.
pub(crate) trait PeerSource: Send + Sync + std::fmt::Debug {
    /// Every peer's counters now (not this replica's own).
    fn read(&self) -> BoxFuture<'_, Vec<PeerRead>>;
}

/// [`PeerSource`] over the peers' admin APIs.
#[derive(Debug)]
pub(crate) struct HttpPeers {
    peers: Vec<ManagerUrl>,
    token: Option<String>,
    /// This replica's ID: its own answer is not a peer's.
    me: String,
}

impl HttpPeers {
    /// Reads the replicas `peers` resolves to, with the admin `token`.
    pub(crate) fn new(peers: Vec<ManagerUrl>, token: Option<String>, me: String) -> Arc<HttpPeers> {
        Arc::new(HttpPeers { peers, token, me })
    }
}

impl PeerSource for HttpPeers {
    fn read(&self) -> BoxFuture<'_, Vec<PeerRead>> {
        Box::pin(async move {
            let mut addrs = Vec::new();
            let mut out = Vec::new();
            for url in &self.peers {
                // Bounded like the reads: the rollout manager waits for them.
                let lookup = tokio::net::lookup_host((&*url.host, url.port));
                let found = tokio::time::timeout(TIMEOUT, lookup)
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("timed out")));
                match found {
                    Ok(found) => addrs.extend(found),
                    Err(e) => out.push(PeerRead {
                        addr: url.to_string(),
                        result: Err(format!("cannot resolve: {e}")),
                        resolved: false,
                    }),
                }
            }
            addrs.sort();
            addrs.dedup();
            let token = self.token.as_deref();
            let reads = addrs.into_iter().map(|addr| async move {
                let endpoint = Endpoint::Tcp(addr.to_string());
                let result = endpoint
                    .get_json::<ReplicaCounters>(COUNTERS_PATH, token, TIMEOUT)
                    .await
                    .map_err(|e| e.to_string());
                PeerRead {
                    addr: addr.to_string(),
                    result,
                    resolved: true,
                }
            });
            out.extend(
                join_all(reads)
                    .await
                    .into_iter()
                    .filter(|r| !matches!(&r.result, Ok(c) if c.replica == self.me)),
            );
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_plane::pool_stats::PoolStats;
    use http::StatusCode;

    /// Serves `answer` as the counters endpoint on 127.0.0.1:0.
    async fn serve(answer: ReplicaCounters) -> u16 {
        let app = axum::Router::new().route(
            COUNTERS_PATH,
            axum::routing::get(move || async move { axum::Json(answer.clone()) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    #[tokio::test]
    async fn peers_are_read_over_http_and_this_replica_is_left_out() {
        let stats = PoolStats::new();
        stats.record_response(StatusCode::OK, Duration::from_millis(4));
        stats.record_response(StatusCode::BAD_GATEWAY, Duration::from_millis(9));
        let them = ReplicaCounters {
            replica: "b".into(),
            boot: 7,
            pools: BTreeMap::from([("green".to_owned(), stats.sample())]),
        };
        let b = serve(them.clone()).await;
        let me = serve(ReplicaCounters {
            replica: "a".into(),
            ..them.clone()
        })
        .await;
        let url = |port| ManagerUrl {
            host: "127.0.0.1".into(),
            port,
        };
        // Port 1: nobody listens there.
        let peers = HttpPeers::new(vec![url(b), url(me), url(1)], None, "a".into());
        let mut reads = peers.read().await;
        reads.sort_by(|x, y| x.addr.cmp(&y.addr));
        assert_eq!(reads.len(), 2, "{reads:?}");
        assert!(
            reads[0].addr.ends_with(":1") && reads[0].result.is_err(),
            "{reads:?}"
        );
        assert_eq!(reads[1].result, Ok(them), "the histogram survives the wire");
    }
}
