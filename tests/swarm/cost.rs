//! What discovery costs with 20 services × 10 tasks polled every second: the
//! gateway's CPU time per poll (read from `/proc` of its container's process), and
//! that a poll that finds nothing changed publishes no new snapshot (the
//! controller's generation stays put while polls go on).

use std::time::Duration;

use tokio::time::Instant;

use super::cluster::{cluster, docker, notice, Rebuild, Service};
use super::gateway::{Engine, Gateway};

const SERVICES: usize = 20;
const TASKS: u32 = 10;
/// How long the idle gateway is watched.
const WATCH: Duration = Duration::from_secs(20);

/// utime + stime of `pid`, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // State is field 3 of the whole line, utime 14 and stime 15: indices 11, 12 here.
    num(11) + num(12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn discovery_of_20_services_x_10_tasks_costs_little_per_poll_and_an_unchanged_poll_rebuilds_nothing(
) {
    let Some(c) = cluster("cost") else { return };
    // 200 tasks started and removed: the next test gets a fresh swarm.
    let _rebuild = Rebuild(c);
    let started = Instant::now();
    let prefix = format!("sgs{}cost", c.id);
    let mut services: Vec<Service> = Vec::new();
    for i in 0..SERVICES {
        let labels = [format!("{prefix}.pool=p{i}"), format!("{prefix}.port=8080")];
        services.push(
            c.agent_service(&format!("cost{i}"), TASKS, &labels, &["--no-healthcheck"])
                .await,
        );
    }
    for s in &services {
        s.wait_running(TASKS as usize, Duration::from_secs(300))
            .await;
    }
    let all_running = started.elapsed();
    // The pools in the file, without [pools.health]: no probes, so the CPU measured
    // is discovery's (and the idle gateway's).
    let mut config = format!(
        "[listen]\nhttp = \"0.0.0.0:8080\"\n\n[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"SG_ADMIN_TOKEN\"\n\n\
         [discovery.swarm]\nnetwork = \"{}\"\nlabel_prefix = \"{prefix}\"\npoll_interval = \"1s\"\n",
        c.net
    );
    for i in 0..SERVICES {
        config.push_str(&format!("\n[[pools]]\nname = \"p{i}\"\n"));
    }
    config.push_str("\n[[routes]]\nname = \"r\"\nsplit = [{ pool = \"p0\", weight = 100 }]\n");
    let gw = Gateway::start(c, "cost-gw", &config, Engine::Manager, false).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = gw.state().await;
        let n: usize = state.pools.iter().map(|p| p.backends.len()).sum();
        if n == SERVICES * TASKS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} backends, not {}",
            SERVICES * TASKS as usize
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &gw.name])
        .await
        .trim()
        .to_owned();
    // Let the first probes and set-up settle, then watch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = gw.state_json().await;
    let (t0, cpu0) = (Instant::now(), cpu_ticks(&pid));
    tokio::time::sleep(WATCH).await;
    let (t1, cpu1) = (Instant::now(), cpu_ticks(&pid));
    let after = gw.state_json().await;
    let generation = |v: &serde_json::Value| v["counters"]["generation"].as_u64().unwrap_or(0);
    let lists = |v: &serde_json::Value| v["docker"]["lists"].as_u64();
    let polls = match (lists(&before), lists(&after)) {
        (Some(a), Some(b)) => b - a,
        // No poll counter in the state: one per poll interval.
        _ => (t1 - t0).as_secs(),
    };
    let cpu_ms = (cpu1 - cpu0) * 10;
    notice(&format!(
        "swarm discovery cost, {SERVICES} services x {TASKS} tasks (all running {all_running:.1?} into the \
         test), 1 s poll: {cpu_ms} ms CPU over {:.1?} and {polls} polls = {:.1} ms per poll; snapshot \
         generation {} -> {} over those polls; discovery state {}",
        t1 - t0,
        cpu_ms as f64 / polls.max(1) as f64,
        generation(&before),
        generation(&after),
        after["docker"]
    ));
    assert!(
        polls >= (WATCH.as_secs() * 3 / 4),
        "{polls} polls in {WATCH:?}"
    );
    assert_eq!(
        generation(&before),
        generation(&after),
        "an unchanged poll published a snapshot"
    );
    drop(gw);
    drop(services);
}
