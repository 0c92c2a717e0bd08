"""ONNX interop checks driven by crates/cli/tests/interop.rs.

    python onnx_interop.py make DIR
        Writes DIR/multi.onnx (built with the onnx package: two inputs, three outputs,
        FP32, INT64 and BOOL, a symbolic batch axis) and copies the classic graphs the
        onnx wheel ships (onnx/backend/test/data/light) with their expected outputs.
        Prints one JSON line: [{"name", "file"}].

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
    light = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
    for path in sorted(glob.glob(os.path.join(light, "light_*.onnx"))):
        base = os.path.basename(path)
        shutil.copy(path, out_dir)
        expected = path[: -len(".onnx")] + "_output_0.pb"
        shutil.copy(expected, out_dir)
        listing.append({"name": base[: -len(".onnx")].replace("_", "-"), "file": base})
    print(json.dumps(listing))


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
    {"make": make, "check": check, "ort": run_ort, "torch": run_torch}[command](*args)
