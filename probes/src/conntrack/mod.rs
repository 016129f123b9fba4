//! `netprobe conntrack`: how full this node's connection tracking table is, whether it drops new
//! flows (a full table drops the first packet of every new flow of every kind: DNS stalls, random
//! resets), whether inserts race, what the kernel logged, and who fills it.
//!
//! It reads only (counters, the table's size, its entries, the kernel log). One thing happens by
//! the kernel's hand: listing the entries makes it reap each expired one it walks (gone in all but
//! the count already); the docs say so. The counters are read twice, `window` apart, so "dropping
//! now" is measured, not inferred from totals since boot.

mod judge;
mod report;

use std::time::Duration;

pub use judge::{judge, Evidence, NEAR_FULL_PERCENT, RECENT};
pub use report::{ConntrackReport, Count, Counters, KernelLog, Verdict};

use crate::net::conntrack;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Config {
    /// How long to watch the counters.
    pub window: Duration,
    /// How many sources, destinations and protocols to list.
    pub top: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { window: Duration::from_secs(1), top: 5 }
    }
}

/// Reads this network namespace's table and judges it.
pub fn run(config: &Config) -> Result<ConntrackReport> {
    let table_size = || {
        conntrack::table_size().map_err(|why| Error::could_not_run("reading the conntrack table's size", why))
    };
    let size = table_size()?;
    let read_stats = || match (size, conntrack::read()) {
        (_, Ok(stats)) => Ok(stats),
        // Not loaded: no counters either, and nothing to judge by them.
        (None, Err(_)) => Ok(conntrack::ConntrackStats::default()),
        (Some(_), Err(why)) => Err(Error::could_not_run("reading conntrack's counters", why)),
    };
    let before = read_stats()?;
    std::thread::sleep(config.window);
    let now = read_stats()?;
    // The size after the window, beside the counters it is judged with.
    let size = table_size()?;
    Ok(judge(Evidence {
        size,
        during: now.since(&before),
        now,
        window: config.window,
        kernel_log: conntrack::table_full_messages(),
        netns: conntrack::this_netns(),
        host_netns: conntrack::in_host_netns(),
        entries: if size.is_some() { conntrack::entries() } else { Err("conntrack is not loaded".into()) },
        top: config.top,
    }))
}
