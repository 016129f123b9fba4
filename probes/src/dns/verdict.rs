//! Verdicts per endpoint and the findings that explain them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::report::{EndpointReport, EndpointVerdict, Finding};

/// RCODEs that are answers, not server trouble.
fn is_answer_rcode(rcode: &str) -> bool {
    matches!(rcode, "NOERROR" | "NXDOMAIN")
}

/// The answer set most endpoints (and the Service, as one more voice) agree on; `None` on a tie.
pub fn majority_answers(
    endpoints: &[EndpointReport],
    service: Option<&EndpointReport>,
) -> Option<Vec<String>> {
    let mut votes: BTreeMap<&Vec<String>, usize> = BTreeMap::new();
    for e in endpoints.iter().chain(service).filter(|e| e.totals.answered > 0) {
        *votes.entry(&e.answers).or_default() += 1;
    }
    let best = votes.values().copied().max()?;
    let mut winners = votes.into_iter().filter(|(_, n)| *n == best);
    let (answers, _) = winners.next()?;
    winners.next().is_none().then(|| answers.clone())
}

pub fn endpoint_verdict(
    e: &EndpointReport,
    majority: Option<&Vec<String>>,
    slow: Duration,
) -> EndpointVerdict {
    let t = &e.totals;
    if t.answered == 0 {
        return EndpointVerdict::Failing;
    }
    if majority.is_none_or(|m| *m != e.answers) {
        return EndpointVerdict::Inconsistent;
    }
    let server_errors = t.rcodes.iter().any(|(rcode, n)| *n > 0 && !is_answer_rcode(rcode));
    let slow = t.latency_ms.is_some_and(|l| l.p95 > slow.as_secs_f64() * 1000.0);
    if t.answered < t.sent || server_errors || slow {
        return EndpointVerdict::Degraded;
    }
    EndpointVerdict::Ok
}

fn describe(e: &EndpointReport) -> String {
    let mut text = e.address.to_string();
    match (&e.pod, &e.node) {
        (Some(pod), Some(node)) => text.push_str(&format!(" ({pod} on {node})")),
        (Some(pod), None) => text.push_str(&format!(" ({pod})")),
        (None, Some(node)) => text.push_str(&format!(" (on {node})")),
        (None, None) => {}
    }
    text
}

pub fn findings(
    endpoints: &[EndpointReport],
    service: Option<&EndpointReport>,
    this_node: Option<&str>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let failing: Vec<&EndpointReport> =
        endpoints.iter().filter(|e| e.verdict == EndpointVerdict::Failing).collect();
    for e in &failing {
        let why = e.totals.first_error.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        out.push(Finding {
            kind: "endpoint-unreachable",
            message: format!(
                "{} answered none of {} queries{why}: the pod, its node's firewall or the path to that node drops DNS",
                describe(e),
                e.totals.sent
            ),
        });
    }
    for e in endpoints.iter().filter(|e| e.verdict == EndpointVerdict::Inconsistent) {
        out.push(Finding {
            kind: "inconsistent-answers",
            message: format!(
                "{} answers [{}], unlike the other endpoints: a stale cache, another Corefile or another upstream",
                describe(e),
                e.answers.join(", ")
            ),
        });
    }
    if let Some(service) = service.filter(|s| s.totals.sent > 0 && !endpoints.is_empty()) {
        let failed = service.totals.sent - service.totals.answered;
        let rate = f64::from(failed) / f64::from(service.totals.sent);
        let expected = failing.len() as f64 / endpoints.len() as f64;
        // Binomial noise of the Service's sample, plus a little slack.
        let tolerance = 3.0 * (expected * (1.0 - expected) / f64::from(service.totals.sent)).sqrt() + 0.05;
        if failed > 0 && !failing.is_empty() && (rate - expected).abs() <= tolerance {
            let names: Vec<String> = failing.iter().map(|e| describe(e)).collect();
            out.push(Finding {
                kind: "service-failures-explained",
                message: format!(
                    "the Service {} failed {failed} of {} queries ({:.0}%), matching the share of failing endpoints behind it ({} of {}): {}",
                    service.address,
                    service.totals.sent,
                    rate * 100.0,
                    failing.len(),
                    endpoints.len(),
                    names.join(", ")
                ),
            });
        }
    }
    if let Some(here) = this_node {
        let same_node_answers = endpoints
            .iter()
            .any(|e| e.node.as_deref() == Some(here) && e.verdict != EndpointVerdict::Failing);
        let all_failing_elsewhere = failing.iter().all(|e| e.node.as_deref().is_some_and(|n| n != here));
        if !failing.is_empty() && same_node_answers && all_failing_elsewhere {
            let mut nodes: Vec<&str> = failing.iter().filter_map(|e| e.node.as_deref()).collect();
            nodes.dedup();
            let next: Vec<String> = nodes.iter().map(|n| format!("netprobe vxlan {here} {n}")).collect();
            out.push(Finding {
                kind: "cross-node",
                message: format!(
                    "every failing endpoint runs on another node ({}) while the ones on {here} answer: suspect the overlay between nodes (VXLAN UDP 8472 blocked?). Next: {}",
                    nodes.join(", "),
                    next.join("; ")
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::report::{Latency, ProtocolReport};

    fn endpoint(ip: &str, node: &str, sent: u32, answered: u32, answers: &[&str]) -> EndpointReport {
        EndpointReport {
            address: ip.parse().unwrap(),
            port: 53,
            node: Some(node.into()),
            pod: Some(format!("coredns-{node}")),
            ready: Some(true),
            serving: Some(true),
            totals: ProtocolReport {
                sent,
                answered,
                timeouts: sent - answered,
                rcodes: if answered > 0 {
                    BTreeMap::from([("NOERROR".into(), answered)])
                } else {
                    BTreeMap::new()
                },
                latency_ms: (answered > 0).then_some(Latency { p50: 1.0, p95: 2.0, p99: 3.0, max: 4.0 }),
                ..Default::default()
            },
            answers: answers.iter().map(|a| a.to_string()).collect(),
            protocols: BTreeMap::new(),
            verdict: EndpointVerdict::Ok,
        }
    }

    fn judge(mut endpoints: Vec<EndpointReport>, service: Option<&EndpointReport>) -> Vec<EndpointReport> {
        let majority = majority_answers(&endpoints, service);
        for e in &mut endpoints {
            e.verdict = endpoint_verdict(e, majority.as_ref(), Duration::from_millis(250));
        }
        endpoints
    }

    #[test]
    fn verdicts() {
        let endpoints = judge(
            vec![
                endpoint("192.0.2.53", "node-a", 40, 40, &["10.96.0.1"]),
                endpoint("192.0.2.54", "node-b", 40, 0, &[]),
                endpoint("192.0.2.55", "node-c", 40, 40, &["10.96.0.99"]),
                endpoint("192.0.2.56", "node-a", 40, 39, &["10.96.0.1"]),
            ],
            None,
        );
        let verdicts: Vec<EndpointVerdict> = endpoints.iter().map(|e| e.verdict).collect();
        use EndpointVerdict::*;
        assert_eq!(verdicts, vec![Ok, Failing, Inconsistent, Degraded]);
    }

    #[test]
    fn the_service_breaks_a_tie_between_two_answer_sets() {
        let service = endpoint("192.0.2.10", "-", 40, 20, &["10.96.0.1"]);
        let endpoints = vec![
            endpoint("192.0.2.53", "node-a", 40, 40, &["10.96.0.1"]),
            endpoint("192.0.2.55", "node-c", 40, 40, &["10.96.0.99"]),
        ];
        assert_eq!(majority_answers(&endpoints, None), None);
        assert_eq!(majority_answers(&endpoints, Some(&service)), Some(vec!["10.96.0.1".to_string()]));
    }

    #[test]
    fn slow_and_server_errors_degrade() {
        let mut slow = endpoint("192.0.2.53", "node-a", 10, 10, &["10.96.0.1"]);
        slow.totals.latency_ms = Some(Latency { p50: 300.0, p95: 300.0, p99: 300.0, max: 300.0 });
        let majority = Some(vec!["10.96.0.1".to_string()]);
        assert_eq!(
            endpoint_verdict(&slow, majority.as_ref(), Duration::from_millis(250)),
            EndpointVerdict::Degraded
        );
        let mut servfail = endpoint("192.0.2.53", "node-a", 10, 10, &["10.96.0.1"]);
        servfail.totals.rcodes.insert("SERVFAIL".into(), 1);
        assert_eq!(
            endpoint_verdict(&servfail, majority.as_ref(), Duration::from_millis(250)),
            EndpointVerdict::Degraded
        );
    }

    #[test]
    fn findings_for_the_incident() {
        let endpoints = judge(
            vec![
                endpoint("192.0.2.53", "node-a", 40, 40, &["10.96.0.1"]),
                endpoint("192.0.2.54", "node-b", 40, 0, &[]),
            ],
            None,
        );
        let service = endpoint("192.0.2.10", "-", 40, 21, &["10.96.0.1"]);
        let found = findings(&endpoints, Some(&service), Some("node-a"));
        let kinds: Vec<&str> = found.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec!["endpoint-unreachable", "service-failures-explained", "cross-node"]);
        assert!(found[1].message.contains("failed 19 of 40 queries (48%)"), "{}", found[1].message);
        assert!(found[2].message.contains("netprobe vxlan node-a node-b"), "{}", found[2].message);

        // From node-b's point of view the failing pod is local: no cross-node finding.
        let found = findings(&endpoints, Some(&service), Some("node-b"));
        assert!(found.iter().all(|f| f.kind != "cross-node"));
        // A Service that never fails is not explained by a failing endpoint.
        let healthy_service = endpoint("192.0.2.10", "-", 40, 40, &["10.96.0.1"]);
        let found = findings(&endpoints, Some(&healthy_service), None);
        assert!(found.iter().all(|f| f.kind != "service-failures-explained"));
    }
}
