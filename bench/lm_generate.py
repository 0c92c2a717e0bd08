"""transformers' LlamaForCausalLM with SmolLM-135M's configuration (random weights), greedy
decoding with the key/value cache at batch 1, for bench/lm_generate.sh.

    python bench/lm_generate.py PROMPT_TOKENS TOKENS THREADS

Prints one line: ttft_ms=… decode_tokens_per_sec=… peak_rss_mib=… parameters=…
"""

import resource
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    prompt_tokens, tokens, threads = (int(a) for a in sys.argv[1:4])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 256, (1, prompt_tokens))
    greedy = dict(do_sample=False, use_cache=True, pad_token_id=0)
    with torch.inference_mode():
        model.generate(ids[:, :4], max_new_tokens=2, min_new_tokens=2, **greedy)
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **greedy)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **greedy)
        total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    print(f"ttft_ms={ttft * 1e3:.1f} decode_tokens_per_sec={(tokens - 1) / max(total - ttft, 1e-9):.2f} peak_rss_mib={peak:.0f} parameters={params}")


if __name__ == "__main__":
    main()
