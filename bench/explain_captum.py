"""Captum's integrated gradients on the PyTorch export, for bench/explain_throughput.sh.

    python explain_captum.py MODULE.py WEIGHTS.safetensors IMAGES.json THREADS SECONDS STEPS BATCH...

Gauss-Legendre rule (Captum's default), zero baseline, target the predicted class, every
step of a call in one batch (internal_batch_size=None), as modelforge runs them. Prints one
JSON line per batch size: explanations per second and the median time per call.
"""
import importlib.util
import json
import sys
import time

import torch
from captum.attr import IntegratedGradients
from safetensors.torch import load_file


def main(module_file, weights, images_file, threads, seconds, steps, *batches):
    torch.set_num_threads(int(threads))
    spec = importlib.util.spec_from_file_location("exported", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Model()
    model.load_state_dict(load_file(weights), strict=True)
    model.eval()
    images = torch.tensor(json.load(open(images_file)), dtype=torch.float32)
    ig = IntegratedGradients(model)
    for batch in map(int, batches):
        x = images.repeat((batch + len(images) - 1) // len(images), 1)[:batch].reshape(batch, 1, 28, 28)

        def explain():
            with torch.no_grad():
                target = model(x).argmax(dim=1)
            return ig.attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=int(steps),
                                method="gausslegendre", return_convergence_delta=True)

        report(explain, batch, threads, seconds)


def report(explain, batch, threads, seconds):
    """Times `explain` (a call explaining `batch` samples) after two warm-up calls, for
    `seconds` and at least three calls; prints the JSON line the bench scripts read."""
    for _ in range(2):
        explain()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < float(seconds) or len(times) < 3:
        t = time.perf_counter()
        explain()
        times.append(time.perf_counter() - t)
    times.sort()
    print(json.dumps({"batch": batch, "threads": int(threads),
                      "explanations_per_s": len(times) * batch / sum(times),
                      "median_ms": times[len(times) // 2] * 1e3}))


if __name__ == "__main__":
    main(*sys.argv[1:])
