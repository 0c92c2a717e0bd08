#!/usr/bin/env bash
# Integrated gradients (64 Gauss–Legendre steps, zero baseline, predicted class) on the
# reference MNIST MLP: modelforge-explain beside Captum on the PyTorch export of the same
# weights and the same 32 test images, at batch 1 and 32, on one thread and on every core
# (explanations/s and the ratio to Captum); then the served endpoint
# (POST /v2/models/mnist-mlp/explain, one image per request) with wrk at concurrency 1
# and 8.
#   bench/explain_throughput.sh [SECONDS_PER_POINT]     (default 10)
# Captum and PyTorch are installed from PyPI into .venv/ on first use; wrk comes from the
# system (scripts/system-deps.sh bench installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
scripts/system-deps.sh bench

. bench/lib.sh
trap stop_servers EXIT

cargo build --release --bin modelforge >&2
exe=target/release/modelforge
quick_mnist "$work" "$exe"
"$exe" export mnist-mlp@1 --registry "$work/models" --format safetensors \
  -o "$work/model.safetensors" >"$work/module.py"
python=$(scripts/python-env.sh torch captum safetensors numpy)

# The first 32 test images, raw pixel values (the export normalises as the version does),
# and the served request for the first one.
python3 - "$work" <<'PY'
import gzip, json, sys
work = sys.argv[1]
with gzip.open("data/mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
    raw = f.read()[16:16 + 32 * 784]
images = [list(raw[i * 784:(i + 1) * 784]) for i in range(32)]
json.dump(images, open(f"{work}/images.json", "w"))
json.dump({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": images[0]}],
           "parameters": {"method": "integrated-gradients", "steps": 64}},
          open(f"{work}/explain.json", "w"))
PY

printf '%-8s %-6s %14s %14s %7s\n' threads batch "modelforge/s" "captum/s" ratio
for threads in 1 "$(nproc)"; do
  cargo bench -q -p modelforge-explain --bench integrated -- \
    "$work/models/mnist-mlp/1" "$work/images.json" "$threads" "$seconds" 64 1 32 | rate >"$work/ours"
  "$python" bench/explain_captum.py "$work/module.py" "$work/model.safetensors" "$work/images.json" \
    "$threads" "$seconds" 64 1 32 | rate >"$work/captum"
  ratio_rows "$threads" "$work/ours" "$work/captum"
done

port=$(free_port)
"$exe" serve --registry "$work/models" --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" >"$work/serve.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$port"
echo
printf '%-12s %12s %9s %9s\n' concurrency "requests/s" p50_ms p99_ms
for c in 1 8; do
  read -r rps p50 p99 < <(load "http://127.0.0.1:$port/v2/models/mnist-mlp/explain" "$work/explain.json" \
    "Content-Type: application/json" "$c")
  printf '%-12s %12s %9s %9s\n' "$c" "$rps" "$p50" "$p99"
done
