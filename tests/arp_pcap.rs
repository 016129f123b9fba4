//! `netprobe arp --pcap` on the real captures in pcaps/ (see pcaps/README.md). No privilege needed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pcaps").join(name)
}

fn analyse(file: &str) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
        .args(["arp", "192.0.2.100", "--node", "sp1=192.0.2.11", "--node", "sp2=192.0.2.12", "--pcap"])
        .arg(fixture(file))
        .args(["-o", "json"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{file}: {e}: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code().unwrap(), report)
}

#[test]
fn single_owner_capture_is_ok() {
    let (code, report) = analyse("arp-single.pcap");
    assert_eq!(code, 0);
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["sent"], 3);
    assert_eq!(report["interface"], Value::Null);
    let responders = report["responders"].as_array().unwrap();
    assert_eq!(responders.len(), 1);
    assert_eq!(responders[0]["mac"], "00:00:5e:00:53:11");
    assert_eq!(responders[0]["node"], "sp1");
    assert_eq!(responders[0]["replies"], 3);
    assert!(responders[0]["rtt_ms"]["max"].as_f64().unwrap() < 1.0, "{}", responders[0]);
}

#[test]
fn duplicate_captures_agree_across_formats_and_link_types() {
    for file in ["arp-duplicate.pcap", "arp-duplicate-any.pcap", "arp-duplicate.pcapng"] {
        let (code, report) = analyse(file);
        assert_eq!(code, 1, "{file}");
        assert_eq!(report["verdict"], "duplicate", "{file}");
        assert_eq!(report["sent"], 3, "{file}");
        let mut seen: Vec<(String, String, u64)> = report["responders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let rtt = r["rtt_ms"]["max"].as_f64().unwrap();
                assert!(rtt < 1.0, "{file}: {r}");
                (
                    r["mac"].as_str().unwrap().into(),
                    r["node"].as_str().unwrap().into(),
                    r["replies"].as_u64().unwrap(),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("00:00:5e:00:53:11".into(), "sp1".into(), 3),
                ("00:00:5e:00:53:12".into(), "sp2".into(), 3)
            ],
            "{file}"
        );
    }
}

#[test]
fn a_file_that_is_not_a_capture_is_exit_2_in_one_line() {
    for path in [PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"), fixture("missing.pcap")] {
        let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
            .args(["arp", "192.0.2.100", "--pcap"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn a_truncated_capture_is_exit_2_not_a_panic() {
    let bytes = std::fs::read(fixture("arp-duplicate.pcapng")).unwrap();
    let dir = std::env::temp_dir().join(format!("netprobe-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for cut in [4, 30, bytes.len() / 2, bytes.len() - 3] {
        let path = dir.join(format!("cut{cut}.pcapng"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_netprobe"))
            .args(["arp", "192.0.2.100", "--pcap"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "cut at {cut}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
