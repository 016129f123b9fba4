//! The sending half of the mesh: every period, one beacon to each peer, spread over the period
//! (a node of a 1,000-node cluster at 10 s sends 100 small packets a second, one every 10 ms).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use netprobe_probes::vxlan::Node;
use netprobe_probes::wire::beacon::Beacon;
use tokio::sync::watch;

use super::ledger::BeaconLedger;

/// Where and how the beacons go.
#[derive(Clone, Copy, Debug)]
pub struct Sending {
    /// This node's address as its peers list it: the receivers tell senders apart by it.
    pub me: Ipv4Addr,
    pub port: u16,
    pub vni: u32,
    pub period: Duration,
}

/// Sends for ever (the agent's runtime ends it). A send the kernel refuses is counted as sent (the
/// receiver then sees it missing, and the diagnosis names this node's firewall); the first refusal
/// of a run of them is said on stderr.
pub async fn send_forever(ledger: Arc<BeaconLedger>, mut peers: watch::Receiver<Vec<Node>>, how: Sending) {
    let socket = match tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("netprobe agent: mesh: cannot open the beacons' socket ({e}): sending nothing");
            return;
        }
    };
    let mut ticks = tokio::time::interval(how.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refused = false;
    loop {
        ticks.tick().await;
        let now: Vec<Node> = peers.borrow_and_update().clone();
        let gap = how.period.checked_div(now.len().max(1) as u32).unwrap_or_default() / 2;
        for peer in &now {
            let beacon = Beacon {
                sender: how.me,
                epoch: ledger.epoch(),
                seq: ledger.next(peer.ip),
                sent_at_us: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            };
            match socket.send_to(&beacon.emit(how.vni), (peer.ip, how.port)).await {
                Ok(_) => refused = false,
                Err(e) if !refused => {
                    refused = true;
                    eprintln!("netprobe agent: mesh: sending a beacon to {} was refused: {e}", peer.ip);
                }
                Err(_) => {}
            }
            // Spread over the first half of the period: the receivers' evaluations see this
            // period's beacon well before the next.
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
    }
}
