#!/usr/bin/env bash
# compare-https.sh: nginx and sluicegate terminating HTTPS side by side, same
# certificate, same upstream, same load; prints a markdown table.
#
# What it does
#   1. Makes a throwaway ECDSA P-256 certificate for bench.local / 127.0.0.1 with
#      openssl in a temp dir (deleted at exit; nothing is committed).
#   2. Starts one upstream (nginx, `return 200 "ok\n"`) on 127.0.0.1:9101, and the
#      two proxies, each 1 worker / 1 thread, upstream keep-alive on, TLS 1.2+1.3:
#        nginx       https://127.0.0.1:8543
#        sluicegate  https://127.0.0.1:8544  (target/release/sluicegate; build first)
#   3. Pins like ../../../shared/bench/compare-proxies.sh: proxies on --proxy-cpu
#      (default 1), wrk and the upstream on --load-cpu (default 0).
#   4. Per round (systems interleaved, order reversed every other round), per mode,
#      runs `wrk -t1 -cN -dDs --latency https://127.0.0.1:PORT/` after a warm-up:
#        keepalive  one TLS connection per wrk connection, reused
#        close      `-H 'Connection: close'`: a new TCP + full TLS handshake per
#                   request (wrk does not resume sessions)
#   5. Stops only the process groups it started (setsid; TERM, then KILL), on any exit.
#
# Bounded: every wrk run has -d and `timeout` on top; traffic stays on 127.0.0.1.
# Shares /tmp/compare-proxies.lock with compare-proxies.sh so two benchmarks never
# overlap on the CPUs.
#
# Usage: benches/tls/compare-https.sh [--duration S] [--warmup S] [--rounds N]
#            [--connections N] [--modes "keepalive close"] [--proxy-cpu N] [--load-cpu N]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${SLUICEGATE_BIN:-$ROOT/target/release/sluicegate}
DURATION=10; WARMUP=2; ROUNDS=2; CONNS=64; MODES="keepalive close"
PROXY_CPU=1; LOAD_CPU=0
UP_PORT=9101; NGINX_PORT=8543; SG_PORT=8544; SG_HTTP_PORT=8545

die() { echo "compare-https: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
pause() { sleep "$1" 9>&- & wait $!; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration)    DURATION=${2:?}; shift 2 ;;
        --warmup)      WARMUP=${2:?}; shift 2 ;;
        --rounds)      ROUNDS=${2:?}; shift 2 ;;
        --connections) CONNS=${2:?}; shift 2 ;;
        --modes)       MODES=${2:?}; shift 2 ;;
        --proxy-cpu)   PROXY_CPU=${2:?}; shift 2 ;;
        --load-cpu)    LOAD_CPU=${2:?}; shift 2 ;;
        -h|--help)     sed -n '2,27p' "$0"; exit 0 ;;
        *)             die "unknown option: $1 (see --help)" ;;
    esac
done
for v in DURATION WARMUP ROUNDS CONNS PROXY_CPU LOAD_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
(( DURATION >= 1 && DURATION <= 60 )) || die "--duration must be 1..60"
(( WARMUP <= 10 && ROUNDS >= 1 && ROUNDS <= 10 && CONNS >= 1 && CONNS <= 4096 )) ||
    die "--warmup 0..10, --rounds 1..10, --connections 1..4096"
for m in $MODES; do [[ $m =~ ^(keepalive|close)$ ]] || die "--modes: keepalive, close"; done
for tool in nginx wrk openssl curl taskset setsid flock timeout; do
    command -v "$tool" > /dev/null || die "missing $tool (apt-get install -y nginx wrk openssl curl util-linux coreutils)"
done
[[ -x $BIN ]] || die "$BIN not found: run 'cargo build --release' first"

exec 9> /tmp/compare-proxies.lock
flock -w 900 9 || die "another benchmark holds /tmp/compare-proxies.lock"

WORKDIR=$(mktemp -d /tmp/compare-https.XXXXXX)
PGIDS=()
WRK_PID=""
group_alive() { ps -e -o pgid= | awk -v g="$1" '$1 == g { f = 1 } END { exit !f }'; }
group_pids() { ps -e -o pid=,pgid= | awk -v g="$1" '$2 == g { print $1 }'; }
cleanup() {
    local rc=$? g
    trap - EXIT INT TERM
    [[ -n $WRK_PID ]] && kill -TERM "$WRK_PID" 2> /dev/null || true
    for g in "${PGIDS[@]}"; do kill -TERM -- "-$g" 2> /dev/null || true; done
    local deadline=$((SECONDS + 5))
    for g in "${PGIDS[@]}"; do
        while group_alive "$g" && (( SECONDS < deadline )); do sleep 0.1; done
        group_alive "$g" && kill -KILL -- "-$g" 2> /dev/null || true
    done
    rm -rf "$WORKDIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name cpu command...
    local name=$1 cpu=$2; shift 2
    setsid taskset -c "$cpu" "$@" > "$WORKDIR/$name.log" 2>&1 < /dev/null 9>&- &
    PGIDS+=("$!")
    declare -g "PGID_$name=$!"
}
wait_ready() { # url
    local deadline=$((SECONDS + 30))
    until curl -fsSk -o /dev/null --max-time 1 "$1" 2> /dev/null; do
        (( SECONDS < deadline )) || { tail -n 20 "$WORKDIR"/*.log >&2; die "$1 not answering"; }
        sleep 0.2
    done
}
group_cpu_ns() {
    local p
    for p in $(group_pids "$1"); do cat /proc/"$p"/task/*/schedstat 2> /dev/null || true; done |
        awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# ---------------------------------------------------------------- set up --
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.local -addext "subjectAltName=DNS:bench.local,IP:127.0.0.1" \
    -keyout "$WORKDIR/key.pem" -out "$WORKDIR/cert.pem" 2> /dev/null
temp_paths() { for t in client_body proxy fastcgi uwsgi scgi; do echo "${t}_temp_path $WORKDIR/$1-$t;"; done; }
cat > "$WORKDIR/upstream.conf" <<EOF
worker_processes 1; pid $WORKDIR/upstream.pid; error_log $WORKDIR/upstream.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s; $(temp_paths up)
  server { listen 127.0.0.1:$UP_PORT; default_type text/plain; location / { return 200 "ok\n"; } } }
EOF
cat > "$WORKDIR/nginx.conf" <<EOF
worker_processes 1; worker_rlimit_nofile 16384; pid $WORKDIR/nginx.pid; error_log $WORKDIR/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s; $(temp_paths px)
  upstream backends { server 127.0.0.1:$UP_PORT; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    ssl_certificate $WORKDIR/cert.pem; ssl_certificate_key $WORKDIR/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection ""; }
  } }
EOF
cat > "$WORKDIR/routes.toml" <<EOF
[listen]
http = "127.0.0.1:$SG_HTTP_PORT"
https = "127.0.0.1:$SG_PORT"
[[tls.certificates]]
cert = "$WORKDIR/cert.pem"
key = "$WORKDIR/key.pem"
[[pools]]
name = "bench"
backends = [{ addr = "127.0.0.1:$UP_PORT" }]
[[routes]]
name = "all"
split = [{ pool = "bench", weight = 1 }]
EOF

start upstream "$LOAD_CPU" nginx -p "$WORKDIR" -e "$WORKDIR/upstream.err" -c "$WORKDIR/upstream.conf" -g 'daemon off;'
wait_ready "http://127.0.0.1:$UP_PORT/"
start nginx "$PROXY_CPU" nginx -p "$WORKDIR" -e "$WORKDIR/nginx.err" -c "$WORKDIR/nginx.conf" -g 'daemon off;'
start sluicegate "$PROXY_CPU" env TOKIO_WORKER_THREADS=1 RUST_LOG=warn "$BIN" run -c "$WORKDIR/routes.toml"
wait_ready "https://127.0.0.1:$NGINX_PORT/"
wait_ready "https://127.0.0.1:$SG_PORT/"
log "nginx :$NGINX_PORT and sluicegate :$SG_PORT up; proxies on CPU $PROXY_CPU, wrk + upstream on CPU $LOAD_CPU"
busy=$(awk '/^cpu /{ print $2+$3+$4+$7+$8, $5+$6 }' /proc/stat); pause 2
busy=$(awk -v b="$busy" '/^cpu /{ split(b, a, " "); u = $2+$3+$4+$7+$8 - a[1]; i = $5+$6 - a[2]; printf "%.0f", 100 * u / (u + i) }' /proc/stat)
log "machine ${busy}% busy before the runs (other work on the machine skews the numbers)"

# --------------------------------------------------------------- measure --
RAW=$WORKDIR/raw.tsv
: > "$RAW"
run() { # system port mode round
    local sys=$1 port=$2 mode=$3 round=$4 hdr=() pg out=$WORKDIR/wrk-$1-$3-$4.txt
    [[ $mode == close ]] && hdr=(-H 'Connection: close')
    pg=PGID_$sys
    taskset -c "$LOAD_CPU" timeout $((WARMUP + 10)) \
        wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${hdr[@]}" "https://127.0.0.1:$port/" > /dev/null 9>&- || true
    local c0; c0=$(group_cpu_ns "${!pg}")
    taskset -c "$LOAD_CPU" timeout $((DURATION + 20)) \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${hdr[@]}" "https://127.0.0.1:$port/" > "$out" 9>&- &
    WRK_PID=$!
    wait "$WRK_PID" || die "wrk failed against $sys (see $out)"
    WRK_PID=""
    local c1; c1=$(group_cpu_ns "${!pg}")
    awk -v s="$sys" -v m="$mode" -v r="$round" -v c="$((c1 - c0))" -v d="$DURATION" '
        function us(v) { if (v ~ /us$/) return v * 1; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6; return v }
        $1 == "50%" { p50 = us($2) } $1 == "99%" { p99 = us($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Socket errors:/ { err += $4 + $6 + $8 + $10 } /Non-2xx or 3xx/ { err += $NF }
        END { printf "%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%d\t%.1f\n", s, m, r, rps, p50, p99, err, (rps > 0 ? c / 1e3 / (rps * d) : 0) }' \
        "$out" | tee -a "$RAW" | awk -F'\t' '{ printf "[round %s] %-10s %-9s %7s req/s  p50 %s us  p99 %s us  errors %s  proxy CPU %s us/req\n", $3, $1, $2, $4, $5, $6, $7, $8 }' >&2
}
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in $MODES; do
        if (( round % 2 )); then order="nginx:$NGINX_PORT sluicegate:$SG_PORT"
        else order="sluicegate:$SG_PORT nginx:$NGINX_PORT"; fi
        for sp in $order; do run "${sp%%:*}" "${sp#*:}" "$mode" "$round"; done
    done
done

# ---------------------------------------------------------------- report --
echo
echo "HTTPS, wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS round(s), medians; proxies 1 worker on CPU $PROXY_CPU, wrk + upstream on CPU $LOAD_CPU; machine ${busy}% busy before"
echo
echo "| mode | system | req/s | p50 | p99 | errors | proxy CPU us/req | req/s vs nginx |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for mode in $MODES; do
    nginx_rps=$(awk -F'\t' -v m="$mode" '$1 == "nginx" && $2 == m { print $4 }' "$RAW" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
    for sys in nginx sluicegate; do
        awk -F'\t' -v s="$sys" -v m="$mode" -v n="$nginx_rps" '
            function med(x, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
                                        return (k % 2) ? x[(k + 1) / 2] : (x[k / 2] + x[k / 2 + 1]) / 2 }
            $1 == s && $2 == m { k++; r[k] = $4; p5[k] = $5; p9[k] = $6; e += $7; c[k] = $8 }
            END { rr = med(r, k); printf "| %s | %s | %.0f | %.2f ms | %.2f ms | %d | %.1f | %.2f |\n", m, s, rr, med(p5, k) / 1000, med(p9, k) / 1000, e, med(c, k), (n > 0 ? rr / n : 0) }' "$RAW"
    done
done
