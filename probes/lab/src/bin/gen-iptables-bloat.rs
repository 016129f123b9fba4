//! Writes a kube-router bloat dump to stdout, like the 1,055,488-line one of incident 3:
//!
//!     cargo run --release -p netprobe-lab --bin gen-iptables-bloat -- 1055488 > bloat.rules
//!
//! Arguments: total lines (default 1055488), kube-proxy services in the base set (default 100).
//! The counts go to stderr as one JSON object.

use std::io::{BufWriter, Write};

fn main() {
    let mut args = std::env::args().skip(1);
    let parse = |arg: Option<String>, default: u64, what: &str| -> u64 {
        match arg {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| {
                eprintln!("gen-iptables-bloat: {what} must be a whole number, not {text:?}");
                std::process::exit(2)
            }),
        }
    };
    let lines = parse(args.next(), 1_055_488, "the line count");
    let services = parse(args.next(), 100, "the service count").min(60_000) as u32;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let counts = match netprobe_lab::iptables_dump::write_kube_router_bloat(&mut out, lines, services)
        .and_then(|c| out.flush().map(|_| c))
    {
        Ok(counts) => counts,
        Err(e) => {
            eprintln!("gen-iptables-bloat: writing: {e}");
            std::process::exit(3)
        }
    };
    eprintln!(
        "{{\"lines\":{},\"rules\":{},\"duplicates\":{},\"worst_copies\":{},\"orphan_chains\":{}}}",
        counts.lines, counts.rules, counts.duplicates, counts.worst_copies, counts.orphan_chains
    );
}
