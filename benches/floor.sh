#!/usr/bin/env bash
# Every figure of benches/README.md's "Close to the floor" table from one run: the machine and the
# date, the release binary's size, the iptables benchmark (benches/iptables_bloat.sh) and the DNS
# benchmark (benches/dns_vs_dnsperf.sh). The fuzzing figures come from fuzz/run.sh (hours, not
# minutes). Run it on a machine doing nothing else.
#
#   sudo bash benches/floor.sh        needs: hyperfine time dnsperf dnsmasq-base
set -euo pipefail
cd "$(dirname "$0")/.."

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
echo "# $(rustc --version)"

cargo build --release --quiet -p netprobe
bytes=$(stat -c %s target/release/netprobe)
echo
echo "## release binary (stripped)"
python3 -c "import sys; b = int(sys.argv[1]); print(f'{b:,} bytes = {b / 1048576:.2f} MiB')" "$bytes"

echo
echo "## iptables: 1,055,488-line kube-router dump"
bash benches/iptables_bloat.sh

echo
echo "## dns: 10,000 UDP queries to one dnsmasq"
bash benches/dns_vs_dnsperf.sh
