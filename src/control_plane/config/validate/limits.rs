//! Checks of the client-side limits: sizes (`max_header_bytes`,
//! `max_request_body`), counts and the HTTP/2 guards of `[listen]`.
//!
//! Sizes are written as a number of bytes (`65536`) or a string with a unit
//! (`"64KiB"`, `"10MB"`; binary units are powers of 1024, decimal ones of 1000).
//! Each check reports at the path it is given and returns `None` on error; an
//! absent key takes the default of [`ClientLimits`].

use super::values::check_duration;
use super::Report;
use crate::control_plane::config::raw::{RawListen, RawSize};
use crate::control_plane::config::spec::{ClientLimits, MIN_HEADER_BYTES};

/// Largest `max_header_bytes` accepted (a head this large is already abuse).
const MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// Units accepted after a number, longest first so `KiB` is not read as `B`.
const UNITS: [(&str, u64); 9] = [
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("K", 1 << 10),
    ("M", 1 << 20),
    ("B", 1),
];

/// Parses `"64KiB"`, `"10 MB"` or `"512"` into bytes; `None` when it is not a size.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit = unit.trim_start();
    if unit.is_empty() {
        return Some(number);
    }
    let (_, factor) = UNITS.iter().find(|(name, _)| *name == unit)?;
    number.checked_mul(*factor)
}

/// A size between `min` and `max` bytes.
pub(super) fn check_size(
    raw: &RawSize,
    path: &str,
    min: u64,
    max: u64,
    report: &mut Report,
) -> Option<u64> {
    let bytes = match raw {
        RawSize::Bytes(n) => u64::try_from(*n).ok(),
        RawSize::Text(text) => parse_size(text),
    };
    match bytes {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            report.add(
                path,
                format!("{n} bytes is out of range; use between {min} and {max} bytes"),
            );
            None
        }
        None => {
            let shown = match raw {
                RawSize::Bytes(n) => n.to_string(),
                RawSize::Text(text) => format!("{text:?}"),
            };
            report.add(
                path,
                format!("{shown} is not a size; write bytes (65536) or a number and a unit, e.g. \"64KiB\" or \"10MB\""),
            );
            None
        }
    }
}

/// An integer between `min` and `max`.
fn check_count(value: i64, path: &str, min: i64, max: i64, report: &mut Report) -> Option<i64> {
    if (min..=max).contains(&value) {
        Some(value)
    } else {
        report.add(
            path,
            format!("must be between {min} and {max}, got {value}"),
        );
        None
    }
}

/// The limits of `[listen]` beyond `max_connections` and `header_read_timeout`.
pub(super) fn check_client_limits(raw: &RawListen, report: &mut Report) -> Option<ClientLimits> {
    let defaults = ClientLimits::default();
    let max_header_bytes = match &raw.max_header_bytes {
        None => Some(defaults.max_header_bytes),
        Some(size) => check_size(
            size,
            "listen.max_header_bytes",
            MIN_HEADER_BYTES as u64,
            MAX_HEADER_BYTES,
            report,
        )
        .and_then(|n| usize::try_from(n).ok()),
    };
    let mut count = |value: Option<i64>, key: &str, max: i64, default: usize| match value {
        None => Some(default),
        Some(v) => check_count(v, &format!("listen.{key}"), 1, max, report)
            .and_then(|n| usize::try_from(n).ok()),
    };
    let max_headers = count(raw.max_headers, "max_headers", 1000, defaults.max_headers);
    let streams = count(
        raw.http2_max_concurrent_streams,
        "http2_max_concurrent_streams",
        10_000,
        defaults.http2_max_concurrent_streams as usize,
    );
    let pending_resets = count(
        raw.http2_max_pending_accept_reset_streams,
        "http2_max_pending_accept_reset_streams",
        100_000,
        defaults.http2_max_pending_accept_reset_streams,
    );
    let error_resets = count(
        raw.http2_max_local_error_reset_streams,
        "http2_max_local_error_reset_streams",
        100_000,
        defaults.http2_max_local_error_reset_streams,
    );
    let client_resets = count(
        raw.http2_max_client_resets,
        "http2_max_client_resets",
        1_000_000,
        defaults.http2_max_client_resets as usize,
    );
    let idle_timeout = match &raw.idle_timeout {
        None => Some(defaults.idle_timeout),
        Some(d) => check_duration(d, "listen.idle_timeout", report),
    };
    Some(ClientLimits {
        max_header_bytes: max_header_bytes?,
        max_headers: max_headers?,
        idle_timeout: idle_timeout?,
        http2_max_concurrent_streams: u32::try_from(streams?).ok()?,
        http2_max_pending_accept_reset_streams: pending_resets?,
        http2_max_local_error_reset_streams: error_resets?,
        http2_max_client_resets: u32::try_from(client_resets?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_bytes_and_units() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("10 MB"), Some(10_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("2K"), Some(2048));
        for bad in [
            "",
            "KiB",
            "-1",
            "1.5MB",
            "10 parsecs",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn limits_out_of_range_name_their_key() {
        let raw: RawListen = toml::from_str(
            "http = \"127.0.0.1:1\"\nmax_header_bytes = 100\nmax_headers = 0\nhttp2_max_concurrent_streams = -1\nidle_timeout = \"soon\"",
        )
        .unwrap();
        let mut report = Report::default();
        assert!(check_client_limits(&raw, &mut report).is_none());
        let paths: Vec<&str> = report.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listen.max_header_bytes",
                "listen.max_headers",
                "listen.http2_max_concurrent_streams",
                "listen.idle_timeout"
            ]
        );
    }
}
