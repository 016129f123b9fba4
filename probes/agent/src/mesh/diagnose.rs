//! When a pair turns bad, its diagnosis: `netprobe vxlan`'s own exchange for that one direction
//! (the peer sends probes, this node's agent captures, both read their counters and the kernel's
//! drops), judged as the one-shot run judges it, so the rule, the drop reason and the direction
//! come with the verdict. On demand and rate-limited: one at a time per agent, and a pair at most
//! every [`EVERY`].

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netprobe_probes::vxlan::batch::{self, Job};
use netprobe_probes::vxlan::{AgentApi, Config, Node, PairReport};
use netprobe_probes::Result;

/// A pair is diagnosed again at most this often while it stays bad.
pub const EVERY: Duration = Duration::from_secs(300);
/// A diagnosis call that has not answered within this is given up.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

pub struct Diagnoser<A> {
    agents: Arc<A>,
    config: Config,
    /// This node, as the destination of the probes.
    me: Node,
    last: Mutex<HashMap<Ipv4Addr, Instant>>,
    one_at_a_time: tokio::sync::Semaphore,
    /// The finished diagnoses, by peer address, taken by the next evaluation.
    done: Mutex<HashMap<Ipv4Addr, Result<PairReport>>>,
}

impl<A: AgentApi> Diagnoser<A> {
    pub fn new(agents: Arc<A>, config: Config, me: Node) -> Diagnoser<A> {
        Diagnoser {
            agents,
            config,
            me,
            last: Mutex::default(),
            one_at_a_time: tokio::sync::Semaphore::new(1),
            done: Mutex::default(),
        }
    }

    /// Starts a diagnosis of `peer` -> this node unless one ran within [`EVERY`] or another is
    /// under way; its result waits in [`Diagnoser::take`].
    pub fn request(self: &Arc<Self>, peer: &Node) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.get(&peer.ip).is_some_and(|at| at.elapsed() < EVERY) {
                return;
            }
            let Ok(permit) = self.one_at_a_time.try_acquire() else { return };
            permit.forget();
            last.insert(peer.ip, Instant::now());
        }
        let (this, peer) = (self.clone(), peer.clone());
        tokio::spawn(async move {
            let report = this.run(&peer).await;
            this.done.lock().unwrap_or_else(|e| e.into_inner()).insert(peer.ip, report);
            this.one_at_a_time.add_permits(1);
        });
    }

    /// The diagnosis of `peer` that finished since the last call, if any.
    pub fn take(&self, peer: Ipv4Addr) -> Option<Result<PairReport>> {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer)
    }

    /// Lets a pair that healed be diagnosed at once when it turns bad again.
    pub fn forget(&self, peer: Ipv4Addr) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
    }

    async fn run(&self, peer: &Node) -> Result<PairReport> {
        let probe_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(u32::from(peer.ip));
        let jobs = [Job { from: peer.clone(), to: self.me.clone(), probe_id }];
        let exchanged =
            batch::exchange_all(self.agents.as_ref(), &self.config, &jobs, &[0], ANSWER_WITHIN, 1).await;
        let outcome = exchanged.into_iter().next().map(|(_, outcome)| outcome);
        batch::judge_all(&self.config, &jobs, vec![outcome]).pop().flatten().unwrap_or_else(|| {
            Err(netprobe_probes::Error::could_not_run("diagnosing the pair", "no exchange took place"))
        })
    }
}
