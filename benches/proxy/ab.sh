#!/usr/bin/env bash
# ab.sh: two (or more) sluicegate binaries alternated on the same upstreams, for a
# before/after of one change in the same minutes (this host's speed drifts by 10 %
# and more between runs, so figures from different runs do not compare).
#
# Each round starts each binary in turn (one worker, pinned to CPU $PCPU, default 1;
# the config benches/proxy/candidate.sh writes), warms up 2 s, then runs
# `wrk -t1 -c$CONNS -d${DUR}s --latency` from CPU 0 and prints req/s, the proxy's
# CPU µs per request (utime + stime from /proc), p50 and p99.
#
# Usage: ROUNDS=3 CONNS=64 DUR=8 benches/proxy/ab.sh OLD_BIN NEW_BIN
# (an old binary: `git worktree add /tmp/base REV` and
#  `CARGO_TARGET_DIR=/tmp/base-target cargo build --profile bench-release` there)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=common.sh
source "$root/benches/proxy/common.sh"
need ab.sh nginx wrk curl taskset
[[ $# -ge 1 ]] || { echo "usage: benches/proxy/ab.sh BIN [BIN...]" >&2; exit 2; }
dir=$(mktemp -d /tmp/sluicegate-ab.XXXXXX)
start_upstreams "$dir" 0
cfg=$(sluicegate_config 127.0.0.1:18093)
conns=${CONNS:-64}
cpu=${PCPU:-1}
dur=${DUR:-8}
for round in $(seq "${ROUNDS:-3}"); do
    for bin in "$@"; do
        TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c "$cpu" "$bin" run -c "$cfg" \
            > "$dir/sluicegate.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        wait_http http://127.0.0.1:18093/
        taskset -c 0 wrk -t1 -c"$conns" -d2s http://127.0.0.1:18093/ > /dev/null
        t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${dur}"s --latency http://127.0.0.1:18093/)
        t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        reqs=$(awk '/requests in/ {print $1}' <<< "$out")
        p50=$(awk '$1 == "50%" {print $2}' <<< "$out")
        p99=$(awk '$1 == "99%" {print $2}' <<< "$out")
        tick=$(getconf CLK_TCK)
        awk -v b="$bin" -v r="$round" -v n="$reqs" -v t=$((t1 - t0)) -v hz="$tick" -v d="$dur" \
            -v p50="$p50" -v p99="$p99" \
            'BEGIN { printf "round %d %s  req/s %.0f  cpu us/req %.2f  p50 %s  p99 %s\n", r, b, n / d, t * 1e6 / hz / n, p50, p99 }'
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
