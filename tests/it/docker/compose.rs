//! docker-compose for the tests: whether it is installed, a scalable echo
//! service in the test scope, and `down` on drop.

use crate::support::docker::{notice, Scope};

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
