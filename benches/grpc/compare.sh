#!/usr/bin/env bash
# The h2/gRPC mode of the benches: sluicegate (an `h2c` pool) and nginx (`grpc_pass`,
# HTTP/2 to its upstream) side by side on the same h2c upstream
# (examples/h2_upstream.rs), loaded with h2load, interleaved round by round.
#
# Per proxy and round: unary-like gRPC calls (POST, `content-type: application/grpc`,
# a 15-byte message echoed back with `grpc-status: 0` in trailers) at C connections x
# M streams for DURATION seconds: req/s, p99 (from h2load's per-request log) and the
# proxy's CPU µs per request (utime + stime of all its processes from /proc/<pid>/stat,
# 10 ms ticks). Then one 100 MB download through each (MB/s), and the idle memory per
# pooled upstream h2 connection: RSS growth after 4096 calls, 256 at a time, to a second
# upstream that allows one stream per connection (so concurrent streams need
# connections of their own), divided by the upstream connections left open (it
# includes what the allocator kept from the load).
#
# Build first:  cargo build --release --bin sluicegate --example h2_upstream
# Run:          benches/grpc/compare.sh [--duration 5] [--rounds 3] [-c 8] [-m 32]
# Needs nginx (with the http_v2 and grpc modules: Debian's has both), h2load (Debian
# nghttp2-client), python3, ss (iproute2). SLUICEGATE_BIN / UPSTREAM_BIN override the
# binaries (default target/release/…). Every process it starts is ended, by PID.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
duration=5 rounds=3 conns=8 streams=32
while (($#)); do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -c) conns=$2; shift 2 ;;
        -m) streams=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
sg_bin=${SLUICEGATE_BIN:-$root/target/release/sluicegate}
up_bin=${UPSTREAM_BIN:-$root/target/release/examples/h2_upstream}
for tool in nginx h2load python3 ss; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is missing" >&2; exit 2; }
done
[[ -x $sg_bin && -x $up_bin ]] || { echo "build first: cargo build --release --bin sluicegate --example h2_upstream" >&2; exit 2; }

dir=$(mktemp -d /tmp/sluicegate-grpc-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f $dir/nginx.pid ]] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
    return 0
}
trap cleanup EXIT

# Starts an upstream (MAX_STREAMS per connection); upstream_port prints its port.
start_upstream() {
    "$up_bin" 0 "$1" > "$dir/up-$1.out" 2>&1 &
    pids+=($!)
}
upstream_port() {
    for _ in $(seq 100); do
        grep -q '^PORT ' "$dir/up-$1.out" 2>/dev/null && break
        sleep 0.1
    done
    awk '/^PORT /{print $2}' "$dir/up-$1.out"
}
start_upstream 1000
start_upstream 1
up=$(upstream_port 1000)
up1=$(upstream_port 1)
sg_port=18480 ng_port=18481 sg_idle_port=18482 ng_idle_port=18483

sg_config() { # LISTEN UPSTREAM_PORT
    cat <<TOML
[listen]
http = "127.0.0.1:$1"
[[pools]]
name = "up"
protocol = "h2c"
backends = [{ addr = "127.0.0.1:$2" }]
[pools.h2]
max_connections = 256
[[routes]]
name = "all"
split = [{ pool = "up", weight = 1 }]
TOML
}
sg_config $sg_port "$up" > "$dir/sg.toml"
sg_config $sg_idle_port "$up1" > "$dir/sg-idle.toml"
cat > "$dir/nginx.conf" <<NGINX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 1000;
    client_max_body_size 0;
    upstream up { server 127.0.0.1:$up; keepalive 256; }
    upstream up1 { server 127.0.0.1:$up1; keepalive 256; }
    server { listen 127.0.0.1:$ng_port http2; location / { grpc_pass grpc://up; } }
    server { listen 127.0.0.1:$ng_idle_port http2; location / { grpc_pass grpc://up1; } }
}
NGINX
TOKIO_WORKER_THREADS=1 "$sg_bin" run -c "$dir/sg.toml" > "$dir/sg.log" 2>&1 &
sg_pid=$!; pids+=($sg_pid)
TOKIO_WORKER_THREADS=1 "$sg_bin" run -c "$dir/sg-idle.toml" > "$dir/sg-idle.log" 2>&1 &
sg_idle_pid=$!; pids+=($sg_idle_pid)
nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx.err"
for _ in $(seq 100); do [[ -s $dir/nginx.pid ]] && break; sleep 0.1; done
ng_master=$(cat "$dir/nginx.pid")
ng_pids() { echo "$ng_master" $(pgrep -P "$ng_master"); }

printf '\x00\x00\x00\x00\x0abench-call' > "$dir/msg.bin"
grpc_load() { # PORT DURATION LOG -> h2load output
    h2load -D "$2" --warm-up-time 1 -c "$conns" -m "$streams" -d "$dir/msg.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' --log-file "$3" \
        "http://127.0.0.1:$1/bench.Echo/Unary"
}
# CPU ticks (utime + stime) and resident KiB, summed over the PIDs given.
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
rss_kib() { for p in "$@"; do awk '/^VmRSS/{print $2}' "/proc/$p/status"; done | awk '{s += $1} END {print s}'; }
hz=$(getconf CLK_TCK)

for port in $sg_port $ng_port; do # warm both (connections to the upstream open)
    h2load -n 2000 -c "$conns" -m "$streams" -d "$dir/msg.bin" -H 'content-type: application/grpc' \
        "http://127.0.0.1:$port/bench.Echo/Unary" > "$dir/warm-$port.txt"
    grep -q '2000 succeeded' "$dir/warm-$port.txt" || { cat "$dir/warm-$port.txt"; exit 1; }
done

echo "| round | proxy | req/s | CPU µs/req | p99 ms | failed |"
echo "|---|---|---:|---:|---:|---:|"
for r in $(seq "$rounds"); do
    for who in sluicegate nginx; do
        if [[ $who == sluicegate ]]; then port=$sg_port; procs=$sg_pid; else port=$ng_port; procs=$(ng_pids); fi
        before=$(ticks $procs)
        out=$(grpc_load "$port" "$duration" "$dir/log-$who-$r.tsv")
        after=$(ticks $procs)
        python3 - "$who" "$r" "$before" "$after" "$hz" "$dir/log-$who-$r.tsv" <<'PY' "$out"
import re, sys
who, r, before, after, hz, log = sys.argv[1:7]
out = sys.argv[7]
reqs = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
ok, failed, errored = (int(x) for x in reqs.groups())
durs = sorted(int(l.split()[2]) for l in open(log) if l.strip())
p99 = durs[min(len(durs) - 1, int(len(durs) * 0.99))] / 1000 if durs else float("nan")
cpu_us = (int(after) - int(before)) * 1e6 / int(hz) / max(ok, 1)
print(f"| {r} | {who} | {float(rps.group(1)):.0f} | {cpu_us:.1f} | {p99:.2f} | {failed + errored} |")
PY
    done
done

echo
echo "| 100 MB download | MB/s |"
echo "|---|---:|"
for who in sluicegate nginx; do
    if [[ $who == sluicegate ]]; then port=$sg_port; else port=$ng_port; fi
    out=$(h2load -n 1 -c 1 -m 1 -d "$dir/msg.bin" -H 'content-type: application/grpc' \
        "http://127.0.0.1:$port/stream/104857600")
    grep -q '1 succeeded' <<< "$out" || { echo "$who: download failed"; echo "$out"; exit 1; }
    python3 - "$who" "$out" <<'PY'
import re, sys
n, unit = re.search(r"finished in ([\d.]+)(m?s),", sys.argv[2]).groups()
secs = float(n) / (1000 if unit == "ms" else 1)
print(f"| {sys.argv[1]} | {104857600 / secs / 1e6:.0f} |")
PY
done

echo
echo "| idle memory per pooled upstream h2 connection | connections | RSS growth KiB | KiB each |"
echo "|---|---:|---:|---:|"
for who in sluicegate nginx; do
    if [[ $who == sluicegate ]]; then port=$sg_idle_port; procs=$sg_idle_pid; else port=$ng_idle_port; procs=$(ng_pids); fi
    before=$(rss_kib $procs)
    h2load -n 4096 -c 4 -m 64 -d "$dir/msg.bin" -H 'content-type: application/grpc' \
        "http://127.0.0.1:$port/bench.Echo/Unary" > "$dir/idle-$who.txt"
    grep -q '4096 succeeded' "$dir/idle-$who.txt" || { cat "$dir/idle-$who.txt"; exit 1; }
    sleep 1
    after=$(rss_kib $procs)
    n=$(ss -Htn state established "( dport = :$up1 )" | wc -l)
    echo "| $who | $n | $((after - before)) | $(python3 -c "print(f'{($after - $before) / max($n, 1):.1f}')") |"
    # The next proxy's connections are counted alone.
    [[ $who == sluicegate ]] && kill "$sg_idle_pid" && wait "$sg_idle_pid" 2>/dev/null || true
done
