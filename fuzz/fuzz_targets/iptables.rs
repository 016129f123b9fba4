#![no_main]
//! Fuzz target: see netprobe_probes::fuzzing::iptables.

libfuzzer_sys::fuzz_target!(|data: &[u8]| netprobe_probes::fuzzing::iptables(data));
