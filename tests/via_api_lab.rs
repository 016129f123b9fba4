//! `netprobe vxlan` from a machine that reaches the API server and nothing else: the agents are
//! reached through the API server's proxy to their pods, as kubectl port-forward reaches a pod.
//! The lab: three nodes behind a router, each with an agent; an "api" namespace holding the
//! stand-in API server (which proxies to the agents' pods, removing `Authorization` as the real one
//! does); a "laptop" namespace linked to the api namespace only (which does not forward).

use netprobe_lab::fake_api::{fixture, FakeApi, FakeApiConfig};
use netprobe_lab::Netns;
use serde_json::Value;

mod common;
use common::*;

/// The agents' pods as the API lists them: one per node, host network (the pod's IP is the node's).
fn agent_pods() -> Vec<(String, &'static str, &'static str)> {
    vec![
        ("netprobe-agent-a1".into(), "k8s-cp-1", N1),
        ("netprobe-agent-b2".into(), "k8s-worker-1", N2),
        ("netprobe-agent-c3".into(), "k8s-worker-2", N3),
    ]
}

fn pod_list(pods: &[(String, &str, &str)]) -> String {
    let items: Vec<Value> = pods
        .iter()
        .map(|(name, node, ip)| {
            serde_json::json!({
                "metadata": {"name": name, "namespace": "netprobe",
                    "labels": {"app.kubernetes.io/name": "netprobe", "app.kubernetes.io/component": "agent"}},
                "spec": {"nodeName": node, "hostNetwork": true, "containers": [{"name": "agent", "image": "netprobe:0.1.0"}]},
                "status": {"phase": "Running", "podIP": ip, "hostIP": ip,
                    "conditions": [{"type": "Ready", "status": "True"}]}
            })
        })
        .collect();
    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
        .to_string()
}

/// The api and laptop namespaces, and the stand-in API on 10.0.2.1:6443 serving `routes`.
fn door(c: &mut Cluster, routes: Vec<(&'static str, u16, String)>) -> TestResultOf<(Netns, FakeApi)> {
    let api = c.lab.host("api")?;
    let laptop = c.lab.host("laptop")?;
    c.lab.link(&api, "10.0.1.1/24", &c.router, "10.0.1.254/24")?;
    api.sh("ip route add default via 10.0.1.254")?;
    c.lab.link(&laptop, "10.0.2.2/24", &api, "10.0.2.1/24")?;
    let pods = agent_pods().into_iter().map(|(name, _, ip)| (name, ip.parse().unwrap())).collect();
    let server = FakeApi::serve(
        &api,
        FakeApiConfig { listen: Some("10.0.2.1:6443".parse()?), routes, pods, ..FakeApiConfig::default() },
    );
    Ok((laptop, server))
}

type TestResultOf<T> = Result<T, Box<dyn std::error::Error>>;

fn vxlan(laptop: &Netns, api: &FakeApi, args: &[&str]) -> (i32, Value, String) {
    let kubeconfig = api.kubeconfig();
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap()), ("NETPROBE_TOKEN", TOKEN)];
    let args: Vec<&str> =
        ["-o", "json", "vxlan", "--timeout", "500ms"].into_iter().chain(args.iter().copied()).collect();
    let (code, out, err) = netprobe_in(laptop, &args, &env);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, report, err)
}

#[test]
fn all_nodes_from_a_laptop_that_reaches_only_the_api_server() -> TestResult {
    let Some(mut c) = cluster("via-api", 3) else { return Ok(()) };
    let routes = vec![
        ("/api/v1/nodes", 200, fixture("nodes-vxlan.json")),
        ("/api/v1/namespaces/netprobe/pods", 200, pod_list(&agent_pods())),
    ];
    let (laptop, api) = door(&mut c, routes)?;
    assert!(laptop.sh(&format!("ping -c1 -W1 {N1}")).is_err(), "the laptop must not reach the nodes");

    // No agent answers at its node's address: through the API server, with the same verdicts.
    let (code, report, err) = vxlan(&laptop, &api, &["--all-nodes"]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert!(err.contains("going through the API server"), "said on stderr: {err}");
    let pairs = report["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 6, "{report}");
    assert!(pairs.iter().all(|p| p["verdict"] == "ok"), "{report}");
    assert_eq!(pair(&report, N1, N2)["from_node"], "k8s-cp-1");

    // --via-api with the nodes by address: the same door.
    let (code, report, _) = vxlan(&laptop, &api, &["--via-api", N1, N3]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["pairs"].as_array().unwrap().len(), 2);

    // A node whose agent is gone (its pod still listed): named untested, the rest probed.
    c.lab.kill(c.agents[2]);
    let (code, report, err) = vxlan(&laptop, &api, &["--all-nodes"]);
    assert_eq!(code, 3, "not everything could be checked: {report}\n{err}");
    assert_eq!(report["untested"][0]["node"], "k8s-worker-2", "{report}");
    let reason = report["untested"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("could not reach the pod") && reason.contains("netprobe-agent-c3"), "{reason}");
    assert_eq!(pair(&report, N1, N2)["verdict"], "ok");
    Ok(())
}

#[test]
fn a_caller_the_api_server_refuses_is_told_which_permission_is_missing() -> TestResult {
    let Some(mut c) = cluster("via-api-rbac", 2) else { return Ok(()) };
    let forbidden = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"netprobe\"","reason":"Forbidden","details":{"kind":"pods"},"code":403}"#;
    let routes = vec![
        ("/api/v1/nodes", 200, fixture("nodes-vxlan.json")),
        ("/api/v1/namespaces/netprobe/pods", 403, forbidden.to_string()),
    ];
    let (laptop, api) = door(&mut c, routes)?;
    let kubeconfig = api.kubeconfig();
    let env = [("KUBECONFIG", kubeconfig.to_str().unwrap()), ("NETPROBE_TOKEN", TOKEN)];
    let (code, out, err) = netprobe_in(&laptop, &["vxlan", "--via-api", N1, N2], &env);
    assert_eq!(code, 3, "{out}\n{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("forbidden") && err.contains("list pods in namespace netprobe"), "{err}");
    Ok(())
}
