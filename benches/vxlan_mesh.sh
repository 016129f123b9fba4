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
source benches/mesh_lab.sh

cargo build --release --quiet -p netprobe
bin=$PWD/target/release/netprobe
mesh_lab_up "$n" "$tag" "$token" "$bin"
echo "mesh of $n agents: $((n * (n - 1))) ordered pairs"
NETPROBE_TOKEN="$token" hyperfine -N --output=pipe --warmup 1 --runs "${RUNS:-5}" \
    "ip netns exec $tag-1 $bin vxlan ${nodes[*]} --timeout 1s -o json"
NETPROBE_TOKEN="$token" ip netns exec "$tag-1" "$bin" vxlan "${nodes[@]}" --timeout 1s -o json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("verdict:", r["verdict"], "pairs:", len(r["pairs"]), "ok:", sum(p["verdict"]=="ok" for p in r["pairs"]))'
