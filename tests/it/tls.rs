//! HTTPS: SNI certificates, ALPN, hot reload under load, redirect, TLS to agents.

mod kit;
mod probe;
mod reload;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use sluicegate::Drained;
use tokio::time::Instant;

use crate::support::{agents, backends, get, TestGateway, WAIT};
use kit::{
    alpn, handshake, looking_client, presented, tls_front, tls_front_alpn, verifying_client, Ca,
};

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1: &[&[u8]] = &[b"http/1.1"];
const NO_ALPN: &[&[u8]] = &[];

/// A gateway with http and https on 127.0.0.1:0, `certs` as `[[tls.certificates]]`
/// bodies, `listen_extra` in `[listen]`, and one pool of `agent` backends.
async fn https_gateway(listen_extra: &str, certs: &[String], pool: &str) -> TestGateway {
    let mut text =
        format!("[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n{listen_extra}\n");
    for c in certs {
        text.push_str(&format!("\n[[tls.certificates]]\n{c}\n"));
    }
    text.push_str(&format!(
        "\n[[pools]]\nname = \"agents\"\n{pool}\n\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"agents\", weight = 1 }}]\n"
    ));
    TestGateway::start_config(&text).await
}

/// A `[[tls.certificates]]` body for files `dir/stem.{pem,key}`.
fn cert_entry(dir: &Path, stem: &str, names: &[&str]) -> String {
    let d = dir.display();
    let mut s = format!("cert = \"{d}/{stem}.pem\"\nkey = \"{d}/{stem}.key\"");
    if !names.is_empty() {
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        s.push_str(&format!("\nserver_names = [{}]", quoted.join(", ")));
    }
    s
}

#[tokio::test]
async fn sni_picks_each_certificate_and_unknown_or_no_sni_gets_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let default = ca.leaf(&["default.test"]);
    let (a, b) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    default.write(dir.path(), "default");
    a.write(dir.path(), "a");
    b.write(dir.path(), "b");
    let agent = agents("tls", "v1", 1).await;
    let certs = [
        cert_entry(dir.path(), "default", &[]),
        cert_entry(dir.path(), "a", &["a.test"]),
        cert_entry(dir.path(), "b", &["b.test"]),
    ];
    let gw = https_gateway("", &certs, &format!("backends = {}", backends(&agent))).await;
    let https = gw.https.expect("https listener");

    for (sni, want, what) in [
        (Some("a.test"), &a, "a"),
        (Some("b.test"), &b, "b"),
        (Some("unknown.test"), &default, "default for unknown SNI"),
        (None, &default, "default without SNI"),
    ] {
        let tls = handshake(https, sni, looking_client(H1))
            .await
            .expect("handshake");
        assert!(presented(&tls) == want.der, "{what}: wrong certificate");
    }

    // A client that verifies the chain against the CA, as a real one would.
    for name in ["a.test", "b.test"] {
        let tls = handshake(https, Some(name), verifying_client(ca.roots(), H1))
            .await
            .unwrap_or_else(|e| panic!("{name} verifies: {e}"));
        let reply = kit::get(tls, name, "/who").await;
        assert_eq!(reply.status, StatusCode::OK);
        let json = reply.json();
        assert_eq!(json["headers"]["x-forwarded-proto"], "https", "{json}");
        assert_eq!(json["headers"]["host"], name, "{json}");
    }
    // The plain listener still says http.
    let plain = get(gw.addr, "/who", &[]).await;
    assert_eq!(plain.json()["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn alpn_negotiates_h2_or_http11() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let agent = agents("alpn", "v1", 1).await;
    let certs = [cert_entry(dir.path(), "a", &[])];
    let gw = https_gateway("", &certs, &format!("backends = {}", backends(&agent))).await;
    let https = gw.https.expect("https");

    let cases = [
        (H2_H1, Some(b"h2".as_slice())),
        (H1, Some(b"http/1.1".as_slice())),
        (NO_ALPN, None),
    ];
    for (offered, negotiated) in cases {
        let tls = handshake(https, Some("a.test"), verifying_client(ca.roots(), offered))
            .await
            .expect("handshake");
        assert_eq!(alpn(&tls).as_deref(), negotiated);
        let reply = kit::get(tls, "a.test", "/v").await;
        assert_eq!(reply.status, StatusCode::OK, "{negotiated:?}");
        let json = reply.json();
        // Whatever the client speaks, the agent gets HTTP/1.1.
        assert_eq!(json["http"], "HTTP/1.1");
        assert_eq!(json["headers"]["x-forwarded-proto"], "https");
        assert_eq!(json["headers"]["host"], "a.test");
    }
}

#[tokio::test]
async fn rotating_certificate_files_under_load_fails_no_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let old = ca.leaf(&["a.test"]);
    old.write(dir.path(), "a");
    let certs = [cert_entry(dir.path(), "a", &["a.test"])];
    let gw = https_gateway("", &certs, "").await;
    let https = gw.https.expect("https");

    // Four clients open new TLS connections back to back, each verifying the chain.
    let new = Arc::new(ca.leaf(&["a.test"]));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, saw_new) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, saw_new) =
            (stop.clone(), ok.clone(), failed.clone(), saw_new.clone());
        let (config, new) = (verifying_client(ca.roots(), H1), Arc::clone(&new));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match handshake(https, Some("a.test"), Arc::clone(&config)).await {
                    Ok(tls) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if presented(&tls) == new.der {
                            saw_new.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    wait_until("some handshakes before the rotation", || {
        ok.load(Ordering::SeqCst) >= 20
    })
    .await;

    // Rotate in place, non-atomically: cert first, then key (a reload may see them
    // mismatched or half-written in between and must keep the old pair).
    let rotated = Instant::now();
    std::fs::write(dir.path().join("a.pem"), &new.cert_pem).expect("write cert");
    std::fs::write(dir.path().join("a.key"), &new.key_pem).expect("write key");
    wait_until("new certificate served", || {
        saw_new.load(Ordering::SeqCst) > 0
    })
    .await;
    let took = rotated.elapsed();
    let after = ok.load(Ordering::SeqCst);
    wait_until("more handshakes after it", || {
        ok.load(Ordering::SeqCst) >= after + 20
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(WAIT, c)
            .await
            .expect("client stops")
            .expect("client");
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed handshakes");
    assert!(
        took <= Duration::from_secs(2),
        "new certificate after {took:?}"
    );
    eprintln!(
        "rotation: {} handshakes, new certificate served {took:?} after the write",
        ok.load(Ordering::SeqCst)
    );
    // The last handshakes all got the new certificate.
    let tls = handshake(https, Some("a.test"), verifying_client(ca.roots(), H1)).await;
    assert!(presented(&tls.expect("handshake")) == new.der);
}

#[tokio::test]
async fn a_broken_key_file_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let old = ca.leaf(&["a.test"]);
    old.write(dir.path(), "a");
    let gw = https_gateway("", &[cert_entry(dir.path(), "a", &[])], "").await;
    let https = gw.https.expect("https");
    let mut reloads = gw.reloads.clone().expect("reload status");

    std::fs::write(
        dir.path().join("a.key"),
        "-----BEGIN PRIVATE KEY-----\ngarbage\n",
    )
    .expect("write");
    let status = tokio::time::timeout(WAIT, reloads.wait_for(|s| !s.errors.is_empty()))
        .await
        .expect("reload attempted in time")
        .expect("watcher alive")
        .clone();
    assert_eq!(status.errors[0].path, "tls.certificates[0].key");
    assert!(
        status.errors[0].message.contains("a.key"),
        "{}",
        status.errors[0].message
    );
    assert_eq!(status.published, 0);
    let tls = handshake(https, Some("a.test"), looking_client(H1))
        .await
        .expect("handshake");
    assert!(presented(&tls) == old.der, "old certificate still served");

    // Fixing the files recovers without a restart.
    let new = ca.leaf(&["a.test"]);
    new.write(dir.path(), "a");
    tokio::time::timeout(WAIT, reloads.wait_for(|s| s.published == 1))
        .await
        .expect("reloaded in time")
        .expect("watcher alive");
    let tls = handshake(https, Some("a.test"), looking_client(H1))
        .await
        .expect("handshake");
    assert!(presented(&tls) == new.der, "new certificate after the fix");
}

#[tokio::test]
async fn pools_speak_tls_to_agents_that_only_speak_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write ca");
    let other_ca = Ca::new();
    std::fs::write(dir.path().join("other-ca.pem"), &other_ca.pem).expect("write ca");
    let agent = agents("secure", "v1", 1).await;
    let (front, handshakes) = tls_front(&ca.leaf(&["agent.internal"]), agent[0].addr()).await;
    let (ip_front, _) = tls_front(&ca.leaf(&["127.0.0.1"]), agent[0].addr()).await;
    let d = dir.path().display();
    let pool = |name: &str, addr, tls: &str| {
        format!("[[pools]]\nname = \"{name}\"\nbackends = [{{ addr = \"{addr}\" }}]\ntls = {tls}\n")
    };
    let route = |name: &str, path: &str| {
        format!("[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"{path}\" }}\nsplit = [{{ pool = \"{name}\", weight = 1 }}]\n")
    };
    let mut text = String::new();
    for (name, addr, tls) in [
        (
            "named",
            front,
            format!("{{ server_name = \"agent.internal\", ca = \"{d}/ca.pem\" }}"),
        ),
        ("by-ip", ip_front, format!("{{ ca = \"{d}/ca.pem\" }}")),
        (
            "untrusted",
            front,
            format!("{{ server_name = \"agent.internal\", ca = \"{d}/other-ca.pem\" }}"),
        ),
        (
            "insecure",
            front,
            "{ insecure_skip_verify = true }".to_string(),
        ),
    ] {
        text.push_str(&pool(name, addr, &tls));
        text.push_str(&route(name, &format!("/{name}")));
    }
    let gw = TestGateway::start(&text).await;

    for path in ["/named", "/by-ip", "/insecure"] {
        let reply = get(gw.addr, path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        assert_eq!(reply.agent(), "secure-1");
        assert_eq!(reply.json()["path"], path);
    }
    // Keep-alive: a second request reuses the pooled TLS connection.
    let before = handshakes.load(Ordering::SeqCst);
    let reply = get(gw.addr, "/named", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        before,
        "pooled TLS connection reused"
    );

    let reply = get(gw.addr, "/untrusted", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.error(), "upstream_tls_failed");
}

#[tokio::test]
async fn http_listener_redirects_to_https_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    Ca::new().leaf(&["a.test"]).write(dir.path(), "a");
    let agent = agents("redir", "v1", 1).await;
    let certs = [cert_entry(dir.path(), "a", &[])];
    let pool = format!("backends = {}", backends(&agent));
    let gw = https_gateway("redirect_https = true", &certs, &pool).await;
    let port = gw.https.expect("https").port();

    // `get` sends `Host: test.local`.
    let reply = get(gw.addr, "/x/y?z=1", &[]).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    let location = format!("https://test.local:{port}/x/y?z=1");
    assert_eq!(reply.headers["location"], location.as_str());
    assert_eq!(agent[0].requests(), 0, "nothing proxied on http");

    let gw = https_gateway(
        "redirect_https = true\nredirect_https_port = 443",
        &certs,
        &pool,
    )
    .await;
    let reply = get(gw.addr, "/", &[]).await;
    assert_eq!(reply.headers["location"], "https://test.local/");
}

#[tokio::test]
async fn https_listener_honours_max_connections_and_drains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let agent = agents("drain", "v1", 1).await;
    let certs = [cert_entry(dir.path(), "a", &[])];
    let pool = format!("backends = {}", backends(&agent));
    let gw = https_gateway("max_connections = 1", &certs, &pool).await;
    let https = gw.https.expect("https");

    // One connection holds the only slot with a slow request in flight.
    let first = handshake(https, Some("a.test"), looking_client(H1))
        .await
        .expect("first");
    let slow = tokio::spawn(kit::get(first, "a.test", "/slow?ms=500"));
    wait_until("slow request reached the agent", || {
        agent[0].requests() == 1
    })
    .await;
    let second = handshake(https, Some("a.test"), looking_client(H1)).await;
    assert!(
        second.is_err(),
        "over the limit: closed before the handshake"
    );

    // Shutdown while it is in flight: it still completes, and the drain is clean.
    assert_eq!(gw.stop().await, Drained::Clean);
    let reply = tokio::time::timeout(WAIT, slow)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["path"], "/slow");
}

/// Polls `done` every 10 ms for at most [`WAIT`].
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn h2_pools_speak_http2_over_tls_with_alpn_and_refuse_http1_only_backends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write ca");
    let upstream = crate::grpc::limited_h2(usize::MAX).await;
    let leaf = ca.leaf(&["agent.internal"]);
    // The same HTTP/2 server behind TLS that offers h2, and behind TLS that
    // offers only http/1.1 (an HTTP/1-only backend configured as h2).
    let (h2_front, _) = tls_front_alpn(&leaf, upstream.addr, &[b"h2"]).await;
    let (h1_front, _) = tls_front_alpn(&leaf, upstream.addr, &[b"http/1.1"]).await;
    let d = dir.path().display();
    let mut text = String::new();
    for (name, addr) in [("h2", h2_front), ("h1only", h1_front)] {
        text.push_str(&format!(
            "[[pools]]\nname = \"{name}\"\nprotocol = \"h2\"\nbackends = [{{ addr = \"{addr}\" }}]\ntls = {{ server_name = \"agent.internal\", ca = \"{d}/ca.pem\" }}\n[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/{name}\" }}\nsplit = [{{ pool = \"{name}\", weight = 1 }}]\n"
        ));
    }
    let gw = TestGateway::start(&text).await;
    for _ in 0..3 {
        let reply = get(gw.addr, "/h2/x", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(&reply.body[..], b"ok\n");
    }
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        1,
        "one multiplexed TLS connection"
    );
    let reply = get(gw.addr, "/h1only/x", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.error(), "upstream_tls_failed");
}
