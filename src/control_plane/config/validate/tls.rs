//! Checks of the TLS keys: `[tls]` (the HTTPS listener's certificates) and a
//! pool's `tls = { … }` (HTTPS to backends).
//!
//! Only the text is checked here: names, durations, which keys go together.
//! Whether the files exist, parse and match is checked by `crate::data_plane::tls` when the
//! gateway starts and by `sluicegate check`, with the same key paths.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use rustls::pki_types::{DnsName, ServerName};

use super::values::check_duration;
use super::Report;
use crate::control_plane::config::raw::{RawCertificate, RawTls, RawUpstreamTls};
use crate::control_plane::config::spec::{
    CertificateSpec, SniName, TlsSpec, UpstreamTlsSpec, UpstreamVerify,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
};

/// Checks and converts `[tls]`. Each certificate entry is shaped on its own, like
/// `[[pools]]`, so one bad entry does not hide the errors of the others.
pub(super) fn check_tls(value: toml::Value, report: &mut Report) -> Option<TlsSpec> {
    let mut table = super::table_of(value, "tls", "[tls]", report)?;
    let entries = super::elements(table.remove("certificates"), "tls.certificates", report);
    let raw = super::shape::<RawTls>(table, "tls", report);
    let handshake_timeout = match raw.as_ref().map(|r| &r.handshake_timeout) {
        None => None,
        Some(None) => Some(DEFAULT_TLS_HANDSHAKE_TIMEOUT),
        Some(Some(d)) => check_duration(d, "tls.handshake_timeout", report),
    };
    if entries.is_empty() {
        report.add(
            "tls.certificates",
            r#"no certificates; add a [[tls.certificates]] entry with cert = "…pem" and key = "…pem""#,
        );
    }
    let mut ok = true;
    let mut claimed: HashMap<SniName, String> = HashMap::new();
    let mut certificates = Vec::with_capacity(entries.len());
    for (i, table) in entries.into_iter().enumerate() {
        let path = format!("tls.certificates[{i}]");
        let spec = table
            .and_then(|table| super::shape::<RawCertificate>(table, &path, report))
            .and_then(|raw| check_certificate(&path, &raw, &mut claimed, report));
        match spec {
            Some(spec) => certificates.push(spec),
            None => ok = false,
        }
    }
    let handshake_timeout = handshake_timeout?;
    (ok && !certificates.is_empty()).then_some(TlsSpec {
        certificates,
        handshake_timeout,
    })
}

fn check_certificate(
    path: &str,
    raw: &RawCertificate,
    claimed: &mut HashMap<SniName, String>,
    report: &mut Report,
) -> Option<CertificateSpec> {
    let cert = file_path(&raw.cert, &format!("{path}.cert"), report);
    let key = file_path(&raw.key, &format!("{path}.key"), report);
    let mut names_ok = true;
    let mut server_names = Vec::new();
    for (j, name) in raw.server_names.iter().flatten().enumerate() {
        let at = format!("{path}.server_names[{j}]");
        let Some(name) = sni_name(name, &at, report) else {
            names_ok = false;
            continue;
        };
        if let Some(first) = claimed.get(&name) {
            report.add(
                at,
                format!(
                    "{name} is already claimed by {first}; each name may belong to one certificate"
                ),
            );
            names_ok = false;
            continue;
        }
        claimed.insert(name.clone(), at);
        server_names.push(name);
    }
    if raw.server_names.as_ref().is_some_and(Vec::is_empty) {
        report.add(
            format!("{path}.server_names"),
            "empty list; remove server_names to use the names in the certificate",
        );
        names_ok = false;
    }
    let (cert, key) = (cert?, key?);
    names_ok.then_some(CertificateSpec {
        cert,
        key,
        server_names,
    })
}

/// A `server_names` entry: a DNS name or `*.` followed by one.
fn sni_name(text: &str, path: &str, report: &mut Report) -> Option<SniName> {
    let lower = text.trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let message = if name.parse::<IpAddr>().is_ok() {
        format!("{text:?} is an IP address; clients never send one as SNI, and the default certificate (the first entry) answers them")
    } else if name.contains('*') {
        format!("{text:?}: only a leading \"*.\" wildcard is allowed, e.g. \"*.example.com\"")
    } else if DnsName::try_from(name).is_err() {
        format!(
            "{text:?} is not a DNS name; write e.g. \"agents.example.com\" or \"*.example.com\""
        )
    } else if wildcard && !name.contains('.') {
        format!("{text:?} covers a whole top-level domain; name at least two labels after \"*.\"")
    } else if wildcard {
        return Some(SniName::Wildcard(format!(".{name}")));
    } else {
        return Some(SniName::Exact(name.to_owned()));
    };
    report.add(path, message);
    None
}

/// Checks and converts a pool's `tls = { … }` at `path` (`pools[i].tls`).
pub(super) fn check_upstream_tls(
    path: &str,
    raw: &RawUpstreamTls,
    report: &mut Report,
) -> Option<UpstreamTlsSpec> {
    let server_name = match &raw.server_name {
        None => Some(None),
        Some(name) => match ServerName::try_from(name.as_str()) {
            Ok(_) => Some(Some(name.to_ascii_lowercase())),
            Err(_) => {
                report.add(
                    format!("{path}.server_name"),
                    format!("{name:?} is not a DNS name or IP address; write the name in the backends' certificates, e.g. \"agent.internal\""),
                );
                None
            }
        },
    };
    let verify = match (&raw.ca, raw.insecure_skip_verify) {
        (Some(_), true) => {
            report.add(
                format!("{path}.insecure_skip_verify"),
                "ca is set, so certificates would be verified; remove one of ca and insecure_skip_verify",
            );
            None
        }
        (Some(ca), false) => file_path(ca, &format!("{path}.ca"), report).map(UpstreamVerify::Ca),
        (None, true) => Some(UpstreamVerify::Insecure),
        (None, false) => Some(UpstreamVerify::PublicRoots),
    };
    Some(UpstreamTlsSpec {
        server_name: server_name?,
        verify: verify?,
    })
}

/// A non-empty file path (existence is checked when the file is loaded).
fn file_path(text: &str, path: &str, report: &mut Report) -> Option<PathBuf> {
    if text.trim().is_empty() {
        report.add(path, "empty path; name a PEM file");
        return None;
    }
    Some(PathBuf::from(text))
}

#[cfg(test)]
mod tests;
