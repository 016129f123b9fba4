//! Outcomes of single queries, added up per endpoint and protocol.

use std::collections::BTreeSet;
use std::time::Duration;

use super::report::{Latency, ProtocolReport};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered { rcode: String, answers: BTreeSet<String>, latency: Duration, truncated_retried: bool },
    Timeout,
    Failed(String),
}

#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub report: ProtocolReport,
    latencies: Vec<Duration>,
    pub answers: BTreeSet<String>,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome) {
        self.report.sent += 1;
        match outcome {
            Outcome::Answered { rcode, answers, latency, truncated_retried } => {
                self.report.answered += 1;
                *self.report.rcodes.entry(rcode).or_default() += 1;
                self.answers.extend(answers);
                self.latencies.push(latency);
                if truncated_retried {
                    self.report.truncated_retried += 1;
                }
            }
            Outcome::Timeout => self.report.timeouts += 1,
            Outcome::Failed(reason) => {
                self.report.errors += 1;
                self.report.first_error.get_or_insert(reason);
            }
        }
    }

    /// Adds another tally (the other protocol) into this one.
    pub fn merge(&mut self, other: &Tally) {
        let (a, b) = (&mut self.report, &other.report);
        a.sent += b.sent;
        a.answered += b.answered;
        a.timeouts += b.timeouts;
        a.errors += b.errors;
        a.truncated_retried += b.truncated_retried;
        if a.first_error.is_none() {
            a.first_error = b.first_error.clone();
        }
        for (rcode, n) in &b.rcodes {
            *a.rcodes.entry(rcode.clone()).or_default() += n;
        }
        self.latencies.extend(&other.latencies);
        self.answers.extend(other.answers.iter().cloned());
    }

    /// The report with its latency percentiles filled in.
    pub fn finish(&self) -> ProtocolReport {
        let mut report = self.report.clone();
        report.latency_ms = latency(&self.latencies);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(ms: u64) -> Outcome {
        Outcome::Answered {
            rcode: "NOERROR".into(),
            answers: BTreeSet::from(["10.96.0.1".to_string()]),
            latency: Duration::from_millis(ms),
            truncated_retried: false,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut tally = Tally::default();
        for ms in 1..=100 {
            tally.add(answered(ms));
        }
        let latency = tally.finish().latency_ms.unwrap();
        assert_eq!((latency.p50, latency.p95, latency.p99, latency.max), (50.0, 95.0, 99.0, 100.0));
    }

    #[test]
    fn counts_every_kind_of_outcome_and_merges() {
        let mut udp = Tally::default();
        udp.add(answered(2));
        udp.add(Outcome::Timeout);
        udp.add(Outcome::Failed("connection refused".into()));
        let mut tcp = Tally::default();
        tcp.add(answered(4));
        udp.merge(&tcp);
        let report = udp.finish();
        assert_eq!((report.sent, report.answered, report.timeouts, report.errors), (4, 2, 1, 1));
        assert_eq!(report.rcodes["NOERROR"], 2);
        assert_eq!(report.first_error.as_deref(), Some("connection refused"));
        assert_eq!(report.latency_ms.unwrap().max, 4.0);
        assert_eq!(Tally::default().finish().latency_ms, None);
    }
}
