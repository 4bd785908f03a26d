#!/usr/bin/env bash
# Captures the Docker API answers that Swarm discovery's unit tests parse, from a real
# single-node swarm on this machine, into tests/fixtures/swarm/. Run it under the
# Docker lock:  flock /work/docker.lock scripts/swarm-fixtures.sh
# It builds the echo agent image from an already built debug example (nothing is
# pulled), and always leaves swarm mode and removes the blackhole route and image.
# Network safety: nothing here sends a packet to an overlay address; the overlay's
# subnet is blackholed on the host while the swarm is up.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/tests/fixtures/swarm"
subnet=10.77.9.0/24
net=sgfix
tag=sluicegate-echo:local-sgfix
api() { curl -sS --max-time 5 --unix-socket /var/run/docker.sock "http://localhost/v1.41$1"; }
pretty() { python3 -m json.tool --indent 1; }

cleanup() {
    set +e
    for s in $(docker service ls -q 2>/dev/null); do docker service rm "$s" >/dev/null; done
    # A leave right after draining the only node can stop half-way (state "active",
    # no node id): leave again until the engine says inactive.
    for _ in 1 2 3 4 5; do
        docker swarm leave --force >/dev/null 2>&1
        [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" = inactive ] && break
        sleep 1
    done
    ip route del blackhole "$subnet" 2>/dev/null
    docker rmi -f "$tag" >/dev/null 2>&1
    echo "swarm-fixtures: torn down (swarm: $(docker info -f '{{.Swarm.LocalNodeState}}'))"
}
trap cleanup EXIT

"$root/scripts/build-images.sh" --only echo --profile debug --no-build \
    --tag-suffix -sgfix --target-dir "$root/target" --label sluicegate.test=fixtures
docker swarm init --advertise-addr 127.0.0.1 >/dev/null
ip route add blackhole "$subnet"
docker network create -d overlay --attachable --subnet "$subnet" "$net" >/dev/null
common=(-d --no-resolve-image --network "$net" --stop-signal SIGUSR1 --stop-grace-period 30s)
# Service labels and container labels; the service's pool wins over the container's.
docker service create "${common[@]}" --name shop_blue --replicas 2 \
    --label com.docker.stack.namespace=shop \
    --label sluicegate.pool=agent-blue --label sluicegate.weight=2 \
    --container-label sluicegate.pool=from-container --container-label sluicegate.port=8080 \
    --container-label sluicegate.health.path=/health "$tag" >/dev/null
docker service create "${common[@]}" --name shop_green --replicas 1 \
    --label com.docker.stack.namespace=shop \
    --container-label sluicegate.enable=true --container-label sluicegate.port=8080 "$tag" >/dev/null
docker service create "${common[@]}" --name shop_bad --replicas 1 \
    --label sluicegate.pool="bad pool" "$tag" >/dev/null
docker service create "${common[@]}" --name plain --replicas 1 "$tag" >/dev/null
for _ in $(seq 1 60); do
    running=$(api '/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D' \
        | python3 -c 'import json,sys; print(sum(t["Status"]["State"]=="running" for t in json.load(sys.stdin)))')
    [ "$running" = 5 ] && break
    sleep 0.5
done
echo "swarm-fixtures: $running tasks running"
since=$(date +%s)
api /services | pretty >"$out/services.json"
api /nodes | pretty >"$out/nodes.json"
api '/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D' | pretty >"$out/tasks.json"
api /info | python3 -c 'import json,sys; i=json.load(sys.stdin); print(json.dumps({"Swarm": i["Swarm"]}, indent=1))' >"$out/info_manager.json"
# Scale blue 2 -> 1: one task keeps running (it ignores SIGUSR1) with desired state shutdown.
docker service scale -d shop_blue=1 >/dev/null
sleep 2
api /tasks | pretty >"$out/tasks_all_scaled.json"
api '/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D' | pretty >"$out/tasks_scaled.json"
gone=$(python3 -c 'import json,sys; print(next(t["ID"] for t in json.load(open(sys.argv[1])) if t["DesiredState"]!="running" and t["Status"]["State"]=="running"))' "$out/tasks_all_scaled.json")
api "/tasks/$gone" | pretty >"$out/task_stopping.json"
node=$(docker info -f '{{.Swarm.NodeID}}')
docker node update --availability drain "$node" >/dev/null
sleep 1
api /nodes | pretty >"$out/nodes_drain.json"
api "/events?since=$since&until=$(date +%s)&filters=%7B%22type%22%3A%5B%22service%22%2C%22node%22%5D%7D" >"$out/events.jsonl"
api /services/nonexistent >"$out/error_404.json" || true
# What an engine outside the swarm answers (a worker's answer differs only in its text).
docker swarm leave --force >/dev/null 2>&1 || true
sleep 1
curl -sS --max-time 5 -o "$out/error_not_manager.json" -w '%{http_code}\n' --unix-socket /var/run/docker.sock http://localhost/v1.41/services
echo "swarm-fixtures: written to $out"; ls -la "$out"
