//! The receiving half of the mesh: one capture on every interface (probes may arrive on another
//! interface than the route back, see the reverse-path case), filtered in the kernel to the
//! beacons' port and VNI so the overlay's own traffic is never copied, read by one thread into
//! the tally.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netprobe_probes::net::capture::LiveCapture;
use netprobe_probes::net::Link;
use netprobe_probes::wire::beacon::Beacon;
use netprobe_probes::wire::vxlan;
use netprobe_probes::Result;

use super::tally::BeaconTally;

/// The BPF filter for beacons to `port` with `vni`: the VXLAN header's VNI word (flags aside) is
/// udp[12:4], the VNI in its top three bytes.
pub fn filter(port: u16, vni: u32) -> String {
    format!("udp dst port {port} and udp[12:4] = {:#010x}", (vni & vxlan::MAX_VNI) << 8)
}

/// Opens the capture (the error says why it cannot be) and reads it on a thread of its own for
/// the life of the process.
pub fn start(port: u16, vni: u32, tally: Arc<Mutex<BeaconTally>>) -> Result<()> {
    let mut capture = LiveCapture::open_any(&filter(port, vni))?;
    std::thread::Builder::new()
        .name("beacons".into())
        .spawn(move || loop {
            match capture.next_before(Instant::now() + Duration::from_secs(1)) {
                Ok(Some(frame)) => {
                    let Some((_, _, _, payload)) = vxlan::outer_udp(frame.link, &frame.data) else {
                        continue;
                    };
                    if let Some(beacon) = Beacon::parse(payload, vni) {
                        tally.lock().unwrap_or_else(|e| e.into_inner()).observe(&beacon, frame.at);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // A capture that failed hears nothing more: every pair is untested from now
                    // on, never lost on this node's deafness.
                    eprintln!("netprobe agent: mesh: the beacons' capture failed: {e}");
                    tally.lock().unwrap_or_else(|e| e.into_inner()).fail(e.to_string());
                    return;
                }
            }
        })
        .map_err(|e| netprobe_probes::Error::could_not_run("starting the beacons' capture", e.to_string()))?;
    Ok(())
}
