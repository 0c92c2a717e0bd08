#!/usr/bin/env bash
# Training throughput of the reference MLP, modelforge beside PyTorch, with the ratio.
#   bench/train_throughput.sh [EXAMPLES]     (default 30000 MNIST training images)
# PyTorch is installed from PyPI into .venv/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-30000}
python=$(scripts/python-env.sh numpy torch)
# Built with the release profile the rest of the project uses (no second build of burn).
exe=$(cargo build --release -p modelforge-train --bench throughput --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
printf '%-6s %-8s %-8s %14s %14s %7s\n' batch threads workers modelforge pytorch ratio
for batch in 64 256; do
  # threads workers: one core; two cores shared by the engine; two single-threaded workers.
  for setting in "1 1" "2 1" "2 2"; do
    read -r threads workers <<<"$setting"
    mf=$("$exe" --threads "$threads" --workers "$workers" --batch "$batch" --examples "$examples" | sed -n 's/.*samples_per_sec=\([0-9]*\).*/\1/p')
    pt=$("$python" bench/torch_mlp.py data/mnist "$batch" "$threads" "$examples" | sed -n 's/.*samples_per_sec=\([0-9]*\).*/\1/p')
    ratio=$(awk -v a="$mf" -v b="$pt" 'BEGIN { printf "%.2f", a / b }')
    printf '%-6s %-8s %-8s %14s %14s %6s×\n' "$batch" "$threads" "$workers" "$mf" "$pt" "$ratio"
  done
done
