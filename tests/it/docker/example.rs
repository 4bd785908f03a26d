//! `examples/compose` as users run it: the gateway image (built from this test
//! build's binary, `HEALTHCHECK` via `sluicegate health`) in the compose project
//! with the Docker socket mounted, finding the agents of its own project on the
//! network it shares with them, steered with `docker-compose exec gateway
//! sluicegate ctl`. Test image tags and host port 0 (Docker picks one) come in through the
//! file's `SLUICEGATE_TAG` and `SLUICEGATE_PORT`; an override file adds the
//! run's labels so the exit reaper finds the containers and the network.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::compose::{compose_available, ExampleProject};
use super::front::SERIAL;
use super::SLOW;
use crate::support::docker::{cmd, notice};
use crate::support::get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_example_serves_and_flips_with_ctl() {
    let scope = scope!("example");
    let Some(compose) = compose_available("example") else {
        return;
    };
    let image = match scope.run.gateway_image() {
        Ok(image) => image,
        Err(e) => panic!("building the gateway image: {e}"),
    };
    let _serial = SERIAL.lock().await;
    let gid = cmd("stat", &["-c", "%g", "/var/run/docker.sock"]).await;
    // Host port 0: Docker picks a free one when it publishes; read back below.
    let project = ExampleProject::new(
        &compose,
        &scope,
        &[
            ("SLUICEGATE_TAG", scope.run.tag()),
            ("SLUICEGATE_PORT", "0".to_owned()),
            ("DOCKER_GID", gid.trim().to_owned()),
        ],
    );

    let started = Instant::now();
    project.run(&["up", "-d"]).await;
    let addr = project.healthy_gateway(SLOW).await;
    notice(&format!(
        "compose example ({image}): gateway healthy {:.1?} after `up -d`",
        started.elapsed()
    ));
    let reply = get(addr, "/hello", &[]).await;
    assert_eq!(
        (
            reply.status.as_u16(),
            reply.headers["x-agent-version"].to_str().ok()
        ),
        (200, Some("v1"))
    );

    let status = project
        .run(&["exec", "-T", "gateway", "sluicegate", "ctl", "status"])
        .await;
    assert!(
        status.contains(&format!("docker ({}_agent-blue_1)", project.name)),
        "{status}"
    );
    assert!(status.contains("docker: connected"), "{status}");
    project
        .run(&[
            "exec",
            "-T",
            "gateway",
            "sluicegate",
            "ctl",
            "split",
            "agents",
            "agent-blue=0",
            "agent-green=100",
        ])
        .await;
    let reply = get(addr, "/hello", &[]).await;
    assert_eq!(
        (
            reply.status.as_u16(),
            reply.headers["x-agent-version"].to_str().ok()
        ),
        (200, Some("v2"))
    );
    notice(&format!(
        "compose example: up, ctl status, flip to green in {:.1?}",
        started.elapsed()
    ));
}

/// `docker-compose up` of the example without `DOCKER_GID` in the environment (a new
/// terminal, a day later): refused before anything starts, naming the variable and
/// how to set it, instead of a gateway that cannot read the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_example_refuses_to_start_without_docker_gid() {
    let Some(compose) = compose_available("example-no-gid") else {
        return;
    };
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/compose/docker-compose.yml");
    let mut cmd = tokio::process::Command::new(&compose);
    cmd.args(["-p", "sluicegatenogid", "-f"])
        .arg(&example)
        .args(["up", "-d"])
        .env_remove("DOCKER_GID")
        .env("SLUICEGATE_TAG", "never-built")
        .env("SLUICEGATE_PORT", "1");
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("compose within 60 s")
        .expect("compose runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "compose started without DOCKER_GID: {stderr}"
    );
    assert!(
        stderr.contains("set DOCKER_GID to the group of the Docker socket first")
            && stderr.contains("export DOCKER_GID=$(stat -c %g /var/run/docker.sock)"),
        "{stderr}"
    );
}

/// The example with a `DOCKER_GID` that is not the socket's group: the gateway's
/// log says in one line that the socket's permission is the problem and how to fix
/// it, `ctl status` says so too, and the container never turns healthy (its
/// HEALTHCHECK asks `/readyz`, 503 while discovery has never listed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_gateway_that_cannot_read_the_socket_says_why_and_is_not_healthy() {
    let scope = scope!("example-gid");
    let Some(compose) = compose_available("example-gid") else {
        return;
    };
    if let Err(e) = scope.run.gateway_image() {
        panic!("building the gateway image: {e}");
    }
    let _serial = SERIAL.lock().await;
    let socket_gid: u32 = cmd("stat", &["-c", "%g", "/var/run/docker.sock"])
        .await
        .trim()
        .parse()
        .expect("a gid");
    // Any group but the socket's: what a stale or guessed DOCKER_GID gives.
    let wrong_gid = if socket_gid == 4242 { 4243 } else { 4242 };
    // Port 0: Docker picks a free host port; nothing is sent to it.
    let project = ExampleProject::new(
        &compose,
        &scope,
        &[
            ("SLUICEGATE_TAG", scope.run.tag()),
            ("SLUICEGATE_PORT", "0".to_owned()),
            ("DOCKER_GID", wrong_gid.to_string()),
        ],
    );
    project.run(&["up", "-d"]).await;
    let gateway = project.gateway();

    // The reason, in one line of the gateway's log.
    let deadline = Instant::now() + SLOW;
    let line = loop {
        let out = tokio::process::Command::new("docker")
            .args(["logs", &gateway])
            .output()
            .await
            .expect("docker logs");
        let logs = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if let Some(line) = logs
            .lines()
            .find(|l| l.contains("permission denied on the Docker socket"))
        {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no permission line in: {logs}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        line.contains("/var/run/docker.sock") && line.contains("DOCKER_GID"),
        "{line}"
    );

    // Not healthy: `starting` until the retries run out, then `unhealthy`; never
    // `healthy`. The health check runs every 5 s, 3 retries after a 5 s start.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let health = cmd(
            "docker",
            &["inspect", "-f", "{{.State.Health.Status}}", &gateway],
        )
        .await;
        assert_ne!(health.trim(), "healthy", "{line}");
        if health.trim() == "unhealthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway container is {health:?}, not unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let probe = cmd(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .State.Health.Log}}{{.Output}}{{end}}",
            &gateway,
        ],
    )
    .await;
    assert!(
        probe.contains("docker discovery has never listed"),
        "health check output: {probe}"
    );

    let status = project
        .run(&["exec", "-T", "gateway", "sluicegate", "ctl", "status"])
        .await;
    assert!(
        status.contains("docker: DISCONNECTED (permission denied on the Docker socket"),
        "{status}"
    );
    notice(&format!(
        "compose example with DOCKER_GID={wrong_gid}: gateway unhealthy, log: {line}"
    ));
}
