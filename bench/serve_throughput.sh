#!/usr/bin/env bash
# Serving throughput and latency of the reference MNIST MLP (784-128-128-10): modelforge
# (V2 REST with JSON tensors, with the binary tensor extension, and V2 gRPC with raw
# tensors) beside MLServer serving an sklearn MLPClassifier of the same shape (V2 REST JSON
# and V2 gRPC) and TorchServe serving a PyTorch module of the same shape (REST JSON, two
# workers of one thread each), at concurrency 1, 8 and 64: REST with wrk, gRPC with h2load
# (requests/s, p50, p99; h2load's percentiles come from its per-request log). Prints
# modelforge's ratio to MLServer for each protocol, and to TorchServe for REST.
#   bench/serve_throughput.sh [SECONDS_PER_POINT]     (default 10)
# MLServer is installed from PyPI into .venv-mlserver/, TorchServe (with PyTorch) into
# .venv/, on first use; TorchServe needs Java 17 or newer; wrk and h2load come from the
# system (Debian: apt-get install wrk nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
scripts/system-deps.sh bench
command -v h2load >/dev/null || { echo "error: h2load is missing — apt-get install nghttp2-client" >&2; exit 2; }
command -v java >/dev/null || { echo "error: java is missing — TorchServe needs Java 17 (apt-get install openjdk-17-jre-headless)" >&2; exit 2; }

. bench/lib.sh
ts_bin=""
cleanup() {
  if [ -n "$ts_bin" ]; then PATH="$ts_bin:$PATH" "$ts_bin/torchserve" --stop >/dev/null 2>&1 || true; fi
  stop_servers
}
trap cleanup EXIT

# modelforge: the reference MLP, one quick epoch (accuracy is not what is measured here).
cargo build --release --bin modelforge >&2
exe=target/release/modelforge
quick_mnist "$work" "$exe"
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

# TorchServe: the same shape as a PyTorch module (untrained: only speed is measured), two
# workers of one thread each, as MLServer and modelforge get the machine's two cores.
ts_python=$(scripts/python-env.sh torch torchserve torch-model-archiver pyyaml)
ts_bin=$(dirname "$ts_python")
mkdir -p "$work/ts/store"
"$ts_python" - "$work/ts/mlp.pt" <<'PY'
import sys
sys.path.insert(0, "bench/serve")
import torch
from torchserve_handler import mlp
torch.manual_seed(0)
torch.save(mlp().state_dict(), sys.argv[1])
PY
"$ts_bin/torch-model-archiver" --model-name mlp --version 1.0 --serialized-file "$work/ts/mlp.pt" \
  --handler bench/serve/torchserve_handler.py --export-path "$work/ts/store" --force
ts_port=$(free_port)
printf '%s\n' "inference_address=http://127.0.0.1:$ts_port" \
  "management_address=http://127.0.0.1:$(free_port)" "metrics_address=http://127.0.0.1:$(free_port)" \
  default_workers_per_model=2 disable_token_authorization=true install_py_dep_per_model=false \
  >"$work/ts/config.properties"

# Each peer runs only while it is measured, so idle JVM and Python threads do not share
# the two cores while another server's tail latency is measured.
wait_ready "http://127.0.0.1:$mf_port"

# Request bodies: the first test image, as V2 JSON (and binary for modelforge).
binary_body "$work"
"$python" - "$work" <<'PY'
import gzip, json, struct, sys
work = sys.argv[1]
with gzip.open("data/mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
    pixels = [b / 255.0 for b in f.read()[16:16 + 784]]
def v2(name, shape):
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": pixels}]})
open(f"{work}/mf.json", "w").write(v2("image", [1, 1, 28, 28]))
open(f"{work}/ts.json", "w").write(json.dumps({"data": pixels}))
ml = json.loads(v2("predict", [1, 784]))
ml["outputs"] = [{"name": "predict_proba"}]  # the 10 class scores, as modelforge answers
open(f"{work}/ml.json", "w").write(json.dumps(ml))
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
check_grpc() { # name port
  "$python" - "$work/$1.grpc" "$2" <<'PY'
import sys, grpc
body = open(sys.argv[1], "rb").read()[5:]
call = grpc.insecure_channel(f"127.0.0.1:{sys.argv[2]}").unary_unary(
    "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None)
answer = call(body, timeout=10)
assert len(answer) > 40, (sys.argv, answer)
PY
}
check_grpc mf "$mf_grpc"

# One h2load run against a gRPC method: prints "requests/s p50_ms p99_ms", the percentiles
# from h2load's per-request log (its third column: µs from request to end of response).
grpc_load() { # port body concurrency
  local out
  out=$(h2load -D "$seconds" -c "$3" -m 1 -t $(( $3 < 2 ? 1 : 2 )) -d "$2" \
    --log-file="$work/h2load.log" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$1/inference.GRPCInferenceService/ModelInfer")
  if ! grep -q " 0 failed, 0 errored" <<<"$out"; then
    echo "error: failed gRPC requests on port $1:" >&2
    echo "$out" >&2
    exit 1
  fi
  local rps
  rps=$(awk '/^finished in/ { printf "%.0f", $4 }' <<<"$out")
  cut -f3 "$work/h2load.log" | sort -n | awk -v rps="$rps" '
    { us[NR] = $1 }
    END { printf "%s %.3f %.3f\n", rps, us[int(NR * 0.5) + 1] / 1000, us[int(NR * 0.99) + 1] / 1000 }'
  rm -f "$work/h2load.log"
}

mf_url="http://127.0.0.1:$mf_port/v2/models/mnist-mlp/infer"
ml_url="http://127.0.0.1:$ml_port/v2/models/mnist-mlp/infer"
ts_url="http://127.0.0.1:$ts_port/predictions/mlp"
row() { printf '%-5s %-26s %10s %9s %9s %10s %12s\n' "$@"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f×", a / b }'; }
declare -A r
for c in 1 8 64; do
  r[mf_json_$c]=$(load "$mf_url" "$work/mf.json" "" "$c")
  r[mf_bin_$c]=$(load "$mf_url" "$work/mf.bin" "$binary_headers" "$c")
  r[mf_grpc_$c]=$(grpc_load "$mf_grpc" "$work/mf.grpc" "$c")
done

(cd "$work/mlserver" && exec "$(dirname "$python")/mlserver" start . >"$work/ml.log" 2>&1) &
ml_pid=$!
pids+=("$ml_pid")
wait_ready "http://127.0.0.1:$ml_port"
check_grpc ml "$ml_grpc"
for c in 1 8 64; do
  r[ml_json_$c]=$(load "$ml_url" "$work/ml.json" "" "$c")
  r[ml_grpc_$c]=$(grpc_load "$ml_grpc" "$work/ml.grpc" "$c")
done
kill "$ml_pid"
wait "$ml_pid" 2>/dev/null || true

(cd "$work/ts" && PATH="$ts_bin:$PATH" "$ts_bin/torchserve" --start --ncs --model-store store \
  --models mlp=mlp.mar --ts-config config.properties --disable-token-auth >"$work/ts.log" 2>&1)
wait_ready "http://127.0.0.1:$ts_port" /ping
# /ping answers before TorchServe's workers have loaded the model: wait for an answer.
for _ in $(seq 1 300); do
  curl -fs -X POST "$ts_url" -H 'Content-Type: application/json' -d @"$work/ts.json" >/dev/null 2>&1 && break
  sleep 0.2
done
for c in 1 8 64; do
  r[ts_json_$c]=$(load "$ts_url" "$work/ts.json" "" "$c")
done
PATH="$ts_bin:$PATH" "$ts_bin/torchserve" --stop >/dev/null 2>&1 || true

row conc server req/s p50_ms p99_ms ×MLServer ×TorchServe
for c in 1 8 64; do
  read -r ml_rps ml_p50 ml_p99 <<<"${r[ml_json_$c]}"
  row "$c" "MLServer (JSON)" "$ml_rps" "$ml_p50" "$ml_p99" "1.00×" "-"
  read -r ts_rps ts_p50 ts_p99 <<<"${r[ts_json_$c]}"
  row "$c" "TorchServe (JSON)" "$ts_rps" "$ts_p50" "$ts_p99" "-" "1.00×"
  for variant in json bin; do
    name="modelforge (JSON)"
    [ "$variant" = bin ] && name="modelforge (binary)"
    read -r rps p50 p99 <<<"${r[mf_${variant}_$c]}"
    row "$c" "$name" "$rps" "$p50" "$p99" "$(ratio "$rps" "$ml_rps")" "$(ratio "$rps" "$ts_rps")"
  done
  read -r ml_rps ml_p50 ml_p99 <<<"${r[ml_grpc_$c]}"
  row "$c" "MLServer (gRPC)" "$ml_rps" "$ml_p50" "$ml_p99" "1.00×" "-"
  read -r rps p50 p99 <<<"${r[mf_grpc_$c]}"
  row "$c" "modelforge (gRPC, raw)" "$rps" "$p50" "$p99" "$(ratio "$rps" "$ml_rps")" "-"
done
