#!/usr/bin/env bash
# README command 2: builds once (release profile) and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed — install Rust from https://rustup.rs" >&2
  exit 2
fi

# The MPI tests need Open MPI, the report test Chromium, the perf_analyzer test libb64;
# MODELFORGE_MPI=0, MODELFORGE_BROWSER=0 and MODELFORGE_PERF=0 build and test without
# them. The client tests make .venv with onnx, onnxruntime, tritonclient and openai from
# PyPI (and .venv-perf with the tritonclient 2.48 wheel that ships perf_analyzer).
features=()
deps=()
[ "${MODELFORGE_BROWSER:-1}" != 0 ] && deps+=(browser)
[ "${MODELFORGE_PERF:-1}" != 0 ] && deps+=(perf)
[ "${MODELFORGE_MPI:-1}" != 0 ] && deps+=(mpi)
[ "${#deps[@]}" = 0 ] || scripts/system-deps.sh "${deps[@]}"
if [ "${MODELFORGE_MPI:-1}" != 0 ]; then
  features=(--features modelforge/mpi)
  # Open MPI refuses to start as root without this consent (containers and CI run as root).
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The PyTorch interop test (ignored by a plain `cargo test`) installs torch from PyPI, about
# 4 GB with its CUDA wheels. It runs unless MODELFORGE_TORCH=0, or when the disk has too
# little room for it, which the summary line then says.
ignored=()
skipped=""
if [ "${MODELFORGE_TORCH:-1}" != 0 ]; then
  free_gib=$(( $(df -Pk . | awk 'NR == 2 {print $4}') >> 20 ))
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    ignored=(-- --include-ignored)
  elif [ "$free_gib" -ge 8 ]; then
    ignored=(-- --include-ignored)
  else
    skipped=" (the PyTorch test was skipped: it needs 8 GiB free for PyTorch, and $free_gib GiB are)"
  fi
fi

cargo build --release --workspace --all-targets "${features[@]}"
set +e
cargo test --release --workspace "${features[@]}" "${ignored[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
echo
echo "${passed} passed, ${failed} failed${skipped}"
exit "$status"
