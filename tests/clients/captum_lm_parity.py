"""Captum on a language model exported as a Hugging Face folder, driven by
crates/cli/tests/explain.rs.

    python captum_lm_parity.py DIR CASES.json

DIR is `modelforge export --format hf`'s folder. CASES.json holds {"ids": [prompt ids],
"cases": [{"name", "method", "target", "steps", "rule", "baseline"}]}, where `method` is
saliency, input-x-gradient or integrated-gradients, `target` a token id and `baseline`
null (zeros) or a number.

The model is explained as modelforge explains it: the output is the logit of `target` at
the prompt's last position, the input is the token embedding's output (the learned
positions are added after it, inside the model, as in modelforge's graph), and each
token's attribution is the sum over its embedding vector.

Prints one JSON line: per case name, {"attributions": [one per token], "delta": float or
null} (delta for integrated gradients: Captum's return_convergence_delta).
"""
import json
import sys

import torch
import transformers
from captum.attr import IntegratedGradients, InputXGradient, Saliency
from captum_parity import RULES


def main():
    folder, cases_path = sys.argv[1:3]
    torch.set_num_threads(2)
    with open(cases_path) as f:
        request = json.load(f)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32
    ).eval()
    ids = torch.tensor([request["ids"]])
    with torch.no_grad():
        embedded = model.get_input_embeddings()(ids)
    out = {}
    for case in request["cases"]:
        target = case["target"]

        def score(e, target=target):
            return model(inputs_embeds=e).logits[:, -1, target]

        x = embedded.clone().requires_grad_(True)
        delta = None
        if case["method"] == "saliency":
            a = Saliency(score).attribute(x, abs=True)
        elif case["method"] == "input-x-gradient":
            a = InputXGradient(score).attribute(x)
        else:
            baseline = case["baseline"]
            b = torch.zeros_like(x) if baseline is None else torch.full_like(x, baseline)
            a, d = IntegratedGradients(score).attribute(
                x,
                baselines=b,
                n_steps=case["steps"],
                method=RULES[case["rule"]],
                return_convergence_delta=True,
            )
            delta = float(d[0])
        out[case["name"]] = {
            "attributions": a.detach().sum(-1)[0].tolist(),
            "delta": delta,
        }
    print(json.dumps(out))


main()
