//! Loading, SNI lookup and reload of certificates made at test time with rcgen.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::certs::{self, CertError};
use super::resolver::{CertStore, CertTable};
use super::watch::reload;
use super::*;
use crate::control_plane::config::spec::{CertificateSpec, SniName};

/// A self-signed certificate for `names`: (cert PEM, key PEM, leaf DER).
fn self_signed(names: &[&str]) -> (String, String, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().to_vec(),
    )
}

/// Writes a fresh certificate for `names` as `dir/{stem}.pem` and `.key`; returns the leaf DER.
fn write_pair(dir: &Path, stem: &str, names: &[&str]) -> Vec<u8> {
    let (cert, key, der) = self_signed(names);
    std::fs::write(dir.join(format!("{stem}.pem")), cert).expect("write cert");
    std::fs::write(dir.join(format!("{stem}.key")), key).expect("write key");
    der
}

fn entry(dir: &Path, stem: &str, names: &[SniName]) -> CertificateSpec {
    CertificateSpec {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        server_names: names.to_vec(),
    }
}

fn store_of(specs: Vec<CertificateSpec>) -> CertStore {
    let loaded = specs
        .iter()
        .map(|s| certs::load(s, &provider()).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let table = CertTable::build(&specs, loaded);
    CertStore::new(specs, table)
}

fn served(table: &CertTable, sni: Option<&str>) -> Vec<u8> {
    let key = table.find(sni).expect("a certificate");
    key.cert[0].to_vec()
}

#[test]
fn load_names_the_file_at_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), "a", &["a.test"]);
    write_pair(dir.path(), "b", &["b.test"]);
    let p = provider();

    let missing = CertificateSpec {
        cert: PathBuf::from("/nonexistent/x.pem"),
        ..entry(dir.path(), "a", &[])
    };
    let err = certs::load(&missing, &p).expect_err("missing");
    assert_eq!(err.field(), "cert");
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/x.pem: "),
        "{err}"
    );

    std::fs::write(dir.path().join("junk.key"), "not a key\n").expect("write");
    let junk = CertificateSpec {
        key: dir.path().join("junk.key"),
        ..entry(dir.path(), "a", &[])
    };
    let err = certs::load(&junk, &p).expect_err("junk key");
    assert!(matches!(err, CertError::NoKey { .. }), "{err:?}");
    assert_eq!(err.field(), "key");

    let crossed = CertificateSpec {
        key: dir.path().join("b.key"),
        ..entry(dir.path(), "a", &[])
    };
    let err = certs::load(&crossed, &p).expect_err("mismatch");
    assert!(matches!(err, CertError::Mismatch { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("b.key does not match the certificate in"),
        "{shown}"
    );
    assert!(shown.contains("a.pem"), "{shown}");
}

#[test]
fn load_reports_every_bad_file_at_its_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), "a", &["a.test"]);
    write_pair(dir.path(), "b", &["b.test"]);
    let d = dir.path().display();
    let text = format!(
        r#"
[listen]
http = "127.0.0.1:0"
https = "127.0.0.1:0"
[[tls.certificates]]
cert = "{d}/a.pem"
key = "{d}/a.key"
[[tls.certificates]]
cert = "{d}/b.pem"
key = "{d}/a.key"
[[pools]]
name = "p"
tls = {{ ca = "{d}/none.pem" }}
[[pools]]
name = "q"
tls = {{ insecure_skip_verify = true }}
"#
    );
    let spec = crate::control_plane::config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let ConfigErrors(errors) = load(&spec).expect_err("bad files");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["tls.certificates[1].key", "pools[0].tls.ca"]);
    assert!(
        errors[1].message.contains("none.pem"),
        "{}",
        errors[1].message
    );

    let good = text.replace(
        &format!("{d}/b.pem\"\nkey = \"{d}/a.key"),
        &format!("{d}/b.pem\"\nkey = \"{d}/b.key"),
    );
    let good = good.replace(
        &format!("ca = \"{d}/none.pem\""),
        &format!("ca = \"{d}/a.pem\""),
    );
    let spec = crate::control_plane::config::parse(&good).unwrap_or_else(|e| panic!("{e}"));
    let loaded = load(&spec).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.frontend.is_some());
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].path, "pools[1].tls.insecure_skip_verify");
    assert!(loaded.warnings[0].message.contains("NOT verified"));
}

#[test]
fn sni_lookup_exact_then_wildcard_then_certificate_names_then_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let default = write_pair(dir.path(), "default", &["default.test"]);
    let named = write_pair(dir.path(), "named", &["whatever.test"]);
    let by_cert = write_pair(dir.path(), "bycert", &["c.test", "*.wild.test"]);
    let store = store_of(vec![
        entry(dir.path(), "default", &[]),
        entry(
            dir.path(),
            "named",
            &[
                SniName::Exact("a.test".into()),
                SniName::Wildcard(".apps.test".into()),
            ],
        ),
        entry(dir.path(), "bycert", &[]),
    ]);
    let table = store.current();
    assert_eq!(served(&table, Some("a.test")), named);
    assert_eq!(served(&table, Some("A.Test")), named);
    assert_eq!(served(&table, Some("x.apps.test")), named);
    assert_eq!(
        served(&table, Some("apps.test")),
        default,
        "wildcard needs a label"
    );
    assert_eq!(
        served(&table, Some("y.x.apps.test")),
        default,
        "one label deep"
    );
    assert_eq!(served(&table, Some("c.test")), by_cert);
    assert_eq!(served(&table, Some("q.wild.test")), by_cert);
    assert_eq!(served(&table, Some("unknown.test")), default);
    assert_eq!(served(&table, Some("default.test")), default);
    assert_eq!(served(&table, None), default);
}

#[test]
fn reload_swaps_changed_entries_and_keeps_old_on_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_pair(dir.path(), "a", &["a.test"]);
    let old_b = write_pair(dir.path(), "b", &["b.test"]);
    let b = [SniName::Exact("b.test".into())];
    let store = store_of(vec![
        entry(dir.path(), "a", &[]),
        entry(dir.path(), "b", &b),
    ]);
    let p = provider();

    let first = store.current();
    let nothing = reload(&store, &p);
    assert!(nothing.changed.is_empty() && nothing.errors.is_empty());
    assert!(
        Arc::ptr_eq(&first, &store.current()),
        "same bytes: no new table"
    );

    let new_b = write_pair(dir.path(), "b", &["b.test"]);
    let done = reload(&store, &p);
    assert_eq!(done.changed, [1]);
    assert_eq!(served(&store.current(), Some("b.test")), new_b);
    assert_ne!(new_b, old_b);

    // A new certificate whose key is not there yet (mid-rotation), then junk.
    let (cert, _, _) = self_signed(&["b.test"]);
    std::fs::write(dir.path().join("b.pem"), cert).expect("write");
    let before = store.current();
    let failed = reload(&store, &p);
    assert!(failed.changed.is_empty());
    assert_eq!(failed.errors.len(), 1);
    assert_eq!(failed.errors[0].path, "tls.certificates[1].key");
    assert!(failed.errors[0].message.contains("does not match"));
    std::fs::write(
        dir.path().join("b.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .expect("w");
    let failed = reload(&store, &p);
    assert_eq!(failed.errors[0].path, "tls.certificates[1].key");
    assert!(Arc::ptr_eq(&before, &store.current()), "old table kept");
    assert_eq!(served(&store.current(), Some("b.test")), new_b);
}
