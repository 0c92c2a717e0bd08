"""Unchanged tritonclient HTTP code against a modelforge server.

    python triton_http.py HOST:PORT MODEL INPUT_JSON

Prints one JSON line: liveness, readiness, metadata and config as the client
parsed them, and the outputs of one inference sent with binary tensors (the
client's default) and one with JSON tensors.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, model, row_file = sys.argv[1], sys.argv[2], sys.argv[3]
    row = np.array(json.load(open(row_file)), dtype=np.float32)[None, :]
    client = httpclient.InferenceServerClient(url=url)
    meta = client.get_model_metadata(model)
    config = client.get_model_config(model)
    results = {}
    for binary in (True, False):
        inp = httpclient.InferInput(meta["inputs"][0]["name"], list(row.shape), "FP32")
        inp.set_data_from_numpy(row, binary_data=binary)
        out = httpclient.InferRequestedOutput(meta["outputs"][0]["name"], binary_data=binary)
        result = client.infer(model, inputs=[inp], outputs=[out])
        results["binary" if binary else "json"] = result.as_numpy(meta["outputs"][0]["name"]).tolist()
    stats = client.get_inference_statistics(model)
    print(json.dumps({
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "metadata": meta,
        "max_batch_size": config["max_batch_size"],
        "outputs": results,
        "inference_count": stats["model_stats"][0]["inference_count"],
    }))


if __name__ == "__main__":
    main()
