# Sourced by the vxlan benches: N agents (198.51.100.1 to .N), each in a network namespace of its
# own on one bridge, with a kernel vxlan device on 8472 (flannel's VNI 1), started with NODE_NAME
# node-I and the arguments given, all removed on exit.
#
#   mesh_lab_up N TAG TOKEN BINARY [AGENT ARGUMENTS...]
# leaves: nodes (the agents' addresses), pids (the agents' processes).

mesh_lab_up() {
    local n=$1 tag=$2 token=$3 bin=$4
    shift 4
    nodes=(); pids=()
    mesh_tag=$tag; mesh_n=$n
    trap mesh_lab_down EXIT
    ip netns add "$tag-sw"
    ip -n "$tag-sw" link add br0 type bridge forward_delay 0 stp_state 0
    ip -n "$tag-sw" link set br0 up
    local i ns ip
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
        # --no-drop-trace: every lab agent shares one kernel, so each one's tracefs instance would
        # filter every packet of all the others; on a real node one agent has its kernel alone.
        ip netns exec "$ns" env NETPROBE_TOKEN="$token" NODE_NAME="node-$i" \
            "$bin" agent --listen "$ip:9473" --no-drop-trace "$@" 2>/dev/null &
        pids+=($!)
        nodes+=("$ip")
    done
    for i in $(seq 1 "$n"); do
        until [ -n "$(ip netns exec "$tag-$i" ss -Hltn 'sport = :9473')" ]; do sleep 0.05; done
    done
    mesh_lab_neighbours "$n" "$tag"
}

# Every node knows every other's MAC, as nodes of a running cluster do. Without this the lab does
# not model N machines: the kernel's ARP table is one table for all namespaces, so N(N-1) entries
# pass its gc_thresh3 (1024 by default) from about 33 nodes on ("neighbour: arp_cache: neighbor
# table overflow!" in dmesg), new entries fail, and TCP SYNs die until the agents time out.
# Permanent entries are exempt from that limit; the host's settings are not touched.
mesh_lab_neighbours() {
    local n=$1 tag=$2 i j
    local -a macs
    for i in $(seq 1 "$n"); do
        macs[i]=$(ip -n "$tag-$i" -o link show eth0 | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
    done
    for i in $(seq 1 "$n"); do
        for j in $(seq 1 "$n"); do
            [ "$i" = "$j" ] || echo "neigh replace 198.51.100.$j lladdr ${macs[j]} dev eth0 nud permanent"
        done | ip -n "$tag-$i" -batch -
    done
}

mesh_lab_down() {
    local pid i
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for i in $(seq 1 "$mesh_n") sw; do ip netns del "$mesh_tag-$i" 2>/dev/null || true; done
}
