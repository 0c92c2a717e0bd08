"""ONNX interop checks driven by crates/cli/tests/interop.rs.

    python onnx_interop.py make DIR
        Writes DIR/multi.onnx (built with the onnx package: two inputs, three outputs,
        FP32, INT64 and BOOL, a symbolic batch axis), two graphs that compute a shape at
        run time as other exporters do (expand.onnx: Shape → Gather → Concat → Expand;
        broadcast.onnx: tf2onnx's BroadcastTo, ranks padded by ConstantOfShape), and
        copies the classic graphs the onnx wheel ships (onnx/backend/test/data/light) with
        their expected outputs. Prints one JSON line: [{"name", "file"}].

    python onnx_interop.py transformer DIR SEQ
        Exports a small causal transformer language model (token and position embeddings,
        two pre-norm blocks of causal multi-head attention that reshape by the input's
        batch and length read at run time, GELU MLP) with
        torch.onnx.export, batch and sequence axes dynamic, to DIR/transformer.onnx, and
        prints one JSON line: {"ids": [[...]] (2 × SEQ), "logits": onnxruntime's output}.

    python onnx_interop.py check HTTP_HOST:PORT GRPC_HOST:PORT DIR
        Runs every model of `make` in onnxruntime and through a modelforge server with
        tritonclient (HTTP binary, HTTP JSON, gRPC), and the light graphs against the
        outputs the onnx wheel ships for the inputs its runner generates. Prints one JSON
        line per model: the largest differences and the tolerance check.

    python onnx_interop.py ort MODEL.onnx INPUT_NAME ROWS_JSON
        Prints onnxruntime's first output for the rows (FP32), as a JSON list.

    python onnx_interop.py torch MODULE.py WEIGHTS.safetensors ROWS_JSON
        Loads the generated module, `load_state_dict(strict=True)` from the safetensors
        export, and prints its outputs for the rows, as a JSON list.
"""
import glob
import json
import os
import shutil
import sys

import numpy as np


def make(out_dir):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias")
    three = numpy_helper.from_array(np.array(3, dtype=np.int64), "three")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["a", "w"], ["ab"]),
            helper.make_node("Add", ["ab", "bias"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["y"]),
            helper.make_node("Mul", ["b", "three"], ["z"]),
            helper.make_node("Greater", ["y", "zero"], ["positive"]),
        ],
        "multi",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("z", TensorProto.INT64, ["batch", 2]),
            helper.make_tensor_value_info("positive", TensorProto.BOOL, ["batch", 4]),
        ],
        [w, bias, three, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(model, os.path.join(out_dir, "multi.onnx"))
    listing = [{"name": "multi", "file": "multi.onnx"}]
    for name, graph in shape_graphs(rng).items():
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        onnx.save(model, os.path.join(out_dir, f"{name}.onnx"))
        listing.append({"name": name, "file": f"{name}.onnx"})
    light = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
    for path in sorted(glob.glob(os.path.join(light, "light_*.onnx"))):
        base = os.path.basename(path)
        shutil.copy(path, out_dir)
        expected = path[: -len(".onnx")] + "_output_0.pb"
        shutil.copy(expected, out_dir)
        listing.append({"name": base[: -len(".onnx")].replace("_", "-"), "file": base})
    print(json.dumps(listing))


def shape_graphs(rng):
    """Graphs whose Expand target is computed from the input's shape at run time, as
    jax2tf + tf2onnx and other exporters write them, each `[batch, 4] → [batch, 3]`."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    row = numpy_helper.from_array(rng.standard_normal((1, 4)).astype(np.float32), "row")
    vector = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "vector")
    first = numpy_helper.from_array(np.array([0], dtype=np.int64), "first")
    four = numpy_helper.from_array(np.array([4], dtype=np.int64), "four")
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    tail = [
        helper.make_node("Add", ["x", "spread"], ["sum"]),
        helper.make_node("MatMul", ["sum", "w"], ["y"]),
    ]
    expand = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "first"], ["rows"], axis=0),
        helper.make_node("Concat", ["rows", "four"], ["target"], axis=0),
        helper.make_node("Expand", ["row", "target"], ["spread"]),
    ]
    broadcast = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Shape", ["vector"], ["vshape"]),
        helper.make_node("Shape", ["shape"], ["rank"]),
        helper.make_node("Shape", ["vshape"], ["vrank"]),
        helper.make_node("Sub", ["rank", "vrank"], ["missing"]),
        helper.make_node("ConstantOfShape", ["missing"], ["ones"], value=one),
        helper.make_node("Concat", ["ones", "vshape"], ["padded"], axis=0),
        helper.make_node("Max", ["shape", "padded"], ["target"]),
        helper.make_node("Expand", ["vector", "target"], ["spread"]),
    ]
    return {
        "expand": helper.make_graph(expand + tail, "expand", [x], [y], [w, row, first, four]),
        "broadcast": helper.make_graph(broadcast + tail, "broadcast", [x], [y], [w, vector]),
    }


def transformer(out_dir, seq):
    import onnxruntime as ort
    import torch
    from torch import nn

    torch.manual_seed(3)
    vocab, width, context = 40, 32, 64

    heads = 4

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

        def attend(self, h):
            # Batch and length read from the tensor: Shape → Gather → Concat → Reshape.
            b, n = h.shape[0], h.shape[1]
            split = lambda t: t.reshape(b, n, heads, width // heads).transpose(1, 2)
            q, k, v = (split(t) for t in self.qkv(h).split(width, dim=-1))
            scores = q @ k.transpose(-2, -1) / (width // heads) ** 0.5
            future = torch.triu(torch.ones(n, n, dtype=torch.bool, device=h.device), 1)
            weights = scores.masked_fill(future, float("-inf")).softmax(-1)
            return self.proj((weights @ v).transpose(1, 2).reshape(b, n, width))

        def forward(self, x):
            x = x + self.attend(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(context, width)
            self.blocks = nn.Sequential(Block(), Block())
            self.head = nn.Linear(width, vocab)

        def forward(self, ids):
            at = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
            return self.head(self.blocks(self.tokens(ids) + self.positions(at)))

    model = LanguageModel().eval()
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "transformer.onnx")
    torch.onnx.export(
        model, (torch.zeros(1, 5, dtype=torch.int64),), path, input_names=["ids"],
        output_names=["logits"], opset_version=17, dynamo=False,
        dynamic_axes={"ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}},
    )
    ids = np.random.default_rng(5).integers(0, vocab, (2, int(seq))).astype(np.int64)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"ids": ids})[0]
    print(json.dumps({"ids": ids.tolist(), "logits": logits.reshape(-1).tolist()}))


def feeds_for(path, batch):
    """Inputs for a graph: the onnx runner's arange/n inputs for the fixed light graphs,
    seeded random values of a batch for the others."""
    import onnx

    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    rng = np.random.default_rng(11)
    for x in model.graph.input:
        if x.name in inits:
            continue
        t = x.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in t.shape.dim]
        if t.elem_type == onnx.TensorProto.FLOAT and all(d.HasField("dim_value") for d in t.shape.dim):
            n = int(np.prod(dims))
            feeds[x.name] = (np.arange(n).reshape(dims) / n).astype(np.float32)
        elif t.elem_type == onnx.TensorProto.FLOAT:
            feeds[x.name] = rng.standard_normal(dims).astype(np.float32)
        elif t.elem_type == onnx.TensorProto.INT64:
            feeds[x.name] = rng.integers(-50, 50, dims).astype(np.int64)
        else:
            raise SystemExit(f"{path}: no generator for input {x.name}")
    return feeds, [o.name for o in model.graph.output]


DATATYPES = {np.float32: "FP32", np.int64: "INT64", np.bool_: "BOOL"}


def compare(got, want, float_tol):
    """The largest absolute difference and whether it is within tolerance: exact for
    integers and booleans, `float_tol(want)` elementwise for floats."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return float("inf"), False
    if want.dtype.kind == "f":
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        return float(diff.max()), bool(np.all(diff <= float_tol(want)))
    return float(np.sum(got != want)), bool(np.array_equal(got, want))


def check(http_url, grpc_url, out_dir):
    import onnx
    import onnxruntime as ort
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from onnx import numpy_helper

    http = httpclient.InferenceServerClient(url=http_url)
    grpc = grpcclient.InferenceServerClient(url=grpc_url)
    listing = json.load(open(os.path.join(out_dir, "listing.json")))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    for entry in listing:
        name, path = entry["name"], os.path.join(out_dir, entry["file"])
        feeds, output_names = feeds_for(path, batch=3)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        reference = dict(zip(output_names, session.run(output_names, feeds)))
        light = name.startswith("light-")
        # The onnx test runner's tolerance for the light graphs; 1e-5 absolute otherwise.
        tol = (lambda w: 1e-7 + 1e-3 * np.abs(w)) if light else (lambda w: 1e-5)
        report = {"model": name, "ok": True}

        def record(kind, outputs):
            for out_name, want in reference.items():
                diff, ok = compare(outputs[out_name], want, tol)
                report[f"{kind}:{out_name}"] = diff
                report["ok"] = report["ok"] and ok

        for binary in (True, False):
            inputs = []
            for key, value in feeds.items():
                i = httpclient.InferInput(key, list(value.shape), DATATYPES[value.dtype.type])
                i.set_data_from_numpy(value, binary_data=binary)
                inputs.append(i)
            wanted = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in output_names]
            result = http.infer(name, inputs=inputs, outputs=wanted)
            record("http-binary" if binary else "http-json", {o: result.as_numpy(o) for o in output_names})
        inputs = []
        for key, value in feeds.items():
            i = grpcclient.InferInput(key, list(value.shape), DATATYPES[value.dtype.type])
            i.set_data_from_numpy(value)
            inputs.append(i)
        result = grpc.infer(name, inputs=inputs)
        served = {o: result.as_numpy(o) for o in output_names}
        record("grpc", served)
        if light:
            expected = numpy_helper.to_array(
                onnx.load_tensor(os.path.join(out_dir, entry["file"][: -len(".onnx")] + "_output_0.pb"))
            )
            diff, ok = compare(served[output_names[0]], expected, tol)
            report["shipped-expected"] = diff
            report["ok"] = report["ok"] and ok
        print(json.dumps(report), flush=True)


def run_ort(path, input_name, rows_file):
    import onnxruntime as ort

    rows = np.array(json.load(open(rows_file)), dtype=np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    print(json.dumps(session.run(None, {input_name: rows})[0].tolist()))


def run_torch(module_file, weights, rows_file):
    import importlib.util

    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("exported", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Model()
    model.load_state_dict(load_file(weights), strict=True)
    model.eval()
    rows = torch.tensor(json.load(open(rows_file)), dtype=torch.float32)
    with torch.no_grad():
        print(json.dumps(model(rows).tolist()))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"make": make, "check": check, "ort": run_ort, "torch": run_torch, "transformer": transformer}[
        command
    ](*args)
