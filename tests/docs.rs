//! The README and the guides hold together: every relative link points at a file that exists, and
//! the README stays a first-ten-minutes page (the guides carry the rest).

use std::path::{Path, PathBuf};

fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<PathBuf> =
        ["README.md", "ARCHITECTURE.md", "deploy/README.md", "benches/README.md", "fuzz/README.md"]
            .iter()
            .map(|p| root.join(p))
            .collect();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    pages
}

/// `[text](target)` targets of a Markdown page, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_points_at_a_file() {
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in links(&text) {
            if link.starts_with("http") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            let path = link.split('#').next().unwrap();
            let target = page.parent().unwrap().join(path);
            assert!(target.exists(), "{}: the link {link:?} points at nothing", page.display());
        }
    }
}

#[test]
fn the_readme_fits_a_newcomers_first_ten_minutes() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines: move detail to docs/");
    for guide in [
        "docs/arp.md",
        "docs/vxlan.md",
        "docs/dns.md",
        "docs/iptables.md",
        "docs/doctor.md",
        "docs/agent.md",
        "docs/conntrack.md",
    ] {
        assert!(readme.contains(guide), "the README points to {guide}");
    }
}
