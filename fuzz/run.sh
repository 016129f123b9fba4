#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 600) with libFuzzer, the seeds in fuzz/seeds/TARGET as
# its starting corpus, and prints the exec counts. Needs cargo-fuzz (cargo install cargo-fuzz) and
# a nightly toolchain (`cargo +nightly fuzz`), or, without one, RUSTC_BOOTSTRAP=1 on stable.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# New inputs go to fuzz/corpus/TARGET (not committed); crashes to fuzz/artifacts/TARGET: once
# fixed, copy each into fuzz/seeds/TARGET, where `cargo test --test fuzz_seeds` replays it.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(capture_file wire dns_reply iptables save_format)
if rustup toolchain list 2>/dev/null | grep -q nightly; then fuzz=(cargo +nightly fuzz); else fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz); fi
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="corpus/$target.log"
    "${fuzz[@]}" run "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds" -print_final_stats=1 2> "$log" || {
        echo "$target: FAILED, see fuzz/$log and fuzz/artifacts/$target"; continue; }
    echo "$target: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs in $seconds s, no failure"
done
