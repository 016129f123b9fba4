//! `netprobe arp --service` and `--all-services`: the VIPs of LoadBalancer Services, each probed as
//! `netprobe arp VIP` probes one, and the cluster's nodes as responder labels.
//!
//! Which VIPs and nodes ARP can reach is decided from routes: only an address on one of this
//! host's own segments (a route without a gateway) answers ARP here.

use std::net::IpAddr;

use serde::Serialize;

use super::{ArpReport, Config, Node};
use crate::cluster::{ClusterNode, LoadBalancer};
use crate::net::interface::Route;
use crate::{Health, Result};

/// A VIP to probe, and the Service (`namespace/name`) it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipTarget {
    pub service: String,
    pub vip: IpAddr,
    /// The interface whose segment it is on.
    pub interface: String,
}

/// A VIP (or a Service without one) that was not probed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedVip {
    pub service: String,
    pub vip: Option<IpAddr>,
    pub reason: String,
}

/// One probed VIP: its Service and the report `netprobe arp VIP` gives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceVip {
    pub service: String,
    #[serde(flatten)]
    pub report: ArpReport,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServicesReport {
    pub probe: &'static str,
    pub verdict: Health,
    pub vips: Vec<ServiceVip>,
    pub skipped: Vec<SkippedVip>,
}

impl ServicesReport {
    /// The worst VIP's verdict. Nothing probed while something was skipped: could not run.
    pub fn new(vips: Vec<ServiceVip>, skipped: Vec<SkippedVip>) -> ServicesReport {
        let verdict = match Health::worst(vips.iter().map(|v| v.report.health())) {
            Health::Ok if vips.is_empty() && !skipped.is_empty() => Health::CouldNotRun,
            health => health,
        };
        ServicesReport { probe: "arp", verdict, vips, skipped }
    }
}

/// Which of the Services' addresses ARP (IPv4) or neighbour discovery (IPv6) can check from here:
/// those on the segment of one of this host's interfaces (of `interface`, when given). `route` is
/// the routing table's answer.
pub fn plan(
    services: &[LoadBalancer],
    interface: Option<&str>,
    route: impl Fn(IpAddr) -> Option<Route>,
) -> (Vec<VipTarget>, Vec<SkippedVip>) {
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for lb in services {
        let service = format!("{}/{}", lb.namespace, lb.name);
        if lb.ips.is_empty() {
            skipped.push(SkippedVip {
                service,
                vip: None,
                reason: "no load-balancer IP yet: status.loadBalancer.ingress lists none (is MetalLB's controller running, and is a pool free?)".into(),
            });
            continue;
        }
        for ip in &lb.ips {
            let skip = |reason: String| SkippedVip { service: service.clone(), vip: Some(*ip), reason };
            let vip = *ip;
            match route(vip) {
                Some(r) if !r.on_link => skipped.push(skip(format!(
                    "not on a segment of this host (routed via a gateway on {}): run from a node on its segment",
                    r.interface
                ))),
                Some(r) if interface.is_some_and(|wanted| wanted != r.interface) => {
                    skipped.push(skip(format!("on {}, not on -i {}", r.interface, interface.unwrap_or_default())))
                }
                Some(r) => targets.push(VipTarget { service: service.clone(), vip, interface: r.interface }),
                None => skipped.push(skip("no route from this host".into())),
            }
        }
    }
    (targets, skipped)
}

/// The nodes whose InternalIP is of `family`'s family and on `interface`'s segment, as responder
/// labels: the probe resolves each in the same run, so a speaker's reply is named by its node.
pub fn node_labels(
    nodes: &[ClusterNode],
    interface: &str,
    family: IpAddr,
    route: impl Fn(IpAddr) -> Option<Route>,
) -> Vec<Node> {
    nodes
        .iter()
        .filter_map(|n| Some(Node { name: n.name.clone(), ip: n.internal_ip? }))
        .filter(|n| n.ip.is_ipv4() == family.is_ipv4())
        .filter(|n| route(n.ip).is_some_and(|r| r.on_link && r.interface == interface))
        .collect()
}

/// At most this many VIPs are probed at once (each has its own capture).
const AT_ONCE: usize = 8;

/// Probes each config as [`super::probe`] does, several at a time; the reports in order.
pub fn probe_each(configs: &[Config]) -> Result<Vec<ArpReport>> {
    let mut reports = Vec::with_capacity(configs.len());
    for chunk in configs.chunks(AT_ONCE) {
        let results: Vec<Result<ArpReport>> = std::thread::scope(|scope| {
            let running: Vec<_> = chunk.iter().map(|config| scope.spawn(|| super::probe(config))).collect();
            running
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(crate::Error::could_not_run("probing ARP", "a probe thread failed"))
                    })
                })
                .collect()
        });
        for result in results {
            reports.push(result?);
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 192.0.2.0/24 and 2001:db8::/64 on lan0, 198.51.100.0/24 on lan1, everything else via a
    /// gateway on wan0.
    fn route(ip: IpAddr) -> Option<Route> {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let (interface, on_link) = match octets[..] {
            [192, 0, 2, _] => ("lan0", true),
            [198, 51, 100, _] => ("lan1", true),
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, ..] => ("lan0", true),
            _ => ("wan0", false),
        };
        Some(Route { interface: interface.into(), on_link })
    }

    fn lb(name: &str, ips: &[&str]) -> LoadBalancer {
        LoadBalancer {
            namespace: "web".into(),
            name: name.into(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn only_vips_on_this_hosts_segments_are_probed_and_the_rest_say_why() {
        let services = [
            lb("shop", &["192.0.2.100", "2001:db8::100"]),
            lb("api", &["198.51.100.7"]),
            lb("far", &["203.0.113.9"]),
            lb("pending", &[]),
        ];
        let (targets, skipped) = plan(&services, None, route);
        let probed: Vec<(String, String)> =
            targets.iter().map(|t| (t.service.clone(), t.interface.clone())).collect();
        assert_eq!(
            probed,
            [
                ("web/shop".into(), "lan0".into()),
                ("web/shop".into(), "lan0".into()),
                ("web/api".into(), "lan1".into())
            ],
            "the dual-stack VIP once per family (IPv6 by neighbour discovery)"
        );
        let why: Vec<&str> = skipped.iter().map(|s| s.reason.split(':').next().unwrap()).collect();
        assert_eq!(
            why,
            ["not on a segment of this host (routed via a gateway on wan0)", "no load-balancer IP yet"]
        );
        let (targets, skipped) = plan(&services[1..2], Some("lan0"), route);
        assert!(targets.is_empty());
        assert_eq!(skipped[0].reason, "on lan1, not on -i lan0");
    }

    #[test]
    fn nodes_label_responders_only_on_the_vips_segment() {
        let node = |name: &str, ip: Option<&str>| ClusterNode {
            name: name.into(),
            internal_ip: ip.map(|i| i.parse().unwrap()),
            control_plane: false,
        };
        let nodes = [
            node("a", Some("192.0.2.11")),
            node("b", Some("198.51.100.12")),
            node("c", Some("2001:db8::13")),
            node("d", None),
            node("e", Some("192.0.2.15")),
        ];
        let names = |family: &str| -> Vec<String> {
            node_labels(&nodes, "lan0", family.parse().unwrap(), route).into_iter().map(|n| n.name).collect()
        };
        assert_eq!(names("192.0.2.100"), ["a", "e"]);
        assert_eq!(names("2001:db8::100"), ["c"], "an IPv6 VIP is labelled by the nodes' IPv6 addresses");
    }

    #[test]
    fn nothing_probed_and_something_skipped_is_not_ok() {
        let skipped = vec![SkippedVip { service: "a/b".into(), vip: None, reason: "x".into() }];
        assert_eq!(ServicesReport::new(vec![], skipped).verdict, Health::CouldNotRun);
        assert_eq!(ServicesReport::new(vec![], vec![]).verdict, Health::Ok);
    }
}
