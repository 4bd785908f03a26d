#!/usr/bin/env bash
# Follows the README's quick start as a new user would, from a cold build cache, and
# prints how long the first command takes to serve the demo (its banner line), then
# stops the demo with SIGTERM and checks it drains.
#
#   scripts/first-run-timing.sh                  # `cargo run --release -- demo`, fresh target dir
#   scripts/first-run-timing.sh --profile dev    # the same with the dev profile (`cargo run -- demo`)
#   scripts/first-run-timing.sh --keep DIR       # build into DIR and keep it (default: a temp dir)
#
# The build goes to a fresh target directory (never ./target), so the figure is a cold
# compile of the whole graph; downloaded crates (~/.cargo/registry) are reused, as after
# `cargo fetch`. The demo listens on ephemeral loopback ports so it cannot clash with a
# gateway already on 8080. Output: one `first-run: …` summary line on stdout.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
profile=release
keep=""
limit=3600
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        --limit) limit="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "first-run-timing: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$profile" in
    release) run_args=(run --release) ;;
    dev) run_args=(run) ;;
    *) run_args=(run --profile "$profile") ;;
esac

if [ -n "$keep" ]; then
    rm -rf "$keep"
    mkdir -p "$keep"
    target="$keep"
else
    target="$(mktemp -d /tmp/first-run-target.XXXXXX)"
fi
log="$(mktemp /tmp/first-run-log.XXXXXX)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    [ -z "$keep" ] && rm -rf "$target"
    rm -f "$log" "$log.times"
}
trap cleanup EXIT

start=$(date +%s.%N)
# `cargo run` execs the binary on Unix, so $pid becomes the demo itself.
(cd "$root" && exec env CARGO_TARGET_DIR="$target" cargo "${run_args[@]}" -- \
    demo --listen 127.0.0.1:0 --admin 127.0.0.1:0) >"$log" 2>&1 &
pid=$!

banner=""
while :; do
    if grep -q '^sluicegate demo: gateway on ' "$log"; then
        banner=$(date +%s.%N)
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "first-run-timing: the demo exited before its banner:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    if [ "$(echo "$(date +%s.%N) - $start > $limit" | bc)" = 1 ]; then
        echo "first-run-timing: no banner after ${limit}s" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    sleep 0.5
done
secs=$(echo "$banner - $start" | bc)

url=$(sed -n 's/^sluicegate demo: gateway on \(http:[^ ]*\).*/\1/p' "$log" | head -n 1)
answer=$(curl -s --max-time 5 "$url/hello" || true)

kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
drained=no
grep -q 'drained, exiting' "$log" && drained=yes
pid=""

wait 2>/dev/null || true
# CPU time of everything the build ran (rustc, build scripts, the linker; reaped by
# cargo, which became the demo): on a shared machine the wall time above depends on
# the neighbours, this does not. An idle 2-core machine needs roughly half of it.
# `times` in the shell itself (in a pipe or $(...) it would run in a subshell that
# reaped no children and print zero).
times >"$log.times"
cpu=$(tail -n 1 "$log.times" | awk '{ split($1, u, "m"); split($2, s, "m"); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' | tr -d s)
crates=$(find "$target" -maxdepth 3 -path '*/.fingerprint/*' -type d | wc -l)
printf 'first-run: profile=%s time_to_banner=%dm%02ds (%.1f s) build_cpu=%.0f s units=%s answered=%s drained=%s cpus=%s load=%s\n' \
    "$profile" "$(echo "$secs / 60" | bc)" "$(echo "$secs % 60 / 1" | bc)" "$secs" "$cpu" "$crates" \
    "$([ -n "$answer" ] && echo yes || echo no)" "$drained" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
