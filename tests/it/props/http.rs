//! Header processing: hop-by-hop stripping, forwarding fields, host parsing and
//! the framing checks as properties, then mutated raw request heads against a
//! live gateway, which must answer or close every one and keep serving, and must
//! answer each the same whether its own HTTP/1 loop or hyper reads it.

use std::net::IpAddr;
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request, Version};
use proptest::prelude::*;
use sluicegate::testing::data_plane::proxy::{framing, headers};
use sluicegate::testing::data_plane::route::host_without_port;
use sluicegate_echo_agent::EchoHandle;
use tokio::time::Instant;

use super::{check, edits, mutate, out_of_time, runner, seeds};
use crate::hardening::raw::first_answer;
use crate::support::{agents, backends, get, TestGateway};

const HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const NAMES: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-a",
    "x-b",
    "x-secret",
    "host",
    "content-length",
    "cookie",
];

fn field() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        proptest::sample::select(NAMES).prop_map(str::to_owned),
        "x-[a-z]{1,6}"
    ];
    let token = prop_oneof![
        proptest::sample::select(NAMES).prop_map(str::to_owned),
        "[a-zA-Z-]{0,6}"
    ];
    let value = proptest::collection::vec(token, 0..4).prop_map(|t| t.join(", "));
    (name, value)
}

fn header_map(fields: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in fields {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            map.append(k, v);
        }
    }
    map
}

#[test]
fn stripping_removes_exactly_the_hop_by_hop_fields() {
    let strategy = (proptest::collection::vec(field(), 0..12), any::<bool>());
    check(runner(2048), strategy, |(fields, keep_upgrade)| {
        let before = header_map(&fields);
        let mut after = before.clone();
        headers::strip_hop_by_hop(&mut after, keep_upgrade);
        let named: Vec<String> = before
            .get_all("connection")
            .iter()
            .flat_map(|v| {
                v.to_str()
                    .unwrap_or("")
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
            })
            .collect();
        let hop = |n: &str| HOP.contains(&n) || named.iter().any(|t| t == n);
        for name in after.keys() {
            let kept_for_upgrade = keep_upgrade && (name == "upgrade" || name == "connection");
            prop_assert!(!hop(name.as_str()) || kept_for_upgrade, "{name} survived");
        }
        for name in before.keys().filter(|n| !hop(n.as_str())) {
            let a: Vec<_> = before.get_all(name).iter().collect();
            let b: Vec<_> = after.get_all(name).iter().collect();
            prop_assert_eq!(a, b, "end-to-end field {} changed", name);
        }
        Ok(())
    });
}

#[test]
fn forwarding_fields_are_set_never_trusted() {
    let prior = proptest::option::of("[ -~]{0,40}");
    let strategy = (
        prior,
        any::<[u8; 4]>(),
        proptest::option::of("[a-z0-9]{1,8}"),
    );
    check(runner(1024), strategy, |(prior, ip, request_id)| {
        let mut map = HeaderMap::new();
        if let Some(Ok(v)) = prior.as_deref().map(HeaderValue::try_from) {
            map.insert("x-forwarded-for", v);
        }
        if let Some(id) = &request_id {
            map.insert(
                "x-request-id",
                HeaderValue::try_from(id.as_str()).expect("id"),
            );
        }
        map.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let client = IpAddr::from(ip);
        let value = headers::client_value(client);
        headers::Forwarding::new(&map, &value, "http", None).apply(&mut map);
        let xff = map["x-forwarded-for"].to_str().expect("ascii");
        prop_assert!(xff.ends_with(&client.to_string()), "{xff}");
        prop_assert_eq!(&map["x-forwarded-proto"], "http");
        prop_assert!(!map.contains_key("x-forwarded-host"));
        if let Some(id) = request_id {
            prop_assert_eq!(map["x-request-id"].to_str().ok(), Some(id.as_str()));
        }
        Ok(())
    });
}

#[test]
fn host_parsing_and_framing_checks_never_panic() {
    let host = proptest::collection::vec(any::<u8>(), 0..24);
    let uri = prop_oneof!["/[ -~]{0,16}", "[a-z]{1,5}://[ -~]{0,16}", "[ -~]{0,20}"];
    let te = proptest::option::of("[ -~]{0,20}");
    let strategy = (
        host,
        uri,
        te,
        proptest::sample::select(&[Version::HTTP_10, Version::HTTP_11, Version::HTTP_2][..]),
    );
    check(runner(4096), strategy, |(host, uri, te, version)| {
        if let Ok(text) = std::str::from_utf8(&host) {
            let bare = host_without_port(text);
            prop_assert!(text.starts_with(bare));
        }
        let mut req = Request::builder().version(version);
        if let Ok(uri) = uri.parse::<http::Uri>() {
            req = req.uri(uri);
        }
        let mut req = req
            .body(())
            .map_err(|e| TestCaseError::reject(e.to_string()))?;
        if let Ok(v) = HeaderValue::from_bytes(&host) {
            req.headers_mut().insert("host", v);
        }
        if let Some(Ok(v)) = te.as_deref().map(HeaderValue::try_from) {
            req.headers_mut().insert("transfer-encoding", v);
        }
        if framing::check(&req).is_ok() && version == Version::HTTP_11 {
            prop_assert_eq!(req.headers().get_all("host").iter().count(), 1);
        }
        Ok(())
    });
}

const HEAD_VOCABULARY: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    " ",
    ":",
    "\t",
    "\0",
    "Host: t\r\n",
    "Host: evil\r\n",
    "Content-Length: 5\r\n",
    "Content-Length: -1\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip\r\n",
    "Connection: close, x-a\r\n",
    "Expect: 100-continue\r\n",
    "HTTP/1.0",
    "HTTP/2.0",
    "\u{7f}",
    "é",
    "0\r\n\r\n",
    "ffffffffffffffffff\r\n",
];

/// A gateway with a 300 ms head timeout, a 500 ms client body timeout (a head whose
/// Content-Length promises more than the input holds is a stalled upload: 408) and a
/// 500 ms response timeout before one agent, and the request heads to send it: the `http_heads` corpus, then `cases`
/// mutations of it (`SLUICEGATE_FUZZ_CASES` overrides).
async fn mutated_heads(cases: u32) -> (TestGateway, Vec<EchoHandle>, Vec<Vec<u8>>) {
    let a = agents("a", "v1", 1).await;
    let toml = format!(
        "header_read_timeout = \"300ms\"\n[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\ntimeouts = {{ response_header = \"500ms\", client_body = \"500ms\" }}\n",
        backends(&a)
    );
    let gw = TestGateway::start(&toml).await;
    let corpus: Vec<Vec<u8>> = seeds("http_heads").into_iter().map(|(_, b)| b).collect();
    let mut inputs = corpus.clone();
    let mut runner = runner(cases);
    let strategy = (proptest::sample::select(corpus), edits(HEAD_VOCABULARY));
    for _ in 0..runner.config().cases {
        let tree = strategy.new_tree(&mut runner).expect("value");
        let (seed, edits) = proptest::strategy::ValueTree::current(&tree);
        inputs.push(mutate(seed, &edits));
    }
    (gw, a, inputs)
}

#[tokio::test]
async fn mutated_request_heads_are_answered_or_closed_and_never_hang() {
    let (gw, _agents, inputs) = mutated_heads(160).await;
    let started = Instant::now();
    for input in inputs {
        if out_of_time(started) {
            break;
        }
        // Head timeout 300 ms, body and response timeouts 500 ms: 3 s is a hang.
        let r = first_answer(gw.addr, &input, Duration::from_secs(3)).await;
        let answered = r.status >= 100 && r.status < 600;
        assert!(
            r.closed || answered,
            "no answer and no close for {:?}: {:?}",
            String::from_utf8_lossy(&input),
            r.text
        );
    }
    assert_eq!(get(gw.addr, "/after", &[]).await.status, 200);
}

/// A request the gateway's own HTTP/1 loop does not serve (it has a
/// `Content-Length`): what follows it on the connection is hyper's to read.
const HAND_TO_HYPER: &[u8] = b"GET /handoff HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n";

/// The status of the answer after the first one in `bytes` (0 when there is none).
fn second_status(bytes: &[u8]) -> u16 {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut first = httparse::Response::new(&mut fields);
    let Ok(httparse::Status::Complete(head)) = first.parse(bytes) else {
        return 0;
    };
    let length = first
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let end = match length {
        Some(n) => head + n,
        // Chunked: the last chunk ends it.
        None => match bytes[head..].windows(5).position(|w| w == b"0\r\n\r\n") {
            Some(at) => head + at + 5,
            None => return 0,
        },
    };
    let rest = bytes.get(end..).unwrap_or_default();
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut second = httparse::Response::new(&mut fields);
    match second.parse(rest) {
        Ok(_) => second.code.unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test]
async fn the_gateways_http1_loop_answers_every_head_as_hyper_does() {
    let (gw, _agents, inputs) = mutated_heads(120).await;
    let started = Instant::now();
    let mut compared = 0;
    for input in inputs {
        if out_of_time(started) {
            break;
        }
        // Without a blank line hyper's answer depends on how the bytes arrive: it
        // parses a head again only once a new read holds its end, so a malformed
        // field may be answered 400 or left to the head timeout.
        let ends =
            input.windows(4).any(|w| w == b"\r\n\r\n") || input.windows(2).any(|w| w == b"\n\n");
        if !ends {
            continue;
        }
        let ours = first_answer(gw.addr, &input, Duration::from_secs(3)).await;
        let mut s = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let mut both = HAND_TO_HYPER.to_vec();
        both.extend_from_slice(&input);
        let _ = tokio::io::AsyncWriteExt::write_all(&mut s, &both).await;
        // Until hyper's answer to the input has begun, or the connection closed.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut chunk = [0u8; 4096];
        while second_status(&got) == 0 {
            let read = tokio::io::AsyncReadExt::read(&mut s, &mut chunk);
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let hypers = second_status(&got);
        assert_eq!(
            ours.status,
            hypers,
            "the loop and hyper differ on {:?}: {:?} / {:?}",
            String::from_utf8_lossy(&input),
            ours.text,
            String::from_utf8_lossy(&got)
        );
        compared += 1;
    }
    assert!(compared > 20, "only {compared} heads compared");
}
