//! The validated, typed form of `routes.toml`.
//!
//! A [`Spec`] is what `validate` produces from the raw file; the controller's
//! *effective* spec is the same type with admin overrides merged in (see
//! `overrides`). Everything here is already checked: names are unique, split pools
//! exist, durations are positive. Nothing on the request path reads a
//! `Spec`; the snapshot builder turns it into runtime tables.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

mod health;
mod limits;

pub use health::*;
pub use limits::*;

/// Name of a pool, as written in `[[pools]].name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolName(pub Arc<str>);

/// Name of a route, as written in `[[routes]].name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteName(pub Arc<str>);

impl PoolName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl RouteName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Spec {
    pub listen: ListenSpec,
    /// `[admin]`; `None` when the file has no admin table (no admin API).
    pub admin: Option<AdminSpec>,
    /// Pools in file order.
    pub pools: Vec<PoolSpec>,
    /// Routes in file order (precedence is decided by the route table, not here).
    pub routes: Vec<RouteSpec>,
    /// `[discovery]`; all off when the file has none.
    pub discovery: DiscoverySpec,
    /// Certificates of the HTTPS listener; present exactly when `listen.https` is.
    pub tls: Option<TlsSpec>,
    /// `[log]`; all defaults (access log off) when the file has none.
    pub log: LogSpec,
    /// `[cluster]`; `None`: a single gateway (overrides in `[admin].state_file`).
    pub cluster: Option<ClusterSpec>,
    /// `[maintenance]`: the operator's maintenance page; the built-in one when empty.
    pub maintenance: MaintenanceTemplateSpec,
}

/// `[maintenance]`: the HTML page a route in maintenance answers browsers with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceTemplateSpec {
    /// The template's text: `html` as written, or `template`'s file once read
    /// (`config::load` and reloads read it; `None` until then, and without either key).
    pub html: Option<Arc<str>>,
    /// `template`: the file the page is read from, as written (relative to the
    /// config file's directory).
    pub file: Option<std::path::PathBuf>,
}

/// Largest maintenance template, in bytes.
pub const MAINTENANCE_TEMPLATE_LIMIT: usize = 64 * 1024;
/// The placeholders a maintenance template may use.
pub const MAINTENANCE_PLACEHOLDERS: [&str; 3] = ["message", "route", "retry_after"];

/// `[cluster]`, validated: replicas share their admin state through a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Where the shared state lives.
    pub store: ClusterStoreKind,
    /// The gateway's own Swarm service (name or ID).
    pub service: Arc<str>,
    /// A manager's engine address as written (`None`: `$DOCKER_HOST` or the
    /// default socket).
    pub engine: Option<String>,
    /// How often the store is read for other replicas' writes.
    pub poll_interval: Duration,
    /// Admin APIs of the replicas (a name may resolve to several), read every
    /// second for the replica table of the state (with `[admin].token_env`'s token).
    pub peers: Vec<ManagerUrl>,
}

/// `[cluster].store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterStoreKind {
    /// Labels of the gateway's own Swarm service, written by compare-and-set on
    /// the service version.
    Swarm,
}

/// Default `[cluster].poll_interval`.
pub const DEFAULT_CLUSTER_POLL: Duration = Duration::from_millis(250);
/// Bounds of `[cluster].poll_interval` (writes must reach every replica in 1 s).
pub const CLUSTER_POLL_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_secs(1));

impl Spec {
    /// Metrics are recorded when the admin listener, which serves `GET /metrics`,
    /// is configured; without a reader they would only cost.
    pub fn metrics_enabled(&self) -> bool {
        self.admin.is_some()
    }
}

/// `[log]`: the access log. Read at start; a reload keeps the running settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSpec {
    pub access: AccessLog,
    pub format: LogFormat,
}

/// `access = "…"` of `[log]`: where access-log lines go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log (the default: the request path builds no record).
    #[default]
    Off,
    /// One line per request on standard output (other logs stay on stderr).
    Stdout,
}

/// `format = "…"` of `[log]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default).
    #[default]
    Json,
    /// `key=value` pairs, for reading in a terminal.
    Text,
}

/// `[listen]`.
#[derive(Clone, Debug)]
pub struct ListenSpec {
    pub http: SocketAddr,
    /// `None` means unlimited.
    pub max_connections: Option<usize>,
    pub header_read_timeout: Duration,
    /// The HTTPS listener, if any.
    pub https: Option<SocketAddr>,
    /// `Some` when the HTTP listener answers every request with a redirect to HTTPS.
    pub redirect_https: Option<RedirectHttps>,
    /// How long streams (SSE, WebSocket, long requests) on a backend that was
    /// *removed* (its pool or address left the config) may still run before they
    /// are closed. Split changes and drains never close streams.
    pub stream_close_delay: Duration,
    /// Bounds on what one client may make the gateway hold.
    pub client: ClientLimits,
    /// Whether bodiless HTTP/1.1 requests take the gateway's own HTTP/1 loops
    /// (`http1`) on both sides; `false` serves and forwards everything through hyper.
    pub http1_fast_path: bool,
}

/// Client-side limits of `[listen]` beyond the head timeout and connection cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Largest request head in bytes (HTTP/1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Most header fields in one HTTP/1 request head.
    pub max_headers: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// Streams reset by the client before they were accepted (rapid reset,
    /// CVE-2023-44487); beyond it the connection is closed with `ENHANCE_YOUR_CALM`.
    pub http2_max_pending_accept_reset_streams: usize,
    /// Streams the gateway reset for a client's protocol errors; beyond it the
    /// connection is closed.
    pub http2_max_local_error_reset_streams: usize,
    /// Requests a client may cancel before their response head within 10 s (rapid
    /// reset once hyper accepted the stream); beyond it the connection is dropped.
    pub http2_max_client_resets: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            idle_timeout: Duration::from_secs(60),
            http2_max_concurrent_streams: 100,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 1024,
            http2_max_client_resets: 200,
        }
    }
}

/// Smallest `max_header_bytes` accepted: hyper's smallest HTTP/1 read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

/// `redirect_https = true` (and `redirect_https_port`) of `[listen]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectHttps {
    /// Port written into the `Location`; `None` means the HTTPS listener's own port
    /// (a published port in front of the gateway may differ, hence the override).
    pub port: Option<u16>,
}

/// `[tls]`: the certificates of the HTTPS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSpec {
    /// In file order, at least one; the first is the default certificate, served when
    /// the client sends no SNI or a name no entry claims.
    pub certificates: Vec<CertificateSpec>,
    /// Longest time from accept to a completed TLS handshake.
    pub handshake_timeout: Duration,
}

/// One `[[tls.certificates]]` entry. Files are read (and watched) by `tls`, not here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSpec {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Names claimed for SNI; empty means "the names in the certificate".
    pub server_names: Vec<SniName>,
}

/// A `server_names` entry, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SniName {
    /// `agents.example.com`
    Exact(String),
    /// `*.example.com` stored as the suffix `.example.com` (one label deep, RFC 6125 §6.4.3).
    Wildcard(String),
}

impl fmt::Display for SniName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SniName::Exact(name) => f.write_str(name),
            SniName::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// `tls = { … }` of a pool: the backends speak HTTPS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamTlsSpec {
    /// SNI and the name verified in the backend's certificate; `None` means the
    /// backend's IP address (its certificate then needs an IP SAN).
    pub server_name: Option<String>,
    /// How the backend's certificate is checked.
    pub verify: UpstreamVerify,
}

/// How a backend's certificate is verified.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamVerify {
    /// Against the CA certificates in this PEM file.
    Ca(PathBuf),
    /// Against the public web PKI roots compiled into the binary (webpki-roots).
    PublicRoots,
    /// Not at all (`insecure_skip_verify = true`): encrypted, not authenticated.
    Insecure,
}

/// `[admin]`: where the admin API listens and how it is protected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSpec {
    /// Never the traffic port; validation rejects a clash.
    pub listen: SocketAddr,
    /// Name of the environment variable holding the bearer token. Required when
    /// `listen` is not a loopback address.
    pub token_env: Option<String>,
    /// Where admin-made overrides are persisted (JSON, written atomically).
    pub state_file: Option<PathBuf>,
    /// Names a request's `Host` may carry besides the listen address and the
    /// loopback names (lower-case, no port; see `admin::guard`).
    pub allowed_hosts: Vec<String>,
}

/// Most `[admin].allowed_hosts` entries.
pub const MAX_ALLOWED_HOSTS: usize = 64;

/// Where a value of the running config came from (shown by `GET /api/v1/state`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `routes.toml`.
    #[default]
    File,
    /// An admin API call (an override on top of the file).
    Api,
    /// Docker discovery.
    Docker,
    /// An automated rollout (a split it set through the controller).
    Rollout,
}

impl Source {
    /// The lower-case name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
            Source::Docker => "docker",
            Source::Rollout => "rollout",
        }
    }
}

/// `[[pools]]`.
#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub name: PoolName,
    pub balance: Balance,
    /// Static backends in file order; duplicates were rejected.
    pub backends: Vec<BackendSpec>,
    /// `Some` when the backends are spoken to over TLS.
    pub tls: Option<UpstreamTlsSpec>,
    /// The HTTP version spoken to the backends (`protocol`).
    pub protocol: Protocol,
    /// `[pools.h2]`: the HTTP/2 connection settings (used when `protocol` is h2c or h2).
    pub h2: H2Spec,
    /// Probes, ejection, slow start, panic threshold, hold.
    pub health: PoolHealthSpec,
    /// Retry budget and circuit breaking.
    pub limits: PoolLimitsSpec,
}

/// `protocol = "…"` of a pool: what the gateway speaks to its backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (over TLS with the pool's `tls`).
    #[default]
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge (no upgrade dance).
    H2c,
    /// HTTP/2 over TLS, negotiated with ALPN `h2` (needs the pool's `tls`).
    H2,
}

impl Protocol {
    /// The value as written in the file and shown in the state view.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }

    /// Parses the file's (and labels') spelling.
    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "http1" => Some(Protocol::Http1),
            "h2c" => Some(Protocol::H2c),
            "h2" => Some(Protocol::H2),
            _ => None,
        }
    }

    /// HTTP/2 to the backends (h2c or h2).
    pub fn is_h2(self) -> bool {
        !matches!(self, Protocol::Http1)
    }
}

/// `[pools.h2]`: how the HTTP/2 connections to one backend are kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct H2Spec {
    /// Most connections per backend: a new one opens only when every open one is
    /// at the backend's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_connections: u32,
    /// PING a connection this often (`None`: never).
    pub keepalive_interval: Option<Duration>,
    /// A PING unanswered for this long closes the connection.
    pub keepalive_timeout: Duration,
    /// A connection older than this takes no new streams (its streams finish).
    pub max_connection_age: Option<Duration>,
    /// The receive window of each stream, in bytes.
    pub stream_window: u32,
    /// The receive window of each connection, in bytes.
    pub connection_window: u32,
}

impl H2Spec {
    /// Default `max_connections`.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;
    /// Default `keepalive_interval`.
    pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
    /// Default `keepalive_timeout`.
    pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `max_connection_age`.
    pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(600);
    /// Default `stream_window`: large enough that one stream is not throttled by
    /// the round trip on a fast link (64 KiB, the protocol's default, is).
    pub const DEFAULT_STREAM_WINDOW: u32 = 4 << 20;
    /// Default `connection_window`.
    pub const DEFAULT_CONNECTION_WINDOW: u32 = 16 << 20;
}

impl Default for H2Spec {
    fn default() -> Self {
        H2Spec {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            keepalive_interval: Some(Self::DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: Self::DEFAULT_KEEPALIVE_TIMEOUT,
            max_connection_age: Some(Self::DEFAULT_MAX_CONNECTION_AGE),
            stream_window: Self::DEFAULT_STREAM_WINDOW,
            connection_window: Self::DEFAULT_CONNECTION_WINDOW,
        }
    }
}

impl PoolSpec {
    /// A pool with no static backends and the default policy: what a pool named
    /// only by routes (with Docker discovery on) or only by labels starts as.
    pub fn empty(name: PoolName) -> PoolSpec {
        PoolSpec {
            name,
            balance: Balance::RoundRobin,
            backends: Vec::new(),
            health: PoolHealthSpec::default(),
            tls: None,
            limits: PoolLimitsSpec::default(),
            protocol: Protocol::Http1,
            h2: H2Spec::default(),
        }
    }
}

/// The balancing policy inside one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (nginx).
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Power of two choices over peak-EWMA latency x load.
    P2c,
    /// Consistent hashing on a request property.
    Hash(HashKey),
}

/// What `balance = "hash"` hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// `header:NAME`
    Header(HeaderName),
    /// `cookie:NAME`
    Cookie(Arc<str>),
    /// `client_ip`
    ClientIp,
}

/// One static backend of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    /// 1 ..= [`MAX_WEIGHT`].
    pub weight: u32,
    /// Used only when no primary backend of the pool is eligible.
    pub backup: bool,
    /// No new requests; in-flight ones finish. Never set by the file: an admin
    /// drain (an override) or Docker discovery (a stopping container) sets it in
    /// the effective spec.
    pub draining: bool,
    /// Who put this backend in its pool.
    pub source: Source,
    /// The container behind a backend Docker discovery found (`None` otherwise).
    pub container: Option<ContainerRef>,
}

/// The container behind a discovered backend, as the running config needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// Container name without Docker's leading `/`.
    pub name: Arc<str>,
    /// False while Docker's health check says `starting` or `unhealthy`: such a
    /// backend gets no traffic, whatever the gateway's own probes say.
    pub docker_healthy: bool,
    /// Docker's health state in its own words (`docker_healthy` is derived from it).
    pub docker_health: DockerHealth,
}

/// A container's health as Docker reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DockerHealth {
    /// The container has no health check.
    #[default]
    None,
    /// The health check has not passed yet (within its start period).
    Starting,
    Healthy,
    Unhealthy,
}

impl DockerHealth {
    /// Docker's word for it (`none` when there is no health check).
    pub fn as_str(self) -> &'static str {
        match self {
            DockerHealth::None => "none",
            DockerHealth::Starting => "starting",
            DockerHealth::Healthy => "healthy",
            DockerHealth::Unhealthy => "unhealthy",
        }
    }
}

/// Largest backend or split weight accepted.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// `[[routes]]`.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub name: RouteName,
    pub matcher: MatchSpec,
    /// Pools in the order written; weights sum to more than 0.
    pub split: Vec<SplitSpec>,
    pub sticky: Option<StickySpec>,
    /// Extra attempts on another backend.
    pub retries: u32,
    pub timeouts: Timeouts,
    /// Largest request body in bytes (413 beyond); `None` means no limit.
    pub max_request_body: Option<u64>,
    /// The `Upgrade` protocols that may become tunnels.
    pub upgrades: Upgrades,
    /// Backend answers (5xx statuses) that send a replayable request to another
    /// backend, within `retries` (and the pool's retry budget); empty: answers
    /// are never retried.
    pub retry_on_status: Box<[u16]>,
    /// Rate limit and concurrency limit.
    pub limits: RouteLimitsSpec,
    /// Set by `ctl pause` (an admin override, never the file): new requests wait.
    pub pause: Option<PauseSpec>,
    /// Set by `ctl maintenance` (an admin override, never the file): 503 page.
    pub maintenance: Option<MaintenanceSpec>,
    /// `mirror = { … }`: shadow copies of sampled requests (from the file, a
    /// container's labels, or `ctl mirror`, which wins over both).
    pub mirror: Option<MirrorSpec>,
}

/// A route's shadow traffic: a copy of `percent` % of its requests goes to
/// `pool`, fire and forget; the copy's answer is discarded and only counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorSpec {
    /// The pool the copies go to.
    pub pool: PoolName,
    /// Share of the route's requests copied, 0 ..= 100 (0: none, a way to stop a
    /// file's or a label's mirror with an override).
    pub percent: u8,
    /// Requests whose body is larger than this many bytes are not mirrored (a
    /// copy already streaming is cut when its body passes it).
    pub max_body: u64,
    /// Whole life of one copy: connect, send, answer, discarding the answer's body.
    pub timeout: Duration,
}

/// Default `max_body` of a mirror: 1 MiB.
pub const MIRROR_MAX_BODY_DEFAULT: u64 = 1 << 20;
/// Largest `max_body` a mirror accepts: 1 GiB (the copy streams; nothing is
/// buffered up to it).
pub const MIRROR_MAX_BODY_LIMIT: u64 = 1 << 30;
/// Default `timeout` of a mirror's copy.
pub const MIRROR_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Longest `timeout` a mirror accepts.
pub const MIRROR_TIMEOUT_LIMIT: Duration = Duration::from_secs(300);

/// A paused route: new requests wait (at most `max_queued` of them, each at most
/// `max`) until the pause ends; in-flight requests are not touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseSpec {
    /// How long one request may wait before it is answered 504 `paused_timeout`.
    pub max: Duration,
    /// How many requests may wait at once; one more is answered 503 `pause_queue_full`.
    pub max_queued: usize,
}

/// Default `max` of a pause (`ctl pause` without `--max`).
pub const PAUSE_MAX_DEFAULT: Duration = Duration::from_secs(30);
/// Longest `max` a pause accepts.
pub const PAUSE_MAX_LIMIT: Duration = Duration::from_secs(3600);
/// Default (and largest accepted) number of requests waiting on one paused route.
pub const PAUSE_QUEUE_DEFAULT: usize = 10_000;

/// A route in maintenance: every request is answered 503 with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceSpec {
    /// Shown on the page and in the JSON answer; `None`: the default sentence.
    pub message: Option<String>,
    /// `Retry-After` in seconds.
    pub retry_after: u32,
}

/// Default `Retry-After` of maintenance, in seconds.
pub const MAINTENANCE_RETRY_AFTER_DEFAULT: u32 = 120;
/// Longest maintenance message accepted, in bytes.
pub const MAINTENANCE_MESSAGE_LIMIT: usize = 4096;

/// A route's `upgrades`: the protocol names (lowercase) whose `Upgrade` requests
/// may become byte tunnels. Any other upgrade request is forwarded as a plain
/// request, its `Upgrade` and the `Connection` token naming it removed (RFC 9110
/// §7.8 lets an intermediary ignore an upgrade it does not take part in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrades(Box<[Box<str>]>);

impl Upgrades {
    /// From names already checked as tokens, lowercased here.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Upgrades(
            names
                .into_iter()
                .map(|n| n.to_ascii_lowercase().into())
                .collect(),
        )
    }

    /// The names, lowercase, in the order written.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|n| &**n)
    }

    /// Whether an `Upgrade` list item (`name` or `name/version`) names an allowed
    /// protocol, in any case.
    pub fn allows(&self, item: &str) -> bool {
        let name = item.split('/').next().unwrap_or("").trim();
        self.0.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

impl Default for Upgrades {
    /// WebSocket only, as Envoy and nginx tunnel by default.
    fn default() -> Self {
        Upgrades::new(["websocket"])
    }
}

/// `match = { … }` of a route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchSpec {
    pub host: HostMatch,
    /// Always starts with `/`; `/` matches everything.
    pub path_prefix: String,
    /// All must be present with exactly these values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Empty means any method.
    pub methods: Vec<Method>,
}

/// How a route matches the request's host (without port, lower-cased).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostMatch {
    #[default]
    Any,
    /// `agents.local`
    Exact(String),
    /// `*.agents.local` stored as the suffix `.agents.local`.
    Wildcard(String),
}

/// One entry of a route's split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitSpec {
    pub pool: PoolName,
    pub weight: u32,
}

/// `sticky = { cookie = "…" }` and/or `sticky = { learn_header = "…", … }`; at
/// least one of the two is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StickySpec {
    /// Cookie naming the pool a client was sent to.
    pub cookie: Option<Arc<str>>,
    /// Session pinning by a header the agent sets (see `sessions`).
    pub learn: Option<LearnSpec>,
}

/// `sticky = { learn_header = "mcp-session-id", idle = "30m", max_sessions = 100000, prefix = true }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnSpec {
    /// The session header, learned from responses and read from requests.
    pub header: HeaderName,
    /// A session not seen for this long is forgotten.
    pub idle: Duration,
    /// Most sessions remembered per route; the least recently seen go first.
    pub max_sessions: usize,
    /// The session ids the agent names go out prefixed with the pool that
    /// answered (`green~<id>`) and come back stripped of it, so any replica (and
    /// this one after a restart) sends the session where it was created.
    pub prefix: bool,
}

/// `timeouts = { connect, response_header, idle }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// From the request (head and body) being sent until the response head arrives.
    pub response_header: Duration,
    /// Longest gap between two body chunks from the backend.
    pub idle: Duration,
    /// Longest gap between two reads of the client's request body (408 beyond).
    pub client_body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            response_header: Duration::from_secs(60),
            idle: Duration::from_secs(300),
            // nginx's `client_body_timeout`.
            client_body: Duration::from_secs(60),
        }
    }
}

/// `[discovery]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoverySpec {
    /// `[discovery.docker]` when present and enabled.
    pub docker: Option<DockerSpec>,
    /// `[discovery.swarm]` when present and enabled (never together with `docker`).
    pub swarm: Option<SwarmSpec>,
}

impl DiscoverySpec {
    /// True when some discovery fills pools besides the file.
    pub fn is_on(&self) -> bool {
        self.docker.is_some() || self.swarm.is_some()
    }

    /// Pools routes name that the file lacks, filled by discovery (empty when off).
    pub fn implied_pools(&self) -> &[PoolName] {
        match (&self.docker, &self.swarm) {
            (Some(d), _) => &d.implied_pools,
            (None, Some(s)) => &s.implied_pools,
            (None, None) => &[],
        }
    }
}

/// `[discovery.swarm]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwarmSpec {
    /// Label key prefix, e.g. `sluicegate` for `sluicegate.pool`.
    pub label_prefix: Arc<str>,
    /// The overlay whose task IPs to use (a service's `<prefix>.network` label
    /// wins); matched as written or as `<stack>_<name>`.
    pub network: Option<Arc<str>>,
    /// How often the task list is read (the truth; events only hurry it).
    pub poll_interval: Duration,
    /// Gateway replicas on managers whose admin API serves the discovered set,
    /// read in order when this node's engine refuses cluster reads.
    pub managers: Vec<ManagerUrl>,
    /// Environment variable with the bearer token sent to `managers`.
    pub token_env: Option<String>,
    /// Pools that routes name but the file does not define (see [`DockerSpec`]).
    pub implied_pools: Vec<PoolName>,
}

/// Default `[discovery.swarm].poll_interval`.
pub const DEFAULT_SWARM_POLL: Duration = Duration::from_secs(1);
/// Bounds of `[discovery.swarm].poll_interval`.
pub const SWARM_POLL_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));

/// `http://host:port` of a gateway's admin API (`host` may be a DNS name such
/// as `tasks.gateway`; every address it resolves to is tried).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagerUrl {
    pub host: Arc<str>,
    pub port: u16,
}

impl std::fmt::Display for ManagerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// `[discovery.docker]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerSpec {
    /// Label key prefix, e.g. `sluicegate` for `sluicegate.pool`.
    pub label_prefix: Arc<str>,
    /// Network whose IP to use when a container is on several (a container's
    /// `<prefix>.network` label wins over this).
    pub network: Option<Arc<str>>,
    /// Which compose projects' containers are considered.
    pub projects: ProjectFilter,
    /// Pools that routes name but the file does not define: they exist, empty,
    /// from the start and are filled by containers whose labels name them.
    pub implied_pools: Vec<PoolName>,
}

/// Default `[discovery.docker].label_prefix`.
pub const DEFAULT_LABEL_PREFIX: &str = "sluicegate";

/// `[discovery.docker].projects`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProjectFilter {
    /// Absent: the gateway's own compose project when it runs in a compose
    /// container, every project (and containers outside compose) otherwise.
    #[default]
    Own,
    /// `["*"]`: every container, whatever its project.
    Any,
    /// Only containers whose `com.docker.compose.project` is one of these.
    Only(Vec<String>),
}

/// The longest duration any setting may have (a year), from the file, labels or
/// the admin API: far beyond any sensible value, and far from where time
/// arithmetic overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default `[listen].header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `[tls].handshake_timeout`.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default `[listen].stream_close_delay`.
pub const DEFAULT_STREAM_CLOSE_DELAY: Duration = Duration::from_secs(300);
