#!/usr/bin/env bash
# sluicegate as the candidate of ../shared/bench/compare-proxies.sh.
#
# Writes a routes.toml from BENCH_LISTEN / BENCH_UPSTREAMS (set by the script) and
# execs the benchmark build (target/bench-release: `[profile.bench-release]`, fat LTO,
# one codegen unit). The default config profile is what a real deployment runs
# (issue 7: "every feature on"): two routes (a header rule for testers and a
# catch-all), a 90/10 split over two pools (a cutover in progress; both pools hold
# both upstreams, so the upstreams still see an even share), least_conn, active
# health probes every second, passive outlier detection, retries, and metrics on.
# Build first:  cargo build --profile bench-release
# Run:          ../shared/bench/compare-proxies.sh --candidate benches/proxy/candidate.sh \
#                   --candidate-port 8080 --candidate-name sluicegate
# TOKIO_WORKER_THREADS (set to 1 by the script) is the worker count; --workers overrides.
#
# BENCH_PROFILE=full|minimal   full (default): as above; minimal: one route, one pool,
#                               no probes, no outlier detection (the bare proxy path)
# BENCH_BALANCE=NAME            the pools' balance (full: least_conn, minimal: round_robin)
#
# Observability switches (to measure their cost, run once with each setting):
#   BENCH_METRICS=on|off        on (default): an [admin] listener on 127.0.0.1:0, so
#                               metrics are recorded as in production; off: no [admin],
#                               no metrics (every handle a no-op)
#   BENCH_ACCESS_LOG=off|stdout off (default, like the nginx/haproxy configs); stdout:
#                               one line per request to the script's log file
#   BENCH_LOG_FORMAT=json|text  format of those lines (default json)
# e.g. --candidate 'env BENCH_METRICS=off benches/proxy/candidate.sh'
#
# Limit switches (docs/limits.md; to measure what a limit costs when it never binds):
#   BENCH_RATE_LIMIT=off|on     on: every route gets rate_limit = { rate = 1000000,
#                               burst = 1000000, key = "client_ip" } (one bucket lookup
#                               and one compare-and-swap per request, never a 429)
#   BENCH_CONCURRENCY=off|on    on: every route gets concurrency = { max_in_flight = 1000000 }
#                               (one compare-and-swap in, one atomic sub out)
#   BENCH_BREAKER=off|on        on: every pool gets circuit_breaker = { max_connections = 1000000 }
#                               (the same per backend, per attempt)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
listen=${BENCH_LISTEN:-127.0.0.1:8080}
upstreams=${BENCH_UPSTREAMS:-127.0.0.1:9001,127.0.0.1:9002}
profile=${BENCH_PROFILE:-full}
case $profile in
    full) balance=${BENCH_BALANCE:-least_conn} ;;
    minimal) balance=${BENCH_BALANCE:-round_robin} ;;
    *) echo "BENCH_PROFILE must be full or minimal, not '$profile'" >&2; exit 2 ;;
esac
metrics=${BENCH_METRICS:-on}
access_log=${BENCH_ACCESS_LOG:-off}
log_format=${BENCH_LOG_FORMAT:-json}
route_limits=""
pool_limits=""
case ${BENCH_BREAKER:-off} in
    on) pool_limits=$'circuit_breaker = { max_connections = 1000000 }\n' ;;
    off) ;;
    *) echo "BENCH_BREAKER must be on or off, not '$BENCH_BREAKER'" >&2; exit 2 ;;
esac
case ${BENCH_RATE_LIMIT:-off} in
    on) route_limits+=$'rate_limit = { rate = 1000000, burst = 1000000, key = "client_ip" }\n' ;;
    off) ;;
    *) echo "BENCH_RATE_LIMIT must be on or off, not '$BENCH_RATE_LIMIT'" >&2; exit 2 ;;
esac
case ${BENCH_CONCURRENCY:-off} in
    on) route_limits+=$'concurrency = { max_in_flight = 1000000 }\n' ;;
    off) ;;
    *) echo "BENCH_CONCURRENCY must be on or off, not '$BENCH_CONCURRENCY'" >&2; exit 2 ;;
esac

dir=$(mktemp -d /tmp/sluicegate-bench.XXXXXX)
cfg="$dir/routes.toml"
backends=""
IFS=, read -ra ups <<< "$upstreams"
for u in "${ups[@]}"; do
    backends+="${backends:+, }{ addr = \"$u\" }"
done
case $metrics in
    on) admin=$'[admin]\nlisten = "127.0.0.1:0"' ;;
    off) admin="" ;;
    *) echo "BENCH_METRICS must be on or off, not '$metrics'" >&2; exit 2 ;;
esac
{
    cat <<TOML
[listen]
http = "$listen"

$admin

[log]
access = "$access_log"
format = "$log_format"
TOML
    if [[ $profile == minimal ]]; then
        cat <<TOML

[[pools]]
name = "bench"
balance = "$balance"
backends = [$backends]
$pool_limits
[[routes]]
name = "all"
split = [{ pool = "bench", weight = 1 }]
$route_limits
TOML
    else
        for pool in blue green; do
            cat <<TOML

[[pools]]
name = "$pool"
balance = "$balance"
backends = [$backends]
$pool_limits
[pools.health]
path = "/"
interval = "1s"
timeout = "500ms"
initial = "healthy"

[pools.outlier]
consecutive_failures = 5
TOML
        done
        cat <<TOML

[[routes]]
name = "testers"
match = { path_prefix = "/", headers = { "x-canary" = "always" } }
split = [{ pool = "green", weight = 1 }]
$route_limits

[[routes]]
name = "all"
match = { path_prefix = "/" }
split = [{ pool = "blue", weight = 90 }, { pool = "green", weight = 10 }]
retries = 2
$route_limits
TOML
    fi
} > "$cfg"
export RUST_LOG=${RUST_LOG:-warn}
exec "${SLUICEGATE_BIN:-$root/target/bench-release/sluicegate}" run -c "$cfg"
