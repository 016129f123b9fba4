#!/usr/bin/env python3
"""How the agents' continuous mesh grows with the number of nodes: a simulation of the schedule
the agents follow (vxlan/mesh.rs and vxlan/batch.rs), for node counts this machine cannot hold.

Each of N agents starts its round at its own offset in the period (a hash of its name: uniform
here). A round takes the peers 64 at a time (MAX_BATCH), one such wave after another; a wave is
one expect call to each of its peers, one send of every probe to all of them (COUNT probes and as
many control datagrams per peer, at most 400 packets a second: the agent's budget, and never less
than one peer's COUNT x 10 ms gaps), --timeout, and one collect call to each peer. Each peer holds
an expectation from the wave's start to its end; an agent refuses a 65th (MAX_OPEN = 64) as busy:
that pair is untested for the round.

    python3 benches/mesh_scale_model.py [--period 30] [--count 5] [--timeout 1] [--overhead 0.6]
                                        [--sample K] [--nodes 50,100,...]

--overhead (the calls' time in a wave) defaults to what benches/vxlan_mesh_continuous.sh measures
on this machine: 50 agents, 49 peers each, rounds of 2.86 s = 1.23 s sending + 1 s timeout +
0.63 s. --sample K probes K peers a round (a rotating window over the list), so each pair is
probed every (N-1)/K rounds. Prints, per N: pairs per period, each node's packets per second, the
round's length, and the expectations open at one node at once (mean and peak over every node),
against the cap of 64.
"""
import argparse
import math
import random

MAX_BATCH, MAX_PPS, MAX_OPEN, GAP = 64, 400, 64, 0.010


def send_time(count, targets):
    return max(targets * 2 * count / MAX_PPS, count * GAP)


def simulate(n, period, count, timeout, overhead, sample, seed=1):
    rng = random.Random(seed)
    peers = min(sample or n - 1, n - 1)
    waves = [min(MAX_BATCH, peers - k) for k in range(0, peers, MAX_BATCH)]
    lengths = [overhead + send_time(count, size) + timeout for size in waves]
    round_length = sum(lengths)
    # Expectation intervals at each node, over two periods so rounds that wrap are counted.
    events = [[] for _ in range(n)]
    for a in range(n):
        offset = rng.uniform(0, period)
        start = rng.randrange(n)  # its own place in the list (and the sample's window)
        others = [(start + k) % n for k in range(n) if (start + k) % n != a][:peers]
        t = offset
        at = 0
        for size, length in zip(waves, lengths):
            for peer in others[at:at + size]:
                for shift in (0.0, period):
                    events[peer].append((t + shift, 1))
                    events[peer].append((t + shift + length, -1))
            at += size
            t += length
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
        "pairs": n * peers,
        "pps": peers * 2 * count / period,
        "round": round_length,
        "every": math.ceil((n - 1) / peers),
        "mean_open": sum(means) / n,
        "peak_open": max(peaks),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--period", type=float, default=30.0)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--overhead", type=float, default=0.63, help="seconds of calls in a wave")
    parser.add_argument("--sample", type=int, default=0, help="peers probed a round (0: all)")
    parser.add_argument("--nodes", default="50,100,300,500,1000")
    args = parser.parse_args()
    sampled = f", {args.sample} peers a round" if args.sample else ", every peer every round"
    print(f"period {args.period:g} s, {args.count} probes a pair, timeout {args.timeout:g} s, "
          f"overhead {args.overhead:g} s a wave{sampled}")
    print(f"{'nodes':>6} {'pairs/period':>13} {'pkt/s/node':>11} {'round s':>8} {'each pair':>10} "
          f"{'open mean':>10} {'open peak':>10}  verdict")
    for n in (int(x) for x in args.nodes.split(",")):
        r = simulate(n, args.period, args.count, args.timeout, args.overhead, args.sample)
        if r["round"] >= args.period:
            verdict = "round longer than the period: sample or lengthen it"
        elif r["peak_open"] > MAX_OPEN:
            verdict = "over the 64 open expectations: sample"
        else:
            verdict = "fits"
        every = f"1/{r['every']} rds" if r["every"] > 1 else "every rd"
        print(f"{n:>6} {r['pairs']:>13,} {r['pps']:>11.0f} {r['round']:>8.1f} {every:>10} "
              f"{r['mean_open']:>10.1f} {r['peak_open']:>10}  {verdict}")


if __name__ == "__main__":
    main()
