//! The bodies of the fuzz targets (`fuzz/`), here so that the stable test suite replays the same
//! code on the fuzzers' seeds and crash inputs (`tests/fuzz_seeds.rs`). Each takes untrusted bytes
//! and must return without panicking; the ones with a property assert it.

use std::net::Ipv4Addr;

/// Capture files: the one-shot report and the watch replay of whatever the bytes are, read by
/// libpcap from memory (a file on disk made this target run at 45 inputs a second).
pub fn capture_file(bytes: &[u8]) {
    let Ok(capture) = crate::net::capture_file::InMemory::new(bytes) else { return };
    let path = capture.path();
    let v6: std::net::IpAddr = "2001:db8::100".parse().expect("an address");
    for target in [std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)), v6] {
        let _ = crate::arp::from_capture(&path, target, vec![]);
        let _ = crate::arp::watch::watch_capture(&path, target, vec![], |event| {
            let _ = serde_json::to_string(event);
        });
    }
}

/// Wire views: the wire crate's own target (`netprobe_wire::fuzzing::wire`), here too so that
/// the seeds replay from one place.
pub use netprobe_wire::fuzzing::wire;

/// DNS replies: checked against a fixed query, as every reply the probe receives is.
pub fn dns_reply(bytes: &[u8]) {
    let name = crate::dns::parse_name("kubernetes.default.svc.cluster.local").expect("a valid name");
    let id = bytes.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])).unwrap_or(0);
    for rtype in [hickory_proto::rr::RecordType::A, hickory_proto::rr::RecordType::TXT] {
        let _ = crate::dns::message::check_reply(bytes, id, &name, rtype);
    }
}

/// iptables-save text: the analysis, and the property that applying its cleanup script leaves
/// exactly the first copy of every rule of each rewritten chain, in order, and every other chain
/// as it was.
pub fn iptables(bytes: &[u8]) {
    let Ok(sets) = crate::iptables::analyse(bytes) else { return };
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    for (index, set) in sets.iter().enumerate() {
        let report = set.report(&Default::default(), String::new());
        let _ = serde_json::to_string(&report);
        let mut script = Vec::new();
        set.write_cleanup_script(&mut script, "iptables-restore --noflush", false).expect("a Vec takes it");
        let script = String::from_utf8(script).expect("the script is text");
        if sets.len() == 1 && !set.list_format && index == 0 {
            check_cleanup(text, &script);
        }
    }
}

/// Applies `script` to the rules of `dump` in a model of the tables and checks the property.
fn check_cleanup(dump: &str, script: &str) {
    use crate::iptables::save_format::{classify, Line};
    use std::collections::BTreeMap;
    let mut before: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut table = String::new();
    for line in dump.lines() {
        match classify(line) {
            Ok(Line::Table(t)) => table = t.to_string(),
            Ok(Line::Chain { name, .. }) => {
                before.entry((table.clone(), name.to_string())).or_default();
            }
            Ok(Line::Rule { chain, spec }) => {
                before.entry((table.clone(), chain.to_string())).or_default().push(spec.to_string())
            }
            _ => {}
        }
    }
    let mut after = before.clone();
    let mut rewritten = Vec::new();
    for line in script.lines().filter(|l| !l.starts_with('#')) {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(chain) = line.strip_prefix("-F ") {
            after.insert((table.clone(), chain.to_string()), Vec::new());
            rewritten.push((table.clone(), chain.to_string()));
        } else if let Ok(Line::Rule { chain, spec }) = classify(line) {
            after.entry((table.clone(), chain.to_string())).or_default().push(spec.to_string());
        }
    }
    for (key, rules) in &before {
        let got = &after[key];
        if rewritten.contains(key) {
            assert_eq!(got, &same_behaviour(rules), "{key:?}: what a chain needs to act the same, in order");
        } else {
            assert_eq!(got, rules, "{key:?}: untouched");
        }
    }
}

/// The rules a chain keeps and still acts the same: the first copy of each plain rule, every
/// copy of a stateful one where it stands, and of a run of the same XOR of the mark, one copy if
/// the run is odd (two cancel), none if even.
fn same_behaviour(rules: &[String]) -> Vec<String> {
    use crate::iptables::save_format::facts;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < rules.len() {
        let rule = &rules[at];
        let f = facts(rule).unwrap_or_default();
        if f.xor {
            let run = rules[at..].iter().take_while(|r| *r == rule).count();
            if run % 2 == 1 {
                out.push(rule.clone());
            }
            at += run;
            continue;
        }
        if f.stateful.is_some() || seen.insert(rule.clone()) {
            out.push(rule.clone());
        }
        at += 1;
    }
    out
}

/// Rule text: the line classifier, the argument splitter and the facts, on any string.
pub fn save_format(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines() {
        let _ = crate::iptables::save_format::classify(line);
        let _ = crate::iptables::save_format::arguments(line);
        let _ = crate::iptables::save_format::facts(line);
        let _ = crate::iptables::save_format::header(line);
    }
}
