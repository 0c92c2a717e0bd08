"""Small random Hugging Face checkpoints and their reference outputs from `transformers`.

    hf_checkpoint.py make KIND DIR CORPUS       a random LlamaForCausalLM / GPT2LMHeadModel /
                                                Qwen2ForCausalLM with a byte-level BPE trained
                                                on CORPUS and a chat template, save_pretrained
    hf_checkpoint.py reference DIR REQUEST      logits of REQUEST's windows, the greedy
                                                continuation of its prompt and the ids of its
                                                sample text, as one JSON line

    hf_checkpoint.py gguf DIR FILE TYPE         the folder as a GGUF v3 file written with the
                                                `gguf` package, matrices in TYPE (F32, F16,
                                                Q8_0, Q4_0, Q4_1), as llama.cpp's converter
                                                lays it out
    hf_checkpoint.py reference FILE.gguf REQUEST  the same outputs with transformers' own
                                                GGUF loading (it dequantises to torch)

REQUEST is a JSON file {"windows": [[ids]], "prompt": str, "new_tokens": n, "sample": str}.
"""

import gzip
import json
import sys

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer(corpus, vocab):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        text = f.read(200_000)
    tok.train_from_iterator(text.split("\n\n"), trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


def make(kind, out, corpus):
    torch.manual_seed(0)
    tok = tokenizer(corpus, 384)
    vocab = len(tok)
    # A larger initial scale than training uses, so that the logits are peaked and the
    # greedy continuation does not hinge on ties.
    if kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-5, rope_theta=5000.0, tie_word_embeddings=False,
            initializer_range=0.2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        )
        model = transformers.LlamaForCausalLM(config)
    elif kind == "qwen2":
        config = transformers.Qwen2Config(
            vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128,
            rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True,
            initializer_range=0.2, use_sliding_window=False,
        )
        model = transformers.Qwen2ForCausalLM(config)
        # Qwen2 has q, k and v biases: make them count.
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.2)
    elif kind == "gpt2":
        config = transformers.GPT2Config(
            # 1024 positions: transformers' GGUF loading reads a GPT-2 file's context_length
            # as n_ctx and keeps n_positions at its default.
            vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=1024,
            activation_function="gelu_new", initializer_range=0.2,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        )
        model = transformers.GPT2LMHeadModel(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.normal_(0.0, 0.1)
    else:
        raise SystemExit(f"unknown kind {kind}")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(json.dumps({"vocab": vocab, "parameters": sum(p.numel() for p in model.parameters())}))


def to_gguf(folder, out, kind):
    import gguf
    import numpy as np

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    c = model.config
    arch = {"llama": "llama", "gpt2": "gpt2"}[c.model_type]
    w = gguf.GGUFWriter(out, arch)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    quant = getattr(gguf.GGMLQuantizationType, kind)

    def put(name, array):
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim == 2 and quant != gguf.GGMLQuantizationType.F32:
            if quant == gguf.GGMLQuantizationType.F16:
                w.add_tensor(name, array.astype(np.float16))
            else:
                w.add_tensor(name, gguf.quants.quantize(array, quant), raw_dtype=quant)
        else:
            w.add_tensor(name, array)

    if arch == "llama":
        hd = c.hidden_size // c.num_attention_heads

        def permute(x, heads):
            # llama.cpp's converter: the halves layout to adjacent pairs.
            return x.reshape(heads, 2, hd // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

        w.add_context_length(c.max_position_embeddings)
        w.add_embedding_length(c.hidden_size)
        w.add_block_count(c.num_hidden_layers)
        w.add_feed_forward_length(c.intermediate_size)
        w.add_head_count(c.num_attention_heads)
        w.add_head_count_kv(c.num_key_value_heads)
        w.add_layer_norm_rms_eps(c.rms_norm_eps)
        w.add_rope_freq_base(c.rope_parameters["rope_theta"])
        w.add_rope_dimension_count(hd)
        put("token_embd.weight", state["model.embed_tokens.weight"])
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            put(f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"])
            put(f"blk.{i}.attn_q.weight", permute(state[p + "self_attn.q_proj.weight"], c.num_attention_heads))
            put(f"blk.{i}.attn_k.weight", permute(state[p + "self_attn.k_proj.weight"], c.num_key_value_heads))
            put(f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"])
            put(f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"])
            put(f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"])
            put(f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"])
            put(f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"])
            put(f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"])
        put("output_norm.weight", state["model.norm.weight"])
        if not c.tie_word_embeddings:
            put("output.weight", state["lm_head.weight"])
    else:
        w.add_context_length(c.n_positions)
        w.add_embedding_length(c.n_embd)
        w.add_block_count(c.n_layer)
        w.add_feed_forward_length(c.n_inner or 4 * c.n_embd)
        w.add_head_count(c.n_head)
        w.add_layer_norm_eps(c.layer_norm_epsilon)
        put("token_embd.weight", state["transformer.wte.weight"])
        put("position_embd.weight", state["transformer.wpe.weight"])
        for i in range(c.n_layer):
            p = f"transformer.h.{i}."
            put(f"blk.{i}.attn_norm.weight", state[p + "ln_1.weight"])
            put(f"blk.{i}.attn_norm.bias", state[p + "ln_1.bias"])
            put(f"blk.{i}.attn_qkv.weight", state[p + "attn.c_attn.weight"].T)
            put(f"blk.{i}.attn_qkv.bias", state[p + "attn.c_attn.bias"])
            put(f"blk.{i}.attn_output.weight", state[p + "attn.c_proj.weight"].T)
            put(f"blk.{i}.attn_output.bias", state[p + "attn.c_proj.bias"])
            put(f"blk.{i}.ffn_norm.weight", state[p + "ln_2.weight"])
            put(f"blk.{i}.ffn_norm.bias", state[p + "ln_2.bias"])
            put(f"blk.{i}.ffn_up.weight", state[p + "mlp.c_fc.weight"].T)
            put(f"blk.{i}.ffn_up.bias", state[p + "mlp.c_fc.bias"])
            put(f"blk.{i}.ffn_down.weight", state[p + "mlp.c_proj.weight"].T)
            put(f"blk.{i}.ffn_down.bias", state[p + "mlp.c_proj.bias"])
        put("output_norm.weight", state["transformer.ln_f.weight"])
        put("output_norm.bias", state["transformer.ln_f.bias"])
    backend = json.loads(tok.backend_tokenizer.to_str())
    vocab = backend["model"]["vocab"]
    tokens = [None] * len(tok)
    for t, i in vocab.items():
        tokens[i] = t
    types = [1] * len(tokens)
    for added in backend["added_tokens"]:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = 3 if added["special"] else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    # A vocabulary larger than the tokenizer is padded, as llama.cpp's converter pads it
    # (type 5, unused).
    vocab_size = c.vocab_size
    tokens += [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    types += [5] * (vocab_size - len(types))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if c.bos_token_id is not None:
        w.add_bos_token_id(c.bos_token_id)
    if c.eos_token_id is not None:
        w.add_eos_token_id(c.eos_token_id)
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(json.dumps({"tensors": len(state)}))


def reference(folder, request_path):
    with open(request_path) as f:
        request = json.load(f)
    if folder.endswith(".gguf"):
        import os

        where, name = os.path.split(folder)
        tok = transformers.AutoTokenizer.from_pretrained(where, gguf_file=name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            where, gguf_file=name, dtype=torch.float32
        )
    else:
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        windows = torch.tensor(request["windows"], dtype=torch.long)
        logits = model(windows).logits
        prompt = tok(request["prompt"], add_special_tokens=False, return_tensors="pt").input_ids
        out = model.generate(
            prompt, max_new_tokens=request["new_tokens"], do_sample=False, pad_token_id=0,
        )
    new = out[0, prompt.shape[1]:].tolist()
    # The end token stops the text and is not part of it.
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    for i, t in enumerate(new):
        if t in eos:
            new = new[:i]
            break
    print(json.dumps({
        "logits": logits.tolist(),
        "greedy_ids": new,
        "greedy_text": tok.decode(new),
        "sample_ids": tok(request["sample"], add_special_tokens=False).input_ids,
        "chat": tok.apply_chat_template(
            [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
        ) if tok.chat_template else None,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "gguf":
        to_gguf(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        reference(sys.argv[2], sys.argv[3])
