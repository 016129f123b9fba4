#!/usr/bin/env python3
"""How the agents' continuous mesh grows with the number of nodes: a simulation of the schedule
the agents follow (vxlan/mesh.rs), for node counts this machine cannot hold.

Each of N agents starts its round at its own offset in the period (a hash of its name: uniform
here), walks the N-1 peers from its own place in the list, at most 8 sends at a time and at most
400 probe packets a second (the agent's caps; a pair is COUNT probes and one control datagram),
and each pair holds an expectation (an open capture) at the peer from just before its send until
its collect: the send time plus --timeout plus the collect call. An agent refuses a 65th
expectation at once (MAX_OPEN = 64): that pair is untested for the round.

    python3 benches/mesh_scale_model.py [--period 30] [--count 5] [--hold 1.1] [--send 0.06]

--hold and --send default to what benches/vxlan_mesh_continuous.sh measures on this machine
(see README). Prints, per N: pairs per period, each node's probe packets per second (mean), the
round's length, and the expectations open at one node at once (mean and peak over every node),
against the cap of 64.
"""
import argparse
import random

MAX_SENDS, MAX_PPS, MAX_OPEN = 8, 400, 64


def simulate(n, period, count, hold, send, seed=1):
    rng = random.Random(seed)
    offsets = [rng.uniform(0, period) for _ in range(n)]
    packets = count + 1
    pairs_per_second = min(MAX_SENDS / send, MAX_PPS / packets)
    # Expectation intervals at each peer, over two periods so rounds that wrap are counted.
    events = [[] for _ in range(n)]
    round_length = (n - 1) / pairs_per_second + send + hold
    for a in range(n):
        start = rng.randrange(n)  # its own place in the list
        for k in range(n - 1):
            peer = (start + k) % n
            if peer == a:
                peer = (peer + 1) % n
            t0 = offsets[a] + k / pairs_per_second
            for shift in (0.0, period):
                events[peer].append((t0 + shift, 1))
                events[peer].append((t0 + shift + send + hold, -1))
    peaks, means = [], []
    for node_events in events:
        node_events.sort()
        open_now, peak, area, last = 0, 0, 0.0, None
        for t, step in node_events:
            if last is not None and period <= t <= 2 * period:
                area += open_now * (t - max(last, period))
            open_now += step
            last = t
            if period <= t <= 2 * period:
                peak = max(peak, open_now)
        peaks.append(peak)
        means.append(area / period)
    return {
        "pairs": n * (n - 1),
        "pps": (n - 1) * packets / period,
        "round": round_length,
        "mean_open": sum(means) / n,
        "peak_open": max(peaks),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--period", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--hold", type=float, default=1.1, help="seconds an expectation stays open after the send")
    parser.add_argument("--send", type=float, default=0.06, help="seconds one send takes")
    parser.add_argument("--nodes", default="50,100,300,500,1000")
    args = parser.parse_args()
    print(f"period {args.period:g} s, {args.count} probes a pair, send {args.send:g} s, hold {args.hold:g} s")
    print(f"{'nodes':>6} {'pairs/period':>13} {'pkt/s/node':>11} {'round s':>8} {'open mean':>10} {'open peak':>10}  verdict")
    for n in (int(x) for x in args.nodes.split(",")):
        r = simulate(n, args.period, args.count, args.hold, args.send)
        fits = r["round"] < args.period and r["peak_open"] <= MAX_OPEN
        verdict = "fits" if fits else ("round longer than the period" if r["round"] >= args.period else "over the 64 open expectations: sample")
        print(f"{n:>6} {r['pairs']:>13,} {r['pps']:>11.0f} {r['round']:>8.1f} {r['mean_open']:>10.1f} {r['peak_open']:>10}  {verdict}")


if __name__ == "__main__":
    main()
