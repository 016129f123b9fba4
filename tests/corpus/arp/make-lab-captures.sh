#!/usr/bin/env bash
# Regenerates the lab captures of tests/corpus/arp/ (see README.md there). Needs root, iproute2,
# tcpdump, iputils-arping and mergecap (wireshark-common). Everything happens in namespaces this
# script makes and removes; addresses are documentation ones only.
set -euo pipefail
cd "$(dirname "$0")"
p="npcorpus$$"
cleanup() { for ns in sw client other sp1 sp2; do ip netns del "$p-$ns" 2>/dev/null || true; done; }
trap cleanup EXIT
ip netns add "$p-sw"; ip netns exec "$p-sw" ip link add br0 type bridge forward_delay 0 stp_state 0
ip netns exec "$p-sw" ip link set br0 up
n=0
plug() { # ns cidr mac
    ip netns add "$p-$1"; ip netns exec "$p-$1" ip link set lo up
    ip netns exec "$p-sw" ip link add "port$n" type veth peer name eth0 netns "$p-$1"
    ip netns exec "$p-sw" ip link set "port$n" master br0 up
    ip netns exec "$p-$1" ip link set eth0 address "$3"
    ip netns exec "$p-$1" ip addr add "$2" dev eth0; ip netns exec "$p-$1" ip link set eth0 up
    n=$((n + 1))
}
plug client 192.0.2.1/24 02:00:5e:00:53:01
plug other 192.0.2.2/24 02:00:5e:00:53:02
plug sp1 192.0.2.11/24 00:00:5e:00:53:11
plug sp2 192.0.2.12/24 00:00:5e:00:53:12
ip netns exec "$p-sp1" ip addr add 192.0.2.100/32 dev eth0
sleep 1
pid=
capture() { # file tcpdump-args... : starts tcpdump on the client, its pid in $pid
    local file=$1; shift
    ip netns exec "$p-client" tcpdump -U -n -i eth0 "$@" -w "$file" arp or udp >/dev/null 2>&1 &
    pid=$!
    sleep 1
}
stop() { sleep 1; kill "$pid"; wait "$pid" || true; }
big_udp() { ip netns exec "$p-client" bash -c 'head -c 1000 /dev/zero > /dev/udp/192.0.2.11/9'; }
# 1. A switched port: the client sees the other host's broadcast requests for the VIP, but not the
#    unicast answers to them (the bridge has learned where the other host is). The client asks too.
ip netns exec "$p-other" arping -c 1 -I eth0 192.0.2.11 >/dev/null   # the bridge learns every port
ip netns exec "$p-client" arping -c 1 -I eth0 192.0.2.11 >/dev/null
capture switched-lan.pcap
ip netns exec "$p-other" arping -q -b -c 6 -I eth0 192.0.2.100 &
other=$!
sleep 0.5
ip netns exec "$p-client" arping -q -b -c 6 -I eth0 192.0.2.100 || true
wait "$other" || true
stop
# 2. Only announcements: sp1 and then sp2 announce the VIP with gratuitous ARP, nobody asks.
ip netns exec "$p-sp2" ip addr add 192.0.2.100/32 dev eth0
capture garp-only.pcap
ip netns exec "$p-sp1" arping -q -U -c 2 -I eth0 -s 192.0.2.100 192.0.2.100 || true
ip netns exec "$p-sp2" arping -q -A -c 2 -I eth0 -s 192.0.2.100 192.0.2.100 || true
stop
ip netns exec "$p-sp2" ip addr del 192.0.2.100/32 dev eth0
# 3. A short snap length (tcpdump -s 50): large UDP datagrams are cut, ARP (42 bytes) is whole.
capture snaplen50.pcap -s 50
big_udp; big_udp
ip netns exec "$p-client" arping -q -c 3 -I eth0 192.0.2.100 || true
stop
# 4. Several interfaces of different link types in one pcapng: the snap-length capture (Ethernet)
#    merged with a capture of the same exchange on -i any (Linux SLL2) and one written as raw IP.
capture any.pcap -i any -y LINUX_SLL2
ip netns exec "$p-client" arping -q -c 2 -I eth0 192.0.2.100 || true
big_udp
stop
editcap -T rawip4 -C 14 snaplen50.pcap rawip.pcap >/dev/null 2>&1 || editcap -T rawip -C 14 snaplen50.pcap rawip.pcap
mergecap -F pcapng -w multi-linktype.pcapng snaplen50.pcap rawip.pcap any.pcap
# 5. A pcapng whose first interface is not Ethernet: the raw-IP copy described first.
mergecap -F pcapng -w tun-first.pcapng rawip.pcap snaplen50.pcap
rm -f any.pcap rawip.pcap
# 6. The kernel's own re-check of a cached entry (neighbour unreachability detection): the client
#    sends UDP to the VIP every 250 ms with its entry's reachable time cut to 1 s, so it re-checks
#    it with unicast requests to the owner's MAC (ucast_solicit, 3, a second apart). Answered; then
#    with a bridge rule dropping ARP to the owner's MAC: the entry fails, a broadcast request
#    answers again, and the cycle repeats (MetalLB issue 2920's stalls).
ip netns exec "$p-client" sysctl -qw net.ipv4.neigh.eth0.base_reachable_time_ms=1000 net.ipv4.neigh.eth0.delay_first_probe_time=1
udp_to_vip() { ip netns exec "$p-client" bash -c 'for i in $(seq 40); do echo x > /dev/udp/192.0.2.100/9; sleep 0.25; done'; }
for answered in yes no; do
    if [ $answered = no ]; then
        ip netns exec "$p-sw" nft add table bridge unicast_arp
        ip netns exec "$p-sw" nft add chain bridge unicast_arp forward '{ type filter hook forward priority 0; }'
        ip netns exec "$p-sw" nft add rule bridge unicast_arp forward ether type arp ether daddr 00:00:5e:00:53:11 drop
    fi
    ip netns exec "$p-client" ip neigh flush dev eth0
    capture "kernel-recheck-$answered.pcap"
    udp_to_vip
    stop
done
mv kernel-recheck-yes.pcap kernel-unicast-recheck-answered.pcap
mv kernel-recheck-no.pcap kernel-unicast-recheck-unanswered.pcap
ls -l ./*.pcap ./*.pcapng
