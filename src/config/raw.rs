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
use serde::Deserialize;

/// The whole file. `validate` deserializes its sections one by one (so that one
/// bad pool does not hide errors in the others); this type documents the shape
/// and serves callers that want the raw file in one piece.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[listen]`.
    pub listen: RawListen,
    /// `[[pools]]`, in file order.
    #[serde(default)]
    pub pools: Vec<RawPool>,
    /// `[[routes]]`, in file order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `[discovery]`.
    pub discovery: Option<RawDiscovery>,
}

/// `[discovery]`: where backends come from besides the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    /// `[discovery.docker]`.
    pub docker: Option<RawDocker>,
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
}

/// One `[[pools]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    /// Unique pool name.
    pub name: String,
    /// Balancing policy; `round_robin` when absent.
    #[serde(default)]
    pub balance: RawBalance,
    /// `header:NAME`, `cookie:NAME` or `client_ip`; only with `balance = "hash"`.
    pub hash_key: Option<String>,
    /// Static backends; discovery may add more later.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
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
    /// `sticky = { cookie = "…" }`.
    pub sticky: Option<RawSticky>,
    /// Extra attempts on another backend; 0 when absent.
    pub retries: Option<i64>,
    /// Per-route timeouts; each absent one takes its default.
    #[serde(default)]
    pub timeouts: RawTimeouts,
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

/// `sticky = { cookie = "…" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    /// Name of the cookie that pins a client to a pool.
    pub cookie: String,
}

/// `timeouts = { connect, response_header, idle }`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect to a backend.
    pub connect: Option<RawDuration>,
    /// Request sent → response head received.
    pub response_header: Option<RawDuration>,
    /// Longest gap between two body chunks.
    pub idle: Option<RawDuration>,
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
