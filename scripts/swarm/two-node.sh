#!/usr/bin/env bash
# A 2-node Docker swarm on one machine, for the Swarm tests and examples/swarm.
#
#   node 1: this host's dockerd, manager, advertising 10.250.0.1 on a veth
#   node 2: a second dockerd inside the network namespace sgn2 (10.250.0.2), worker
#
#   scripts/swarm/two-node.sh up [--build] [IMAGE...]   build the swarm (and images), copy IMAGEs to node 2
#   scripts/swarm/two-node.sh load IMAGE...              copy more local images to node 2
#   scripts/swarm/two-node.sh status                     nodes, services, netns, route; exit 1 if down
#   scripts/swarm/two-node.sh down                       tear everything down (safe to repeat)
#   scripts/swarm/two-node.sh run [--build] CMD...       up, run CMD, down even when CMD fails
#   scripts/swarm/two-node.sh env                        shell assignments for node 2 and the overlay
#
# `--build` makes sluicegate:local$SG_TAG and sluicegate-echo:local$SG_TAG with
# scripts/build-images.sh from binaries already built on the host ($SG_PROFILE,
# default debug; nothing is compiled or pulled), plus sluicegate-echo:v2$SG_TAG (the
# same binary reporting x-agent-version v2, for rolling updates), and copies all three.
#
# Network safety: the host has no route to overlay subnets, so a packet from the host
# to a task IP would leave the machine. Every overlay of this swarm (ingress included)
# is allocated from $SG_POOL, which gets a blackhole route for as long as the swarm is
# up. Reach the gateway from the host only through a port it publishes.
#
# Needs root (network namespaces, veth, a second dockerd). Swarm mode is daemon-wide:
# run it alone on the engine (here: under `flock /work/docker.lock`).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
W=${SG_SWARM_DIR:-${TMPDIR:-/tmp}/sluicegate-swarm}
NS=${SG_NETNS:-sgn2}
V1=sgveth1
V2=sgveth2
A1=10.250.0.1
A2=10.250.0.2
POOL=${SG_POOL:-10.77.0.0/16}
NET=${SG_NET:-sgnet}
SUBNET=${SG_SUBNET:-10.77.100.0/24}
TAG=${SG_TAG:-}
PROFILE=${SG_PROFILE:-debug}
D2_SOCK="$W/d2.sock"
d2() { docker -H "unix://$D2_SOCK" "$@"; }
say() { echo "two-node: $*" >&2; }

# Waits at most $1 tenths of a second for "$2..." to succeed.
wait_for() {
    local limit=$1 i=0
    shift
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -le "$limit" ] || return 1
        sleep 0.1
    done
}

swarm_state() { docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

# Copies local images to node 2 (node 2 never pulls).
load() {
    [ $# -gt 0 ] || return 0
    docker save "$@" | d2 load >/dev/null
    say "copied to node 2: $*"
}

build() {
    "$root/scripts/build-images.sh" --profile "$PROFILE" --no-build --tag-suffix "$TAG"
    # v2: the same echo binary reporting another version, made without a builder
    # base image or registry: a container of v1 committed with one more ENV.
    local c
    c=$(docker create "sluicegate-echo:local$TAG")
    docker commit --change 'ENV AGENT_VERSION=v2' "$c" "sluicegate-echo:v2$TAG" >/dev/null
    docker rm "$c" >/dev/null
    echo "built sluicegate-echo:v2$TAG"
}

up() {
    local do_build=0
    if [ "${1:-}" = --build ]; then
        do_build=1
        shift
    fi
    [ "$(id -u)" = 0 ] || { say "needs root (netns, veth, a second dockerd)"; exit 1; }
    local state
    state=$(swarm_state)
    if [ "$state" != inactive ]; then
        say "node 1 swarm state is '$state', not inactive: someone else's swarm, or a leftover (run: $0 down)"
        exit 1
    fi
    if ip netns list | grep -qw "$NS" || ip link show "$V1" >/dev/null 2>&1; then
        say "netns $NS or link $V1 already exists: a leftover (run: $0 down)"
        exit 1
    fi
    # From here on, any failure (or a signal) tears down what was made.
    trap 'say "up failed; tearing down"; down' EXIT
    local started=$SECONDS
    [ "$do_build" = 0 ] || build

    mkdir -p "$W/d2/data" "$W/d2/exec"
    # The blackhole first, so the overlays never exist without it.
    ip route add blackhole "$POOL"
    ip netns add "$NS"
    ip link add "$V1" type veth peer name "$V2"
    ip link set "$V2" netns "$NS"
    ip addr add "$A1/24" dev "$V1"
    ip link set "$V1" up
    ip -n "$NS" addr add "$A2/24" dev "$V2"
    ip -n "$NS" link set "$V2" up
    ip -n "$NS" link set lo up
    # No default route in the namespace on purpose: node 2 can reach node 1 only.
    cat >"$W/d2/daemon.json" <<JSON
{ "data-root": "$W/d2/data", "exec-root": "$W/d2/exec", "pidfile": "$W/d2/dockerd.pid",
  "hosts": ["unix://$D2_SOCK"], "bridge": "none", "storage-driver": "overlay2",
  "cgroup-parent": "/docker2", "mtu": 1400 }
JSON
    # nsenter --net keeps the host's mount namespace: `ip netns exec` would remount
    # /sys and hide /sys/fs/cgroup from dockerd. unshare --uts: its own hostname.
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 \
        setsid nsenter --net="/var/run/netns/$NS" unshare --uts \
        sh -c "hostname node2; exec dockerd --config-file $W/d2/daemon.json" \
        >"$W/d2/dockerd.log" 2>&1 </dev/null &
    # Not a job of this shell: a test may kill it, and bash would report that.
    disown
    wait_for 300 d2 version || { tail -20 "$W/d2/dockerd.log" >&2; false; }

    # Advertise the veth address: with 127.0.0.1 node 2 joins but cross-node overlay
    # traffic silently fails. Every overlay comes from $POOL (blackholed above).
    docker swarm init --advertise-addr "$A1" --listen-addr "$A1:2377" \
        --default-addr-pool "$POOL" --default-addr-pool-mask-length 24 >/dev/null
    d2 swarm join --token "$(docker swarm join-token -q worker)" \
        --advertise-addr "$A2" --listen-addr "$A2:2377" "$A1:2377" >/dev/null
    docker node update --label-add sg.node=n1 "$(docker info -f '{{.Swarm.NodeID}}')" >/dev/null
    docker node update --label-add sg.node=n2 "$(d2 info -f '{{.Swarm.NodeID}}')" >/dev/null
    docker network create -d overlay --attachable --subnet "$SUBNET" "$NET" >/dev/null

    local images=("$@")
    if [ "$do_build" = 1 ]; then
        images+=("sluicegate:local$TAG" "sluicegate-echo:local$TAG" "sluicegate-echo:v2$TAG")
    fi
    [ "${#images[@]}" = 0 ] || load "${images[@]}"
    trap - EXIT
    say "up in $((SECONDS - started)) s: overlay $NET ($SUBNET), pool $POOL blackholed, node 2 at unix://$D2_SOCK"
}

down() {
    trap - EXIT
    set +e
    local started=$SECONDS
    if [ "$(swarm_state)" = active ]; then
        for s in $(docker stack ls --format '{{.Name}}' 2>/dev/null); do docker stack rm "$s" >/dev/null; done
        for s in $(docker service ls -q 2>/dev/null); do docker service rm "$s" >/dev/null; done
    fi
    # Plain containers attached to the overlay (tests' gateways and clients).
    docker ps -aq --filter "network=$NET" | xargs -r docker rm -f >/dev/null 2>&1
    # Wait for the task containers to go before leaving: a swarm left while the
    # engine is still removing many of them can leave docker_gwbridge with a stale
    # endpoint count that only an engine restart clears.
    # (Node 1 only: node 2's engine goes with its directory, and after a partition
    # its containers stay until then.)
    local until=$((SECONDS + 60))
    while [ -n "$(docker ps -aq --filter label=com.docker.swarm.task.id 2>/dev/null)" ]; do
        [ "$SECONDS" -lt "$until" ] || { say "task containers still there after 60 s; leaving anyway"; break; }
        sleep 0.2
    done
    # Manager first: the worker's leave is then instant (worker first made the
    # manager's leave take seconds).
    docker swarm leave --force >/dev/null 2>&1
    [ -S "$D2_SOCK" ] && timeout 20 docker -H "unix://$D2_SOCK" swarm leave --force >/dev/null 2>&1
    if [ -f "$W/d2/dockerd.pid" ]; then
        local p
        p=$(cat "$W/d2/dockerd.pid")
        if kill "$p" 2>/dev/null; then
            wait_for 300 sh -c "! kill -0 $p" || kill -9 "$p" 2>/dev/null
        fi
    fi
    # A node-2 dockerd killed with SIGKILL leaves its containerd, the shims and the
    # containers behind; each names node 2's directory on its command line.
    local pids
    pids=$(ps -eo pid=,args= | awk -v d="$W/d2" 'index($0, d) && /containerd/ {print $1}')
    for p in $pids; do
        for c in $(ps --ppid "$p" -o pid= 2>/dev/null); do kill -9 "$c" 2>/dev/null; done
        kill -9 "$p" 2>/dev/null
    done
    mount | awk -v d="$W" 'index($3, d) == 1 {print $3}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    ip netns del "$NS" 2>/dev/null # also destroys the veth pair
    wait_for 100 sh -c "! ip link show $V1" || ip link del "$V1" 2>/dev/null
    # Leaving the swarm leaves docker_gwbridge; it goes once its endpoints are gone.
    local i
    for i in $(seq 20); do
        docker network inspect docker_gwbridge >/dev/null 2>&1 || break
        docker network rm docker_gwbridge >/dev/null 2>&1 && break
        sleep 0.5
    done
    while ip route del blackhole "$POOL" 2>/dev/null; do :; done
    rm -rf "$W"
    set -e
    local left=""
    [ "$(swarm_state)" = inactive ] || left="$left swarm:$(swarm_state)"
    ! ip netns list | grep -qw "$NS" || left="$left netns:$NS"
    ! ip link show "$V1" >/dev/null 2>&1 || left="$left link:$V1"
    ! ip route show | grep -q "blackhole $POOL" || left="$left route"
    if docker network inspect docker_gwbridge >/dev/null 2>&1; then
        # Not swarm state: the next `swarm init` reuses it. It stays when the engine
        # holds a stale endpoint count for it (moby#37018); say so, do not fail.
        say "warning: docker_gwbridge could not be removed: $(docker network rm docker_gwbridge 2>&1 | tail -1)"
    fi
    if [ -n "$left" ]; then
        say "down: left over:$left"
        return 1
    fi
    say "down in $((SECONDS - started)) s"
}

status() {
    local ok=0
    echo "node 1 swarm: $(swarm_state)"
    if [ -S "$D2_SOCK" ]; then
        echo "node 2 swarm: $(d2 info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo 'no answer')"
    else
        echo "node 2: not running"
        ok=1
    fi
    [ "$(swarm_state)" = active ] || ok=1
    if [ "$(swarm_state)" = active ]; then
        docker node ls
        docker service ls
    fi
    echo "netns: $(ip netns list | grep -w "$NS" || echo none)"
    echo "route: $(ip route show | grep "blackhole $POOL" || echo none)"
    return $ok
}

# A signal becomes an exit, so the EXIT traps below tear down.
trap 'exit 130' INT TERM HUP
case "${1:-}" in
up) shift; up "$@" ;;
down) down ;;
status) status ;;
load) shift; load "$@" ;;
build) build ;;
env)
    echo "SG_SWARM_DIR=$W SG_NET=$NET SG_SUBNET=$SUBNET SG_POOL=$POOL SG_NODE2_HOST=unix://$D2_SOCK SG_NODE2_ADDR=$A2"
    ;;
run)
    shift
    build_flag=()
    if [ "${1:-}" = --build ]; then
        build_flag=(--build)
        shift
    fi
    [ $# -gt 0 ] || { say "run: no command"; exit 2; }
    up "${build_flag[@]}"
    trap down EXIT
    set +e
    SG_SWARM_DIR=$W SG_NET=$NET SG_SUBNET=$SUBNET SG_NODE2_HOST="unix://$D2_SOCK" SG_TAG=$TAG "$@"
    rc=$?
    trap - EXIT
    down || rc=1
    exit $rc
    ;;
*)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
