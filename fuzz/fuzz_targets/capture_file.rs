#![no_main]
//! Fuzz target: see netprobe_probes::fuzzing::capture_file.

libfuzzer_sys::fuzz_target!(|data: &[u8]| netprobe_probes::fuzzing::capture_file(data));
