#!/usr/bin/env bash
# Serving a language model to streaming clients: examples/shakespeare trained for STEPS
# steps, behind `modelforge serve --threads 2`, driven by 1, 4 and 16 concurrent clients
# (bench/lm_serve.py: OpenAI streaming completions of MAX_TOKENS tokens, prompts of 4 to
# 40 characters from the corpus). Prints aggregate output tokens/s, time to first token
# and inter-token latency (p50/p99), and the 16-stream / 1-stream throughput ratio.
#   bench/lm_serve.sh [STEPS] [MAX_TOKENS]     (default 300 and 128)
# llama.cpp's server on the same weights needs them in GGUF, which modelforge cannot write
# yet (Language models III): that column is still to come.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
trap stop_servers EXIT
steps=${1:-300}
max_tokens=${2:-128}
cargo build --release -p modelforge >&2
exe=$PWD/target/release/modelforge
corpus=$PWD/data/text/shakespeare.txt.gz
sed -e "s/^max_steps = 2000/max_steps = $steps/" -e "s#\\.\\./\\.\\./data#$PWD/data#" \
  examples/shakespeare/modelforge.toml >"$work/spec.toml"
(cd "$work" && "$exe" run --no-serve spec.toml --threads 2 >/dev/null 2>&1)
port=$(free_port)
(cd "$work" && exec "$exe" serve --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" --threads 2 >/dev/null 2>&1) &
pids+=($!)
wait_ready "http://127.0.0.1:$port"
printf '%-7s %9s %10s %12s %12s %11s %11s\n' streams requests tokens/s ttft_p50_ms ttft_p99_ms itl_p50_ms itl_p99_ms
one=""
for streams in 1 4 16; do
  requests=$(( 64 / streams > 4 ? 64 / streams : 4 ))
  out=$(python3 bench/lm_serve.py "127.0.0.1:$port" shakespeare-gpt "$streams" "$requests" "$max_tokens" "$corpus")
  read -r total tps t50 t99 i50 i99 < <(python3 -c 'import json, sys
r = json.loads(sys.argv[1])
print(r["requests"], round(r["tokens_per_s"]), *(f"{r[k]:.2f}" for k in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")))' "$out")
  printf '%-7s %9s %10s %12s %12s %11s %11s\n' "$streams" "$total" "$tps" "$t50" "$t99" "$i50" "$i99"
  [ -z "$one" ] && one=$tps
  last=$tps
done
awk -v a="$last" -v b="$one" 'BEGIN { printf "16 streams / 1 stream: %.2f×\n", a / b }'
