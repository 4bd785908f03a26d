//! The integration test binary: a real gateway and real echo agents on 127.0.0.1.

mod access_log;
mod admin_api;
mod admin_cli;
mod chaos;
mod cli;
mod cutover;
mod docker;
mod errors;
mod events;
mod grpc;
mod hardening;
mod health;
mod live;
mod metrics;
mod props;
mod proxying;
mod readiness;
mod removal;
mod rollout;
mod routing;
mod shutdown;
mod support;
mod swarm_discovery;
mod tls;
mod upstream_conns;
