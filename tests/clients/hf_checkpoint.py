"""Small random Hugging Face checkpoints and their reference outputs from `transformers`.

    hf_checkpoint.py make KIND DIR CORPUS       a random LlamaForCausalLM / GPT2LMHeadModel /
                                                Qwen2ForCausalLM with a byte-level BPE trained
                                                on CORPUS and a chat template, save_pretrained
    hf_checkpoint.py reference DIR REQUEST      logits of REQUEST's windows, the greedy
                                                continuation of its prompt and the ids of its
                                                sample text, as one JSON line

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
            vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=96,
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


def reference(folder, request_path):
    with open(request_path) as f:
        request = json.load(f)
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
    else:
        reference(sys.argv[2], sys.argv[3])
