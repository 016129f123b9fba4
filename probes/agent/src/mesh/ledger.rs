//! What this agent's mesh has sent, per receiver, in this run: the numbers the beacons carry, and
//! what the control channel (`GET /v1/beacons/{to}`) answers a receiver that hears nothing.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use netprobe_probes::vxlan::api::BeaconStatus;

#[derive(Debug)]
pub struct BeaconLedger {
    epoch: u32,
    period: Duration,
    sent: Mutex<HashMap<Ipv4Addr, u64>>,
}

impl BeaconLedger {
    /// A ledger for a new run of the agent: its epoch differs from the last run's (by time and
    /// process id), so receivers begin a new series.
    pub fn new(period: Duration) -> BeaconLedger {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
            .unwrap_or(1);
        BeaconLedger { epoch: nanos ^ std::process::id().rotate_left(16), period, sent: Mutex::default() }
    }

    /// How often a beacon goes to each peer (the mesh's period).
    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The number of the next beacon to `to`, counted as sent: a beacon the kernel refused to
    /// send (this node's own firewall) is a beacon that did not arrive, which the receiver must see.
    pub fn next(&self, to: Ipv4Addr) -> u64 {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let next = sent.entry(to).or_insert(0);
        *next += 1;
        *next - 1
    }

    pub fn status(&self, to: Ipv4Addr) -> BeaconStatus {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner()).get(&to).copied().unwrap_or(0);
        BeaconStatus { epoch: self.epoch, sent, period_ms: self.period.as_millis() as u64 }
    }
}
