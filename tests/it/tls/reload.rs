//! TLS and the config reload: a file whose TLS files do not load is refused (and
//! tried again once they do); `plan` refuses it too.

use std::sync::atomic::Ordering;

use http::{Method, StatusCode};

use super::kit::{tls_front, Ca};
use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, backends, get};

#[tokio::test]
async fn reload_refuses_a_file_whose_tls_files_do_not_load_then_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    let agent = agents("reload-tls", "v1", 1).await;
    let ca = Ca::new();
    let (front, handshakes) = tls_front(&ca.leaf(&["agent.internal"]), agent[0].addr()).await;
    let plain = format!(
        "[[pools]]\nname = \"plain\"\nbackends = {}\n\n[[routes]]\nname = \"plain\"\nsplit = [{{ pool = \"plain\", weight = 1 }}]\n",
        backends(&agent)
    );
    let gw = LiveGateway::start_in(dir, &config_text(&plain, "", "")).await;
    let before = gw.counters();

    // A new pool whose CA file does not exist yet.
    let secure = format!(
        "{plain}\n[[pools]]\nname = \"secure\"\nbackends = [{{ addr = \"{front}\" }}]\ntls = {{ server_name = \"agent.internal\", ca = \"{}\" }}\n\n[[routes]]\nname = \"secure\"\nmatch = {{ path_prefix = \"/secure\" }}\nsplit = [{{ pool = \"secure\", weight = 1 }}]\n",
        ca_path.display()
    );
    let text = config_text(&secure, "", "");
    let plan = gw.api(Method::POST, "/api/v1/plan", Some(&text)).await;
    assert_eq!(plan.status, 400, "{:?}", plan.body);
    let body: serde_json::Value = serde_json::from_slice(&plan.body).expect("JSON");
    assert_eq!(body["path"], "pools[1].tls.ca", "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("ca.pem"),
        "{body}"
    );

    gw.rewrite(&text);
    let c = gw
        .wait_counters(|c| c.reloads_failed > before.reloads_failed)
        .await;
    assert_eq!(c.reloads_ok, before.reloads_ok);
    assert_eq!(c.generation, before.generation, "nothing published");
    let reply = get(gw.addr, "/secure", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "still the old routes: served by the plain pool"
    );

    // The CA file appears next to the config: the same text now loads.
    std::fs::write(&ca_path, &ca.pem).expect("write ca");
    gw.wait_counters(|c| c.reloads_ok > before.reloads_ok).await;
    let reply = get(gw.addr, "/secure", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["path"], "/secure");
    assert_eq!(handshakes.load(Ordering::SeqCst), 1, "served over TLS");
    let state = gw.state().await;
    assert!(state.pools.iter().any(|p| p.name == "secure"));
}
