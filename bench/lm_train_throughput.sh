#!/usr/bin/env bash
# Language-model training throughput: examples/shakespeare (a character GPT, 4 layers,
# 4 heads, width 128, context 64, batch 12) in modelforge beside the same model in PyTorch
# (bench/lm_torch.py), tokens per second over the same steps and both validation losses.
#   bench/lm_train_throughput.sh [STEPS]     (default 2000, the example's own)
# PyTorch is installed from PyPI into .venv/ on first use. Each side's time is its training
# loop with its evaluations (modelforge: the elapsed time its last evaluation line prints).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
trap stop_servers EXIT
steps=${1:-2000}
python=$(scripts/python-env.sh numpy torch)
cargo build --release -p modelforge >&2
exe=target/release/modelforge
corpus=$PWD/data/text/shakespeare.txt.gz
sed -e "s/^max_steps = 2000/max_steps = $steps/" -e "s#\\.\\./\\.\\./data#$PWD/data#" \
  examples/shakespeare/modelforge.toml >"$work/spec.toml"
tokens=$(( steps * 12 * 64 ))
printf '%-8s %-8s %12s %12s %7s %9s %9s\n' threads workers modelforge pytorch ratio mf_val pt_val
for setting in "1 1" "2 1" "2 2"; do
  read -r threads workers <<<"$setting"
  runs="$work/runs-$threads-$workers"
  "$exe" train "$work/spec.toml" --threads "$threads" --workers "$workers" --runs "$runs" \
    >"$work/train-$threads-$workers.log" 2>&1
  read -r mf mf_val < <(python3 - "$runs" "$tokens" "$work/train-$threads-$workers.log" <<'PY'
import json, pathlib, re, sys
info = json.loads(next(pathlib.Path(sys.argv[1]).glob("*/run.json")).read_text())
# The last evaluation's line, "step N/N (12.3s): …", times the loop to a tenth of a second.
seconds = float(re.findall(r"^step \d+/\d+ \(([0-9.]+)s\)", pathlib.Path(sys.argv[3]).read_text(), re.M)[-1])
print(round(int(sys.argv[2]) / seconds), f'{info["metrics"]["val_loss"]:.4f}')
PY
)
  out=$("$python" bench/lm_torch.py "$corpus" "$steps" "$threads")
  pt=$(sed -n 's/.*tokens_per_sec=\([0-9]*\).*/\1/p' <<<"$out")
  pt_val=$(sed -n 's/.*val_loss=\([0-9.]*\).*/\1/p' <<<"$out")
  ratio=$(awk -v a="$mf" -v b="$pt" 'BEGIN { printf "%.2f", a / b }')
  printf '%-8s %-8s %12s %12s %6s× %9s %9s\n' "$threads" "$workers" "$mf" "$pt" "$ratio" "$mf_val" "$pt_val"
done
