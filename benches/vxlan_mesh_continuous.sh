#!/usr/bin/env bash
# Benchmark: the agents' always-on mesh (beacons). N agents (default 200) in namespaces on one
# bridge, each with a kernel vxlan device, run `netprobe agent --mesh-every PERIOD` (default 10s)
# with every other agent as a peer. Measured:
#   1. how long until every pair is up on the agents' /metrics (from the agents' start);
#   2. per agent, over SECONDS (default 60) after that: RSS (VmRSS) and CPU (user+system time as a
#      share of one core), median and max;
#   3. a cut of one direction (node 1 -> node 2, VXLAN only, on the bridge): how long until node
#      2's /metrics shows it down, whether node 2's other pairs and the reverse direction stay up,
#      and how long until it is up again once the cut is removed.
# Everything it makes is removed on exit.
#
#   sudo bash benches/vxlan_mesh_continuous.sh [N [PERIOD [SECONDS]]]      needs: iproute2, nft
#   sudo NETPROBE_BIN=/path/to/netprobe bash benches/vxlan_mesh_continuous.sh ...   another build
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
period=${2:-10s}
seconds=${3:-60}
tag="npc$$"
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
source benches/mesh_lab.sh

# NETPROBE_BIN: another build to measure (to compare two), instead of this tree's.
if [ -z "${NETPROBE_BIN:-}" ]; then cargo build --release --quiet -p netprobe; fi
bin=${NETPROBE_BIN:-$PWD/target/release/netprobe}
peers=$(for i in $(seq 1 "$n"); do printf '198.51.100.%s,' "$i"; done)
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { printf '%d.%d' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }
started=$(now_ms)
mesh_lab_up "$n" "$tag" "$token" "$bin" --mesh-every "$period" --peers "${peers%,}"
ready=$(now_ms)
# The switch's own address, from which one process reads every agent's /metrics.
ip -n "$tag-sw" addr add 198.51.100.254/24 dev br0
echo "mesh of $n agents, a beacon every $period to each peer: $((n * (n - 1))) ordered pairs"

# Reads every agent's /metrics (in the switch's namespace) and answers a question about them.
metrics() {
    ip netns exec "$tag-sw" python3 - "$n" "$@" <<'PY'
import sys, time, urllib.request, concurrent.futures as cf
n, what = int(sys.argv[1]), sys.argv[2]
def read(i):
    try:
        return i, urllib.request.urlopen(f"http://198.51.100.{i}:9473/metrics", timeout=10).read().decode()
    except Exception:
        return i, ""
def up(texts):
    # (from, to) -> value of pair_up, for every pair any agent shows
    pairs = {}
    for i, text in texts:
        for line in text.splitlines():
            if line.startswith("netprobe_vxlan_pair_up{"):
                labels, value = line.rsplit(" ", 1)
                f = labels.split('from="')[1].split('"')[0]; t = labels.split('to="')[1].split('"')[0]
                pairs[(f, t)] = value
    return pairs
with cf.ThreadPoolExecutor(16) as pool:
    texts = list(pool.map(read, range(1, n + 1)))
pairs = up(texts)
if what == "all-up":
    ok = sum(v == "1" for v in pairs.values())
    print(ok, n * (n - 1))
elif what == "pair":
    # pair_up of one pair, and how many of the others are not up
    f, t = sys.argv[3], sys.argv[4]
    others = sum(1 for k, v in pairs.items() if k != (f, t) and v != "1") + (n * (n - 1) - 1 - sum(1 for k in pairs if k != (f, t)))
    print(pairs.get((f, t), "absent"), others)
PY
}

# 1. Every pair up.
while :; do
    read -r ok total < <(metrics all-up)
    now=$(now_ms)
    if [ "$ok" = "$total" ]; then
        echo "every pair up: $ok of $total, $(secs $(( now - ready ))) s after the last agent listened ($(secs $(( now - started ))) s after the first started)"
        break
    fi
    if (( now - started > 300000 )); then echo "after 300 s: $ok of $total pairs up"; break; fi
    sleep 2
done

# 2. Steady state: CPU and memory per agent.
ticks=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A before
for pid in "${pids[@]}"; do before[$pid]=$(cpu_of "$pid"); done
sleep "$seconds"
rss=(); cpu=()
for pid in "${pids[@]}"; do
    rss+=("$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")")
    cpu+=("$(( $(cpu_of "$pid") - ${before[$pid]} ))")
done
python3 - "$ticks" "$seconds" "${rss[*]}" "${cpu[*]}" <<'PY'
import sys
ticks, seconds = int(sys.argv[1]), float(sys.argv[2])
rss = sorted(int(x) / 1024 for x in sys.argv[3].split())
cpu = sorted(int(x) / ticks / seconds * 100 for x in sys.argv[4].split())
print(f"over {seconds:.0f} s: RSS per agent median {rss[len(rss)//2]:.1f} MiB, max {rss[-1]:.1f} MiB; "
      f"CPU per agent median {cpu[len(cpu)//2]:.2f}% of a core, max {cpu[-1]:.2f}%")
PY

# 3. A cut of node 1 -> node 2 (VXLAN only), on the bridge; then its heal.
from=198.51.100.1; to=198.51.100.2
ip netns exec "$tag-sw" nft -f - <<NFT
table bridge cut {
    chain forward {
        type filter hook forward priority 0;
        ip saddr $from ip daddr $to udp dport 8472 drop
    }
}
NFT
cut_at=$(now_ms)
while :; do
    read -r value others < <(metrics pair node-1 node-2)
    now=$(now_ms)
    if [ "$value" = "0" ]; then
        echo "cut node-1 -> node-2: down on /metrics after $(secs $(( now - cut_at ))) s; pairs not up besides it: $others"
        break
    fi
    if (( now - cut_at > 120000 )); then echo "cut: not seen within 120 s (pair_up $value)"; break; fi
    sleep 0.5
done
ip netns exec "$tag-sw" nft delete table bridge cut
healed_at=$(now_ms)
while :; do
    read -r value others < <(metrics pair node-1 node-2)
    now=$(now_ms)
    if [ "$value" = "1" ]; then
        echo "healed: up again after $(secs $(( now - healed_at ))) s; pairs not up: $others"
        break
    fi
    if (( now - healed_at > 120000 )); then echo "heal: not seen within 120 s (pair_up $value)"; break; fi
    sleep 0.5
done

# 4. Reading what the mesh knows: `netprobe vxlan --from-mesh` over every agent (one call each),
#    from the switch's namespace, three times; the median wall time and what it read.
nodes=$(for i in $(seq 1 "$n"); do printf '198.51.100.%s ' "$i"; done)
times=()
for run in 1 2 3; do
    t0=$(now_ms)
    # shellcheck disable=SC2086
    out=$(NETPROBE_TOKEN=$token ip netns exec "$tag-sw" "$bin" vxlan --from-mesh -o json $nodes || true)
    times+=($(( $(now_ms) - t0 )))
done
read -r pairs failing unknown < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["pairs"], r["failing"], len(r["unknown"]))' "$out")
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
echo "vxlan --from-mesh over $n agents: $median ms (median of 3: ${times[*]} ms), $pairs pairs read, $failing failing, $unknown node(s) unknown"
