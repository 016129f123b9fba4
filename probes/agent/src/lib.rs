//! netprobe's agent, with its HTTP stack: the per-node API `netprobe vxlan` drives ([`server`]),
//! the always-on mesh that probes the peers every period ([`mesh`]) and shows it on `/metrics`
//! ([`metrics`]), the hardened serving loop ([`http`]), and the client that calls agents
//! ([`client`]: the real `AgentApi` of `netprobe_probes::vxlan`, whose driver knows no HTTP).

pub mod client;
pub mod http;
pub mod mesh;
pub mod metrics;
pub mod server;

pub use client::{drive, HttpAgents};
