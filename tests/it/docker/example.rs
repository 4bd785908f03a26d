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

use super::compose::{compose_available, ComposeDown};
use super::front::SERIAL;
use super::SLOW;
use crate::support::docker::{cmd, notice};
use crate::support::get;

/// The run's labels on every service and the default network.
fn override_file(run_label: &str) -> String {
    let labels = format!("    labels:\n      - \"{run_label}\"\n");
    format!(
        "version: \"2.4\"\nservices:\n  gateway:\n{labels}  agent-blue:\n{labels}  agent-green:\n{labels}networks:\n  default:\n{labels}"
    )
}

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
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/compose/docker-compose.yml");
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = dir.path().join("labels.yml");
    std::fs::write(&extra, override_file(&scope.run_label())).expect("write override");
    let project = scope.name.replace('-', "");
    // Host port 0: Docker picks a free one when it publishes; read back below.
    let port = 0;
    let gid = cmd("stat", &["-c", "%g", "/var/run/docker.sock"]).await;
    let files = [
        example.to_string_lossy().into_owned(),
        extra.to_string_lossy().into_owned(),
    ];
    let _down = ComposeDown::new(&compose, &project, &[&files[0], &files[1]])
        .env("SLUICEGATE_TAG", &scope.run.tag())
        .env("SLUICEGATE_PORT", &port.to_string());
    let run = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(&compose);
        cmd.args(["-p", &project, "-f", &files[0], "-f", &files[1]])
            .args(args)
            .env("SLUICEGATE_TAG", scope.run.tag())
            .env("SLUICEGATE_PORT", port.to_string())
            .env("DOCKER_GID", gid.trim());
        let shown = args.join(" ");
        async move {
            let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
                .await
                .expect("compose within 120 s")
                .expect("compose runs");
            assert!(
                out.status.success(),
                "compose {shown}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };

    let started = Instant::now();
    run(&["up", "-d"]).await;
    let gateway = format!("{project}_gateway_1");
    let deadline = Instant::now() + SLOW;
    loop {
        let health = cmd(
            "docker",
            &["inspect", "-f", "{{.State.Health.Status}}", &gateway],
        )
        .await;
        if health.trim() == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway container is {health:?}, not healthy"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    notice(&format!(
        "compose example ({image}): gateway healthy {:.1?} after `up -d`",
        started.elapsed()
    ));
    let published = cmd("docker", &["port", &gateway, "8080/tcp"]).await;
    let addr: std::net::SocketAddr = published
        .lines()
        .find_map(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("no published address for 8080/tcp: {published:?}"));
    let reply = get(addr, "/hello", &[]).await;
    assert_eq!(
        (
            reply.status.as_u16(),
            reply.headers["x-agent-version"].to_str().ok()
        ),
        (200, Some("v1"))
    );

    let status = run(&["exec", "-T", "gateway", "sluicegate", "ctl", "status"]).await;
    assert!(
        status.contains(&format!("docker ({project}_agent-blue_1)")),
        "{status}"
    );
    assert!(status.contains("docker: connected"), "{status}");
    run(&[
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
