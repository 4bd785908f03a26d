//! Traffic shifting: choosing the pool (version) a route's request goes to.
//!
//! A [`Split`] holds the route's pools with their weights, built at snapshot time.
//! With a sticky cookie, a client that names a pool still carrying weight stays on it;
//! others are assigned by weight and told (via `Set-Cookie`) where they went.
//!
//! This module does not pick a backend inside the pool (see `balance`).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::snapshot::Pool;

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
}

/// The outcome of [`Split::pick`].
#[derive(Debug)]
pub struct Choice<'a> {
    pub pool: &'a Arc<Pool>,
    /// Position of the chosen entry in [`Split::entries`].
    pub index: usize,
    /// `Set-Cookie` to add to the response: the client was (re)assigned.
    pub set_cookie: Option<&'a HeaderValue>,
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
        }
    }

    pub fn entries(&self) -> &[SplitEntry] {
        &self.entries
    }

    /// Chooses a pool for a request with these headers, or `None` when every weight is 0.
    pub fn pick(&self, headers: &HeaderMap) -> Option<Choice<'_>> {
        if let Some(name) = &self.sticky_cookie {
            if let Some(wanted) = cookie_value(headers, name) {
                if let Some((index, e)) = self
                    .entries
                    .iter()
                    .enumerate()
                    .find(|(_, e)| e.weight > 0 && e.pool.name.as_str() == wanted)
                {
                    return Some(Choice {
                        pool: &e.pool,
                        index,
                        set_cookie: None,
                    });
                }
            }
        }
        let (index, entry) = self.pick_weighted(fastrand::u64(..self.total.max(1)))?;
        Some(Choice {
            pool: &entry.pool,
            index,
            set_cookie: entry.set_cookie.as_ref(),
        })
    }

    /// The entry (and its position) whose cumulative weight range holds `r`
    /// (0 ≤ r < total).
    fn pick_weighted(&self, r: u64) -> Option<(usize, &SplitEntry)> {
        if self.total == 0 {
            return None;
        }
        let mut acc = 0u64;
        for (i, e) in self.entries.iter().enumerate() {
            acc += u64::from(e.weight);
            if r < acc {
                return Some((i, e));
            }
        }
        None
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, if any.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
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
    use crate::snapshot::Pool;

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
