# common.sh: what the proxy measurement scripts share (sourced, not run).
#
# Two nginx upstreams on 127.0.0.1:9101/9102 (../shared/bench/nginx-upstream.conf),
# the candidate config for sluicegate, and a cleanup that ends exactly the processes
# started here. The caller sets `root` (the repository) before sourcing.

# Processes to end on exit (the caller appends the ones it starts).
pids=()
upstream_dir=""

# Exits with a message naming what to install when a tool is missing.
need() {
    local script=$1
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$script: $tool is missing (apt-get install -y $*)" >&2; exit 2; }
    done
}

# Starts the two upstreams, their files in DIR; with CPU, pinned to it.
start_upstreams() {
    local dir=$1 cpu=${2:-}
    local conf=${UPSTREAM_CONF:-$root/../shared/bench/nginx-upstream.conf}
    upstream_dir=$dir
    for port in 9101 9102; do
        sed -e "s#@WORKDIR@#$dir#g" -e "s#@LISTEN_PORT@#$port#g" "$conf" > "$dir/upstream-$port.conf"
        ${cpu:+taskset -c "$cpu"} nginx -p "$dir" -e "$dir/upstream-$port.err" \
            -c "$dir/upstream-$port.conf" -g 'daemon on;'
    done
}

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -n $upstream_dir ]] || return 0
    for port in 9101 9102; do
        [[ -f $upstream_dir/upstream-$port.pid ]] && kill "$(cat "$upstream_dir/upstream-$port.pid")" 2>/dev/null || true
    done
}
trap cleanup EXIT

# Prints the path of the candidate's routes.toml for LISTEN over the two upstreams.
sluicegate_config() {
    BENCH_LISTEN=$1 BENCH_UPSTREAMS=127.0.0.1:9101,127.0.0.1:9102 \
        SLUICEGATE_BIN=/bin/echo "$root/benches/proxy/candidate.sh" | awk '{print $NF}'
}

# Waits (bounded, 60 s) until every URL answers.
wait_http() {
    for _ in $(seq 300); do
        local all=1
        for url in "$@"; do curl -s -o /dev/null "$url" || all=0; done
        [[ $all == 1 ]] && return 0
        sleep 0.2
    done
    echo "no answer from $*" >&2
    exit 1
}
