#!/usr/bin/env bash
# callgrind.sh: user-space instructions per proxied request, counted by valgrind.
#
# Wall-clock figures on this shared 2-core VM move by 10 % between runs; instruction
# counts do not (the same binary and load give the same count within ~1 %). This is
# how each change to the request path was judged before the side-by-side run with
# nginx (benches/README.md).
#
# What it does: starts two nginx upstreams (../shared/bench/nginx-upstream.conf) on
# 127.0.0.1:9101/9102, sluicegate under callgrind (one worker, the config
# benches/proxy/candidate.sh writes; BENCH_PROFILE / BENCH_METRICS apply) on
# 127.0.0.1:18090, warms up, then counts instructions only while
# `wrk -t1 -c16 -d10s` runs (CONNS sets -c) and divides by the requests wrk completed. Kernel work
# (syscalls, TCP) is not counted: see `perf` in benches/JOURNAL.md for that share.
#
# Usage: benches/proxy/callgrind.sh [label]      (needs valgrind, nginx, wrk, curl)
#        CONNS=1 benches/proxy/callgrind.sh LABEL  wrk's connection count (default 16;
#        1 shows what a request costs when every one wakes the proxy from sleep)
#        PROXY=nginx benches/proxy/callgrind.sh LABEL  the same count of nginx as the
#        proxy (compare-proxies.sh's nginx.conf, one process: master_process off)
#        CACHE=1 benches/proxy/callgrind.sh LABEL  with valgrind's cache simulation:
#        also prints first-level instruction-cache misses per request (I1mr/req), a
#        stand-in for the code footprint of a request (this VM has no hardware counters)
#        VG_ARGS="--demangle=no" benches/proxy/callgrind.sh LABEL  more valgrind options
# Output: "<label>: requests=N Ir=M Ir/req=K" and callgrind.out.<label> in $OUT
# (default /tmp/sluicegate-callgrind) for callgrind_annotate.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
label=${1:-run}
conns=${CONNS:-16}
out=${OUT:-/tmp/sluicegate-callgrind}
bin=${SLUICEGATE_BIN:-$root/target/bench-release/sluicegate}
# shellcheck source=common.sh
source "$root/benches/proxy/common.sh"
need callgrind.sh valgrind callgrind_control callgrind_annotate nginx wrk curl
[[ ${PROXY:-sluicegate} != sluicegate || -x $bin ]] || { echo "callgrind.sh: build first: cargo build --profile bench-release" >&2; exit 2; }
mkdir -p "$out"
rm -f "$out/callgrind.out.$label"*

start_upstreams "$out"
vg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out.$label")
[[ ${CACHE:-0} == 1 ]] && vg+=(--cache-sim=yes)
# More valgrind options, split on spaces (e.g. VG_ARGS=--demangle=no for the
# symbol names the linker knows).
read -r -a extra <<< "${VG_ARGS:-}"
vg+=("${extra[@]}")
case ${PROXY:-sluicegate} in
sluicegate)
    cfg=$(sluicegate_config 127.0.0.1:18090)
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn "${vg[@]}" "$bin" run -c "$cfg" \
        > "$out/$label.log" 2>&1 &
    ;;
nginx)
    mkdir -p "$out/nginx-proxy"
    sed -e "s#@WORKDIR@#$out/nginx-proxy#g" -e "s#@LISTEN_PORT@#18090#g" \
        -e "s#@UPSTREAM1_PORT@#9101#g" -e "s#@UPSTREAM2_PORT@#9102#g" \
        "$root/../shared/bench/nginx.conf" > "$out/nginx-proxy.conf"
    "${vg[@]}" nginx -p "$out/nginx-proxy" -e "$out/nginx-proxy.err" -c "$out/nginx-proxy.conf" \
        -g 'daemon off; master_process off;' > "$out/$label.log" 2>&1 &
    ;;
*) echo "callgrind.sh: PROXY is sluicegate or nginx" >&2; exit 2 ;;
esac
pid=$!
pids+=("$pid")
wait_http http://127.0.0.1:18090/
timeout 20 wrk -t1 -c"$conns" -d3s http://127.0.0.1:18090/ > /dev/null
callgrind_control -i on "$pid" > /dev/null 2>&1
result=$(timeout 30 wrk -t1 -c"$conns" -d10s http://127.0.0.1:18090/)
callgrind_control -d "$pid" > /dev/null 2>&1
callgrind_control -i off "$pid" > /dev/null 2>&1
requests=$(awk '/requests in/ {print $1}' <<< "$result")
# The totals line: Ir first; with the cache simulation I1mr is the fourth figure.
totals=$(callgrind_annotate "$out/callgrind.out.$label.1" 2>/dev/null \
    | awk '/PROGRAM TOTALS/ {gsub(/\([^)]*\)/, ""); gsub(",", ""); print}')
ir=$(awk '{print $1}' <<< "$totals")
line="$label: requests=$requests Ir=$ir Ir/req=$((ir / requests))"
if [[ ${CACHE:-0} == 1 ]]; then
    line+=" I1mr/req=$(awk -v n="$requests" '{printf "%.0f", $4 / n}' <<< "$totals")"
fi
echo "$line"
