//! What an agent exposes on `GET /metrics`: the verdict of every pair its mesh probes, the probes
//! behind it, its rounds, and the requests it served. The exposition format is prometheus-client's
//! (OpenMetrics text), never hand-written.

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

use netprobe_probes::vxlan::PairVerdict;

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
struct Served {
    endpoint: String,
    code: String,
}

/// How one pair came out in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Probed and judged: the verdict, and how many probes were sent and arrived.
    Judged { verdict: PairVerdict, sent: u32, arrived: u32 },
    /// Not probed this round (the peer's agent did not answer, or was busy): no `up` value, so an
    /// alert on `up == 0` fires on the network, not on an agent being rolled.
    Untested,
}

impl Outcome {
    fn verdict(self) -> &'static str {
        match self {
            Outcome::Judged { verdict, .. } => verdict.as_str(),
            Outcome::Untested => "untested",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pair_up: Family<Pair, Gauge>,
    pair_verdict: Family<PairWithVerdict, Gauge>,
    sent: Family<Pair, Counter>,
    arrived: Family<Pair, Counter>,
    round_duration: Histogram,
    last_round: Gauge<f64, AtomicU64>,
    requests: Family<Served, Counter>,
    /// The verdict each pair's `pair_verdict` series says now, so the old one can go.
    current: Mutex<HashMap<Pair, &'static str>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let pair_up = Family::<Pair, Gauge>::default();
        let pair_verdict = Family::<PairWithVerdict, Gauge>::default();
        let sent = Family::<Pair, Counter>::default();
        let arrived = Family::<Pair, Counter>::default();
        // 0.5 s to about 2 minutes: a round is one probe window (a few seconds) when all is well.
        let round_duration = Histogram::new(exponential_buckets(0.5, 2.0, 9));
        let last_round = Gauge::<f64, AtomicU64>::default();
        let requests = Family::<Served, Counter>::default();
        registry.register(
            "netprobe_vxlan_pair_up",
            "1 when the last round's VXLAN verdict from this node to the peer was ok, else 0 (absent while untested)",
            pair_up.clone(),
        );
        registry.register(
            "netprobe_vxlan_pair_verdict",
            "1 for the pair's current verdict (ok, partial-loss, blocked-at-source, lost-in-network, rejected, dropped-at-destination, vtep-port-mismatch, unverified, untested)",
            pair_verdict.clone(),
        );
        registry.register(
            "netprobe_vxlan_probes_sent",
            "VXLAN probes sent from this node to the peer",
            sent.clone(),
        );
        registry.register(
            "netprobe_vxlan_probes_arrived",
            "VXLAN probes seen arriving on the peer's interface",
            arrived.clone(),
        );
        registry.register(
            "netprobe_vxlan_round_duration_seconds",
            "How long a round of the mesh (every peer once) took",
            round_duration.clone(),
        );
        registry.register(
            "netprobe_vxlan_last_round_timestamp_seconds",
            "When the last round of the mesh ended (Unix time)",
            last_round.clone(),
        );
        registry.register(
            "netprobe_agent_requests",
            "Requests the agent answered, by endpoint and status code",
            requests.clone(),
        );
        Metrics {
            registry,
            pair_up,
            pair_verdict,
            sent,
            arrived,
            round_duration,
            last_round,
            requests,
            current: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Records one pair's outcome in a round.
    pub fn record_pair(&self, from: &str, to: &str, outcome: Outcome) {
        let pair = Pair { from: from.to_string(), to: to.to_string() };
        match outcome {
            Outcome::Judged { verdict, sent, arrived } => {
                self.pair_up.get_or_create(&pair).set(i64::from(verdict == PairVerdict::Ok));
                self.sent.get_or_create(&pair).inc_by(u64::from(sent));
                self.arrived.get_or_create(&pair).inc_by(u64::from(arrived));
            }
            Outcome::Untested => {
                self.pair_up.remove(&pair);
            }
        }
        let verdict = outcome.verdict();
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.insert(pair.clone(), verdict).filter(|old| *old != verdict) {
            self.pair_verdict.remove(&PairWithVerdict {
                from: pair.from.clone(),
                to: pair.to.clone(),
                verdict: old.into(),
            });
        }
        self.pair_verdict
            .get_or_create(&PairWithVerdict { from: pair.from, to: pair.to, verdict: verdict.into() })
            .set(1);
    }

    /// A peer that is no longer a peer (gone from the API): its series go.
    pub fn forget_pair(&self, from: &str, to: &str) {
        let pair = Pair { from: from.to_string(), to: to.to_string() };
        self.pair_up.remove(&pair);
        if let Some(old) = self.current.lock().unwrap_or_else(|p| p.into_inner()).remove(&pair) {
            self.pair_verdict.remove(&PairWithVerdict { from: pair.from, to: pair.to, verdict: old.into() });
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

    #[test]
    fn a_pair_has_one_current_verdict_and_up_follows_it() {
        let metrics = Metrics::default();
        metrics.record_pair(
            "node-a",
            "node-b",
            Outcome::Judged { verdict: PairVerdict::Ok, sent: 5, arrived: 5 },
        );
        let text = metrics.encode();
        assert!(has(&text, r#"netprobe_vxlan_pair_up{from="node-a",to="node-b"} 1"#), "{text}");
        assert!(
            has(&text, r#"netprobe_vxlan_pair_verdict{from="node-a",to="node-b",verdict="ok"} 1"#),
            "{text}"
        );
        assert!(has(&text, r#"netprobe_vxlan_probes_sent_total{from="node-a",to="node-b"} 5"#), "{text}");

        metrics.record_pair(
            "node-a",
            "node-b",
            Outcome::Judged { verdict: PairVerdict::LostInNetwork, sent: 5, arrived: 0 },
        );
        let text = metrics.encode();
        assert!(has(&text, r#"netprobe_vxlan_pair_up{from="node-a",to="node-b"} 0"#), "{text}");
        assert!(!text.contains(r#"verdict="ok""#), "the old verdict is gone: {text}");
        assert!(has(
            &text,
            r#"netprobe_vxlan_pair_verdict{from="node-a",to="node-b",verdict="lost-in-network"} 1"#
        ));
        assert!(has(&text, r#"netprobe_vxlan_probes_sent_total{from="node-a",to="node-b"} 10"#), "{text}");
        assert!(has(&text, r#"netprobe_vxlan_probes_arrived_total{from="node-a",to="node-b"} 5"#), "{text}");

        // Untested: no up value at all, so `up == 0` alerts only on the network.
        metrics.record_pair("node-a", "node-b", Outcome::Untested);
        let text = metrics.encode();
        assert!(!text.contains("netprobe_vxlan_pair_up{"), "{text}");
        assert!(has(&text, r#"netprobe_vxlan_pair_verdict{from="node-a",to="node-b",verdict="untested"} 1"#));

        metrics.forget_pair("node-a", "node-b");
        assert!(!metrics.encode().contains("netprobe_vxlan_pair_verdict{"));
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
