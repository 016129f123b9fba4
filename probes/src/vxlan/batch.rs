//! Many pairs in one round, in as few calls as the agents allow: one `expect-many` per destination,
//! one `send-many` per source and one `collect-many` per destination, each of at most
//! [`MAX_BATCH`] entries. Each agent then reads its firewall counters about four times a round
//! (each read is a process, and seconds on a node with a big rule set), where a call per pair
//! made it read about 4(N-1) times in a mesh of N nodes.
//!
//! [`waves`] splits a mesh into rounds that fit the agents' caps; the one-shot driver and the
//! agents' continuous mesh both go through [`exchange_all`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::api::*;
use super::client::{AgentAddr, AgentApi, Batch};
use super::{Config, Node};
use crate::{Error, Result};

/// One pair of a round: `from` sends probe `probe_id` to `to`.
#[derive(Clone, Debug)]
pub struct Job {
    pub from: Node,
    pub to: Node,
    pub probe_id: u64,
}

/// What a pair's agents said, or why they could not say it.
pub type Exchanged = Result<(SendResponse, CollectResponse)>;

/// Rounds of `members` (indices into `jobs`) in which no agent sends to, or expects from, more
/// than [`MAX_BATCH`] others: first fit, in the order given.
pub fn waves(jobs: &[Job], members: &[usize]) -> Vec<Vec<usize>> {
    type Wave = (Vec<usize>, HashMap<SocketAddr, usize>, HashMap<SocketAddr, usize>);
    let mut waves: Vec<Wave> = Vec::new();
    for &index in members {
        let job = &jobs[index];
        let fits = |(_, sends, expects): &Wave| {
            sends.get(&job.from.agent).copied().unwrap_or(0) < MAX_BATCH
                && expects.get(&job.to.agent).copied().unwrap_or(0) < MAX_BATCH
        };
        let wave = match waves.iter().position(fits) {
            Some(wave) => wave,
            None => {
                waves.push(Default::default());
                waves.len() - 1
            }
        };
        let (members, sends, expects) = &mut waves[wave];
        members.push(index);
        *sends.entry(job.from.agent).or_default() += 1;
        *expects.entry(job.to.agent).or_default() += 1;
    }
    waves.into_iter().map(|(members, _, _)| members).collect()
}

/// Every ordered pair of `nodes`, with its place (source, destination) in the list, by how far
/// apart the two are in the list: every round of [`waves`] then holds each node's next peers, as a
/// source and as a destination, and a mesh takes the fewest rounds (two for 100 nodes).
pub fn mesh_jobs(nodes: &[Node], seed: u64) -> Vec<(Job, (usize, usize))> {
    let n = nodes.len();
    let mut jobs = Vec::with_capacity(n * n.saturating_sub(1));
    for distance in 1..n {
        for a in 0..n {
            let b = (a + distance) % n;
            let index = (a * n + b) as u64 + 1;
            let probe_id = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            jobs.push((Job { from: nodes[a].clone(), to: nodes[b].clone(), probe_id }, (a, b)));
        }
    }
    jobs
}

/// `jobs` grouped by an agent, in chunks of at most [`MAX_BATCH`], each in the order given.
fn grouped<'a>(
    jobs: &'a [Job],
    members: impl Iterator<Item = usize>,
    agent: impl Fn(&'a Job) -> &'a Node,
) -> Vec<(AgentAddr, Vec<usize>)> {
    let mut groups: Vec<(AgentAddr, Vec<usize>)> = Vec::new();
    let mut at: HashMap<SocketAddr, usize> = HashMap::new();
    for index in members {
        let node = agent(&jobs[index]);
        match at.get(&node.agent).filter(|&&g| groups[g].1.len() < MAX_BATCH) {
            Some(&g) => groups[g].1.push(index),
            None => {
                at.insert(node.agent, groups.len());
                groups.push((node.agent_addr(), vec![index]));
            }
        }
    }
    groups
}

/// An entry an agent refused, as the error the single request would have given.
fn refusal(agent: &AgentAddr, path: &str, status: u16, error: String) -> Error {
    let op = format!("{} {path}", agent.who());
    if status == 429 {
        Error::Busy { op, detail: error }
    } else {
        Error::could_not_run(op, error)
    }
}

/// Sends each group's request to its agent, `in_flight` calls at once, each within `within`, and
/// spreads each answer over the group's jobs: `bodies[g]` is group g's request.
async fn call_groups<A: AgentApi, B: Batch>(
    agents: &A,
    groups: &[(AgentAddr, Vec<usize>)],
    bodies: Vec<B>,
    (within, in_flight): (Duration, usize),
    answers: &mut [Option<Result<B::Answer>>],
) {
    let path = B::ROUTE;
    use futures_util::StreamExt;
    // Boxed, so that the future of a round names no closure type (the compiler cannot prove
    // such a future Send for every lifetime, and the agent's mesh runs on a multi-thread runtime).
    type Call<'a, R> = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = (&'a AgentAddr, &'a Vec<usize>, Result<Vec<Each<R>>>)>
                + Send
                + 'a,
        >,
    >;
    let mut calls: Vec<Call<'_, B::Answer>> = Vec::with_capacity(groups.len());
    for ((agent, members), body) in groups.iter().zip(&bodies) {
        calls.push(Box::pin(async move {
            let asked = super::driver::patiently(|| B::call(agents, agent, body));
            let answer = match tokio::time::timeout(within, asked).await {
                Ok(answer) => answer,
                Err(_) => Err(Error::could_not_run(
                    format!("{} {path}", agent.who()),
                    format!("no answer within {} s", within.as_secs()),
                )),
            };
            (agent, members, answer)
        }));
    }
    let answered: Vec<_> =
        futures_util::stream::iter(calls).buffer_unordered(in_flight.max(1)).collect().await;
    for (agent, members, answer) in answered {
        match answer {
            Ok(each) if each.len() == members.len() => {
                for (&index, entry) in members.iter().zip(each) {
                    answers[index] = Some(match entry {
                        Each::Ok(value) => Ok(value),
                        Each::Refused { status, error } => Err(refusal(agent, path, status, error)),
                    });
                }
            }
            Ok(each) => {
                let why = format!("{} answers to {} entries", each.len(), members.len());
                for &index in members {
                    answers[index] =
                        Some(Err(Error::could_not_run(format!("agent {} {path}", agent.label), why.clone())));
                }
            }
            Err(e) => {
                for &index in members {
                    answers[index] = Some(Err(e.clone()));
                }
            }
        }
    }
}

/// One round with every job's agents: the destinations expect their probes, the sources send
/// them, and after `config.timeout` the destinations say what arrived. A call that has not
/// answered within `within` (plus the time its probes take to leave) fails its own jobs only; at
/// most `in_flight` calls are under way at once.
pub async fn exchange_all<A: AgentApi>(
    agents: &A,
    config: &Config,
    jobs: &[Job],
    members: &[usize],
    within: Duration,
    in_flight: usize,
) -> Vec<(usize, Exchanged)> {
    let count = config.count;
    let window = listen_window(config, send_time(count, MAX_BATCH));
    let mut expected: Vec<Option<Result<ExpectResponse>>> = vec![None; jobs.len()];
    let by_destination = grouped(jobs, members.iter().copied(), |j| &j.to);
    let bodies = by_destination
        .iter()
        .map(|(_, group)| ExpectMany {
            port: config.port,
            vni: config.vni,
            window_ms: (window.as_millis() as u64).min(MAX_WINDOW_MS),
            probes: group
                .iter()
                .map(|&i| ExpectedProbe {
                    probe_id: jobs[i].probe_id,
                    from: jobs[i].from.ip,
                    to: Some(jobs[i].to.ip),
                })
                .collect(),
        })
        .collect();
    call_groups(agents, &by_destination, bodies, (within, in_flight), &mut expected).await;

    let listening: Vec<usize> =
        members.iter().copied().filter(|&i| matches!(expected[i], Some(Ok(_)))).collect();
    let mut sent: Vec<Option<Result<SendResponse>>> = vec![None; jobs.len()];
    let by_source = grouped(jobs, listening.iter().copied(), |j| &j.from);
    let bodies = by_source
        .iter()
        .map(|(_, group)| SendMany {
            port: config.port,
            vni: config.vni,
            count,
            sizes: Vec::new(),
            targets: group
                .iter()
                .map(|&i| SendTarget {
                    probe_id: jobs[i].probe_id,
                    to: jobs[i].to.ip,
                    control_port: match &expected[i] {
                        Some(Ok(listening)) => listening.control_port,
                        _ => unreachable!("only jobs whose destination listens are sent"),
                    },
                })
                .collect(),
        })
        .collect();
    let longest = by_source.iter().map(|(_, g)| send_time(count, g.len())).max().unwrap_or_default();
    call_groups(agents, &by_source, bodies, (within + longest, in_flight), &mut sent).await;

    tokio::time::sleep(config.timeout).await;
    // Every expectation is collected, also those whose probes could not be sent: each counts
    // against its agent's cap until then.
    let mut arrived: Vec<Option<Result<CollectResponse>>> = vec![None; jobs.len()];
    let by_destination = grouped(jobs, listening.iter().copied(), |j| &j.to);
    let bodies = by_destination
        .iter()
        .map(|(_, group)| CollectMany { probe_ids: group.iter().map(|&i| jobs[i].probe_id).collect() })
        .collect();
    call_groups(agents, &by_destination, bodies, (within, in_flight), &mut arrived).await;

    members
        .iter()
        .map(|&i| {
            let outcome = match (expected[i].take(), sent[i].take(), arrived[i].take()) {
                (Some(Err(e)), _, _) | (_, Some(Err(e)), _) | (_, _, Some(Err(e))) => Err(e),
                (Some(Ok(_)), Some(Ok(sent)), Some(Ok(arrived))) => Ok((sent, arrived)),
                _ => Err(Error::could_not_run("probing the pair", "an agent's answer went missing")),
            };
            (i, outcome)
        })
        .collect()
}

/// Each exchanged pair's report (or why it has none): judged together, since whether a node's
/// overlay device listens where the others send is known from all of them.
pub fn judge_all(
    config: &Config,
    jobs: &[Job],
    exchanged: Vec<Option<Exchanged>>,
) -> Vec<Option<Result<super::PairReport>>> {
    let overlay = super::judge::Overlay::gather(exchanged.iter().zip(jobs).filter_map(|(outcome, job)| {
        let (sent, arrived) = outcome.as_ref()?.as_ref().ok()?;
        Some((job.from.ip, job.to.ip, sent, arrived))
    }));
    exchanged
        .into_iter()
        .zip(jobs)
        .map(|(outcome, job)| {
            outcome.map(|outcome| {
                let (sent, arrived) = outcome?;
                let evidence = super::judge::Evidence {
                    from: job.from.ip,
                    to: job.to.ip,
                    port: config.port,
                    sent: &sent,
                    arrived: &arrived,
                    overlay: &overlay,
                };
                let mut pair = super::judge::report(&evidence);
                pair.from_node = job.from.label.clone();
                pair.to_node = job.to.label.clone();
                Ok(pair)
            })
        })
        .collect()
}

/// The longest a destination listens if nobody collects (collect ends it sooner): the probes'
/// sending and timeout, and room for a busy source, whose counters and send slot may keep the
/// probes waiting seconds.
pub fn listen_window(config: &Config, sending: Duration) -> Duration {
    config.timeout + sending + Duration::from_secs(10)
}

/// How long `targets` targets' probes take to leave one agent: its packet budget (a probe and a
/// control datagram each), and never less than one target's gaps.
pub fn send_time(count: u32, targets: usize) -> Duration {
    let packets = u64::from(count) * 2 * targets as u64;
    let budget = Duration::from_millis(packets * 1000 / u64::from(MAX_PACKETS_PER_SECOND));
    budget.max(Duration::from_millis(SEND_GAP_MS * u64::from(count)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> Node {
        let ip = std::net::Ipv4Addr::new(198, 51, 100, i);
        Node { label: ip.to_string(), agent: SocketAddr::from((ip, 9473)), ip }
    }

    fn mesh(n: u8) -> Vec<Job> {
        let nodes: Vec<Node> = (1..=n).map(node).collect();
        mesh_jobs(&nodes, 1).into_iter().map(|(job, _)| job).collect()
    }

    #[test]
    fn a_mesh_splits_into_the_fewest_rounds_the_caps_allow() {
        // 100 nodes: each sends to and expects from 99, so two rounds (64 and 35). (In another
        // order first fit may need a third.)
        let jobs = mesh(100);
        let all: Vec<usize> = (0..jobs.len()).collect();
        let waves = waves(&jobs, &all);
        assert_eq!(waves.len(), 2);
        assert_eq!(waves.iter().map(Vec::len).sum::<usize>(), jobs.len());
        for wave in &waves {
            let mut sends: HashMap<SocketAddr, usize> = HashMap::new();
            let mut expects: HashMap<SocketAddr, usize> = HashMap::new();
            for &i in wave {
                *sends.entry(jobs[i].from.agent).or_default() += 1;
                *expects.entry(jobs[i].to.agent).or_default() += 1;
            }
            assert!(sends.values().chain(expects.values()).all(|&n| n <= MAX_BATCH));
        }
        let twenty = mesh(20);
        assert_eq!(
            super::waves(&twenty, &(0..twenty.len()).collect::<Vec<_>>()).len(),
            1,
            "20 nodes: one round"
        );
    }

    #[test]
    fn groups_are_per_agent_and_never_longer_than_a_batch() {
        let jobs = mesh(70);
        let groups = grouped(&jobs, 0..jobs.len(), |j| &j.to);
        // 70 destinations, each expecting 69: a group of 64 and one of 5 each.
        assert_eq!(groups.len(), 140);
        assert!(groups
            .iter()
            .all(|(agent, g)| g.len() <= MAX_BATCH && g.iter().all(|&i| jobs[i].to.agent == agent.address)));
    }

    #[test]
    fn sending_takes_the_packet_budget() {
        // 64 targets of 5 probes and 5 controls at 400 packets a second.
        assert_eq!(send_time(5, 64), Duration::from_millis(1600));
        assert_eq!(send_time(5, 1), Duration::from_millis(50), "one target: its own gaps");
    }
}
