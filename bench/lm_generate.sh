#!/usr/bin/env bash
# Decoding at batch 1 with the key/value cache: a LLaMA-shaped model of SmolLM-135M's
# configuration (bench/lm/llama-135m.toml, random weights) in modelforge beside
# transformers' LlamaForCausalLM of the same configuration (bench/lm_generate.py), greedy:
# decode tokens/s after the first token, the time to the first token, peak RSS.
#   bench/lm_generate.sh [PROMPT_TOKENS] [TOKENS]     (default 32 and 64)
# PyTorch and transformers are installed from PyPI into .venv/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
prompt=${1:-32}
tokens=${2:-64}
python=$(scripts/python-env.sh numpy torch transformers)
# Built with the release profile the rest of the project uses.
exe=$(cargo build --release -p modelforge-generate --bench decode --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
field() { sed -n "s/.*$1=\\([0-9.]*\\).*/\\1/p" <<<"$2"; }
printf '%-8s %12s %12s %7s %10s %10s %9s %9s\n' threads mf_tok/s pt_tok/s ratio mf_ttft_ms pt_ttft_ms mf_rss pt_rss
for threads in 1 2; do
  mf=$("$exe" bench/lm/llama-135m.toml --prompt-tokens "$prompt" --tokens "$tokens" --threads "$threads")
  pt=$("$python" bench/lm_generate.py "$prompt" "$tokens" "$threads")
  ratio=$(awk -v a="$(field decode_tokens_per_sec "$mf")" -v b="$(field decode_tokens_per_sec "$pt")" 'BEGIN { printf "%.2f", a / b }')
  printf '%-8s %12s %12s %6s× %10s %10s %8sM %8sM\n' "$threads" \
    "$(field decode_tokens_per_sec "$mf")" "$(field decode_tokens_per_sec "$pt")" "$ratio" \
    "$(field ttft_ms "$mf")" "$(field ttft_ms "$pt")" "$(field peak_rss_mib "$mf")" "$(field peak_rss_mib "$pt")"
done
