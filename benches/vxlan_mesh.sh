#!/usr/bin/env bash
# Benchmark: `netprobe vxlan` over a mesh of N agents (default 20: 380 ordered pairs), each in a
# network namespace of its own on one bridge, each with a kernel vxlan device on 8472. Everything it
# makes is removed on exit.
#
#   sudo RUNS=5 bash benches/vxlan_mesh.sh [N]          needs: iproute2, hyperfine
#
# Target (issue "netprobe vxlan"): the mesh's verdict in under 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
tag="npm$$"
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
cleanup() {
    for i in $(seq 1 "$n"); do ip netns pids "$tag-$i" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
    for i in $(seq 1 "$n") sw; do ip netns del "$tag-$i" 2>/dev/null || true; done
}
trap cleanup EXIT

cargo build --release --quiet -p netprobe
bin=$PWD/target/release/netprobe
ip netns add "$tag-sw"
ip -n "$tag-sw" link add br0 type bridge forward_delay 0 stp_state 0
ip -n "$tag-sw" link set br0 up
nodes=()
for i in $(seq 1 "$n"); do
    ns="$tag-$i"; ip="198.51.100.$i"
    ip netns add "$ns"
    ip -n "$tag-sw" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$tag-sw" link set "p$i" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link add flannel.1 type vxlan id 1 local "$ip" dstport 8472 dev eth0
    ip -n "$ns" link set flannel.1 up
    ip netns exec "$ns" env NETPROBE_TOKEN="$token" "$bin" agent --listen "$ip:9473" 2>/dev/null &
    nodes+=("$ip")
done
for i in $(seq 1 "$n"); do
    until [ -n "$(ip netns exec "$tag-$i" ss -Hltn 'sport = :9473')" ]; do sleep 0.05; done
done
echo "mesh of $n agents: $((n * (n - 1))) ordered pairs"
NETPROBE_TOKEN="$token" hyperfine -N --output=pipe --warmup 1 --runs "${RUNS:-5}" \
    "ip netns exec $tag-1 $bin vxlan ${nodes[*]} --timeout 1s -o json"
NETPROBE_TOKEN="$token" ip netns exec "$tag-1" "$bin" vxlan "${nodes[@]}" --timeout 1s -o json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("verdict:", r["verdict"], "pairs:", len(r["pairs"]), "ok:", sum(p["verdict"]=="ok" for p in r["pairs"]))'
