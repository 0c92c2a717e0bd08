#!/usr/bin/env bash
# Coverage-guided fuzzing of every reader of untrusted bytes (the targets in fuzz/): each
# target runs SECONDS under libFuzzer with AddressSanitizer, at most 2 GiB of memory and
# 10 s per input, from a corpus made by fuzz/seeds.sh. Prints, per target, executions,
# executions per second, corpus size, peak RSS and what it found (crashes, timeouts,
# out-of-memory inputs; kept in target/fuzz/artifacts/TARGET/ to become regression tests).
# Usage: bench/fuzz.sh [SECONDS] [TARGET…]   (default 60 s, every target; SANITIZER=none
# builds without AddressSanitizer, faster but blind to allocations over 2 GiB that are
# never touched; JOBS=N runs N targets at once, each on its own core, default 1). Needs
# cargo-fuzz (installed here when missing) and, with the machine's stable toolchain,
# RUSTC_BOOTSTRAP=1 for libFuzzer's -Z flags (set here).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
export RUSTC_BOOTSTRAP=1
sanitizer=${SANITIZER:-address}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# MODELFORGE_BIN: a modelforge binary already built from this checkout (skips the build).
[ -n "${MODELFORGE_BIN:-}" ] || cargo build --release -p modelforge >/dev/null
work=target/fuzz
fuzz/seeds.sh "$work/seeds"
cargo fuzz build -O -s "$sanitizer" --fuzz-dir fuzz >/dev/null
bin=fuzz/target/x86_64-unknown-linux-gnu/release
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)

jobs=${JOBS:-1}

# Fuzzes one target for $seconds into its corpus, its artifacts and its log.
fuzz_one() { # target
  mkdir -p "$work/corpus/$1" "$work/artifacts/$1"
  "$bin/$1" "$work/corpus/$1" "$work/seeds/$1" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$work/artifacts/$1/" \
    >"$work/$1.log" 2>&1 || true
}

running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait

printf '%-11s %8s %12s %8s %7s %8s %s\n' target seconds executions exec/s corpus rss_mb found
found_any=0
for t in "${targets[@]}"; do
  log="$work/$t.log"
  stat() { awk -v k="stat::$1:" '$1 == k { print $2 }' "$log" | tail -1; }
  found=$(find "$work/artifacts/$t" -type f | wc -l)
  [ "$found" -eq 0 ] || found_any=1
  printf '%-11s %8s %12s %8s %7s %8s %s\n' "$t" "$seconds" "$(stat number_of_executed_units)" \
    "$(stat average_exec_per_sec)" "$(find "$work/corpus/$t" -type f | wc -l)" "$(stat peak_rss_mb)" \
    "$found$( [ "$found" -eq 0 ] || echo " (see $log)")"
done
exit "$found_any"
