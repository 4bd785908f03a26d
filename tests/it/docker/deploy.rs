//! `ctl deploy` in `examples/compose` with real containers, as a CI script runs
//! it: the gateway and version 1 (`agent-blue`) serve under load; the compose
//! service of version 2 (`agent-green`) is brought up; `ctl deploy` (inside the
//! gateway container) waits until Docker and the gateway's probes call it
//! healthy, switches, waits for the drain; the old service is removed right
//! after the command returns. Not one request of the load fails.

use tokio::time::Instant;

use super::compose::{compose_available, ExampleProject};
use super::front::SERIAL;
use super::SLOW;
use crate::support::docker::{cmd, notice};
use crate::support::load::{by_agent, describe_failures, failures, Load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_deploy_in_the_compose_example_then_removing_the_old_service_fails_nothing() {
    let scope = scope!("deploy");
    let Some(compose) = compose_available("deploy") else {
        return;
    };
    if let Err(e) = scope.run.gateway_image() {
        panic!("building the gateway image: {e}");
    }
    let _serial = SERIAL.lock().await;
    let gid = cmd("stat", &["-c", "%g", "/var/run/docker.sock"]).await;
    // Port 0: Docker picks a free host port; read back below.
    let project = ExampleProject::new(
        &compose,
        &scope,
        &[
            ("SLUICEGATE_TAG", scope.run.tag()),
            ("SLUICEGATE_PORT", "0".to_owned()),
            ("DOCKER_GID", gid.trim().to_owned()),
        ],
    );

    // Version 1 only: the gateway (which waits for agent-blue to be healthy).
    project.run(&["up", "-d", "gateway"]).await;
    let addr = project.healthy_gateway(SLOW).await;

    let load = Load::start(addr);
    load.wait_answers(Instant::now(), 100, SLOW).await;

    // Version 2 comes up (Docker health `starting` first: `deploy` waits).
    let t0 = Instant::now();
    project
        .run(&["up", "-d", "--no-recreate", "agent-green"])
        .await;
    let up_green = t0.elapsed();
    let out = project
        .run(&[
            "exec",
            "-T",
            "gateway",
            "sluicegate",
            "ctl",
            "deploy",
            "agents",
            "--to",
            "agent-green",
            "--wait-healthy",
            "60s",
            "--drain-timeout",
            "30s",
        ])
        .await;
    let deployed = t0.elapsed();
    assert!(out.contains("drained at"), "{out}");
    // The old service goes at once, as a CI script would remove it.
    project.run(&["rm", "-s", "-f", "agent-blue"]).await;
    let removed = t0.elapsed();

    let after = Instant::now();
    load.wait_answers(after, 200, SLOW).await;
    let records = load.stop().await;
    let (fg, fp) = failures(&records);
    let late: Vec<_> = records
        .iter()
        .filter(|r| r.sent >= after)
        .cloned()
        .collect();
    let served = by_agent(&late);
    assert_eq!(
        fg + fp,
        0,
        "{} of {} failed: {:?}",
        fg + fp,
        records.len(),
        describe_failures(&records, 5)
    );
    let versions: Vec<&str> = late.iter().map(|r| r.version.as_str()).collect();
    assert!(
        !versions.is_empty() && versions.iter().all(|v| *v == "v2"),
        "{served:?}"
    );
    notice(&format!(
        "compose deploy: {} requests (GET+POST), 0 failed; `up -d agent-green` {up_green:.1?}, \
         `ctl deploy` returned at {deployed:.1?}, `rm -s -f agent-blue` done at {removed:.1?}; ctl said:\n{}",
        records.len(),
        out.trim_end()
    ));
}
