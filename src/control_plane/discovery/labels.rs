//! Docker labels → typed backend settings, and every way a container's labels
//! (or its ports and networks) can be wrong.
//!
//! Labels are user input: nothing here panics on them, and each problem becomes
//! a [`LabelError`] that names the label key and the bad value, so the discovery
//! loop can log it with the container name and skip just that container. Values
//! that also exist in `routes.toml` (pool names, weights) go through the same
//! checks as the file. This module does not choose networks (see `network`) or
//! talk to Docker.

use std::collections::HashMap;
use std::sync::Arc;

use crate::control_plane::config::spec::{PoolName, Protocol};
use crate::control_plane::config::{validate, ConfigError};

/// Compose's label naming the service a container belongs to.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Compose's label naming the project a container belongs to.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// What a container's `<prefix>.*` labels ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendLabels {
    /// `<prefix>.pool`, else the compose service (with `<prefix>.enable=true`).
    pub pool: PoolName,
    /// `<prefix>.port`; `None` means "the single exposed port".
    pub port: Option<u16>,
    /// `<prefix>.weight`, 1 when absent.
    pub weight: u32,
    /// `<prefix>.network`: the network whose IP to use.
    pub network: Option<Arc<str>>,
    /// `<prefix>.health.path`: probe path for a pool these labels create.
    pub health_path: Option<Arc<str>>,
    /// `<prefix>.protocol`: what a pool these labels create speaks to its
    /// backends (`http1` or `h2c`: labels cannot give a pool `tls`, which `h2` needs).
    pub protocol: Option<Protocol>,
    /// `<prefix>.mirror.route` (and `<prefix>.mirror.percent`, 100 when absent):
    /// the container's pool is that route's mirror.
    pub mirror: Option<MirrorLabel>,
    /// `<prefix>.rate_limit.route` with `.rate` (and optional `.burst`, `.key`):
    /// a rate limit for that route, when the file gives it none.
    pub rate_limit: Option<RateLimitLabel>,
}

/// A container's `<prefix>.rate_limit.*` labels: a token-bucket limit on route
/// `route`, for a route whose file entry sets no `rate_limit` (the file and the
/// admin API win). The values are kept as written, already checked by the file's
/// rules, so that a Swarm manager can relay them to workers as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitLabel {
    /// The route limited (checked against the file when the set is merged).
    pub route: Arc<str>,
    /// `.rate`: requests a second.
    pub rate: Arc<str>,
    /// `.burst`: requests at once after a pause.
    pub burst: Option<Arc<str>>,
    /// `.key`: `client_ip` (the default), `route` or `header:NAME`.
    pub key: Option<Arc<str>>,
}

impl RateLimitLabel {
    /// The limit these labels ask for, checked by the file's rules; errors name
    /// the label keys under `prefix`.
    pub fn spec(
        &self,
        prefix: &str,
    ) -> Result<crate::control_plane::config::spec::RateLimitSpec, LabelError> {
        let number = |name: &str, v: &str| -> Result<f64, LabelError> {
            v.parse::<f64>().map_err(|_| {
                LabelError::Value(ConfigError {
                    path: key(prefix, name),
                    message: format!("must be a number, got {v:?}"),
                })
            })
        };
        let rate = number("rate_limit.rate", &self.rate)?;
        let burst = match &self.burst {
            None => None,
            Some(b) => Some(b.parse::<i64>().map_err(|_| {
                LabelError::Value(ConfigError {
                    path: key(prefix, "rate_limit.burst"),
                    message: format!("must be a whole number, got {b:?}"),
                })
            })?),
        };
        let raw = crate::control_plane::config::raw::RawRateLimit {
            rate: Some(rate),
            burst,
            key: self.key.as_deref().map(str::to_owned),
            trusted_proxies: None,
            max_keys: None,
        };
        validate::validate_rate_limit(&raw).map_err(|errors| {
            let first = errors.0.into_iter().next();
            LabelError::Value(match first {
                Some(e) => ConfigError {
                    path: key(prefix, &e.path),
                    message: e.message,
                },
                None => ConfigError {
                    path: key(prefix, "rate_limit"),
                    message: "is not a valid rate limit".to_owned(),
                },
            })
        })
    }
}

/// A container's `<prefix>.mirror.*` labels: its pool receives copies of
/// `percent` % of route `route`'s requests (shadow traffic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorLabel {
    /// The route mirrored (checked against the file when the set is merged).
    pub route: Arc<str>,
    /// 0 ..= 100.
    pub percent: u8,
}

/// Why a labelled container cannot be a backend. `Display` is the log line's
/// reason; the container name is added by the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// A value the file checks too (pool name, weight), with the label key as path.
    #[error("label {0}")]
    Value(ConfigError),
    /// `<prefix>.port` is not 1-65535.
    #[error("label {key} = {value:?} is not a port number (1-65535)")]
    Port { key: String, value: String },
    /// `<prefix>.enable` is neither `true` nor `false`.
    #[error("label {key} = {value:?} must be \"true\" or \"false\"")]
    Enable { key: String, value: String },
    /// `<prefix>.enable=true` outside compose and without `<prefix>.pool`.
    #[error("label {key}=true but the container has no {COMPOSE_SERVICE} label to name its pool; add {pool_key}")]
    NoService { key: String, pool_key: String },
    /// `<prefix>.health.path` does not start with `/`.
    #[error("label {key} = {value:?} must be a path starting with '/', e.g. \"/health\"")]
    HealthPath { key: String, value: String },
    /// `<prefix>.protocol=h2`: HTTP/2 over TLS, and labels cannot set a pool's `tls`.
    #[error(r#"label {key} = "h2" needs TLS, which labels cannot configure; use "h2c" (HTTP/2 without TLS), or define the pool in routes.toml with tls = {{ … }} and protocol = "h2""#)]
    ProtocolNeedsTls { key: String },
    /// No port label and no exposed TCP port.
    #[error("no {key} label and the image exposes no TCP port; add {key}")]
    NoPort { key: String },
    /// No port label and several exposed TCP ports.
    #[error("no {key} label and the image exposes several TCP ports ({}); add {key} to pick one", .ports.join(", "))]
    SeveralPorts { key: String, ports: Vec<String> },
    /// The network named by the label or the config is not one the container is on
    /// (or, when the gateway runs in a container, not one it shares with it).
    #[error("network {wanted:?} (from {from}) is not among the usable networks of the container ({})", list(.usable))]
    UnknownNetwork {
        wanted: String,
        from: String,
        usable: Vec<String>,
    },
    /// The gateway runs in a container and shares no network with this one.
    #[error("shares no network with the gateway's container (gateway on: {}; container on: {})", list(.gateway), list(.container))]
    NoSharedNetwork {
        gateway: Vec<String>,
        container: Vec<String>,
    },
    /// Several candidate networks and no rule to pick one.
    #[error("is on several networks ({}) and nothing says which to use; add the label {key} or set [discovery.docker].network", .networks.join(", "))]
    SeveralNetworks { key: String, networks: Vec<String> },
    /// No network gives the container an IP (network mode host, none, container:…).
    #[error("has no IP address on any network (network mode host or none?)")]
    NoNetwork,
    /// Docker reported an IP that does not parse.
    #[error("network {network:?} reports IP {ip:?}, which is not an IP address")]
    BadIp { network: String, ip: String },
    /// A reason Swarm discovery states as text (a service or task rule, or a
    /// reason relayed from the manager gateway a worker reads).
    #[error("{0}")]
    Reported(String),
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// True when the labels opt the container in or out (`<prefix>.pool` or
/// `<prefix>.enable`): only such containers are inspected.
pub fn is_candidate(labels: &HashMap<String, String>, prefix: &str) -> bool {
    labels.contains_key(&key(prefix, "pool")) || labels.contains_key(&key(prefix, "enable"))
}

/// `<prefix>.<name>`.
pub fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}

/// Parses a container's labels. `Ok(None)`: the container is not a backend
/// (no `<prefix>.pool`, no `<prefix>.enable=true`, or `<prefix>.enable=false`).
pub fn parse(
    labels: &HashMap<String, String>,
    prefix: &str,
) -> Result<Option<BackendLabels>, LabelError> {
    let get = |name: &str| labels.get(&key(prefix, name)).map(|v| v.trim());
    let enable_key = key(prefix, "enable");
    let enabled = match get("enable") {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
        Some(v) => {
            return Err(LabelError::Enable {
                key: enable_key,
                value: v.to_owned(),
            })
        }
    };
    let pool_key = key(prefix, "pool");
    let pool = match (enabled, get("pool")) {
        (Some(false), _) | (None, None) => return Ok(None),
        (_, Some(pool)) => validate::pool_name(pool, &pool_key).map_err(LabelError::Value)?,
        (Some(true), None) => match labels.get(COMPOSE_SERVICE) {
            Some(service) => {
                validate::pool_name(service, COMPOSE_SERVICE).map_err(LabelError::Value)?
            }
            None => {
                return Err(LabelError::NoService {
                    key: enable_key,
                    pool_key,
                })
            }
        },
    };
    let port_key = key(prefix, "port");
    let port = match get("port") {
        None => None,
        Some(v) => match v.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                return Err(LabelError::Port {
                    key: port_key,
                    value: v.to_owned(),
                })
            }
        },
    };
    let weight = match get("weight") {
        None => 1,
        Some(v) => validate::weight(v, &key(prefix, "weight")).map_err(LabelError::Value)?,
    };
    let network = get("network").filter(|n| !n.is_empty()).map(Arc::from);
    let health_path = match get("health.path") {
        None => None,
        Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => Some(Arc::from(p)),
        Some(p) => {
            return Err(LabelError::HealthPath {
                key: key(prefix, "health.path"),
                value: p.to_owned(),
            })
        }
    };
    let protocol_key = key(prefix, "protocol");
    let protocol = match get("protocol") {
        None => None,
        Some(v) => match validate::protocol_value(v, &protocol_key).map_err(LabelError::Value)? {
            Protocol::H2 => return Err(LabelError::ProtocolNeedsTls { key: protocol_key }),
            other => Some(other),
        },
    };
    let mirror = mirror_label(labels, prefix)?;
    let rate_limit = rate_limit_label(labels, prefix)?;
    Ok(Some(BackendLabels {
        pool,
        port,
        weight,
        network,
        health_path,
        protocol,
        mirror,
        rate_limit,
    }))
}

/// `<prefix>.rate_limit.route` with `.rate`, `.burst` and `.key` (the others
/// only with a route).
pub fn rate_limit_label(
    labels: &HashMap<String, String>,
    prefix: &str,
) -> Result<Option<RateLimitLabel>, LabelError> {
    let get = |name: &str| labels.get(&key(prefix, name)).map(|v| v.trim());
    let Some(route) = group_route(
        labels,
        prefix,
        "rate_limit",
        &["rate", "burst", "key"],
        "to limit",
    )?
    else {
        return Ok(None);
    };
    let Some(rate) = get("rate_limit.rate") else {
        return Err(LabelError::Value(ConfigError {
            path: key(prefix, "rate_limit.rate"),
            message: "is required with rate_limit.route: requests a second, e.g. 10".to_owned(),
        }));
    };
    let label = RateLimitLabel {
        route,
        rate: Arc::from(rate),
        burst: get("rate_limit.burst").map(Arc::from),
        key: get("rate_limit.key").map(Arc::from),
    };
    label.spec(prefix)?;
    Ok(Some(label))
}

/// `<prefix>.mirror.route` and `<prefix>.mirror.percent` (only with a route).
pub fn mirror_label(
    labels: &HashMap<String, String>,
    prefix: &str,
) -> Result<Option<MirrorLabel>, LabelError> {
    let get = |name: &str| labels.get(&key(prefix, name)).map(|v| v.trim());
    let percent_key = key(prefix, "mirror.percent");
    let Some(route) = group_route(labels, prefix, "mirror", &["percent"], "to mirror")? else {
        return Ok(None);
    };
    let percent = match get("mirror.percent") {
        None => 100,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .and_then(validate::mirror_percent)
            .ok_or_else(|| {
                LabelError::Value(ConfigError {
                    path: percent_key,
                    message: format!("percent must be a whole number between 0 and 100, got {v:?}"),
                })
            })?,
    };
    Ok(Some(MirrorLabel { route, percent }))
}

/// The route a `<prefix>.<group>.*` label group applies to (`<group>.route`,
/// checked as a route name). `None` when the group is absent; an error naming the
/// first of the group's `others` keys given without a route ("names no route
/// `purpose`").
fn group_route(
    labels: &HashMap<String, String>,
    prefix: &str,
    group: &str,
    others: &[&str],
    purpose: &str,
) -> Result<Option<Arc<str>>, LabelError> {
    let route_key = key(prefix, &format!("{group}.route"));
    match labels.get(&route_key).map(|v| v.trim()) {
        Some(route) => validate::route_name(route, &route_key)
            .map(Some)
            .map_err(LabelError::Value),
        None => match others
            .iter()
            .map(|name| key(prefix, &format!("{group}.{name}")))
            .find(|k| labels.contains_key(k))
        {
            None => Ok(None),
            Some(path) => Err(LabelError::Value(ConfigError {
                path,
                message: format!("names no route {purpose}; add {route_key} with the route's name"),
            })),
        },
    }
}

/// The port to send to: the label's, else the single exposed TCP port
/// (`exposed` holds Docker's `"8080/tcp"` keys).
pub fn port<'a>(
    label: Option<u16>,
    exposed: impl Iterator<Item = &'a str>,
    prefix: &str,
) -> Result<u16, LabelError> {
    if let Some(port) = label {
        return Ok(port);
    }
    let mut tcp: Vec<u16> = exposed
        .filter_map(|spec| match spec.split_once('/') {
            Some((port, "tcp")) => port.parse().ok(),
            Some(_) => None,
            None => spec.parse().ok(),
        })
        .collect();
    tcp.sort_unstable();
    tcp.dedup();
    match tcp.as_slice() {
        [one] => Ok(*one),
        [] => Err(LabelError::NoPort {
            key: key(prefix, "port"),
        }),
        many => Err(LabelError::SeveralPorts {
            key: key(prefix, "port"),
            ports: many.iter().map(|p| format!("{p}/tcp")).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parsed(pairs: &[(&str, &str)]) -> Result<Option<BackendLabels>, LabelError> {
        parse(&labels(pairs), "sluicegate")
    }

    #[test]
    fn full_labels_parse_into_typed_values() {
        let l = parsed(&[
            ("sluicegate.pool", "agent-blue"),
            ("sluicegate.port", "8080"),
            ("sluicegate.weight", "5"),
            ("sluicegate.network", "front"),
            ("sluicegate.health.path", "/ready"),
        ])
        .unwrap()
        .expect("backend");
        assert_eq!(l.pool.as_str(), "agent-blue");
        assert_eq!((l.port, l.weight), (Some(8080), 5));
        assert_eq!(l.network.as_deref(), Some("front"));
        assert_eq!(l.health_path.as_deref(), Some("/ready"));
    }

    #[test]
    fn protocol_label_is_http1_or_h2c() {
        let at = |v: &str| {
            parsed(&[("sluicegate.pool", "p"), ("sluicegate.protocol", v)])
                .unwrap()
                .expect("backend")
                .protocol
        };
        assert_eq!(at("h2c"), Some(Protocol::H2c));
        assert_eq!(at("http1"), Some(Protocol::Http1));
        let none = parsed(&[("sluicegate.pool", "p")])
            .unwrap()
            .expect("backend");
        assert_eq!(none.protocol, None);
    }

    #[test]
    fn enable_uses_the_compose_service_and_false_opts_out() {
        let l = parsed(&[("sluicegate.enable", "true"), (COMPOSE_SERVICE, "agent")])
            .unwrap()
            .expect("backend");
        assert_eq!((l.pool.as_str(), l.port, l.weight), ("agent", None, 1));
        let off = [("sluicegate.enable", "false"), ("sluicegate.pool", "p")];
        assert_eq!(parsed(&off).unwrap(), None);
        assert_eq!(parsed(&[("other", "x")]).unwrap(), None);
        let e = parsed(&[("sluicegate.enable", "true")]).unwrap_err();
        assert!(e.to_string().contains("add sluicegate.pool"), "{e}");
        let e = parsed(&[("sluicegate.enable", "yes")]).unwrap_err();
        assert!(e.to_string().contains("\"yes\""), "{e}");
    }

    #[test]
    fn every_bad_value_names_its_label() {
        let cases = [
            (
                ("sluicegate.weight", "heavy"),
                "label sluicegate.weight: weight must be",
            ),
            (("sluicegate.weight", "0"), "between 1 and"),
            (
                ("sluicegate.port", "http"),
                "sluicegate.port = \"http\" is not a port",
            ),
            (("sluicegate.port", "0"), "is not a port"),
            (("sluicegate.health.path", "health"), "starting with '/'"),
            (
                ("sluicegate.protocol", "http2"),
                "label sluicegate.protocol: unknown protocol \"http2\"",
            ),
            (
                ("sluicegate.protocol", "h2"),
                "label sluicegate.protocol = \"h2\" needs TLS",
            ),
        ];
        for ((k, v), fragment) in cases {
            let e = parsed(&[("sluicegate.pool", "p"), (k, v)]).unwrap_err();
            assert!(e.to_string().contains(fragment), "{k}={v}: {e}");
        }
        let e = parsed(&[("sluicegate.pool", "bad pool")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("label sluicegate.pool: pool name"),
            "{e}"
        );
    }

    #[test]
    fn custom_prefix_is_respected() {
        let l = parse(&labels(&[("gw.pool", "x"), ("sluicegate.pool", "y")]), "gw");
        assert_eq!(l.unwrap().expect("backend").pool.as_str(), "x");
        assert!(is_candidate(&labels(&[("gw.enable", "false")]), "gw"));
        assert!(!is_candidate(&labels(&[("sluicegate.pool", "y")]), "gw"));
    }

    #[test]
    fn port_from_label_else_the_single_exposed_tcp_port() {
        assert_eq!(port(Some(9000), ["8080/tcp"].into_iter(), "sg"), Ok(9000));
        assert_eq!(
            port(None, ["8080/tcp", "53/udp"].into_iter(), "sg"),
            Ok(8080)
        );
        let e = port(None, std::iter::empty(), "sg").unwrap_err();
        assert!(
            e.to_string().contains("exposes no TCP port; add sg.port"),
            "{e}"
        );
        let e = port(None, ["9090/tcp", "8080/tcp"].into_iter(), "sg").unwrap_err();
        assert!(e.to_string().contains("(8080/tcp, 9090/tcp)"), "{e}");
    }
}
