//! Error kinds and valid forms of `listen.https`, `redirect_https*`, `[tls]` and a
//! pool's `tls`: exact path and a fragment of the message for each.

use std::path::PathBuf;
use std::time::Duration;

use crate::control_plane::config::spec::{
    CertificateSpec, RedirectHttps, SniName, UpstreamTlsSpec, UpstreamVerify,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
};
use crate::control_plane::config::tests::{assert_one, errors, with_pool, LISTEN};
use crate::control_plane::config::{parse, ConfigErrors, Spec};

/// `[listen]` with https plus `rest`.
fn https(rest: &str) -> String {
    format!("{LISTEN}https = \"127.0.0.1:8443\"\n{rest}")
}

const CERT: &str = "\n[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n";

fn ok(text: &str) -> Spec {
    parse(text).unwrap_or_else(|ConfigErrors(e)| panic!("{e:#?}\n{text}"))
}

#[test]
fn https_with_certificates_builds_tls_spec() {
    let text = https(
        r#"redirect_https = true

[tls]
handshake_timeout = "3s"

[[tls.certificates]]
cert = "/etc/sg/default.pem"
key = "/etc/sg/default.key"

[[tls.certificates]]
cert = "b.pem"
key = "b.key"
server_names = ["B.Example.com.", "*.apps.example.com"]
"#,
    );
    let spec = ok(&text);
    assert_eq!(
        spec.listen.https,
        Some("127.0.0.1:8443".parse().expect("literal"))
    );
    assert_eq!(
        spec.listen.redirect_https,
        Some(RedirectHttps { port: None })
    );
    let tls = spec.tls.expect("tls");
    assert_eq!(tls.handshake_timeout, Duration::from_secs(3));
    assert_eq!(
        tls.certificates,
        [
            CertificateSpec {
                cert: PathBuf::from("/etc/sg/default.pem"),
                key: PathBuf::from("/etc/sg/default.key"),
                server_names: vec![],
            },
            CertificateSpec {
                cert: PathBuf::from("b.pem"),
                key: PathBuf::from("b.key"),
                server_names: vec![
                    SniName::Exact("b.example.com".into()),
                    SniName::Wildcard(".apps.example.com".into()),
                ],
            },
        ]
    );
}

#[test]
fn handshake_timeout_defaults_and_plain_http_has_no_tls() {
    let spec = ok(&https(CERT));
    let tls = spec.tls.expect("tls");
    assert_eq!(tls.handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    assert_eq!(spec.listen.redirect_https, None);
    let plain = ok(LISTEN);
    assert!(plain.tls.is_none() && plain.listen.https.is_none());
}

#[test]
fn tls_without_https_listener() {
    assert_one(&format!("{LISTEN}{CERT}"), "tls", "add listen.https");
}

#[test]
fn empty_certificate_list() {
    assert_one(
        &https("[tls]\ncertificates = []\n"),
        "tls.certificates",
        "no certificates",
    );
}

#[test]
fn https_address_checked_like_http() {
    assert_one(
        &format!("{LISTEN}https = \"localhost:8443\"\n{CERT}"),
        "listen.https",
        "names a host",
    );
    assert_one(
        &format!("[listen]\nhttp = \"127.0.0.1:8080\"\nhttps = \"127.0.0.1:8080\"\n{CERT}"),
        "listen.https",
        "is also listen.http",
    );
}

#[test]
fn redirect_needs_https_and_a_valid_port() {
    assert_one(
        &format!("{LISTEN}redirect_https = true\n"),
        "listen.redirect_https",
        "listen.https is not set",
    );
    assert_one(
        &https(&format!("redirect_https_port = 443\n{CERT}")),
        "listen.redirect_https_port",
        "only used with redirect_https = true",
    );
    assert_one(
        &https(&format!(
            "redirect_https = true\nredirect_https_port = 70000\n{CERT}"
        )),
        "listen.redirect_https_port",
        "not a port number",
    );
    let spec = ok(&https(&format!(
        "redirect_https = true\nredirect_https_port = 443\n{CERT}"
    )));
    assert_eq!(
        spec.listen.redirect_https,
        Some(RedirectHttps { port: Some(443) })
    );
}

#[test]
fn certificate_keys_are_checked_with_paths() {
    let text = https(
        r#"
[tls]
handshake_timeout = "0s"

[[tls.certificates]]
cert = "a.pem"
key = ""

[[tls.certificates]]
cert = "b.pem"
key = "b.key"
server_names = ["b.example.com", "10.0.0.1", "x*.example.com", "*.com", "bad_name!"]

[[tls.certificates]]
cert = "c.pem"
key = "c.key"
server_names = ["B.example.com"]

[[tls.certificates]]
cert = "d.pem"
"#,
    );
    let got: Vec<(String, String)> = errors(&text)
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect();
    let expect = [
        ("tls.handshake_timeout", "greater than 0"),
        ("tls.certificates[0].key", "empty path"),
        ("tls.certificates[1].server_names[1]", "is an IP address"),
        (
            "tls.certificates[1].server_names[2]",
            "only a leading \"*.\"",
        ),
        (
            "tls.certificates[1].server_names[3]",
            "whole top-level domain",
        ),
        ("tls.certificates[1].server_names[4]", "is not a DNS name"),
        (
            "tls.certificates[2].server_names[0]",
            "already claimed by tls.certificates[1].server_names[0]",
        ),
        ("tls.certificates[3].key", "missing required key `key`"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for ((path, message), (want_path, fragment)) in got.iter().zip(expect) {
        assert_eq!(path, want_path, "{got:#?}");
        assert!(
            message.contains(fragment),
            "{path}: {message:?} lacks {fragment:?}"
        );
    }
}

#[test]
fn empty_server_names_is_an_error() {
    let text = https("[[tls.certificates]]\ncert = \"a\"\nkey = \"b\"\nserver_names = []\n");
    assert_one(&text, "tls.certificates[0].server_names", "empty list");
}

#[test]
fn unknown_tls_key_lists_accepted() {
    assert_one(
        &https("[[tls.certificates]]\ncert = \"a\"\nkey = \"b\"\nchain = \"c\"\n"),
        "tls.certificates[0].chain",
        "accepted keys: cert, key, server_names",
    );
}

#[test]
fn pool_tls_forms() {
    let spec = ok(&with_pool(
        r#"tls = { server_name = "Agent.Internal", ca = "ca.pem" }"#,
    ));
    assert_eq!(
        spec.pools[0].tls,
        Some(UpstreamTlsSpec {
            server_name: Some("agent.internal".into()),
            verify: UpstreamVerify::Ca(PathBuf::from("ca.pem")),
        })
    );
    let spec = ok(&with_pool("tls = { insecure_skip_verify = true }"));
    assert_eq!(
        spec.pools[0].tls,
        Some(UpstreamTlsSpec {
            server_name: None,
            verify: UpstreamVerify::Insecure,
        })
    );
    let spec = ok(&with_pool("tls = {}"));
    let tls = spec.pools[0].tls.as_ref().expect("tls");
    assert_eq!(tls.verify, UpstreamVerify::PublicRoots);
    assert!(ok(&with_pool("")).pools[0].tls.is_none());
}

#[test]
fn pool_tls_errors() {
    assert_one(
        &with_pool(r#"tls = { ca = "ca.pem", insecure_skip_verify = true }"#),
        "pools[0].tls.insecure_skip_verify",
        "remove one of ca and insecure_skip_verify",
    );
    assert_one(
        &with_pool(r#"tls = { server_name = "not a name" }"#),
        "pools[0].tls.server_name",
        "not a DNS name or IP address",
    );
    assert_one(
        &with_pool(r#"tls = { ca = " " }"#),
        "pools[0].tls.ca",
        "empty path",
    );
    assert_one(
        &with_pool(r#"tls = { verify = false }"#),
        "pools[0].tls.verify",
        "accepted keys: server_name, ca, insecure_skip_verify",
    );
}

#[test]
fn commented_tls_example_in_routes_toml_is_valid() {
    // Uncomment the TLS keys of the example (the first `tls = …` of the two
    // alternatives); prose comments stay comments.
    let keys = [
        "https",
        "redirect_https",
        "redirect_https_port",
        "handshake_timeout",
        "cert",
        "key",
        "server_names",
    ];
    let mut pool_tls_done = false;
    let text: String = include_str!("../../../../../config/routes.toml")
        .lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return format!("{line}\n");
            };
            let key = rest.split(' ').next().unwrap_or("");
            let table = rest.starts_with("[tls]") || rest.starts_with("[[tls.certificates]]");
            let pool_tls = key == "tls" && !pool_tls_done;
            pool_tls_done |= pool_tls;
            if table || pool_tls || (keys.contains(&key) && rest.contains(" = ")) {
                format!("{rest}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let spec = ok(&text);
    let tls = spec.tls.expect("tls uncommented");
    assert_eq!(tls.certificates.len(), 2);
    assert_eq!(tls.certificates[1].server_names.len(), 2);
    assert_eq!(
        spec.listen.redirect_https,
        Some(RedirectHttps { port: Some(443) })
    );
    let green = &spec.pools[1];
    assert!(matches!(
        green.tls.as_ref().map(|t| &t.verify),
        Some(UpstreamVerify::Ca(_))
    ));
}
