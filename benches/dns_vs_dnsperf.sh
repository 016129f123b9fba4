#!/usr/bin/env bash
# Benchmark: 10,000 UDP queries to one dnsmasq, netprobe against dnsperf on the same server, whole
# process against whole process, two ways: one hyperfine run (no shell, output to a pipe, RUNS
# runs each) and the plain wall time of each process, start-up included (median of RUNS). netprobe
# runs twice: as it does by default (a socket and source port per query, as glibc does) and with
# --reuse-sockets (at most --concurrency sockets, as dnsperf does). Runs as root in a network
# namespace of its own (192.0.2.53 on its loopback), removed on exit.
#
#   sudo bash benches/dns_vs_dnsperf.sh        needs: dnsmasq-base dnsperf hyperfine
#
# Target (issue "Close to the floor"): netprobe at or under dnsperf's time.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-15}
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
dnsperf=(ip netns exec "$ns" dnsperf -s 192.0.2.53 -d "$work/queries.txt" -n 10000 -q 64)
netprobe=(ip netns exec "$ns" ./target/release/netprobe dns --endpoints 192.0.2.53 --protocol udp
    --count 10000 --interval 0 --concurrency 64 -o json)

hyperfine -N --output=pipe --warmup 2 --runs "$runs" --export-json "$work/times.json" \
    -n dnsperf "${dnsperf[*]}" \
    -n netprobe "${netprobe[*]}" \
    -n netprobe-reuse "${netprobe[*]} --reuse-sockets" >/dev/null
# One more run of each keeps its output for the summary below.
"${dnsperf[@]}" > "$work/dnsperf.out"
"${netprobe[@]}" > "$work/netprobe.out"
"${netprobe[@]}" --reuse-sockets > "$work/netprobe-reuse.out"

python3 - "$work" "$runs" "${dnsperf[*]}" "${netprobe[*]}" <<'PY'
import json, re, statistics, subprocess, sys, time
work, runs, dnsperf, netprobe = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
# The plain wall time of each process, start-up included, taken in turns.
wall = {"dnsperf": [], "netprobe": [], "netprobe-reuse": []}
commands = {"dnsperf": dnsperf, "netprobe": netprobe, "netprobe-reuse": netprobe + ["--reuse-sockets"]}
for _ in range(runs):
    for name, argv in commands.items():
        start = time.monotonic()
        subprocess.run(argv, stdout=subprocess.PIPE, check=True)
        wall[name].append(time.monotonic() - start)
r = {x["command"]: x["median"] for x in json.load(open(f"{work}/times.json"))["results"]}
lost = re.search(r"Queries lost:\s+(\d+)", open(f"{work}/dnsperf.out").read())
print(f"{'':16} {'hyperfine median':>17} {'wall median':>12}")
for name in commands:
    h, w = r[name], statistics.median(wall[name])
    extra = ""
    if name == "dnsperf":
        extra = f"lost {lost.group(1) if lost else '?'}"
    else:
        e = json.load(open(f"{work}/{name}.out"))["endpoints"][0]
        extra = (f"{h/r['dnsperf']:.2f}x / {w/statistics.median(wall['dnsperf']):.2f}x dnsperf, "
                 f"answered {e['answered']} of {e['sent']}")
    print(f"{name:16} {h*1000:14.1f} ms {w*1000:9.1f} ms  {extra}")
PY
