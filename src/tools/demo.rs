//! `sluicegate demo`: the one-command first run.
//!
//! Starts two `agent-blue` (v1) and two `agent-green` (v2) echo agents in-process on loopback,
//! the gateway in front of them with an embedded config (a 90/10 canary split with a
//! sticky cookie, and a header route that pins testers to green) and its admin API,
//! and prints what to curl and the `ctl split` that flips blue to green.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

mod agent;

use crate::control_plane::config;
use crate::data_plane::server::Drained;
use crate::gateway::{Gateway, GatewayError};
use agent::Agent;

/// The demo's embedded `routes.toml`; `{listen}` and `{blueN}`/`{greenN}` are filled in.
const DEMO_CONFIG: &str = r#"
[listen]
http = "{listen}"

[admin]
listen = "{admin}"

[[pools]]
name = "agent-blue"
balance = "least_conn"
backends = [{ addr = "{blue1}" }, { addr = "{blue2}" }]

[[pools]]
name = "agent-green"
balance = "round_robin"
backends = [{ addr = "{green1}" }, { addr = "{green2}" }]

# Testers who send `x-canary: always` always reach the new version.
[[routes]]
name = "canary-testers"
match = { headers = { "x-canary" = "always" } }
split = [{ pool = "agent-green", weight = 1 }]

# Everyone else: 90 % blue, 10 % green; a client stays on the version it first got.
[[routes]]
name = "agents"
split = [{ pool = "agent-blue", weight = 90 }, { pool = "agent-green", weight = 10 }]
sticky = { cookie = "sg_pool" }
retries = 2
"#;

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start a demo agent: {0}")]
    Agent(#[source] std::io::Error),
    #[error("the embedded demo config is invalid (a bug): {0}")]
    Config(#[source] config::ConfigErrors),
    #[error(transparent)]
    Gateway(GatewayError),
}

/// Runs the demo until `shutdown` resolves. `program` is how the user invoked
/// sluicegate (for the printed `ctl` commands).
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    program: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let mut agents: Vec<Agent> = Vec::new();
    for (name, version) in [
        ("blue-1", "v1"),
        ("blue-2", "v1"),
        ("green-1", "v2"),
        ("green-2", "v2"),
    ] {
        agents.push(
            Agent::spawn(name, version)
                .await
                .map_err(DemoError::Agent)?,
        );
    }
    let text = DEMO_CONFIG
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{blue1}", &agents[0].addr().to_string())
        .replace("{blue2}", &agents[1].addr().to_string())
        .replace("{green1}", &agents[2].addr().to_string())
        .replace("{green2}", &agents[3].addr().to_string());
    let spec = config::parse(&text).map_err(DemoError::Config)?;
    let gateway = Gateway::bind(spec).await.map_err(DemoError::Gateway)?;
    let addr = gateway
        .local_addr()
        .map_err(|e| DemoError::Gateway(GatewayError::Listen(e)))?;
    let admin = gateway.admin_addr().unwrap_or(admin);

    println!("sluicegate demo: gateway on http://{addr}");
    for a in &agents {
        println!("  agent {:<8} on http://{}", a.name(), a.addr());
    }
    println!(
        "\nTry:\n  \
         curl -s http://{addr}/hello                        # 90 % blue (v1), 10 % green (v2)\n  \
         curl -s -H 'x-canary: always' http://{addr}/hello  # always green\n  \
         curl -si http://{addr}/hello | grep -i set-cookie  # the sticky cookie\n  \
         curl -sN 'http://{addr}/sse?events=5&interval_ms=500'  # a streamed SSE response\n  \
         for i in $(seq 20); do curl -s http://{addr}/ | grep -o '\"agent\":\"[a-z0-9-]*\"'; done | sort | uniq -c\n\
         \nAdmin API on http://{admin}. Flip every new request from blue to green (no request is dropped):\n  \
         {program} ctl --admin http://{admin} split agents agent-blue=0 agent-green=100\n  \
         {program} ctl --admin http://{admin} status\n  \
         curl -s http://{admin}/api/v1/state\n\
         \nWatch it live: the dashboard at http://{admin}/ui/ (read-only), in a terminal\n  \
         {program} ctl --admin http://{admin} watch\n  \
         and the raw event stream: curl -sN http://{admin}/api/v1/events\n\
         \nOr let the gateway do it in steps, judging green on its own traffic (keep curling meanwhile):\n  \
         {program} ctl --admin http://{admin} rollout start agents --to agent-green --steps 25,50,100 --step-interval 10s --min-requests 5 --watch\n\
         \nCtrl-C stops it."
    );
    let drain_timeout = Duration::from_secs(5);
    // Logged as `run` logs it, so the demo's stop reads the same.
    match gateway.serve(shutdown, drain_timeout).await {
        Drained::Clean => tracing::info!("drained, exiting"),
        Drained::TimedOut => tracing::warn!(
            ?drain_timeout,
            "drain timeout reached: remaining requests were cut"
        ),
    }
    for a in &agents {
        a.shutdown();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_is_valid() {
        let text = DEMO_CONFIG
            .replace("{listen}", "127.0.0.1:0")
            .replace("{admin}", "127.0.0.1:0")
            .replace("{blue1}", "127.0.0.1:1")
            .replace("{blue2}", "127.0.0.1:2")
            .replace("{green1}", "127.0.0.1:3")
            .replace("{green2}", "127.0.0.1:4");
        let spec = config::parse(&text).expect("demo config parses");
        assert_eq!(spec.routes.len(), 2);
        assert!(spec.admin.is_some());
    }
}
