#!/usr/bin/env bash
# reload_latency.sh: what a large fleet's snapshot rebuilds do to requests in flight.
#
# sluicegate with one worker (`--workers 1`, as the side-by-side runs use) serves a
# route over the two nginx upstreams of common.sh, beside 100 more pools of 100
# backends each (10 000 addresses on 127.1.x.y that take no traffic; a quarter
# of the pools hash, as in the rebuild bench). `wrk -t1 -c16 -d${DUR}s --latency`
# runs twice against the served route: once alone, once while an admin client
# changes another route's split every ${EVERY}s (each change is a full snapshot
# rebuild; the pools stay the same, so their hash rings are reused). wrk's latency
# lines of both runs are printed. With CHANGE=file the change is a rewrite of the
# config file (the same split, in the file) followed by SIGHUP: a file reload.
# CHANGE=scrape and CHANGE=state change nothing: they read `GET /metrics` (what
# Prometheus scrapes) or `GET /api/v1/state` instead, each over all 10 000 backends.
#
# Usage: benches/proxy/reload_latency.sh            (needs nginx, wrk, curl; build first)
#        SLUICEGATE_BIN=/path/to/sluicegate DUR=10 EVERY=0.1 benches/proxy/reload_latency.sh
#        CHANGE=file EVERY=0.2 benches/proxy/reload_latency.sh
#        CHANGE=scrape benches/proxy/reload_latency.sh   (or CHANGE=state)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${SLUICEGATE_BIN:-$root/target/bench-release/sluicegate}
dur=${DUR:-10}
every=${EVERY:-0.1}
change=${CHANGE:-api}
case $change in
    api | file) what="a split change ($change)" ;;
    scrape) what="GET /metrics" ;;
    state) what="GET /api/v1/state" ;;
    *) echo "CHANGE must be api, file, scrape or state, not '$change'" >&2; exit 2 ;;
esac
# shellcheck source=common.sh
source "$root/benches/proxy/common.sh"
need reload_latency.sh nginx wrk curl
[[ -x $bin ]] || { echo "reload_latency.sh: build first: cargo build --profile bench-release" >&2; exit 2; }

dir=$(mktemp -d /tmp/sluicegate-reload.XXXXXX)
start_upstreams "$dir"
cfg=$dir/routes.toml
{
    cat <<TOML
[listen]
http = "127.0.0.1:18092"

[admin]
listen = "127.0.0.1:19902"

[[pools]]
name = "served"
backends = [{ addr = "127.0.0.1:9101" }, { addr = "127.0.0.1:9102" }]

[[routes]]
name = "served"
match = { host = "served.local" }
split = [{ pool = "served", weight = 1 }]
TOML
    # The four policies in turn; a `hash` pool also names its key.
    policies=('"round_robin"' '"least_conn"' '"p2c"' $'"hash"\nhash_key = "client_ip"')
    for p in $(seq 0 99); do
        printf '\n[[pools]]\nname = "p%d"\nbalance = %s\nbackends = [' "$p" "${policies[$((p % 4))]}"
        for b in $(seq 0 99); do
            printf '%s{ addr = "127.1.%d.%d:8080" }' "$([[ $b == 0 ]] || echo ', ')" "$p" "$((b + 1))"
        done
        printf ']\n'
        printf '\n[[routes]]\nname = "r%d"\nmatch = { host = "p%d.local" }\nsplit = [{ pool = "p%d", weight = 1 }, { pool = "p%d", weight = 0 }]\n' \
            "$p" "$p" "$p" "$(((p + 1) % 100))"
    done
} > "$cfg"

# The file variant: r0's second pool at weight 1 instead of 0.
sed 's/split = \[{ pool = "p0", weight = 1 }, { pool = "p1", weight = 0 }\]/split = [{ pool = "p0", weight = 1 }, { pool = "p1", weight = 1 }]/' \
    "$cfg" > "$dir/routes.other.toml"
cp "$cfg" "$dir/routes.first.toml"
RUST_LOG=warn "$bin" run -c "$cfg" --workers 1 --no-watch > "$dir/sluicegate.log" 2>&1 &
sg=$!
pids+=("$sg")
wait_http http://127.0.0.1:18092/ http://127.0.0.1:19902/api/v1/state

latency() {
    timeout $((dur + 20)) wrk -t1 -c16 -d"${dur}s" --latency -H 'Host: served.local' \
        http://127.0.0.1:18092/ | awk '/Latency/ && !/Distribution/ {print "  mean/stdev/max: " $2 " " $3 " " $4} /^ +(50|99)%/ {print "  p" $1 " " $2} /requests in/ {print "  " $1 " requests"}'
}

timeout 20 wrk -t1 -c16 -d2s -H 'Host: served.local' http://127.0.0.1:18092/ > /dev/null
echo "no changes:"
latency
echo "$what every ${every}s:"
(
    end=$((SECONDS + dur + 1))
    n=0
    # Bounded: at most dur/every + 1 changes, and never past the run.
    while ((SECONDS < end)); do
        case $change in
            api)
                body=$([[ $((n % 2)) == 0 ]] && echo '{"p0": 1, "p1": 1}' || echo '{"p0": 1, "p1": 0}')
                curl -s -o /dev/null -X PUT -d "$body" http://127.0.0.1:19902/api/v1/routes/r0/split
                ;;
            file)
                cp "$dir/routes.$([[ $((n % 2)) == 0 ]] && echo other || echo first).toml" "$cfg.tmp"
                mv "$cfg.tmp" "$cfg"
                kill -HUP "$sg"
                ;;
            scrape) curl -s -o /dev/null http://127.0.0.1:19902/metrics ;;
            state) curl -s -o /dev/null http://127.0.0.1:19902/api/v1/state ;;
        esac
        n=$((n + 1))
        sleep "$every"
    done
    echo "  $n sent" > "$dir/changes"
) &
changer=$!
pids+=("$changer")
latency
wait "$changer" || true
cat "$dir/changes"
generation=$(curl -s http://127.0.0.1:19902/api/v1/state | grep -o '"generation":[0-9]*' | head -1)
echo "  snapshots published: ${generation#*:}"
