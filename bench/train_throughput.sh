#!/usr/bin/env bash
# Training throughput of the reference MLP, modelforge beside PyTorch, with the ratio.
#   bench/train_throughput.sh [EXAMPLES]     (default 30000 MNIST training images)
# PyTorch is installed from PyPI into .venv/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-30000}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import torch, numpy" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet numpy torch
fi
cargo bench -p modelforge-train --bench throughput --no-run >/dev/null 2>&1 || cargo bench -p modelforge-train --bench throughput --no-run
printf '%-6s %-8s %14s %14s %7s\n' batch threads modelforge pytorch ratio
for batch in 64 256; do
  for threads in 1 2; do
    mf=$(cargo bench -q -p modelforge-train --bench throughput -- --threads "$threads" --batch "$batch" --examples "$examples" 2>/dev/null | sed -n 's/.*samples_per_sec=\([0-9]*\).*/\1/p')
    pt=$(.venv/bin/python bench/torch_mlp.py data/mnist "$batch" "$threads" "$examples" | sed -n 's/.*samples_per_sec=\([0-9]*\).*/\1/p')
    ratio=$(awk -v a="$mf" -v b="$pt" 'BEGIN { printf "%.2f", a / b }')
    printf '%-6s %-8s %14s %14s %6s×\n' "$batch" "$threads" "$mf" "$pt" "$ratio"
  done
done
