//! What an agent holds: its token, its handles on the OS and its peers, the expectations open and
//! the sends under way.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netprobe_probes::net::drop_trace::{DropTrace, DropWatch};
use netprobe_probes::net::firewall::RuleCounters;
use netprobe_probes::net::interface::NodeFacts;
use netprobe_probes::net::probe_io::{Listener, ProbeIo};
use netprobe_probes::vxlan::api::*;
use netprobe_probes::vxlan::rules::Candidates;

use crate::metrics::Metrics;

/// Asks the agent at `peer` what it expects for `probe_id` (`None`: nothing, or no agent there).
pub trait PeerCheck: Send + Sync + 'static {
    fn expectation(
        &self,
        peer: SocketAddr,
        probe_id: u64,
    ) -> Pin<Box<dyn Future<Output = Option<ExpectationInfo>> + Send + '_>>;
}

/// One probe listened for.
pub(crate) struct Expectation {
    pub(crate) listener: Box<dyn Listener>,
    /// The kernel's drops of the probes since the expectation opened, or why they are not known.
    pub(crate) drops: std::result::Result<Box<dyn DropWatch>, String>,
    pub(crate) from: Ipv4Addr,
    pub(crate) to: Option<Ipv4Addr>,
    pub(crate) port: u16,
    pub(crate) vni: u32,
    pub(crate) counters_before: Candidates,
    pub(crate) counters_error: Option<String>,
    /// How long it listens: from its opening, and again from when its sender asks about it.
    pub(crate) window: Duration,
    pub(crate) expires: Instant,
}

/// A send asks its targets' agents again before the probes leave when this long has passed since
/// it first asked (each answer keeps the capture open a whole window from then).
pub(crate) const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// An expectation is dropped this long after its capture ends if nobody collects it.
pub(crate) const UNCOLLECTED_GRACE: Duration = Duration::from_secs(5);

/// Expectations open, and slots reserved for ones being opened: the cap counts both, checked and
/// taken under one lock.
#[derive(Default)]
pub(crate) struct ExpectationTable {
    pub(crate) expectations: HashMap<u64, Expectation>,
    pub(crate) reserved: usize,
}

/// The agent's handles to the OS and to its peers.
pub struct Handles {
    pub io: Arc<dyn ProbeIo>,
    pub counters: Arc<dyn RuleCounters>,
    pub node: Arc<dyn NodeFacts>,
    pub peers: Arc<dyn PeerCheck>,
    pub drops: Arc<dyn DropTrace>,
}

/// The agent's state: its token, the expectations open, the sends under way, and its handles.
#[derive(Clone)]
pub struct Agent {
    pub(crate) token: Arc<String>,
    pub(crate) peer_port: u16,
    pub(crate) open: Arc<Mutex<ExpectationTable>>,
    pub(crate) sends: Arc<tokio::sync::Semaphore>,
    pub(crate) handles: Arc<Handles>,
    pub(crate) node_name: Option<Arc<str>>,
    pub(crate) metrics: Arc<Metrics>,
    /// Commands run for callers (`POST /v1/run`): one at a time.
    pub(crate) runs: Arc<tokio::sync::Semaphore>,
    /// The mesh's ledger of beacons sent, when a mesh runs.
    pub(crate) beacons: Option<Arc<crate::mesh::BeaconLedger>>,
}

impl Agent {
    pub fn new(token: String, peer_port: u16, handles: Handles) -> Agent {
        Agent {
            token: Arc::new(token),
            peer_port,
            open: Arc::default(),
            sends: Arc::new(tokio::sync::Semaphore::new(MAX_SENDS)),
            handles: Arc::new(handles),
            node_name: None,
            metrics: Arc::default(),
            runs: Arc::new(tokio::sync::Semaphore::new(1)),
            beacons: None,
        }
    }

    /// The mesh's ledger, for the control channel (`GET /v1/beacons/{to}`).
    pub fn with_beacons(mut self, ledger: Arc<crate::mesh::BeaconLedger>) -> Agent {
        self.beacons = Some(ledger);
        self
    }

    /// What `/metrics` shows: the mesh records its rounds here.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The node this agent runs on, as its health answer names it.
    pub fn on_node(mut self, name: Option<String>) -> Agent {
        self.node_name = name.map(Arc::from);
        self
    }
}
