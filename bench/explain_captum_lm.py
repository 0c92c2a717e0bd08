"""Captum's integrated gradients on a language model's Hugging Face export, for
bench/explain_lm.sh.

    python explain_captum_lm.py HF_DIR PROMPTS.json THREADS SECONDS STEPS BATCH...

As modelforge explains a language model: the input is the token embedding's output, the
output the logit of the most likely next token at the prompt's last position; zero
baseline, Gauss-Legendre rule, every step of a call in one batch (internal_batch_size=None).
PROMPTS.json is a list of token-id lists of one length. Prints one JSON line per batch
size: explanations per second and the median time per call.
"""
import json
import sys

import torch
import transformers
from captum.attr import IntegratedGradients
from explain_captum import report


def main(folder, prompts_file, threads, seconds, steps, *batches):
    torch.set_num_threads(int(threads))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32
    ).eval()
    prompts = torch.tensor(json.load(open(prompts_file)))
    embed = model.get_input_embeddings()
    ig = IntegratedGradients(lambda e: model(inputs_embeds=e).logits[:, -1, :])
    for batch in map(int, batches):
        ids = prompts.repeat((batch + len(prompts) - 1) // len(prompts), 1)[:batch]

        def explain():
            with torch.no_grad():
                x = embed(ids)
                target = model(input_ids=ids).logits[:, -1, :].argmax(dim=1)
            a, _ = ig.attribute(x, baselines=torch.zeros_like(x), target=target,
                                n_steps=int(steps), method="gausslegendre",
                                return_convergence_delta=True)
            return a.sum(-1)

        report(explain, batch, threads, seconds)


if __name__ == "__main__":
    main(*sys.argv[1:])
