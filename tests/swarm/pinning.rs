//! Pinning across replicas: three gateway replicas sharing `[cluster]` (two on
//! node 1, one on node 2), a route that pins sessions by `mcp-session-id`. 200
//! sessions, each naming its own id from its first request, send every request
//! to a replica drawn at random while green's share goes 5 → 25 → 50 (written
//! through replica 1, waited for on all three): no session may answer from two
//! versions at one share, and none may leave green as its share grows. Beside
//! them, 60 sessions per share the *agent* names (started without an id on a
//! random replica; `sticky.prefix`, on by default with `[cluster]`, hands the
//! client `<pool>~<id>`): each must come back, through any replica, to the
//! version that created it, the agent seeing its own id.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::cluster::{cluster, notice};
use super::gateway::{Engine, Gateway};
use super::replicas::{put, routes_toml, split_of};
use super::traffic::task_of;

const SESSIONS: usize = 200;
/// Sessions the agent names, started at each share.
const AGENT_NAMED: usize = 60;
/// Requests per session at each share.
const PER_SESSION: usize = 3;

/// What one `GET /mcp` through a replica came back with.
struct Answer {
    /// The agent's name (`x-agent`).
    agent: String,
    /// The `mcp-session-id` of the answer, if any (the id the client holds).
    session: Option<String>,
    /// The `mcp-session-id` the agent saw, from its echo.
    agent_saw: Option<String>,
}

/// `GET /mcp` through the gateway at `http`, naming `session` if given.
async fn ask(http: SocketAddr, session: Option<&str>) -> Result<Answer, String> {
    let fut = async {
        let stream = TcpStream::connect(http).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::get("/mcp").header("host", "load.test");
        if let Some(id) = session {
            req = req.header("mcp-session-id", id);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let text = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (agent, held) = (text("x-agent").unwrap_or_default(), text("mcp-session-id"));
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        let echo: serde_json::Value = serde_json::from_slice(&body.to_bytes())
            .map_err(|e| format!("the agent's echo: {e}"))?;
        Ok(Answer {
            agent,
            session: held,
            agent_saw: echo["headers"]["mcp-session-id"]
                .as_str()
                .map(str::to_owned),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn sessions_keep_their_version_on_every_replica_as_the_canary_grows() {
    let Some(c) = cluster("pinning") else { return };
    let prefix = format!("sgs{}pin", c.id);
    let pool = |p: &str| vec![format!("{prefix}.pool={p}"), format!("{prefix}.port=8080")];
    let blue = c.agent_service("pin-blue", 2, &pool("blue"), &[]).await;
    let green = c.agent_service("pin-green", 2, &pool("green"), &[]).await;
    let store = c.agent_service("pin-store", 1, &[], &[]).await;
    let ids = |tasks: Vec<super::cluster::Task>| -> BTreeSet<String> {
        tasks.into_iter().map(|t| t.id).collect()
    };
    let blue_tasks = ids(blue.wait_running(2, Duration::from_secs(60)).await);
    let green_tasks = ids(green.wait_running(2, Duration::from_secs(60)).await);
    store.wait_running(1, Duration::from_secs(60)).await;

    let peers = (1..=3)
        .map(|i| format!("\"http://{}:9901\"", c.name(&format!("pin-gw{i}"))))
        .collect::<Vec<_>>()
        .join(", ");
    let config = routes_toml(&c.net, &prefix, &store.name, &peers).replace(
        "retries = 2\n",
        "retries = 2\nsticky = { learn_header = \"mcp-session-id\" }\n",
    );
    assert!(config.contains("learn_header"), "{config}");
    let mut replicas = Vec::new();
    for (i, on_node2) in [(1, false), (2, false), (3, true)] {
        let g = Gateway::start(c, &format!("pin-gw{i}"), &config, Engine::Manager, on_node2).await;
        replicas.push(g);
    }
    for g in &replicas {
        g.wait_eligible("blue", Duration::from_secs(15), |e| e.len() == 2)
            .await;
        g.wait_eligible("green", Duration::from_secs(15), |e| e.len() == 2)
            .await;
    }

    let version = |agent: &str| {
        let task = task_of(agent);
        if green_tasks.contains(task) {
            "green"
        } else if blue_tasks.contains(task) {
            "blue"
        } else {
            panic!("answer from an unknown agent {agent:?}")
        }
    };
    // (the id the client holds, the agent's own id, the version that created it)
    let mut named: Vec<(String, String, &str)> = Vec::new();
    let (mut named_requests, mut named_bounced, mut named_unseen) = (0usize, 0usize, 0usize);
    let sessions: Vec<String> = (0..SESSIONS).map(|i| format!("pin-{}-{i}", c.id)).collect();
    let mut on_green = [false; SESSIONS];
    let (mut requests, mut failed, mut bounced, mut left_green) = (0usize, 0usize, 0usize, 0usize);
    let mut lines = Vec::new();
    for green_w in [5u32, 25, 50] {
        let want = (100 - green_w, green_w);
        let (status, answer) = put(
            replicas[0].admin,
            "/api/v1/routes/agents/split",
            replicas[0].token(),
            &format!("{{\"blue\": {}, \"green\": {green_w}}}", want.0),
        )
        .await
        .expect("split answered");
        assert_eq!(status, 200, "{answer}");
        let from = Instant::now();
        for g in &replicas {
            while split_of(g).await != Some(want) {
                assert!(
                    from.elapsed() < Duration::from_secs(5),
                    "{}: {want:?} not routed",
                    g.name
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (mut green_n, mut step_bounced) = (0usize, 0usize);
        for (i, id) in sessions.iter().enumerate() {
            let mut versions = BTreeSet::new();
            for _ in 0..PER_SESSION {
                let g = &replicas[fastrand::usize(..replicas.len())];
                requests += 1;
                match ask(g.http, Some(id)).await {
                    Ok(a) => {
                        versions.insert(version(&a.agent));
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}: session {id}: {e}", g.name);
                    }
                }
            }
            step_bounced += usize::from(versions.len() > 1);
            let now_green = versions.contains("green") && versions.len() == 1;
            left_green += usize::from(on_green[i] && !now_green);
            on_green[i] = now_green;
            green_n += usize::from(now_green);
        }
        bounced += step_bounced;
        // Sessions the agent names: started here, then every one so far asked
        // twice through random replicas.
        for _ in 0..AGENT_NAMED {
            let g = &replicas[fastrand::usize(..replicas.len())];
            named_requests += 1;
            match ask(g.http, None).await {
                Ok(a) => {
                    let held = a.session.expect("the agent named a session");
                    let (pool, own) = held.split_once('~').expect("a prefixed id");
                    let v = version(&a.agent);
                    assert_eq!(pool, v, "{held} from {}", a.agent);
                    named.push((held.clone(), own.to_owned(), v));
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("{}: new session: {e}", g.name);
                }
            }
        }
        let mut step_named_bounced = 0usize;
        for (held, own, v) in &named {
            for _ in 0..2 {
                let g = &replicas[fastrand::usize(..replicas.len())];
                named_requests += 1;
                match ask(g.http, Some(held)).await {
                    Ok(a) => {
                        step_named_bounced += usize::from(version(&a.agent) != *v);
                        named_unseen += usize::from(a.agent_saw.as_deref() != Some(own));
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("{}: session {held}: {e}", g.name);
                    }
                }
            }
        }
        named_bounced += step_named_bounced;
        let named_green = named.iter().filter(|(_, _, v)| *v == "green").count();
        lines.push(format!(
            "{green_w}%: {green_n} of {SESSIONS} sessions on green, {step_bounced} answered by both versions; \
             {} agent-named sessions ({named_green} on green), {step_named_bounced} answers from another version",
            named.len()
        ));
    }
    notice(&format!(
        "swarm pinning: {SESSIONS} sessions x {PER_SESSION} requests per share, each to a random one of 3 replicas \
         (2 on node 1, 1 on node 2), green 5 -> 25 -> 50 %: {requests} requests, {failed} failed, \
         {bounced} sessions answered by both versions at one share, {left_green} left green; \
         agent-named (prefixed) sessions: {named_requests} requests, {named_bounced} answered by \
         another version than the one that created them, {named_unseen} ids the agent did not see as its own; {}",
        lines.join("; ")
    ));
    assert_eq!(failed, 0, "failed requests");
    assert_eq!(bounced, 0, "sessions bounced between versions");
    assert_eq!(left_green, 0, "sessions left green as it grew");
    assert!(
        named.iter().any(|(_, _, v)| *v == "green"),
        "some agent-named sessions were created on green"
    );
    assert_eq!(named_bounced, 0, "agent-named sessions left their version");
    assert_eq!(named_unseen, 0, "the agent saw an id that was not its own");
}
