#!/usr/bin/env bash
# Benchmark: the agents' continuous mesh. N agents (default 50) in namespaces on one bridge, each
# with a kernel vxlan device, run `netprobe agent --mesh-every PERIOD` (default 10s) with every
# other agent as a peer, for SECONDS (default 60). Then, per agent: RSS (VmRSS), CPU (user+system
# time over the run, as a share of one core; and with the tools it ran, nft, ip and ethtool, whose
# time the kernel adds to the agent's once they exit), rounds done and the mean and longest round (from its
# /metrics), and whether every pair is up. Everything it makes is removed on exit.
#
#   sudo bash benches/vxlan_mesh_continuous.sh [N [PERIOD [SECONDS]]]      needs: iproute2
#   sudo NETPROBE_BIN=/path/to/netprobe bash benches/vxlan_mesh_continuous.sh ...   another build
#   sudo MESH_SAMPLE=16 bash benches/vxlan_mesh_continuous.sh ...                  16 peers a round
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
period=${2:-10s}
seconds=${3:-60}
tag="npc$$"
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
source benches/mesh_lab.sh

# NETPROBE_BIN: another build to measure (to compare two), instead of this tree's.
if [ -z "${NETPROBE_BIN:-}" ]; then cargo build --release --quiet -p netprobe; fi
bin=${NETPROBE_BIN:-$PWD/target/release/netprobe}
peers=$(for i in $(seq 1 "$n"); do printf '198.51.100.%s,' "$i"; done)
# MESH_SAMPLE=K: each agent probes K peers a round (--mesh-sample K).
mesh_lab_up "$n" "$tag" "$token" "$bin" --mesh-every "$period" --peers "${peers%,}" \
    ${MESH_SAMPLE:+--mesh-sample "$MESH_SAMPLE"}
ticks=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tools_of() { awk '{print $16 + $17}' "/proc/$1/stat"; }
declare -A before tools_before
for pid in "${pids[@]}"; do before[$pid]=$(cpu_of "$pid"); tools_before[$pid]=$(tools_of "$pid"); done
echo "mesh of $n agents, a round every $period, for $seconds s: $((n * (n - 1))) ordered pairs per period"
sleep "$seconds"
rss=(); cpu=(); with_tools=()
for pid in "${pids[@]}"; do
    rss+=("$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")")
    own=$(( $(cpu_of "$pid") - ${before[$pid]} ))
    cpu+=("$own")
    with_tools+=("$(( own + $(tools_of "$pid") - ${tools_before[$pid]} ))")
done
python3 - "$ticks" "$seconds" "${rss[*]}" "${cpu[*]}" "${with_tools[*]}" <<'PY'
import sys
ticks, seconds = int(sys.argv[1]), float(sys.argv[2])
rss = [int(x) / 1024 for x in sys.argv[3].split()]
cpu = [int(x) / ticks / seconds * 100 for x in sys.argv[4].split()]
tools = [int(x) / ticks / seconds * 100 for x in sys.argv[5].split()]
print(f"RSS per agent: median {sorted(rss)[len(rss)//2]:.1f} MiB, max {max(rss):.1f} MiB")
print(f"CPU per agent: median {sorted(cpu)[len(cpu)//2]:.2f}% of a core, max {max(cpu):.2f}%")
print(f"CPU per agent with its tools: median {sorted(tools)[len(tools)//2]:.2f}% of a core, max {max(tools):.2f}%")
PY
# Rounds, their length and the pairs' verdicts, from each agent's /metrics.
for i in $(seq 1 "$n"); do
    ip netns exec "$tag-$i" python3 - "198.51.100.$i" <<'PY'
import sys, urllib.request
try:
    text = urllib.request.urlopen(f"http://{sys.argv[1]}:9473/metrics", timeout=30).read().decode()
except Exception as e:  # an agent that does not answer is counted, not a reason to stop
    print(f"{sys.argv[1]}: /metrics unreadable: {e}", file=sys.stderr); sys.exit(0)
def value(prefix):
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(prefix))
rounds, total = value("netprobe_vxlan_round_duration_seconds_count"), value("netprobe_vxlan_round_duration_seconds_sum")
up = [l for l in text.splitlines() if l.startswith("netprobe_vxlan_pair_up{")]
print(int(rounds), total / max(rounds, 1), sum(l.endswith(" 1") for l in up), len(up))
PY
done | awk '{rounds+=$1; if ($2>longest) longest=$2; mean+=$2; up+=$3; pairs+=$4; n++}
    END {if (n == 0) {print "rounds: no agent answered /metrics"; exit}
         printf "answered /metrics: %d agents; rounds per agent: %.1f, mean round %.2f s (slowest agent'"'"'s mean %.2f s), pairs up: %d of %d\n", n, rounds/n, mean/n, longest, up, pairs}'
