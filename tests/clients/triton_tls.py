"""tritonclient over TLS against a modelforge server started with --tls-cert, --tls-key
and --tls-client-ca (mutual TLS) and --token-everywhere.

    python triton_tls.py HOST:HTTPS_PORT HOST:GRPC_PORT MODEL INPUT_JSON DIR TOKEN

DIR holds ca.pem, client.pem/client.key (signed by ca.pem) and stranger.pem/stranger.key
(signed by another CA). Prints one JSON line: the outputs over HTTPS and gRPC with the
right client certificate and token, and whether each wrong client was refused.
"""
import json
import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def https(url, d, who):
    return httpclient.InferenceServerClient(
        url=url,
        ssl=True,
        ssl_options={
            "ca_certs": os.path.join(d, "ca.pem"),
            "certfile": os.path.join(d, f"{who}.pem"),
            "keyfile": os.path.join(d, f"{who}.key"),
        },
        connection_timeout=10,
        network_timeout=10,
    )


def grpc(url, d, who):
    if who is None:
        return grpcclient.InferenceServerClient(
            url=url, ssl=True, root_certificates=os.path.join(d, "ca.pem"))
    return grpcclient.InferenceServerClient(
        url=url,
        ssl=True,
        root_certificates=os.path.join(d, "ca.pem"),
        private_key=os.path.join(d, f"{who}.key"),
        certificate_chain=os.path.join(d, f"{who}.pem"),
    )


def refused(call):
    try:
        call()
    except Exception as e:  # each client raises its own error types
        return str(e)[:200] or type(e).__name__
    return None


def main():
    http_url, grpc_url, model, row_file, d, token = sys.argv[1:7]
    row = np.array(json.load(open(row_file)), dtype=np.float32)[None, :]
    auth = {"Authorization": f"Bearer {token}"}
    # gRPC metadata keys are lower case.
    grpc_auth = {"authorization": f"Bearer {token}"}

    client = https(http_url, d, "client")
    meta = client.get_model_metadata(model, headers=auth)
    name_in, name_out = meta["inputs"][0]["name"], meta["outputs"][0]["name"]
    inp = httpclient.InferInput(name_in, list(row.shape), "FP32")
    inp.set_data_from_numpy(row)
    out_https = client.infer(model, inputs=[inp], headers=auth).as_numpy(name_out).tolist()
    no_token = refused(lambda: client.get_model_metadata(model))

    g = grpc(grpc_url, d, "client")
    ginp = grpcclient.InferInput(name_in, list(row.shape), "FP32")
    ginp.set_data_from_numpy(row)
    out_grpc = g.infer(model, inputs=[ginp], headers=grpc_auth).as_numpy(name_out).tolist()

    plain = refused(lambda: httpclient.InferenceServerClient(
        url=http_url, connection_timeout=5, network_timeout=5).is_server_live())
    stranger = refused(lambda: https(http_url, d, "stranger").get_model_metadata(model, headers=auth))
    grpc_stranger = refused(lambda: grpc(grpc_url, d, "stranger").is_server_live(headers=grpc_auth))
    grpc_anonymous = refused(lambda: grpc(grpc_url, d, None).is_server_live(headers=grpc_auth))
    print(json.dumps({
        "https": out_https,
        "grpc": out_grpc,
        "no_token": no_token,
        "plain_text": plain,
        "stranger": stranger,
        "grpc_stranger": grpc_stranger,
        "grpc_anonymous": grpc_anonymous,
    }))


if __name__ == "__main__":
    main()
