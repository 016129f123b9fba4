//! Which program a chain or a rule belongs to, from its name, comment or target. The prefixes are
//! the ones each project writes.

use super::save_format::{kube_router_hash, RuleFacts};

/// Chains the kernel defines in every table.
pub fn is_builtin(chain: &str) -> bool {
    matches!(chain, "INPUT" | "OUTPUT" | "FORWARD" | "PREROUTING" | "POSTROUTING")
}

/// Chains that exist to be found, not jumped to: the kubelet's and kube-proxy's canaries (their
/// disappearance tells them the tables were flushed) and the kubelet's hint of the backend.
pub fn is_marker(chain: &str) -> bool {
    matches!(chain, "KUBE-KUBELET-CANARY" | "KUBE-PROXY-CANARY" | "KUBE-IPTABLES-HINT")
}

/// firewalld's chains (iptables backend): its direct and zone chains.
fn is_firewalld(chain: &str) -> bool {
    const EXACT: &[&str] = &[
        "INPUT_direct",
        "INPUT_ZONES",
        "INPUT_ZONES_SOURCE",
        "FORWARD_direct",
        "FORWARD_IN_ZONES",
        "FORWARD_IN_ZONES_SOURCE",
        "FORWARD_OUT_ZONES",
        "FORWARD_OUT_ZONES_SOURCE",
        "OUTPUT_direct",
        "PREROUTING_direct",
        "PREROUTING_ZONES",
        "PREROUTING_ZONES_SOURCE",
        "POSTROUTING_direct",
        "POSTROUTING_ZONES",
        "POSTROUTING_ZONES_SOURCE",
    ];
    const ZONE_PREFIXES: &[&str] = &["IN_", "FWDI_", "FWDO_", "FWD_", "PRE_", "POST_"];
    EXACT.contains(&chain) || ZONE_PREFIXES.iter().any(|p| chain.starts_with(p) && chain.len() > p.len())
}

/// The owner of `chain` in `table`, or `None` when no known program uses its name.
pub fn owner(table: &str, chain: &str) -> Option<&'static str> {
    // Longest, most specific prefixes first: KUBE-ROUTER-* and KUBE-POD-FW-* are not kube-proxy's.
    const PREFIXES: &[(&str, &str)] = &[
        ("KUBE-ROUTER", "kube-router"),
        ("KUBE-POD-FW-", "kube-router"),
        ("KUBE-NWPLCY-", "kube-router"),
        ("KUBE-SRC-", "kube-router"),
        ("KUBE-DST-", "kube-router"),
        ("KUBE-KUBELET-CANARY", "kubelet"),
        ("KUBE-IPTABLES-HINT", "kubelet"),
        ("KUBE-", "kube-proxy"),
        ("CNI-HOSTPORT-", "cni-portmap"),
        // portmap's per-container DNAT chains (CNI-DN-<hash>), as its hostport chains.
        ("CNI-DN-", "cni-portmap"),
        ("CNI-", "cni"),
        ("cali-", "calico"),
        ("CILIUM_", "cilium"),
        ("OLD_CILIUM_", "cilium"),
        ("FLANNEL", "flannel"),
        ("DOCKER", "docker"),
        ("ufw-", "ufw"),
        ("ufw6-", "ufw"),
        ("f2b-", "fail2ban"),
        ("LIBVIRT_", "libvirt"),
        ("WEAVE", "weave"),
        ("ISTIO_", "istio"),
    ];
    // A native nftables table (`ip kube-proxy`, `inet firewalld`): each program keeps its own.
    if let Some((_, name)) = table.split_once(' ') {
        return nft_owner(name);
    }
    if is_builtin(chain) {
        return Some("builtin");
    }
    // KUBE-FIREWALL: the kubelet's in filter; in nat it is kube-proxy's (IPVS mode).
    if chain == "KUBE-FIREWALL" {
        return Some(if table == "nat" { "kube-proxy" } else { "kubelet" });
    }
    if is_firewalld(chain) {
        return Some("firewalld");
    }
    PREFIXES.iter().find(|(prefix, _)| chain.starts_with(prefix)).map(|(_, owner)| *owner)
}

/// Who keeps a native nftables table, by its name.
fn nft_owner(table: &str) -> Option<&'static str> {
    const NAMES: &[(&str, &str)] = &[
        ("kube-proxy", "kube-proxy"),
        ("kube-router", "kube-router"),
        ("firewalld", "firewalld"),
        ("calico", "calico"),
        ("cilium", "cilium"),
        ("docker", "docker"),
        ("flannel", "flannel"),
        ("netavark", "podman"),
        ("libvirt", "libvirt"),
    ];
    NAMES.iter().find(|(prefix, _)| table.starts_with(prefix)).map(|(_, owner)| *owner)
}

/// Who wrote a rule: its chain's owner, or, for a rule in a built-in chain, the program its
/// comment or jump names (kube-router's `kube-router netpol - HASH` rule in INPUT is kube-router's).
pub fn rule_owner(facts: &RuleFacts, table: &str, chain: &str) -> Option<&'static str> {
    let by_chain = owner(table, chain);
    if by_chain != Some("builtin") {
        return by_chain;
    }
    let by_comment = facts.comment.as_deref().and_then(kube_router_hash).map(|_| "kube-router");
    let by_target = facts.target.as_deref().and_then(|t| owner(table, t)).filter(|o| *o != "builtin");
    by_comment.or(by_target).or(by_chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_by_prefix() {
        for (table, chain, want) in [
            ("filter", "INPUT", Some("builtin")),
            ("filter", "KUBE-ROUTER-INPUT", Some("kube-router")),
            ("filter", "KUBE-POD-FW-ABCDEFGHIJKLMNOP", Some("kube-router")),
            ("filter", "KUBE-NWPLCY-ABCDEFGHIJKLMNOP", Some("kube-router")),
            ("nat", "KUBE-SVC-ERIFXISQEP7F7OF4", Some("kube-proxy")),
            ("nat", "KUBE-SEP-ABCDEFGHIJKLMNOP", Some("kube-proxy")),
            ("nat", "KUBE-SERVICES", Some("kube-proxy")),
            ("filter", "KUBE-FIREWALL", Some("kubelet")),
            ("nat", "KUBE-FIREWALL", Some("kube-proxy")),
            ("mangle", "KUBE-IPTABLES-HINT", Some("kubelet")),
            ("nat", "CNI-HOSTPORT-DNAT", Some("cni-portmap")),
            ("nat", "CNI-DN-6029b5edc6546994e6e87", Some("cni-portmap")),
            ("ip kube-proxy", "nat-prerouting", Some("kube-proxy")),
            ("inet firewalld", "filter_INPUT", Some("firewalld")),
            ("inet mine", "input", None),
            ("nat", "CNI-1a2b3c4d5e6f", Some("cni")),
            ("filter", "cali-INPUT", Some("calico")),
            ("filter", "CILIUM_FORWARD", Some("cilium")),
            ("filter", "OLD_CILIUM_FORWARD", Some("cilium")),
            ("filter", "FLANNEL-FWD", Some("flannel")),
            ("filter", "DOCKER-USER", Some("docker")),
            ("filter", "ufw-user-input", Some("ufw")),
            ("filter", "IN_public_allow", Some("firewalld")),
            ("filter", "INPUT_ZONES", Some("firewalld")),
            ("filter", "my-chain", None),
        ] {
            assert_eq!(owner(table, chain), want, "{table}/{chain}");
        }
        assert!(is_marker("KUBE-PROXY-CANARY") && !is_marker("KUBE-SERVICES"));
    }

    #[test]
    fn rules_in_builtin_chains_belong_to_who_wrote_them() {
        let facts = |comment: Option<&str>, target: Option<&str>| RuleFacts {
            target: target.map(str::to_string),
            comment: comment.map(str::to_string),
            stateful: None,
            xor: false,
        };
        let netpol = facts(Some("kube-router netpol - 4IA2OSFRMVNDXBVV"), Some("KUBE-ROUTER-INPUT"));
        assert_eq!(rule_owner(&netpol, "filter", "INPUT"), Some("kube-router"));
        let jump = facts(None, Some("KUBE-SERVICES"));
        assert_eq!(rule_owner(&jump, "nat", "PREROUTING"), Some("kube-proxy"));
        assert_eq!(rule_owner(&facts(None, Some("ACCEPT")), "filter", "INPUT"), Some("builtin"));
        assert_eq!(rule_owner(&facts(None, None), "filter", "cali-INPUT"), Some("calico"));
    }
}
