//! The chaos run's world: the gateway as a real child process (so its RSS and
//! file descriptors are its own), its config file, and two pools of in-process
//! echo agents that can be killed, restarted on the same port, slowed down or
//! made to fail their health probe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sluicegate_echo_agent::{self as echo_agent, EchoConfig, EchoHandle};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::support::WAIT;

/// Agents per pool; chaos impairs at most one per pool at a time.
pub const AGENTS_PER_POOL: usize = 3;
pub const POOLS: [&str; 2] = ["blue", "green"];

/// One replica slot: a fixed port and the agent currently serving it, if any.
pub struct Slot {
    pub pool: &'static str,
    pub addr: SocketAddr,
    pub agent: Option<EchoHandle>,
    name: String,
}

impl Slot {
    /// Starts (or restarts) the agent on this slot's port.
    pub async fn start(&mut self) {
        let listener = tokio::time::timeout(WAIT, async {
            // The old listener is gone once `stopped()` resolved; retry briefly if
            // the port is still in TIME_WAIT-like limbo.
            loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => return l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("rebind agent port");
        let config = EchoConfig {
            name: self.name.clone(),
            version: self.pool.to_owned(),
        };
        self.agent = Some(echo_agent::spawn(listener, config));
    }

    /// Kills the agent like a crash: connections dropped without a goodbye.
    pub async fn kill(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.shutdown();
            tokio::time::timeout(WAIT, agent.stopped())
                .await
                .expect("agent stopped");
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        if let Some(a) = &self.agent {
            a.set_delay(delay);
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        if let Some(a) = &self.agent {
            a.set_healthy(healthy);
        }
    }
}

/// Starts every agent on its own 127.0.0.1 port.
pub async fn agents() -> Vec<Slot> {
    let mut slots = Vec::new();
    for pool in POOLS {
        for i in 1..=AGENTS_PER_POOL {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            drop(l);
            let mut slot = Slot {
                pool,
                addr,
                agent: None,
                name: format!("{pool}-{i}"),
            };
            slot.start().await;
            slots.push(slot);
        }
    }
    slots
}

/// `routes.toml` for the fleet with `blue`/`green` split weights.
pub fn config(http: SocketAddr, admin: SocketAddr, slots: &[Slot], blue: u32) -> String {
    let mut text = format!(
        "[listen]\nhttp = \"{http}\"\nheader_read_timeout = \"5s\"\n[admin]\nlisten = \"{admin}\"\n"
    );
    for pool in POOLS {
        let list: Vec<String> = slots
            .iter()
            .filter(|s| s.pool == pool)
            .map(|s| format!("{{ addr = \"{}\" }}", s.addr))
            .collect();
        text.push_str(&format!(
            "[[pools]]\nname = \"{pool}\"\nbalance = \"least_conn\"\nbackends = [{}]\n[pools.health]\npath = \"/health\"\ninterval = \"250ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 2\n[pools.outlier]\nconsecutive_failures = 3\nbase_ejection = \"1s\"\n",
            list.join(", ")
        ));
    }
    text.push_str(&format!(
        "[[routes]]\nname = \"agents\"\nsplit = [{{ pool = \"blue\", weight = {blue} }}, {{ pool = \"green\", weight = {} }}]\nretries = 2\ntimeouts = {{ connect = \"500ms\", response_header = \"10s\", idle = \"10s\" }}\n",
        100 - blue
    ));
    crate::support::with_fast_path_switch(&text)
}

/// The gateway binary, started from `path`.
pub struct GatewayProcess {
    child: Child,
    pid: u32,
}

/// A free 127.0.0.1 port (bound, then released).
pub async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

impl GatewayProcess {
    /// Starts `sluicegate run -c path` (stderr to `log`); returns once `admin`'s
    /// `/readyz` answers 200.
    pub async fn start(path: &PathBuf, admin: SocketAddr, log: &PathBuf) -> Self {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
            .args(["run", "-c"])
            .arg(path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn gateway");
        let pid = child.id().expect("pid");
        let process = GatewayProcess { child, pid };
        // Ready when /readyz answers.
        let ready = tokio::time::timeout(WAIT, async {
            loop {
                let r = super::load::raw_get(admin, "/readyz").await;
                if r.is_some_and(|status| status == 200) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        ready.await.expect("gateway ready");
        process
    }

    /// Resident set size in bytes (from /proc).
    pub fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// User plus system CPU time so far, in seconds (from /proc; 100 ticks a second).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
        (ticks(11) + ticks(12)) as f64 / 100.0
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count())
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub async fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .ok()?
            .ok()?;
        status.code()
    }
}
