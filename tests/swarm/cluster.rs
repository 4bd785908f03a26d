//! The 2-node swarm every test of this binary shares, and the Docker calls the tests
//! make against it: services of the echo image, their tasks (node, overlay address,
//! state), and node 2's engine.
//!
//! `scripts/swarm/two-node.sh` owns the swarm. Under `two-node.sh run` (which sets
//! `SG_SWARM_DIR`) the tests use that swarm; otherwise the first test brings one up
//! and a detached reaper runs `two-node.sh down` once this process exits, even after a
//! panic. Images are built from this test build's binaries (nothing is compiled or
//! pulled here) and copied to node 2.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::time::Instant;

/// Label on every image, service and container a run makes.
pub const RUN_LABEL: &str = "sluicegate-swarm-test.run";

/// The swarm and what this run built for it.
pub struct Cluster {
    /// Unique per process.
    pub id: String,
    /// The attachable overlay the tests use.
    pub net: String,
    /// Node 2's engine, `unix://…/d2.sock`.
    pub node2: String,
    /// Node 2's engine pid file.
    pub node2_pid_file: PathBuf,
    /// `sluicegate:<tag>`.
    pub gateway_image: String,
    /// The echo agent answering `x-agent-version: v1`.
    pub echo_v1: String,
    /// The same agent answering v2: the "next version" of rolling updates.
    pub echo_v2: String,
    /// The group owning the Docker socket (the gateway runs as uid 10001).
    pub docker_gid: String,
    /// Environment for `two-node.sh`.
    harness_env: Vec<(String, String)>,
}

/// The shared cluster, or `None` after a skip notice (a panic when `CI=true`).
pub fn cluster(test: &str) -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(init) {
        Ok(c) => Some(c),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the Swarm tests cannot run: {why}")
        }
        Err(why) => {
            notice(&format!(
                "SKIPPED swarm test {test}: {why} (with CI=true this is a failure)"
            ));
            None
        }
    }
}

/// Straight to stderr: the harness captures `eprintln!` of passing tests, and the
/// figures and skips must show.
pub fn notice(line: &str) {
    use std::io::Write as _;
    // Nothing sensible to do if stderr itself is gone.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/swarm/two-node.sh")
}

fn init() -> Result<Cluster, String> {
    let started = std::time::Instant::now();
    sync("docker", &["version", "--format", "{{.Server.Version}}"])
        .map_err(|e| format!("no Docker engine answers: {e}"))?;
    if sync("id", &["-u"])?.trim() != "0" {
        return Err("the 2-node swarm needs root (netns, veth, a second dockerd)".into());
    }
    let id = format!("{}x{:04x}", std::process::id(), fastrand::u16(..));
    let (harness_env, own) = match std::env::var("SG_SWARM_DIR") {
        Ok(dir) => (vec![("SG_SWARM_DIR".to_owned(), dir)], false),
        Err(_) => {
            let state = sync("docker", &["info", "-f", "{{.Swarm.LocalNodeState}}"])?;
            if state.trim() != "inactive" {
                return Err(format!(
                    "the engine is already in swarm mode ({}), not a swarm of this run",
                    state.trim()
                ));
            }
            let dir = std::env::temp_dir().join(format!("sluicegate-swarm-{id}"));
            (
                vec![(
                    "SG_SWARM_DIR".to_owned(),
                    dir.to_string_lossy().into_owned(),
                )],
                true,
            )
        }
    };
    let mut cluster = Cluster {
        net: std::env::var("SG_NET").unwrap_or_else(|_| "sgnet".into()),
        node2: String::new(),
        node2_pid_file: PathBuf::new(),
        gateway_image: format!("sluicegate:local-swarm{id}"),
        echo_v1: format!("sluicegate-echo:local-swarm{id}"),
        echo_v2: format!("sluicegate-echo:v2-swarm{id}"),
        docker_gid: sync("stat", &["-c", "%g", "/var/run/docker.sock"])?
            .trim()
            .to_owned(),
        harness_env,
        id,
    };
    let dir = PathBuf::from(&cluster.harness_env[0].1);
    cluster.node2 = format!("unix://{}", dir.join("d2.sock").display());
    cluster.node2_pid_file = dir.join("d2/dockerd.pid");
    spawn_reaper(&cluster, own)?;
    if own {
        cluster.harness(&["up"])?;
    }
    cluster.build_images()?;
    cluster.harness(&[
        "load",
        &cluster.gateway_image,
        &cluster.echo_v1,
        &cluster.echo_v2,
    ])?;
    notice(&format!(
        "swarm tests: 2-node swarm {} and images ready in {:.1?}",
        if own { "up" } else { "(from two-node.sh run)" },
        started.elapsed()
    ));
    Ok(cluster)
}

impl Cluster {
    /// `two-node.sh args…` with this cluster's environment.
    pub fn harness(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(harness())
            .args(args)
            .envs(self.harness_env.iter().cloned())
            .output()
            .map_err(|e| format!("two-node.sh: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "two-node.sh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Tears the swarm down and builds it again (after a node-loss test), images
    /// copied to node 2 again.
    pub fn rebuild(&self) -> Result<(), String> {
        self.harness(&["down"])?;
        self.harness(&["up"])?;
        self.harness(&["load", &self.gateway_image, &self.echo_v1, &self.echo_v2])
            .map(drop)
    }

    /// The images from the binaries of this test build.
    fn build_images(&self) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/swarm-…
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .ok_or("test binary is not in target/<profile>/deps")?;
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("no profile directory")?;
        let target = profile_dir.parent().ok_or("no target directory")?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/build-images.sh");
        let out = Command::new(&script)
            .args(["--no-build", "--profile", profile])
            .args(["--tag-suffix", &format!("-swarm{}", self.id)])
            .args(["--label", &format!("{RUN_LABEL}={}", self.id)])
            .arg("--target-dir")
            .arg(target)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "building the images (needs `cargo build -p sluicegate -p sluicegate-echo-agent --bins`): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // v2 without a builder or a registry: a v1 container committed with one ENV more.
        let c = sync("docker", &["create", &self.echo_v1])?;
        let committed = sync(
            "docker",
            &[
                "commit",
                "--change",
                "ENV AGENT_VERSION=v2",
                c.trim(),
                &self.echo_v2,
            ],
        );
        sync("docker", &["rm", c.trim()])?;
        committed.map(drop)
    }

    /// `<run>-<short>`: names of this run's services and containers.
    pub fn name(&self, short: &str) -> String {
        format!("sgs{}-{short}", self.id)
    }
    /// A scenario's agent service: `replicas` tasks in pool `agents` on port 8080,
    /// labelled under the scenario's own prefix (`sgs<id><short>`, so no other
    /// scenario's gateway reads them). Returns the prefix and the service.
    pub async fn agents_service(&self, short: &str, replicas: u32) -> (String, Service) {
        let prefix = format!("sgs{}{short}", self.id);
        let labels = [
            format!("{prefix}.pool=agents"),
            format!("{prefix}.port=8080"),
        ];
        let svc = self.agent_service(short, replicas, &labels, &[]).await;
        (prefix, svc)
    }

    /// Creates an agent service of `replicas` tasks spread over both nodes, with
    /// `labels` as service labels (`deploy.labels`). The agent names itself
    /// `<node hostname>/<task id>`, so every answer says where it came from.
    pub async fn agent_service(
        &self,
        short: &str,
        replicas: u32,
        labels: &[String],
        extra: &[&str],
    ) -> Service {
        let name = self.name(short);
        let mut args: Vec<String> = [
            "service",
            "create",
            "-d",
            "--no-resolve-image",
            "--name",
            &name,
            "--network",
            &self.net,
            "--endpoint-mode",
            "dnsrr",
            "--placement-pref",
            "spread=node.labels.sg.node",
            "--env",
            "AGENT_NAME={{.Node.Hostname}}/{{.Task.ID}}",
            "--env",
            "AGENT_STOP_DELAY=2s",
            "--stop-grace-period",
            "10s",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "1",
            "--update-delay",
            "1s",
            "--restart-delay",
            "1s",
            "--container-label",
            &self.run_label(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--no-healthcheck") {
            // The image's HEALTHCHECK, probed more often.
            args.extend(
                ["--health-interval", "1s", "--health-start-period", "5s"].map(String::from),
            );
        }
        args.push("--label".into());
        args.push(self.run_label());
        for label in labels {
            args.push("--label".into());
            args.push(label.clone());
        }
        args.push("--replicas".into());
        args.push(replicas.to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.echo_v1.clone());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs).await;
        Service { name }
    }

    pub fn run_label(&self) -> String {
        format!("{RUN_LABEL}={}", self.id)
    }

    /// Node 2's engine pid (the harness wrote it).
    pub fn node2_pid(&self) -> u32 {
        let text = std::fs::read_to_string(&self.node2_pid_file).expect("node 2 pid file");
        text.trim().parse().expect("node 2 pid")
    }
}

/// A service of this run; removed on drop.
pub struct Service {
    pub name: String,
}

/// One task as `docker inspect` shows it (the parts the tests read).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    pub desired_state: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub networks_attachments: Vec<Attachment>,
    #[serde(skip)]
    pub node: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    pub state: String,
    /// RFC 3339, when the task entered `state`.
    pub timestamp: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    pub network: AttachedNetwork,
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetwork {
    pub spec: NetworkSpec,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSpec {
    pub name: String,
}

impl Task {
    /// Running and meant to run.
    pub fn is_running(&self) -> bool {
        self.status.state == "running" && self.desired_state == "running"
    }

    /// The task's `ip:8080` on `net`, as the gateway's state shows backends. Only
    /// ever compared as text: the host never sends to an overlay address.
    pub fn backend_addr(&self, net: &str) -> Option<String> {
        let a = self
            .networks_attachments
            .iter()
            .find(|a| a.network.spec.name == net)?;
        let ip = a.addresses.first()?.split('/').next()?;
        Some(format!("{ip}:8080"))
    }

    /// When the task entered its current state.
    pub fn since(&self) -> SystemTime {
        parse_rfc3339(&self.status.timestamp).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl Service {
    /// Every task of the service (all states), with node hostnames.
    pub async fn tasks(&self) -> Vec<Task> {
        let ids = docker(&["service", "ps", "-q", "--no-trunc", &self.name]).await;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["inspect"];
        args.extend(ids);
        let mut tasks: Vec<Task> =
            serde_json::from_str(&docker(&args).await).expect("docker inspect tasks");
        let nodes = node_names().await;
        for t in &mut tasks {
            t.node = nodes
                .iter()
                .find(|(id, _)| *id == t.node_id)
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
        }
        tasks
    }

    /// Running tasks, once exactly `n` are running (at most `limit`).
    pub async fn wait_running(&self, n: usize, limit: Duration) -> Vec<Task> {
        let deadline = Instant::now() + limit;
        loop {
            let running: Vec<Task> = self
                .tasks()
                .await
                .into_iter()
                .filter(Task::is_running)
                .collect();
            let others_pending = self
                .tasks()
                .await
                .iter()
                .any(|t| t.desired_state == "running" && t.status.state != "running");
            if running.len() == n && !others_pending {
                return running;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {} tasks running, not {n}, after {limit:?}",
                self.name,
                running.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `docker service inspect -f '{{.UpdateStatus.State}}'`, "" before any update.
    pub async fn update_state(&self) -> String {
        docker(&[
            "service",
            "inspect",
            "-f",
            "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
            &self.name,
        ])
        .await
        .trim()
        .to_owned()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Err(e) = sync("docker", &["service", "rm", &self.name]) {
            notice(&format!("removing service {}: {e}", self.name));
        }
    }
}

/// `(node id, hostname)` of every node.
async fn node_names() -> Vec<(String, String)> {
    docker(&["node", "ls", "--format", "{{.ID}} {{.Hostname}}"])
        .await
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, host)| (id.to_owned(), host.to_owned()))
        .collect()
}

/// Node 2's availability as the manager sees it (`Ready`, `Down`, …).
pub async fn node2_status() -> String {
    docker(&["node", "inspect", "-f", "{{.Status.State}}", "node2"])
        .await
        .trim()
        .to_owned()
}

/// `2026-12-07T05:01:02.123456789Z` (what Docker writes) as a wall-clock time.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A detached shell that waits for this process to exit, then removes this run's
/// services, containers and images, and (when this run brought the swarm up) tears
/// the swarm down. Its stdio is null so cargo does not wait for it.
fn spawn_reaper(c: &Cluster, own: bool) -> Result<(), String> {
    let script = r#"while kill -0 "$0" 2>/dev/null; do sleep 0.5; done
f="label=$1"
docker service ls -q --filter "$f" | xargs -r docker service rm
docker ps -aq --filter "$f" | xargs -r docker rm -f
[ "$3" = own ] && "$2" down
docker images -q --filter "$f" | sort -u | xargs -r docker rmi -f
docker rmi -f "$4" "$5" "$6" 2>/dev/null
true"#;
    Command::new("sh")
        .args([
            "-c",
            script,
            &std::process::id().to_string(),
            &c.run_label(),
            &harness().to_string_lossy(),
            if own { "own" } else { "borrowed" },
            &c.gateway_image,
            &c.echo_v1,
            &c.echo_v2,
        ])
        .envs(c.harness_env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("starting the cleanup process: {e}"))
}

/// `program args…`, blocking (setup and drop only).
pub fn sync(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `docker args…` on node 1 (the manager) without blocking the runtime; panics on
/// failure or after 120 s.
pub async fn docker(args: &[&str]) -> String {
    run("docker", args).await
}

/// `program args…` without blocking the runtime; panics on failure.
pub async fn run(program: &str, args: &[&str]) -> String {
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

#[test]
fn rfc3339_parses_dockers_timestamps() {
    let t = parse_rfc3339("2026-12-07T05:01:02.5Z").expect("parses");
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after epoch")
        .as_secs_f64();
    assert_eq!(secs, 1_796_619_662.5);
    assert!(parse_rfc3339("2026-12-07T05:01:02.123456789Z").is_some());
    assert!(parse_rfc3339("yesterday").is_none());
}

/// Builds the swarm again when the test ends, however it ends: after a node loss, or
/// after a churn of hundreds of tasks whose overlay gossip can leave the next service's
/// cross-node endpoints unknown to the manager for longer than a test waits.
pub struct Rebuild(pub &'static Cluster);

impl Drop for Rebuild {
    fn drop(&mut self) {
        let started = std::time::Instant::now();
        match self.0.rebuild() {
            Ok(()) => notice(&format!("swarm rebuilt in {:.1?}", started.elapsed())),
            Err(e) => notice(&format!("rebuilding the swarm: {e}")),
        }
    }
}
