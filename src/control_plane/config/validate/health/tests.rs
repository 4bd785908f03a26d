//! Health keys of `[[pools]]`: defaults, conversions, and every error kind with its
//! key path.

use std::time::Duration;

use crate::control_plane::config::spec::{
    HoldSpec, InitialHealth, OutlierSpec, ProbeSpec, StatusRange,
};
use crate::control_plane::config::tests::{assert_one, errors, with_pool};
use crate::control_plane::config::{parse, PoolHealthSpec};

const BACKEND: &str = "backends = [{ addr = \"127.0.0.1:9001\" }]\n";

/// The health spec of pool `p` with `body` after its backends.
fn health_of(body: &str) -> PoolHealthSpec {
    let spec = parse(&with_pool(&format!("{BACKEND}{body}"))).unwrap_or_else(|e| panic!("{e}"));
    spec.pools[0].health.clone()
}

#[test]
fn no_health_keys_mean_the_defaults() {
    assert_eq!(health_of(""), PoolHealthSpec::default());
}

#[test]
fn empty_tables_take_documented_defaults() {
    let h = health_of("hold = {}\n[pools.health]\n[pools.outlier]\n");
    let probe = h.probe.expect("probe");
    assert_eq!(probe.path.as_str(), "/health");
    assert_eq!(probe.interval, ProbeSpec::DEFAULT_INTERVAL);
    assert_eq!(probe.timeout, Duration::from_secs(1));
    assert_eq!((probe.rise, probe.fall), (2, 3));
    assert_eq!(probe.start_period, Duration::ZERO);
    assert_eq!(probe.expect_status, StatusRange { lo: 200, hi: 399 });
    assert_eq!(probe.initial, InitialHealth::Unknown);
    let outlier = h.outlier.expect("outlier");
    assert_eq!(outlier.consecutive_failures, 5);
    assert!(outlier.count_5xx);
    assert_eq!(outlier.base_ejection, OutlierSpec::DEFAULT_BASE_EJECTION);
    assert_eq!(outlier.max_ejection, Duration::from_secs(300));
    assert_eq!(outlier.max_ejected_percent, 50);
    assert_eq!(
        h.hold,
        Some(HoldSpec {
            timeout: Duration::from_secs(2),
            max_queued: 1000
        })
    );
    assert_eq!((h.slow_start, h.panic_threshold), (None, None));
}

#[test]
fn every_key_is_converted() {
    let h = health_of(
        r#"slow_start = "30s"
panic_threshold = 40
hold = { timeout = "500ms", max_queued = 10 }
[pools.health]
path = "/ready?deep=1"
host = "agents.local"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 4
start_period = "10s"
expect_status = 204
initial = "healthy"
[pools.outlier]
consecutive_failures = 2
count_5xx = false
base_ejection = "1s"
max_ejection = "8s"
max_ejected_percent = 100
"#,
    );
    let probe = h.probe.expect("probe");
    assert_eq!(probe.path.as_str(), "/ready?deep=1");
    assert_eq!(
        probe.host.as_ref().map(|h| h.as_bytes()),
        Some(&b"agents.local"[..])
    );
    assert_eq!(probe.timeout, Duration::from_millis(150));
    assert_eq!(probe.expect_status, StatusRange { lo: 204, hi: 204 });
    assert_eq!(probe.initial, InitialHealth::Healthy);
    assert_eq!(probe.start_period, Duration::from_secs(10));
    let o = h.outlier.expect("outlier");
    assert_eq!(
        (o.consecutive_failures, o.count_5xx, o.max_ejected_percent),
        (2, false, 100)
    );
    assert_eq!(h.slow_start, Some(Duration::from_secs(30)));
    assert_eq!(h.panic_threshold, Some(40));
    assert_eq!(h.hold.map(|h| h.max_queued), Some(10));
    // A short interval shortens the default timeout; 0 % panic means off.
    let h = health_of("panic_threshold = 0\n[pools.health]\ninterval = \"300ms\"\n");
    assert_eq!(h.probe.expect("probe").timeout, Duration::from_millis(150));
    assert_eq!(h.panic_threshold, None);
}

#[test]
fn all_bad_values_are_reported_with_paths() {
    let text = with_pool(&format!(
        r#"{BACKEND}slow_start = "0s"
panic_threshold = 150
hold = {{ timeout = "soon", max_queued = 0 }}
[pools.health]
path = "health"
host = "bad host"
interval = "1s"
timeout = "1s"
rise = 0
fall = 101
expect_status = "399-200"
[pools.outlier]
consecutive_failures = 0
base_ejection = "30s"
max_ejection = "10s"
max_ejected_percent = 101
"#
    ));
    let errors = errors(&text);
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    let expected = [
        ("pools[0].health.path", "starting with '/'"),
        ("pools[0].health.host", "not a valid Host header"),
        (
            "pools[0].health.timeout",
            "timeout (1s) must be shorter than interval (1s)",
        ),
        ("pools[0].health.rise", "between 1 and 100, got 0"),
        ("pools[0].health.fall", "between 1 and 100, got 101"),
        ("pools[0].health.expect_status", "not a status range"),
        (
            "pools[0].outlier.consecutive_failures",
            "between 1 and 1000, got 0",
        ),
        (
            "pools[0].outlier.max_ejection",
            "must be at least base_ejection (30s)",
        ),
        (
            "pools[0].outlier.max_ejected_percent",
            "between 0 and 100, got 101",
        ),
        ("pools[0].slow_start", "greater than 0"),
        ("pools[0].panic_threshold", "between 0 and 100, got 150"),
        ("pools[0].hold.timeout", "is not a duration"),
        ("pools[0].hold.max_queued", "between 1 and 1000000, got 0"),
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((path, message), (want_path, fragment)) in got.iter().zip(expected) {
        assert_eq!(*path, want_path, "{got:#?}");
        assert!(
            message.contains(fragment),
            "{path}: {message:?} lacks {fragment:?}"
        );
    }
}

#[test]
fn shape_errors_in_health_tables_have_full_paths() {
    assert_one(
        &with_pool(&format!("{BACKEND}[pools.health]\nintervall = \"1s\"\n")),
        "pools[0].health.intervall",
        "unknown key `intervall`; accepted keys: path, host, interval, timeout, rise, fall, start_period, expect_status, initial, grpc, grpc_service",
    );
    assert_one(
        &with_pool(&format!("{BACKEND}[pools.health]\ninitial = \"maybe\"\n")),
        "pools[0].health.initial",
        "use one of: unknown, healthy, unhealthy",
    );
    assert_one(
        &with_pool(&format!("{BACKEND}[pools.outlier]\ncount_5xx = \"yes\"\n")),
        "pools[0].outlier.count_5xx",
        "expected a boolean, found string",
    );
    assert_one(
        &with_pool(&format!(
            "{BACKEND}hold = {{ timeout = \"1s\", queue = 5 }}\n"
        )),
        "pools[0].hold.queue",
        "accepted keys: timeout, max_queued",
    );
}

#[test]
fn a_grpc_health_check_on_an_h2c_pool_asks_its_service() {
    let h = health_of(
        "protocol = \"h2c\"\n[pools.health]\ngrpc = true\ngrpc_service = \"model.Generator\"\n",
    );
    let probe = h.probe.expect("probe");
    let grpc = probe.grpc.as_ref().expect("grpc check");
    assert_eq!(grpc.service, "model.Generator");
    let whole = health_of("protocol = \"h2c\"\n[pools.health]\ngrpc = true\n");
    let whole = whole.probe.expect("probe");
    assert_eq!(whole.grpc.as_ref().expect("grpc").service, "");
    let http = health_of("protocol = \"h2c\"\n[pools.health]\ngrpc = false\n");
    assert_eq!(http.probe.expect("probe").grpc, None);
}

#[test]
fn grpc_health_key_errors_name_their_key() {
    let pool = |body: &str| with_pool(&format!("{BACKEND}{body}"));
    assert_one(
        &pool("[pools.health]\ngrpc = true\n"),
        "pools[0].health.grpc",
        "protocol = \"h2c\"",
    );
    assert_one(
        &pool("protocol = \"h2c\"\n[pools.health]\ngrpc_service = \"x\"\n"),
        "pools[0].health.grpc_service",
        "add grpc = true",
    );
    assert_one(
        &pool("protocol = \"h2c\"\n[pools.health]\ngrpc = true\npath = \"/healthz\"\n"),
        "pools[0].health.path",
        "not used by a gRPC health check",
    );
    assert_one(
        &pool("protocol = \"h2c\"\n[pools.health]\ngrpc = true\nexpect_status = 204\n"),
        "pools[0].health.expect_status",
        "not used by a gRPC health check",
    );
    assert_one(
        &pool("protocol = \"h2c\"\n[pools.health]\ngrpc = true\ngrpc_service = \"a\\nb\"\n"),
        "pools[0].health.grpc_service",
        "not a service name",
    );
}
