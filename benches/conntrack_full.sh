#!/usr/bin/env bash
# Benchmark: `netprobe conntrack` on a full table. A network namespace's table is filled to the
# host's limit (nf_conntrack_max, read-only in a child namespace: 262,144 by default) with assured
# TCP connections over loopback, as tests/conntrack_lab.rs does; then `netprobe conntrack --window
# 0s` (no waiting: the reading alone) is timed with hyperfine, and its peak RSS taken with
# /usr/bin/time. Everything it makes goes with the namespace.
#
#   sudo bash benches/conntrack_full.sh          needs: iproute2, nft, python3, hyperfine, time
set -euo pipefail
cd "$(dirname "$0")/.."
ns="npct$$"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
cargo build --release --quiet -p netprobe
bin=$PWD/target/release/netprobe
ip netns add "$ns"
ip netns exec "$ns" sh -c 'ip link set lo up &&
    nft add table inet t && nft add chain inet t out "{ type filter hook output priority 0; }" &&
    nft add rule inet t out ct state new counter &&
    sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_close=600'
ip netns exec "$ns" python3 - <<'PY'
import socket, struct, time
linger = struct.pack("ii", 1, 0)
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 7000)); server.listen(4096)
start, made = time.time(), 0
for i in range(400_000):
    d = i // 2000
    client = socket.socket(); client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger); client.settimeout(0.5)
    try:
        client.connect((f"127.1.{d // 250}.{1 + d % 250}", 7000))
        accepted, _ = server.accept(); accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger); accepted.close()
        made += 1
    except OSError:
        break
    finally:
        client.close()
print(f"filled with {made} connections in {time.time() - start:.1f} s")
PY
echo "entries: $(ip netns exec "$ns" cat /proc/sys/net/netfilter/nf_conntrack_count) of $(cat /proc/sys/net/netfilter/nf_conntrack_max)"
ip netns exec "$ns" hyperfine -N --runs 10 --warmup 1 -i --output=pipe "$bin conntrack --window 0s -o json"
ip netns exec "$ns" /usr/bin/time -f "peak RSS %M KiB, %e s" "$bin" conntrack --window 0s -o json >/dev/null || true
