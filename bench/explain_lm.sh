#!/usr/bin/env bash
# Explaining a language model's next token: integrated gradients (64 Gauss–Legendre steps,
# zero baseline at the token embedding, the most likely next token) of the character GPT of
# examples/shakespeare (trained briefly: speed does not depend on the weights) over prompts
# of PROMPT_TOKENS characters, modelforge-explain beside Captum on the Hugging Face export
# of the same weights (bench/explain_captum_lm.py), at batch 1 and 8, on one thread and on
# every core; then the served route (POST /v2/models/shakespeare-gpt/explain, one prompt per
# request) with wrk at concurrency 1 and 8, and the same route while 4 streams generate.
#   bench/explain_lm.sh [SECONDS_PER_POINT] [PROMPT_TOKENS]     (default 10 and 32)
# MODELFORGE_BIN: a modelforge binary already built from this checkout (skips the build).
# Captum, PyTorch and transformers are installed from PyPI into .venv/ on first use; wrk
# comes from the system (scripts/system-deps.sh bench installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
len=${2:-32}
scripts/system-deps.sh bench

. bench/lib.sh
trap stop_servers EXIT

exe=${MODELFORGE_BIN:-target/release/modelforge}
[ -n "${MODELFORGE_BIN:-}" ] || cargo build --release --bin modelforge >&2
sed -e 's/max_steps = 2000/max_steps = 50/' -e 's/eval_every_steps = 250/eval_every_steps = 50/' \
  -e "s#\\.\\./\\.\\./data#$PWD/data#g" examples/shakespeare/modelforge.toml >"$work/spec.toml"
"$exe" run --no-serve "$work/spec.toml" --registry "$work/models" --runs "$work/runs" >&2
"$exe" export shakespeare-gpt@1 --registry "$work/models" --format hf -o "$work/hf" >&2
python=$(scripts/python-env.sh torch transformers captum safetensors numpy)

# 32 prompts of $len characters from the corpus, as ids; the served request for the first.
python3 - "$work" "$len" <<'PY'
import gzip, json, sys
work, n = sys.argv[1], int(sys.argv[2])
vocab = json.load(open(f"{work}/models/shakespeare-gpt/1/tokenizer.json"))["model"]["vocab"]
text = gzip.open("data/text/shakespeare.txt.gz", "rt", encoding="utf-8").read(200_000)
starts = range(1000, 1000 + 32 * 997, 997)
prompts = [text[s:s + n] for s in starts]
json.dump([[vocab[c] for c in p] for p in prompts], open(f"{work}/prompts.json", "w"))
json.dump({"text_input": prompts[0], "parameters": {"steps": 64}}, open(f"{work}/explain.json", "w"))
json.dump({"text_input": "ROMEO:", "parameters": {"max_tokens": 64, "temperature": 0}},
          open(f"{work}/generate.json", "w"))
PY

echo "prompts of $len tokens, 64 steps"
printf '%-8s %-6s %14s %14s %7s\n' threads batch "modelforge/s" "captum/s" ratio
for threads in 1 "$(nproc)"; do
  cargo bench -q -p modelforge-explain --bench integrated -- \
    "$work/models/shakespeare-gpt/1" "$work/prompts.json" "$threads" "$seconds" 64 1 8 | rate >"$work/ours"
  "$python" bench/explain_captum_lm.py "$work/hf" "$work/prompts.json" \
    "$threads" "$seconds" 64 1 8 | rate >"$work/captum"
  ratio_rows "$threads" "$work/ours" "$work/captum"
done

port=$(free_port)
"$exe" serve --registry "$work/models" --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" >"$work/serve.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$port"
url="http://127.0.0.1:$port/v2/models/shakespeare-gpt"
echo
printf '%-24s %12s %9s %9s\n' load "requests/s" p50_ms p99_ms
for c in 1 8; do
  read -r rps p50 p99 < <(load "$url/explain" "$work/explain.json" "Content-Type: application/json" "$c")
  printf '%-24s %12s %9s %9s\n' "explain, concurrency $c" "$rps" "$p50" "$p99"
done
# Explanations share the scheduler thread with generation: both at once.
read -r rps p50 p99 < <(load "$url/generate" "$work/generate.json" "Content-Type: application/json" 4)
printf '%-24s %12s %9s %9s\n' "generate alone, c=4" "$rps" "$p50" "$p99"
load "$url/generate" "$work/generate.json" "Content-Type: application/json" 4 >"$work/generating" &
generating=$!
read -r rps p50 p99 < <(load "$url/explain" "$work/explain.json" "Content-Type: application/json" 1)
wait "$generating"
printf '%-24s %12s %9s %9s\n' "explain beside generate" "$rps" "$p50" "$p99"
read -r rps p50 p99 <"$work/generating"
printf '%-24s %12s %9s %9s\n' "generate beside explain" "$rps" "$p50" "$p99"
