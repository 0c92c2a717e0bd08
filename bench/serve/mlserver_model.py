"""Trains the peer model for the serving benchmark: an sklearn MLPClassifier with the
reference shape 784-128-128-10 on MNIST images, written for MLServer.

    python mlserver_model.py DATA_DIR OUT_DIR
"""
import gzip
import json
import os
import struct
import sys

import joblib
import numpy as np
from sklearn.neural_network import MLPClassifier


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    data, out = sys.argv[1], sys.argv[2]
    x = idx(os.path.join(data, "train-images-idx3-ubyte.gz"))[:5000].reshape(-1, 784) / 255.0
    y = idx(os.path.join(data, "train-labels-idx1-ubyte.gz"))[:5000]
    model = MLPClassifier(hidden_layer_sizes=(128, 128), max_iter=3).fit(x.astype(np.float32), y)
    os.makedirs(os.path.join(out, "mnist-mlp"), exist_ok=True)
    joblib.dump(model, os.path.join(out, "mnist-mlp", "model.joblib"))
    with open(os.path.join(out, "mnist-mlp", "model-settings.json"), "w") as f:
        json.dump(
            {
                "name": "mnist-mlp",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            },
            f,
        )


if __name__ == "__main__":
    main()
