//! An index over routes in precedence order, so `find` does not try every route.
//!
//! Precedence sorts by host kind first (exact, then wildcard, then any host), so the
//! first match in precedence order is: the first matching route among those whose
//! exact host is the request's host; else, among wildcard routes, the first match
//! in the group of the longest suffix the host ends with (longer suffixes come
//! first, and two different suffixes of one length cannot both match one host);
//! else the first matching any-host route. Routes whose host cannot match are never
//! looked at, and within each group the routes keep their precedence order, so the
//! result is exactly the linear scan's (a property test below holds it to that).
//!
//! Hosts compare ASCII case-insensitively (as [`super::matches`] does): the index
//! keys are lowercased at build and the request host is lowercased for the lookup,
//! on the stack unless it is longer than any valid DNS name.
//!
//! This module decides which routes' host conditions match; the caller's predicate
//! decides the rest (path, method, headers: [`super::matches_beyond_host`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::control_plane::config::spec::{HostMatch, MatchSpec};

/// Longest host lowercased without allocating (DNS names are at most 253 bytes).
const STACK_HOST: usize = 256;

/// Lowercased host (or wildcard suffix) → route positions in precedence order.
type HostMap = HashMap<Box<str>, Box<[u32]>, BuildHasherDefault<HostHasher>>;

/// Positions of routes (into the precedence-ordered list), grouped by host.
#[derive(Debug, Default)]
pub struct RouteIndex {
    /// Lowercased exact host → its routes, in precedence order.
    exact: HostMap,
    /// Lowercased wildcard suffix (e.g. `.agents.local`) → its routes, in precedence
    /// order.
    wildcard: HostMap,
    /// The distinct byte lengths of the wildcard suffixes, longest first.
    wildcard_lens: Box<[usize]>,
    /// Any-host routes, in precedence order.
    any: Box<[u32]>,
}

impl RouteIndex {
    /// Indexes `matchers`, which must be in precedence order (see
    /// [`super::precedence_order`]); positions refer to that order.
    pub fn build<'a>(matchers: impl Iterator<Item = &'a MatchSpec>) -> RouteIndex {
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut any = Vec::new();
        for (i, m) in matchers.enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 routes");
            match &m.host {
                HostMatch::Exact(host) => exact.entry(lower(host)).or_default().push(i),
                HostMatch::Wildcard(suffix) => wildcard.entry(lower(suffix)).or_default().push(i),
                HostMatch::Any => any.push(i),
            }
        }
        let mut wildcard_lens: Vec<usize> = wildcard.keys().map(|s| s.len()).collect();
        wildcard_lens.sort_unstable_by(|a, b| b.cmp(a));
        wildcard_lens.dedup();
        let boxed = |m: HashMap<Box<str>, Vec<u32>>| {
            m.into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect()
        };
        RouteIndex {
            exact: boxed(exact),
            wildcard: boxed(wildcard),
            wildcard_lens: wildcard_lens.into(),
            any: any.into(),
        }
    }

    /// The position of the first route in precedence order whose host condition
    /// matches `host` and for which `rest` (the other conditions) holds: what a
    /// linear scan with [`super::matches`] returns when `rest` is
    /// [`super::matches_beyond_host`].
    #[inline]
    pub fn find(&self, host: Option<&str>, rest: impl Fn(usize) -> bool) -> Option<usize> {
        let first = |group: &[u32]| group.iter().map(|&i| i as usize).find(|&i| rest(i));
        // Without host routes there is nothing to look up (nor to lowercase).
        let has_host_routes = !self.exact.is_empty() || !self.wildcard.is_empty();
        if let Some(host) = host.filter(|_| has_host_routes) {
            // Initialised only when needed: zeroing it costs as much as a lookup.
            let mut buf: [u8; STACK_HOST];
            let owned;
            let host = if !host.bytes().any(|b| b.is_ascii_uppercase()) {
                host
            } else if host.len() <= STACK_HOST {
                buf = [0u8; STACK_HOST];
                let buf = &mut buf[..host.len()];
                buf.copy_from_slice(host.as_bytes());
                buf.make_ascii_lowercase();
                // Lowercasing ASCII bytes keeps UTF-8 valid, so this cannot fail.
                std::str::from_utf8(buf).unwrap_or(host)
            } else {
                owned = host.to_ascii_lowercase();
                &owned
            };
            if !self.exact.is_empty() {
                if let Some(found) = self.exact.get(host).and_then(|g| first(g)) {
                    return Some(found);
                }
            }
            for &len in self.wildcard_lens.iter() {
                // A wildcard needs at least one character before its suffix.
                if host.len() <= len || !host.is_char_boundary(host.len() - len) {
                    continue;
                }
                let suffix = &host[host.len() - len..];
                if let Some(found) = self.wildcard.get(suffix).and_then(|g| first(g)) {
                    return Some(found);
                }
            }
        }
        first(&self.any)
    }
}

fn lower(s: &str) -> Box<str> {
    s.to_ascii_lowercase().into_boxed_str()
}

/// A fixed-seed hash that takes 8 bytes per step (FxHash's rotate-xor-multiply)
/// and ends with splitmix64's finaliser so every bit reaches the bits the table uses.
///
/// SipHash (the default) took about half of a `find`'s time, and byte-at-a-time
/// FNV no less. Resistance to chosen collisions buys nothing here: the maps are
/// built from the config and only read on the request path, so a request's host
/// cannot add entries or lengthen a chain, only land in one of the configured ones.
#[derive(Debug, Default)]
struct HostHasher(u64);

impl Hasher for HostHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // The length goes in too, so "a" and "a\0" differ.
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            let word = u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59);
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName, HeaderValue, Method};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    use super::super::{matches, matches_beyond_host, precedence_order, RequestView};
    use super::*;

    const HOSTS: &[&str] = &["a.x", "A.X", "b.x", "c.a.x", "x", "ax", "é.x", "É.a.x"];
    const SUFFIXES: &[&str] = &[".x", ".X", ".a.x", "x", ".b.x", ".x.y"];
    const PREFIXES: &[&str] = &["/", "/a", "/a/", "/a/b", "/ab"];
    const PATHS: &[&str] = &["/", "/a", "/a/b", "/a/b/c", "/ab", "/a?q=1", "/b"];

    fn host_match() -> impl Strategy<Value = HostMatch> {
        prop_oneof![
            Just(HostMatch::Any),
            proptest::sample::select(HOSTS).prop_map(|h| HostMatch::Exact(h.into())),
            proptest::sample::select(SUFFIXES).prop_map(|s| HostMatch::Wildcard(s.into())),
        ]
    }

    fn matcher() -> impl Strategy<Value = MatchSpec> {
        let header = (any::<bool>(), any::<bool>());
        let methods = proptest::sample::select(vec![vec![], vec![Method::GET], vec![Method::POST]]);
        (
            host_match(),
            proptest::sample::select(PREFIXES),
            header,
            methods,
        )
            .prop_map(|(host, prefix, (has_header, value), methods)| MatchSpec {
                host,
                path_prefix: prefix.into(),
                headers: if has_header {
                    let v = if value { "1" } else { "2" };
                    vec![(HeaderName::from_static("x-k"), HeaderValue::from_static(v))]
                } else {
                    vec![]
                },
                methods,
            })
    }

    /// (host or none, path, POST?, x-k header value if any)
    fn request() -> impl Strategy<Value = (Option<&'static str>, &'static str, bool, Option<bool>)>
    {
        (
            proptest::option::of(proptest::sample::select(HOSTS)),
            proptest::sample::select(PATHS),
            any::<bool>(),
            proptest::option::of(any::<bool>()),
        )
    }

    #[test]
    fn indexed_find_returns_what_the_linear_scan_returns() {
        let config = Config {
            cases: 2_000,
            failure_persistence: None,
            ..Config::default()
        };
        let seed = [7u8; 32];
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        let cases = (
            proptest::collection::vec(matcher(), 0..24),
            proptest::collection::vec(request(), 1..16),
        );
        let result = runner.run(&cases, |(specs, requests)| {
            let order = precedence_order(specs.iter());
            let sorted: Vec<&MatchSpec> = order.iter().map(|&i| &specs[i]).collect();
            let index = RouteIndex::build(sorted.iter().copied());
            for (host, path, post, header) in requests {
                let mut headers = HeaderMap::new();
                if let Some(one) = header {
                    let v = if one { "1" } else { "2" };
                    headers.insert("x-k", HeaderValue::from_static(v));
                }
                let method = if post { Method::POST } else { Method::GET };
                let req = RequestView {
                    host,
                    path,
                    method: &method,
                    headers: &headers,
                };
                let linear = sorted.iter().position(|m| matches(m, &req));
                let indexed = index.find(host, |i| matches_beyond_host(sorted[i], &req));
                prop_assert_eq!(indexed, linear, "{:?} {:?}", req, sorted);
            }
            Ok(())
        });
        if let Err(err) = result {
            panic!("{err}");
        }
    }

    #[test]
    fn long_uppercase_hosts_are_found() {
        // Longer than the stack buffer: lowercased on the heap, still found.
        let long = format!("{}.x", "a".repeat(STACK_HOST));
        let spec = MatchSpec {
            host: HostMatch::Exact(long.clone()),
            ..MatchSpec::default()
        };
        let index = RouteIndex::build([&spec].into_iter());
        assert_eq!(
            index.find(Some(&long.to_ascii_uppercase()), |_| true),
            Some(0)
        );
        assert_eq!(index.find(Some("a.x"), |_| true), None);
    }
}
