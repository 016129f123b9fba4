//! Outcomes of single queries, added up per endpoint and protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hickory_proto::op::ResponseCode;

use super::message::rcode_name;
use super::report::{GroupReport, Latency, ProtocolReport};
use crate::net::dns::FailureKind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A reply within the timeout, whatever its RCODE.
    Replied {
        rcode: ResponseCode,
        answers: BTreeSet<String>,
        latency: Duration,
        truncated_retried: bool,
    },
    /// A reply after the timeout, within the grace period: too late for a client.
    Late(Duration),
    Timeout,
    Failed(FailureKind, String),
    /// A truncated UDP reply whose retry over TCP failed (the answer is too big for UDP).
    RetryFailed(String),
}

#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub report: ProtocolReport,
    latencies: Vec<Duration>,
    late: Vec<Duration>,
    /// Answers of NOERROR replies only: error replies are not answers.
    pub answers: BTreeSet<String>,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome) {
        let r = &mut self.report;
        r.sent += 1;
        match outcome {
            Outcome::Replied { rcode, answers, latency, truncated_retried } => {
                *r.rcodes.entry(rcode_name(rcode)).or_default() += 1;
                if rcode == ResponseCode::NoError {
                    r.answered += 1;
                    self.answers.extend(answers);
                } else {
                    r.error_replies += 1;
                }
                self.latencies.push(latency);
                if truncated_retried {
                    r.truncated_retried += 1;
                }
            }
            Outcome::Late(latency) => {
                r.late += 1;
                self.late.push(latency);
            }
            Outcome::Timeout => r.timeouts += 1,
            Outcome::Failed(kind, reason) => {
                match kind {
                    FailureKind::Refused => r.refused += 1,
                    FailureKind::NoRoute => r.no_route += 1,
                    FailureKind::Closed => r.closed += 1,
                    FailureKind::Other => r.errors += 1,
                }
                r.first_error.get_or_insert(reason);
            }
            Outcome::RetryFailed(reason) => {
                r.tcp_retry_failed += 1;
                r.first_error.get_or_insert(reason);
            }
        }
    }

    /// Counts one group of queries sent from one socket; `lost` says, per query, whether its
    /// answer never came.
    pub fn add_group(&mut self, lost: impl Iterator<Item = bool>) {
        let (mut queries, mut missing) = (0, 0);
        for lost in lost {
            queries += 1;
            missing += u32::from(lost);
        }
        let groups = self.report.pairs.get_or_insert_with(GroupReport::default);
        groups.sent += 1;
        if missing == queries {
            groups.all_lost += 1;
        } else if missing > 0 {
            groups.part_lost += 1;
        }
    }

    /// Adds another tally (the other protocol) into this one.
    pub fn merge(&mut self, other: &Tally) {
        let (a, b) = (&mut self.report, &other.report);
        a.sent += b.sent;
        a.answered += b.answered;
        a.error_replies += b.error_replies;
        a.late += b.late;
        a.timeouts += b.timeouts;
        a.refused += b.refused;
        a.no_route += b.no_route;
        a.closed += b.closed;
        a.errors += b.errors;
        a.truncated_retried += b.truncated_retried;
        a.tcp_retry_failed += b.tcp_retry_failed;
        if a.first_error.is_none() {
            a.first_error = b.first_error.clone();
        }
        if let Some(theirs) = &b.pairs {
            let ours = a.pairs.get_or_insert_with(GroupReport::default);
            ours.sent += theirs.sent;
            ours.part_lost += theirs.part_lost;
            ours.all_lost += theirs.all_lost;
        }
        for (rcode, n) in &b.rcodes {
            *a.rcodes.entry(rcode.clone()).or_default() += n;
        }
        self.latencies.extend(&other.latencies);
        self.late.extend(&other.late);
        self.answers.extend(other.answers.iter().cloned());
    }

    /// The report with its latency percentiles filled in.
    pub fn finish(&self) -> ProtocolReport {
        let mut report = self.report.clone();
        report.latency_ms = latency(&self.latencies);
        report.late_max_ms = self.late.iter().max().map(|d| crate::round3(d.as_secs_f64() * 1000.0));
        report
    }
}

/// Nearest-rank percentiles in milliseconds, rounded to microseconds.
fn latency(samples: &[Duration]) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        crate::round3(ms[index.clamp(1, ms.len()) - 1])
    };
    Some(Latency { p50: rank(50.0), p95: rank(95.0), p99: rank(99.0), max: rank(100.0) })
}

/// The RCODEs of a report other than NOERROR, most frequent first.
pub fn error_rcodes(rcodes: &BTreeMap<String, u32>) -> Vec<(&str, u32)> {
    let mut errors: Vec<(&str, u32)> = rcodes
        .iter()
        .filter(|(name, n)| name.as_str() != "NOERROR" && **n > 0)
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replied(rcode: ResponseCode, ms: u64) -> Outcome {
        Outcome::Replied {
            rcode,
            answers: if rcode == ResponseCode::NoError {
                BTreeSet::from(["10.96.0.1".to_string()])
            } else {
                BTreeSet::new()
            },
            latency: Duration::from_millis(ms),
            truncated_retried: false,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut tally = Tally::default();
        for ms in 1..=100 {
            tally.add(replied(ResponseCode::NoError, ms));
        }
        let latency = tally.finish().latency_ms.unwrap();
        assert_eq!((latency.p50, latency.p95, latency.p99, latency.max), (50.0, 95.0, 99.0, 100.0));
    }

    #[test]
    fn counts_every_kind_of_outcome_and_merges() {
        let mut udp = Tally::default();
        udp.add(replied(ResponseCode::NoError, 2));
        udp.add(replied(ResponseCode::ServFail, 3));
        udp.add(Outcome::Timeout);
        udp.add(Outcome::Late(Duration::from_millis(1500)));
        udp.add(Outcome::Failed(FailureKind::Refused, "connection refused".into()));
        udp.add(Outcome::Failed(FailureKind::NoRoute, "no route to host".into()));
        udp.add(Outcome::RetryFailed("tcp connect: timed out".into()));
        let mut tcp = Tally::default();
        tcp.add(replied(ResponseCode::NoError, 4));
        udp.merge(&tcp);
        let r = udp.finish();
        assert_eq!((r.sent, r.answered, r.error_replies, r.timeouts, r.late), (8, 2, 1, 1, 1));
        assert_eq!((r.refused, r.no_route, r.errors, r.tcp_retry_failed), (1, 1, 0, 1));
        assert_eq!((r.rcodes["NOERROR"], r.rcodes["SERVFAIL"]), (2, 1));
        assert_eq!(r.first_error.as_deref(), Some("connection refused"));
        assert_eq!(r.latency_ms.unwrap().max, 4.0, "every reply's latency, error replies too");
        assert_eq!(r.late_max_ms, Some(1500.0));
        assert_eq!(udp.answers.len(), 1, "a SERVFAIL carries no answers");
        assert_eq!(error_rcodes(&r.rcodes), vec![("SERVFAIL", 1)]);
        assert_eq!(Tally::default().finish().latency_ms, None);
    }
}
