#!/usr/bin/env bash
# Benchmark: `netprobe iptables --file DUMP -o json` on a 1,055,488-line kube-router bloat dump
# (incident 3) against one `grep -c KUBE-ROUTER` pass over the same file, in one hyperfine run:
# no shell (-N), output to a pipe for both (GNU grep stops at the first match when its output is
# /dev/null, which makes it look far faster than it is), warm page cache, RUNS runs each. Prints
# both medians and the ratio, then netprobe's peak memory.
#
#   bash benches/iptables_bloat.sh [LINES]        needs: hyperfine, GNU time (apt-get install hyperfine time)
#
# Targets (issue "Close to the floor"): at most 1.5x grep; peak RSS at most 16 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1055488}
runs=${RUNS:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet -p netprobe -p netprobe-lab
./target/release/gen-iptables-bloat "$lines" > "$work/bloat.rules"
echo "dump: $(wc -l < "$work/bloat.rules") lines, $(( $(stat -c %s "$work/bloat.rules") / 1000000 )) MB"

hyperfine -N --output=pipe --warmup 3 --runs "$runs" --export-json "$work/times.json" -i \
    -n grep "grep -c KUBE-ROUTER $work/bloat.rules" \
    -n netprobe "./target/release/netprobe iptables --file $work/bloat.rules -o json" >/dev/null

python3 - "$work/times.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
g, n = r["grep"]["median"], r["netprobe"]["median"]
print(f"grep -c KUBE-ROUTER: {g*1000:.1f} ms median (mean user {r['grep']['user']*1000:.1f} ms, system {r['grep']['system']*1000:.1f} ms)")
print(f"netprobe iptables:   {n*1000:.1f} ms median (mean user {r['netprobe']['user']*1000:.1f} ms, system {r['netprobe']['system']*1000:.1f} ms)")
print(f"ratio: {n/g:.2f}x grep")
PY

# netprobe exits 1 on this dump (it is bloated): that is its verdict, not a failure here.
rss_kib=$( (/usr/bin/time -f '%M' ./target/release/netprobe iptables --file "$work/bloat.rules" -o json >/dev/null || true) 2>&1 | tail -1)
echo "netprobe peak RSS: $((rss_kib / 1024)) MiB (${rss_kib} KiB)"
