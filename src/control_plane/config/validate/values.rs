//! Checks of single values (names, addresses, durations, hash keys) and the
//! wording of shape errors.
//!
//! Each `check_*` reports what is wrong at the path it is given and returns
//! `None` (or `false`); it never looks at other sections. Cross-references
//! (split → pool, unique names) live in the parent module.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::HeaderName;
use serde_path_to_error::Segment;

use super::Report;
use crate::control_plane::config::raw::RawDuration;
use crate::control_plane::config::spec::{HashKey, MAX_DURATION};

/// Longest pool or route name accepted.
const MAX_NAME_LEN: usize = 64;

/// `prefix.key`, quoting `key` when it is not a bare TOML key.
pub(in crate::control_plane::config) fn key_path(prefix: &str, key: &str) -> String {
    let mut path = prefix.to_owned();
    push_key(&mut path, key);
    path
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        path.push_str(key);
    } else {
        path.push_str(&format!("{key:?}"));
    }
}

/// Appends one `serde_path_to_error` segment in key-path notation.
pub(super) fn push_segment(path: &mut String, segment: &Segment) {
    match segment {
        Segment::Seq { index } => path.push_str(&format!("[{index}]")),
        Segment::Map { key } => push_key(path, key),
        Segment::Enum { variant } => push_key(path, variant),
        Segment::Unknown => push_key(path, "?"),
    }
}

/// Rewords serde's shape errors for people editing a TOML file; returns the
/// (possibly longer) path and the message.
pub(super) fn explain(path: String, message: &str) -> (String, String) {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((key, expected)) = rest.split_once("`, expected ") {
            let accepted = if expected == "there are no fields" {
                "none".to_owned()
            } else {
                list_of(expected)
            };
            return (
                path,
                format!("unknown key `{key}`; accepted keys: {accepted}"),
            );
        }
    }
    if let Some(key) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let message = format!("missing required key `{key}`");
        return (key_path(&path, key), message);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((value, expected)) = rest.split_once("`, expected ") {
            return (
                path,
                format!("unknown value {value:?}; use one of: {}", list_of(expected)),
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return (
                path,
                format!("expected {}, found {}", describe(expected), describe(found)),
            );
        }
    }
    (path, message.to_owned())
}

/// serde's "one of `a`, `b`" / "`a` or `b`" as "a, b".
fn list_of(expected: &str) -> String {
    let expected = expected.strip_prefix("one of ").unwrap_or(expected);
    expected.replace(" or ", ", ").replace('`', "")
}

/// serde's type words in TOML terms.
fn describe(what: &str) -> String {
    match what {
        "i64" | "u32" | "u64" | "usize" => "an integer".to_owned(),
        "sequence" | "a sequence" => "an array".to_owned(),
        "map" | "a map" => "a table".to_owned(),
        w if w.starts_with("struct ") => "a table".to_owned(),
        w => w.replace("floating point", "float"),
    }
}

/// Parses `ip:port`, explaining the usual mistakes (hostname, missing port).
pub(super) fn socket_addr(
    text: &str,
    path: &str,
    example: &str,
    hostname_hint: &str,
    report: &mut Report,
) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let message = match text.rsplit_once(':') {
        None => format!("{text:?} has no port; write ip:port, e.g. {example:?}"),
        Some((_, port)) if port.parse::<u16>().is_err() => {
            format!("{port:?} is not a port number (0-65535); write ip:port, e.g. {example:?}")
        }
        Some((host, port)) if host.parse::<Ipv6Addr>().is_ok() => {
            format!("write IPv6 addresses in brackets: \"[{host}]:{port}\"")
        }
        Some((host, _)) if looks_like_hostname(host) => {
            format!("{text:?} names a host, not an IP address; {hostname_hint}")
        }
        Some(_) => format!("{text:?} is not an ip:port address; write e.g. {example:?}"),
    };
    report.add(path, message);
    None
}

fn looks_like_hostname(host: &str) -> bool {
    host.bytes().any(|b| b.is_ascii_alphabetic())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Why a duration above [`MAX_DURATION`] is refused.
pub fn too_long(text: &str) -> String {
    format!(
        "{text:?} is too long; a duration may be at most {} (365 days)",
        humantime::format_duration(MAX_DURATION)
    )
}

/// A human duration greater than zero and at most [`MAX_DURATION`].
pub(super) fn check_duration(
    raw: &RawDuration,
    path: &str,
    report: &mut Report,
) -> Option<Duration> {
    match humantime::parse_duration(&raw.0) {
        Ok(d) if d.is_zero() => {
            report.add(
                path,
                format!("{:?} is zero; the duration must be greater than 0", raw.0),
            );
            None
        }
        Ok(d) if d > MAX_DURATION => {
            report.add(path, too_long(&raw.0));
            None
        }
        Ok(d) => Some(d),
        Err(_) => {
            report.add(
                path,
                format!(
                    "{:?} is not a duration; write a number and a unit, e.g. \"250ms\", \"10s\" or \"1m\"",
                    raw.0
                ),
            );
            None
        }
    }
}

/// Pool and route names: 1..=64 of `[A-Za-z0-9._-]` (they become cookie values
/// and metric labels).
pub(super) fn check_name(name: &str, path: &str, kind: &str, report: &mut Report) -> bool {
    let message = if name.is_empty() {
        format!("{kind} name is empty; use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-'")
    } else if name.chars().count() > MAX_NAME_LEN {
        format!(
            "{kind} name is {} characters long; use at most {MAX_NAME_LEN}",
            name.chars().count()
        )
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        format!(
            "{kind} name {name:?} contains {c:?}; use only letters, digits, '.', '_' and '-' (the name becomes a cookie value and a metric label)"
        )
    } else {
        return true;
    };
    report.add(path, message);
    false
}

/// RFC 6265 §4.1.1 cookie-name: an RFC 2616 token.
pub(super) fn cookie_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// `header:NAME`, `cookie:NAME` or `client_ip`.
pub(super) fn check_hash_key(key: &str, path: &str, report: &mut Report) -> Option<HashKey> {
    let message = if key == "client_ip" {
        return Some(HashKey::ClientIp);
    } else if let Some(name) = key.strip_prefix("header:") {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => return Some(HashKey::Header(name)),
            Err(_) => {
                format!("{name:?} is not a valid header name; write e.g. \"header:x-session-id\"")
            }
        }
    } else if let Some(name) = key.strip_prefix("cookie:") {
        if cookie_name_ok(name) {
            return Some(HashKey::Cookie(name.into()));
        }
        format!("{name:?} is not a valid cookie name; write e.g. \"cookie:session\"")
    } else {
        format!(r#"{key:?} is not a hash key; use "header:NAME", "cookie:NAME" or "client_ip""#)
    };
    report.add(path, message);
    None
}

/// A poll interval at `path`: `default` when absent, else a duration within
/// `bounds`; out of range, the error says what is read (`read`), the bounds, the
/// default and `why` (may be empty).
pub(super) fn check_poll_interval(
    raw: Option<&RawDuration>,
    path: &str,
    (default, (min, max)): (Duration, (Duration, Duration)),
    read: &str,
    why: &str,
    report: &mut Report,
) -> Option<Duration> {
    let Some(raw) = raw else {
        return Some(default);
    };
    let d = check_duration(raw, path, report)?;
    if (min..=max).contains(&d) {
        return Some(d);
    }
    report.add(
        path,
        format!(
            "{} is out of range; {read} every {} to {} (default {}){why}",
            humantime::format_duration(d),
            humantime::format_duration(min),
            humantime::format_duration(max),
            humantime::format_duration(default),
        ),
    );
    None
}

#[cfg(test)]
mod tests {
    /// Overflowing inputs: `u64::MAX` seconds, the same as milliseconds, and a
    /// number past `u64`.
    const OVERFLOWS: [&str; 3] = [
        "18446744073709551615s",
        "18446744073709551615ms",
        "99999999999999999999999s",
    ];

    #[test]
    fn every_duration_of_the_example_file_refuses_overflowing_values_with_its_key_path() {
        let text = include_str!("../../../../config/routes.toml");
        // (what the example writes, the key path it is reported at)
        let keys = [
            (
                "header_read_timeout = \"10s\"",
                "listen.header_read_timeout",
            ),
            ("slow_start = \"30s\"", "pools[0].slow_start"),
            ("interval = \"2s\"", "pools[0].health.interval"),
            ("base_ejection = \"10s\"", "pools[0].outlier.base_ejection"),
            ("connect = \"1s\"", "timeouts.connect"),
            ("response_header = \"30s\"", "timeouts.response_header"),
            ("idle = \"60s\"", "timeouts.idle"),
        ];
        for (written, path) in keys {
            assert!(text.contains(written), "{written}");
            for huge in OVERFLOWS {
                let (key, _) = written.split_once(" = ").unwrap();
                let bad = text.replacen(written, &format!("{key} = \"{huge}\""), 1);
                let errors = crate::control_plane::config::parse(&bad).expect_err(huge).0;
                assert!(
                    errors.iter().any(|e| e.path.ends_with(path)),
                    "{written} → {huge}: {errors:?}"
                );
            }
        }
    }

    #[test]
    fn a_year_is_the_longest_duration() {
        let mut report = super::Report::default();
        let year = super::RawDuration("365d".into());
        assert!(super::check_duration(&year, "k", &mut report).is_some());
        for text in ["366d", OVERFLOWS[0], OVERFLOWS[1]] {
            let raw = super::RawDuration(text.into());
            assert_eq!(super::check_duration(&raw, "k", &mut report), None);
        }
        assert!(report.errors.iter().all(|e| e.path == "k"));
        assert!(
            report.errors[0].message.contains("too long"),
            "{:?}",
            report.errors
        );
    }
}
