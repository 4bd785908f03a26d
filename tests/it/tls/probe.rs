//! Health probes of a `tls` pool speak TLS, with the pool's verification.

use http::StatusCode;
use sluicegate::testing::data_plane::health::{HealthChange, HealthStatus};
use tokio::sync::broadcast::error::RecvError;

use super::kit::{tls_front, Ca};
use crate::health::probe;
use crate::support::{agents, get, TestGateway, WAIT};

#[tokio::test]
async fn probes_of_a_tls_pool_speak_tls_and_verify_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let ca = Ca::new();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write ca");
    std::fs::write(dir.path().join("other-ca.pem"), &Ca::new().pem).expect("write ca");
    let agent = agents("probed", "v1", 1).await;
    let (front, _) = tls_front(&ca.leaf(&["agent.internal"]), agent[0].addr()).await;
    let mut text = String::new();
    for (pool, ca_file) in [("trusted", "ca.pem"), ("untrusted", "other-ca.pem")] {
        text.push_str(&format!(
            "[[pools]]\nname = \"{pool}\"\nbackends = [{{ addr = \"{front}\" }}]\ntls = {{ server_name = \"agent.internal\", ca = \"{d}/{ca_file}\" }}\n{}\n[[routes]]\nname = \"{pool}\"\nmatch = {{ path_prefix = \"/{pool}\" }}\nsplit = [{{ pool = \"{pool}\", weight = 1 }}]\n\n",
            probe(1, 1)
        ));
    }
    let mut gw = TestGateway::start(&text).await;

    // The trusted pool's probe passes over TLS; the other one's handshake fails.
    let mut pending = vec![
        ("trusted", HealthStatus::Healthy),
        ("untrusted", HealthStatus::Unhealthy),
    ];
    tokio::time::timeout(WAIT, async {
        while !pending.is_empty() {
            match gw.events.recv().await {
                Ok(e) => {
                    if let HealthChange::Status { to, .. } = e.change {
                        pending.retain(|&(pool, want)| !(e.pool.as_str() == pool && want == to));
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("health not reached in time: {pending:?}"));

    let reply = get(gw.addr, "/trusted", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["path"], "/trusted");
    let reply = get(gw.addr, "/untrusted", &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "no_healthy_backend");
}
