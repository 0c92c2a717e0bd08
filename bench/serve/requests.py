"""Inference request bodies for one FP32 tensor, with the standard library only: V2 JSON,
V2 with the binary tensor extension, TF-Serving rows, and a gRPC ModelInferRequest encoded
by hand (Open Inference Protocol field numbers), bare or framed for HTTP/2 load tools."""

import json
import struct


def v2_json(name, shape, values, **extra):
    """A V2 JSON request body."""
    return json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": values}], **extra})


def v2_binary(name, shape, values, output):
    """A V2 body with the tensor as raw bytes after its JSON header; returns (body, header length)."""
    header = json.dumps({
        "inputs": [{"name": name, "datatype": "FP32", "shape": shape,
                    "parameters": {"binary_data_size": 4 * len(values)}}],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }).encode()
    return header + struct.pack(f"<{len(values)}f", *values), len(header)


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def grpc_request(model, name, shape, values, raw=True):
    """A ModelInferRequest: model_name (1), inputs (5: name 1, datatype 2, packed shape 3,
    contents 5 with fp32_contents 6) and raw_input_contents (7)."""
    data = struct.pack(f"<{len(values)}f", *values)
    tensor = _field(1, name.encode()) + _field(2, b"FP32") + _field(3, b"".join(_varint(d) for d in shape))
    if raw:
        return _field(1, model.encode()) + _field(5, tensor) + _field(7, data)
    return _field(1, model.encode()) + _field(5, tensor + _field(5, _field(6, data)))


def grpc_framed(message):
    """A gRPC message as it travels in an HTTP/2 DATA frame: uncompressed flag, length."""
    return b"\0" + struct.pack(">I", len(message)) + message
