//! What an agent exposes on `GET /metrics`: the verdict of every pair whose beacons arrive at this
//! node (`from` the peer, `to` this node), the beacons behind it, their jitter, a bad pair's
//! diagnosed cause, its evaluations, and the requests it served; and the node's connection
//! tracking table, read at each scrape (conntrack.rs). The exposition format is
//! prometheus-client's (OpenMetrics text), never hand-written.
//!
//! Series: 5 per peer (`pair_up`, `pair_verdict`, `probes_sent`, `probes_arrived`,
//! `pair_jitter_seconds`) and one more for a bad pair's cause, so a node of a 1,000-node cluster
//! exports about 5,000 and the cluster 5 million. `--mesh-series failing` keeps only the pairs
//! that are not ok, beside 3 per node (`netprobe_vxlan_peers{to,state}`) that count the rest.

pub mod conntrack;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use std::sync::atomic::{AtomicBool, Ordering};

/// The content type of [`Metrics::encode`]'s text, for the HTTP answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Pair {
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairWithVerdict {
    from: String,
    to: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairWithCause {
    from: String,
    to: String,
    verdict: String,
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeersInState {
    to: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Served {
    endpoint: String,
    code: String,
}

/// How one pair came out in an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Judged: the verdict (the beacons', or the diagnosis' when it found the cause), whether the
    /// path is up, the beacons sent and arrived since the last evaluation, the jitter, and the
    /// diagnosed cause of a bad pair.
    Judged {
        verdict: &'static str,
        up: bool,
        sent: u64,
        arrived: u64,
        /// Beacons sent and arrived over the period the verdict rests on.
        period: (u64, u64),
        jitter_s: Option<f64>,
        cause: Option<String>,
    },
    /// Nothing to judge (the peer's agent is restarting, or does not send yet): no `up` value, so
    /// an alert on `up == 0` fires on the network, not on an agent being rolled.
    Untested,
}

impl Outcome {
    fn verdict(&self) -> &'static str {
        match self {
            Outcome::Judged { verdict, .. } => verdict,
            Outcome::Untested => "untested",
        }
    }

    fn state(&self) -> &'static str {
        match self {
            Outcome::Judged { up: true, .. } => "ok",
            Outcome::Judged { .. } => "failing",
            Outcome::Untested => "untested",
        }
    }
}

/// A cause longer than this is cut (a label value, and a sentence a person reads).
const CAUSE_MAX: usize = 200;

pub struct Metrics {
    registry: Registry,
    pair_up: Family<Pair, Gauge>,
    pair_verdict: Family<PairWithVerdict, Gauge>,
    sent: Family<Pair, Counter>,
    arrived: Family<Pair, Counter>,
    jitter: Family<Pair, Gauge<f64, AtomicU64>>,
    cause: Family<PairWithCause, Gauge>,
    peers: Family<PeersInState, Gauge>,
    round_duration: Histogram,
    last_round: Gauge<f64, AtomicU64>,
    requests: Family<Served, Counter>,
    /// The verdict (and cause) each pair's series say now, so the old ones can go, and each
    /// pair's state for the per-node counts.
    current: Mutex<HashMap<Pair, Current>>,
    /// `--mesh-series failing`: series only for the pairs that are not ok.
    failing_only: AtomicBool,
}

#[derive(Clone, Debug)]
struct Current {
    verdict: &'static str,
    cause: Option<String>,
    state: &'static str,
    /// Beacons sent and arrived over the period its verdict rests on.
    sent: u64,
    arrived: u64,
}

impl Default for Metrics {
    /// The metrics with this node's conntrack table, read at every scrape.
    fn default() -> Self {
        Metrics::reading_conntrack_with(conntrack::Reading::now)
    }
}

impl Metrics {
    /// The metrics with the conntrack table read by `read` at every scrape (a test's reading).
    pub fn reading_conntrack_with(read: fn() -> Option<conntrack::Reading>) -> Self {
        let mut registry = Registry::default();
        let pair_up = Family::<Pair, Gauge>::default();
        let pair_verdict = Family::<PairWithVerdict, Gauge>::default();
        let sent = Family::<Pair, Counter>::default();
        let arrived = Family::<Pair, Counter>::default();
        let jitter = Family::<Pair, Gauge<f64, AtomicU64>>::default();
        let cause = Family::<PairWithCause, Gauge>::default();
        let peers = Family::<PeersInState, Gauge>::default();
        // 1 ms to about a minute: an evaluation is microseconds, unless it asks silent peers'
        // agents (5 s each at most, all at once).
        let round_duration = Histogram::new(exponential_buckets(0.001, 4.0, 9));
        let last_round = Gauge::<f64, AtomicU64>::default();
        let requests = Family::<Served, Counter>::default();
        registry.register(
            "netprobe_vxlan_pair_up",
            "1 when every VXLAN beacon from the peer to this node in the last period arrived, else 0 (absent while untested)",
            pair_up.clone(),
        );
        registry.register(
            "netprobe_vxlan_pair_verdict",
            "1 for the pair's current verdict: the beacons' (ok, partial-loss, no-arrivals, untested), or the diagnosis' once it names the cause (blocked-at-source, lost-in-network, rejected, dropped-at-destination, vtep-port-mismatch, unverified)",
            pair_verdict.clone(),
        );
        registry.register(
            "netprobe_vxlan_probes_sent",
            "VXLAN beacons the peer sent to this node (by their numbers)",
            sent.clone(),
        );
        registry.register(
            "netprobe_vxlan_probes_arrived",
            "VXLAN beacons from the peer that arrived at this node",
            arrived.clone(),
        );
        registry.register(
            "netprobe_vxlan_pair_jitter_seconds",
            "The one-way delay's jitter of the beacons from the peer (RFC 3550's smoothed change)",
            jitter.clone(),
        );
        registry.register(
            "netprobe_vxlan_pair_cause",
            "1 for a bad pair's diagnosed cause (netprobe vxlan's exchange for that direction, on demand)",
            cause.clone(),
        );
        registry.register(
            "netprobe_vxlan_peers",
            "Peers whose beacons to this node are ok, failing or untested",
            peers.clone(),
        );
        registry.register(
            "netprobe_vxlan_round_duration_seconds",
            "How long an evaluation of every peer took (asking the silent ones included)",
            round_duration.clone(),
        );
        registry.register(
            "netprobe_vxlan_last_round_timestamp_seconds",
            "When the last evaluation of the mesh ended (Unix time)",
            last_round.clone(),
        );
        registry.register(
            "netprobe_agent_requests",
            "Requests the agent answered, by endpoint and status code",
            requests.clone(),
        );
        registry.register_collector(Box::new(conntrack::ConntrackCollector { read }));
        Metrics {
            registry,
            pair_up,
            pair_verdict,
            sent,
            arrived,
            jitter,
            cause,
            peers,
            round_duration,
            last_round,
            requests,
            current: Mutex::default(),
            failing_only: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// `--mesh-series failing`: from now on, series only for the pairs that are not ok.
    pub fn failing_only(&self) {
        self.failing_only.store(true, Ordering::Relaxed);
    }

    /// Records one pair's outcome in an evaluation.
    pub fn record_pair(&self, from: &str, to: &str, outcome: Outcome) {
        let pair = Pair { from: from.to_string(), to: to.to_string() };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let previous = current.get(&pair).cloned();
        let quiet = self.failing_only.load(Ordering::Relaxed) && outcome.state() != "failing";
        if quiet {
            self.remove_series(&pair, previous.as_ref());
        } else {
            match &outcome {
                Outcome::Judged { up, sent, arrived, jitter_s, .. } => {
                    self.pair_up.get_or_create(&pair).set(i64::from(*up));
                    self.sent.get_or_create(&pair).inc_by(*sent);
                    self.arrived.get_or_create(&pair).inc_by(*arrived);
                    match jitter_s {
                        Some(j) => {
                            self.jitter.get_or_create(&pair).set(*j);
                        }
                        None => {
                            self.jitter.remove(&pair);
                        }
                    }
                }
                Outcome::Untested => {
                    self.pair_up.remove(&pair);
                }
            }
            let verdict = outcome.verdict();
            let cause = match &outcome {
                Outcome::Judged { cause: Some(c), .. } => Some(c.chars().take(CAUSE_MAX).collect::<String>()),
                _ => None,
            };
            if let Some(old) = &previous {
                if old.verdict != verdict {
                    self.pair_verdict.remove(&self.with_verdict(&pair, old.verdict));
                }
                if old.cause.is_some() && (old.cause != cause || old.verdict != verdict) {
                    self.cause.remove(&self.with_cause(&pair, old));
                }
            }
            self.pair_verdict.get_or_create(&self.with_verdict(&pair, verdict)).set(1);
            if let Some(cause) = &cause {
                let now = Current {
                    verdict,
                    cause: Some(cause.clone()),
                    state: outcome.state(),
                    sent: 0,
                    arrived: 0,
                };
                self.cause.get_or_create(&self.with_cause(&pair, &now)).set(1);
            }
        }
        let state = outcome.state();
        let cause = match &outcome {
            Outcome::Judged { cause: Some(c), .. } if !quiet => Some(c.chars().take(CAUSE_MAX).collect()),
            _ => None,
        };
        let (sent, arrived) = match &outcome {
            Outcome::Judged { period, .. } => *period,
            Outcome::Untested => (0, 0),
        };
        current.insert(pair, Current { verdict: outcome.verdict(), cause, state, sent, arrived });
    }

    /// What the last evaluation judged (`GET /v1/mesh`): the ok pairs counted, the others listed
    /// in order.
    pub fn mesh_state(&self, period: Duration) -> netprobe_probes::vxlan::api::MeshState {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let ok = current.values().filter(|c| c.verdict == "ok").count() as u64;
        let mut pairs: Vec<_> = current
            .iter()
            .filter(|(_, c)| c.verdict != "ok")
            .map(|(pair, c)| netprobe_probes::vxlan::api::MeshPair {
                from: pair.from.clone(),
                to: pair.to.clone(),
                verdict: c.verdict.to_string(),
                sent: c.sent,
                arrived: c.arrived,
                cause: c.cause.clone(),
            })
            .collect();
        pairs.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        let at = self.last_round.get();
        netprobe_probes::vxlan::api::MeshState {
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            evaluated_at: (at > 0.0).then_some(at),
            ok,
            pairs,
        }
    }

    /// A peer that is no longer a peer (gone from the API): its series go.
    pub fn forget_pair(&self, from: &str, to: &str) {
        let pair = Pair { from: from.to_string(), to: to.to_string() };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let previous = current.remove(&pair);
        self.remove_series(&pair, previous.as_ref());
    }

    fn remove_series(&self, pair: &Pair, previous: Option<&Current>) {
        self.pair_up.remove(pair);
        self.sent.remove(pair);
        self.arrived.remove(pair);
        self.jitter.remove(pair);
        if let Some(old) = previous {
            self.pair_verdict.remove(&self.with_verdict(pair, old.verdict));
            if old.cause.is_some() {
                self.cause.remove(&self.with_cause(pair, old));
            }
        }
    }

    fn with_verdict(&self, pair: &Pair, verdict: &str) -> PairWithVerdict {
        PairWithVerdict { from: pair.from.clone(), to: pair.to.clone(), verdict: verdict.into() }
    }

    fn with_cause(&self, pair: &Pair, current: &Current) -> PairWithCause {
        PairWithCause {
            from: pair.from.clone(),
            to: pair.to.clone(),
            verdict: current.verdict.into(),
            cause: current.cause.clone().unwrap_or_default(),
        }
    }

    /// Counts the peers of `to` by state (after an evaluation has recorded every pair).
    pub fn count_peers(&self, to: &str) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        for state in ["ok", "failing", "untested"] {
            let n = current.iter().filter(|(p, c)| p.to == to && c.state == state).count();
            self.peers.get_or_create(&PeersInState { to: to.into(), state: state.into() }).set(n as i64);
        }
    }

    pub fn record_round(&self, took: Duration, ended: SystemTime) {
        self.round_duration.observe(took.as_secs_f64());
        let at = ended.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.last_round.set(at);
    }

    pub fn record_request(&self, endpoint: &str, code: u16) {
        self.requests.get_or_create(&Served { endpoint: endpoint.to_string(), code: code.to_string() }).inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    fn judged(verdict: &'static str, sent: u64, arrived: u64, cause: Option<&str>) -> Outcome {
        Outcome::Judged {
            verdict,
            up: verdict == "ok",
            sent,
            arrived,
            period: (sent, arrived),
            jitter_s: Some(0.0002),
            cause: cause.map(String::from),
        }
    }

    #[test]
    fn a_pair_has_one_current_verdict_and_up_follows_it() {
        let metrics = Metrics::default();
        metrics.record_pair("node-a", "node-b", judged("ok", 5, 5, None));
        let text = metrics.encode();
        assert!(has(&text, r#"netprobe_vxlan_pair_up{from="node-a",to="node-b"} 1"#), "{text}");
        assert!(
            has(&text, r#"netprobe_vxlan_pair_verdict{from="node-a",to="node-b",verdict="ok"} 1"#),
            "{text}"
        );
        assert!(has(&text, r#"netprobe_vxlan_probes_sent_total{from="node-a",to="node-b"} 5"#), "{text}");
        assert!(
            has(&text, r#"netprobe_vxlan_pair_jitter_seconds{from="node-a",to="node-b"} 0.0002"#),
            "{text}"
        );

        let cause = "dropped at node-b by -A INPUT -p udp --dport 8472 -j DROP";
        metrics.record_pair("node-a", "node-b", judged("dropped-at-destination", 5, 0, Some(cause)));
        let text = metrics.encode();
        assert!(has(&text, r#"netprobe_vxlan_pair_up{from="node-a",to="node-b"} 0"#), "{text}");
        assert!(!text.contains(r#"verdict="ok""#), "the old verdict is gone: {text}");
        assert!(has(
            &text,
            r#"netprobe_vxlan_pair_verdict{from="node-a",to="node-b",verdict="dropped-at-destination"} 1"#
        ));
        assert!(text.contains(&format!(r#"netprobe_vxlan_pair_cause{{from="node-a",to="node-b",verdict="dropped-at-destination",cause="{cause}"}} 1"#)), "{text}");
        assert!(has(&text, r#"netprobe_vxlan_probes_sent_total{from="node-a",to="node-b"} 10"#), "{text}");
        assert!(has(&text, r#"netprobe_vxlan_probes_arrived_total{from="node-a",to="node-b"} 5"#), "{text}");

        // Untested: no up value at all, so `up == 0` alerts only on the network; the cause goes.
        metrics.record_pair("node-a", "node-b", Outcome::Untested);
        let text = metrics.encode();
        assert!(!text.contains("netprobe_vxlan_pair_up{"), "{text}");
        assert!(!text.contains("netprobe_vxlan_pair_cause{"), "{text}");
        assert!(has(&text, r#"netprobe_vxlan_pair_verdict{from="node-a",to="node-b",verdict="untested"} 1"#));

        metrics.forget_pair("node-a", "node-b");
        assert!(!metrics.encode().contains("netprobe_vxlan_pair_verdict{"));
    }

    #[test]
    fn with_failing_only_an_ok_pair_has_no_series_and_the_counts_say_how_many() {
        let metrics = Metrics::default();
        metrics.failing_only();
        for peer in ["node-b", "node-c", "node-d"] {
            metrics.record_pair(peer, "node-a", judged("ok", 1, 1, None));
        }
        metrics.record_pair("node-e", "node-a", judged("partial-loss", 2, 1, None));
        metrics.record_pair("node-f", "node-a", Outcome::Untested);
        metrics.count_peers("node-a");
        let text = metrics.encode();
        assert_eq!(text.matches("netprobe_vxlan_pair_up{").count(), 1, "{text}");
        assert!(has(&text, r#"netprobe_vxlan_pair_up{from="node-e",to="node-a"} 0"#), "{text}");
        assert!(has(&text, r#"netprobe_vxlan_peers{to="node-a",state="ok"} 3"#), "{text}");
        assert!(has(&text, r#"netprobe_vxlan_peers{to="node-a",state="failing"} 1"#), "{text}");
        assert!(has(&text, r#"netprobe_vxlan_peers{to="node-a",state="untested"} 1"#), "{text}");
        // Healed: its series go too.
        metrics.record_pair("node-e", "node-a", judged("ok", 1, 1, None));
        assert!(!metrics.encode().contains("netprobe_vxlan_pair_up{"));
    }

    #[test]
    fn rounds_and_requests_are_counted() {
        let metrics = Metrics::default();
        metrics.record_round(
            Duration::from_millis(1500),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        metrics.record_request("/v1/send", 200);
        metrics.record_request("/v1/send", 200);
        let text = metrics.encode();
        assert!(has(&text, "netprobe_vxlan_round_duration_seconds_count 1"), "{text}");
        assert!(has(&text, "netprobe_vxlan_last_round_timestamp_seconds 1800000000.0"), "{text}");
        assert!(has(&text, r#"netprobe_agent_requests_total{endpoint="/v1/send",code="200"} 2"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics: {text}");
    }
}
