"""The peer side of bench/pretrained_import.sh.

    pretrained_import.py make DIR          a random LlamaForCausalLM of SmolLM-135M's shape
                                           (tokenizer from tests/clients/hf_checkpoint.py),
                                           save_pretrained as F32 safetensors
    pretrained_import.py load PATH         transformers' from_pretrained of a folder or a
                                           .gguf file (which it dequantises), timed
"""

import importlib.util
import json
import os
import sys
import time

import torch
import transformers

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "hf_checkpoint", os.path.join(here, "..", "tests", "clients", "hf_checkpoint.py")
)
hf_checkpoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hf_checkpoint)

if sys.argv[1] == "make":
    torch.manual_seed(0)
    tok = hf_checkpoint.tokenizer(os.path.join(here, "..", "data", "text", "shakespeare.txt.gz"), 384)
    config = transformers.LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(sys.argv[2])
    tok.save_pretrained(sys.argv[2])
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters())}))
else:
    path = sys.argv[2]
    torch.set_num_threads(1)
    start = time.perf_counter()
    if path.endswith(".gguf"):
        where, name = os.path.split(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    print(json.dumps({"seconds": time.perf_counter() - start}))
