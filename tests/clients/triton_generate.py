"""Unchanged tritonclient gRPC streaming code against a modelforge language model, in
Triton's decoupled mode: one request, many responses, the last flagged final.

    python triton_generate.py HOST:PORT MODEL

Prints one JSON line: the pieces of a greedy generation streamed, the same generation
asked for whole (stream = false), the final response's parameters, and the errors of a
bad setting and a bad input.
"""
import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def text_input(text):
    t = grpcclient.InferInput("text_input", [1], "BYTES")
    t.set_data_from_numpy(np.array([text.encode()], dtype=object))
    return t


def main():
    url, model = sys.argv[1], sys.argv[2]
    client = grpcclient.InferenceServerClient(url=url)
    results = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))

    def responses(request_id):
        """Every response of one request, up to its final one."""
        out = []
        while True:
            result, error = results.get(timeout=120)
            if error is not None:
                return out, str(error)
            response = result.get_response()
            assert response.id == request_id, (response.id, request_id)
            text = result.as_numpy("text_output")
            params = {k: getattr(v, v.WhichOneof("parameter_choice"))
                      for k, v in response.parameters.items()}
            out.append({"text": text[0].decode() if text is not None else None, "params": params,
                        "version": response.model_version})
            if params.get("triton_final_response"):
                return out, None

    greedy = {"max_tokens": 12, "temperature": 0.0}
    client.async_stream_infer(model, [text_input("ROMEO:")], request_id="a", parameters=greedy,
                              enable_empty_final_response=True)
    streamed, _ = responses("a")
    client.async_stream_infer(model, [text_input("ROMEO:")], request_id="b",
                              parameters={**greedy, "stream": False}, enable_empty_final_response=True)
    whole, _ = responses("b")
    client.async_stream_infer(model, [text_input("ROMEO:")], request_id="c", parameters={"top_p": 0.0})
    _, bad_setting = responses("c")
    client.async_stream_infer(model, [text_input("ROMEO:")], request_id="d", parameters={"beams": 2})
    _, bad_parameter = responses("d")
    client.stop_stream()
    print(json.dumps({"streamed": streamed, "whole": whole,
                      "bad_setting": bad_setting, "bad_parameter": bad_parameter}))


if __name__ == "__main__":
    main()
