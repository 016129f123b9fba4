//! `netprobe vxlan`: does VXLAN (UDP 8472) get from node to node, and where is it lost? Agents on
//! the nodes (the `netprobe-agent` crate) capture and send on request; this side drives every ordered pair at once
//! and judges each from three counts: sent, seen leaving the source's interface, seen arriving on
//! the destination's interface, plus a control datagram to another UDP port and the firewall rules
//! (that can match the probes) whose drop counters grew by at least the probes that went missing.
//!
//! The driver reaches the agents through [`AgentApi`] (typed, one method per operation; HTTP is
//! the agent crate's business), so its paths run in tests on `client::fake::FakeAgents`.
//! [`batch`] makes a round of many pairs, [`judge`] turns each pair's evidence into a verdict,
//! [`mtu`] searches path MTUs, [`rules`] picks the firewall rules that can match the probes.

pub mod api;
pub mod batch;
pub mod client;
mod driver;
pub mod judge;
pub mod mesh_state;
pub mod mtu;
mod mtu_rounds;
mod nodes;
pub mod report;
pub mod rules;

pub use client::{AgentAddr, AgentApi};
pub use driver::{probe, probe_within, run, Config};
pub use mesh_state::MeshReport;
pub use nodes::{nodes_from_cluster, parse_node, Node, DEPLOY_HINT};
pub use report::*;

/// Default VNI of the probes: far above flannel's 1, Calico's 4096 and Cilium's per-cluster
/// identities (below 65,536); only a Cilium cluster mesh member with cluster id 255 could use it.
pub const DEFAULT_VNI: u32 = 0x00ff_fff0;
