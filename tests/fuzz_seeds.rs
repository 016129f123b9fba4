//! The fuzz targets' seeds and every input a fuzzer found a fault with, replayed on the stable
//! toolchain as ordinary tests, so CI keeps them (fuzz/README.md says how to fuzz).

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds for {target}");
    files
}

fn replay(target: &str, body: fn(&[u8])) {
    for path in inputs(target) {
        let bytes = std::fs::read(&path).unwrap();
        // A panic names the input that caused it.
        let outcome = std::panic::catch_unwind(|| body(&bytes));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
    }
}

#[test]
fn capture_files() {
    replay("capture_file", netprobe_probes::fuzzing::capture_file);
}

#[test]
fn wire_views() {
    replay("wire", netprobe_probes::fuzzing::wire);
}

#[test]
fn dns_replies() {
    replay("dns_reply", netprobe_probes::fuzzing::dns_reply);
}

#[test]
fn iptables_dumps_and_their_cleanup() {
    replay("iptables", netprobe_probes::fuzzing::iptables);
}

#[test]
fn rule_text() {
    replay("save_format", netprobe_probes::fuzzing::save_format);
}
