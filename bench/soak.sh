#!/usr/bin/env bash
# Soak: the MNIST reference MLP served for MINUTES under about 80 % of its measured peak,
# a mix of V2 REST JSON, V2 REST binary (wrk, one malformed body in 20: bad JSON, a wrong
# shape, datatype or byte count, a missing input) and gRPC with raw tensors (h2load), while
# a new version is trained and published every 30 s (the server hot-swaps to it). Prints per
# minute: requests answered, failures among the good requests (a non-200 REST answer, a
# failed h2load stream or a gRPC status logged by the server), malformed requests not
# answered with a 4xx, p50/p99 per protocol and the server's RSS; then checks the bar: no
# failed good request, RSS after minute 5 grows by less than 5 %, p99 within 2x minute 1.
#   bench/soak.sh [MINUTES]    (default 60; wrk and h2load from scripts/system-deps.sh bench)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-60}
scripts/system-deps.sh bench
. bench/lib.sh
trap stop_servers EXIT

# MODELFORGE_BIN: a modelforge binary already built from this checkout (skips the build).
exe=${MODELFORGE_BIN:-target/release/modelforge}
[ -n "${MODELFORGE_BIN:-}" ] || cargo build --release --bin modelforge >&2
quick_mnist "$work" "$exe"
port=$(free_port)
grpc=$(free_port)
"$exe" serve --registry "$work/models" --http "127.0.0.1:$port" --grpc "127.0.0.1:$grpc" --poll 1 \
  2>"$work/server.log" &
server=$!
pids+=("$server")
wait_ready "http://127.0.0.1:$port"

# Bodies: the first test image as V2 JSON, V2 binary and a framed gRPC message; malformed ones.
binary_body "$work"
python3 - "$work" <<'PY'
import gzip, json, sys
sys.path.insert(0, "bench/serve")
from requests import grpc_framed, grpc_request, v2_json
work = sys.argv[1]
with gzip.open("data/mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
    pixels = [b / 255.0 for b in f.read()[16:16 + 784]]
open(f"{work}/mf.json", "w").write(v2_json("image", [1, 1, 28, 28], pixels))
open(f"{work}/mf.grpc", "wb").write(grpc_framed(grpc_request("mnist-mlp", "image", [1, 1, 28, 28], pixels)))
bad = [
    '{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 28',
    v2_json("image", [1, 1, 28, 27], pixels),
    json.dumps({"inputs": [{"name": "image", "datatype": "BF17", "shape": [1, 1, 28, 28], "data": pixels}]}),
    v2_json("image", [1, 1, 28, 28], pixels[:700]),
    json.dumps({"outputs": [{"name": "logits"}]}),
    v2_json("image", [4294967296, 4294967296, 28, 28], pixels),
]
for i, body in enumerate(bad):
    open(f"{work}/bad-{i}", "w").write(body)
PY

url="http://127.0.0.1:$port/v2/models/mnist-mlp/infer"
grpc_url="http://127.0.0.1:$grpc/inference.GRPCInferenceService/ModelInfer"
# One wrk run (4 threads, one connection each) and one h2load run (2 clients) side by side
# for $1 seconds; REST paced by $2 ms between requests, gRPC by $3 requests/s per client
# (0: as fast as they go). Leaves "SOAK …" in $work/rest.out, h2load's output in
# $work/grpc.out and its per-request log in $work/grpc.log.
mixed() { # seconds delay_ms grpc_rps_per_client
  local rps=()
  [ "$3" = 0 ] || rps=(--rps "$3")
  WORK=$work DELAY_MS=$2 wrk -t4 -c4 -d"$1s" --latency -s bench/serve/soak.lua "$url" >"$work/rest.out" &
  local rest=$!
  h2load -D "$1" -c 2 -m 1 -t 1 "${rps[@]}" -d "$work/mf.grpc" --log-file="$work/grpc.log" \
    -H 'content-type: application/grpc' -H 'te: trailers' "$grpc_url" >"$work/grpc.out"
  wait "$rest"
}
soak_field() { grep -o "$1=[0-9.]*" "$work/rest.out" | cut -d= -f2; }
rest_rps() { awk '/Requests\/sec/ { printf "%.0f", $2 }' "$work/rest.out"; }
grpc_rps() { awk '/finished in/ { gsub(",", ""); printf "%.0f", $4 }' "$work/grpc.out"; }
grpc_failed() { awk '/^requests:/ { print $10 + $12 }' "$work/grpc.out"; }
grpc_pct() { cut -f3 "$work/grpc.log" | sort -n | awk -v q="$1" '{ us[NR] = $1 } END { printf "%.3f", us[int(NR * q) + 1] / 1000 }'; }
grpc_status_lines() { grep -c '"protocol":"grpc".*"grpc_status"' "$work/server.log" || true; }

# The peak: both load generators unpaced for 10 s.
mixed 10 0 0
peak_rest=$(rest_rps)
peak_grpc=$(grpc_rps)
p50_peak=$(soak_field p50_ms)
# 80 % of each: REST by the pause between a connection's requests (its period at 80 % minus
# the latency at peak), gRPC by h2load's per-client rate.
delay_ms=$(awk -v r="$peak_rest" -v l="$p50_peak" 'BEGIN { d = 4000 / (0.8 * r) - l; printf "%.3f", d < 0 ? 0 : d }')
grpc_rate=$(awk -v r="$peak_grpc" 'BEGIN { printf "%d", 0.8 * r / 2 }')
echo "peak: REST $peak_rest req/s, gRPC $peak_grpc req/s; soak at REST delay ${delay_ms} ms/connection, gRPC $grpc_rate req/s per client"

# A new version every 30 s: retrained and published (at the lowest CPU priority: training
# would run elsewhere in production, and here it shares the server's two cores); the server
# polls each second.
(while sleep 30; do
  nice -n 19 "$exe" run --no-serve "$work/spec.toml" --registry "$work/models" --runs "$work/runs" --from train \
    >>"$work/swaps.log" 2>&1 || echo "publish failed" >>"$work/swaps.log"
done) &
pids+=($!)

printf '%6s %9s %9s %8s %10s %9s %9s %9s %9s %8s\n' minute rest_good grpc_good failed bad_not_4xx \
  rest_p50 rest_p99 grpc_p50 grpc_p99 rss_mib
failed_total=0
logged_before=$(grpc_status_lines)
for m in $(seq 1 "$minutes"); do
  mixed 60 "$delay_ms" "$grpc_rate"
  logged=$(grpc_status_lines)
  failed=$(( $(soak_field good_failed) + $(grpc_failed) + logged - logged_before ))
  logged_before=$logged
  failed_total=$(( failed_total + failed ))
  rss=$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$server/status")
  p99=$(soak_field p99_ms)
  gp99=$(grpc_pct 0.99)
  printf '%6s %9s %9s %8s %10s %9s %9s %9s %9s %8s\n' "$m" "$(soak_field good)" \
    "$(awk '/^requests:/ { print $8 }' "$work/grpc.out")" "$failed" "$(soak_field bad_not_4xx)" \
    "$(soak_field p50_ms)" "$p99" "$(grpc_pct 0.5)" "$gp99" "$rss"
  [ "$m" = 1 ] && { first_p99=$p99; first_gp99=$gp99; }
  [ "$m" -le 5 ] && rss_at_5=$rss
  last_rss=$rss
  worst_p99=$(awk -v a="${worst_p99:-0}" -v b="$p99" 'BEGIN { print (b > a ? b : a) }')
  worst_gp99=$(awk -v a="${worst_gp99:-0}" -v b="$gp99" 'BEGIN { print (b > a ? b : a) }')
done
swaps=$(grep -c "published" "$work/swaps.log" || true)
echo "versions published during the soak: $swaps ($(grep -c "publish failed" "$work/swaps.log" || true) failed)"
verdict() { if [ "$2" = 1 ]; then echo "pass  $1"; else echo "FAIL  $1"; fi; }
verdict "no failed good request ($failed_total)" "$([ "$failed_total" = 0 ] && echo 1)"
verdict "RSS after minute 5 grows < 5 % ($rss_at_5 -> $last_rss MiB)" \
  "$(awk -v a="$rss_at_5" -v b="$last_rss" 'BEGIN { print (b < a * 1.05) }')"
verdict "p99 within 2x minute 1 (REST $first_p99 -> worst $worst_p99 ms, gRPC $first_gp99 -> worst $worst_gp99 ms)" \
  "$(awk -v a="$first_p99" -v b="$worst_p99" -v c="$first_gp99" -v d="$worst_gp99" 'BEGIN { print (b <= 2 * a && d <= 2 * c) }')"
