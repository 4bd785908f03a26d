//! Traffic shifting: choosing the pool (version) a route's request goes to.
//!
//! A [`Split`] holds the route's pools with their weights, built at snapshot time.
//! With a sticky cookie, a client that names a pool still carrying weight stays on it;
//! others are assigned by weight and told (via `Set-Cookie`) where they went. With
//! a learned session header, a request naming a session goes to the pool its value
//! pins it to ([`pin`]: a function of the value and the weights, the same on every
//! replica; growing a pool's share only moves sessions onto it). A session the
//! agent named in the answer to a request without one was created on the pool
//! that answered, which the value may not pin it to: with `prefix`, the id goes
//! to the client as `<pool>~<id>` and comes back stripped to `<id>` on its way to
//! the pool it names (while that pool carries weight), so every replica agrees;
//! without it, the replica that saw the answer remembers it (`sessions`, taught by
//! [`Split::answered`]).
//!
//! This module does not pick a backend inside the pool (see `balance`).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::control_plane::config::spec::PoolName;
use crate::data_plane::sessions::{SessionKey, SessionTable};
use crate::data_plane::snapshot::Pool;

pub(crate) mod pin;

/// One pool of a split.
#[derive(Debug)]
pub struct SplitEntry {
    pub pool: Arc<Pool>,
    pub weight: u32,
    /// The pool name's stable hash, for [`pin`].
    name_hash: u64,
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
    /// With `prefix`: the length of the `<pool>~` the request's id starts with,
    /// which the agent must not see (0: none).
    strip: usize,
}

impl Pin {
    /// The bytes of the session header's value to remove before the request goes
    /// upstream: a `<pool>~` prefix the gateway added (0: none).
    pub fn strip(&self) -> usize {
        self.strip
    }
}

/// What separates the pool from the agent's id in a prefixed session id. Not a
/// character pool names may contain, so the first one ends the pool.
const PREFIX_END: u8 = b'~';

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
                    name_hash: pin::stable_hash(pool.name.as_str().as_bytes()),
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
            if let Some(value) = table.value_of(headers) {
                return self.pick_session(table, value.as_bytes());
            }
            session = Some(Pin {
                key: None,
                strip: 0,
            });
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

    /// A request naming a session (the header's `value`): to the pool a
    /// `<pool>~` prefix names while it carries weight; else to where the agent
    /// created it on this replica (the cache); else where the value pins it on
    /// every replica.
    fn pick_session(&self, table: &SessionTable, value: &[u8]) -> Option<Choice<'_>> {
        let key = SessionKey(pin::stable_hash(value));
        let mut strip = 0;
        if table.settings().prefix {
            if let Some((named, len)) = self.prefixed(value) {
                strip = len;
                if named.weight > 0 {
                    return Some(Choice {
                        pool: &named.pool,
                        set_cookie: None,
                        session: Some(Pin {
                            key: Some(key),
                            strip,
                        }),
                    });
                }
                // Its pool lost its weight (a rollback): the value decides, as
                // on every replica; the agent there will not know the session.
            }
        }
        let e = match table.lookup(key).map(|pool| self.carrying(&pool)) {
            Some(Some(e)) => e,
            Some(None) => {
                // Its pool lost its weight: from now on the key decides.
                table.forget(key);
                self.pinned(key)?
            }
            None => self.pinned(key)?,
        };
        Some(Choice {
            pool: &e.pool,
            set_cookie: None,
            session: Some(Pin {
                key: Some(key),
                strip,
            }),
        })
    }

    /// The entry a `<pool>~<id>` value names and the prefix's length, when the
    /// value starts with one of this split's pools and the separator.
    fn prefixed(&self, value: &[u8]) -> Option<(&SplitEntry, usize)> {
        let end = value.iter().position(|b| *b == PREFIX_END)?;
        let name = value.get(..end)?;
        let e = self
            .entries
            .iter()
            .find(|e| e.pool.name.as_str().as_bytes() == name)?;
        Some((e, end + 1))
    }

    /// Whether answers on this route have their session id rewritten
    /// (`sticky.prefix`): they must come in a form whose fields can be changed.
    pub fn prefixes_sessions(&self) -> bool {
        self.sessions.as_ref().is_some_and(|t| t.settings().prefix)
    }

    /// After `pool` answered a request picked with `pin`. With `prefix`: the
    /// session id the answer names goes to the client as `<pool>~<id>`, wherever
    /// it came from (an agent echoing the id it was sent gets the same prefix
    /// back). Without: remembers a session the answer names that the request did
    /// not (the agent created it on `pool`); sessions the request named are
    /// pinned by their key and need no memory.
    pub fn answered(&self, pin: Pin, response: &mut HeaderMap, pool: &PoolName) {
        let Some(table) = &self.sessions else {
            return;
        };
        if table.settings().prefix {
            let header = &table.settings().header;
            if let Some(value) = response.get(header) {
                let mut tagged = Vec::with_capacity(pool.as_str().len() + 1 + value.len());
                tagged.extend_from_slice(pool.as_str().as_bytes());
                tagged.push(PREFIX_END);
                tagged.extend_from_slice(value.as_bytes());
                // Pool names and the separator are visible ASCII: the value stays
                // a valid field value.
                if let Ok(tagged) = HeaderValue::from_bytes(&tagged) {
                    response.insert(header.clone(), tagged);
                }
            }
            return;
        }
        self.learn(pin, response, pool);
    }

    /// [`Split::answered`] without `prefix`, from an answer whose fields stay as
    /// they came (the gateway's HTTP/1 client, never used on prefixing routes).
    pub fn learn(&self, pin: Pin, response: &HeaderMap, pool: &PoolName) {
        let Some(table) = &self.sessions else {
            return;
        };
        if let Some(key) = table.key_of(response) {
            if pin.key != Some(key) {
                table.remember(key, pool);
            }
        }
    }

    /// The entry session `key` is pinned to by the weights alone ([`pin`]).
    fn pinned(&self, key: SessionKey) -> Option<&SplitEntry> {
        let i = pin::pick(key.0, self.entries.iter().map(|e| (e.name_hash, e.weight)))?;
        self.entries.get(i)
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
    use crate::control_plane::config::spec::LearnSpec;
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

    fn learn_spec() -> LearnSpec {
        LearnSpec {
            header: http::HeaderName::from_static("mcp-session-id"),
            idle: std::time::Duration::from_secs(60),
            max_sessions: 1000,
            prefix: false,
        }
    }

    fn prefixing() -> Arc<SessionTable> {
        Arc::new(SessionTable::new(&LearnSpec {
            prefix: true,
            ..learn_spec()
        }))
    }

    /// What the client gets for an answer from `pool` naming session `id`.
    fn tagged(s: &Split, pin: Pin, id: &str, pool: &PoolName) -> String {
        let mut answer = session(id);
        s.answered(pin, &mut answer, pool);
        answer["mcp-session-id"].to_str().unwrap().to_owned()
    }

    #[test]
    fn prefixed_agent_named_sessions_agree_on_every_replica_through_a_rollout() {
        fastrand::seed(17);
        // Replica A sees the agent name 300 sessions at 95/5; replicas B and C,
        // with tables of their own that never learn anything, get every later
        // request.
        let (ta, tb, tc) = (prefixing(), prefixing(), prefixing());
        let a = learning(&[95, 5], &ta);
        let mut sessions = Vec::new();
        for i in 0..300 {
            let c = a.pick(&HeaderMap::new()).unwrap();
            let pool = c.pool.name.clone();
            let id = tagged(&a, c.session.unwrap(), &format!("agent-{i}"), &pool);
            assert_eq!(id, format!("{pool}~agent-{i}"));
            sessions.push((id, pool));
        }
        assert!(
            sessions.iter().any(|(_, p)| p.as_str() == "p1"),
            "some on green"
        );
        for weights in [[95, 5], [75, 25], [50, 50]] {
            for t in [&tb, &tc] {
                let s = learning(&weights, t);
                for (id, pool) in &sessions {
                    let c = s.pick(&session(id)).unwrap();
                    assert_eq!(&c.pool.name, pool, "{id} bounced at {weights:?}");
                    let pin = c.session.unwrap();
                    // The agent sees its own id; an echo of it goes back prefixed.
                    let agent_sees = &id.as_bytes()[pin.strip()..];
                    assert_eq!(agent_sees, id.split_once('~').unwrap().1.as_bytes());
                    let echo = std::str::from_utf8(agent_sees).unwrap();
                    assert_eq!(&tagged(&s, pin, echo, &c.pool.name), id);
                }
            }
        }
        assert!(
            ta.is_empty() && tb.is_empty() && tc.is_empty(),
            "no table used"
        );
        // Rollback: green's sessions go to blue on every replica (stripped, so
        // blue's agent sees an id it does not know and the client starts again).
        let back = learning(&[100, 0], &tb);
        for (id, _) in &sessions {
            let c = back.pick(&session(id)).unwrap();
            assert_eq!(c.pool.name.as_str(), "p0");
            assert_eq!(c.session.unwrap().strip(), 3);
        }
    }

    #[test]
    fn only_a_known_pool_and_the_separator_make_a_prefix() {
        let t = prefixing();
        let s = learning(&[50, 50], &t);
        for (id, strip) in [
            ("p1~x", 3),
            ("p1~", 3),
            ("p1~a~b", 3),
            ("p7~x", 0),
            ("p1x", 0),
            ("~p1", 0),
            ("client-chosen", 0),
        ] {
            let c = s.pick(&session(id)).unwrap();
            assert_eq!(c.session.unwrap().strip(), strip, "{id}");
            if strip > 0 {
                assert_eq!(c.pool.name.as_str(), "p1", "{id}");
            }
        }
        // Without `prefix`, a value that looks prefixed is just a value.
        let plain = learning(&[50, 50], &Arc::new(SessionTable::new(&learn_spec())));
        assert_eq!(
            plain
                .pick(&session("p1~x"))
                .unwrap()
                .session
                .unwrap()
                .strip(),
            0
        );
        assert!(!plain.prefixes_sessions() && s.prefixes_sessions());
    }

    fn pool_of(s: &Split, h: &HeaderMap) -> String {
        s.pick(h).expect("a pool").pool.name.to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn agent_named_sessions_keep_their_pool_while_it_has_weight() {
        fastrand::seed(11);
        let table = Arc::new(SessionTable::new(&learn_spec()));
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
            let mut green = 0;
            for j in 0..4_000 {
                green += usize::from(pool_of(&s, &session(&format!("new-{j}"))) == "p1");
            }
            let share = green as f64 / 4_000.0;
            let want = f64::from(weights[1]) / 100.0;
            assert!((share - want).abs() < 0.04, "{share} vs {want}");
        }
        // The rollout ends with p0 at 0: its sessions move, and the cache forgets
        // them: from then on their key decides, as on every other replica.
        let done = learning(&[0, 100], &table);
        let moved = pinned.iter().position(|p| p.as_str() == "p0").unwrap();
        let id = session(&format!("s{moved}"));
        assert_eq!(pool_of(&done, &id), "p1");
        let before = table.len();
        let back = learning(&[50, 50], &table);
        let k = table.key_of(&id).unwrap();
        assert_eq!(
            pool_of(&back, &id),
            back.pinned(k).unwrap().pool.name.to_string()
        );
        assert_eq!(table.len(), before, "forgotten once, when it moved");
    }

    #[test]
    fn two_replicas_pin_client_named_sessions_alike_without_sharing_a_table() {
        fastrand::seed(5);
        let (ta, tb) = (
            Arc::new(SessionTable::new(&learn_spec())),
            Arc::new(SessionTable::new(&learn_spec())),
        );
        for weights in [[95, 5], [75, 25], [50, 50]] {
            let (a, b) = (learning(&weights, &ta), learning(&weights, &tb));
            for i in 0..1_000 {
                let h = session(&format!("client-{i}"));
                let c = a.pick(&h).unwrap();
                assert_eq!(
                    c.pool.name,
                    b.pick(&h).unwrap().pool.name,
                    "{weights:?} {i}"
                );
                a.learn(c.session.unwrap(), &h, &c.pool.name);
            }
        }
        // Nothing was needed from the tables.
        assert!(ta.is_empty() && tb.is_empty());
    }

    #[test]
    fn a_growing_canary_keeps_its_sessions_and_rollback_returns_them() {
        let table = Arc::new(SessionTable::new(&learn_spec()));
        let ids: Vec<HeaderMap> = (0..2_000).map(|i| session(&format!("k{i}"))).collect();
        let mut on_green = vec![false; ids.len()];
        for weights in [[95, 5], [75, 25], [50, 50], [0, 100]] {
            let s = learning(&weights, &table);
            let mut green = 0usize;
            for (h, was) in ids.iter().zip(on_green.iter_mut()) {
                let now = pool_of(&s, h) == "p1";
                assert!(now || !*was, "a session left green at {weights:?}");
                *was = now;
                green += usize::from(now);
            }
            let share = green as f64 / ids.len() as f64;
            let want = f64::from(weights[1]) / 100.0;
            assert!((share - want).abs() < 0.04, "{share} vs {want}");
        }
        let rolled_back = learning(&[100, 0], &table);
        assert!(ids.iter().all(|h| pool_of(&rolled_back, h) == "p0"));
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
