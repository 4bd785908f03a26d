#!/usr/bin/env bash
# Idle memory per pooled upstream h2 connection, without the load's own memory in it:
# one gateway (one worker thread) with an `h2c` pool of N backends (N listeners of one
# examples/h2_upstream.rs process), round robin, no health checks. The requests are
# sequential (curl, one client connection, one request at a time), so the only thing
# that grows is the set of pooled connections: request k opens backend k's connection,
# which then sits idle. VmRSS of the gateway (and its upstream sockets, counted in
# /proc/<pid>/fd) is read with 0 pooled connections, after N/4 and after N, each after
# SETTLE seconds of idleness; the per-connection figure is the slope between N/4 and N
# (fixed first-use costs fall in the first step), then a second pass over all N
# backends shows whether reusing them grows anything.
#
# Build first:  cargo build --release --bin sluicegate --example h2_upstream
# Run:          benches/grpc/idle_h2.sh [N=1024] [SETTLE=2]
# Needs curl, python3, ss (iproute2). SLUICEGATE_BIN / UPSTREAM_BIN override the binaries. Every
# process it starts is ended, by PID.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
n=${1:-1024} settle=${2:-2}
quarter=$((n / 4))
sg_bin=${SLUICEGATE_BIN:-$root/target/release/sluicegate}
up_bin=${UPSTREAM_BIN:-$root/target/release/examples/h2_upstream}
[[ -x $sg_bin && -x $up_bin ]] || { echo "build first: cargo build --release --bin sluicegate --example h2_upstream" >&2; exit 2; }
ulimit -n $((2 * n + 1024))
dir=$(mktemp -d /tmp/sluicegate-idle-h2.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

"$up_bin" 0 1000 "$n" > "$dir/up.out" 2>&1 &
pids+=($!)
for _ in $(seq 200); do
    [[ $(grep -c '^PORT ' "$dir/up.out" 2>/dev/null) -ge $n ]] && break
    sleep 0.1
done
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
{
    printf '[listen]\nhttp = "127.0.0.1:%s"\n[[pools]]\nname = "up"\nprotocol = "h2c"\nbackends = [\n' "$port"
    awk '/^PORT /{printf "  { addr = \"127.0.0.1:%s\" },\n", $2}' "$dir/up.out"
    printf ']\n[[routes]]\nname = "all"\nsplit = [{ pool = "up", weight = 1 }]\n'
} > "$dir/sg.toml"
TOKIO_WORKER_THREADS=1 "$sg_bin" run --no-watch -c "$dir/sg.toml" > "$dir/sg.log" 2>&1 &
sg=$!; pids+=($sg)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done

rss() { awk '/^VmRSS/{print $2}' "/proc/$sg/status"; }
# Upstream connections: the gateway's TCP sockets to the upstream's ports, seen in ss.
upconns() { ss -tnpH state established | grep "pid=$sg," | awk -v p=":$port" '$3 !~ p"$"' | wc -l; }
requests() { # COUNT: sequential GETs on one client connection
    curl -s -o /dev/null "http://127.0.0.1:$port/idle[1-$1]"
}
# The warm-up request above opened one connection; count from a fresh gateway state.
sleep "$settle"
r0=$(rss) c0=$(upconns)
requests $((quarter - 1)); sleep "$settle"
r1=$(rss) c1=$(upconns)
requests $((n - quarter)); sleep "$settle"
r2=$(rss) c2=$(upconns)
requests "$n"; sleep "$settle"
r3=$(rss) c3=$(upconns)
echo "| step | gateway TCP connections | VmRSS KiB |"
echo "|---|---:|---:|"
echo "| 1 request (1 pooled h2 connection) | $c0 | $r0 |"
echo "| $quarter backends used | $c1 | $r1 |"
echo "| $n backends used | $c2 | $r2 |"
echo "| again $n requests (reuse) | $c3 | $r3 |"
python3 - "$r1" "$r2" "$c1" "$c2" "$r0" "$c0" "$r3" <<'PY'
import sys
r1, r2, c1, c2, r0, c0, r3 = map(int, sys.argv[1:])
print(f"\nper pooled idle h2 connection: {(r2 - r1) / (c2 - c1):.1f} KiB (slope {c1}->{c2}); "
      f"{(r2 - r0) / (c2 - c0):.1f} KiB from the first; reuse pass grew {r3 - r2} KiB")
PY
