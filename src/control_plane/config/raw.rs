//! Serde types that mirror `routes.toml` key for key.
//!
//! Owns the *shape* of the file only: which keys exist, which are required, and
//! their TOML types. Every struct denies unknown fields, so a misspelt key is an
//! error rather than a silently ignored setting. Values stay close to what was
//! written (strings for addresses and durations, `i64` for numbers) so that
//! [`validate`](super::validate) can explain a bad value in the user's terms; it
//! alone turns these types into a [`Spec`](super::Spec).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The whole file. `validate` deserializes its sections one by one (so that one
/// bad pool does not hide errors in the others); this type documents the shape
/// and serves callers that want the raw file in one piece.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[listen]`.
    pub listen: RawListen,
    /// `[admin]`.
    pub admin: Option<RawAdmin>,
    /// `[[pools]]`, in file order.
    #[serde(default)]
    pub pools: Vec<RawPool>,
    /// `[[routes]]`, in file order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `[discovery]`.
    pub discovery: Option<RawDiscovery>,
    /// `[tls]`: certificates of the HTTPS listener.
    pub tls: Option<RawTls>,
    /// `[log]`.
    pub log: Option<RawLog>,
    /// `[cluster]`: state shared by gateway replicas.
    pub cluster: Option<RawCluster>,
    /// `[maintenance]`: the maintenance page.
    pub maintenance: Option<RawMaintenance>,
}

/// `[cluster]`: where gateway replicas share their admin state.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// The store; only `"swarm"` (labels on the gateway's own Swarm service).
    pub store: Option<String>,
    /// The gateway's own Swarm service name (or ID).
    pub service: Option<String>,
    /// Docker engine of a manager (`unix:///…`, `tcp://host:port`); absent:
    /// `$DOCKER_HOST`, else the default socket.
    pub engine: Option<String>,
    /// How often the store is read; `250ms` when absent.
    pub poll_interval: Option<RawDuration>,
    /// Admin API URLs of the other replicas (`http://tasks.gateway:9901`), read
    /// for `ctl status`.
    pub peers: Option<Vec<String>>,
}

/// `[maintenance]`: the operator's maintenance page.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    /// An HTML file (relative to the config file's directory).
    pub template: Option<String>,
    /// The page inline.
    pub html: Option<String>,
}

/// `[log]`. Values stay text so a wrong one is explained with the accepted ones.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `off` or `stdout`.
    pub access: Option<String>,
    /// `json` or `text`.
    pub format: Option<String>,
}

/// `[discovery]`: where backends come from besides the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    /// `[discovery.docker]`.
    pub docker: Option<RawDocker>,
    /// `[discovery.swarm]`.
    pub swarm: Option<RawSwarm>,
}

/// `[discovery.swarm]`: Swarm services with `sluicegate.*` labels; their running
/// tasks become backends.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSwarm {
    /// On when the table is present, unless `enabled = false`.
    pub enabled: Option<bool>,
    /// Label key prefix; `sluicegate` when absent.
    pub label_prefix: Option<String>,
    /// The overlay network whose task IPs to use.
    pub network: Option<String>,
    /// How often the task list is read; `1s` when absent.
    pub poll_interval: Option<RawDuration>,
    /// Admin API URLs of gateway replicas on manager nodes, read when this
    /// node's engine refuses cluster reads (a worker).
    pub managers: Option<Vec<String>>,
    /// Environment variable holding the bearer token for `managers`; absent:
    /// `[admin].token_env`.
    pub token_env: Option<String>,
}

/// `[discovery.docker]`: containers with `sluicegate.*` labels become backends.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocker {
    /// On when the table is present, unless `enabled = false`.
    pub enabled: Option<bool>,
    /// Label key prefix; `sluicegate` when absent.
    pub label_prefix: Option<String>,
    /// Network whose IP to use when a container is on several.
    pub network: Option<String>,
    /// Compose projects to watch; `["*"]` for all. Absent: the gateway's own.
    pub projects: Option<Vec<String>>,
}

/// `[listen]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// `ip:port` to serve plain HTTP on.
    pub http: String,
    /// Upper bound on open downstream connections; absent means unlimited.
    pub max_connections: Option<i64>,
    /// How long a client may take to send its request head.
    pub header_read_timeout: Option<RawDuration>,
    /// `ip:port` to serve HTTPS on; needs `[[tls.certificates]]`.
    pub https: Option<String>,
    /// Answer every request on `http` with a 308 redirect to HTTPS.
    #[serde(default)]
    pub redirect_https: bool,
    /// Port written into redirects; the `https` port when absent.
    pub redirect_https_port: Option<i64>,
    /// How long streams on a removed backend may run before they are closed.
    pub stream_close_delay: Option<RawDuration>,
    /// Largest request head a client may send (bytes, or a size like `"64KiB"`).
    pub max_header_bytes: Option<RawSize>,
    /// Most header fields in one request head.
    pub max_headers: Option<i64>,
    /// A client connection with no request in flight for this long is closed.
    pub idle_timeout: Option<RawDuration>,
    /// Streams one HTTP/2 client may have open at once.
    pub http2_max_concurrent_streams: Option<i64>,
    /// HTTP/2 streams a client may reset before the gateway accepted them
    /// (rapid-reset guard); more close the connection.
    pub http2_max_pending_accept_reset_streams: Option<i64>,
    /// HTTP/2 streams the gateway may reset for protocol errors of one client
    /// before it closes the connection.
    pub http2_max_local_error_reset_streams: Option<i64>,
    /// Requests a client may cancel before their answer within 10 s; more drop
    /// the connection.
    pub http2_max_client_resets: Option<i64>,
    /// Serve bodiless HTTP/1.1 on the gateway's own loops (`http1`); `false` sends
    /// every request through hyper. On when absent.
    pub http1_fast_path: Option<bool>,
}

/// `[tls]`: what the HTTPS listener presents.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// `[[tls.certificates]]`, in file order; the first is the default.
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Option<RawDuration>,
}

/// One `[[tls.certificates]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// SNI names this certificate answers; the certificate's own names when absent.
    pub server_names: Option<Vec<String>>,
}

/// `tls = { server_name, ca, insecure_skip_verify }` of a pool.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// Name sent as SNI and verified in the backend's certificate.
    pub server_name: Option<String>,
    /// PEM file of the CA certificates that sign the backends' certificates.
    pub ca: Option<String>,
    /// Skip certificate verification (encryption without authentication).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port` of the admin API.
    pub listen: String,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// Path of the JSON file that persists admin overrides.
    pub state_file: Option<String>,
    /// Host names (besides the listen address and loopback names) the admin API
    /// answers to.
    pub allowed_hosts: Option<Vec<String>>,
}

/// One `[[pools]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// Unique pool name.
    pub name: String,
    /// Balancing policy (see [`RawBalance::parse`]); `round_robin` when absent.
    /// Kept as text so an unknown policy is a value error of this pool, reported
    /// together with the pool's other errors.
    pub balance: Option<String>,
    /// `header:NAME`, `cookie:NAME` or `client_ip`; only with `balance = "hash"`.
    pub hash_key: Option<String>,
    /// Static backends; discovery may add more later.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// Speak TLS to the backends.
    pub tls: Option<RawUpstreamTls>,
    /// `"http1"`, `"h2c"` or `"h2"`; `http1` when absent. Text, so a bad value is
    /// reported with the pool's other errors.
    pub protocol: Option<String>,
    /// `[pools.h2]`: HTTP/2 connection settings.
    pub h2: Option<RawH2>,
    /// `[pools.health]`: active probes.
    pub health: Option<RawHealth>,
    /// `[pools.outlier]`: passive ejection from real traffic.
    pub outlier: Option<RawOutlier>,
    /// Ramp a recovered backend's weight over this long.
    pub slow_start: Option<RawDuration>,
    /// Percent of eligible backends below which the pool routes to all of them.
    pub panic_threshold: Option<i64>,
    /// `hold = { timeout, max_queued }`: wait for a backend instead of a 503.
    pub hold: Option<RawHold>,
    /// `retry_budget = { percent, min_per_second }`: retries at most this share.
    pub retry_budget: Option<RawRetryBudget>,
    /// `concurrency = { max_in_flight, queue, queue_timeout }`.
    pub concurrency: Option<RawConcurrency>,
    /// `circuit_breaker = { max_connections, max_pending }`.
    pub circuit_breaker: Option<RawBreaker>,
}

/// `circuit_breaker = { max_connections, max_pending }` of a pool.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Connections (requests) to one backend at once.
    pub max_connections: Option<i64>,
    /// The pool's requests that may wait for a connection; 0 when absent.
    pub max_pending: Option<i64>,
}

/// `concurrency = { max_in_flight, queue, queue_timeout }` of a route or pool.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConcurrency {
    /// Requests at once.
    pub max_in_flight: Option<i64>,
    /// Requests that may wait for a place; 0 when absent.
    pub queue: Option<i64>,
    /// Longest wait in the queue.
    pub queue_timeout: Option<RawDuration>,
}

/// `retry_budget = { percent, min_per_second }` of a pool.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    /// Retries as a percentage of the pool's requests over the window.
    pub percent: Option<i64>,
    /// Retries a second allowed whatever the traffic.
    pub min_per_second: Option<i64>,
}

/// `[pools.h2]`: HTTP/2 connection settings of a pool.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawH2 {
    /// Most connections per backend.
    pub max_connections: Option<i64>,
    /// Time between two keep-alive PINGs; `"0s"` turns them off.
    pub keepalive_interval: Option<RawDuration>,
    /// Longest wait for a PING's answer.
    pub keepalive_timeout: Option<RawDuration>,
    /// A connection older than this takes no new streams; `"0s"`: no limit.
    pub max_connection_age: Option<RawDuration>,
    /// Receive window of each stream.
    pub stream_window: Option<RawSize>,
    /// Receive window of each connection.
    pub connection_window: Option<RawSize>,
}

/// `[pools.health]`: one active HTTP probe per backend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Path (and query) to `GET`; `/health` when absent.
    pub path: Option<String>,
    /// `Host` header of the probe; the backend's address when absent.
    pub host: Option<String>,
    /// Time between two probes.
    pub interval: Option<RawDuration>,
    /// Longest a probe may take (connect and response head).
    pub timeout: Option<RawDuration>,
    /// Consecutive passes to become healthy.
    pub rise: Option<i64>,
    /// Consecutive failures to become unhealthy.
    pub fall: Option<i64>,
    /// While a new backend is this young and has never passed, failures do not count.
    pub start_period: Option<RawDuration>,
    /// `"200-399"`, `"204"` or `204`: statuses that pass.
    pub expect_status: Option<RawStatusRange>,
    /// Status of a backend before its first probe.
    pub initial: Option<RawInitial>,
    /// Probe with `grpc.health.v1.Health/Check` (an HTTP/2 pool) instead of `GET path`.
    pub grpc: Option<bool>,
    /// The `service` the gRPC check asks about; `""` (the server as a whole) when absent.
    pub grpc_service: Option<String>,
}

/// `initial = "…"` of `[pools.health]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawInitial {
    /// No traffic until the first pass (the default).
    Unknown,
    /// Traffic at once; `fall` failures take it away.
    Healthy,
    /// No traffic until `rise` passes.
    Unhealthy,
}

/// `expect_status = "200-399"` or `expect_status = 204`, kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawStatusRange(pub String);

impl<'de> Deserialize<'de> for RawStatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RangeVisitor;

        impl Visitor<'_> for RangeVisitor {
            type Value = RawStatusRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a status like 204 or a range like "200-399""#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStatusRange, E> {
                Ok(RawStatusRange(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStatusRange, E> {
                Ok(RawStatusRange(v.to_string()))
            }
        }

        deserializer.deserialize_any(RangeVisitor)
    }
}

/// `[pools.outlier]`: passive ejection.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    /// Failed attempts in a row that eject a backend.
    pub consecutive_failures: Option<i64>,
    /// Whether a 5xx answer counts as a failure (connect errors and timeouts always do).
    pub count_5xx: Option<bool>,
    /// First ejection time; doubles on each re-ejection.
    pub base_ejection: Option<RawDuration>,
    /// Cap of the doubling.
    pub max_ejection: Option<RawDuration>,
    /// Never eject more than this share of the pool.
    pub max_ejected_percent: Option<i64>,
}

/// `hold = { timeout, max_queued }`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHold {
    /// Longest a request waits for an eligible backend.
    pub timeout: Option<RawDuration>,
    /// Requests that may wait at once; more get a 503 at once.
    pub max_queued: Option<i64>,
}

/// `balance = "…"` of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawBalance {
    /// `round_robin` (the default).
    #[default]
    RoundRobin,
    /// `least_conn`.
    LeastConn,
    /// `p2c`.
    P2c,
    /// `hash`.
    Hash,
}

impl RawBalance {
    /// The policy spelled `s` in the file, if any.
    pub fn parse(s: &str) -> Option<RawBalance> {
        [
            RawBalance::RoundRobin,
            RawBalance::LeastConn,
            RawBalance::P2c,
            RawBalance::Hash,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
    }

    /// The spelling used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            RawBalance::RoundRobin => "round_robin",
            RawBalance::LeastConn => "least_conn",
            RawBalance::P2c => "p2c",
            RawBalance::Hash => "hash",
        }
    }
}

/// One entry of `backends = [...]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// `ip:port`.
    pub addr: String,
    /// Relative weight; 1 when absent.
    pub weight: Option<i64>,
    /// Only used when no primary backend is eligible.
    #[serde(default)]
    pub backup: bool,
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique route name.
    pub name: String,
    /// `match = { … }`; absent matches every request.
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    /// Weights over pools.
    pub split: Vec<RawSplit>,
    /// `sticky = { cookie = "…" }` or `{ learn_header = "…", … }`.
    pub sticky: Option<RawSticky>,
    /// Extra attempts on another backend; 0 when absent.
    pub retries: Option<i64>,
    /// Per-route timeouts; each absent one takes its default.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Largest request body accepted (bytes, or a size like `"10MiB"`); absent
    /// means 100 MiB, 0 means no limit.
    pub max_request_body: Option<RawSize>,
    /// Upgrade protocols that may become tunnels (`["websocket"]` when absent).
    pub upgrades: Option<Vec<String>>,
    /// 5xx answers that send a replayable request to another backend.
    pub retry_on_status: Option<Vec<i64>>,
    /// `rate_limit = { rate, burst, key, trusted_proxies, max_keys }`.
    pub rate_limit: Option<RawRateLimit>,
    /// `concurrency = { max_in_flight, queue, queue_timeout }`.
    pub concurrency: Option<RawConcurrency>,
    /// `mirror = { pool, percent, max_body, timeout }`.
    pub mirror: Option<RawMirror>,
}

/// `mirror = { pool = "…", percent = N }` of a route; also the body of
/// `PUT /api/v1/routes/{route}/mirror`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    /// The pool the copies go to.
    pub pool: Option<String>,
    /// Share of requests copied, 0 to 100.
    pub percent: Option<i64>,
    /// Larger bodies are not mirrored (bytes or `"1MiB"`); 1 MiB when absent.
    pub max_body: Option<RawSize>,
    /// Whole life of one copy; 10 s when absent.
    pub timeout: Option<RawDuration>,
}

/// `rate_limit = { … }` of a route; also the JSON body of
/// `PUT /api/v1/routes/{route}/rate_limit` and its form in the state file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Requests a second.
    pub rate: Option<f64>,
    /// Requests at once after a pause; `rate` rounded up (at least 1) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<i64>,
    /// `"client_ip"` (the default), `"header:NAME"` or `"route"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (`"10.0.0.0/8"`, `"::1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    /// Buckets kept at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<i64>,
}

/// `match = { host, path_prefix, headers, method }`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// `agents.local`, `*.agents.local` or `*`.
    pub host: Option<String>,
    /// Must start with `/`.
    pub path_prefix: Option<String>,
    /// Header name → exact value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `"GET"` or `["GET", "HEAD"]`.
    pub method: Option<RawMethods>,
}

/// `method = "GET"` or `method = ["GET", "HEAD"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawMethods {
    /// A single method string.
    One(String),
    /// An array of method strings.
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for RawMethods {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MethodsVisitor;

        impl<'de> Visitor<'de> for MethodsVisitor {
            type Value = RawMethods;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a method like "GET" or an array like ["GET", "HEAD"]"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawMethods, E> {
                Ok(RawMethods::One(v.to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawMethods, A::Error> {
                let mut methods = Vec::new();
                while let Some(method) = seq.next_element::<String>()? {
                    methods.push(method);
                }
                Ok(RawMethods::Many(methods))
            }
        }

        deserializer.deserialize_any(MethodsVisitor)
    }
}

/// One entry of `split = [...]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    /// Name of a `[[pools]]` entry.
    pub pool: String,
    /// Share of the route's traffic, relative to the other entries.
    pub weight: i64,
}

/// `sticky = { cookie = "…" }` or `sticky = { learn_header = "…", idle, max_sessions, prefix }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    /// Name of the cookie that pins a client to a pool.
    pub cookie: Option<String>,
    /// Response header whose value names a session (e.g. `mcp-session-id`).
    pub learn_header: Option<String>,
    /// Forget a learned session after this long without a request.
    pub idle: Option<RawDuration>,
    /// Most learned sessions kept for the route.
    pub max_sessions: Option<i64>,
    /// Prefix the session ids the agent names with its pool (`green~<id>`) on the
    /// way out and strip it on the way in; absent: on exactly with `[cluster]`.
    pub prefix: Option<bool>,
}

/// `timeouts = { connect, response_header, idle, client_body }`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect to a backend.
    pub connect: Option<RawDuration>,
    /// Request sent → response head received.
    pub response_header: Option<RawDuration>,
    /// Longest gap between two body chunks.
    pub idle: Option<RawDuration>,
    /// Longest gap between two reads of the client's request body.
    pub client_body: Option<RawDuration>,
}

/// A byte size as written: a number of bytes (`65536`) or a string with a unit
/// (`"64KiB"`, `"10MB"`); parsed by `validate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawSize {
    /// A bare integer: bytes.
    Bytes(i64),
    /// A string with a unit.
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a size in bytes like 65536 or a string like "64KiB""#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }

            // JSON (admin API bodies) hands positive integers over as u64; one
            // beyond i64 is out of every size range, which validation reports.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration as written (`"250ms"`, `"10s"`); parsed by `validate` with humantime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string like "250ms" or "10s""#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
        }

        deserializer.deserialize_str(DurationVisitor)
    }
}
