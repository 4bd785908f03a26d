//! `docker service scale` 4 → 8 → 2 under GET, POST and SSE load: nothing fails, and
//! every new task answers within 2 s of Swarm reporting it `running`, with the
//! pool's probe at its default settings.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::cluster::{cluster, docker, notice};
use super::gateway::{routes_toml_with, Engine, Gateway, DEFAULT_PROBE};
use super::traffic::{counts, describe_failures, describe_streams, failures, task_of, Load, Sse};

/// "A new task gets traffic within 2 s of `running`".
const FIRST_ANSWER: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn scale_4_to_8_to_2_fails_nothing_and_new_tasks_answer_within_2s_of_running() {
    let Some(c) = cluster("scale") else { return };
    let started = Instant::now();
    let (prefix, svc) = c.agents_service("scale", 4).await;
    let four = svc.wait_running(4, Duration::from_secs(60)).await;
    let gw = Gateway::start(
        c,
        "scale-gw",
        &routes_toml_with(&c.net, &prefix, "", DEFAULT_PROBE),
        Engine::Manager,
        false,
    )
    .await;
    gw.wait_eligible("agents", Duration::from_secs(10), |e| e.len() == 4)
        .await;

    let load = Load::start(gw.http);
    let sse = Sse::start(gw.http);
    load.wait_answers(Instant::now(), 200, Duration::from_secs(20))
        .await;
    let up = Instant::now();
    docker(&["service", "scale", "-d", &format!("{}=8", svc.name)]).await;
    let eight = svc.wait_running(8, Duration::from_secs(90)).await;
    let up_done = up.elapsed();
    // Every new task must have answered; give the last one its 2 s.
    tokio::time::sleep(FIRST_ANSWER + Duration::from_millis(500)).await;
    let records = load.records();
    let mut first: BTreeMap<&str, Instant> = BTreeMap::new();
    for r in records.iter().filter(|r| r.ok) {
        let t = first.entry(task_of(&r.agent)).or_insert(r.done);
        *t = (*t).min(r.done);
    }
    let mut lags = Vec::new();
    for t in eight.iter().filter(|t| four.iter().all(|f| f.id != t.id)) {
        let answered = first.get(t.id.as_str()).map(|i| load.wall(*i));
        let lag = answered.map(|a| a.duration_since(t.since()).unwrap_or(Duration::ZERO));
        lags.push((t.id.clone(), t.node.clone(), lag));
    }

    let down = Instant::now();
    docker(&["service", "scale", "-d", &format!("{}=2", svc.name)]).await;
    svc.wait_running(2, Duration::from_secs(60)).await;
    let down_done = down.elapsed();
    load.wait_answers(Instant::now(), 400, Duration::from_secs(20))
        .await;
    let records = load.stop().await;
    let streams = sse.stop().await;

    let (gets, posts) = counts(&records);
    let (failed_gets, failed_posts) = failures(&records);
    let failed_streams = streams.iter().filter(|s| !s.ok).count();
    let worst = lags.iter().filter_map(|(.., l)| *l).max();
    notice(&format!(
        "swarm scale 4->8->2: {gets} GETs ({failed_gets} failed), {posts} POSTs ({failed_posts} failed), \
         {} SSE streams ({failed_streams} failed); 4->8 converged in {up_done:.1?}, 8->2 in {down_done:.1?}; \
         first answer after `running` per new task: {:?} (worst {worst:.2?}); test {:.1?}",
        streams.len(),
        lags.iter().map(|(id, node, l)| format!("{}@{node}:{}", &id[..6], l.map_or("never".into(), |l| format!("{l:.2?}")))).collect::<Vec<_>>(),
        started.elapsed()
    ));
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
    assert_eq!(lags.len(), 4, "4 new tasks");
    for (id, node, lag) in &lags {
        let lag = lag.unwrap_or_else(|| panic!("new task {id} on {node} never answered"));
        assert!(
            lag <= FIRST_ANSWER,
            "new task {id} on {node} first answered {lag:?} after running"
        );
    }
}
