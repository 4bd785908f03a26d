//! Docker helpers for the integration tests: engine check (fail in CI, skip
//! notice elsewhere), the echo image built once per run, uniquely named scopes
//! whose containers and networks are removed on drop, and a reaper process that
//! removes whatever this run left (image included) once the test process exits.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sluicegate::config::spec::{DockerSpec, ProjectFilter};
use sluicegate::discovery::{DiscoveredSet, DiscoveryStatus, DockerDiscovery, Options};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Label on everything a run creates; the reaper removes by it.
pub const RUN_LABEL: &str = "sluicegate-test.run";
/// Label on everything one test scope creates; the scope's drop removes by it.
const SCOPE_LABEL: &str = "sluicegate-test.scope";

/// What every Docker test of this run shares.
pub struct Run {
    /// Unique per process: `<pid>x<random>`.
    pub id: String,
    /// The echo agent image built for this run.
    pub image: String,
}

/// The shared run, or `None` (after printing why) when there is no engine
/// outside CI. Panics in CI (`CI=true`) when no engine answers.
pub fn run(test: &str) -> Option<&'static Run> {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    match RUN.get_or_init(init) {
        Ok(run) => Some(run),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the Docker tests cannot run: {why}")
        }
        Err(why) => {
            notice(&format!(
                "SKIPPED docker test {test}: {why} (with CI=true this is a failure)"
            ));
            None
        }
    }
}

fn init() -> Result<Run, String> {
    let version = docker_sync(&["version", "--format", "{{.Server.Version}}"])
        .map_err(|e| format!("no Docker engine answers: {e}"))?;
    let id = format!("{}x{:04x}", std::process::id(), fastrand::u16(..));
    spawn_reaper(&id)?;
    let started = std::time::Instant::now();
    build_image(&id, "echo")
        .map_err(|e| format!("building the echo image (and its binary) failed: {e}"))?;
    notice(&format!(
        "docker tests: engine {}, echo image {} built in {:.1?}",
        version.trim(),
        id,
        started.elapsed()
    ));
    Ok(Run {
        image: format!("sluicegate-echo:local-test{id}"),
        id,
    })
}

impl Run {
    /// The tag suffix of this run's images (`sluicegate…:<tag>`).
    pub fn tag(&self) -> String {
        format!("local-test{}", self.id)
    }

    /// Builds `sluicegate:<tag>` from this test build's binary, once per run.
    pub fn gateway_image(&self) -> Result<String, String> {
        static GATEWAY: OnceLock<Result<String, String>> = OnceLock::new();
        GATEWAY
            .get_or_init(|| {
                build_image(&self.id, "sluicegate")?;
                Ok(format!("sluicegate:{}", self.tag()))
            })
            .clone()
    }
}

/// `scripts/build-images.sh --only <which>` in this test build's target directory and
/// profile. The gateway image packages the binary `cargo test` built; the echo agent
/// is another package, which `cargo test --test it` does not build, so the script
/// builds it (`cargo build -p sluicegate-echo-agent`; fresh after the first run).
fn build_image(id: &str, which: &str) -> Result<(), String> {
    let (target_dir, profile) = target_dir()?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/build-images.sh");
    let mut cmd = Command::new(&script);
    if which == "sluicegate" {
        cmd.arg("--no-build");
    }
    let out = cmd
        .args(["--only", which, "--profile", &profile])
        .args(["--tag-suffix", &format!("-test{id}")])
        .args(["--label", &format!("{RUN_LABEL}={id}")])
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Writes straight to stderr: the test harness captures `eprintln!` of passing
/// tests, and a skip must never be silent.
pub fn notice(line: &str) {
    use std::io::Write as _;
    // Nothing sensible to do if stderr itself is gone.
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `target/` and the profile of this test binary (`target/<profile>/deps/it-…`).
fn target_dir() -> Result<(PathBuf, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or("test binary is not in target/<profile>/deps")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no profile directory")?
        .to_owned();
    let target = profile_dir.parent().ok_or("no target directory")?;
    Ok((target.to_path_buf(), profile))
}

/// A detached shell that waits for this process to exit, then removes every
/// container, network and image labelled with this run (even after a panic or
/// a kill). Its stdio is null so cargo does not wait for it.
fn spawn_reaper(id: &str) -> Result<(), String> {
    let script = r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done
f="label=$1"
docker ps -aq --filter "$f" | xargs -r docker rm -f
docker network ls -q --filter "$f" | xargs -r docker network rm
docker images -q --filter "$f" | sort -u | xargs -r docker rmi -f"#;
    Command::new("sh")
        .args([
            "-c",
            script,
            &std::process::id().to_string(),
            &format!("{RUN_LABEL}={id}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("starting the cleanup process: {e}"))
}

/// Runs `docker args…` and returns stdout, blocking (setup and drop only).
fn docker_sync(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `program args…` without blocking the runtime; panics on failure.
pub async fn cmd(program: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {} took over 120 s", args.join(" ")))
    .unwrap_or_else(|e| panic!("{program} {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One test's private corner of the engine: a network, containers, a label
/// prefix. Every container and network labelled with the scope is removed on drop.
pub struct Scope {
    pub run: &'static Run,
    /// Unique name stem, e.g. `sgt-1234xabcd-stop`; also the network name.
    pub name: String,
    /// The discovery label prefix of this test (so tests never see each other).
    pub prefix: String,
}

impl Scope {
    /// Creates the scope's network.
    pub async fn new(run: &'static Run, test: &str) -> Scope {
        let name = format!("sgt-{}-{test}", run.id);
        let scope = Scope {
            run,
            prefix: format!("sgt{}.{test}", run.id),
            name,
        };
        cmd(
            "docker",
            &[
                "network",
                "create",
                "--label",
                &scope.run_label(),
                "--label",
                &scope.scope_label(),
                &scope.name,
            ],
        )
        .await;
        scope
    }

    pub fn run_label(&self) -> String {
        format!("{RUN_LABEL}={}", self.run.id)
    }

    pub fn scope_label(&self) -> String {
        format!("{SCOPE_LABEL}={}", self.name)
    }

    /// `<prefix>.<key>=<value>`.
    pub fn label(&self, key: &str, value: &str) -> String {
        format!("{}.{key}={value}", self.prefix)
    }

    /// Starts the echo agent `<scope>-<short>` on the scope's network with
    /// `labels` (already `k=v`), `docker_args` before the image and `agent_args`
    /// after it; returns the container name.
    pub async fn agent(
        &self,
        short: &str,
        labels: &[String],
        docker_args: &[&str],
        agent_args: &[&str],
    ) -> String {
        let name = format!("{}-{short}", self.name);
        let mut args: Vec<String> = ["run", "-d", "--name", &name, "--network", &self.name, "-e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("AGENT_NAME={short}"));
        for label in [self.run_label(), self.scope_label()].iter().chain(labels) {
            args.push("--label".into());
            args.push(label.clone());
        }
        args.extend(docker_args.iter().map(|s| s.to_string()));
        args.push(self.run.image.clone());
        args.extend(agent_args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cmd("docker", &refs).await;
        name
    }

    /// Discovery of this scope's labels with quick test timings.
    pub fn discover(
        &self,
        docker_host: Option<String>,
        projects: ProjectFilter,
        shutdown: &CancellationToken,
    ) -> DockerDiscovery {
        let spec = DockerSpec {
            label_prefix: self.prefix.as_str().into(),
            network: None,
            projects,
            implied_pools: Vec::new(),
        };
        let options = Options {
            docker_host,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            ..Options::default()
        };
        DockerDiscovery::spawn(spec, options, shutdown.child_token())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let filter = format!("label={}", self.scope_label());
        if let Ok(ids) = docker_sync(&["ps", "-aq", "--filter", &filter]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                report(docker_sync(&args));
            }
        }
        // The scope's own network and any other a test made with its label.
        if let Ok(ids) = docker_sync(&["network", "ls", "-q", "--filter", &filter]) {
            for id in ids.split_whitespace() {
                report(docker_sync(&["network", "rm", id]));
            }
        }
    }
}

/// Cleanup problems are printed, not fatal: the reaper retries at exit.
fn report(result: Result<String, String>) {
    if let Err(e) = result {
        eprintln!("docker test cleanup: {e}");
    }
}

/// Waits up to `limit` for a set satisfying `pred`; the set on success, the
/// last set seen on timeout.
pub async fn wait_set(
    sets: &mut watch::Receiver<DiscoveredSet>,
    limit: Duration,
    pred: impl Fn(&DiscoveredSet) -> bool,
) -> Result<DiscoveredSet, DiscoveredSet> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let current = sets.borrow_and_update().clone();
        if pred(&current) {
            return Ok(current);
        }
        match tokio::time::timeout_at(deadline, sets.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(current),
        }
    }
}

/// Waits up to `limit` for a status satisfying `pred`.
pub async fn wait_status(
    status: &mut watch::Receiver<DiscoveryStatus>,
    limit: Duration,
    pred: impl Fn(&DiscoveryStatus) -> bool,
) -> DiscoveryStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let current = status.borrow_and_update().clone();
        if pred(&current) {
            return current;
        }
        if !matches!(
            tokio::time::timeout_at(deadline, status.changed()).await,
            Ok(Ok(()))
        ) {
            panic!("status did not change as expected within {limit:?}: {current:?}");
        }
    }
}

/// Start time of every running container labelled `label`, by the first 12
/// characters of its id (its default hostname, which the echo agent reports
/// as `x-agent`).
pub async fn started_at(label: &str) -> std::collections::HashMap<String, std::time::SystemTime> {
    let filter = format!("label={label}");
    let ids = cmd("docker", &["ps", "-q", "--no-trunc", "--filter", &filter]).await;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Default::default();
    }
    let mut args = vec!["inspect", "-f", "{{.Id}} {{.State.StartedAt}}"];
    args.extend(&ids);
    cmd("docker", &args)
        .await
        .lines()
        .filter_map(|line| {
            let (id, at) = line.split_once(' ')?;
            let at = humantime::parse_rfc3339(at.trim()).ok()?;
            Some((id.get(..12)?.to_owned(), at))
        })
        .collect()
}

/// Names of the containers of `pool` in `set` (sorted).
pub fn names(set: &DiscoveredSet, pool: &str) -> Vec<String> {
    set.pool(pool)
        .iter()
        .map(|b| b.container_name.to_string())
        .collect()
}
