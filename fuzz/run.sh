#!/usr/bin/env bash
# Runs each fuzz target RUNS times (default 10 million executions; at most MAX_SECONDS each) with
# libFuzzer, the seeds in fuzz/seeds/TARGET as its starting corpus, JOBS targets at a time (default
# 2), and prints each target's executions, time and rate. Needs cargo-fuzz (cargo install
# cargo-fuzz) and a nightly toolchain (`cargo +nightly fuzz`), or, without one, RUSTC_BOOTSTRAP=1
# on stable.
#
#   bash fuzz/run.sh [TARGET...]        RUNS=10000000 MAX_SECONDS=3600 JOBS=2 MAX_LEN=4096
#
# Built without a sanitizer and with debug assertions on (integer overflow panics): the targets are
# safe Rust (the capture files go through the system's libpcap, which no sanitizer instruments
# here). Inputs up to MAX_LEN bytes: enough for several tables and chains of rules or a capture of
# dozens of frames. AddressSanitizer and inputs as large as the largest seed (20 KB) together made
# the targets 4 to 15 times slower.
#
# Run it from a worktree of its own (git worktree add ../fuzz-wt HEAD) so that nothing rebuilds
# underneath it. New inputs go to fuzz/corpus/TARGET (not committed); crashes to
# fuzz/artifacts/TARGET: once fixed, copy each into fuzz/seeds/TARGET, where `cargo test --test
# fuzz_seeds` replays it.
set -euo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-10000000}
max_seconds=${MAX_SECONDS:-3600}
jobs=${JOBS:-2}
max_len=${MAX_LEN:-4096}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(capture_file iptables save_format dns_reply wire)
if rustup toolchain list 2>/dev/null | grep -q nightly; then fuzz=(cargo +nightly fuzz); else fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz); fi
build=(-O --debug-assertions --sanitizer none)
"${fuzz[@]}" build "${build[@]}" >/dev/null

one() {
    local target=$1 log="corpus/$1.log" start end
    mkdir -p "corpus/$target"
    start=$(date +%s)
    if "${fuzz[@]}" run "${build[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -runs="$runs" -max_total_time="$max_seconds" -max_len="$max_len" -print_final_stats=1 2> "$log"; then
        end=$(date +%s)
        local n
        n=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
        echo "$target: $n executions in $((end - start)) s ($((n / (end - start + 1))) a second), no failure"
    else
        echo "$target: FAILED, see fuzz/$log and fuzz/artifacts/$target"
    fi
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $(nproc) cores, $jobs at a time"
for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    one "$target" &
done
wait
