//! Whole-file tests: syntax errors, error collection and file order, full valid
//! files, the example config, `load`. Error kinds are tested beside the checks
//! (`validate/tests.rs`, `validate/route/tests.rs`) with the helpers below.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::*;

pub(crate) const LISTEN: &str = "[listen]\nhttp = \"127.0.0.1:8080\"\n";

pub(crate) const POOLS: &str = r#"
[[pools]]
name = "agent-blue"
backends = [{ addr = "127.0.0.1:9001" }]

[[pools]]
name = "agent-green"
backends = [{ addr = "127.0.0.1:9011" }]
"#;

pub(crate) const ROUTE: &str = r#"
[[routes]]
name = "agents"
split = [{ pool = "agent-blue", weight = 100 }]
"#;

/// All errors of a file that must be invalid.
pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(spec) => panic!("expected errors, got {spec:#?}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

/// Asserts the file has exactly one error, at `path`, mentioning `fragment`.
#[track_caller]
pub(crate) fn assert_one(text: &str, path: &str, fragment: &str) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    assert_eq!(errors[0].path, path, "{errors:#?}");
    assert!(
        errors[0].message.contains(fragment),
        "message {:?} lacks {fragment:?}",
        errors[0].message
    );
}

/// A file with valid listen and pools plus `extra` (pools or routes).
pub(crate) fn with_pools(extra: &str) -> String {
    format!("{LISTEN}{POOLS}{extra}")
}

/// A file whose only route has `body` after its name.
pub(crate) fn with_route(body: &str) -> String {
    with_pools(&format!("\n[[routes]]\nname = \"agents\"\n{body}\n"))
}

/// A file with one pool `p` whose body is `body`, and no routes.
pub(crate) fn with_pool(body: &str) -> String {
    format!("{LISTEN}\n[[pools]]\nname = \"p\"\n{body}\n")
}

#[test]
fn syntax_error_has_empty_path_and_line() {
    let errors = errors("[listen]\nhttp = \n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "");
    assert!(
        errors[0].message.contains("line 2"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[0].to_string(), errors[0].message);
}

#[test]
fn reports_all_errors_in_file_order() {
    let text = r#"
[listen]
http = "localhost:8080"

[[pools]]
name = "agent-blue"
backends = [{ addr = "127.0.0.1:9001", weight = "x" }]

[[pools]]
name = "agent-green"
balance = "hash"

[admin]
listen = "127.0.0.1:9901"
token_env = "1BAD"

[[routes]]
name = "agents"
split = [{ pool = "agent-gren", weight = 1 }]
retries = 99
"#;
    let errors = errors(text);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listen.http",
            "pools[0].backends[0].weight",
            "pools[1].hash_key",
            "admin.token_env",
            "routes[0].split[0].pool",
            "routes[0].retries",
        ]
    );
    let shown = ConfigErrors(errors).to_string();
    assert_eq!(shown.lines().count(), 6);
    assert!(shown.starts_with("listen.http: \"localhost:8080\" names a host"));
}

#[test]
fn file_order_follows_the_text_not_the_section_kind() {
    let text = format!(
        "{LISTEN}[[routes]]\nname = \"r\"\nsplit = []\n[[pools]]\nname = \"p q\"\n[[routes]]\nname = \"s\"\nsplit = []\n"
    );
    let paths: Vec<String> = errors(&text).into_iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        ["routes[0].split", "pools[0].name", "routes[1].split"]
    );
}

#[test]
fn full_valid_file_builds_spec() {
    let text = r#"
[listen]
http = "0.0.0.0:8080"

[[pools]]
name = "agent-blue"
balance = "least_conn"
backends = [{ addr = "127.0.0.1:9001", weight = 1 },
            { addr = "127.0.0.1:9009", backup = true }]

[[pools]]
name = "agent-green"
balance = "hash"
hash_key = "header:X-Session-Id"
backends = [{ addr = "[::1]:9011", weight = 5 }]

[[pools]]
name = "empty"

[[routes]]
name = "agents"
match = { host = "agents.local", path_prefix = "/", headers = { "X-Canary" = "always" } }
split = [{ pool = "agent-blue", weight = 100 }, { pool = "agent-green", weight = 0 }]

[[routes]]
name = "wild"
match = { host = "*.Agents.Local", path_prefix = "/api", method = ["get", "HEAD"] }
split = [{ pool = "agent-green", weight = 1 }]
sticky = { cookie = "sg_pool" }
retries = 2
timeouts = { connect = "1s", idle = "90s" }
"#;
    let spec = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.listen.http, "0.0.0.0:8080".parse().expect("literal"));
    assert_eq!(spec.listen.max_connections, None);
    assert_eq!(spec.listen.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);

    let [blue, green, empty] = &spec.pools[..] else {
        panic!("{:?}", spec.pools)
    };
    assert_eq!(blue.name.as_str(), "agent-blue");
    assert_eq!(blue.balance, Balance::LeastConn);
    assert_eq!(
        blue.backends[1],
        BackendSpec {
            addr: "127.0.0.1:9009".parse().expect("literal"),
            weight: 1,
            backup: true,
            draining: false,
            source: Source::File,
            container: None,
        }
    );
    assert_eq!(
        green.balance,
        Balance::Hash(HashKey::Header(HeaderName::from_static("x-session-id")))
    );
    assert_eq!(green.backends[0].weight, 5);
    assert_eq!(empty.balance, Balance::RoundRobin);
    assert!(empty.backends.is_empty());

    let [agents, wild] = &spec.routes[..] else {
        panic!("{:?}", spec.routes)
    };
    assert_eq!(agents.matcher.host, HostMatch::Exact("agents.local".into()));
    assert_eq!(
        agents.matcher.headers,
        [(
            HeaderName::from_static("x-canary"),
            HeaderValue::from_static("always")
        )]
    );
    assert!(agents.matcher.methods.is_empty());
    assert_eq!(
        agents.split[1],
        SplitSpec {
            pool: PoolName("agent-green".into()),
            weight: 0
        }
    );
    assert_eq!(agents.sticky, None);
    assert_eq!(agents.retries, 0);
    assert_eq!(agents.timeouts, Timeouts::default());

    assert_eq!(
        wild.matcher.host,
        HostMatch::Wildcard(".agents.local".into())
    );
    assert_eq!(wild.matcher.path_prefix, "/api");
    assert_eq!(wild.matcher.methods, [Method::GET, Method::HEAD]);
    assert_eq!(
        wild.sticky,
        Some(StickySpec {
            cookie: Some("sg_pool".into()),
            learn: None,
        })
    );
    assert_eq!(wild.retries, 2);
    let defaults = Timeouts::default();
    assert_eq!(
        wild.timeouts,
        Timeouts {
            connect: Duration::from_secs(1),
            idle: Duration::from_secs(90),
            ..defaults
        }
    );
}

#[test]
fn star_host_and_no_match_mean_any() {
    let spec = parse(&with_route(
        "match = { host = \"*\" }\nsplit = [{ pool = \"agent-blue\", weight = 1 }]",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.routes[0].matcher.host, HostMatch::Any);
    let spec = parse(&with_pools(ROUTE)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.routes[0].matcher.path_prefix, "/");
    assert_eq!(spec.routes[0].matcher.host, HostMatch::Any);
}

#[test]
fn example_config_is_valid() {
    let spec = parse(include_str!("../../../config/routes.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(spec.metrics_enabled());
    let pools: Vec<&str> = spec.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pools, ["agent-blue", "agent-green"]);
    let [canary, agents] = &spec.routes[..] else {
        panic!("{:?}", spec.routes)
    };
    assert_eq!(canary.matcher.headers[0].0, "x-canary");
    assert_eq!(
        canary.split,
        [SplitSpec {
            pool: PoolName("agent-green".into()),
            weight: 100
        }]
    );
    let weights: Vec<u32> = agents.split.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [90, 10]);
    assert_eq!(agents.retries, 2);
    assert!(agents.sticky.is_some());
    let blue = &spec.pools[0].health;
    assert_eq!(blue.probe.as_ref().map(|p| (p.rise, p.fall)), Some((2, 3)));
    assert_eq!(blue.outlier.map(|o| o.max_ejected_percent), Some(50));
    assert_eq!(blue.slow_start, Some(Duration::from_secs(30)));
    assert_eq!(spec.pools[1].health, PoolHealthSpec::default());
    let admin = spec.admin.expect("[admin]");
    assert_eq!(admin.listen, "127.0.0.1:9901".parse().expect("literal"));
    assert_eq!(admin.token_env, None);
    assert_eq!(spec.log, LogSpec::default());
}

#[test]
fn example_config_commented_options_are_valid() {
    let text = include_str!("../../../config/routes.toml")
        .replace("# stream_close_delay = ", "stream_close_delay = ")
        .replace("# token_env = ", "token_env = ")
        .replace("# state_file = ", "state_file = ")
        .replace("access = \"off\"", "access = \"stdout\"")
        .replace("# format = ", "format = ");
    let spec = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        spec.log,
        LogSpec {
            access: AccessLog::Stdout,
            format: LogFormat::Json
        }
    );
    assert_eq!(spec.listen.stream_close_delay, Duration::from_secs(300));
    let admin = spec.admin.expect("[admin]");
    assert_eq!(admin.token_env.as_deref(), Some("SLUICEGATE_ADMIN_TOKEN"));
    assert_eq!(
        admin.state_file.as_deref(),
        Some(std::path::Path::new("/var/lib/sluicegate/state.json"))
    );
}

#[test]
fn example_config_learned_sessions_are_valid() {
    let text: String = include_str!("../../../config/routes.toml")
        .lines()
        .filter(|l| !l.starts_with("sticky = "))
        .map(|l| {
            l.strip_prefix("# sticky = ")
                .map_or(l.to_owned(), |rest| format!("sticky = {rest}"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let spec = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let sticky = spec.routes[1].sticky.clone().expect("sticky");
    assert_eq!(sticky.cookie.as_deref(), Some("sg_pool"));
    let learn = sticky.learn.expect("learn_header");
    assert_eq!(
        (learn.header.as_str(), learn.idle, learn.max_sessions),
        ("mcp-session-id", Duration::from_secs(1800), 100_000)
    );
}

#[test]
fn raw_config_mirrors_example_file() {
    let raw: raw::RawConfig = toml::from_str(include_str!("../../../config/routes.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(raw.pools.len(), 2);
    assert_eq!(raw.routes.len(), 2);
}

#[test]
fn load_missing_file_names_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.toml");
    let err = load(&path).expect_err("missing file");
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}: ", path.display())),
        "{err}"
    );
}

#[test]
fn load_reads_valid_and_reports_invalid_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("routes.toml");
    std::fs::write(&good, with_pools(ROUTE)).expect("write");
    assert_eq!(load(&good).expect("valid").routes.len(), 1);

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, with_route("split = []")).expect("write");
    let err = load(&bad).expect_err("invalid");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "{} is invalid:\nroutes[0].split: split is empty",
            bad.display()
        )),
        "{shown}"
    );
}
