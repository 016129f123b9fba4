//! `netprobe vxlan --from-mesh`: what the agents' always-on mesh already knows of every pair, read
//! from each agent (`GET /v1/mesh`: the pairs that end at its node, as its last evaluation judged
//! them), without sending a probe. One call per agent, so it reads a 1,000-node cluster's million
//! pairs in about as many calls as it has nodes.
//!
//! An agent whose mesh has not evaluated for three periods is stalled: its pairs are unknown, never
//! taken for ok; so are the pairs of an agent that runs no mesh or does not answer.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::api::{MeshPair, MeshState};
use super::{AgentApi, Config, UntestedNode};
use crate::{Error, Health, Result};

/// An agent answers within this, or its pairs are unknown.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// Agents asked at once.
const IN_FLIGHT: usize = 64;
/// An evaluation older than this many periods means the agent's mesh is stalled.
const STALE_PERIODS: f64 = 3.0;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeshReport {
    pub probe: &'static str,
    /// `fault` when a pair fails; `could-not-run` when some node's pairs are unknown and none fails.
    pub verdict: Health,
    pub summary: String,
    /// Pairs judged by the agents that answered, by state.
    pub pairs: u64,
    pub ok: u64,
    pub failing: u64,
    pub untested: u64,
    /// Every failing pair: its verdict, beacons and diagnosed cause.
    pub failing_pairs: Vec<MeshPair>,
    /// Nodes whose incoming pairs are unknown: no mesh, no answer, a stalled mesh, no address.
    pub unknown: Vec<UntestedNode>,
}

impl MeshReport {
    pub fn health(&self) -> Health {
        self.verdict
    }

    /// Whether no agent runs a mesh at all (doctor then probes instead).
    pub fn no_mesh_anywhere(&self) -> bool {
        self.pairs == 0 && !self.unknown.is_empty() && self.unknown.iter().all(|u| u.reason.contains(NO_MESH))
    }
}

/// What an agent without `--mesh-every` answers (404), in part.
pub const NO_MESH: &str = "no mesh";

/// Reads every node's agent on a runtime of its own, through the agents `reach` gives.
pub fn read<A, R, Fut>(config: Config, untested: Vec<UntestedNode>, reach: R) -> Result<MeshReport>
where
    A: AgentApi,
    R: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<A>>,
{
    if config.nodes.is_empty() {
        return Err(Error::could_not_run("reading the agents' mesh", "no node to ask"));
    }
    let runtime = crate::net::runtime("starting the vxlan runtime", Some(2))?;
    runtime.block_on(async move {
        let agents = Arc::new(reach(config.clone()).await?);
        let answers = ask_all(agents, &config).await;
        Ok(judge(answers, untested, crate::net::now_since_epoch().as_secs_f64()))
    })
}

/// Every agent asked, at most [`IN_FLIGHT`] at once: (node, its mesh or why not).
pub async fn ask_all<A: AgentApi>(
    agents: Arc<A>,
    config: &Config,
) -> Vec<(String, std::result::Result<MeshState, String>)> {
    use futures_util::StreamExt;
    let calls = config.nodes.iter().map(|node| {
        let agents = agents.clone();
        let addr = node.agent_addr();
        async move {
            let answer = match tokio::time::timeout(ANSWER_WITHIN, agents.mesh(&addr)).await {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(_) => Err(format!("its agent did not answer within {} s", ANSWER_WITHIN.as_secs())),
            };
            (addr.label, answer)
        }
    });
    futures_util::stream::iter(calls).buffer_unordered(IN_FLIGHT).collect().await
}

/// The agents' answers (at Unix time `now`) as one report. Pure.
pub fn judge(
    answers: Vec<(String, std::result::Result<MeshState, String>)>,
    mut unknown: Vec<UntestedNode>,
    now: f64,
) -> MeshReport {
    let mut pairs: Vec<MeshPair> = Vec::new();
    let mut counted_ok = 0;
    for (node, answer) in answers {
        let why = match answer {
            Ok(state) => match state.evaluated_at {
                None => Some("its mesh has not evaluated yet".to_string()),
                Some(at) if now - at > STALE_PERIODS * state.period_ms as f64 / 1000.0 => Some(format!(
                    "its mesh last evaluated {:.0} s ago (period {} s): stalled, its pairs are unknown",
                    now - at,
                    state.period_ms / 1000
                )),
                Some(_) => {
                    counted_ok += state.ok;
                    pairs.extend(state.pairs);
                    None
                }
            },
            Err(why) if why.contains(NO_MESH) => Some(format!("its agent runs {NO_MESH} (--mesh-every)")),
            Err(why) => Some(why),
        };
        if let Some(reason) = why {
            unknown.push(UntestedNode { node, ip: None, reason });
        }
    }
    unknown.sort_by(|a, b| a.node.cmp(&b.node));
    pairs.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    let count = |f: &dyn Fn(&MeshPair) -> bool| pairs.iter().filter(|p| f(p)).count() as u64;
    let ok = counted_ok + count(&|p| p.verdict == "ok");
    let untested = count(&|p| p.verdict == "untested");
    let failing_pairs: Vec<MeshPair> = pairs.iter().filter(|p| p.is_failing()).cloned().collect();
    let failing = failing_pairs.len() as u64;
    let verdict = if failing > 0 {
        Health::Fault
    } else if !unknown.is_empty() || untested > 0 {
        Health::CouldNotRun
    } else {
        Health::Ok
    };
    let mut summary = match failing {
        0 => format!("the agents' mesh: all {ok} pair(s) it judged are ok"),
        n => format!("the agents' mesh: {n} of {} pair(s) lose beacons", counted_ok + pairs.len() as u64),
    };
    if untested > 0 {
        summary.push_str(&format!("; {untested} untested"));
    }
    if !unknown.is_empty() {
        summary.push_str(&format!("; the pairs to {} node(s) are unknown", unknown.len()));
    }
    MeshReport {
        probe: "vxlan-mesh",
        verdict,
        summary,
        pairs: counted_ok + pairs.len() as u64,
        ok,
        failing,
        untested,
        failing_pairs,
        unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(from: &str, to: &str, verdict: &str, arrived: u64) -> MeshPair {
        MeshPair { from: from.into(), to: to.into(), verdict: verdict.into(), sent: 10, arrived, cause: None }
    }

    fn state(at: Option<f64>, pairs: Vec<MeshPair>) -> std::result::Result<MeshState, String> {
        Ok(MeshState { period_ms: 10_000, evaluated_at: at, ok: 0, pairs })
    }

    #[test]
    fn failing_pairs_are_a_fault_and_all_ok_is_ok() {
        let report = judge(
            vec![
                (
                    "a".into(),
                    state(Some(995.0), vec![pair("b", "a", "ok", 10), pair("c", "a", "partial-loss", 7)]),
                ),
                (
                    "b".into(),
                    state(Some(990.0), vec![pair("a", "b", "ok", 10), pair("c", "b", "lost-in-network", 0)]),
                ),
            ],
            vec![],
            1000.0,
        );
        assert_eq!((report.verdict, report.pairs, report.ok, report.failing), (Health::Fault, 4, 2, 2));
        assert_eq!(report.failing_pairs[0].verdict, "partial-loss");
        assert_eq!(report.summary, "the agents' mesh: 2 of 4 pair(s) lose beacons");
        let report =
            judge(vec![("a".into(), state(Some(999.0), vec![pair("b", "a", "ok", 10)]))], vec![], 1000.0);
        assert_eq!(
            (report.verdict, report.summary.as_str()),
            (Health::Ok, "the agents' mesh: all 1 pair(s) it judged are ok")
        );
    }

    #[test]
    fn a_stalled_silent_or_meshless_agent_makes_its_pairs_unknown_never_ok() {
        let report = judge(
            vec![
                ("a".into(), state(Some(999.0), vec![pair("b", "a", "ok", 10)])),
                ("b".into(), state(Some(900.0), vec![pair("a", "b", "ok", 10)])),
                (
                    "c".into(),
                    Err("agent c at 192.0.2.3:9473 /v1/mesh: this agent runs no mesh (--mesh-every)".into()),
                ),
                ("d".into(), Err("its agent did not answer within 10 s".into())),
                ("e".into(), state(None, vec![])),
            ],
            vec![],
            1000.0,
        );
        assert_eq!((report.verdict, report.pairs), (Health::CouldNotRun, 1), "{report:?}");
        let why: Vec<&str> = report.unknown.iter().map(|u| u.reason.as_str()).collect();
        assert!(why[0].starts_with("its mesh last evaluated 100 s ago (period 10 s): stalled"), "{why:?}");
        assert!(
            why[1].contains("runs no mesh")
                && why[2].contains("did not answer")
                && why[3].contains("not evaluated"),
            "{why:?}"
        );
        assert!(!report.no_mesh_anywhere());
        let none = judge(vec![("c".into(), Err("runs no mesh".into()))], vec![], 1000.0);
        assert!(none.no_mesh_anywhere());
    }
}
