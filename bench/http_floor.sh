#!/usr/bin/env bash
# The floor of one HTTP request and answer on this machine, beside modelforge at
# concurrency 1, all with the same wrk command (one connection):
#  1. nginx answering a 14-byte static file (access log off, tcp_nodelay on);
#  2. modelforge's GET /v2/health/live, through its whole HTTP stack;
#  3. one MNIST inference on modelforge (V2 REST, binary tensors).
# Prints requests/s, p50 and p99 of each and its ratio to nginx: how close an inference
# comes to the fastest answer this machine and load generator allow, and so which
# concurrency-1 throughput targets can be reached here at all.
#   bench/http_floor.sh [SECONDS_PER_POINT]     (default 5)
# nginx and wrk come from the system (Debian: apt-get install nginx-light wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
scripts/system-deps.sh bench
command -v nginx >/dev/null || { echo "error: nginx is missing — apt-get install nginx-light" >&2; exit 2; }

. bench/lib.sh
ngx="$work/nginx"
stop_nginx() { [ -f "$ngx/nginx.pid" ] && kill "$(cat "$ngx/nginx.pid")" 2>/dev/null; return 0; }
trap 'stop_nginx; stop_servers' EXIT

cargo build --release --bin modelforge >&2
exe=target/release/modelforge
quick_mnist "$work" "$exe"
binary_body "$work"

# nginx's workers may run as another user: the files it serves must be readable to all.
mkdir -p "$ngx/html" "$ngx/logs"
printf '{"live": true}' >"$ngx/html/live"
chmod a+rx "$work" && chmod -R a+rX "$ngx"
ngx_port=$(free_port)
cat >"$ngx/nginx.conf" <<CONF
worker_processes 1;
pid $ngx/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  tcp_nodelay on;
  server { listen 127.0.0.1:$ngx_port; root $ngx/html; }
}
CONF
nginx -p "$ngx" -e "$ngx/logs/error.log" -c "$ngx/nginx.conf"
port=$(free_port)
"$exe" --registry "$work/models" serve --http "127.0.0.1:$port" --grpc "127.0.0.1:$(free_port)" \
  >"$work/serve.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$port"
wait_ready "http://127.0.0.1:$ngx_port" /live

floor=$(load "http://127.0.0.1:$ngx_port/live" "" "" 1)
health=$(load "http://127.0.0.1:$port/v2/health/live" "" "" 1)
infer=$(load "http://127.0.0.1:$port/v2/models/mnist-mlp/infer" "$work/mf.bin" "$binary_headers" 1)
printf '%-36s %10s %9s %9s %8s\n' "one connection" req/s p50_ms p99_ms ×nginx
for row in "nginx, a 14-byte file|$floor" "modelforge GET /v2/health/live|$health" \
  "modelforge MNIST inference (binary)|$infer"; do
  read -r rps p50 p99 <<<"${row#*|}"
  printf '%-36s %10s %9s %9s %7s×\n' "${row%%|*}" "$rps" "$p50" "$p99" \
    "$(awk -v a="$rps" -v b="${floor%% *}" 'BEGIN { printf "%.2f", a / b }')"
done
