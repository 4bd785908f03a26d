#!/usr/bin/env bash
# cpu_split.sh: user and kernel CPU per proxied request, nginx beside sluicegate.
#
# compare-proxies.sh reports one CPU figure per request; this splits it, to tell
# where a gap is (the kernel's TCP work, or the proxy's own code). Pinned as that
# script pins c64: the proxy alone on CPU 1, wrk and two nginx upstreams on CPU 0.
# Per round and system: `wrk -t1 -c$CONNS -d${DUR}s` after a 2 s warm-up, then
# utime/stime of the proxy process (/proc/PID/stat) over the run divided by the
# requests wrk counted. Rounds alternate the two systems (the host's speed drifts).
#
# Usage: benches/proxy/cpu_split.sh        (needs nginx, wrk, curl, taskset; build first)
#        CONNS=1 ROUNDS=5 DUR=8 benches/proxy/cpu_split.sh
#        CONNS=1 SAME_CPU=1 benches/proxy/cpu_split.sh   compare-proxies' c1same: the
#            proxies on CPU 0 too, beside wrk and the upstreams
#        COUNT=1 benches/proxy/cpu_split.sh   also context switches, wake-ups and
#            syscalls per request (`perf stat` tracepoints over 4 s of each run), and
#            the inter-processor interrupts per request that each CPU took over the
#            whole run (/proc/interrupts: RES rescheduling, CAL function call). On a
#            VM each one is a trip through the hypervisor; with the proxy alone on
#            CPU 1, those CPU 0 takes are mostly the proxy waking or preempting wrk
#            and the upstreams there.
# Syscalls per request, for the same setup: add
#   perf stat -e 'raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,...' -p PID
# around a run (benches/JOURNAL.md, fifth pass, has the figures).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
conns=${CONNS:-64}
dur=${DUR:-8}
proxy_cpu=$([[ ${SAME_CPU:-0} == 1 ]] && echo 0 || echo 1)
count=${COUNT:-0}
rounds=${ROUNDS:-3}
bin=${SLUICEGATE_BIN:-$root/target/bench-release/sluicegate}
# shellcheck source=common.sh
source "$root/benches/proxy/common.sh"
need cpu_split.sh nginx wrk curl taskset
[[ $count == 1 ]] && need cpu_split.sh perf
[[ -x $bin ]] || { echo "cpu_split.sh: build first: cargo build --profile bench-release" >&2; exit 2; }
work=$(mktemp -d /tmp/sluicegate-cpu-split.XXXXXX)
start_upstreams "$work" 0
sed -e "s#@WORKDIR@#$work#g" -e "s#@LISTEN_PORT@#18081#g" -e "s#@UPSTREAM1_PORT@#9101#g" \
    -e "s#@UPSTREAM2_PORT@#9102#g" "$root/../shared/bench/nginx.conf" > "$work/proxy.conf"
mkdir -p "$work/nginx-proxy-body"
taskset -c "$proxy_cpu" nginx -p "$work" -e "$work/proxy.err" -c "$work/proxy.conf" -g 'daemon off;' &
nginx_pid=$!
pids+=("$nginx_pid")
cfg=$(sluicegate_config 127.0.0.1:18090)
TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c "$proxy_cpu" "$bin" run -c "$cfg" > "$work/sluicegate.log" 2>&1 &
sluicegate_pid=$!
pids+=("$sluicegate_pid")
wait_http http://127.0.0.1:18090/ http://127.0.0.1:18081/
# nginx's CPU is its worker's (the master only waits).
nginx_worker=$(pgrep -P "$nginx_pid" | head -1)
# RES and CAL counts of CPU 0 and CPU 1, one line: "res0 res1 cal0 cal1".
ipis() { awk '$1 == "RES:" { r0 = $2; r1 = $3 } $1 == "CAL:" { c0 = $2; c1 = $3 }
              END { print r0 + 0, r1 + 0, c0 + 0, c1 + 0 }' /proc/interrupts; }

for round in $(seq "$rounds"); do
    for system in "nginx:$nginx_worker:18081" "sluicegate:$sluicegate_pid:18090"; do
        IFS=: read -r name pid port <<< "$system"
        taskset -c 0 timeout 20 wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$port/" > /dev/null
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        if [[ $count == 1 ]]; then
            read -r -a ipi0 < <(ipis)
            perf stat -e sched:sched_switch,sched:sched_wakeup,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait \
                -p "$pid" -o "$work/perf-$name-$round.txt" -- sleep 4 &
            perf_pid=$!
        fi
        result=$(taskset -c 0 timeout $((dur + 20)) wrk -t1 -c"$conns" -d"${dur}s" "http://127.0.0.1:$port/")
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        requests=$(awk '/requests in/ {print $1}' <<< "$result")
        if [[ $count == 1 ]]; then
            read -r -a ipi1 < <(ipis)
            awk -v q="$requests" -v n="$name" -v r0=$((ipi1[0] - ipi0[0])) -v r1=$((ipi1[1] - ipi0[1])) \
                -v c0=$((ipi1[2] - ipi0[2])) -v c1=$((ipi1[3] - ipi0[3])) 'BEGIN {
                printf "  %s IPIs per req: RES cpu0 %.3f cpu1 %.3f, CAL cpu0 %.3f cpu1 %.3f\n",
                    n, r0 / q, r1 / q, c0 / q, c1 / q }'
            wait "$perf_pid" || true
            # perf counted 4 s of the run: per request at the run's average rate.
            awk -v q="$requests" -v n="$name" -v d="$dur" '/sched:|syscalls:/ {
                gsub(",", "", $1); printf "  %s %s per req %.3f\n", n, $2, $1 / (q * 4 / d) }' \
                "$work/perf-$name-$round.txt"
        fi
        ticks=$(getconf CLK_TCK)
        awk -v n="$name" -v r="$round" -v c="$conns" -v q="$requests" -v u=$((u1 - u0)) \
            -v s=$((s1 - s0)) -v t="$ticks" 'BEGIN {
                printf "round %d c%d %-10s requests=%d user=%.2f us/req kernel=%.2f us/req total=%.2f us/req\n",
                    r, c, n, q, u * 1e6 / t / q, s * 1e6 / t / q, (u + s) * 1e6 / t / q }'
    done
done
