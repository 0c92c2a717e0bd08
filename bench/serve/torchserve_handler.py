"""TorchServe handler for the benchmark: the 784-128-128-10 MLP on one thread per worker.

A request body is {"data": [784 floats]}; the answer is the 10 logits. TorchServe's own
batching hands several requests to one call when it is configured (batch_size > 1).
"""
import json

import torch
from ts.torch_handler.base_handler import BaseHandler


def mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(784, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )


class MLPHandler(BaseHandler):
    def initialize(self, context):
        torch.set_num_threads(1)
        folder = context.system_properties["model_dir"]
        self.model = mlp()
        self.model.load_state_dict(torch.load(f"{folder}/mlp.pt", weights_only=True))
        self.model.eval()
        self.initialized = True

    def handle(self, data, context):
        rows = []
        for request in data:
            body = request.get("body") or request.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            rows.append(body["data"])
        with torch.inference_mode():
            logits = self.model(torch.tensor(rows, dtype=torch.float32))
        return [row.tolist() for row in logits]
