//! Kubernetes discovery: which pods serve a Service, on which nodes, and the Service's addresses;
//! the cluster's Nodes; its LoadBalancer Services. Uses kube's client, so kubeconfigs (exec auth
//! plugins included) and the in-cluster service account work as they do for kubectl. Returns the
//! plain types of `netprobe_probes::cluster`, re-exported here.

pub mod proxy;

pub use netprobe_probes::cluster::*;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use netprobe_probes::{Error, Result};

/// A client for the API, and the server it talks to (for error messages).
pub struct Connected {
    pub client: Client,
    pub server: String,
}

/// A client for the API `api` names.
pub async fn connect(api: &ApiConfig) -> Result<Connected> {
    connect_retrying(api, true).await
}

/// [`connect`], with kube's retries of 429, 503 and 504 on or off (off for the proxy to the
/// agents: a 503 there is a pod that cannot be reached, and the agents' own 429 is retried by the
/// driver, which knows what it asked).
async fn connect_retrying(api: &ApiConfig, retry: bool) -> Result<Connected> {
    let options = KubeConfigOptions { context: api.context.clone(), ..Default::default() };
    let config = match &api.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                Error::invalid(format!("--kubeconfig {}", path.display()), e.to_string())
            })?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| Error::invalid(format!("--kubeconfig {}", path.display()), e.to_string()))?
        }
        None if api.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::invalid("--context", e.to_string()))?,
        None => kube::Config::infer().await.map_err(|e| {
            Error::invalid(
                "kubeconfig",
                format!("{e}: pass --kubeconfig, set KUBECONFIG, fix ~/.kube/config, or give the addresses by hand"),
            )
        })?,
    };
    let server = config.cluster_url.to_string();
    let mut config = config;
    config.default_retry = retry;
    let client = Client::try_from(config).map_err(|e| {
        Error::could_not_run(format!("connecting to the Kubernetes API at {server}"), e.to_string())
    })?;
    Ok(Connected { client, server })
}

/// [`discover`] on a runtime of its own, for callers that are not async.
pub fn discover_blocking(
    api: &ApiConfig,
    namespace: &str,
    service: &str,
    port_name: &str,
    want_cluster_ips: bool,
) -> Result<Discovered> {
    blocking(discover(api, namespace, service, port_name, want_cluster_ips))
}

/// The EndpointSlices labelled `kubernetes.io/service-name=SERVICE` in `namespace`, each endpoint
/// on the port named `port_name` (or the first UDP port), and, when `want_cluster_ips`, the
/// Service's addresses (a caller that has them already never reads the Service, so it needs no
/// permission to).
pub async fn discover(
    api: &ApiConfig,
    namespace: &str,
    service: &str,
    port_name: &str,
    want_cluster_ips: bool,
) -> Result<Discovered> {
    let Connected { client, server } = connect(api).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let list = slices.list(&ListParams::default().labels(&selector)).await.map_err(|e| {
        api_error(
            e,
            &format!("listing endpointslices in {namespace}"),
            "list endpointslices in discovery.k8s.io",
            &server,
        )
    })?;
    let mut found = Discovered { endpoints: endpoints_of(list.items, port_name), cluster_ips: Vec::new() };
    if want_cluster_ips {
        let services: Api<Service> = Api::namespaced(client, namespace);
        let spec = match services.get_opt(service).await {
            Ok(found) => found.and_then(|s| s.spec),
            Err(e) => {
                return Err(api_error(
                    e,
                    &format!("reading service {namespace}/{service}"),
                    "get services in the core API group",
                    &server,
                ))
            }
        };
        if let Some(spec) = spec {
            let ips = spec.cluster_ips.unwrap_or_default();
            let ips = if ips.is_empty() { spec.cluster_ip.into_iter().collect() } else { ips };
            // "None" is a headless Service: no address of its own.
            found.cluster_ips = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        }
    }
    Ok(found)
}

/// Every endpoint of the slices once, on the port named `port_name` (else the first UDP port, else
/// 53). FQDN slices are skipped.
fn endpoints_of(slices: Vec<EndpointSlice>, port_name: &str) -> Vec<ServiceEndpoint> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let ports = slice.ports.unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(port_name))
            .or_else(|| ports.iter().find(|p| p.protocol.as_deref().unwrap_or("TCP") == "UDP"))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(53);
        for endpoint in slice.endpoints.into_iter().flatten() {
            // The addresses are fungible: consumers may use the first (discovery.k8s.io/v1).
            let Some(address) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            if !seen.insert((address, port)) {
                continue;
            }
            let conditions = endpoint.conditions.unwrap_or_default();
            out.push(ServiceEndpoint {
                address,
                port,
                node: endpoint.node_name,
                pod: endpoint.target_ref.and_then(|r| r.name),
                ready: conditions.ready,
                serving: conditions.serving,
                terminating: conditions.terminating,
            });
        }
    }
    out
}

/// Every Node, control-plane nodes included.
pub async fn nodes(api: &ApiConfig) -> Result<Vec<ClusterNode>> {
    let Connected { client, server } = connect(api).await?;
    let list = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, "listing nodes", "list nodes in the core API group", &server))?;
    Ok(list.items.into_iter().map(cluster_node).collect())
}

/// Follows the Nodes for ever: a list, then a watch from its resource version, so a cluster of a
/// thousand nodes costs the API server one list per agent at start and the changes after, not a
/// list a minute. `on_change` gets every Node each time the set changes (and after the first
/// list). A watch that ends is taken up again from the last version; one the server no longer
/// has (410 Gone) starts over with a list. Returns only an error of the first list (with why); a
/// later failure is said on stderr and retried after `retry`.
pub async fn watch_nodes(
    api: &ApiConfig,
    retry: std::time::Duration,
    mut on_change: impl FnMut(Vec<ClusterNode>),
) -> Result<()> {
    use futures_util::TryStreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let Connected { client, server } = connect(api).await?;
    let nodes = Api::<Node>::all(client);
    let mut first = true;
    loop {
        let list = match nodes.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) if first => {
                return Err(api_error(e, "listing nodes", "list nodes in the core API group", &server))
            }
            Err(e) => {
                eprintln!(
                    "netprobe: listing nodes again: {}",
                    api_error(e, "listing nodes", "list nodes", &server)
                );
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        first = false;
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        let mut known: std::collections::BTreeMap<String, ClusterNode> =
            list.items.into_iter().map(cluster_node).map(|n| (n.name.clone(), n)).collect();
        on_change(known.values().cloned().collect());
        // Watch until the server has no more history for us (then list again).
        'watching: loop {
            let params = WatchParams::default().timeout(290);
            let events = match nodes.watch(&params, &version).await {
                Ok(events) => events,
                Err(e) => {
                    eprintln!(
                        "netprobe: watching nodes: {}",
                        api_error(e, "watching nodes", "watch nodes", &server)
                    );
                    tokio::time::sleep(retry).await;
                    break 'watching;
                }
            };
            let mut events = std::pin::pin!(events);
            loop {
                match events.try_next().await {
                    Ok(Some(WatchEvent::Added(node) | WatchEvent::Modified(node))) => {
                        version = node.metadata.resource_version.clone().unwrap_or(version);
                        let node = cluster_node(node);
                        if known.get(&node.name) != Some(&node) {
                            known.insert(node.name.clone(), node);
                            on_change(known.values().cloned().collect());
                        }
                    }
                    Ok(Some(WatchEvent::Deleted(node))) => {
                        version = node.metadata.resource_version.clone().unwrap_or(version);
                        if known.remove(&cluster_node(node).name).is_some() {
                            on_change(known.values().cloned().collect());
                        }
                    }
                    Ok(Some(WatchEvent::Bookmark(mark))) => version = mark.metadata.resource_version,
                    // 410 Gone: the version is too old; anything else: start over as well.
                    Ok(Some(WatchEvent::Error(status))) => {
                        if status.code != 410 {
                            eprintln!(
                                "netprobe: watching nodes: the API said {} {}",
                                status.code, status.message
                            );
                            tokio::time::sleep(retry).await;
                        }
                        break 'watching;
                    }
                    // The watch's time is up: again from the last version.
                    Ok(None) => continue 'watching,
                    Err(e) => {
                        eprintln!("netprobe: watching nodes: {e}");
                        tokio::time::sleep(retry).await;
                        continue 'watching;
                    }
                }
            }
        }
    }
}

/// A Node as the probes need it.
fn cluster_node(node: Node) -> ClusterNode {
    let labels = node.metadata.labels.unwrap_or_default();
    let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
    let internal: Vec<IpAddr> =
        addresses.iter().filter(|a| a.type_ == "InternalIP").filter_map(|a| a.address.parse().ok()).collect();
    ClusterNode {
        name: node.metadata.name.unwrap_or_default(),
        internal_ip: internal.iter().find(|ip| ip.is_ipv4()).or(internal.first()).copied(),
        control_plane: labels.contains_key("node-role.kubernetes.io/control-plane")
            || labels.contains_key("node-role.kubernetes.io/master"),
    }
}

/// One Service's load-balancer addresses (`Some((namespace, name))`), or every LoadBalancer Service's.
pub async fn load_balancers(api: &ApiConfig, only: Option<(&str, &str)>) -> Result<Vec<LoadBalancer>> {
    let Connected { client, server } = connect(api).await?;
    let services: Vec<Service> = match only {
        Some((namespace, name)) => {
            let api = Api::<Service>::namespaced(client, namespace);
            let found = api.get_opt(name).await.map_err(|e| {
                api_error(
                    e,
                    &format!("reading service {namespace}/{name}"),
                    "get services in the core API group",
                    &server,
                )
            })?;
            let service = found.ok_or_else(|| {
                Error::invalid(format!("service {namespace}/{name}"), "not found (kubectl get svc -A)")
            })?;
            vec![service]
        }
        None => {
            Api::<Service>::all(client)
                .list(&ListParams::default())
                .await
                .map_err(|e| {
                    api_error(e, "listing services", "list services in the core API group", &server)
                })?
                .items
        }
    };
    Ok(services
        .into_iter()
        .filter(|s| {
            only.is_some() || s.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("LoadBalancer")
        })
        .map(|s| LoadBalancer {
            namespace: s.metadata.namespace.unwrap_or_default(),
            name: s.metadata.name.unwrap_or_default(),
            ips: s
                .status
                .and_then(|st| st.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip.and_then(|ip| ip.parse().ok()))
                .collect(),
        })
        .collect())
}

/// Runs one of the async look-ups above on a runtime of its own, for at most 30 s (kube's own
/// read timeout is minutes).
pub fn blocking<T>(lookup: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    blocking_within(LOOKUP_LIMIT, lookup)
}

/// The longest a look-up waits for the API.
pub const LOOKUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// [`blocking`] with a limit of its own.
pub fn blocking_within<T>(
    limit: std::time::Duration,
    lookup: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let runtime = netprobe_probes::net::runtime("starting the Kubernetes client", None)?;
    runtime.block_on(async {
        tokio::time::timeout(limit, lookup).await.map_err(|_| {
            Error::could_not_run(
                "reading the Kubernetes API",
                format!(
                    "no answer within {} s: is the server in the kubeconfig reachable from here?",
                    limit.as_secs()
                ),
            )
        })?
    })
}

/// Whether there is any way to the API: a flag, KUBECONFIG, ~/.kube/config or an in-cluster
/// service account. Probes that only use the API for labels try it then, and stay quiet otherwise.
pub fn api_configured(api: &ApiConfig) -> bool {
    let home_config =
        std::env::var_os("HOME").is_some_and(|home| PathBuf::from(home).join(".kube/config").is_file());
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file();
    api.kubeconfig.is_some()
        || api.context.is_some()
        || std::env::var_os("KUBECONFIG").is_some()
        || home_config
        || in_cluster
}

fn api_error(err: kube::Error, op: &str, permission: &str, server: &str) -> Error {
    match err {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => Error::could_not_run(
            op,
            format!("forbidden ({}): this identity needs RBAC permission to {permission}", status.code),
        ),
        kube::Error::Api(status) => {
            Error::could_not_run(op, format!("the API at {server} said {} {}", status.code, status.message))
        }
        other => Error::could_not_run(op, format!("the API at {server} is unreachable: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slices(json: &str) -> Vec<EndpointSlice> {
        // An EndpointSliceList as the API returns it.
        serde_json::from_str::<k8s_openapi::List<EndpointSlice>>(json).unwrap().items
    }

    #[test]
    fn endpoints_in_two_slices_are_listed_once_with_their_conditions() {
        // A rollout: the old pod terminating in one slice, the new one ready, the old one again in
        // a second slice; and an IPv6 slice of a dual-stack Service.
        let json = r#"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSliceList","metadata":{},"items":[
          {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"a"},"addressType":"IPv4",
           "ports":[{"name":"dns-tcp","port":53,"protocol":"TCP"},{"name":"dns","port":5353,"protocol":"UDP"}],
           "endpoints":[
             {"addresses":["192.0.2.53"],"conditions":{"ready":true,"serving":true,"terminating":false},"nodeName":"node-a","targetRef":{"kind":"Pod","name":"coredns-new"}},
             {"addresses":["192.0.2.54"],"conditions":{"ready":false,"serving":true,"terminating":true},"nodeName":"node-b","targetRef":{"kind":"Pod","name":"coredns-old"}}]},
          {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"b"},"addressType":"IPv4",
           "ports":[{"name":"dns","port":5353,"protocol":"UDP"}],
           "endpoints":[{"addresses":["192.0.2.54"],"conditions":{"ready":false}}]},
          {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"c"},"addressType":"IPv6",
           "ports":[{"name":"dns","port":53,"protocol":"UDP"}],
           "endpoints":[{"addresses":["2001:db8::53"],"conditions":{"ready":true}}]}]}"#;
        let found = endpoints_of(slices(json), "dns");
        let addresses: Vec<String> = found.iter().map(|e| format!("{}:{}", e.address, e.port)).collect();
        assert_eq!(addresses, vec!["192.0.2.53:5353", "192.0.2.54:5353", "2001:db8::53:53"]);
        assert_eq!((found[1].ready, found[1].terminating), (Some(false), Some(true)));
        assert_eq!(found[0].pod.as_deref(), Some("coredns-new"));
    }
}
