#!/usr/bin/env bash
# Importing a pretrained model: a random LlamaForCausalLM of SmolLM-135M's shape (134.5 M
# parameters, tied head), saved by transformers as an F32 folder and written as GGUF files
# in F32 and Q4_1 (tests/clients/hf_checkpoint.py), imported by `modelforge registry import`
# (every check, the forward pass and the publish included) beside transformers'
# from_pretrained of the same files (GGUF dequantised by transformers): wall seconds and
# peak RSS of each process, and the ratio of the times.
#   bench/pretrained_import.sh
# PyTorch, transformers, gguf and accelerate are installed from PyPI into .venv/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
trap stop_servers EXIT
python=$(scripts/python-env.sh numpy torch transformers safetensors gguf accelerate)
cargo build --release -p modelforge --quiet
exe=$PWD/target/release/modelforge
"$python" bench/pretrained_import.py make "$work/hf" >/dev/null 2>&1
"$python" tests/clients/hf_checkpoint.py gguf "$work/hf" "$work/f32.gguf" F32 >/dev/null 2>&1
"$python" tests/clients/hf_checkpoint.py gguf "$work/hf" "$work/q4_1.gguf" Q4_1 >/dev/null 2>&1
# "seconds peak_rss_mib" of a command; "failed -" when it fails.
measure() {
  local out
  if out=$(/usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null); then
    tail -1 <<<"$out" | awk '{ printf "%.2f %d\n", $1, $2 / 1024 }'
  else
    echo "$out" | tail -3 >&2
    echo "failed -"
  fi
}
printf '%-16s %9s %9s %10s %10s %7s\n' source mf_s pt_s mf_rss_mib pt_rss_mib ratio
n=0
for source in hf f32.gguf q4_1.gguf; do
  n=$((n + 1))
  read -r mf_s mf_rss < <(cd "$work" && measure "$exe" registry import "$work/$source" --name "m$n")
  read -r pt_s pt_rss < <(measure "$python" bench/pretrained_import.py load "$work/$source")
  ratio=$(awk -v a="$mf_s" -v b="$pt_s" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", b / a; else printf "-" }')
  printf '%-16s %9s %9s %10s %10s %6s×\n' "$source" "$mf_s" "$pt_s" "$mf_rss" "$pt_rss" "$ratio"
done
