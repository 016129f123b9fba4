//! What the beacons that arrived say, per sender: pure, fed by the capture thread. Each sender
//! numbers its beacons to this node 0, 1, 2, ... in each run of its agent (its epoch), so the
//! highest number heard tells how many it sent up to then, and the count heard how many arrived:
//! a gap is a loss, a late one fills its gap in.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use netprobe_probes::wire::beacon::Beacon;

/// One sender's series in one run of its agent.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Series {
    epoch: u32,
    /// The first number this node counts: the first one heard, or 0 for a new run of the sender
    /// that began while this node listened (what was sent before it listened is not its to count).
    baseline: u64,
    highest: u64,
    arrived: u64,
    /// When the last one arrived (capture time since the Unix epoch).
    last_arrival: Duration,
    /// The last one's transit (arrival minus send time, in the two clocks: only its changes mean
    /// anything) and the smoothed change between consecutive ones (RFC 3550's jitter).
    last_transit_us: Option<i64>,
    jitter_us: f64,
}

/// What one sender's beacons say so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counts {
    pub epoch: u32,
    /// Beacons the sender sent this node in this series, as far as the numbers heard tell.
    pub sent: u64,
    pub arrived: u64,
    pub last_arrival: Duration,
    /// The one-way delay's jitter, in seconds (`None` before two arrived).
    pub jitter_s: Option<f64>,
}

#[derive(Debug, Default)]
pub struct BeaconTally {
    series: HashMap<Ipv4Addr, Series>,
    /// Why this node's capture stopped, if it did: then nothing it did not hear is a loss.
    failure: Option<String>,
}

impl BeaconTally {
    /// The capture stopped: every pair is untested from now on, with why.
    pub fn fail(&mut self, why: String) {
        self.failure = Some(why);
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Takes in one beacon that arrived at `at` (capture time since the Unix epoch).
    pub fn observe(&mut self, beacon: &Beacon, at: Duration) {
        let transit = at.as_micros() as i64 - beacon.sent_at_us as i64;
        let fresh = |baseline| Series {
            epoch: beacon.epoch,
            baseline,
            highest: beacon.seq,
            arrived: 1,
            last_arrival: at,
            last_transit_us: Some(transit),
            jitter_us: 0.0,
        };
        match self.series.get_mut(&beacon.sender) {
            Some(series) if series.epoch == beacon.epoch => {
                // Before the baseline: sent before this node counted; never counted twice.
                if beacon.seq < series.baseline {
                    return;
                }
                series.highest = series.highest.max(beacon.seq);
                series.arrived += 1;
                series.last_arrival = series.last_arrival.max(at);
                if let Some(last) = series.last_transit_us {
                    let change = (transit - last).unsigned_abs() as f64;
                    series.jitter_us += (change - series.jitter_us) / 16.0;
                }
                series.last_transit_us = Some(transit);
            }
            // A new run of the sender's agent, while this node listened: counted from 0.
            Some(_) => {
                self.series.insert(beacon.sender, fresh(0));
            }
            // The first heard from this sender: counted from it. What went before may have been
            // sent before this node listened (agents start one by one), so it is never a loss.
            None => {
                self.series.insert(beacon.sender, fresh(beacon.seq));
            }
        }
    }

    pub fn counts(&self, sender: Ipv4Addr) -> Option<Counts> {
        let s = self.series.get(&sender)?;
        Some(Counts {
            epoch: s.epoch,
            sent: s.highest + 1 - s.baseline,
            arrived: s.arrived.min(s.highest + 1 - s.baseline),
            last_arrival: s.last_arrival,
            jitter_s: (s.arrived > 1).then(|| s.jitter_us / 1e6),
        })
    }

    /// A peer that is no longer one.
    pub fn forget(&mut self, sender: Ipv4Addr) {
        self.series.remove(&sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const START: u64 = 1_800_000_000_000_000;

    fn beacon(epoch: u32, seq: u64) -> Beacon {
        Beacon { sender: P, epoch, seq, sent_at_us: START + seq * 1_000_000 }
    }

    fn at(seq: u64, delay_us: u64) -> Duration {
        Duration::from_micros(START + seq * 1_000_000 + delay_us)
    }

    #[test]
    fn gaps_are_losses_and_a_late_one_fills_its_gap() {
        let mut tally = BeaconTally::default();
        for seq in [0, 1, 3, 4] {
            tally.observe(&beacon(7, seq), at(seq, 300));
        }
        let counts = tally.counts(P).unwrap();
        assert_eq!((counts.sent, counts.arrived), (5, 4), "2 is lost");
        tally.observe(&beacon(7, 2), at(4, 900));
        assert_eq!(tally.counts(P).unwrap().arrived, 5, "2 came late");
        assert_eq!(tally.counts(P).unwrap().last_arrival, at(4, 900));
    }

    #[test]
    fn a_restart_of_the_sender_begins_a_new_series_without_losses() {
        let mut tally = BeaconTally::default();
        for seq in 0..10 {
            tally.observe(&beacon(7, seq), at(seq, 300));
        }
        tally.observe(&beacon(8, 0), at(20, 300));
        let counts = tally.counts(P).unwrap();
        assert_eq!((counts.epoch, counts.sent, counts.arrived), (8, 1, 1));
        // Its first beacon of the new run lost: counted, since this node was listening.
        tally.observe(&beacon(9, 1), at(30, 300));
        assert_eq!((tally.counts(P).unwrap().sent, tally.counts(P).unwrap().arrived), (2, 1));
    }

    #[test]
    fn a_series_already_under_way_when_this_node_started_counts_from_what_it_heard() {
        // This node started after the sender: its number 500 is no sign of 500 losses.
        let mut tally = BeaconTally::default();
        tally.observe(&beacon(7, 500), at(500, 300));
        tally.observe(&beacon(7, 501), at(501, 300));
        assert_eq!((tally.counts(P).unwrap().sent, tally.counts(P).unwrap().arrived), (2, 2));
        // One sent before this node listened, arriving late: not counted.
        tally.observe(&beacon(7, 499), at(501, 900));
        assert_eq!(tally.counts(P).unwrap().arrived, 2);
    }

    #[test]
    fn jitter_follows_the_changes_of_the_delay_not_the_clocks_offset() {
        let mut tally = BeaconTally::default();
        // The sender's clock is 3 s behind: transits of 3 s, steady.
        for seq in 0..20 {
            tally.observe(&beacon(7, seq), at(seq, 3_000_000 + 200));
        }
        assert!(tally.counts(P).unwrap().jitter_s.unwrap() < 1e-9);
        // Delays alternating 200 us and 2.2 ms: jitter grows towards 2 ms.
        for seq in 20..120 {
            tally.observe(&beacon(7, seq), at(seq, 3_000_000 + if seq % 2 == 0 { 200 } else { 2200 }));
        }
        let jitter = tally.counts(P).unwrap().jitter_s.unwrap();
        assert!((0.0018..0.0021).contains(&jitter), "{jitter}");
    }
}
