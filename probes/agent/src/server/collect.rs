//! Ending expectations: what arrived, what the kernel dropped, whose counters grew.

use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::Response;

use netprobe_probes::vxlan::api::*;
use netprobe_probes::vxlan::rules::{Flow, Path};

use super::state::*;
use super::*;

pub(super) async fn collect(State(agent): State<Agent>, Json(req): Json<CollectRequest>) -> Response {
    single(collect_expectations(agent, vec![req.probe_id]).await)
}

pub(super) async fn collect_many(State(agent): State<Agent>, Json(req): Json<CollectMany>) -> Response {
    if let Some(refused) = batch_size(req.probe_ids.len()) {
        return refused;
    }
    match collect_expectations(agent, req.probe_ids).await {
        Ok(answers) => each(answers),
        Err(refused) => refused,
    }
}

/// Ends each expectation and says what arrived; one read of the counters, after every capture
/// has ended, serves them all.
async fn collect_expectations(
    agent: Agent,
    probe_ids: Vec<u64>,
) -> std::result::Result<Vec<std::result::Result<CollectResponse, Refusal>>, Response> {
    let taken: Vec<(u64, Option<Expectation>)> = {
        let mut open = agent.open.lock().unwrap_or_else(|e| e.into_inner());
        probe_ids.iter().map(|id| (*id, open.expectations.remove(id))).collect()
    };
    let counters = agent.handles.counters.clone();
    let node = agent.handles.node.clone();
    blocking(move || {
        // Every capture ends first; then one read of the counters, made for the first answer
        // that needs it, serves them all.
        let ended: Vec<_> = taken
            .into_iter()
            .map(|(probe_id, expectation)| {
                let Some(e) = expectation else {
                    return refused(StatusCode::NOT_FOUND, format!("no expectation for probe {probe_id}"));
                };
                let route_interface = e.listener.interface().to_string();
                let heard =
                    e.listener.finish().map_err(|err| (StatusCode::SERVICE_UNAVAILABLE, err.to_string()))?;
                let traced = e.drops.map(|watch| watch.finish());
                let flow = Flow { source: e.from, destination: e.to, port: e.port, path: Path::Inbound };
                Ok((heard, traced, flow, e.counters_before, e.counters_error, route_interface))
            })
            .collect();
        let after = std::cell::OnceCell::new();
        let devices = std::cell::OnceCell::new();
        let answers = ended
            .into_iter()
            .map(|ended| {
                let (heard, traced, flow, before, before_error, route_interface) = ended?;
                let (kernel_drops, trace_error) = match traced {
                    Ok(Ok(drops)) => (Some(drops), None),
                    Ok(Err(why)) | Err(why) => (None, Some(why)),
                };
                let (after, error) = read_counters(after.get_or_init(|| counters.snapshot()), &flow);
                let mut arrived_seqs: Vec<u32> = heard.probes.iter().copied().collect();
                arrived_seqs.sort_unstable();
                let kernel = after.kernel.since(&before.kernel);
                // Where the probes came in by another interface than the way back, the filter
                // that may refuse them for it.
                let rp_filter = heard
                    .interfaces
                    .iter()
                    .find(|name| **name != route_interface)
                    .and_then(|name| netprobe_probes::net::snmp::rp_filter(name));
                Ok(CollectResponse {
                    arrived_seqs,
                    kernel_drops,
                    trace_error,
                    arrived: heard.probes.len() as u32,
                    control_arrived: heard.control.len() as u32,
                    dropping_rules: rules::grown(&before, &after),
                    udp_csum_errors: kernel.udp_in_csum_errors,
                    udp_no_ports: kernel.udp_no_ports,
                    reverse_path_filter_drops: kernel.reverse_path_filter,
                    counters_error: before_error.or(error),
                    arrived_on: heard.interfaces,
                    route_interface: Some(route_interface),
                    rp_filter,
                    vxlan_devices: devices.get_or_init(|| devices_seen(node.as_ref())).clone(),
                })
            })
            .collect();
        Ok(answers)
    })
    .await
}
