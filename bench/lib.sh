# Shell helpers the benchmark scripts share (sourced from the repository root): a work
# folder in $work and the servers started in $pids, both gone at exit via stop_servers.

work=$(mktemp -d)
pids=()

# Stops the servers in $pids and removes $work.
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# A free TCP port on the loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits until a server answers its health endpoint.
wait_ready() { # base url [health path]
  for _ in $(seq 1 600); do
    curl -fs "$1${2:-/v2/health/ready}" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "error: $1 never became ready" >&2
  exit 1
}

# One wrk run of $seconds seconds (a POST of the body file, a GET without one): prints
# "requests/s p50_ms p99_ms"; any non-2xx answer stops the benchmark.
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

# The MNIST reference MLP trained for one quick epoch into $1/models (accuracy is not what
# the benchmarks measure).
quick_mnist() { # work folder, modelforge binary
  sed -e 's/epochs = 10/epochs = 1/' \
      -e "s#\\.\\./\\.\\./data#$PWD/data#g" \
      -e 's/^normalize = "scale"$/normalize = "scale"\nlimit_train = 5000/' \
      -e '/^\[deploy\]/,$d' examples/mnist/modelforge.toml >"$1/spec.toml"
  "$2" run --no-serve "$1/spec.toml" --registry "$1/models" --runs "$1/runs" >&2
}

# The first MNIST test image as a V2 request with the binary tensor extension, in
# $1/mf.bin, and the headers that go with it ("name: value;…", as `load` takes them) in
# $binary_headers.
binary_body() { # work folder
  python3 - "$1" <<'PY'
import gzip, json, struct, sys
work = sys.argv[1]
with gzip.open("data/mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
    pixels = [b / 255.0 for b in f.read()[16:16 + 784]]
header = json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                  "parameters": {"binary_data_size": 784 * 4}}],
                     "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]})
open(f"{work}/mf.bin", "wb").write(header.encode() + struct.pack("<784f", *pixels))
open(f"{work}/mf.bin.len", "w").write(str(len(header)))
PY
  binary_headers="Content-Type: application/octet-stream;Inference-Header-Content-Length: $(cat "$1/mf.bin.len")"
}

# "batch explanations/s" pairs from the JSON lines of an explanation benchmark.
rate() { sed -n 's/.*"batch": \([0-9]*\).*"explanations_per_s": \([0-9.]*\).*/\1 \2/p'; }

# Rows "threads batch ours peer ratio" from two files of "batch rate" lines.
ratio_rows() { # threads, our file, the peer's file
  join "$2" "$3" | while read -r batch ours peer; do
    printf '%-8s %-6s %14.1f %14.1f %6.2fx\n' "$1" "$batch" "$ours" "$peer" \
      "$(echo "$ours / $peer" | bc -l)"
  done
}
