//! Which program a chain belongs to, from its name. The prefixes are the ones each project writes.

/// Chains the kernel defines in every table.
pub fn is_builtin(chain: &str) -> bool {
    matches!(chain, "INPUT" | "OUTPUT" | "FORWARD" | "PREROUTING" | "POSTROUTING")
}

/// The owner of `chain`, or `None` when no known program uses its name.
pub fn owner(chain: &str) -> Option<&'static str> {
    // Longest, most specific prefixes first: KUBE-ROUTER-* and KUBE-POD-FW-* are not kube-proxy's.
    const PREFIXES: &[(&str, &str)] = &[
        ("KUBE-ROUTER", "kube-router"),
        ("KUBE-POD-FW-", "kube-router"),
        ("KUBE-NWPLCY-", "kube-router"),
        ("KUBE-SRC-", "kube-router"),
        ("KUBE-DST-", "kube-router"),
        ("KUBE-FIREWALL", "kubelet"),
        ("KUBE-KUBELET-CANARY", "kubelet"),
        ("KUBE-", "kube-proxy"),
        ("cali-", "calico"),
        ("CILIUM_", "cilium"),
        ("FLANNEL", "flannel"),
        ("DOCKER", "docker"),
    ];
    if is_builtin(chain) {
        return Some("builtin");
    }
    PREFIXES.iter().find(|(prefix, _)| chain.starts_with(prefix)).map(|(_, owner)| *owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_by_prefix() {
        for (chain, want) in [
            ("INPUT", Some("builtin")),
            ("KUBE-ROUTER-INPUT", Some("kube-router")),
            ("KUBE-POD-FW-ABCDEFGHIJKLMNOP", Some("kube-router")),
            ("KUBE-NWPLCY-ABCDEFGHIJKLMNOP", Some("kube-router")),
            ("KUBE-SVC-ERIFXISQEP7F7OF4", Some("kube-proxy")),
            ("KUBE-SEP-ABCDEFGHIJKLMNOP", Some("kube-proxy")),
            ("KUBE-SERVICES", Some("kube-proxy")),
            ("KUBE-FIREWALL", Some("kubelet")),
            ("cali-INPUT", Some("calico")),
            ("CILIUM_FORWARD", Some("cilium")),
            ("FLANNEL-FWD", Some("flannel")),
            ("DOCKER-USER", Some("docker")),
            ("my-chain", None),
        ] {
            assert_eq!(owner(chain), want, "{chain}");
        }
    }
}
