#!/usr/bin/env bash
# sluicegate as the candidate of ../shared/bench/compare-proxies.sh.
#
# Writes a routes.toml from BENCH_LISTEN / BENCH_UPSTREAMS (set by the script):
# one route, one round_robin pool over the upstreams, and execs the release binary.
# Build first:  cargo build --release
# Run:          ../shared/bench/compare-proxies.sh --candidate benches/proxy/candidate.sh \
#                   --candidate-port 8080 --candidate-name sluicegate
# TOKIO_WORKER_THREADS (set to 1 by the script) is the worker count; --workers overrides.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
listen=${BENCH_LISTEN:-127.0.0.1:8080}
upstreams=${BENCH_UPSTREAMS:-127.0.0.1:9001,127.0.0.1:9002}
balance=${BENCH_BALANCE:-round_robin}

dir=$(mktemp -d /tmp/sluicegate-bench.XXXXXX)
cfg="$dir/routes.toml"
backends=""
IFS=, read -ra ups <<< "$upstreams"
for u in "${ups[@]}"; do
    backends+="${backends:+, }{ addr = \"$u\" }"
done
cat > "$cfg" <<TOML
[listen]
http = "$listen"

[[pools]]
name = "bench"
balance = "$balance"
backends = [$backends]

[[routes]]
name = "all"
split = [{ pool = "bench", weight = 1 }]
TOML
export RUST_LOG=${RUST_LOG:-warn}
exec "${SLUICEGATE_BIN:-$root/target/release/sluicegate}" run -c "$cfg"
