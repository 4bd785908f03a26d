//! A backend's raw response fields on their way to the client: which of them are
//! end-to-end (what `proxy::headers::strip_hop_by_hop` would leave of a map), written as head
//! lines by the gateway's own loop or put in a map for hyper's server.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

use super::client::RawFields;
use super::wire::{is_hop_by_hop_name, write_line};

/// The end-to-end fields of a backend's raw response head, as `(name, value)`:
/// what [`strip_hop_by_hop`] would leave of them, and no `Content-Length` (the
/// framing is the writer's: [`RawFields::content_length`]).
pub(crate) fn end_to_end(raw: &RawFields) -> impl Iterator<Item = (&[u8], &[u8])> {
    // Fields `Connection` names are hop-by-hop too; rare, so only then collected.
    let named: Vec<&[u8]> = if raw.connection_names_fields {
        raw.values(b"connection")
            .flat_map(|v| v.split(|b| *b == b',').map(<[u8]>::trim_ascii))
            .filter(|t| !t.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    raw.iter().filter(move |(name, _)| {
        !left_out_of_raw(name) && !named.iter().any(|n| n.eq_ignore_ascii_case(name))
    })
}

/// Whether a backend's raw field never reaches the client whatever `Connection`
/// names: hop-by-hop, or `Content-Length` (the writer frames the body itself).
fn left_out_of_raw(name: &[u8]) -> bool {
    is_hop_by_hop_name(name) || name.eq_ignore_ascii_case(b"content-length")
}

/// Writes the end-to-end fields of `raw` as head lines, names in lowercase as
/// hyper writes them.
///
/// A line already written as that (`name: value` CRLF, the value trimmed) is
/// copied whole and its name lowercased in place: one copy per field instead of
/// four, and no trimming (field by field this was a visible share of a proxied
/// request's instructions: benches/JOURNAL.md, fourth pass). Fields named by `Connection` need
/// the general walk.
pub(crate) fn write_end_to_end(raw: &RawFields, out: &mut Vec<u8>) {
    let Some(lines) = raw.lines().filter(|_| !raw.connection_names_fields) else {
        return write_each_end_to_end(raw, out);
    };
    for (line, name_len) in lines {
        let name = &line[..name_len];
        if left_out_of_raw(name) {
            continue;
        }
        let at = out.len();
        let rest = &line[name_len..];
        if is_written_form(rest) {
            out.extend_from_slice(line);
        } else {
            write_line(out, name, rest[1..].trim_ascii());
        }
        out[at..at + name_len].make_ascii_lowercase();
    }
}

/// Whether a field line's part from the colon on is `: value` CRLF with the value
/// trimmed: what [`write_line`] would write for it.
fn is_written_form(rest: &[u8]) -> bool {
    match rest {
        [b':', b' ', value @ .., b'\r', b'\n'] => match (value.first(), value.last()) {
            (Some(first), Some(last)) => {
                !first.is_ascii_whitespace() && !last.is_ascii_whitespace()
            }
            _ => true,
        },
        _ => false,
    }
}

/// [`write_end_to_end`] field by field, through [`end_to_end`].
fn write_each_end_to_end(raw: &RawFields, out: &mut Vec<u8>) {
    for (name, value) in end_to_end(raw) {
        let at = out.len();
        write_line(out, name, value);
        out[at..at + name.len()].make_ascii_lowercase();
    }
}

/// The end-to-end fields of `raw` (its `Content-Length` included) in a map, for
/// whoever needs one: hyper's server, sticky-session learning.
pub(crate) fn end_to_end_map(raw: &RawFields) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in end_to_end(raw) {
        if let (Ok(name), Some(value)) = (HeaderName::from_bytes(name), raw.value_of(value)) {
            map.append(name, value);
        }
    }
    if let Some(length) = raw.content_length {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    map
}

/// Puts `raw`'s end-to-end fields in `headers`, before the fields already there
/// (the gateway's own, like a sticky cookie), in the order a head writer puts them.
pub(crate) fn put_raw_first(raw: &RawFields, headers: &mut HeaderMap) {
    let own = std::mem::replace(headers, end_to_end_map(raw));
    for (name, value) in &own {
        headers.append(name, value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_plane::proxy::headers::strip_hop_by_hop;

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
    fn whole_line_copies_write_what_the_field_by_field_walk_writes() {
        // Every spacing a backend may send around a value, each line end, names in
        // any case, fields to drop among them; heads small enough for their
        // positions to be kept, and one past that (scanned).
        let names = [
            "X-Kept",
            "server",
            "Content-Length",
            "KEEP-ALIVE",
            "te",
            "Date",
        ];
        let befores = ["", " ", "  ", "\t", " \t"];
        let values = ["", "v", "a b", "x,\ty"];
        let afters = ["", " ", "\t "];
        let ends = ["\r\n", "\n"];
        let mut lines = Vec::new();
        for (i, name) in names.iter().enumerate() {
            for before in befores {
                for value in values {
                    for after in afters {
                        for end in ends {
                            let value = if value.is_empty() {
                                String::new()
                            } else {
                                format!("{value}{i}")
                            };
                            lines.push(format!("{name}:{before}{value}{after}{end}"));
                        }
                    }
                }
            }
        }
        let mut checked = 0;
        for fields in lines.chunks(3).chain(lines.chunks(17)) {
            for connection in ["", "Connection: close\r\n", "Connection: X-Kept\r\n"] {
                let head = format!("HTTP/1.1 200 OK\r\n{connection}{}\r\n", fields.concat());
                let raw = RawFields::of_head(head.as_bytes());
                let (mut whole, mut each) = (Vec::new(), Vec::new());
                write_end_to_end(&raw, &mut whole);
                write_each_end_to_end(&raw, &mut each);
                assert_eq!(
                    String::from_utf8_lossy(&whole),
                    String::from_utf8_lossy(&each),
                    "head {head:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 300, "{checked}");
        // The copies are the common case, not the fallback.
        let raw = RawFields::of_head(b"HTTP/1.1 200 OK\r\nServer: nginx\r\nX-A:  b \r\n\r\n");
        assert!(raw.lines().is_some());
        let mut out = Vec::new();
        write_end_to_end(&raw, &mut out);
        assert_eq!(out, b"server: nginx\r\nx-a: b\r\n");
    }

    #[test]
    fn raw_fields_pass_what_the_strip_would_leave_in_lowercase() {
        let raw = RawFields::of_head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
              X-Secret: 1\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\
              Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTrailer: x\r\nX-Kept:  yes \r\n\
              Set-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 4\r\n\r\n",
        );
        let mut out = Vec::new();
        write_end_to_end(&raw, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "x-kept: yes\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n",
            "Content-Length is the writer's to frame"
        );

        // The same head through a map and `strip_hop_by_hop`, as hyper's client
        // path does, leaves the same fields.
        let mut stripped = HeaderMap::new();
        for (name, value) in raw.iter() {
            stripped.append(
                HeaderName::from_bytes(name).expect("name"),
                HeaderValue::from_bytes(value).expect("value"),
            );
        }
        strip_hop_by_hop(&mut stripped, false);
        stripped.remove(header::CONTENT_LENGTH);
        let mut mapped = end_to_end_map(&raw);
        assert_eq!(
            mapped.remove(header::CONTENT_LENGTH),
            None,
            "chunked: no length"
        );
        assert_eq!(mapped, stripped);

        let raw = RawFields::of_head(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(end_to_end_map(&raw)[header::CONTENT_LENGTH], "4");
    }

    #[test]
    fn raw_fields_go_before_the_maps_own_and_keep_every_value() {
        let raw = RawFields::of_head(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: up=1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
        );
        let mut h = map(&[("set-cookie", "pool=a"), ("set-cookie", "pool=b")]);
        put_raw_first(&raw, &mut h);
        let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["up=1", "pool=a", "pool=b"]);
        assert_eq!(h[header::CONTENT_LENGTH], "2");
        assert!(!h.contains_key(header::CONNECTION));
    }
}
