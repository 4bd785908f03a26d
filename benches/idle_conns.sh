#!/usr/bin/env bash
# Memory cost of idle keep-alive client connections (target: 10 000 for ≤ 100 MiB).
#
# Builds the benchmark-profile (`bench-release`: fat LTO) gateway and the examples/idle_conns.rs client, raises the open-file
# limit, and runs the client, which starts the gateway as its own child, opens N client
# connections with one request each, reads the gateway's VmRSS before and after, and
# kills the gateway again. Bounded by `timeout`; it kills nothing it did not start.
#
#   benches/idle_conns.sh [N] [client flags]   N = 10000 by default
#   IDLE_SETTLE_SECS=5 benches/idle_conns.sh 10000
#   benches/idle_conns.sh 10000 --no-request   connections that never send a request
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
conns=${1:-10000}
shift || true
settle=${IDLE_SETTLE_SECS:-2}

# The gateway holds one fd per client connection, the client one per connection too.
want=$((conns + 1024))
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt $want ]]; then
    echo "ulimit -Hn is $hard; $conns connections need about $want open files" >&2
    exit 2
fi
ulimit -n "$want"

# Two builds: an example brings in the dev-dependencies' features (tokio's test-util,
# whose clock takes a lock on every reading), and one invocation would build the
# gateway with them too, leaving that binary in target/bench-release for the next benchmark.
cargo build --profile bench-release --bin sluicegate
cargo build --profile bench-release --example idle_conns
timeout 300 target/bench-release/examples/idle_conns \
    --conns "$conns" --settle-secs "$settle" --bin target/bench-release/sluicegate "$@"
