//! The agents as the driver sees them: one method per operation of the agent API, typed requests
//! and answers. The real client (HTTP, in the `netprobe-agent` crate) and the one fake of the
//! tests (`fake::FakeAgents`) implement [`AgentApi`]; the routes are [`super::api::route`]'s.

use std::future::Future;
use std::net::SocketAddr;

use super::api::*;
use crate::Result;

/// An agent to call: a label for messages and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAddr {
    pub label: String,
    pub address: SocketAddr,
}

impl AgentAddr {
    /// `agent LABEL (ADDRESS)`, as errors name it.
    pub fn who(&self) -> String {
        format!("agent {} ({})", self.label, self.address)
    }
}

/// Calling an agent. Errors name the agent and the operation; a call that did not get through is
/// [`crate::Error::Unreachable`], an agent at its caps [`crate::Error::Busy`].
pub trait AgentApi: Send + Sync + 'static {
    /// Whether it runs, and on which node.
    fn health(&self, agent: &AgentAddr) -> impl Future<Output = Result<AgentHealth>> + Send;
    /// Listen for probes, each entry answered or refused on its own.
    fn expect_many(
        &self,
        agent: &AgentAddr,
        request: &ExpectMany,
    ) -> impl Future<Output = Result<Vec<Each<ExpectResponse>>>> + Send;
    /// Send probes to several agents at once.
    fn send_many(
        &self,
        agent: &AgentAddr,
        request: &SendMany,
    ) -> impl Future<Output = Result<Vec<Each<SendResponse>>>> + Send;
    /// End listening and say what arrived.
    fn collect_many(
        &self,
        agent: &AgentAddr,
        request: &CollectMany,
    ) -> impl Future<Output = Result<Vec<Each<CollectResponse>>>> + Send;
    /// One expectation (the path MTU search, whose rounds depend on each other).
    fn expect(
        &self,
        agent: &AgentAddr,
        request: &ExpectRequest,
    ) -> impl Future<Output = Result<ExpectResponse>> + Send;
    fn send(
        &self,
        agent: &AgentAddr,
        request: &SendRequest,
    ) -> impl Future<Output = Result<SendResponse>> + Send;
    fn collect(
        &self,
        agent: &AgentAddr,
        request: &CollectRequest,
    ) -> impl Future<Output = Result<CollectResponse>> + Send;
    /// What the agent expects for a probe (asked by the agent that is to send it).
    fn expectation(
        &self,
        agent: &AgentAddr,
        probe_id: u64,
    ) -> impl Future<Output = Result<ExpectationInfo>> + Send;
    /// What the agent's always-on mesh has sent to `to` (asked by a receiver that hears nothing).
    fn beacons(
        &self,
        agent: &AgentAddr,
        to: std::net::Ipv4Addr,
    ) -> impl Future<Output = Result<BeaconStatus>> + Send;
    /// What the agent's always-on mesh last judged of the pairs that end at it.
    fn mesh(&self, agent: &AgentAddr) -> impl Future<Output = Result<MeshState>> + Send;
}

/// A `-many` request: the route it goes to and the call that sends it, so one round's code
/// serves all three.
pub trait Batch: Sync {
    type Answer: Send;
    const ROUTE: &'static str;
    fn call<'a, A: AgentApi>(
        agents: &'a A,
        agent: &'a AgentAddr,
        request: &'a Self,
    ) -> impl Future<Output = Result<Vec<Each<Self::Answer>>>> + Send + 'a;
}

impl Batch for ExpectMany {
    type Answer = ExpectResponse;
    const ROUTE: &'static str = route::EXPECT_MANY;
    fn call<'a, A: AgentApi>(
        agents: &'a A,
        agent: &'a AgentAddr,
        request: &'a Self,
    ) -> impl Future<Output = Result<Vec<Each<ExpectResponse>>>> + Send + 'a {
        agents.expect_many(agent, request)
    }
}

impl Batch for SendMany {
    type Answer = SendResponse;
    const ROUTE: &'static str = route::SEND_MANY;
    fn call<'a, A: AgentApi>(
        agents: &'a A,
        agent: &'a AgentAddr,
        request: &'a Self,
    ) -> impl Future<Output = Result<Vec<Each<SendResponse>>>> + Send + 'a {
        agents.send_many(agent, request)
    }
}

impl Batch for CollectMany {
    type Answer = CollectResponse;
    const ROUTE: &'static str = route::COLLECT_MANY;
    fn call<'a, A: AgentApi>(
        agents: &'a A,
        agent: &'a AgentAddr,
        request: &'a Self,
    ) -> impl Future<Output = Result<Vec<Each<CollectResponse>>>> + Send + 'a {
        agents.collect_many(agent, request)
    }
}

/// The one fake of the tests: agents that answer healthy unless a test says otherwise, per
/// operation, as the real agent does (a `-many` request is its single requests, each answered or
/// refused on its own).
#[cfg(any(test, feature = "test-support"))]
pub mod fake {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::Error;

    type Script<Q, R> = Box<dyn Fn(&AgentAddr, &Q) -> Result<R> + Send + Sync>;

    /// Healthy agents; each field changes one thing. An `Err` from a script refuses that entry of
    /// a `-many` call (busy: 429, else 503), but [`Error::Unreachable`] fails the whole call, as a
    /// broken connection does.
    pub struct FakeAgents {
        pub health: Script<(), AgentHealth>,
        pub expect: Script<ExpectRequest, ExpectResponse>,
        pub send: Script<SendRequest, SendResponse>,
        pub collect: Script<CollectRequest, CollectResponse>,
        /// What each agent's mesh says it sent to an address (none by default: no mesh runs).
        pub beacons: Script<std::net::Ipv4Addr, BeaconStatus>,
        /// What each agent's mesh says (by default: no mesh runs).
        pub mesh: Script<(), MeshState>,
        /// Agents (by label) whose calls never answer.
        pub hung: HashSet<String>,
        /// Agents (by label) that are not there: every call is unreachable.
        pub gone: HashSet<String>,
        /// This many expect-many calls refuse every entry as busy (the agent at its cap).
        pub busy_expects: AtomicU32,
        /// This many collect-many calls break on the way (a lost packet the connection did not
        /// survive).
        pub broken_collects: AtomicU32,
        /// Every send request, in order.
        pub sends: Mutex<Vec<SendRequest>>,
    }

    /// Five probes sent, five left, five arrived, the control too.
    pub fn healthy_send(request: &SendRequest) -> SendResponse {
        let count = if request.sizes.is_empty() { request.count } else { request.sizes.len() as u32 };
        SendResponse {
            sent: count,
            left_source: count,
            control_left: count,
            left_seqs: (0..count).collect(),
            ..SendResponse::default()
        }
    }

    pub fn healthy_collect(_: &CollectRequest) -> CollectResponse {
        CollectResponse {
            arrived: 5,
            control_arrived: 5,
            arrived_seqs: (0..5).collect(),
            ..Default::default()
        }
    }

    impl Default for FakeAgents {
        fn default() -> Self {
            FakeAgents {
                health: Box::new(|_, _| Ok(AgentHealth { version: "test".into(), node: None })),
                expect: Box::new(|_, _| {
                    Ok(ExpectResponse {
                        control_port: 40000,
                        interface: "eth0".into(),
                        interface_mtu: Some(1500),
                    })
                }),
                send: Box::new(|_, request| Ok(healthy_send(request))),
                collect: Box::new(|_, request| Ok(healthy_collect(request))),
                beacons: Box::new(|agent, _| {
                    Err(Error::could_not_run(
                        format!("{} {}", agent.who(), route::BEACONS),
                        "no mesh runs here",
                    ))
                }),
                mesh: Box::new(|agent, _| {
                    Err(Error::could_not_run(format!("{} {}", agent.who(), route::MESH), "no mesh runs here"))
                }),
                hung: HashSet::new(),
                gone: HashSet::new(),
                busy_expects: AtomicU32::new(0),
                broken_collects: AtomicU32::new(0),
                sends: Mutex::new(Vec::new()),
            }
        }
    }

    impl FakeAgents {
        /// How many send requests were made (a `-many` request counts each target).
        pub fn sends_made(&self) -> usize {
            self.sends.lock().unwrap_or_else(|e| e.into_inner()).len()
        }
    }

    fn take(count: &AtomicU32) -> bool {
        count.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    impl FakeAgents {
        /// What every call goes through first: a hung agent never answers, a gone one fails.
        async fn reach(&self, agent: &AgentAddr, route: &str) -> Result<()> {
            if self.hung.contains(&agent.label) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if self.gone.contains(&agent.label) {
                // As the real client says it: the agent, not the route.
                let _ = route;
                return Err(Error::Unreachable { op: agent.who(), detail: "unreachable".into() });
            }
            Ok(())
        }

        /// A `-many` call as the agent answers it: each entry as the single request would be.
        fn each<Q, R>(
            &self,
            agent: &AgentAddr,
            route: &str,
            entries: Vec<Q>,
            script: &Script<Q, R>,
        ) -> Result<Vec<Each<R>>> {
            let mut answers = Vec::with_capacity(entries.len());
            for entry in &entries {
                answers.push(match script(agent, entry) {
                    Ok(answer) => Each::Ok(answer),
                    Err(e @ Error::Unreachable { .. }) => return Err(e),
                    Err(e) => {
                        Each::Refused { status: if e.is_busy() { 429 } else { 503 }, error: e.to_string() }
                    }
                });
            }
            let _ = route;
            Ok(answers)
        }
    }

    impl AgentApi for FakeAgents {
        async fn health(&self, agent: &AgentAddr) -> Result<AgentHealth> {
            self.reach(agent, route::HEALTH).await?;
            (self.health)(agent, &())
        }

        async fn expect_many(
            &self,
            agent: &AgentAddr,
            request: &ExpectMany,
        ) -> Result<Vec<Each<ExpectResponse>>> {
            self.reach(agent, route::EXPECT_MANY).await?;
            if take(&self.busy_expects) {
                let busy = Each::Refused {
                    status: 429,
                    error: "too many open expectations on this agent: try again".into(),
                };
                return Ok(vec![busy; request.probes.len()]);
            }
            let entries = request.probes.iter().map(|p| request.single(p)).collect();
            self.each(agent, route::EXPECT_MANY, entries, &self.expect)
        }

        async fn send_many(&self, agent: &AgentAddr, request: &SendMany) -> Result<Vec<Each<SendResponse>>> {
            self.reach(agent, route::SEND_MANY).await?;
            let entries: Vec<SendRequest> = request.targets.iter().map(|t| request.single(t)).collect();
            self.sends.lock().unwrap_or_else(|e| e.into_inner()).extend(entries.iter().cloned());
            self.each(agent, route::SEND_MANY, entries, &self.send)
        }

        async fn collect_many(
            &self,
            agent: &AgentAddr,
            request: &CollectMany,
        ) -> Result<Vec<Each<CollectResponse>>> {
            self.reach(agent, route::COLLECT_MANY).await?;
            if take(&self.broken_collects) {
                let op = format!("{} {}", agent.who(), route::COLLECT_MANY);
                return Err(Error::Unreachable {
                    op,
                    detail: "unreachable (connection reset by peer)".into(),
                });
            }
            let entries = request.probe_ids.iter().map(|&probe_id| CollectRequest { probe_id }).collect();
            self.each(agent, route::COLLECT_MANY, entries, &self.collect)
        }

        async fn expect(&self, agent: &AgentAddr, request: &ExpectRequest) -> Result<ExpectResponse> {
            self.reach(agent, route::EXPECT).await?;
            (self.expect)(agent, request)
        }

        async fn send(&self, agent: &AgentAddr, request: &SendRequest) -> Result<SendResponse> {
            self.reach(agent, route::SEND).await?;
            self.sends.lock().unwrap_or_else(|e| e.into_inner()).push(request.clone());
            (self.send)(agent, request)
        }

        async fn collect(&self, agent: &AgentAddr, request: &CollectRequest) -> Result<CollectResponse> {
            self.reach(agent, route::COLLECT).await?;
            (self.collect)(agent, request)
        }

        async fn beacons(&self, agent: &AgentAddr, to: std::net::Ipv4Addr) -> Result<BeaconStatus> {
            self.reach(agent, route::BEACONS).await?;
            (self.beacons)(agent, &to)
        }

        async fn mesh(&self, agent: &AgentAddr) -> Result<MeshState> {
            self.reach(agent, route::MESH).await?;
            (self.mesh)(agent, &())
        }

        async fn expectation(&self, agent: &AgentAddr, probe_id: u64) -> Result<ExpectationInfo> {
            self.reach(agent, route::EXPECTATION).await?;
            Err(Error::could_not_run(
                format!("{} {}", agent.who(), route::EXPECTATION),
                format!("no expectation for probe {probe_id}"),
            ))
        }
    }
}
