//! HTTP/1 text that both of the gateway's own HTTP/1 loops share, the client side
//! (`http1::server`) and the backend side (`http1::client`): head lines, list-valued
//! fields, and how their read buffers grow.

use bytes::BytesMut;
use http::{HeaderMap, HeaderName};

/// Read size: what hyper reads with at first (and what most heads fit in).
pub(crate) const READ_SIZE: usize = 8 * 1024;
/// Below this much free room the read buffer is topped up to [`READ_SIZE`] (which
/// reuses its allocation once the earlier messages that share it are dropped).
const MIN_READ_ROOM: usize = 1024;

/// Room for the next read: reclaims the buffer's allocation once nothing else
/// shares it (the heads of earlier exchanges), else allocates a fresh one.
pub(crate) fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(READ_SIZE);
    }
}

/// The items of a comma-separated field (`Connection`, `Transfer-Encoding`) over
/// all its lines, trimmed, empty ones skipped (RFC 9110 §5.6.1).
pub(crate) fn list_items(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// Writes one `name: value` head line.
pub(crate) fn write_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The hop-by-hop fields (RFC 9110 §7.6.1 and RFC 7230's list) as lowercase bytes:
/// `proxy::headers` keeps the same list as `HeaderName`s, in this order.
pub(crate) const HOP_BY_HOP_NAMES: [&[u8]; 7] = [
    b"connection",
    b"proxy-connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];

/// Where `Connection` is in [`HOP_BY_HOP_NAMES`].
pub(crate) const CONNECTION_AT: usize = 0;

/// Whether `name` (any case) is a field of [`HOP_BY_HOP_NAMES`].
pub(crate) fn is_hop_by_hop_name(name: &[u8]) -> bool {
    hop_by_hop_index(name).is_some()
}

/// Where `name` is in [`HOP_BY_HOP_NAMES`], if it is there.
///
/// Every field of every request and response goes through this, so it looks at the
/// name's length first: most names have a length no hop-by-hop name has, and the
/// rest are one or two string compares (a scan of the list cost more: see
/// benches/JOURNAL.md, seventh pass).
pub(crate) fn hop_by_hop_index(name: &[u8]) -> Option<usize> {
    let at = |i: usize| name.eq_ignore_ascii_case(HOP_BY_HOP_NAMES[i]).then_some(i);
    match name.len() {
        2 => at(3),
        7 => at(4).or_else(|| at(6)),
        10 => at(CONNECTION_AT).or_else(|| at(2)),
        16 => at(1),
        17 => at(5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use http::{header, HeaderMap, HeaderValue};

    use super::{list_items, reserve, write_line, READ_SIZE};

    #[test]
    fn list_items_span_every_line_trimmed_without_empty_ones() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" keep-alive ,, X-A"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("close,"));
        h.append(header::UPGRADE, HeaderValue::from_static("ws"));
        let items: Vec<&[u8]> = list_items(&h, header::CONNECTION).collect();
        assert_eq!(items, [&b"keep-alive"[..], b"X-A", b"close"]);
        assert_eq!(list_items(&h, header::TE).count(), 0);
    }

    #[test]
    fn a_line_is_name_colon_space_value_crlf() {
        let mut out = b"x".to_vec();
        write_line(&mut out, b"a", b"b c");
        assert_eq!(out, b"xa: b c\r\n");
    }

    #[test]
    fn a_buffer_is_topped_up_only_when_little_room_is_left() {
        let mut buf = BytesMut::new();
        reserve(&mut buf);
        assert!(buf.capacity() >= READ_SIZE);
        buf.resize(READ_SIZE - 2048, 0);
        let before = buf.capacity();
        reserve(&mut buf);
        assert_eq!(buf.capacity(), before, "2 KiB of room is enough");
        buf.resize(before - 100, 0);
        reserve(&mut buf);
        assert!(buf.capacity() - buf.len() >= READ_SIZE, "topped up");
    }
}
