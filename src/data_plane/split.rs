//! Traffic shifting: choosing the pool (version) a route's request goes to.
//!
//! A [`Split`] holds the route's pools with their weights, built at snapshot time.
//! With a sticky cookie, a client that names a pool still carrying weight stays on it;
//! others are assigned by weight and told (via `Set-Cookie`) where they went. With
//! a learned session header (`sessions`), a request naming a known session goes to
//! the pool the session is pinned to while that pool carries weight, and the
//! response teaches the table new sessions ([`Split::learn`]).
//!
//! This module does not pick a backend inside the pool (see `balance`).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::control_plane::config::spec::PoolName;
use crate::data_plane::sessions::{SessionKey, SessionTable};
use crate::data_plane::snapshot::Pool;

/// One pool of a split.
#[derive(Debug)]
pub struct SplitEntry {
    pub pool: Arc<Pool>,
    pub weight: u32,
    /// Pre-built `Set-Cookie` value for sticky routes (built once, cloned per use).
    set_cookie: Option<HeaderValue>,
}

/// A route's weighted pools.
#[derive(Debug)]
pub struct Split {
    entries: Box<[SplitEntry]>,
    total: u64,
    sticky_cookie: Option<Arc<str>>,
    /// Learned sessions (`sticky.learn_header`), shared across snapshots.
    sessions: Option<Arc<SessionTable>>,
}

/// The outcome of [`Split::pick`].
#[derive(Debug)]
pub struct Choice<'a> {
    pub pool: &'a Arc<Pool>,
    /// `Set-Cookie` to add to the response: the client was (re)assigned.
    pub set_cookie: Option<&'a HeaderValue>,
    /// On a route that learns sessions: what to hand to [`Split::learn`] once the
    /// response head is in.
    pub session: Option<Pin>,
}

/// A request's session on a route that learns sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The session the request named, if any.
    key: Option<SessionKey>,
    /// Whether it went to the pool the session is pinned to.
    pinned: bool,
}

impl Split {
    /// Builds a split; `sticky_cookie` is the cookie name of `sticky = { cookie }`.
    pub fn new(pools: Vec<(Arc<Pool>, u32)>, sticky_cookie: Option<Arc<str>>) -> Self {
        let total = pools.iter().map(|(_, w)| u64::from(*w)).sum();
        let entries = pools
            .into_iter()
            .map(|(pool, weight)| {
                let set_cookie = sticky_cookie.as_ref().and_then(|name| {
                    // Pool names are validated to cookie-safe characters.
                    HeaderValue::from_str(&format!(
                        "{name}={}; Path=/; HttpOnly; SameSite=Lax",
                        pool.name
                    ))
                    .ok()
                });
                SplitEntry {
                    pool,
                    weight,
                    set_cookie,
                }
            })
            .collect();
        Split {
            entries,
            total,
            sticky_cookie,
            sessions: None,
        }
    }

    /// The same split, pinning sessions with `sessions` (when given).
    pub fn with_sessions(mut self, sessions: Option<Arc<SessionTable>>) -> Self {
        self.sessions = sessions;
        self
    }

    /// The learned-session table, on routes with `sticky.learn_header`.
    pub fn sessions(&self) -> Option<&Arc<SessionTable>> {
        self.sessions.as_ref()
    }

    pub fn entries(&self) -> &[SplitEntry] {
        &self.entries
    }

    /// Chooses a pool for a request with these headers, or `None` when every weight is 0.
    pub fn pick(&self, headers: &HeaderMap) -> Option<Choice<'_>> {
        let mut session = None;
        if let Some(table) = &self.sessions {
            let key = table.key_of(headers);
            let pinned_to = key.and_then(|k| table.lookup(k));
            if let Some(e) = pinned_to.and_then(|pool| self.carrying(&pool)) {
                return Some(Choice {
                    pool: &e.pool,
                    set_cookie: None,
                    session: Some(Pin { key, pinned: true }),
                });
            }
            session = Some(Pin { key, pinned: false });
        }
        if let Some(name) = &self.sticky_cookie {
            if let Some(wanted) = cookie_value(headers, name) {
                if let Some(e) = self
                    .entries
                    .iter()
                    .find(|e| e.weight > 0 && e.pool.name.as_str() == wanted)
                {
                    return Some(Choice {
                        pool: &e.pool,
                        set_cookie: None,
                        session,
                    });
                }
            }
        }
        let entry = self.pick_weighted(fastrand::u64(..self.total.max(1)))?;
        Some(Choice {
            pool: &entry.pool,
            set_cookie: entry.set_cookie.as_ref(),
            session,
        })
    }

    /// After `pool` answered a request picked with `pin`: pins the session the
    /// response names (the agent created one), or the request's session if it was
    /// unknown or its pool had lost its weight.
    pub fn learn(&self, pin: Pin, response: &HeaderMap, pool: &PoolName) {
        let Some(table) = &self.sessions else {
            return;
        };
        match table.key_of(response) {
            Some(key) if pin.pinned && pin.key == Some(key) => {}
            Some(key) => table.remember(key, pool),
            None => {
                if let (Some(key), false) = (pin.key, pin.pinned) {
                    table.remember(key, pool);
                }
            }
        }
    }

    /// The entry of pool `name` if it carries weight.
    fn carrying(&self, name: &PoolName) -> Option<&SplitEntry> {
        self.entries
            .iter()
            .find(|e| e.weight > 0 && e.pool.name == *name)
    }

    /// The entry whose cumulative weight range holds `r` (0 ≤ r < total).
    fn pick_weighted(&self, r: u64) -> Option<&SplitEntry> {
        if self.total == 0 {
            return None;
        }
        let mut acc = 0u64;
        for e in self.entries.iter() {
            acc += u64::from(e.weight);
            if r < acc {
                return Some(e);
            }
        }
        None
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, if any.
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_plane::snapshot::Pool;

    fn split(weights: &[u32], sticky: bool) -> Split {
        let pools = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (Arc::new(Pool::empty_for_tests(&format!("p{i}"))), *w))
            .collect();
        Split::new(pools, sticky.then(|| Arc::from("sg_pool")))
    }

    fn shares(s: &Split, n: usize, headers: &HeaderMap) -> Vec<usize> {
        let mut counts = vec![0; s.entries().len()];
        for _ in 0..n {
            let c = s.pick(headers).expect("a pool");
            let i = s
                .entries()
                .iter()
                .position(|e| Arc::ptr_eq(&e.pool, c.pool))
                .unwrap();
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn split_follows_weights_within_two_percent() {
        fastrand::seed(7);
        let s = split(&[90, 10], false);
        let c = shares(&s, 20_000, &HeaderMap::new());
        let share = c[1] as f64 / 20_000.0;
        assert!((share - 0.10).abs() < 0.02, "green share {share}");
    }

    #[test]
    fn zero_weight_gets_nothing() {
        fastrand::seed(1);
        let s = split(&[0, 5, 0], false);
        assert_eq!(shares(&s, 1_000, &HeaderMap::new()), vec![0, 1_000, 0]);
        assert!(split(&[0, 0], false).pick(&HeaderMap::new()).is_none());
    }

    #[test]
    fn sticky_cookie_keeps_pool_while_it_has_weight() {
        fastrand::seed(3);
        let s = split(&[99, 1], true);
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=b; sg_pool=p1; c=d"),
        );
        assert_eq!(shares(&s, 500, &h), vec![0, 500]);
        assert!(s.pick(&h).unwrap().set_cookie.is_none());

        // Without weight the cookie is ignored and the client is reassigned.
        let s = split(&[1, 0], true);
        let c = s.pick(&h).unwrap();
        assert_eq!(c.pool.name.as_str(), "p0");
        assert_eq!(
            c.set_cookie.unwrap(),
            "sg_pool=p0; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    fn learning(weights: &[u32], table: &Arc<SessionTable>) -> Split {
        split(weights, false).with_sessions(Some(Arc::clone(table)))
    }

    fn session(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("mcp-session-id", HeaderValue::from_str(id).unwrap());
        h
    }

    #[tokio::test(start_paused = true)]
    async fn learned_sessions_keep_their_pool_while_it_has_weight() {
        fastrand::seed(11);
        let table = Arc::new(SessionTable::new(
            &crate::control_plane::config::spec::LearnSpec {
                header: http::HeaderName::from_static("mcp-session-id"),
                idle: std::time::Duration::from_secs(60),
                max_sessions: 1000,
            },
        ));
        // 200 sessions start at 95/5; the agent names each in its first answer.
        let start = learning(&[95, 5], &table);
        let mut pinned = Vec::new();
        for i in 0..200 {
            let c = start.pick(&HeaderMap::new()).unwrap();
            let pool = c.pool.name.clone();
            start.learn(c.session.unwrap(), &session(&format!("s{i}")), &pool);
            pinned.push(pool);
        }
        assert_eq!(table.len(), 200);
        // Later snapshots (steps 25 and 50) keep every session where it was.
        for weights in [[75, 25], [50, 50]] {
            let s = learning(&weights, &table);
            for (i, pool) in pinned.iter().enumerate() {
                let c = s.pick(&session(&format!("s{i}"))).unwrap();
                assert_eq!(&c.pool.name, pool, "session s{i} bounced");
                s.learn(c.session.unwrap(), &session(&format!("s{i}")), &c.pool.name);
            }
            // New sessions follow the weights.
            let fresh = shares(&s, 4_000, &session("never-seen"));
            let share = fresh[1] as f64 / 4_000.0;
            let want = f64::from(weights[1]) / 100.0;
            assert!((share - want).abs() < 0.04, "{share} vs {want}");
        }
        // The rollout ends with p0 at 0: its sessions move and are pinned anew.
        let done = learning(&[0, 100], &table);
        let moved = pinned.iter().position(|p| p.as_str() == "p0").unwrap();
        let id = session(&format!("s{moved}"));
        let c = done.pick(&id).unwrap();
        assert_eq!(c.pool.name.as_str(), "p1");
        done.learn(c.session.unwrap(), &HeaderMap::new(), &c.pool.name);
        let back = learning(&[50, 50], &table);
        assert_eq!(back.pick(&id).unwrap().pool.name.as_str(), "p1");
    }

    #[test]
    fn cookie_values_are_found_among_many() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_static("x=1"));
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("y=2;  z=\"3\""),
        );
        assert_eq!(cookie_value(&h, "z"), Some("3"));
        assert_eq!(cookie_value(&h, "x"), Some("1"));
        assert_eq!(cookie_value(&h, "w"), None);
    }
}
