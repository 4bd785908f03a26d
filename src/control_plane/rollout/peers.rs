//! The other replicas' share of a step's traffic (`[cluster]` with `peers`).
//!
//! The driving replica reads every peer's cumulative counters
//! (`cluster::counters`) when a step's window starts and again at each look of
//! the gate; a peer's share is the difference between its first and its latest
//! read, keyed by replica ID. Windows of consecutive steps are read afresh and do
//! not overlap, so no peer's traffic is counted in two steps; a read that fails
//! is repeated at the next look and, counters being cumulative, loses nothing
//! once it succeeds.
//!
//! What is not counted, and so named in the step's record (`peers`):
//! - a peer whose latest read failed, or that the start read found and the latest
//!   did not: the step waits for it (the gate looks again every poll) up to the
//!   rollout's `max_wait`, then the policy decides on the traffic it has;
//! - a peer first read after the step's start (down or not yet resolvable then):
//!   it is counted from that first read only, and the record says so;
//! - a `peers` name that resolves to nothing: no replica is known behind it (a
//!   stopped container's name), so it is named but not waited for. A replica
//!   read earlier in the step and not found now is waited for (first point).
//!
//! A peer that restarted (another `boot`, or counters that went down) since its
//! first read is counted from zero: all of its new process's traffic came after
//! that read.

use std::collections::{BTreeMap, BTreeSet};

use crate::control_plane::cluster::counters::{PeerRead, ReplicaCounters};
use crate::data_plane::pool_stats::{Sample, Window};

/// One peer's counters at the start of its window.
#[derive(Debug)]
struct Base {
    boot: u64,
    target: Sample,
    from: Vec<Sample>,
}

/// The peers' figures of one step.
#[derive(Debug, Default)]
pub(super) struct PeerWindow {
    base: BTreeMap<String, Base>,
    /// Which replica answered at which address (to name a failed read by ID).
    addr_of: BTreeMap<String, String>,
    /// The peers' target-pool traffic since their base, as of the latest read.
    pub(super) target: Window,
    /// The peers' `from`-pool traffic likewise.
    pub(super) baseline: Window,
    /// Peers not counted at the latest read, each with why: the step waits.
    pub(super) missing: Vec<String>,
    /// Peers counted only from a read after the step's start.
    late: BTreeMap<String, u64>,
    /// `peers` names that resolved to nothing at the latest read.
    unresolved: Vec<String>,
    /// Peers whose traffic the latest figures hold.
    pub(super) counted: usize,
    /// Whether the start read was done.
    pub(super) started: bool,
}

impl PeerWindow {
    /// Takes in one read of every peer, made `at_ms` into the step; `to` and
    /// `from` are the rollout's pools.
    pub(super) fn absorb(&mut self, reads: Vec<PeerRead>, to: &str, from: &[String], at_ms: u64) {
        let first = !self.started;
        self.started = true;
        self.target = Window::default();
        self.baseline = Window::default();
        self.missing.clear();
        self.unresolved.clear();
        self.counted = 0;
        let mut seen = BTreeSet::new();
        for read in reads {
            match read.result {
                Ok(c) => {
                    self.addr_of.insert(read.addr, c.replica.clone());
                    seen.insert(c.replica.clone());
                    self.count(&c, to, from, first, at_ms);
                }
                Err(e) if !read.resolved => {
                    self.unresolved.push(format!(
                        "{}: {e} (no replica known there: not waited for)",
                        read.addr
                    ));
                }
                Err(e) => {
                    let name = match self.addr_of.get(&read.addr) {
                        Some(id) => {
                            seen.insert(id.clone());
                            format!("{id} ({})", read.addr)
                        }
                        None => read.addr,
                    };
                    self.missing.push(format!("{name}: {e}"));
                }
            }
        }
        for id in self.base.keys().filter(|id| !seen.contains(*id)) {
            self.missing
                .push(format!("{id}: no longer found among the peers"));
        }
    }

    fn count(&mut self, c: &ReplicaCounters, to: &str, from: &[String], first: bool, at_ms: u64) {
        let pick = |pool: &str| c.pools.get(pool).cloned().unwrap_or_default();
        let target = pick(to);
        let now_from: Vec<Sample> = from.iter().map(|p| pick(p)).collect();
        let base = self.base.entry(c.replica.clone()).or_insert_with(|| {
            if !first {
                self.late.insert(c.replica.clone(), at_ms);
            }
            Base {
                boot: c.boot,
                target: target.clone(),
                from: now_from.clone(),
            }
        });
        let restarted = base.boot != c.boot
            || target.requests() < base.target.requests()
            || target.errors() < base.target.errors();
        if restarted {
            *base = Base {
                boot: c.boot,
                target: Sample::default(),
                from: vec![Sample::default(); from.len()],
            };
        }
        self.target.absorb(&target.since(&base.target));
        for (now, then) in now_from.iter().zip(&base.from) {
            self.baseline.absorb(&now.since(then));
        }
        self.counted += 1;
    }

    /// What the step's record says about the peers: those not counted, then
    /// those counted late.
    pub(super) fn notes(&self) -> Vec<String> {
        let late = self.late.iter().map(|(id, ms)| {
            format!("{id}: counted from {ms} ms into the step (not readable at its start)")
        });
        self.missing
            .iter()
            .chain(&self.unresolved)
            .cloned()
            .chain(late)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_plane::pool_stats::PoolStats;
    use http::StatusCode;
    use std::time::Duration;

    fn counters(id: &str, boot: u64, stats: &PoolStats) -> PeerRead {
        PeerRead {
            addr: format!("10.0.0.{}:9901", id.len()),
            result: Ok(ReplicaCounters {
                replica: id.to_owned(),
                boot,
                pools: BTreeMap::from([("green".to_owned(), stats.sample())]),
            }),
            resolved: true,
        }
    }

    fn hit(stats: &PoolStats, ok: u64, bad: u64) {
        for _ in 0..ok {
            stats.record_response(StatusCode::OK, Duration::from_millis(2));
        }
        for _ in 0..bad {
            stats.record_response(StatusCode::INTERNAL_SERVER_ERROR, Duration::from_millis(2));
        }
    }

    #[test]
    fn each_peers_traffic_is_counted_once_from_its_start_read() {
        let stats = PoolStats::new();
        hit(&stats, 50, 5); // before the step: not counted
        let mut w = PeerWindow::default();
        w.absorb(vec![counters("b", 1, &stats)], "green", &[], 0);
        assert_eq!((w.target.requests, w.counted), (0, 1));
        hit(&stats, 10, 2);
        w.absorb(vec![counters("b", 1, &stats)], "green", &[], 100);
        hit(&stats, 10, 0);
        // A failed read in between loses nothing once a read succeeds again.
        w.absorb(
            vec![PeerRead {
                addr: "10.0.0.1:9901".into(),
                result: Err("timed out".into()),
                resolved: true,
            }],
            "green",
            &[],
            200,
        );
        assert_eq!(w.missing, vec!["b (10.0.0.1:9901): timed out".to_owned()]);
        w.absorb(vec![counters("b", 1, &stats)], "green", &[], 300);
        assert_eq!((w.target.requests, w.target.errors), (22, 2));
        assert!(w.missing.is_empty() && w.notes().is_empty());
        // The next step starts from its own read: nothing of this one again.
        let mut next = PeerWindow::default();
        next.absorb(vec![counters("b", 1, &stats)], "green", &[], 0);
        hit(&stats, 4, 1);
        next.absorb(vec![counters("b", 1, &stats)], "green", &[], 100);
        assert_eq!((next.target.requests, next.target.errors), (5, 1));
    }

    #[test]
    fn a_restarted_peer_is_counted_from_zero_and_a_vanished_one_is_named() {
        let old = PoolStats::new();
        hit(&old, 100, 0);
        let mut w = PeerWindow::default();
        w.absorb(
            vec![counters("b", 1, &old), counters("cc", 7, &old)],
            "green",
            &[],
            0,
        );
        let new = PoolStats::new();
        hit(&new, 3, 3);
        w.absorb(vec![counters("b", 2, &new)], "green", &[], 500);
        assert_eq!((w.target.requests, w.target.errors), (6, 3));
        assert_eq!(
            w.missing,
            vec!["cc: no longer found among the peers".to_owned()]
        );
        // A peer first seen late is counted from then, and named.
        let d = PoolStats::new();
        hit(&d, 9, 9);
        w.absorb(
            vec![
                counters("b", 2, &new),
                counters("cc", 7, &old),
                counters("ddd", 3, &d),
            ],
            "green",
            &[],
            900,
        );
        assert!(w.missing.is_empty());
        assert_eq!(w.counted, 3);
        assert_eq!((w.target.requests, w.target.errors), (6, 3));
        assert_eq!(
            w.notes(),
            vec!["ddd: counted from 900 ms into the step (not readable at its start)".to_owned()]
        );
        // A name that resolves to nothing is named, not waited for.
        w.absorb(
            vec![
                counters("b", 2, &new),
                counters("cc", 7, &old),
                counters("ddd", 3, &d),
                PeerRead {
                    addr: "http://gw-9:9901".into(),
                    result: Err("cannot resolve: no such host".into()),
                    resolved: false,
                },
            ],
            "green",
            &[],
            1000,
        );
        assert!(w.missing.is_empty(), "{:?}", w.missing);
        assert!(
            w.notes()[0].starts_with("http://gw-9:9901: cannot resolve"),
            "{:?}",
            w.notes()
        );
    }
}
