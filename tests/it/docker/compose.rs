//! docker-compose for the tests: whether it is installed, a scalable echo
//! service in the test scope, `examples/compose` as a test's project, and
//! `down` on drop.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::docker::{cmd, notice, Scope};

/// `docker-compose` (v1) if installed; panics in CI when it is missing.
pub fn compose_available(test: &str) -> Option<String> {
    match std::process::Command::new("docker-compose")
        .arg("version")
        .output()
    {
        Ok(out) if out.status.success() => Some("docker-compose".to_owned()),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but docker-compose is missing")
        }
        _ => {
            notice(&format!(
                "SKIPPED docker test {test}: docker-compose is not installed"
            ));
            None
        }
    }
}

/// One scalable echo service, opted in with `<prefix>.enable=true` so its pool
/// is the compose service name.
pub fn compose_file(scope: &Scope) -> String {
    format!(
        r#"version: "2.4"
services:
  agent:
    image: {image}
    healthcheck:
      disable: true
    environment:
      AGENT_STOP_DELAY: 1s
    labels:
      - "{enable}"
      - "{run}"
      - "{scope_label}"
networks:
  default:
    labels:
      - "{run}"
      - "{scope_label}"
"#,
        image = scope.run.image,
        enable = scope.label("enable", "true"),
        run = scope.run_label(),
        scope_label = scope.scope_label(),
    )
}

/// `docker-compose down` on drop (containers and network), even after a panic.
pub struct ComposeDown {
    compose: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ComposeDown {
    /// Takes down `project` of compose `files` when dropped.
    pub fn new(compose: &str, project: &str, files: &[&str]) -> ComposeDown {
        let mut args = vec!["-p".to_owned(), project.to_owned()];
        for f in files {
            args.extend(["-f".to_owned(), (*f).to_owned()]);
        }
        ComposeDown {
            compose: compose.to_owned(),
            args,
            env: Vec::new(),
        }
    }

    /// Also sets `key=value` for `down` (files that interpolate variables).
    pub fn env(mut self, key: &str, value: &str) -> ComposeDown {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

impl Drop for ComposeDown {
    fn drop(&mut self) {
        let out = std::process::Command::new(&self.compose)
            .args(&self.args)
            .args(["down", "-t", "1"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("docker test cleanup: {} down failed: {out:?}", self.compose);
        }
    }
}

/// `examples/compose/docker-compose.yml` as one test's compose project: the
/// example and an override adding the run's labels (so the exit reaper finds
/// what it made), with the variables the files interpolate given to every
/// command and to the `down` on drop alike.
pub struct ExampleProject {
    compose: String,
    /// The project name (`-p`): containers are `<name>_<service>_1`.
    pub name: String,
    files: [String; 2],
    env: Vec<(String, String)>,
    // Dropped in this order: `down` needs the override file, which goes with
    // the directory.
    _down: ComposeDown,
    _dir: tempfile::TempDir,
}

impl ExampleProject {
    /// The project `scope` runs the example as, with `env` (e.g.
    /// `SLUICEGATE_TAG`, `SLUICEGATE_PORT`, `DOCKER_GID`).
    pub fn new(compose: &str, scope: &Scope, env: &[(&str, String)]) -> ExampleProject {
        let example =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/compose/docker-compose.yml");
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = dir.path().join("labels.yml");
        std::fs::write(&extra, override_file(&scope.run_label())).expect("write override");
        let name = scope.name.replace('-', "");
        let files = [
            example.to_string_lossy().into_owned(),
            extra.to_string_lossy().into_owned(),
        ];
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut down = ComposeDown::new(compose, &name, &[&files[0], &files[1]]);
        for (k, v) in &env {
            down = down.env(k, v);
        }
        ExampleProject {
            compose: compose.to_owned(),
            name,
            files,
            env,
            _down: down,
            _dir: dir,
        }
    }

    /// `docker-compose <args>` in the project, bounded at 120 s; panics with its
    /// output unless it succeeds. Its standard output.
    pub async fn run(&self, args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::new(&self.compose);
        cmd.args(["-p", &self.name, "-f", &self.files[0], "-f", &self.files[1]])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("compose within 120 s")
            .expect("compose runs");
        assert!(
            out.status.success(),
            "compose {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl ExampleProject {
    /// The gateway's container.
    pub fn gateway(&self) -> String {
        format!("{}_gateway_1", self.name)
    }

    /// Waits, at most `limit`, until Docker calls the gateway healthy (its
    /// HEALTHCHECK); then the host address its port 8080 is published on.
    pub async fn healthy_gateway(&self, limit: Duration) -> std::net::SocketAddr {
        let gateway = self.gateway();
        let deadline = tokio::time::Instant::now() + limit;
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
                tokio::time::Instant::now() < deadline,
                "gateway container is {health:?}, not healthy"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let published = cmd("docker", &["port", &gateway, "8080/tcp"]).await;
        published
            .lines()
            .find_map(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("no published address for 8080/tcp: {published:?}"))
    }
}

/// The run's labels on every service and the default network.
fn override_file(run_label: &str) -> String {
    let labels = format!("    labels:\n      - \"{run_label}\"\n");
    format!(
        "version: \"2.4\"\nservices:\n  gateway:\n{labels}  agent-blue:\n{labels}  agent-green:\n{labels}networks:\n  default:\n{labels}"
    )
}
