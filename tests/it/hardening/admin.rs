//! The control plane under abuse: oversized bodies, slow clients, and the token
//! kept out of every answer.

use std::time::Duration;

use http::Method;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::raw::{exchange_for, read_until_close};
use crate::support::live::{api, config_text, LiveGateway};

const BODY: &str = r#"
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:9" }]
[[routes]]
name = "all"
split = [{ pool = "blue", weight = 1 }]
"#;

#[tokio::test]
async fn oversized_admin_bodies_are_413_and_change_nothing() {
    let gw = LiveGateway::start(&config_text(BODY, "", "")).await;
    let huge = format!(
        "{{\"blue\": 1, \"pad\": \"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let r = gw
        .api(Method::PUT, "/api/v1/routes/all/split", Some(&huge))
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    let plan = format!("# {}\n", "x".repeat(2 * 1024 * 1024));
    let r = gw.api(Method::POST, "/api/v1/plan", Some(&plan)).await;
    assert_eq!(r.status, 413);
    // The API still works, and nothing was applied.
    let r = gw.api(Method::GET, "/api/v1/state", None).await;
    assert_eq!(r.status, 200);
    assert!(!String::from_utf8_lossy(&r.body).contains("\"api\""));
}

#[tokio::test(start_paused = true)]
async fn slow_admin_clients_are_cut_off() {
    let gw = LiveGateway::start(&config_text(BODY, "", "")).await;
    // A head that never ends: closed at the 5 s head timeout.
    let mut s = TcpStream::connect(gw.admin).await.expect("connect");
    s.write_all(b"GET /api/v1/state HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    assert!(read_until_close(&mut s, &mut got, Duration::from_secs(60)).await);
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // A body that never comes: 408 at the 10 s request timeout.
    let head = b"POST /api/v1/plan HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n";
    let r = exchange_for(gw.admin, head, Duration::from_secs(60)).await;
    assert_eq!(r.status, 408, "{}", r.text);
}

#[tokio::test]
async fn the_token_never_appears_in_answers() {
    const VAR: &str = "SLUICEGATE_HARDENING_TEST_TOKEN";
    const SECRET: &str = "hunter2-very-secret-token";
    // A variable only this test reads.
    std::env::set_var(VAR, SECRET);
    let admin_extra = format!("token_env = \"{VAR}\"");
    let gw = LiveGateway::start(&config_text(BODY, "", &admin_extra)).await;
    let state = api(gw.admin, Method::GET, "/api/v1/state", None, Some(SECRET)).await;
    assert_eq!(state.status, 200);
    let text = String::from_utf8_lossy(&state.body);
    assert!(!text.contains(SECRET), "{text}");
    for presented in [None, Some("hunter2-very-secret-tokeX")] {
        let r = api(gw.admin, Method::GET, "/api/v1/state", None, presented).await;
        assert_eq!(r.status, 401);
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("hunter2"), "{text}");
    }
}
