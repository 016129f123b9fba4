//! The node's connection tracking table on `/metrics`, read when Prometheus scrapes (a
//! prometheus-client [`Collector`]), never cached: the entries and the limit, the counters of lost
//! and evicted flows, and the kernel's "table full" messages about this namespace.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use netprobe_probes::net::conntrack::{self, ConntrackStats, TableSize};
use netprobe_probes::net::now_since_epoch;

/// What one scrape reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub size: TableSize,
    pub stats: Option<ConntrackStats>,
    /// "table full" messages about this namespace in the kernel's log buffer, and when the last
    /// was written (Unix time); `None` when the log is not readable.
    pub table_full: Option<(u64, Option<f64>)>,
}

impl Reading {
    /// This namespace's table now; `None` when conntrack is not loaded (or its size unreadable).
    pub fn now() -> Option<Reading> {
        let size = conntrack::table_size().ok()??;
        let ours = conntrack::this_netns();
        let table_full = conntrack::table_full_messages().ok().map(|(messages, now_us)| {
            let ours: Vec<_> = messages.iter().filter(|m| m.may_be_about(ours)).collect();
            let last = ours.iter().map(|m| m.at_us).max().map(|at_us| {
                // The kernel stamps its log with the monotonic clock: now, minus how long ago.
                let ago = now_us.saturating_sub(at_us) as f64 / 1e6;
                now_since_epoch().as_secs_f64() - ago
            });
            (ours.len() as u64, last)
        });
        Some(Reading { size, stats: conntrack::read().ok(), table_full })
    }
}

/// Reads the table at every scrape, with `read` (the real one, or a test's).
#[derive(Debug)]
pub struct ConntrackCollector {
    pub read: fn() -> Option<Reading>,
}

impl Collector for ConntrackCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(reading) = (self.read)() else { return Ok(()) };
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64| {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "netprobe_conntrack_entries",
            "Entries in this node's connection tracking table",
            as_i64(reading.size.entries),
        )?;
        gauge(
            &mut encoder,
            "netprobe_conntrack_max",
            "The table's limit (nf_conntrack_max): new flows are dropped at it",
            as_i64(reading.size.max),
        )?;
        if let Some(stats) = reading.stats {
            for (name, help, value) in [
                ("netprobe_conntrack_drop", "New flows whose first packet the kernel dropped: no entry could be made (a full table, a failed insert)", stats.drop),
                ("netprobe_conntrack_early_drop", "Entries the kernel evicted to make room in a full table", stats.early_drop),
                ("netprobe_conntrack_insert_failed", "Inserts that lost a race to another packet of the same new flow", stats.insert_failed),
            ] {
                let metric = ConstCounter::new(value);
                metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
            }
        }
        if let Some((messages, last)) = reading.table_full {
            gauge(
                &mut encoder,
                "netprobe_conntrack_table_full_log_messages",
                "\"nf_conntrack: table full, dropping packet\" messages about this namespace in the kernel's log buffer",
                as_i64(messages),
            )?;
            if let Some(last) = last {
                let metric = ConstGauge::new(last);
                metric.encode(encoder.encode_descriptor(
                    "netprobe_conntrack_table_full_last_timestamp_seconds",
                    "When the kernel last logged \"table full\" about this namespace (Unix time)",
                    None,
                    metric.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn full() -> Option<Reading> {
        Some(Reading {
            size: TableSize { entries: 262_144, max: 262_144 },
            stats: Some(ConntrackStats { drop: 3, early_drop: 5, insert_failed: 1, clash_resolved: Some(0) }),
            table_full: Some((2, Some(1_764_960_000.5))),
        })
    }

    #[test]
    fn a_scrape_reads_the_table_and_says_nothing_when_conntrack_is_not_loaded() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ConntrackCollector { read: full }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "netprobe_conntrack_entries 262144",
            "netprobe_conntrack_max 262144",
            "netprobe_conntrack_drop_total 3",
            "netprobe_conntrack_early_drop_total 5",
            "netprobe_conntrack_insert_failed_total 1",
            "netprobe_conntrack_table_full_log_messages 2",
            "netprobe_conntrack_table_full_last_timestamp_seconds 1764960000.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ConntrackCollector { read: || None }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("conntrack"), "{text}");
    }
}
