#![no_main]
//! Fuzz target: see netprobe_probes::fuzzing::save_format.

libfuzzer_sys::fuzz_target!(|data: &[u8]| netprobe_probes::fuzzing::save_format(data));
