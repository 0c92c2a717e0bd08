#!/usr/bin/env bash
# Writes a starting corpus for every fuzz target into OUT/TARGET/, made from the repository's
# own examples and data and from a digits model this build trains, exports and signs.
# Usage: fuzz/seeds.sh OUT   (from the repository root, after `cargo build --release`)
set -euo pipefail
out=$1
bin=${MODELFORGE_BIN:-target/release/modelforge}
rm -rf "$out" && mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in spec v2_json v2_binary tfserving grpc_infer manifest aliases idx csv onnx signature; do
  mkdir -p "$out/$t"
done

# Specs: every example, its data paths pointed at the files the target provides.
for f in examples/*/*.toml; do
  sed -e 's#"\.\./\.\./data/tabular/[^"]*"#"d.csv"#g' -e 's#"\.\./\.\./data/text/[^"]*"#"corpus.txt"#g' \
    "$f" >"$out/spec/$(basename "$(dirname "$f")")-$(basename "$f")"
done

# Requests for the digits model (64 FP32 pixels): V2 JSON, V2 binary, TF-Serving, gRPC.
python3 - "$out" <<'PY'
import json, struct, sys
sys.path.insert(0, "bench/serve")
from requests import grpc_request, v2_binary, v2_json
out = sys.argv[1]
row = [float(i % 17) for i in range(64)]
def write(target, name, data):
    open(f"{out}/{target}/{name}", "wb").write(data if isinstance(data, bytes) else data.encode())
write("v2_json", "one", v2_json("pixels", [1, 64], row))
write("v2_json", "two", v2_json("pixels", [2, 64], [row, row], id="7",
                                outputs=[{"name": "logits", "parameters": {"classification": 3}}]))
body, length = v2_binary("pixels", [1, 64], row, "logits")
write("v2_binary", "one", struct.pack("<H", length) + body)
write("tfserving", "rows", json.dumps({"instances": [row, row]}))
write("tfserving", "columns", json.dumps({"signature_name": "serving_default", "inputs": {"pixels": [row]}}))
write("tfserving", "named", json.dumps({"instances": [{"pixels": row}]}))
write("grpc_infer", "typed", grpc_request("digits", "pixels", [1, 64], row, raw=False))
write("grpc_infer", "raw", grpc_request("digits", "pixels", [1, 64], row))
PY

cp fuzz/fixtures/manifest.json "$out/manifest/digits.json"
printf '{"production":1,"staging":1}\n1' >"$out/aliases/two"
printf '{}\n7' >"$out/aliases/none"

# IDX: the first images and labels of MNIST's test set, plain and gzipped.
python3 - "$out" <<'PY'
import gzip, sys
out = sys.argv[1]
images = gzip.open("data/mnist/t10k-images-idx3-ubyte.gz").read(16 + 3 * 784)
images = images[:4] + (3).to_bytes(4, "big") + images[8:]
labels = gzip.open("data/mnist/t10k-labels-idx1-ubyte.gz").read(8 + 3)
labels = labels[:4] + (3).to_bytes(4, "big") + labels[8:]
open(f"{out}/idx/images", "wb").write(images)
open(f"{out}/idx/labels", "wb").write(labels)
open(f"{out}/idx/images.gz", "wb").write(gzip.compress(images))
PY

# CSV: an options byte, then a file (iris with its header; one with a category and a gap).
{ printf '\001'; head -20 data/tabular/iris.csv; } >"$out/csv/iris"
printf '\031a,b,colour,label\n1,2,red,0\n3,,blue,1\n5,6,red,0\n' >"$out/csv/categories"

# ONNX and a signature: a digits model trained for one epoch, exported and signed.
sed -e 's#"\.\./\.\./data/tabular/digits.csv.gz"#"'"$PWD"'/data/tabular/digits.csv.gz"#' \
  -e 's/epochs = 30/epochs = 1/' -e 's/min = 0.95/min = 0.0/' examples/digits/modelforge.toml >"$tmp/spec.toml"
"$bin" run --no-serve "$tmp/spec.toml" --registry "$tmp/registry" --runs "$tmp/runs" --threads 1 >/dev/null 2>&1
"$bin" export digits-mlp@1 --registry "$tmp/registry" --format onnx -o "$out/onnx/digits.onnx" >/dev/null 2>&1
"$bin" registry keygen "$tmp/key.pem" >/dev/null
"$bin" registry sign digits-mlp@1 --registry "$tmp/registry" --key "$tmp/key.pem" >/dev/null
cp "$tmp/registry/digits-mlp/1/model.sig" "$out/signature/digits.sig"
