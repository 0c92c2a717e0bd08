"""Unchanged tritonclient gRPC code against a modelforge server.

    python triton_grpc.py HOST:PORT MODEL INPUT_JSON

Prints one JSON line: health, metadata and config as parsed by the client,
outputs of a unary and a streaming inference, the status codes of two bad
requests, and the repository index.
"""
import json
import queue
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main():
    url, model, row_file = sys.argv[1], sys.argv[2], sys.argv[3]
    row = np.array(json.load(open(row_file)), dtype=np.float32)[None, :]
    client = grpcclient.InferenceServerClient(url=url)
    meta = client.get_model_metadata(model, as_json=True)
    config = client.get_model_config(model, as_json=True)["config"]
    in_name, out_name = meta["inputs"][0]["name"], meta["outputs"][0]["name"]

    def request(data):
        inp = grpcclient.InferInput(in_name, list(data.shape), "FP32")
        inp.set_data_from_numpy(data)
        return [inp], [grpcclient.InferRequestedOutput(out_name)]

    inputs, outputs = request(row)
    unary = client.infer(model, inputs=inputs, outputs=outputs).as_numpy(out_name).tolist()

    results = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer(model, inputs=inputs, outputs=outputs)
    result, error = results.get(timeout=30)
    client.stop_stream()
    if error is not None:
        raise error
    stream = result.as_numpy(out_name).tolist()

    def code(call):
        try:
            call()
        except InferenceServerException as e:
            return e.status()
        return "OK"

    missing = code(lambda: client.get_model_metadata("no-such-model"))
    bad_inputs, _ = request(np.zeros((1, 3), dtype=np.float32))
    bad_shape = code(lambda: client.infer(model, inputs=bad_inputs))

    print(json.dumps({
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "metadata_shape": [int(d) for d in meta["inputs"][0]["shape"]],
        "config": {
            "max_batch_size": config["max_batch_size"],
            "input_dims": [int(d) for d in config["input"][0]["dims"]],
            "input_type": config["input"][0]["data_type"],
        },
        "unary": unary,
        "stream": stream,
        "missing_model_code": missing,
        "bad_shape_code": bad_shape,
        "index": [f'{m["name"]}:{m["version"]}:{m["state"]}' for m in client.get_model_repository_index(as_json=True)["models"]],
        "health": health(url),
    }))


def health(url):
    """grpc.health.v1.Health/Check, spoken with raw grpcio (no generated stubs needed)."""
    channel = grpc.insecure_channel(url)
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda _: b"",  # HealthCheckRequest{service: ""} is empty on the wire
        response_deserializer=lambda b: b,
    )
    raw = check(None, timeout=10)
    # HealthCheckResponse{status = 1 (SERVING)} encodes as field 1, varint 1: 0x08 0x01.
    return {b"\x08\x01": "SERVING"}.get(raw, raw.hex())


if __name__ == "__main__":
    main()
