//! Route matching: which route serves a request.
//!
//! Routes are sorted once, at snapshot build, by a [`Specificity`] summary: exact
//! host, then wildcard host, then any host; then the longer path prefix; then more
//! header conditions; then a method condition. Ties keep file order. A request takes
//! the first route in that order that matches, which is the most specific match.
//! [`RouteIndex`] finds that route without trying the routes whose host cannot match.
//!
//! This module does not choose a pool (see `split`) or a backend (see `balance`).

mod index;

use std::cmp::Ordering;

use http::{HeaderMap, Method};

use crate::control_plane::config::spec::{HostMatch, MatchSpec};

pub use index::RouteIndex;

/// What a request offers to the matcher. `host` is without port.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Orders matchers from least to most specific.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    /// 0 any, 1 wildcard, 2 exact.
    host_rank: u8,
    /// Longer wildcard suffixes are more specific (`*.a.b.c` over `*.c`).
    host_len: usize,
    prefix_len: usize,
    header_count: usize,
    has_method: bool,
}

impl Specificity {
    pub fn of(m: &MatchSpec) -> Self {
        let (host_rank, host_len) = match &m.host {
            HostMatch::Any => (0, 0),
            HostMatch::Wildcard(suffix) => (1, suffix.len()),
            HostMatch::Exact(host) => (2, host.len()),
        };
        Specificity {
            host_rank,
            host_len,
            prefix_len: m.path_prefix.len(),
            header_count: m.headers.len(),
            has_method: !m.methods.is_empty(),
        }
    }
}

/// Sorts indices of `matchers` into precedence order (most specific first, ties in
/// file order). Used by the snapshot and by `check` so both show the same order.
pub fn precedence_order<'a>(matchers: impl Iterator<Item = &'a MatchSpec>) -> Vec<usize> {
    let keys: Vec<Specificity> = matchers.map(Specificity::of).collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // sort_by is stable: equal specificity keeps file order.
    order.sort_by(|&a, &b| keys[b].cmp(&keys[a]).then(Ordering::Equal));
    order
}

/// Whether `m` matches the request.
pub fn matches(m: &MatchSpec, req: &RequestView<'_>) -> bool {
    host_matches(&m.host, req.host) && matches_beyond_host(m, req)
}

/// Whether `m`'s path, method and header conditions match the request, its host
/// condition aside (for [`RouteIndex`], which only offers routes whose host matches).
#[inline]
pub fn matches_beyond_host(m: &MatchSpec, req: &RequestView<'_>) -> bool {
    path_matches(&m.path_prefix, req.path)
        && (m.methods.is_empty() || m.methods.iter().any(|x| x == req.method))
        && m.headers
            .iter()
            .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
}

fn host_matches(rule: &HostMatch, host: Option<&str>) -> bool {
    match rule {
        HostMatch::Any => true,
        HostMatch::Exact(want) => host.is_some_and(|h| h.eq_ignore_ascii_case(want)),
        HostMatch::Wildcard(suffix) => host.is_some_and(|h| {
            h.len() > suffix.len()
                && h.is_char_boundary(h.len() - suffix.len())
                && h[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }),
    }
}

/// Prefixes match whole path segments: `/api` matches `/api` and `/api/x`, not
/// `/apix`; a prefix ending in `/` matches anything below it.
fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path.starts_with(prefix)
        && matches!(
            path.as_bytes().get(prefix.len()),
            None | Some(b'/') | Some(b'?')
        )
}

/// Strips a port from a `Host` value (`a.b:8080` → `a.b`, `[::1]:80` → `[::1]`).
// Byte scans: `str::rfind` with a char pattern cost far more for a short host
// (benches/JOURNAL.md, eighth pass), and every request routes by one.
pub fn host_without_port(host: &str) -> &str {
    let bytes = host.as_bytes();
    if bytes.first() == Some(&b'[') {
        return match bytes.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match bytes.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn spec(host: HostMatch, prefix: &str, headers: &[(&str, &str)]) -> MatchSpec {
        MatchSpec {
            host,
            path_prefix: prefix.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        HeaderName::from_bytes(n.as_bytes()).unwrap(),
                        HeaderValue::from_str(v).unwrap(),
                    )
                })
                .collect(),
            methods: vec![],
        }
    }

    fn first_match(specs: &[MatchSpec], req: &RequestView<'_>) -> Option<usize> {
        precedence_order(specs.iter())
            .into_iter()
            .find(|&i| matches(&specs[i], req))
    }

    fn view<'a>(host: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            host: Some(host),
            path,
            method: &Method::GET,
            headers,
        }
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let specs = [
            spec(HostMatch::Any, "/", &[]),
            spec(HostMatch::Wildcard(".agents.local".into()), "/", &[]),
            spec(HostMatch::Exact("a.agents.local".into()), "/", &[]),
        ];
        let h = HeaderMap::new();
        assert_eq!(
            first_match(&specs, &view("a.agents.local", "/", &h)),
            Some(2)
        );
        assert_eq!(
            first_match(&specs, &view("B.Agents.Local", "/", &h)),
            Some(1)
        );
        assert_eq!(first_match(&specs, &view("agents.local", "/", &h)), Some(0));
    }

    #[test]
    fn longer_prefix_wins_and_matches_whole_segments() {
        let specs = [
            spec(HostMatch::Any, "/", &[]),
            spec(HostMatch::Any, "/api", &[]),
            spec(HostMatch::Any, "/api/v2/", &[]),
        ];
        let h = HeaderMap::new();
        assert_eq!(first_match(&specs, &view("x", "/api/v2/run", &h)), Some(2));
        assert_eq!(first_match(&specs, &view("x", "/api/v1", &h)), Some(1));
        assert_eq!(first_match(&specs, &view("x", "/api", &h)), Some(1));
        assert_eq!(first_match(&specs, &view("x", "/apix", &h)), Some(0));
    }

    #[test]
    fn header_condition_beats_plain_and_ties_keep_file_order() {
        let specs = [
            spec(HostMatch::Any, "/", &[]),
            spec(HostMatch::Any, "/", &[("x-canary", "always")]),
            spec(HostMatch::Any, "/", &[("x-canary", "always")]),
        ];
        let mut h = HeaderMap::new();
        assert_eq!(first_match(&specs, &view("x", "/", &h)), Some(0));
        h.insert("x-canary", HeaderValue::from_static("always"));
        assert_eq!(first_match(&specs, &view("x", "/", &h)), Some(1));
        h.insert("x-canary", HeaderValue::from_static("never"));
        assert_eq!(first_match(&specs, &view("x", "/", &h)), Some(0));
    }

    #[test]
    fn method_condition_is_checked() {
        let mut post_only = spec(HostMatch::Any, "/", &[]);
        post_only.methods = vec![Method::POST];
        let h = HeaderMap::new();
        assert!(!matches(&post_only, &view("x", "/", &h)));
        let req = RequestView {
            method: &Method::POST,
            ..view("x", "/", &h)
        };
        assert!(matches(&post_only, &req));
    }

    #[test]
    fn no_host_matches_only_any() {
        let exact = spec(HostMatch::Exact("a".into()), "/", &[]);
        let h = HeaderMap::new();
        let req = RequestView {
            host: None,
            ..view("a", "/", &h)
        };
        assert!(!matches(&exact, &req));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("a.b:8080"), "a.b");
        assert_eq!(host_without_port("a.b"), "a.b");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }
}
