#!/usr/bin/env bash
# ONNX inference speed, side by side with its peers:
#  1. the same graph (the MNIST reference MLP 784-128-128-10, trained one quick epoch and
#     exported by `modelforge export`) run by modelforge's ONNX path (tract, as the serving
#     core calls it) and by onnxruntime (Python, one intra-op thread each), at batch 1 and
#     256: samples/s and the ratio;
#  2. that ONNX version served by modelforge beside the native version of the same model
#     (V2 REST with binary tensors, wrk, concurrency 1 and 8): requests/s, p50, p99, ratio.
#   bench/onnx_throughput.sh [SECONDS_PER_POINT]     (default 5)
# onnxruntime comes from PyPI into .venv/ on first use; wrk from the system.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
scripts/system-deps.sh bench

. bench/lib.sh
trap stop_servers EXIT

cargo build --release --bin modelforge >&2
cargo bench --no-run -p modelforge-onnx --bench throughput >&2
exe=target/release/modelforge
quick_mnist "$work" "$exe"
mf() { "$exe" --registry "$work/models" --runs "$work/runs" "$@"; }
mf export mnist-mlp@1 --format onnx -o "$work/mlp.onnx" >&2
mf registry import "$work/mlp.onnx" --name mnist-onnx >&2
python=$(scripts/python-env.sh onnx onnxruntime numpy)

echo "1. one graph, one thread: samples/s (median ms per call)"
printf '%-6s %22s %22s %8s\n' batch modelforge-onnx onnxruntime ratio
tract=$(cargo bench -q -p modelforge-onnx --bench throughput -- "$work/mlp.onnx" "$seconds" 1 256)
ort=$("$python" bench/onnx_runtime.py "$work/mlp.onnx" "$seconds" 1 256)
"$python" - "$tract" "$ort" <<'PY'
import json, sys
mine = [json.loads(l) for l in sys.argv[1].splitlines() if l.startswith("{")]
peer = {r["batch"]: r for r in map(json.loads, sys.argv[2].splitlines())}
for r in mine:
    p = peer[r["batch"]]
    cell = lambda x: f'{x["samples_per_s"]:,.0f} ({x["median_ms"]:.3f})'
    print(f'{r["batch"]:<6} {cell(r):>22} {cell(p):>22} {r["samples_per_s"] / p["samples_per_s"]:7.2f}×')
PY

port=$(free_port)
"$exe" --registry "$work/models" serve --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" \
  >"$work/serve.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$port"
binary_body "$work"
echo
echo "2. served (V2 REST, binary tensors): requests/s, p50 ms, p99 ms"
printf '%-12s %-26s %-26s %8s\n' concurrency native ONNX ratio
for c in 1 8; do
  native=$(load "http://127.0.0.1:$port/v2/models/mnist-mlp/infer" "$work/mf.bin" "$binary_headers" "$c")
  onnx=$(load "http://127.0.0.1:$port/v2/models/mnist-onnx/infer" "$work/mf.bin" "$binary_headers" "$c")
  printf '%-12s %-26s %-26s %7s×\n' "$c" "$native" "$onnx" \
    "$(awk -v a="${onnx%% *}" -v b="${native%% *}" 'BEGIN { printf "%.2f", a / b }')"
done
