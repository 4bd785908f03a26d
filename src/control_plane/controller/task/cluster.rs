//! `[cluster]` in the controller task: admin writes go to the shared store by
//! compare-and-set, and what other replicas wrote is applied here.
//!
//! A write is prepared against the overrides in force (which came from the
//! store), written as the next document with the store version they were read
//! at, and only made current and published once the store took it. On a version
//! conflict the task re-reads the store, applies what it holds, and prepares the
//! write again from there (the caller's request is re-applied, not its result);
//! a write that no longer makes sense then is refused like any other (404, 409),
//! and one that keeps losing races gets a 409 after [`MAX_TRIES`]. A store that
//! does not answer refuses the write (503) and nothing changes here; routing
//! goes on with the last state. A stored value this replica cannot read
//! (malformed, or another format) is logged and shown, never applied, and
//! writes are refused rather than overwrite it.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{oneshot, watch};

use super::{Claimed, Task};
use crate::control_plane::cluster::doc::{unix_ms, Clocks, ClusterDoc};
use crate::control_plane::cluster::lease::{self, Claim};
use crate::control_plane::cluster::poll::Observation;
use crate::control_plane::cluster::{ClusterStore, Identity, StoreError, Stored};
use crate::control_plane::controller::state_view::{ClusterView, ReplicaView};
use crate::control_plane::controller::Refusal;
use crate::control_plane::events::By;
use crate::control_plane::overrides::Overrides;
use crate::control_plane::rollout_record::Rollout;
use crate::control_plane::state_file::Persisted;

/// Attempts of one admin write against a store that keeps moving.
pub(super) const MAX_TRIES: u32 = 5;

/// What the gateway hands the task when `[cluster]` is on.
#[derive(Debug)]
pub(crate) struct ClusterFeed {
    pub(crate) store: Arc<dyn ClusterStore>,
    /// Reads of the store by the poller (`cluster::poll`).
    pub(crate) observed: watch::Receiver<Option<Observation>>,
    pub(crate) identity: Identity,
    /// The other replicas as last read from their admin APIs (`cluster::peers`).
    pub(crate) peers: Option<watch::Receiver<Vec<ReplicaView>>>,
}

/// The task's side of the store.
#[derive(Debug)]
pub(super) struct Link {
    feed: ClusterFeed,
    /// The store version the overrides in force were read at or written as
    /// (the compare-and-set token); `None` before the first read.
    version: Option<u64>,
    /// The document in force (`None`: the store holds none).
    doc: Option<ClusterDoc>,
    /// Its text, to tell a new document from an unrelated service update.
    text: Option<String>,
    reachable: bool,
    last_error: Option<String>,
    last_read: Option<SystemTime>,
    /// A value the store holds that was not applied, and why.
    ignored: Option<String>,
    writes: u64,
    conflicts: u64,
    /// The rollout manager's start-up question, held until the first read.
    rollouts_asked: Vec<oneshot::Sender<Vec<Rollout>>>,
    /// How long a rollout lease holds (`cluster::lease::TERM`; shorter in tests).
    pub(super) lease_term: std::time::Duration,
    /// When the leases are next looked at (renewal, takeover): every quarter
    /// term, besides every new read of the store.
    next_lease_check: tokio::time::Instant,
}

/// What a shared write does to the rollout leases besides renewing those due.
#[derive(Clone, Copy, Debug)]
pub(super) enum Leasing<'a> {
    /// Nothing else.
    Keep,
    /// A step of rollout `id`, which this replica must hold (or which is free).
    Step(&'a str),
    /// Take these rollouts over: their drivers' leases expired.
    Take(&'a [String]),
}

/// How a store write ended.
pub(super) enum Written {
    Done,
    /// The store moved on: re-read, re-apply.
    Stale,
}

impl Task {
    /// Turns on `[cluster]`: admin writes go through `feed.store`.
    pub(crate) fn attach_cluster(&mut self, feed: ClusterFeed) {
        self.cluster = Some(Link {
            feed,
            version: None,
            doc: None,
            text: None,
            reachable: false,
            last_error: None,
            last_read: None,
            ignored: None,
            writes: 0,
            conflicts: 0,
            rollouts_asked: Vec::new(),
            lease_term: lease::TERM,
            next_lease_check: tokio::time::Instant::now(),
        });
        self.show_replica();
    }

    /// Updates what peers read of this replica (its ID, node, state version).
    fn show_replica(&self) {
        let Some(link) = self.cluster.as_ref() else {
            return;
        };
        let me = ReplicaView {
            id: link.feed.identity.id.clone(),
            node: link.feed.identity.node.clone(),
            last_seen: None,
            serving: Some(link.doc.as_ref().map_or(0, |d| d.seq)),
            error: None,
        };
        self.replica.send_if_modified(|v| {
            let news = v.as_ref() != Some(&me);
            *v = Some(me);
            news
        });
    }

    /// The rollout records this replica's rollout manager resumes: all of them on
    /// a single gateway; with `[cluster]`, only those it drives (asked once at
    /// start, answered after the first read of the store, so that a replica never
    /// picks up a rollout another replica is driving).
    pub(super) fn answer_rollouts(&mut self, reply: oneshot::Sender<Vec<Rollout>>) {
        let records = match self.cluster.as_mut() {
            None => self.overrides.rollouts().values().cloned().collect(),
            Some(link) if link.version.is_none() && link.last_error.is_none() => {
                link.rollouts_asked.push(reply);
                return;
            }
            Some(link) => {
                let me = link.feed.identity.id.as_str();
                let drivers = link.doc.as_ref().map(|d| &d.drivers);
                self.overrides
                    .rollouts()
                    .values()
                    .filter(|r| drivers.and_then(|d| d.get(&r.id)).map(String::as_str) == Some(me))
                    .cloned()
                    .collect()
            }
        };
        if reply.send(records).is_err() {
            tracing::debug!("rollout records requester went away");
        }
    }

    /// Answers the rollout manager's held question once the store was read (or
    /// failed to be).
    fn answer_held_rollouts(&mut self) {
        let held = match self.cluster.as_mut() {
            Some(link) if !link.rollouts_asked.is_empty() => {
                std::mem::take(&mut link.rollouts_asked)
            }
            _ => return,
        };
        for reply in held {
            self.answer_rollouts(reply);
        }
    }

    /// A read of the poller.
    pub(super) async fn on_observed(&mut self, seen: Observation) {
        match seen.result {
            Ok(stored) => {
                self.adopt(stored, seen.at).await;
                self.keep_leases().await;
            }
            Err(err) => self.lost(&err, seen.at),
        }
        self.show_replica();
        self.answer_held_rollouts();
    }

    /// On each read of the store: renews the leases this replica holds that are
    /// due, and takes over the running rollouts whose driver's lease expired
    /// (one write for all). A lost race is left to the next read.
    pub(super) async fn keep_leases(&mut self) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        link.next_lease_check =
            crate::clock::later(tokio::time::Instant::now(), link.lease_term / 4);
        let link = &*link;
        let Some(doc) = link.doc.as_ref().filter(|_| link.ignored.is_none()) else {
            return;
        };
        let (me, now_ms) = (link.feed.identity.id.as_str(), unix_ms(SystemTime::now()));
        let mut take = Vec::new();
        let mut renew = false;
        for r in self
            .overrides
            .rollouts()
            .values()
            .filter(|r| r.phase.is_active())
        {
            match lease::claim(
                &doc.drivers,
                &doc.leases,
                &r.id,
                me,
                now_ms,
                link.lease_term,
            ) {
                Claim::Expired { holder } => {
                    tracing::warn!(rollout = %r.id, %holder, "the replica driving this rollout let its lease expire: taking it over");
                    take.push(r.id.clone());
                }
                Claim::Mine { renew: true } => renew = true,
                Claim::Mine { .. } | Claim::Held { .. } | Claim::Free => {}
            }
        }
        if take.is_empty() && !renew {
            return;
        }
        let next = self.overrides.clone();
        match self
            .commit_shared(next, By::Cluster, Leasing::Take(&take))
            .await
        {
            Ok(Written::Done) if !take.is_empty() => {
                self.takeovers.send_modify(|n| *n = n.saturating_add(1));
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(%err, "rollout lease not written; the next read tries again")
            }
        }
    }

    /// Who drives rollout `id` (see [`Claimed`]). With `take`, a running or
    /// paused rollout another replica drives becomes this replica's by a
    /// compare-and-set of its lease (as an expired lease is taken): the
    /// replica that drove it learns it at its next write of the rollout, which
    /// is refused (fencing), and stops driving it.
    pub(super) async fn claim_rollout(&mut self, id: &str, take: bool) -> Result<Claimed, Refusal> {
        for _ in 0..MAX_TRIES {
            if self.cluster.as_ref().is_some_and(|l| l.version.is_none()) {
                self.refresh().await?;
            }
            let Some(link) = self.cluster.as_ref() else {
                return Ok(Claimed::Local);
            };
            if other_driver(link, id).is_none() {
                return Ok(Claimed::Local);
            }
            let Some(record) = self
                .overrides
                .rollouts()
                .values()
                .find(|r| r.id == id)
                .cloned()
            else {
                return Ok(Claimed::Local);
            };
            if !take || !record.phase.is_active() {
                return Ok(Claimed::Shared(Box::new(record)));
            }
            let ids = [id.to_owned()];
            let next = self.overrides.clone();
            match self
                .commit_shared(next, By::Cluster, Leasing::Take(&ids))
                .await?
            {
                Written::Done => {
                    tracing::info!(rollout = %id, "an action on this rollout was received here: this replica drives it now");
                    return Ok(Claimed::Taken(Box::new(record)));
                }
                Written::Stale => self.refresh().await?,
            }
        }
        Err(Refusal::conflict(
            "cluster",
            format!("rollout {id}: the cluster store kept changing while this replica took its lease ({MAX_TRIES} tries); try again"),
        ))
    }

    /// The shared rollout records another replica drives or drove: those
    /// [`claim_rollout`](Self::claim_rollout) answers [`Claimed::Shared`] for
    /// (or takes over). None without `[cluster]`; records the document names no
    /// driver for are this replica's manager's, as there.
    pub(super) async fn shared_rollouts(&mut self) -> Result<Vec<Rollout>, Refusal> {
        if self.cluster.as_ref().is_some_and(|l| l.version.is_none()) {
            self.refresh().await?;
        }
        let Some(link) = self.cluster.as_ref() else {
            return Ok(Vec::new());
        };
        Ok(self
            .overrides
            .rollouts()
            .values()
            .filter(|r| other_driver(link, &r.id).is_some())
            .cloned()
            .collect())
    }

    fn lost(&mut self, err: &StoreError, at: SystemTime) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        if link.reachable || link.last_error.is_none() {
            tracing::warn!(%err, "cluster store unreachable: routing on with the last state; admin writes answer 503 until it is back");
        }
        link.reachable = false;
        link.last_error = Some(err.to_string());
        link.last_read = Some(at);
    }

    /// Applies what the store holds, if it is newer than what is in force.
    async fn adopt(&mut self, stored: Stored, at: SystemTime) {
        let Some(link) = self.cluster.as_mut() else {
            return;
        };
        if !link.reachable && link.last_error.is_some() {
            tracing::info!("cluster store reachable again");
        }
        link.reachable = true;
        link.last_error = None;
        link.last_read = Some(at);
        // Reads may be older than a write this task made since.
        if link.version.is_some_and(|v| stored.version <= v) {
            return;
        }
        link.version = Some(stored.version);
        if stored.value == link.text {
            // Another service update, or our own write confirmed.
            link.ignored = None;
            return;
        }
        let doc = match stored.value.as_deref().map(ClusterDoc::decode) {
            None => None,
            Some(Ok(doc)) => Some(doc),
            Some(Err(err)) => {
                let why = format!("store version {}: {err}", stored.version);
                if link.ignored.is_none() {
                    tracing::error!(%err, store = %link.feed.store.describe(), "the cluster store holds a value this replica cannot use: ignored (routing unchanged, admin writes refused until it is fixed or removed)");
                }
                link.ignored = Some(why);
                return;
            }
        };
        link.ignored = None;
        let clocks = Clocks::now();
        let (mut overrides, skipped) = match &doc {
            Some(doc) => doc.restore(&self.base, clocks),
            None => (Overrides::default(), Vec::new()),
        };
        // Heartbeats this replica took and has not written yet (not due) stay:
        // another replica's document only knows the renewals written before.
        for (key, reg) in self.overrides.backends() {
            let theirs = overrides.backends().get(key).and_then(|r| r.expires);
            if let (Some(mine), Some(theirs)) = (reg.expires, theirs) {
                if mine > theirs {
                    overrides.renew_until(key, mine);
                }
            }
        }
        for d in &skipped {
            tracing::warn!(override = %d.what, why = %d.why, "shared admin override does not apply to this replica's config: skipped");
        }
        tracing::info!(
            seq = doc.as_ref().map_or(0, |d| d.seq),
            writer = doc.as_ref().map_or("", |d| d.writer.as_str()),
            "cluster state applied"
        );
        link.text = stored.value;
        link.doc = doc;
        let visible =
            Persisted::from_overrides(&overrides) != Persisted::from_overrides(&self.overrides);
        self.overrides = overrides;
        if visible {
            self.publish(By::Cluster).await;
        }
    }

    /// Re-reads the store after a conflict (or before the first write).
    pub(super) async fn refresh(&mut self) -> Result<(), Refusal> {
        let Some(link) = self.cluster.as_ref() else {
            return Ok(());
        };
        let store = Arc::clone(&link.feed.store);
        match store.read().await {
            Ok(stored) => {
                self.adopt(stored, SystemTime::now()).await;
                Ok(())
            }
            Err(err) => {
                self.lost(&err, SystemTime::now());
                Err(unavailable(&err))
            }
        }
    }

    /// Writes `next` to the store as the next document; on success it is in force
    /// and published.
    /// `leasing` says which rollout this write steps (this replica must hold its
    /// lease, or nobody), or which it takes over; leases due are renewed.
    pub(super) async fn commit_shared(
        &mut self,
        next: Overrides,
        by: By,
        leasing: Leasing<'_>,
    ) -> Result<Written, Refusal> {
        if self.cluster.as_ref().is_some_and(|l| l.version.is_none()) {
            self.refresh().await?;
        }
        let Some(link) = self.cluster.as_mut() else {
            return Ok(Written::Done);
        };
        if let Some(why) = &link.ignored {
            return Err(Refusal::Unavailable {
                path: "cluster".into(),
                message: format!(
                    "the cluster store holds a value this replica cannot read ({why}); writes are refused so that it is not overwritten: fix it, or remove the label to start from the config file"
                ),
            });
        }
        let Some(version) = link.version else {
            return Err(Refusal::Unavailable {
                path: "cluster".into(),
                message: "the cluster store has not been read yet".into(),
            });
        };
        let clocks = Clocks::now();
        let needed = match &link.doc {
            Some(doc) => doc.needs_write(&next, clocks),
            None => !next.is_empty(),
        };
        let me = link.feed.identity.id.clone();
        let wall_ms = unix_ms(clocks.wall);
        let term = link.lease_term;
        let (mut drivers, mut leases) = link
            .doc
            .as_ref()
            .map(|d| (d.drivers.clone(), d.leases.clone()))
            .unwrap_or_default();
        if let Leasing::Step(id) = leasing {
            match lease::claim(&drivers, &leases, id, &me, wall_ms, term) {
                Claim::Free | Claim::Mine { .. } => {}
                Claim::Held { holder, .. } | Claim::Expired { holder } => {
                    return Err(Refusal::conflict(
                        "lease",
                        format!("rollout {id} is driven by replica {holder} now; this replica no longer steps it"),
                    ));
                }
            }
        }
        let until =
            lease::until(wall_ms, term).map_err(|e| Refusal::conflict("lease", e.to_string()))?;
        let mut take: Vec<&str> = match leasing {
            Leasing::Step(id) => vec![id],
            Leasing::Take(ids) => ids.iter().map(String::as_str).collect(),
            Leasing::Keep => Vec::new(),
        };
        // Renew every lease of a running rollout this replica drives that is due.
        for r in next.rollouts().values().filter(|r| r.phase.is_active()) {
            if let Claim::Mine { renew: true } =
                lease::claim(&drivers, &leases, &r.id, &me, wall_ms, term)
            {
                take.push(&r.id);
            }
        }
        for id in take {
            drivers.insert(id.to_owned(), me.clone());
            leases.insert(id.to_owned(), until);
        }
        drivers.retain(|id, _| next.rollouts().values().any(|r| &r.id == id));
        // A finished rollout needs no driver any more: its lease goes.
        leases.retain(|id, _| {
            next.rollouts()
                .values()
                .any(|r| &r.id == id && r.phase.is_active())
        });
        let needed = needed
            || link
                .doc
                .as_ref()
                .is_some_and(|d| d.drivers != drivers || d.leases != leases);
        let visible =
            Persisted::from_overrides(&next) != Persisted::from_overrides(&self.overrides);
        if needed {
            let seq = link.doc.as_ref().map_or(0, |d| d.seq).saturating_add(1);
            let mut doc = ClusterDoc::of(&next, seq, &link.feed.identity.id, clocks);
            doc.drivers = drivers;
            doc.leases = leases;
            let text = doc
                .encode()
                .map_err(|e| Refusal::conflict("cluster", e.to_string()))?;
            let store = Arc::clone(&link.feed.store);
            match store.write(version, text.clone()).await {
                Ok(confirmed) => {
                    // Unconfirmed: keep the old version, so the next read (newer by
                    // definition) is applied whatever it holds.
                    if let Some(v) = confirmed {
                        link.version = Some(v);
                    }
                    link.doc = Some(doc);
                    link.text = Some(text);
                    link.writes += 1;
                    self.show_replica();
                }
                Err(StoreError::Conflict { .. }) => {
                    link.conflicts += 1;
                    return Ok(Written::Stale);
                }
                Err(err) => {
                    self.lost(&err, SystemTime::now());
                    return Err(unavailable(&err));
                }
            }
        }
        self.overrides = next;
        if visible {
            self.publish(by).await;
        }
        Ok(Written::Done)
    }

    /// The `[cluster]` section of the state.
    pub(super) fn cluster_view(&self) -> Option<ClusterView> {
        let link = self.cluster.as_ref()?;
        let rfc = crate::control_plane::discovery::swarm::rfc3339;
        let serving = link.doc.as_ref().map_or(0, |d| d.seq);
        let me = ReplicaView {
            id: link.feed.identity.id.clone(),
            node: link.feed.identity.node.clone(),
            last_seen: Some(rfc(SystemTime::now())),
            serving: Some(serving),
            error: None,
        };
        Some(ClusterView {
            store: link.feed.store.describe(),
            replica: link.feed.identity.id.clone(),
            node: link.feed.identity.node.clone(),
            reachable: link.reachable,
            stale: !link.reachable || link.ignored.is_some(),
            last_error: link.last_error.clone(),
            last_read: link
                .feed
                .observed
                .borrow()
                .as_ref()
                .map(|o| o.at)
                .max(link.last_read)
                .map(rfc),
            store_version: link.version,
            serving,
            written_by: link.doc.as_ref().map(|d| d.writer.clone()),
            ignored: link.ignored.clone(),
            writes: link.writes,
            conflicts: link.conflicts,
            replicas: std::iter::once(me)
                .chain(
                    link.feed
                        .peers
                        .as_ref()
                        .map(|p| p.borrow().clone())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|p| p.id != link.feed.identity.id),
                )
                .collect(),
        })
    }
}

/// The replica the shared document names as rollout `id`'s driver, unless it
/// is this one (or the document names none).
fn other_driver<'a>(link: &'a Link, id: &str) -> Option<&'a str> {
    let me = link.feed.identity.id.as_str();
    let driver = link.doc.as_ref()?.drivers.get(id)?;
    (driver != me).then_some(driver.as_str())
}

fn unavailable(err: &StoreError) -> Refusal {
    Refusal::Unavailable {
        path: "cluster".into(),
        message: format!(
            "{err}; nothing was changed (the gateway routes on with the last state it read)"
        ),
    }
}

/// Resolves when the leases are due a look (see `Link::next_lease_check`);
/// never without `[cluster]`.
pub(super) async fn lease_check(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When [`lease_check`] should next resolve.
pub(super) fn lease_check_at(link: Option<&Link>) -> Option<tokio::time::Instant> {
    link.map(|l| l.next_lease_check)
}

/// The next read of the poller; never resolves without `[cluster]` (or once the
/// poller stopped).
pub(super) async fn next_observed(link: Option<&mut Link>) -> Observation {
    let Some(link) = link else {
        return std::future::pending().await;
    };
    loop {
        if link.feed.observed.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(seen) = link.feed.observed.borrow_and_update().clone() {
            return seen;
        }
    }
}

#[cfg(test)]
mod tests;
