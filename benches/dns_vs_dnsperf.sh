#!/usr/bin/env bash
# Benchmark: 10,000 UDP queries to one dnsmasq, `netprobe dns --interval 0 --concurrency 64`
# against `dnsperf -n 10000 -q 64` on the same server, whole process against whole process.
# Runs as root in a network namespace of its own (192.0.2.53 on its loopback), removed on exit.
#
#   sudo bash benches/dns_vs_dnsperf.sh        needs: dnsmasq-base dnsperf hyperfine
#
# Target (issue "netprobe dns"): netprobe's wall time at most 1.5x dnsperf's.
set -euo pipefail
cd "$(dirname "$0")/.."
ns="npbench$$"
work=$(mktemp -d)
cleanup() {
    [ -f "$work/dnsmasq.pid" ] && kill "$(cat "$work/dnsmasq.pid")" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet -p netprobe
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add 192.0.2.53/32 dev lo
ip netns exec "$ns" dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --user=root \
    --listen-address=192.0.2.53 --bind-interfaces --pid-file="$work/dnsmasq.pid" \
    --address=/kubernetes.default.svc.cluster.local/10.96.0.1
sleep 0.5
echo "kubernetes.default.svc.cluster.local A" > "$work/queries.txt"

# Timed without a shell (-N) and with output to a pipe, the same for both; one more run of each
# keeps its output for the summary below.
hyperfine -N --output=pipe --warmup 2 --runs 15 --export-json "$work/times.json" \
    -n dnsperf "ip netns exec $ns dnsperf -s 192.0.2.53 -d $work/queries.txt -n 10000 -q 64" \
    -n netprobe "ip netns exec $ns ./target/release/netprobe dns --endpoints 192.0.2.53 --protocol udp --count 10000 --interval 0 --concurrency 64 -o json"
ip netns exec "$ns" dnsperf -s 192.0.2.53 -d "$work/queries.txt" -n 10000 -q 64 > "$work/dnsperf.out"
ip netns exec "$ns" ./target/release/netprobe dns --endpoints 192.0.2.53 --protocol udp --count 10000 \
    --interval 0 --concurrency 64 -o json > "$work/netprobe.out"

python3 - "$work/times.json" "$work/netprobe.out" "$work/dnsperf.out" <<'PY'
import json, re, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
e = json.load(open(sys.argv[2]))["endpoints"][0]
lost = re.search(r"Queries lost:\s+(\d+)", open(sys.argv[3]).read())
print(f"dnsperf:  {r['dnsperf']*1000:.0f} ms median (lost {lost.group(1) if lost else '?'})")
print(f"netprobe: {r['netprobe']*1000:.0f} ms median = {r['netprobe']/r['dnsperf']:.2f}x dnsperf "
      f"(answered {e['answered']} of {e['sent']}, p50 {e['latency_ms']['p50']} ms)")
PY
