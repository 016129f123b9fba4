#![no_main]
//! Fuzz target: see netprobe_wire::fuzzing::wire.

libfuzzer_sys::fuzz_target!(|data: &[u8]| netprobe_wire::fuzzing::wire(data));
