#!/usr/bin/env bash
# Serving throughput and latency of the reference MNIST MLP (784-128-128-10): modelforge
# (V2 REST with JSON tensors, with the binary tensor extension, and V2 gRPC with raw
# tensors) beside MLServer serving an sklearn MLPClassifier of the same shape (V2 REST JSON
# and V2 gRPC), at concurrency 1, 8 and 64: REST with wrk (requests/s, p50, p99), gRPC with
# h2load (requests/s, mean latency; h2load gives no percentiles). Prints modelforge's
# ratio to MLServer for each protocol.
#   bench/serve_throughput.sh [SECONDS_PER_POINT]     (default 10)
# MLServer is installed from PyPI into .venv-mlserver/ on first use; wrk comes from the
# system (Debian: apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
command -v wrk >/dev/null || { echo "error: wrk is missing — apt-get install wrk" >&2; exit 2; }
command -v h2load >/dev/null || { echo "error: h2load is missing — apt-get install nghttp2-client" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() {
  for _ in $(seq 1 600); do
    curl -fs "$1/v2/health/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: $1 never became ready" >&2
  exit 1
}

# modelforge: the reference MLP, one quick epoch (accuracy is not what is measured here).
cargo build --release --bin modelforge >&2
exe=target/release/modelforge
sed -e 's/epochs = 10/epochs = 1/' \
    -e "s#\\.\\./\\.\\./data#$PWD/data#g" \
    -e 's/^normalize = "scale"$/normalize = "scale"\nlimit_train = 5000/' \
    -e '/^\[deploy\]/,$d' examples/mnist/modelforge.toml >"$work/spec.toml"
"$exe" run --no-serve "$work/spec.toml" --registry "$work/models" --runs "$work/runs" >&2
mf_port=$(free_port)
mf_grpc=$(free_port)
"$exe" serve --registry "$work/models" --http "127.0.0.1:$mf_port" --grpc "127.0.0.1:$mf_grpc" >"$work/mf.log" 2>&1 &
pids+=($!)

# MLServer: an sklearn MLPClassifier of the same shape.
python=$(VENV=.venv-mlserver scripts/python-env.sh mlserver mlserver-sklearn)
"$python" bench/serve/mlserver_model.py data/mnist "$work/mlserver" >&2
ml_port=$(free_port)
ml_grpc=$(free_port)
# parallel_workers 0: MLServer 1.7's worker pool dies at start here ("There is no current
# event loop", uvloop), so inference runs in the server process, as for modelforge's one
# compute thread.
printf '{"http_port": %s, "grpc_port": %s, "metrics_port": %s, "parallel_workers": 0}\n' \
  "$ml_port" "$ml_grpc" "$(free_port)" >"$work/mlserver/settings.json"
(cd "$work/mlserver" && exec "$(dirname "$python")/mlserver" start . >"$work/ml.log" 2>&1) &
pids+=($!)

wait_ready "http://127.0.0.1:$mf_port"
wait_ready "http://127.0.0.1:$ml_port"

# Request bodies: the first test image, as V2 JSON (and binary for modelforge).
"$python" - "$work" <<'PY'
import gzip, json, struct, sys
work = sys.argv[1]
with gzip.open("data/mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
    pixels = [b / 255.0 for b in f.read()[16:16 + 784]]
def v2(name, shape):
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": pixels}]})
open(f"{work}/mf.json", "w").write(v2("image", [1, 1, 28, 28]))
ml = json.loads(v2("predict", [1, 784]))
ml["outputs"] = [{"name": "predict_proba"}]  # the 10 class scores, as modelforge answers
open(f"{work}/ml.json", "w").write(json.dumps(ml))
header = json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                  "parameters": {"binary_data_size": 784 * 4}}],
                     "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]})
open(f"{work}/mf.bin", "wb").write(header.encode() + struct.pack("<784f", *pixels))
open(f"{work}/mf.bin.len", "w").write(str(len(header)))
# gRPC: a length-prefixed ModelInferRequest with the image as raw FP32 bytes.
from mlserver.grpc import dataplane_pb2 as pb
for name, model_input, shape in [("mf", "image", [1, 1, 28, 28]), ("ml", "predict", [1, 784])]:
    request = pb.ModelInferRequest(model_name="mnist-mlp", raw_input_contents=[struct.pack("<784f", *pixels)])
    request.inputs.add(name=model_input, datatype="FP32", shape=shape)
    if name == "ml":
        request.outputs.add(name="predict_proba")
    message = request.SerializeToString()
    open(f"{work}/{name}.grpc", "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY

# Each gRPC body must get a real answer (h2load counts HTTP 200s, and gRPC errors are 200s).
"$python" - "$work" "$mf_grpc" "$ml_grpc" <<'PY'
import sys, grpc
work, ports = sys.argv[1], {"mf": sys.argv[2], "ml": sys.argv[3]}
for name, port in ports.items():
    body = open(f"{work}/{name}.grpc", "rb").read()[5:]
    call = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(
        "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None)
    answer = call(body, timeout=10)
    assert len(answer) > 40, (name, answer)
PY

# One wrk run: prints "requests/s p50_ms p99_ms".
load() { # url body headers concurrency
  local threads=$(( $4 < 2 ? 1 : 2 ))
  local out
  out=$(BODY=$2 HEADERS=$3 wrk -t"$threads" -c"$4" -d"${seconds}s" --latency -s bench/serve/post.lua "$1")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "error: failed requests against $1:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }' <<<"$out"
}

# One h2load run against a gRPC method: prints "requests/s mean_ms".
grpc_load() { # port body concurrency
  local out
  out=$(h2load -D "$seconds" -c "$3" -m 1 -t $(( $3 < 2 ? 1 : 2 )) -d "$2" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$1/inference.GRPCInferenceService/ModelInfer")
  if ! grep -q " 0 failed, 0 errored" <<<"$out"; then
    echo "error: failed gRPC requests on port $1:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^finished in/ { rps = $4 }
    /^time for request:/ { mean = ms($6) }
    END { printf "%.0f %.3f\n", rps, mean }' <<<"$out"
}

mf_url="http://127.0.0.1:$mf_port/v2/models/mnist-mlp/infer"
ml_url="http://127.0.0.1:$ml_port/v2/models/mnist-mlp/infer"
binary_headers="Content-Type: application/octet-stream;Inference-Header-Content-Length: $(cat "$work/mf.bin.len")"
printf '%-5s %-26s %10s %9s %9s %8s\n' conc server req/s p50_ms p99_ms ratio
for c in 1 8 64; do
  read -r ml_rps ml_p50 ml_p99 < <(load "$ml_url" "$work/ml.json" "" "$c")
  printf '%-5s %-26s %10s %9s %9s %8s\n' "$c" "MLServer (JSON)" "$ml_rps" "$ml_p50" "$ml_p99" "1.00×"
  for variant in json bin; do
    if [ "$variant" = json ]; then headers=""; body="$work/mf.json"; name="modelforge (JSON)"
    else headers=$binary_headers; body="$work/mf.bin"; name="modelforge (binary)"; fi
    read -r rps p50 p99 < <(load "$mf_url" "$body" "$headers" "$c")
    ratio=$(awk -v a="$rps" -v b="$ml_rps" 'BEGIN { printf "%.1f×", a / b }')
    printf '%-5s %-26s %10s %9s %9s %8s\n' "$c" "$name" "$rps" "$p50" "$p99" "$ratio"
  done
  read -r ml_rps ml_mean < <(grpc_load "$ml_grpc" "$work/ml.grpc" "$c")
  printf '%-5s %-26s %10s %9s %9s %8s\n' "$c" "MLServer (gRPC)" "$ml_rps" "mean $ml_mean" "-" "1.00×"
  read -r rps mean < <(grpc_load "$mf_grpc" "$work/mf.grpc" "$c")
  ratio=$(awk -v a="$rps" -v b="$ml_rps" 'BEGIN { printf "%.1f×", a / b }')
  printf '%-5s %-26s %10s %9s %9s %8s\n' "$c" "modelforge (gRPC, raw)" "$rps" "mean $mean" "-" "$ratio"
done
