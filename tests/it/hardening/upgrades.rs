//! Only the upgrades a route allows become tunnels (issue 31). Behind `/up` is a
//! fake backend that answers `101` to anything; everything else goes to an echo
//! agent. An upgrade the route does not allow is forwarded as a plain request
//! (`Upgrade` and its `Connection` token removed), so that backend's `101` is a
//! `502 bad_upgrade` and the connection stays HTTP: the next request on it is
//! routed and rewritten like any other, and never reaches the fake raw.

use std::time::Duration;

use super::raw::{exchange_for, Answer, Bystander, FakeBackend};
use crate::support::{agents, backends, TestGateway};

/// `/up` → the fake (with `upgrades` when given), the rest → the echo agents.
fn config(fake: &FakeBackend, good: &str, upgrades: &str) -> String {
    format!(
        r#"
[[pools]]
name = "up"
backends = [{{ addr = "{}" }}]
[[pools]]
name = "good"
backends = {good}
[[routes]]
name = "up"
match = {{ path_prefix = "/up" }}
split = [{{ pool = "up", weight = 1 }}]
{upgrades}
[[routes]]
name = "good"
split = [{{ pool = "good", weight = 1 }}]
"#,
        fake.addr
    )
}

const SWITCH_H2C: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n";
const SWITCH_WS: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";

/// Statuses of every response head in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

async fn gateway(
    answer: &'static [u8],
    upgrades: &str,
) -> (
    TestGateway,
    FakeBackend,
    Vec<sluicegate_echo_agent::EchoHandle>,
) {
    let good = agents("good", "v1", 1).await;
    let fake = FakeBackend::start(Answer::Bytes(answer)).await;
    let gw = TestGateway::start(&config(&fake, &backends(&good), upgrades)).await;
    (gw, fake, good)
}

#[tokio::test]
async fn an_h2c_upgrade_is_no_tunnel_and_the_next_request_is_routed() {
    let (gw, fake, _good) = gateway(SWITCH_H2C, "").await;
    let bystander = Bystander::start(gw.addr);
    let bytes = b"GET /up/h2c HTTP/1.1\r\nhost: t\r\nupgrade: h2c\r\nconnection: Upgrade, HTTP2-Settings\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n\
GET /internal-only HTTP/1.1\r\nhost: t\r\n\r\n";
    let r = exchange_for(gw.addr, bytes, Duration::from_secs(2)).await;
    assert_eq!(statuses(&r.text), [502, 200], "{}", r.text);
    assert_eq!(r.header("sluicegate-error"), Some("bad_upgrade"));
    // The second answer is the echo agent's: routed, with the forwarding fields.
    assert!(r.text.contains("\"/internal-only\""), "{}", r.text);
    assert!(r.text.contains("x-forwarded-for"), "{}", r.text);
    let seen = fake.all_received().to_ascii_lowercase();
    assert!(!seen.contains("upgrade: h2c"), "upgrade forwarded: {seen}");
    assert!(!seen.contains("http2-settings"), "{seen}");
    assert!(
        !seen.contains("internal-only"),
        "tunnelled past routing: {seen}"
    );
    bystander.assert_served().await;
}

#[tokio::test]
async fn a_websocket_upgrade_still_tunnels() {
    let (gw, fake, _good) = gateway(SWITCH_WS, "").await;
    let bytes = b"GET /up/ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n\
raw bytes after the switch";
    let r = exchange_for(gw.addr, bytes, Duration::from_secs(1)).await;
    assert_eq!(statuses(&r.text), [101], "{}", r.text);
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while !fake.all_received().contains("raw bytes after the switch") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tunnel carried nothing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fake.all_received().contains("upgrade: websocket"));
}

#[tokio::test]
async fn only_the_allowed_tokens_of_a_list_are_forwarded_in_any_case() {
    let (gw, fake, _good) = gateway(SWITCH_WS, "").await;
    let bytes =
        b"GET /up/ws HTTP/1.1\r\nhost: t\r\nupgrade: WebSocket, foo\r\nconnection: Upgrade\r\n\r\n";
    let r = exchange_for(gw.addr, bytes, Duration::from_secs(1)).await;
    assert_eq!(statuses(&r.text), [101], "{}", r.text);
    let seen = fake.all_received();
    assert!(seen.contains("upgrade: WebSocket\r\n"), "{seen}");
    assert!(!seen.contains("foo"), "{seen}");
}

#[tokio::test]
async fn an_unknown_token_is_a_plain_request_and_a_switch_to_it_is_502() {
    let (gw, fake, _good) = gateway(SWITCH_H2C, "").await;
    let bytes = b"GET /up/foo HTTP/1.1\r\nhost: t\r\nupgrade: foo/2\r\nconnection: upgrade\r\n\r\nGET /after HTTP/1.1\r\nhost: t\r\n\r\n";
    let r = exchange_for(gw.addr, bytes, Duration::from_secs(1)).await;
    assert_eq!(statuses(&r.text), [502, 200], "{}", r.text);
    assert!(!fake.all_received().to_ascii_lowercase().contains("upgrade"));
}

#[tokio::test]
async fn a_switch_to_a_protocol_other_than_the_allowed_one_offered_is_502() {
    // The request asks for websocket; the backend switches to h2c.
    let (gw, _fake, _good) = gateway(SWITCH_H2C, "").await;
    let bytes = b"GET /up/ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nGET /after HTTP/1.1\r\nhost: t\r\n\r\n";
    let r = exchange_for(gw.addr, bytes, Duration::from_secs(1)).await;
    assert_eq!(statuses(&r.text)[0], 502, "{}", r.text);
    assert_eq!(r.header("sluicegate-error"), Some("bad_upgrade"));
}

#[tokio::test]
async fn a_route_can_allow_no_upgrade_or_another_one() {
    let (gw, fake, _good) = gateway(SWITCH_WS, "upgrades = []").await;
    let ws = b"GET /up/ws HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
    let r = exchange_for(gw.addr, ws, Duration::from_millis(500)).await;
    assert_eq!(statuses(&r.text), [502], "{}", r.text);
    assert!(!fake.all_received().to_ascii_lowercase().contains("upgrade"));

    let (gw, _fake, _good) = gateway(SWITCH_H2C, r#"upgrades = ["H2C"]"#).await;
    let h2c = b"GET /up/h2c HTTP/1.1\r\nhost: t\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n";
    let r = exchange_for(gw.addr, h2c, Duration::from_millis(500)).await;
    assert_eq!(statuses(&r.text), [101], "{}", r.text);
}
