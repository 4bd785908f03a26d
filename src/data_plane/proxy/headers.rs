//! Header rewriting between client and backend.
//!
//! Strips hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every field it names,
//! plus the classic hop-by-hop set), keeps the `Upgrade` pair for tunnels, and adds
//! `X-Forwarded-For/Proto/Host` and `X-Request-Id`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{self, Entry, HeaderName};
use http::{HeaderMap, HeaderValue};

use crate::control_plane::config::spec::Upgrades;
#[cfg(test)]
use crate::data_plane::http1::wire::HOP_BY_HOP_NAMES;
use crate::data_plane::http1::wire::{hop_by_hop_index, write_line, CONNECTION_AT};

/// Fields that only make sense on one connection (RFC 9110 §7.6.1 and RFC 7230's list).
/// `Connection` comes first: [`strip_hop_by_hop`] reads the fields it names.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether the request asks to switch protocols (WebSocket and friends, HTTP/1.1).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")))
}

/// Narrows an upgrade request's `Upgrade` field to the protocols `allowed` names
/// (in the client's order and spelling); false when it is no upgrade request or
/// none remain. A request that keeps none is forwarded as a plain one: its
/// `Upgrade` and `Connection` are hop-by-hop and go with the rest (RFC 9110 §7.8
/// lets an intermediary ignore an upgrade it does not take part in).
pub fn keep_allowed_upgrades(headers: &mut HeaderMap, allowed: &Upgrades) -> bool {
    if !is_upgrade_request(headers) {
        return false;
    }
    let mut offered = 0usize;
    let mut kept: Vec<&str> = Vec::new();
    for item in headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(connection_tokens)
    {
        offered += 1;
        if allowed.allows(item) {
            kept.push(item);
        }
    }
    if kept.is_empty() {
        return false;
    }
    if kept.len() < offered {
        // Items were tokens of a valid field value, so their join is one too.
        if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
            headers.insert(header::UPGRADE, value);
        }
    }
    true
}

/// Whether a backend's `101` switches to a protocol the route allows: its
/// `Upgrade` names exactly one (RFC 9110 §7.8), and that one is allowed.
pub fn switched_to_allowed(headers: &HeaderMap, allowed: &Upgrades) -> bool {
    let mut items = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(connection_tokens);
    matches!((items.next(), items.next()), (Some(one), None) if allowed.allows(one))
}

/// Joins the `cookie` fields of an HTTP/2 request into one, with `"; "` (RFC 9113
/// §8.2.3): h2 clients send each cookie as its own field, and an HTTP/1.1
/// upstream may read only one `Cookie` line.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for crumb in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    // Valid values joined by "; " are a valid value.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

fn connection_tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop fields. With `keep_upgrade`, the `Upgrade` field survives and
/// `Connection: upgrade` is set again, as the next hop needs both to switch protocols.
///
/// One pass over the field names finds which hop-by-hop fields are there, so a head
/// that has none (most requests) costs no hashing, and one that has some (most
/// upstream responses carry `Connection: keep-alive`) removes only those.
///
/// Returns whether `Connection` named other fields, which went too (any field,
/// `Host` included, may be gone then).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) -> bool {
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    let mut names_fields = false;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str().as_bytes()) {
            present[i] = true;
            any = true;
        }
    }
    if any {
        // Almost every `Connection` is one `keep-alive` or `close`, which names no
        // field: those skip the token walk (benches/JOURNAL.md, fourth pass).
        names_fields = present[CONNECTION_AT]
            && headers.get_all(header::CONNECTION).iter().any(|v| {
                let v = v.as_bytes().trim_ascii();
                !v.eq_ignore_ascii_case(b"keep-alive") && !v.eq_ignore_ascii_case(b"close")
            });
        if names_fields {
            // Fields named by Connection are hop-by-hop too; collect first (borrowing).
            // Tokens that are in the fixed set (or `close`) need no name of their own.
            let named: Vec<HeaderName> = headers
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(connection_tokens)
                .filter(|t| {
                    !t.eq_ignore_ascii_case("close")
                        && !HOP_BY_HOP
                            .iter()
                            .any(|h| t.eq_ignore_ascii_case(h.as_str()))
                })
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
                .collect();
            for name in named {
                headers.remove(name);
            }
        }
        for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, there)| *there) {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    names_fields
}

/// The client's address as a header value, made once per connection (formatting an
/// address per request was a measurable share of the request path).
pub fn client_value(client: IpAddr) -> HeaderValue {
    // An IP address is always a valid header value.
    HeaderValue::from_str(&client.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The forwarding fields of one request, worked out once: `X-Forwarded-For` is
/// appended to (a chain of proxies), `X-Forwarded-Proto` and `-Host` are set (never
/// trusted from the client), `X-Request-Id` is kept if present, else generated.
///
/// They are set into the request's header map ([`apply`](Self::apply), for hyper's
/// client) or written beside its fields straight into a request head
/// ([`write_fields`](Self::write_fields), for `http1::client`), with the same result
/// either way (a test compares them).
#[derive(Debug)]
pub struct Forwarding<'c> {
    client_value: &'c HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
    /// The id sent upstream: the client's own, or a new one.
    request_id: RequestId,
}

/// The `X-Request-Id` a request is forwarded with.
///
/// A new id is kept inline: making one is a counter increment and 16 hex digits,
/// with no allocation or reference count on the request path.
#[derive(Debug, Clone)]
pub enum RequestId {
    /// The client sent one; it is passed on unchanged.
    Client(HeaderValue),
    /// The gateway made one ([`RequestId::next`]): 32 lowercase hex digits.
    Generated([u8; RequestId::LEN]),
}

impl RequestId {
    /// Length of a generated id.
    pub const LEN: usize = 32;

    /// A process-unique id: a random per-process prefix, then a counter.
    pub fn next() -> RequestId {
        static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| {
            let mut digits = [0u8; 16];
            hex(fastrand::u64(..), &mut digits);
            digits
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; Self::LEN];
        id[..16].copy_from_slice(prefix);
        hex(n, &mut id[16..]);
        RequestId::Generated(id)
    }

    /// The id as it is written in a head.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Client(value) => value.as_bytes(),
            RequestId::Generated(id) => id,
        }
    }

    /// Whether the gateway made this id (so it is added to the request).
    pub fn is_generated(&self) -> bool {
        matches!(self, RequestId::Generated(_))
    }

    /// The id as a field value (hyper's client path takes the request's map).
    pub fn to_value(&self) -> HeaderValue {
        match self {
            RequestId::Client(value) => value.clone(),
            // Hex digits are always a valid field value.
            RequestId::Generated(id) => {
                HeaderValue::from_bytes(id).unwrap_or_else(|_| HeaderValue::from_static("0"))
            }
        }
    }
}

impl<'c> Forwarding<'c> {
    /// For a request with `headers`; `client_value` is [`client_value`] of the
    /// client's address, made once per connection.
    pub fn new(
        headers: &HeaderMap,
        client_value: &'c HeaderValue,
        proto: &'static str,
        host: Option<HeaderValue>,
    ) -> Self {
        let request_id = match headers.get(&X_REQUEST_ID) {
            Some(id) => RequestId::Client(id.clone()),
            None => RequestId::next(),
        };
        Forwarding {
            client_value,
            proto,
            host,
            request_id,
        }
    }

    /// The `X-Request-Id` the backend gets.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// Sets the fields in `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        // Entries: one hash per field, whether it is there or not.
        match headers.entry(&X_FORWARDED_FOR) {
            Entry::Occupied(mut earlier) => {
                let mut chain = Vec::new();
                self.chain(earlier.iter(), &mut chain);
                // The earlier lines that are used are visible ASCII, and so is an address.
                let chained =
                    HeaderValue::from_bytes(&chain).unwrap_or_else(|_| self.client_value.clone());
                earlier.insert(chained);
            }
            Entry::Vacant(slot) => {
                slot.insert(self.client_value.clone());
            }
        }
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        match &self.host {
            Some(host) => headers.insert(&X_FORWARDED_HOST, host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
        if self.request_id.is_generated() {
            headers.insert(&X_REQUEST_ID, self.request_id.to_value());
        }
    }

    /// Writes `headers` as head lines with the forwarding fields in place: the
    /// client's `X-Forwarded-Proto`/`-Host` left out, its `X-Forwarded-For` lines
    /// joined with the client's address, a new `X-Request-Id` when it sent none.
    /// One pass over the names, no hashing.
    pub fn write_fields(&self, headers: &HeaderMap, out: &mut Vec<u8>) {
        let mut chained = false;
        for (name, value) in headers {
            match forwarding_field(name) {
                Some(Field::For) => chained = true,
                Some(Field::Proto | Field::Host) => {}
                None => write_line(out, name.as_str().as_bytes(), value.as_bytes()),
            }
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        let earlier = chained.then(|| headers.get_all(&X_FORWARDED_FOR).iter());
        self.chain(earlier.into_iter().flatten(), out);
        out.extend_from_slice(b"\r\n");
        write_line(out, b"x-forwarded-proto", self.proto.as_bytes());
        if let Some(host) = &self.host {
            write_line(out, b"x-forwarded-host", host.as_bytes());
        }
        if self.request_id.is_generated() {
            write_line(out, b"x-request-id", self.request_id.as_bytes());
        }
    }

    /// The `X-Forwarded-For` value: the `earlier` lines that are text, as one
    /// comma-separated list (RFC 9110 §5.3), then the client's address.
    fn chain<'h>(&self, earlier: impl Iterator<Item = &'h HeaderValue>, out: &mut Vec<u8>) {
        for line in earlier.filter(|v| v.to_str().is_ok()) {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.client_value.as_bytes());
    }
}

/// The forwarding fields [`Forwarding::write_fields`] rewrites.
enum Field {
    For,
    Proto,
    Host,
}

fn forwarding_field(name: &HeaderName) -> Option<Field> {
    match name.as_str().len() {
        15 if name == X_FORWARDED_FOR => Some(Field::For),
        16 if name == X_FORWARDED_HOST => Some(Field::Host),
        17 if name == X_FORWARDED_PROTO => Some(Field::Proto),
        _ => None,
    }
}

fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_index_finds_every_listed_name_and_nothing_else() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(name.as_str().as_bytes(), HOP_BY_HOP_NAMES[i]);
            assert_eq!(
                hop_by_hop_index(name.as_str().as_bytes()),
                Some(i),
                "{name}"
            );
            let upper = name.as_str().to_ascii_uppercase();
            assert_eq!(hop_by_hop_index(upper.as_bytes()), Some(i), "{upper}");
            let mut first_up = name.as_str().as_bytes().to_vec();
            first_up[0].make_ascii_uppercase();
            assert_eq!(
                hop_by_hop_index(&first_up),
                Some(i),
                "{name}, first letter up"
            );
        }
        for other in [
            "host",
            "accept",
            "x-upgrade",
            "upgrade-insecure-requests",
            "connectionx",
            "keep-alivex",
            "tk",
            "content-length",
            "x-forwarded-for",
        ] {
            let name = HeaderName::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(hop_by_hop_index(name.as_str().as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn a_plain_keep_alive_or_close_names_nothing_but_later_lines_still_count() {
        let mut h = map(&[("connection", " Keep-Alive "), ("x-kept", "yes")]);
        assert!(!strip_hop_by_hop(&mut h, false), "nothing named");
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = map(&[
            ("connection", "close"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("x-kept", "yes"),
        ]);
        assert!(strip_hop_by_hop(&mut h, false), "x-secret was named");
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
        // The proxy trusts a false here to mean Host is still there.
        let mut h = map(&[("host", "a.local"), ("te", "trailers")]);
        assert!(!strip_hop_by_hop(&mut h, false));
        assert_eq!(h["host"], "a.local");
        let mut h = map(&[("host", "a.local"), ("connection", "host")]);
        assert!(strip_hop_by_hop(&mut h, false), "Host was named");
        assert!(!h.contains_key("host"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn the_fixed_list_has_connection_where_the_strip_reads_it() {
        assert_eq!(HOP_BY_HOP[CONNECTION_AT], header::CONNECTION);
    }

    #[test]
    fn only_allowed_upgrade_protocols_are_kept_in_any_case() {
        let ws = Upgrades::default();
        let mut h = map(&[("upgrade", "WebSocket, foo"), ("connection", "Upgrade")]);
        assert!(keep_allowed_upgrades(&mut h, &ws));
        assert_eq!(h["upgrade"], "WebSocket");
        let mut h = map(&[
            ("upgrade", "h2c"),
            ("connection", "Upgrade, HTTP2-Settings"),
        ]);
        assert!(!keep_allowed_upgrades(&mut h, &ws));
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        let mut h = map(&[("upgrade", "websocket")]);
        assert!(
            !keep_allowed_upgrades(&mut h, &ws),
            "no Connection: upgrade"
        );
        let none = Upgrades::new([]);
        let mut h = map(&[("upgrade", "websocket"), ("connection", "upgrade")]);
        assert!(!keep_allowed_upgrades(&mut h, &none));
        let h2c = Upgrades::new(["h2c", "websocket"]);
        let mut h = map(&[
            ("upgrade", "foo/2, H2C, websocket/13"),
            ("connection", "upgrade"),
        ]);
        assert!(keep_allowed_upgrades(&mut h, &h2c));
        assert_eq!(h["upgrade"], "H2C, websocket/13");
    }

    #[test]
    fn h2_cookie_crumbs_are_joined_with_semicolons() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2; c=3");
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
    }

    #[test]
    fn a_switch_must_name_one_allowed_protocol() {
        let ws = Upgrades::default();
        assert!(switched_to_allowed(&map(&[("upgrade", "WebSocket")]), &ws));
        assert!(!switched_to_allowed(&map(&[("upgrade", "h2c")]), &ws));
        assert!(!switched_to_allowed(&map(&[]), &ws));
        assert!(!switched_to_allowed(
            &map(&[("upgrade", "websocket, h2c")]),
            &ws
        ));
    }

    #[test]
    fn upgrade_pair_survives_for_tunnels() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarding_appends_client_and_keeps_request_id() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1"), ("x-request-id", "abc")]);
        let client = "127.0.0.1".parse().unwrap();
        let value = client_value(client);
        let host = Some(HeaderValue::from_static("agents.local"));
        Forwarding::new(&h, &value, "http", host).apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "agents.local");
        assert_eq!(h["x-request-id"], "abc");
    }

    #[test]
    fn named_fields_in_any_case_go_and_an_unasked_upgrade_goes_too() {
        // A response (keep_upgrade = false) naming Upgrade, a mixed-case custom field
        // and tokens of the fixed set.
        let mut h = map(&[
            ("connection", "close, Upgrade, X-Private, TE"),
            ("upgrade", "h2c"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("server", "agent"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["server"], "agent");
        // No hop-by-hop field at all: the map is left exactly as it was.
        let mut h = map(&[("host", "a"), ("accept", "*/*")]);
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }

    #[test]
    fn forwarding_joins_every_earlier_forwarded_for_line_into_one_chain() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-host", "spoofed"),
        ]);
        let client = "192.0.2.7".parse().unwrap();
        let value = client_value(client);
        Forwarding::new(&h, &value, "https", None).apply(&mut h);
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["10.0.0.1, 10.0.0.2, 192.0.2.7"]);
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-request-id"].len(), 32);
    }

    /// The head lines `write_fields` produces, sorted.
    fn written(f: &Forwarding<'_>, h: &HeaderMap) -> Vec<String> {
        let mut out = Vec::new();
        f.write_fields(h, &mut out);
        let mut lines: Vec<String> = String::from_utf8(out)
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// The head lines of `h` after `apply`, sorted.
    fn applied(f: &Forwarding<'_>, h: &HeaderMap) -> Vec<String> {
        let mut h = h.clone();
        f.apply(&mut h);
        let mut lines: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{}: {}", k, String::from_utf8_lossy(v.as_bytes())))
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn written_forwarding_fields_equal_the_applied_ones() {
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        let value = client_value(client);
        let mut weird = map(&[("host", "a"), ("x-forwarded-for", "1.1.1.1")]);
        weird.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        let cases = [
            map(&[("host", "a")]),
            map(&[("host", "a"), ("x-request-id", "mine")]),
            map(&[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
            ]),
            map(&[
                ("x-forwarded-proto", "gopher"),
                ("x-forwarded-host", "evil"),
                ("accept", "*/*"),
            ]),
            weird,
        ];
        for h in &cases {
            for host in [None, Some(HeaderValue::from_static("svc.local"))] {
                let f = Forwarding::new(h, &value, "https", host);
                assert_eq!(written(&f, h), applied(&f, h), "{h:?}");
            }
        }
        let h = map(&[("x-request-id", "mine")]);
        let f = Forwarding::new(&h, &value, "http", None);
        assert_eq!(f.request_id().as_bytes(), b"mine");
        assert!(!f.request_id().is_generated());
    }

    #[test]
    fn request_ids_are_unique_hex() {
        // Distinct over many ids, all of one form.
        let ids: Vec<Vec<u8>> = (0..300)
            .map(|_| RequestId::next().as_bytes().to_vec())
            .collect();
        let distinct: std::collections::HashSet<&Vec<u8>> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // One process prefix, then the counter: consecutive ids differ in the tail.
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id[..16] == ids[0][..16]));
        let a = RequestId::next();
        assert!(a.is_generated());
        assert!(a
            .as_bytes()
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(a.to_value().as_bytes(), a.as_bytes());
    }
}
