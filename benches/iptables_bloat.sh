#!/usr/bin/env bash
# Benchmark: `netprobe iptables --file` on a 1,055,488-line kube-router bloat dump (incident 3),
# against one `grep -c KUBE-ROUTER` pass and `sort | uniq -c | sort -rn` over the same file, and
# netprobe's peak memory. Every command writes its output to a file (GNU grep stops at the first
# match when its output is /dev/null, which would make it look far faster than it is).
#
#   bash benches/iptables_bloat.sh [LINES]        needs: hyperfine, GNU time (apt-get install hyperfine time)
#
# Targets: analysis <= 2x the grep pass; peak RSS <= 16 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1055488}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet -p netprobe -p netprobe-lab
./target/release/gen-iptables-bloat "$lines" > "$work/bloat.rules"
echo "dump: $(wc -l < "$work/bloat.rules") lines, $(du -h "$work/bloat.rules" | cut -f1)"

hyperfine --warmup 2 --runs 10 --export-json "$work/times.json" \
    -n grep "grep -c KUBE-ROUTER $work/bloat.rules > $work/grep.out" \
    -n netprobe "./target/release/netprobe iptables --file $work/bloat.rules > $work/netprobe.out || true" \
    -n sort-uniq "sort $work/bloat.rules | uniq -c | sort -rn > $work/sort.out"

python3 - "$work/times.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
g = r["grep"]
for name in ("netprobe", "sort-uniq"):
    print(f"{name}: {r[name]*1000:.0f} ms median = {r[name]/g:.1f}x grep ({g*1000:.0f} ms)")
PY

# netprobe exits 1 on this dump (it is bloated): that is its verdict, not a failure here.
rss_kib=$( (/usr/bin/time -f '%M' ./target/release/netprobe iptables --file "$work/bloat.rules" >/dev/null || true) 2>&1 | tail -1)
echo "netprobe peak RSS: $((rss_kib / 1024)) MiB (${rss_kib} KiB)"
