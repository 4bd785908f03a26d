//! A pool made by Docker labels with `sluicegate.protocol=h2c`: the gateway
//! speaks HTTP/2 (prior knowledge) to the labelled echo agent, its `/health`
//! probe included, for a client that came over HTTP/1.1.

use super::front::{gateway, pool, serving, wait_state, SERIAL};
use super::SLOW;
use crate::support::get;

const BODY: &str = r#"
[[routes]]
name = "agents"
split = [{ pool = "p", weight = 1 }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_labelled_h2c_speaks_http2_to_its_container() {
    let scope = scope!("gwh2c");
    let _serial = SERIAL.lock().await;
    let gw = gateway(&scope, "[\"*\"]", BODY, None).await;
    let labels = [scope.label("pool", "p"), scope.label("protocol", "h2c")];
    scope.agent("a", &labels, &["--no-healthcheck"], &[]).await;
    let state = wait_state(&gw, SLOW, "the h2c agent serving", |s| serving(s, "p", 1)).await;
    // The probe went over the pool's HTTP/2 connections (the label default:
    // `GET /health`).
    let backend = &pool(&state, "p")[0];
    assert_eq!(
        backend.last_probe.as_deref(),
        Some("pass: HTTP 200"),
        "{backend:?}"
    );
    for _ in 0..3 {
        let reply = get(gw.addr, "/echo", &[]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.agent(), "a");
        assert_eq!(reply.json()["http"], "HTTP/2.0", "the agent saw HTTP/2");
    }
}
