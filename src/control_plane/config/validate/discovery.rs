//! Checks of `[discovery]`, and the single-value checks that Docker labels share
//! with the file (a pool name or weight means the same wherever it is written).
//!
//! Owns the rules for `[discovery.docker]` (label prefix, network, projects) and
//! which undefined split pools become *implied* pools when discovery is on. It does
//! not talk to Docker; `crate::control_plane::discovery` does, and calls [`pool_name`] and
//! [`weight`] for label values.

use std::sync::Arc;

use super::values::{check_name, check_poll_interval, key_path};
use super::{shape, table_of, Report};
use crate::control_plane::config::raw::{RawDiscovery, RawDocker, RawSwarm};
use crate::control_plane::config::spec::{
    DiscoverySpec, DockerSpec, ManagerUrl, PoolName, ProjectFilter, SwarmSpec,
    DEFAULT_LABEL_PREFIX, DEFAULT_SWARM_POLL, MAX_WEIGHT, SWARM_POLL_BOUNDS,
};
use crate::control_plane::config::ConfigError;

/// Longest label prefix accepted (Docker label keys have no hard limit; this
/// keeps keys readable and log lines short).
const MAX_PREFIX_LEN: usize = 64;

/// Checks `[discovery]`; `None` when it has errors (already reported).
pub(super) fn check_discovery(value: toml::Value, report: &mut Report) -> Option<DiscoverySpec> {
    let table = table_of(value, "discovery", "[discovery.docker]", report)?;
    let raw = shape::<RawDiscovery>(table, "discovery", report)?;
    let docker = match raw.docker {
        None => Some(None),
        Some(docker) => check_docker(docker, report),
    };
    let swarm = match raw.swarm {
        None => Some(None),
        Some(swarm) => check_swarm(swarm, report),
    };
    let (docker, swarm) = (docker?, swarm?);
    if docker.is_some() && swarm.is_some() {
        report.add(
            "discovery.swarm",
            "[discovery.docker] and [discovery.swarm] are both on; a gateway follows either one engine's containers or a swarm's services: remove one (or set enabled = false)",
        );
        return None;
    }
    Some(DiscoverySpec { docker, swarm })
}

/// `Some(None)` when disabled, `None` on errors.
fn check_swarm(raw: RawSwarm, report: &mut Report) -> Option<Option<SwarmSpec>> {
    let path = "discovery.swarm";
    let label_prefix = check_prefix(raw.label_prefix.as_deref(), path, report);
    let network = check_network(raw.network.as_deref(), path, report);
    let poll_interval = check_poll_interval(
        raw.poll_interval.as_ref(),
        &key_path(path, "poll_interval"),
        (DEFAULT_SWARM_POLL, SWARM_POLL_BOUNDS),
        "the task list is read",
        "",
        report,
    );
    let mut managers = Some(Vec::new());
    for (i, text) in raw.managers.unwrap_or_default().iter().enumerate() {
        match manager_url(text) {
            Ok(url) => {
                if let Some(list) = managers.as_mut() {
                    list.push(url);
                }
            }
            Err(message) => {
                report.add(format!("{path}.managers[{i}]"), message);
                managers = None;
            }
        }
    }
    let token_env = match raw.token_env {
        Some(name) if name.is_empty() || name.contains(['=', '\0']) => {
            report.add(
                key_path(path, "token_env"),
                format!("{name:?} is not an environment variable name, e.g. \"SLUICEGATE_TOKEN\""),
            );
            None
        }
        other => Some(other),
    };
    let spec = SwarmSpec {
        label_prefix: Arc::from(label_prefix?),
        network: network?,
        poll_interval: poll_interval?,
        managers: managers?,
        token_env: token_env?,
        implied_pools: Vec::new(),
    };
    Some(raw.enabled.unwrap_or(true).then_some(spec))
}

/// `http://host:port` (a path of `/` at most): a gateway's admin API.
pub(super) fn manager_url(text: &str) -> Result<ManagerUrl, String> {
    let example = "e.g. \"http://tasks.gateway-manager:9901\"";
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL; write http://host:port, {example}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{text:?}: only http:// is supported (the admin API serves plain HTTP); {example}"
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "{text:?} has a path; write only http://host:port (the gateway adds /api/v1/...)"
        ));
    }
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return Err(format!(
            "{text:?} has no port; write http://host:port, {example}"
        ));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!(
            "{text:?} needs a host and a port 1-65535; {example}"
        ));
    }
    Ok(ManagerUrl {
        host: Arc::from(host),
        port,
    })
}

fn check_prefix<'a>(raw: Option<&'a str>, path: &str, report: &mut Report) -> Option<&'a str> {
    match raw {
        None => Some(DEFAULT_LABEL_PREFIX),
        Some(prefix) if prefix_ok(prefix) => Some(prefix),
        Some(prefix) => {
            report.add(
                key_path(path, "label_prefix"),
                format!(
                    "{prefix:?} is not a label prefix; use 1 to {MAX_PREFIX_LEN} lower-case letters, digits, '.' or '-', starting and ending with a letter or digit, e.g. \"sluicegate\""
                ),
            );
            None
        }
    }
}

fn check_network(raw: Option<&str>, path: &str, report: &mut Report) -> Option<Option<Arc<str>>> {
    match raw {
        None => Some(None),
        Some(name) if network_ok(name) => Some(Some(Arc::from(name))),
        Some(name) => {
            report.add(
                key_path(path, "network"),
                format!(
                    "{name:?} is not a Docker network name; use letters, digits, '_', '.' or '-', e.g. \"front\""
                ),
            );
            None
        }
    }
}

/// `Some(None)` when disabled, `None` on errors.
fn check_docker(raw: RawDocker, report: &mut Report) -> Option<Option<DockerSpec>> {
    let path = "discovery.docker";
    let label_prefix = check_prefix(raw.label_prefix.as_deref(), path, report);
    let network = check_network(raw.network.as_deref(), path, report);
    let projects = check_projects(raw.projects, &key_path(path, "projects"), report);
    let spec = DockerSpec {
        label_prefix: Arc::from(label_prefix?),
        network: network?,
        projects: projects?,
        implied_pools: Vec::new(),
    };
    Some(raw.enabled.unwrap_or(true).then_some(spec))
}

fn check_projects(
    raw: Option<Vec<String>>,
    path: &str,
    report: &mut Report,
) -> Option<ProjectFilter> {
    let Some(list) = raw else {
        return Some(ProjectFilter::Own);
    };
    if list.is_empty() {
        report.add(
            path,
            r#"projects is empty; remove it (the gateway's own compose project), or write ["*"] (all) or project names"#,
        );
        return None;
    }
    if list.iter().any(|p| p == "*") {
        if list.len() == 1 {
            return Some(ProjectFilter::Any);
        }
        report.add(
            path,
            r#""*" already means every project; write ["*"] alone or list project names"#,
        );
        return None;
    }
    let mut ok = true;
    for (i, name) in list.iter().enumerate() {
        if !project_ok(name) {
            report.add(
                format!("{path}[{i}]"),
                format!(
                    "{name:?} is not a compose project name; use lower-case letters, digits, '_' or '-'"
                ),
            );
            ok = false;
        }
    }
    ok.then_some(ProjectFilter::Only(list))
}

/// Lower-case alphanumerics with inner `.`/`-` (Docker's label key advice).
fn prefix_ok(prefix: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    prefix.len() <= MAX_PREFIX_LEN
        && edge(prefix.chars().next())
        && edge(prefix.chars().last())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
}

/// Docker's network name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn network_ok(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Compose normalises project names to `[a-z0-9_-]`.
fn project_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// The split and mirror pools of `routes` that `defined` lacks, in first-use
/// order, when their names are valid (an invalid one is left for the route check
/// to report).
pub(super) fn implied_pools(routes: &[Option<toml::Table>], defined: &[&str]) -> Vec<PoolName> {
    let mut implied: Vec<PoolName> = Vec::new();
    let split_pools = routes.iter().flatten().flat_map(|route| {
        let split = route
            .get("split")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.get("pool")?.as_str());
        let mirror = route.get("mirror").and_then(|m| m.get("pool")?.as_str());
        split.chain(mirror)
    });
    for name in split_pools {
        let known = defined.contains(&name) || implied.iter().any(|p| p.as_str() == name);
        if !known && check_name(name, "", "pool", &mut Report::default()) {
            implied.push(PoolName(Arc::from(name)));
        }
    }
    implied
}

/// Checks a pool name given outside the file (a Docker label); `path` names
/// where it came from, e.g. the label key.
pub fn pool_name(name: &str, path: &str) -> Result<PoolName, ConfigError> {
    let mut report = Report::default();
    if check_name(name, path, "pool", &mut report) {
        Ok(PoolName(Arc::from(name)))
    } else {
        Err(first(report, path))
    }
}

/// Checks a route name given outside the file (a Docker label).
pub fn route_name(name: &str, path: &str) -> Result<Arc<str>, ConfigError> {
    let mut report = Report::default();
    if check_name(name, path, "route", &mut report) {
        Ok(Arc::from(name))
    } else {
        Err(first(report, path))
    }
}

/// Checks a backend weight written as text (a Docker label): 1 ..= `MAX_WEIGHT`.
pub fn weight(text: &str, path: &str) -> Result<u32, ConfigError> {
    match text.trim().parse::<u32>() {
        Ok(w) if (1..=MAX_WEIGHT).contains(&w) => Ok(w),
        _ => Err(ConfigError {
            path: path.to_owned(),
            message: format!(
                "weight must be a whole number between 1 and {MAX_WEIGHT}, got {text:?}"
            ),
        }),
    }
}

fn first(report: Report, path: &str) -> ConfigError {
    report
        .errors
        .into_iter()
        .next()
        .unwrap_or_else(|| ConfigError {
            path: path.to_owned(),
            message: "invalid".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::config::tests::{assert_one, with_pools, LISTEN};

    fn docker_of(text: &str) -> Option<DockerSpec> {
        crate::control_plane::config::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .discovery
            .docker
    }

    #[test]
    fn docker_defaults_and_values() {
        let d = docker_of(&format!("{LISTEN}[discovery.docker]\n")).expect("on");
        assert_eq!(&*d.label_prefix, "sluicegate");
        assert_eq!(d.network, None);
        assert_eq!(d.projects, ProjectFilter::Own);
        let text = format!(
            "{LISTEN}[discovery.docker]\nlabel_prefix = \"gw\"\nnetwork = \"front\"\nprojects = [\"*\"]\n"
        );
        let d = docker_of(&text).expect("on");
        assert_eq!(
            (&*d.label_prefix, d.network.as_deref()),
            ("gw", Some("front"))
        );
        assert_eq!(d.projects, ProjectFilter::Any);
        let text = format!("{LISTEN}[discovery.docker]\nprojects = [\"shop\", \"ops\"]\n");
        let only = ProjectFilter::Only(vec!["shop".into(), "ops".into()]);
        assert_eq!(docker_of(&text).expect("on").projects, only);
        assert_eq!(
            docker_of(&format!("{LISTEN}[discovery.docker]\nenabled = false\n")),
            None
        );
        assert_eq!(docker_of(LISTEN), None);
    }

    #[test]
    fn docker_errors_name_their_key() {
        let at = |extra: &str| format!("{LISTEN}[discovery.docker]\n{extra}\n");
        assert_one(
            &at("label_prefix = \"Bad_\""),
            "discovery.docker.label_prefix",
            "not a label prefix",
        );
        assert_one(
            &at("network = \"a b\""),
            "discovery.docker.network",
            "not a Docker network name",
        );
        assert_one(
            &at("projects = []"),
            "discovery.docker.projects",
            "projects is empty",
        );
        assert_one(
            &at("projects = [\"*\", \"x\"]"),
            "discovery.docker.projects",
            "alone",
        );
        assert_one(
            &at("projects = [\"ok\", \"No\"]"),
            "discovery.docker.projects[1]",
            "not a compose project",
        );
        assert_one(
            &at("labels = 1"),
            "discovery.docker.labels",
            "unknown key `labels`",
        );
        assert_one(
            &format!("{LISTEN}[discovery]\nconsul = 1\n"),
            "discovery.consul",
            "unknown key",
        );
    }

    #[test]
    fn split_pools_missing_from_the_file_are_implied_only_with_docker() {
        let route = "[[routes]]\nname = \"r\"\nsplit = [{ pool = \"agent-blue\", weight = 1 }, { pool = \"from-labels\", weight = 1 }]\n";
        assert_one(
            &with_pools(route),
            "routes[0].split[1].pool",
            "no pool named \"from-labels\"",
        );
        let spec = crate::control_plane::config::parse(&with_pools(&format!(
            "[discovery.docker]\n{route}"
        )))
        .unwrap();
        let implied = &spec.discovery.docker.as_ref().expect("on").implied_pools;
        assert_eq!(implied, &[PoolName("from-labels".into())]);
        let pool = spec
            .pools
            .iter()
            .find(|p| p.name.as_str() == "from-labels")
            .expect("pool");
        assert!(pool.backends.is_empty());
    }

    fn swarm_of(text: &str) -> Option<SwarmSpec> {
        crate::control_plane::config::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .discovery
            .swarm
    }

    #[test]
    fn swarm_defaults_and_values() {
        let s = swarm_of(&format!("{LISTEN}[discovery.swarm]\n")).expect("on");
        assert_eq!(&*s.label_prefix, "sluicegate");
        assert_eq!(s.network, None);
        assert_eq!(s.poll_interval, DEFAULT_SWARM_POLL);
        assert!(s.managers.is_empty() && s.token_env.is_none());
        let text = format!(
            "{LISTEN}[discovery.swarm]\nnetwork = \"front\"\npoll_interval = \"500ms\"\nlabel_prefix = \"gw\"\nmanagers = [\"http://tasks.gw-manager:9901\", \"http://[::1]:9901/\"]\ntoken_env = \"GW_TOKEN\"\n"
        );
        let s = swarm_of(&text).expect("on");
        assert_eq!(
            (&*s.label_prefix, s.network.as_deref()),
            ("gw", Some("front"))
        );
        assert_eq!(s.poll_interval, std::time::Duration::from_millis(500));
        let urls: Vec<String> = s.managers.iter().map(ToString::to_string).collect();
        assert_eq!(urls, ["http://tasks.gw-manager:9901", "http://[::1]:9901"]);
        assert_eq!(s.token_env.as_deref(), Some("GW_TOKEN"));
        assert_eq!(
            swarm_of(&format!("{LISTEN}[discovery.swarm]\nenabled = false\n")),
            None
        );
        let route = "[[routes]]\nname = \"r\"\nsplit = [{ pool = \"agent-blue\", weight = 1 }, { pool = \"green\", weight = 1 }]\n";
        let spec = crate::control_plane::config::parse(&with_pools(&format!(
            "[discovery.swarm]\n{route}"
        )))
        .unwrap();
        assert_eq!(spec.discovery.implied_pools(), &[PoolName("green".into())]);
    }

    #[test]
    fn swarm_errors_name_their_key() {
        let at = |extra: &str| format!("{LISTEN}[discovery.swarm]\n{extra}\n");
        assert_one(
            &at("poll_interval = \"10ms\""),
            "discovery.swarm.poll_interval",
            "out of range",
        );
        assert_one(
            &at("poll_interval = \"2h\""),
            "discovery.swarm.poll_interval",
            "out of range",
        );
        assert_one(
            &at("poll_interval = \"soon\""),
            "discovery.swarm.poll_interval",
            "not a duration",
        );
        assert_one(
            &at("managers = [\"http://a:1\", \"https://b:9901\"]"),
            "discovery.swarm.managers[1]",
            "only http://",
        );
        assert_one(
            &at("managers = [\"http://b\"]"),
            "discovery.swarm.managers[0]",
            "has no port",
        );
        assert_one(
            &at("managers = [\"http://b:9901/api\"]"),
            "discovery.swarm.managers[0]",
            "has a path",
        );
        assert_one(
            &at("network = \"a b\""),
            "discovery.swarm.network",
            "not a Docker network name",
        );
        assert_one(
            &at("vip = true"),
            "discovery.swarm.vip",
            "unknown key `vip`",
        );
        assert_one(
            &format!("{LISTEN}[discovery.docker]\n[discovery.swarm]\n"),
            "discovery.swarm",
            "both on",
        );
    }

    #[test]
    fn prefix_rules() {
        assert!(prefix_ok("sluicegate"));
        assert!(prefix_ok("com.example.gw-1"));
        for bad in ["", "Sluice", ".x", "x.", "a b", "x_y"] {
            assert!(!prefix_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn label_values_use_file_rules() {
        assert_eq!(pool_name("agent-blue", "l").unwrap().as_str(), "agent-blue");
        let e = pool_name("a b", "sluicegate.pool").unwrap_err();
        assert_eq!(e.path, "sluicegate.pool");
        assert!(e.message.contains("contains ' '"), "{e}");
        assert_eq!(weight("3", "w").unwrap(), 3);
        for bad in ["0", "-1", "x", "1.5", "1000001"] {
            assert!(weight(bad, "sluicegate.weight").is_err(), "{bad:?}");
        }
    }
}
