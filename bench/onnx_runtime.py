"""Inference throughput of an ONNX graph in onnxruntime, one intra-op thread, sequential.

    python bench/onnx_runtime.py MODEL.onnx [SECONDS] [BATCH...]

Prints one JSON line per batch size, in the shape of modelforge-onnx's throughput bench:
the same inputs (i % 97 / 97), the time of each `run` call alone.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    path = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    batches = [int(b) for b in sys.argv[3:]] or [1, 256]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    for batch in batches:
        shape = [batch if not isinstance(d, int) else d for d in inp.shape]
        n = int(np.prod(shape))
        feed = {inp.name: ((np.arange(n) % 97) / 97.0).astype(np.float32).reshape(shape)}
        for _ in range(3):
            session.run(None, feed)
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t)
        times.sort()
        print(json.dumps({
            "engine": "onnxruntime",
            "batch": batch,
            "calls": len(times),
            "samples_per_s": round(len(times) * batch / sum(times), 1),
            "median_ms": round(times[len(times) // 2] * 1e3, 4),
        }), flush=True)


if __name__ == "__main__":
    main()
