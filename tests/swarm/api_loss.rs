//! The manager's API lost for 5 s (the gateway reaches the engine through a socket
//! proxy the test switches off; connections are cut and refused): the last known set
//! keeps serving with nothing failed, and a change made meanwhile (a scale-up) is
//! picked up within 2 s of the API coming back.

use std::time::Duration;

use tokio::time::Instant;

use super::cluster::{cluster, docker, notice};
use super::gateway::{routes_toml, Engine, Gateway, SocketProxy};
use super::traffic::{counts, describe_failures, describe_streams, failures, Load, Sse};

const OUTAGE: Duration = Duration::from_secs(5);
/// "Resync within 2 s after".
const RESYNC: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn manager_api_lost_for_5s_keeps_the_last_set_and_resyncs_within_2s() {
    let Some(c) = cluster("api") else { return };
    let started = Instant::now();
    let (prefix, svc) = c.agents_service("api", 4).await;
    let four = svc.wait_running(4, Duration::from_secs(60)).await;
    let proxy = SocketProxy::start();
    let gw = Gateway::start(
        c,
        "api-gw",
        &routes_toml(&c.net, &prefix, ""),
        Engine::Proxied(&proxy),
        false,
    )
    .await;
    let (kept, _) = gw
        .wait_eligible("agents", Duration::from_secs(10), |e| e.len() == 4)
        .await;

    let load = Load::start(gw.http);
    let sse = Sse::start(gw.http);
    load.wait_answers(Instant::now(), 200, Duration::from_secs(20))
        .await;
    proxy.set(false);
    let off = Instant::now();
    docker(&["service", "scale", "-d", &format!("{}=6", svc.name)]).await;
    let six = svc.wait_running(6, Duration::from_secs(60)).await;
    let six_at = Instant::now();
    tokio::time::sleep_until(off + OUTAGE).await;
    // While the API is gone: the last set, all of it, nothing new.
    let during = gw.eligible("agents").await;
    let state_during = gw.state_json().await;
    proxy.set(true);
    let on = Instant::now();
    let new: Vec<String> = six
        .iter()
        .filter(|t| four.iter().all(|f| f.id != t.id))
        .filter_map(|t| t.backend_addr(&c.net))
        .collect();
    let deadline = on + Duration::from_secs(20);
    let mut present_at = None;
    loop {
        let state = gw.state().await;
        let addrs: Vec<&str> = state
            .pools
            .iter()
            .filter(|p| p.name == "agents")
            .flat_map(|p| &p.backends)
            .map(|b| b.addr.as_str())
            .collect();
        if present_at.is_none() && new.iter().all(|n| addrs.contains(&n.as_str())) {
            present_at = Some(Instant::now());
        }
        if present_at.is_some() && gw.eligible("agents").await.len() == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no resync 20 s after the API came back: {addrs:?}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let eligible_at = Instant::now();
    let present_at = present_at.unwrap_or(eligible_at);
    load.wait_answers(Instant::now(), 200, Duration::from_secs(20))
        .await;
    let records = load.stop().await;
    let streams = sse.stop().await;

    let (gets, posts) = counts(&records);
    let (failed_gets, failed_posts) = failures(&records);
    let failed_streams = streams.iter().filter(|s| !s.ok).count();
    notice(&format!(
        "swarm manager API lost for {:.1?} (the 6 tasks were running {:.1?} into it): {gets} GETs \
         ({failed_gets} failed), {posts} POSTs ({failed_posts} failed), {} SSE streams ({failed_streams} \
         failed); the new tasks in the set {:.2?} after the API came back, eligible after {:.2?}; test {:.1?}",
        on - off,
        six_at - off,
        streams.len(),
        present_at - on,
        eligible_at - on,
        started.elapsed()
    ));
    let view = state_during.get("docker").cloned().unwrap_or_default();
    notice(&format!("swarm state while the API was gone: {view}"));
    assert_eq!(
        during, kept,
        "the last known set is kept while the API is gone"
    );
    assert_eq!(
        (failed_gets, failed_posts),
        (0, 0),
        "{:?}",
        describe_failures(&records, 10)
    );
    assert_eq!(
        failed_streams,
        0,
        "{:?}",
        describe_streams(&streams, started, 5)
    );
    assert!(
        present_at - on <= RESYNC,
        "resync took {:?}",
        present_at - on
    );
}
