//! Verdicts per endpoint and the findings that explain them.
//!
//! An error reply is not an answer: SERVFAIL, REFUSED and NXDOMAIN are counted and shown, never
//! vote in the consistency check, and never make an endpoint ok.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::report::{
    ConntrackReport, DnsReport, EndpointReport, EndpointVerdict, Finding, FindingKind, ProtocolReport,
};
use super::stats::error_rcodes;

/// What the verdicts are judged against.
#[derive(Clone, Debug)]
pub struct Judge {
    /// The answer set most endpoints (and the Service, as more voices) agree on; `None` on a tie
    /// or when nobody resolves the name.
    pub majority: Option<Vec<String>>,
    /// Whether any endpoint or Service address resolves the name (NOERROR).
    pub anyone_resolves: bool,
    pub slow: Duration,
}

impl Judge {
    pub fn new(endpoints: &[EndpointReport], services: &[EndpointReport], slow: Duration) -> Judge {
        let voters =
            || endpoints.iter().filter(|e| !e.not_ready()).chain(services).filter(|e| e.totals.answered > 0);
        let mut votes: BTreeMap<&Vec<String>, usize> = BTreeMap::new();
        for e in voters() {
            *votes.entry(&e.answers).or_default() += 1;
        }
        let best = votes.values().copied().max();
        let mut winners = votes.into_iter().filter(|(_, n)| Some(*n) == best);
        let majority = match (winners.next(), winners.next()) {
            (Some((answers, _)), None) => Some(answers.clone()),
            _ => None,
        };
        Judge { majority, anyone_resolves: voters().next().is_some(), slow }
    }

    pub fn verdict(&self, e: &EndpointReport) -> EndpointVerdict {
        if e.not_ready() {
            return EndpointVerdict::NotReady;
        }
        let t = &e.totals;
        let nxdomain = t.rcodes.get("NXDOMAIN").copied().unwrap_or(0);
        let server_errors = t.error_replies - nxdomain;
        if t.replies() == 0 {
            return EndpointVerdict::Failing;
        }
        if t.answered == 0 {
            return match (nxdomain > 0, self.anyone_resolves) {
                (true, true) => EndpointVerdict::Inconsistent,
                (true, false) if server_errors == 0 => EndpointVerdict::Nxdomain,
                _ => EndpointVerdict::Failing,
            };
        }
        if (nxdomain > 0 && self.anyone_resolves) || self.majority.as_ref() != Some(&e.answers) {
            return EndpointVerdict::Inconsistent;
        }
        let slow = t.latency_ms.is_some_and(|l| l.p95 > self.slow.as_secs_f64() * 1000.0);
        // Answers that came only after a needless truncation cost every client a TCP round trip.
        if t.unanswered() > 0 || server_errors > 0 || slow || needless_truncation(e) > 0 {
            return EndpointVerdict::Degraded;
        }
        EndpointVerdict::Ok
    }
}

/// UDP answers this row's server truncated though the same answer came whole in others.
fn needless_truncation(e: &EndpointReport) -> u32 {
    e.protocols.get("udp").map_or(0, ProtocolReport::truncated_needlessly)
}

/// `198.51.100.53:5353`, `[2001:db8::53]:53`, with the pod and node when known.
pub fn describe(e: &EndpointReport) -> String {
    let mut text = e.socket().to_string();
    match (&e.endpoint.pod, &e.endpoint.node) {
        (Some(pod), Some(node)) => text.push_str(&format!(" ({pod} on {node})")),
        (Some(pod), None) => text.push_str(&format!(" ({pod})")),
        (None, Some(node)) => text.push_str(&format!(" (on {node})")),
        (None, None) => {}
    }
    text
}

/// Why an endpoint got no reply, in its own words.
fn unreachable_words(e: &EndpointReport) -> String {
    let t = &e.totals;
    let who = describe(e);
    let first = t.first_error.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    if t.closed > 0 && t.closed >= t.refused.max(t.no_route) {
        format!(
            "{who} answered none of {} queries: over TCP it accepted the connection, read the query and closed it without a reply ({} times{first}): the server itself turns us away (an ACL: dnsdist's setACL, BIND's allow-query; or a rate limiter), not the path, and its silence over UDP is likely the same",
            t.sent, t.closed
        )
    } else if t.refused > 0 && t.refused >= t.timeouts.max(t.no_route) {
        format!(
            "{who} refused {} of {} queries at once{first}: nothing listens on port {} there; is its DNS server running, on that port?",
            t.refused, t.sent, e.endpoint.port
        )
    } else if t.no_route > 0 && t.no_route >= t.timeouts {
        format!(
            "{who}: no route to {}{first}: this host has no route to that address (pod network not reachable from here, or its node is down)",
            e.endpoint.address
        )
    } else {
        format!(
            "{who} answered none of {} queries{first}: the pod, its node's firewall or the path to that node drops DNS",
            t.sent
        )
    }
}

/// Everything that goes into the findings.
pub struct Context<'a> {
    pub endpoints: &'a [EndpointReport],
    pub services: &'a [EndpointReport],
    pub this_node: Option<&'a str>,
    pub name: &'a str,
    pub timeout: Duration,
    /// A p95 latency above this is slow.
    pub slow: Duration,
    /// Conntrack's growth over the run (with --like-glibc).
    pub conntrack: Option<&'a ConntrackReport>,
}

/// Findings, and the rows each explains: a degraded row no finding explains gets one at the end.
#[derive(Default)]
struct Found {
    findings: Vec<Finding>,
    explained: Vec<SocketAddr>,
}

impl Found {
    fn add(&mut self, kind: FindingKind, about: &[SocketAddr], message: String) {
        self.explained.extend_from_slice(about);
        self.findings.push(Finding { kind, message, about: about.to_vec() });
    }
}

pub fn findings(cx: &Context) -> Vec<Finding> {
    let mut found = Found::default();
    let judged: Vec<&EndpointReport> = cx.endpoints.iter().filter(|e| !e.not_ready()).collect();
    let failing: Vec<&EndpointReport> =
        judged.iter().copied().filter(|e| e.verdict == EndpointVerdict::Failing).collect();
    let rows = || judged.iter().copied().chain(cx.services);

    // Unreachable: every query got nothing at all (not late, not a truncated reply).
    let nothing = |t: &ProtocolReport| t.timeouts + t.refused + t.no_route + t.closed + t.errors == t.sent;
    for e in failing.iter().filter(|e| nothing(&e.totals)) {
        found.add(FindingKind::EndpointUnreachable, &[e.socket()], unreachable_words(e));
    }
    // A server that answers the same question now and refuses, drops, truncates or hangs up on
    // it the next: its rate limiter, not the path (which would not pick) and not an ACL (which
    // would refuse every time).
    let mut rate_limited = Vec::new();
    for e in rows() {
        if let Some(message) = rate_limit_words(e) {
            rate_limited.push(e.socket());
            found.add(FindingKind::RateLimited, &[e.socket()], message);
        }
    }
    for e in rows() {
        let beside_answers = |rcode: &str| rcode == "REFUSED" && rate_limited.contains(&e.socket());
        for (rcode, n) in
            error_rcodes(&e.totals.rcodes).into_iter().filter(|(r, _)| *r != "NXDOMAIN" && !beside_answers(r))
        {
            let why = match rcode {
                "REFUSED" => "it will not answer us: an ACL (allow-query, allow-recursion) or a server not authoritative for this name",
                "SERVFAIL" => "it cannot resolve the name itself: check its upstream servers, forward loops and logs (kubectl logs)",
                _ => "check its logs",
            };
            found.add(
                FindingKind::ServerErrors,
                &[e.socket()],
                format!("{} answered {rcode} to {n} of {} queries: {why}", describe(e), e.totals.sent),
            );
        }
    }
    for e in judged.iter().filter(|e| e.verdict == EndpointVerdict::Inconsistent) {
        let message = if e.totals.rcodes.contains_key("NXDOMAIN") {
            format!(
                "{} says {} does not exist (NXDOMAIN) while the other endpoints resolve it: a stale or different zone, or another Corefile",
                describe(e),
                cx.name
            )
        } else {
            format!(
                "{} answers [{}], unlike the other endpoints: a stale cache, another Corefile or another upstream",
                describe(e),
                e.answers.join(", ")
            )
        };
        found.add(FindingKind::InconsistentAnswers, &[e.socket()], message);
    }
    if !judged.is_empty() && judged.iter().all(|e| e.verdict == EndpointVerdict::Nxdomain) {
        found.add(
            FindingKind::NameExistsNowhere,
            &[],
            format!(
                "every endpoint says {} does not exist (NXDOMAIN): a wrong --name (search domains are not applied: write the full name), or the cluster's DNS has lost the zone",
                cx.name
            ),
        );
    }
    for e in rows() {
        let (Some(udp), Some(tcp)) = (e.protocols.get("udp"), e.protocols.get("tcp")) else { continue };
        let works = |p: &ProtocolReport| p.replies() > 0;
        // "Blocked" only when the silence stands against the other transport's answers: a
        // Service half of whose backends are dead can lose 5 of 5 UDP queries by chance.
        let blocked = |dead: &ProtocolReport, alive: &ProtocolReport| {
            !works(dead) && works(alive) && clearly_fails(dead.sent, alive.replies(), alive.sent)
        };
        if blocked(udp, tcp) && udp.tcp_retry_failed == 0 {
            found.add(
                FindingKind::ProtocolBlocked,
                &[e.socket()],
                format!(
                    "{} answers over TCP but not over UDP: something drops UDP 53 to it (a firewall, a security group or a NetworkPolicy)",
                    describe(e)
                ),
            );
        } else if blocked(tcp, udp) {
            found.add(
                FindingKind::ProtocolBlocked,
                &[e.socket()],
                format!(
                    "{} answers over UDP but not over TCP: TCP 53 to it is blocked, so answers too big for UDP will fail",
                    describe(e)
                ),
            );
        }
    }
    for e in rows().filter(|e| e.totals.tcp_retry_failed > 0 && !rate_limited.contains(&e.socket())) {
        let t = &e.totals;
        let why = t.first_error.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        // "Blocked" only when no TCP exchange got through: a Service with one backend whose TCP
        // is dropped answers the others' retries.
        let tcp_answered = e.protocols.get("tcp").map_or(0, ProtocolReport::replies) + t.truncated_retried;
        let message = if tcp_answered == 0 {
            format!(
                "answers for {} from {} are too big for UDP (truncated) and TCP 53 is blocked: {} TCP retries failed{why}",
                cx.name,
                describe(e),
                t.tcp_retry_failed
            )
        } else {
            format!(
                "answers for {} from {} are too big for UDP (truncated), and {} of their TCP retries failed{why} while {tcp_answered} TCP exchanges were answered: TCP to some of what is behind it fails, not TCP 53 as a whole",
                cx.name,
                describe(e),
                t.tcp_retry_failed
            )
        };
        found.add(FindingKind::TooBigForUdp, &[e.socket()], message);
    }
    for e in rows().filter(|e| e.totals.late > 0) {
        let late_s = e.totals.late_max_ms.unwrap_or(0.0) / 1000.0;
        found.add(
            FindingKind::LateAnswers,
            &[e.socket()],
            format!(
                "{} answers arrive after {late_s:.1} s ({} of {} queries), later than --timeout {}: raise --timeout or look upstream (a slow forwarder)",
                describe(e),
                e.totals.late,
                e.totals.sent,
                humantime::format_duration(cx.timeout)
            ),
        );
    }
    for e in rows() {
        let Some(pairs) = e.totals.pairs.as_ref().filter(|p| p.part_lost > 0) else { continue };
        found.add(
            FindingKind::HalfAnsweredPairs,
            &[e.socket()],
            format!(
                "{}: {} of {} A+AAAA pairs sent as glibc sends them (one socket, back to back) lost one answer while the other came; a glibc client waits its 5 s timeout for it. {}This is the pattern of the conntrack insert race (kubernetes#56903): set `options single-request-reopen` in the pods' dnsConfig (or `use-vc`, DNS over TCP), or run NodeLocal DNSCache",
                describe(e),
                pairs.part_lost,
                pairs.sent,
                conntrack_words(cx.conntrack)
            ),
        );
    }
    let endpoints_fine = !judged.is_empty() && judged.iter().all(|e| e.totals.unanswered() == 0);
    for service in cx.services.iter().filter(|s| s.totals.sent > 0) {
        let failed = service.totals.unanswered();
        if failed > 0 && endpoints_fine {
            let not_ready: Vec<String> =
                cx.endpoints.iter().filter(|e| e.not_ready()).map(|e| e.socket().to_string()).collect();
            let also = if not_ready.is_empty() {
                String::new()
            } else {
                format!(" (is it still sending to the not-ready {}?)", not_ready.join(", "))
            };
            found.add(
                FindingKind::ServicePath,
                &[service.socket()],
                format!(
                    "the Service {} failed {failed} of {} queries while every ready endpoint answered all of theirs: look at the path to the Service (kube-proxy's DNAT rules{also}, conntrack entries, an endpoint missing from this list), not at the pods",
                    service.socket(),
                    service.totals.sent
                ),
            );
        }
        if failed > 0
            && !failing.is_empty()
            && share_explains(failed, service.totals.sent, failing.len(), judged.len())
        {
            let names: Vec<String> = failing.iter().map(|e| describe(e)).collect();
            found.add(
                FindingKind::ServiceFailuresExplained,
                &[service.socket()],
                format!(
                    "the Service {} failed {failed} of {} queries ({:.0}%), matching the share of failing endpoints behind it ({} of {}): {}",
                    service.socket(),
                    service.totals.sent,
                    f64::from(failed) * 100.0 / f64::from(service.totals.sent),
                    failing.len(),
                    judged.len(),
                    names.join(", ")
                ),
            );
        }
    }
    if let Some(here) = cx.this_node {
        let same_node_answers = judged
            .iter()
            .any(|e| e.endpoint.node.as_deref() == Some(here) && e.verdict != EndpointVerdict::Failing);
        let all_failing_elsewhere =
            failing.iter().all(|e| e.endpoint.node.as_deref().is_some_and(|n| n != here));
        if !failing.is_empty() && same_node_answers && all_failing_elsewhere {
            let mut nodes: Vec<&str> = failing.iter().filter_map(|e| e.endpoint.node.as_deref()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let next: Vec<String> = nodes.iter().map(|n| format!("netprobe vxlan {here} {n}")).collect();
            found.add(
                FindingKind::CrossNode,
                &failing.iter().map(|e| e.socket()).collect::<Vec<_>>(),
                format!(
                    "every failing endpoint runs on another node ({}) while the ones on {here} answer: suspect the overlay between nodes (VXLAN UDP 8472 blocked?). Next: {}",
                    nodes.join(", "),
                    next.join("; ")
                ),
            );
        }
    }
    // Every degraded row has a finding that explains it.
    let unexplained: Vec<&EndpointReport> = rows()
        .filter(|e| e.verdict == EndpointVerdict::Degraded && !found.explained.contains(&e.socket()))
        .collect();
    for e in unexplained {
        let t = &e.totals;
        let slow = t.latency_ms.map(|l| l.p95).unwrap_or_default();
        if t.unanswered() > 0 {
            found.add(
                FindingKind::SomeUnanswered,
                &[e.socket()],
                format!(
                    "{} answered {} of {} queries and {} got no reply: loss on the path to it, or a server that sheds load or limits our rate; run again with --interval 200ms: a rate limit's losses go away when the queries come slower, the path's do not",
                    describe(e),
                    t.replies(),
                    t.sent,
                    t.unanswered()
                ),
            );
        } else if slow > cx.slow.as_secs_f64() * 1000.0 {
            found.add(
                FindingKind::Slow,
                &[e.socket()],
                format!(
                    "{} answers slowly: p95 {slow:.1} ms, above --slow {}: an overloaded server, a slow upstream, or a long path",
                    describe(e),
                    humantime::format_duration(cx.slow)
                ),
            );
        }
    }
    found.findings
}

/// A row's rate limiting in words, when its evidence points there: losses, REFUSED, needless
/// truncation or TCP connections closed without a reply, beside answers to the same question
/// from the same server.
fn rate_limit_words(e: &EndpointReport) -> Option<String> {
    let t = &e.totals;
    if t.answered == 0 {
        return None;
    }
    let refused = t.rcodes.get("REFUSED").copied().unwrap_or(0);
    let truncated = needless_truncation(e);
    let mut signs = Vec::new();
    if refused > 0 {
        signs.push(format!("REFUSED {refused}"));
    }
    if truncated > 0 {
        signs.push(format!(
            "truncated {truncated} UDP answers that came whole in {} others",
            e.protocols.get("udp").map_or(0, |u| u.answered.saturating_sub(u.truncated_retried))
        ));
    }
    if t.closed > 0 {
        signs.push(format!("closed {} TCP connections after reading the query, without a reply", t.closed));
    }
    if signs.is_empty() {
        return None;
    }
    if t.timeouts > 0 {
        signs.push(format!("left {} unanswered", t.timeouts));
    }
    Some(format!(
        "{} answered {} of {} queries and, to the same question, {}: a rate limiter on the server (dnsdist's MaxQPSIPRule, BIND's rate-limit, CoreDNS's), not the network and not an ACL; run again with --interval 200ms (fewer queries a second) to confirm: a rate limit's losses go away",
        describe(e),
        t.answered,
        t.sent,
        signs.join(", ")
    ))
}

/// What asking several names of the same servers tells: a server that answers one name and
/// fails another has a broken upstream (or zone), not a broken pod or path; one that fails every
/// name is down or cut off. `first` is the report of the first name, `others` of the rest.
pub fn compare_names(first: &DnsReport, others: &[DnsReport]) -> Vec<Finding> {
    let mut out = Vec::new();
    let all: Vec<&DnsReport> = std::iter::once(first).chain(others).collect();
    let rows = |r: &'_ DnsReport| {
        r.endpoints
            .iter()
            .chain(&r.services)
            .filter(|e| !e.not_ready())
            .map(|e| (e.socket(), e.clone()))
            .collect::<Vec<_>>()
    };
    for (socket, row) in rows(first) {
        let per_name: Vec<(&str, EndpointVerdict)> = all
            .iter()
            .filter_map(|r| {
                rows(r).into_iter().find(|(s, _)| *s == socket).map(|(_, e)| (r.name.as_str(), e.verdict))
            })
            .collect();
        let answered: Vec<&str> = per_name
            .iter()
            .filter(|(_, v)| !matches!(v, EndpointVerdict::Failing))
            .map(|(n, _)| *n)
            .collect();
        let failed: Vec<&str> =
            per_name.iter().filter(|(_, v)| matches!(v, EndpointVerdict::Failing)).map(|(n, _)| *n).collect();
        if failed.is_empty() {
            continue;
        }
        let who = describe(&row);
        let message = if answered.is_empty() {
            format!(
                "{who} fails every name asked ({}): the pod or the path to it is down, not its upstream",
                failed.join(", ")
            )
        } else {
            format!(
                "{who} answers {} but fails {}: the pod and the path to it work, what it forwards to (CoreDNS's forward plugin: the node's /etc/resolv.conf or the servers named) or the zone of {} does not",
                answered.join(", "),
                failed.join(", "),
                failed.join(", ")
            )
        };
        let kind =
            if answered.is_empty() { FindingKind::FailsEveryName } else { FindingKind::UpstreamBroken };
        out.push(Finding { kind, message, about: vec![socket] });
    }
    out
}

/// What this host's conntrack counters say of half-answered pairs, as a sentence (or nothing).
fn conntrack_words(conntrack: Option<&ConntrackReport>) -> String {
    let Some(c) = conntrack else { return String::new() };
    match (c.insert_failed, c.drop, &c.error) {
        (Some(failed), Some(dropped), _) if failed + dropped > 0 => format!(
            "This host's conntrack counted insert_failed +{failed} and drop +{dropped} during the run: the race happened here. "
        ),
        (Some(_), Some(_), _) => "This network namespace's conntrack counted no failed insert and no drop during the run, so the answer was lost elsewhere: run this on the node that DNATs the Service (hostNetwork, as root) to read its counters. ".into(),
        (_, _, Some(why)) => format!("(Conntrack's counters were not read: {why}.) "),
        _ => String::new(),
    }
}

/// Whether `failed` of `sent` Service queries support the claim "the failure rate is the share of
/// failing endpoints, `failing` of `endpoints`": the 95% Wilson interval of the observed rate must
/// lie within half the distance to the shares of one endpoint more or fewer. A handful of queries
/// never supports it; 40 queries over two endpoints, one dead, do.
pub fn share_explains(failed: u32, sent: u32, failing: usize, endpoints: usize) -> bool {
    if sent == 0 || endpoints == 0 || failing == 0 {
        return false;
    }
    let (low, high) = wilson_interval(failed, sent);
    let step = 1.0 / endpoints as f64;
    let expected = failing as f64 * step;
    let lowest = expected - step / 2.0;
    let highest = if failing >= endpoints { 1.0 } else { expected + step / 2.0 };
    low >= lowest && high <= highest
}

/// The 95% Wilson score interval of a binomial proportion `k` of `n`.
/// Whether `n` queries that all failed stand against `k` of `m` answered on another transport:
/// Fisher's exact test, one-sided at 5%. Were both transports alike, the chance that all `k`
/// answers fall on the second is C(m,k)/C(m+n,k): 0 of 5 against 3 of 5 is 8% (chance, behind a
/// Service with a dead backend), 0 of 4 against 4 of 4 is 1.4%, 0 of 10 against 10 of 10 is 0.0005%.
fn clearly_fails(n: u32, k: u32, m: u32) -> bool {
    if n == 0 || k == 0 || k > m {
        return false;
    }
    let chance: f64 = (0..k).map(|i| f64::from(m - i) / f64::from(m + n - i)).product();
    chance < 0.05
}

fn wilson_interval(k: u32, n: u32) -> (f64, f64) {
    const Z: f64 = 1.96;
    let n = f64::from(n);
    let p = f64::from(k) / n;
    let denominator = 1.0 + Z * Z / n;
    let centre = (p + Z * Z / (2.0 * n)) / denominator;
    let half = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt() / denominator;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::report::Latency;
    use crate::dns::stats::Tally;
    use crate::Health;

    fn endpoint(ip: &str, node: &str, sent: u32, answered: u32, answers: &[&str]) -> EndpointReport {
        EndpointReport {
            endpoint: crate::cluster::ServiceEndpoint {
                address: ip.parse().unwrap(),
                port: 53,
                node: Some(node.into()),
                pod: Some(format!("coredns-{node}")),
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            },
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

    /// The same endpoint, but every reply has `rcode` (no answers).
    fn erroring(ip: &str, node: &str, sent: u32, rcode: &str) -> EndpointReport {
        let mut e = endpoint(ip, node, sent, 0, &[]);
        e.totals.timeouts = 0;
        e.totals.error_replies = sent;
        e.totals.rcodes = BTreeMap::from([(rcode.to_string(), sent)]);
        e.totals.latency_ms = Some(Latency { p50: 1.0, p95: 2.0, p99: 3.0, max: 4.0 });
        e
    }

    fn judge(mut endpoints: Vec<EndpointReport>, services: &[EndpointReport]) -> Vec<EndpointReport> {
        let judge = Judge::new(&endpoints, services, Duration::from_millis(250));
        for e in &mut endpoints {
            e.verdict = judge.verdict(e);
        }
        endpoints
    }

    fn verdicts(endpoints: &[EndpointReport]) -> Vec<EndpointVerdict> {
        endpoints.iter().map(|e| e.verdict).collect()
    }

    fn kinds(found: &[Finding]) -> Vec<FindingKind> {
        found.iter().map(|f| f.kind).collect()
    }

    fn context<'a>(
        endpoints: &'a [EndpointReport],
        services: &'a [EndpointReport],
        node: Option<&'a str>,
    ) -> Context<'a> {
        Context {
            endpoints,
            services,
            this_node: node,
            name: "kubernetes.default.svc.cluster.local.",
            timeout: Duration::from_secs(1),
            slow: Duration::from_millis(250),
            conntrack: None,
        }
    }

    use EndpointVerdict::*;

    #[test]
    fn verdicts_by_counts_and_answers() {
        let endpoints = judge(
            vec![
                endpoint("192.0.2.53", "node-a", 40, 40, &["10.96.0.1"]),
                endpoint("192.0.2.54", "node-b", 40, 0, &[]),
                endpoint("192.0.2.55", "node-c", 40, 40, &["10.96.0.99"]),
                endpoint("192.0.2.56", "node-a", 40, 39, &["10.96.0.1"]),
            ],
            &[],
        );
        assert_eq!(verdicts(&endpoints), vec![Ok, Failing, Inconsistent, Degraded]);
    }

    #[test]
    fn error_replies_are_not_answers() {
        // A healthy server beside a SERVFAIL one and an NXDOMAIN one.
        let endpoints = judge(
            vec![
                endpoint("192.0.2.53", "node-a", 20, 20, &["10.96.0.1"]),
                erroring("192.0.2.54", "node-b", 20, "SERVFAIL"),
                erroring("192.0.2.55", "node-c", 20, "NXDOMAIN"),
            ],
            &[],
        );
        assert_eq!(verdicts(&endpoints), vec![Ok, Failing, Inconsistent]);
        let found = findings(&context(&endpoints, &[], None));
        assert_eq!(kinds(&found), vec![FindingKind::ServerErrors, FindingKind::InconsistentAnswers]);
        assert!(found[0]
            .message
            .starts_with("192.0.2.54:53 (coredns-node-b on node-b) answered SERVFAIL to 20 of 20"));
        assert!(found[1].message.contains("NXDOMAIN"), "{}", found[1].message);
        // Some SERVFAIL among answers: degraded, not ok.
        let mut some = endpoint("192.0.2.56", "node-a", 20, 18, &["10.96.0.1"]);
        some.totals.timeouts = 0;
        some.totals.error_replies = 2;
        some.totals.rcodes.insert("SERVFAIL".into(), 2);
        let endpoints = judge(vec![some, endpoint("192.0.2.53", "node-a", 20, 20, &["10.96.0.1"])], &[]);
        assert_eq!(verdicts(&endpoints), vec![Degraded, Ok]);
    }

    #[test]
    fn nxdomain_everywhere_is_a_name_that_exists_nowhere() {
        let endpoints = judge(
            vec![
                erroring("192.0.2.53", "node-a", 20, "NXDOMAIN"),
                erroring("192.0.2.54", "node-b", 20, "NXDOMAIN"),
            ],
            &[],
        );
        assert_eq!(verdicts(&endpoints), vec![Nxdomain, Nxdomain]);
        assert!(Nxdomain.is_fault());
        let found = findings(&context(&endpoints, &[], None));
        assert_eq!(kinds(&found), vec![FindingKind::NameExistsNowhere]);
    }

    #[test]
    fn not_ready_endpoints_are_shown_not_judged() {
        let mut terminating = endpoint("192.0.2.54", "node-b", 20, 0, &[]);
        terminating.endpoint.ready = Some(false);
        terminating.endpoint.terminating = Some(true);
        let endpoints =
            judge(vec![endpoint("192.0.2.53", "node-a", 20, 20, &["10.96.0.1"]), terminating], &[]);
        assert_eq!(verdicts(&endpoints), vec![Ok, NotReady]);
        assert!(!NotReady.is_fault());
        assert!(
            findings(&context(&endpoints, &[], Some("node-a"))).is_empty(),
            "no cross-node, no unreachable"
        );
    }

    #[test]
    fn the_service_breaks_a_tie_between_two_answer_sets() {
        let service = endpoint("192.0.2.10", "-", 40, 20, &["10.96.0.1"]);
        let endpoints = vec![
            endpoint("192.0.2.53", "node-a", 40, 40, &["10.96.0.1"]),
            endpoint("192.0.2.55", "node-c", 40, 40, &["10.96.0.99"]),
        ];
        assert_eq!(Judge::new(&endpoints, &[], Duration::ZERO).majority, None);
        let judged = Judge::new(&endpoints, std::slice::from_ref(&service), Duration::ZERO);
        assert_eq!(judged.majority, Some(vec!["10.96.0.1".to_string()]));
    }

    #[test]
    fn slow_degrades() {
        let mut slow = endpoint("192.0.2.53", "node-a", 10, 10, &["10.96.0.1"]);
        slow.totals.latency_ms = Some(Latency { p50: 300.0, p95: 300.0, p99: 300.0, max: 300.0 });
        assert_eq!(verdicts(&judge(vec![slow], &[])), vec![Degraded]);
    }

    #[test]
    fn each_kind_of_silence_in_its_own_words() {
        let mut refused = endpoint("198.51.100.53", "node-a", 6, 0, &[]);
        refused.endpoint.port = 5353;
        refused.totals.timeouts = 0;
        refused.totals.refused = 6;
        let mut unroutable = endpoint("2001:db8::53", "node-b", 6, 0, &[]);
        unroutable.totals.timeouts = 0;
        unroutable.totals.no_route = 6;
        let silent = endpoint("192.0.2.55", "node-c", 6, 0, &[]);
        let endpoints = judge(vec![refused, unroutable, silent], &[]);
        let found = findings(&context(&endpoints, &[], None));
        let messages: Vec<&str> = found.iter().map(|f| f.message.as_str()).collect();
        assert!(
            messages[0].starts_with("198.51.100.53:5353 (coredns-node-a on node-a) refused 6 of 6"),
            "{messages:?}"
        );
        assert!(messages[0].contains("nothing listens on port 5353"));
        assert!(
            messages[1].starts_with("[2001:db8::53]:53 (coredns-node-b on node-b): no route to 2001:db8::53"),
            "{messages:?}"
        );
        assert!(messages[2].contains("answered none of 6 queries"), "{messages:?}");
    }

    #[test]
    fn one_transport_blocked_truncation_and_late_answers() {
        let mut udp_blocked = endpoint("192.0.2.53", "node-a", 40, 20, &["10.96.0.1"]);
        udp_blocked
            .protocols
            .insert("udp".into(), ProtocolReport { sent: 20, timeouts: 20, ..Default::default() });
        udp_blocked
            .protocols
            .insert("tcp".into(), ProtocolReport { sent: 20, answered: 20, ..Default::default() });
        let mut too_big = endpoint("192.0.2.54", "node-a", 5, 0, &[]);
        too_big.totals.timeouts = 0;
        too_big.totals.tcp_retry_failed = 5;
        too_big.totals.first_error = Some("tcp connect: Connection refused".into());
        let mut late = endpoint("192.0.2.55", "node-a", 5, 0, &[]);
        late.totals.timeouts = 0;
        late.totals.late = 5;
        late.totals.late_max_ms = Some(1500.0);
        let endpoints = judge(vec![udp_blocked, too_big, late], &[]);
        assert_eq!(verdicts(&endpoints), vec![Degraded, Failing, Failing]);
        let found = findings(&context(&endpoints, &[], None));
        assert_eq!(
            kinds(&found),
            vec![FindingKind::ProtocolBlocked, FindingKind::TooBigForUdp, FindingKind::LateAnswers]
        );
        assert!(found[0].message.contains("answers over TCP but not over UDP"));
        assert!(found[1].message.contains("too big for UDP (truncated) and TCP 53 is blocked"));
        assert!(!found.iter().any(|f| f.message.contains("drops DNS")), "not called unreachable");
        assert!(found[2].message.contains("arrive after 1.5 s"), "{}", found[2].message);
        assert!(found[2].message.contains("raise --timeout or look upstream"));
    }

    /// An endpoint that answered `answered` of `sent` UDP queries with 10.96.0.1, and TCP as
    /// given: its UDP and TCP rows and their totals.
    fn over_both(ip: &str, udp: ProtocolReport, tcp: ProtocolReport) -> EndpointReport {
        let mut e = endpoint(ip, "node-a", 0, 0, &["10.96.0.1"]);
        let mut totals = Tally::default();
        for row in [&udp, &tcp] {
            let mut tally = Tally::default();
            tally.report = row.clone();
            totals.merge(&tally);
        }
        e.totals = totals.report;
        e.totals.latency_ms = Some(Latency { p50: 1.0, p95: 2.0, p99: 3.0, max: 4.0 });
        e.protocols = BTreeMap::from([("udp".to_string(), udp), ("tcp".to_string(), tcp)]);
        e
    }

    fn row(sent: u32, answered: u32) -> ProtocolReport {
        ProtocolReport {
            sent,
            answered,
            rcodes: BTreeMap::from([("NOERROR".into(), answered)]),
            ..Default::default()
        }
    }

    #[test]
    fn a_rate_limiter_is_named_by_what_it_does_beside_answers() {
        // dnsdist's MaxQPSIPRule(5) with RCodeAction(REFUSED), 40 queries at 100 a second: 3
        // answered, 37 REFUSED, over UDP. Not an ACL: it answered the same question.
        let mut udp = row(40, 3);
        udp.error_replies = 37;
        udp.rcodes.insert("REFUSED".into(), 37);
        let refusing = over_both("192.0.2.10", udp, row(40, 40));
        // BIND's rate-limit with slip 2: 7 dropped, 7 truncated though 26 came whole.
        let mut udp = row(40, 33);
        udp.timeouts = 7;
        udp.truncated_retried = 7;
        let slipping = over_both("192.0.2.11", udp, row(40, 40));
        // dnsdist's DropAction over TCP: accepted, read, closed.
        let mut tcp = row(40, 3);
        tcp.closed = 37;
        let closing = over_both("192.0.2.12", row(40, 40), tcp);
        // dnsdist's TCAction: every answer truncated but 2, all fetched over TCP.
        let mut udp = row(40, 40);
        udp.truncated_retried = 38;
        let truncating = over_both("192.0.2.13", udp, row(40, 40));
        let endpoints = judge(vec![refusing, slipping, closing, truncating], &[]);
        assert_eq!(verdicts(&endpoints), vec![Degraded; 4], "a needless truncation costs a TCP round trip");
        let found = findings(&context(&endpoints, &[], None));
        assert_eq!(kinds(&found), vec![FindingKind::RateLimited; 4], "{found:#?}");
        assert!(
            found[0].message.contains("answered 43 of 80 queries and, to the same question, REFUSED 37"),
            "{}",
            found[0].message
        );
        assert!(!found.iter().any(|f| f.message.contains("ACL (")), "not an ACL: {found:#?}");
        assert!(
            found[1]
                .message
                .contains("truncated 7 UDP answers that came whole in 26 others, left 7 unanswered"),
            "{}",
            found[1].message
        );
        assert!(
            found[2].message.contains("closed 37 TCP connections after reading the query"),
            "{}",
            found[2].message
        );
        assert!(found.iter().all(|f| f.message.contains("--interval 200ms")));
    }

    #[test]
    fn every_degraded_row_has_a_finding_that_explains_it() {
        let mut cases = Vec::new();
        for answered in [1, 5, 9] {
            for (timeouts, late, servfail, slow) in
                [(1, 0, 0, false), (0, 1, 0, false), (0, 0, 1, false), (0, 0, 0, true)]
            {
                let mut e =
                    endpoint(&format!("192.0.2.{}", cases.len() + 1), "node-a", 10, answered, &["10.96.0.1"]);
                let t = &mut e.totals;
                t.timeouts = timeouts;
                t.late = late;
                t.error_replies = servfail;
                if servfail > 0 {
                    t.rcodes.insert("SERVFAIL".into(), servfail);
                }
                t.sent = answered + timeouts + late + servfail;
                if slow {
                    t.latency_ms = Some(Latency { p50: 100.0, p95: 900.0, p99: 900.0, max: 900.0 });
                }
                cases.push(e);
            }
        }
        let endpoints = judge(cases, &[]);
        let found = findings(&context(&endpoints, &[], None));
        for e in endpoints.iter().filter(|e| e.verdict == Degraded) {
            let who = e.socket().to_string();
            assert!(
                found.iter().any(|f| f.message.contains(&who)),
                "{who} is degraded and unexplained: {found:#?}"
            );
        }
        assert!(endpoints.iter().filter(|e| e.verdict == Degraded).count() >= 8);
    }

    #[test]
    fn a_service_whose_tcp_answered_is_not_called_tcp_blocked() {
        // Behind the Service, one backend's TCP is dropped: some truncated answers' TCP retries
        // fail, the rest are answered.
        let mut udp = row(20, 12);
        udp.truncated_retried = 12;
        udp.tcp_retry_failed = 8;
        let mut tcp = row(20, 11);
        tcp.timeouts = 9;
        let service = over_both("192.0.2.10", udp, tcp);
        let services = judge(vec![service], &[]);
        let found = findings(&context(&[], &services, None));
        let too_big: Vec<&Finding> = found.iter().filter(|f| f.kind == FindingKind::TooBigForUdp).collect();
        assert_eq!(too_big.len(), 1, "{found:#?}");
        assert!(!too_big[0].message.contains("TCP 53 is blocked"), "{}", too_big[0].message);
        assert!(too_big[0].message.contains("8 of their TCP retries failed"), "{}", too_big[0].message);
    }

    #[test]
    fn asking_two_names_tells_a_broken_upstream_from_a_pod_that_is_down() {
        let report = |name: &str, endpoints: Vec<EndpointReport>| {
            let endpoints = judge(endpoints, &[]);
            let findings = findings(&Context { name, ..context(&endpoints, &[], None) });
            DnsReport {
                probe: "dns",
                name: name.into(),
                record_type: "A".into(),
                this_node: None,
                verdict: if endpoints.iter().any(|e| e.verdict.is_fault()) {
                    Health::Fault
                } else {
                    Health::Ok
                },
                endpoints,
                services: vec![],
                findings,
                conntrack: None,
                udp_sockets: Default::default(),
                other_names: vec![],
            }
        };
        // .53 answers the cluster's name and nothing for the external one; .54 answers neither.
        let cluster = report(
            "kubernetes.default.svc.cluster.local.",
            vec![
                endpoint("192.0.2.53", "node-a", 5, 5, &["10.96.0.1"]),
                endpoint("192.0.2.54", "node-b", 5, 0, &[]),
            ],
        );
        let external = report(
            "example.com.",
            vec![endpoint("192.0.2.53", "node-a", 5, 0, &[]), endpoint("192.0.2.54", "node-b", 5, 0, &[])],
        );
        let both = cluster.with_other_names(vec![external]);
        assert_eq!(both.verdict, Health::Fault);
        let compared: Vec<&Finding> = both
            .findings
            .iter()
            .filter(|f| matches!(f.kind, FindingKind::UpstreamBroken | FindingKind::FailsEveryName))
            .collect();
        assert_eq!(
            kinds(&compared.iter().map(|f| (*f).clone()).collect::<Vec<_>>()),
            vec![FindingKind::UpstreamBroken, FindingKind::FailsEveryName]
        );
        assert!(compared[0].message.starts_with("192.0.2.53:53 (coredns-node-a on node-a) answers kubernetes.default.svc.cluster.local. but fails example.com."), "{}", compared[0].message);
        // "Unreachable" stays only for the server that answers nothing.
        let unreachable = |r: &DnsReport| {
            r.findings
                .iter()
                .filter(|f| f.kind == FindingKind::EndpointUnreachable)
                .map(|f| f.about.clone())
                .collect::<Vec<_>>()
        };
        let down: Vec<SocketAddr> = vec!["192.0.2.54:53".parse().unwrap()];
        assert_eq!(unreachable(&both), vec![down.clone()]);
        assert_eq!(unreachable(&both.other_names[0]), vec![down]);
    }

    #[test]
    fn a_failing_service_in_front_of_healthy_endpoints_is_the_path() {
        let endpoints = judge(
            vec![
                endpoint("192.0.2.53", "node-a", 40, 40, &["10.96.0.1"]),
                endpoint("192.0.2.54", "node-b", 40, 40, &["10.96.0.1"]),
            ],
            &[],
        );
        let service = [endpoint("192.0.2.10", "-", 40, 30, &["10.96.0.1"])];
        let found = findings(&context(&endpoints, &service, None));
        assert_eq!(kinds(&found), vec![FindingKind::ServicePath]);
        assert!(found[0].message.starts_with("the Service 192.0.2.10:53 failed 10 of 40"));
    }

    #[test]
    fn findings_for_the_incident() {
        let endpoints = judge(
            vec![
                endpoint("192.0.2.53", "node-a", 40, 40, &["10.96.0.1"]),
                endpoint("192.0.2.54", "node-b", 40, 0, &[]),
            ],
            &[],
        );
        let service = [endpoint("192.0.2.10", "-", 40, 21, &["10.96.0.1"])];
        let found = findings(&context(&endpoints, &service, Some("node-a")));
        assert_eq!(
            kinds(&found),
            vec![
                FindingKind::EndpointUnreachable,
                FindingKind::ServiceFailuresExplained,
                FindingKind::CrossNode
            ]
        );
        assert!(found[1].message.contains("failed 19 of 40 queries (48%)"), "{}", found[1].message);
        assert!(found[2].message.contains("netprobe vxlan node-a node-b"), "{}", found[2].message);
        // From node-b's point of view the failing pod is local: no cross-node finding.
        let found = findings(&context(&endpoints, &service, Some("node-b")));
        assert!(found.iter().all(|f| f.kind != FindingKind::CrossNode));
        // A Service that never fails is not explained by a failing endpoint.
        let healthy = [endpoint("192.0.2.10", "-", 40, 40, &["10.96.0.1"])];
        let found = findings(&context(&endpoints, &healthy, None));
        assert!(found.iter().all(|f| f.kind != FindingKind::ServiceFailuresExplained));
    }

    #[test]
    fn a_transport_is_called_blocked_only_when_its_silence_stands_out() {
        assert!(clearly_fails(10, 10, 10));
        assert!(clearly_fails(4, 4, 4), "0 of 4 against 4 of 4: 1 in 70");
        assert!(!clearly_fails(5, 3, 5), "a Service with a dead backend can lose 5 of 5 by chance");
        assert!(!clearly_fails(1, 1, 1) && !clearly_fails(2, 2, 2), "too few to tell");
        assert!(!clearly_fails(0, 5, 5) && !clearly_fails(5, 0, 0) && !clearly_fails(5, 0, 5));
    }

    #[test]
    fn the_share_test_fits_the_number_of_queries() {
        // One of two endpoints dead: 19 of 40 supports it; 1 of 2 or 2 of 4 cannot.
        assert!(share_explains(19, 40, 1, 2));
        assert!(!share_explains(1, 2, 1, 2));
        assert!(!share_explains(2, 4, 1, 2));
        // 23 of 40 (57%) is not "1 of 3 endpoints" (33%).
        assert!(!share_explains(23, 40, 1, 3));
        assert!(share_explains(40, 120, 1, 3));
        // Every endpoint dead: every query failed.
        assert!(share_explains(40, 40, 2, 2));
        assert!(!share_explains(30, 40, 2, 2));
        assert!(!share_explains(0, 0, 1, 2));
    }
}
