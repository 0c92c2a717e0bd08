"""Captum on the PyTorch export of a modelforge model, driven by crates/cli/tests/explain.rs.

    python captum_parity.py MODULE.py WEIGHTS.safetensors CASES.json

MODULE.py and WEIGHTS.safetensors are `modelforge export --format safetensors`'s module and
state dict. CASES.json holds {"shape": per-sample input shape, "inputs": [flat samples],
"cases": [{"name", "method", "targets", "steps", "rule", "baseline", "smoothing"}]}, where
`method` is saliency, input-x-gradient or integrated-gradients, `baseline` null (zeros) or
a number, and `smoothing` null or {"samples", "stdev", "seed"}.

Prints one JSON line: per case name, {"attributions": [flat per sample], "delta": [...]}
(delta for integrated gradients without smoothing: Captum's return_convergence_delta).

SmoothGrad draws its noise from modelforge's documented generator (SplitMix64 uniforms,
Box-Muller pairs; per sample, per noisy copy, per value), so both sides add the same noise
tensor; the reference is then the mean of Captum's attributions of the noisy copies, which
is what Captum's NoiseTunnel(nt_type="smoothgrad") computes for its own draws.
"""
import importlib.util
import json
import sys

import numpy as np

MASK = (1 << 64) - 1


class Gaussian:
    """modelforge-explain's noise stream (crates/explain/src/noise.rs)."""

    def __init__(self, seed):
        self.state = seed
        self.spare = None

    def u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self):
        return ((self.u64() >> 11) + 0.5) / float(1 << 53)

    def next(self):
        if self.spare is not None:
            z, self.spare = self.spare, None
            return z
        u1, u2 = self.uniform(), self.uniform()
        r = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * np.pi * u2
        self.spare = r * np.sin(angle)
        return r * np.cos(angle)


RULES = {
    "riemann-left": "riemann_left",
    "riemann-right": "riemann_right",
    "riemann-middle": "riemann_middle",
    "riemann-trapezoid": "riemann_trapezoid",
    "gauss-legendre": "gausslegendre",
}


def load(module_file, weights):
    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("exported", module_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Model()
    model.load_state_dict(load_file(weights), strict=True)
    model.eval()
    torch.set_grad_enabled(True)
    return model


def attribute(model, method, x, targets, case):
    import torch
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    x = x.clone().requires_grad_(True)
    if method == "saliency":
        return Saliency(model).attribute(x, target=targets, abs=True), None
    if method == "input-x-gradient":
        return InputXGradient(model).attribute(x, target=targets), None
    baseline = case.get("baseline")
    b = torch.zeros_like(x) if baseline is None else torch.full_like(x, float(baseline))
    a, delta = IntegratedGradients(model).attribute(
        x,
        baselines=b,
        target=targets,
        n_steps=case["steps"],
        method=RULES[case["rule"]],
        return_convergence_delta=True,
    )
    return a, delta


def main(module_file, weights, cases_file):
    import torch

    model = load(module_file, weights)
    doc = json.load(open(cases_file))
    shape = doc["shape"]
    inputs = np.array(doc["inputs"], dtype=np.float32)
    batch = inputs.shape[0]
    x = torch.tensor(inputs).reshape(batch, *shape)
    out = {}
    for case in doc["cases"]:
        targets = case["targets"]
        smoothing = case.get("smoothing")
        if smoothing is None:
            a, delta = attribute(model, case["method"], x, targets, case)
            out[case["name"]] = {
                "attributions": a.detach().reshape(batch, -1).tolist(),
                "delta": None if delta is None else delta.detach().tolist(),
            }
            continue
        g = Gaussian(smoothing["seed"])
        sigma = np.float64(np.float32(smoothing["stdev"]))
        copies = smoothing["samples"]
        flat = inputs.astype(np.float64)
        noisy = np.empty((batch, copies, flat.shape[1]), dtype=np.float32)
        for s in range(batch):
            for c in range(copies):
                noise = np.array([g.next() for _ in range(flat.shape[1])])
                noisy[s, c] = (flat[s] + sigma * noise).astype(np.float32)
        total = torch.zeros(batch, flat.shape[1], dtype=torch.float64)
        for c in range(copies):
            xc = torch.tensor(noisy[:, c]).reshape(batch, *shape)
            a, _ = attribute(model, case["method"], xc, targets, case)
            total += a.detach().reshape(batch, -1).double()
        out[case["name"]] = {"attributions": (total / copies).tolist(), "delta": None}
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
