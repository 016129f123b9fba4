#!/usr/bin/env python3
"""How the agents' always-on mesh (beacons) grows with the number of nodes, for node counts this
machine cannot hold: packets, bytes, CPU, memory and /metrics series per node, and how soon a cut
and its heal show.

The design (probes/agent/src/mesh/): every period each agent sends each peer one beacon (a VXLAN
packet of 106 bytes, 120 on an Ethernet wire) and receives one from each; it evaluates every peer
twice a period; a peer silent for 1.5 periods and a second is asked on its agent's control
channel; a pair's verdict covers the last period. Nothing else runs per pair in the steady state
(no HTTP call, no firewall read): a bad pair costs one diagnosis (netprobe vxlan's exchange) at
most every 5 minutes, one per agent at a time.

CPU and memory are linear fits through two measurements of benches/vxlan_mesh_continuous.sh on
this machine (50 and 200 agents at 10 s, medians), checked against a third that the fit did not
use (100 agents):

    python3 benches/mesh_scale_model.py [--period 10] [--nodes 100,1000,5000]
        [--measured 50:0.18:14.0,200:0.38:18.4] [--check 100:0.23:15.5]   agents:CPU %:RSS MiB
"""
import argparse

PACKET_WIRE = 120  # bytes of a beacon on an Ethernet wire (its IPv4 packet is 106)
SERIES_PER_PEER = 5  # pair_up, pair_verdict, probes_sent, probes_arrived, pair_jitter_seconds
SERIES_PER_NODE = 3  # netprobe_vxlan_peers{to,state}


def fit(points):
    """A line through two (x, y) points: (intercept, slope)."""
    (x0, y0), (x1, y1) = points
    slope = (y1 - y0) / (x1 - x0)
    return y0 - slope * x0, slope


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--nodes", default="50,100,200,1000,5000")
    parser.add_argument("--measured", default="50:0.18:14.0,200:0.38:18.4")
    parser.add_argument("--check", default="100:0.23:15.5")
    args = parser.parse_args()
    measured = [tuple(float(v) for v in m.split(":")) for m in args.measured.split(",")]
    # CPU against packets a second through the agent (sent and received), RSS against peers.
    cpu = fit([(2 * (n - 1) / args.period, c) for n, c, _ in measured])
    rss = fit([(n - 1, r) for n, _, r in measured])
    p = args.period
    print(f"period {p:g} s: a beacon to each peer each period; fits from {args.measured}")
    print(" nodes  beacons/s/node  wire kB/s each way  CPU % of a core  RSS MiB  series/node (all)  series/cluster (all)  (failing)")
    for n in [int(x) for x in args.nodes.split(",")]:
        pps = (n - 1) / p
        series = SERIES_PER_PEER * (n - 1) + SERIES_PER_NODE
        print(
            f"{n:6d}  {pps:14.1f}  {pps * PACKET_WIRE / 1000:18.1f}  {cpu[0] + cpu[1] * 2 * pps:15.2f}"
            f"  {rss[0] + rss[1] * (n - 1):7.1f}  {series:17,d}  {series * n:20,d}  {SERIES_PER_NODE * n:9,d}"
        )
    print()
    print(f"a cut shows within 1.5 x {p:g} + 1 s of silence, + an evaluation (<= {p / 2:g} s) + the control call:"
          f" at most {2 * p + 1:g} s and the call")
    print(f"a heal shows after the next beacon (<= {p:g} s), an evaluation (<= {p / 2:g} s) and the period the"
          f" loss stays in the verdict ({p:g} s): at most {2.5 * p:g} s")
    print()
    print("checked against a measurement the fits did not use:")
    for n, c, r in [tuple(float(v) for v in m.split(":")) for m in args.check.split(",")]:
        print(f"  {int(n)} agents: measured {c:.2f}% and {r:.1f} MiB, model {cpu[0] + cpu[1] * 2 * (n - 1) / p:.2f}%"
              f" and {rss[0] + rss[1] * (n - 1):.1f} MiB")


if __name__ == "__main__":
    main()
