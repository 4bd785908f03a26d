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

/// Where `Connection` is in [`HOP_BY_HOP`].
const CONNECTION_AT: usize = 0;

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
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if any {
        if present[CONNECTION_AT] {
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
}

/// The client's address as a header value, made once per connection (formatting an
/// address per request was a measurable share of the request path).
pub fn client_value(client: IpAddr) -> HeaderValue {
    // An IP address is always a valid header value.
    HeaderValue::from_str(&client.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Adds the forwarding fields: `X-Forwarded-For` is appended to (a chain of proxies),
/// `X-Forwarded-Proto` and `-Host` are set (never trusted from the client),
/// `X-Request-Id` is kept if present, else generated. `client_value` is
/// [`client_value`]`(client)`, made once per connection.
pub fn add_forwarding_for(
    headers: &mut HeaderMap,
    client: IpAddr,
    client_value: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    // Entries: one hash per field, whether it is there or not.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Occupied(mut prev) => {
            // Several lines are one comma-separated list (RFC 9110 §5.3).
            let mut chain = String::new();
            for line in prev.iter().filter_map(|v| v.to_str().ok()) {
                chain.push_str(line);
                chain.push_str(", ");
            }
            let chained = (!chain.is_empty())
                .then(|| HeaderValue::from_str(&format!("{chain}{client}")).ok())
                .flatten();
            match chained {
                Some(chained) => {
                    prev.insert(chained);
                }
                None => {
                    prev.insert(client_value.clone());
                }
            }
        }
        Entry::Vacant(slot) => {
            slot.insert(client_value.clone());
        }
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(host) => headers.insert(&X_FORWARDED_HOST, host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    if let Entry::Vacant(slot) = headers.entry(&X_REQUEST_ID) {
        slot.insert(next_request_id());
    }
}

/// A process-unique id: a random per-process prefix and a counter, 32 hex digits.
pub fn next_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| fastrand::u64(..));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    hex(prefix, &mut buf[..16]);
    hex(n, &mut buf[16..]);
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
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
        add_forwarding_for(
            &mut h,
            client,
            &client_value(client),
            "http",
            Some(HeaderValue::from_static("agents.local")),
        );
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
        add_forwarding_for(&mut h, client, &client_value(client), "https", None);
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["10.0.0.1, 10.0.0.2, 192.0.2.7"]);
        assert!(!h.contains_key("x-forwarded-host"));
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-request-id"].len(), 32);
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let a = next_request_id();
        let b = next_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
