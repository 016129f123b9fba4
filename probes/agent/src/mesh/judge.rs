//! One peer's beacons to this node, judged at each evaluation: pure. The numbers heard say how many
//! were sent and how many arrived; a peer heard from for a while is asked (its agent's control
//! channel, `GET /v1/beacons/{to}`) whether it sent, so that a path that loses everything is told
//! from an agent that is not sending (restarting, rolling out, not listing this node yet), which is
//! never a network verdict.

use std::collections::VecDeque;
use std::time::Duration;

use netprobe_probes::vxlan::api::BeaconStatus;

use super::tally::Counts;

/// What the beacons say of the path from the peer to this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every beacon of the last evaluations arrived.
    Ok,
    /// Some arrived, some did not.
    PartialLoss,
    /// The peer sent (its agent says so) and none arrived.
    NoArrivals,
    /// Nothing to judge: no beacon yet, or the peer's agent does not answer or does not send.
    Untested,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::PartialLoss => "partial-loss",
            Verdict::NoArrivals => "no-arrivals",
            Verdict::Untested => "untested",
        }
    }

    /// A loss the agents should look into (`netprobe vxlan`'s diagnosis, on demand).
    pub fn is_loss(self) -> bool {
        matches!(self, Verdict::PartialLoss | Verdict::NoArrivals)
    }
}

/// One evaluation of one peer: its verdict, why (for an untested one), and the beacons sent and
/// arrived since the last evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub sent: u64,
    pub arrived: u64,
    /// Beacons sent and arrived over the last period: what the verdict rests on.
    pub period: (u64, u64),
    pub jitter_s: Option<f64>,
}

/// One peer, watched from this node.
#[derive(Debug)]
pub struct PeerWatch {
    /// What is already counted: (epoch, sent, arrived) of the peer's series.
    accounted: Option<(u32, u64, u64)>,
    /// What each evaluation of the last period counted: (when, sent, arrived). A verdict rests on
    /// one period: a lost beacon shows for a period, and a path that heals is ok a period later.
    window: VecDeque<(Duration, u64, u64)>,
    period: Duration,
    verdict: Verdict,
    reason: Option<String>,
    /// When this node began watching the peer (capture clock): silence is counted from then.
    since: Duration,
}

impl PeerWatch {
    pub fn new(now: Duration, period: Duration) -> PeerWatch {
        PeerWatch {
            accounted: None,
            window: VecDeque::new(),
            period,
            verdict: Verdict::Untested,
            reason: Some("no beacon from it yet".into()),
            since: now,
        }
    }

    /// Whether nothing has arrived from the peer for a period and a half and a second (its
    /// beacon comes once a period, at about the same moment): then its agent is asked whether it
    /// sent.
    pub fn silent(&self, counts: Option<&Counts>, now: Duration) -> bool {
        let last = counts.map_or(self.since, |c| c.last_arrival.max(self.since));
        now.saturating_sub(last) > self.period * 3 / 2 + Duration::from_secs(1)
    }

    /// Takes in an evaluation: the tally's counts, and for a silent peer what its agent said (or
    /// why it could not be asked).
    pub fn evaluate(
        &mut self,
        now: Duration,
        counts: Option<Counts>,
        control: Option<Result<BeaconStatus, String>>,
    ) -> Evaluation {
        let mut epoch = counts.map(|c| c.epoch);
        let mut sent = counts.map_or(0, |c| c.sent);
        let mut arrived = counts.map_or(0, |c| c.arrived);
        // The peer's agent says it sent beacons that never arrived.
        let mut unheard = false;
        match control {
            Some(Err(why)) => {
                return self
                    .untested(format!("nothing arrives from it and its agent does not answer ({why})"))
            }
            Some(Ok(status)) if status.sent == 0 => {
                return self.untested(
                    "its agent sends this node nothing (it does not list this node as a peer yet)".into(),
                )
            }
            Some(Ok(status)) => {
                // The last one may still be on its way: only those before it count as lost.
                let surely_sent = status.sent - 1;
                if epoch == Some(status.epoch) {
                    if surely_sent <= sent {
                        return self.untested(
                            "its agent has sent nothing since the last beacon that arrived".into(),
                        );
                    }
                    sent = surely_sent;
                    unheard = true;
                } else if surely_sent == 0 {
                    return self.untested("its agent restarted and has not sent yet".into());
                } else {
                    (epoch, sent, arrived) = (Some(status.epoch), surely_sent, 0);
                    unheard = true;
                }
            }
            None => {}
        }
        let Some(epoch) = epoch else { return self.untested("no beacon from it yet".into()) };
        let (new_sent, new_arrived) = match self.accounted {
            Some((e, s, a)) if e == epoch => (sent.saturating_sub(s), arrived.saturating_sub(a)),
            _ => (sent, arrived),
        };
        let (kept_sent, kept_arrived) = match self.accounted {
            Some((e, s, a)) if e == epoch => (sent.max(s), arrived.max(a)),
            _ => (sent, arrived),
        };
        self.accounted = Some((epoch, kept_sent, kept_arrived));
        if new_sent > 0 || new_arrived > 0 {
            self.window.push_back((now, new_sent, new_arrived.min(new_sent.max(new_arrived))));
        }
        while self.window.front().is_some_and(|(at, _, _)| now.saturating_sub(*at) > self.period) {
            self.window.pop_front();
        }
        let (window_sent, window_arrived) =
            self.window.iter().fold((0, 0), |(s, a), (_, ws, wa)| (s + ws, a + wa));
        if unheard && new_arrived == 0 {
            // Silent, and its agent sent: nothing gets through now, whatever came before.
            self.verdict = Verdict::NoArrivals;
            self.reason = None;
        } else if window_sent > 0 {
            self.verdict = if window_arrived >= window_sent {
                Verdict::Ok
            } else if window_arrived == 0 {
                Verdict::NoArrivals
            } else {
                Verdict::PartialLoss
            };
            self.reason = None;
        }
        Evaluation {
            verdict: self.verdict,
            reason: self.reason.clone(),
            sent: new_sent,
            arrived: new_arrived.min(new_sent),
            period: (window_sent, window_arrived.min(window_sent)),
            jitter_s: counts.and_then(|c| c.jitter_s),
        }
    }

    fn untested(&mut self, why: String) -> Evaluation {
        self.verdict = Verdict::Untested;
        self.window.clear();
        self.reason = Some(why);
        Evaluation {
            verdict: Verdict::Untested,
            reason: self.reason.clone(),
            sent: 0,
            arrived: 0,
            period: (0, 0),
            jitter_s: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(10);

    fn counts(epoch: u32, sent: u64, arrived: u64, last_arrival_s: u64) -> Counts {
        Counts { epoch, sent, arrived, last_arrival: Duration::from_secs(last_arrival_s), jitter_s: None }
    }

    fn status(epoch: u32, sent: u64) -> Result<BeaconStatus, String> {
        Ok(BeaconStatus { epoch, sent, period_ms: 10_000 })
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn every_beacon_arriving_is_ok_and_a_gap_is_partial_loss_for_a_period() {
        let mut watch = PeerWatch::new(s(0), PERIOD);
        assert_eq!(watch.evaluate(s(5), None, None).verdict, Verdict::Untested, "nothing heard yet");
        assert_eq!(watch.evaluate(s(30), Some(counts(1, 3, 3, 29)), None).verdict, Verdict::Ok);
        let lossy = watch.evaluate(s(50), Some(counts(1, 5, 4, 49)), None);
        assert_eq!((lossy.verdict, lossy.sent, lossy.arrived), (Verdict::PartialLoss, 2, 1));
        assert_eq!(
            watch.evaluate(s(55), Some(counts(1, 5, 4, 49)), None).verdict,
            Verdict::PartialLoss,
            "half a period later, still"
        );
        assert_eq!(
            watch.evaluate(s(60), Some(counts(1, 6, 5, 59)), None).verdict,
            Verdict::PartialLoss,
            "a period on, the loss is still in it"
        );
        assert_eq!(
            watch.evaluate(s(65), Some(counts(1, 6, 5, 59)), None).verdict,
            Verdict::Ok,
            "more than a period on"
        );
    }

    #[test]
    fn a_silent_peer_whose_agent_says_it_sent_is_no_arrivals_and_heals() {
        let mut watch = PeerWatch::new(s(0), PERIOD);
        watch.evaluate(s(100), Some(counts(1, 10, 10, 100)), None);
        // Cut: nothing since 100 s; silent from 116 s on; at 120 s the peer says it sent 13.
        let heard = counts(1, 10, 10, 100);
        assert!(!watch.silent(Some(&heard), s(115)));
        assert!(watch.silent(Some(&heard), s(120)));
        let cut = watch.evaluate(s(120), Some(heard), Some(status(1, 13)));
        assert_eq!(
            (cut.verdict, cut.sent, cut.arrived),
            (Verdict::NoArrivals, 2, 0),
            "12 sent surely, the 13th maybe on its way"
        );
        let still = watch.evaluate(s(130), Some(heard), Some(status(1, 14)));
        assert_eq!((still.verdict, still.sent), (Verdict::NoArrivals, 1));
        // Healed: number 13 arrives; the numbers now say 14 sent, 11 arrived.
        let healing = watch.evaluate(s(140), Some(counts(1, 14, 11, 139)), None);
        assert_eq!((healing.sent, healing.arrived), (1, 1), "the losses are not counted twice");
        assert_eq!(healing.verdict, Verdict::PartialLoss, "the period still holds the cut");
        assert_eq!(watch.evaluate(s(150), Some(counts(1, 15, 12, 149)), None).verdict, Verdict::Ok);
    }

    #[test]
    fn a_restarting_peer_is_untested_never_a_loss() {
        let mut watch = PeerWatch::new(s(0), PERIOD);
        watch.evaluate(s(100), Some(counts(1, 10, 10, 100)), None);
        let heard = counts(1, 10, 10, 100);
        // Its agent is away: untested.
        let away = watch.evaluate(s(120), Some(heard), Some(Err("connection refused".into())));
        assert_eq!(away.verdict, Verdict::Untested);
        assert!(away.reason.unwrap().contains("does not answer"));
        // Back, a new run that has not sent yet, or that does not list this node yet: untested.
        assert_eq!(watch.evaluate(s(125), Some(heard), Some(status(2, 1))).verdict, Verdict::Untested);
        assert_eq!(watch.evaluate(s(130), Some(heard), Some(status(2, 0))).verdict, Verdict::Untested);
        // Its beacons arrive again: ok.
        assert_eq!(watch.evaluate(s(135), Some(counts(2, 2, 2, 134)), None).verdict, Verdict::Ok);
    }

    #[test]
    fn a_new_run_whose_beacons_never_arrive_is_no_arrivals() {
        let mut watch = PeerWatch::new(s(0), PERIOD);
        watch.evaluate(s(100), Some(counts(1, 10, 10, 100)), None);
        let lost = watch.evaluate(s(120), Some(counts(1, 10, 10, 100)), Some(status(2, 4)));
        assert_eq!((lost.verdict, lost.sent), (Verdict::NoArrivals, 3));
    }

    #[test]
    fn a_peer_that_stopped_sending_is_untested() {
        let mut watch = PeerWatch::new(s(0), PERIOD);
        watch.evaluate(s(100), Some(counts(1, 10, 10, 100)), None);
        let stopped = watch.evaluate(s(120), Some(counts(1, 10, 10, 100)), Some(status(1, 11)));
        assert_eq!(stopped.verdict, Verdict::Untested, "the 11th may be on its way: no loss shown");
    }
}
